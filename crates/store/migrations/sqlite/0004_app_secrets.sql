-- LWA client-secret rotation: each app's current and previous client secret, sealed (AEAD owner
-- `app:<name>`, fields `client_secret` and `previous_client_secret`), with their dates.

CREATE TABLE app_secrets (
    app                    TEXT PRIMARY KEY,
    client_id              TEXT NOT NULL,
    -- Sealed newest secret and when the broker learned it (taken as its issue date).
    secret                 TEXT NOT NULL,
    secret_issued_at_ms    INTEGER NOT NULL,
    -- Sealed secret it replaced, its issue date, and when Amazon stops taking it
    -- (`oldClientSecretExpiryTime`, else seven days after the replacement).
    previous_secret        TEXT,
    previous_issued_at_ms  INTEGER,
    previous_expires_at_ms INTEGER,
    -- `clientSecretExpiryTime` of the last APPLICATION_OAUTH_CLIENT_SECRET_EXPIRY notification.
    announced_expiry_at_ms INTEGER,
    -- SHA-256 (hex) of the secret the configuration held when it was last applied: a configured
    -- secret counts as newly set only when the configuration changes, never because the
    -- database moved on through rotations.
    config_secret_sha256   TEXT,
    -- Expiry warnings already given for the current secret: days before the 180-day deadline,
    -- comma-separated (`30,7`).
    warnings_sent          TEXT NOT NULL DEFAULT '',
    -- Increases on every change, so a writer can refuse to overwrite a newer row.
    version                INTEGER NOT NULL,
    updated_at_ms          INTEGER NOT NULL
) STRICT;
