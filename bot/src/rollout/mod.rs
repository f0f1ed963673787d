//! Rollouts' front desk: what `release`, `rollout status|pause|resume|promote|rollback|approve`
//! and `channel freeze|unfreeze` do on every surface. Each records intent through the engine
//! (which nudges the rollout reconciler) and returns a view every surface renders the same
//! way; `--json` prints the view itself.

pub mod chart;
pub mod render;

use envmgr::rollout::model::format_weight;
use envmgr::rollout::{ChannelSettings, Rollout, RolloutState, FULL_WEIGHT};
use envmgr::rollout::{ChannelStatus, RolloutAction};
use envmgr::RepoSettings;
use serde::{Deserialize, Serialize};

use crate::app::App;
use crate::commands::{CommandKind, RolloutVerb};
use crate::executor::{CommandError, Invocation};
use crate::queue::repo_for;

/// One rollout as every surface shows it (`rollout status --json` prints this).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutView {
    pub id: i64,
    pub repo: String,
    pub channel: String,
    /// pending, progressing, blocked, paused, rolling_back, rolled_back, done or superseded.
    pub state: RolloutState,
    /// The step it is at, counted from 1, and how many the channel has.
    pub step: usize,
    pub steps: Vec<String>,
    /// Share of the channel's requests each version gets now, in percent.
    pub weights: Weights,
    /// The version at 100% before (the baseline), and the one being rolled out.
    pub from_version: Option<String>,
    pub to_version: String,
    /// What was asked for: a branch, a commit, or `queue` for a landed change.
    pub source: String,
    /// Why it waits, is blocked, or was rolled back.
    pub reason: Option<String>,
    pub paused: bool,
    pub approved_by: Option<String>,
    /// The live canary-vs-baseline comparison of the current step.
    pub comparison: Option<serde_json::Value>,
    /// The decision that ended it (promotion or rollback), with its numbers.
    pub decision: Option<serde_json::Value>,
    pub requested_by: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
    /// The channel's public entry (the front door), when there is one.
    pub url: Option<String>,
    /// The chart of both versions over the rollout (PNG).
    pub chart_url: String,
    /// The rollout's own page (JSON for now).
    pub link: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Weights {
    pub stable: f64,
    pub canary: f64,
}

/// A channel as `channel freeze` and `rollout status` show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChannelView {
    pub repo: String,
    pub channel: String,
    /// The version at 100% there.
    pub version: Option<String>,
    pub frozen: bool,
    pub freeze_reason: Option<String>,
    pub frozen_by: Option<String>,
    /// The rollout in progress, if any.
    pub rollout: Option<RolloutView>,
}

/// `rollout status`: the channel and its current (or latest) rollout.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RolloutStatusView {
    pub repo: String,
    pub channel: String,
    pub version: Option<String>,
    pub frozen: bool,
    pub freeze_reason: Option<String>,
    /// The rollout in progress, else the latest one; none before the first release.
    pub rollout: Option<RolloutView>,
    /// The same fields as the rollout's, for scripts reading `--json`: its state, step and
    /// weights (absent before the first release).
    pub state: Option<RolloutState>,
    pub step: Option<usize>,
    pub weights: Option<Weights>,
    pub comparison: Option<serde_json::Value>,
}

/// The view of a stored rollout.
pub fn view(app: &App, repo: &RepoSettings, rollout: &Rollout) -> RolloutView {
    let channel = repo.channels.iter().find(|c| c.name == rollout.channel);
    let steps = channel
        .map(|c| c.steps.iter().map(|w| format_weight(*w)).collect())
        .unwrap_or_default();
    let canary = f64::from(rollout.canary_weight.min(FULL_WEIGHT)) / 10.0;
    let public = app
        .engine
        .settings()
        .public_url
        .trim_end_matches('/')
        .to_string();
    let url = app
        .engine
        .settings()
        .front_door
        .as_ref()
        .map(|door| door.url(rollout.release_env.as_str(), None));
    RolloutView {
        id: rollout.id,
        repo: rollout.repo.to_string(),
        channel: rollout.channel.clone(),
        state: rollout.state,
        step: rollout.step + 1,
        steps,
        weights: Weights {
            stable: 100.0 - canary,
            canary,
        },
        from_version: rollout.from_commit.as_ref().map(ToString::to_string),
        to_version: rollout.to_commit.to_string(),
        source: rollout.source.clone(),
        reason: rollout.reason.clone(),
        paused: rollout.paused,
        approved_by: rollout.approved_by.clone(),
        comparison: rollout.comparison.clone(),
        // The canary's log lines are for who may read logs (the alert's team channel, `env
        // logs`), not for every viewer of `rollout status`.
        decision: rollout.decision.clone().map(|mut d| {
            if let Some(d) = d.as_object_mut() {
                d.remove("log_lines");
            }
            d
        }),
        requested_by: rollout.requested_by.clone(),
        started_at: rollout.created_at,
        updated_at: rollout.updated_at,
        finished_at: rollout.finished_at,
        url,
        chart_url: format!("{public}/api/v1/rollouts/{}/chart.png", rollout.id),
        link: format!("{public}/api/v1/rollouts/{}", rollout.id),
    }
}

fn channel_view(app: &App, repo: &RepoSettings, status: &ChannelStatus) -> ChannelView {
    ChannelView {
        repo: repo.name.to_string(),
        channel: status.name.clone(),
        version: status.version.as_ref().map(ToString::to_string),
        frozen: status.frozen.is_some(),
        freeze_reason: status.frozen.as_ref().map(|f| f.reason.clone()),
        frozen_by: status.frozen.as_ref().map(|f| f.by.clone()),
        rollout: status.rollout.as_ref().map(|r| view(app, repo, r)),
    }
}

/// The repo a rollout command means: named, the pull request's, or the only one; and it
/// must have channels.
fn repo_with_channels<'a>(
    app: &'a App,
    invocation: &Invocation,
    kind: CommandKind,
    repo: Option<&str>,
) -> Result<&'a RepoSettings, CommandError> {
    let repo = repo_for(app, invocation, kind, repo)?;
    if repo.channels.is_empty() {
        return Err(CommandError::NotHere(format!(
            "repo `{}` has no release channels: add `[[repo.channel]]` entries (name = \"staging\", \
             then name = \"production\") under its `[[repo]]` in the config and restart.",
            repo.name
        )));
    }
    Ok(repo)
}

/// The channel named, checked against the repo's.
fn channel_named<'a>(
    repo: &'a RepoSettings,
    channel: &str,
) -> Result<&'a ChannelSettings, CommandError> {
    repo.channels
        .iter()
        .find(|c| c.name.eq_ignore_ascii_case(channel.trim()))
        .ok_or_else(|| {
            CommandError::NotHere(format!(
                "repo `{}` has no channel `{channel}`; its channels are: {}.",
                repo.name,
                channel_names(repo)
            ))
        })
}

fn channel_names(repo: &RepoSettings) -> String {
    repo.channels
        .iter()
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `release <repo> <target> [channel:<c>]`.
pub async fn release(
    app: &App,
    invocation: &Invocation,
    repo: &str,
    target: &str,
    channel: Option<&str>,
) -> Result<RolloutView, CommandError> {
    let repo = repo_with_channels(app, invocation, CommandKind::Release, Some(repo))?;
    let channel = channel.map(|c| channel_named(repo, c)).transpose()?;
    let rollout = app
        .engine
        .release(
            &repo.name,
            target,
            channel.map(|c| c.name.as_str()),
            &invocation.caller.id,
        )
        .await?;
    Ok(view(app, repo, &rollout))
}

/// `rollout status`.
pub async fn status(
    app: &App,
    invocation: &Invocation,
    repo: Option<&str>,
    channel: Option<&str>,
) -> Result<RolloutStatusView, CommandError> {
    let repo = repo_with_channels(app, invocation, CommandKind::RolloutStatus, repo)?;
    let channel = channel.map(|c| channel_named(repo, c)).transpose()?;
    let rollout = app
        .engine
        .rollout_current(&repo.name, channel.map(|c| c.name.as_str()))
        .await?;
    // The channel shown: the one asked for, else the rollout's, else the first.
    let name = channel
        .map(|c| c.name.clone())
        .or_else(|| rollout.as_ref().map(|r| r.channel.clone()))
        .unwrap_or_else(|| repo.channels[0].name.clone());
    let statuses = app.engine.channels(&repo.name).await?;
    let status = statuses.iter().find(|s| s.name == name);
    let view = rollout.as_ref().map(|r| view(app, repo, r));
    Ok(RolloutStatusView {
        repo: repo.name.to_string(),
        channel: name,
        version: status.and_then(|s| s.version.as_ref().map(ToString::to_string)),
        frozen: status.is_some_and(|s| s.frozen.is_some()),
        freeze_reason: status.and_then(|s| s.frozen.as_ref().map(|f| f.reason.clone())),
        state: view.as_ref().map(|v| v.state),
        step: view.as_ref().map(|v| v.step),
        weights: view.as_ref().map(|v| v.weights),
        comparison: view.as_ref().and_then(|v| v.comparison.clone()),
        rollout: view,
    })
}

/// `rollout pause|resume|promote|rollback|approve`.
pub async fn act(
    app: &App,
    invocation: &Invocation,
    verb: RolloutVerb,
    repo: Option<&str>,
    channel: Option<&str>,
) -> Result<RolloutView, CommandError> {
    let repo = repo_with_channels(app, invocation, verb.kind(), repo)?;
    let channel = channel.map(|c| channel_named(repo, c)).transpose()?;
    let action = match verb {
        RolloutVerb::Pause => RolloutAction::Pause,
        RolloutVerb::Resume => RolloutAction::Resume,
        RolloutVerb::Promote => RolloutAction::Promote,
        RolloutVerb::Rollback => RolloutAction::Rollback,
        RolloutVerb::Approve => RolloutAction::Approve,
        RolloutVerb::Status => unreachable!("status is not an action"),
    };
    let rollout = app
        .engine
        .rollout_action(
            &repo.name,
            channel.map(|c| c.name.as_str()),
            action,
            &invocation.caller.id,
        )
        .await?;
    Ok(view(app, repo, &rollout))
}

/// `channel freeze` (with a reason) and `channel unfreeze` (`None`): the channel named, or
/// every channel of the repo when none is.
pub async fn set_frozen(
    app: &App,
    invocation: &Invocation,
    kind: CommandKind,
    repo: Option<&str>,
    channel: Option<&str>,
    freeze: Option<String>,
) -> Result<Vec<ChannelView>, CommandError> {
    let repo = repo_with_channels(app, invocation, kind, repo)?;
    let channels: Vec<&ChannelSettings> = match channel {
        Some(name) => vec![channel_named(repo, name)?],
        None => repo.channels.iter().collect(),
    };
    let actor = &invocation.caller.id;
    for channel in &channels {
        match &freeze {
            Some(reason) => {
                let reason = match reason.trim() {
                    "" => format!("frozen by {}", invocation.caller.display),
                    text => text.to_string(),
                };
                app.engine
                    .freeze_channel(&repo.name, &channel.name, &reason, actor)
                    .await?
            }
            None => {
                app.engine
                    .unfreeze_channel(&repo.name, &channel.name, actor)
                    .await?
            }
        };
    }
    let statuses = app.engine.channels(&repo.name).await?;
    Ok(statuses
        .iter()
        .filter(|s| channels.iter().any(|c| c.name == s.name))
        .map(|s| channel_view(app, repo, s))
        .collect())
}
