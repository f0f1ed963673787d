-- The memory an env reserves: its services' memory limits summed, as the compose planner
-- resolved them (with the configured defaults). Written at each deploy; read by the
-- `max_memory` quota. 0 until the env's compose file has been planned.
ALTER TABLE envs ADD COLUMN memory_bytes BIGINT NOT NULL DEFAULT 0;
