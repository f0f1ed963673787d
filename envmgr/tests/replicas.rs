//! Several replicas on one Postgres: each runs its own engine (own tokio runtime, own data
//! dir) against one store and one shared runtime twin, which counts how many replicas act on
//! an env at once. Killing a replica drops its runtime on the spot, like kill -9: no lease is
//! released, nothing is cleaned up.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use envmgr::names::{EnvName, RepoName, ServiceName};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::runtime::{
    EnvSpec, ImageSource, JobOutcome, JobSpec, LogOptions, LogStream, ObservedEnv, ProgressSink,
    PublishedPort, Runtime, RuntimeError,
};
use envmgr::store::{Phase, Store};
use envmgr::{Engine, EngineSettings, RepoSettings};
use support::postgres::TestPostgres;

const COMPOSE: &str = "services:\n  web:\n    image: web:1\n    ports: ['8080']\n";

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

/// A repo with `main` and `branches` more branches, each one commit.
fn repo(dir: &Path, branches: usize) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "--initial-branch=main"]);
    std::fs::write(repo.join("compose.yml"), COMPOSE).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    for i in 0..branches {
        git(&repo, &["branch", &format!("b{i}"), "main"]);
    }
    repo
}

/// What every replica did to which env, shared by all replicas' runtimes.
#[derive(Default)]
struct Ledger {
    /// Calls acting on an env in flight now, per env.
    in_flight: HashMap<String, usize>,
    /// Times two acting calls on one env overlapped.
    overlaps: usize,
    /// (replica, env) of every `apply`.
    applies: Vec<(String, String)>,
}

/// The runtime twin, seen through one replica: every acting call is counted per env.
struct Counting {
    replica: String,
    fake: Arc<FakeRuntime>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Counting {
    fn enter(&self, env: &str) {
        let mut ledger = self.ledger.lock().unwrap();
        let n = ledger.in_flight.entry(env.to_string()).or_default();
        *n += 1;
        if *n > 1 {
            ledger.overlaps += 1;
        }
    }

    fn leave(&self, env: &str) {
        let mut ledger = self.ledger.lock().unwrap();
        *ledger.in_flight.get_mut(env).unwrap() -= 1;
    }
}

/// Leaves the ledger when dropped, also when a killed replica drops the call mid-way.
struct InFlight<'a>(&'a Counting, String);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave(&self.1);
    }
}

#[async_trait]
impl Runtime for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn endpoint(&self, port: &PublishedPort) -> String {
        self.fake.endpoint(port)
    }
    async fn fetch(&self, env: &EnvName) -> Result<ObservedEnv, RuntimeError> {
        self.fake.fetch(env).await
    }
    async fn prepare_image(
        &self,
        source: &ImageSource,
        progress: ProgressSink,
    ) -> Result<String, RuntimeError> {
        self.fake.prepare_image(source, progress).await
    }
    async fn apply(
        &self,
        spec: &EnvSpec,
        ready_timeout: Duration,
        progress: ProgressSink,
    ) -> Result<ObservedEnv, RuntimeError> {
        let env = spec.env.to_string();
        self.enter(&env);
        let _guard = InFlight(self, env.clone());
        self.ledger
            .lock()
            .unwrap()
            .applies
            .push((self.replica.clone(), env));
        self.fake.apply(spec, ready_timeout, progress).await
    }
    async fn destroy(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.enter(env.as_str());
        let _guard = InFlight(self, env.to_string());
        self.fake.destroy(env).await
    }
    async fn logs(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        self.fake.logs(env, service, options).await
    }
    async fn list_envs(&self) -> Result<Vec<EnvName>, RuntimeError> {
        self.fake.list_envs().await
    }
    async fn run_job(
        &self,
        env: &EnvSpec,
        job: &JobSpec,
        output: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<JobOutcome, RuntimeError> {
        self.fake.run_job(env, job, output).await
    }
}

enum Request {
    Up(String),
}

/// One replica: an engine on its own runtime and thread, driven through a channel.
struct Replica {
    requests: tokio::sync::mpsc::UnboundedSender<Request>,
    /// Dropping this ends the replica's runtime at once (see `kill`).
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    fn start(
        name: &str,
        url: &str,
        repo: &Path,
        dir: &Path,
        runtime: Counting,
        lease_ttl: Duration,
    ) -> Replica {
        let (requests, mut incoming) = tokio::sync::mpsc::unbounded_channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (url, repo, data_dir) = (url.to_string(), repo.display().to_string(), dir.join(name));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.spawn(async move {
                let store = Store::connect(&url).await.unwrap();
                let settings = EngineSettings {
                    data_dir,
                    repos: vec![RepoSettings {
                        name: RepoName::parse("app").unwrap(),
                        url: repo,
                        env_file: "compose.yml".into(),
                        default_ttl: Duration::from_secs(3600),
                        test_timeout: Duration::from_secs(60),
                        secret_env: vec![],
                        credentials: None,
                    }],
                    default_limits: Default::default(),
                    resync_interval: Duration::from_secs(1),
                    lease_ttl,
                    ready_timeout: Duration::from_secs(30),
                    public_url: "http://slipway.example.com".into(),
                    test_log_retention: 3,
                    env_limits: Default::default(),
                };
                let engine = Engine::start(settings, store, Arc::new(runtime))
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                while let Some(Request::Up(branch)) = incoming.recv().await {
                    engine.up("app", &branch, None, "tester").await.unwrap();
                }
            });
            // Until told to stop (or the test drops the replica), then the runtime is
            // dropped with everything in it: the replica is gone.
            let _ = stopped.recv();
            rt.shutdown_background();
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the replica starts");
        Replica {
            requests,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn up(&self, branch: &str) {
        self.requests.send(Request::Up(branch.to_string())).unwrap();
    }

    /// Like kill -9: the runtime stops mid-call; leases stay until they run out.
    fn kill(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_ready(store: &Store, env: &str, within: Duration) -> Duration {
    let started = Instant::now();
    let name = EnvName::parse(env).unwrap();
    loop {
        if let Some(record) = store.get(&name).await.unwrap() {
            if record.phase == Phase::Ready {
                return started.elapsed();
            }
            assert_ne!(record.phase, Phase::Failed, "{record:#?}");
        }
        assert!(
            started.elapsed() < within,
            "{env} not Ready within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn phases(store: &Store, env: &str) -> Vec<Phase> {
    store
        .events(&EnvName::parse(env).unwrap(), 0, 1000)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.phase)
        .collect()
}

/// Eight envs asked of two replicas, alternately: each env is started once, by one replica,
/// never by two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_start_each_env_exactly_once() {
    let Some(pg) = TestPostgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 8);
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_millis(300));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let replicas: Vec<Replica> = ["a", "b"]
        .iter()
        .map(|name| {
            let runtime = Counting {
                replica: name.to_string(),
                fake: fake.clone(),
                ledger: ledger.clone(),
            };
            Replica::start(
                name,
                pg.url(),
                &repo,
                dir.path(),
                runtime,
                Duration::from_secs(5),
            )
        })
        .collect();
    for i in 0..8 {
        replicas[i % 2].up(&format!("b{i}"));
    }
    let store = Store::connect(pg.url()).await.unwrap();
    for i in 0..8 {
        wait_ready(&store, &format!("app-b{i}"), Duration::from_secs(60)).await;
    }
    // A few resyncs on both replicas: nothing is started again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (overlaps, all_applies) = {
        let ledger = ledger.lock().unwrap();
        (ledger.overlaps, ledger.applies.clone())
    };
    assert_eq!(overlaps, 0, "two replicas acted on one env at once");
    for i in 0..8 {
        let env = format!("app-b{i}");
        let applies: Vec<_> = all_applies.iter().filter(|(_, e)| *e == env).collect();
        assert_eq!(applies.len(), 1, "{env}: {applies:?}");
        let starting = phases(&store, &env)
            .await
            .into_iter()
            .filter(|p| *p == Phase::Starting)
            .count();
        assert_eq!(starting, 1, "{env} went through Starting once");
    }
    let by_replica = |r: &str| all_applies.iter().filter(|(x, _)| x == r).count();
    assert_eq!(by_replica("a") + by_replica("b"), 8);
    drop(replicas);
}

/// The replica starting an env is killed mid-start; the other one takes the env over once
/// the lease runs out and brings it to Ready, never acting on it at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_env_is_carried_on_by_another_after_the_lease_ttl() {
    let Some(pg) = TestPostgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 1);
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_secs(3));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let lease_ttl = Duration::from_secs(2);
    let start = |name: &str| {
        let runtime = Counting {
            replica: name.to_string(),
            fake: fake.clone(),
            ledger: ledger.clone(),
        };
        Replica::start(name, pg.url(), &repo, dir.path(), runtime, lease_ttl)
    };
    let mut a = start("a");
    let store = Store::connect(pg.url()).await.unwrap();
    a.up("b0");
    // Wait for a to be inside apply, then start b and kill a.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ledger.lock().unwrap().applies.iter().any(|(r, _)| r == "a") {
        assert!(Instant::now() < deadline, "a never started the env");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = start("b");
    let killed = Instant::now();
    a.kill();
    let took = wait_ready(&store, "app-b0", Duration::from_secs(30)).await;
    let ledger = ledger.lock().unwrap();
    assert_eq!(ledger.overlaps, 0, "{:?}", ledger.applies);
    assert!(
        ledger.applies.iter().any(|(r, _)| r == "b"),
        "b carried on: {:?}",
        ledger.applies
    );
    // The lease runs out, then one apply of 3 s: well under lease + apply + resync slack.
    assert!(
        killed.elapsed() < lease_ttl + Duration::from_secs(3) + Duration::from_secs(4),
        "took {took:?}"
    );
    drop(b);
}
