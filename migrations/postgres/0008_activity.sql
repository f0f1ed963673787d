-- When the front door last passed a request to the env (unix milliseconds), for idle
-- tracking. Written at most every few seconds per env; NULL: never.
ALTER TABLE envs ADD COLUMN last_request_at BIGINT;
