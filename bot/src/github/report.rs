//! Mirrors each PR env's state to GitHub: one sticky comment (found again by a hidden
//! marker, edited in place), a deployment per env commit with statuses, and the commit
//! status `slipway/env`. Level-triggered and idempotent: what was last posted is stored, and
//! only differences are sent, so a repeated report never duplicates anything; one replica
//! at a time reports a PR (the `pr` controller), so two never both create its comment.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context as _;
use envmgr::controller::{Action, Nudger, Reconciler, Work};
use envmgr::names::{PrNumber, RepoName};
use envmgr::reconciler::{DeletionReason, DeletionWarning};
use envmgr::store::{
    now_ms, EnvRecord, Phase, PullRow, PullState, RunStatus, Store, TestResult, TestRun,
};
use tokio::sync::broadcast::error::RecvError;

use super::forge::{truncate, CheckRun, DeploymentState, ForgeError, StatusState};
use super::GitHubSurface;

/// Hidden in the sticky comment so it can be found again.
pub const MARKER: &str = "<!-- slipway:env -->";
pub const STATUS_CONTEXT: &str = "slipway/env";
pub const TESTS_CONTEXT: &str = "slipway/tests";

/// The lease kind and metrics label of PR reports; keys are `repo#number` (see [`key`]).
pub const KIND: &str = "pr";
/// How long a burst of env changes (a deploy's progress) is gathered before nudging.
const COALESCE: Duration = Duration::from_millis(100);

/// The key of a PR's report: `<repo>#<number>`, with the configured repo's name.
pub fn key(repo: &RepoName, number: PrNumber) -> String {
    format!("{repo}#{number}")
}

fn parse_key(key: &str) -> Option<(RepoName, PrNumber)> {
    let (repo, number) = key.rsplit_once('#')?;
    let number = PrNumber::new(number.parse().ok()?).ok()?;
    Some((RepoName::parse(repo).ok()?, number))
}

/// The reports controller: one replica at a time brings a PR's comment, deployment, commit
/// status and check run in line with its env, under the PR's lease, writing what it posted
/// through the fenced store. Nudged when a delivery or the sweep touches the PR and when
/// its env changes; the resync revisits every open PR and every live PR env.
pub(super) struct PullReports {
    surface: Arc<GitHubSurface>,
}

impl PullReports {
    pub fn new(surface: Arc<GitHubSurface>) -> Self {
        PullReports { surface }
    }
}

#[async_trait::async_trait]
impl Reconciler for PullReports {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let surface = &self.surface;
        let mut keys = Vec::new();
        for link in &surface.links {
            for pull in surface.store.open_pulls(&link.repo).await? {
                keys.push(key(&pull.repo, pull.number));
            }
        }
        // A closed PR's env still going away is reported until it is gone.
        for env in surface.store.list(false).await? {
            if let Some(pr) = &env.pull_request {
                if surface.link_for_repo(&env.repo).is_some() {
                    keys.push(key(&env.repo, pr.number));
                }
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let Some((repo, number)) = parse_key(key) else {
            tracing::warn!(key, "ignoring a malformed pull request key");
            return Ok(Action::AwaitChange);
        };
        self.surface
            .report_pull(work.store(), &repo, number)
            .await
            .with_context(|| format!("could not report pull request {key} to GitHub"))?;
        Ok(Action::AwaitChange)
    }
}

/// Nudges the report of every PR whose env changed in this process (the env controller
/// runs here); the nudge reaches the replica that holds the PR, wherever it is.
pub(super) async fn nudge_on_env_changes(surface: Arc<GitHubSurface>, reports: Nudger) {
    let mut changes = surface.store.subscribe();
    loop {
        let env = match changes.recv().await {
            Ok(env) => env,
            Err(RecvError::Lagged(_)) => {
                // Missed some: every open PR is looked at (the resync would, later).
                for link in &surface.links {
                    if let Ok(pulls) = surface.store.open_pulls(&link.repo).await {
                        for pull in pulls {
                            reports.nudge(&key(&pull.repo, pull.number));
                        }
                    }
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        // Coalesce a burst of changes (a deploy's progress) into one nudge per env.
        tokio::time::sleep(COALESCE).await;
        let mut envs = vec![env];
        while let Ok(more) = changes.try_recv() {
            if !envs.contains(&more) {
                envs.push(more);
            }
        }
        for env in envs {
            match surface.store.pull_for_env(&env).await {
                Ok(Some(pull)) => reports.nudge(&key(&pull.repo, pull.number)),
                Ok(None) => {}
                Err(e) => tracing::warn!(env = %env, error = %e, "cannot read pull requests"),
            }
        }
    }
}

impl GitHubSurface {
    /// Brings the PR's comment, deployment and commit status in line with its env; what
    /// was posted is recorded through `store` (fenced by the PR's lease).
    async fn report_pull(
        &self,
        store: &Store,
        repo: &RepoName,
        number: PrNumber,
    ) -> anyhow::Result<()> {
        let Some(pull) = store.get_pull(repo, number).await? else {
            return Ok(());
        };
        let Some(link) = self.link_for_repo(repo) else {
            return Ok(());
        };
        let env = self.app.engine.get(&pull.env).await.ok();
        // The env of this PR only: an env left from another source with this name is not ours.
        let env = env.filter(|e| e.pull_request.is_some());

        // The tests of the PR's current head only, their texts redacted like the env's
        // (which `engine.get` redacts): comment, status, deployment and check run are all
        // made from these two.
        let run = match &env {
            Some(env) => match store.runs(&env.name, 1).await?.into_iter().next() {
                Some(run) => Some(self.app.engine.redactors().run(env, run).await),
                None => None,
            },
            None => None,
        }
        .filter(|r| r.commit.as_ref() == Some(&pull.head_sha));
        let mut body = render_comment(
            &pull,
            env.as_ref(),
            run.as_ref(),
            &self.app.public_url,
            link.draft_envs,
        );
        if let Some(line) = crate::queue::sticky_line(&self.app, &link.repo, number).await {
            body.push_str(&format!("\n\n{line}\n"));
        }
        let warned = env
            .as_ref()
            .and_then(|env| Some((env, self.app.engine.deletion_warning(env)?)));
        if let Some((_, warning)) = warned {
            body.push_str(&format!("\n\n{}\n", deletion_line(warning)));
        }
        // The countdown to the expiry alone does not make an edit: it changes every minute.
        if pull
            .comment_body
            .as_deref()
            .is_none_or(|posted| without_countdown(posted) != without_countdown(&body))
        {
            self.post_comment(store, &pull, &body).await?;
        }
        if let Some((env, warning)) = warned {
            self.warn_of_deletion(store, &pull, env, warning).await?;
        }
        if let Some(env) = &env {
            self.report_deployment(store, &pull, env).await?;
        }
        self.report_status(store, &pull, env.as_ref()).await?;
        if let Some(run) = &run {
            self.report_tests(store, &pull, run).await?;
        }
        Ok(())
    }

    /// Edits the sticky comment, finding it by its marker when its id is not known yet, and
    /// creating it only when there is none.
    async fn post_comment(&self, store: &Store, pull: &PullRow, body: &str) -> anyhow::Result<()> {
        let github = &pull.github_repo;
        let number = pull.number;
        let known = match pull.comment_id {
            Some(id) => Some(id as u64),
            None => self.forge.find_comment(github, number, MARKER).await?,
        };
        let id = match known {
            Some(id) => match self.forge.update_comment(github, id, body).await {
                Ok(()) => id,
                // Deleted by someone: post a new one.
                Err(e) if e.is_not_found() => {
                    self.forge.create_comment(github, number, body).await?
                }
                Err(e) => return Err(e.into()),
            },
            None => self.forge.create_comment(github, number, body).await?,
        };
        store
            .record_pull_comment(&pull.repo, pull.number, id as i64, body)
            .await?;
        Ok(())
    }

    /// Tells the PR, in a comment of its own (an edit of the sticky one notifies nobody),
    /// that its env is about to be deleted: once per deadline, with the policy's sentence.
    async fn warn_of_deletion(
        &self,
        store: &Store,
        pull: &PullRow,
        env: &EnvRecord,
        warning: DeletionWarning,
    ) -> anyhow::Result<()> {
        let deadline = warning.at;
        if pull.warned_for == Some(deadline) {
            return Ok(());
        }
        let said = store
            .recent_events(&env.name, 50)
            .await?
            .into_iter()
            .rev()
            .find(|e| e.kind == envmgr::store::EXPIRING_EVENT)
            .map(|e| e.message)
            .unwrap_or_else(|| format!("{} will be deleted soon", env.name));
        let body = format!(
            "⏳ {said}.\n\n{}",
            deletion_line(warning).trim_start_matches("⏳ ")
        );
        self.forge
            .create_comment(&pull.github_repo, pull.number, &body)
            .await?;
        store
            .record_pull_warning(&pull.repo, pull.number, deadline)
            .await?;
        Ok(())
    }

    /// One deployment per env commit; its status follows the env's phase.
    async fn report_deployment(
        &self,
        store: &Store,
        pull: &PullRow,
        env: &EnvRecord,
    ) -> anyhow::Result<()> {
        let Some(sha) = env.pull_request.as_ref().map(|pr| &pr.head) else {
            return Ok(());
        };
        let (mut id, mut state) = (pull.deployment_id, pull.deployment_state.clone());
        if pull.deployment_sha.as_ref() != Some(sha) {
            if env.phase == Phase::Deleted {
                return Ok(());
            }
            let created = self
                .forge
                .create_deployment(&pull.github_repo, sha.as_str(), env.name.as_str())
                .await?;
            store
                .record_pull_deployment(
                    &pull.repo,
                    pull.number,
                    Some(created as i64),
                    Some(sha),
                    None,
                )
                .await?;
            (id, state) = (Some(created as i64), None);
        }
        let Some(id) = id else { return Ok(()) };
        let (wanted, description) = match env.phase {
            Phase::Ready => (DeploymentState::Success, "environment ready".to_string()),
            Phase::Failed => (
                DeploymentState::Failure,
                env.reason.clone().unwrap_or_else(|| "failed".into()),
            ),
            Phase::Deleting | Phase::Deleted => {
                (DeploymentState::Inactive, "environment deleted".to_string())
            }
            _ => (DeploymentState::InProgress, env.phase.as_str().to_string()),
        };
        if state.as_deref() == Some(wanted.as_str()) {
            return Ok(());
        }
        // Deleting and Deleted both mean inactive; post it once the env is really gone.
        if env.phase == Phase::Deleting {
            return Ok(());
        }
        let env_url = env.main_url();
        let log_url = self.logs_url(env);
        let url = if wanted == DeploymentState::Success {
            env_url.as_deref()
        } else {
            None
        };
        self.forge
            .deployment_status(
                &pull.github_repo,
                id as u64,
                wanted,
                url,
                Some(&log_url),
                &description,
            )
            .await?;
        store
            .record_pull_deployment(
                &pull.repo,
                pull.number,
                Some(id),
                Some(sha),
                Some(wanted.as_str()),
            )
            .await?;
        Ok(())
    }

    /// The `slipway/env` commit status on the PR's head.
    async fn report_status(
        &self,
        store: &Store,
        pull: &PullRow,
        env: Option<&EnvRecord>,
    ) -> anyhow::Result<()> {
        let at_head = env.filter(|e| {
            e.pull_request
                .as_ref()
                .is_some_and(|pr| pr.head == pull.head_sha)
        });
        let (state, description, target) = match at_head {
            _ if pull.state != PullState::Open => return Ok(()),
            _ if !pull.approved() => (
                StatusState::Pending,
                "waiting for a maintainer's /slipway approve".to_string(),
                None,
            ),
            None => return Ok(()),
            Some(env) => match env.phase {
                Phase::Ready => (
                    StatusState::Success,
                    "environment ready".to_string(),
                    env.main_url(),
                ),
                Phase::Failed => (
                    StatusState::Failure,
                    env.reason.clone().unwrap_or_else(|| "failed".into()),
                    Some(self.logs_url(env)),
                ),
                Phase::Deleting | Phase::Deleted => return Ok(()),
                phase => (
                    StatusState::Pending,
                    format!("environment {}", phase.as_str().to_lowercase()),
                    None,
                ),
            },
        };
        let recorded = format!("{}|{description}", state.as_str());
        if pull.status_sha.as_ref() == Some(&pull.head_sha)
            && pull.status_state.as_deref() == Some(recorded.as_str())
        {
            return Ok(());
        }
        self.forge
            .commit_status(
                &pull.github_repo,
                pull.head_sha.as_str(),
                state,
                STATUS_CONTEXT,
                &description,
                target.as_deref(),
            )
            .await?;
        store
            .record_pull_status(&pull.repo, pull.number, &pull.head_sha, &recorded)
            .await?;
        Ok(())
    }

    /// The `slipway/tests` check run of the PR head's latest run. Tokens that may not
    /// create check runs (only GitHub Apps may) get a commit status of that name instead.
    async fn report_tests(
        &self,
        store: &Store,
        pull: &PullRow,
        run: &TestRun,
    ) -> anyhow::Result<()> {
        let log_url = format!(
            "{}/api/v1/envs/{}/runs/{}/log",
            self.app.public_url, run.env, run.id
        );
        let (status, conclusion) = match run.status {
            RunStatus::Queued => ("queued", None),
            RunStatus::Running => ("in_progress", None),
            RunStatus::Passed => ("completed", Some("success")),
            RunStatus::TimedOut => ("completed", Some("timed_out")),
            RunStatus::Failed | RunStatus::Error => ("completed", Some("failure")),
        };
        let state = format!("{status}|{}", conclusion.unwrap_or(""));
        if run.check_state.as_deref() == Some(state.as_str()) {
            return Ok(());
        }
        let headline = run
            .headline
            .clone()
            .unwrap_or_else(|| format!("tests {}", run.status.as_str().replace('_', " ")));
        let failed: Vec<&TestResult> = run.failed_tests().collect();
        let mut summary = format!(
            "{headline}\n\nCommit `{}` · [full log]({log_url})",
            pull.head_sha.short()
        );
        if !failed.is_empty() {
            summary.push_str("\n\nFailed:\n");
            for test in failed.iter().take(20) {
                summary.push_str(&format!("- `{}`\n", test.name.replace('`', "'")));
            }
        }
        let annotations = failed
            .iter()
            .filter_map(|t| {
                let (path, line) = (t.file.as_ref()?, t.line?);
                Some(serde_json::json!({
                    "path": path,
                    "start_line": line,
                    "end_line": line,
                    "annotation_level": "failure",
                    "title": truncate(&t.name, 250),
                    "message": truncate(t.message.as_deref().unwrap_or("failed"), 4_000),
                }))
            })
            .collect();
        let check = CheckRun {
            name: TESTS_CONTEXT.into(),
            head_sha: pull.head_sha.to_string(),
            status,
            conclusion,
            title: headline.clone(),
            summary,
            // The exit code first: the snippet may explain the failure by its tests alone.
            text: run
                .snippet_check
                .as_ref()
                .map(|snippet| match run.exit_code {
                    Some(code) => format!("**Exit code:** {code}\n\n{snippet}"),
                    None => snippet.clone(),
                }),
            details_url: Some(log_url.clone()),
            annotations,
        };
        let existing = run.check_run_id.map(|id| id as u64);
        let id = match self
            .forge
            .check_run(&pull.github_repo, existing, &check)
            .await
        {
            Ok(id) => id as i64,
            Err(ForgeError::Status { status: 403, .. })
            | Err(ForgeError::Status { status: 404, .. }) => {
                // Not allowed to create check runs: a commit status says the same.
                let state = match conclusion {
                    None => StatusState::Pending,
                    Some("success") => StatusState::Success,
                    Some(_) => StatusState::Failure,
                };
                self.forge
                    .commit_status(
                        &pull.github_repo,
                        pull.head_sha.as_str(),
                        state,
                        TESTS_CONTEXT,
                        &headline,
                        Some(&log_url),
                    )
                    .await?;
                0
            }
            Err(e) => return Err(e.into()),
        };
        store.record_check_run(run.id, id, &state).await?;
        Ok(())
    }

    fn logs_url(&self, env: &EnvRecord) -> String {
        format!("{}/api/v1/envs/{}/logs", self.app.public_url, env.name)
    }
}

/// The sticky comment. Only phase-level facts go in, so a deploy edits it a handful of
/// times, not once per service state.
pub fn render_comment(
    pull: &PullRow,
    env: Option<&EnvRecord>,
    run: Option<&TestRun>,
    public_url: &str,
    draft_envs: bool,
) -> String {
    let mut out = format!("{MARKER}\n### Slipway environment `{}`\n\n", pull.env);
    let waiting = |text: &str| format!("{out}{text}\n\n{}", footer());
    if pull.state != PullState::Open && env.is_none_or(|e| e.phase == Phase::Deleted) {
        return waiting("🗑 The pull request is closed; its environment is deleted.");
    }
    if pull.skip {
        return waiting(
            "⏭ Skipped: this pull request has the skip label, so it gets no environment.",
        );
    }
    if pull.is_draft && !draft_envs {
        return waiting(
            "📝 Draft pull requests get no environment. Mark it ready for review to get one.",
        );
    }
    let Some(env) = env else {
        if !pull.approved() {
            return waiting(&approval_text(pull));
        }
        return waiting("⏳ Preparing the environment…");
    };
    let (icon, state) = match env.phase {
        Phase::Ready => ("✅", "Ready"),
        Phase::Degraded => ("⚠️", "Degraded"),
        Phase::Sleeping => ("💤", "Sleeping"),
        Phase::Failed => ("❌", "Failed"),
        Phase::Deleting | Phase::Deleted => ("🗑", "Deleted"),
        Phase::Pending => ("⏳", "Pending"),
        Phase::Fetching => ("⏳", "Fetching"),
        Phase::Building => ("🔨", "Building"),
        Phase::Starting => ("🚀", "Starting"),
    };
    out.push_str("| | |\n|---|---|\n");
    match env.idle.slept_at.filter(|_| env.phase == Phase::Sleeping) {
        Some(since) => out.push_str(&format!(
            "| **State** | {icon} {state} since {} UTC, wakes on the next request |\n",
            utc_minute(since)
        )),
        None => out.push_str(&format!("| **State** | {icon} {state} |\n")),
    }
    let commit = env
        .pull_request
        .as_ref()
        .map(|pr| pr.head.short().to_string())
        .unwrap_or_default();
    out.push_str(&format!("| **Commit** | `{commit}` |\n"));
    // A sleeping env's front-door URL wakes it, so it is worth showing too.
    if matches!(env.phase, Phase::Ready | Phase::Sleeping) {
        let urls = env.urls();
        if !urls.is_empty() {
            let list: Vec<String> = urls
                .iter()
                .map(|(service, url)| format!("{service}: {url}"))
                .collect();
            out.push_str(&format!("| **URLs** | {} |\n", list.join("<br>")));
        }
    }
    if !matches!(env.phase, Phase::Deleting | Phase::Deleted) {
        out.push_str(&format!("{EXPIRES_ROW}{} |\n", expiry(env.expires_at)));
        out.push_str(&format!(
            "| **Logs** | [all services]({public_url}/api/v1/envs/{}/logs) |\n",
            env.name
        ));
        if let Some(run) = run {
            out.push_str(&format!(
                "| **Tests** | {} |\n",
                test_summary(run, public_url)
            ));
        }
    }
    if let Some(reason) = env.reason.as_deref().filter(|_| env.phase == Phase::Failed) {
        out.push_str(&format!(
            "\n**Why it failed**\n\n```\n{}\n```\n",
            reason.replace("```", "'''")
        ));
    }
    if let Some(snippet) = run.and_then(|r| r.snippet_comment.as_deref()) {
        out.push_str(&format!(
            "\n<details><summary>Why the tests failed</summary>\n\n{snippet}\n\n</details>\n"
        ));
    }
    if !pull.approved() {
        out.push_str(&format!("\n{}\n", approval_text(pull)));
    }
    out.push('\n');
    out.push_str(&footer());
    out
}

/// "✅ passed: 14 tests passed (run 3, [log](...))".
fn test_summary(run: &TestRun, public_url: &str) -> String {
    let icon = match run.status {
        RunStatus::Queued | RunStatus::Running => "⏳",
        RunStatus::Passed => "✅",
        _ => "❌",
    };
    let headline = run
        .headline
        .as_deref()
        .map(|h| format!(": {h}"))
        .unwrap_or_default();
    let log = format!("{public_url}/api/v1/envs/{}/runs/{}/log", run.env, run.id);
    format!(
        "{icon} {}{headline} (run {}, [log]({log}))",
        run.status.as_str().replace('_', " "),
        run.id
    )
}

fn approval_text(pull: &PullRow) -> String {
    format!(
        "⏸ This pull request comes from a fork, so its code does not run until someone with write access comments `/slipway approve` (for commit `{}`).",
        pull.head_sha.short()
    )
}

fn footer() -> String {
    "<sub>Commands: `/slipway env up` · `/slipway env down` · `/slipway env status` · `/slipway help`</sub>".into()
}

/// The sticky comment without the time left in its `Expires` row, which changes every
/// minute while nothing else does.
fn without_countdown(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        let countdown = line
            .starts_with(EXPIRES_ROW)
            .then(|| {
                let start = line.find(" (in ")?;
                let end = start + line[start..].find(')')? + 1;
                Some((start, end))
            })
            .flatten();
        match countdown {
            Some((start, end)) => {
                out.push_str(&line[..start]);
                out.push_str(&line[end..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

const EXPIRES_ROW: &str = "| **Expires** | ";

/// The sticky comment's line while a deletion warning holds (no countdown: it would edit the
/// comment every minute).
fn deletion_line(warning: DeletionWarning) -> String {
    let keeps = match warning.reason {
        DeletionReason::Idle => {
            "unless it is used: comment `/slipway env extend` or `/slipway env pin` to keep it"
        }
        DeletionReason::Ttl => {
            "when its time to live ends: comment `/slipway env extend` to keep it"
        }
        DeletionReason::BranchGone => {
            "as its branch is gone: comment `/slipway env pin` to keep it"
        }
    };
    format!(
        "⏳ **This environment will be deleted at {} UTC** {keeps}.",
        utc_minute(warning.at)
    )
}

/// "2026-11-22 13:00".
fn utc_minute(at_ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms.max(0) as u64);
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let when = stamp.replacen('T', " ", 1);
    when[..16.min(when.len())].to_string()
}

/// "2026-11-22 13:00 UTC (in 7h 59m)".
fn expiry(expires_at: i64) -> String {
    let left = Duration::from_secs(((expires_at - now_ms()).max(0) / 60_000 * 60) as u64);
    format!(
        "{} UTC (in {})",
        utc_minute(expires_at),
        humantime::format_duration(left)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_countdown_to_the_expiry_is_ignored_when_comparing_comments() {
        let body = |stamp: &str, left: &str, state: &str| {
            format!(
                "{MARKER}\n| | |\n|---|---|\n| **State** | {state} |\n\
                 {EXPIRES_ROW}{stamp} UTC (in {left}) |\n| **Logs** | [all services](x) |\n"
            )
        };
        let posted = body("2026-11-22 13:00", "7h 59m", "✅ Ready");
        assert_eq!(
            without_countdown(&posted),
            without_countdown(&body("2026-11-22 13:00", "7h 58m", "✅ Ready"))
        );
        // A new expiry (an extend) or anything else is a change.
        assert_ne!(
            without_countdown(&posted),
            without_countdown(&body("2026-11-22 14:00", "8h 58m", "✅ Ready"))
        );
        assert_ne!(
            without_countdown(&posted),
            without_countdown(&body("2026-11-22 13:00", "7h 59m", "❌ Failed"))
        );
        // "(in" elsewhere is kept.
        let text = "Why (in short): it failed\n";
        assert_eq!(without_countdown(text), text);
    }

    #[test]
    fn report_keys_name_the_repo_and_the_number() {
        let shop = RepoName::parse("shop").unwrap();
        let seven = PrNumber::new(7).unwrap();
        assert_eq!(key(&shop, seven), "shop#7");
        assert_eq!(parse_key("shop#7"), Some((shop, seven)));
        assert_eq!(parse_key("shop"), None);
        assert_eq!(parse_key("shop#x"), None);
        assert_eq!(parse_key("shop#0"), None);
        assert_eq!(parse_key("Shop#7"), None);
    }
}
