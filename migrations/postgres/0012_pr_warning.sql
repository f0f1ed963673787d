-- The deletion deadline a PR was last told about in its own comment (unix milliseconds), so
-- each warning is posted once per deadline, whichever replica reports the PR.
ALTER TABLE pull_requests ADD COLUMN warned_for BIGINT;
