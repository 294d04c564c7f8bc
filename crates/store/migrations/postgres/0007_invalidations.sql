-- Invalidations: changes that every replica's caches must drop at once. See
-- `migrations/sqlite/0007_invalidations.sql`. Replicas poll past the last `seq` they have seen,
-- so `seq` must become visible in order: the trigger takes a transaction-level advisory lock
-- (one per schema) before it draws a `seq`, and holds it to the commit. These changes are rare
-- (a revocation, a disconnect), so the lock costs nothing that matters.
CREATE TABLE invalidations (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('api_key', 'connection', 'tenant')),
    subject TEXT COLLATE "C" NOT NULL,
    at_ms   BIGINT NOT NULL
);

CREATE INDEX invalidations_at ON invalidations (at_ms);

CREATE FUNCTION lwa_invalidate(p_kind TEXT, p_subject TEXT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('lwa-broker invalidations ' || current_schema()));
    INSERT INTO invalidations (kind, subject, at_ms)
    VALUES (p_kind, p_subject, (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT);
END;
$$;

CREATE FUNCTION lwa_invalidate_api_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lwa_invalidate('api_key', OLD.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION lwa_invalidate_connection() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lwa_invalidate('connection', OLD.id);
    RETURN NULL;
END;
$$;

CREATE FUNCTION lwa_invalidate_tenant() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lwa_invalidate('tenant', OLD.id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER invalidate_api_key_update AFTER UPDATE ON api_keys FOR EACH ROW
WHEN (NEW.revoked_at_ms IS DISTINCT FROM OLD.revoked_at_ms OR NEW.secret_hash IS DISTINCT FROM OLD.secret_hash
    OR NEW.scope IS DISTINCT FROM OLD.scope OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id)
EXECUTE FUNCTION lwa_invalidate_api_key();

CREATE TRIGGER invalidate_api_key_delete AFTER DELETE ON api_keys FOR EACH ROW
EXECUTE FUNCTION lwa_invalidate_api_key();

CREATE TRIGGER invalidate_connection_update AFTER UPDATE ON connections FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.authorized_at_ms IS DISTINCT FROM OLD.authorized_at_ms
    OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.tenant_secret IS DISTINCT FROM OLD.tenant_secret
    OR NEW.profiles IS DISTINCT FROM OLD.profiles OR NEW.app IS DISTINCT FROM OLD.app
    OR NEW.region IS DISTINCT FROM OLD.region)
EXECUTE FUNCTION lwa_invalidate_connection();

CREATE TRIGGER invalidate_connection_delete AFTER DELETE ON connections FOR EACH ROW
EXECUTE FUNCTION lwa_invalidate_connection();

CREATE TRIGGER invalidate_tenant_update AFTER UPDATE ON tenants FOR EACH ROW
EXECUTE FUNCTION lwa_invalidate_tenant();
