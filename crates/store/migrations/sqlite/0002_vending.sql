-- Token vending: the audit trail of tokens handed out.

CREATE TABLE audit_events (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms         INTEGER NOT NULL,
    last_at_ms    INTEGER NOT NULL,
    count         INTEGER NOT NULL CHECK (count > 0),
    tenant_id     TEXT NOT NULL,
    key_id        TEXT NOT NULL,
    connection_id TEXT,
    kind          TEXT NOT NULL,
    via           TEXT NOT NULL,
    detail        TEXT
) STRICT;

CREATE INDEX audit_events_tenant ON audit_events (tenant_id, id);
CREATE INDEX audit_events_connection ON audit_events (connection_id, id);
