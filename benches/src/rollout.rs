//! `rollout-faults`: the rollout decision policies on the same simulated traffic, side by
//! side in one run.
//!
//! - Slipway: `envmgr::rollout::analyse` called every second on the step's window (canary and
//!   baseline since the step started), as the controller calls it; steps 5/25/50/100%,
//!   `min_step_time` 30 s, `max_step_time` 10 min, default analysis settings.
//! - Flagger-like: the Istio tutorial's `Canary` (Flagger docs, tutorials/istio-progressive-
//!   delivery): `interval: 1m`, `threshold: 5`, `stepWeight: 10`, `maxWeight: 50`,
//!   `request-success-rate` >= 99% over 1m and `request-duration` p99 <= 500 ms over 30s, on
//!   the canary. Each interval: roll back if the failed checks reached the threshold, else
//!   check; a failed check counts and holds the weight, a passed one adds a step, and a pass
//!   at `maxWeight` promotes (traffic on the new version at the next interval).
//! - Argo-like: the Argo Rollouts docs' background-analysis example (features/analysis.md):
//!   `setWeight` 20/40/60/80 with `pause: 10m` each, `startingStep: 2` (analysis from 40%),
//!   `AnalysisTemplate` success-rate with `interval: 5m`, `successCondition: result >= 0.95`,
//!   `failureLimit: 3` (failed when failures > 3, as the controller counts). The example's
//!   query is `irate(...[5m])`, the rate between the last two scrapes: modelled as the canary's
//!   success rate over the last 15 s (a 15 s scrape interval), measured on the canary's own
//!   requests (the favourable reading of the example's service argument).
//!
//! Traffic (`simulate`, reusable with any `Policy`): a constant request rate; each request is
//! routed to the canary with the current weight, fails with its version's rate, and gets a
//! latency of 20 ms + an exponential tail of mean 25 ms (0.1 ms resolution); the stable
//! version fails 0.2% of requests. Every request's random draws depend only on the seed, the
//! second and its index in the second, so all policies see the same traffic. Canary faults:
//! 100% 5xx, 5% 5xx, +200 ms, a crash loop (20 s up, then 10 s of connection errors), and
//! A/A (the canary is the stable version). A weight set at the end of a second applies from
//! the next one; the front door's own delay to weight 0 is not part of this model.

use std::time::{Duration, Instant};

use anyhow::Result;
use envmgr::rollout::{analyse, AnalysisSettings, Verdict, VersionSample};

/// The request stream.
#[derive(Debug, Clone, Copy)]
pub struct Traffic {
    pub requests_per_second: u32,
    /// The stable version's failure rate (and the canary's, unless a fault says otherwise).
    pub stable_error_rate: f64,
}

/// What is wrong with the canary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// A/A: the canary behaves exactly like the stable version.
    None,
    /// Every canary request fails with a 5xx.
    AllErrors,
    /// This fraction of canary requests fails with a 5xx.
    Errors(f64),
    /// Every canary answer is this much slower.
    ExtraLatencyMs(f64),
    /// The canary serves for `up_s`, then refuses connections for `down_s`, repeatedly.
    CrashLoop { up_s: u64, down_s: u64 },
}

impl Fault {
    fn label(&self) -> String {
        match self {
            Fault::None => "A/A".into(),
            Fault::AllErrors => "100% 5xx".into(),
            Fault::Errors(rate) => format!("{:.0}% 5xx", rate * 100.0),
            Fault::ExtraLatencyMs(ms) => format!("+{ms:.0} ms"),
            Fault::CrashLoop { up_s, down_s } => format!("crash loop {up_s}s/{down_s}s"),
        }
    }
}

/// One version's requests in one second.
#[derive(Debug, Clone, Default)]
pub struct VersionSecond {
    pub requests: u64,
    /// 5xx answers plus connection errors.
    pub errors: u64,
    /// Latencies of the answered requests (filled only for policies that ask for them).
    pub latencies_ms: Vec<f64>,
}

/// What the front door saw in one second.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub canary: VersionSecond,
    pub stable: VersionSecond,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RolledBack,
    /// The new version serves 100%.
    Completed,
    /// No decision possible: the rollout holds and asks people.
    Held,
}

/// A decision policy, fed one second of measurements at a time.
pub trait Policy {
    /// The canary's share of traffic now, 0..=1.
    fn canary_weight(&self) -> f64;
    /// Whether `observe` needs per-request latencies.
    fn needs_latencies(&self) -> bool;
    /// Called at the end of second `t` (covering t..t+1 s); a decision takes effect at t+1.
    fn observe(&mut self, t: u64, second: &Second) -> Option<Decision>;
}

/// What one simulated rollout came to.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// `None` when the time limit came first.
    pub decision: Option<Decision>,
    /// Simulated seconds from the start to the decision (or the limit).
    pub seconds: u64,
    pub canary_requests: u64,
    pub canary_failures: u64,
}

/// splitmix64, seeded per second so every policy draws the same requests.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs `policy` on the traffic until it decides or `limit_s` simulated seconds pass.
pub fn simulate(
    traffic: &Traffic,
    fault: Fault,
    policy: &mut dyn Policy,
    seed: u64,
    limit_s: u64,
) -> RunResult {
    let mut second = Second::default();
    let (mut canary_requests, mut canary_failures) = (0, 0);
    let with_latencies = policy.needs_latencies();
    for t in 0..limit_s {
        let weight = policy.canary_weight();
        second.canary.requests = 0;
        second.canary.errors = 0;
        second.canary.latencies_ms.clear();
        second.stable.requests = 0;
        second.stable.errors = 0;
        second.stable.latencies_ms.clear();
        let canary_down = matches!(fault, Fault::CrashLoop { up_s, down_s }
            if t % (up_s + down_s) >= up_s);
        let mut rng = SplitMix64(seed ^ t.wrapping_mul(0xA24B_AED4_963E_E407));
        for _ in 0..traffic.requests_per_second {
            let (route, fail, tail) = (rng.unit(), rng.unit(), rng.unit());
            let to_canary = route < weight;
            let (failed, extra_ms) = if to_canary {
                match fault {
                    Fault::AllErrors => (true, 0.0),
                    Fault::Errors(rate) => (fail < rate, 0.0),
                    Fault::ExtraLatencyMs(ms) => (fail < traffic.stable_error_rate, ms),
                    Fault::CrashLoop { .. } if canary_down => (true, 0.0),
                    _ => (fail < traffic.stable_error_rate, 0.0),
                }
            } else {
                (fail < traffic.stable_error_rate, 0.0)
            };
            let side = if to_canary {
                &mut second.canary
            } else {
                &mut second.stable
            };
            side.requests += 1;
            if failed {
                side.errors += 1;
            } else if with_latencies {
                let ms = 20.0 + extra_ms - 25.0 * (1.0 - tail).ln();
                side.latencies_ms.push((ms * 10.0).round() / 10.0);
            }
        }
        canary_requests += second.canary.requests;
        canary_failures += second.canary.errors;
        if let Some(decision) = policy.observe(t, &second) {
            return RunResult {
                decision: Some(decision),
                seconds: t + 1,
                canary_requests,
                canary_failures,
            };
        }
    }
    RunResult {
        decision: None,
        seconds: limit_s,
        canary_requests,
        canary_failures,
    }
}

// ---------------------------------------------------------------------------------------
// Policies

/// Slipway: the sequential analysis every second on the step's window.
pub struct Slipway {
    steps: Vec<f64>,
    step: usize,
    step_started: u64,
    canary: VersionSample,
    baseline: VersionSample,
    settings: AnalysisSettings,
    max_step_time: Duration,
}

impl Slipway {
    pub fn new() -> Self {
        Slipway {
            steps: vec![0.05, 0.25, 0.50, 1.0],
            step: 0,
            step_started: 0,
            canary: VersionSample::default(),
            baseline: VersionSample::default(),
            settings: AnalysisSettings::default(),
            max_step_time: Duration::from_secs(600),
        }
    }
}

impl Policy for Slipway {
    fn canary_weight(&self) -> f64 {
        self.steps[self.step]
    }

    fn needs_latencies(&self) -> bool {
        true
    }

    fn observe(&mut self, t: u64, second: &Second) -> Option<Decision> {
        for (sample, seen) in [
            (&mut self.canary, &second.canary),
            (&mut self.baseline, &second.stable),
        ] {
            sample.requests += seen.requests;
            sample.errors += seen.errors;
            sample.latencies_ms.extend_from_slice(&seen.latencies_ms);
        }
        let elapsed = Duration::from_secs(t + 1 - self.step_started);
        match analyse(
            &self.canary,
            &self.baseline,
            elapsed,
            self.max_step_time,
            &self.settings,
        ) {
            Verdict::Continue { .. } => None,
            Verdict::RollBack { .. } => Some(Decision::RolledBack),
            Verdict::Inconclusive { .. } => Some(Decision::Held),
            Verdict::Promote { .. } => {
                self.step += 1;
                if self.steps[self.step] >= 1.0 {
                    return Some(Decision::Completed);
                }
                self.step_started = t + 1;
                self.canary = VersionSample::default();
                self.baseline = VersionSample::default();
                None
            }
        }
    }
}

/// Flagger's canary analysis as configured in its Istio tutorial.
pub struct FlaggerLike {
    weight: f64,
    failed_checks: u32,
    promoting: bool,
    /// Per-second canary (requests, errors) over the last minute.
    minute: std::collections::VecDeque<(u64, u64)>,
    /// Per-second canary latencies over the last 30 s.
    half_minute: std::collections::VecDeque<Vec<f64>>,
}

const FLAGGER_INTERVAL_S: u64 = 60;
const FLAGGER_THRESHOLD: u32 = 5;
const FLAGGER_STEP: f64 = 0.10;
const FLAGGER_MAX: f64 = 0.50;
const FLAGGER_MIN_SUCCESS: f64 = 0.99;
const FLAGGER_MAX_P99_MS: f64 = 500.0;

impl FlaggerLike {
    pub fn new() -> Self {
        FlaggerLike {
            // The first interval starts the analysis and routes `stepWeight` at once.
            weight: FLAGGER_STEP,
            failed_checks: 0,
            promoting: false,
            minute: Default::default(),
            half_minute: Default::default(),
        }
    }

    fn checks_pass(&self) -> bool {
        let (requests, errors) = self
            .minute
            .iter()
            .fold((0, 0), |(r, e), (sr, se)| (r + sr, e + se));
        if requests == 0 {
            return false; // "no values found": a failed check
        }
        let success = 1.0 - errors as f64 / requests as f64;
        let mut latencies: Vec<f64> = self.half_minute.iter().flatten().copied().collect();
        if latencies.is_empty() {
            return false;
        }
        latencies.sort_by(f64::total_cmp);
        let p99 = latencies[((latencies.len() as f64 * 0.99).ceil() as usize).saturating_sub(1)];
        success >= FLAGGER_MIN_SUCCESS && p99 <= FLAGGER_MAX_P99_MS
    }
}

impl Policy for FlaggerLike {
    fn canary_weight(&self) -> f64 {
        self.weight
    }

    fn needs_latencies(&self) -> bool {
        true
    }

    fn observe(&mut self, t: u64, second: &Second) -> Option<Decision> {
        self.minute
            .push_back((second.canary.requests, second.canary.errors));
        if self.minute.len() > 60 {
            self.minute.pop_front();
        }
        self.half_minute
            .push_back(second.canary.latencies_ms.clone());
        if self.half_minute.len() > 30 {
            self.half_minute.pop_front();
        }
        if !(t + 1).is_multiple_of(FLAGGER_INTERVAL_S) {
            return None;
        }
        if self.promoting {
            return Some(Decision::Completed);
        }
        if self.failed_checks >= FLAGGER_THRESHOLD {
            return Some(Decision::RolledBack);
        }
        if !self.checks_pass() {
            self.failed_checks += 1;
        } else if self.weight < FLAGGER_MAX - 1e-9 {
            self.weight += FLAGGER_STEP;
        } else {
            self.promoting = true;
        }
        None
    }
}

/// Argo Rollouts' documented background analysis.
pub struct ArgoLike {
    failed: u32,
    /// Per-second canary (requests, errors) over the last scrape interval.
    window: std::collections::VecDeque<(u64, u64)>,
    weight: f64,
}

const ARGO_WEIGHTS: [f64; 4] = [0.20, 0.40, 0.60, 0.80];
const ARGO_PAUSE_S: u64 = 600;
const ARGO_ANALYSIS_FROM_STEP: usize = 1; // startingStep: 2 is the second setWeight (40%)
const ARGO_INTERVAL_S: u64 = 300;
const ARGO_SUCCESS: f64 = 0.95;
const ARGO_FAILURE_LIMIT: u32 = 3;
const ARGO_SCRAPE_S: usize = 15;

impl ArgoLike {
    pub fn new() -> Self {
        ArgoLike {
            failed: 0,
            window: Default::default(),
            weight: ARGO_WEIGHTS[0],
        }
    }
}

impl Policy for ArgoLike {
    fn canary_weight(&self) -> f64 {
        self.weight
    }

    fn needs_latencies(&self) -> bool {
        false
    }

    fn observe(&mut self, t: u64, second: &Second) -> Option<Decision> {
        self.window
            .push_back((second.canary.requests, second.canary.errors));
        if self.window.len() > ARGO_SCRAPE_S {
            self.window.pop_front();
        }
        let now = t + 1;
        // Each setWeight is followed by its pause; after the last pause the rollout is done.
        let step = (now / ARGO_PAUSE_S) as usize;
        if step >= ARGO_WEIGHTS.len() {
            return Some(Decision::Completed);
        }
        self.weight = ARGO_WEIGHTS[step];
        let analysis_start = ARGO_ANALYSIS_FROM_STEP as u64 * ARGO_PAUSE_S;
        if now >= analysis_start && (now - analysis_start).is_multiple_of(ARGO_INTERVAL_S) {
            let (requests, errors) = self
                .window
                .iter()
                .fold((0, 0), |(r, e), (sr, se)| (r + sr, e + se));
            // 0/0 is NaN in PromQL, and NaN >= 0.95 is false: a failed measurement.
            let success = if requests == 0 {
                f64::NAN
            } else {
                1.0 - errors as f64 / requests as f64
            };
            if success.is_nan() || success < ARGO_SUCCESS {
                self.failed += 1;
                if self.failed > ARGO_FAILURE_LIMIT {
                    return Some(Decision::RolledBack);
                }
            }
        }
        None
    }
}

// ---------------------------------------------------------------------------------------
// The bench

const RATES: [u32; 3] = [10, 100, 1000];
const LIMIT_S: u64 = 3600;
const POLICIES: [&str; 3] = ["Slipway", "Flagger-like", "Argo-like"];

fn policy(name: &str) -> Box<dyn Policy> {
    match name {
        "Slipway" => Box::new(Slipway::new()),
        "Flagger-like" => Box::new(FlaggerLike::new()),
        _ => Box::new(ArgoLike::new()),
    }
}

/// Seeds differ per rate, fault and run, and are the same for every policy.
fn seed(rate: u32, fault_index: usize, run: usize) -> u64 {
    0x5EED_0013_0000_0000 ^ (u64::from(rate) << 32) ^ ((fault_index as u64) << 24) ^ run as u64
}

pub fn rollout_faults(fault_runs: usize, aa_runs: usize) -> Result<()> {
    let faults = [
        Fault::AllErrors,
        Fault::Errors(0.05),
        Fault::ExtraLatencyMs(200.0),
        Fault::CrashLoop {
            up_s: 20,
            down_s: 10,
        },
    ];
    println!(
        "== rollout-faults: simulated traffic at {RATES:?} requests/s, stable fails 0.2%, \
         latency 20 ms + exp(25 ms); {fault_runs} seeded runs per fault, {aa_runs} A/A runs per \
         rate; the same traffic for every policy"
    );
    println!("   Slipway: steps 5/25/50/100%, min_step_time 30s, max_step_time 10m, analyse() every second");
    println!("   Flagger-like (Istio tutorial): interval 1m, threshold 5, stepWeight 10, maxWeight 50, success >= 99% (1m), p99 <= 500 ms (30s)");
    println!("   Argo-like (analysis docs example): 20/40/60/80% with 10m pauses, analysis from 40%, every 5m, success >= 0.95, failureLimit 3");
    let started = Instant::now();
    let cell_width = 34;

    for rate in RATES {
        let traffic = Traffic {
            requests_per_second: rate,
            stable_error_rate: 0.002,
        };
        println!();
        println!("-- {rate} requests/s: bad canaries, median over {fault_runs} runs (decisions: rolled back / completed / held / none in 1 h)");
        print!("{:<22}", "fault");
        for name in POLICIES {
            print!("{name:>cell_width$}");
        }
        println!();
        for (fault_index, fault) in faults.iter().enumerate() {
            let mut lines = [String::new(), String::new()];
            for name in POLICIES {
                let results: Vec<RunResult> = (0..fault_runs)
                    .map(|run| {
                        simulate(
                            &traffic,
                            *fault,
                            policy(name).as_mut(),
                            seed(rate, fault_index, run),
                            LIMIT_S,
                        )
                    })
                    .collect();
                let rolled_back: Vec<&RunResult> = results
                    .iter()
                    .filter(|r| r.decision == Some(Decision::RolledBack))
                    .collect();
                let counts = outcome_counts(&results);
                if rolled_back.is_empty() {
                    lines[0].push_str(&format!(
                        "{:>cell_width$}",
                        format!("never rolled back {counts}")
                    ));
                    let canary = median(results.iter().map(|r| r.canary_requests as f64).collect());
                    lines[1].push_str(&format!(
                        "{:>cell_width$}",
                        format!("{canary:.0} canary req by the end")
                    ));
                } else {
                    let time = median(rolled_back.iter().map(|r| r.seconds as f64).collect());
                    let canary = median(
                        rolled_back
                            .iter()
                            .map(|r| r.canary_requests as f64)
                            .collect(),
                    );
                    let failed = median(
                        rolled_back
                            .iter()
                            .map(|r| r.canary_failures as f64)
                            .collect(),
                    );
                    lines[0].push_str(&format!(
                        "{:>cell_width$}",
                        format!("rollback at {} {counts}", clock(time))
                    ));
                    lines[1].push_str(&format!(
                        "{:>cell_width$}",
                        format!("{canary:.0} canary req ({failed:.0} failed)")
                    ));
                }
            }
            println!("{:<22}{}", fault.label(), lines[0]);
            println!("{:<22}{}", "", lines[1]);
        }

        // A/A: how often a good version is rolled back, and how long it takes to reach 100%.
        let mut aa = [String::new(), String::new()];
        for name in POLICIES {
            let results: Vec<RunResult> = (0..aa_runs)
                .map(|run| {
                    simulate(
                        &traffic,
                        Fault::None,
                        policy(name).as_mut(),
                        seed(rate, 99, run),
                        LIMIT_S,
                    )
                })
                .collect();
            let aborts = results
                .iter()
                .filter(|r| r.decision == Some(Decision::RolledBack))
                .count();
            let completed: Vec<f64> = results
                .iter()
                .filter(|r| r.decision == Some(Decision::Completed))
                .map(|r| r.seconds as f64)
                .collect();
            aa[0].push_str(&format!(
                "{:>cell_width$}",
                format!(
                    "{aborts}/{aa_runs} false aborts ({:.1}%)",
                    aborts as f64 * 100.0 / aa_runs as f64
                )
            ));
            aa[1].push_str(&format!(
                "{:>cell_width$}",
                if completed.is_empty() {
                    format!("never 100% {}", outcome_counts(&results))
                } else {
                    format!(
                        "100% at {} ({}/{aa_runs}){}",
                        clock(median(completed.clone())),
                        completed.len(),
                        held_note(&results)
                    )
                }
            ));
        }
        println!("{:<22}{}", "A/A (good version)", aa[0]);
        println!("{:<22}{}", "", aa[1]);
    }
    println!();
    println!(
        "simulated in {:.1} s; time is simulated time since the rollout started",
        started.elapsed().as_secs_f64()
    );

    // The targets at 100 rps, 5% first step, 100% 5xx.
    let traffic = Traffic {
        requests_per_second: 100,
        stable_error_rate: 0.002,
    };
    let worst = (0..fault_runs)
        .map(|run| {
            simulate(
                &traffic,
                Fault::AllErrors,
                &mut Slipway::new(),
                seed(100, 0, run),
                LIMIT_S,
            )
        })
        .fold((0u64, 0u64), |(s, c), r| {
            (s.max(r.seconds), c.max(r.canary_requests))
        });
    println!(
        "targets at 100 rps, 100% 5xx (Slipway, worst of {fault_runs} runs): decision at {} s \
         (target <= 60 s), {} canary requests before it (target <= 300)",
        worst.0, worst.1
    );
    Ok(())
}

/// "(20/0/0/0)": rolled back / completed / held / undecided.
fn outcome_counts(results: &[RunResult]) -> String {
    let count = |d: Option<Decision>| results.iter().filter(|r| r.decision == d).count();
    format!(
        "({}/{}/{}/{})",
        count(Some(Decision::RolledBack)),
        count(Some(Decision::Completed)),
        count(Some(Decision::Held)),
        count(None)
    )
}

fn held_note(results: &[RunResult]) -> String {
    let held = results
        .iter()
        .filter(|r| r.decision == Some(Decision::Held))
        .count();
    if held == 0 {
        String::new()
    } else {
        format!(", {held} held")
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// `45 s`, `6m00s`.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s < 120 {
        format!("{s} s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A policy that keeps a fixed weight and never decides.
    struct Fixed(f64);

    impl Policy for Fixed {
        fn canary_weight(&self) -> f64 {
            self.0
        }
        fn needs_latencies(&self) -> bool {
            false
        }
        fn observe(&mut self, _: u64, _: &Second) -> Option<Decision> {
            None
        }
    }

    #[test]
    fn traffic_is_split_by_weight_and_faults_apply_to_the_canary() {
        let traffic = Traffic {
            requests_per_second: 1000,
            stable_error_rate: 0.0,
        };
        let r = simulate(&traffic, Fault::AllErrors, &mut Fixed(0.25), 7, 100);
        assert!((r.canary_requests as f64 / 100_000.0 - 0.25).abs() < 0.01);
        assert_eq!(r.canary_failures, r.canary_requests);
        let r = simulate(
            &traffic,
            Fault::CrashLoop {
                up_s: 20,
                down_s: 10,
            },
            &mut Fixed(1.0),
            7,
            90,
        );
        assert_eq!(r.canary_failures, 30_000, "10 s of every 30 s down");
        let again = simulate(
            &traffic,
            Fault::CrashLoop {
                up_s: 20,
                down_s: 10,
            },
            &mut Fixed(1.0),
            7,
            90,
        );
        assert_eq!(r.canary_requests, again.canary_requests, "seeded");
    }

    #[test]
    fn each_policy_rolls_back_a_dead_canary_and_completes_a_good_one() {
        let traffic = Traffic {
            requests_per_second: 100,
            stable_error_rate: 0.002,
        };
        for name in POLICIES {
            let bad = simulate(
                &traffic,
                Fault::AllErrors,
                policy(name).as_mut(),
                1,
                LIMIT_S,
            );
            assert_eq!(bad.decision, Some(Decision::RolledBack), "{name}: {bad:?}");
            let good = simulate(&traffic, Fault::None, policy(name).as_mut(), 1, LIMIT_S);
            assert_eq!(good.decision, Some(Decision::Completed), "{name}: {good:?}");
        }
        // Flagger: five failed checks at 60..300 s, rollback at the next interval.
        let flagger = simulate(
            &traffic,
            Fault::AllErrors,
            &mut FlaggerLike::new(),
            1,
            LIMIT_S,
        );
        assert_eq!(flagger.seconds, 360);
        // Argo: analysis from 600 s, failures at 600, 900, 1200, 1500 s; the fourth exceeds 3.
        let argo = simulate(&traffic, Fault::AllErrors, &mut ArgoLike::new(), 1, LIMIT_S);
        assert_eq!(argo.seconds, 1500);
        // Argo completes after four 10-minute pauses.
        let argo_good = simulate(&traffic, Fault::None, &mut ArgoLike::new(), 1, LIMIT_S);
        assert_eq!(argo_good.seconds, 2400);
    }
}
