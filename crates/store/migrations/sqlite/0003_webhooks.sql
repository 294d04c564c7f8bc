-- Webhooks: the durable outbox. An event is written in the same transaction as the state
-- change that caused it, with one delivery per target; the delivery worker works through the
-- deliveries, in order per (connection, target).

CREATE TABLE webhook_events (
    -- The order of events: deliveries of one connection to one target follow it.
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    -- `evt_…`, stable: the `id` in the body and the `webhook-id` header of every attempt.
    id            TEXT NOT NULL UNIQUE,
    -- NULL for operator events.
    tenant_id     TEXT,
    connection_id TEXT,
    event_type    TEXT NOT NULL,
    -- The JSON body exactly as delivered.
    body          TEXT NOT NULL CHECK (json_valid(body)),
    created_at_ms INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_events_connection ON webhook_events (connection_id, seq);

CREATE TABLE webhook_deliveries (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq          INTEGER NOT NULL REFERENCES webhook_events (seq),
    -- Copied from the event, for the tenant's delivery log.
    tenant_id          TEXT,
    target             TEXT NOT NULL CHECK (target IN ('tenant', 'callback', 'operator')),
    url                TEXT NOT NULL,
    -- Deliveries with the same key go out one at a time, in event order.
    order_key          TEXT NOT NULL,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    -- When a pending delivery is due (a claimed one: when its claim lapses).
    next_attempt_at_ms INTEGER NOT NULL,
    -- After this, a failed attempt gives up (24 hours after the event, or after a retry).
    expires_at_ms      INTEGER NOT NULL,
    last_attempt_at_ms INTEGER,
    last_status        INTEGER,
    last_error         TEXT,
    delivered_at_ms    INTEGER,
    created_at_ms      INTEGER NOT NULL
) STRICT;

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at_ms);
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (order_key, state, id);
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id, id);
