-- The background refresher's schedule, kept beside each connection so that every process (and,
-- with PostgreSQL, every replica) sees the same one.
--
-- next_refresh_at_ms:     when the refresher should next refresh it (0: look at it now).
-- refresh_failures:       transient failures in a row (reset by a successful refresh or a new
--                         authorization).
-- retry_at_ms:            no LWA call before this time (the backoff after a failure), for the
--                         refresher and for vends alike.
-- expiry_notice_days:     the smallest "refresh token expiring in N days" notice already sent for
--                         the current authorization (30, then 7).
-- profiles_check_at_ms:   when an Ads connection's profiles are next re-read (0: schedule it).

ALTER TABLE connections ADD COLUMN next_refresh_at_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN refresh_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN retry_at_ms INTEGER;
ALTER TABLE connections ADD COLUMN expiry_notice_days INTEGER;
ALTER TABLE connections ADD COLUMN profiles_check_at_ms INTEGER NOT NULL DEFAULT 0;

-- Existing tokens are due five minutes before they expire (the default buffer).
UPDATE connections SET next_refresh_at_ms = MAX(access_expires_at_ms - 300000, 0)
    WHERE access_expires_at_ms IS NOT NULL;

CREATE INDEX connections_due ON connections (next_refresh_at_ms, id)
    WHERE status = 'active' AND tenant_secret = 0;
CREATE INDEX connections_profiles_due ON connections (profiles_check_at_ms)
    WHERE status = 'active' AND tenant_secret = 0 AND api = 'ads';
CREATE INDEX connections_authorized ON connections (authorized_at_ms)
    WHERE status = 'active' AND api = 'sp-api';
