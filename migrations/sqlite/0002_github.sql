-- Pull-request environments and the GitHub surface.

-- What to fetch for an env when it is not the branch itself (e.g. refs/pull/7/head), the PR it
-- serves, and the commit the fetch must yield (the PR's head as GitHub reported it).
ALTER TABLE envs ADD COLUMN git_ref TEXT;
ALTER TABLE envs ADD COLUMN pr_number BIGINT;
ALTER TABLE envs ADD COLUMN want_commit TEXT;

-- Every webhook delivery Slipway handles, stored before it is acknowledged; `processed_at`
-- stays NULL until it has been acted on, so a crash in between loses nothing.
CREATE TABLE webhook_deliveries (
    id           TEXT PRIMARY KEY,
    event        TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    payload      TEXT NOT NULL,
    processed_at BIGINT,
    outcome      TEXT
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (processed_at, received_at);

-- Each pull request Slipway serves: its latest head, fork approval, and what Slipway last
-- posted back (the sticky comment, the deployment, the commit status), so reporting is
-- idempotent and never duplicates.
CREATE TABLE pull_requests (
    repo             TEXT NOT NULL,
    number           BIGINT NOT NULL,
    github_repo      TEXT NOT NULL,
    env              TEXT NOT NULL,
    state            TEXT NOT NULL,
    head_sha         TEXT NOT NULL,
    head_ref         TEXT NOT NULL,
    is_fork          BIGINT NOT NULL,
    is_draft         BIGINT NOT NULL,
    skip             BIGINT NOT NULL,
    approved_sha     TEXT,
    approved_by      TEXT,
    comment_id       BIGINT,
    comment_body     TEXT,
    deployment_id    BIGINT,
    deployment_sha   TEXT,
    deployment_state TEXT,
    status_sha       TEXT,
    status_state     TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (repo, number)
);
