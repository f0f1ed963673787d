//! A discrete-event simulator of a submit queue at saturation: the same [`machine::step`] the
//! reconciler drives, against a model CI and forge instead of git and envs.
//!
//! The model: `slots` CI slots, each test run holding one for a lognormally spread time of
//! mean `test_minutes`; each change independently bad with probability `bad` (a tree fails
//! when it holds a bad change); a good tree fails spuriously with probability `flake` per run.
//! The queue is kept at `queue` changes: each merge or eviction brings the next change in,
//! until `changes` have arrived. Building a candidate and landing it take no time (seconds
//! beside a test run). Every policy runs on the one machine, as [`Settings`]: serial
//! one-at-a-time (bors), a reset-everything-behind-a-failure chain (Zuul, GitHub's merge
//! queue) and Slipway's own.
//!
//! The simulator checks the guarantee as it goes: a landing whose tree did not pass on its
//! last run, or was not built on the target's current head, is counted, and so is a landed
//! bad change (main broken).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};

use super::machine::{
    self, Action, BuildResult, CandidateId, EntryId, EntryState, Event, QueueState, Settings,
    Speculation,
};

/// The model CI and the queue's load.
#[derive(Clone, Debug)]
pub struct Model {
    /// Changes that arrive over the run.
    pub changes: usize,
    /// CI slots: test runs at once.
    pub slots: usize,
    /// Mean duration of one test run.
    pub test_minutes: f64,
    /// Standard deviation of the logarithm of a run's duration.
    pub spread: f64,
    /// Probability that a change is bad.
    pub bad: f64,
    /// Probability that a run of a good tree fails anyway.
    pub flake: f64,
    /// Changes kept in the queue (saturation).
    pub queue: usize,
    pub seed: u64,
}

impl Default for Model {
    /// The reference scenario.
    fn default() -> Self {
        Self {
            changes: 100_000,
            slots: 8,
            test_minutes: 30.0,
            spread: 0.5,
            bad: 0.1,
            flake: 0.02,
            queue: 64,
            seed: 0x5eed_0f51_1b0a_7500,
        }
    }
}

/// A scheduling policy: a name and the machine's settings that make it.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: &'static str,
    pub settings: Settings,
}

/// Serial one-at-a-time (bors), reset-everything-behind with depth `slots` (Zuul, GitHub's
/// merge queue; neither re-runs a failure), and Slipway's scheduler with `slots` in parallel.
pub fn policies(slots: usize) -> Vec<Policy> {
    vec![
        Policy {
            name: "serial (bors)",
            settings: Settings {
                parallel: 1,
                batch: 1,
                retries: 0,
                speculation: Speculation::Chain,
            },
        },
        Policy {
            name: "reset-behind (Zuul, GitHub)",
            settings: Settings {
                parallel: slots,
                batch: 1,
                retries: 0,
                speculation: Speculation::Chain,
            },
        },
        Policy {
            name: "Slipway",
            settings: Settings {
                parallel: slots,
                ..Settings::default()
            },
        },
    ]
}

/// What one policy did with the model's changes.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub merged: u64,
    pub good: u64,
    pub bad: u64,
    pub evicted_good: u64,
    pub evicted_bad: u64,
    /// Test runs started, including those cancelled before they finished.
    pub runs: u64,
    pub cancelled_runs: u64,
    pub flaky: u64,
    /// Landed trees holding a bad change.
    pub main_broken: u64,
    /// Landings without a pass on exactly that tree, or not built on the target's head.
    pub unsafe_landings: u64,
    /// Simulated time until the last change was merged or evicted.
    pub hours: f64,
    /// Slot time spent in test runs.
    pub busy_slot_hours: f64,
    /// Enqueue-to-merge times of merged changes, in minutes, sorted.
    pub latencies: Vec<f64>,
    /// Changes still in the queue when nothing was left to happen (a stuck policy).
    pub stuck: u64,
}

impl Report {
    pub fn merges_per_hour(&self) -> f64 {
        self.merged as f64 / self.hours.max(f64::MIN_POSITIVE)
    }

    pub fn builds_per_merge(&self) -> f64 {
        self.runs as f64 / self.merged.max(1) as f64
    }

    /// Good changes evicted, as a share of all good changes, in percent.
    pub fn wrongly_evicted_percent(&self) -> f64 {
        100.0 * self.evicted_good as f64 / self.good.max(1) as f64
    }

    /// The `q`-quantile (0..=1) of enqueue-to-merge latency, in minutes.
    pub fn latency_minutes(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let at = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[at]
    }

    /// Share of slot time spent testing, in percent.
    pub fn utilisation_percent(&self, slots: usize) -> f64 {
        100.0 * self.busy_slot_hours / (self.hours * slots as f64).max(f64::MIN_POSITIVE)
    }
}

/// Runs `settings` against `model` to the last change.
pub fn simulate(model: &Model, settings: &Settings) -> Report {
    let mut sim = Sim {
        model,
        settings,
        rng: Rng(model.seed),
        state: QueueState::default(),
        now: 0.0,
        timers: BinaryHeap::new(),
        running: HashMap::new(),
        waiting_for_slot: VecDeque::new(),
        trees: HashMap::new(),
        changes: HashMap::new(),
        arrived: 0,
        main_version: 0,
        last_landed: None,
        next_run: 0,
        inbox: VecDeque::new(),
        report: Report::default(),
    };
    sim.run();
    sim.report
}

struct Sim<'a> {
    model: &'a Model,
    settings: &'a Settings,
    rng: Rng,
    state: QueueState,
    /// Minutes since the start.
    now: f64,
    /// When running tests finish: (time bits, run).
    timers: BinaryHeap<Reverse<(u64, u64)>>,
    running: HashMap<u64, Run>,
    waiting_for_slot: VecDeque<CandidateId>,
    trees: HashMap<CandidateId, Tree>,
    changes: HashMap<EntryId, Change>,
    arrived: usize,
    /// Landings so far: the target's head.
    main_version: u64,
    last_landed: Option<CandidateId>,
    next_run: u64,
    inbox: VecDeque<Event>,
    report: Report,
}

struct Run {
    candidate: CandidateId,
    started: f64,
}

struct Tree {
    bad: bool,
    built_on: Base,
    last_run_passed: bool,
}

enum Base {
    Target { version: u64 },
    Candidate(CandidateId),
}

struct Change {
    arrived: f64,
    bad: bool,
}

impl Sim<'_> {
    fn run(&mut self) {
        for _ in 0..self.model.queue.clamp(1, self.model.changes.max(1)) {
            self.arrive();
        }
        self.drain();
        let mut steps = 0u64;
        while let Some(Reverse((at, run))) = self.timers.pop() {
            let Some(finished) = self.running.remove(&run) else {
                continue; // cancelled
            };
            self.now = f64::from_bits(at);
            self.report.busy_slot_hours += (self.now - finished.started) / 60.0;
            let tree = self.trees.get_mut(&finished.candidate);
            let passed = match tree {
                Some(tree) => {
                    tree.last_run_passed = !tree.bad && self.rng.uniform() >= self.model.flake;
                    tree.last_run_passed
                }
                None => false,
            };
            self.fill_slots();
            self.inbox.push_back(Event::Tested {
                candidate: finished.candidate,
                passed,
            });
            self.drain();
            steps += 1;
            if steps.is_multiple_of(64) {
                self.prune();
            }
        }
        self.report.hours = self.now / 60.0;
        self.report.stuck = self
            .state
            .entries
            .iter()
            .filter(|e| e.state.is_live())
            .count() as u64;
        self.report.latencies.sort_by(f64::total_cmp);
    }

    fn drain(&mut self) {
        while let Some(event) = self.inbox.pop_front() {
            for action in machine::step(&mut self.state, self.settings, event) {
                self.carry_out(action);
            }
        }
    }

    fn carry_out(&mut self, action: Action) {
        match action {
            Action::Build {
                candidate,
                parent,
                changes,
            } => {
                let (base_bad, built_on) = match parent {
                    // A parent the simulator never built is a broken plan: its tree fails.
                    Some(p) => (self.trees.get(&p).is_none_or(|t| t.bad), Base::Candidate(p)),
                    None => (
                        self.report.main_broken > 0,
                        Base::Target {
                            version: self.main_version,
                        },
                    ),
                };
                let bad = base_bad
                    || changes
                        .iter()
                        .any(|e| self.changes.get(e).is_some_and(|c| c.bad));
                self.trees.insert(
                    candidate,
                    Tree {
                        bad,
                        built_on,
                        last_run_passed: false,
                    },
                );
                self.inbox.push_back(Event::Built {
                    candidate,
                    result: BuildResult::Ready,
                });
            }
            Action::Test { candidate } => {
                self.waiting_for_slot.push_back(candidate);
                self.fill_slots();
            }
            Action::Cancel { candidate } => {
                self.waiting_for_slot.retain(|&c| c != candidate);
                let cancelled: Vec<u64> = self
                    .running
                    .iter()
                    .filter(|(_, r)| r.candidate == candidate)
                    .map(|(&run, _)| run)
                    .collect();
                for run in cancelled {
                    if let Some(r) = self.running.remove(&run) {
                        self.report.cancelled_runs += 1;
                        self.report.busy_slot_hours += (self.now - r.started) / 60.0;
                    }
                }
                self.fill_slots();
            }
            Action::Land { candidate } => {
                let safe = self.trees.get(&candidate).is_some_and(|t| {
                    t.last_run_passed
                        && match t.built_on {
                            Base::Target { version } => version == self.main_version,
                            Base::Candidate(p) => self.last_landed == Some(p),
                        }
                });
                if !safe {
                    self.report.unsafe_landings += 1;
                }
                if self.trees.get(&candidate).is_none_or(|t| t.bad) {
                    self.report.main_broken += 1;
                }
                self.main_version += 1;
                self.last_landed = Some(candidate);
                self.inbox.push_back(Event::Landed { candidate });
            }
            Action::Merged { entry, .. } => {
                if let Some(change) = self.changes.remove(&entry) {
                    self.report.merged += 1;
                    self.report.latencies.push(self.now - change.arrived);
                    self.arrive();
                }
            }
            Action::Evicted { entry, .. } => {
                if let Some(change) = self.changes.remove(&entry) {
                    if change.bad {
                        self.report.evicted_bad += 1;
                    } else {
                        self.report.evicted_good += 1;
                    }
                    self.arrive();
                }
            }
            Action::Flaky { .. } => self.report.flaky += 1,
        }
    }

    /// Starts waiting test runs while slots are free.
    fn fill_slots(&mut self) {
        while self.running.len() < self.model.slots {
            let Some(candidate) = self.waiting_for_slot.pop_front() else {
                break;
            };
            let run = self.next_run;
            self.next_run += 1;
            let minutes = self
                .rng
                .lognormal(self.model.test_minutes, self.model.spread);
            self.running.insert(
                run,
                Run {
                    candidate,
                    started: self.now,
                },
            );
            self.timers
                .push(Reverse(((self.now + minutes).to_bits(), run)));
            self.report.runs += 1;
        }
    }

    fn arrive(&mut self) {
        if self.arrived >= self.model.changes {
            return;
        }
        self.arrived += 1;
        let entry = self.arrived as EntryId;
        let bad = self.rng.uniform() < self.model.bad;
        if bad {
            self.report.bad += 1;
        } else {
            self.report.good += 1;
        }
        self.changes.insert(
            entry,
            Change {
                arrived: self.now,
                bad,
            },
        );
        self.inbox.push_back(Event::Added { entry, priority: 0 });
    }

    /// Keeps the machine's state (and the trees the simulator knows) to what is live.
    fn prune(&mut self) {
        self.state.prune();
        self.state.entries.retain(|e| e.state != EntryState::Failed);
        let state = &self.state;
        self.trees.retain(|&id, _| state.candidate(id).is_some());
    }
}

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Lognormal with this mean and this standard deviation of its logarithm (Box-Muller).
    fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln stays finite
        let u2 = self.uniform();
        let normal = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mean.ln() - sigma * sigma / 2.0 + sigma * normal).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Model {
        Model {
            changes: 3_000,
            ..Model::default()
        }
    }

    #[test]
    fn every_policy_keeps_main_green_and_finishes() {
        let model = small();
        for policy in policies(model.slots) {
            let report = simulate(&model, &policy.settings);
            assert_eq!(report.main_broken, 0, "{}", policy.name);
            assert_eq!(report.unsafe_landings, 0, "{}", policy.name);
            assert_eq!(report.stuck, 0, "{}", policy.name);
            assert_eq!(
                report.merged + report.evicted_good + report.evicted_bad,
                model.changes as u64,
                "{}",
                policy.name
            );
            assert_eq!(report.evicted_bad, report.bad, "{}", policy.name);
        }
    }

    #[test]
    fn slipway_beats_the_references_on_throughput_and_builds() {
        let model = small();
        let reports: Vec<Report> = policies(model.slots)
            .iter()
            .map(|p| simulate(&model, &p.settings))
            .collect();
        let [serial, reset, slipway] = &reports[..] else {
            panic!("three policies");
        };
        assert!(slipway.merges_per_hour() > reset.merges_per_hour());
        assert!(reset.merges_per_hour() > serial.merges_per_hour());
        assert!(slipway.builds_per_merge() < reset.builds_per_merge());
    }

    #[test]
    fn the_same_seed_gives_the_same_report() {
        let model = Model {
            changes: 500,
            ..Model::default()
        };
        let settings = Settings {
            parallel: model.slots,
            ..Settings::default()
        };
        let (a, b) = (simulate(&model, &settings), simulate(&model, &settings));
        assert_eq!(
            (a.merged, a.runs, a.latencies),
            (b.merged, b.runs, b.latencies)
        );
    }

    #[test]
    fn lognormal_has_the_asked_mean() {
        let mut rng = Rng(7);
        let n = 200_000;
        let mean = (0..n).map(|_| rng.lognormal(30.0, 0.5)).sum::<f64>() / n as f64;
        assert!((mean - 30.0).abs() < 0.3, "{mean}");
    }
}
