//! Notifications: one notifier, fed by the store's event timeline, delivering to sinks (the
//! server log, JSON webhooks, Discord channels) per the `[[notify]]` routes.
//!
//! The notifier runs on the engine's controller (see `envmgr::controller`), kind `notify`,
//! with two sorts of keys: `timeline`, the cursor over the event timeline, and
//! `sink:<name>`, one per sink. With several replicas on one store, each key is worked by
//! one replica at a time under its lease.
//!
//! Exactly one outbox row is ever made per (event, sink): the `timeline` pass reads the
//! timeline after the cursor, renders each notifying event once, and inserts the rows of the
//! sinks that want it together with the cursor's move, in one transaction, with `ON
//! CONFLICT DO NOTHING`. Re-reading events (a restart, a second replica, a crash between the
//! read and the commit) therefore never makes a second row, and a sent row is never sent
//! again. The pass is nudged whenever the store says an env changed, and it nudges the sinks
//! it queued rows for.
//!
//! A sink's pass claims its due rows one by one (the claim counts the attempt and leases the
//! row for `LEASE`), sends, and marks the row sent, or due again with exponential backoff, or
//! failed after `MAX_ATTEMPTS`; then it asks to be looked at again when its next row falls
//! due. What remains is the sink boundary itself: if the process dies (or loses the sink's
//! lease) after the sink accepted a notification and before the row is marked sent, the row
//! comes due again when its claim ends and the sink gets it a second time (at-least-once
//! there; a receiver can drop repeats by `slipway.event_id`).

mod discord;
mod message;
mod settings;
mod sink;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use envmgr::controller::{Action, Nudger, Reconciler, Work};
use envmgr::names::EnvName;
use envmgr::secrets::Redactors;
use envmgr::snippet::Redactor;
use envmgr::store::{now_ms, EnvRecord, Event, NewNotification, OutboxEntry, Store, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, error, info, warn};

pub use message::{Notification, NotificationKind};
pub use settings::{routes, Route, SinkDeps};
pub use sink::{Sink, SinkError};

use crate::app::App;
use message::Trigger;

/// The controller kind: the lease kind in the store and the metrics' `kind` label.
const KIND: &str = "notify";
/// The key of the pass over the event timeline.
const TIMELINE: &str = "timeline";
/// Sink keys are this and the sink's name (which has no `:`, so no sink is `timeline`).
const SINK_PREFIX: &str = "sink:";
/// While the cursor waits at a hole in the event ids, how often the timeline is read again.
const HOLE_RECHECK: Duration = Duration::from_secs(5);
/// A burst of env changes (a deploy's progress) is one nudge of the timeline.
const COALESCE: Duration = Duration::from_millis(50);
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
///
/// This is the notifier's own backoff, per outbox row, not the controller's one backoff per
/// key: a sink's key stands for all its rows, while each row keeps its own attempt count,
/// due time and give-up after [`MAX_ATTEMPTS`], in the store, so they hold across restarts
/// and replicas. The controller only learns when the sink's next row is due
/// ([`Action::Requeue`]); its backoff is left to errors of the store.
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

/// Sets the timeline cursor up when any sink is configured (on first use, at the newest
/// event). Called before the engine starts, so every event from then on is seen.
pub async fn prepare(store: &Store, routes: &[Route]) -> Result<(), StoreError> {
    if routes.is_empty() {
        return Ok(());
    }
    let cursor = store.init_notify_cursor().await?;
    let names: Vec<&str> = routes.iter().map(|r| r.name()).collect();
    info!(sinks = %names.join(", "), cursor, "notifications on");
    Ok(())
}

/// Starts the notifier's controller beside the engine's (same store, controller settings,
/// nudge bus and metrics) when any sink is configured.
pub fn start(app: &App, routes: Vec<Route>) {
    if routes.is_empty() {
        return;
    }
    let engine = &app.engine;
    let notifier = Arc::new(Notifier {
        store: engine.store().clone(),
        routes,
        public_url: app.public_url.clone(),
        redactors: engine.redactors().clone(),
        nudges: OnceLock::new(),
        repos: engine
            .settings()
            .repos
            .iter()
            .map(|r| r.name.to_string())
            .collect(),
        engine_repos: engine.settings().repos.clone(),
    });
    let nudges = engine.spawn_controller(Notifications(notifier.clone()));
    // Set before any pass can queue rows: the first pass waits for the spawned task.
    let _ = notifier.nudges.set(nudges.clone());
    tokio::spawn(nudge_on_env_changes(engine.store().clone(), nudges));
}

/// Nudges the timeline whenever the store says an env changed (its phase, its services, a
/// test run): that is when events that notify are written.
async fn nudge_on_env_changes(store: Store, nudges: Nudger) {
    let mut changes = store.subscribe();
    loop {
        match changes.recv().await {
            // Missed some: the timeline is read from the cursor anyway.
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        tokio::time::sleep(COALESCE).await;
        while changes.try_recv().is_ok() {}
        nudges.nudge(TIMELINE);
    }
}

struct Notifier {
    store: Store,
    routes: Vec<Route>,
    public_url: String,
    /// Every notification's text is redacted with its env's secrets before it is queued.
    redactors: Arc<Redactors>,
    /// Nudges the notifier's own keys (a sink that got rows); set once at the start.
    nudges: OnceLock<Nudger>,
    /// The configured repos' names, to tell which repo a queue event is about.
    repos: Vec<String>,
    /// The configured repos, to tell which channel's rollout an event is about.
    engine_repos: Vec<envmgr::RepoSettings>,
}

/// The notifier as the controller sees it.
struct Notifications(Arc<Notifier>);

#[async_trait]
impl Reconciler for Notifications {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let sinks = self.0.routes.iter().map(|r| sink_key(r.name()));
        Ok(std::iter::once(TIMELINE.to_string()).chain(sinks).collect())
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let notifier = &self.0;
        if key == TIMELINE {
            return notifier.collect_pass(work.store()).await;
        }
        let route = key
            .strip_prefix(SINK_PREFIX)
            .and_then(|name| notifier.routes.iter().find(|r| r.name() == name));
        match route {
            Some(route) => notifier.deliver_pass(work.store(), route).await,
            // A key of a sink no longer configured (nudged by another replica's config).
            None => Ok(Action::AwaitChange),
        }
    }
}

fn sink_key(name: &str) -> String {
    format!("{SINK_PREFIX}{name}")
}

impl Notifier {
    /// Turns new timeline events into outbox rows and nudges the sinks that got some.
    async fn collect_pass(&self, store: &Store) -> anyhow::Result<Action> {
        let cursor = store.init_notify_cursor().await?;
        let (next, holding, sinks) = self.collect(store, cursor).await?;
        if let Some(nudges) = self.nudges.get() {
            for sink in &sinks {
                nudges.nudge(&sink_key(sink));
            }
        }
        if holding {
            debug!(cursor = next, "waiting for a hole in the event ids to fill");
            return Ok(Action::Requeue(HOLE_RECHECK));
        }
        Ok(Action::AwaitChange)
    }

    /// Delivers the sink's due rows; then waits until its next row is due, if any.
    async fn deliver_pass(&self, store: &Store, route: &Route) -> anyhow::Result<Action> {
        loop {
            let due = store
                .due_notifications(route.name(), now_ms(), DELIVERY_BATCH)
                .await?;
            for entry in &due {
                self.deliver(store, route, entry).await?;
            }
            if (due.len() as i64) < DELIVERY_BATCH {
                break;
            }
        }
        Ok(match store.next_notification_due(route.name()).await? {
            Some(at) => {
                let wait = Duration::from_millis((at - now_ms()).max(0) as u64);
                Action::Requeue(wait.max(Duration::from_millis(50)))
            }
            None => Action::AwaitChange,
        })
    }

    /// One pass over the timeline after `cursor`: returns the new cursor, whether it waits
    /// at a hole, and the sinks that got new rows.
    async fn collect(
        &self,
        store: &Store,
        mut cursor: i64,
    ) -> Result<(i64, bool, BTreeSet<String>), StoreError> {
        let now = now_ms();
        let mut read_to = cursor;
        let mut holding = false;
        let mut sinks = BTreeSet::new();
        loop {
            let events = store.events_after(read_to, BATCH).await?;
            let Some(last) = events.last() else {
                return Ok((cursor, holding, sinks));
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
            let inserted = store.enqueue_notifications(&rows, cursor).await?;
            if inserted > 0 {
                debug!(rows = inserted, cursor, "notifications queued");
                sinks.extend(rows.into_iter().map(|row| row.sink));
            }
            if (events.len() as i64) < BATCH {
                return Ok((cursor, holding, sinks));
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
            Trigger::Queue(kind) => {
                // `<repo>-pr-42`, `<repo>-<branch>` or `<repo>-queue`: the longest
                // configured repo name it starts with.
                let repo = self
                    .repos
                    .iter()
                    .filter(|r| event.env.starts_with(&format!("{r}-")))
                    .max_by_key(|r| r.len())
                    .cloned()
                    .unwrap_or_default();
                Ok(Some(message::queue_notification(kind, event, &repo)))
            }
            Trigger::Rollout(kind) => {
                let rollout = self.rollout_of(event).await?;
                Ok(Some(message::rollout_notification(
                    kind,
                    event,
                    rollout.as_ref(),
                    &self.public_url,
                )))
            }
            Trigger::TestRun(id) => {
                let Some(run) = self.store.get_run(id).await? else {
                    return Ok(None);
                };
                if run.env.as_str() != event.env {
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

    /// The rollout a rollout event (on its release env's timeline) is about: the newest one
    /// of that channel that had begun when the event was written.
    async fn rollout_of(
        &self,
        event: &Event,
    ) -> Result<Option<envmgr::rollout::Rollout>, StoreError> {
        for repo in &self.engine_repos {
            for channel in &repo.channels {
                if channel.release_env(&repo.name).as_str() != event.env {
                    continue;
                }
                let rollouts = self.store.rollouts(&repo.name, 50).await?;
                return Ok(rollouts
                    .into_iter()
                    .filter(|r| r.channel == channel.name && r.created_at <= event.at)
                    .max_by_key(|r| r.id));
            }
        }
        Ok(None)
    }

    async fn deliver(
        &self,
        store: &Store,
        route: &Route,
        entry: &OutboxEntry,
    ) -> Result<(), StoreError> {
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
            return store.notification_failed(event_id, sink, &why, None).await;
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
                self.mark_sent(store, event_id, sink).await
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
                store
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
    async fn mark_sent(&self, store: &Store, event_id: i64, sink: &str) -> Result<(), StoreError> {
        let mut tries = 0;
        loop {
            match store.notification_sent(event_id, sink).await {
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
