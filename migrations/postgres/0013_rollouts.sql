-- Monitored rollouts. `rollouts` holds one row per release of a version into a channel:
-- surfaces write what is wanted (a new row; `paused`, `promote_asked`, `rollback_asked`,
-- `approved_by`), the rollout reconciler writes what happened (`state`, `step`,
-- `canary_weight`, `reason`, `comparison`, `decision`). The front door reads
-- `canary_weight` to split traffic. Times are unix milliseconds.
CREATE TABLE rollouts (
    id              BIGSERIAL PRIMARY KEY,
    repo            TEXT NOT NULL,
    channel         TEXT NOT NULL,
    -- The long-lived env that serves the channel (`<repo>-<channel>`) and the env that runs
    -- the canary copies during the rollout (`<repo>-<channel>-canary`).
    release_env     TEXT NOT NULL,
    canary_env      TEXT NOT NULL,
    -- The version at 100% when the rollout began (NULL: the channel's first release).
    from_commit     TEXT,
    to_commit       TEXT NOT NULL,
    -- What was asked for: a branch or commit as typed, or `queue` for a landed change.
    source          TEXT NOT NULL,
    state           TEXT NOT NULL,
    -- Index into the channel's steps; `canary_weight` is what the front door applies
    -- (per mille of requests to the canary).
    step            BIGINT NOT NULL DEFAULT 0,
    canary_weight   BIGINT NOT NULL DEFAULT 0,
    step_started_at BIGINT,
    reason          TEXT,
    paused          BIGINT NOT NULL DEFAULT 0,
    promote_asked   BIGINT NOT NULL DEFAULT 0,
    rollback_asked  TEXT,
    approved_by     TEXT,
    approved_step   BIGINT,
    comparison      TEXT,
    decision        TEXT,
    metric_error_since BIGINT,
    requested_by    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX rollouts_by_channel ON rollouts (repo, channel, id);
CREATE INDEX rollouts_live ON rollouts (state);

-- One row per release channel: the version at 100% there, and a manual freeze.
CREATE TABLE channels (
    repo          TEXT NOT NULL,
    channel       TEXT NOT NULL,
    version       TEXT,
    reached_at    BIGINT,
    frozen_reason TEXT,
    frozen_by     TEXT,
    frozen_at     BIGINT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (repo, channel)
);

-- What the front door measured per rollout, version (`stable` or `canary`) and second,
-- one row per front-door process (`writer`), so replicas never add into one row. `latency`
-- is a JSON latency histogram (see envmgr::rollout::traffic).
CREATE TABLE rollout_traffic (
    rollout_id BIGINT NOT NULL,
    version    TEXT NOT NULL,
    bucket_at  BIGINT NOT NULL,
    writer     TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    errors     BIGINT NOT NULL,
    latency    TEXT NOT NULL,
    PRIMARY KEY (rollout_id, version, bucket_at, writer)
);
