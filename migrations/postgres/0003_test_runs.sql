-- Integration test runs in environments. `snippet_*` are the failure summaries rendered for
-- each place they go (check run text, PR comment, chat), secrets already redacted; the full
-- log is a gzip file under data_dir (`log_path`).
CREATE TABLE test_runs (
    id            BIGSERIAL PRIMARY KEY,
    env           TEXT NOT NULL,
    commit_sha    TEXT,
    trigger_kind  TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    failed_only   BIGINT NOT NULL,
    status        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    exit_code     BIGINT,
    headline      TEXT,
    results       TEXT NOT NULL DEFAULT '[]',
    snippet_check TEXT,
    snippet_comment TEXT,
    snippet_chat  TEXT,
    log_path      TEXT,
    check_run_id  BIGINT,
    check_state   TEXT
);
CREATE INDEX test_runs_by_env ON test_runs (env, id);
