//! From stored webhook deliveries (and the periodic sweep) to intent: which PR should have an
//! env at which commit, and the answers to commands in comments. When and where a delivery
//! is handled is the deliveries controller's business (`deliveries`).

use std::time::Duration;

use anyhow::Context as _;
use envmgr::names::{CommitSha, EnvName, PrNumber};
use envmgr::snippet::fence_safe;
use envmgr::store::{Delivery, Desired, PullRow, PullState};

use super::events::{BranchDeleted, IssueCommentEvent, PullRequestEvent, WebhookEvent};
use super::forge::PullInfo;
use super::GitHubLink;
use super::GitHubSurface;
use crate::access::Caller;
use crate::commands::{self, Command};
use crate::executor::{self, CommandError, Invocation, Outcome};

const MAX_COMMANDS_PER_COMMENT: usize = 5;
/// Who acts when the periodic sweep of open PRs changes something.
const SWEEP_ACTOR: &str = "github:resync";

/// Who asks for a pull request's env to match it: the sweep only heals what webhooks
/// missed, everyone else (a webhook's sender, a commenter) asks for what they want.
#[derive(Debug, Clone, Copy)]
pub(super) enum SyncBy<'a> {
    Sweep,
    Actor(&'a str),
}

impl SyncBy<'_> {
    fn actor(&self) -> &str {
        match self {
            SyncBy::Sweep => SWEEP_ACTOR,
            SyncBy::Actor(actor) => actor,
        }
    }
}

impl GitHubSurface {
    /// Acts on one stored delivery; returns what was done, for the log and the store.
    pub(super) async fn process(&self, delivery: &Delivery) -> anyhow::Result<String> {
        match WebhookEvent::parse(&delivery.event, delivery.payload.as_bytes())? {
            WebhookEvent::PullRequest(event) => self.on_pull_request(event).await,
            WebhookEvent::IssueComment(event) => self.on_comment(event).await,
            WebhookEvent::BranchDeleted(event) => self.on_branch_deleted(event).await,
            other => Ok(format!("ignored {other:?}")),
        }
    }

    /// A deleted branch: its envs are marked, and the idle policy warns and deletes them.
    async fn on_branch_deleted(&self, event: BranchDeleted) -> anyhow::Result<String> {
        let Some(link) = self.link(&event.repository.full_name).cloned() else {
            return Ok(format!(
                "ignored: {} is not linked to a repo in the config",
                event.repository.full_name
            ));
        };
        let marked = self
            .app
            .engine
            .branch_deleted(&link.repo, &event.branch)
            .await?;
        let names: Vec<String> = marked.iter().map(ToString::to_string).collect();
        Ok(match names.as_slice() {
            [] => format!("branch {} deleted: no env of it to delete", event.branch),
            _ => format!(
                "branch {} deleted: {} deleted after a warning",
                event.branch,
                names.join(", ")
            ),
        })
    }

    async fn on_pull_request(&self, event: PullRequestEvent) -> anyhow::Result<String> {
        let Some(link) = self.link(&event.repository.full_name).cloned() else {
            return Ok(format!(
                "ignored: {} is not linked to a repo in the config",
                event.repository.full_name
            ));
        };
        let relevant = [
            "opened",
            "reopened",
            "synchronize",
            "ready_for_review",
            "converted_to_draft",
            "closed",
            "labeled",
            "unlabeled",
            "edited",
        ];
        if !relevant.contains(&event.action.as_str()) {
            return Ok(format!("ignored: pull_request {}", event.action));
        }
        let pr = &event.pull_request;
        let info = PullInfo {
            number: event.number,
            open: pr.state == "open" && event.action != "closed",
            draft: pr.draft,
            labels: pr.labels.iter().map(|l| l.name.clone()).collect(),
            head_sha: pr.head.sha.clone(),
            head_ref: pr.head.git_ref.clone(),
            head_repo: pr.head.repo.as_ref().map(|r| r.full_name.clone()),
            base_repo: pr.base.repo.full_name.clone(),
            title: pr.title.clone(),
            author: pr.user.login.clone(),
        };
        let actor = format!("github:{}", event.sender.login);
        let outcome = self
            .sync_pull(&link, &info, SyncBy::Actor(&actor), None)
            .await?;
        Ok(format!(
            "pull_request {} #{}: {outcome}",
            event.action, event.number
        ))
    }

    /// Records what GitHub says of a PR and makes its env match. With `force`, an env is
    /// (re)deployed even when it already runs this head, for `ttl` when given.
    pub(super) async fn sync_pull(
        &self,
        link: &GitHubLink,
        info: &PullInfo,
        by: SyncBy<'_>,
        force: Option<Redeploy>,
    ) -> anyhow::Result<EnvDecision> {
        let head = CommitSha::parse(&info.head_sha)
            .context("the pull request's head is not a commit id")?;
        let row = PullRow {
            repo: link.repo.clone(),
            number: info.number,
            github_repo: link.github.clone(),
            env: EnvName::for_pull_request(&link.repo, info.number),
            state: if info.open {
                PullState::Open
            } else {
                PullState::Closed
            },
            head_sha: head,
            head_ref: info.head_ref.clone(),
            is_fork: info.is_fork(),
            is_draft: info.draft,
            skip: info
                .labels
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&self.skip_label)),
            approved_sha: None,
            approved_by: None,
            comment_id: None,
            comment_body: None,
            deployment_id: None,
            deployment_sha: None,
            deployment_state: None,
            status_sha: None,
            status_state: None,
            warned_for: None,
        };
        let row = self.store.upsert_pull(&row).await?;
        self.leave_queue_if_changed(link, info).await?;
        let outcome = self.ensure_env(link, &row, by, force).await;
        // Also after an error: the comment shows what the PR is waiting for.
        self.nudge_report(&row.repo, row.number);
        outcome
    }

    /// A queued pull request that got new commits (its approval was for another head) or
    /// was closed leaves the submit queue, saying why.
    async fn leave_queue_if_changed(
        &self,
        link: &GitHubLink,
        info: &PullInfo,
    ) -> anyhow::Result<()> {
        let change = envmgr::store::Change::Pull(info.number);
        let Some(entry) = self.store.live_entry_of(&link.repo, &change).await? else {
            return Ok(());
        };
        let why = if !info.open {
            "the pull request was closed".to_string()
        } else if !entry.head.as_str().eq_ignore_ascii_case(&info.head_sha) {
            format!(
                "new commits were pushed ({} → {}); the approval was for the old head, queue it again",
                entry.head.short(),
                &info.head_sha[..info.head_sha.len().min(7)]
            )
        } else {
            return Ok(());
        };
        if self
            .store
            .request_queue_remove(entry.id, "slipway", &why)
            .await?
            .is_some()
        {
            self.app
                .engine
                .nudge_queue(&envmgr::store::queue_key(&entry.repo, &entry.target));
        }
        Ok(())
    }

    /// Up or down the PR's env according to its state, labels, draft flag and approval.
    async fn ensure_env(
        &self,
        link: &GitHubLink,
        row: &PullRow,
        by: SyncBy<'_>,
        force: Option<Redeploy>,
    ) -> anyhow::Result<EnvDecision> {
        let actor = by.actor();
        let current = self.app.engine.get(&row.env).await.ok();
        let running = current
            .as_ref()
            .is_some_and(|e| e.desired == Desired::Running);
        let not_wanted = if row.state != PullState::Open {
            Some(NoEnvReason::Closed)
        } else if row.skip {
            Some(NoEnvReason::SkipLabel)
        } else if row.is_draft && !link.draft_envs {
            Some(NoEnvReason::Draft)
        } else {
            None
        };
        match not_wanted {
            Some(reason) => {
                if running {
                    self.app.engine.down(&row.env, actor).await?;
                }
                Ok(EnvDecision::NotWanted {
                    reason,
                    deleted: running,
                })
            }
            // An unapproved new head of a fork keeps the approved commit running: it is
            // trusted code, and the comment says the new commits wait for approval.
            None if !row.approved() => Ok(EnvDecision::AwaitingApproval),
            None => {
                let head = row.head_sha.clone();
                let at_head = current.as_ref().is_some_and(|e| {
                    e.pull_request.as_ref().is_some_and(|pr| pr.head == head)
                        && e.phase != envmgr::store::Phase::Failed
                });
                if running && at_head && force.is_none() {
                    return Ok(EnvDecision::AlreadyAtHead);
                }
                // The sweep only heals missed webhooks: an env of this head that was deleted
                // (its TTL ran out, or someone took it down) stays deleted until a push, a
                // webhook or `/slipway env up` asks again.
                if !running && at_head && matches!(by, SyncBy::Sweep) {
                    return Ok(EnvDecision::LeftDeleted);
                }
                self.app
                    .engine
                    .up_pull_request(
                        &link.repo,
                        row.number,
                        head.clone(),
                        &row.head_ref,
                        force.and_then(|f| f.ttl),
                        actor,
                    )
                    .await?;
                Ok(EnvDecision::Up { head })
            }
        }
    }

    async fn on_comment(&self, event: IssueCommentEvent) -> anyhow::Result<String> {
        if event.action != "created" {
            return Ok(format!("ignored: comment {}", event.action));
        }
        if event.issue.pull_request.is_none() {
            return Ok("ignored: comment on an issue, not a pull request".into());
        }
        let Some(link) = self.link(&event.repository.full_name).cloned() else {
            return Ok(format!(
                "ignored: {} is not linked to a repo in the config",
                event.repository.full_name
            ));
        };
        let body = event.comment.body.unwrap_or_default();
        // Our own comments contain command examples; never obey them.
        if body.contains(super::report::MARKER) || event.comment.user.login.ends_with("[bot]") {
            return Ok("ignored: comment by a bot".into());
        }
        let mut commands = commands::parse_comment(&body);
        if commands.is_empty() {
            return Ok("no commands".into());
        }
        // A comment is not a script: a few commands at most, so one comment cannot flood the PR.
        commands.truncate(MAX_COMMANDS_PER_COMMENT);
        let number = event.issue.number;
        let user = event.comment.user.login;
        let mut outcomes = Vec::new();
        for command in commands {
            let reply: Option<String> = match command {
                Err(e) => {
                    let place = pr_place(&link, number);
                    executor::record_unparsed(&self.store, &Caller::github(&user), &place, &e)
                        .await;
                    Some(e.reply())
                }
                Ok(command) => self.run_command(&link, number, &user, command).await?,
            };
            if let Some(reply) = reply {
                self.forge
                    .create_comment(&link.github, number, &reply)
                    .await?;
                outcomes.push("replied");
            } else {
                outcomes.push("done");
            }
        }
        Ok(format!(
            "commands on #{number} by {user}: {}",
            outcomes.join(", ")
        ))
    }

    /// Runs one command typed in a PR comment through the shared executor, with this PR's
    /// repo and env as the defaults and the role the commenter's GitHub permission gives;
    /// returns the reply to post (none when the sticky comment will show what happened).
    async fn run_command(
        &self,
        link: &GitHubLink,
        number: PrNumber,
        user: &str,
        command: Command,
    ) -> anyhow::Result<Option<String>> {
        let policy = &self.app.policy;
        let permission = self.permission(&link.github, user).await?;
        let invocation = Invocation {
            caller: Caller::github(user),
            role: policy.role_for_github(permission.as_str()),
            place: pr_place(link, number),
            prefix: commands::COMMENT_PREFIX,
            default_repo: Some(link.repo.clone()),
            default_env: Some(EnvName::for_pull_request(&link.repo, number)),
            default_pull: Some(number.get()),
        };
        let result = match pull_request_only(&command) {
            None => executor::run(&self.app, &invocation, command)
                .await
                .map(|outcome| {
                    let commenter = Commenter {
                        user,
                        permission: permission.as_str(),
                        github: &link.github,
                        role: invocation.role,
                    };
                    render(outcome, &commenter)
                }),
            Some(action) => {
                self.run_pull_request_command(link, number, &invocation, &command, action)
                    .await
            }
        };
        Ok(match result {
            Ok(reply) => reply,
            Err(CommandError::Refused(refusal)) => {
                let via = match policy.github_level_for(refusal.needed) {
                    Some(level) => format!("GitHub {level} permission"),
                    None => "which no GitHub permission gives".to_string(),
                };
                Some(format!(
                    "@{user} `{}` needs {} ({via}) on {}; you have {} permission, which gives {}. Nothing was done.",
                    refusal.command.name(),
                    refusal.needed.phrase(),
                    link.github,
                    permission.as_str(),
                    refusal.have.phrase(),
                ))
            }
            Err(e) => Some(format!("@{user} {e}")),
        })
    }

    /// A command only pull requests have, checked and audited like every other.
    async fn run_pull_request_command(
        &self,
        link: &GitHubLink,
        number: PrNumber,
        invocation: &Invocation,
        command: &Command,
        action: PullAction,
    ) -> Result<Option<String>, CommandError> {
        executor::authorize(&self.app, invocation, command).await?;
        let result = match action {
            PullAction::DeployHead { ttl } => self.deploy_head(link, number, ttl, invocation).await,
            PullAction::Approve => self.approve(link, number, invocation).await,
        };
        executor::record(
            &self.app.engine,
            invocation,
            &command.to_string(),
            result.as_ref().err(),
        )
        .await;
        result
    }

    /// `env up` on a pull request: its env at its current head (forks need an approval).
    async fn deploy_head(
        &self,
        link: &GitHubLink,
        number: PrNumber,
        ttl: Option<Duration>,
        invocation: &Invocation,
    ) -> Result<Option<String>, CommandError> {
        let info = self
            .forge
            .pull_request(&link.github, number)
            .await
            .map_err(CommandError::failed)?;
        let head = head_of(&info)?;
        let row = self
            .store
            .get_pull(&link.repo, number)
            .await
            .map_err(CommandError::failed)?;
        if info.is_fork() && row.as_ref().and_then(|r| r.approved_sha.as_ref()) != Some(&head) {
            return Err(CommandError::NotHere(format!(
                "this pull request comes from a fork: approve its head {} first with `/slipway approve`.",
                head.short()
            )));
        }
        let by = SyncBy::Actor(&invocation.caller.id);
        let outcome = self
            .sync_pull(link, &info, by, Some(Redeploy { ttl }))
            .await
            .map_err(CommandError::failed)?;
        match outcome {
            // The sticky comment shows the env from here.
            EnvDecision::Up { .. } => Ok(None),
            other => Err(CommandError::NotHere(format!("no environment: {other}."))),
        }
    }

    /// `approve`: a fork's current head may run.
    async fn approve(
        &self,
        link: &GitHubLink,
        number: PrNumber,
        invocation: &Invocation,
    ) -> Result<Option<String>, CommandError> {
        let by = SyncBy::Actor(&invocation.caller.id);
        let user = invocation.caller.display.as_str();
        let info = self
            .forge
            .pull_request(&link.github, number)
            .await
            .map_err(CommandError::failed)?;
        let head = head_of(&info)?;
        // Record the PR first so the approval has a row to land on.
        self.sync_pull(link, &info, by, None)
            .await
            .map_err(CommandError::failed)?;
        self.store
            .approve_pull(&link.repo, number, &head, user)
            .await
            .map_err(CommandError::failed)?;
        self.sync_pull(link, &info, by, None)
            .await
            .map_err(CommandError::failed)?;
        Ok(Some(format!(
            "@{user} approved commit {} of this pull request; its environment is on the way.",
            head.short()
        )))
    }

    /// One sweep of a repo's open PRs (see `sweep`).
    pub(super) async fn heal(&self, link: &GitHubLink) -> anyhow::Result<()> {
        let open = self.forge.open_pull_requests(&link.github).await?;
        for info in &open {
            if let Err(e) = self.sync_pull(link, info, SyncBy::Sweep, None).await {
                tracing::warn!(pr = %info.number, error = %format!("{e:#}"), "could not reconcile a pull request");
            }
        }
        for row in self.store.open_pulls(&link.repo).await? {
            if open.iter().all(|info| info.number != row.number) {
                let info = match self.forge.pull_request(&link.github, row.number).await {
                    Ok(info) => info,
                    Err(e) if e.is_not_found() => PullInfo {
                        number: row.number,
                        open: false,
                        draft: row.is_draft,
                        labels: vec![],
                        head_sha: row.head_sha.to_string(),
                        head_ref: row.head_ref.clone(),
                        head_repo: None,
                        base_repo: link.github.clone(),
                        title: String::new(),
                        author: String::new(),
                    },
                    Err(e) => return Err(e.into()),
                };
                self.sync_pull(link, &info, SyncBy::Sweep, None).await?;
            }
        }
        Ok(())
    }
}

/// What a (re)deploy asked for by a command brings: a TTL other than the repo's default.
#[derive(Debug, Clone, Copy)]
pub(super) struct Redeploy {
    pub ttl: Option<Duration>,
}

/// The commands only a pull request can carry out.
enum PullAction {
    /// `env up` without a branch: this PR's env at its head.
    DeployHead { ttl: Option<Duration> },
    /// `approve`: a fork's head may run.
    Approve,
}

fn pull_request_only(command: &Command) -> Option<PullAction> {
    match command {
        Command::EnvUp {
            branch: None,
            repo: None,
            ttl,
        } => Some(PullAction::DeployHead { ttl: *ttl }),
        Command::Approve => Some(PullAction::Approve),
        _ => None,
    }
}

/// The shared executor's outcome as a reply on the pull request; `None` where the sticky
/// comment, the deployment and the check run already show what happens.
/// Who a reply on a pull request is for.
struct Commenter<'a> {
    user: &'a str,
    /// Their GitHub permission on the repository, and the role it gives.
    permission: &'a str,
    github: &'a str,
    role: crate::access::Role,
}

fn render(outcome: Outcome, commenter: &Commenter<'_>) -> Option<String> {
    let user = commenter.user;
    match outcome {
        Outcome::Help { text } => Some(text),
        Outcome::WhoAmI(who) => Some(format!(
            "@{user} you have {} permission on {}, which gives {}: you may run {}.",
            commenter.permission,
            commenter.github,
            commenter.role.phrase(),
            who.may_run
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Outcome::EnvUp { env } => Some(format!(
            "@{user} `{}`: requested branch `{}` of `{}`; `/slipway env status {}` shows how it goes.",
            env.name, env.branch, env.repo, env.name
        )),
        Outcome::EnvDown { .. } | Outcome::Test { .. } => None,
        Outcome::EnvList { envs } if envs.is_empty() => {
            Some(format!("@{user} there are no environments."))
        }
        Outcome::EnvList { envs } => {
            let mut text = format!("@{user}\n\n| environment | phase | branch | commit |\n|---|---|---|---|\n");
            for env in envs.iter().take(50) {
                text.push_str(&format!(
                    "| `{}` | {} | `{}` | {} |\n",
                    env.name,
                    env.phase.as_str(),
                    env.branch,
                    env.commit.as_ref().map(|c| c.short()).unwrap_or("-")
                ));
            }
            if envs.len() > 50 {
                text.push_str(&format!("\n…and {} more.\n", envs.len() - 50));
            }
            Some(text)
        }
        Outcome::EnvStatus { status } => {
            let env = &status.env;
            let mut text = format!(
                "@{user} `{}` is **{}** at {}{}.",
                env.name,
                env.phase.as_str(),
                env.commit
                    .as_ref()
                    .map(|c| c.short().to_string())
                    .unwrap_or_else(|| "no commit yet".into()),
                env.reason
                    .as_ref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            for (service, url) in env.urls() {
                text.push_str(&format!("\n- {service}: {url}"));
            }
            Some(text)
        }
        Outcome::EnvLogs(logs) if logs.text.trim().is_empty() => {
            Some(format!("@{user} `{}` has no output yet.", logs.env))
        }
        // A comment holds 65,536 characters; the newest output matters, and the fence must
        // hold whatever the log prints.
        Outcome::EnvLogs(logs) => Some(format!(
            "@{user} the newest output of `{}`:\n\n```\n{}\n```",
            logs.env,
            fence_safe(crate::text::last_chars(&logs.text, 20_000))
        )),
        Outcome::EnvIdle { action, env } => {
            Some(format!("@{user} `{}` {}.", env.name, action.reply()))
        }
        Outcome::EnvExtend { env } => Some(format!(
            "@{user} `{}` now expires in {}{}.",
            env.name,
            executor::time_left(&env),
            envmgr::engine::extend_cap_note(env.expires_at)
        )),
        Outcome::QueueAdd { .. }
        | Outcome::QueueRemove { .. }
        | Outcome::QueueRetry { .. }
        | Outcome::QueueStatus { .. }
        | Outcome::QueueList { .. }
        | Outcome::QueuePaused { .. } => crate::queue::render::markdown(&outcome)
            .map(|text| format!("@{user} {text}")),
        Outcome::Release { .. }
        | Outcome::RolloutStatus { .. }
        | Outcome::RolloutAction { .. }
        | Outcome::ChannelFrozen { .. } => crate::rollout::render::markdown(&outcome)
            .map(|text| format!("@{user} {text}")),
    }
}

/// Where a PR command was given, for the audit log: `pr acme/shop#7`.
fn pr_place(link: &GitHubLink, number: PrNumber) -> String {
    format!("pr {}#{number}", link.github)
}

/// The head GitHub reports for a pull request, as a commit.
fn head_of(info: &PullInfo) -> Result<CommitSha, CommandError> {
    CommitSha::parse(&info.head_sha)
        .context("the pull request's head is not a commit id")
        .map_err(CommandError::failed)
}

/// What `sync_pull` did with a pull request's env, and why: decided on these values, shown
/// (in logs and replies) through `Display`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum EnvDecision {
    /// The env was asked for at this head.
    Up { head: CommitSha },
    /// It already runs this head.
    AlreadyAtHead,
    /// The env of this head was deleted (TTL, `env down`); the sweep leaves it so.
    LeftDeleted,
    /// A fork's new head waits for `/slipway approve`; an approved commit keeps running.
    AwaitingApproval,
    /// No env is wanted; `deleted` when one was running and is now being deleted.
    NotWanted { reason: NoEnvReason, deleted: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NoEnvReason {
    Closed,
    SkipLabel,
    Draft,
}

impl std::fmt::Display for NoEnvReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoEnvReason::Closed => "closed",
            NoEnvReason::SkipLabel => "skip label",
            NoEnvReason::Draft => "draft",
        })
    }
}

impl std::fmt::Display for EnvDecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvDecision::Up { head } => write!(f, "env up at {}", head.short()),
            EnvDecision::AlreadyAtHead => f.write_str("env already at this head"),
            EnvDecision::LeftDeleted => f.write_str("env of this head was deleted; left so"),
            EnvDecision::AwaitingApproval => f.write_str("waiting for /slipway approve"),
            EnvDecision::NotWanted {
                reason,
                deleted: true,
            } => write!(f, "env deleted ({reason})"),
            EnvDecision::NotWanted { reason, .. } => write!(f, "no env ({reason})"),
        }
    }
}
