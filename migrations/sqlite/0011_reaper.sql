-- When the reconciler found an env's branch gone from its repo (unix milliseconds; NULL
-- while it exists): the env is deleted `warn_before` later unless the branch comes back
-- or the env is pinned.
ALTER TABLE envs ADD COLUMN branch_gone_at BIGINT;

-- Images this instance built (or reused) for its envs, and when an env last used each:
-- the reaper removes one nobody used for `image_retention`. Built images are shared by
-- content between instances on one engine, so only those listed here are this instance's.
CREATE TABLE built_images (
    reference    TEXT PRIMARY KEY,
    env          TEXT NOT NULL,
    last_used_at BIGINT NOT NULL
);
