//! Shared services on the runtime's test twin, with a real git repository and SQLite store:
//! a service marked shared runs once per repo in `<repo>-shared` at the target branch, every
//! env of the repo reaches that one container, deleting the envs leaves it, the target
//! branch moving moves it (and the envs attach the new container), and what cannot work
//! fails with the reason.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envmgr::engine::EngineError;
use envmgr::names::{BranchName, EnvName, RepoName};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::store::{Desired, EnvRecord, Phase, Store};
use envmgr::Engine;

/// `db` runs once for the repo; `web` has a copy per env and waits for `db` to be healthy.
const COMPOSE: &str = "\
services:
  db:
    image: postgres:16
    x-slipway: { shared: true }
    environment: { VERSION: '1' }
    volumes: ['pgdata:/var/lib/postgresql/data']
    healthcheck: { test: [CMD, pg_isready], interval: 1s }
  web:
    image: web:1
    ports: ['8080']
    depends_on: { db: { condition: service_healthy } }
volumes:
  pgdata: {}
";

fn app() -> RepoName {
    RepoName::parse("app").unwrap()
}

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
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Commits `compose` on `branch` (made from main when new).
fn commit_on(repo: &Path, branch: &str, compose: &str) {
    if git(repo, &["branch", "--list", branch]).is_empty() {
        git(repo, &["checkout", "-q", "-b", branch, "main"]);
    } else {
        git(repo, &["checkout", "-q", branch]);
    }
    std::fs::write(repo.join("compose.yml"), compose).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "--allow-empty", "-m", "change"]);
    git(repo, &["checkout", "-q", "main"]);
}

struct World {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    fake: Arc<FakeRuntime>,
    engine: Engine,
}

async fn world(idle: envmgr::settings::IdleSettings) -> World {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("compose.yml"), COMPOSE).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    for branch in ["feature-a", "feature-b"] {
        git(&repo, &["branch", branch]);
    }
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await
    .unwrap();
    let settings = support::engine::settings(&dir.path().join("data"), app(), &repo, idle);
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
    name: &str,
    what: &str,
    check: impl Fn(&EnvRecord) -> bool,
) -> EnvRecord {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let record = engine.get(&env(name)).await;
        if let Ok(record) = &record {
            if check(record) {
                return record.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} never became {what}: {record:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready(r: &EnvRecord) -> bool {
    r.phase == Phase::Ready && r.observed_generation >= r.generation
}

async fn up(w: &World, branch: &str) -> EnvRecord {
    w.engine
        .up(&app(), &BranchName::parse(branch).unwrap(), None, "tester")
        .await
        .unwrap()
}

/// The id of `service`'s container in `env` (the twin's), if it has one.
fn container_of(w: &World, name: &str, service: &str) -> Option<String> {
    w.fake
        .observed(&env(name))
        .services
        .iter()
        .find(|s| s.name.as_str() == service)
        .map(|s| s.container_id.clone())
}

/// The container `env` reaches as its shared `service`, if any.
fn shared_in(w: &World, name: &str, service: &str) -> Option<String> {
    w.fake
        .observed(&env(name))
        .shared
        .iter()
        .find(|s| s.name.as_str() == service)
        .map(|s| s.container_id.clone())
}

#[tokio::test]
async fn two_envs_reach_one_shared_service_which_outlives_them() {
    // Idle envs sleep at once: the shared env must not.
    let w = world(envmgr::settings::IdleSettings {
        sleep_after: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    // Slow starts, so the first env is seen waiting for the shared env.
    w.fake.set_apply_delay(Duration::from_millis(400));
    up(&w, "feature-a").await;
    up(&w, "feature-b").await;
    let a = wait_for(&w.engine, "app-feature-a", "Ready", ready).await;
    wait_for(&w.engine, "app-feature-b", "Ready", ready).await;

    let shared = wait_for(&w.engine, "app-shared", "Ready", ready).await;
    assert_eq!(shared.branch.as_str(), "main", "it runs the target branch");
    assert!(shared.idle.pinned, "{shared:#?}");
    assert!(shared.expires_at - envmgr::store::now_ms() > 50 * 365 * 24 * 3600 * 1000);
    let names: Vec<_> = shared.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db"], "only the shared services run there");
    let db = container_of(&w, "app-shared", "db").expect("one shared db");

    for name in ["app-feature-a", "app-feature-b"] {
        assert_eq!(
            container_of(&w, name, "db"),
            None,
            "{name} has no db of its own"
        );
        assert!(container_of(&w, name, "web").is_some());
        assert_eq!(shared_in(&w, name, "db"), Some(db.clone()), "{name}");
        let record = w.engine.get(&env(name)).await.unwrap();
        let from = record.services.iter().find(|s| s.name == "db").unwrap();
        let from = from.shared.as_ref().expect("recorded as shared");
        assert_eq!(
            (from.env.as_str(), from.container.as_str()),
            ("app-shared", db.as_str())
        );
        assert!(
            w.fake.observed(&env(name)).volumes.is_empty(),
            "pgdata is the shared env's"
        );
    }
    assert_eq!(w.fake.observed(&env("app-shared")).volumes, ["pgdata"]);
    let waited = w.engine.events(&a.name, 0).await.unwrap().iter().any(|e| {
        e.phase == Some(Phase::Pending)
            && e.message
                .contains("waiting for the shared env `app-shared`")
    });
    assert!(waited, "feature-a said it waited for the shared env");

    // What the shared env never does, with the reason.
    let refused = |e: EngineError| match e {
        EngineError::SharedEnv { why, .. } => why,
        other => panic!("not a shared-env refusal: {other}"),
    };
    let why = refused(
        w.engine
            .down(&env("app-shared"), "tester")
            .await
            .unwrap_err(),
    );
    assert!(
        why.contains("app-feature-a")
            && why.contains("app-feature-b")
            && why.contains("delete those first"),
        "{why}"
    );
    let why = refused(
        w.engine
            .sleep(&env("app-shared"), "tester")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("never sleeps"), "{why}");
    let why = refused(
        w.engine
            .pin(&env("app-shared"), false, "tester")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("always pinned"), "{why}");
    let why = refused(
        w.engine
            .extend(&env("app-shared"), Duration::from_secs(60), "tester")
            .await
            .unwrap_err(),
    );
    assert!(why.contains("no time to live"), "{why}");

    // The envs go idle and sleep (idle_sleep is 200 ms); the shared one stays up.
    wait_for(&w.engine, "app-feature-a", "Sleeping", |r| {
        r.phase == Phase::Sleeping
    })
    .await;
    assert_eq!(
        w.engine.get(&env("app-shared")).await.unwrap().phase,
        Phase::Ready
    );

    for name in ["app-feature-a", "app-feature-b"] {
        w.engine.down(&env(name), "tester").await.unwrap();
        wait_for(&w.engine, name, "Deleted", |r| r.phase == Phase::Deleted).await;
    }
    let shared = w.engine.get(&env("app-shared")).await.unwrap();
    assert_eq!(
        (shared.phase, shared.desired),
        (Phase::Ready, Desired::Running)
    );
    assert_eq!(
        container_of(&w, "app-shared", "db"),
        Some(db),
        "the same container"
    );

    // Unused now, it goes when asked.
    w.engine.down(&env("app-shared"), "tester").await.unwrap();
    wait_for(&w.engine, "app-shared", "Deleted", |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert!(w.fake.observed(&env("app-shared")).is_empty());
}

#[tokio::test]
async fn the_target_branch_moves_the_shared_env_and_its_users_attach_the_new_container() {
    let w = world(Default::default()).await;
    up(&w, "feature-a").await;
    wait_for(&w.engine, "app-feature-a", "Ready", ready).await;
    let first = container_of(&w, "app-shared", "db").unwrap();
    let before = w.engine.get(&env("app-shared")).await.unwrap();

    // A change to the shared service lands on main; main's own env moves, and with it the
    // shared env (a new db container); feature-a is given the new one without asking.
    commit_on(
        &w.repo,
        "main",
        &COMPOSE.replace("VERSION: '1'", "VERSION: '2'"),
    );
    up(&w, "main").await;
    wait_for(&w.engine, "app-main", "Ready", ready).await;
    let moved = wait_for(&w.engine, "app-shared", "moved", |r| {
        ready(r) && r.commit != before.commit
    })
    .await;
    assert_eq!(
        moved.commit.as_ref().unwrap().as_str(),
        git(&w.repo, &["rev-parse", "main"])
    );
    let second = container_of(&w, "app-shared", "db").unwrap();
    assert_ne!(first, second, "the changed db was replaced");
    let deadline = Instant::now() + Duration::from_secs(15);
    while shared_in(&w, "app-feature-a", "db") != Some(second.clone()) {
        assert!(
            Instant::now() < deadline,
            "feature-a never attached the new db"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = wait_for(&w.engine, "app-feature-a", "Ready again", ready).await;
    let from = a.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(from.shared.as_ref().unwrap().container, second);
    assert_eq!(shared_in(&w, "app-main", "db"), Some(second));
}

#[tokio::test]
async fn a_shared_service_the_target_branch_does_not_run_fails_the_env_with_the_reason() {
    let w = world(Default::default()).await;
    let with_cache = format!(
        "{}  cache:\n    image: redis:7\n    x-slipway: {{ shared: true }}\n",
        COMPOSE.replace("volumes:\n  pgdata: {}\n", "")
    ) + "volumes:\n  pgdata: {}\n";
    commit_on(&w.repo, "feature-c", &with_cache);
    up(&w, "feature-c").await;
    let failed = wait_for(&w.engine, "app-feature-c", "Failed", |r| {
        r.phase == Phase::Failed
    })
    .await;
    let reason = failed.reason.unwrap_or_default();
    assert!(
        reason
            .contains("service `cache` is shared, but the shared env `app-shared` (branch `main`")
            && reason.contains("merge the change there"),
        "{reason}"
    );
    // Nothing of the env started; the shared env runs main's shared services only.
    assert_eq!(container_of(&w, "app-feature-c", "web"), None);
    let shared = w.engine.get(&env("app-shared")).await.unwrap();
    let names: Vec<_> = shared.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db"]);
}
