-- The background refresher's schedule, kept beside each connection so that every replica sees
-- the same one. See `migrations/sqlite/0005_refresher.sql` for each column.

ALTER TABLE connections ADD COLUMN next_refresh_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN refresh_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE connections ADD COLUMN retry_at_ms BIGINT;
ALTER TABLE connections ADD COLUMN expiry_notice_days BIGINT;
ALTER TABLE connections ADD COLUMN profiles_check_at_ms BIGINT NOT NULL DEFAULT 0;

CREATE INDEX connections_due ON connections (next_refresh_at_ms, id)
    WHERE status = 'active' AND NOT tenant_secret;
CREATE INDEX connections_profiles_due ON connections (profiles_check_at_ms, id)
    WHERE status = 'active' AND NOT tenant_secret AND api = 'ads';
CREATE INDEX connections_authorized ON connections (authorized_at_ms, id)
    WHERE status = 'active' AND api = 'sp-api';
