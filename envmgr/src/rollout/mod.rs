//! Monitored rollouts: release channels, the canary-versus-baseline analysis that decides
//! each step, and the traffic measurements it reads.

pub mod analysis;
pub mod canary;
mod engine;
pub mod guard;
pub mod model;
pub mod reconciler;
pub mod traffic;

#[cfg(test)]
mod proptests;

pub use analysis::{analyse, AnalysisSettings, Check, Verdict, VersionSample};
pub use engine::{ChannelFreeze, ChannelStatus, RolloutAction};
pub use guard::{GuardOutcome, MetricJudge, MetricOutcome, RolloutChecks, RolloutGuard};
pub use model::{ChannelSettings, Rollout, RolloutState, TrafficSplit, Version, FULL_WEIGHT};
pub use reconciler::{RolloutReconciler, ROLLOUT_KIND};
pub use traffic::{LatencyHistogram, VersionCounts};
