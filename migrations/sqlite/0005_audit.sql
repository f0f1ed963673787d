-- The audit log: every command from every surface (CLI, HTTP API, GitHub comments, Discord),
-- who asked, where, what, and how it ended. Append-only. `at` is unix milliseconds;
-- `surface` is cli, api, github or discord; `actor` is e.g. github:alice or discord:1234;
-- `place` is e.g. "pr acme/shop#7", "discord guild 1 channel 2" or "api"; `command` is the
-- command in its canonical text form; `outcome` is "ok", "refused: ..." or "error: ...".
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    surface TEXT NOT NULL,
    actor   TEXT NOT NULL,
    place   TEXT NOT NULL,
    command TEXT NOT NULL,
    outcome TEXT NOT NULL
);
