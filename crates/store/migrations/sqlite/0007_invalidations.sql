-- Invalidations: changes that every process's caches must drop at once — an API key revoked or
-- deleted, a connection disconnected, deleted, re-authorized or given other profiles, a tenant
-- changed. Triggers write them, so every writer (a replica, the CLI) is covered without asking.
-- Each server polls past the last `seq` it has seen (a few times a second); rows older than an
-- hour are purged. SQLite has one writer at a time, so `seq` becomes visible in order.
CREATE TABLE invalidations (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('api_key', 'connection', 'tenant')),
    subject TEXT NOT NULL,
    at_ms   INTEGER NOT NULL
);

CREATE INDEX invalidations_at ON invalidations (at_ms);

CREATE TRIGGER invalidate_api_key_update AFTER UPDATE ON api_keys
WHEN NEW.revoked_at_ms IS NOT OLD.revoked_at_ms OR NEW.secret_hash IS NOT OLD.secret_hash
    OR NEW.scope IS NOT OLD.scope OR NEW.tenant_id IS NOT OLD.tenant_id
BEGIN
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES ('api_key', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER invalidate_api_key_delete AFTER DELETE ON api_keys
BEGIN
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES ('api_key', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER invalidate_connection_update AFTER UPDATE ON connections
WHEN NEW.status IS NOT OLD.status OR NEW.authorized_at_ms IS NOT OLD.authorized_at_ms
    OR NEW.tenant_id IS NOT OLD.tenant_id OR NEW.tenant_secret IS NOT OLD.tenant_secret
    OR NEW.profiles IS NOT OLD.profiles OR NEW.app IS NOT OLD.app OR NEW.region IS NOT OLD.region
BEGIN
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES ('connection', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER invalidate_connection_delete AFTER DELETE ON connections
BEGIN
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES ('connection', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE TRIGGER invalidate_tenant_update AFTER UPDATE ON tenants
BEGIN
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES ('tenant', OLD.id, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;
