//! The audit log against both backends: entries come back newest first, paged by id either
//! way, stamped with the time, long fields shortened, concurrent writers each get their row.
//! Runs on SQLite (a temp file) and on Postgres (`support::postgres`, or
//! `SLIPWAY_TEST_DATABASE_URL`).

mod support;

use envmgr::store::{now_ms, NewAuditEntry, Store};
use support::postgres::TestPostgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_log_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    run_suite(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_log_on_postgres() {
    let Some(pg) = TestPostgres::start().await else {
        return; // No Postgres here and not CI: `start` said so on stderr.
    };
    run_suite(pg.url()).await;
}

fn entry(actor: &str, command: &str, outcome: &str) -> NewAuditEntry {
    NewAuditEntry {
        surface: "github".into(),
        actor: actor.into(),
        place: "pr acme/shop#7".into(),
        command: command.into(),
        outcome: outcome.into(),
    }
}

async fn run_suite(url: &str) {
    let store = Store::connect(url).await.expect("connect");
    assert!(store.audit_entries(10, 0).await.unwrap().is_empty());

    let before = now_ms();
    let first = store
        .record_audit(&entry("github:alice", "env up", "ok"))
        .await
        .unwrap();
    let second = store
        .record_audit(&entry(
            "github:bob",
            "env down",
            "refused: `env down` needs the developer role; you have viewer.",
        ))
        .await
        .unwrap();
    let third = store
        .record_audit(&NewAuditEntry {
            surface: "api".into(),
            actor: "api:carol".into(),
            place: "api".into(),
            command: "test demo-main --failed".into(),
            outcome: "error: no environment `demo-main`".into(),
        })
        .await
        .unwrap();
    assert!(first < second && second < third);

    // Newest first, every field as written.
    let all = store.audit_entries(10, 0).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.id).collect::<Vec<_>>(),
        [third, second, first]
    );
    let newest = &all[0];
    assert_eq!(newest.surface, "api");
    assert_eq!(newest.actor, "api:carol");
    assert_eq!(newest.place, "api");
    assert_eq!(newest.command, "test demo-main --failed");
    assert_eq!(newest.outcome, "error: no environment `demo-main`");
    assert!(all.iter().all(|e| e.at >= before && e.at <= now_ms()));
    assert_eq!(all[1].actor, "github:bob");
    assert_eq!(all[1].place, "pr acme/shop#7");
    assert!(all[1].outcome.starts_with("refused: "));

    // Limits and paging either way.
    let newest_only = store.audit_entries(1, 0).await.unwrap();
    assert_eq!(newest_only.len(), 1);
    assert_eq!(newest_only[0].id, third);
    let newer = store.audit_entries(10, first).await.unwrap();
    assert_eq!(
        newer.iter().map(|e| e.id).collect::<Vec<_>>(),
        [third, second]
    );
    let older = store.audit_entries_before(10, third).await.unwrap();
    assert_eq!(
        older.iter().map(|e| e.id).collect::<Vec<_>>(),
        [second, first]
    );
    let older = store.audit_entries_before(1, third).await.unwrap();
    assert_eq!(older.iter().map(|e| e.id).collect::<Vec<_>>(), [second]);
    assert!(store.audit_entries(0, 0).await.unwrap().is_empty());

    // Over-long text is shortened, not refused.
    let long = "x".repeat(5000);
    let id = store
        .record_audit(&entry("github:alice", &long, "ok"))
        .await
        .unwrap();
    let stored = store.audit_entries(1, id - 1).await.unwrap();
    assert_eq!(stored[0].command.chars().count(), 1000);
    assert!(stored[0].command.ends_with('…'));

    // Concurrent writers each get a row of their own.
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .record_audit(&entry(&format!("discord:{i}"), "env list", "ok"))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for writer in writers {
        ids.push(writer.await.unwrap());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(store.audit_entries(100, id).await.unwrap().len(), 10);

    // Reconnecting keeps the log (the migration runs once).
    drop(store);
    let store = Store::connect(url).await.expect("reconnect");
    assert_eq!(store.audit_entries(1000, 0).await.unwrap().len(), 14);
}
