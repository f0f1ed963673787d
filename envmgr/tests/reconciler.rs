//! The reconciler against the runtime's test twin, with a real git repository and a real
//! SQLite store: convergence, supersession, serialisation of concurrent requests, orphan
//! reaping and self-healing. Fast, no Docker needed.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envmgr::names::{BranchName, EnvName, RepoName};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::runtime::{EnvSpec, Runtime, ServiceState};
use envmgr::settings::FrontDoor;
use envmgr::store::{EnvRecord, Phase, RunTrigger, Store};
use envmgr::{Engine, EngineSettings, RepoSettings};

const COMPOSE: &str = "\
services:
  db:
    image: postgres:16
    healthcheck: { test: [CMD, pg_isready], interval: 1s }
  web:
    build: ./web
    ports: ['8080']
    depends_on: { db: { condition: service_healthy } }
  tests:
    image: tester:1
    profiles: [test]
    environment: { API_TOKEN: hunter2-secret-value }
    depends_on: [web]
";

fn app() -> RepoName {
    RepoName::parse("app").unwrap()
}

fn branch(name: &str) -> BranchName {
    BranchName::parse(name).unwrap()
}

fn env(name: &str) -> EnvName {
    EnvName::parse(name).unwrap()
}

struct World {
    _dir: tempfile::TempDir,
    repo: std::path::PathBuf,
    fake: Arc<FakeRuntime>,
    engine: Engine,
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

fn commit(repo: &Path, web_dockerfile: &str) -> String {
    std::fs::create_dir_all(repo.join("web")).unwrap();
    std::fs::write(repo.join("compose.yml"), COMPOSE).unwrap();
    std::fs::write(repo.join("web/Dockerfile"), web_dockerfile).unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", "change"]);
    git(repo, &["rev-parse", "HEAD"])
}

async fn world(fake: Arc<FakeRuntime>) -> World {
    world_with(fake, |_| {}).await
}

async fn world_with(fake: Arc<FakeRuntime>, adjust: impl FnOnce(&mut EngineSettings)) -> World {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    commit(&repo, "FROM scratch\n");
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("store.db").display()
    ))
    .await
    .unwrap();
    let mut settings = EngineSettings {
        data_dir: dir.path().join("data"),
        repos: vec![RepoSettings {
            channels: Vec::new(),
            name: RepoName::parse("app").unwrap(),
            url: repo.display().to_string(),
            env_file: "compose.yml".into(),
            default_ttl: Duration::from_secs(3600),
            test_timeout: Duration::from_secs(60),
            secret_env: vec!["API_TOKEN".into()],
            credentials: None,
            queue: Default::default(),
            idle: Default::default(),
            max_envs: None,
        }],
        default_limits: Default::default(),
        resync_interval: Duration::from_millis(300),
        lease_ttl: Duration::from_secs(15),
        ready_timeout: Duration::from_secs(10),
        public_url: "http://slipway.example.com".into(),
        test_log_retention: 3,
        env_limits: Default::default(),
        quotas: Default::default(),
        image_retention: None,
        front_door: None,
    };
    adjust(&mut settings);
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
    env: &str,
    what: &str,
    check: impl Fn(&EnvRecord) -> bool,
) -> EnvRecord {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let record = engine.get(&self::env(env)).await.unwrap();
        if check(&record) {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "{env} never became {what}: {record:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ready_at(generation: i64) -> impl Fn(&EnvRecord) -> bool {
    move |r| r.phase == Phase::Ready && r.observed_generation >= generation
}

#[tokio::test]
async fn an_env_goes_through_its_phases_to_ready_with_urls() {
    let w = world(Arc::new(FakeRuntime::new())).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let ready = wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    let urls: Vec<String> = ready.urls().into_iter().map(|(_, url)| url).collect();
    assert_eq!(urls, vec!["http://envs.example.com:40001"]);
    // No front door configured: no front-door URLs.
    assert_eq!(ready.url, None);
    assert!(ready.services.iter().all(|s| s.front_door_url.is_none()));
    let phases: Vec<Phase> = w
        .engine
        .events(&env("app-main"), 0)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.phase)
        .collect();
    assert_eq!(
        phases,
        vec![
            Phase::Pending,
            Phase::Fetching,
            Phase::Building,
            Phase::Starting,
            Phase::Ready
        ]
    );
    assert_eq!(
        ready.commit.unwrap().as_str(),
        git(&w.repo, &["rev-parse", "main"])
    );
}

/// With a front door, each service with a published TCP port gets its front-door URL (the
/// main one `<env>.<domain>`), the env its main URL, and the direct URLs stay as they were.
#[tokio::test]
async fn with_a_front_door_services_get_front_door_urls_beside_the_direct_ones() {
    let w = world_with(Arc::new(FakeRuntime::new()), |settings| {
        settings.front_door = Some(FrontDoor::new("https", "Preview.Example.com", Some(443)));
    })
    .await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let ready = wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    let web = ready.services.iter().find(|s| s.name == "web").unwrap();
    assert!(web.main);
    assert_eq!(web.urls, ["http://envs.example.com:40001"]);
    assert_eq!(
        web.front_door_url.as_deref(),
        Some("https://app-main.preview.example.com/")
    );
    let db = ready.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(db.front_door_url, None, "db publishes no port");
    assert_eq!(
        ready.url.as_deref(),
        Some("https://app-main.preview.example.com/")
    );
    assert_eq!(
        ready.urls(),
        [(
            "web".to_string(),
            "https://app-main.preview.example.com/".to_string()
        )]
    );
}

#[tokio::test]
async fn a_newer_request_supersedes_work_in_progress() {
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_secs(3));
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Starting", |r| {
        r.phase == Phase::Starting
    })
    .await;
    let newer = commit(&w.repo, "FROM scratch\nENV V=2\n");
    fake.set_apply_delay(Duration::ZERO);
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let ready = wait_for(&w.engine, "app-main", "Ready at gen 2", ready_at(2)).await;
    assert_eq!(ready.commit.unwrap().as_str(), newer);
    assert_eq!(
        fake.max_concurrent_applies(),
        1,
        "one env is never applied twice at once"
    );
}

#[tokio::test]
async fn concurrent_requests_for_one_env_never_race() {
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_millis(100));
    let w = world(fake.clone()).await;
    let mut handles = Vec::new();
    for _ in 0..10 {
        let engine = w.engine.clone();
        handles.push(tokio::spawn(async move {
            engine
                .up(&app(), &branch("main"), None, "tester")
                .await
                .unwrap()
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    let ready = wait_for(&w.engine, "app-main", "Ready at gen 10", ready_at(10)).await;
    assert_eq!(ready.generation, 10);
    assert_eq!(fake.max_concurrent_applies(), 1);
    assert_eq!(fake.observed(&ready.name).services.len(), 2);
}

#[tokio::test]
async fn down_while_starting_deletes_everything() {
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_secs(2));
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Starting", |r| {
        r.phase == Phase::Starting
    })
    .await;
    w.engine.down(&env("app-main"), "tester").await.unwrap();
    let deleted = wait_for(&w.engine, "app-main", "Deleted", |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert!(deleted.services.is_empty());
    // Give a dropped apply time to have (not) finished, then check nothing came back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.observed(&deleted.name).is_empty());
}

#[tokio::test]
async fn resources_without_a_store_row_are_reaped() {
    let fake = Arc::new(FakeRuntime::new());
    let orphan = EnvName::parse("app-orphan").unwrap();
    let spec = EnvSpec {
        env: orphan.clone(),
        repo: RepoName::parse("app").unwrap(),
        services: vec![],
        volumes: vec!["data".into()],
        shared: None,
    };
    fake.apply(&spec, Duration::from_secs(1), Arc::new(|_| {}))
        .await
        .unwrap();
    assert!(!fake.observed(&orphan).is_empty());
    let w = world(fake.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fake.observed(&orphan).is_empty() {
        assert!(Instant::now() < deadline, "orphan was not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The removal is on the orphan's timeline, with what went and why.
    let events = w.engine.store().events(&orphan, 0, 10).await.unwrap();
    let reaped = events
        .iter()
        .find(|e| e.kind == "reaped")
        .unwrap_or_else(|| panic!("no reaped event: {events:?}"));
    assert!(
        reaped.message.contains("volumes data") && reaped.message.contains("no env of that name"),
        "{}",
        reaped.message
    );
}

/// A new env past a quota is refused with the numbers and starts nothing; an `up` of the
/// existing env still works; memory counts what the planner resolved.
#[tokio::test]
async fn a_new_env_past_a_quota_is_refused_and_nothing_starts() {
    let fake = Arc::new(FakeRuntime::new());
    let w = world_with(fake.clone(), |s| s.repos[0].max_envs = Some(1)).await;
    w.engine
        .up(&app(), &branch("main"), None, "github:ernie")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;

    let refused = w
        .engine
        .up(&app(), &branch("other"), None, "github:ernie")
        .await
        .expect_err("a second env of app is past max_envs = 1");
    assert!(matches!(
        refused,
        envmgr::engine::EngineError::QuotaExceeded(_)
    ));
    let text = refused.to_string();
    assert!(
        text.starts_with("app has 1 of 1 envs; the oldest idle is app-main, idle "),
        "{text}"
    );
    assert!(w
        .engine
        .store()
        .get(&env("app-other"))
        .await
        .unwrap()
        .is_none());
    assert!(
        !fake.calls().iter().any(|c| c.contains("app-other")),
        "{:?}",
        fake.calls()
    );
    // `up` of the env that exists is no new env.
    w.engine
        .up(&app(), &branch("main"), None, "github:ernie")
        .await
        .expect("moving the existing env is never refused");
}

#[tokio::test]
async fn memory_quota_counts_the_planned_limits() {
    let fake = Arc::new(FakeRuntime::new());
    // Two running services (db, web) at the default 512 MiB each: 1 GiB for app-main.
    let w = world_with(fake.clone(), |s| {
        s.quotas.max_memory = Some(1536 * 1024 * 1024)
    })
    .await;
    w.engine
        .up(&app(), &branch("main"), None, "api:ernie")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    let refused = w
        .engine
        .up(&app(), &branch("other"), None, "api:bert")
        .await
        .expect_err("1 GiB used + about 1 GiB more is past 1.5 GiB");
    let text = refused.to_string();
    assert!(
        text.starts_with(
            "running envs reserve 1.0 GiB of 1.5 GiB memory and a new env needs about 1.0 GiB"
        ),
        "{text}"
    );
    assert!(w
        .engine
        .store()
        .get(&env("app-other"))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_vanished_service_is_restored_at_the_same_commit() {
    let fake = Arc::new(FakeRuntime::new());
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let ready = wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    let pinned = ready.commit.clone().unwrap();
    // The branch moves on, but nobody asked for an update: the restore keeps the old commit.
    commit(&w.repo, "FROM scratch\nENV V=3\n");
    fake.remove_container(&ready.name, "web");
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.observed(&ready.name).services.len() < 2 {
        assert!(Instant::now() < deadline, "web was not restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restored = wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    assert_eq!(restored.commit.unwrap(), pinned);
}

#[tokio::test]
async fn a_restarting_service_degrades_a_ready_env_until_it_is_stable() {
    let fake = Arc::new(FakeRuntime::new());
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let ready = wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    fake.set_service_state(&ready.name, "web", ServiceState::Restarting);
    let degraded = wait_for(&w.engine, "app-main", "Degraded", |e| {
        e.phase == Phase::Degraded
    })
    .await;
    let reason = degraded.reason.unwrap_or_default();
    assert!(
        reason.contains("`web`") && reason.contains("restart"),
        "{reason}"
    );
    // Not redeployed: the restart policy is at work, Slipway only reports it.
    assert_eq!(degraded.commit, ready.commit);
    fake.set_service_state(&ready.name, "web", ServiceState::Running);
    wait_for(&w.engine, "app-main", "Ready again", |e| {
        e.phase == Phase::Ready
    })
    .await;
}

#[tokio::test]
async fn a_failing_service_fails_the_env_with_its_reason() {
    let fake = Arc::new(FakeRuntime::new());
    fake.fail_service("web");
    let w = world(fake).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let failed = wait_for(&w.engine, "app-main", "Failed", |r| {
        r.phase == Phase::Failed
    })
    .await;
    let reason = failed.reason.unwrap();
    assert!(
        reason.contains("web") && reason.contains("exited with code 1"),
        "{reason}"
    );
}

#[tokio::test]
async fn an_expired_ttl_deletes_the_env() {
    let w = world(Arc::new(FakeRuntime::new())).await;
    w.engine
        .up(
            &app(),
            &branch("main"),
            Some(Duration::from_millis(800)),
            "tester",
        )
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    let deleted = wait_for(&w.engine, "app-main", "Deleted", |r| {
        r.phase == Phase::Deleted
    })
    .await;
    assert!(w.fake.observed(&deleted.name).is_empty());
}

async fn wait_for_run(
    engine: &Engine,
    env: &str,
    what: &str,
    check: impl Fn(&envmgr::store::TestRun) -> bool,
) -> envmgr::store::TestRun {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let runs = engine.runs(&self::env(env), 10).await.unwrap();
        if let Some(run) = runs.into_iter().find(|r| check(r)) {
            return run;
        }
        assert!(Instant::now() < deadline, "no run of {env} became {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_ready_env_runs_its_tests_and_failures_come_back_redacted() {
    use envmgr::runtime::JobOutcome;
    use envmgr::store::RunStatus;
    let fake = Arc::new(FakeRuntime::new());
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    let passed = wait_for_run(&w.engine, "app-main", "passed", |r| {
        r.status == RunStatus::Passed
    })
    .await;
    assert_eq!(passed.trigger, RunTrigger::Auto);
    assert!(
        fake.calls().iter().any(|c| c == "job app-main run1-tests"),
        "{:?}",
        fake.calls()
    );

    let log =
        b"connecting with hunter2-secret-value\nthread 'main' panicked at src/lib.rs:3:5:\nboom\n";
    fake.script_jobs(
        log,
        JobOutcome {
            exit_code: Some(101),
            ..Default::default()
        },
    );
    let run = w
        .engine
        .request_test(&env("app-main"), false, "tester")
        .await
        .unwrap();
    let failed = wait_for_run(&w.engine, "app-main", "failed", |r| {
        r.id == run.id && r.status.is_finished()
    })
    .await;
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(failed.exit_code, Some(101));
    for snippet in [
        &failed.snippet_check,
        &failed.snippet_comment,
        &failed.snippet_chat,
    ] {
        let snippet = snippet.as_deref().unwrap();
        assert!(snippet.contains("panicked at src/lib.rs:3:5"), "{snippet}");
        assert!(!snippet.contains("hunter2-secret-value"), "{snippet}");
        assert!(
            snippet.contains(&format!("/runs/{}/log", run.id)),
            "{snippet}"
        );
    }
    assert!(failed.snippet_chat.as_deref().unwrap().chars().count() <= 2000);
    let log_path = w.engine.run_log(&env("app-main"), run.id).await.unwrap();
    assert!(log_path.exists());
}

#[tokio::test]
async fn runs_of_a_deleted_env_end_with_a_reason() {
    use envmgr::store::RunStatus;
    let w = world(Arc::new(FakeRuntime::new())).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    w.engine.down(&env("app-main"), "tester").await.unwrap();
    wait_for(&w.engine, "app-main", "Deleted", |r| {
        r.phase == Phase::Deleted
    })
    .await;
    // Queued behind a deletion: it cannot run and says why.
    let err = w
        .engine
        .request_test(&env("app-main"), false, "tester")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
    let runs = w.engine.runs(&env("app-main"), 10).await.unwrap();
    assert!(runs
        .iter()
        .all(|r| r.status.is_finished() || r.status == RunStatus::Queued));
}

/// A build whose context did not change between two commits keeps its content tag: the
/// second env reuses the image (the runtime then never reads the context).
#[tokio::test]
async fn an_unchanged_build_context_is_reused_not_rebuilt() {
    let fake = Arc::new(FakeRuntime::new());
    let w = world(fake.clone()).await;
    w.engine
        .up(&app(), &branch("main"), None, "tester")
        .await
        .unwrap();
    wait_for(&w.engine, "app-main", "Ready", ready_at(1)).await;
    git(&w.repo, &["checkout", "-q", "-b", "docs"]);
    std::fs::write(w.repo.join("README.md"), "outside the web context\n").unwrap();
    git(&w.repo, &["add", "-A"]);
    git(&w.repo, &["commit", "-q", "-m", "docs"]);
    w.engine
        .up(&app(), &branch("docs"), None, "tester")
        .await
        .unwrap();
    wait_for(&w.engine, "app-docs", "Ready", ready_at(1)).await;
    let images: Vec<String> = fake
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("build ") || c.starts_with("reuse "))
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    assert!(
        images[0].starts_with("build slipway/app-web:"),
        "{images:?}"
    );
    assert_eq!(images[1], images[0].replacen("build", "reuse", 1));
}
