//! What else a rollout asks before it moves: pluggable guards (maintenance windows, firing
//! alerts) checked before the first step and before each promotion, and metric judges
//! (queries against a metrics source) asked on every pass while traffic is split. Both can
//! be unavailable: the rollout holds, and rolls back once the source has been out for
//! longer than the channel's `metric_outage`.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::model::{ChannelSettings, Rollout};

/// What a guard says about moving a rollout now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardOutcome {
    Allow,
    /// Not now; the sentence says why (shown in `rollout status` and in chat).
    Block(String),
    /// The guard's source could not be asked (the error): hold, and count toward
    /// `metric_outage`.
    Unavailable(String),
}

/// A check before the first step and before each promotion (a maintenance window, a
/// firing alert).
#[async_trait]
pub trait RolloutGuard: Send + Sync {
    async fn check(&self, rollout: &Rollout, channel: &ChannelSettings) -> GuardOutcome;
}

/// What a metric judge says about the canary against the baseline over the current step.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricOutcome {
    /// No objection.
    Pass,
    /// The canary is worse: roll back with these numbers.
    Fail {
        /// The metric's name (`[[repo.channel.metric]] name`).
        check: String,
        canary_value: f64,
        baseline_value: f64,
        /// A sentence for people: the values and the limit they crossed.
        why: String,
    },
    /// The metric source errored: hold, and count toward `metric_outage`.
    Unavailable(String),
}

/// A comparison of canary and baseline from another source than the front door's own
/// counters (a Prometheus query per channel), asked on every pass while traffic is split.
#[async_trait]
pub trait MetricJudge: Send + Sync {
    /// `since`: the current step's start (unix milliseconds).
    async fn judge(
        &self,
        rollout: &Rollout,
        channel: &ChannelSettings,
        since: i64,
    ) -> MetricOutcome;
}

/// The guards and judges the rollout reconciler asks, shared with the engine so surfaces
/// can plug theirs in after it started.
#[derive(Clone, Default)]
pub struct RolloutChecks {
    guards: Arc<RwLock<Vec<Arc<dyn RolloutGuard>>>>,
    judges: Arc<RwLock<Vec<Arc<dyn MetricJudge>>>>,
}

impl RolloutChecks {
    pub fn add_guard(&self, guard: Arc<dyn RolloutGuard>) {
        self.guards.write().expect("guards poisoned").push(guard);
    }

    pub fn add_judge(&self, judge: Arc<dyn MetricJudge>) {
        self.judges.write().expect("judges poisoned").push(judge);
    }

    pub fn guards(&self) -> Vec<Arc<dyn RolloutGuard>> {
        self.guards.read().expect("guards poisoned").clone()
    }

    pub fn judges(&self) -> Vec<Arc<dyn MetricJudge>> {
        self.judges.read().expect("judges poisoned").clone()
    }
}
