//! What a rollout is, as stored and as configured: a release channel's settings
//! (`[[repo.channel]]`), the state a rollout is in, and the traffic split the front door
//! applies. Surfaces write intent into these rows; the rollout reconciler moves them.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::analysis::AnalysisSettings;
use crate::names::{CommitSha, EnvName, RepoName};

/// Traffic weights are per mille of requests (so a step can be 0.5%).
pub const FULL_WEIGHT: u16 = 1000;

/// One release channel of a repo, in the order the config lists them (`staging` before
/// `production`): a landed change goes through each in turn.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelSettings {
    /// Lowercase letters, digits and `-`: it names the release env `<repo>-<name>`.
    pub name: String,
    /// Canary weight of each step, per mille, increasing, the last one [`FULL_WEIGHT`].
    pub steps: Vec<u16>,
    /// Each step runs at least this long before it can be promoted.
    pub min_step_time: Duration,
    /// A step without a verdict after this long is held as inconclusive (and people told).
    pub max_step_time: Duration,
    /// Every step waits for `rollout approve` by a deployer.
    pub requires_approval: bool,
    /// After reaching 100% here, how long the version runs before the next channel starts.
    pub soak: Duration,
    /// When rollouts may start or advance (none: any time).
    pub windows: Vec<super::windows::DeployWindow>,
    /// A freeze written in the config (a reason): nothing starts or advances while set.
    pub freeze: Option<String>,
    /// Alertmanager matchers (`alertname="HighErrorRate"`, `service=~"web.*"`): a rollout
    /// does not start or advance while an alert matching all of them fires.
    pub alerts: Vec<String>,
    /// Prometheus queries compared between canary and baseline (`[[repo.channel.metric]]`).
    pub metrics: Vec<super::ports::MetricCheck>,
    /// An erroring metric source holds the rollout; past this long it rolls back.
    pub metric_outage: Duration,
    pub analysis: AnalysisSettings,
}

/// What a channel gets for each key the config leaves out.
pub mod defaults {
    use std::time::Duration;
    pub const STEPS: [u16; 4] = [50, 250, 500, 1000];
    pub const MIN_STEP_TIME: Duration = Duration::from_secs(30);
    pub const MAX_STEP_TIME: Duration = Duration::from_secs(10 * 60);
    pub const SOAK: Duration = Duration::from_secs(10 * 60);
    pub const METRIC_OUTAGE: Duration = Duration::from_secs(2 * 60);
}

impl ChannelSettings {
    /// A channel named `name` with every default: steps 5%, 25%, 50%, 100%; 30 s to 10 min
    /// per step; 10 min soak; no windows, freeze, approval, alerts or metrics.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            steps: defaults::STEPS.to_vec(),
            min_step_time: defaults::MIN_STEP_TIME,
            max_step_time: defaults::MAX_STEP_TIME,
            requires_approval: false,
            soak: defaults::SOAK,
            windows: Vec::new(),
            freeze: None,
            alerts: Vec::new(),
            metrics: Vec::new(),
            metric_outage: defaults::METRIC_OUTAGE,
            analysis: AnalysisSettings {
                min_step_time: defaults::MIN_STEP_TIME,
                ..AnalysisSettings::default()
            },
        }
    }

    /// The release env that serves this channel: `<repo>-<channel>`.
    pub fn release_env(&self, repo: &RepoName) -> EnvName {
        EnvName::for_release(repo, &self.name)
    }
    /// The env that runs the canary copies during a rollout: `<repo>-<channel>-canary`.
    pub fn canary_env(&self, repo: &RepoName) -> EnvName {
        EnvName::for_canary(repo, &self.name)
    }
}

/// Where a rollout is. Surfaces show these words (`rollout status --json` `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Asked for; the canary is being built and started (or the previous rollout in the
    /// channel has not finished).
    Pending,
    /// Traffic is being shifted and compared.
    Progressing,
    /// A guard holds it (window, freeze, approval, firing alert, inconclusive evidence, an
    /// erroring metric source): `reason` says which.
    Blocked,
    /// A deployer paused it.
    Paused,
    /// The canary's weight is 0 and it is being removed.
    RollingBack,
    RolledBack,
    /// The version is at 100% in the channel.
    Done,
    /// A newer release for the same channel replaced it before it finished.
    Superseded,
}

impl RolloutState {
    pub const ALL: [RolloutState; 8] = [
        Self::Pending,
        Self::Progressing,
        Self::Blocked,
        Self::Paused,
        Self::RollingBack,
        Self::RolledBack,
        Self::Done,
        Self::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Progressing => "progressing",
            Self::Blocked => "blocked",
            Self::Paused => "paused",
            Self::RollingBack => "rolling_back",
            Self::RolledBack => "rolled_back",
            Self::Done => "done",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Finished rollouts are history: nothing acts on them any more.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::RolledBack | Self::Done | Self::Superseded)
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two versions the front door tells apart during a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// The version at 100% before the rollout (the baseline).
    Stable,
    Canary,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Stable => "stable",
            Version::Canary => "canary",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stable" => Some(Version::Stable),
            "canary" => Some(Version::Canary),
            _ => None,
        }
    }
}

/// What the front door applies for one release env while a rollout runs: this share of
/// requests goes to the canary env's copy of the service, the rest to the release env's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSplit {
    pub rollout_id: i64,
    pub release_env: EnvName,
    pub canary_env: EnvName,
    /// Per mille, 0..=[`FULL_WEIGHT`].
    pub canary_weight: u16,
}

/// One rollout as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rollout {
    pub id: i64,
    pub repo: RepoName,
    pub channel: String,
    pub release_env: EnvName,
    pub canary_env: EnvName,
    pub from_commit: Option<CommitSha>,
    pub to_commit: CommitSha,
    pub source: String,
    pub state: RolloutState,
    pub step: usize,
    pub canary_weight: u16,
    pub step_started_at: Option<i64>,
    pub reason: Option<String>,
    pub paused: bool,
    pub promote_asked: bool,
    pub rollback_asked: Option<String>,
    pub approved_by: Option<String>,
    pub approved_step: Option<usize>,
    /// The last live comparison (JSON written by the reconciler).
    pub comparison: Option<serde_json::Value>,
    /// The final decision with its numbers (JSON), once there is one.
    pub decision: Option<serde_json::Value>,
    pub metric_error_since: Option<i64>,
    pub requested_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub finished_at: Option<i64>,
}

/// Parses a step weight as written in the config: `"5%"`, `"0.5%"`, `"100%"`.
pub fn parse_step(text: &str) -> Result<u16, String> {
    let number = text
        .trim()
        .strip_suffix('%')
        .ok_or_else(|| format!("step {text:?} must be a percentage such as \"5%\""))?;
    let percent: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("step {text:?} is not a number followed by %"))?;
    if !(percent > 0.0 && percent <= 100.0) {
        return Err(format!("step {text:?} must be above 0% and at most 100%"));
    }
    let per_mille = (percent * 10.0).round();
    if (per_mille - percent * 10.0).abs() > 1e-6 {
        return Err(format!("step {text:?}: steps go in tenths of a percent"));
    }
    Ok(per_mille as u16)
}

/// Checks a channel's steps: increasing, ending at 100%.
pub fn check_steps(steps: &[u16]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("steps must name at least one weight, ending with \"100%\"".into());
    }
    if steps.windows(2).any(|w| w[0] >= w[1]) {
        return Err(
            "steps must increase (for example [\"5%\", \"25%\", \"50%\", \"100%\"])".into(),
        );
    }
    if steps.last() != Some(&FULL_WEIGHT) {
        return Err("the last step must be \"100%\"".into());
    }
    if steps.len() < 2 {
        return Err(
            "steps need at least one weight below \"100%\": the canary is compared with the \
             version it replaces before it takes all traffic"
                .into(),
        );
    }
    Ok(())
}

/// Formats a per-mille weight as people write it: `5%`, `0.5%`.
pub fn format_weight(per_mille: u16) -> String {
    if per_mille.is_multiple_of(10) {
        format!("{}%", per_mille / 10)
    } else {
        format!("{}.{}%", per_mille / 10, per_mille % 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_as_per_mille_and_must_increase_to_100() {
        assert_eq!(parse_step("5%"), Ok(50));
        assert_eq!(parse_step(" 0.5% "), Ok(5));
        assert_eq!(parse_step("100%"), Ok(1000));
        for bad in ["5", "0%", "101%", "x%", "0.25%"] {
            assert!(parse_step(bad).is_err(), "{bad}");
        }
        assert!(check_steps(&[50, 250, 500, 1000]).is_ok());
        assert!(check_steps(&[50, 50, 1000]).is_err());
        assert!(check_steps(&[50, 500]).is_err());
        assert!(check_steps(&[1000]).is_err());
        assert!(check_steps(&[]).is_err());
        assert_eq!(format_weight(50), "5%");
        assert_eq!(format_weight(5), "0.5%");
        assert_eq!(format_weight(1000), "100%");
    }

    #[test]
    fn states_round_trip() {
        for s in RolloutState::ALL {
            assert_eq!(RolloutState::parse(s.as_str()), Some(s));
        }
    }
}
