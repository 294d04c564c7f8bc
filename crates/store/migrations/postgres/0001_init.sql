-- lwa-broker storage, PostgreSQL. The same tables and columns as `migrations/sqlite/`, so rows
-- copy across (`lwa-broker migrate-store`). Secret columns hold sealed values (`lwa1.…`) or
-- SHA-256 hex only. Times are Unix milliseconds (BIGINT). Lists are JSON text.
--
-- Key columns use the "C" collation so that ordering and paging by id match SQLite's byte order
-- whatever the database's default collation. `insert_seq` (tenants, api_keys, connections)
-- stands in for SQLite's rowid where the order of equal times is the insertion order; it is
-- filled by PostgreSQL and never copied.

CREATE TABLE meta (
    name  TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE tenants (
    id               TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    name             TEXT NOT NULL,
    redirect_origins TEXT NOT NULL CHECK (json_typeof(redirect_origins::json) = 'array'),
    sp_app           TEXT,
    ads_app          TEXT,
    webhook_url      TEXT,
    signing_secret   TEXT,
    created_at_ms    BIGINT NOT NULL,
    insert_seq       BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX tenants_created ON tenants (created_at_ms, insert_seq);

CREATE TABLE api_keys (
    id              TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id       TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    name            TEXT,
    secret_hash     TEXT NOT NULL,
    scope           TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    last_used_at_ms BIGINT,
    revoked_at_ms   BIGINT,
    insert_seq      BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at_ms, insert_seq);

CREATE TABLE oauth_states (
    state_hash     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id      TEXT COLLATE "C" NOT NULL,
    app            TEXT NOT NULL,
    api            TEXT NOT NULL,
    region         TEXT NOT NULL,
    account_type   TEXT,
    marketplace_id TEXT,
    client_state   TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    token_secret   TEXT COLLATE "C",
    code_verifier  TEXT COLLATE "C",
    connection_id  TEXT COLLATE "C",
    origin         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    used_at_ms     BIGINT
);

CREATE INDEX oauth_states_expiry ON oauth_states (expires_at_ms);

CREATE TABLE connect_links (
    token_hash     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id      TEXT COLLATE "C" NOT NULL,
    app            TEXT NOT NULL,
    api            TEXT NOT NULL,
    region         TEXT NOT NULL,
    account_type   TEXT,
    marketplace_id TEXT,
    client_state   TEXT NOT NULL,
    redirect_url   TEXT NOT NULL,
    token_secret   TEXT COLLATE "C",
    connection_id  TEXT COLLATE "C",
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    used_at_ms     BIGINT
);

CREATE INDEX connect_links_expiry ON connect_links (expires_at_ms);

CREATE TABLE connections (
    id                   TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id            TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    app                  TEXT COLLATE "C" NOT NULL,
    api                  TEXT COLLATE "C" NOT NULL,
    region               TEXT COLLATE "C" NOT NULL,
    account_type         TEXT,
    marketplace_id       TEXT,
    selling_partner_id   TEXT COLLATE "C",
    name                 TEXT,
    status               TEXT COLLATE "C" NOT NULL,
    refresh_token        TEXT COLLATE "C",
    access_token         TEXT COLLATE "C",
    access_expires_at_ms BIGINT,
    tenant_secret        BOOLEAN NOT NULL,
    profiles             TEXT NOT NULL,
    authorized_at_ms     BIGINT NOT NULL,
    last_refresh_at_ms   BIGINT,
    last_error           TEXT,
    callback_url         TEXT,
    claimed_at_ms        BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL,
    insert_seq           BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX connections_tenant_id ON connections (tenant_id, id);
CREATE INDEX connections_partner ON connections (tenant_id, app, region, selling_partner_id);
CREATE INDEX connections_status ON connections (status);

CREATE TABLE claim_codes (
    code_hash     TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    tenant_id     TEXT COLLATE "C" NOT NULL REFERENCES tenants (id),
    connection_id TEXT COLLATE "C" NOT NULL,
    token_secret  TEXT COLLATE "C",
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    used_at_ms    BIGINT
);

CREATE INDEX claim_codes_expiry ON claim_codes (expires_at_ms);
