//! The rollout analysis: given what the canary and the baseline (the stable version, running
//! at the same time on the same traffic) served during a step, decide whether to promote the
//! step, roll back, keep watching, or hold because the evidence did not come in time.
//!
//! It is a pure function (no I/O, no clock) so it can be checked by simulation. The
//! controller calls it after every batch of measurements, so every test here must stay valid
//! under continuous monitoring: a fixed-sample test looked at every few seconds would abort
//! good versions far more often than its nominal level.
//!
//! False-abort budget. `alpha` is the probability, on A/A traffic, of rolling back a step at
//! any point while it is watched. It is split between the two checks by Bonferroni
//! (`latency_alpha` for latency, the rest for errors), so the chance that either check
//! falsely aborts is at most their sum.
//!
//! - Errors: conditional on an error happening, it came from the canary with probability equal
//!   to the canary's share of requests when both versions fail equally often. The sequence of
//!   error origins is then a Bernoulli sequence, and a mixture of likelihood ratios over
//!   "the canary fails r times as often" is a nonnegative martingale under A/A traffic. By
//!   Ville's inequality it ever exceeds `1 / error_alpha` with probability at most
//!   `error_alpha`, however often it is looked at.
//! - Latency: the Mann–Whitney U statistic (canary slower than baseline by more than
//!   `latency_margin_ms`), standardised with the normal approximation, compared with a time-uniform boundary (Robbins' normal mixture)
//!   instead of a fixed quantile, which keeps `latency_alpha` valid over repeated looks.
//! - Promotion: a sequential probability ratio test of "the canary's error rate is the
//!   baseline's" against "it is worse by `min_effect`", using the baseline's rate as the
//!   reference; the step is promoted when that ratio reaches `1 / beta` (so a canary worse by
//!   `min_effect` is promoted with probability at most about `beta`), the step has run for
//!   `min_step_time`, the canary has served `min_requests`, and neither abort check fired.

use std::fmt;
use std::time::Duration;

/// What one version served during the step's window. Canary and baseline must cover the same
/// window, so both saw the same traffic mix.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionSample {
    /// Requests answered or attempted.
    pub requests: u64,
    /// Failed requests: 5xx answers plus connection errors.
    pub errors: u64,
    /// Latencies of the answered requests, in milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// How strict the analysis is. The defaults suit a front door's own counters.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSettings {
    /// Total false-abort budget: the chance of rolling back a step on A/A traffic.
    pub alpha: f64,
    /// Part of `alpha` spent on the latency check; errors get `alpha - latency_alpha`.
    pub latency_alpha: f64,
    /// Chance of promoting a canary whose error rate is worse by `min_effect`.
    pub beta: f64,
    /// The error-rate increase worth detecting, absolute (0.01 = one percentage point).
    pub min_effect: f64,
    /// Canary requests needed before a step can be promoted.
    pub min_requests: u64,
    /// How long a step runs at least before it can be promoted.
    pub min_step_time: Duration,
    /// Canary latency samples needed before the latency check can abort.
    pub min_latency_samples: usize,
    /// How much slower (ms) the canary may be before the latency check counts it as slower:
    /// the rank test compares canary latencies minus this margin with the baseline's. Without
    /// it, any systematic sub-millisecond difference (a fresh container, the front door's
    /// path to another env) is detected given enough requests and aborts good versions.
    pub latency_margin_ms: f64,
}

impl Default for AnalysisSettings {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            latency_alpha: 0.005,
            beta: 0.05,
            min_effect: 0.01,
            min_requests: 100,
            min_step_time: Duration::from_secs(30),
            min_latency_samples: 20,
            latency_margin_ms: 10.0,
        }
    }
}

/// Which comparison failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Errors,
    Latency,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Check::Errors => "errors",
            Check::Latency => "latency",
        })
    }
}

/// The decision for the current step, with a sentence people read in chat and status.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The canary is no worse than the baseline: move to the next step.
    Promote { why: String },
    /// The canary is worse: weight to 0 and remove it.
    RollBack {
        check: Check,
        /// For errors the log of the mixture likelihood ratio; for latency the rank test's z.
        statistic: f64,
        /// Error rate (fraction) or median latency (ms) of the canary.
        canary_value: f64,
        /// The same for the baseline.
        baseline_value: f64,
        /// `canary_value - baseline_value`.
        effect: f64,
        why: String,
    },
    /// `max_step_time` passed without enough evidence either way: hold and notify; this is
    /// neither a pass nor a failure.
    Inconclusive { why: String },
    /// Keep watching.
    Continue { why: String },
}

impl Verdict {
    pub fn why(&self) -> &str {
        match self {
            Verdict::Promote { why }
            | Verdict::RollBack { why, .. }
            | Verdict::Inconclusive { why }
            | Verdict::Continue { why } => why,
        }
    }
}

/// Rate ratios (canary / baseline) the error mixture puts equal weight on: from a 50% increase
/// to a canary that fails on almost every request.
const ERROR_RATIO_MIXTURE: [f64; 8] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0];

/// Spread of Robbins' normal mixture for the latency boundary, in effective samples: the
/// boundary is tightest around this many samples.
const LATENCY_MIXTURE_SPREAD: f64 = 100.0;

/// Floor for the baseline's error rate in the promotion test, so a baseline without errors
/// does not make a single canary error infinitely damning.
const BASELINE_RATE_FLOOR: f64 = 1e-4;

/// Decide the current step. `step_elapsed` is how long the step has been watched and
/// `max_step_time` how long it may be before the rollout holds.
pub fn analyse(
    canary: &VersionSample,
    baseline: &VersionSample,
    step_elapsed: Duration,
    max_step_time: Duration,
    settings: &AnalysisSettings,
) -> Verdict {
    let error_alpha = (settings.alpha - settings.latency_alpha).max(f64::MIN_POSITIVE);
    let canary_rate = rate(canary);
    let baseline_rate = rate(baseline);
    let errors_text = format!(
        "errors {} vs {} over {} vs {} requests",
        percent(canary_rate),
        percent(baseline_rate),
        thousands(canary.requests),
        thousands(baseline.requests)
    );

    let error_evidence = error_abort_log_evidence(canary, baseline);
    let error_threshold = (1.0 / error_alpha).ln();
    if error_evidence >= error_threshold {
        return Verdict::RollBack {
            check: Check::Errors,
            statistic: error_evidence,
            canary_value: canary_rate,
            baseline_value: baseline_rate,
            effect: canary_rate - baseline_rate,
            why: format!(
                "{errors_text}: the canary fails more often (log evidence {error_evidence:.1} \
                 above the abort threshold {error_threshold:.1})"
            ),
        };
    }

    let latency = latency_check(canary, baseline, settings);
    if let Some(latency) = &latency {
        if latency.z >= latency.boundary {
            return Verdict::RollBack {
                check: Check::Latency,
                statistic: latency.z,
                canary_value: latency.canary_median,
                baseline_value: latency.baseline_median,
                effect: latency.canary_median - latency.baseline_median,
                why: format!(
                    "median latency {} vs {} over {} vs {} requests: the canary is slower \
                     (rank test z = {:.1} above the boundary {:.1})",
                    millis(latency.canary_median),
                    millis(latency.baseline_median),
                    thousands(canary.requests),
                    thousands(baseline.requests),
                    latency.z,
                    latency.boundary
                ),
            };
        }
    }

    let promote_evidence = no_worse_log_evidence(canary, baseline, settings.min_effect);
    let promote_threshold = (1.0 / settings.beta).ln();
    let enough_evidence = promote_evidence >= promote_threshold;
    let enough_requests = canary.requests >= settings.min_requests;
    let enough_time = step_elapsed >= settings.min_step_time;
    if enough_evidence && enough_requests && enough_time {
        return Verdict::Promote {
            why: format!(
                "{errors_text}: the canary is no worse than the baseline by {} points",
                points(settings.min_effect)
            ),
        };
    }

    let waiting_for = if !enough_requests {
        format!(
            "{} of {} canary requests",
            thousands(canary.requests),
            thousands(settings.min_requests)
        )
    } else if !enough_time {
        format!(
            "the minimum step time ({} of {})",
            seconds(step_elapsed),
            seconds(settings.min_step_time)
        )
    } else {
        format!(
            "evidence that the canary is no worse by {} points",
            points(settings.min_effect)
        )
    };
    if step_elapsed >= max_step_time {
        return Verdict::Inconclusive {
            why: format!(
                "{errors_text}: no decision after {}; still waiting for {waiting_for}",
                seconds(max_step_time)
            ),
        };
    }
    Verdict::Continue {
        why: format!("{errors_text}: waiting for {waiting_for}"),
    }
}

fn rate(sample: &VersionSample) -> f64 {
    if sample.requests == 0 {
        0.0
    } else {
        sample.errors.min(sample.requests) as f64 / sample.requests as f64
    }
}

/// Log of the mixture likelihood ratio "the canary fails r times as often as the baseline"
/// against "both fail equally", computed on where the errors came from. Under equal rates each
/// error is the canary's with probability `share` (its share of requests, estimated from the
/// counts), whatever the common rate is, so the baseline's rate needs no estimate.
fn error_abort_log_evidence(canary: &VersionSample, baseline: &VersionSample) -> f64 {
    let total_requests = canary.requests + baseline.requests;
    let canary_errors = canary.errors.min(canary.requests) as f64;
    let total_errors = canary_errors + baseline.errors.min(baseline.requests) as f64;
    if total_requests == 0 || canary.requests == 0 || baseline.requests == 0 || total_errors == 0.0
    {
        return 0.0;
    }
    let share = canary.requests as f64 / total_requests as f64;
    let baseline_errors = total_errors - canary_errors;
    let log_terms: Vec<f64> = ERROR_RATIO_MIXTURE
        .iter()
        .map(|ratio| {
            let alt = ratio * share / (ratio * share + 1.0 - share);
            canary_errors * (alt / share).ln()
                + baseline_errors * ((1.0 - alt) / (1.0 - share)).ln()
        })
        .collect();
    log_sum_exp(&log_terms) - (ERROR_RATIO_MIXTURE.len() as f64).ln()
}

/// Log of the likelihood ratio "the canary fails as often as the baseline" against "it fails
/// `min_effect` more often", on the canary's own requests, with the baseline's observed rate
/// as the reference (the baseline usually serves many more requests, so its rate is the
/// better known one).
fn no_worse_log_evidence(canary: &VersionSample, baseline: &VersionSample, min_effect: f64) -> f64 {
    // `max` keeps the bounds ordered (and a NaN effect harmless) whatever the settings say:
    // `clamp` would panic on a `min_effect` near one half.
    let ceiling = (1.0 - 2.0 * min_effect.max(1e-6)).max(BASELINE_RATE_FLOOR);
    let good = rate(baseline).max(BASELINE_RATE_FLOOR).min(ceiling);
    let bad = (good + min_effect).min(1.0 - 1e-9);
    let errors = canary.errors.min(canary.requests) as f64;
    let successes = canary.requests as f64 - errors;
    errors * (good / bad).ln() + successes * ((1.0 - good) / (1.0 - bad)).ln()
}

struct LatencyComparison {
    z: f64,
    boundary: f64,
    canary_median: f64,
    baseline_median: f64,
}

/// Mann–Whitney U of "canary slower than baseline", standardised with the tie-corrected normal
/// approximation, and the time-uniform boundary it must cross at `latency_alpha`.
fn latency_check(
    canary: &VersionSample,
    baseline: &VersionSample,
    settings: &AnalysisSettings,
) -> Option<LatencyComparison> {
    // Shifted by the margin: the test asks whether the canary is slower by more than it.
    let margin = settings.latency_margin_ms.max(0.0);
    let canary_ms: Vec<f64> = canary
        .latencies_ms
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .map(|v| v - margin)
        .collect();
    let baseline_ms: Vec<f64> = baseline
        .latencies_ms
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if canary_ms.len() < settings.min_latency_samples.max(1) || baseline_ms.len() < 2 {
        return None;
    }
    let n1 = canary_ms.len() as f64;
    let n2 = baseline_ms.len() as f64;
    let n = n1 + n2;

    // Rank the pooled samples, giving tied values their average rank.
    let mut pooled: Vec<(f64, bool)> = canary_ms
        .iter()
        .map(|&v| (v, true))
        .chain(baseline_ms.iter().map(|&v| (v, false)))
        .collect();
    pooled.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let mut canary_rank_sum = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < pooled.len() {
        let mut end = start + 1;
        while end < pooled.len() && pooled[end].0 == pooled[start].0 {
            end += 1;
        }
        let tied = (end - start) as f64;
        let average_rank = (start + end + 1) as f64 / 2.0;
        let canary_in_group = pooled[start..end].iter().filter(|(_, c)| *c).count() as f64;
        canary_rank_sum += canary_in_group * average_rank;
        tie_term += tied * tied * tied - tied;
        start = end;
    }
    let u = canary_rank_sum - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let z = if variance > 0.0 {
        (u - mean) / variance.sqrt()
    } else {
        0.0
    };

    // Robbins' normal mixture: P(exists t: |S_t| >= sqrt((V+r)(ln((V+r)/r) + 2 ln(1/a)))) <= a
    // for a Gaussian sum with variance V. The information of the rank statistic grows with
    // the effective sample size n1*n2/(n1+n2); in z units the boundary is below.
    let information = n1 * n2 / n;
    let spread = LATENCY_MIXTURE_SPREAD;
    let boundary = ((1.0 + spread / information)
        * (((information + spread) / spread).ln() + 2.0 * (1.0 / settings.latency_alpha).ln()))
    .sqrt();

    // The pooled order already sorts each version's values: take the medians from it.
    let sorted_of = |canary_side: bool| -> Vec<f64> {
        pooled
            .iter()
            .filter(|(_, c)| *c == canary_side)
            .map(|(v, _)| *v)
            .collect()
    };
    Some(LatencyComparison {
        z,
        boundary,
        canary_median: median_of_sorted(&sorted_of(true)) + margin,
        baseline_median: median_of_sorted(&sorted_of(false)),
    })
}

fn median_of_sorted(sorted: &[f64]) -> f64 {
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn log_sum_exp(values: &[f64]) -> f64 {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// "8.1%"; small nonzero rates keep two decimals so they do not read as 0.
fn percent(fraction: f64) -> String {
    let pct = fraction * 100.0;
    if pct > 0.0 && pct < 0.1 {
        format!("{pct:.2}%")
    } else {
        format!("{pct:.1}%")
    }
}

fn points(fraction: f64) -> String {
    let pts = fraction * 100.0;
    if pts.fract() == 0.0 {
        format!("{pts:.0}")
    } else {
        format!("{pts:.1}")
    }
}

fn millis(ms: f64) -> String {
    format!("{ms:.0} ms")
}

fn seconds(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

/// "3,874".
fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, errors: u64, latency_ms: f64) -> VersionSample {
        VersionSample {
            requests,
            errors,
            latencies_ms: (0..requests).map(|i| latency_ms + (i % 7) as f64).collect(),
        }
    }

    #[test]
    fn rollback_on_errors_reads_like_the_issue() {
        let verdict = analyse(
            &sample(212, 17, 50.0),
            &sample(3874, 8, 50.0),
            Duration::from_secs(20),
            Duration::from_secs(600),
            &AnalysisSettings::default(),
        );
        let Verdict::RollBack {
            check,
            effect,
            statistic,
            why,
            ..
        } = verdict
        else {
            panic!("expected a rollback, got {verdict:?}");
        };
        assert_eq!(check, Check::Errors);
        assert!(statistic > (1.0f64 / 0.005).ln());
        assert!((effect - (17.0 / 212.0 - 8.0 / 3874.0)).abs() < 1e-12);
        assert!(
            why.starts_with("errors 8.0% vs 0.2% over 212 vs 3,874 requests: the canary fails"),
            "{why}"
        );
    }

    #[test]
    fn rollback_on_latency_names_the_medians_and_z() {
        let verdict = analyse(
            &sample(200, 0, 250.0),
            &sample(3800, 0, 50.0),
            Duration::from_secs(20),
            Duration::from_secs(600),
            &AnalysisSettings::default(),
        );
        let Verdict::RollBack {
            check,
            canary_value,
            baseline_value,
            why,
            ..
        } = verdict
        else {
            panic!("expected a rollback, got {verdict:?}");
        };
        assert_eq!(check, Check::Latency);
        assert_eq!((canary_value, baseline_value), (253.0, 53.0));
        assert!(
            why.starts_with(
                "median latency 253 ms vs 53 ms over 200 vs 3,800 requests: the canary is slower \
                 (rank test z = "
            ),
            "{why}"
        );
    }

    #[test]
    fn a_canary_slower_by_less_than_the_margin_is_not_rolled_back() {
        // 1 ms slower on every request: certain, given 5,000 requests, but not a regression.
        let settings = AnalysisSettings::default();
        let verdict = analyse(
            &sample(5000, 0, 51.0),
            &sample(50000, 0, 50.0),
            Duration::from_secs(20),
            Duration::from_secs(600),
            &settings,
        );
        assert!(!matches!(verdict, Verdict::RollBack { .. }), "{verdict:?}");
        // Without the margin the rank test detects it.
        let no_margin = AnalysisSettings {
            latency_margin_ms: 0.0,
            ..settings
        };
        let verdict = analyse(
            &sample(5000, 0, 51.0),
            &sample(50000, 0, 50.0),
            Duration::from_secs(20),
            Duration::from_secs(600),
            &no_margin,
        );
        assert!(
            matches!(
                verdict,
                Verdict::RollBack {
                    check: Check::Latency,
                    ..
                }
            ),
            "{verdict:?}"
        );
    }

    #[test]
    fn promote_and_wait_texts() {
        let settings = AnalysisSettings::default();
        let promote = analyse(
            &sample(1000, 1, 50.0),
            &sample(19000, 40, 50.0),
            Duration::from_secs(60),
            Duration::from_secs(600),
            &settings,
        );
        assert_eq!(
            promote,
            Verdict::Promote {
                why: "errors 0.1% vs 0.2% over 1,000 vs 19,000 requests: the canary is no worse \
                      than the baseline by 1 points"
                    .into()
            }
        );
        let early = analyse(
            &sample(1000, 1, 50.0),
            &sample(19000, 40, 50.0),
            Duration::from_secs(10),
            Duration::from_secs(600),
            &settings,
        );
        assert_eq!(
            early.why(),
            "errors 0.1% vs 0.2% over 1,000 vs 19,000 requests: waiting for the minimum step \
             time (10s of 30s)"
        );
        let starved = analyse(
            &sample(12, 0, 50.0),
            &sample(230, 0, 50.0),
            Duration::from_secs(600),
            Duration::from_secs(600),
            &settings,
        );
        assert_eq!(
            starved,
            Verdict::Inconclusive {
                why: "errors 0.0% vs 0.0% over 12 vs 230 requests: no decision after 10m; still \
                      waiting for 12 of 100 canary requests"
                    .into()
            }
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(3874), "3,874");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(percent(0.081), "8.1%");
        assert_eq!(percent(0.0004), "0.04%");
        assert_eq!(percent(0.0), "0.0%");
    }

    #[test]
    fn no_traffic_is_no_evidence() {
        let empty = VersionSample::default();
        let verdict = analyse(
            &empty,
            &empty,
            Duration::ZERO,
            Duration::from_secs(600),
            &AnalysisSettings::default(),
        );
        assert!(matches!(verdict, Verdict::Continue { .. }), "{verdict:?}");
    }
}
