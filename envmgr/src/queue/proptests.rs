//! The queue's state machine against a model world, with proptest: random arrivals (some
//! changes bad, some not merging), removals, retries, pauses, pushes to the target by someone
//! else, flaky runs and late or repeated results, delivered in random order. Throughout:
//! every landing is of a tree that passed on its last run and was built on exactly the
//! target's head, nothing lands while paused, no change lands twice, slots are never
//! oversubscribed, and an event that no longer applies changes nothing. Driven to quiescence
//! afterwards, every good change that was not removed has landed, and nothing is left live.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::machine::{
    step, Action, BuildResult, CandidateId, CandidateState, EntryId, EntryState, Event, QueueState,
    Settings, Speculation,
};

#[derive(Clone, Debug)]
enum Op {
    Add {
        priority: i64,
        bad: bool,
        conflicts: bool,
    },
    Remove(usize),
    Retry(usize),
    Pause,
    Resume,
    TargetMoved,
    Tick,
    /// Completes one pending build, test run or landing.
    Complete(usize),
    /// Completes one pending test run as failed (a flake when its tree is good).
    Flake(usize),
    /// Repeats a result or landing for a candidate it no longer applies to.
    Late(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-1i64..=2, prop::bool::weighted(0.2), prop::bool::weighted(0.05))
            .prop_map(|(priority, bad, conflicts)| Op::Add { priority, bad, conflicts }),
        1 => any::<usize>().prop_map(Op::Remove),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => Just(Op::Pause),
        1 => Just(Op::Resume),
        1 => Just(Op::TargetMoved),
        1 => Just(Op::Tick),
        12 => any::<usize>().prop_map(Op::Complete),
        2 => any::<usize>().prop_map(Op::Flake),
        1 => any::<usize>().prop_map(Op::Late),
    ]
}

fn settings() -> impl Strategy<Value = Settings> {
    (1usize..=5, 1usize..=5, 1u32..=2, any::<bool>()).prop_map(
        |(parallel, batch, retries, chain)| Settings {
            parallel,
            batch,
            retries,
            speculation: if chain {
                Speculation::Chain
            } else {
                Speculation::Probes
            },
        },
    )
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Pending {
    Build(CandidateId),
    Test(CandidateId),
    Land(CandidateId),
}

/// A commit the world made: what its tree holds, and the target head it was built on.
struct Tree {
    /// Pushes by others to the target before it was built.
    foreign: u32,
    /// Every change in it, the target's landed ones first.
    content: Vec<EntryId>,
    /// How many of `content`, at its end, are the candidate's own changes.
    own: usize,
}

#[derive(Default)]
struct World {
    state: QueueState,
    settings: Settings,
    bad: HashSet<EntryId>,
    conflicts: HashSet<EntryId>,
    entries: Vec<EntryId>,
    removed: HashSet<EntryId>,
    trees: HashMap<CandidateId, Tree>,
    last_run_passed: HashMap<CandidateId, bool>,
    flaked: HashSet<CandidateId>,
    pending: Vec<Pending>,
    /// The target: pushes by others, and the changes landed on it in order.
    foreign: u32,
    landed: Vec<EntryId>,
    merged: HashSet<EntryId>,
}

impl World {
    fn send(&mut self, event: Event) -> Result<(), TestCaseError> {
        let actions = step(&mut self.state, &self.settings, event);
        let running = self
            .state
            .candidates
            .iter()
            .filter(|c| matches!(c.state, CandidateState::Building | CandidateState::Testing))
            .count();
        prop_assert!(running <= self.settings.parallel, "{running} running");
        for action in actions {
            self.carry_out(action)?;
        }
        Ok(())
    }

    fn carry_out(&mut self, action: Action) -> Result<(), TestCaseError> {
        match action {
            Action::Build {
                candidate,
                parent,
                changes,
            } => {
                let (foreign, mut content) = match parent {
                    Some(p) => {
                        let base = self.trees.get(&p);
                        prop_assert!(base.is_some(), "built on {p}, never built");
                        let base = base.unwrap();
                        (base.foreign, base.content.clone())
                    }
                    None => (self.foreign, self.landed.clone()),
                };
                content.extend(&changes);
                let own = changes.len();
                self.trees.insert(
                    candidate,
                    Tree {
                        foreign,
                        content,
                        own,
                    },
                );
                self.pending.push(Pending::Build(candidate));
            }
            Action::Test { candidate } => self.pending.push(Pending::Test(candidate)),
            Action::Land { candidate } => {
                prop_assert!(!self.state.paused, "landing while paused");
                prop_assert_eq!(self.last_run_passed.get(&candidate), Some(&true));
                prop_assert!(
                    self.on_target_head(candidate),
                    "candidate {candidate} is not built on the target's head"
                );
                self.pending.push(Pending::Land(candidate));
            }
            Action::Merged { entry, candidate } => {
                prop_assert!(self.merged.insert(entry), "{entry} merged twice");
                prop_assert!(
                    self.landed.contains(&entry),
                    "{entry} reported merged by {candidate}, not on the target"
                );
            }
            Action::Evicted { entry, .. } => {
                prop_assert!(!self.merged.contains(&entry));
            }
            Action::Cancel { .. } | Action::Flaky { .. } => {}
        }
        Ok(())
    }

    /// The target is exactly what the candidate was built on.
    fn on_target_head(&self, candidate: CandidateId) -> bool {
        self.trees.get(&candidate).is_some_and(|t| {
            t.foreign == self.foreign && t.content[..t.content.len() - t.own] == self.landed[..]
        })
    }

    fn complete(&mut self, at: usize, flake: bool) -> Result<(), TestCaseError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = self.pending.remove(at % self.pending.len());
        match pending {
            Pending::Build(candidate) => {
                let tree = &self.trees[&candidate];
                let own = &tree.content[tree.content.len() - tree.own..];
                let files: Vec<String> = own
                    .iter()
                    .filter(|e| self.conflicts.contains(e))
                    .map(|e| format!("file-{e}"))
                    .collect();
                let result = if files.is_empty() {
                    BuildResult::Ready
                } else {
                    BuildResult::Conflict { files }
                };
                self.send(Event::Built { candidate, result })
            }
            Pending::Test(candidate) => {
                let bad = self.trees[&candidate]
                    .content
                    .iter()
                    .any(|e| self.bad.contains(e));
                // A flake at most once per tree: with a retry, a good change is never evicted.
                let flaked = flake && self.flaked.insert(candidate);
                let passed = !bad && !flaked;
                self.last_run_passed.insert(candidate, passed);
                self.send(Event::Tested { candidate, passed })
            }
            Pending::Land(candidate) => {
                // Compare-and-swap: only if the target still is what it was built on.
                if self.on_target_head(candidate) {
                    let tree = &self.trees[&candidate];
                    let new = tree.content[self.landed.len()..].to_vec();
                    for entry in &new {
                        prop_assert!(!self.landed.contains(entry), "{entry} landed twice");
                    }
                    self.landed.extend(new);
                    self.send(Event::Landed { candidate })
                } else {
                    self.send(Event::TargetMoved)
                }
            }
        }
    }

    /// An event for a candidate it no longer applies to must change nothing at all.
    fn late(&mut self, pick: usize) -> Result<(), TestCaseError> {
        let stale: Vec<(CandidateId, CandidateState)> = self
            .state
            .candidates
            .iter()
            .filter(|c| !c.state.is_live())
            .map(|c| (c.id, c.state))
            .collect();
        if stale.is_empty() {
            return Ok(());
        }
        let (candidate, state) = stale[pick % stale.len()];
        let event = match (pick / stale.len()) % 3 {
            0 => Event::Tested {
                candidate,
                passed: pick.is_multiple_of(2),
            },
            1 => Event::Built {
                candidate,
                result: BuildResult::Ready,
            },
            // Cancelled ones may really have landed (a push racing its cancellation).
            _ if state == CandidateState::Landed => Event::Landed { candidate },
            _ => Event::Tick,
        };
        let before = self.state.clone();
        let actions = step(&mut self.state, &self.settings, event.clone());
        prop_assert!(actions.is_empty(), "{event:?} gave {actions:?}");
        prop_assert_eq!(&self.state, &before);
        Ok(())
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Add {
                priority,
                bad,
                conflicts,
            } => {
                let entry = self.entries.len() as EntryId + 1;
                self.entries.push(entry);
                if bad {
                    self.bad.insert(entry);
                }
                if conflicts {
                    self.conflicts.insert(entry);
                }
                self.send(Event::Added { entry, priority })
            }
            Op::Remove(pick) if !self.entries.is_empty() => {
                let entry = self.entries[pick % self.entries.len()];
                if !self.merged.contains(&entry) {
                    self.removed.insert(entry);
                }
                self.send(Event::Removed {
                    entry,
                    reason: "removed".into(),
                })
            }
            Op::Retry(pick) if !self.entries.is_empty() => {
                let entry = self.entries[pick % self.entries.len()];
                self.send(Event::Retry { entry })
            }
            Op::Remove(_) | Op::Retry(_) | Op::Tick => self.send(Event::Tick),
            Op::Pause => self.send(Event::Paused),
            Op::Resume => self.send(Event::Resumed),
            Op::TargetMoved => {
                self.foreign += 1;
                self.send(Event::TargetMoved)
            }
            Op::Complete(at) => self.complete(at, false),
            Op::Flake(at) => {
                let tests: Vec<usize> = (0..self.pending.len())
                    .filter(|&i| matches!(self.pending[i], Pending::Test(_)))
                    .collect();
                match tests.is_empty() {
                    true => self.complete(at, false),
                    false => self.complete(tests[at % tests.len()], true),
                }
            }
            Op::Late(pick) => self.late(pick),
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    #[test]
    fn only_tested_trees_land_and_every_good_change_lands(
        settings in settings(),
        ops in prop::collection::vec(op(), 0..160),
    ) {
        let mut world = World { settings, ..World::default() };
        for op in ops {
            world.apply(op)?;
        }
        // Quiescence: resumed, everything outstanding completes, no more flakes.
        world.send(Event::Resumed)?;
        let mut rounds = 0;
        while !world.pending.is_empty() {
            world.complete(0, false)?;
            rounds += 1;
            prop_assert!(rounds < 100_000, "no quiescence");
        }
        for &entry in &world.entries {
            let state = world.state.entry(entry).map(|e| e.state);
            if world.removed.contains(&entry) {
                continue;
            }
            if world.bad.contains(&entry) || world.conflicts.contains(&entry) {
                prop_assert_eq!(state, Some(EntryState::Failed), "entry {}", entry);
            } else {
                prop_assert_eq!(state, Some(EntryState::Merged), "entry {}", entry);
            }
        }
        prop_assert!(world.state.candidates.iter().all(|c| !c.state.is_live()));
        let landed: HashSet<EntryId> = world.landed.iter().copied().collect();
        prop_assert_eq!(landed, world.merged);
    }
}
