//! The engine's rollout API for surfaces (`release`, `rollout status|pause|resume|promote|
//! rollback|approve`, `channel freeze|unfreeze`): validate, record intent in the store, nudge
//! the rollout reconciler, answer. Errors say what to do instead.

use serde::Serialize;

use super::model::{ChannelSettings, Rollout, RolloutState};
use super::reconciler::ROLLOUT_KIND;
use crate::engine::{Engine, EngineError};
use crate::names::{BranchName, CommitSha, RepoName};
use crate::settings::RepoSettings;
use crate::store::{NewRollout, RolloutRequest};

/// What a deployer asks of a channel's live rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Pause,
    Resume,
    /// Skip the remaining steps (still through the safe swap at 100%).
    Promote,
    Rollback,
    /// Lets the rollout enter the step it waits to enter.
    Approve,
}

impl RolloutAction {
    pub fn word(self) -> &'static str {
        match self {
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Promote => "promote",
            RolloutAction::Rollback => "rollback",
            RolloutAction::Approve => "approve",
        }
    }
}

/// A channel's manual freeze.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelFreeze {
    pub reason: String,
    /// `config` for a freeze written in the configuration.
    pub by: String,
    /// Unix milliseconds (`None` for a freeze in the configuration).
    pub at: Option<i64>,
}

/// One release channel of a repo as `channel` commands show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStatus {
    pub name: String,
    /// The version at 100% there.
    pub version: Option<CommitSha>,
    /// When it got there (unix milliseconds).
    pub reached_at: Option<i64>,
    pub frozen: Option<ChannelFreeze>,
    /// The live rollout, if any.
    pub rollout: Option<Rollout>,
}

impl Engine {
    fn repo_with_channels(&self, repo: &RepoName) -> Result<&RepoSettings, EngineError> {
        let name = self.repo(repo.as_str())?;
        let settings = self
            .settings()
            .repo(&name)
            .ok_or_else(|| EngineError::NotFound(name.to_string()))?;
        if settings.channels.is_empty() {
            return Err(EngineError::Rollout(format!(
                "repo `{repo}` has no release channels; add them to its configuration, e.g. \
                 `[[repo.channel]] name = \"staging\"` then `[[repo.channel]] name = \"production\"` \
                 (with `steps = [\"5%\", \"25%\", \"50%\", \"100%\"]`)"
            )));
        }
        Ok(settings)
    }

    fn channel_of<'a>(
        repo: &'a RepoSettings,
        channel: &str,
    ) -> Result<&'a ChannelSettings, EngineError> {
        repo.channels
            .iter()
            .find(|c| c.name == channel)
            .ok_or_else(|| {
                let known: Vec<&str> = repo.channels.iter().map(|c| c.name.as_str()).collect();
                EngineError::Rollout(format!(
                    "repo `{}` has no channel `{channel}`; its channels are {}",
                    repo.name,
                    known.join(", ")
                ))
            })
    }

    /// Releases `target` (a commit id, full or abbreviated, or a branch) of `repo` into
    /// `channel` (default: the first): a new rollout, which supersedes a live one there.
    pub async fn release(
        &self,
        repo: &RepoName,
        target: &str,
        channel: Option<&str>,
        actor: &str,
    ) -> Result<Rollout, EngineError> {
        let settings = self.repo_with_channels(repo)?.clone();
        let channel = match channel {
            Some(name) => Self::channel_of(&settings, name)?,
            None => &settings.channels[0],
        };
        let commit = self.resolve_target(&settings, target).await?;
        self.start_rollout(&settings, channel, commit, target, actor)
            .await
    }

    /// What the submit queue calls once it landed `commit`: a rollout into the first channel.
    /// `Ok(None)` for a repo without channels.
    pub async fn release_landed(
        &self,
        repo: &RepoName,
        commit: &CommitSha,
        actor: &str,
    ) -> Result<Option<Rollout>, EngineError> {
        let name = self.repo(repo.as_str())?;
        let Some(settings) = self.settings().repo(&name).cloned() else {
            return Ok(None);
        };
        let Some(channel) = settings.channels.first() else {
            return Ok(None);
        };
        // Landed by the queue from the mirror: the commit is there.
        let commit = self
            .git()
            .fetch_commit(&settings, &[], commit)
            .await
            .map_err(|e| EngineError::Rollout(format!("cannot release {}: {e}", commit.short())))?;
        self.start_rollout(&settings, channel, commit, "queue", actor)
            .await
            .map(Some)
    }

    async fn start_rollout(
        &self,
        repo: &RepoSettings,
        channel: &ChannelSettings,
        commit: CommitSha,
        source: &str,
        actor: &str,
    ) -> Result<Rollout, EngineError> {
        let store = self.store();
        // The same commit asked again (the queue after a crash, a second `release`): the live
        // rollout carries on rather than starting over.
        if let Some(live) = store.current_rollout(&repo.name, &channel.name).await? {
            if live.to_commit == commit {
                return Ok(live);
            }
        }
        let from = store
            .channel(&repo.name, &channel.name)
            .await?
            .and_then(|c| c.version);
        let new = NewRollout {
            repo: repo.name.clone(),
            channel: channel.name.clone(),
            release_env: channel.release_env(&repo.name),
            canary_env: channel.canary_env(&repo.name),
            from_commit: from,
            to_commit: commit,
            source: source.to_string(),
            requested_by: actor.to_string(),
            handed_on_from: None,
        };
        let (rollout, superseded) = store.create_rollout(&new).await?;
        tracing::info!(
            rollout = rollout.id,
            repo = %repo.name,
            channel = %channel.name,
            commit = %rollout.to_commit.short(),
            actor,
            "release requested"
        );
        for id in superseded.into_iter().chain([rollout.id]) {
            self.nudge(ROLLOUT_KIND, &id.to_string());
        }
        Ok(rollout)
    }

    /// A commit id or a branch, as the commit it is now. A hex id is looked up in the mirror
    /// (after fetching the target branch, so recently landed commits are there); anything
    /// else is a branch, fetched.
    async fn resolve_target(
        &self,
        repo: &RepoSettings,
        target: &str,
    ) -> Result<CommitSha, EngineError> {
        let git = self.git();
        let hex = (4..=40).contains(&target.len()) && target.bytes().all(|b| b.is_ascii_hexdigit());
        if hex {
            if let Ok(commit) = git.resolve_commit(repo, target).await {
                return Ok(commit);
            }
            // Not in the mirror yet: bring the target branch in and look again.
            let _ = git.fetch_branch(repo, &repo.queue.target).await;
            if let Ok(commit) = git.resolve_commit(repo, target).await {
                return Ok(commit);
            }
            if let Ok(full) = CommitSha::parse(target) {
                if target.len() == 40 {
                    if let Ok(commit) = git.fetch_commit(repo, &[], &full).await {
                        return Ok(commit);
                    }
                }
            }
        }
        let branch = BranchName::parse(target).map_err(|_| {
            EngineError::Rollout(format!(
                "`{target}` is neither a commit of repo `{}` nor a branch name",
                repo.name
            ))
        })?;
        git.fetch_branch(repo, &branch).await.map_err(|e| {
            EngineError::Rollout(if hex {
                format!(
                    "`{target}` is not a commit of repo `{}` (nor a branch): {e}",
                    repo.name
                )
            } else {
                format!("cannot release `{target}`: {e}")
            })
        })
    }

    /// The channel's live rollout, else its latest one. Without a channel: the first channel
    /// with a live rollout, else the first channel.
    pub async fn rollout_current(
        &self,
        repo: &RepoName,
        channel: Option<&str>,
    ) -> Result<Option<Rollout>, EngineError> {
        let settings = self.repo_with_channels(repo)?;
        let store = self.store();
        let name = match channel {
            Some(name) => Self::channel_of(settings, name)?.name.clone(),
            None => {
                let mut live = None;
                for c in &settings.channels {
                    if let Some(rollout) = store.current_rollout(&settings.name, &c.name).await? {
                        live = Some(rollout);
                        break;
                    }
                }
                if let Some(rollout) = live {
                    return Ok(Some(rollout));
                }
                settings.channels[0].name.clone()
            }
        };
        if let Some(rollout) = store.current_rollout(&settings.name, &name).await? {
            return Ok(Some(rollout));
        }
        Ok(store.latest_rollout(&settings.name, &name).await?)
    }

    /// A deployer's request on the live rollout of `channel` (default: the channel with a
    /// live rollout).
    pub async fn rollout_action(
        &self,
        repo: &RepoName,
        channel: Option<&str>,
        action: RolloutAction,
        actor: &str,
    ) -> Result<Rollout, EngineError> {
        let settings = self.repo_with_channels(repo)?;
        let channel_name = channel.map(str::to_string);
        let rollout = self.rollout_current(repo, channel).await?;
        let rollout = match rollout {
            Some(r) if !r.state.is_finished() => r,
            other => {
                let where_ = channel_name
                    .map(|c| format!("channel `{c}` of repo `{}`", settings.name))
                    .unwrap_or_else(|| format!("repo `{}`", settings.name));
                let last = other
                    .map(|r| {
                        format!(
                            " (the last one, of {}, is {})",
                            r.to_commit.short(),
                            r.state
                        )
                    })
                    .unwrap_or_default();
                return Err(EngineError::Rollout(format!(
                    "no rollout is in progress in {where_}{last}; `release {} <commit|branch>` starts one",
                    settings.name
                )));
            }
        };
        let channel = Self::channel_of(settings, &rollout.channel)?;
        let request = match action {
            RolloutAction::Pause => RolloutRequest::Pause,
            RolloutAction::Resume => {
                if !rollout.paused {
                    return Err(EngineError::Rollout(format!(
                        "rollout {} is not paused (it is {}); `rollout pause` holds it",
                        rollout.id, rollout.state
                    )));
                }
                RolloutRequest::Resume
            }
            RolloutAction::Promote => {
                if rollout.from_commit.is_none() {
                    return Err(EngineError::Rollout(format!(
                        "rollout {} is the channel's first release: it has no steps to skip",
                        rollout.id
                    )));
                }
                RolloutRequest::Promote
            }
            RolloutAction::Rollback => {
                // There is no old version to send traffic back to.
                if rollout.from_commit.is_none() {
                    return Err(EngineError::Rollout(format!(
                        "rollout {} is the channel's first release: there is no older version to \
                         roll back to; `env down {}` removes the channel's env, or `release` an \
                         earlier commit",
                        rollout.id, rollout.release_env
                    )));
                }
                if rollout.state == RolloutState::RollingBack {
                    return Err(EngineError::Rollout(format!(
                        "rollout {} is already rolling back",
                        rollout.id
                    )));
                }
                RolloutRequest::Rollback
            }
            RolloutAction::Approve => {
                if !channel.requires_approval {
                    return Err(EngineError::Rollout(format!(
                        "channel `{}` does not require approval (`requires_approval = false`)",
                        channel.name
                    )));
                }
                // The step it waits to enter: the first before it starts, else the next
                // (the last one when a promotion to 100% was asked).
                let step = if rollout.step_started_at.is_none() {
                    0
                } else if rollout.promote_asked {
                    channel.steps.len() - 1
                } else {
                    (rollout.step + 1).min(channel.steps.len() - 1)
                };
                RolloutRequest::Approve { step }
            }
        };
        let updated = self
            .store()
            .request_rollout(rollout.id, request, actor)
            .await?;
        let Some(updated) = updated else {
            return Err(EngineError::Rollout(format!(
                "rollout {} is {}: `rollout {}` changes nothing now",
                rollout.id,
                if rollout.paused && action == RolloutAction::Pause {
                    "already paused".to_string()
                } else {
                    rollout.state.to_string()
                },
                action.word()
            )));
        };
        self.nudge(ROLLOUT_KIND, &updated.id.to_string());
        Ok(updated)
    }

    /// Freezes a channel: no rollout starts or advances there until `unfreeze_channel`.
    pub async fn freeze_channel(
        &self,
        repo: &RepoName,
        channel: &str,
        reason: &str,
        actor: &str,
    ) -> Result<ChannelStatus, EngineError> {
        self.set_freeze(repo, channel, Some(reason), actor).await
    }

    pub async fn unfreeze_channel(
        &self,
        repo: &RepoName,
        channel: &str,
        actor: &str,
    ) -> Result<ChannelStatus, EngineError> {
        self.set_freeze(repo, channel, None, actor).await
    }

    async fn set_freeze(
        &self,
        repo: &RepoName,
        channel: &str,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<ChannelStatus, EngineError> {
        let settings = self.repo_with_channels(repo)?.clone();
        let channel = Self::channel_of(&settings, channel)?;
        let reason = reason.map(|r| {
            let r = r.trim();
            if r.is_empty() {
                "no reason given".to_string()
            } else {
                r.to_string()
            }
        });
        self.store()
            .set_channel_freeze(
                &settings.name,
                &channel.name,
                &channel.release_env(&settings.name),
                reason.as_deref(),
                actor,
            )
            .await?;
        if let Some(live) = self
            .store()
            .current_rollout(&settings.name, &channel.name)
            .await?
        {
            self.nudge(ROLLOUT_KIND, &live.id.to_string());
        }
        let status = self.channels(repo).await?;
        Ok(status
            .into_iter()
            .find(|c| c.name == channel.name)
            .expect("the channel is configured"))
    }

    /// Every channel of `repo` in config order, with its version, freeze and live rollout.
    pub async fn channels(&self, repo: &RepoName) -> Result<Vec<ChannelStatus>, EngineError> {
        let settings = self.repo_with_channels(repo)?;
        let store = self.store();
        let mut out = Vec::new();
        for channel in &settings.channels {
            let row = store.channel(&settings.name, &channel.name).await?;
            let stored_freeze = row.as_ref().and_then(|r| {
                r.frozen_reason.clone().map(|reason| ChannelFreeze {
                    reason,
                    by: r.frozen_by.clone().unwrap_or_default(),
                    at: r.frozen_at,
                })
            });
            let config_freeze = channel.freeze.clone().map(|reason| ChannelFreeze {
                reason,
                by: "config".into(),
                at: None,
            });
            out.push(ChannelStatus {
                name: channel.name.clone(),
                version: row.as_ref().and_then(|r| r.version.clone()),
                reached_at: row.as_ref().and_then(|r| r.reached_at),
                frozen: config_freeze.or(stored_freeze),
                rollout: store.current_rollout(&settings.name, &channel.name).await?,
            });
        }
        Ok(out)
    }
}
