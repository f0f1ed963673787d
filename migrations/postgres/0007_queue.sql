-- The submit queue. `queue_entries` holds each change someone asked to land: surfaces
-- write what is wanted (`desired`: queued or removed; `generation` grows with each retry),
-- the queue reconciler writes what happened (`state`, `attempts`, `reason`). One live
-- entry per change and repo. Times are unix milliseconds.
CREATE TABLE queue_entries (
    id            BIGSERIAL PRIMARY KEY,
    repo          TEXT NOT NULL,
    target        TEXT NOT NULL,
    change_key    TEXT NOT NULL,
    pr_number     BIGINT,
    branch        TEXT,
    head_sha      TEXT NOT NULL,
    title         TEXT NOT NULL,
    priority      BIGINT NOT NULL DEFAULT 0,
    requested_by  TEXT NOT NULL,
    desired       TEXT NOT NULL,
    generation    BIGINT NOT NULL DEFAULT 1,
    remove_reason TEXT,
    state         TEXT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    reason        TEXT,
    merged_commit TEXT,
    enqueued_at   BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    tested_ms     BIGINT
);
CREATE UNIQUE INDEX queue_entries_one_live ON queue_entries (repo, change_key)
    WHERE state IN ('queued', 'testing', 'passed') AND desired = 'queued';
CREATE INDEX queue_entries_by_repo ON queue_entries (repo, id);

-- One row per queue (repo and target branch): whether it is paused (surface-owned) and the
-- scheduler's own state as one JSON document (reconciler-owned, written under its lease).
CREATE TABLE queues (
    repo         TEXT NOT NULL,
    target       TEXT NOT NULL,
    paused       BIGINT NOT NULL DEFAULT 0,
    pause_reason TEXT,
    paused_by    TEXT,
    doc          TEXT NOT NULL DEFAULT '{}',
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (repo, target)
);

-- Test outcomes by git tree: a tree that passed is never tested again, whichever candidate
-- (or retry) built it.
CREATE TABLE queue_trees (
    repo      TEXT NOT NULL,
    tree      TEXT NOT NULL,
    passed    BIGINT NOT NULL,
    run_id    BIGINT,
    flaky     TEXT NOT NULL DEFAULT '[]',
    tested_at BIGINT NOT NULL,
    PRIMARY KEY (repo, tree)
);
