//! The notification outbox: notifications derived from the event timeline, one row per
//! (event, sink) made exactly once, then delivered with retries.
//!
//! A notifier reads the timeline after a cursor (`meta.notify_cursor`), inserts the rows for
//! what it read with `ON CONFLICT DO NOTHING` and moves the cursor in the same transaction;
//! so re-reading events (after a crash, by a second replica) never makes a second row. A
//! row is delivered by whoever claims it first: a claim counts the attempt and pushes the
//! row's due time out by a lease, so two senders never send it at once and a sender that
//! dies mid-delivery leaves a row that comes due again when the lease ends.

use sqlx::any::AnyRow;

use super::{column, now_ms, Event, Store, StoreError};

const CURSOR_KEY: &str = "notify_cursor";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    Pending,
    Sent,
    /// Gave up: too many failed attempts, or not deliverable at all.
    Failed,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Sent, Self::Failed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A notification to be made for one event and one sink.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub event_id: i64,
    pub sink: String,
    /// The rendered notification (JSON), sent as it is on every attempt.
    pub payload: String,
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub event_id: i64,
    pub sink: String,
    pub status: OutboxStatus,
    /// Attempts claimed so far (a claim counts, whether or not the send finished).
    pub attempts: i64,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
    pub created_at: i64,
    pub payload: String,
}

impl OutboxEntry {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let status: String = column(row, "status")?;
        Ok(Self {
            event_id: column(row, "event_id")?,
            sink: column(row, "sink")?,
            status: OutboxStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("outbox status {status}")))?,
            attempts: column(row, "attempts")?,
            next_attempt_at: column(row, "next_attempt_at")?,
            last_error: column(row, "last_error")?,
            sent_at: column(row, "sent_at")?,
            created_at: column(row, "created_at")?,
            payload: column(row, "payload")?,
        })
    }
}

const OUTBOX_COLUMNS: &str =
    "event_id, sink, status, attempts, next_attempt_at, last_error, sent_at, created_at, payload";

/// The test run a `tests` event reports as finished, from its message ("run 7: tests
/// failed: ..."); `None` for every other event, a queued run's included.
pub fn finished_run_of(event: &Event) -> Option<i64> {
    if event.kind != "tests" {
        return None;
    }
    let rest = event.message.strip_prefix("run ")?;
    let (id, rest) = rest.split_once(": ")?;
    let outcome = rest.strip_prefix("tests ")?;
    if outcome.starts_with("queued") {
        return None;
    }
    id.parse().ok()
}

impl Store {
    /// The last event id already turned into outbox rows; `None` before the first use.
    pub async fn notify_cursor(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(CURSOR_KEY)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let text: String = column(&r, "value")?;
            text.parse()
                .map_err(|_| StoreError::Corrupt(format!("{CURSOR_KEY} = {text}")))
        })
        .transpose()
    }

    /// The cursor, set to the newest event on first use: notifications start with what
    /// happens from now on, not with the whole history.
    pub async fn init_notify_cursor(&self) -> Result<i64, StoreError> {
        if let Some(cursor) = self.notify_cursor().await? {
            return Ok(cursor);
        }
        let row = sqlx::query("SELECT MAX(id) AS last FROM events")
            .fetch_one(&self.pool)
            .await?;
        let last = column::<Option<i64>>(&row, "last")?.unwrap_or(0);
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(CURSOR_KEY)
            .bind(last.to_string())
            .execute(&self.pool)
            .await?;
        // Another replica may have set it first; its value counts.
        self.notify_cursor()
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("{CURSOR_KEY} vanished")))
    }

    /// Every env's events after `after`, oldest first.
    pub async fn events_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, env, at, kind, phase, message, actor FROM events WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Event::from_row).collect()
    }

    /// Inserts the rows that do not exist yet and moves the cursor to `cursor` (never back),
    /// in one transaction. Returns how many rows are new.
    pub async fn enqueue_notifications(
        &self,
        rows: &[NewNotification],
        cursor: i64,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut inserted = 0;
        for row in rows {
            inserted += sqlx::query(
                "INSERT INTO notification_outbox (event_id, sink, status, attempts, next_attempt_at, created_at, payload) \
                 VALUES ($1, $2, 'pending', 0, $3, $3, $4) ON CONFLICT (event_id, sink) DO NOTHING",
            )
            .bind(row.event_id)
            .bind(&row.sink)
            .bind(now)
            .bind(&row.payload)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value \
             WHERE CAST(meta.value AS BIGINT) < CAST(excluded.value AS BIGINT)",
        )
        .bind(CURSOR_KEY)
        .bind(cursor.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// The sink's pending rows due by `now`, oldest event first.
    pub async fn due_notifications(
        &self,
        sink: &str,
        now: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notification_outbox \
             WHERE sink = $1 AND status = 'pending' AND next_attempt_at <= $2 ORDER BY event_id LIMIT $3"
        ))
        .bind(sink)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(OutboxEntry::from_row).collect()
    }

    /// When the sink's next pending row falls due (unix milliseconds), if it has any.
    pub async fn next_notification_due(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(next_attempt_at) AS due FROM notification_outbox \
             WHERE sink = $1 AND status = 'pending'",
        )
        .bind(sink)
        .fetch_one(&self.pool)
        .await?;
        column::<Option<i64>>(&row, "due")
    }

    /// Claims a due row for one delivery attempt: counts the attempt and makes the row due
    /// again only at `lease_until`. `false` when someone else claimed it first (or it is no
    /// longer pending or due): then it must not be sent.
    pub async fn claim_notification(
        &self,
        entry: &OutboxEntry,
        now: i64,
        lease_until: i64,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE notification_outbox SET attempts = attempts + 1, next_attempt_at = $1 \
             WHERE event_id = $2 AND sink = $3 AND status = 'pending' AND attempts = $4 AND next_attempt_at <= $5",
        )
        .bind(lease_until)
        .bind(entry.event_id)
        .bind(&entry.sink)
        .bind(entry.attempts)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(changed == 1)
    }

    /// The sink accepted the notification.
    pub async fn notification_sent(&self, event_id: i64, sink: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE notification_outbox SET status = 'sent', sent_at = $1, last_error = NULL \
             WHERE event_id = $2 AND sink = $3 AND status = 'pending'",
        )
        .bind(now_ms())
        .bind(event_id)
        .bind(sink)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An attempt failed: due again at `retry_at`, or given up on (`None`, status failed).
    pub async fn notification_failed(
        &self,
        event_id: i64,
        sink: &str,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let query = match retry_at {
            Some(_) => {
                "UPDATE notification_outbox SET last_error = $1, next_attempt_at = $2 \
                 WHERE event_id = $3 AND sink = $4 AND status = 'pending'"
            }
            None => {
                "UPDATE notification_outbox SET last_error = $1, status = 'failed', next_attempt_at = $2 \
                 WHERE event_id = $3 AND sink = $4 AND status = 'pending'"
            }
        };
        sqlx::query(query)
            .bind(error)
            .bind(retry_at.unwrap_or_else(now_ms))
            .bind(event_id)
            .bind(sink)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The outbox rows of one event, by sink name.
    pub async fn notifications_of_event(
        &self,
        event_id: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OUTBOX_COLUMNS} FROM notification_outbox WHERE event_id = $1 ORDER BY sink"
        ))
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(OutboxEntry::from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, message: &str) -> Event {
        Event {
            id: 1,
            env: "demo-main".into(),
            at: 0,
            kind: kind.into(),
            phase: None,
            message: message.into(),
            actor: None,
        }
    }

    #[test]
    fn finished_runs_are_found_in_test_events() {
        let finished = |k, m| finished_run_of(&event(k, m));
        assert_eq!(
            finished("tests", "run 7: tests failed: 2 of 3 failed"),
            Some(7)
        );
        assert_eq!(finished("tests", "run 12: tests passed: 3 tests"), Some(12));
        assert_eq!(
            finished("tests", "run 3: tests timed out: after 10m"),
            Some(3)
        );
        assert_eq!(finished("tests", "run 3: tests error: no image"), Some(3));
        assert_eq!(finished("tests", "run 7: tests queued (auto)"), None);
        assert_eq!(
            finished("tests", "run 7: failed tests queued (manual)"),
            None
        );
        assert_eq!(finished("phase", "run 7: tests failed: x"), None);
        assert_eq!(finished("tests", "run x: tests failed: x"), None);
    }
}
