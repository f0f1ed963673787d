//! What a notification says: which timeline events notify (`Trigger`), and the
//! `Notification` each one renders to, the same for every sink.

use envmgr::store::{finished_run_of, EnvRecord, Event, Phase, RunStatus, TestRun};
use serde::{Deserialize, Serialize};

/// The events a sink can ask for, by the names used in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NotificationKind {
    /// The env reached Ready (with its URLs).
    #[serde(rename = "env.ready")]
    EnvReady,
    /// The env failed (with the reason).
    #[serde(rename = "env.failed")]
    EnvFailed,
    /// The env is gone.
    #[serde(rename = "env.deleted")]
    EnvDeleted,
    /// The env will be deleted soon (idle, or its TTL ends), and what keeps it.
    #[serde(rename = "env.expiring")]
    EnvExpiring,
    /// A test run passed.
    #[serde(rename = "tests.passed")]
    TestsPassed,
    /// A test run failed, timed out or could not be carried out (with the snippet).
    #[serde(rename = "tests.failed")]
    TestsFailed,
    /// A change entered the submit queue.
    #[serde(rename = "queue.added")]
    QueueAdded,
    /// The submit queue landed a change (with its commit and timings).
    #[serde(rename = "queue.merged")]
    QueueMerged,
    /// A change left the submit queue failing (with the conflict or the snippet).
    #[serde(rename = "queue.failed")]
    QueueFailed,
    /// The submit queue was paused (tree closed).
    #[serde(rename = "queue.paused")]
    QueuePaused,
    /// A rollout into a release channel began.
    #[serde(rename = "rollout.started")]
    RolloutStarted,
    /// A rollout moved to its next step (with the comparison that allowed it).
    #[serde(rename = "rollout.step")]
    RolloutStep,
    /// A rollout is held (a window, a freeze, an alert, approval, too little evidence).
    #[serde(rename = "rollout.blocked")]
    RolloutBlocked,
    /// The new version is promoted to 100% of the channel.
    #[serde(rename = "rollout.promoted")]
    RolloutPromoted,
    /// The canary was rolled back (with the numbers, a log snippet and the chart).
    #[serde(rename = "rollout.rolled_back")]
    RolloutRolledBack,
    /// The rollout finished: the channel runs the new version.
    #[serde(rename = "rollout.done")]
    RolloutDone,
}

impl NotificationKind {
    pub const ALL: [NotificationKind; 16] = [
        NotificationKind::EnvReady,
        NotificationKind::EnvFailed,
        NotificationKind::EnvDeleted,
        NotificationKind::EnvExpiring,
        NotificationKind::TestsPassed,
        NotificationKind::TestsFailed,
        NotificationKind::QueueAdded,
        NotificationKind::QueueMerged,
        NotificationKind::QueueFailed,
        NotificationKind::QueuePaused,
        NotificationKind::RolloutStarted,
        NotificationKind::RolloutStep,
        NotificationKind::RolloutBlocked,
        NotificationKind::RolloutPromoted,
        NotificationKind::RolloutRolledBack,
        NotificationKind::RolloutDone,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::EnvReady => "env.ready",
            NotificationKind::EnvFailed => "env.failed",
            NotificationKind::EnvDeleted => "env.deleted",
            NotificationKind::EnvExpiring => "env.expiring",
            NotificationKind::TestsPassed => "tests.passed",
            NotificationKind::TestsFailed => "tests.failed",
            NotificationKind::QueueAdded => "queue.added",
            NotificationKind::QueueMerged => "queue.merged",
            NotificationKind::QueueFailed => "queue.failed",
            NotificationKind::QueuePaused => "queue.paused",
            NotificationKind::RolloutStarted => "rollout.started",
            NotificationKind::RolloutStep => "rollout.step",
            NotificationKind::RolloutBlocked => "rollout.blocked",
            NotificationKind::RolloutPromoted => "rollout.promoted",
            NotificationKind::RolloutRolledBack => "rollout.rolled_back",
            NotificationKind::RolloutDone => "rollout.done",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One notification, as every sink gets it. Stored (JSON) in the outbox when it is made, so
/// every attempt sends the same thing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The timeline event it reports.
    pub event_id: i64,
    pub kind: NotificationKind,
    pub env: String,
    pub repo: String,
    /// When it happened, unix milliseconds.
    pub at: i64,
    /// One line.
    pub title: String,
    /// The body, Markdown: the URLs, the reason, or a failed run's snippet.
    pub text: String,
    /// The env's main URL (ready), or the log to read (failures, test runs).
    pub url: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub pull_request: Option<i64>,
    pub run_id: Option<i64>,
    /// A rollout's chart (PNG): linked everywhere, attached where the sink can (Discord).
    #[serde(default)]
    pub chart_url: Option<String>,
    /// The rollout it reports, for sinks that attach its chart.
    #[serde(default)]
    pub rollout_id: Option<i64>,
}

impl Notification {
    /// Redacts every text a sink shows (title, body, links) with the env's redactor.
    pub fn redact(&mut self, redactor: &envmgr::snippet::Redactor) {
        self.title = redactor.redact_text(&self.title);
        self.text = redactor.redact_text(&self.text);
        if let Some(url) = &self.url {
            self.url = Some(redactor.redact_line(&envmgr::snippet::strip_url_credentials(url)));
        }
    }
}

/// Why an event may notify: an env phase, or a finished test run (to be looked up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Env(NotificationKind),
    TestRun(i64),
    /// A submit-queue event: the event's own message says it all.
    Queue(NotificationKind),
    /// A rollout event, on its release env's timeline.
    Rollout(NotificationKind),
}

/// Which events notify; every other event is only on the timeline.
pub fn trigger_of(event: &Event) -> Option<Trigger> {
    if event.kind == "phase" {
        return match event.phase? {
            Phase::Ready => Some(Trigger::Env(NotificationKind::EnvReady)),
            Phase::Failed => Some(Trigger::Env(NotificationKind::EnvFailed)),
            Phase::Deleted => Some(Trigger::Env(NotificationKind::EnvDeleted)),
            _ => None,
        };
    }
    if event.kind == envmgr::store::EXPIRING_EVENT {
        return Some(Trigger::Env(NotificationKind::EnvExpiring));
    }
    if let Some(kind) =
        NotificationKind::parse(&event.kind).filter(|k| k.as_str().starts_with("queue."))
    {
        return Some(Trigger::Queue(kind));
    }
    if let Some(kind) =
        NotificationKind::parse(&event.kind).filter(|k| k.as_str().starts_with("rollout."))
    {
        return Some(Trigger::Rollout(kind));
    }
    finished_run_of(event).map(Trigger::TestRun)
}

/// The notification of a submit-queue event: its first line is the title ("shop#42 merged
/// as 1a2b3c4 (queued 12 min, tested 8 min)"), the rest (conflicting files, the failure
/// snippet and log link) the body. `repo` is the queue's repo.
pub fn queue_notification(kind: NotificationKind, event: &Event, repo: &str) -> Notification {
    let mut n = base(kind, event, None);
    n.repo = repo.to_string();
    let (title, rest) = event
        .message
        .split_once('\n')
        .unwrap_or((event.message.as_str(), ""));
    n.title = crate::text::truncate(title.trim(), TITLE_CHARS);
    n.text = rest.trim().to_string();
    n.url = rest
        .lines()
        .find_map(|l| l.strip_prefix("Full log: "))
        .map(str::to_string);
    n
}

/// Longest title, in characters.
const TITLE_CHARS: usize = 250;

/// The notification of an env phase event. `why_deleted` is the request that led to a
/// deletion ("down requested: ...", "time to live expired"), when known.
pub fn env_notification(
    kind: NotificationKind,
    event: &Event,
    env: Option<&EnvRecord>,
    why_deleted: Option<&str>,
    public_url: &str,
) -> Notification {
    let mut n = base(kind, event, env);
    let at = where_at(&n);
    match kind {
        NotificationKind::EnvReady => {
            n.title = format!("{} is ready{at}", event.env);
            let urls = env.map(EnvRecord::urls).unwrap_or_default();
            n.text = if urls.is_empty() {
                "No service publishes a port.".to_string()
            } else {
                urls.iter()
                    .map(|(service, url)| format!("- {service}: {url}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            n.url = env.and_then(EnvRecord::main_url);
        }
        NotificationKind::EnvExpiring => {
            // The policy wrote the whole sentence: "shop-pr-42 will be deleted in 1h: ...".
            n.title = crate::text::truncate(&event.message, TITLE_CHARS);
            n.text = event.message.clone();
        }
        NotificationKind::EnvFailed => {
            // The timeline says "<cause>: <reason>"; the reconciler's cause is "failed".
            let reason = event
                .message
                .strip_prefix("failed: ")
                .unwrap_or(&event.message);
            n.title = format!("{} failed{at}: {}", event.env, reason);
            n.text = reason.to_string();
            n.url = Some(format!("{public_url}/api/v1/envs/{}/logs", event.env));
        }
        _ => {
            n.title = format!("{} was deleted", event.env);
            n.text = match why_deleted {
                Some(why) => {
                    let why = why.strip_prefix("down requested: ").unwrap_or(why);
                    format!("Deleted: {why}.")
                }
                None => "Deleted.".to_string(),
            };
        }
    }
    n.title = one_line(&n.title, TITLE_CHARS);
    n
}

/// The notification of a finished test run: passed, or failed with its chat snippet.
pub fn run_notification(
    event: &Event,
    env: Option<&EnvRecord>,
    run: &TestRun,
    public_url: &str,
) -> Option<Notification> {
    let kind = match run.status {
        RunStatus::Passed => NotificationKind::TestsPassed,
        RunStatus::Failed | RunStatus::TimedOut | RunStatus::Error => NotificationKind::TestsFailed,
        RunStatus::Queued | RunStatus::Running => return None,
    };
    let mut n = base(kind, event, env);
    if let Some(commit) = &run.commit {
        n.commit = Some(commit.to_string());
    }
    n.run_id = Some(run.id);
    let log_url = format!("{public_url}/api/v1/envs/{}/runs/{}/log", run.env, run.id);
    let outcome = run.status.as_str().replace('_', " ");
    let at = match &n.commit {
        Some(commit) => format!(" at {}", short(commit)),
        None => String::new(),
    };
    let headline = run.headline.as_deref().filter(|h| !h.trim().is_empty());
    n.title = match headline {
        Some(headline) => format!("Tests {outcome} in {}{at}: {headline}", run.env),
        None => format!("Tests {outcome} in {}{at}", run.env),
    };
    n.title = one_line(&n.title, TITLE_CHARS);
    n.text = match (&run.snippet_chat, kind) {
        // The snippet ends with the link to the full log.
        (Some(snippet), NotificationKind::TestsFailed) if !snippet.trim().is_empty() => {
            snippet.clone()
        }
        _ => format!("{}\nFull log: {log_url}", headline.unwrap_or(&outcome)),
    };
    n.url = Some(log_url);
    Some(n)
}

fn base(kind: NotificationKind, event: &Event, env: Option<&EnvRecord>) -> Notification {
    Notification {
        event_id: event.id,
        kind,
        env: event.env.clone(),
        repo: env.map(|e| e.repo.to_string()).unwrap_or_default(),
        at: event.at,
        title: String::new(),
        text: String::new(),
        url: None,
        branch: env.map(|e| e.branch.to_string()),
        commit: env.and_then(|e| e.commit.as_ref()).map(|c| c.to_string()),
        pull_request: env
            .and_then(|e| e.pull_request.as_ref())
            .map(|pr| pr.number.as_i64()),
        run_id: None,
        chart_url: None,
        rollout_id: None,
    }
}

/// Canary log lines a rollback alert shows at most (the decision keeps 20 to 50).
const ALERT_LOG_LINES: usize = 50;

/// The notification of a rollout event. The event's message is the title (the reconciler
/// wrote the numbers into it); `rollout` is the rollout it is about, when found: a rollback
/// then carries the failing check, canary against baseline, the canary's last log lines
/// (redacted when the reconciler kept them, and again with the notification), the chart
/// and the rollout's link.
pub fn rollout_notification(
    kind: NotificationKind,
    event: &Event,
    rollout: Option<&envmgr::rollout::Rollout>,
    public_url: &str,
) -> Notification {
    let mut n = base(kind, event, None);
    let (title, rest) = event
        .message
        .split_once('\n')
        .unwrap_or((event.message.as_str(), ""));
    n.title = crate::text::truncate(title.trim(), TITLE_CHARS);
    let mut body: Vec<String> = Vec::new();
    if !rest.trim().is_empty() {
        body.push(rest.trim().to_string());
    }
    if let Some(rollout) = rollout {
        n.repo = rollout.repo.to_string();
        n.commit = Some(rollout.to_commit.to_string());
        n.rollout_id = Some(rollout.id);
        let link = format!("{public_url}/api/v1/rollouts/{}", rollout.id);
        n.url = Some(link.clone());
        if kind == NotificationKind::RolloutRolledBack {
            let chart = format!("{public_url}/api/v1/rollouts/{}/chart.png", rollout.id);
            n.chart_url = Some(chart.clone());
            if let Some(decision) = &rollout.decision {
                body.extend(decision_lines(rollout, decision));
            }
            body.push(format!("Chart: {chart}"));
        }
        body.push(format!("Rollout: {link}"));
    }
    n.text = body.join("\n");
    n
}

/// Version, channel, step and weights, the failing check with canary and baseline values
/// and the statistic, and the canary's last log lines, from a rollback's decision.
fn decision_lines(rollout: &envmgr::rollout::Rollout, decision: &serde_json::Value) -> Vec<String> {
    use serde_json::Value;
    let mut lines = Vec::new();
    let number = |key: &str| decision.get(key).and_then(Value::as_f64);
    let count = |key: &str| decision.get(key).and_then(Value::as_u64);
    lines.push(format!(
        "Version `{}` in `{}` (replacing `{}`), step {}{}.",
        rollout.to_commit.short(),
        rollout.channel,
        rollout
            .from_commit
            .as_ref()
            .map(|c| c.short().to_string())
            .unwrap_or_else(|| "-".into()),
        rollout.step + 1,
        decision
            .get("canary_weight")
            .and_then(Value::as_u64)
            .and_then(|w| u16::try_from(w).ok())
            .map(|w| {
                let canary = envmgr::rollout::model::format_weight(w);
                let stable = envmgr::rollout::model::format_weight(
                    envmgr::rollout::FULL_WEIGHT.saturating_sub(w),
                );
                format!(": weights canary {canary}, stable {stable} until the rollback")
            })
            .unwrap_or_default()
    ));
    if let Some(check) = decision.get("check").and_then(Value::as_str) {
        let (canary, baseline) = (number("canary_value"), number("baseline_value"));
        let values = match (check, canary, baseline) {
            ("errors", Some(c), Some(b)) => {
                format!("errors {:.1}% vs {:.1}%", c * 100.0, b * 100.0)
            }
            ("latency", Some(c), Some(b)) => format!("median latency {c:.0} ms vs {b:.0} ms"),
            (_, Some(c), Some(b)) => format!("{c:.4} vs {b:.4}"),
            _ => String::new(),
        };
        let requests = match (count("canary_requests"), count("baseline_requests")) {
            (Some(c), Some(b)) => format!(
                " over {} vs {} requests",
                crate::rollout::render::thousands(c),
                crate::rollout::render::thousands(b)
            ),
            _ => String::new(),
        };
        let statistic = number("statistic")
            .map(|s| format!(" (statistic {s:.2})"))
            .unwrap_or_default();
        lines.push(format!(
            "Failing check: {check}: canary vs baseline {values}{requests}{statistic}."
        ));
    }
    if let Some(why) = decision.get("why").and_then(Value::as_str) {
        lines.push(why.to_string());
    }
    let log: Vec<&str> = decision
        .get("log_lines")
        .and_then(Value::as_array)
        .map(|lines| lines.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !log.is_empty() {
        let start = log.len().saturating_sub(ALERT_LOG_LINES);
        lines.push(format!(
            "Canary log (last {} lines):\n```\n{}\n```",
            log.len() - start,
            log[start..].join("\n").replace("```", "'''")
        ));
    }
    lines
}

/// " (branch feature-x at e178d1848e82)", " (pull request #7 at ...)", or nothing.
fn where_at(n: &Notification) -> String {
    let what = match (n.pull_request, &n.branch) {
        (Some(number), _) => format!("pull request #{number}"),
        (None, Some(branch)) => format!("branch {branch}"),
        (None, None) => return String::new(),
    };
    match &n.commit {
        Some(commit) => format!(" ({what} at {})", short(commit)),
        None => format!(" ({what})"),
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The first line of `text`, at most `max` characters (an ellipsis marks a cut).
pub fn one_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or_default().trim_end();
    let cut = text.trim_end().lines().count() > 1;
    if line.chars().count() <= max && !cut {
        return line.to_string();
    }
    let kept: String = line.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envmgr::names::{BranchName, CommitSha, EnvName, RepoName};
    use envmgr::runtime::{Protocol, PublishedPort};
    use envmgr::store::{Desired, RunTrigger, ServiceStatus};
    use std::time::Duration;

    const SHA: &str = "e178d1848e82aaaabbbbccccddddeeeeffff0000";

    fn event(kind: &str, phase: Option<Phase>, message: &str) -> Event {
        Event {
            id: 42,
            env: "demo-feature-x".into(),
            at: 1_700_000_000_000,
            kind: kind.into(),
            phase,
            message: message.into(),
            actor: None,
        }
    }

    fn record(urls: &[(&str, &str)]) -> EnvRecord {
        EnvRecord {
            name: EnvName::parse("demo-feature-x").unwrap(),
            repo: RepoName::parse("demo").unwrap(),
            branch: BranchName::parse("feature-x").unwrap(),
            requested_by: "ann".into(),
            desired: Desired::Running,
            generation: 1,
            observed_generation: 1,
            ttl: Duration::from_secs(3600),
            expires_at: 0,
            created_at: 0,
            updated_at: 0,
            commit: Some(CommitSha::parse(SHA).unwrap()),
            phase: Phase::Ready,
            reason: None,
            // As the reconciler records them with a front door on `localhost:8081`: `web`
            // is the main service.
            services: urls
                .iter()
                .map(|(name, url)| ServiceStatus {
                    name: name.to_string(),
                    state: "running".into(),
                    ports: vec![PublishedPort {
                        container_port: 8080,
                        host_port: url.rsplit(':').next().unwrap().parse().unwrap(),
                        protocol: Protocol::Tcp,
                    }],
                    urls: vec![url.to_string()],
                    front_door_url: Some(if *name == "web" {
                        "http://demo-feature-x.localhost:8081/".to_string()
                    } else {
                        format!("http://{name}--demo-feature-x.localhost:8081/")
                    }),
                    address: None,
                    main: *name == "web",
                    shared: None,
                })
                .collect(),
            warnings: vec![],
            pull_request: None,
            candidate: None,
            idle: Default::default(),
            url: Some("http://demo-feature-x.localhost:8081/".into()).filter(|_| !urls.is_empty()),
        }
    }

    fn run(status: RunStatus, snippet: Option<&str>) -> TestRun {
        TestRun {
            id: 7,
            env: EnvName::parse("demo-feature-x").unwrap(),
            commit: Some(CommitSha::parse(SHA).unwrap()),
            trigger: RunTrigger::Auto,
            requested_by: "slipway".into(),
            failed_only: false,
            status,
            created_at: 0,
            started_at: Some(0),
            finished_at: Some(1),
            exit_code: Some(1),
            headline: Some("2 of 14 tests failed".into()),
            results: vec![],
            snippet_check: None,
            snippet_comment: None,
            snippet_chat: snippet.map(str::to_string),
            log_path: None,
            check_run_id: None,
            check_state: None,
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for kind in NotificationKind::ALL {
            assert_eq!(NotificationKind::parse(kind.as_str()), Some(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(NotificationKind::parse("env.up"), None);
    }

    #[test]
    fn only_ready_failed_deleted_and_finished_runs_notify() {
        let phase = |p| trigger_of(&event("phase", Some(p), "x"));
        assert_eq!(
            phase(Phase::Ready),
            Some(Trigger::Env(NotificationKind::EnvReady))
        );
        assert_eq!(
            phase(Phase::Failed),
            Some(Trigger::Env(NotificationKind::EnvFailed))
        );
        assert_eq!(
            phase(Phase::Deleted),
            Some(Trigger::Env(NotificationKind::EnvDeleted))
        );
        for quiet in [
            Phase::Pending,
            Phase::Fetching,
            Phase::Building,
            Phase::Starting,
            Phase::Deleting,
        ] {
            assert_eq!(phase(quiet), None, "{quiet:?}");
        }
        let requested = event("requested", Some(Phase::Pending), "up requested");
        assert_eq!(trigger_of(&requested), None);
        let queued = event("tests", None, "run 7: tests queued (auto)");
        assert_eq!(trigger_of(&queued), None);
        let finished = event("tests", None, "run 7: tests failed: 2 of 14 tests failed");
        assert_eq!(trigger_of(&finished), Some(Trigger::TestRun(7)));
    }

    #[test]
    fn ready_names_the_env_commit_and_every_url() {
        let env = record(&[
            ("api", "http://127.0.0.1:1001"),
            ("web", "http://127.0.0.1:1002"),
        ]);
        let ready = event(
            "phase",
            Some(Phase::Ready),
            "all services ready at e178d1848e82",
        );
        let n = env_notification(
            NotificationKind::EnvReady,
            &ready,
            Some(&env),
            None,
            "http://s",
        );
        assert_eq!(
            n.title,
            "demo-feature-x is ready (branch feature-x at e178d1848e82)"
        );
        // Front-door URLs, the main service's first; the direct ones stay in `env status`.
        assert_eq!(
            n.text,
            "- web: http://demo-feature-x.localhost:8081/\n- api: http://api--demo-feature-x.localhost:8081/"
        );
        assert_eq!(
            n.url.as_deref(),
            Some("http://demo-feature-x.localhost:8081/"),
            "the main service's"
        );
        assert_eq!((n.repo.as_str(), n.event_id), ("demo", 42));
        assert_eq!(n.commit.as_deref(), Some(SHA));
    }

    #[test]
    fn failure_carries_the_reason_and_deletion_the_request() {
        let env = record(&[]);
        let failed = event(
            "phase",
            Some(Phase::Failed),
            "failed: service `web`: privileged is refused",
        );
        let n = env_notification(
            NotificationKind::EnvFailed,
            &failed,
            Some(&env),
            None,
            "http://s",
        );
        assert_eq!(
            n.title,
            "demo-feature-x failed (branch feature-x at e178d1848e82): service `web`: privileged is refused"
        );
        assert_eq!(n.text, "service `web`: privileged is refused");
        assert_eq!(
            n.url.as_deref(),
            Some("http://s/api/v1/envs/demo-feature-x/logs")
        );

        let deleted = event("phase", Some(Phase::Deleted), "everything removed");
        let n = env_notification(
            NotificationKind::EnvDeleted,
            &deleted,
            Some(&env),
            Some("down requested: PR closed"),
            "http://s",
        );
        assert_eq!(n.title, "demo-feature-x was deleted");
        assert_eq!(n.text, "Deleted: PR closed.");
        assert_eq!(n.url, None);
    }

    #[test]
    fn failed_runs_carry_the_snippet_and_passed_runs_the_log() {
        let env = record(&[]);
        let finished = event("tests", None, "run 7: tests failed: 2 of 14 tests failed");
        let snippet = "**2 failed**\n```\nassert 1 == 2\n```\nFull log: http://s/log";
        let n = run_notification(
            &finished,
            Some(&env),
            &run(RunStatus::Failed, Some(snippet)),
            "http://s",
        )
        .unwrap();
        assert_eq!(n.kind, NotificationKind::TestsFailed);
        assert_eq!(
            n.title,
            "Tests failed in demo-feature-x at e178d1848e82: 2 of 14 tests failed"
        );
        assert_eq!(n.text, snippet);
        assert_eq!(
            n.url.as_deref(),
            Some("http://s/api/v1/envs/demo-feature-x/runs/7/log")
        );
        assert_eq!(n.run_id, Some(7));

        let timed_out = run_notification(
            &finished,
            Some(&env),
            &run(RunStatus::TimedOut, None),
            "http://s",
        )
        .unwrap();
        assert_eq!(timed_out.kind, NotificationKind::TestsFailed);
        assert!(timed_out.title.starts_with("Tests timed out in"));
        assert!(
            timed_out.text.ends_with("/runs/7/log"),
            "{}",
            timed_out.text
        );

        let mut passed = run(RunStatus::Passed, None);
        passed.headline = Some("14 tests passed".into());
        let n = run_notification(&finished, Some(&env), &passed, "http://s").unwrap();
        assert_eq!(n.kind, NotificationKind::TestsPassed);
        assert_eq!(
            n.text,
            "14 tests passed\nFull log: http://s/api/v1/envs/demo-feature-x/runs/7/log"
        );
        assert!(run_notification(
            &finished,
            Some(&env),
            &run(RunStatus::Running, None),
            "http://s"
        )
        .is_none());
    }

    #[test]
    fn titles_are_one_bounded_line() {
        assert_eq!(one_line("short", 10), "short");
        assert_eq!(one_line("first\nsecond", 50), "first…");
        let long = "é".repeat(300);
        let line = one_line(&long, 250);
        assert_eq!(line.chars().count(), 250);
        assert!(line.ends_with('…'));
    }

    #[test]
    fn a_rollback_alert_carries_the_numbers_the_log_lines_and_the_chart() {
        let old = "0123456789abcdef0123456789abcdef01234567";
        let rollout = envmgr::rollout::Rollout {
            id: 7,
            repo: RepoName::parse("shop").unwrap(),
            channel: "production".into(),
            release_env: EnvName::parse("shop-production").unwrap(),
            canary_env: EnvName::parse("shop-production-canary").unwrap(),
            from_commit: Some(CommitSha::parse(old).unwrap()),
            to_commit: CommitSha::parse(SHA).unwrap(),
            source: "queue".into(),
            state: envmgr::rollout::RolloutState::RolledBack,
            step: 0,
            canary_weight: 0,
            step_started_at: Some(1),
            reason: None,
            paused: false,
            promote_asked: false,
            rollback_asked: None,
            approved_by: None,
            approved_step: None,
            comparison: None,
            decision: Some(serde_json::json!({
                "check": "errors", "statistic": 7.3, "canary_value": 0.081,
                "baseline_value": 0.002, "canary_requests": 212, "canary_errors": 17,
                "baseline_requests": 3874, "baseline_errors": 8, "canary_weight": 50,
                "why": "the canary fails more often",
                "log_lines": ["error: GET / failed", "error: db timeout ```"],
            })),
            metric_error_since: None,
            requested_by: "queue".into(),
            created_at: 0,
            updated_at: 0,
            finished_at: Some(2),
        };
        let mut e = event(
            "rollout.rolled_back",
            None,
            "rolled back shop e178d1848e82 in production at step 1 (5%): errors 8.1% vs 0.2%",
        );
        e.env = "shop-production".into();
        let kind = trigger_of(&e);
        assert_eq!(
            kind,
            Some(Trigger::Rollout(NotificationKind::RolloutRolledBack))
        );
        let n = rollout_notification(
            NotificationKind::RolloutRolledBack,
            &e,
            Some(&rollout),
            "http://slipway:8080",
        );
        assert!(n.title.starts_with("rolled back shop"), "{}", n.title);
        assert_eq!(n.repo, "shop");
        assert_eq!(n.rollout_id, Some(7));
        assert_eq!(
            n.chart_url.as_deref(),
            Some("http://slipway:8080/api/v1/rollouts/7/chart.png")
        );
        for part in [
            "weights canary 5%, stable 95%",
            "errors 8.1% vs 0.2% over 212 vs 3,874 requests (statistic 7.30)",
            "error: GET / failed",
            "Chart: http://slipway:8080/api/v1/rollouts/7/chart.png",
            "Rollout: http://slipway:8080/api/v1/rollouts/7",
        ] {
            assert!(n.text.contains(part), "{part} not in {}", n.text);
        }
        // A log line cannot close the code block early.
        assert_eq!(n.text.matches("```").count(), 2, "{}", n.text);
    }
}
