-- Idle envs: what was asked (asleep, pinned), the signals of use Slipway records itself
-- (the newest deploy request, the last command naming the env), when it went to sleep,
-- and the deletion warning last given (when, and for which deadline). Unix milliseconds.
ALTER TABLE envs ADD COLUMN asleep BIGINT NOT NULL DEFAULT 0;
ALTER TABLE envs ADD COLUMN pinned BIGINT NOT NULL DEFAULT 0;
ALTER TABLE envs ADD COLUMN requested_at BIGINT;
ALTER TABLE envs ADD COLUMN last_command_at BIGINT;
ALTER TABLE envs ADD COLUMN slept_at BIGINT;
ALTER TABLE envs ADD COLUMN warned_at BIGINT;
ALTER TABLE envs ADD COLUMN warned_for BIGINT;
