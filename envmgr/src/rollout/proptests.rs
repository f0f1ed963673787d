//! Simulated rollouts checked the way the controller checks them: after every batch of
//! requests. Traffic is drawn with a seeded splitmix64 so every run sees the same rollouts.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::analysis::{analyse, AnalysisSettings, Check, Verdict, VersionSample};

/// splitmix64: small, fast and good enough to draw traffic.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }
}

/// How one version behaves: its failure rate and extra latency.
#[derive(Clone, Copy)]
struct Behaviour {
    error_rate: f64,
    extra_latency_ms: f64,
}

/// A latency in ms: a fixed floor plus an exponential tail, rounded to 0.1 ms like a real
/// measurement (so ties happen).
fn latency(rng: &mut SplitMix64, extra_ms: f64) -> f64 {
    let ms = 20.0 + extra_ms - 25.0 * (1.0 - rng.unit()).ln();
    (ms * 10.0).round() / 10.0
}

struct Step {
    weight: f64,
    rps: f64,
    batch: Duration,
    max_step_time: Duration,
}

/// Runs one step: each request goes to the canary with probability `weight`, fails with its
/// version's rate, and the analysis is asked after every batch until it stops saying
/// Continue. Returns the verdict and the canary requests served by then.
fn run_step(
    rng: &mut SplitMix64,
    step: &Step,
    canary_behaviour: Behaviour,
    baseline_behaviour: Behaviour,
    settings: &AnalysisSettings,
) -> (Verdict, u64) {
    let mut canary = VersionSample::default();
    let mut baseline = VersionSample::default();
    let per_batch = (step.rps * step.batch.as_secs_f64()).round() as u64;
    let mut elapsed = Duration::ZERO;
    loop {
        for _ in 0..per_batch {
            let to_canary = rng.unit() < step.weight;
            let (sample, behaviour) = if to_canary {
                (&mut canary, canary_behaviour)
            } else {
                (&mut baseline, baseline_behaviour)
            };
            sample.requests += 1;
            if rng.unit() < behaviour.error_rate {
                sample.errors += 1;
            } else {
                sample
                    .latencies_ms
                    .push(latency(rng, behaviour.extra_latency_ms));
            }
        }
        elapsed += step.batch;
        let verdict = analyse(&canary, &baseline, elapsed, step.max_step_time, settings);
        if !matches!(verdict, Verdict::Continue { .. }) {
            return (verdict, canary.requests);
        }
    }
}

/// A/A traffic: both versions identical, error rates 0–10%, canary weight 5–50%. The
/// analysis may roll back at most 1% of them (the default `alpha`).
#[test]
fn aa_traffic_falsely_aborts_at_most_one_percent_of_rollouts() {
    const ROLLOUTS: usize = 1000;
    let settings = AnalysisSettings::default();
    let mut rng = SplitMix64(0x5EED_0013);
    let mut aborts = Vec::new();
    let mut promoted = 0;
    for index in 0..ROLLOUTS {
        let same = Behaviour {
            error_rate: rng.between(0.0, 0.10),
            extra_latency_ms: 0.0,
        };
        let step = Step {
            weight: rng.between(0.05, 0.50),
            rps: rng.between(10.0, 40.0),
            batch: Duration::from_secs(5),
            max_step_time: Duration::from_secs(300),
        };
        let (verdict, _) = run_step(&mut rng, &step, same, same, &settings);
        match verdict {
            Verdict::RollBack { .. } => aborts.push((index, verdict)),
            Verdict::Promote { .. } => promoted += 1,
            _ => {}
        }
    }
    eprintln!(
        "A/A: {} false aborts and {promoted} promotions over {ROLLOUTS} rollouts",
        aborts.len()
    );
    assert!(
        aborts.len() * 100 <= ROLLOUTS,
        "{} false aborts over {ROLLOUTS} A/A rollouts: {aborts:?}",
        aborts.len()
    );
    // An analysis that never promotes would pass the line above trivially. Not every A/A step
    // can promote: at a 10% error rate, ruling out +1 point takes thousands of canary
    // requests, more than a low-traffic step serves in 5 minutes, so those end Inconclusive.
    assert!(
        promoted * 3 >= ROLLOUTS,
        "only {promoted} A/A rollouts promoted"
    );
}

/// A good version at the first step (5%, 100 rps, 0.2% errors on both sides)
/// promotes; a canary failing 5% of requests against that baseline is rolled back.
#[test]
fn good_version_promotes_and_five_percent_5xx_rolls_back() {
    let settings = AnalysisSettings::default();
    let step = Step {
        weight: 0.05,
        rps: 100.0,
        batch: Duration::from_secs(1),
        max_step_time: Duration::from_secs(600),
    };
    let stable = Behaviour {
        error_rate: 0.002,
        extra_latency_ms: 0.0,
    };
    let flaky = Behaviour {
        error_rate: 0.05,
        ..stable
    };
    for seed in 0..20 {
        let mut rng = SplitMix64(seed);
        let (verdict, _) = run_step(&mut rng, &step, stable, stable, &settings);
        assert!(
            matches!(verdict, Verdict::Promote { .. }),
            "seed {seed}: {verdict:?}"
        );
        let (verdict, canary_requests) = run_step(&mut rng, &step, flaky, stable, &settings);
        assert!(
            matches!(
                verdict,
                Verdict::RollBack {
                    check: Check::Errors,
                    ..
                }
            ),
            "seed {seed}: {verdict:?}"
        );
        assert!(
            canary_requests <= 1000,
            "seed {seed}: {canary_requests} canary requests"
        );
    }
}

proptest! {
    #![proptest_config(Config::with_cases(32))]

    /// The target: a canary answering 5xx to everything at 5% weight and 100 rps is
    /// rolled back within 300 canary requests.
    #[test]
    fn all_5xx_canary_rolls_back_within_300_canary_requests(
        seed in any::<u64>(),
        baseline_rate in 0.0f64..0.05,
    ) {
        let mut rng = SplitMix64(seed);
        let step = Step {
            weight: 0.05,
            rps: 100.0,
            batch: Duration::from_secs(1),
            max_step_time: Duration::from_secs(600),
        };
        let broken = Behaviour { error_rate: 1.0, extra_latency_ms: 0.0 };
        let stable = Behaviour { error_rate: baseline_rate, extra_latency_ms: 0.0 };
        let (verdict, canary_requests) =
            run_step(&mut rng, &step, broken, stable, &AnalysisSettings::default());
        let is_error_rollback = matches!(verdict, Verdict::RollBack { check: Check::Errors, .. });
        prop_assert!(is_error_rollback, "{:?}", verdict);
        prop_assert!(canary_requests <= 300, "rolled back after {} canary requests", canary_requests);
    }

    /// A canary 200 ms slower on every request is rolled back on latency.
    #[test]
    fn slower_canary_rolls_back_on_latency(
        seed in any::<u64>(),
        error_rate in 0.0f64..0.02,
        weight in 0.05f64..0.5,
    ) {
        let mut rng = SplitMix64(seed);
        let step = Step {
            weight,
            rps: 100.0,
            batch: Duration::from_secs(1),
            max_step_time: Duration::from_secs(600),
        };
        let slow = Behaviour { error_rate, extra_latency_ms: 200.0 };
        let stable = Behaviour { error_rate, extra_latency_ms: 0.0 };
        let (verdict, canary_requests) =
            run_step(&mut rng, &step, slow, stable, &AnalysisSettings::default());
        let is_latency_rollback = matches!(verdict, Verdict::RollBack { check: Check::Latency, .. });
        prop_assert!(is_latency_rollback, "{:?}", verdict);
        prop_assert!(canary_requests <= 300, "rolled back after {} canary requests", canary_requests);
    }

    /// Too few canary requests by max_step_time: hold (Inconclusive), never promote.
    #[test]
    fn too_few_requests_is_inconclusive_never_promote(
        canary_requests in 0u64..100,
        canary_errors in 0u64..3,
        baseline_requests in 0u64..5_000,
        baseline_errors_per_mille in 0u64..30,
        overtime_s in 0u64..600,
    ) {
        let settings = AnalysisSettings::default();
        let canary = VersionSample {
            requests: canary_requests,
            errors: canary_errors.min(canary_requests),
            latencies_ms: vec![40.0; canary_requests as usize],
        };
        let baseline = VersionSample {
            requests: baseline_requests,
            errors: baseline_requests * baseline_errors_per_mille / 1000,
            latencies_ms: vec![40.0; baseline_requests as usize],
        };
        let max_step_time = Duration::from_secs(600);
        let verdict = analyse(
            &canary,
            &baseline,
            max_step_time + Duration::from_secs(overtime_s),
            max_step_time,
            &settings,
        );
        let holds = matches!(verdict, Verdict::Inconclusive { .. } | Verdict::RollBack { .. });
        prop_assert!(holds, "{:?}", verdict);
    }
}
