//! What idle envs cost and how quickly they come back:
//!
//! - `wake`: the first request to a sleeping 3-service env through the front door until its
//!   answer, beside a cold `env up --wait` (plus the same request) of the same commit and
//!   beside `docker start` of a compose project of the same file (plus healthy and the
//!   same request).
//! - `control-loop`: N envs in the store (most sleeping, written through the store's API;
//!   some running a tiny container each): the server's CPU and RSS while nothing happens,
//!   dockerd's CPU meanwhile, and how long one full resync takes.
//! - `reclaim`: envs left alone with short `idle_sleep` / `idle_delete`: how late past each
//!   deadline they actually sleep / go, beside the bound of one resync interval + 5 s.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::scheduler::cpu_ticks;
use super::{cores, docker, secs, slipway_binary, summary, wait_all, EnvCleanup, Repo, Server};

/// Three services of the demo app: two answering HTTP, one calling the first.
const WAKE_COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  api:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  worker:
    image: slipway/demo-app:latest
    command: [worker]
    environment:
      TARGET_URL: http://web:8080/
    depends_on:
      web:
        condition: service_healthy
";

/// One small container per env, for the control-loop and reclaim benches.
const TINY_COMPOSE: &str =
    "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// wake

pub fn wake(rounds: usize) -> Result<()> {
    println!(
        "== wake: a sleeping 3-service env, {rounds} rounds, {} cores",
        cores()
    );
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", WAKE_COMPOSE)?;
    repo.commit()?;
    let repo_name = format!("wakebench{}", std::process::id());
    let env = format!("{repo_name}-main");
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![env.clone()],
    };
    let compose = ComposeProject {
        name: format!("slipwaywake{}", std::process::id()),
        file: repo.path().join("compose.yml"),
    };
    // Idle sleep off: only the bench puts the env to sleep.
    let server = Server::start_with(
        &slipway,
        &repo,
        &repo_name,
        "compose.yml",
        "wake",
        "idle_sleep = \"0\"\n",
    )?;
    let front_door = server.proxy_url.trim_start_matches("http://").to_string();
    if front_door.is_empty() {
        bail!("the server did not say where its front door is");
    }
    let host = format!("{env}.localhost");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!("warm-up: slipway env up, docker-compose up");
    server.up(&repo_name, "main")?;
    compose.run(&["up", "-d"])?;
    wait_healthy(&compose.containers()?, Duration::from_secs(120))?;

    let (mut woken, mut cold, mut started) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Slipway: to sleep (untimed), then one request through the front door.
        server.cli(&["sleep", &env])?;
        wait_phase(&server, &env, "Sleeping", Duration::from_secs(60))?;
        let start = Instant::now();
        runtime.block_on(get_ok(&front_door, &host, Duration::from_secs(120)))?;
        let took = start.elapsed();
        println!(
            "round {round}/{rounds}: first request to the sleeping env answered  {:>6.2} s",
            secs(took)
        );
        woken.push(took);

        // Cold: the env deleted (untimed), then `env up --wait` and the same request.
        server.down(&env)?;
        let start = Instant::now();
        server.up(&repo_name, "main")?;
        runtime.block_on(get_ok(&front_door, &host, Duration::from_secs(120)))?;
        let took = start.elapsed();
        println!(
            "round {round}/{rounds}: cold env up --wait + the request            {:>6.2} s",
            secs(took)
        );
        cold.push(took);

        // Reference: the compose project's containers stopped (untimed), then `docker
        // start` of all three, until healthy and the same request is answered.
        compose.run(&["stop"])?;
        let containers = compose.containers()?;
        let start = Instant::now();
        let mut args = vec!["start"];
        args.extend(containers.iter().map(String::as_str));
        docker(&args)?;
        wait_healthy(&containers, Duration::from_secs(120))?;
        // A restarted container gets a new ephemeral host port.
        let web_port = compose.port("web", 8080)?;
        runtime.block_on(get_ok(
            &format!("127.0.0.1:{web_port}"),
            "localhost",
            Duration::from_secs(120),
        ))?;
        let took = start.elapsed();
        println!(
            "round {round}/{rounds}: docker start of the 3 containers + healthy  {:>6.2} s",
            secs(took)
        );
        started.push(took);
    }

    println!();
    println!(
        "a request to a sleeping 3-service env until its answer, {rounds} rounds, {} cores",
        cores()
    );
    println!("{:<52} {:>8} {:>8} {:>8}", "", "median", "min", "max");
    for (label, times) in [
        ("slipway: request to the sleeping env (wake)", &woken),
        ("slipway: cold env up --wait + request", &cold),
        ("docker start + healthy + request", &started),
    ] {
        let (median, min, max) = summary(times);
        println!("{label:<52} {median:>6.2} s {min:>6.2} s {max:>6.2} s");
    }
    println!(
        "wake / docker start (medians): {:.2}x; wake / cold up: {:.2}x",
        summary(&woken).0 / summary(&started).0,
        summary(&woken).0 / summary(&cold).0
    );
    Ok(())
}

/// Polls `env list --json` (which does not count as use) until `env` is in `phase`.
fn wait_phase(server: &Server, env: &str, phase: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if list(server)?.get(env).is_some_and(|e| e["phase"] == phase) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{env} not {phase} within {timeout:?}\n{}",
                server.tail_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every env the server lists, by name.
fn list(server: &Server) -> Result<HashMap<String, Value>> {
    let envs: Value = serde_json::from_str(&server.cli_output(&["list"])?)?;
    Ok(envs
        .as_array()
        .context("env list --json is an array")?
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e.clone())))
        .collect())
}

/// `GET /` with `host` on `addr` until a 2xx answer (a connection refused or a 5xx is
/// retried every 20 ms: the containers are coming up).
async fn get_ok(addr: &str, host: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            let request = hyper::Request::get("/")
                .header(hyper::header::HOST, host)
                .body(Empty::new())?;
            if let Ok(response) = sender.send_request(request).await {
                let ok = response.status().is_success();
                if response.into_body().collect().await.is_ok() && ok {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no answer from {addr} (Host {host}) within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls every 50 ms until each container runs and, where it has a healthcheck, is healthy.
fn wait_healthy(containers: &[String], timeout: Duration) -> Result<()> {
    let format = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}";
    let mut args = vec!["inspect", "--format", format];
    args.extend(containers.iter().map(String::as_str));
    let deadline = Instant::now() + timeout;
    loop {
        let states = docker(&args)?;
        if states.len() == containers.len()
            && states
                .iter()
                .all(|s| s.trim() == "running" || s.trim() == "running healthy")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("containers not healthy in {timeout:?}: {states:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A docker-compose project over the bench's file; `down -v` when dropped.
struct ComposeProject {
    name: String,
    file: std::path::PathBuf,
}

impl ComposeProject {
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("docker-compose")
            .args(["-p", &self.name, "-f"])
            .arg(&self.file)
            .args(args)
            .output()
            .context("docker-compose runs")?;
        if !out.status.success() {
            bail!(
                "docker-compose {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn containers(&self) -> Result<Vec<String>> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        docker(&["ps", "-aq", "--filter", &filter])
    }

    /// The host port `service`'s `port` is published on.
    fn port(&self, service: &str, port: u16) -> Result<u16> {
        let out = self.run(&["port", service, &port.to_string()])?;
        out.rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| format!("no published port in {out:?}"))
    }
}

impl Drop for ComposeProject {
    fn drop(&mut self) {
        let _ = self.run(&["down", "-v", "--remove-orphans"]);
    }
}

// ---------------------------------------------------------------------------------------
// control-loop

/// Long enough for two resyncs at the 30 s default.
const WINDOW: Duration = Duration::from_secs(65);

pub fn control_loop(count: usize, running: usize) -> Result<()> {
    let running = running.min(count);
    println!(
        "== control-loop: {count} envs in the store ({running} running a container, the rest \
         sleeping), nothing happening, {} cores",
        cores()
    );
    let binary = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", TINY_COMPOSE)?;
    repo.commit()?;
    let branches: Vec<String> = (0..running).map(|i| format!("r{i:04}")).collect();
    for branch in &branches {
        repo.git(&["branch", branch])?;
    }
    let name = format!("loop{}", std::process::id());
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("slipway.db").display());
    let made = Instant::now();
    super::scheduler::seed(&url, &name, count - running, "s", true)?;
    println!(
        "{} sleeping env rows written through the store in {:.1} s",
        count - running,
        made.elapsed().as_secs_f64()
    );
    let _leftovers = EnvCleanup {
        repo: name.clone(),
        envs: branches.iter().map(|b| format!("{name}-{b}")).collect(),
    };
    let server = Server::start_full(
        &binary,
        &repo,
        &name,
        "compose.yml",
        "control-loop",
        &format!("database_url = \"{url}\"\n"),
        "idle_sleep = \"0\"\n",
    )?;
    let start = Instant::now();
    for batch in branches.chunks(8) {
        let children = batch
            .iter()
            .map(|b| server.spawn_cli(&["up", b, "--repo", &name, "--wait", "--timeout", "5m"]))
            .collect::<Result<Vec<_>>>()?;
        wait_all(children, &server).context("env up of the running envs")?;
    }
    println!(
        "{running} running envs Ready in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // Settle past the resync that follows the ups, then measure two whole resyncs.
    std::thread::sleep(Duration::from_secs(10));
    let dockerd = dockerd_pid();
    let before = (
        cpu_ticks(server.pid())?,
        dockerd.map(cpu_ticks).transpose()?,
    );
    let log_mark = server.log().len();
    std::thread::sleep(WINDOW);
    let used = cpu_ticks(server.pid())? - before.0;
    let docker_used = match (dockerd, before.1) {
        (Some(pid), Some(was)) => Some(cpu_ticks(pid)? - was),
        _ => None,
    };
    let (rss, hwm) = server.memory()?;
    let window = WINDOW.as_secs_f64();
    let share = |ticks: u64| ticks as f64 / 100.0 / window * 100.0;
    let resyncs = resync_times(&server.log()[log_mark..], "env");

    println!();
    println!(
        "{count} envs ({running} running, {} sleeping), idle for {}s, {} cores",
        count - running,
        WINDOW.as_secs(),
        cores()
    );
    println!(
        "slipway serve CPU        {:>7.2}% of one core (target < 5%)",
        share(used)
    );
    println!(
        "slipway serve VmRSS      {:>7.1} MB (peak {:.1} MB; target < 100 MB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    match docker_used {
        Some(ticks) => println!(
            "dockerd CPU meanwhile    {:>7.2}% of one core",
            share(ticks)
        ),
        None => println!("dockerd CPU meanwhile    (dockerd's process not found)"),
    }
    if resyncs.is_empty() {
        println!("one full resync of the envs: none finished in the window (see the server log)");
    } else {
        let max = resyncs.iter().copied().max().unwrap_or_default();
        println!(
            "one full resync of the {count} envs (housekeeping, listing, reconciling those not \
             known converged): {}; {} resyncs in the window, max {:.2} s",
            resyncs
                .iter()
                .map(|ms| format!("{:.2} s", *ms as f64 / 1000.0))
                .collect::<Vec<_>>()
                .join(", "),
            resyncs.len(),
            max as f64 / 1000.0
        );
    }
    println!(
        "(reference: `docker ps -a` of every container takes {:.3} s here)",
        {
            let start = Instant::now();
            docker(&["ps", "-a", "-q"])?;
            start.elapsed().as_secs_f64()
        }
    );

    println!();
    println!("env down --wait of the {running} running envs (8 at a time)");
    for batch in branches.chunks(8) {
        let children = batch
            .iter()
            .map(|b| server.spawn_cli(&["down", &format!("{name}-{b}"), "--wait"]))
            .collect::<Result<Vec<_>>>()?;
        wait_all(children, &server).context("env down")?;
    }
    Ok(())
}

/// The `took_ms` of each "resync done" log line of controller `kind`.
fn resync_times(log: &str, kind: &str) -> Vec<u64> {
    let wanted = format!("kind=\"{kind}\"");
    log.lines()
        .filter(|l| l.contains("resync done") && l.contains(&wanted))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|field| field.strip_prefix("took_ms="))
                .and_then(|ms| ms.parse().ok())
        })
        .collect()
}

fn dockerd_pid() -> Option<u32> {
    let out = Command::new("pidof").arg("dockerd").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// reclaim

pub fn reclaim(envs: usize) -> Result<()> {
    const RESYNC: Duration = Duration::from_secs(10);
    const SLEEP_AFTER: Duration = Duration::from_secs(20);
    const DELETE_AFTER: Duration = Duration::from_secs(60);
    const WARN_BEFORE: Duration = Duration::from_secs(15);
    println!(
        "== reclaim: {envs} envs left alone; idle_sleep {}, idle_delete {}, warn_before {}, \
         resync_interval {}",
        humantime::format_duration(SLEEP_AFTER),
        humantime::format_duration(DELETE_AFTER),
        humantime::format_duration(WARN_BEFORE),
        humantime::format_duration(RESYNC),
    );
    let binary = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", TINY_COMPOSE)?;
    repo.commit()?;
    let branches: Vec<String> = (0..envs).map(|i| format!("c{i:03}")).collect();
    for branch in &branches {
        repo.git(&["branch", branch])?;
    }
    let name = format!("reclaim{}", std::process::id());
    let names: Vec<String> = branches.iter().map(|b| format!("{name}-{b}")).collect();
    let _leftovers = EnvCleanup {
        repo: name.clone(),
        envs: names.clone(),
    };
    let server = Server::start_full(
        &binary,
        &repo,
        &name,
        "compose.yml",
        "reclaim",
        &format!(
            "resync_interval = \"{}\"\n",
            humantime::format_duration(RESYNC)
        ),
        &format!(
            "idle_sleep = \"{}\"\nidle_delete = \"{}\"\nwarn_before = \"{}\"\n",
            humantime::format_duration(SLEEP_AFTER),
            humantime::format_duration(DELETE_AFTER),
            humantime::format_duration(WARN_BEFORE),
        ),
    )?;
    // Started a few seconds apart, so the deadlines fall at different points of a resync.
    for branch in &branches {
        server.cli(&["up", branch, "--repo", &name, "--wait", "--timeout", "5m"])?;
        std::thread::sleep(Duration::from_millis(2_300));
    }
    println!("{envs} envs Ready; watching `env list` (which is not use) every 200 ms");

    // Per env: the newest last use seen, and when it was seen sleeping and gone.
    let mut last_used: HashMap<String, i64> = HashMap::new();
    let mut slept: HashMap<String, i64> = HashMap::new();
    let mut gone: HashMap<String, i64> = HashMap::new();
    let deadline = Instant::now() + DELETE_AFTER + Duration::from_secs(120);
    while gone.len() < names.len() {
        if Instant::now() > deadline {
            bail!(
                "not every env was deleted in time: {} of {envs}\n{}",
                gone.len(),
                server.tail_log()
            );
        }
        let now = now_ms();
        let listed = list(&server)?;
        for env in &names {
            match listed.get(env) {
                Some(record) if record["phase"] != "Deleting" && record["phase"] != "Deleted" => {
                    if let Some(used) = used_at(record) {
                        last_used.insert(env.clone(), used);
                    }
                    if record["phase"] == "Sleeping" {
                        slept.entry(env.clone()).or_insert(now);
                    }
                }
                _ => {
                    gone.entry(env.clone()).or_insert(now);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let late = |seen: &HashMap<String, i64>, after: Duration| -> Vec<Duration> {
        names
            .iter()
            .filter_map(|env| {
                let due = last_used.get(env)? + after.as_millis() as i64;
                Some(Duration::from_millis((seen.get(env)? - due).max(0) as u64))
            })
            .collect()
    };
    let sleep_late = late(&slept, SLEEP_AFTER);
    let delete_late = late(&gone, DELETE_AFTER);
    println!();
    println!(
        "how late past the deadline, {envs} envs, resync_interval {} (bound: {} + 5 s)",
        humantime::format_duration(RESYNC),
        humantime::format_duration(RESYNC)
    );
    println!(
        "{:<36} {:>8} {:>8} {:>8} {:>10}",
        "", "median", "min", "max", "in bound"
    );
    let bound = RESYNC + Duration::from_secs(5);
    for (label, times) in [
        ("asleep past idle_sleep", &sleep_late),
        ("deleted past idle_delete", &delete_late),
    ] {
        if times.is_empty() {
            println!("{label:<36} (none observed)");
            continue;
        }
        let (median, min, max) = summary(times);
        let within = times.iter().filter(|t| **t <= bound).count();
        println!(
            "{label:<36} {median:>6.2} s {min:>6.2} s {max:>6.2} s {within:>5}/{}",
            times.len()
        );
    }
    Ok(())
}

/// The newest sign of use in an env's JSON: creation, deploy, command, front-door request.
fn used_at(record: &Value) -> Option<i64> {
    let idle = &record["idle"];
    [
        record["created_at"].as_i64(),
        idle["last_deploy_at"].as_i64(),
        idle["last_command_at"].as_i64(),
        idle["last_request_at"].as_i64(),
    ]
    .into_iter()
    .flatten()
    .max()
}
