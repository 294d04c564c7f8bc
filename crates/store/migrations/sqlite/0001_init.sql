-- lwa-broker storage, SQLite. Secret columns hold sealed values (`lwa1.…`) or SHA-256 hex only.
-- Times are Unix milliseconds. Booleans are INTEGER 0/1. Lists are JSON text.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    redirect_origins TEXT NOT NULL CHECK (json_valid(redirect_origins) AND json_type(redirect_origins) = 'array'),
    sp_app           TEXT,
    ads_app          TEXT,
    webhook_url      TEXT,
    signing_secret   TEXT,
    created_at_ms    INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id),
    name            TEXT,
    secret_hash     TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    last_used_at_ms INTEGER,
    revoked_at_ms   INTEGER
) STRICT;

CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE oauth_states (
    state_hash     TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    app            TEXT NOT NULL,
    api            TEXT NOT NULL,
    region         TEXT NOT NULL,
    account_type   TEXT,
    marketplace_id TEXT,
    client_state   TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    token_secret   TEXT,
    code_verifier  TEXT,
    connection_id  TEXT,
    origin         TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER
) STRICT;

CREATE INDEX oauth_states_expiry ON oauth_states (expires_at_ms);

CREATE TABLE connect_links (
    token_hash     TEXT PRIMARY KEY NOT NULL,
    tenant_id      TEXT NOT NULL,
    app            TEXT NOT NULL,
    api            TEXT NOT NULL,
    region         TEXT NOT NULL,
    account_type   TEXT,
    marketplace_id TEXT,
    client_state   TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    token_secret   TEXT,
    connection_id  TEXT,
    created_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    used_at_ms     INTEGER
) STRICT;

CREATE INDEX connect_links_expiry ON connect_links (expires_at_ms);

CREATE TABLE connections (
    id                   TEXT PRIMARY KEY NOT NULL,
    tenant_id            TEXT NOT NULL REFERENCES tenants (id),
    app                  TEXT NOT NULL,
    api                  TEXT NOT NULL,
    region               TEXT NOT NULL,
    account_type         TEXT,
    marketplace_id       TEXT,
    selling_partner_id   TEXT,
    name                 TEXT,
    status               TEXT NOT NULL,
    refresh_token        TEXT,
    access_token         TEXT,
    access_expires_at_ms INTEGER,
    tenant_secret        INTEGER NOT NULL CHECK (tenant_secret IN (0, 1)),
    profiles             TEXT NOT NULL,
    authorized_at_ms     INTEGER NOT NULL,
    last_refresh_at_ms   INTEGER,
    last_error           TEXT,
    callback_url         TEXT,
    claimed_at_ms        INTEGER,
    created_at_ms        INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL
) STRICT;

CREATE INDEX connections_tenant_id ON connections (tenant_id, id);
CREATE INDEX connections_partner ON connections (tenant_id, app, region, selling_partner_id);
CREATE INDEX connections_status ON connections (status);

CREATE TABLE claim_codes (
    code_hash     TEXT PRIMARY KEY NOT NULL,
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    connection_id TEXT NOT NULL,
    token_secret  TEXT,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms    INTEGER
) STRICT;

CREATE INDEX claim_codes_expiry ON claim_codes (expires_at_ms);
