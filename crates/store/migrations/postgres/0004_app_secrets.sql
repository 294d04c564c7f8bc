-- LWA client-secret rotation: each app's current and previous client secret, sealed (AEAD owner
-- `app:<name>`, fields `client_secret` and `previous_client_secret`), with their dates. See
-- `migrations/sqlite/0004_app_secrets.sql` for each column.

CREATE TABLE app_secrets (
    app                    TEXT COLLATE "C" PRIMARY KEY,
    client_id              TEXT NOT NULL,
    secret                 TEXT COLLATE "C" NOT NULL,
    secret_issued_at_ms    BIGINT NOT NULL,
    previous_secret        TEXT COLLATE "C",
    previous_issued_at_ms  BIGINT,
    previous_expires_at_ms BIGINT,
    announced_expiry_at_ms BIGINT,
    config_secret_sha256   TEXT,
    warnings_sent          TEXT NOT NULL DEFAULT '',
    version                BIGINT NOT NULL,
    updated_at_ms          BIGINT NOT NULL
);
