//! `slipway env ...`: a client of the server's HTTP API. Human output by default, `--json`
//! for scripts; long waits print progress (phase changes, per-service states) on stderr.

mod client;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use envmgr::engine::EnvStatus;
use envmgr::store::{now_ms, Desired, EnvRecord, Event, Phase, RunStatus, TestRun};
use serde_json::json;

use client::{encode, Client};

#[derive(Args)]
pub struct ClientArgs {
    /// The Slipway server to talk to.
    #[arg(
        long,
        env = "SLIPWAY_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub enum EnvCommand {
    /// Create an environment for a branch, or move it to the branch's newest commit.
    Up {
        branch: String,
        /// The repo (as named in the server's config); optional when it serves one repo.
        #[arg(long)]
        repo: Option<String>,
        /// How long the env lives, e.g. 2h (default: the repo's default_ttl).
        #[arg(long)]
        ttl: Option<String>,
        /// Wait until the env is Ready (exit 0) or Failed (exit 1), showing progress.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this long.
        #[arg(long, default_value = "15m")]
        timeout: humantime::Duration,
    },
    /// List environments.
    List {
        /// Include deleted environments.
        #[arg(long)]
        all: bool,
    },
    /// Phase, reason, services with their state and URLs, and recent events.
    Status { env: String },
    /// Print the output of an environment's services.
    Logs {
        env: String,
        /// Only this service.
        service: Option<String>,
        /// Only the last N lines of each service.
        #[arg(long)]
        tail: Option<u64>,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
    },
    /// Delete an environment: its containers, network and volumes.
    Down {
        env: String,
        /// Wait until everything is removed.
        #[arg(long)]
        wait: bool,
        #[arg(long, default_value = "5m")]
        timeout: humantime::Duration,
    },
}

#[derive(Args)]
pub struct TestArgs {
    /// The environment whose tests to run.
    env: String,
    /// Run only the tests that failed last time (the suite reads SLIPWAY_FAILED_TESTS).
    #[arg(long)]
    failed: bool,
    /// Wait for the outcome, showing progress; exit 0 only if the tests passed.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this long.
    #[arg(long, default_value = "1h")]
    timeout: humantime::Duration,
}

/// `slipway test <env>`: starts a run, and with `--wait` follows it to its outcome.
pub async fn test(args: ClientArgs, test: TestArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let path = format!("/envs/{}/runs", encode(&test.env));
    let run: TestRun = client
        .post(&path, &json!({ "failed_only": test.failed }))
        .await?;
    if !test.wait {
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&run_json(&run, &client.log_url(&test.env, run.id)))?
            );
        } else {
            println!("test run {} of {} queued; follow it with `slipway test {} --wait` or `slipway env status {}`", run.id, test.env, test.env, test.env);
        }
        return Ok(());
    }
    let began = Instant::now();
    let mut last_status = None;
    let run = loop {
        let run: TestRun = client.get(&format!("{path}/{}", run.id)).await?;
        if last_status != Some(run.status) && !args.json {
            eprintln!(
                "[{:>5.1}s] run {} {}",
                began.elapsed().as_secs_f64(),
                run.id,
                run.status.as_str().replace('_', " ")
            );
            last_status = Some(run.status);
        }
        if run.status.is_finished() {
            break run;
        }
        if began.elapsed() > Duration::from(test.timeout) {
            bail!(
                "test run {} is still {} after {}; it keeps going: `slipway env status {}`",
                run.id,
                run.status.as_str(),
                test.timeout,
                test.env
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log_url = client.log_url(&test.env, run.id);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run_json(&run, &log_url))?
        );
    } else {
        print_run(&run, &log_url);
    }
    if run.status != RunStatus::Passed {
        bail!(
            "tests {}: {}",
            run.status.as_str().replace('_', " "),
            run.headline.clone().unwrap_or_default()
        );
    }
    Ok(())
}

/// The machine-readable outcome of a run.
fn run_json(run: &TestRun, log_url: &str) -> serde_json::Value {
    let failed: Vec<&str> = run.failed_tests().map(|t| t.name.as_str()).collect();
    json!({
        "id": run.id,
        "env": run.env,
        "status": run.status,
        "commit": run.commit,
        "duration_ms": run.duration_ms(),
        "headline": run.headline,
        "exit_code": run.exit_code,
        "failed_tests": failed,
        "results": run.results,
        "snippet": run.snippet_comment,
        "log_url": log_url,
    })
}

fn print_run(run: &TestRun, log_url: &str) {
    let duration = run
        .duration_ms()
        .map(|ms| format!(" in {}", short_duration(ms)))
        .unwrap_or_default();
    println!(
        "run {}: {}{duration}: {}",
        run.id,
        run.status.as_str().replace('_', " "),
        run.headline.clone().unwrap_or_default()
    );
    if let Some(snippet) = &run.snippet_comment {
        println!("\n{snippet}\n");
    }
    println!("full log: {log_url}");
}

pub async fn run(args: ClientArgs, command: EnvCommand) -> anyhow::Result<()> {
    let client = Client::new(&args.server)?;
    let json = args.json;
    match command {
        EnvCommand::Up {
            branch,
            repo,
            ttl,
            wait,
            timeout,
        } => {
            let body = json!({ "repo": repo, "branch": branch, "ttl": ttl });
            let record: EnvRecord = client.post("/envs", &body).await?;
            if !wait {
                return print_requested(&record, json);
            }
            let done = wait_for(&client, &record, timeout.into(), json, |r| {
                r.observed_generation >= record.generation
                    && matches!(r.phase, Phase::Ready | Phase::Failed)
            })
            .await?;
            print_outcome(&done, json)
        }
        EnvCommand::List { all } => {
            let envs: Vec<EnvRecord> = client.get(&format!("/envs?all={all}")).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&envs)?);
            } else {
                print_table(&envs);
            }
            Ok(())
        }
        EnvCommand::Status { env } => {
            let status: EnvStatus = client.get(&format!("/envs/{}", encode(&env))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(())
        }
        EnvCommand::Logs {
            env,
            service,
            tail,
            follow,
        } => {
            let mut query = format!("follow={follow}");
            if let Some(service) = service {
                query.push_str(&format!("&service={}", encode(&service)));
            }
            if let Some(tail) = tail {
                query.push_str(&format!("&tail={tail}"));
            }
            let mut response = client
                .stream(&format!("/envs/{}/logs?{query}", encode(&env)))
                .await?;
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = response.chunk().await.context("the log stream broke off")? {
                stdout.write_all(&chunk)?;
                stdout.flush()?;
            }
            Ok(())
        }
        EnvCommand::Down { env, wait, timeout } => {
            let record: EnvRecord = client.delete(&format!("/envs/{}", encode(&env))).await?;
            if !wait {
                if json {
                    println!("{}", serde_json::to_string_pretty(&record)?);
                } else {
                    println!("{} is being deleted", record.name);
                }
                return Ok(());
            }
            let done = wait_for(&client, &record, timeout.into(), json, |r| {
                r.phase == Phase::Deleted
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            } else {
                println!("{} deleted", done.name);
            }
            Ok(())
        }
    }
}

fn print_requested(record: &EnvRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(record)?);
    } else {
        println!(
            "{} requested (repo {}, branch {}); follow it with `slipway env status {}`",
            record.name, record.repo, record.branch, record.name
        );
    }
    Ok(())
}

fn print_outcome(record: &EnvRecord, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(record)?);
    }
    if record.phase == Phase::Failed {
        bail!(
            "{} failed: {}",
            record.name,
            record.reason.as_deref().unwrap_or("no reason recorded")
        );
    }
    if !json {
        let commit = record
            .commit
            .as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_default();
        println!(
            "{} is Ready (branch {}, commit {commit})",
            record.name, record.branch
        );
        for (service, url) in record.urls() {
            println!("  {service:<12} {url}");
        }
    }
    Ok(())
}

/// Polls the env until `done`, printing its new events and service states on stderr.
async fn wait_for(
    client: &Client,
    start: &EnvRecord,
    timeout: Duration,
    json: bool,
    done: impl Fn(&EnvRecord) -> bool,
) -> anyhow::Result<EnvRecord> {
    let show = !json;
    let colour_free_prefix = |since: Instant| format!("[{:>5.1}s]", since.elapsed().as_secs_f64());
    let began = Instant::now();
    let path = format!("/envs/{}", encode(start.name.as_str()));
    let mut last_event = latest_event_before(client, &path).await?;
    let mut service_states: BTreeMap<String, String> = BTreeMap::new();
    let interactive = std::io::stderr().is_terminal();
    loop {
        let record: EnvRecord = client.get(&path).await?;
        let events: Vec<Event> = client
            .get(&format!("{path}/events?after={last_event}"))
            .await?;
        for event in &events {
            last_event = event.id;
            if show {
                let phase = event.phase.map(|p| p.as_str()).unwrap_or("");
                eprintln!("{} {phase:<9} {}", colour_free_prefix(began), event.message);
            }
        }
        for service in &record.services {
            if service_states.get(&service.name) != Some(&service.state) {
                if show {
                    eprintln!(
                        "{}   {:<12} {}",
                        colour_free_prefix(began),
                        service.name,
                        service.state
                    );
                }
                service_states.insert(service.name.clone(), service.state.clone());
            }
        }
        if done(&record) {
            return Ok(record);
        }
        if record.desired == Desired::Deleted && start.desired == Desired::Running {
            bail!("{} was deleted while waiting for it", record.name);
        }
        if began.elapsed() > timeout {
            bail!(
                "{} is still {} after {}; it keeps going in the background: `slipway env status {}`",
                record.name,
                record.phase.as_str(),
                humantime::format_duration(Duration::from_secs(timeout.as_secs())),
                record.name
            );
        }
        tokio::time::sleep(if interactive {
            Duration::from_millis(250)
        } else {
            Duration::from_millis(200)
        })
        .await;
    }
}

/// Events up to the request are history; only later ones are progress.
async fn latest_event_before(client: &Client, path: &str) -> anyhow::Result<i64> {
    let status: EnvStatus = client.get(path).await?;
    let requested = status
        .events
        .iter()
        .rev()
        .find(|e| e.kind == "requested")
        .map(|e| e.id - 1);
    Ok(requested.unwrap_or_else(|| status.events.last().map(|e| e.id).unwrap_or(0)))
}

fn print_table(envs: &[EnvRecord]) {
    if envs.is_empty() {
        println!("no environments; create one with `slipway env up <branch>`");
        return;
    }
    let now = now_ms();
    let rows: Vec<[String; 7]> = envs
        .iter()
        .map(|e| {
            [
                e.name.to_string(),
                e.repo.to_string(),
                e.branch.to_string(),
                e.commit
                    .as_ref()
                    .map(|c| c.short().to_string())
                    .unwrap_or_else(|| "-".into()),
                e.phase.as_str().to_string(),
                short_duration(now - e.created_at),
                if e.phase == Phase::Deleted {
                    "-".into()
                } else {
                    format!("in {}", short_duration(e.expires_at - now))
                },
            ]
        })
        .collect();
    let header = [
        "NAME", "REPO", "BRANCH", "COMMIT", "PHASE", "AGE", "EXPIRES",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
}

fn print_status(status: &EnvStatus) {
    let e = &status.env;
    let now = now_ms();
    println!("env:       {}", e.name);
    let commit = e
        .commit
        .as_ref()
        .map(|c| c.short().to_string())
        .unwrap_or_else(|| "not fetched yet".into());
    println!(
        "repo:      {} (branch {}, commit {commit})",
        e.repo, e.branch
    );
    println!("phase:     {}", e.phase.as_str());
    if let Some(reason) = &e.reason {
        println!("reason:    {reason}");
    }
    println!(
        "requested: by {}, {} ago",
        e.requested_by,
        short_duration(now - e.created_at)
    );
    if e.phase != Phase::Deleted {
        println!("expires:   in {}", short_duration(e.expires_at - now));
    }
    if !e.services.is_empty() {
        println!("services:");
        for s in &e.services {
            println!("  {:<12} {:<22} {}", s.name, s.state, s.urls.join(" "));
        }
    }
    if !e.warnings.is_empty() {
        println!("not applied from the compose file:");
        for w in &e.warnings {
            println!("  - {w}");
        }
    }
    if let Some(run) = &status.latest_run {
        let when = run.finished_at.or(run.started_at).unwrap_or(run.created_at);
        println!(
            "tests:     run {} {} ({} ago){}",
            run.id,
            run.status.as_str().replace('_', " "),
            short_duration(now - when),
            run.headline
                .as_ref()
                .map(|h| format!(": {h}"))
                .unwrap_or_default()
        );
    }
    if !status.events.is_empty() {
        println!("recent events:");
        for ev in &status.events {
            let phase = ev.phase.map(|p| p.as_str()).unwrap_or("");
            println!(
                "  {:>8} ago  {phase:<9} {}",
                short_duration(now - ev.at),
                ev.message
            );
        }
    }
}

/// "3h 12m", "45s": the two largest units, which is all a person reads.
fn short_duration(ms: i64) -> String {
    let secs = (ms.max(0) / 1000) as u64;
    let units = [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)];
    let mut parts = Vec::new();
    let mut rest = secs;
    for (name, size) in units {
        if rest >= size || (parts.is_empty() && size == 1) {
            parts.push(format!("{}{name}", rest / size));
            rest %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::short_duration;

    #[test]
    fn durations_read_well() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(45_000), "45s");
        assert_eq!(short_duration(3_723_000), "1h 2m");
        assert_eq!(short_duration(-5), "0s");
    }
}
