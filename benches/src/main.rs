//! Slipway's benchmarks: each prints Slipway's figures beside a reference measured in the same
//! run on the same machine. Nothing here passes or fails on wall-clock time; read the figures.
//!
//!   cargo run --release -p slipway-benches -- env-up [--rounds N]
//!   cargo run --release -p slipway-benches -- teardown [--rounds N]
//!   cargo run --release -p slipway-benches -- rebuild [--rounds N]
//!   cargo run --release -p slipway-benches -- failover [--rounds N]
//!   cargo run --release -p slipway-benches -- throughput [--envs N]
//!   cargo run --release -p slipway-benches -- scheduler-idle [--envs N]
//!   cargo run --release -p slipway-benches -- serve-memory [--envs N]
//!   cargo run --release -p slipway-benches -- webhooks [--count N]
//!   cargo run --release -p slipway-benches -- snippets [--gb N]
//!   cargo run --release -p slipway-benches -- chatops [--count N]
//!   cargo run --release -p slipway-benches -- queue-sim [--changes N]
//!   cargo run --release -p slipway-benches -- queue-git [--rounds N] [--commits N] [--files N]
//!   cargo run --release -p slipway-benches -- proxy [--seconds N] [--connections N]
//!   cargo run --release -p slipway-benches -- proxy-split [--seconds N] [--connections N] [--rounds N]
//!   cargo run --release -p slipway-benches -- wake [--rounds N]
//!   cargo run --release -p slipway-benches -- control-loop [--envs N] [--running N]
//!   cargo run --release -p slipway-benches -- reclaim [--envs N]
//!   cargo run --release -p slipway-benches -- rollout-faults [--rounds N] [--count N]
//!   cargo run --release -p slipway-benches -- rollout-live [--rates 10,100,1000] [--faults 5xx,5pct,latency,crash,good] [--seconds N]
//!   cargo run --release -p slipway-benches -- all [--rounds N] [--envs N] [--count N]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

mod candidates;
mod chatops;
mod idle;
mod proxy;
mod proxy_split;
mod queue;
mod replicas;
mod rollout;
mod rollout_live;
mod scheduler;
mod snippets;
mod webhooks;

const USAGE: &str =
    "usage: slipway-benches <env-up|teardown|rebuild|failover|throughput|scheduler-idle|serve-memory|webhooks|snippets|chatops|queue-sim|queue-git|proxy|proxy-split|wake|control-loop|reclaim|rollout-faults|rollout-live|all> [--rounds N] [--envs N] [--running N] [--count N] [--gb N] [--changes N] [--commits N] [--files N] [--seconds N] [--connections N]

  env-up        time `slipway env up --wait` of compose/demo.yml against
                `docker-compose up -d` plus waiting for its healthchecks (default 5 rounds)
  teardown      time `slipway env down --wait` of compose/demo.yml (containers stopped
                gracefully, in parallel) against `docker-compose down -v` (default 5 rounds)
  rebuild       redeploy after a commit changing one build context, then two, against
                `docker-compose up -d --build` plus healthy (default 5 rounds per case)
  failover      two replicas on one Postgres: kill -9 of the one starting an env, time until
                the other has it Ready, beside the undisturbed start and lease_ttl (3 rounds)
  throughput    N envs (default 200) asked at once of one replica, then of two on one
                Postgres: time to all Ready, container creations per env
  scheduler-idle
                N idle envs in the store (default 10000): server CPU and RSS while nothing
                happens, beside the same server with none
  serve-memory  resident memory of `slipway serve` idle and with N envs Ready (default 50)
  webhooks      N signed pull_request deliveries (default 5000): acknowledgements per second
                and latency beside the server's /healthz, and stored-exactly-once
  snippets      the failure-snippet scanner over a generated N GB test log (default 1)
                beside `grep -c ERROR`: MB/s and the scanner's peak memory
  chatops       the command grammar's parse rate, and N slash commands (default 500)
                through the server against a Discord stand-in: handled/s and the
                interaction-to-deferred-answer latency beside Discord's 3 s deadline
  queue-sim     the submit queue's scheduler in a simulated CI (default 100000 changes):
                merges/h, builds per merge, latency, wrong evictions and main-broken count
                for serial (bors), reset-behind (Zuul, GitHub) and Slipway side by side
  queue-git     a submit-queue candidate merge commit built in a bare mirror of a generated
                repository (default 10000 commits, 5000 files; cached in the temp dir)
                beside `git merge --no-edit` of the same two heads in a worktree already at
                head 1, checkout not timed (default 10 rounds)
  proxy         a small GET straight to a container's published port against the same GET
                through the front door (by Host): requests/s, p50 and p99 latency with N
                keep-alive connections (default 64) for N seconds each (default 30)
  proxy-split   the same GET through the front door (in-process, to a loopback stand-in)
                without a rollout and with a rollout at 50% (split, per-version counting and
                its writes), in alternating rounds (default 3 x 10 s, 64 connections)
  wake          the first request to a sleeping 3-service env through the front door until
                answered, beside a cold `env up --wait` and `docker start` of the same
                containers' compose project until healthy (default 5 rounds)
  control-loop  N envs in the store (default 2000), M of them running a container (default
                100, --running), the rest sleeping: server CPU and RSS while idle, dockerd's
                CPU, and how long one full resync takes
  reclaim       N envs (default 6) left alone with idle_sleep 20s, idle_delete 60s,
                resync_interval 10s: how late past each deadline they sleep and go
  rollout-faults
                rollout decisions on simulated traffic (10, 100, 1000 requests/s) with
                faults in the canary (100% 5xx, 5% 5xx, +200 ms, crash loop) and A/A runs:
                Slipway's sequential analysis beside a Flagger-like and an Argo-like
                threshold-per-interval policy; N seeded runs per fault (default 20,
                --rounds) and N A/A runs per rate (default 200, --count)
  rollout-live  the same faults on the real system: release `slipway serve`, the demo app
                as stable and canary behind the front door, open-loop load at each rate
                (--rates, default 10,100,1000), one release per fault (--faults, default
                5xx,5pct,latency,crash,good): canary answers before the decision, time to
                decision, decision to the last canary answer, a good version's time to
                100%; beside it the same observed traffic judged by the Flagger-like and
                Argo-like policies; a run undecided after N s is rolled back (--seconds,
                default 150)
  all           env-up, serve-memory and webhooks";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |flag: &str, default: usize| match args.iter().position(|a| a == flag) {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => exit_usage(),
        },
        None => default,
    };
    // `--flag a,b,c`, or the defaults.
    let list = |flag: &str, default: &[&str]| -> Vec<String> {
        match args.iter().position(|a| a == flag) {
            Some(i) => match args.get(i + 1) {
                Some(items) => items.split(',').map(str::to_string).collect(),
                None => exit_usage(),
            },
            None => default.iter().map(|s| s.to_string()).collect(),
        }
    };
    let (rounds, envs, count) = (
        number("--rounds", 5),
        number("--envs", 50),
        number("--count", 5000),
    );
    let result = match args.first().map(String::as_str) {
        Some("env-up") => env_up(rounds),
        Some("teardown") => teardown(rounds),
        Some("rebuild") => rebuild(rounds),
        Some("failover") => replicas::failover(number("--rounds", 3)),
        Some("throughput") => replicas::throughput(number("--envs", 200)),
        Some("scheduler-idle") => scheduler::scheduler_idle(number("--envs", 10_000)),
        Some("serve-memory") => serve_memory(envs),
        Some("webhooks") => webhooks::webhooks(count),
        Some("snippets") => snippets::snippets(number("--gb", 1)),
        Some("chatops") => chatops::chatops(number("--count", 500)),
        Some("proxy") => proxy::proxy(number("--seconds", 30), number("--connections", 64)),
        Some("proxy-split") => proxy_split::proxy_split(
            number("--seconds", 10),
            number("--connections", 64),
            number("--rounds", 3),
        ),
        Some("wake") => idle::wake(rounds),
        Some("control-loop") => {
            idle::control_loop(number("--envs", 2_000), number("--running", 100))
        }
        Some("reclaim") => idle::reclaim(number("--envs", 6)),
        Some("rollout-faults") => {
            rollout::rollout_faults(number("--rounds", 20), number("--count", 200))
        }
        Some("rollout-live") => {
            let rates = list("--rates", &["10", "100", "1000"])
                .iter()
                .map(|r| r.parse::<u32>().ok().filter(|r| *r > 0))
                .collect::<Option<Vec<u32>>>()
                .unwrap_or_else(|| exit_usage());
            let faults = list("--faults", &rollout_live::FAULTS)
                .iter()
                .map(|f| rollout_live::FAULTS.iter().copied().find(|k| k == f))
                .collect::<Option<Vec<&'static str>>>()
                .unwrap_or_else(|| exit_usage());
            rollout_live::rollout_live(&rates, &faults, number("--seconds", 150) as u64)
        }
        Some("queue-sim") => queue::queue_sim(number("--changes", 100_000)),
        Some("queue-git") => candidates::queue_git(
            number("--rounds", 10),
            number("--commits", 10_000),
            number("--files", 5_000),
        ),
        // The scanner's own process, so its peak memory is measured alone.
        Some("snippets-scan") => snippets::scan_child(args.get(1)),
        Some("all") => env_up(rounds)
            .and_then(|()| serve_memory(envs))
            .and_then(|()| webhooks::webhooks(count)),
        _ => exit_usage(),
    };
    if let Err(e) = result {
        eprintln!("benchmark failed: {e:#}");
        std::process::exit(1);
    }
}

fn exit_usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2);
}

// ---------------------------------------------------------------------------------------
// env-up

fn env_up(rounds: usize) -> Result<()> {
    println!(
        "== env-up: compose/demo.yml, {rounds} rounds, {} cores",
        cores()
    );
    let slipway = slipway_binary()?;
    let repo = Repo::with_demo_files()?;
    let repo_name = format!("bench{}", std::process::id());
    let env = format!("{repo_name}-main");
    let compose_file = repo.path().join("compose/demo.yml");

    // Declared before the server so it drops after it: a live server would recreate
    // whatever this removes.
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![env.clone()],
    };
    let compose = Compose {
        project: format!("slipwaybench{}", std::process::id()),
        file: compose_file,
    };
    let server = Server::start(&slipway, &repo, &repo_name, "compose/demo.yml", "env-up")?;

    // Warm-up: build both sides' images and fill caches, so the rounds time starting only.
    println!("warm-up: slipway env up + down (builds the web image)");
    server.up(&repo_name, "main")?;
    server.down(&env)?;
    println!("warm-up: docker-compose up -d --build + down");
    compose.run(&["up", "-d", "--build"])?;
    compose.wait_ready(Duration::from_secs(180))?;
    compose.run(&["down", "-v"])?;

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        // Alternate which goes first so drift on a shared machine hits both sides alike.
        for slipway_turn in [round % 2 == 1, round % 2 == 0] {
            if slipway_turn {
                let took = server.up(&repo_name, "main")?;
                println!(
                    "round {round}/{rounds}: slipway        {:>6.2} s",
                    secs(took)
                );
                ours.push(took);
                server.down(&env)?;
            } else {
                let start = Instant::now();
                compose.run(&["up", "-d"])?;
                compose.wait_ready(Duration::from_secs(180))?;
                let took = start.elapsed();
                println!(
                    "round {round}/{rounds}: docker-compose {:>6.2} s",
                    secs(took)
                );
                theirs.push(took);
                compose.run(&["down", "-v"])?;
            }
        }
    }

    println!();
    println!(
        "env-up to Ready, compose/demo.yml, {rounds} rounds, {} cores",
        cores()
    );
    println!("{:<36} {:>8} {:>8} {:>8}", "", "median", "min", "max");
    for (label, times) in [
        ("slipway env up --wait", &ours),
        ("docker-compose up -d + healthy", &theirs),
    ] {
        let (median, min, max) = summary(times);
        println!("{label:<36} {median:>6.2} s {min:>6.2} s {max:>6.2} s");
    }
    let ratio = summary(&ours).0 / summary(&theirs).0;
    println!("ratio slipway/compose (medians): {ratio:.2}x (goal: <= 1.0x)");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// teardown

/// Both sides bring the demo env up untimed, then the stop-and-remove is timed: Slipway
/// stops each container with its stop signal and grace (in parallel), as compose does.
fn teardown(rounds: usize) -> Result<()> {
    println!(
        "== teardown: compose/demo.yml, {rounds} rounds, {} cores",
        cores()
    );
    let slipway = slipway_binary()?;
    let repo = Repo::with_demo_files()?;
    let repo_name = format!("benchtd{}", std::process::id());
    let env = format!("{repo_name}-main");
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![env.clone()],
    };
    let compose = Compose {
        project: format!("slipwaybenchtd{}", std::process::id()),
        file: repo.path().join("compose/demo.yml"),
    };
    let server = Server::start(&slipway, &repo, &repo_name, "compose/demo.yml", "teardown")?;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        server.up(&repo_name, "main")?;
        let start = Instant::now();
        server.down(&env)?;
        let took = start.elapsed();
        println!(
            "round {round}/{rounds}: slipway        {:>6.2} s",
            secs(took)
        );
        ours.push(took);

        compose.run(&["up", "-d", "--build"])?;
        compose.wait_ready(Duration::from_secs(180))?;
        let start = Instant::now();
        compose.run(&["down", "-v"])?;
        let took = start.elapsed();
        println!(
            "round {round}/{rounds}: docker-compose {:>6.2} s",
            secs(took)
        );
        theirs.push(took);
    }
    println!();
    println!("teardown of a Ready env, compose/demo.yml, {rounds} rounds");
    println!("{:<36} {:>8} {:>8} {:>8}", "", "median", "min", "max");
    for (label, times) in [
        ("slipway env down --wait", &ours),
        ("docker-compose down -v", &theirs),
    ] {
        let (median, min, max) = summary(times);
        println!("{label:<36} {median:>6.2} s {min:>6.2} s {max:>6.2} s");
    }
    let ratio = summary(&ours).0 / summary(&theirs).0;
    println!("ratio slipway/compose (medians): {ratio:.2}x (goal: <= 1.0x)");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// rebuild

/// The demo file with a second built service: `worker` gets its own context, so a change can
/// touch one context or both.
const REBUILD_COMPOSE: &str = r#"services:
  migrate:
    image: slipway/demo-app:latest
    command: ["migrate"]
    restart: "no"
  web:
    build:
      context: demo/web
    ports:
      - "8080"
    environment:
      PORT: "8080"
    healthcheck:
      test: ["CMD", "/demo-app", "probe", "http://127.0.0.1:8080/healthz"]
      interval: 1s
      timeout: 2s
      retries: 30
    depends_on:
      migrate:
        condition: service_completed_successfully
  worker:
    build:
      context: demo/worker
    command: ["worker"]
    environment:
      TARGET_URL: http://web:8080/
    depends_on:
      web:
        condition: service_healthy
"#;

/// A context's Dockerfile: a file copied in, so changing the file invalidates that step.
const REBUILD_DOCKERFILE: &str = "FROM slipway/demo-app:latest\nCOPY greeting.txt /greeting.txt\n";

/// Both sides keep one env running; each round commits a change to one context (then to
/// both) and times the redeploy to Ready: `slipway env up` at the new commit against
/// `docker-compose up -d --build` plus healthy, on the same files.
fn rebuild(rounds: usize) -> Result<()> {
    println!(
        "== rebuild: two built services, {rounds} rounds per case, {} cores",
        cores()
    );
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write("compose/rebuild.yml", REBUILD_COMPOSE)?;
    for service in ["web", "worker"] {
        repo.write(
            &format!("compose/demo/{service}/Dockerfile"),
            REBUILD_DOCKERFILE,
        )?;
        repo.write(&format!("compose/demo/{service}/greeting.txt"), "0\n")?;
    }
    repo.commit()?;
    let repo_name = format!("benchrb{}", std::process::id());
    let env = format!("{repo_name}-main");
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: vec![env.clone()],
    };
    let compose = Compose {
        project: format!("slipwaybenchrb{}", std::process::id()),
        file: repo.path().join("compose/rebuild.yml"),
    };
    let server = Server::start(
        &slipway,
        &repo,
        &repo_name,
        "compose/rebuild.yml",
        "rebuild",
    )?;
    println!("warm-up: both sides build and start once");
    server.up(&repo_name, "main")?;
    compose.run(&["up", "-d", "--build"])?;
    compose.wait_ready(Duration::from_secs(180))?;

    let mut results = Vec::new();
    let mut change = 0;
    for (case, touched) in [
        ("one file, one context", &["web"][..]),
        ("two contexts", &["web", "worker"][..]),
    ] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            // A fresh change per side, so neither finds the other's build in a cache.
            for slipway_turn in [round % 2 == 1, round % 2 == 0] {
                change += 1;
                for service in touched {
                    repo.write(
                        &format!("compose/demo/{service}/greeting.txt"),
                        &format!("{change}\n"),
                    )?;
                }
                repo.commit()?;
                if slipway_turn {
                    let took = server.up(&repo_name, "main")?;
                    println!(
                        "{case}, round {round}/{rounds}: slipway        {:>6.2} s",
                        secs(took)
                    );
                    ours.push(took);
                } else {
                    let start = Instant::now();
                    compose.run(&["up", "-d", "--build"])?;
                    compose.wait_ready(Duration::from_secs(180))?;
                    let took = start.elapsed();
                    println!(
                        "{case}, round {round}/{rounds}: docker-compose {:>6.2} s",
                        secs(took)
                    );
                    theirs.push(took);
                }
            }
        }
        results.push((case, ours, theirs));
    }
    println!();
    println!("redeploy to Ready after a commit, {rounds} rounds per case");
    println!("{:<52} {:>8} {:>8} {:>8}", "", "median", "min", "max");
    for (case, ours, theirs) in &results {
        for (label, times) in [
            (format!("{case}: slipway env up --wait"), ours),
            (format!("{case}: docker-compose up -d --build"), theirs),
        ] {
            let (median, min, max) = summary(times);
            println!("{label:<52} {median:>6.2} s {min:>6.2} s {max:>6.2} s");
        }
        let ratio = summary(ours).0 / summary(theirs).0;
        println!("{case}: ratio slipway/compose (medians): {ratio:.2}x (goal: <= 1.0x)");
    }
    Ok(())
}

/// One docker-compose project over a file; `down -v --rmi local` when dropped.
struct Compose {
    project: String,
    file: PathBuf,
}

impl Compose {
    fn run(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("docker-compose")
            .args(["-p", &self.project, "-f"])
            .arg(&self.file)
            .args(args)
            .output()
            .context("docker-compose runs")?;
        if !out.status.success() {
            bail!("docker-compose {args:?}: {}", stderr(&out));
        }
        Ok(())
    }

    /// Polls every 100 ms until web is healthy, migrate exited 0 and worker runs.
    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let filter = format!("label=com.docker.compose.project={}", self.project);
        let ids = docker(&["ps", "-aq", "--filter", &filter])?;
        let format = r#"{{index .Config.Labels "com.docker.compose.service"}} {{.State.Status}} {{.State.ExitCode}} {{if .State.Health}}{{.State.Health.Status}}{{end}}"#;
        let mut args = vec!["inspect", "--format", format];
        args.extend(ids.iter().map(String::as_str));
        let deadline = Instant::now() + timeout;
        loop {
            let states = docker(&args)?;
            let has = |wanted: &str| states.iter().any(|s| s.trim() == wanted);
            if has("web running 0 healthy") && has("migrate exited 0") && has("worker running 0") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("compose project not ready in {timeout:?}: {states:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        // --rmi local also removes the web image compose built for this project.
        let _ = self.run(&["down", "-v", "--rmi", "local", "--remove-orphans"]);
    }
}

// ---------------------------------------------------------------------------------------
// serve-memory

const BATCH: usize = 8;

fn serve_memory(count: usize) -> Result<()> {
    println!("== serve-memory: slipway serve RSS idle and with {count} envs");
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write(
        "compose.yml",
        "services:\n  app:\n    image: slipway/demo-app:latest\n",
    )?;
    repo.commit()?;
    let branches: Vec<String> = (0..count).map(|i| format!("b{i:02}")).collect();
    for branch in &branches {
        repo.git(&["branch", branch])?;
    }
    let repo_name = format!("mem{}", std::process::id());
    let envs: Vec<String> = branches
        .iter()
        .map(|b| format!("{repo_name}-{b}"))
        .collect();
    // Before the server: see env_up.
    let _leftovers = EnvCleanup {
        repo: repo_name.clone(),
        envs: envs.clone(),
    };
    let server = Server::start(&slipway, &repo, &repo_name, "compose.yml", "serve-memory")?;

    std::thread::sleep(Duration::from_secs(2));
    let idle = server.memory()?;
    println!("idle: VmRSS {} kB", idle.0);

    let start = Instant::now();
    for (i, batch) in branches.chunks(BATCH).enumerate() {
        println!(
            "env up {} .. {} ({BATCH} at a time)",
            batch[0],
            batch[batch.len() - 1]
        );
        let children = batch
            .iter()
            .map(|b| {
                server.spawn_cli(&["up", b, "--repo", &repo_name, "--wait", "--timeout", "5m"])
            })
            .collect::<Result<Vec<_>>>()?;
        wait_all(children, &server).with_context(|| format!("batch {i} of env up"))?;
    }
    println!(
        "{count} envs Ready after {:.1} s",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let loaded = server.memory()?;

    println!();
    println!("slipway serve resident memory ({} cores)", cores());
    println!("{:<28} {:>10} {:>10}", "", "VmRSS", "VmHWM");
    println!("{:<28} {:>7} kB {:>7} kB", "idle, 0 envs", idle.0, idle.1);
    println!(
        "{:<28} {:>7} kB {:>7} kB",
        format!("idle, {count} envs Ready"),
        loaded.0,
        loaded.1
    );
    println!(
        "per env: {:.1} kB",
        (loaded.0 as f64 - idle.0 as f64) / count as f64
    );

    println!();
    println!("env down --wait all {count} ({BATCH} at a time)");
    for batch in envs.chunks(BATCH) {
        let children = batch
            .iter()
            .map(|e| server.spawn_cli(&["down", e, "--wait"]))
            .collect::<Result<Vec<_>>>()?;
        wait_all(children, &server).context("env down")?;
    }
    let mut left = Vec::new();
    for env in &envs {
        let filter = format!("label=dev.slipway.env={env}");
        for kind in [
            &["ps", "-aq"][..],
            &["network", "ls", "-q"],
            &["volume", "ls", "-q"],
        ] {
            let mut args = kind.to_vec();
            args.extend(["--filter", &filter]);
            left.extend(docker(&args)?.into_iter().map(|id| format!("{env}: {id}")));
        }
    }
    if left.is_empty() {
        println!("cleanup: OK, {count} envs deleted, no containers, networks or volumes left");
    } else {
        println!("cleanup: {} Docker objects left: {left:?}", left.len());
    }
    Ok(())
}

/// Waits for CLI processes; stops early when Docker has no address pool left for another
/// env network, which the server retries as a transient error until the CLI times out.
fn wait_all(mut children: Vec<Child>, server: &Server) -> Result<()> {
    let failure = loop {
        if server.log().contains("non-overlapping IPv4 address pool") {
            break "Docker cannot create more networks (each env has its own; the default \
                   address pools hold about 30): use --envs with fewer or widen the \
                   daemon's default-address-pools"
                .to_string();
        }
        if let Some(i) = children
            .iter_mut()
            .position(|c| matches!(c.try_wait(), Ok(Some(s)) if !s.success()))
        {
            break stderr(&children.remove(i).wait_with_output()?);
        }
        children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(s)) if s.success()));
        if children.is_empty() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    bail!("{failure}\n--- server log ---\n{}", server.tail_log())
}

// ---------------------------------------------------------------------------------------
// Shared pieces

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// Builds the release `slipway` (quick when current) and returns its path; with
/// `SLIPWAY_BENCH_BINARY` set, that binary as it is (building `-p slipway` alone unifies
/// features differently from `-p slipway -p slipway-benches`, and rebuilds everything).
fn slipway_binary() -> Result<PathBuf> {
    if let Some(binary) = std::env::var_os("SLIPWAY_BENCH_BINARY") {
        let binary = PathBuf::from(binary);
        anyhow::ensure!(
            binary.exists(),
            "SLIPWAY_BENCH_BINARY: no {}",
            binary.display()
        );
        println!("using {}", binary.display());
        return Ok(binary);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("building: cargo build --release -p slipway");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "slipway"])
        .current_dir(workspace_root())
        .status()
        .context("cargo runs")?;
    if !status.success() {
        bail!("cargo build --release -p slipway failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let binary = target.join("release/slipway");
    println!("using {}", binary.display());
    Ok(binary)
}

/// A git repository in a temp dir, on branch main.
struct Repo(tempfile::TempDir);

impl Repo {
    fn new() -> Result<Self> {
        let repo = Self(tempfile::tempdir()?);
        repo.git(&["init", "--quiet", "--initial-branch=main"])?;
        Ok(repo)
    }

    /// A repository holding the workspace's demo compose file and web Dockerfile.
    fn with_demo_files() -> Result<Self> {
        let repo = Self::new()?;
        for file in ["compose/demo.yml", "compose/demo/web/Dockerfile"] {
            repo.write(file, &std::fs::read_to_string(workspace_root().join(file))?)?;
        }
        repo.commit()?;
        Ok(repo)
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn write(&self, path: &str, contents: &str) -> Result<()> {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().expect("a file path"))?;
        Ok(std::fs::write(full, contents)?)
    }

    fn commit(&self) -> Result<()> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "--quiet", "-m", "bench"])
    }

    fn git(&self, args: &[&str]) -> Result<()> {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "Bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "Bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()
            .context("git runs")?;
        if !out.status.success() {
            bail!("git {args:?}: {}", stderr(&out));
        }
        Ok(())
    }
}

/// A `slipway serve` process with its own data dir; killed when dropped.
struct Server {
    binary: PathBuf, // also the CLI
    bench: String,
    child: Child,
    dir: tempfile::TempDir,
    url: String,
    /// The front door's address, `http://127.0.0.1:<port>`.
    proxy_url: String,
}

impl Server {
    fn start(binary: &Path, repo: &Repo, name: &str, env_file: &str, bench: &str) -> Result<Self> {
        Self::start_with(binary, repo, name, env_file, bench, "")
    }

    /// `start`, with `tables` (e.g. a `[github]` section) appended to the config.
    fn start_with(
        binary: &Path,
        repo: &Repo,
        name: &str,
        env_file: &str,
        bench: &str,
        tables: &str,
    ) -> Result<Self> {
        Self::start_full(binary, repo, name, env_file, bench, "", tables)
    }

    /// `start_with`, with `top` holding top-level keys (e.g. `database_url`).
    fn start_full(
        binary: &Path,
        repo: &Repo,
        name: &str,
        env_file: &str,
        bench: &str,
        top: &str,
        tables: &str,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("slipway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nready_timeout = \"3m\"\n{top}\n\
                 [[repo]]\nname = \"{name}\"\nurl = \"{}\"\nenv_file = \"{env_file}\"\n\
                 default_ttl = \"1h\"\n\n{tables}\n{proxy}",
                dir.path().display(),
                repo.path().display(),
                // Each server's front door on a free port, so two can run at once.
                proxy = if tables.contains("[proxy]") {
                    ""
                } else {
                    "[proxy]\nlisten = \"127.0.0.1:0\"\n"
                },
            ),
        )?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        // A configured server no longer builds the demo image; the bench's files use it.
        let built = Command::new(binary).arg("demo-image").status()?;
        anyhow::ensure!(built.success(), "slipway demo-image failed");
        println!("starting slipway serve");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,envmgr=debug") // the log shows where the time goes
            .env("NO_COLOR", "1")
            .env_remove("SLIPWAY_API_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("slipway serve starts")?;
        let mut server = Self {
            binary: binary.to_path_buf(),
            bench: bench.to_string(),
            child,
            dir,
            url: String::new(),
            proxy_url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        while server.url.is_empty() {
            let log = server.log();
            if let Some(rest) = log
                .lines()
                .find_map(|l| l.strip_prefix("Slipway is serving on "))
            {
                server.url = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                server.proxy_url = log
                    .lines()
                    .find_map(|l| l.strip_prefix("Slipway's front door is on "))
                    .and_then(|rest| rest.split_whitespace().next())
                    .unwrap_or_default()
                    .to_string();
            } else if let Some(status) = server.child.try_wait()? {
                bail!("slipway serve exited with {status}:\n{log}");
            } else if Instant::now() > deadline {
                bail!("slipway serve did not start:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!(
            "slipway serve is on {} (pid {})",
            server.url,
            server.child.id()
        );
        Ok(server)
    }

    fn spawn_cli(&self, args: &[&str]) -> Result<Child> {
        Command::new(&self.binary)
            .arg("env")
            .args(args)
            .arg("--json") // no progress lines on stderr: it then holds just the error
            .env("SLIPWAY_SERVER", &self.url)
            .env_remove("SLIPWAY_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("slipway env runs")
    }

    fn cli(&self, args: &[&str]) -> Result<()> {
        let out = self.spawn_cli(args)?.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "slipway env {args:?}: {}\n--- server log ---\n{}",
                stderr(&out),
                self.tail_log()
            );
        }
        Ok(())
    }

    /// Stdout of `slipway env <args> --json`.
    fn cli_output(&self, args: &[&str]) -> Result<String> {
        let out = self.spawn_cli(args)?.wait_with_output()?;
        if !out.status.success() {
            bail!("slipway env {args:?}: {}", stderr(&out));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server with SIGKILL: no shutdown, no lease released.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `env up --wait`, timed from the CLI's start to its exit.
    fn up(&self, repo: &str, branch: &str) -> Result<Duration> {
        let start = Instant::now();
        self.cli(&["up", branch, "--repo", repo, "--wait", "--timeout", "5m"])?;
        Ok(start.elapsed())
    }

    fn down(&self, env: &str) -> Result<()> {
        self.cli(&["down", env, "--wait"])
    }

    /// (VmRSS, VmHWM) in kB from /proc.
    fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .context("no such field")?;
            Ok(line[name.len()..]
                .trim()
                .trim_end_matches(" kB")
                .trim()
                .parse()?)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn tail_log(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Keep the log, for where the time went: the temp dir goes away with the server.
        let path = std::env::temp_dir().join(format!("slipway-bench-{}.log", self.bench));
        if std::fs::write(&path, self.log()).is_ok() {
            println!(
                "server log (RUST_LOG=info,envmgr=debug): {}",
                path.display()
            );
        }
    }
}

/// Removes the Docker objects of a repo's envs, whatever a failed run left behind, and the
/// images Slipway built for the repo (it keeps them as a cache; the repo name is per run).
struct EnvCleanup {
    repo: String,
    envs: Vec<String>,
}

impl Drop for EnvCleanup {
    fn drop(&mut self) {
        for env in &self.envs {
            let filter = format!("label=dev.slipway.env={env}");
            let list = |args: &[&str]| {
                let mut args = args.to_vec();
                args.extend(["-q", "--filter", &filter]);
                docker(&args).unwrap_or_default()
            };
            for id in list(&["ps", "-a"]) {
                let _ = docker(&["rm", "-f", "-v", &id]);
            }
            for id in list(&["network", "ls"]) {
                let _ = docker(&["network", "rm", &id]);
            }
            for id in list(&["volume", "ls"]) {
                let _ = docker(&["volume", "rm", "-f", &id]);
            }
        }
        let built = format!("reference=slipway/{}-*", self.repo);
        for id in docker(&["images", "-q", "--filter", &built]).unwrap_or_default() {
            let _ = docker(&["rmi", "-f", &id]);
        }
    }
}

/// Runs the docker CLI; its output lines.
fn docker(args: &[&str]) -> Result<Vec<String>> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .context("docker runs")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// (median, min, max) in seconds.
fn summary(times: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = times.iter().map(|d| d.as_secs_f64()).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}
