//! The chart of a rollout: both versions' error rate and p99 latency over the rollout, from
//! the front door's measurements, with the step changes and the decision marked. Served at
//! `/api/v1/rollouts/<id>/chart.png` and attached to the rollback alert on Discord.

use std::collections::BTreeMap;

use envmgr::rollout::chart::{render_chart, ChartData, ChartPoint};
use envmgr::rollout::{Rollout, RolloutState, Version, VersionCounts};
use envmgr::store::{Store, StoreError};

/// Points are drawn per this many seconds, so a few requests per second still give a rate.
const BUCKET_S: i64 = 5;

/// The PNG chart of `rollout`.
pub async fn chart_png(store: &Store, rollout: &Rollout) -> anyhow::Result<Vec<u8>> {
    let data = chart_data(store, rollout).await?;
    Ok(render_chart(&data)?)
}

/// What the chart shows, read from the store.
pub async fn chart_data(store: &Store, rollout: &Rollout) -> Result<ChartData, StoreError> {
    let start = rollout.created_at;
    let mut buckets: BTreeMap<(i64, Version), VersionCounts> = BTreeMap::new();
    for bucket in store.traffic_series(rollout.id, start).await? {
        let slot = (bucket.at - start).max(0) / 1000 / BUCKET_S;
        buckets
            .entry((slot, bucket.version))
            .or_default()
            .merge(&bucket.counts);
    }
    let points = buckets
        .into_iter()
        .filter(|(_, counts)| counts.requests > 0)
        .map(|((slot, version), counts)| ChartPoint {
            at_s: ((slot * BUCKET_S) + BUCKET_S / 2) as f64,
            version,
            error_rate: counts.error_rate(),
            p99_ms: counts.latency.quantile(0.99),
        })
        .collect();
    let seconds = |at: i64| ((at - start).max(0) as f64) / 1000.0;
    let mut marks = Vec::new();
    for event in store.recent_events(&rollout.release_env, 500).await? {
        if event.at < start || rollout.finished_at.is_some_and(|end| event.at > end) {
            continue;
        }
        if event.kind == "rollout.step" {
            let label = event
                .message
                .split_whitespace()
                .find(|w| {
                    w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != '%')
                        .ends_with('%')
                })
                .map(|w| {
                    w.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != '%')
                        .to_string()
                })
                .unwrap_or_else(|| "step".into());
            marks.push((seconds(event.at), label));
        }
    }
    let decision = match (rollout.state, rollout.finished_at) {
        (RolloutState::RolledBack, Some(at)) => {
            Some((seconds(at), decision_label(rollout, "rolled back")))
        }
        (RolloutState::Done, Some(at)) => Some((seconds(at), "100%".to_string())),
        _ => None,
    };
    Ok(ChartData {
        title: format!(
            "{} / {}: {}{}",
            rollout.repo,
            rollout.channel,
            rollout.to_commit.short(),
            rollout
                .from_commit
                .as_ref()
                .map(|from| format!(" vs {}", from.short()))
                .unwrap_or_default()
        ),
        points,
        marks,
        decision,
    })
}

/// "rolled back: errors 8.1% vs 0.2%" from the decision's numbers.
fn decision_label(rollout: &Rollout, what: &str) -> String {
    let Some(decision) = &rollout.decision else {
        return what.to_string();
    };
    let check = decision.get("check").and_then(|c| c.as_str());
    let canary = decision.get("canary_value").and_then(|v| v.as_f64());
    let baseline = decision.get("baseline_value").and_then(|v| v.as_f64());
    match (check, canary, baseline) {
        (Some("errors"), Some(c), Some(b)) => {
            format!("{what}: errors {:.1}% vs {:.1}%", c * 100.0, b * 100.0)
        }
        (Some("latency"), Some(c), Some(b)) => {
            format!("{what}: latency {c:.0} ms vs {b:.0} ms")
        }
        (Some(check), _, _) => format!("{what}: {check}"),
        _ => what.to_string(),
    }
}
