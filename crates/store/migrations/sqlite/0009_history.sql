-- A connection's history, for the dashboard's connection page: each refresh (with the new access
-- token's expiry), each failed refresh (its error), each status change and each authorization
-- after the first (the seller authorizing again; the first is the connection's own
-- `authorized_at_ms`, and inserting a connection writes nothing). Triggers write it, so every writer (the vend path, the background refresher, the
-- proxy's forced refresh, the CLI, another replica) is covered without asking. Times come from
-- the row (`last_refresh_at_ms`, `updated_at_ms`, `authorized_at_ms`), which the writer took from
-- its clock. Only the newest 50 entries of a connection are kept (about two days of hourly
-- refreshes), so the table stays proportional to the number of connections.
CREATE TABLE connection_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('refreshed', 'refresh_failed', 'status', 'authorized')),
    detail        TEXT,
    until_ms      INTEGER
) STRICT;

CREATE INDEX connection_history_connection ON connection_history (connection_id, id);

-- One trigger with its statements in a fixed order, so that entries made by one change are
-- numbered the same way on both backends (refreshed, failed, status, authorized).
CREATE TRIGGER history_update AFTER UPDATE ON connections
WHEN NEW.last_refresh_at_ms IS NOT OLD.last_refresh_at_ms OR NEW.last_error IS NOT OLD.last_error
    OR NEW.refresh_failures IS NOT OLD.refresh_failures OR NEW.status IS NOT OLD.status
    OR NEW.authorized_at_ms IS NOT OLD.authorized_at_ms
BEGIN
    INSERT INTO connection_history (connection_id, at_ms, kind, until_ms)
    SELECT NEW.id, NEW.last_refresh_at_ms, 'refreshed', NEW.access_expires_at_ms
    WHERE NEW.last_refresh_at_ms IS NOT NULL AND NEW.last_refresh_at_ms IS NOT OLD.last_refresh_at_ms;

    INSERT INTO connection_history (connection_id, at_ms, kind, detail)
    SELECT NEW.id, NEW.updated_at_ms, 'refresh_failed', NEW.last_error
    WHERE NEW.last_error IS NOT NULL
      AND (NEW.last_error IS NOT OLD.last_error OR NEW.refresh_failures > OLD.refresh_failures);

    INSERT INTO connection_history (connection_id, at_ms, kind, detail)
    SELECT NEW.id, NEW.updated_at_ms, 'status', OLD.status || ' → ' || NEW.status
    WHERE NEW.status IS NOT OLD.status;

    INSERT INTO connection_history (connection_id, at_ms, kind)
    SELECT NEW.id, NEW.authorized_at_ms, 'authorized'
    WHERE NEW.authorized_at_ms IS NOT OLD.authorized_at_ms;
END;

CREATE TRIGGER history_deleted AFTER DELETE ON connections
BEGIN
    DELETE FROM connection_history WHERE connection_id = OLD.id;
END;

CREATE TRIGGER history_cap AFTER INSERT ON connection_history
BEGIN
    DELETE FROM connection_history
    WHERE connection_id = NEW.connection_id
      AND id < (SELECT id FROM connection_history WHERE connection_id = NEW.connection_id
                ORDER BY id DESC LIMIT 1 OFFSET 49);
END;
