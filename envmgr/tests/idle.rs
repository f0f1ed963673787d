//! Idle envs on the runtime's test twin, with a real git repository and SQLite store: an
//! env idle past `idle_sleep` sleeps (containers stopped, kept) and wakes at the same commit
//! with the same containers; one wake however many callers; a warned env that is used is not
//! deleted; a pinned one never goes; an unused one goes after its warning.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envmgr::names::{BranchName, EnvName, RepoName};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::runtime::ServiceState;
use envmgr::settings::{FrontDoor, IdleSettings};
use envmgr::store::{Desired, EnvRecord, Phase, Store, EXPIRING_EVENT};
use envmgr::{Engine, EngineSettings};

const COMPOSE: &str = "\
services:
  db:
    image: postgres:16
    volumes: ['data:/var/lib/postgresql/data']
    healthcheck: { test: [CMD, pg_isready], interval: 1s }
  web:
    image: web:1
    ports: ['8080']
    depends_on: { db: { condition: service_healthy } }
volumes:
  data: {}
";

fn env(name: &str) -> EnvName {
    EnvName::parse(name).unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

struct World {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    fake: Arc<FakeRuntime>,
    engine: Engine,
}

async fn world(idle: IdleSettings) -> World {
    world_with(idle, None).await
}

async fn world_with(idle: IdleSettings, image_retention: Option<Duration>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("compose.yml"), COMPOSE).unwrap();
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await
    .unwrap();
    let settings = EngineSettings {
        image_retention,
        front_door: Some(FrontDoor::new("http", "localhost", Some(8081))),
        ..support::engine::settings(
            &dir.path().join("data"),
            RepoName::parse("app").unwrap(),
            &repo,
            idle,
        )
    };
    let fake = Arc::new(FakeRuntime::new());
    let engine = Engine::start(settings, store, fake.clone()).await.unwrap();
    World {
        _dir: dir,
        repo,
        fake,
        engine,
    }
}

async fn wait_for(
    engine: &Engine,
    what: &str,
    within: Duration,
    check: impl Fn(&EnvRecord) -> bool,
) -> EnvRecord {
    let deadline = Instant::now() + within;
    loop {
        let record = engine.get(&env("app-main")).await.unwrap();
        if check(&record) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "never became {what}: {record:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn up_ready(w: &World) -> EnvRecord {
    w.engine
        .up(
            &RepoName::parse("app").unwrap(),
            &BranchName::parse("main").unwrap(),
            None,
            "tester",
        )
        .await
        .unwrap();
    wait_for(&w.engine, "Ready", Duration::from_secs(10), |r| {
        r.phase == Phase::Ready && r.observed_generation >= r.generation
    })
    .await
}

fn container_ids(w: &World) -> Vec<(String, String)> {
    let mut ids: Vec<(String, String)> = w
        .fake
        .observed(&env("app-main"))
        .services
        .iter()
        .map(|s| (s.name.to_string(), s.container_id.clone()))
        .collect();
    ids.sort();
    ids
}

async fn events_of(w: &World, kind: &str, containing: &str) -> usize {
    w.engine
        .events(&env("app-main"), 0)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == kind && e.message.contains(containing))
        .count()
}

#[tokio::test]
async fn an_idle_env_sleeps_and_wakes_once_at_the_same_commit_in_the_same_containers() {
    let w = world(IdleSettings {
        sleep_after: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await;
    let ready = up_ready(&w).await;
    let before = container_ids(&w);
    let started = Instant::now();
    let asleep = wait_for(&w.engine, "Sleeping", Duration::from_secs(5), |r| {
        r.phase == Phase::Sleeping && r.idle.slept_at.is_some()
    })
    .await;
    // Within one resync (300 ms) and some slack of the 1 s idle time.
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(asleep.idle.asleep);
    let observed = w.fake.observed(&env("app-main"));
    assert!(
        observed.volumes.contains(&"data".to_string()),
        "{observed:?}"
    );
    assert!(
        observed
            .services
            .iter()
            .all(|s| matches!(s.state, ServiceState::Exited { .. })),
        "{observed:?}"
    );
    assert!(asleep
        .services
        .iter()
        .all(|s| s.state.starts_with("exited")));
    // Its host ports are gone, its front-door URL is not: a request there wakes it.
    assert_eq!(
        ready.url.as_deref(),
        Some("http://app-main.localhost:8081/")
    );
    assert_eq!(asleep.url, ready.url);
    assert_eq!(
        asleep.urls(),
        [(
            "web".to_string(),
            "http://app-main.localhost:8081/".to_string()
        )]
    );

    // Many callers at once: one wake on the timeline.
    let name = env("app-main");
    let wakes = (0..20).map(|_| w.engine.wake(&name, "front door"));
    for woken in futures_util::future::join_all(wakes).await {
        woken.unwrap();
    }
    let awake = wait_for(&w.engine, "Ready again", Duration::from_secs(5), |r| {
        r.phase == Phase::Ready && !r.idle.asleep
    })
    .await;
    assert_eq!(events_of(&w, "requested", "wake requested").await, 1);
    assert_eq!(awake.commit, ready.commit);
    assert_eq!(
        awake.generation, ready.generation,
        "a wake is no new deploy"
    );
    assert_eq!(
        container_ids(&w),
        before,
        "the same containers, started again"
    );
    assert!(w
        .fake
        .observed(&env("app-main"))
        .services
        .iter()
        .all(|s| matches!(s.state, ServiceState::Running | ServiceState::Healthy)));
    // The wake counted as use: it does not fall straight back asleep.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.engine.get(&env("app-main")).await.unwrap().phase,
        Phase::Ready
    );
}

#[tokio::test]
async fn asked_to_sleep_it_sleeps_and_up_wakes_it() {
    let w = world(IdleSettings::default()).await;
    let ready = up_ready(&w).await;
    w.engine.sleep(&env("app-main"), "ernie").await.unwrap();
    wait_for(&w.engine, "Sleeping", Duration::from_secs(5), |r| {
        r.phase == Phase::Sleeping
    })
    .await;
    assert!(w.fake.calls().contains(&"stop app-main".to_string()));
    w.engine
        .up(
            &RepoName::parse("app").unwrap(),
            &BranchName::parse("main").unwrap(),
            None,
            "ernie",
        )
        .await
        .unwrap();
    let awake = wait_for(&w.engine, "Ready again", Duration::from_secs(5), |r| {
        r.phase == Phase::Ready && r.observed_generation > ready.generation
    })
    .await;
    assert!(!awake.idle.asleep);
    // Not Ready: nothing to put to sleep.
    w.engine.down(&env("app-main"), "ernie").await.unwrap();
    let err = w.engine.sleep(&env("app-main"), "ernie").await.unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
}

#[tokio::test]
async fn a_warned_env_that_is_used_stays_a_pinned_one_never_goes_an_unused_one_goes() {
    let w = world(IdleSettings {
        sleep_after: None,
        delete_after: Some(Duration::from_secs(2)),
        warn_before: Some(Duration::from_secs(1)),
    })
    .await;
    up_ready(&w).await;
    // Warned about 1 s ahead...
    let deadline = Instant::now() + Duration::from_secs(5);
    while events_of(&w, EXPIRING_EVENT, "will be deleted in").await == 0 {
        assert!(Instant::now() < deadline, "never warned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let warning = w
        .engine
        .events(&env("app-main"), 0)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.kind == EXPIRING_EVENT)
        .unwrap();
    assert!(
        warning.message.contains("`/slipway env pin` keeps it"),
        "{}",
        warning.message
    );
    // ...then a command names it: the deletion is off (idle recomputed).
    w.engine.record_use(&env("app-main")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let record = w.engine.get(&env("app-main")).await.unwrap();
    assert_eq!(record.desired, Desired::Running, "{record:#?}");

    // Pinned: never goes, however long idle.
    w.engine.pin(&env("app-main"), true, "ernie").await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let record = w.engine.get(&env("app-main")).await.unwrap();
    assert_eq!(record.desired, Desired::Running, "{record:#?}");
    assert!(record.idle.pinned);

    // Unpinned and unused: warned again, then deleted.
    w.engine
        .pin(&env("app-main"), false, "ernie")
        .await
        .unwrap();
    let gone = wait_for(&w.engine, "Deleted", Duration::from_secs(8), |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert_eq!(gone.desired, Desired::Deleted);
    assert!(events_of(&w, "expired", "idle for").await == 1);
    assert!(events_of(&w, EXPIRING_EVENT, "will be deleted in").await >= 2);
}

/// `env up` of `branch` until Ready; its record.
async fn branch_ready(w: &World, branch: &str) -> EnvRecord {
    let name = env(&format!("app-{branch}"));
    w.engine
        .up(
            &RepoName::parse("app").unwrap(),
            &BranchName::parse(branch).unwrap(),
            None,
            "tester",
        )
        .await
        .unwrap();
    wait_for_env(&w.engine, &name, "Ready", Duration::from_secs(10), |r| {
        r.phase == Phase::Ready && r.observed_generation >= r.generation
    })
    .await
}

async fn wait_for_env(
    engine: &Engine,
    name: &EnvName,
    what: &str,
    within: Duration,
    check: impl Fn(&EnvRecord) -> bool,
) -> EnvRecord {
    let deadline = Instant::now() + within;
    loop {
        let record = engine.get(name).await.unwrap();
        if check(&record) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {what}: {record:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn messages(w: &World, name: &EnvName, kind: &str) -> Vec<String> {
    w.engine
        .events(name, 0)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.message)
        .collect()
}

#[tokio::test]
async fn an_env_whose_branch_is_deleted_is_warned_then_deleted_unless_the_branch_returns_or_it_is_pinned(
) {
    let w = world(IdleSettings {
        sleep_after: None,
        delete_after: None,
        warn_before: Some(Duration::from_secs(1)),
    })
    .await;
    for branch in ["gone", "back", "kept"] {
        git(&w.repo, &["branch", branch]);
        branch_ready(&w, branch).await;
    }
    let (gone, back, kept) = (env("app-gone"), env("app-back"), env("app-kept"));
    w.engine.pin(&kept, true, "ernie").await.unwrap();
    for branch in ["gone", "back", "kept"] {
        git(&w.repo, &["branch", "-D", branch]);
    }
    // Found gone within a resync, and warned at once, 1 s ahead.
    let marked = wait_for_env(&w.engine, &back, "marked", Duration::from_secs(5), |r| {
        r.idle.branch_gone_at.is_some() && r.idle.warned_for.is_some()
    })
    .await;
    assert_eq!(
        marked.idle.warned_for,
        marked.idle.branch_gone_at.map(|at| at + 1000)
    );
    let warning = messages(&w, &back, EXPIRING_EVENT).await;
    assert!(
        warning.iter().any(|m| m.contains(
            "app-back will be deleted in 1s (its branch back is gone): `/slipway env pin` keeps it"
        )),
        "{warning:?}"
    );
    // The branch comes back before the deadline: the deletion is off.
    git(&w.repo, &["branch", "back"]);
    wait_for_env(&w.engine, &back, "cleared", Duration::from_secs(5), |r| {
        r.idle.branch_gone_at.is_none()
    })
    .await;

    let deleted = wait_for_env(&w.engine, &gone, "Deleted", Duration::from_secs(8), |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert_eq!(deleted.desired, Desired::Deleted);
    assert_eq!(
        messages(&w, &gone, "expired").await,
        vec!["its branch gone is gone".to_string()]
    );
    assert!(
        !messages(&w, &gone, EXPIRING_EVENT).await.is_empty(),
        "warned first"
    );

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let back = w.engine.get(&back).await.unwrap();
    assert_eq!(back.desired, Desired::Running, "{back:#?}");
    assert!(messages(&w, &back.name, "branch")
        .await
        .iter()
        .any(|m| m.contains("branch back is back")));
    let kept = w.engine.get(&kept).await.unwrap();
    assert_eq!(kept.desired, Desired::Running, "pinned: {kept:#?}");
    assert!(kept.idle.branch_gone_at.is_some(), "still recorded as gone");
}

#[tokio::test]
async fn with_no_warning_an_env_whose_branch_is_deleted_goes_at_once_and_a_forge_can_say_so_first()
{
    let w = world(IdleSettings::default()).await;
    git(&w.repo, &["branch", "brief"]);
    let name = branch_ready(&w, "brief").await.name;
    // A forge's webhook says the branch is gone before any resync looks (it is not yet).
    let marked = w
        .engine
        .branch_deleted(&RepoName::parse("app").unwrap(), "brief")
        .await
        .unwrap();
    assert_eq!(marked, vec![name.clone()]);
    git(&w.repo, &["branch", "-D", "brief"]);
    let started = Instant::now();
    wait_for_env(&w.engine, &name, "Deleted", Duration::from_secs(5), |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(2), "one resync");
    assert!(messages(&w, &name, EXPIRING_EVENT).await.is_empty());
    // The main env (a branch that exists) is untouched.
    assert!(w
        .engine
        .branch_deleted(&RepoName::parse("app").unwrap(), "nope")
        .await
        .unwrap()
        .is_empty());
}

const BUILT: &str = "\
services:
  web:
    build: .
    ports: ['8080']
";

#[tokio::test]
async fn the_reaper_removes_stale_job_containers_and_built_images_unused_for_the_retention() {
    let w = world_with(IdleSettings::default(), Some(Duration::from_secs(1))).await;
    std::fs::write(w.repo.join("compose.yml"), BUILT).unwrap();
    git(&w.repo, &["commit", "-q", "-am", "built"]);
    let ready = up_ready(&w).await;
    let name = ready.name.clone();
    let images = w.engine.store().built_images().await.unwrap();
    assert_eq!(images.len(), 1, "{images:?}");
    let tag = images[0].reference.clone();
    assert!(w.fake.has_image(&tag));

    // A job container a crash left, of a run the store does not know.
    w.fake.leave_job(&name, "run999-tests");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !w
        .fake
        .calls()
        .contains(&"remove job app-main run999-tests".to_string())
    {
        assert!(Instant::now() < deadline, "stale job never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reaped = messages(&w, &name, "reaped").await;
    assert!(
        reaped
            .iter()
            .any(|m| m.contains("removed job container run999-tests")
                && m.contains("no test run of that id is in the store")),
        "{reaped:?}"
    );

    // In use: kept however old its last recorded use.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.fake.has_image(&tag), "an image a container uses stays");
    // Unused once the env is gone: removed a retention later, with its reason.
    w.engine.down(&name, "ernie").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while w.fake.has_image(&tag) {
        assert!(Instant::now() < deadline, "unused image never reaped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reaped = messages(&w, &name, "reaped").await;
    assert!(
        reaped
            .iter()
            .any(|m| m.contains(&format!("removed built image {tag}"))
                && m.contains("(image_retention 1s)")),
        "{reaped:?}"
    );
    assert!(w.engine.store().built_images().await.unwrap().is_empty());
}
