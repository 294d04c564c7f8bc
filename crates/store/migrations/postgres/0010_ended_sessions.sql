-- Dashboard sessions ended by a logout, so that every process (each replica, a restarted one)
-- refuses the session's cookie, not only the one that took the logout. A session's cookie is
-- sealed and says when it expires; a row is kept until then and deleted with the other expired
-- one-time values.
CREATE TABLE ended_sessions (
    sid           TEXT COLLATE "C" PRIMARY KEY NOT NULL,
    expires_at_ms BIGINT NOT NULL
);

CREATE INDEX ended_sessions_expiry ON ended_sessions (expires_at_ms);
