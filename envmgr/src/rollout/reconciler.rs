//! The rollout reconciler (kind `rollout`, key = rollout id) on the shared controller. One
//! pass takes one step of a rollout and requeues itself (every second while traffic is
//! split), so everything it knows is in the store and a pass killed anywhere is picked up
//! by the next from the stored state:
//!
//! - pending: the guards are asked, then the canary env (`<repo>-<channel>-canary`, only
//!   the changed services plus the entry one) is built at the new version; once it is Ready
//!   the first step's weight goes to it. A channel's first release deploys the release env
//!   directly and is done once it is Ready.
//! - progressing: each pass compares what the front door measured for canary and baseline
//!   over the step ([`analyse`]) and writes the live comparison; a promotion asks the guards
//!   again, then raises the weight to the next step. From the step before 100% (or at
//!   `rollout promote`) the canary takes all traffic while the release env moves to the new
//!   version; once that is Ready the weight goes back to 0, the canary env goes and the
//!   channel's version is the new one.
//! - roll back (evidence, a metric judge, a failed canary, `rollout rollback`): weight 0 is
//!   written first, then the canary's last log lines are kept (redacted) in the decision,
//!   then the canary env goes.
//!
//! The canary weight is raised only while the canary env is Ready at the new version, and
//! set to 0 before the canary env is asked down, so traffic never goes to a version that
//! is gone. Every decision is an event on the release env's timeline.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt as _;
use serde_json::json;
use tracing::{info, warn};

use super::analysis::{analyse, Check, Verdict};
use super::guard::{GuardOutcome, MetricOutcome, RolloutChecks};
use super::model::{format_weight, ChannelSettings, Rollout, RolloutState, FULL_WEIGHT};
use super::traffic::VersionCounts;
use crate::controller::{Action, NudgeBus, Reconciler, Work};
use crate::names::{CommitSha, EnvName, ServiceName};
use crate::runtime::{LogOptions, Runtime};
use crate::settings::{EngineSettings, RepoSettings};
use crate::store::{now_ms, Desired, EnvRecord, EnvRole, Phase, RolloutUpdate, Store};

/// The lease kind and metrics label of rollout work.
pub const ROLLOUT_KIND: &str = "rollout";

/// How often a rollout whose traffic is split is looked at.
const STEP_POLL: Duration = Duration::from_secs(1);
/// How often a rollout waiting for an env or a guard is looked at.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// Canary log lines kept in a rollback's decision.
const LOG_LINES: usize = 40;
/// How long reading the canary's log may take before the rollback goes on without it.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RolloutReconciler {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    redactors: Arc<crate::secrets::Redactors>,
    bus: NudgeBus,
    checks: RolloutChecks,
}

impl RolloutReconciler {
    pub fn new(
        settings: Arc<EngineSettings>,
        store: Store,
        runtime: Arc<dyn Runtime>,
        redactors: Arc<crate::secrets::Redactors>,
        bus: NudgeBus,
        checks: RolloutChecks,
    ) -> Self {
        Self {
            settings,
            store,
            runtime,
            redactors,
            bus,
            checks,
        }
    }
}

#[async_trait]
impl Reconciler for RolloutReconciler {
    fn kind(&self) -> &'static str {
        ROLLOUT_KIND
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .store
            .rollouts_to_reconcile()
            .await?
            .into_iter()
            .map(|id| id.to_string())
            .collect())
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let id: i64 = key
            .parse()
            .map_err(|_| anyhow::anyhow!("rollout key `{key}` is not a rollout id"))?;
        let Some(rollout) = work.store().rollout(id).await? else {
            return Ok(Action::AwaitChange);
        };
        let pass = Pass {
            r: self,
            work,
            store: work.store(),
            rollout,
        };
        pass.run().await
    }
}

/// One pass over one rollout, writing through the store fenced by its lease.
struct Pass<'a> {
    r: &'a RolloutReconciler,
    work: &'a Work,
    store: &'a Store,
    rollout: Rollout,
}

/// What rolling back is for: the numbers that decided it.
struct RollbackCause {
    /// For the event: what failed, with the numbers.
    summary: String,
    decision: serde_json::Value,
}

impl Pass<'_> {
    fn repo(&self) -> Option<&RepoSettings> {
        self.r.settings.repo(&self.rollout.repo)
    }

    fn channel(&self) -> Option<&ChannelSettings> {
        self.repo()?
            .channels
            .iter()
            .find(|c| c.name == self.rollout.channel)
    }

    /// `shop 1a2b3c4 in production`.
    fn what(&self) -> String {
        format!(
            "{} {} in {}",
            self.rollout.repo,
            self.rollout.to_commit.short(),
            self.rollout.channel
        )
    }

    /// `step 2 (25%)`.
    fn step_text(&self, step: usize, weight: u16) -> String {
        format!("step {} ({})", step + 1, format_weight(weight))
    }

    async fn write(&self, update: RolloutUpdate) -> anyhow::Result<()> {
        self.store.update_rollout(&self.rollout, &update).await?;
        Ok(())
    }

    async fn run(self) -> anyhow::Result<Action> {
        if self.rollout.state.is_finished() {
            if self.rollout.state == RolloutState::Done {
                return self.hand_on().await;
            }
            return Ok(Action::AwaitChange);
        }
        let Some(channel) = self.channel().cloned() else {
            let why = format!(
                "channel `{}` of repo `{}` is no longer configured",
                self.rollout.channel, self.rollout.repo
            );
            return self.roll_back(Some(self.manual_cause(&why))).await;
        };
        if self.rollout.rollback_asked.is_some() || self.rollout.state == RolloutState::RollingBack
        {
            return self.roll_back(None).await;
        }
        if self.rollout.paused {
            if self.rollout.state != RolloutState::Paused {
                let who = "paused: `rollout resume` continues from here".to_string();
                self.write(RolloutUpdate {
                    state: Some(RolloutState::Paused),
                    reason: Some(Some(who)),
                    ..Default::default()
                })
                .await?;
            }
            return Ok(Action::AwaitChange);
        }
        if self.rollout.state == RolloutState::Paused {
            // Resumed: say so now, whichever step the next write is about.
            self.write(RolloutUpdate {
                state: Some(RolloutState::Progressing),
                reason: Some(None),
                ..Default::default()
            })
            .await?;
            return Ok(Action::Requeue(WAIT_POLL));
        }
        if self.rollout.from_commit.is_none() {
            return self.first_release(&channel).await;
        }
        if self.rollout.step_started_at.is_none() {
            return self.start(&channel).await;
        }
        self.step(&channel).await
    }

    /// The checks before a step: freezes (config and stored), approval for entering
    /// `next_step`, then the pluggable guards. `Ok(None)`: go ahead.
    async fn guards(
        &self,
        channel: &ChannelSettings,
        next_step: usize,
    ) -> anyhow::Result<Option<GuardOutcome>> {
        if let Some(reason) = &channel.freeze {
            return Ok(Some(GuardOutcome::Block(format!(
                "channel {} is frozen in the configuration: {reason}",
                channel.name
            ))));
        }
        if let Some(row) = self
            .store
            .channel(&self.rollout.repo, &channel.name)
            .await?
        {
            if let Some(reason) = row.frozen_reason {
                let by = row.frozen_by.unwrap_or_else(|| "someone".into());
                return Ok(Some(GuardOutcome::Block(format!(
                    "channel {} is frozen by {by}: {reason}; `channel unfreeze` lifts it",
                    channel.name
                ))));
            }
        }
        if channel.requires_approval && self.rollout.approved_step != Some(next_step) {
            let weight = channel.steps.get(next_step).copied().unwrap_or(FULL_WEIGHT);
            return Ok(Some(GuardOutcome::Block(format!(
                "waiting for `rollout approve` by a deployer to enter {}",
                self.step_text(next_step, weight)
            ))));
        }
        let mut unavailable = None;
        for guard in self.r.checks.guards() {
            match guard.check(&self.rollout, channel).await {
                GuardOutcome::Allow => {}
                block @ GuardOutcome::Block(_) => return Ok(Some(block)),
                GuardOutcome::Unavailable(why) => unavailable = Some(why),
            }
        }
        Ok(unavailable.map(GuardOutcome::Unavailable))
    }

    /// Holds the rollout for `outcome` (a block, or an unavailable source, which rolls back
    /// once it has lasted `metric_outage`). The event is written once per distinct reason.
    async fn hold(
        &self,
        channel: &ChannelSettings,
        outcome: GuardOutcome,
        comparison: Option<serde_json::Value>,
    ) -> anyhow::Result<Action> {
        let now = now_ms();
        let (reason, error_since) = match outcome {
            GuardOutcome::Allow => unreachable!("hold is only called for a block"),
            GuardOutcome::Block(why) => (why, None),
            GuardOutcome::Unavailable(why) => {
                let since = self.rollout.metric_error_since.unwrap_or(now);
                let outage = Duration::from_millis((now - since).max(0) as u64);
                if outage > channel.metric_outage {
                    let why = format!(
                        "a metric source has been unavailable for {} (longer than metric_outage {}): {why}",
                        humantime::format_duration(Duration::from_secs(outage.as_secs())),
                        humantime::format_duration(channel.metric_outage)
                    );
                    return self.roll_back(Some(self.manual_cause(&why))).await;
                }
                (
                    format!("holding: a metric source is unavailable: {why}"),
                    Some(since),
                )
            }
        };
        // Reasons carry live numbers (an inconclusive step's counts, a source's error): the
        // event is for a new kind of reason, the status shows the latest text.
        let changed = self.rollout.state != RolloutState::Blocked
            || self.rollout.reason.as_deref().map(reason_key) != Some(reason_key(&reason));
        let weight = self.rollout.canary_weight;
        let event = changed.then(|| {
            (
                "rollout.blocked".to_string(),
                format!(
                    "blocked {} at {}: {reason}",
                    self.what(),
                    if self.rollout.step_started_at.is_some() {
                        self.step_text(self.rollout.step, weight)
                    } else {
                        "its start".to_string()
                    }
                ),
            )
        });
        if changed {
            info!(rollout = self.rollout.id, %reason, "rollout blocked");
        }
        self.write(RolloutUpdate {
            state: Some(RolloutState::Blocked),
            reason: Some(Some(reason)),
            metric_error_since: Some(error_since),
            comparison: comparison.map(Some),
            event,
            ..Default::default()
        })
        .await?;
        Ok(Action::Requeue(WAIT_POLL))
    }

    /// Leaves `Pending` (or says why it is still there), writing only changes.
    async fn pending(&self, reason: String) -> anyhow::Result<Action> {
        if self.rollout.state != RolloutState::Pending
            || self.rollout.reason.as_deref() != Some(reason.as_str())
        {
            self.write(RolloutUpdate {
                state: Some(RolloutState::Pending),
                reason: Some(Some(reason)),
                metric_error_since: Some(None),
                ..Default::default()
            })
            .await?;
        }
        Ok(Action::Requeue(WAIT_POLL))
    }

    async fn request_env(&self, name: &EnvName, role: EnvRole) -> anyhow::Result<()> {
        let repo = self
            .repo()
            .ok_or_else(|| anyhow::anyhow!("repo `{}` is not configured", self.rollout.repo))?;
        let asked = self
            .store
            .request_role_env_up(
                name,
                &repo.name,
                &repo.queue.target,
                &self.rollout.to_commit,
                &role,
                "slipway-rollout",
            )
            .await?;
        if asked {
            info!(rollout = self.rollout.id, env = %name, role = %role.to_column(), "env asked for");
        }
        // Nudged on every pass that waits: cheap, and a lost nudge costs a resync otherwise.
        self.r.bus.nudge(crate::reconciler::KIND, name.as_str());
        Ok(())
    }

    /// A channel's first release: no stable version to compare with, so the release env is
    /// deployed directly.
    async fn first_release(&self, channel: &ChannelSettings) -> anyhow::Result<Action> {
        let deploying = Some("deploying the release env (the channel's first release)".to_string());
        if self.rollout.step_started_at.is_none() {
            if let Some(outcome) = self.guards(channel, 0).await? {
                return self.hold(channel, outcome, None).await;
            }
            self.write(RolloutUpdate {
                    state: Some(RolloutState::Progressing),
                    step_started_at: Some(Some(now_ms())),
                    reason: Some(deploying),
                    metric_error_since: Some(None),
                    event: Some((
                        "rollout.started".into(),
                        format!(
                            "started releasing {}: the channel's first release, so the release env `{}` is deployed directly",
                            self.what(),
                            self.rollout.release_env
                        ),
                    )),
                    ..Default::default()
                })
                .await?;
        } else if self.rollout.state != RolloutState::Progressing {
            self.write(RolloutUpdate {
                state: Some(RolloutState::Progressing),
                reason: Some(deploying),
                ..Default::default()
            })
            .await?;
        }
        let release_env = self.rollout.release_env.clone();
        self.request_env(
            &release_env,
            EnvRole::Release {
                channel: channel.name.clone(),
            },
        )
        .await?;
        let env = self.store.get(&release_env).await?;
        match env_state(env.as_ref(), &self.rollout.to_commit) {
            EnvState::Ready => {
                self.write(RolloutUpdate {
                    state: Some(RolloutState::Done),
                    step: Some(channel.steps.len().saturating_sub(1)),
                    canary_weight: Some(0),
                    reason: Some(None),
                    finished_at: Some(Some(now_ms())),
                    channel_version: Some(self.rollout.to_commit.clone()),
                    event: Some((
                        "rollout.done".into(),
                        format!(
                            "released {}: the release env `{release_env}` is Ready (the channel's first release)",
                            self.what()
                        ),
                    )),
                    ..Default::default()
                })
                .await?;
                info!(rollout = self.rollout.id, "first release done");
                Ok(Action::Requeue(Duration::ZERO))
            }
            EnvState::Failed(why) => {
                let why = format!("the release env `{release_env}` failed: {why}");
                self.roll_back(Some(self.manual_cause(&why))).await
            }
            EnvState::Waiting(_) => Ok(Action::Requeue(WAIT_POLL)),
        }
    }

    /// Before the first step: guards, then the canary env, then the first step's weight.
    async fn start(&self, channel: &ChannelSettings) -> anyhow::Result<Action> {
        let version = self
            .store
            .channel(&self.rollout.repo, &channel.name)
            .await?
            .and_then(|c| c.version);
        if version.as_ref() == Some(&self.rollout.to_commit) {
            self.write(RolloutUpdate {
                state: Some(RolloutState::Done),
                canary_weight: Some(0),
                reason: Some(None),
                finished_at: Some(Some(now_ms())),
                channel_version: Some(self.rollout.to_commit.clone()),
                event: Some((
                    "rollout.done".into(),
                    format!(
                        "{} is already the channel's version: nothing to roll out",
                        self.what()
                    ),
                )),
                ..Default::default()
            })
            .await?;
            return Ok(Action::Requeue(Duration::ZERO));
        }
        let canary_env = self.rollout.canary_env.clone();
        if let Some(outcome) = self.guards(channel, 0).await? {
            // A canary left by a superseded rollout goes while this one waits.
            if let Some(EnvRole::Canary { rollout }) = self.store.env_role(&canary_env).await? {
                if rollout != self.rollout.id {
                    self.store
                        .request_down(&canary_env, "slipway-rollout", "its rollout was superseded")
                        .await?;
                    self.r
                        .bus
                        .nudge(crate::reconciler::KIND, canary_env.as_str());
                }
            }
            return self.hold(channel, outcome, None).await;
        }
        self.request_env(
            &canary_env,
            EnvRole::Canary {
                rollout: self.rollout.id,
            },
        )
        .await?;
        let env = self.store.get(&canary_env).await?;
        match env_state(env.as_ref(), &self.rollout.to_commit) {
            EnvState::Ready => {
                let weight = channel.steps[0];
                let now = now_ms();
                self.write(RolloutUpdate {
                    state: Some(RolloutState::Progressing),
                    step: Some(0),
                    canary_weight: Some(weight),
                    step_started_at: Some(Some(now)),
                    reason: Some(None),
                    metric_error_since: Some(None),
                    event: Some((
                        "rollout.started".into(),
                        format!(
                            "started rolling out {} (replacing {}): {} of requests to the canary, steps {}",
                            self.what(),
                            self.rollout
                                .from_commit
                                .as_ref()
                                .map(|c| c.short().to_string())
                                .unwrap_or_default(),
                            format_weight(weight),
                            steps_text(&channel.steps)
                        ),
                    )),
                    ..Default::default()
                })
                .await?;
                info!(rollout = self.rollout.id, weight, "first step");
                Ok(Action::Requeue(STEP_POLL))
            }
            EnvState::Failed(why) => {
                let why = format!("the canary env `{canary_env}` failed: {why}");
                self.roll_back(Some(self.manual_cause(&why))).await
            }
            EnvState::Waiting(phase) => {
                self.pending(format!("starting the canary env `{canary_env}` ({phase})"))
                    .await
            }
        }
    }

    /// A pass while traffic is split (or the release env is moving to the new version).
    async fn step(&self, channel: &ChannelSettings) -> anyhow::Result<Action> {
        let r = &self.rollout;
        let last = channel.steps.len() - 1;
        let step = r.step.min(last);
        let release = self.store.get(&r.release_env).await?;
        let release_role = self.store.env_role(&r.release_env).await?;
        if step == last {
            // Promoted: the release env moves to the new version (asked again in case a
            // pass was cut off between the promotion and the ask).
            let asked = release.as_ref().is_some_and(|e| {
                e.candidate.as_ref() == Some(&r.to_commit) && e.desired == Desired::Running
            }) && matches!(release_role, Some(EnvRole::Release { .. }));
            if !asked {
                self.request_env(
                    &r.release_env,
                    EnvRole::Release {
                        channel: channel.name.clone(),
                    },
                )
                .await?;
            }
            return self.swap(channel, release.as_ref()).await;
        }

        // The canary must be serving the new version for any traffic to go to it.
        let canary = self.store.get(&r.canary_env).await?;
        let canary_role = self.store.env_role(&r.canary_env).await?;
        let ours = canary_role == Some(EnvRole::Canary { rollout: r.id });
        let state = if ours {
            env_state(canary.as_ref(), &r.to_commit)
        } else {
            EnvState::Failed("it was replaced or removed".into())
        };
        match state {
            EnvState::Ready => {}
            EnvState::Failed(why) => {
                let why = format!("the canary env `{}` failed: {why}", r.canary_env);
                return self.roll_back(Some(self.manual_cause(&why))).await;
            }
            EnvState::Waiting(phase) => {
                if r.canary_weight > 0 {
                    let why = format!(
                        "the canary env `{}` is {phase}: all traffic on the stable version until it is Ready",
                        r.canary_env
                    );
                    warn!(rollout = r.id, %why, "canary not ready");
                    self.write(RolloutUpdate {
                        canary_weight: Some(0),
                        reason: Some(Some(why)),
                        ..Default::default()
                    })
                    .await?;
                }
                return Ok(Action::Requeue(WAIT_POLL));
            }
        }
        let weight = channel.steps[step];
        if r.canary_weight != weight {
            // Raised again after a hold (or a pass cut off before it raised it).
            self.write(RolloutUpdate {
                canary_weight: Some(weight),
                ..Default::default()
            })
            .await?;
        }

        let since = r.step_started_at.unwrap_or_else(now_ms);
        let mut unavailable = None;
        for judge in self.r.checks.judges() {
            match judge.judge(r, channel, since).await {
                MetricOutcome::Pass => {}
                MetricOutcome::Fail {
                    check,
                    canary_value,
                    baseline_value,
                    why,
                } => {
                    let decision = json!({
                        "check": check,
                        "statistic": null,
                        "canary_value": canary_value,
                        "baseline_value": baseline_value,
                        "effect": canary_value - baseline_value,
                        "why": why,
                        "step": step,
                        "canary_weight": weight,
                    });
                    let cause = RollbackCause {
                        summary: format!("{check}: {why}"),
                        decision,
                    };
                    return self.roll_back(Some(cause)).await;
                }
                MetricOutcome::Unavailable(why) => unavailable = Some(why),
            }
        }

        let window = self.store.traffic_window(r.id, since).await?;
        let elapsed = Duration::from_millis((now_ms() - since).max(0) as u64);
        let mut settings = channel.analysis.clone();
        settings.min_step_time = channel.min_step_time;
        let verdict = analyse(
            &window.canary.sample(),
            &window.stable.sample(),
            elapsed,
            channel.max_step_time,
            &settings,
        );
        let comparison = comparison_json(&window.canary, &window.stable, &verdict);
        if let Verdict::RollBack {
            check,
            statistic,
            canary_value,
            baseline_value,
            effect,
            why,
        } = &verdict
        {
            let decision = json!({
                "check": check.to_string(),
                "statistic": statistic,
                "canary_value": canary_value,
                "baseline_value": baseline_value,
                "effect": effect,
                "canary_requests": window.canary.requests,
                "canary_errors": window.canary.errors,
                "baseline_requests": window.stable.requests,
                "baseline_errors": window.stable.errors,
                "why": why,
                "step": step,
                "canary_weight": weight,
            });
            let summary =
                rollback_summary(*check, *statistic, *canary_value, *baseline_value, &window);
            self.write(RolloutUpdate {
                comparison: Some(Some(comparison)),
                ..Default::default()
            })
            .await?;
            return self
                .roll_back(Some(RollbackCause { summary, decision }))
                .await;
        }
        if let Some(why) = unavailable {
            return self
                .hold(channel, GuardOutcome::Unavailable(why), Some(comparison))
                .await;
        }
        let promote = matches!(verdict, Verdict::Promote { .. }) || r.promote_asked;
        if let Verdict::Inconclusive { why } = &verdict {
            if !r.promote_asked {
                return self
                    .hold(
                        channel,
                        GuardOutcome::Block(format!("inconclusive: {why}")),
                        Some(comparison),
                    )
                    .await;
            }
        }
        if !promote {
            self.write(RolloutUpdate {
                state: Some(RolloutState::Progressing),
                reason: Some(None),
                metric_error_since: Some(None),
                comparison: Some(Some(comparison)),
                ..Default::default()
            })
            .await?;
            return Ok(Action::Requeue(STEP_POLL));
        }
        // The step before 100% (or a `rollout promote`) goes to the swap: analysis at 100%
        // would have no baseline left to compare with.
        let next = if r.promote_asked || step + 1 >= last {
            last
        } else {
            step + 1
        };
        if let Some(outcome) = self.guards(channel, next).await? {
            return self.hold(channel, outcome, Some(comparison)).await;
        }
        let why = verdict.why().to_string();
        if next == last {
            return self.begin_swap(channel, comparison, &why).await;
        }
        let next_weight = channel.steps[next];
        self.write(RolloutUpdate {
            state: Some(RolloutState::Progressing),
            step: Some(next),
            canary_weight: Some(next_weight),
            step_started_at: Some(Some(now_ms())),
            reason: Some(None),
            metric_error_since: Some(None),
            comparison: Some(Some(comparison)),
            event: Some((
                "rollout.step".into(),
                format!(
                    "{} moved to {}: {why}",
                    self.what(),
                    self.step_text(next, next_weight)
                ),
            )),
            ..Default::default()
        })
        .await?;
        info!(
            rollout = r.id,
            step = next,
            weight = next_weight,
            "next step"
        );
        Ok(Action::Requeue(STEP_POLL))
    }

    /// All traffic to the canary while the release env moves to the new version.
    async fn begin_swap(
        &self,
        channel: &ChannelSettings,
        comparison: serde_json::Value,
        why: &str,
    ) -> anyhow::Result<Action> {
        let r = &self.rollout;
        let last = channel.steps.len() - 1;
        let how = if r.promote_asked {
            "promoted on request (`rollout promote`), skipping the remaining steps".to_string()
        } else {
            format!("promoted: {why}")
        };
        self.write(RolloutUpdate {
            state: Some(RolloutState::Progressing),
            step: Some(last),
            canary_weight: Some(FULL_WEIGHT),
            step_started_at: Some(Some(now_ms())),
            reason: Some(Some(format!(
                "all traffic on the canary while the release env `{}` moves to {}",
                r.release_env,
                r.to_commit.short()
            ))),
            metric_error_since: Some(None),
            comparison: Some(Some(comparison)),
            promote_done: true,
            event: Some((
                "rollout.promoted".into(),
                format!(
                    "{} {how}; 100% to the canary while the release env `{}` moves to the new version",
                    self.what(),
                    r.release_env
                ),
            )),
            ..Default::default()
        })
        .await?;
        self.request_env(
            &r.release_env,
            EnvRole::Release {
                channel: channel.name.clone(),
            },
        )
        .await?;
        info!(rollout = r.id, "promoted: moving the release env");
        Ok(Action::Requeue(WAIT_POLL))
    }

    /// The release env is moving to the new version; the canary serves everything meanwhile.
    async fn swap(
        &self,
        channel: &ChannelSettings,
        release: Option<&EnvRecord>,
    ) -> anyhow::Result<Action> {
        let r = &self.rollout;
        match env_state(release, &r.to_commit) {
            EnvState::Ready => {
                // Stable is the new version now: traffic back to it before the canary goes.
                if r.canary_weight > 0 {
                    self.write(RolloutUpdate {
                        canary_weight: Some(0),
                        ..Default::default()
                    })
                    .await?;
                }
                self.canary_down("the rollout is done").await?;
                self.write(RolloutUpdate {
                    state: Some(RolloutState::Done),
                    canary_weight: Some(0),
                    reason: Some(None),
                    finished_at: Some(Some(now_ms())),
                    channel_version: Some(r.to_commit.clone()),
                    event: Some((
                        "rollout.done".into(),
                        format!(
                            "{} is at 100%: the release env `{}` runs it and the canary is gone",
                            self.what(),
                            r.release_env
                        ),
                    )),
                    ..Default::default()
                })
                .await?;
                info!(rollout = r.id, "rollout done");
                Ok(Action::Requeue(Duration::ZERO))
            }
            EnvState::Failed(why) => {
                let reason = format!(
                    "the release env `{}` failed at the new version: {why}; the canary keeps serving all traffic (`rollout rollback` returns to {})",
                    r.release_env,
                    r.from_commit.as_ref().map(|c| c.short()).unwrap_or("the previous version")
                );
                self.hold(channel, GuardOutcome::Block(reason), None).await
            }
            EnvState::Waiting(_) => {
                // Only while the canary is Ready may it carry the traffic.
                let canary = self.store.get(&r.canary_env).await?;
                let ready = matches!(env_state(canary.as_ref(), &r.to_commit), EnvState::Ready);
                let weight = if ready { FULL_WEIGHT } else { 0 };
                if r.canary_weight != weight {
                    self.write(RolloutUpdate {
                        canary_weight: Some(weight),
                        ..Default::default()
                    })
                    .await?;
                }
                Ok(Action::Requeue(WAIT_POLL))
            }
        }
    }

    /// Asks the canary env down, if it is this rollout's.
    async fn canary_down(&self, why: &str) -> anyhow::Result<()> {
        let r = &self.rollout;
        if self.store.env_role(&r.canary_env).await? == Some(EnvRole::Canary { rollout: r.id }) {
            let env = self.store.get(&r.canary_env).await?;
            if env.is_some_and(|e| e.desired == Desired::Running) {
                self.store
                    .request_down(&r.canary_env, "slipway-rollout", why)
                    .await?;
                self.r
                    .bus
                    .nudge(crate::reconciler::KIND, r.canary_env.as_str());
            }
        }
        Ok(())
    }

    /// A rollback without analysis numbers: asked for, or something failed.
    fn manual_cause(&self, why: &str) -> RollbackCause {
        RollbackCause {
            summary: why.to_string(),
            decision: json!({
                "check": "manual",
                "why": why,
                "step": self.rollout.step,
                "canary_weight": self.rollout.canary_weight,
            }),
        }
    }

    /// Weight 0 first, then the canary's last log lines into the decision, then the canary
    /// env down, then `rolled_back`. Each write is safe to repeat: a pass cut off anywhere
    /// finishes the rollback next time.
    async fn roll_back(&self, cause: Option<RollbackCause>) -> anyhow::Result<Action> {
        let r = &self.rollout;
        let cause = match (cause, &r.rollback_asked) {
            (Some(cause), _) => Some(cause),
            (None, Some(actor)) if r.decision.is_none() => {
                let why = format!("rolled back on request by {actor} (`rollout rollback`)");
                let mut cause = self.manual_cause(&why);
                cause.decision["actor"] = json!(actor);
                Some(cause)
            }
            (None, _) => None,
        };
        let summary = cause
            .as_ref()
            .map(|c| c.summary.clone())
            .or_else(|| r.reason.clone())
            .unwrap_or_else(|| "rolled back".into());
        if r.state != RolloutState::RollingBack || r.canary_weight > 0 || cause.is_some() {
            let mut decision = cause.map(|c| c.decision);
            if let Some(d) = &mut decision {
                d["decided_at"] = json!(now_ms());
            }
            self.write(RolloutUpdate {
                state: Some(RolloutState::RollingBack),
                canary_weight: Some(0),
                reason: Some(Some(summary.clone())),
                decision: decision.clone().map(Some),
                ..Default::default()
            })
            .await?;
            info!(rollout = r.id, reason = %summary, "rolling back: canary weight 0");
        }
        // From here the canary has no traffic; what is left is bookkeeping and cleanup.
        let current = self.store.rollout(r.id).await?.unwrap_or_else(|| r.clone());
        let mut decision = current.decision.clone().unwrap_or_else(|| json!({}));
        if decision.get("log_lines").is_none() {
            decision["log_lines"] = json!(self.canary_log_lines().await);
            self.write(RolloutUpdate {
                decision: Some(Some(decision.clone())),
                ..Default::default()
            })
            .await?;
        }
        // A release env already moving to the new version goes back to the previous one.
        let release = self.store.get(&r.release_env).await?;
        if let (Some(release), Some(from)) = (&release, &r.from_commit) {
            if release.candidate.as_ref() == Some(&r.to_commit)
                && release.desired == Desired::Running
            {
                let repo = self
                    .repo()
                    .ok_or_else(|| anyhow::anyhow!("repo `{}` is not configured", r.repo))?;
                self.store
                    .request_role_env_up(
                        &r.release_env,
                        &repo.name,
                        &repo.queue.target,
                        from,
                        &EnvRole::Release {
                            channel: r.channel.clone(),
                        },
                        "slipway-rollout",
                    )
                    .await?;
                self.r
                    .bus
                    .nudge(crate::reconciler::KIND, r.release_env.as_str());
            }
        }
        self.canary_down("its rollout was rolled back").await?;
        let at = if current.step_started_at.is_some() {
            format!(
                " at {}",
                self.step_text(current.step, self.weight_of_step(&current))
            )
        } else {
            " before its first step".to_string()
        };
        self.write(RolloutUpdate {
            state: Some(RolloutState::RolledBack),
            canary_weight: Some(0),
            finished_at: Some(Some(now_ms())),
            event: Some((
                "rollout.rolled_back".into(),
                format!(
                    "rolled back {} {} in {}{at}: {}",
                    r.repo,
                    r.to_commit.short(),
                    r.channel,
                    current.reason.as_deref().unwrap_or(&summary)
                ),
            )),
            ..Default::default()
        })
        .await?;
        info!(rollout = r.id, "rolled back");
        Ok(Action::AwaitChange)
    }

    /// The weight a rollout's current step carries by the channel's steps (the stored
    /// weight is 0 by the time a rollback is told).
    fn weight_of_step(&self, rollout: &Rollout) -> u16 {
        self.channel()
            .and_then(|c| c.steps.get(rollout.step).copied())
            .unwrap_or(rollout.canary_weight)
    }

    /// The last lines of the canary's entry service, redacted like test snippets; empty
    /// when the canary env or its log cannot be read (the rollback does not wait for it).
    async fn canary_log_lines(&self) -> Vec<String> {
        let r = &self.rollout;
        let Ok(Some(env)) = self.store.get(&r.canary_env).await else {
            return Vec::new();
        };
        if env.phase == Phase::Deleted {
            return Vec::new();
        }
        let service = env
            .services
            .iter()
            .find(|s| s.main)
            .or_else(|| env.services.iter().find(|s| s.shared.is_none()))
            .and_then(|s| ServiceName::parse(&s.name).ok());
        let options = LogOptions {
            tail: Some(LOG_LINES as u64),
            follow: false,
        };
        let read = async {
            let mut stream = self
                .r
                .runtime
                .logs(&env.name, service.as_ref(), options)
                .await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
                if bytes.len() > 256 * 1024 {
                    break;
                }
            }
            Ok::<_, crate::runtime::RuntimeError>(bytes)
        };
        let bytes = match tokio::time::timeout(LOG_TIMEOUT, read).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                warn!(rollout = r.id, error = %e, "could not read the canary's log");
                return Vec::new();
            }
            Err(_) => {
                warn!(rollout = r.id, "reading the canary's log timed out");
                return Vec::new();
            }
        };
        let redactor = self.r.redactors.for_env(&env).await;
        let text = redactor.redact_text(&String::from_utf8_lossy(&bytes));
        let lines: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        let skip = lines.len().saturating_sub(LOG_LINES);
        lines.into_iter().skip(skip).collect()
    }

    /// After `soak` at 100%, the same version goes to the next channel in config order.
    async fn hand_on(&self) -> anyhow::Result<Action> {
        let r = &self.rollout;
        if self.store.rollout_handed_on_at(r.id).await?.is_some() {
            return Ok(Action::AwaitChange);
        }
        let mark_done = || RolloutUpdate {
            handed_on_at: Some(Some(now_ms())),
            ..Default::default()
        };
        let Some(repo) = self.repo() else {
            self.write(mark_done()).await?;
            return Ok(Action::AwaitChange);
        };
        let position = repo.channels.iter().position(|c| c.name == r.channel);
        let (Some(channel), Some(next)) = (
            position.map(|p| &repo.channels[p]),
            position.and_then(|p| repo.channels.get(p + 1)),
        ) else {
            self.write(mark_done()).await?;
            return Ok(Action::AwaitChange);
        };
        let finished = r.finished_at.unwrap_or_else(now_ms);
        let soak_ms = i64::try_from(channel.soak.as_millis()).unwrap_or(i64::MAX);
        let due = finished.saturating_add(soak_ms);
        let now = now_ms();
        if now < due {
            return Ok(Action::Requeue(Duration::from_millis((due - now) as u64)));
        }
        // Only the channel's version is handed on (a newer one may have replaced it).
        let here = self.store.channel(&r.repo, &r.channel).await?;
        let still_here = here.and_then(|c| c.version).as_ref() == Some(&r.to_commit);
        let there = self
            .store
            .channel(&r.repo, &next.name)
            .await?
            .and_then(|c| c.version);
        let live_there = self.store.current_rollout(&r.repo, &next.name).await?;
        let already = there.as_ref() == Some(&r.to_commit)
            || live_there
                .as_ref()
                .is_some_and(|l| l.to_commit == r.to_commit);
        if !still_here || already {
            self.write(mark_done()).await?;
            return Ok(Action::AwaitChange);
        }
        let new = crate::store::NewRollout {
            repo: r.repo.clone(),
            channel: next.name.clone(),
            release_env: next.release_env(&r.repo),
            canary_env: next.canary_env(&r.repo),
            from_commit: there,
            to_commit: r.to_commit.clone(),
            source: format!("promotion from {}", r.channel),
            requested_by: "slipway".into(),
            handed_on_from: Some(r.id),
        };
        // Through the fenced store: only the lease holder hands on.
        self.work.still_held().await?;
        let (created, superseded) = self.store.create_rollout(&new).await?;
        info!(rollout = r.id, next = created.id, channel = %next.name, "handed on to the next channel");
        for id in superseded.into_iter().chain([created.id]) {
            self.r.bus.nudge(ROLLOUT_KIND, &id.to_string());
        }
        Ok(Action::AwaitChange)
    }
}

/// Where an env is, for a rollout waiting on it.
enum EnvState {
    /// Ready (or Degraded) at the wanted commit, its generation done.
    Ready,
    Failed(String),
    /// Anything else: the phase, for the reason people see.
    Waiting(String),
}

fn env_state(env: Option<&EnvRecord>, commit: &CommitSha) -> EnvState {
    let Some(env) = env else {
        return EnvState::Waiting("not created yet".into());
    };
    if env.desired == Desired::Deleted {
        return EnvState::Failed("it is being deleted".into());
    }
    let converged = env.observed_generation >= env.generation;
    match env.phase {
        Phase::Ready | Phase::Degraded if converged && env.commit.as_ref() == Some(commit) => {
            EnvState::Ready
        }
        Phase::Failed if converged => EnvState::Failed(
            env.reason
                .clone()
                .unwrap_or_else(|| "no reason recorded".into()),
        ),
        phase => EnvState::Waiting(phase.as_str().to_string()),
    }
}

/// What a hold is about, without its numbers: the reason up to its first `:`
/// (`inconclusive`, `channel staging is frozen by erin`, `holding`).
fn reason_key(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

fn steps_text(steps: &[u16]) -> String {
    steps
        .iter()
        .map(|w| format_weight(*w))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// `8.1%`.
fn percent(fraction: f64) -> String {
    format!("{:.1}%", fraction * 100.0)
}

/// `3,874`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `errors 8.1% vs 0.2% over 212 vs 3,874 requests (log LR 7.3)`.
fn rollback_summary(
    check: Check,
    statistic: f64,
    canary_value: f64,
    baseline_value: f64,
    window: &crate::store::TrafficWindow,
) -> String {
    let over = format!(
        "over {} vs {} requests",
        thousands(window.canary.requests),
        thousands(window.stable.requests)
    );
    match check {
        Check::Errors => format!(
            "errors {} vs {} {over} (log LR {statistic:.1})",
            percent(canary_value),
            percent(baseline_value)
        ),
        Check::Latency => format!(
            "median latency {:.0} ms vs {:.0} ms {over} (rank test z {statistic:.1})",
            canary_value, baseline_value
        ),
    }
}

/// The live comparison `rollout status` shows.
fn comparison_json(
    canary: &VersionCounts,
    baseline: &VersionCounts,
    verdict: &Verdict,
) -> serde_json::Value {
    let side = |c: &VersionCounts| {
        json!({
            "requests": c.requests,
            "errors": c.errors,
            "error_rate": c.error_rate(),
            "p50_ms": c.latency.quantile(0.5),
            "p99_ms": c.latency.quantile(0.99),
        })
    };
    let verdict_word = match verdict {
        Verdict::Promote { .. } => "promote",
        Verdict::RollBack { .. } => "roll_back",
        Verdict::Inconclusive { .. } => "inconclusive",
        Verdict::Continue { .. } => "continue",
    };
    json!({
        "canary": side(canary),
        "baseline": side(baseline),
        "verdict": verdict_word,
        "why": verdict.why(),
        "at": now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(thousands(3874), "3,874");
        assert_eq!(thousands(212), "212");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(percent(0.081), "8.1%");
        assert_eq!(steps_text(&[50, 250, 1000]), "5% → 25% → 100%");
        assert_eq!(
            reason_key("inconclusive: errors 0.0% vs 0.0% over 3 vs 40 requests: ..."),
            reason_key("inconclusive: errors 0.0% vs 0.0% over 5 vs 61 requests: ...")
        );
        assert_ne!(
            reason_key("channel staging is frozen by erin: incident 42; ..."),
            reason_key("inconclusive: errors 0.0% vs 0.0% over 5 vs 61 requests")
        );
    }
}
