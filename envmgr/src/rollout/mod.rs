//! Monitored rollouts: release channels, the canary-versus-baseline analysis that decides
//! each step, and the traffic measurements it reads.

pub mod analysis;
pub mod chart;
pub mod model;
pub mod ports;
pub mod traffic;
pub mod windows;

#[cfg(test)]
mod proptests;

pub use analysis::{analyse, AnalysisSettings, Check, Verdict, VersionSample};
pub use model::{ChannelSettings, Rollout, RolloutState, TrafficSplit, Version, FULL_WEIGHT};
pub use traffic::{LatencyHistogram, VersionCounts};
