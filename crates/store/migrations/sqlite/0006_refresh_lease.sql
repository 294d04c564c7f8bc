-- The refresh lease: the process (or replica) refreshing a connection holds it until this time,
-- so another that finds the token expired waits for that refresh instead of making a second LWA
-- call. 0: nobody. A successful token save ends it; a holder that dies lets it run out.
ALTER TABLE connections ADD COLUMN refresh_lease_until_ms INTEGER NOT NULL DEFAULT 0;
