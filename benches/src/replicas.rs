//! Several replicas on one Postgres (a throwaway cluster, as the tests start it).
//!
//! `failover`: the replica starting an env is killed with SIGKILL; the time until another
//! replica has the env Ready, beside the same start undisturbed and beside `lease_ttl`.
//! `throughput`: N envs of one tiny service asked at once of one replica, then of two; time
//! to all Ready and Docker container creations per env (one each: no env worked twice).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

#[path = "../../envmgr/tests/support/postgres.rs"]
mod postgres;

use super::{cores, docker, secs, slipway_binary, summary, EnvCleanup, Repo, Server};

const LEASE_TTL: Duration = Duration::from_secs(5);

/// `migrate` sleeps, so the start lasts long enough to be cut off.
const SLOW_START: &str = "services:
  migrate:
    image: slipway/demo-app:latest
    command: [migrate]
    environment: { MIGRATE_SLEEP_MS: \"3000\" }
  web:
    image: slipway/demo-app:latest
    depends_on:
      migrate: { condition: service_completed_successfully }
";

fn database() -> Result<(tokio::runtime::Runtime, postgres::TestPostgres)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let pg = runtime
        .block_on(postgres::TestPostgres::start())
        .context("no Postgres here: install postgresql (initdb, pg_ctl)")?;
    Ok((runtime, pg))
}

fn replica(
    binary: &std::path::Path,
    repo: &Repo,
    name: &str,
    url: &str,
    bench: &str,
) -> Result<Server> {
    let top = format!(
        "database_url = \"{url}\"\nlease_ttl = \"{}s\"\nresync_interval = \"10s\"\n",
        LEASE_TTL.as_secs()
    );
    Server::start_full(binary, repo, name, "compose.yml", bench, &top, "")
}

fn phase(server: &Server, env: &str) -> Result<String> {
    let status = server.cli_output(&["status", env])?;
    let value: serde_json::Value = serde_json::from_str(&status)?;
    Ok(value["phase"].as_str().unwrap_or_default().to_string())
}

fn wait_phase(server: &Server, env: &str, wanted: &str, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let now = phase(server, env)?;
        if now == wanted {
            return Ok(start.elapsed());
        }
        if now == "Failed" {
            bail!("{env} failed:\n{}", server.tail_log());
        }
        if start.elapsed() > timeout {
            bail!("{env} not {wanted} within {timeout:?} (is {now})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn failover(rounds: usize) -> Result<()> {
    println!(
        "== failover: two replicas on one Postgres, lease_ttl {}s, {rounds} rounds, {} cores",
        LEASE_TTL.as_secs(),
        cores()
    );
    let binary = slipway_binary()?;
    let (_rt, pg) = database()?;
    let repo = Repo::new()?;
    repo.write("compose.yml", SLOW_START)?;
    repo.commit()?;
    let name = format!("fo{}", std::process::id());
    let env = format!("{name}-main");
    let _leftovers = EnvCleanup {
        repo: name.clone(),
        envs: vec![env.clone()],
    };
    let (mut undisturbed, mut failovers) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let mut a = replica(&binary, &repo, &name, pg.url(), "failover-a")?;
        let b = replica(&binary, &repo, &name, pg.url(), "failover-b")?;
        // Undisturbed: the same start on b, timed from the request to Ready.
        let start = Instant::now();
        b.cli(&["up", "main", "--repo", &name, "--wait", "--timeout", "2m"])?;
        undisturbed.push(start.elapsed());
        b.down(&env)?;

        // a takes the request and is killed while its env is starting.
        a.cli(&["up", "main", "--repo", &name])?;
        wait_phase(&a, &env, "Starting", Duration::from_secs(60))?;
        std::thread::sleep(Duration::from_millis(500));
        let killed = Instant::now();
        a.kill9();
        wait_phase(&b, &env, "Ready", Duration::from_secs(120))?;
        let took = killed.elapsed();
        println!(
            "round {round}/{rounds}: undisturbed start {:>5.2} s, kill -9 mid-start → Ready on the other replica {:>5.2} s",
            secs(*undisturbed.last().expect("one")),
            secs(took)
        );
        failovers.push(took);
        b.down(&env)?;
    }
    println!();
    println!("{:<52} {:>8} {:>8} {:>8}", "", "median", "min", "max");
    for (label, times) in [
        ("start, undisturbed (request → Ready)", &undisturbed),
        ("kill -9 of the holder mid-start → Ready", &failovers),
    ] {
        let (median, min, max) = summary(times);
        println!("{label:<52} {median:>6.2} s {min:>6.2} s {max:>6.2} s");
    }
    println!(
        "kill -9 → Ready {:.2} s; bound: lease_ttl {:.2} s + the undisturbed start {:.2} s = {:.2} s \
         (the other replica takes the env within lease_ttl of the holder's last renewal, then \
         finishes what the killed one left)",
        summary(&failovers).0,
        secs(LEASE_TTL),
        summary(&undisturbed).0,
        secs(LEASE_TTL) + summary(&undisturbed).0
    );
    Ok(())
}

pub fn throughput(count: usize) -> Result<()> {
    println!(
        "== throughput: {count} envs of one service, one replica then two on one Postgres, {} cores",
        cores()
    );
    let binary = slipway_binary()?;
    let (_rt, pg) = database()?;
    let repo = Repo::new()?;
    repo.write(
        "compose.yml",
        "services:\n  app:\n    image: slipway/demo-app:latest\n",
    )?;
    repo.commit()?;
    let branches: Vec<String> = (0..count).map(|i| format!("b{i:03}")).collect();
    for branch in &branches {
        repo.git(&["branch", branch])?;
    }
    let mut results = Vec::new();
    for replicas in [1usize, 2] {
        let name = format!("tp{replicas}x{}", std::process::id());
        let envs: Vec<String> = branches.iter().map(|b| format!("{name}-{b}")).collect();
        let _leftovers = EnvCleanup {
            repo: name.clone(),
            envs: envs.clone(),
        };
        let servers = (0..replicas)
            .map(|i| {
                replica(
                    &binary,
                    &repo,
                    &name,
                    pg.url(),
                    &format!("throughput-{replicas}-{i}"),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let since = unix_now();
        let start = Instant::now();
        // Every request at once (no --wait), spread over the replicas.
        for (i, branch) in branches.iter().enumerate() {
            servers[i % replicas].cli(&["up", branch, "--repo", &name])?;
        }
        let asked = start.elapsed();
        let mut left: Vec<&String> = envs.iter().collect();
        while !left.is_empty() {
            let list = servers[0].cli_output(&["list"])?;
            let list: serde_json::Value = serde_json::from_str(&list)?;
            let ready: Vec<String> = list
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|e| e["phase"] == "Ready")
                        .filter_map(|e| e["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            left.retain(|e| !ready.contains(e));
            if start.elapsed() > Duration::from_secs(900) {
                bail!("{} envs not Ready after 15 min", left.len());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let took = start.elapsed();
        let creates = container_creates(since, &name)?;
        let worst = creates.values().copied().max().unwrap_or(0);
        let twice = creates.values().filter(|n| **n > 1).count();
        println!(
            "{replicas} replica(s): {count} envs asked in {:.1} s, all Ready after {:.1} s; container creations per env: max {worst}, envs created more than once: {twice}",
            secs(asked),
            secs(took)
        );
        results.push((replicas, took, worst, twice));
        for batch in envs.chunks(16) {
            for env in batch {
                servers[0].cli(&["down", env])?;
            }
        }
        for env in &envs {
            wait_gone(&servers[0], env)?;
        }
    }
    println!();
    println!(
        "{:<14} {:>14} {:>22} {:>20}",
        "replicas", "all Ready", "creations/env (max)", "envs worked twice"
    );
    for (replicas, took, worst, twice) in results {
        println!(
            "{replicas:<14} {:>12.1} s {worst:>22} {twice:>20}",
            secs(took)
        );
    }
    println!("(target: one creation per env and none worked twice, on one replica as on two)");
    Ok(())
}

fn wait_gone(server: &Server, env: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while phase(server, env).map(|p| p != "Deleted").unwrap_or(false) {
        if Instant::now() > deadline {
            bail!("{env} not deleted");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Container creations since `since` per env of `repo`, from Docker's event log.
fn container_creates(since: u64, repo: &str) -> Result<BTreeMap<String, usize>> {
    let until = unix_now() + 1;
    let lines = docker(&[
        "events",
        "--since",
        &since.to_string(),
        "--until",
        &until.to_string(),
        "--filter",
        "type=container",
        "--filter",
        "event=create",
        "--format",
        "{{index .Actor.Attributes \"dev.slipway.env\"}}",
    ])?;
    let mut creates = BTreeMap::new();
    for env in lines {
        if env.starts_with(&format!("{repo}-")) {
            *creates.entry(env).or_default() += 1;
        }
    }
    Ok(creates)
}
