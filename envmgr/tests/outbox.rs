//! The notification outbox against both backends: the cursor, one row per (event, sink)
//! whatever is re-read, the cursor and the rows committed together, and the pending → sent /
//! failed transitions with claims that only one sender wins. Runs on SQLite (a temp file)
//! and on Postgres (`support::postgres`, or `SLIPWAY_TEST_DATABASE_URL`).

mod support;

use std::time::Duration;

use envmgr::names::{BranchName, EnvName, RepoName};
use envmgr::store::{
    finished_run_of, now_ms, NewNotification, OutboxEntry, OutboxStatus, Phase, RunOutcome,
    RunStatus, RunTrigger, Store, UpRequest,
};
use sqlx::any::AnyPoolOptions;
use support::postgres::TestPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    run_suite(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn outbox_on_postgres() {
    let Some(pg) = TestPostgres::start().await else {
        return; // No Postgres here and not CI: `start` said so on stderr.
    };
    run_suite(pg.url()).await;
}

async fn run_suite(url: &str) {
    let store = Store::connect(url).await.expect("connect");
    the_cursor_starts_at_the_newest_event(&store).await;
    rows_are_made_once_whatever_is_re_read(&store).await;
    rows_and_cursor_commit_together(&store, url).await;
    pending_sent_and_failed(&store).await;
    a_sink_knows_when_its_next_row_is_due(&store).await;
    only_one_concurrent_claim_wins(&store).await;
    finished_test_runs_are_recognised(&store).await;
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).unwrap()
}

async fn up(store: &Store, name: &str) {
    store
        .request_up(&UpRequest {
            name: env(name),
            repo: RepoName::parse("demo").unwrap(),
            branch: BranchName::parse("main").unwrap(),
            ttl: Duration::from_secs(3600),
            actor: "ann".into(),
            pull_request: None,
        })
        .await
        .unwrap();
}

fn row(event_id: i64, sink: &str) -> NewNotification {
    NewNotification {
        event_id,
        sink: sink.into(),
        payload: format!("{{\"event\":{event_id}}}"),
    }
}

async fn rows_of(store: &Store, event_id: i64) -> Vec<OutboxEntry> {
    store.notifications_of_event(event_id).await.unwrap()
}

async fn last_event_id(store: &Store) -> i64 {
    let mut after = 0;
    loop {
        let events = store.events_after(after, 1000).await.unwrap();
        match events.last() {
            Some(last) => after = last.id,
            None => return after,
        }
    }
}

/// History before notifications were first set up notifies no one.
async fn the_cursor_starts_at_the_newest_event(store: &Store) {
    assert_eq!(store.notify_cursor().await.unwrap(), None);
    up(store, "old-one").await;
    store
        .set_phase(&env("old-one"), Phase::Ready, None, "ready")
        .await
        .unwrap();
    let newest = last_event_id(store).await;
    assert!(newest >= 2);
    assert_eq!(store.init_notify_cursor().await.unwrap(), newest);
    up(store, "old-two").await;
    assert_eq!(
        store.init_notify_cursor().await.unwrap(),
        newest,
        "set once, not moved by a second start"
    );
    let after: Vec<String> = store
        .events_after(newest, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.env)
        .collect();
    assert_eq!(after, ["old-two"], "every env's events after the cursor");
}

async fn rows_are_made_once_whatever_is_re_read(store: &Store) {
    up(store, "once").await;
    let id = last_event_id(store).await;
    let rows = [row(id, "hook"), row(id, "log")];
    assert_eq!(store.enqueue_notifications(&rows, id).await.unwrap(), 2);
    assert_eq!(store.notify_cursor().await.unwrap(), Some(id));
    // Read again (a restart before the cursor was seen, a second replica): nothing new.
    assert_eq!(store.enqueue_notifications(&rows, id).await.unwrap(), 0);
    let mut changed = row(id, "hook");
    changed.payload = "{\"other\":true}".into();
    assert_eq!(
        store.enqueue_notifications(&[changed], id).await.unwrap(),
        0
    );
    let made = rows_of(store, id).await;
    assert_eq!(made.len(), 2);
    assert_eq!(made[0].sink, "hook");
    assert_eq!(made[0].payload, format!("{{\"event\":{id}}}"), "first kept");
    assert!(made
        .iter()
        .all(|r| r.status == OutboxStatus::Pending && r.attempts == 0));
    // The cursor never moves back.
    assert_eq!(store.enqueue_notifications(&[], id - 1).await.unwrap(), 0);
    assert_eq!(store.notify_cursor().await.unwrap(), Some(id));
    // Also not when the numbers have different widths (compared as numbers, not text).
    assert_eq!(store.enqueue_notifications(&[], 100_000).await.unwrap(), 0);
    assert_eq!(store.enqueue_notifications(&[], 99_999).await.unwrap(), 0);
    assert_eq!(store.notify_cursor().await.unwrap(), Some(100_000));
    store.enqueue_notifications(&[], id).await.unwrap();
    assert_eq!(store.notify_cursor().await.unwrap(), Some(100_000));
}

/// A failure while moving the cursor leaves no rows behind: both or neither.
async fn rows_and_cursor_commit_together(store: &Store, url: &str) {
    let cursor = store.notify_cursor().await.unwrap();
    up(store, "atomic").await;
    let id = last_event_id(store).await;
    let other = AnyPoolOptions::new()
        .max_connections(1)
        .connect(&if url.starts_with("sqlite:") {
            format!("{url}?mode=rw")
        } else {
            url.to_string()
        })
        .await
        .unwrap();
    sqlx::query("ALTER TABLE meta RENAME TO meta_away")
        .execute(&other)
        .await
        .unwrap();
    let result = store
        .enqueue_notifications(&[row(id, "hook")], cursor.unwrap() + 1_000_000)
        .await;
    sqlx::query("ALTER TABLE meta_away RENAME TO meta")
        .execute(&other)
        .await
        .unwrap();
    other.close().await;
    let error = result
        .expect_err("the cursor could not be written")
        .to_string();
    assert!(error.contains("meta"), "{error}");
    assert!(rows_of(store, id).await.is_empty(), "so no row was made");
    assert_eq!(store.notify_cursor().await.unwrap(), cursor);
    assert_eq!(
        store
            .enqueue_notifications(&[row(id, "hook")], cursor.unwrap())
            .await
            .unwrap(),
        1
    );
}

async fn pending_sent_and_failed(store: &Store) {
    up(store, "deliver").await;
    let id = last_event_id(store).await;
    let cursor = store.notify_cursor().await.unwrap().unwrap();
    store
        .enqueue_notifications(&[row(id, "hook"), row(id, "log")], cursor)
        .await
        .unwrap();
    let now = now_ms();
    let due = store.due_notifications("hook", now, 100).await.unwrap();
    let entry = due
        .iter()
        .find(|e| e.event_id == id)
        .expect("a new row is due at once")
        .clone();
    assert!(
        due.iter().all(|e| e.sink == "hook"),
        "only the sink's own rows"
    );

    // Claimed: one attempt counted, leased, not due for anyone else.
    assert!(store
        .claim_notification(&entry, now, now + 60_000)
        .await
        .unwrap());
    assert!(
        !store
            .claim_notification(&entry, now, now + 60_000)
            .await
            .unwrap(),
        "a stale copy of the row cannot be claimed again"
    );
    let claimed = &rows_of(store, id).await[0];
    assert_eq!(
        (claimed.attempts, claimed.next_attempt_at),
        (1, now + 60_000)
    );
    assert!(!due_ids(store, "hook", now).await.contains(&id));
    // A sender that died: the lease ends and the row is due again.
    assert!(due_ids(store, "hook", now + 60_000).await.contains(&id));

    // A failed attempt: due again at the retry time, with the error kept.
    store
        .notification_failed(id, "hook", "HTTP 500: oops", Some(now + 2_000))
        .await
        .unwrap();
    let failed_once = rows_of(store, id).await[0].clone();
    assert_eq!(failed_once.status, OutboxStatus::Pending);
    assert_eq!(failed_once.last_error.as_deref(), Some("HTTP 500: oops"));
    assert!(!due_ids(store, "hook", now + 1_999).await.contains(&id));
    assert!(due_ids(store, "hook", now + 2_000).await.contains(&id));

    // The retry gets through.
    assert!(store
        .claim_notification(&failed_once, now + 2_000, now + 62_000)
        .await
        .unwrap());
    store.notification_sent(id, "hook").await.unwrap();
    let sent = rows_of(store, id).await[0].clone();
    assert_eq!(sent.status, OutboxStatus::Sent);
    assert_eq!(sent.attempts, 2);
    assert!(sent.sent_at.is_some() && sent.last_error.is_none());
    assert!(!due_ids(store, "hook", i64::MAX / 2).await.contains(&id));
    assert!(!store
        .claim_notification(&sent, i64::MAX / 2, i64::MAX / 2)
        .await
        .unwrap());
    // A late failure report does not undo the delivery.
    store
        .notification_failed(id, "hook", "late", None)
        .await
        .unwrap();
    assert_eq!(rows_of(store, id).await[0].status, OutboxStatus::Sent);

    // Given up: failed, never due again, and a late success does not revive it.
    let log = rows_of(store, id).await[1].clone();
    assert_eq!(log.sink, "log");
    store
        .notification_failed(id, "log", "HTTP 404: gone", None)
        .await
        .unwrap();
    let gave_up = rows_of(store, id).await[1].clone();
    assert_eq!(gave_up.status, OutboxStatus::Failed);
    assert_eq!(gave_up.last_error.as_deref(), Some("HTTP 404: gone"));
    assert!(!due_ids(store, "log", i64::MAX / 2).await.contains(&id));
    store.notification_sent(id, "log").await.unwrap();
    assert_eq!(rows_of(store, id).await[1].status, OutboxStatus::Failed);
}

/// What the notifier waits for between passes: the earliest due time of the sink's pending
/// rows, and nothing once none is pending.
async fn a_sink_knows_when_its_next_row_is_due(store: &Store) {
    assert_eq!(store.next_notification_due("later").await.unwrap(), None);
    let mut ids = Vec::new();
    for name in ["later-a", "later-b"] {
        up(store, name).await;
        let id = last_event_id(store).await;
        let cursor = store.notify_cursor().await.unwrap().unwrap();
        store
            .enqueue_notifications(&[row(id, "later"), row(id, "other")], cursor)
            .await
            .unwrap();
        ids.push(id);
    }
    let now = now_ms();
    for (id, retry_at) in ids.iter().zip([now + 9_000, now + 4_000]) {
        store
            .notification_failed(*id, "later", "HTTP 503", Some(retry_at))
            .await
            .unwrap();
    }
    assert_eq!(
        store.next_notification_due("later").await.unwrap(),
        Some(now + 4_000)
    );
    store.notification_sent(ids[1], "later").await.unwrap();
    assert_eq!(
        store.next_notification_due("later").await.unwrap(),
        Some(now + 9_000),
        "a sent row is not waited for"
    );
    store
        .notification_failed(ids[0], "later", "HTTP 404", None)
        .await
        .unwrap();
    assert_eq!(
        store.next_notification_due("later").await.unwrap(),
        None,
        "nor one given up on"
    );
    assert!(store
        .next_notification_due("other")
        .await
        .unwrap()
        .is_some());
}

async fn due_ids(store: &Store, sink: &str, now: i64) -> Vec<i64> {
    store
        .due_notifications(sink, now, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .collect()
}

/// Two senders (replicas) race for one row: exactly one may send it.
async fn only_one_concurrent_claim_wins(store: &Store) {
    up(store, "race").await;
    let id = last_event_id(store).await;
    let cursor = store.notify_cursor().await.unwrap().unwrap();
    store
        .enqueue_notifications(&[row(id, "race")], cursor)
        .await
        .unwrap();
    let now = now_ms();
    let entry = store.due_notifications("race", now, 10).await.unwrap()[0].clone();
    let claims = (0..8).map(|_| {
        let (store, entry) = (store.clone(), entry.clone());
        tokio::spawn(async move {
            store
                .claim_notification(&entry, now, now + 60_000)
                .await
                .unwrap()
        })
    });
    let mut won = 0;
    for claim in claims.collect::<Vec<_>>() {
        won += claim.await.unwrap() as usize;
    }
    assert_eq!(won, 1);
    assert_eq!(rows_of(store, id).await[0].attempts, 1);
}

/// The test-run events the notifier turns into tests.* notifications, as `finish_run`
/// writes them.
async fn finished_test_runs_are_recognised(store: &Store) {
    up(store, "tested").await;
    let before = last_event_id(store).await;
    let run = store
        .insert_run(&env("tested"), None, RunTrigger::Auto, "slipway", false)
        .await
        .unwrap();
    store.start_run(run.id, None).await.unwrap();
    store
        .finish_run(
            run.id,
            &RunOutcome {
                status: Some(RunStatus::TimedOut),
                headline: "killed after 10m".into(),
                ..RunOutcome::default()
            },
        )
        .await
        .unwrap();
    let events = store.events_after(before, 100).await.unwrap();
    let finished: Vec<Option<i64>> = events.iter().map(finished_run_of).collect();
    assert_eq!(
        finished,
        [None, Some(run.id)],
        "queued, then finished: {events:#?}"
    );
}
