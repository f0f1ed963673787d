//! `slipway <command>`: the command-line client. The words after `slipway` are a command of
//! the grammar (`crate::commands`), parsed here first so that a mistake is explained without
//! a server, then sent as words to the server's `POST /api/v1/commands`, which parses and
//! runs them as it does for every other surface. The CLI's own flags (`--json`, `--wait`,
//! `--follow`, ...; see [`flags`]) only change how the outcome is shown: `--wait` follows
//! a change to its end with progress on stderr, `env logs --follow` streams.

mod client;
mod flags;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use envmgr::engine::EnvStatus;
use envmgr::store::{now_ms, Desired, EnvRecord, Event, Phase, RunStatus, TestRun};
use serde::Serialize;
use serde_json::json;

use crate::commands::{help_reply, Command, CommandKind};
use crate::executor::{CommandError, Outcome};
use client::{encode, Client};
use flags::Flags;

/// How commands are written on the command line, in help and in errors.
const PREFIX: &str = "slipway ";

/// A command line that is wrong before anything ran; exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// A command line, parsed.
#[derive(Debug)]
struct Prepared {
    command: Command,
    /// The grammar's words, as typed: what the server is sent.
    words: Vec<String>,
    flags: Flags,
}

/// Splits off the CLI's flags and parses the rest with the grammar; `--help` turns the
/// line into `help <command>`.
fn prepare(args: &[String]) -> Result<Prepared, UsageError> {
    let (flags, mut words) = flags::split(args)?;
    if flags.help {
        words = flags::help_words(&words);
    }
    let command =
        Command::from_cli_args(&words).map_err(|e| UsageError(terminal(&e.reply_for(PREFIX))))?;
    if !flags.help {
        flags.check(command.kind())?;
    }
    Ok(Prepared {
        command,
        words,
        flags,
    })
}

/// `slipway <args>`: parses, runs and shows one command.
pub async fn run(args: &[String]) -> anyhow::Result<()> {
    let Prepared {
        command,
        words,
        flags,
    } = prepare(args)?;
    if let Command::Help { topic } = &command {
        return print_help(topic.as_deref(), flags.json);
    }
    let client = Client::new(&server(&flags))?;
    if let Command::EnvLogs { env, service, tail } = command {
        if flags.follow {
            return follow_logs(&client, env, service, tail).await;
        }
    }
    match client.command(&words).await? {
        // Answered above without the server; shown the same way should a server send it.
        Outcome::Help { text } => {
            if flags.json {
                print_json(&json!({ "text": text }))?;
            } else {
                println!("{}", terminal(&text));
            }
        }
        Outcome::WhoAmI(who) => {
            if flags.json {
                print_json(&who)?;
            } else {
                println!("who:     {}", who.who);
                println!("role:    {}", who.role);
                println!("may run: {}", who.may_run.join(", "));
            }
        }
        Outcome::EnvUp { env } => {
            if !flags.wait {
                return print_requested(&env, flags.json);
            }
            let timeout = flags.timeout.unwrap_or(Duration::from_secs(15 * 60));
            let done = wait_for(&client, &env, timeout, flags.json, |r| {
                r.observed_generation >= env.generation
                    && matches!(r.phase, Phase::Ready | Phase::Failed)
            })
            .await?;
            print_outcome(&done, flags.json)?;
        }
        Outcome::EnvDown { env } => {
            let record = if flags.wait {
                let timeout = flags.timeout.unwrap_or(Duration::from_secs(5 * 60));
                wait_for(&client, &env, timeout, flags.json, |r| {
                    r.phase == Phase::Deleted
                })
                .await?
            } else {
                env
            };
            if flags.json {
                print_json(&record)?;
            } else if flags.wait {
                println!("{} deleted", record.name);
            } else {
                println!("{} is being deleted", record.name);
            }
        }
        Outcome::EnvList { envs } => {
            if flags.json {
                print_json(&envs)?;
            } else {
                print_table(&envs);
            }
        }
        Outcome::EnvStatus { status } => {
            if flags.json {
                print_json(&status)?;
            } else {
                print_status(&status);
            }
        }
        Outcome::EnvLogs(logs) => {
            if flags.json {
                print_json(&logs)?;
            } else {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(logs.text.as_bytes())?;
                stdout.flush()?;
                if logs.truncated {
                    eprintln!(
                        "note: older output was left out; narrow it with --service or --tail, \
                         or stream everything with --follow"
                    );
                }
            }
        }
        Outcome::EnvIdle { action, env } => {
            if flags.json {
                print_json(&env)?;
            } else {
                println!("{} {}", env.name, action.reply());
            }
        }
        Outcome::EnvExtend { env } => {
            if flags.json {
                print_json(&env)?;
            } else {
                println!(
                    "{} now expires in {}{}",
                    env.name,
                    short_duration(env.expires_at - now_ms()),
                    envmgr::engine::extend_cap_note(env.expires_at)
                );
            }
        }
        Outcome::Test { run } => test(&client, run, &flags).await?,
        outcome @ (Outcome::QueueAdd { .. }
        | Outcome::QueueRemove { .. }
        | Outcome::QueueRetry { .. }
        | Outcome::QueueStatus { .. }) => {
            if flags.json {
                if let Outcome::QueueAdd { entry }
                | Outcome::QueueRemove { entry }
                | Outcome::QueueRetry { entry }
                | Outcome::QueueStatus { entry } = &outcome
                {
                    print_json(entry)?;
                }
            } else {
                let text = crate::queue::render::markdown(&outcome).unwrap_or_default();
                // Names read plainly in a terminal; code spans are for chat and comments.
                println!("{}", terminal(&text).replace('`', ""));
            }
        }
        Outcome::QueueList {
            queues,
            mut entries,
        } => {
            if flags.json {
                // Newest state last.
                entries.sort_by_key(|e| (e.since, e.id));
                print_json(&entries)?;
            } else {
                print!("{}", crate::queue::render::table(&queues, &entries));
            }
        }
        Outcome::QueuePaused { queue } => {
            if flags.json {
                print_json(&queue)?;
            } else {
                let line = crate::queue::render::queue_line(&queue);
                println!("{}", terminal(&line).replace('`', ""));
            }
        }
        outcome @ (Outcome::Release { .. }
        | Outcome::RolloutStatus { .. }
        | Outcome::RolloutAction { .. }
        | Outcome::ChannelFrozen { .. }) => {
            if flags.json {
                match &outcome {
                    Outcome::Release { rollout } | Outcome::RolloutAction { rollout, .. } => {
                        print_json(rollout)?
                    }
                    Outcome::RolloutStatus { status } => print_json(status)?,
                    Outcome::ChannelFrozen { channels } => print_json(channels)?,
                    _ => unreachable!("matched above"),
                }
            } else {
                let text = crate::rollout::render::markdown(&outcome).unwrap_or_default();
                println!("{}", terminal(&text).replace('`', ""));
            }
        }
    }
    Ok(())
}

/// `--server`, else `SLIPWAY_SERVER`, else the local default.
fn server(flags: &Flags) -> String {
    flags
        .server
        .clone()
        .or_else(|| {
            std::env::var("SLIPWAY_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| flags::DEFAULT_SERVER.to_owned())
}

/// The grammar's help (or one command's), then the CLI's own flags.
pub fn help_text(topic: Option<&str>) -> String {
    let grammar = help_reply(topic, PREFIX);
    format!(
        "{}\n\n{}",
        terminal(&grammar),
        flags::help_section(topic.and_then(CommandKind::from_name))
    )
}

fn print_help(topic: Option<&str>, json: bool) -> anyhow::Result<()> {
    let text = help_text(topic);
    if json {
        print_json(&json!({ "text": text }))
    } else {
        print!("{text}");
        Ok(())
    }
}

/// The grammar's help and errors are Markdown; on a terminal the bold markers are noise.
fn terminal(markdown: &str) -> String {
    markdown.replace("**", "").trim_end().to_owned()
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `env logs --follow`: a stream, so not a one-shot command; read from the logs endpoint.
async fn follow_logs(
    client: &Client,
    env: Option<String>,
    service: Option<String>,
    tail: Option<u64>,
) -> anyhow::Result<()> {
    let env = env.ok_or_else(|| {
        UsageError(
            CommandError::Missing {
                command: CommandKind::EnvLogs,
                what: "the environment".into(),
                prefix: PREFIX,
            }
            .to_string(),
        )
    })?;
    let mut query = String::from("follow=true");
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

/// `slipway test <env>`: the run is queued; with `--wait` it is followed to its outcome.
async fn test(client: &Client, run: TestRun, flags: &Flags) -> anyhow::Result<()> {
    let env = run.env.clone();
    if !flags.wait {
        if flags.json {
            print_json(&run_json(&run, &client.log_url(env.as_str(), run.id)))?;
        } else {
            println!("test run {} of {env} queued; follow it with `slipway test {env} --wait` or `slipway env status {env}`", run.id);
        }
        return Ok(());
    }
    let timeout = flags.timeout.unwrap_or(Duration::from_secs(60 * 60));
    let path = format!("/envs/{}/runs/{}", encode(env.as_str()), run.id);
    let began = Instant::now();
    let mut last_status = None;
    let run = loop {
        let run: TestRun = client.get(&path).await?;
        if last_status != Some(run.status) && !flags.json {
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
        if began.elapsed() > timeout {
            bail!(
                "test run {} is still {} after {}; it keeps going: `slipway env status {env}`",
                run.id,
                run.status.as_str(),
                whole_seconds(timeout),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let log_url = client.log_url(env.as_str(), run.id);
    if flags.json {
        print_json(&run_json(&run, &log_url))?;
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

/// "15m", not "15m 0s 13ms".
fn whole_seconds(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(duration.as_secs()))
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

fn print_requested(record: &EnvRecord, json: bool) -> anyhow::Result<()> {
    if json {
        print_json(record)?;
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
        print_json(record)?;
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
                whole_seconds(timeout),
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
    let rows: Vec<[String; 8]> = envs
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
                // Why it still exists: how long nobody used it, and whether it is pinned.
                if e.phase == Phase::Deleted {
                    "-".into()
                } else {
                    let idle = e.idle.idle_for(e.created_at, now).as_millis() as i64;
                    let pinned = if e.idle.pinned { " (pinned)" } else { "" };
                    format!("{}{pinned}", short_duration(idle))
                },
                if e.phase == Phase::Deleted {
                    "-".into()
                } else if e.name.is_shared_of(&e.repo) {
                    // The repo's shared env has no TTL: it goes with `env down`.
                    "never".into()
                } else {
                    format!("in {}", short_duration(e.expires_at - now))
                },
            ]
        })
        .collect();
    let header = [
        "NAME", "REPO", "BRANCH", "COMMIT", "PHASE", "AGE", "IDLE", "EXPIRES",
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

/// The idle signals, each with how long ago, and the idle time they add up to.
fn print_idle(status: &EnvStatus, now: i64) {
    let idle = &status.env.idle;
    let ago = |at: Option<i64>| match at {
        Some(at) => format!("{} ago", short_duration(now - at)),
        None => "never".to_string(),
    };
    let mut notes = Vec::new();
    if idle.pinned {
        notes.push("pinned".to_string());
    }
    if status.env.phase == Phase::Sleeping {
        notes.push(format!("sleeping since {}", ago(idle.slept_at)));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    println!("idle:      {}{notes}", short_duration(status.idle_ms));
    println!("  last deploy:  {}", ago(idle.last_deploy_at));
    println!("  last command: {}", ago(idle.last_command_at));
    println!("  last request: {}", ago(idle.last_request_at));
    if let Some(gone_at) = idle.branch_gone_at {
        let keeps = if idle.pinned {
            "kept: pinned"
        } else {
            "deleted after its warning unless it comes back (`env pin` keeps it)"
        };
        println!(
            "branch:    {} gone for {} ({keeps})",
            status.env.branch,
            short_duration(now - gone_at)
        );
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
    if e.phase == Phase::Deleted {
    } else if e.name.is_shared_of(&e.repo) {
        // The repo's shared env has no TTL to speak of: it goes with `env down`.
        println!("expires:   never (the repo's shared env; `env down` once no env uses it)");
    } else {
        println!("expires:   in {}", short_duration(e.expires_at - now));
    }
    if e.phase != Phase::Deleted {
        print_idle(status, now);
    }
    if !e.services.is_empty() {
        println!("services:");
        for s in &e.services {
            // The front-door URL is the one to open; the host ports stay for raw TCP.
            let shown = match (&s.shared, &s.front_door_url) {
                (Some(from), _) => format!("shared, from {}", from.env),
                (None, Some(front_door)) if s.urls.is_empty() => front_door.clone(),
                (None, Some(front_door)) => {
                    format!("{front_door}  (direct: {})", s.urls.join(" "))
                }
                (None, None) => s.urls.join(" "),
            };
            println!("  {:<12} {:<22} {shown}", s.name, s.state);
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
    use super::*;

    fn prepared(line: &str) -> Result<Prepared, UsageError> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        prepare(&args)
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(short_duration(0), "0s");
        assert_eq!(short_duration(45_000), "45s");
        assert_eq!(short_duration(3_723_000), "1h 2m");
        assert_eq!(short_duration(-5), "0s");
    }

    #[test]
    fn the_words_left_after_the_flags_are_parsed_and_sent() {
        let p = prepared("env list --json --all").unwrap();
        assert_eq!(p.command, Command::EnvList { all: true });
        assert_eq!(p.words, ["env", "list", "--all"]);
        assert!(p.flags.json);

        let p = prepared("env up feature-x --repo demo --wait --timeout 3m").unwrap();
        assert_eq!(
            p.command,
            Command::EnvUp {
                branch: Some("feature-x".into()),
                repo: Some("demo".into()),
                ttl: None
            }
        );
        assert_eq!(p.words, ["env", "up", "feature-x", "--repo", "demo"]);
        assert!(p.flags.wait);
    }

    #[test]
    fn a_typo_gets_the_grammars_did_you_mean_and_usage() {
        let error = prepared("env lst --json").unwrap_err().0;
        let mut lines = error.lines();
        assert_eq!(
            lines.next(),
            Some("Unknown command `env lst`. Did you mean `env list`?")
        );
        assert!(
            error.contains("Usage: `slipway env list [--all]`"),
            "{error}"
        );

        let error = prepared("env up x --ttl forever").unwrap_err().0;
        assert!(
            error.starts_with("Invalid value `forever` for `ttl`"),
            "{error}"
        );
        assert!(error.contains("slipway env up"), "{error}");
    }

    #[test]
    fn cli_flags_are_checked_against_the_command() {
        let error = prepared("env status x --wait").unwrap_err().0;
        assert!(error.contains("not `env status`"), "{error}");
        assert!(prepared("env logs x -f").unwrap().flags.follow);
    }

    #[test]
    fn help_flags_become_the_help_command() {
        for (line, topic) in [
            ("env up feature-x --help", Some("env up")),
            ("env -h", Some("env")),
            ("whoami --help", Some("whoami")),
            ("help env down", Some("env down")),
            ("help", None),
        ] {
            let p = prepared(line).unwrap();
            assert_eq!(
                p.command,
                Command::Help {
                    topic: topic.map(str::to_owned)
                },
                "{line}"
            );
        }
        let error = prepared("env lts --help").unwrap_err().0;
        assert!(error.contains("Did you mean `env list`?"), "{error}");
    }

    #[test]
    fn help_is_the_grammars_with_the_cli_flags() {
        let text = help_text(Some("env logs"));
        // No pull request on the command line: the env is required.
        assert!(
            text.starts_with("`slipway env logs <env> [--service <service>]"),
            "{text}"
        );
        assert!(text.contains("--follow"), "{text}");
        let all = help_text(None);
        assert!(all.starts_with("Slipway commands\n"), "{all}");
        for kind in CommandKind::ALL {
            let usage = kind.usage_on(crate::commands::Syntax::Cli);
            let listed = all.contains(&format!("`slipway {usage}"));
            assert_eq!(listed, kind != CommandKind::Approve, "{kind:?}: {all}");
        }
    }
}
