//! `rollout-live`: the rollout fault-injection harness on the real system.
//!
//! One release build of `slipway serve` (SQLite, the local Docker engine, its front door), a
//! repo with one channel `live` (steps 5/25/50/100%, every analysis setting at its default:
//! `min_step_time` 30 s, `max_step_time` 10 min) and the demo app as its only service. For each
//! request rate (10, 100, 1,000 requests/s, open loop: a request is sent on schedule whether or
//! not earlier ones were answered, over a small pool of keep-alive connections) the load runs
//! through the front door to `<repo>-live.localhost` for the whole block, and one version per
//! fault is released into the channel:
//!
//! - `5xx`: every `GET /` of the canary answers 500 (`ERROR_RATE=1`);
//! - `5pct`: 5% do (`ERROR_RATE=0.05`);
//! - `latency`: every answer 200 ms later (`LATENCY_MS=200`);
//! - `crash`: the canary's web process is killed with SIGKILL after every 5 s of uptime and
//!   Docker restarts it (`restart: always`, with Docker's growing back-off), as a process that
//!   keeps crashing would be: connections to it fail while it is down;
//! - `good`: the same behaviour as stable with another greeting (A/A-like), which becomes the
//!   next stable version.
//!
//! Measured per run, on the client's clock (the server shares the machine's clock):
//! - canary answers before the decision: answers carrying `X-Slipway-Version: canary` whose
//!   request was sent before the decision (the front door answers a GET whose canary
//!   connection failed from stable, so crash-loop failures show in the front door's
//!   `slipway_proxy_version_connection_errors_total{version="canary"}`, scraped every second);
//! - time to decision: from the first canary answer's request to the decision's `decided_at`
//!   (rollbacks; the moment weight 0 is written) or the rollout's `finished_at` (a good version
//!   at 100%);
//! - decision to the last canary answer: when the last request the canary answered was sent,
//!   relative to the decision (negative: none after it; the target is < 1 s);
//! - a run without a decision within `--seconds` is rolled back with `rollout rollback`.
//!
//! Beside each run, the same traffic judged by the Flagger-like and Argo-like policies of
//! `rollout-faults` (the same code): the observed seconds from the first canary request to the
//! decision, replayed second by second (repeated when a policy needs longer than the run
//! lasted) at the policy's own weights: each second has the observed number of requests, a
//! policy's canary share of them takes the outcomes (5xx, connection error, latency) the live
//! canary gave in that second, the rest the stable's.

use std::io::{Read as _, Write as _};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::rollout::{ArgoLike, Decision, FlaggerLike, Policy, Second, VersionSecond};
use super::{cores, docker, slipway_binary, stderr, EnvCleanup, Repo, Server};

/// The faults `--faults` can name, in the order they run.
pub const FAULTS: [&str; 5] = ["5xx", "5pct", "latency", "crash", "good"];

const CHANNEL: &str = "live";
const CHANNEL_TABLES: &str = "[[repo.channel]]\nname = \"live\"\n\
     steps = [\"5%\", \"25%\", \"50%\", \"100%\"]\n";
/// Uptime after which the crash-loop canary's process is killed.
const CRASH_UP: Duration = Duration::from_secs(5);
/// How long a policy's replay may run (simulated), as in `rollout-faults`.
const REPLAY_LIMIT_S: u64 = 3600;

fn compose(greeting: &str, error_rate: &str, latency_ms: u32) -> String {
    format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    restart: always
    environment:
      GREETING: {greeting}
      ERROR_RATE: '{error_rate}'
      LATENCY_MS: '{latency_ms}'
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
"
    )
}

fn fault_compose(fault: &str, tag: &str) -> String {
    match fault {
        "5xx" => compose(&format!("all-5xx-{tag}"), "1", 0),
        "5pct" => compose(&format!("5pct-5xx-{tag}"), "0.05", 0),
        "latency" => compose(&format!("slow-{tag}"), "0", 200),
        "crash" => compose(&format!("crashing-{tag}"), "0", 0),
        _ => compose(&format!("good-{tag}"), "0", 0),
    }
}

fn fault_label(fault: &str) -> &'static str {
    match fault {
        "5xx" => "100% 5xx",
        "5pct" => "5% 5xx",
        "latency" => "+200 ms",
        "crash" => "crash loop",
        _ => "good (A/A)",
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------
// Load

/// One request as the client saw it.
#[derive(Debug, Clone, Copy)]
struct Sent {
    /// Unix ms when it was sent.
    at_ms: f64,
    /// Answered with `X-Slipway-Version: canary`.
    canary: bool,
    /// 0: no answer (connection or protocol error, timeout).
    status: u16,
    latency_ms: f64,
}

/// An open-loop load generator through the front door, on its own runtime thread.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<Vec<Sent>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Pool = Arc<Mutex<Vec<SendRequest<Empty<Bytes>>>>>;

impl Load {
    fn start(front_door: &str, host: &str, rate: u32) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("the load generator's runtime")?;
        let (addr, host) = (front_door.to_string(), host.to_string());
        let (stop_flag, records) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let pool: Pool = Arc::default();
                let period = Duration::from_secs_f64(1.0 / f64::from(rate));
                let start = tokio::time::Instant::now();
                let mut n: u32 = 0;
                while !stop_flag.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(start + period * n).await;
                    n += 1;
                    let (pool, addr, host, records) =
                        (pool.clone(), addr.clone(), host.clone(), records.clone());
                    tokio::spawn(async move {
                        let at_ms = unix_ms();
                        let began = Instant::now();
                        let answer = tokio::time::timeout(
                            Duration::from_secs(30),
                            request(&pool, &addr, &host),
                        )
                        .await;
                        let (status, canary) = match answer {
                            Ok(Ok(answer)) => answer,
                            // Counted as unanswered: the status says so.
                            Ok(Err(_)) | Err(_) => (0, false),
                        };
                        records.lock().unwrap().push(Sent {
                            at_ms,
                            canary,
                            status,
                            latency_ms: began.elapsed().as_secs_f64() * 1000.0,
                        });
                    });
                }
            });
        });
        Ok(Self {
            stop,
            sent,
            thread: Some(thread),
        })
    }

    /// The requests sent in `from_ms..to_ms`, by send time.
    fn between(&self, from_ms: f64, to_ms: f64) -> Vec<Sent> {
        let mut out: Vec<Sent> = self
            .sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.at_ms >= from_ms && s.at_ms < to_ms)
            .copied()
            .collect();
        out.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
        out
    }

    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One `GET /` on a pooled keep-alive connection (a new one when none is idle): its status
/// and whether the canary answered.
async fn request(pool: &Pool, addr: &str, host: &str) -> Result<(u16, bool)> {
    // An idle connection that is still open, else a new one.
    let mut reused = None;
    loop {
        let idle = pool.lock().unwrap().pop();
        let Some(mut sender) = idle else { break };
        if sender.ready().await.is_ok() {
            reused = Some(sender);
            break;
        }
    }
    let mut sender = match reused {
        Some(sender) => sender,
        None => {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            sender
        }
    };
    let request = hyper::Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Empty::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let canary = response
        .headers()
        .get("x-slipway-version")
        .is_some_and(|v| v.as_bytes() == b"canary");
    response.into_body().collect().await?;
    pool.lock().unwrap().push(sender);
    Ok((status, canary))
}

// ---------------------------------------------------------------------------------------
// Server-side figures and faults

/// The front door's canary connection errors for one release env, scraped every second
/// from `/metrics`: (unix ms, counter value).
struct Scraper {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scraper {
    fn start(server_url: &str, release_env: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (stop.clone(), samples.clone());
        let url = format!("{server_url}/metrics");
        let wanted = [
            "slipway_proxy_version_connection_errors_total{".to_string(),
            format!("env=\"{release_env}\""),
            "version=\"canary\"".to_string(),
        ];
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // A missed scrape: the next one's increase covers it.
                if let Ok(body) = http_get(&url) {
                    let value = body
                        .lines()
                        .find(|l| wanted.iter().all(|w| l.contains(w.as_str())))
                        .and_then(|l| l.rsplit(' ').next())
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0);
                    out.lock().unwrap().push((unix_ms(), value));
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Self {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Canary connection errors per whole second from `from_ms`, `seconds` long: each
    /// scrape's increase is put in the second it was scraped in.
    fn per_second(&self, from_ms: f64, seconds: usize) -> Vec<u64> {
        let samples = self.samples.lock().unwrap();
        let mut out = vec![0; seconds];
        for pair in samples.windows(2) {
            let (at, delta) = (pair[1].0, (pair[1].1 - pair[0].1).max(0.0));
            if at >= from_ms {
                let second = ((at - from_ms) / 1000.0) as usize;
                if second < seconds {
                    out[second] += delta as u64;
                }
            }
        }
        out
    }

    fn total_between(&self, from_ms: f64, to_ms: f64) -> u64 {
        let samples = self.samples.lock().unwrap();
        let at = |t: f64| {
            samples
                .iter()
                .take_while(|(when, _)| *when <= t)
                .last()
                .map_or(0.0, |(_, v)| *v)
        };
        (at(to_ms) - at(from_ms)).max(0.0) as u64
    }
}

impl Drop for Scraper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A plain HTTP/1.1 GET, the body as text.
fn http_get(url: &str) -> Result<String> {
    let rest = url.strip_prefix("http://").context("an http URL")?;
    let (addr, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").context("an HTTP answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {url}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Kills the canary env's containers' main process with SIGKILL after `CRASH_UP` of uptime,
/// while `armed`; Docker's restart policy brings it back.
struct Crasher {
    stop: Arc<AtomicBool>,
    kills: Arc<Mutex<u32>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Crasher {
    fn start(canary_env: &str, armed: Arc<AtomicBool>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(Mutex::new(0));
        let (flag, count) = (stop.clone(), kills.clone());
        let filter = format!("label=dev.slipway.env={canary_env}");
        let thread = std::thread::spawn(move || {
            // pid → when it was first seen running.
            let mut seen: Option<(String, Instant)> = None;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if !armed.load(Ordering::Relaxed) {
                    continue;
                }
                let ids = docker(&["ps", "-q", "--filter", &filter]).unwrap_or_default();
                for id in ids {
                    let pid = docker(&["inspect", "--format", "{{.State.Pid}}", &id])
                        .unwrap_or_default()
                        .pop()
                        .unwrap_or_default();
                    if pid.is_empty() || pid == "0" {
                        continue;
                    }
                    match &seen {
                        Some((known, since)) if *known == pid => {
                            if since.elapsed() >= CRASH_UP {
                                let killed = Command::new("kill").args(["-9", &pid]).status();
                                if killed.is_ok_and(|s| s.success()) {
                                    *count.lock().unwrap() += 1;
                                }
                                seen = None;
                            }
                        }
                        _ => seen = Some((pid, Instant::now())),
                    }
                }
            }
        });
        Self {
            stop,
            kills,
            thread: Some(thread),
        }
    }

    fn kills(&self) -> u32 {
        *self.kills.lock().unwrap()
    }
}

impl Drop for Crasher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The rollout, driven by the CLI

struct Channel<'a> {
    server: &'a Server,
    repo: String,
}

impl Channel<'_> {
    fn cli(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new(&self.server.binary)
            .args(args)
            .env("SLIPWAY_SERVER", &self.server.url)
            .env_remove("SLIPWAY_TOKEN")
            .output()
            .context("the slipway CLI runs")?;
        if !out.status.success() {
            bail!(
                "slipway {args:?}: {}\n--- server log ---\n{}",
                stderr(&out),
                self.server.tail_log()
            );
        }
        Ok(out.stdout)
    }

    fn release(&self, commit: &str) -> Result<()> {
        let channel = format!("channel:{CHANNEL}");
        self.cli(&["release", &self.repo, commit, &channel, "--json"])
            .map(drop)
    }

    fn rollback(&self) -> Result<()> {
        let channel = format!("channel:{CHANNEL}");
        self.cli(&["rollout", "rollback", &self.repo, &channel])
            .map(drop)
    }

    /// The channel's current rollout (`rollout status --json`'s `rollout`).
    fn rollout(&self) -> Result<Value> {
        let channel = format!("channel:{CHANNEL}");
        let out = self.cli(&["rollout", "status", &self.repo, &channel, "--json"])?;
        let status: Value = serde_json::from_slice(&out).context("rollout status --json")?;
        Ok(status["rollout"].clone())
    }

    /// Polls until the rollout of `commit` is in one of `states` or `timeout` passes.
    fn wait_for(&self, commit: &str, states: &[&str], timeout: Duration) -> Result<Option<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let rollout = self.rollout()?;
            if rollout["to_version"] == commit && states.iter().any(|s| rollout["state"] == *s) {
                return Ok(Some(rollout));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn head_commit(repo: &Repo) -> Result<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo.path())
        .output()
        .context("git rev-parse runs")?;
    if !out.status.success() {
        bail!("git rev-parse HEAD: {}", stderr(&out));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

// ---------------------------------------------------------------------------------------
// One run and its replay

/// What one live rollout came to.
struct LiveRun {
    rate: u32,
    fault: &'static str,
    /// rolled back / done / no decision in the cap (then rolled back by hand).
    outcome: String,
    check: String,
    canary_answers: usize,
    /// Canary connection errors (front door) before the decision.
    canary_connection_errors: u64,
    to_decision_s: Option<f64>,
    /// Last canary answer's send time minus the decision; `None` without canary answers.
    decision_to_last_canary_s: Option<f64>,
    kills: u32,
    flagger: ReplayResult,
    argo: ReplayResult,
}

#[derive(Debug, Clone, Copy)]
struct ReplayResult {
    decision: Option<Decision>,
    seconds: u64,
    canary_requests: u64,
}

/// One observed second: the outcomes the canary and the stable version gave; `None` is a
/// failure (5xx or connection error), `Some(ms)` an answer and its latency.
#[derive(Debug, Default, Clone)]
struct ObservedSecond {
    canary: Vec<Option<f64>>,
    stable: Vec<Option<f64>>,
}

fn observed_seconds(
    sent: &[Sent],
    from_ms: f64,
    seconds: usize,
    conn_errors: &[u64],
) -> Vec<ObservedSecond> {
    let mut out = vec![ObservedSecond::default(); seconds];
    for s in sent {
        let index = ((s.at_ms - from_ms) / 1000.0) as usize;
        if s.at_ms < from_ms || index >= seconds {
            continue;
        }
        let outcome = (s.status != 0 && s.status < 500).then_some(s.latency_ms);
        if s.canary {
            out[index].canary.push(outcome);
        } else {
            out[index].stable.push(outcome);
        }
    }
    // Requests the canary failed to answer came back from stable: the canary's failures.
    for (second, errors) in out.iter_mut().zip(conn_errors) {
        second
            .canary
            .extend(std::iter::repeat_n(None, *errors as usize));
    }
    out
}

/// For each second, the nearest second (itself first) with outcomes on the chosen side.
fn nearest_with(
    trace: &[ObservedSecond],
    side: fn(&ObservedSecond) -> &Vec<Option<f64>>,
) -> Vec<Option<usize>> {
    (0..trace.len())
        .map(|i| {
            (0..trace.len())
                .flat_map(|d| [i.checked_sub(d), Some(i + d)])
                .flatten()
                .find(|&j| j < trace.len() && !side(&trace[j]).is_empty())
        })
        .collect()
}

/// Replays the observed seconds through `policy` at its own weights, repeating them when it
/// needs longer; see the module comment.
fn replay(trace: &[ObservedSecond], policy: &mut dyn Policy) -> ReplayResult {
    let canary_at = nearest_with(trace, |s| &s.canary);
    let stable_at = nearest_with(trace, |s| &s.stable);
    let mut canary_requests = 0;
    // Fractional canary requests carried from second to second, so a 10% share of 10
    // requests/s gives one a second, not none.
    let mut carried = 0.0;
    for t in 0..REPLAY_LIMIT_S {
        let i = t as usize % trace.len();
        let cycle = t as usize / trace.len();
        let observed = &trace[i];
        let total = observed.canary.len() + observed.stable.len();
        carried += total as f64 * policy.canary_weight();
        let to_canary = (carried.floor() as usize).min(total);
        carried -= to_canary as f64;
        let mut second = Second::default();
        for (count, side, nearest, pick) in [
            (
                to_canary,
                &mut second.canary,
                canary_at[i],
                (|s: &ObservedSecond| &s.canary) as fn(&ObservedSecond) -> &Vec<Option<f64>>,
            ),
            (
                total - to_canary,
                &mut second.stable,
                stable_at[i],
                |s: &ObservedSecond| &s.stable,
            ),
        ] {
            let Some(source) = nearest.map(|j| pick(&trace[j])) else {
                continue;
            };
            fill(side, source, count, cycle * count);
        }
        canary_requests += second.canary.requests;
        if let Some(decision) = policy.observe(t, &second) {
            return ReplayResult {
                decision: Some(decision),
                seconds: t + 1,
                canary_requests,
            };
        }
    }
    ReplayResult {
        decision: None,
        seconds: REPLAY_LIMIT_S,
        canary_requests,
    }
}

/// `count` requests taking `source`'s outcomes in turn from `offset`.
fn fill(side: &mut VersionSecond, source: &[Option<f64>], count: usize, offset: usize) {
    for k in 0..count {
        side.requests += 1;
        match source[(offset + k) % source.len()] {
            None => side.errors += 1,
            Some(ms) => side.latencies_ms.push(ms),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The bench

pub fn rollout_live(rates: &[u32], faults: &[&'static str], cap_s: u64) -> Result<()> {
    println!(
        "== rollout-live: real slipway serve (release, SQLite, Docker), demo app behind the \
         front door; rates {rates:?} requests/s, faults {faults:?}, {} cores",
        cores()
    );
    println!(
        "   channel `{CHANNEL}`: steps 5/25/50/100%, default analysis settings (min_step_time 30s, \
         max_step_time 10m); a run without a decision in {cap_s} s is rolled back by hand"
    );
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", &compose("stable-0", "0", 0))?;
    repo.commit()?;
    let stable = head_commit(&repo)?;
    let repo_name = format!("live{}", std::process::id());
    let release_env = format!("{repo_name}-{CHANNEL}");
    let canary_env = format!("{release_env}-canary");
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![release_env.clone(), canary_env.clone()],
    };
    let server = Server::start_with(
        &slipway,
        &repo,
        &repo_name,
        "compose.yml",
        "rollout-live",
        CHANNEL_TABLES,
    )?;
    if server.proxy_url.is_empty() {
        bail!(
            "the server did not say where its front door is:\n{}",
            server.tail_log()
        );
    }
    let channel = Channel {
        server: &server,
        repo: repo_name.clone(),
    };
    let front_door = server.proxy_url.trim_start_matches("http://").to_string();
    let host = format!("{release_env}.localhost");

    println!("first release into the empty channel: {}", &stable[..8]);
    channel.release(&stable)?;
    channel
        .wait_for(&stable, &["done"], Duration::from_secs(300))?
        .with_context(|| format!("the first release never finished:\n{}", server.tail_log()))?;

    let scraper = Scraper::start(&server.url, &release_env);
    let started = Instant::now();
    let mut runs = Vec::new();
    for &rate in rates {
        println!();
        println!("-- {rate} requests/s through the front door to {host}");
        let load = Load::start(&front_door, &host, rate)?;
        // Warm: connections open and the stable's figures flowing before the first release.
        std::thread::sleep(Duration::from_secs(3));
        for &fault in faults {
            let tag = format!("{rate}rps");
            repo.write("compose.yml", &fault_compose(fault, &tag))?;
            repo.commit()?;
            let commit = head_commit(&repo)?;
            let run = run_one(
                &channel,
                &load,
                &scraper,
                &canary_env,
                rate,
                fault,
                &commit,
                cap_s,
            )?;
            print_run(&run);
            runs.push(run);
        }
        println!("load: {} requests sent in this block", load.count());
    }
    drop(scraper);

    println!();
    println!(
        "rollout-live, {} cores, {:.1} min; Slipway measured live; Flagger-like and Argo-like \
         judge the same observed seconds (replayed at their own weights)",
        cores(),
        started.elapsed().as_secs_f64() / 60.0
    );
    print_table(&runs);
    print_targets(&runs);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_one(
    channel: &Channel,
    load: &Load,
    scraper: &Scraper,
    canary_env: &str,
    rate: u32,
    fault: &'static str,
    commit: &str,
    cap_s: u64,
) -> Result<LiveRun> {
    println!("{rate}/s {}: release {}", fault_label(fault), &commit[..8]);
    let armed = Arc::new(AtomicBool::new(false));
    let crasher = (fault == "crash").then(|| Crasher::start(canary_env, armed.clone()));
    let released_ms = unix_ms();
    channel.release(commit)?;
    // Until the canary takes its first weighted request (its env starts first), then the cap.
    let mut first_canary_ms = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let finished = loop {
        let rollout = channel.rollout()?;
        let ours = rollout["to_version"] == commit;
        let state = rollout["state"].as_str().unwrap_or_default();
        if ours && rollout["weights"]["canary"].as_f64().unwrap_or(0.0) > 0.0 {
            armed.store(true, Ordering::Relaxed);
        }
        if first_canary_ms.is_none() {
            first_canary_ms = load
                .between(released_ms, f64::MAX)
                .iter()
                .find(|s| s.canary)
                .map(|s| s.at_ms);
        }
        if ours && matches!(state, "rolled_back" | "done") {
            break Some(rollout);
        }
        let cap = match first_canary_ms {
            Some(first) => unix_ms() - first > cap_s as f64 * 1000.0,
            None => Instant::now() > deadline,
        };
        if cap {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let kills = crasher.as_ref().map_or(0, Crasher::kills);
    drop(crasher);
    let (outcome, check, decided_ms) = match finished {
        Some(rollout) => {
            let state = rollout["state"].as_str().unwrap_or_default().to_string();
            let decided = if state == "done" {
                rollout["finished_at"].as_f64()
            } else {
                rollout["decision"]["decided_at"].as_f64()
            };
            let check = rollout["decision"]["check"]
                .as_str()
                .unwrap_or(if state == "done" { "-" } else { "?" })
                .to_string();
            (state.replace('_', " "), check, decided)
        }
        None => {
            let rollout = channel.rollout()?;
            let state = rollout["state"].as_str().unwrap_or_default().to_string();
            let reason = rollout["reason"].as_str().unwrap_or_default().to_string();
            println!("  no decision in {cap_s} s ({state}: {reason}); rolling back by hand");
            channel.rollback()?;
            channel
                .wait_for(commit, &["rolled_back"], Duration::from_secs(120))?
                .context("the manual rollback did not finish")?;
            (format!("none in {cap_s} s ({state})"), "-".into(), None)
        }
    };
    let end_ms = decided_ms.unwrap_or_else(unix_ms);
    let sent = load.between(released_ms, f64::MAX);
    let before: Vec<&Sent> = sent.iter().filter(|s| s.at_ms < end_ms).collect();
    let canary_answers = before.iter().filter(|s| s.canary).count();
    let last_canary = sent.iter().rev().find(|s| s.canary).map(|s| s.at_ms);
    let first = first_canary_ms.or_else(|| sent.iter().find(|s| s.canary).map(|s| s.at_ms));
    let canary_connection_errors = scraper.total_between(released_ms, end_ms);

    // The observed seconds from the first canary request to the decision.
    let (flagger, argo) = match first {
        Some(first_ms) if end_ms > first_ms => {
            // A decision inside the first second still gives one whole observed second: its
            // canary outcomes are those before the decision, as weight 0 came after them.
            let seconds = ((end_ms - first_ms) / 1000.0).ceil().max(1.0) as usize;
            let conn = scraper.per_second(first_ms, seconds);
            let trace = observed_seconds(&sent, first_ms, seconds, &conn);
            (
                replay(&trace, &mut FlaggerLike::new()),
                replay(&trace, &mut ArgoLike::new()),
            )
        }
        _ => {
            let none = ReplayResult {
                decision: None,
                seconds: 0,
                canary_requests: 0,
            };
            (none, none)
        }
    };
    Ok(LiveRun {
        rate,
        fault,
        outcome,
        check,
        canary_answers,
        canary_connection_errors,
        to_decision_s: decided_ms.zip(first).map(|(d, f)| (d - f) / 1000.0),
        decision_to_last_canary_s: decided_ms.zip(last_canary).map(|(d, l)| (l - d) / 1000.0),
        kills,
        flagger,
        argo,
    })
}

fn print_run(run: &LiveRun) {
    println!(
        "  {}{}: {} canary answers before it, {} s to decision, last canary answer {} s after it{}",
        run.outcome,
        if run.check == "-" {
            String::new()
        } else {
            format!(" ({})", run.check)
        },
        run.canary_answers,
        run.to_decision_s.map_or("-".into(), |s| format!("{s:.1}")),
        run.decision_to_last_canary_s
            .map_or("-".into(), |s| format!("{s:+.2}")),
        if run.fault == "crash" {
            format!(
                ", {} kills, {} canary connection errors",
                run.kills, run.canary_connection_errors
            )
        } else {
            String::new()
        }
    );
}

fn replay_cell(r: &ReplayResult) -> String {
    let when = clock(r.seconds);
    match r.decision {
        Some(Decision::RolledBack) => format!("rollback {when}, {} canary", r.canary_requests),
        Some(Decision::Completed) => format!("100% at {when}"),
        Some(Decision::Held) => format!("held {when}"),
        None if r.seconds == 0 => "- (no trace)".into(),
        None => format!("none in {when}, {} canary", r.canary_requests),
    }
}

fn clock(seconds: u64) -> String {
    if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{}m{:02}s", seconds / 60, seconds % 60)
    }
}

fn print_table(runs: &[LiveRun]) {
    println!(
        "{:>6}  {:<11} | {:<28} {:>7} {:>9} {:>9} | {:<28} | {:<28}",
        "rate",
        "fault",
        "Slipway (live): decision",
        "canary",
        "to decide",
        "to last",
        "Flagger-like (replay)",
        "Argo-like (replay)"
    );
    println!(
        "{:>6}  {:<11} | {:<28} {:>7} {:>9} {:>9} | {:<28} | {:<28}",
        "req/s", "", "", "answers", "s", "canary s", "", ""
    );
    for run in runs {
        let decision = if run.check == "-" {
            run.outcome.clone()
        } else {
            format!("{} ({})", run.outcome, run.check)
        };
        let answers = if run.fault == "crash" {
            format!("{}+{}ce", run.canary_answers, run.canary_connection_errors)
        } else {
            run.canary_answers.to_string()
        };
        println!(
            "{:>6}  {:<11} | {:<28} {:>7} {:>9} {:>9} | {:<28} | {:<28}",
            run.rate,
            fault_label(run.fault),
            decision,
            answers,
            run.to_decision_s.map_or("-".into(), |s| format!("{s:.1}")),
            run.decision_to_last_canary_s
                .map_or("-".into(), |s| format!("{s:+.2}")),
            replay_cell(&run.flagger),
            replay_cell(&run.argo),
        );
    }
    println!(
        "canary answers: answers with X-Slipway-Version: canary sent before the decision \
         (crash loop: +N canary connection errors, answered by stable); to last canary: the \
         last canary answer's send time minus the decision (negative: none after it)"
    );
}

fn print_targets(runs: &[LiveRun]) {
    let Some(run) = runs.iter().find(|r| r.rate == 100 && r.fault == "5xx") else {
        return;
    };
    let within = |v: Option<f64>, limit: f64| match v {
        Some(v) if v <= limit => "met",
        Some(_) => "missed",
        None => "no figure",
    };
    println!(
        "targets at 100 req/s, 5% first step, 100% 5xx: {} canary answers before the decision \
         (<= 300: {}), {} s to decision (<= 60 s: {}), last canary answer {} s after it (< 1 s: {})",
        run.canary_answers,
        if run.canary_answers <= 300 && run.to_decision_s.is_some() { "met" } else { "missed" },
        run.to_decision_s.map_or("-".into(), |s| format!("{s:.1}")),
        within(run.to_decision_s, 60.0),
        run.decision_to_last_canary_s.map_or("-".into(), |s| format!("{s:+.2}")),
        // No canary answer after the decision meets it too.
        match run.decision_to_last_canary_s {
            Some(s) if s < 1.0 => "met",
            Some(_) => "missed",
            None => "no canary answers",
        }
    );
    if let Some(good) = runs.iter().find(|r| r.rate == 100 && r.fault == "good") {
        println!(
            "good version at 100 req/s: {} after {} s (<= 15 min: {})",
            good.outcome,
            good.to_decision_s.map_or("-".into(), |s| format!("{s:.0}")),
            within(good.to_decision_s, 900.0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(canary: &[Option<f64>], stable: &[Option<f64>]) -> ObservedSecond {
        ObservedSecond {
            canary: canary.to_vec(),
            stable: stable.to_vec(),
        }
    }

    #[test]
    fn replay_gives_a_policy_the_observed_canary_outcomes_at_its_own_weight() {
        // 100 requests a second; the canary failed every request it took.
        let trace = vec![second(&[None; 5], &[Some(20.0); 95]); 20];
        let flagger = replay(&trace, &mut FlaggerLike::new());
        assert_eq!(flagger.decision, Some(Decision::RolledBack));
        // Five failed checks at 60..300 s, rollback at the next interval, 10% of 100/s.
        assert_eq!(flagger.seconds, 360);
        assert_eq!(flagger.canary_requests, 360 * 10);
        // A healthy canary completes.
        let good = vec![second(&[Some(21.0); 5], &[Some(20.0); 95]); 20];
        let argo = replay(&good, &mut ArgoLike::new());
        assert_eq!(argo.decision, Some(Decision::Completed));
    }

    #[test]
    fn seconds_without_canary_outcomes_borrow_the_nearest() {
        let trace = vec![
            second(&[], &[Some(1.0); 10]),
            second(&[], &[Some(1.0); 10]),
            second(&[None], &[Some(1.0); 9]),
        ];
        assert_eq!(
            nearest_with(&trace, |s| &s.canary),
            vec![Some(2), Some(2), Some(2)]
        );
        let mut side = VersionSecond::default();
        fill(&mut side, &trace[2].canary, 3, 0);
        assert_eq!((side.requests, side.errors), (3, 3));
    }

    #[test]
    fn connection_errors_count_as_canary_failures() {
        let sent = [
            Sent {
                at_ms: 1000.0,
                canary: true,
                status: 200,
                latency_ms: 3.0,
            },
            Sent {
                at_ms: 1500.0,
                canary: false,
                status: 200,
                latency_ms: 2.0,
            },
            Sent {
                at_ms: 2100.0,
                canary: true,
                status: 500,
                latency_ms: 1.0,
            },
        ];
        let trace = observed_seconds(&sent, 1000.0, 2, &[0, 4]);
        assert_eq!(trace[0].canary, vec![Some(3.0)]);
        assert_eq!(trace[0].stable, vec![Some(2.0)]);
        assert_eq!(trace[1].canary, vec![None; 5]);
    }
}
