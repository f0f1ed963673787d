//! How rollout outcomes read: Markdown for pull-request comments and Discord (the CLI prints
//! the same text without code spans). `--json` prints the views instead.

use serde_json::Value;

use super::{ChannelView, RolloutStatusView, RolloutView};
use crate::commands::RolloutVerb;
use crate::executor::Outcome;

/// A rollout outcome as Markdown; `None` for any other outcome.
pub fn markdown(outcome: &Outcome) -> Option<String> {
    Some(match outcome {
        Outcome::Release { rollout } => format!(
            "🚀 Rolling `{}` out to `{}` of `{}`{}: {}",
            short(&rollout.to_version),
            rollout.channel,
            rollout.repo,
            rollout
                .from_version
                .as_deref()
                .map(|from| format!(" (replacing `{}`)", short(from)))
                .unwrap_or_else(|| " (its first release)".into()),
            rollout_line(rollout)
        ),
        Outcome::RolloutStatus { status } => status_text(status),
        Outcome::RolloutAction { action, rollout } => action_text(*action, rollout),
        Outcome::ChannelFrozen { channels } => channels
            .iter()
            .map(channel_line)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => return None,
    })
}

/// The reply to a deployer's request. The rollout reconciler acts on it within a second, so
/// the reply says what will happen rather than the state it was in when asked.
fn action_text(action: RolloutVerb, rollout: &RolloutView) -> String {
    let what = format!(
        "`{}` in `{}` `{}`",
        short(&rollout.to_version),
        rollout.repo,
        rollout.channel
    );
    let old = rollout
        .from_version
        .as_deref()
        .map(|v| format!("`{}`", short(v)))
        .unwrap_or_else(|| "the old version".into());
    match action {
        RolloutVerb::Pause => format!(
            "⏸️ Pausing {what} at step {} (canary {}%): traffic stays as it is until `rollout resume`.",
            rollout.step,
            trim_float(rollout.weights.canary)
        ),
        RolloutVerb::Resume => format!("▶️ Resuming {what} from step {}.", rollout.step),
        RolloutVerb::Promote => format!(
            "⏩ Promoting {what} to 100% now: the remaining steps are skipped, the release env moves to it."
        ),
        RolloutVerb::Rollback => format!(
            "⏪ Rolling back {what}: all traffic to {old} now, then the canary is removed."
        ),
        RolloutVerb::Approve => format!(
            "✅ Approved the next step of {what} (you are recorded as the approver)."
        ),
        RolloutVerb::Status => rollout_line(rollout),
    }
}

fn short(version: &str) -> &str {
    &version[..version.len().min(7)]
}

/// "`shop` `production`: `1a2b3c4` progressing, step 2 of 4 (canary 25%, stable 75%)."
pub fn rollout_line(rollout: &RolloutView) -> String {
    let mut text = format!(
        "`{}` `{}`: `{}` {}, step {} of {} (canary {}%, stable {}%).",
        rollout.repo,
        rollout.channel,
        short(&rollout.to_version),
        rollout.state,
        rollout.step,
        rollout.steps.len().max(rollout.step),
        trim_float(rollout.weights.canary),
        trim_float(rollout.weights.stable),
    );
    if rollout.paused {
        text.push_str(" Paused.");
    }
    if let Some(reason) = &rollout.reason {
        let mut chars = reason.chars();
        let reason: String = chars
            .next()
            .map(|first| first.to_uppercase().chain(chars).collect())
            .unwrap_or_default();
        text.push_str(&format!(" {reason}"));
        if !reason.ends_with('.') {
            text.push('.');
        }
    }
    if let Some(comparison) = &rollout.comparison {
        if let Some(line) = comparison_line(comparison) {
            text.push_str(&format!("\n{line}"));
        }
    }
    text
}

/// "Canary: 0.4% errors (3 of 812), p99 142 ms · baseline: 0.3% (7 of 2,430), p99 138 ms. Why."
pub fn comparison_line(comparison: &Value) -> Option<String> {
    let side = |name: &str| -> Option<String> {
        let v = comparison.get(name)?;
        let requests = v.get("requests")?.as_u64()?;
        let errors = v.get("errors")?.as_u64().unwrap_or(0);
        let rate = v.get("error_rate").and_then(Value::as_f64).unwrap_or(0.0);
        let p99 = v
            .get("p99_ms")
            .and_then(Value::as_f64)
            .map(|p| format!(", p99 {} ms", trim_float((p * 10.0).round() / 10.0)))
            .unwrap_or_default();
        Some(format!(
            "{}% errors ({} of {}){p99}",
            trim_float((rate * 1000.0).round() / 10.0),
            thousands(errors),
            thousands(requests)
        ))
    };
    let (canary, baseline) = (side("canary")?, side("baseline")?);
    let why = comparison
        .get("why")
        .and_then(Value::as_str)
        .map(|w| format!(" {w}"))
        .unwrap_or_default();
    Some(format!("Canary: {canary} · baseline: {baseline}.{why}"))
}

fn status_text(status: &RolloutStatusView) -> String {
    let mut text = format!(
        "`{}` `{}`: at `{}`",
        status.repo,
        status.channel,
        status
            .version
            .as_deref()
            .map(short)
            .unwrap_or("nothing yet")
    );
    if status.frozen {
        text.push_str(&format!(
            ", frozen ({})",
            status.freeze_reason.as_deref().unwrap_or("no reason given")
        ));
    }
    text.push('.');
    match &status.rollout {
        Some(rollout) => {
            let live = !matches!(
                rollout.state,
                envmgr::rollout::RolloutState::Done
                    | envmgr::rollout::RolloutState::RolledBack
                    | envmgr::rollout::RolloutState::Superseded
            );
            text.push_str(if live {
                "\nRollout in progress: "
            } else {
                "\nLast rollout: "
            });
            text.push_str(&rollout_line(rollout));
            text.push_str(&format!("\nChart: {}", rollout.chart_url));
        }
        None => text.push_str(" No rollout yet: `release <repo> <commit|branch>` starts one."),
    }
    text
}

fn channel_line(channel: &ChannelView) -> String {
    if channel.frozen {
        format!(
            "🧊 `{}` `{}` is frozen: {}. Nothing starts or advances there until `channel unfreeze`.",
            channel.repo,
            channel.channel,
            channel.freeze_reason.as_deref().unwrap_or("no reason given")
        )
    } else {
        format!(
            "🌤️ `{}` `{}` is not frozen: rollouts there go on.",
            channel.repo, channel.channel
        )
    }
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.1}");
    text.strip_suffix(".0").map(str::to_string).unwrap_or(text)
}

/// 3874 -> "3,874".
pub fn thousands(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_the_issue_says() {
        assert_eq!(thousands(3874), "3,874");
        assert_eq!(thousands(212), "212");
        assert_eq!(thousands(1_000_000), "1,000,000");
        let comparison = serde_json::json!({
            "canary": {"requests": 212, "errors": 17, "error_rate": 0.0802, "p99_ms": 140.04},
            "baseline": {"requests": 3874, "errors": 8, "error_rate": 0.00206, "p99_ms": 120.0},
            "why": "errors higher."
        });
        let line = comparison_line(&comparison).unwrap();
        assert_eq!(
            line,
            "Canary: 8% errors (17 of 212), p99 140 ms · baseline: 0.2% errors (8 of 3,874), p99 120 ms. errors higher."
        );
    }
}
