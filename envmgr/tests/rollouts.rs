//! Monitored rollouts on the runtime's test twin, with a real git repository and a SQLite
//! store (one test on Postgres too). The front door is simulated by writing its traffic rows
//! (`Store::record_traffic`) for whatever split the store says is live. Throughout every
//! test a watcher checks the promise the front door relies on: a rollout's canary weight is
//! never above 0 while its canary env is not Ready at the new version.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use envmgr::names::{EnvName, RepoName};
use envmgr::rollout::{
    AnalysisSettings, ChannelSettings, GuardOutcome, Rollout, RolloutAction, RolloutGuard,
    RolloutState, Version, VersionCounts,
};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::store::{now_ms, Desired, EnvRole, Phase, Store};
use envmgr::Engine;

const COMPOSE: &str = "\
services:
  db:
    image: postgres:16
    volumes: ['pgdata:/var/lib/postgresql/data']
  web:
    build: ./web
    ports: ['8080']
    depends_on: [db]
  worker:
    image: worker:1
  tests:
    image: tests:1
    profiles: [test]
volumes:
  pgdata: {}
";

fn shop() -> RepoName {
    RepoName::parse("shop").unwrap()
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

/// Commits a new version of `web` on main and returns the commit.
fn commit_web(repo: &Path, version: &str) -> String {
    std::fs::write(
        repo.join("web/Dockerfile"),
        format!("FROM scratch\n# {version}\n"),
    )
    .unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", version]);
    git(repo, &["rev-parse", "HEAD"])
}

fn channel(name: &str) -> ChannelSettings {
    ChannelSettings {
        name: name.into(),
        steps: vec![50, 500, 1000],
        min_step_time: Duration::ZERO,
        max_step_time: Duration::from_secs(60),
        requires_approval: false,
        soak: Duration::ZERO,
        windows: vec![],
        freeze: None,
        alerts: vec![],
        metrics: vec![],
        metric_outage: Duration::from_secs(120),
        analysis: AnalysisSettings {
            min_step_time: Duration::ZERO,
            ..AnalysisSettings::default()
        },
    }
}

/// What the simulated front door serves: the canary's error rate (errors per 1000).
#[derive(Clone)]
struct Traffic {
    canary_errors_per_mille: Arc<AtomicU64>,
    on: Arc<AtomicBool>,
}

struct World {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    fake: Arc<FakeRuntime>,
    engine: Engine,
    traffic: Traffic,
    violations: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn make_repo(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("web")).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("compose.yml"), COMPOSE).unwrap();
    commit_web(&repo, "v1");
    repo
}

async fn start_engine(
    dir: &Path,
    repo: &Path,
    url: &str,
    fake: Arc<FakeRuntime>,
    channels: Vec<ChannelSettings>,
) -> Engine {
    let store = Store::connect(url).await.unwrap();
    let mut settings =
        support::engine::settings(&dir.join("data"), shop(), repo, Default::default());
    settings.repos[0].channels = channels;
    Engine::start(settings, store, fake).await.unwrap()
}

async fn world_on(url: Option<String>, channels: Vec<ChannelSettings>) -> World {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let url = url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("store.db").display()));
    let fake = Arc::new(FakeRuntime::new());
    let engine = start_engine(dir.path(), &repo, &url, fake.clone(), channels).await;
    let traffic = Traffic {
        canary_errors_per_mille: Arc::new(AtomicU64::new(0)),
        on: Arc::new(AtomicBool::new(true)),
    };
    let violations = Arc::new(Mutex::new(Vec::new()));
    let tasks = vec![
        tokio::spawn(front_door(engine.store().clone(), traffic.clone())),
        tokio::spawn(watch_weights(engine.store().clone(), violations.clone())),
    ];
    World {
        _dir: dir,
        repo,
        fake,
        engine,
        traffic,
        violations,
        tasks,
    }
}

async fn world(channels: Vec<ChannelSettings>) -> World {
    world_on(None, channels).await
}

/// The simulated front door: every 100 ms, for each live split with traffic on the canary,
/// 20 canary and 400 stable requests (latencies alike), the canary failing at the
/// configured rate. Each write is its own `writer`, so the rows add up.
async fn front_door(store: Store, traffic: Traffic) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if !traffic.on.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(splits) = store.traffic_splits().await else {
            continue;
        };
        for split in splits {
            if split.canary_weight == 0 || split.canary_weight >= 1000 {
                continue;
            }
            tick += 1;
            let per_mille = traffic.canary_errors_per_mille.load(Ordering::SeqCst);
            let counts = |requests: u64, errors: u64| {
                let mut c = VersionCounts {
                    requests,
                    errors,
                    ..Default::default()
                };
                for i in 0..requests.min(200) {
                    c.latency.record(20.0 + (i % 7) as f64);
                }
                c
            };
            let writer = format!("test-{tick}");
            let now = now_ms();
            let canary = counts(20, 20 * per_mille / 1000);
            let stable = counts(400, 0);
            let _ = store
                .record_traffic(split.rollout_id, Version::Canary, now, &writer, &canary)
                .await;
            let _ = store
                .record_traffic(split.rollout_id, Version::Stable, now, &writer, &stable)
                .await;
        }
    }
}

/// Records every moment a live rollout's canary weight is above 0 while its canary env is
/// not Ready at the rollout's version (or not its canary at all).
async fn watch_weights(store: Store, violations: Arc<Mutex<Vec<String>>>) {
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let Ok(splits) = store.traffic_splits().await else {
            continue;
        };
        for split in splits.iter().filter(|s| s.canary_weight > 0) {
            let Ok(Some(rollout)) = store.rollout(split.rollout_id).await else {
                continue;
            };
            let canary = store.get(&split.canary_env).await.ok().flatten();
            let role = store.env_role(&split.canary_env).await.ok().flatten();
            let ok = canary.as_ref().is_some_and(|c| {
                c.desired == Desired::Running
                    && matches!(c.phase, Phase::Ready | Phase::Degraded)
                    && c.commit.as_ref() == Some(&rollout.to_commit)
            }) && role
                == Some(EnvRole::Canary {
                    rollout: rollout.id,
                });
            if !ok {
                violations.lock().unwrap().push(format!(
                    "rollout {} weight {} with canary env {:?} role {role:?}",
                    rollout.id,
                    split.canary_weight,
                    canary.map(|c| (c.desired, c.phase, c.commit))
                ));
            }
        }
    }
}

impl World {
    fn assert_no_violations(&self) {
        let v = self.violations.lock().unwrap();
        assert!(
            v.is_empty(),
            "traffic went to a canary that was not Ready: {v:#?}"
        );
    }

    async fn rollout(&self, id: i64) -> Rollout {
        self.engine.store().rollout(id).await.unwrap().unwrap()
    }

    async fn wait_rollout(&self, id: i64, what: &str, check: impl Fn(&Rollout) -> bool) -> Rollout {
        wait_rollout(self.engine.store(), id, what, check).await
    }

    /// Releases main's newest commit into staging and waits for it to be done there.
    async fn first_release(&self) -> Rollout {
        let r = self
            .engine
            .release(&shop(), "main", Some("staging"), "alice")
            .await
            .unwrap();
        self.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
            .await
    }

    /// The `rollout.*` events of an env, as (kind, message).
    async fn rollout_events(&self, name: &str) -> Vec<(String, String)> {
        self.engine
            .store()
            .events(&env(name), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.starts_with("rollout."))
            .map(|e| (e.kind, e.message))
            .collect()
    }
}

async fn wait_rollout(
    store: &Store,
    id: i64,
    what: &str,
    check: impl Fn(&Rollout) -> bool,
) -> Rollout {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = store.rollout(id).await.unwrap().unwrap();
        if check(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "rollout {id} never became {what}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(k, _)| k.as_str()).collect()
}

fn two_channels() -> Vec<ChannelSettings> {
    vec![channel("staging"), channel("production")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_version_goes_through_every_step_then_to_the_next_channel_after_soak() {
    let mut staging = channel("staging");
    staging.soak = Duration::from_secs(2);
    let w = world(vec![staging, channel("production")]).await;
    let first = w.first_release().await;
    // The channel's first release: the release env runs everything (no test run), and after
    // the soak the same version goes to production.
    let release = w.engine.get(&env("shop-staging")).await.unwrap();
    assert_eq!(release.phase, Phase::Ready);
    let names: Vec<&str> = release.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db", "web", "worker"]);
    assert!(w
        .engine
        .store()
        .runs(&env("shop-staging"), 10)
        .await
        .unwrap()
        .is_empty());
    let production = loop {
        let found = w
            .engine
            .rollout_current(&shop(), Some("production"))
            .await
            .unwrap();
        if let Some(r) = found {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let staging_done_at = first.finished_at.unwrap();
    assert!(
        production.created_at - staging_done_at >= 2000,
        "production started {} ms after staging reached 100%, before the 2 s soak",
        production.created_at - staging_done_at
    );
    assert_eq!(production.source, "promotion from staging");
    assert_eq!(production.to_commit, first.to_commit);
    w.wait_rollout(production.id, "done", |r| r.state == RolloutState::Done)
        .await;

    // A new version of web: a canary beside the release env, step by step to 100%.
    let v2 = commit_web(&w.repo, "v2");
    let r = w
        .engine
        .release(&shop(), &v2[..8], Some("staging"), "alice")
        .await
        .unwrap();
    assert_eq!(r.to_commit.as_str(), v2);
    assert_eq!(r.from_commit, Some(first.to_commit.clone()));
    let progressing = w
        .wait_rollout(r.id, "at its first step", |r| {
            r.state == RolloutState::Progressing && r.canary_weight == 50
        })
        .await;
    assert_eq!(progressing.step, 0);
    // The canary runs the changed service (and the entry, which is the same here) only;
    // db and worker are the release env's.
    let canary = w.engine.get(&env("shop-staging-canary")).await.unwrap();
    let own: Vec<&str> = canary
        .services
        .iter()
        .filter(|s| s.shared.is_none())
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(own, ["web"]);
    let reached: Vec<(&str, &str)> = canary
        .services
        .iter()
        .filter_map(|s| s.shared.as_ref().map(|f| (s.name.as_str(), f.env.as_str())))
        .collect();
    assert_eq!(
        reached,
        [("db", "shop-staging"), ("worker", "shop-staging")]
    );

    let done = w
        .wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    assert_eq!(done.canary_weight, 0);
    let comparison = done.comparison.expect("a live comparison was written");
    assert!(comparison["canary"]["requests"].as_u64().unwrap() > 0);
    assert!(comparison["baseline"]["requests"].as_u64().unwrap() > 0);
    assert!(comparison["verdict"].is_string() && comparison["why"].is_string());
    let release = w.engine.get(&env("shop-staging")).await.unwrap();
    assert_eq!(
        release.commit.as_ref().map(|c| c.as_str()),
        Some(v2.as_str())
    );
    let channels = w.engine.channels(&shop()).await.unwrap();
    assert_eq!(
        channels[0].version.as_ref().map(|c| c.as_str()),
        Some(v2.as_str())
    );
    // The canary env goes once the release env runs the new version.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w
        .engine
        .get(&env("shop-staging-canary"))
        .await
        .unwrap()
        .phase
        != Phase::Deleted
    {
        assert!(
            Instant::now() < deadline,
            "the canary env was never removed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = w.rollout_events("shop-staging").await;
    let ours: Vec<&(String, String)> = events
        .iter()
        .skip_while(|(_, m)| !m.contains(&format!("rollout {}", r.id)))
        .collect();
    let ours_kinds: Vec<&str> = ours.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        ours_kinds,
        [
            "rollout.requested",
            "rollout.started",
            "rollout.step",
            "rollout.promoted",
            "rollout.done"
        ],
        "{events:#?}"
    );
    assert!(ours[2].1.contains("step 2 (50%)"), "{}", ours[2].1);
    assert!(ours[2].1.contains("errors 0.0% vs 0.0%"), "{}", ours[2].1);
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_version_is_rolled_back_at_the_first_step_with_the_numbers_and_logs() {
    let w = world(two_channels()).await;
    let first = w.first_release().await;
    w.traffic
        .canary_errors_per_mille
        .store(200, Ordering::SeqCst);
    let v2 = commit_web(&w.repo, "v2-bad");
    let r = w
        .engine
        .release(&shop(), &v2, Some("staging"), "alice")
        .await
        .unwrap();
    let done = w
        .wait_rollout(r.id, "rolled back", |r| r.state.is_finished())
        .await;
    assert_eq!(done.state, RolloutState::RolledBack, "{done:#?}");
    assert_eq!(done.step, 0, "rolled back before the second step");
    assert_eq!(done.canary_weight, 0);
    let decision = done.decision.expect("the decision is kept");
    assert_eq!(decision["check"], "errors");
    let canary_value = decision["canary_value"].as_f64().unwrap();
    assert!((canary_value - 0.2).abs() < 0.05, "{decision}");
    assert_eq!(decision["baseline_value"].as_f64(), Some(0.0));
    assert!(decision["statistic"].as_f64().unwrap() > 4.0);
    assert!(decision["canary_requests"].as_u64().unwrap() >= 20);
    assert!(decision["canary_errors"].as_u64().unwrap() >= 4);
    assert!(decision["baseline_requests"].as_u64().unwrap() >= 400);
    assert_eq!(decision["baseline_errors"].as_u64(), Some(0));
    let logs = decision["log_lines"].as_array().unwrap();
    assert!(
        !logs.is_empty() && logs.iter().all(|l| l.as_str().unwrap().starts_with("web")),
        "{decision}"
    );
    let events = w.rollout_events("shop-staging").await;
    let (kind, message) = events.last().unwrap();
    assert_eq!(kind, "rollout.rolled_back");
    assert!(
        message.starts_with(&format!(
            "rolled back shop {} in staging at step 1 (5%): errors 20.0% vs 0.0% over ",
            &v2[..12]
        )) && message.contains("(log LR "),
        "{message}"
    );
    // The canary goes; the channel stays at its version.
    let deadline = Instant::now() + Duration::from_secs(10);
    while w
        .engine
        .get(&env("shop-staging-canary"))
        .await
        .unwrap()
        .desired
        != Desired::Deleted
    {
        assert!(
            Instant::now() < deadline,
            "the canary env was never asked down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channels = w.engine.channels(&shop()).await.unwrap();
    assert_eq!(channels[0].version, Some(first.to_commit.clone()));
    let release = w.engine.get(&env("shop-staging")).await.unwrap();
    assert_eq!(release.commit, Some(first.to_commit));
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_promote_and_rollback_from_a_deployer() {
    let mut staging = channel("staging");
    // Steps long enough that only the commands move it.
    staging.steps = vec![50, 100, 200, 500, 1000];
    staging.min_step_time = Duration::from_secs(3600);
    let w = world(vec![staging]).await;
    w.first_release().await;
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    w.wait_rollout(r.id, "progressing", |r| r.canary_weight == 50)
        .await;
    let paused = w
        .engine
        .rollout_action(&shop(), None, RolloutAction::Pause, "bob")
        .await
        .unwrap();
    assert!(paused.paused);
    w.wait_rollout(r.id, "paused", |r| r.state == RolloutState::Paused)
        .await;
    let again = w
        .engine
        .rollout_action(&shop(), None, RolloutAction::Pause, "bob")
        .await
        .unwrap_err();
    assert!(again.to_string().contains("already paused"), "{again}");
    // Promote while paused is recorded, but nothing moves until resumed.
    w.engine
        .rollout_action(&shop(), Some("staging"), RolloutAction::Promote, "bob")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(w.rollout(r.id).await.state, RolloutState::Paused);
    assert_eq!(w.rollout(r.id).await.step, 0);
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Resume, "bob")
        .await
        .unwrap();
    // Promote skips the remaining steps, through the swap at 100%.
    let done = w
        .wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    assert_eq!(done.step, 4);
    let events = w.rollout_events("shop-staging").await;
    let promoted = events
        .iter()
        .find(|(k, _)| k == "rollout.promoted")
        .expect("a promotion event");
    assert!(promoted.1.contains("`rollout promote`"), "{}", promoted.1);
    assert!(!kinds(&events).contains(&"rollout.step"), "{events:#?}");

    // Rollback from a deployer at any step: weight 0, canary gone, recorded with the actor.
    let v3 = commit_web(&w.repo, "v3");
    let r = w.engine.release(&shop(), &v3, None, "alice").await.unwrap();
    w.wait_rollout(r.id, "progressing", |r| r.canary_weight == 50)
        .await;
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Rollback, "carol")
        .await
        .unwrap();
    let back = w
        .wait_rollout(r.id, "rolled back", |r| r.state == RolloutState::RolledBack)
        .await;
    let decision = back.decision.unwrap();
    assert_eq!(decision["check"], "manual");
    assert_eq!(decision["actor"], "carol");
    assert!(decision["log_lines"].is_array());
    let none = w
        .engine
        .rollout_action(&shop(), None, RolloutAction::Pause, "bob")
        .await
        .unwrap_err();
    assert!(
        none.to_string().contains("no rollout is in progress"),
        "{none}"
    );
    // Every request is on the release env's timeline with who asked (surfaces write the
    // audit log entry for the command itself).
    let events = w
        .engine
        .store()
        .recent_events(&env("shop-staging"), 200)
        .await
        .unwrap();
    for (actor, what) in [
        ("bob", "pause"),
        ("bob", "promote"),
        ("bob", "resume"),
        ("carol", "rollback"),
    ] {
        assert!(
            events.iter().any(|e| e.kind == "rollout.requested"
                && e.actor.as_deref() == Some(actor)
                && e.message.contains(what)),
            "{actor} {what}: {events:#?}"
        );
    }
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_needed_for_every_step_and_the_approver_is_recorded() {
    let mut staging = channel("staging");
    staging.requires_approval = true;
    let w = world(vec![staging]).await;
    // The first release waits for approval too.
    let r = w
        .engine
        .release(&shop(), "main", None, "alice")
        .await
        .unwrap();
    let blocked = w
        .wait_rollout(r.id, "blocked", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(
        blocked
            .reason
            .as_deref()
            .unwrap()
            .contains("`rollout approve`"),
        "{blocked:#?}"
    );
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Approve, "dave")
        .await
        .unwrap();
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;

    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    for (step, weight) in [(0usize, 50u16), (1, 500)] {
        let blocked = w
            .wait_rollout(r.id, "waiting for approval", |r| {
                r.state == RolloutState::Blocked
                    && r.reason.as_deref().is_some_and(|t| t.contains("approve"))
            })
            .await;
        assert!(blocked
            .reason
            .unwrap()
            .contains(&format!("step {}", step + 1)));
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(w.rollout(r.id).await.state, RolloutState::Blocked);
        let approved = w
            .engine
            .rollout_action(&shop(), None, RolloutAction::Approve, "dave")
            .await
            .unwrap();
        assert_eq!(approved.approved_by.as_deref(), Some("dave"));
        assert_eq!(approved.approved_step, Some(step));
        w.wait_rollout(r.id, "at the approved step", |r| {
            r.step == step && r.canary_weight == weight
        })
        .await;
    }
    // Entering 100% needs its approval too.
    w.wait_rollout(r.id, "waiting for approval", |r| {
        r.state == RolloutState::Blocked
    })
    .await;
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Approve, "dave")
        .await
        .unwrap();
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    let events = w.rollout_events("shop-staging").await;
    let blocked = events
        .iter()
        .filter(|(k, _)| k == "rollout.blocked")
        .count();
    // Once per distinct reason: the first release's start, then each of the three steps.
    assert_eq!(blocked, 4, "{events:#?}");
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_freeze_blocks_with_its_reason_until_unfrozen() {
    let w = world(two_channels()).await;
    w.first_release().await;
    let status = w
        .engine
        .freeze_channel(&shop(), "staging", "incident 42", "erin")
        .await
        .unwrap();
    let frozen = status.frozen.unwrap();
    assert_eq!(
        (frozen.reason.as_str(), frozen.by.as_str()),
        ("incident 42", "erin")
    );
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    let blocked = w
        .wait_rollout(r.id, "blocked", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(
        blocked
            .reason
            .as_deref()
            .unwrap()
            .contains("frozen by erin: incident 42"),
        "{blocked:#?}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = w.rollout(r.id).await;
    assert_eq!(
        (still.state, still.canary_weight),
        (RolloutState::Blocked, 0)
    );
    w.engine
        .unfreeze_channel(&shop(), "staging", "erin")
        .await
        .unwrap();
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    let events = w.rollout_events("shop-staging").await;
    let blocked: Vec<&(String, String)> = events
        .iter()
        .filter(|(k, _)| k == "rollout.blocked")
        .collect();
    assert_eq!(
        blocked.len(),
        1,
        "one event per distinct reason: {events:#?}"
    );
    assert!(blocked[0].1.contains("incident 42"));
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_traffic_past_max_step_time_holds_as_inconclusive_and_never_promotes() {
    let mut staging = channel("staging");
    staging.max_step_time = Duration::from_secs(2);
    let w = world(vec![staging]).await;
    w.first_release().await;
    w.traffic.on.store(false, Ordering::SeqCst);
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    let blocked = w
        .wait_rollout(r.id, "inconclusive", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(
        blocked
            .reason
            .as_deref()
            .unwrap()
            .starts_with("inconclusive: "),
        "{blocked:#?}"
    );
    assert_eq!(
        blocked.comparison.as_ref().unwrap()["verdict"],
        "inconclusive"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = w.rollout(r.id).await;
    assert_eq!(
        (held.state, held.step, held.canary_weight),
        (RolloutState::Blocked, 0, 50)
    );
    // Evidence arriving late still decides it.
    w.traffic.on.store(true, Ordering::SeqCst);
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    w.assert_no_violations();
}

/// A guard whose answer the test sets.
struct Window(Mutex<GuardOutcome>);

#[async_trait]
impl RolloutGuard for Window {
    async fn check(&self, _rollout: &Rollout, _channel: &ChannelSettings) -> GuardOutcome {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_guard_blocks_and_an_unavailable_one_rolls_back_after_the_outage() {
    let mut staging = channel("staging");
    staging.metric_outage = Duration::from_secs(2);
    let w = world(vec![staging]).await;
    w.first_release().await;
    let guard = Arc::new(Window(Mutex::new(GuardOutcome::Block(
        "outside the deploy window (Mon-Fri 09:00-17:00 Europe/Paris)".into(),
    ))));
    w.engine.rollout_checks().add_guard(guard.clone());
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    let blocked = w
        .wait_rollout(r.id, "blocked", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(blocked
        .reason
        .unwrap()
        .contains("outside the deploy window"));
    *guard.0.lock().unwrap() = GuardOutcome::Allow;
    w.wait_rollout(r.id, "at its first step", |r| r.canary_weight == 50)
        .await;
    // The source errors before the next promotion: hold, then roll back past metric_outage.
    *guard.0.lock().unwrap() = GuardOutcome::Unavailable("alertmanager: connection refused".into());
    let held = w
        .wait_rollout(r.id, "held", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(held.reason.unwrap().contains("connection refused"));
    assert!(held.metric_error_since.is_some());
    let back = w
        .wait_rollout(r.id, "rolled back", |r| r.state == RolloutState::RolledBack)
        .await;
    assert!(
        back.reason.unwrap().contains("unavailable for"),
        "rolled back with the outage as the reason"
    );
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_release_supersedes_the_live_one_and_takes_its_canary() {
    let mut staging = channel("staging");
    staging.min_step_time = Duration::from_secs(3600);
    let w = world(vec![staging]).await;
    w.first_release().await;
    let v2 = commit_web(&w.repo, "v2");
    let r2 = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    w.wait_rollout(r2.id, "progressing", |r| r.canary_weight == 50)
        .await;
    let v3 = commit_web(&w.repo, "v3");
    let r3 = w.engine.release(&shop(), &v3, None, "alice").await.unwrap();
    let old = w.rollout(r2.id).await;
    assert_eq!(
        (old.state, old.canary_weight),
        (RolloutState::Superseded, 0)
    );
    let splits = w.engine.store().traffic_splits().await.unwrap();
    assert_eq!(
        splits.iter().map(|s| s.rollout_id).collect::<Vec<_>>(),
        [r3.id]
    );
    w.wait_rollout(r3.id, "progressing", |r| r.canary_weight == 50)
        .await;
    let canary = w.engine.get(&env("shop-staging-canary")).await.unwrap();
    assert_eq!(
        canary.commit.as_ref().map(|c| c.as_str()),
        Some(v3.as_str())
    );
    assert_eq!(
        w.engine.store().env_role(&canary.name).await.unwrap(),
        Some(EnvRole::Canary { rollout: r3.id })
    );
    let events = w.rollout_events("shop-staging").await;
    assert!(
        kinds(&events).contains(&"rollout.superseded"),
        "{events:#?}"
    );
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_version_is_released_again_without_rebuilding() {
    let w = world(vec![channel("staging")]).await;
    let first = w.first_release().await;
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    let builds_before = w
        .fake
        .calls()
        .iter()
        .filter(|c| c.starts_with("build "))
        .count();
    let back = w
        .engine
        .release(&shop(), &first.to_commit.as_str()[..10], None, "alice")
        .await
        .unwrap();
    assert_eq!(back.to_commit, first.to_commit);
    w.wait_rollout(back.id, "done", |r| r.state == RolloutState::Done)
        .await;
    let calls = w.fake.calls();
    let builds_after = calls.iter().filter(|c| c.starts_with("build ")).count();
    assert_eq!(
        builds_before, builds_after,
        "nothing was built again: {calls:#?}"
    );
    assert!(calls
        .iter()
        .any(|c| c.starts_with("reuse slipway/shop-web:")));
    let release = w.engine.get(&env("shop-staging")).await.unwrap();
    assert_eq!(release.commit, Some(first.to_commit));
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    let w = world(two_channels()).await;
    let e = w
        .engine
        .release(&shop(), "main", Some("qa"), "alice")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no channel `qa`") && e.contains("staging, production"),
        "{e}"
    );
    let e = w
        .engine
        .release(&shop(), "no-such-branch", None, "alice")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-branch"), "{e}");
    let w2 = world(vec![]).await;
    let e = w2
        .engine
        .release(&shop(), "main", None, "alice")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("[[repo.channel]]"), "{e}");
    // A branch named like a channel does not take its release env's name.
    let up = w
        .engine
        .up(
            &shop(),
            &envmgr::names::BranchName::parse("staging").unwrap(),
            None,
            "alice",
        )
        .await
        .unwrap();
    assert_ne!(up.name.as_str(), "shop-staging");
    assert!(up.name.as_str().starts_with("shop-staging-"));
}

/// Kill -9 mid-step: the engine's runtime is dropped with everything in flight, a new engine
/// on the same store continues from the stored step without starting over.
#[test]
fn a_rollout_killed_mid_step_resumes_at_the_same_step() {
    let dir = tempfile::tempdir().unwrap();
    let repo = make_repo(dir.path());
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let fake = Arc::new(FakeRuntime::new());
    let mut staging = channel("staging");
    staging.steps = vec![50, 200, 500, 1000];
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    let traffic = Traffic {
        canary_errors_per_mille: Arc::new(AtomicU64::new(0)),
        on: Arc::new(AtomicBool::new(true)),
    };
    let first = runtime();
    let (id, step_before) = first.block_on(async {
        let engine =
            start_engine(dir.path(), &repo, &url, fake.clone(), vec![staging.clone()]).await;
        tokio::spawn(front_door(engine.store().clone(), traffic.clone()));
        let r = engine
            .release(&shop(), "main", None, "alice")
            .await
            .unwrap();
        wait_rollout(engine.store(), r.id, "done", |r| {
            r.state == RolloutState::Done
        })
        .await;
        let v2 = commit_web(&repo, "v2");
        let r = engine.release(&shop(), &v2, None, "alice").await.unwrap();
        let at = wait_rollout(engine.store(), r.id, "at its second step", |r| r.step == 1).await;
        (r.id, at.step)
    });
    // Kill: every task of the first engine stops wherever it is.
    first.shutdown_timeout(Duration::ZERO);

    let second = runtime();
    second.block_on(async {
        let engine = start_engine(dir.path(), &repo, &url, fake.clone(), vec![staging]).await;
        let stored = engine.store().rollout(id).await.unwrap().unwrap();
        assert!(stored.step >= step_before, "{stored:#?}");
        let violations = Arc::new(Mutex::new(Vec::new()));
        tokio::spawn(front_door(engine.store().clone(), traffic.clone()));
        tokio::spawn(watch_weights(engine.store().clone(), violations.clone()));
        let done = wait_rollout(engine.store(), id, "done", |r| {
            r.state == RolloutState::Done
        })
        .await;
        assert_eq!(done.step, 3);
        let events: Vec<String> = engine
            .store()
            .events(&env("shop-staging"), 0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.message.contains(&done.to_commit.short().to_string()))
            .map(|e| e.kind)
            .collect();
        let started = events.iter().filter(|k| *k == "rollout.started").count();
        assert_eq!(started, 1, "the rollout did not start over: {events:#?}");
        assert_eq!(events.last().map(String::as_str), Some("rollout.done"));
        assert!(violations.lock().unwrap().is_empty(), "{violations:?}");
    });
}

/// The store's rollout writes on Postgres: a freeze, then a version paused, resumed and
/// promoted by a deployer to 100%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_every_request_on_postgres() {
    let Some(pg) = support::postgres::TestPostgres::start().await else {
        return;
    };
    let mut staging = channel("staging");
    staging.min_step_time = Duration::from_secs(3600);
    let w = world_on(Some(pg.url().to_string()), vec![staging]).await;
    w.first_release().await;
    w.engine
        .freeze_channel(&shop(), "staging", "release party", "erin")
        .await
        .unwrap();
    let v2 = commit_web(&w.repo, "v2");
    let r = w.engine.release(&shop(), &v2, None, "alice").await.unwrap();
    let blocked = w
        .wait_rollout(r.id, "frozen", |r| r.state == RolloutState::Blocked)
        .await;
    assert!(blocked.reason.unwrap().contains("release party"));
    w.engine
        .unfreeze_channel(&shop(), "staging", "erin")
        .await
        .unwrap();
    w.wait_rollout(r.id, "progressing", |r| r.canary_weight == 50)
        .await;
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Pause, "bob")
        .await
        .unwrap();
    w.wait_rollout(r.id, "paused", |r| r.state == RolloutState::Paused)
        .await;
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Resume, "bob")
        .await
        .unwrap();
    w.engine
        .rollout_action(&shop(), None, RolloutAction::Promote, "bob")
        .await
        .unwrap();
    let done = w
        .wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    assert_eq!(done.canary_weight, 0);
    let events = w.rollout_events("shop-staging").await;
    let decisions: Vec<&str> = kinds(&events)
        .into_iter()
        .filter(|k| *k != "rollout.requested")
        .collect();
    // The first release (started, done), then this one.
    assert_eq!(
        decisions,
        [
            "rollout.started",
            "rollout.done",
            "rollout.blocked",
            "rollout.started",
            "rollout.promoted",
            "rollout.done"
        ],
        "{events:#?}"
    );
    let requests = events
        .iter()
        .filter(|(k, m)| k == "rollout.requested" && m.contains("by bob"))
        .count();
    assert_eq!(requests, 3, "pause, resume, promote: {events:#?}");
    w.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landed_change_rolls_out_to_the_first_channel() {
    let w = world(two_channels()).await;
    w.first_release().await;
    let v2 = commit_web(&w.repo, "v2");
    // The queue landed it from the mirror: fetched there before it is released.
    w.engine
        .git()
        .fetch_branch(
            &w.engine.settings().repos[0],
            &envmgr::names::BranchName::parse("main").unwrap(),
        )
        .await
        .unwrap();
    let commit = envmgr::names::CommitSha::parse(&v2).unwrap();
    let r = w
        .engine
        .release_landed(&shop(), &commit, "slipway-queue")
        .await
        .unwrap()
        .expect("the repo has channels");
    assert_eq!(
        (r.channel.as_str(), r.source.as_str()),
        ("staging", "queue")
    );
    assert_eq!(r.to_commit, commit);
    w.wait_rollout(r.id, "done", |r| r.state == RolloutState::Done)
        .await;
    let none = world(vec![]).await;
    assert!(none
        .engine
        .release_landed(&shop(), &commit, "slipway-queue")
        .await
        .unwrap()
        .is_none());
    w.assert_no_violations();
}
