//! Monitored rollouts: the canary-versus-baseline analysis that decides each step.

pub mod analysis;
pub mod chart;
pub mod ports;
pub mod windows;

#[cfg(test)]
mod proptests;

pub use analysis::{analyse, AnalysisSettings, Check, Verdict, VersionSample};
