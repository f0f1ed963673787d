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
use envmgr::names::{BranchName, EnvName, RepoName, ServiceName};
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
    async fn stop(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.enter(env.as_str());
        let _guard = InFlight(self, env.to_string());
        self.fake.stop(env).await
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

/// What a replica is asked, and where it says it has recorded it (as an HTTP answer would).
enum Request {
    Up(String, tokio::sync::oneshot::Sender<()>),
    Down(String, tokio::sync::oneshot::Sender<()>),
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
                        channels: Vec::new(),
                        name: RepoName::parse("app").unwrap(),
                        url: repo,
                        env_file: "compose.yml".into(),
                        default_ttl: Duration::from_secs(3600),
                        test_timeout: Duration::from_secs(60),
                        secret_env: vec![],
                        credentials: None,
                        queue: Default::default(),
                        idle: Default::default(),
                        max_envs: None,
                    }],
                    default_limits: Default::default(),
                    resync_interval: Duration::from_secs(1),
                    lease_ttl,
                    ready_timeout: Duration::from_secs(30),
                    public_url: "http://slipway.example.com".into(),
                    test_log_retention: 3,
                    env_limits: Default::default(),
                    quotas: Default::default(),
                    image_retention: None,
                    front_door: None,
                };
                let engine = Engine::start(settings, store, Arc::new(runtime))
                    .await
                    .unwrap();
                ready_tx.send(()).unwrap();
                let repo = RepoName::parse("app").unwrap();
                while let Some(request) = incoming.recv().await {
                    match request {
                        Request::Up(branch, done) => {
                            let branch = BranchName::parse(&branch).unwrap();
                            engine.up(&repo, &branch, None, "tester").await.unwrap();
                            let _ = done.send(());
                        }
                        Request::Down(env, done) => {
                            let env = EnvName::parse(&env).unwrap();
                            engine.down(&env, "tester").await.unwrap();
                            let _ = done.send(());
                        }
                    }
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

    /// Asks for an env; returns once the replica has recorded the request.
    async fn up(&self, branch: &str) {
        let (done, recorded) = tokio::sync::oneshot::channel();
        self.requests
            .send(Request::Up(branch.to_string(), done))
            .unwrap();
        recorded.await.expect("the replica answers");
    }

    async fn down(&self, env: &str) {
        let (done, recorded) = tokio::sync::oneshot::channel();
        self.requests
            .send(Request::Down(env.to_string(), done))
            .unwrap();
        recorded.await.expect("the replica answers");
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
        replicas[i % 2].up(&format!("b{i}")).await;
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
    a.up("b0").await;
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

/// A small deterministic random source (seeded from the clock and printed, so a failure can
/// be replayed by setting `SLIPWAY_CHAOS_SEED`).
struct Dice(u64);

impl Dice {
    fn new() -> Self {
        let seed = std::env::var("SLIPWAY_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("chaos seed: {seed} (SLIPWAY_CHAOS_SEED={seed} replays it)");
        Dice(seed | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Three replicas, 30 env lifecycles asked of random replicas while replicas are killed
/// (like kill -9) and restarted at random: at the end every env is in its desired state,
/// no env was ever acted on by two replicas at once, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_three_replicas_killed_at_random_converge_with_no_overlap() {
    let Some(pg) = TestPostgres::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path(), 30);
    let fake = Arc::new(FakeRuntime::new());
    fake.set_apply_delay(Duration::from_millis(150));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let lease_ttl = Duration::from_secs(1);
    let mut restarts = 0;
    let start = |name: String| {
        let runtime = Counting {
            replica: name.clone(),
            fake: fake.clone(),
            ledger: ledger.clone(),
        };
        Replica::start(&name, pg.url(), &repo, dir.path(), runtime, lease_ttl)
    };
    let mut replicas: Vec<Replica> = (0..3).map(|i| start(format!("r{i}-0"))).collect();
    let mut dice = Dice::new();
    let mut wanted: HashMap<String, bool> = HashMap::new();
    for step in 0..60 {
        let env_index = step % 30;
        let env = format!("app-b{env_index}");
        let who = dice.below(replicas.len());
        if step < 30 || dice.below(2) == 0 {
            replicas[who].up(&format!("b{env_index}")).await;
            wanted.insert(env, true);
        } else {
            replicas[who].down(&env).await;
            wanted.insert(env, false);
        }
        if dice.below(5) == 0 {
            let victim = dice.below(replicas.len());
            restarts += 1;
            replicas[victim].kill();
            replicas[victim] = start(format!("r{victim}-{restarts}"));
        }
        tokio::time::sleep(Duration::from_millis(dice.below(120) as u64)).await;
    }
    let store = Store::connect(pg.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut pending = Vec::new();
        for (env, up) in &wanted {
            let record = store
                .get(&EnvName::parse(env).unwrap())
                .await
                .unwrap()
                .expect("every env asked for has a row");
            let done = if *up {
                record.phase == Phase::Ready && record.observed_generation >= record.generation
            } else {
                record.phase == Phase::Deleted
            };
            if !done {
                pending.push(format!(
                    "{env}: {:?} (wanted {})",
                    record.phase,
                    if *up { "Ready" } else { "Deleted" }
                ));
            }
        }
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: {pending:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let overlaps = ledger.lock().unwrap().overlaps;
    assert_eq!(overlaps, 0, "two replicas acted on one env at once");
    let mut left: Vec<String> = fake
        .list_envs()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    left.sort();
    let mut expected: Vec<String> = wanted
        .iter()
        .filter(|(_, up)| **up)
        .map(|(env, _)| env.clone())
        .collect();
    expected.sort();
    assert_eq!(
        left, expected,
        "exactly the wanted envs have resources ({restarts} restarts)"
    );
    drop(replicas);
}
