-- Notifications: one outbox row per (timeline event, sink), made once and never again, so a
-- notification is sent at most once per event and sink, also across restarts and replicas.
-- `status` is pending, sent or failed (gave up); a pending row is due at `next_attempt_at`
-- (a delivery in flight pushes it out by a lease, so a crashed sender's row comes due again).
-- `payload` is the notification as rendered when the row was made (JSON). The timeline
-- position already turned into rows is kept in `meta` under `notify_cursor`.
CREATE TABLE notification_outbox (
    event_id        BIGINT NOT NULL,
    sink            TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    last_error      TEXT,
    sent_at         BIGINT,
    created_at      BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    PRIMARY KEY (event_id, sink)
);
CREATE INDEX notification_outbox_due ON notification_outbox (sink, status, next_attempt_at);
