//! Notifications: one notifier, fed by the store's event timeline, delivering to sinks (the
//! server log, JSON webhooks; chat later) per the `[[notify]]` routes.
//!
//! Exactly one outbox row is ever made per (event, sink): a collector reads the timeline
//! after a cursor, renders each notifying event once, and inserts the rows of the sinks
//! that want it together with the cursor's move, in one transaction, with `ON CONFLICT DO
//! NOTHING`. Re-reading events (a restart, a second replica, a crash between the read and
//! the commit) therefore never makes a second row, and a sent row is never sent again.
//!
//! Each sink has a delivery loop that claims its due rows one by one (the claim counts the
//! attempt and leases the row for `LEASE`), sends, and marks the row sent, or due again with
//! exponential backoff, or failed after `MAX_ATTEMPTS`. What remains is the sink boundary
//! itself: if the process dies after the sink accepted a notification and before the row is
//! marked sent, the row comes due again when its lease ends and the sink gets it a second
//! time (at-least-once there; a receiver can drop repeats by `slipway.event_id`).

mod discord;
mod message;
mod settings;
mod sink;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use envmgr::names::EnvName;
use envmgr::secrets::Redactors;
use envmgr::snippet::Redactor;
use envmgr::store::{now_ms, EnvRecord, Event, NewNotification, OutboxEntry, Store, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

pub use message::{Notification, NotificationKind};
pub use settings::{routes, Route, SinkDeps};
pub use sink::{Sink, SinkError};

use message::Trigger;

/// How often the timeline and the outbox are looked at without a nudge.
const TICK: Duration = Duration::from_secs(1);
/// Events read per query.
const BATCH: i64 = 200;
/// Due rows a sink takes per query.
const DELIVERY_BATCH: i64 = 50;
/// Attempts before a notification is given up on (status failed).
pub const MAX_ATTEMPTS: i64 = 10;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(300);
/// How long a claimed row is left to its sender before it is due again: well beyond the
/// longest send (`SEND_TIMEOUT`), so only a sender that died lets it come due.
const LEASE: Duration = Duration::from_secs(60);
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Events older than this when first read (a server that was down for long) notify no one,
/// and rows not delivered within it are dropped: news that old misleads more than it helps.
const MAX_AGE: Duration = Duration::from_secs(3600);
/// A hole in the event ids (a transaction that took an id and has not committed, on
/// Postgres) is waited for this long before the cursor moves past it.
const SETTLE: Duration = Duration::from_secs(60);

/// The delay before attempt `attempts + 1`, after `attempts` (1 or more) failed:
/// 1 s, 2 s, 4 s, ... at most 5 min.
pub fn backoff(attempts: i64) -> Duration {
    let exponent = attempts.clamp(1, 20) - 1;
    FIRST_RETRY.saturating_mul(1u32 << exponent).min(MAX_RETRY)
}

/// Where the cursor may move after reading `events` (ids ascending, after `cursor`): over
/// every event that directly follows it, and over holes once the event after the hole is
/// older than `SETTLE` (the id's transaction rolled back or is hopelessly late).
fn settled_cursor(cursor: i64, events: &[Event], now: i64) -> i64 {
    let settle = SETTLE.as_millis() as i64;
    let mut settled = cursor;
    for event in events {
        if event.id == settled + 1 || event.at <= now - settle {
            settled = event.id;
        } else {
            break;
        }
    }
    settled
}

struct Notifier {
    store: Store,
    routes: Vec<Route>,
    /// Wakes each route's delivery loop, by route name.
    wake: HashMap<String, Arc<Notify>>,
    public_url: String,
    /// Every notification's text is redacted with its env's secrets before it is queued.
    redactors: Arc<Redactors>,
}

/// Starts the notifier when any sink is configured. The cursor is set up before this
/// returns, so every event from then on is seen.
pub async fn start(
    routes: Vec<Route>,
    store: Store,
    public_url: String,
    redactors: Arc<Redactors>,
) -> anyhow::Result<()> {
    if routes.is_empty() {
        return Ok(());
    }
    let cursor = store.init_notify_cursor().await?;
    let names: Vec<&str> = routes.iter().map(|r| r.name()).collect();
    info!(sinks = %names.join(", "), cursor, "notifications on");
    let wake = routes
        .iter()
        .map(|r| (r.name().to_string(), Arc::new(Notify::new())))
        .collect();
    let notifier = Arc::new(Notifier {
        store,
        routes,
        wake,
        public_url,
        redactors,
    });
    for index in 0..notifier.routes.len() {
        tokio::spawn(notifier.clone().deliver_loop(index));
    }
    tokio::spawn(notifier.collect_loop(cursor));
    Ok(())
}

impl Notifier {
    /// Turns new timeline events into outbox rows, every `TICK` and whenever the store says
    /// an env changed.
    async fn collect_loop(self: Arc<Self>, mut cursor: i64) {
        let mut changes = self.store.subscribe();
        loop {
            match self.collect(cursor).await {
                Ok(next) => cursor = cursor.max(next),
                Err(e) => warn!(error = %e, "cannot turn events into notifications; will retry"),
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                changed = changes.recv() => {
                    if let Err(RecvError::Closed) = changed {
                        tokio::time::sleep(TICK).await;
                    }
                    // A burst of changes (a deploy's progress) is read in one go.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while changes.try_recv().is_ok() {}
                }
            }
        }
    }

    /// One pass over the timeline after `cursor`; returns the new cursor.
    async fn collect(&self, mut cursor: i64) -> Result<i64, StoreError> {
        let now = now_ms();
        let mut read_to = cursor;
        let mut holding = false;
        loop {
            let events = self.store.events_after(read_to, BATCH).await?;
            let Some(last) = events.last() else {
                return Ok(cursor);
            };
            read_to = last.id;
            let mut rows = Vec::new();
            for event in &events {
                if event.at < now - MAX_AGE.as_millis() as i64 {
                    continue;
                }
                let Some(notification) = self.notification_for(event).await? else {
                    continue;
                };
                let payload = serde_json::to_string(&notification)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                for route in self.routes.iter().filter(|r| r.wants(&notification)) {
                    rows.push(NewNotification {
                        event_id: event.id,
                        sink: route.name().to_string(),
                        payload: payload.clone(),
                    });
                }
            }
            if !holding {
                let next = settled_cursor(cursor, &events, now);
                holding = next < read_to;
                cursor = next;
            }
            let inserted = self.store.enqueue_notifications(&rows, cursor).await?;
            if inserted > 0 {
                debug!(rows = inserted, cursor, "notifications queued");
                for row in &rows {
                    if let Some(wake) = self.wake.get(&row.sink) {
                        wake.notify_one();
                    }
                }
            }
            if (events.len() as i64) < BATCH {
                return Ok(cursor);
            }
        }
    }

    /// The notification an event makes, if it makes one, its texts redacted.
    async fn notification_for(&self, event: &Event) -> Result<Option<Notification>, StoreError> {
        let env = match EnvName::parse(&event.env) {
            Ok(name) => self.store.get(&name).await?,
            Err(_) => None,
        };
        let redactor = match &env {
            Some(env) => self.redactors.for_env(env).await,
            None => Arc::new(Redactor::default()),
        };
        let mut notification = self.unredacted_notification(event, env).await?;
        if let Some(n) = &mut notification {
            n.redact(&redactor);
        }
        Ok(notification)
    }

    async fn unredacted_notification(
        &self,
        event: &Event,
        env: Option<EnvRecord>,
    ) -> Result<Option<Notification>, StoreError> {
        let Some(trigger) = message::trigger_of(event) else {
            return Ok(None);
        };
        match trigger {
            Trigger::Env(kind) => {
                let why_deleted = match (kind, &env) {
                    (NotificationKind::EnvDeleted, Some(env)) => {
                        let recent = self.store.recent_events(&env.name, 50).await?;
                        recent
                            .into_iter()
                            .rev()
                            .filter(|e| e.id < event.id)
                            .find(|e| {
                                e.kind == "expired"
                                    || (e.kind == "requested"
                                        && e.message.starts_with("down requested"))
                            })
                            .map(|e| e.message)
                    }
                    _ => None,
                };
                Ok(Some(message::env_notification(
                    kind,
                    event,
                    env.as_ref(),
                    why_deleted.as_deref(),
                    &self.public_url,
                )))
            }
            Trigger::TestRun(id) => {
                let Some(run) = self.store.get_run(id).await? else {
                    return Ok(None);
                };
                if run.env != event.env {
                    return Ok(None);
                }
                Ok(message::run_notification(
                    event,
                    env.as_ref(),
                    &run,
                    &self.public_url,
                ))
            }
        }
    }

    /// Delivers the route's due rows, every `TICK` and whenever rows are queued for it.
    async fn deliver_loop(self: Arc<Self>, index: usize) {
        let route = &self.routes[index];
        let wake = self.wake[route.name()].clone();
        loop {
            match self.deliver_due(route).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    warn!(sink = route.name(), error = %e, "cannot read the notification outbox; will retry")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = wake.notified() => {}
            }
        }
    }

    /// Delivers what is due now; `true` when there may be more.
    async fn deliver_due(&self, route: &Route) -> Result<bool, StoreError> {
        let due = self
            .store
            .due_notifications(route.name(), now_ms(), DELIVERY_BATCH)
            .await?;
        for entry in &due {
            self.deliver(route, entry).await?;
        }
        Ok(due.len() as i64 == DELIVERY_BATCH)
    }

    async fn deliver(&self, route: &Route, entry: &OutboxEntry) -> Result<(), StoreError> {
        let now = now_ms();
        let (event_id, sink) = (entry.event_id, route.name());
        if entry.created_at < now - MAX_AGE.as_millis() as i64 {
            let why = format!(
                "not delivered within {}; dropped",
                humantime::format_duration(MAX_AGE)
            );
            warn!(
                sink,
                event_id,
                attempts = entry.attempts,
                last_error = entry.last_error.as_deref().unwrap_or(""),
                "notification {why}"
            );
            return self
                .store
                .notification_failed(event_id, sink, &why, None)
                .await;
        }
        if !self
            .store
            .claim_notification(entry, now, now + LEASE.as_millis() as i64)
            .await?
        {
            return Ok(()); // Someone else (another replica) has it.
        }
        let attempt = entry.attempts + 1;
        let notification: Notification = match serde_json::from_str(&entry.payload) {
            Ok(n) => n,
            Err(e) => {
                let why = format!("stored notification is unreadable: {e}");
                error!(sink, event_id, "{why}");
                return self
                    .store
                    .notification_failed(event_id, sink, &why, None)
                    .await;
            }
        };
        let sent = match tokio::time::timeout(SEND_TIMEOUT, route.sink.send(&notification)).await {
            Ok(result) => result,
            Err(_) => Err(SinkError::Transport(format!(
                "no answer within {}",
                humantime::format_duration(SEND_TIMEOUT)
            ))),
        };
        match sent {
            Ok(()) => {
                debug!(sink, event_id, event = notification.kind.as_str(), env = %notification.env, attempt, "notification delivered");
                self.mark_sent(event_id, sink).await
            }
            Err(e) => {
                let text = e.to_string();
                let kind = notification.kind.as_str();
                let env = notification.env.as_str();
                if attempt >= MAX_ATTEMPTS {
                    error!(sink, event_id, event = kind, env, attempt, error = %text, "notification not delivered; giving up");
                    return self
                        .store
                        .notification_failed(event_id, sink, &text, None)
                        .await;
                }
                let delay = backoff(attempt);
                let retry = humantime::format_duration(delay).to_string();
                if e.is_client_error() {
                    warn!(sink, event_id, event = kind, env, attempt, error = %text, retry_in = %retry, "notification refused by the receiver (a client error: check the sink's url); will retry");
                } else {
                    warn!(sink, event_id, event = kind, env, attempt, error = %text, retry_in = %retry, "notification not delivered; will retry");
                }
                self.store
                    .notification_failed(
                        event_id,
                        sink,
                        &text,
                        Some(now_ms() + delay.as_millis() as i64),
                    )
                    .await
            }
        }
    }

    /// Marks a delivered row sent, trying hard: until it is, a crash would send it again.
    async fn mark_sent(&self, event_id: i64, sink: &str) -> Result<(), StoreError> {
        let mut tries = 0;
        loop {
            match self.store.notification_sent(event_id, sink).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    warn!(sink, event_id, error = %e, "cannot mark the notification sent; trying again");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, at: i64) -> Event {
        Event {
            id,
            env: "demo-main".into(),
            at,
            kind: "phase".into(),
            phase: None,
            message: String::new(),
            actor: None,
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=MAX_ATTEMPTS).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff(0), FIRST_RETRY);
        assert_eq!(backoff(1_000), MAX_RETRY);
        // Given up after MAX_ATTEMPTS: the waits before the last attempt add up to ~8.5 min.
        let total: u64 = (1..MAX_ATTEMPTS).map(|a| backoff(a).as_secs()).sum();
        assert_eq!(total, 511);
    }

    #[test]
    fn the_cursor_moves_over_contiguous_events_and_settled_holes_only() {
        let now = 1_000_000;
        let fresh = now - 10;
        let old = now - SETTLE.as_millis() as i64 - 1;
        let ids = |events: &[(i64, i64)]| -> Vec<Event> {
            events.iter().map(|(id, at)| event(*id, *at)).collect()
        };
        assert_eq!(settled_cursor(5, &ids(&[(6, fresh), (7, fresh)]), now), 7);
        // 8 is missing and 9 is fresh: 8 may still commit.
        assert_eq!(
            settled_cursor(5, &ids(&[(6, fresh), (7, fresh), (9, fresh)]), now),
            7
        );
        // ... once 9 is old, the hole is given up on.
        assert_eq!(
            settled_cursor(5, &ids(&[(6, old), (7, old), (9, old), (10, fresh)]), now),
            10
        );
        assert_eq!(settled_cursor(5, &[], now), 5);
    }
}
