//! The store against both backends. The suite is written once, taking a `Store`, and runs on
//! SQLite (a file in a temp dir) and on Postgres (a throwaway cluster started by
//! `support::postgres`, or a fresh database in `SLIPWAY_TEST_DATABASE_URL`).
//!
//! The cases share one store and run one after the other, each on env names of its own;
//! the cases that look at every env (`list`, `expire_due`, `next_expiry`) say what they
//! expect of the others.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use envmgr::names::{BranchName, CommitSha, EnvName, PrNumber, RepoName};
use envmgr::queue::machine::EntryState;
use envmgr::runtime::{Protocol, PublishedPort};
use envmgr::store::{
    Backend, Desired, EnvRecord, Event, Phase, PullRequestSource, PullRow, PullState, RunStatus,
    RunTrigger, ServiceStatus, Store, UpRequest,
};
use envmgr::store::{Change, EntryUpdate, NewQueueEntry, StoreError};
use support::postgres::TestPostgres;

/// The TTL of every env except the expiry case's.
const LONG_TTL: Duration = Duration::from_secs(8 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_suite_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    run_suite(&url, Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_suite_on_postgres() {
    let Some(pg) = TestPostgres::start().await else {
        return; // No Postgres here and not CI: `start` said so on stderr.
    };
    run_suite(pg.url(), Backend::Postgres).await;
}

async fn run_suite(url: &str, backend: Backend) {
    let store = connecting_migrates_idempotently(url, backend).await;
    up_creates_a_pending_env(store.clone()).await;
    second_up_bumps_generation(store.clone()).await;
    concurrent_ups_each_bump_generation_once(store.clone()).await;
    set_phase_records_changes_only(store.clone()).await;
    request_down(store.clone()).await;
    up_after_deleted_starts_afresh(store.clone()).await;
    observed_state_roundtrips(store.clone()).await;
    pull_request_source_roundtrips(store.clone()).await;
    names_are_never_moved(store.clone()).await;
    pull_rows_and_test_runs_come_back_typed(store.clone()).await;
    extend_is_checked_and_capped(store.clone()).await;
    delivery_bodies_are_pruned_ids_kept(store.clone()).await;
    events_are_paged_in_order(store.clone()).await;
    list_hides_deleted_envs(store.clone()).await;
    expiry(store.clone()).await;
    leases_are_exclusive_and_fence_stale_writes(store.clone()).await;
    queue_entries_one_live_per_change(store.clone()).await;
    request_activity_is_debounced_and_never_goes_back(store.clone()).await;
    branch_presence_is_recorded_once_and_a_deletion_needs_it_unchanged(store.clone()).await;
    built_image_use_never_goes_back_and_is_forgotten_only_if_unchanged(store.clone()).await;
    // Last: its installation-wide cap counts every env the cases above left.
    quotas_refuse_new_envs_atomically(store.clone()).await;
}

/// The front door's request times: the first is written, more within the debounce window
/// are not, a later one is, and a time older than the stored one never replaces it.
async fn request_activity_is_debounced_and_never_goes_back(store: Store) {
    let name = store
        .request_up(&up("busy", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    assert_eq!(get(&store, "busy").await.idle.last_request_at, None);
    let t0 = 1_000_000;
    assert!(store.activity_due(&name, t0));
    assert!(store.record_request_activity(&name, t0).await.unwrap());
    assert!(!store.activity_due(&name, t0 + 5_000));
    assert!(!store
        .record_request_activity(&name, t0 + 5_000)
        .await
        .unwrap());
    assert_eq!(get(&store, "busy").await.idle.last_request_at, Some(t0));
    let later = t0 + envmgr::store::ACTIVITY_DEBOUNCE.as_millis() as i64;
    assert!(store.record_request_activity(&name, later).await.unwrap());
    assert_eq!(get(&store, "busy").await.idle.last_request_at, Some(later));
    // Another process (its own debounce map) whose request is older: the newer time stays.
    let other = Store::connect(store.url()).await.unwrap();
    assert!(other.record_request_activity(&name, t0).await.unwrap());
    assert_eq!(get(&store, "busy").await.idle.last_request_at, Some(later));
}

/// A branch found gone is written (with its event) once; it comes back once; a deletion for
/// it only happens while the env is still marked with the time the caller read, unpinned.
async fn branch_presence_is_recorded_once_and_a_deletion_needs_it_unchanged(store: Store) {
    let name = store
        .request_up(&up("gone", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    assert!(store
        .record_branch_presence(&name, Some(1_000))
        .await
        .unwrap());
    assert!(!store
        .record_branch_presence(&name, Some(2_000))
        .await
        .unwrap());
    assert_eq!(get(&store, "gone").await.idle.branch_gone_at, Some(1_000));
    assert!(store.record_branch_presence(&name, None).await.unwrap());
    assert!(!store.record_branch_presence(&name, None).await.unwrap());
    assert!(
        !store
            .delete_branch_gone(&name, 1_000, "gone")
            .await
            .unwrap(),
        "came back"
    );
    let said: Vec<String> = all_events(&store, "gone")
        .await
        .into_iter()
        .filter(|e| e.kind == envmgr::store::BRANCH_EVENT)
        .map(|e| e.message)
        .collect();
    assert_eq!(
        said,
        vec![
            "branch feature/gone is gone from the repository".to_string(),
            "branch feature/gone is back: the env is no longer deleted for it".to_string()
        ]
    );
    assert!(store
        .record_branch_presence(&name, Some(3_000))
        .await
        .unwrap());
    store.set_pinned(&name, true, "alice").await.unwrap();
    assert!(
        !store
            .delete_branch_gone(&name, 3_000, "gone")
            .await
            .unwrap(),
        "pinned"
    );
    store.set_pinned(&name, false, "alice").await.unwrap();
    assert!(
        !store
            .delete_branch_gone(&name, 1_000, "gone")
            .await
            .unwrap(),
        "stale read"
    );
    assert!(store
        .delete_branch_gone(&name, 3_000, "its branch is gone")
        .await
        .unwrap());
    assert_eq!(get(&store, "gone").await.desired, Desired::Deleted);
    // Asked for again once deleted: a new life, with its branch not known gone.
    store
        .request_up(&up("gone", LONG_TTL, "alice"))
        .await
        .unwrap();
    store
        .set_phase(&name, Phase::Deleted, None, "removed")
        .await
        .unwrap();
    store
        .request_up(&up("gone", LONG_TTL, "alice"))
        .await
        .unwrap();
    assert_eq!(get(&store, "gone").await.idle.branch_gone_at, None);
}

async fn built_image_use_never_goes_back_and_is_forgotten_only_if_unchanged(store: Store) {
    let (a, b) = (env("img-a"), env("img-b"));
    store
        .record_image_use("slipway/x-web:1", &a, 5_000)
        .await
        .unwrap();
    store
        .record_image_use("slipway/x-web:1", &b, 4_000)
        .await
        .unwrap();
    store
        .record_image_use("slipway/x-web:2", &b, 6_000)
        .await
        .unwrap();
    let images = store.built_images().await.unwrap();
    let found: Vec<(&str, &str, i64)> = images
        .iter()
        .map(|i| (i.reference.as_str(), i.env.as_str(), i.last_used_at))
        .collect();
    assert_eq!(
        found,
        vec![
            ("slipway/x-web:1", "img-a", 5_000),
            ("slipway/x-web:2", "img-b", 6_000)
        ]
    );
    store
        .record_image_use("slipway/x-web:1", &b, 7_000)
        .await
        .unwrap();
    assert!(
        !store.forget_image("slipway/x-web:1", 5_000).await.unwrap(),
        "used since"
    );
    assert!(store.forget_image("slipway/x-web:1", 7_000).await.unwrap());
    assert!(store.forget_image("slipway/x-web:2", 6_000).await.unwrap());
    assert!(store.built_images().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn env(name: &str) -> EnvName {
    EnvName::parse(name).expect("test env names are valid")
}

fn up(name: &str, ttl: Duration, actor: &str) -> UpRequest {
    UpRequest {
        name: env(name),
        repo: RepoName::parse("demo").unwrap(),
        branch: BranchName::parse(&format!("feature/{name}")).unwrap(),
        ttl,
        actor: actor.to_string(),
        pull_request: None,
    }
}

async fn get(store: &Store, name: &str) -> EnvRecord {
    store
        .get(&env(name))
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("env {name} should exist"))
}

async fn all_events(store: &Store, name: &str) -> Vec<Event> {
    store.events(&env(name), 0, 1000).await.expect("events")
}

fn kinds(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// Lets the millisecond clock move on, so timestamps of two steps differ.
async fn tick() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn commit(c: char) -> CommitSha {
    CommitSha::parse(&c.to_string().repeat(40)).unwrap()
}

// ---------------------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------------------

/// Migrations run on connect, connecting again is harmless, and the instance id and the
/// data survive a reconnect.
async fn connecting_migrates_idempotently(url: &str, backend: Backend) -> Store {
    let first = Store::connect(url).await.expect("first connect migrates");
    assert_eq!(first.backend(), backend);
    assert!(first.list(true).await.unwrap().is_empty(), "a fresh store");
    assert_eq!(first.next_expiry().await.unwrap(), None);
    assert!(first.expire_due().await.unwrap().is_empty());
    assert!(first.get(&env("nobody")).await.unwrap().is_none());
    let id = first.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        first.instance_id().await.unwrap(),
        id,
        "stable on one store"
    );
    first
        .request_up(&up("survivor", LONG_TTL, "alice"))
        .await
        .unwrap();

    // A second store on the same database while the first is open, as a second replica.
    let second = Store::connect(url)
        .await
        .expect("migrations are idempotent");
    assert_eq!(second.instance_id().await.unwrap(), id);
    drop(first);

    let third = Store::connect(url).await.expect("third connect");
    assert_eq!(
        third.instance_id().await.unwrap(),
        id,
        "stable across reconnects"
    );
    assert_eq!(get(&third, "survivor").await.generation, 1);
    drop(second);
    third
}

async fn up_creates_a_pending_env(store: Store) {
    let before = envmgr::store::now_ms();
    let rec = store
        .request_up(&up("fresh", Duration::from_secs(3600), "alice"))
        .await
        .unwrap();
    let after = envmgr::store::now_ms();

    assert_eq!(rec.name, env("fresh"));
    assert_eq!(rec.repo.as_str(), "demo");
    assert_eq!(rec.branch.as_str(), "feature/fresh");
    assert_eq!(rec.requested_by, "alice");
    assert_eq!(rec.desired, Desired::Running);
    assert_eq!(rec.phase, Phase::Pending);
    assert_eq!(rec.generation, 1);
    assert_eq!(rec.observed_generation, 0);
    assert_eq!(rec.ttl, Duration::from_secs(3600));
    assert!((before..=after).contains(&rec.created_at), "{rec:?}");
    assert_eq!(rec.updated_at, rec.created_at);
    assert_eq!(rec.expires_at, rec.created_at + 3_600_000);
    assert_eq!(rec.commit, None);
    assert_eq!(rec.reason, None);
    assert!(rec.services.is_empty() && rec.warnings.is_empty());
    assert_eq!(
        get(&store, "fresh").await,
        rec,
        "get returns what up returned"
    );

    let events = all_events(&store, "fresh").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.kind, "requested");
    assert_eq!(event.env, "fresh");
    assert_eq!(event.phase, Some(Phase::Pending));
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(event.at, rec.created_at);
    assert!(
        event.message.contains("feature/fresh") && event.message.contains("1h"),
        "{}",
        event.message
    );
}

async fn second_up_bumps_generation(store: Store) {
    let first = store
        .request_up(&up("again", Duration::from_secs(2 * 3600), "alice"))
        .await
        .unwrap();
    store
        .set_phase(&first.name, Phase::Failed, Some("build broke"), "build")
        .await
        .unwrap();
    store
        .record_commit(&first.name, &commit('a'))
        .await
        .unwrap();
    tick().await;

    let second = store
        .request_up(&up("again", Duration::from_secs(3 * 3600), "bob"))
        .await
        .unwrap();
    assert_eq!(second.generation, 2);
    assert_eq!(second.phase, Phase::Pending, "back to Pending");
    assert_eq!(second.reason, None, "the old reason is cleared");
    assert_eq!(second.desired, Desired::Running);
    assert_eq!(second.requested_by, "bob");
    assert_eq!(second.ttl, Duration::from_secs(3 * 3600));
    assert!(second.expires_at > first.expires_at, "expiry refreshed");
    assert_eq!(second.expires_at, second.updated_at + 3 * 3_600_000);
    assert!(second.updated_at > first.updated_at);
    assert_eq!(second.created_at, first.created_at, "still the same env");
    assert_eq!(
        second.commit,
        Some(commit('a')),
        "the commit stays until the reconciler moves on"
    );
    assert_eq!(
        kinds(&all_events(&store, "again").await),
        ["requested", "phase", "requested"]
    );
}

/// Every `up` is one statement, so parallel ones never lose a generation.
async fn concurrent_ups_each_bump_generation_once(store: Store) {
    const PARALLEL: usize = 20;

    async fn parallel_ups(store: &Store, name: &'static str) -> Vec<EnvRecord> {
        let tasks: Vec<_> = (0..PARALLEL)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .request_up(&up(name, LONG_TTL, &format!("user{i}")))
                        .await
                })
            })
            .collect();
        futures_util::future::join_all(tasks)
            .await
            .into_iter()
            .map(|joined| joined.expect("task").expect("request_up"))
            .collect()
    }

    // An existing env: 1 + 20.
    store
        .request_up(&up("busy", LONG_TTL, "alice"))
        .await
        .unwrap();
    let records = parallel_ups(&store, "busy").await;
    assert!(records.iter().all(|r| (2..=21).contains(&r.generation)));
    let rec = get(&store, "busy").await;
    assert_eq!(rec.generation, 1 + PARALLEL as i64);
    let events = all_events(&store, "busy").await;
    assert_eq!(events.len(), 1 + PARALLEL, "{:?}", kinds(&events));
    assert!(events.iter().all(|e| e.kind == "requested"));
    let actors: HashSet<_> = events.iter().filter_map(|e| e.actor.clone()).collect();
    assert_eq!(actors.len(), 1 + PARALLEL, "one event per request");

    // A new env, created by 20 requests at once: one creates it, the others bump it.
    parallel_ups(&store, "stampede").await;
    let rec = get(&store, "stampede").await;
    assert_eq!(rec.generation, PARALLEL as i64);
    assert_eq!(rec.phase, Phase::Pending);
    assert_eq!(all_events(&store, "stampede").await.len(), PARALLEL);
}

async fn set_phase_records_changes_only(store: Store) {
    let name = store
        .request_up(&up("phases", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    let count = |store: Store| async move { all_events(&store, "phases").await.len() };
    assert_eq!(count(store.clone()).await, 1);

    let steps: [(Phase, Option<&str>, bool); 8] = [
        (Phase::Fetching, None, true),
        (Phase::Fetching, None, false),
        (Phase::Fetching, Some("slow remote"), true),
        (Phase::Fetching, Some("slow remote"), false),
        (Phase::Fetching, Some("slower remote"), true),
        (Phase::Fetching, None, true),
        (Phase::Building, None, true),
        (Phase::Building, None, false),
    ];
    let mut expected = 1;
    for (phase, reason, writes) in steps {
        tick().await;
        let before = get(&store, "phases").await;
        store
            .set_phase(&name, phase, reason, "reconcile")
            .await
            .unwrap();
        let rec = get(&store, "phases").await;
        assert_eq!(rec.phase, phase);
        assert_eq!(rec.reason.as_deref(), reason);
        expected += usize::from(writes);
        let events = all_events(&store, "phases").await;
        assert_eq!(events.len(), expected, "after {phase:?} {reason:?}");
        if writes {
            let last = events.last().unwrap();
            assert_eq!(last.kind, "phase");
            assert_eq!(last.phase, Some(phase));
            assert_eq!(last.actor, None);
            let message = match reason {
                Some(reason) => format!("reconcile: {reason}"),
                None => "reconcile".to_string(),
            };
            assert_eq!(last.message, message);
            assert!(rec.updated_at > before.updated_at);
        } else {
            assert_eq!(rec.updated_at, before.updated_at, "no change, no write");
        }
    }
    assert_eq!(get(&store, "phases").await.generation, 1);

    // An unknown env is left alone.
    store
        .set_phase(&env("ghost"), Phase::Ready, None, "reconcile")
        .await
        .unwrap();
    assert!(store.get(&env("ghost")).await.unwrap().is_none());
    assert!(all_events(&store, "ghost").await.is_empty());
}

async fn request_down(store: Store) {
    let unknown = store
        .request_down(&env("never-was"), "alice", "cleanup")
        .await
        .unwrap();
    assert!(unknown.is_none());
    assert!(all_events(&store, "never-was").await.is_empty());

    let up_rec = store
        .request_up(&up("going", LONG_TTL, "alice"))
        .await
        .unwrap();
    tick().await;
    let down = store
        .request_down(&up_rec.name, "bob", "merged")
        .await
        .unwrap()
        .expect("a known env");
    assert_eq!(down.desired, Desired::Deleted);
    assert_eq!(
        down.phase,
        Phase::Pending,
        "phase is the reconciler's business"
    );
    assert_eq!(down.generation, 1);
    assert!(down.updated_at > up_rec.updated_at);
    let events = all_events(&store, "going").await;
    assert_eq!(kinds(&events), ["requested", "requested"]);
    let last = events.last().unwrap();
    assert_eq!(last.phase, None);
    assert_eq!(last.actor.as_deref(), Some("bob"));
    assert!(last.message.contains("merged"), "{}", last.message);

    // Asking again changes nothing and writes nothing.
    let again = store
        .request_down(&up_rec.name, "carol", "again")
        .await
        .unwrap()
        .expect("still known");
    assert_eq!(again, down);
    assert_eq!(all_events(&store, "going").await.len(), 2);
}

/// `up` of an env that is gone starts a new life; `up` while it is still being deleted keeps
/// what it had.
async fn up_after_deleted_starts_afresh(store: Store) {
    let services = vec![ServiceStatus {
        name: "web".into(),
        state: "running".into(),
        ports: vec![],
        urls: vec!["http://localhost:1".into()],
        front_door_url: Some("http://reborn.localhost:8081/".into()),
        address: None,
        main: true,
        shared: None,
    }];
    for (name, final_phase) in [("reborn", Phase::Deleted), ("undead", Phase::Deleting)] {
        let first = store
            .request_up(&up(name, LONG_TTL, "alice"))
            .await
            .unwrap();
        store
            .record_commit(&first.name, &commit('b'))
            .await
            .unwrap();
        store.record_services(&first.name, &services).await.unwrap();
        store
            .set_phase(&first.name, Phase::Ready, None, "started")
            .await
            .unwrap();
        store
            .request_down(&first.name, "alice", "done")
            .await
            .unwrap();
        store
            .set_phase(&first.name, Phase::Deleting, None, "removing")
            .await
            .unwrap();
        store
            .set_phase(&first.name, final_phase, None, "removing")
            .await
            .unwrap();
        tick().await;

        let again = store.request_up(&up(name, LONG_TTL, "bob")).await.unwrap();
        assert_eq!(again.desired, Desired::Running, "{name}");
        assert_eq!(again.phase, Phase::Pending, "{name}");
        assert_eq!(again.generation, 2, "{name}");
        if final_phase == Phase::Deleted {
            assert!(again.created_at > first.created_at, "a new life");
            assert_eq!(again.created_at, again.updated_at);
            assert!(again.services.is_empty());
            assert_eq!(again.commit, None);
        } else {
            assert_eq!(again.created_at, first.created_at);
            assert_eq!(again.services, services);
            assert_eq!(again.commit, Some(commit('b')));
        }
    }
}

async fn observed_state_roundtrips(store: Store) {
    let name = store
        .request_up(&up("observed", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;

    let services = vec![
        ServiceStatus {
            name: "web".into(),
            state: "running".into(),
            ports: vec![
                PublishedPort {
                    container_port: 80,
                    host_port: 40001,
                    protocol: Protocol::Tcp,
                },
                PublishedPort {
                    container_port: 53,
                    host_port: 40002,
                    protocol: Protocol::Udp,
                },
            ],
            urls: vec![
                "http://127.0.0.1:40001".into(),
                "udp://127.0.0.1:40002".into(),
            ],
            front_door_url: Some("https://observed.preview.example.com/".into()),
            address: Some("172.16.0.2".parse().unwrap()),
            main: true,
            shared: None,
        },
        ServiceStatus {
            name: "db".into(),
            state: "exited (1) — “crash” 💥".into(),
            ports: vec![],
            urls: vec![],
            front_door_url: None,
            address: None,
            main: false,
            shared: None,
        },
        ServiceStatus {
            name: "admin".into(),
            state: "running".into(),
            ports: vec![PublishedPort {
                container_port: 8000,
                host_port: 40003,
                protocol: Protocol::Tcp,
            }],
            urls: vec!["http://127.0.0.1:40003".into()],
            front_door_url: None,
            address: None,
            main: false,
            shared: None,
        },
    ];
    store.record_services(&name, &services).await.unwrap();
    let rec = get(&store, "observed").await;
    assert_eq!(rec.services, services);
    // The env's link is its main service's front-door URL; what people click is the
    // front-door URL where there is one and the direct URLs of the other ports.
    assert_eq!(
        rec.url.as_deref(),
        Some("https://observed.preview.example.com/")
    );
    let pair = |service: &str, url: &str| (service.to_string(), url.to_string());
    assert_eq!(
        rec.urls(),
        [
            pair("web", "https://observed.preview.example.com/"),
            pair("web", "udp://127.0.0.1:40002"),
            pair("admin", "http://127.0.0.1:40003"),
        ]
    );
    assert_eq!(
        rec.main_url().as_deref(),
        Some("https://observed.preview.example.com/")
    );
    store.record_services(&name, &[]).await.unwrap();
    assert!(get(&store, "observed").await.services.is_empty());

    let warnings = vec![
        "port 80 is published twice".to_string(),
        "it's got 'quotes' and \"more\"".to_string(),
    ];
    store.record_warnings(&name, &warnings).await.unwrap();
    assert_eq!(get(&store, "observed").await.warnings, warnings);

    let sha = CommitSha::parse(&"0123456789ABCDEF".repeat(3)[..40]).unwrap();
    store.record_commit(&name, &sha).await.unwrap();
    let rec = get(&store, "observed").await;
    assert_eq!(rec.commit, Some(sha.clone()));
    assert_eq!(
        rec.commit.unwrap().as_str(),
        &"0123456789abcdef".repeat(3)[..40]
    );

    // The observed generation only moves forward.
    store.record_observed_generation(&name, 1).await.unwrap();
    assert_eq!(get(&store, "observed").await.observed_generation, 1);
    store.record_observed_generation(&name, 0).await.unwrap();
    assert_eq!(get(&store, "observed").await.observed_generation, 1);
    store
        .request_up(&up("observed", LONG_TTL, "alice"))
        .await
        .unwrap();
    store
        .request_up(&up("observed", LONG_TTL, "alice"))
        .await
        .unwrap();
    store.record_observed_generation(&name, 3).await.unwrap();
    let rec = get(&store, "observed").await;
    assert_eq!((rec.generation, rec.observed_generation), (3, 3));

    // Writes to an unknown env are no-ops.
    let ghost = env("ghost");
    store.record_commit(&ghost, &sha).await.unwrap();
    store.record_services(&ghost, &services).await.unwrap();
    store.record_warnings(&ghost, &warnings).await.unwrap();
    store.record_observed_generation(&ghost, 9).await.unwrap();
    assert!(store.get(&ghost).await.unwrap().is_none());
}

/// A pull request's env remembers what to fetch; a plain `up` of it forgets that again.
async fn pull_request_source_roundtrips(store: Store) {
    let source = PullRequestSource {
        number: PrNumber::new(7).unwrap(),
        git_ref: "refs/pull/7/head".into(),
        head: commit('c'),
    };
    let with_pr = store
        .request_up(&UpRequest {
            pull_request: Some(source.clone()),
            ..up("pr-7", LONG_TTL, "github")
        })
        .await
        .unwrap();
    assert_eq!(with_pr.generation, 1);
    assert_eq!(with_pr.pull_request, Some(source.clone()));
    assert_eq!(get(&store, "pr-7").await, with_pr);
    let last = all_events(&store, "pr-7").await.pop().unwrap();
    assert!(last.message.contains("#7"), "{}", last.message);

    // A new head of the same PR is the same env, moved on.
    let newer = PullRequestSource {
        head: commit('d'),
        ..source
    };
    let again = store
        .request_up(&UpRequest {
            pull_request: Some(newer.clone()),
            ..up("pr-7", LONG_TTL, "github")
        })
        .await
        .unwrap();
    assert_eq!((again.generation, again.pull_request), (2, Some(newer)));
}

/// A pull request's row and a test run keep their names, numbers and commits as typed
/// values through the store: what was written is what is read, up to the largest PR number.
async fn pull_rows_and_test_runs_come_back_typed(store: Store) {
    let repo = RepoName::parse("typed").unwrap();
    let number = PrNumber::new(PrNumber::MAX).unwrap();
    let pull = PullRow {
        repo: repo.clone(),
        number,
        github_repo: "acme/typed".into(),
        env: EnvName::for_pull_request(&repo, number),
        state: PullState::Open,
        head_sha: commit('a'),
        head_ref: "feature".into(),
        is_fork: true,
        is_draft: false,
        skip: false,
        approved_sha: None,
        approved_by: None,
        comment_id: None,
        comment_body: None,
        deployment_id: None,
        deployment_sha: None,
        deployment_state: None,
        status_sha: None,
        status_state: None,
        warned_for: None,
    };
    let stored = store.upsert_pull(&pull).await.unwrap();
    assert_eq!(stored, pull);
    assert!(!stored.approved(), "a fork's head waits for approval");

    store
        .approve_pull(&repo, number, &commit('a'), "alice")
        .await
        .unwrap();
    store
        .record_pull_deployment(&repo, number, Some(3), Some(&commit('a')), Some("success"))
        .await
        .unwrap();
    store
        .record_pull_status(&repo, number, &commit('a'), "success|ready")
        .await
        .unwrap();
    let approved = store.get_pull(&repo, number).await.unwrap().unwrap();
    assert!(approved.approved());
    assert_eq!(approved.approved_sha, Some(commit('a')));
    assert_eq!(approved.deployment_sha, Some(commit('a')));
    assert_eq!(approved.status_sha, Some(commit('a')));
    assert_eq!(
        store.pull_for_env(&pull.env).await.unwrap(),
        Some(approved.clone())
    );
    assert_eq!(store.open_pulls(&repo).await.unwrap(), vec![approved]);

    // A new head is not approved; a closed PR is not open.
    let moved = store
        .upsert_pull(&PullRow {
            head_sha: commit('b'),
            state: PullState::Closed,
            ..pull.clone()
        })
        .await
        .unwrap();
    assert!(!moved.approved());
    assert_eq!(moved.state, PullState::Closed);
    assert!(store.open_pulls(&repo).await.unwrap().is_empty());

    let tested = env("typed-runs");
    let run = store
        .insert_run(
            &tested,
            Some(&commit('c')),
            RunTrigger::Manual,
            "alice",
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        (&run.env, &run.commit, run.trigger, run.status),
        (
            &tested,
            &Some(commit('c')),
            RunTrigger::Manual,
            RunStatus::Queued
        )
    );
    assert!(store.envs_with_open_runs().await.unwrap().contains(&tested));
    assert!(store.start_run(run.id, Some(&commit('d'))).await.unwrap());
    let started = store.get_run(run.id).await.unwrap().unwrap();
    assert_eq!(started.commit, Some(commit('d')));
    assert_eq!(started.status, RunStatus::Running);
}

/// The owner check of `request_up`: a name belongs to one (repo, branch) or (repo, PR) until
/// it is Deleted; anyone else is refused with the owner named, and nothing changes.
async fn names_are_never_moved(store: Store) {
    let shop_x = |branch: &str, repo: &str| UpRequest {
        repo: RepoName::parse(repo).unwrap(),
        branch: BranchName::parse(branch).unwrap(),
        ..up("shop-x-y", LONG_TTL, "alice")
    };
    let owner = store.request_up(&shop_x("y", "shop-x")).await.unwrap();

    // Another repo's branch with the same name.
    let err = store.request_up(&shop_x("x-y", "shop")).await.unwrap_err();
    assert!(
        matches!(err, envmgr::store::StoreError::NameTaken { .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string().split(';').next().unwrap(),
        "env `shop-x-y` belongs to repo `shop-x` branch `y`"
    );
    // Another branch of the same repo.
    let err = store
        .request_up(&shop_x("x/y", "shop-x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("branch `y`"), "{err}");
    // A pull request.
    let err = store
        .request_up(&UpRequest {
            pull_request: Some(PullRequestSource {
                number: PrNumber::new(4).unwrap(),
                git_ref: "refs/pull/4/head".into(),
                head: commit('e'),
            }),
            ..shop_x("y", "shop-x")
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("branch `y`"), "{err}");
    let after = get(&store, "shop-x-y").await;
    assert_eq!(
        (
            after.generation,
            after.repo.as_str(),
            after.branch.as_str(),
            after.pull_request
        ),
        (owner.generation, "shop-x", "y", None),
        "refusals change nothing"
    );

    // A PR env's name is never a branch env's.
    let pr = |n: u64| UpRequest {
        pull_request: Some(PullRequestSource {
            number: PrNumber::new(n).unwrap(),
            git_ref: format!("refs/pull/{n}/head"),
            head: commit('f'),
        }),
        ..up("shop-pr-4", LONG_TTL, "github")
    };
    store.request_up(&pr(4)).await.unwrap();
    let err = store
        .request_up(&up("shop-pr-4", LONG_TTL, "bob"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pull request #4"), "{err}");
    let err = store.request_up(&pr(5)).await.unwrap_err();
    assert!(err.to_string().contains("pull request #4"), "{err}");
    assert_eq!(
        get(&store, "shop-pr-4").await.pull_request.unwrap().number,
        PrNumber::new(4).unwrap()
    );

    // Once Deleted, the name may be owned anew.
    store
        .request_down(&owner.name, "alice", "done")
        .await
        .unwrap();
    let err = store.request_up(&shop_x("x-y", "shop")).await.unwrap_err();
    assert!(err.to_string().contains("shop-x"), "not Deleted yet: {err}");
    store
        .set_phase(&owner.name, Phase::Deleted, None, "reaper")
        .await
        .unwrap();
    let reowned = store.request_up(&shop_x("x-y", "shop")).await.unwrap();
    assert_eq!(
        (reowned.repo.as_str(), reowned.branch.as_str()),
        ("shop", "x-y")
    );
    assert_eq!(reowned.desired, Desired::Running);
}

/// `delivery_retention`: a handled delivery's body goes after the retention, its id stays
/// (a redelivery is still recognised); an unhandled one keeps its body.
async fn delivery_bodies_are_pruned_ids_kept(store: Store) {
    let body = "x".repeat(100_000);
    assert!(store.insert_delivery("d-old", "push", &body).await.unwrap());
    store.finish_delivery("d-old", "ok").await.unwrap();
    assert!(store
        .insert_delivery("d-pending", "push", &body)
        .await
        .unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.insert_delivery("d-new", "push", &body).await.unwrap());
    store.finish_delivery("d-new", "ok").await.unwrap();

    // A week's retention clears nothing yet.
    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(store.prune_deliveries(week).await.unwrap(), (0, 0));
    // A retention that ends between the two handled deliveries clears only the older body.
    let (cleared, removed) = store
        .prune_deliveries(Duration::from_millis(200))
        .await
        .unwrap();
    assert_eq!((cleared, removed), (1, 0));
    assert_eq!(
        store.delivery_payload("d-old").await.unwrap().as_deref(),
        Some("")
    );
    assert_eq!(
        store
            .delivery_payload("d-new")
            .await
            .unwrap()
            .unwrap()
            .len(),
        100_000
    );
    assert_eq!(
        store
            .delivery_payload("d-pending")
            .await
            .unwrap()
            .unwrap()
            .len(),
        100_000,
        "not handled yet: the processor still needs it"
    );
    assert!(
        !store.insert_delivery("d-old", "push", &body).await.unwrap(),
        "the id is kept for dedup"
    );
    assert_eq!(
        store.prune_deliveries(Duration::ZERO).await.unwrap(),
        (1, 0)
    );
    assert_eq!(
        store.prune_deliveries(Duration::ZERO).await.unwrap(),
        (0, 0),
        "once"
    );
    // Leave nothing pending for other suites sharing nothing but the habit.
    store.finish_delivery("d-pending", "ok").await.unwrap();
}

/// `extend` never overflows: a huge `by` is the cap, never a wrap into the past.
async fn extend_is_checked_and_capped(store: Store) {
    let rec = store
        .request_up(&up("extend-huge", Duration::from_secs(3600), "alice"))
        .await
        .unwrap();
    let max = Duration::from_secs(30 * 24 * 3600);
    for by in [
        Duration::from_secs(9_300_000_000_000_000),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
        Duration::from_millis(i64::MAX as u64),
        Duration::from_secs(31 * 24 * 3600),
    ] {
        let before = envmgr::store::now_ms();
        let out = store
            .extend(&rec.name, by, max, "alice")
            .await
            .unwrap()
            .expect("running env");
        let after = envmgr::store::now_ms();
        assert!(out.expires_at > rec.expires_at, "{by:?}: moved forward");
        assert!(out.expires_at >= before + 29 * 24 * 3_600_000, "{by:?}");
        assert!(
            out.expires_at <= after + 30 * 24 * 3_600_000,
            "{by:?}: capped"
        );
    }
    assert!(store
        .expire_due()
        .await
        .unwrap()
        .iter()
        .all(|n| n != &rec.name));
}

async fn events_are_paged_in_order(store: Store) {
    let name = store
        .request_up(&up("timeline", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    // Another env's events interleave and must never show up.
    let other = store
        .request_up(&up("neighbour", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    let phases = [
        Phase::Fetching,
        Phase::Building,
        Phase::Starting,
        Phase::Ready,
        Phase::Failed,
        Phase::Starting,
    ];
    for phase in phases {
        store.set_phase(&name, phase, None, "step").await.unwrap();
        store.set_phase(&other, phase, None, "step").await.unwrap();
    }

    let all = store.events(&name, 0, 100).await.unwrap();
    assert_eq!(all.len(), 7);
    assert!(all.iter().all(|e| e.env == "timeline"));
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(all[0].kind, "requested");
    let seen: Vec<_> = all[1..].iter().map(|e| e.phase.unwrap()).collect();
    assert_eq!(seen, phases);
    let ids: Vec<i64> = all.iter().map(|e| e.id).collect();

    let page = |after: i64, limit: i64| {
        let store = store.clone();
        let name = name.clone();
        async move {
            store
                .events(&name, after, limit)
                .await
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(page(0, 3).await, ids[..3]);
    assert_eq!(page(ids[2], 2).await, ids[3..5]);
    assert_eq!(page(ids[4], 100).await, ids[5..]);
    assert_eq!(page(ids[6], 100).await, Vec::<i64>::new());
    assert_eq!(page(0, 0).await, Vec::<i64>::new());

    let recent = store.recent_events(&name, 3).await.unwrap();
    assert_eq!(recent, all[4..], "the last three, oldest first");
    assert_eq!(store.recent_events(&name, 100).await.unwrap(), all);
    assert!(store.recent_events(&name, 0).await.unwrap().is_empty());
    assert!(store
        .recent_events(&env("never-was"), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn list_hides_deleted_envs(store: Store) {
    let ready = store
        .request_up(&up("listed", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    store
        .set_phase(&ready, Phase::Ready, None, "started")
        .await
        .unwrap();
    tick().await;
    let gone = store
        .request_up(&up("unlisted", LONG_TTL, "alice"))
        .await
        .unwrap()
        .name;
    store.request_down(&gone, "alice", "done").await.unwrap();
    store
        .set_phase(&gone, Phase::Deleted, None, "removed")
        .await
        .unwrap();

    let visible = store.list(false).await.unwrap();
    assert!(visible.iter().all(|r| r.phase != Phase::Deleted));
    let names: Vec<&str> = visible.iter().map(|r| r.name.as_str()).collect();
    assert!(names.contains(&"listed"), "{names:?}");
    assert!(!names.contains(&"unlisted"), "{names:?}");
    // "reborn" went through Deleted and came back: visible.
    assert!(names.contains(&"reborn"), "{names:?}");

    let everything = store.list(true).await.unwrap();
    let all_names: Vec<&str> = everything.iter().map(|r| r.name.as_str()).collect();
    assert!(all_names.contains(&"listed") && all_names.contains(&"unlisted"));
    assert_eq!(
        everything.len(),
        visible.len() + 1,
        "only `unlisted` is hidden"
    );
    assert_eq!(get(&store, "unlisted").await.phase, Phase::Deleted);

    // Newest first (ties by name, in the database's collation).
    assert!(
        everything
            .windows(2)
            .all(|w| w[0].created_at >= w[1].created_at),
        "{:?}",
        everything
            .iter()
            .map(|r| (r.created_at, r.name.as_str()))
            .collect::<Vec<_>>()
    );
    assert_eq!(everything[0].name, gone, "the newest env comes first");
}

/// Runs last: every other env has a TTL of an hour or more and is never due.
async fn expiry(store: Store) {
    let keeper = store
        .request_up(&up("keeper", Duration::from_secs(1800), "alice"))
        .await
        .unwrap();
    // Shorter than any earlier env's TTL: the earliest expiry among the envs still wanted.
    assert_eq!(store.next_expiry().await.unwrap(), Some(keeper.expires_at));

    let short = store
        .request_up(&up("short", Duration::from_millis(1), "alice"))
        .await
        .unwrap();
    let short_down = store
        .request_up(&up("short-down", Duration::from_millis(1), "alice"))
        .await
        .unwrap();
    store
        .request_down(&short_down.name, "alice", "not needed")
        .await
        .unwrap();
    assert_eq!(store.next_expiry().await.unwrap(), Some(short.expires_at));
    assert_eq!(short.expires_at, short.created_at + 1);

    tokio::time::sleep(Duration::from_millis(20)).await;
    let expired = store.expire_due().await.unwrap();
    assert_eq!(
        expired,
        std::slice::from_ref(&short.name),
        "only the running env past its TTL"
    );

    let rec = get(&store, "short").await;
    assert_eq!(rec.desired, Desired::Deleted);
    assert_eq!(
        rec.phase,
        Phase::Pending,
        "the reconciler does the deleting"
    );
    let events = all_events(&store, "short").await;
    assert_eq!(kinds(&events), ["requested", "expired"]);
    let last = events.last().unwrap();
    assert_eq!(last.actor.as_deref(), Some("slipway"));
    assert_eq!(last.phase, None);
    assert_eq!(
        kinds(&all_events(&store, "short-down").await),
        ["requested", "requested"]
    );
    assert_eq!(get(&store, "keeper").await.desired, Desired::Running);

    assert!(store.expire_due().await.unwrap().is_empty(), "once only");
    assert_eq!(store.next_expiry().await.unwrap(), Some(keeper.expires_at));
    let running_min = store
        .list(true)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.desired == Desired::Running)
        .map(|r| r.expires_at)
        .min();
    assert_eq!(running_min, Some(keeper.expires_at));

    // An `up` brings an expired env back with a fresh deadline.
    let back = store
        .request_up(&up("short", Duration::from_secs(60), "alice"))
        .await
        .unwrap();
    assert_eq!(back.desired, Desired::Running);
    assert!(store.expire_due().await.unwrap().is_empty());
    assert_eq!(store.next_expiry().await.unwrap(), Some(back.expires_at));
}

/// One holder at a time; a new holder gets a larger token; a write fenced by an older token
/// changes nothing and says why, while the current holder's writes go through.
async fn leases_are_exclusive_and_fence_stale_writes(store: Store) {
    let ttl = Duration::from_secs(30);
    let a = store
        .acquire_lease("env", "lease-x", "replica-a", ttl)
        .await
        .unwrap()
        .expect("free lease");
    let held = store
        .acquire_lease("env", "lease-x", "replica-b", ttl)
        .await
        .unwrap()
        .expect_err("held by a");
    assert_eq!(held.holder, "replica-a");
    assert!(held.until >= a.expires_at - 1000, "{held:?} {a:?}");
    // Other keys and kinds are independent.
    store
        .acquire_lease("tests", "lease-x", "replica-b", ttl)
        .await
        .unwrap()
        .expect("another kind");

    // a's writes go through while it holds the lease.
    store
        .request_up(&up("lease-x", LONG_TTL, "alice"))
        .await
        .unwrap();
    let name = env("lease-x");
    let fenced_a = store.fenced(a.fence());
    fenced_a
        .set_phase(&name, Phase::Building, None, "building")
        .await
        .unwrap();

    // a pauses past its lease (here: the lease is cut short); b takes over.
    let mut stale = a.clone();
    assert!(store.renew_lease(&mut stale, Duration::ZERO).await.unwrap());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let b = store
        .acquire_lease("env", "lease-x", "replica-b", ttl)
        .await
        .unwrap()
        .expect("expired lease is free");
    assert!(b.token > a.token, "{} > {}", b.token, a.token);
    assert!(
        !store.renew_lease(&mut stale, ttl).await.unwrap(),
        "a cannot renew"
    );

    let err = fenced_a
        .set_phase(&name, Phase::Failed, Some("stale"), "stale")
        .await
        .expect_err("a's token is stale");
    assert!(err.to_string().contains("no longer held"), "{err}");
    fenced_a
        .record_observed_generation(&name, 99)
        .await
        .expect_err("every fenced write is checked");
    let record = get(&store, "lease-x").await;
    assert_eq!(
        record.phase,
        Phase::Building,
        "the stale write changed nothing"
    );

    store
        .fenced(b.fence())
        .set_phase(&name, Phase::Ready, None, "ready")
        .await
        .unwrap();
    assert_eq!(get(&store, "lease-x").await.phase, Phase::Ready);

    // Released: free for anyone at once, and the token still grows.
    store.release_lease(&b).await.unwrap();
    let c = store
        .acquire_lease("env", "lease-x", "replica-a", ttl)
        .await
        .unwrap()
        .expect("released lease is free");
    assert!(c.token > b.token);
    assert_eq!(
        store.live_leases("env").await.unwrap(),
        vec![("lease-x".to_string(), "replica-a".to_string())]
    );
    // A lone process on its store (SQLite) ends its killed predecessor's leases at start.
    // c, and the `tests` lease taken above.
    assert_eq!(store.release_all_leases().await.unwrap(), 2);
    let d = store
        .acquire_lease("env", "lease-x", "restarted", ttl)
        .await
        .unwrap()
        .expect("free after release_all_leases");
    assert!(d.token > c.token);
    store.release_lease(&d).await.unwrap();
}

/// A change is in line at most once; removal and retry are requests the reconciler carries
/// out; its writes (entry states, the scheduler's document) are fenced by the queue's lease.
async fn queue_entries_one_live_per_change(store: Store) {
    let repo = RepoName::parse("queued").unwrap();
    let main = BranchName::parse("main").unwrap();
    let new = |change: Change, head: char| NewQueueEntry {
        repo: repo.clone(),
        target: main.clone(),
        change,
        head: commit(head),
        title: "Add the cart".into(),
        priority: 0,
        actor: "alice".into(),
    };
    let pr = Change::Pull(PrNumber::new(42).unwrap());
    let first = store.enqueue(&new(pr.clone(), 'a')).await.unwrap();
    assert_eq!(first.state, EntryState::Queued);
    assert!(first.wanted && first.is_live());
    assert_eq!(first.change, pr);
    match store.enqueue(&new(pr.clone(), 'b')).await {
        Err(StoreError::AlreadyQueued { entry, change }) => {
            assert_eq!(entry, first.id);
            assert_eq!(change, "queued#42");
        }
        other => panic!("a second live entry for one change: {other:?}"),
    }
    let branch = Change::Branch(BranchName::parse("feature-x").unwrap());
    let second = store.enqueue(&new(branch.clone(), 'c')).await.unwrap();
    assert!(second.id > first.id);
    let row = store.queue_row(&repo, &main).await.unwrap().unwrap();
    assert!(!row.paused);
    assert_eq!(row.doc, "{}");

    // Removal is asked for; the entry stays live until the reconciler says so.
    let removed = store
        .request_queue_remove(second.id, "bob", "removed by bob")
        .await
        .unwrap()
        .unwrap();
    assert!(!removed.wanted && !removed.is_live());
    assert!(store
        .request_queue_remove(second.id, "bob", "again")
        .await
        .unwrap()
        .is_none());
    // Only a failed entry is retried.
    assert!(store
        .request_queue_retry(first.id, "alice")
        .await
        .unwrap()
        .is_none());

    // The reconciler's writes need the queue's lease.
    let ttl = Duration::from_secs(30);
    let lease = store
        .acquire_lease("queue", "queued/main", "replica-a", ttl)
        .await
        .unwrap()
        .unwrap();
    let fenced = store.fenced(lease.fence());
    assert!(fenced
        .record_entry(
            &first,
            EntryState::Failed,
            &EntryUpdate {
                reason: Some("tests failed".into()),
                attempts: Some(2),
                ..Default::default()
            },
            Some(("queue.failed", "queued#42 left the queue")),
        )
        .await
        .unwrap());
    fenced
        .save_queue_doc(&repo, &main, "{\"x\":1}")
        .await
        .unwrap();
    assert_eq!(
        store.queue_row(&repo, &main).await.unwrap().unwrap().doc,
        "{\"x\":1}"
    );
    let failed = store.queue_entry(first.id).await.unwrap().unwrap();
    assert_eq!(failed.state, EntryState::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.reason.as_deref(), Some("tests failed"));
    // A new live entry for the change may exist now; retrying the old one then is refused.
    let again = store.enqueue(&new(pr.clone(), 'd')).await.unwrap();
    assert!(matches!(
        store.request_queue_retry(first.id, "alice").await,
        Err(StoreError::AlreadyQueued { entry, .. }) if entry == again.id
    ));

    // Another replica takes the lease over: the old holder's writes are refused.
    store.release_lease(&lease).await.unwrap();
    store
        .acquire_lease("queue", "queued/main", "replica-b", ttl)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        fenced.save_queue_doc(&repo, &main, "{}").await,
        Err(StoreError::StaleLease { .. })
    ));

    // Trees that passed are remembered.
    assert!(store.tree_result(&repo, "t1").await.unwrap().is_none());
    store
        .record_tree_passed(&repo, "t1", 7, &["flaky_test".to_string()])
        .await
        .unwrap();
    let tree = store.tree_result(&repo, "t1").await.unwrap().unwrap();
    assert!(tree.passed);
    assert_eq!(tree.flaky, vec!["flaky_test".to_string()]);
}

/// A new env past a quota is refused with the numbers and writes nothing; an `up` of a
/// live env is never refused; 12 concurrent requests for 3 free slots create exactly 3.
async fn quotas_refuse_new_envs_atomically(store: Store) {
    use envmgr::store::{QuotaLimits, QuotaRefusal, QuotaScope};
    let quota_up = |name: &str, actor: &str| UpRequest {
        repo: RepoName::parse("quota").unwrap(),
        ..up(name, LONG_TTL, actor)
    };
    let refused = |result: Result<EnvRecord, StoreError>| -> QuotaRefusal {
        match result {
            Err(StoreError::QuotaExceeded(refusal)) => refusal,
            other => panic!("expected a quota refusal, got {other:?}"),
        }
    };
    let repo_cap = QuotaLimits {
        repo_max_envs: Some(3),
        ..Default::default()
    };

    // Concurrent requests for new envs: the check and the insert are one locked step.
    let tasks: Vec<_> = (0..12)
        .map(|i| {
            let store = store.clone();
            let request = quota_up(&format!("quota-{i}"), "quinn");
            let limits = repo_cap.clone();
            tokio::spawn(async move { store.request_up_within(&request, &limits).await })
        })
        .collect();
    let results: Vec<_> = futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|joined| joined.expect("task"))
        .collect();
    let created: Vec<&EnvRecord> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 3, "{results:?}");
    for result in &results {
        if let Err(e) = result {
            assert!(matches!(e, StoreError::QuotaExceeded(_)), "{e:?}");
        }
    }
    let held: Vec<EnvName> = created.iter().map(|r| r.name.clone()).collect();
    let oldest = created
        .iter()
        .min_by_key(|r| (r.updated_at, r.name.clone()))
        .unwrap();

    // A refusal names the cap, the numbers and the oldest idle env, and leaves no trace.
    let refusal = refused(
        store
            .request_up_within(&quota_up("quota-extra", "rory"), &repo_cap)
            .await,
    );
    assert_eq!(
        refusal.scope,
        QuotaScope::Repo(RepoName::parse("quota").unwrap())
    );
    assert_eq!((refusal.used, refusal.limit), (3, 3));
    assert_eq!(
        refusal.oldest_idle.as_ref().map(|o| &o.0),
        Some(&oldest.name),
        "{:?}",
        created
            .iter()
            .map(|r| (r.name.as_str(), r.updated_at))
            .collect::<Vec<_>>()
    );
    let text = refusal.to_string();
    assert!(
        text.starts_with("quota has 3 of 3 envs; the oldest idle is quota-"),
        "{text}"
    );
    assert!(store.get(&env("quota-extra")).await.unwrap().is_none());
    assert!(all_events(&store, "quota-extra").await.is_empty());

    // An `up` of an env that exists moves it, whatever the caps.
    let again = store
        .request_up_within(&quota_up(held[0].as_str(), "quinn"), &repo_cap)
        .await
        .expect("up of a live env is not a new env");
    assert_eq!(again.generation, 2);

    // Per caller: quinn holds 3 envs, bob none; a queue candidate is nobody's.
    let per_user = QuotaLimits {
        max_envs_per_user: Some(3),
        ..Default::default()
    };
    let refusal = refused(
        store
            .request_up_within(&quota_up("quota-quinn", "quinn"), &per_user)
            .await,
    );
    assert_eq!(refusal.scope, QuotaScope::User("quinn".into()));
    assert!(
        refusal.to_string().starts_with("quinn has 3 of 3 envs"),
        "{refusal}"
    );
    let mut candidate = quota_up("quota-candidate", "quinn");
    candidate.branch = BranchName::parse("slipway-queue/1").unwrap();
    store
        .request_candidate_up(&candidate, &commit('c'))
        .await
        .unwrap();
    // Down one of quinn's: its slot is free again (a Deleting env no longer counts).
    store.request_down(&held[1], "quinn", "test").await.unwrap();
    store
        .request_up_within(&quota_up("quota-quinn", "quinn"), &per_user)
        .await
        .expect("quinn has room again; the candidate does not count for them");

    // The whole installation: every live env counts, candidates too.
    let live = store
        .list(false)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.desired == Desired::Running)
        .count();
    let installation = QuotaLimits {
        max_envs: Some(live),
        ..Default::default()
    };
    let refusal = refused(
        store
            .request_up_within(&quota_up("quota-global", "sasha"), &installation)
            .await,
    );
    assert_eq!(refusal.scope, QuotaScope::Installation);
    assert_eq!(refusal.used, live as i64);
    assert!(
        refusal
            .to_string()
            .starts_with(&format!("Slipway has {live} of {live} envs")),
        "{refusal}"
    );

    // Memory: what running envs reserve, failed ones not; a new env is expected to need
    // what the repo's last planned env did.
    const MIB: i64 = 1024 * 1024;
    let memory = |max: i64| QuotaLimits {
        max_memory: Some(max),
        ..Default::default()
    };
    let base: i64 = {
        // Other cases' envs reserve nothing (never planned); ours reserve what we record.
        // held[0] was asked for last, so a new env is expected to need its 200 MiB.
        store.record_memory(&held[0], 200 * MIB).await.unwrap();
        store.record_memory(&held[2], 300 * MIB).await.unwrap();
        500 * MIB
    };
    let refusal = refused(
        store
            .request_up_within(&quota_up("quota-mem", "tove"), &memory(base + 100 * MIB))
            .await,
    );
    assert_eq!(refusal.scope, QuotaScope::Memory { needed: 200 * MIB });
    assert_eq!((refusal.used, refusal.limit), (base, base + 100 * MIB));
    assert!(
        refusal.to_string().starts_with(
            "running envs reserve 500 MiB of 600 MiB memory and a new env needs about 200 MiB"
        ),
        "{refusal}"
    );
    // An env that is not running keeps its slot but not its memory.
    store
        .set_phase(&held[0], Phase::Failed, Some("broke"), "test")
        .await
        .unwrap();
    let fits = store
        .request_up_within(&quota_up("quota-mem", "tove"), &memory(base + 100 * MIB))
        .await
        .expect("the failed env's 200 MiB are free: 300 + 200 fit in 600");
    assert_eq!(fits.phase, Phase::Pending);
    assert!(envmgr::store::counts_for_memory(Phase::Ready));
    assert!(!envmgr::store::counts_for_memory(Phase::Failed));
}
