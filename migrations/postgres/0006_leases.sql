-- Leases: which replica works on which key right now. One row per (kind, key), kept after
-- release so `token` only ever grows: every new holder gets a larger token, and a write that
-- carries an older token (a replica that paused past its lease) is refused. `expires_at` is
-- in milliseconds since the epoch; a lease is held while it lies in the future.
CREATE TABLE leases (
    kind       TEXT NOT NULL,
    lease_key  TEXT NOT NULL,
    holder     TEXT NOT NULL,
    token      BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (kind, lease_key)
);
CREATE INDEX leases_by_holder ON leases (holder, expires_at);
