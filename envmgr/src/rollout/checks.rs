//! The guards and metric judges every rollout asks (see [`super::guard`]): the channel's
//! deploy windows, its Alertmanager matchers, and its Prometheus queries. Each wraps one of
//! the outside sources of [`super::ports`], so tests plug in the twins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::guard::{GuardOutcome, MetricJudge, MetricOutcome, RolloutGuard};
use super::model::{ChannelSettings, Rollout};
use super::ports::{evaluate_metric, AlertSource, MetricSource, PortError};
use super::windows::window_check;

/// No start and no step outside the channel's `windows`.
pub struct WindowGuard;

#[async_trait]
impl RolloutGuard for WindowGuard {
    async fn check(&self, _rollout: &Rollout, channel: &ChannelSettings) -> GuardOutcome {
        match window_check(&channel.windows, SystemTime::now()) {
            Ok(()) => GuardOutcome::Allow,
            Err(why) => GuardOutcome::Block(why),
        }
    }
}

/// No start and no step while an alert matching all of the channel's `alerts` fires.
pub struct AlertGuard {
    source: Arc<dyn AlertSource>,
}

impl AlertGuard {
    pub fn new(source: Arc<dyn AlertSource>) -> Self {
        Self { source }
    }
}

#[async_trait]
impl RolloutGuard for AlertGuard {
    async fn check(&self, _rollout: &Rollout, channel: &ChannelSettings) -> GuardOutcome {
        if channel.alerts.is_empty() {
            return GuardOutcome::Allow;
        }
        match self.source.firing(&channel.alerts).await {
            Ok(alerts) if alerts.is_empty() => GuardOutcome::Allow,
            Ok(alerts) => {
                let names: Vec<String> = alerts
                    .iter()
                    .take(3)
                    .map(|a| match &a.summary {
                        Some(summary) => format!("`{}` ({summary})", a.name),
                        None => format!("`{}`", a.name),
                    })
                    .collect();
                let more = alerts.len().saturating_sub(names.len());
                GuardOutcome::Block(format!(
                    "alert {} firing{}; waiting until it resolves",
                    names.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ))
            }
            Err(e) => GuardOutcome::Unavailable(format!("cannot ask Alertmanager: {e}")),
        }
    }
}

/// The channel's `[[repo.channel.metric]]` queries, canary against baseline.
pub struct PrometheusJudge {
    source: Arc<dyn MetricSource>,
}

impl PrometheusJudge {
    pub fn new(source: Arc<dyn MetricSource>) -> Self {
        Self { source }
    }
}

/// The values a query template's placeholders take for one version.
fn vars(rollout: &Rollout, canary: bool) -> BTreeMap<&'static str, String> {
    let (version, env, commit) = if canary {
        (
            "canary",
            rollout.canary_env.to_string(),
            rollout.to_commit.to_string(),
        )
    } else {
        (
            "stable",
            rollout.release_env.to_string(),
            rollout
                .from_commit
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        )
    };
    BTreeMap::from([
        ("version", version.to_string()),
        ("env", env),
        ("commit", commit),
        ("channel", rollout.channel.clone()),
        ("repo", rollout.repo.to_string()),
    ])
}

#[async_trait]
impl MetricJudge for PrometheusJudge {
    async fn judge(
        &self,
        rollout: &Rollout,
        channel: &ChannelSettings,
        _since: i64,
    ) -> MetricOutcome {
        let (canary, baseline) = (vars(rollout, true), vars(rollout, false));
        for check in &channel.metrics {
            match evaluate_metric(self.source.as_ref(), check, &canary, &baseline).await {
                Ok(result) => {
                    if result.passed == Some(false) {
                        let (c, b) = (
                            result.canary.unwrap_or_default(),
                            result.baseline.unwrap_or_default(),
                        );
                        return MetricOutcome::Fail {
                            check: check.name.clone(),
                            canary_value: c,
                            baseline_value: b,
                            why: format!(
                                "metric `{}`: canary {c:.4} vs baseline {b:.4}, {:.2}x (max {}x)",
                                check.name,
                                result.ratio.unwrap_or(f64::INFINITY),
                                check.max_ratio
                            ),
                        };
                    }
                }
                Err(PortError::Config(e)) => {
                    return MetricOutcome::Unavailable(format!("metric `{}`: {e}", check.name))
                }
                Err(e) => {
                    return MetricOutcome::Unavailable(format!(
                        "metric `{}`: cannot ask Prometheus: {e}",
                        check.name
                    ))
                }
            }
        }
        MetricOutcome::Pass
    }
}
