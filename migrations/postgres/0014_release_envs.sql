-- What an env is to the rollouts: NULL for an ordinary env (branch, pull request, queue
-- candidate, shared), `release:<channel>` for the long-lived env serving a release channel,
-- `canary:<rollout id>` for the env running a rollout's canary copies. The env reconciler
-- plans such envs differently (every service in the release env, only the changed ones plus
-- the entry service in the canary env) and never runs their integration tests.
ALTER TABLE envs ADD COLUMN role TEXT;
-- When a rollout that reached 100% handed its version on to the next channel (or found
-- there was none to hand it to): the rollout reconciler's bookkeeping after `soak`.
ALTER TABLE rollouts ADD COLUMN handed_on_at BIGINT;
