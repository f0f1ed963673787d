-- Environments: desired state (what was asked), observed state (what the reconciler saw),
-- and the append-only event timeline. Times are unix milliseconds.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE envs (
    name                TEXT PRIMARY KEY,
    repo                TEXT NOT NULL,
    branch              TEXT NOT NULL,
    requested_by        TEXT NOT NULL,
    desired             TEXT NOT NULL,
    generation          BIGINT NOT NULL,
    observed_generation BIGINT NOT NULL DEFAULT 0,
    ttl_ms              BIGINT NOT NULL,
    expires_at          BIGINT NOT NULL,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    commit_sha          TEXT,
    phase               TEXT NOT NULL,
    reason              TEXT,
    services            TEXT NOT NULL DEFAULT '[]',
    warnings            TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    env     TEXT NOT NULL,
    at      BIGINT NOT NULL,
    kind    TEXT NOT NULL,
    phase   TEXT,
    message TEXT NOT NULL,
    actor   TEXT
);
CREATE INDEX events_by_env ON events (env, id);
