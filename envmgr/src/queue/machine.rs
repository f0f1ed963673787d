//! The submit queue's scheduler as one pure state machine: [`step`] takes the queue's state and
//! one event (a change added or removed, a candidate built, tested or landed, the target moved)
//! and returns the actions to carry out (build a candidate, start its tests, cancel it, land
//! it, report a merge or an eviction). It does no I/O, reads no clock and is deterministic: the
//! reconciler drives it against git, the engine and the forge, the simulator against a model
//! CI, and both run this one policy.
//!
//! A candidate is a commit: its parent candidate's tree (or the target's head) plus its
//! changes. The guarantee: the target only moves to a candidate that passed its tests on
//! exactly its tree and was built on exactly the target's current head (`Land` is emitted for
//! a `Passed` candidate without a parent, never while paused).
//!
//! The policy, for throughput without giving that up:
//! - The *line* is the chain of candidates expected to land, each built on the one ahead.
//!   Changes that have not passed anywhere yet are tested in batches as *probes* on the
//!   line's tip, beside each other rather than on each other, so a bad change only costs its
//!   own probe. A probe that passes while its parent is still the tip joins the line as it is;
//!   otherwise its changes, now proven, go into the next line candidate. Short queues (no
//!   longer than `parallel`) are chained one change per candidate instead: quicker when slots
//!   are plentiful. [`Speculation::Chain`] chains everything (Zuul, GitHub's merge queue).
//! - A failed batch is split in halves, which are probed again, until the culprit is alone.
//! - A failure is judged only once every candidate ahead of it has passed; before that it
//!   says nothing about the candidate's own changes. A single change, or a batch of changes
//!   that all passed before, is re-tested on the same tree up to `retries` more times before
//!   anything is evicted; fail-then-pass lands and reports `Flaky`.
//! - Only candidates built on a failed or removed one are cancelled and rebuilt.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

/// How many times `batch` changes that already passed may share one line candidate.
const PROVEN_PER_BATCH: usize = 4;

/// A queue entry: the store's row id, so arrival order is id order.
pub type EntryId = i64;
/// A candidate, allocated by the machine from [`QueueState::next_candidate`].
pub type CandidateId = i64;

/// A repo's `[repo.queue]` scheduling knobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// Candidates building or testing at once (CI slots).
    pub parallel: usize,
    /// Most changes in one probe when the queue is longer than `parallel`; line candidates of
    /// changes that already passed take up to four times as many.
    pub batch: usize,
    /// Re-runs of a failing tree before a change is evicted.
    pub retries: u32,
    #[serde(default)]
    pub speculation: Speculation,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            parallel: 4,
            batch: 4,
            retries: 1,
            speculation: Speculation::default(),
        }
    }
}

/// Where candidates of changes that have not passed yet are built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speculation {
    /// Slipway's: as probes beside each other on the line's tip (chained when the queue is
    /// no longer than `parallel`).
    #[default]
    Probes,
    /// Each on the one ahead, and a failure resets everything behind it (Zuul, GitHub's merge
    /// queue; with `parallel = 1` and `batch = 1`, one at a time like bors).
    Chain,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Waiting for a candidate.
    Queued,
    /// In a candidate, not yet passed.
    Testing,
    /// Passed in a candidate; not landed yet (it may be re-tested on a newer tree).
    Passed,
    Merged,
    Failed,
    Removed,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Testing => "testing",
            Self::Passed => "passed",
            Self::Merged => "merged",
            Self::Failed => "failed",
            Self::Removed => "removed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Testing,
            Self::Passed,
            Self::Merged,
            Self::Failed,
            Self::Removed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Still in the queue (not merged, failed or removed).
    pub fn is_live(self) -> bool {
        matches!(self, Self::Queued | Self::Testing | Self::Passed)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: EntryId,
    pub priority: i64,
    pub state: EntryState,
    /// Test runs of candidates holding this change.
    pub attempts: u32,
    /// Why it last failed (or is being re-tested).
    pub reason: Option<String>,
    /// The most changes it may next be tested with: half of a failed batch it was in; cleared
    /// when it passes. `None`: the settings decide.
    #[serde(default)]
    pub max_batch: Option<usize>,
}

impl Entry {
    pub fn new(id: EntryId, priority: i64) -> Self {
        Self {
            id,
            priority,
            state: EntryState::Queued,
            attempts: 0,
            reason: None,
            max_batch: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateState {
    /// Its commit is being made; `Built` says how that went.
    Building,
    Testing,
    Passed,
    /// Its tests failed (or it did not merge), and the verdict waits: for the candidates
    /// ahead of it to pass, or for a slot to re-test it. Still holds its changes.
    Suspect,
    /// Final: its tree failed; its changes were evicted or split into smaller candidates.
    Failed,
    /// Final: it did not merge; its changes were evicted or split into smaller candidates.
    Conflict,
    /// `Land` was emitted.
    Landing,
    Landed,
    Cancelled,
    /// Final: a probe that passed after the line had moved on; its changes, now proven, go
    /// into a later candidate.
    Superseded,
}

impl CandidateState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Building => "building",
            Self::Testing => "testing",
            Self::Passed => "passed",
            Self::Suspect => "suspect",
            Self::Failed => "failed",
            Self::Conflict => "conflict",
            Self::Landing => "landing",
            Self::Landed => "landed",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Building,
            Self::Testing,
            Self::Passed,
            Self::Suspect,
            Self::Failed,
            Self::Conflict,
            Self::Landing,
            Self::Landed,
            Self::Cancelled,
            Self::Superseded,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }

    /// Holds its changes and may still land or be built on.
    pub fn is_live(self) -> bool {
        matches!(
            self,
            Self::Building | Self::Testing | Self::Passed | Self::Suspect | Self::Landing
        )
    }

    /// Occupies a CI slot.
    fn is_running(self) -> bool {
        matches!(self, Self::Building | Self::Testing)
    }
}

/// A candidate's part in the plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// On the line: lands in order once it and everything ahead passed.
    #[default]
    Line,
    /// Finds out whether its changes are good; joins the line if it passes while its parent
    /// is still the line's tip.
    Probe,
    /// A probe whose tip moved on: it can only tell whether its changes are good.
    Stale,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: CandidateId,
    /// Built on that candidate's tree; `None`: on the target's head.
    pub parent: Option<CandidateId>,
    /// What it adds on top of its parent (a batch when more than one).
    pub changes: Vec<EntryId>,
    pub state: CandidateState,
    /// Test runs started on this tree.
    pub runs: u32,
    /// Of which failed.
    pub failures: u32,
    #[serde(default)]
    pub role: Role,
    /// The files that did not merge, when building it failed.
    #[serde(default)]
    pub conflict: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    pub entries: Vec<Entry>,
    pub candidates: Vec<Candidate>,
    pub paused: bool,
    pub next_candidate: CandidateId,
}

impl Default for QueueState {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            candidates: Vec::new(),
            paused: false,
            next_candidate: 1,
        }
    }
}

impl QueueState {
    pub fn candidate(&self, id: CandidateId) -> Option<&Candidate> {
        self.candidates.iter().rev().find(|c| c.id == id)
    }

    pub fn entry(&self, id: EntryId) -> Option<&Entry> {
        self.entries.iter().find(|e| e.id == id)
    }

    /// Every change in the candidate's tree above the target's head, those of its ancestors
    /// first.
    pub fn includes(&self, candidate: CandidateId) -> Vec<EntryId> {
        let mut chain = Vec::new();
        let mut next = Some(candidate);
        while let Some(id) = next {
            let Some(c) = self.candidate(id) else { break };
            // Parents are always older: anything else is a damaged state, not a longer chain.
            if chain.len() > self.candidates.len() {
                break;
            }
            chain.push(c);
            next = c.parent;
        }
        chain
            .iter()
            .rev()
            .flat_map(|c| c.changes.iter().copied())
            .collect()
    }

    /// The line's candidates, from the one that lands next to its tip.
    pub fn line(&self) -> Vec<CandidateId> {
        let mut line: Vec<CandidateId> = self
            .candidates
            .iter()
            .filter(|c| c.state.is_live() && c.role == Role::Line)
            .map(|c| c.id)
            .collect();
        line.sort_unstable();
        line
    }

    /// Drops what no step will look at again: finished candidates, and merged or removed
    /// entries (failed ones stay, for `Retry`).
    pub fn prune(&mut self) {
        self.candidates.retain(|c| c.state.is_live());
        self.entries
            .retain(|e| !matches!(e.state, EntryState::Merged | EntryState::Removed));
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BuildResult {
    Ready,
    Conflict { files: Vec<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Added {
        entry: EntryId,
        priority: i64,
    },
    /// By a person, or its PR got a new push.
    Removed {
        entry: EntryId,
        reason: String,
    },
    /// A failed entry goes back in line.
    Retry {
        entry: EntryId,
    },
    /// Nothing lands; tests may run.
    Paused,
    Resumed,
    Built {
        candidate: CandidateId,
        result: BuildResult,
    },
    Tested {
        candidate: CandidateId,
        passed: bool,
    },
    /// The target ref now is this candidate's commit.
    Landed {
        candidate: CandidateId,
    },
    /// Someone else moved the target: every live candidate is rebuilt (never forced).
    TargetMoved,
    /// Re-plan only.
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Eviction {
    Conflict { files: Vec<String> },
    TestsFailed { candidate: CandidateId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Make the commit: `parent`'s commit (or the target's head) plus `changes`. The parent is
    /// always built already.
    Build {
        candidate: CandidateId,
        parent: Option<CandidateId>,
        changes: Vec<EntryId>,
    },
    /// Start (or re-run, to tell a flake) the tests of its tree.
    Test {
        candidate: CandidateId,
    },
    /// Stop its tests and drop its env; its state is already `Cancelled` or `Superseded`.
    Cancel {
        candidate: CandidateId,
    },
    /// Move the target to its commit if the target still is its parent's (compare-and-swap).
    Land {
        candidate: CandidateId,
    },
    Merged {
        entry: EntryId,
        candidate: CandidateId,
    },
    Evicted {
        entry: EntryId,
        why: Eviction,
    },
    /// Its tree failed, then passed on a re-run: the report names the flaky tests.
    Flaky {
        candidate: CandidateId,
    },
}

/// Applies one event and re-plans. Total: unknown ids and events that no longer apply (a
/// result for a cancelled candidate, a second `Landed`) change nothing.
pub fn step(state: &mut QueueState, settings: &Settings, event: Event) -> Vec<Action> {
    let settings = Settings {
        parallel: settings.parallel.max(1),
        batch: settings.batch.max(1),
        ..settings.clone()
    };
    let mut machine = Machine {
        state,
        settings: &settings,
        out: Vec::new(),
    };
    machine.apply(event);
    machine.plan();
    machine.refresh_entries();
    machine.out
}

/// The live entries in queue order: higher priority first, then arrival.
pub fn order(state: &QueueState) -> Vec<EntryId> {
    let mut live: Vec<&Entry> = state.entries.iter().filter(|e| e.state.is_live()).collect();
    live.sort_by_key(|e| (std::cmp::Reverse(e.priority), e.id));
    live.into_iter().map(|e| e.id).collect()
}

/// What was under way when the process stopped, to carry out again after a restart: the
/// builds, test runs and landings of candidates still `Building`, `Testing` or `Landing`. The
/// reconciler's side of each is idempotent (a landing recognises its own push).
pub fn outstanding(state: &QueueState) -> Vec<Action> {
    state
        .candidates
        .iter()
        .filter_map(|c| match c.state {
            CandidateState::Building => Some(Action::Build {
                candidate: c.id,
                parent: c.parent,
                changes: c.changes.clone(),
            }),
            CandidateState::Testing => Some(Action::Test { candidate: c.id }),
            CandidateState::Landing => Some(Action::Land { candidate: c.id }),
            _ => None,
        })
        .collect()
}

struct Machine<'a> {
    state: &'a mut QueueState,
    settings: &'a Settings,
    out: Vec<Action>,
}

impl Machine<'_> {
    fn apply(&mut self, event: Event) {
        match event {
            Event::Added { entry, priority } => {
                if self.state.entry(entry).is_none() {
                    let at = self.state.entries.partition_point(|e| e.id < entry);
                    self.state.entries.insert(at, Entry::new(entry, priority));
                }
            }
            Event::Removed { entry, reason } => {
                let Some(e) = self.entry_mut(entry) else {
                    return;
                };
                if matches!(e.state, EntryState::Merged | EntryState::Removed) {
                    return;
                }
                e.state = EntryState::Removed;
                e.reason = Some(reason);
                let holding: Vec<CandidateId> = self
                    .state
                    .candidates
                    .iter()
                    .filter(|c| c.state.is_live() && c.changes.contains(&entry))
                    .map(|c| c.id)
                    .collect();
                for id in holding {
                    self.cancel_with_descendants(id);
                }
            }
            Event::Retry { entry } => {
                if let Some(e) = self.entry_mut(entry) {
                    if e.state == EntryState::Failed {
                        e.state = EntryState::Queued;
                        e.max_batch = None;
                    }
                }
            }
            Event::Paused => self.state.paused = true,
            Event::Resumed => self.state.paused = false,
            Event::Built { candidate, result } => {
                let Some(i) = self.index(candidate) else {
                    return;
                };
                if self.state.candidates[i].state != CandidateState::Building {
                    return;
                }
                match result {
                    BuildResult::Ready => self.start_test(i),
                    BuildResult::Conflict { files } => {
                        let c = &mut self.state.candidates[i];
                        c.state = CandidateState::Suspect;
                        c.conflict = Some(files);
                        // Nothing can be built on a commit that does not exist.
                        if c.role == Role::Line {
                            c.role = Role::Probe;
                        }
                        self.cancel_descendants(candidate);
                    }
                }
            }
            Event::Tested { candidate, passed } => {
                let Some(i) = self.index(candidate) else {
                    return;
                };
                if self.state.candidates[i].state != CandidateState::Testing {
                    return;
                }
                if passed {
                    self.passed(i);
                } else {
                    self.failed(i);
                }
            }
            Event::Landed { candidate } => self.landed(candidate),
            Event::TargetMoved => {
                for id in self.live_ids() {
                    self.cancel(id);
                }
            }
            Event::Tick => {}
        }
    }

    fn passed(&mut self, i: usize) {
        let c = &mut self.state.candidates[i];
        c.state = CandidateState::Passed;
        let (id, parent, role, flaky) = (c.id, c.parent, c.role, c.failures > 0);
        for entry in c.changes.clone() {
            if let Some(e) = self.entry_mut(entry) {
                e.state = EntryState::Passed;
                e.max_batch = None;
            }
        }
        if flaky {
            self.out.push(Action::Flaky { candidate: id });
        }
        match role {
            Role::Line => {}
            Role::Probe if parent == self.tip() => {
                self.state.candidates[i].role = Role::Line;
                self.tip_moved();
            }
            Role::Probe | Role::Stale => {
                self.state.candidates[i].state = CandidateState::Superseded;
                self.out.push(Action::Cancel { candidate: id });
            }
        }
    }

    fn failed(&mut self, i: usize) {
        let c = &mut self.state.candidates[i];
        c.failures += 1;
        c.state = CandidateState::Suspect;
        let (id, role, changes) = (c.id, c.role, c.changes.clone());
        for &entry in &changes {
            if let Some(e) = self.entry_mut(entry) {
                e.reason = Some(format!("tests failed on candidate {id}"));
            }
        }
        // Changes that passed before most likely met a flake: what is built on them keeps
        // going while they are re-tested. Unproven ones most likely are bad: reset behind.
        if role == Role::Line && !self.all_proven(&changes) {
            self.state.candidates[i].role = Role::Probe;
            self.cancel_descendants(id);
        }
    }

    fn landed(&mut self, id: CandidateId) {
        let Some(i) = self.index(id) else {
            return;
        };
        let c = &self.state.candidates[i];
        if c.state == CandidateState::Landed {
            return;
        }
        let expected = c.state.is_live() && c.parent.is_none();
        // The target now holds this candidate and everything it was built on.
        let mut chain = Vec::new();
        let mut next = Some(id);
        while let Some(at) = next.and_then(|n| self.index(n)) {
            let c = &self.state.candidates[at];
            if c.state == CandidateState::Landed || chain.len() > self.state.candidates.len() {
                break;
            }
            chain.push(at);
            next = c.parent;
        }
        for &at in chain.iter().rev() {
            self.state.candidates[at].state = CandidateState::Landed;
            let landed = self.state.candidates[at].id;
            for entry in self.state.candidates[at].changes.clone() {
                if let Some(e) = self.entry_mut(entry) {
                    if e.state != EntryState::Merged {
                        e.state = EntryState::Merged;
                        self.out.push(Action::Merged {
                            entry,
                            candidate: landed,
                        });
                    }
                }
            }
        }
        if !expected {
            // Whatever was live is built on a head the target no longer has.
            for live in self.live_ids() {
                self.cancel(live);
            }
            return;
        }
        // Other candidates on the old head: probes there can no longer join the line.
        let others: Vec<(CandidateId, Role)> = self
            .state
            .candidates
            .iter()
            .filter(|c| c.state.is_live() && c.parent.is_none())
            .map(|c| (c.id, c.role))
            .collect();
        for (other, role) in others {
            match role {
                Role::Line => self.cancel_with_descendants(other),
                Role::Probe | Role::Stale => {
                    if let Some(at) = self.index(other) {
                        self.state.candidates[at].role = Role::Stale;
                    }
                }
            }
        }
        for c in &mut self.state.candidates {
            if c.parent == Some(id) {
                c.parent = None;
            }
        }
    }

    /// Verdicts that became possible, landing, and new candidates while slots are free.
    fn plan(&mut self) {
        loop {
            let mut progressed = self.judge();
            if !self.state.paused {
                let root = self.state.candidates.iter().position(|c| {
                    c.state == CandidateState::Passed && c.role == Role::Line && c.parent.is_none()
                });
                if let Some(at) = root {
                    let c = &mut self.state.candidates[at];
                    c.state = CandidateState::Landing;
                    self.out.push(Action::Land { candidate: c.id });
                    progressed = true;
                }
            }
            while self.free_slots() > 0 && self.start_candidate() {
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
    }

    /// Judges each suspect whose ancestors all passed: re-test, evict or split.
    fn judge(&mut self) -> bool {
        let suspects: Vec<CandidateId> = self
            .state
            .candidates
            .iter()
            .filter(|c| c.state == CandidateState::Suspect)
            .map(|c| c.id)
            .collect();
        let mut progressed = false;
        for id in suspects {
            // An earlier verdict in this pass may have cancelled it.
            let Some(i) = self.index(id) else { continue };
            if self.state.candidates[i].state != CandidateState::Suspect
                || !self.ancestors_passed(i)
            {
                continue;
            }
            if self.retryable(i) {
                if self.free_slots() > 0 {
                    self.start_test(i);
                    progressed = true;
                }
                continue;
            }
            self.reject(i);
            progressed = true;
        }
        progressed
    }

    fn retryable(&self, i: usize) -> bool {
        let c = &self.state.candidates[i];
        c.conflict.is_none()
            && c.failures <= self.settings.retries
            && (c.changes.len() == 1 || self.all_proven(&c.changes))
    }

    /// Its tree is bad for good: a lone change is evicted, a batch split in halves.
    fn reject(&mut self, i: usize) {
        let c = &mut self.state.candidates[i];
        let conflict = c.conflict.clone();
        c.state = if conflict.is_some() {
            CandidateState::Conflict
        } else {
            CandidateState::Failed
        };
        let (id, runs, changes) = (c.id, c.runs, c.changes.clone());
        self.cancel_descendants(id);
        if let [entry] = changes[..] {
            let (why, reason) = match conflict {
                Some(files) => {
                    let reason = format!("does not merge: {}", files.join(", "));
                    (Eviction::Conflict { files }, reason)
                }
                None => (
                    Eviction::TestsFailed { candidate: id },
                    match runs {
                        0 | 1 => format!("tests failed on candidate {id}"),
                        _ => format!("tests failed on candidate {id}, all {runs} runs"),
                    },
                ),
            };
            if let Some(e) = self.entry_mut(entry) {
                if e.state.is_live() {
                    e.state = EntryState::Failed;
                    e.reason = Some(reason);
                    self.out.push(Action::Evicted { entry, why });
                }
            }
            return;
        }
        let n = changes.len();
        let what = if conflict.is_some() {
            "did not merge"
        } else {
            "failed its tests"
        };
        for entry in changes {
            if let Some(e) = self.entry_mut(entry) {
                e.max_batch = Some(n.div_ceil(2));
                e.reason = Some(format!(
                    "candidate {id} of {n} changes {what}; re-testing in smaller batches"
                ));
            }
        }
    }

    /// Starts one candidate on the line's tip; false when there is nothing to start.
    fn start_candidate(&mut self) -> bool {
        let tip = self.tip();
        if let Some(t) = tip.and_then(|t| self.index(t)) {
            if self.state.candidates[t].state == CandidateState::Building {
                return false; // its commit is not there yet to build on
            }
        }
        let held = self.held();
        let waiting: Vec<&Entry> = order(self.state)
            .into_iter()
            .filter(|id| !held.contains(id))
            .filter_map(|id| self.state.entry(id))
            .collect();
        if waiting.is_empty() {
            return false;
        }
        let live = self
            .state
            .entries
            .iter()
            .filter(|e| e.state.is_live())
            .count();
        let short = live <= self.settings.parallel;
        let batch = self.settings.batch;
        if self.settings.speculation == Speculation::Chain || short {
            let size = if short { 1 } else { batch };
            let group = take_group(&waiting, size);
            self.create(tip, group, Role::Line);
            return true;
        }
        let proven: Vec<&Entry> = waiting
            .iter()
            .copied()
            .filter(|e| e.state == EntryState::Passed)
            .collect();
        let line_busy = self.state.candidates.iter().any(|c| {
            c.role == Role::Line
                && matches!(
                    c.state,
                    CandidateState::Building | CandidateState::Testing | CandidateState::Suspect
                )
        });
        let fresh: Vec<&Entry> = waiting
            .into_iter()
            .filter(|e| e.state != EntryState::Passed)
            .collect();
        // Changes that passed already rarely fail together: one line candidate of them at a
        // time, as large as it gets while the one ahead tests, costs the fewest runs.
        let full = PROVEN_PER_BATCH * batch;
        if !proven.is_empty() && (!line_busy || proven.len() >= full) {
            let group = take_group(&proven, full);
            self.create(tip, group, Role::Line);
            return true;
        }
        if fresh.is_empty() {
            return false;
        }
        // Spread what waits over the free slots rather than leave slots idle.
        let size = fresh.len().div_ceil(self.free_slots()).clamp(1, batch);
        let group = take_group(&fresh, size);
        self.create(tip, group, Role::Probe);
        true
    }

    fn create(&mut self, parent: Option<CandidateId>, changes: Vec<EntryId>, role: Role) {
        let id = self.state.next_candidate.max(1);
        self.state.next_candidate = id + 1;
        self.state.candidates.push(Candidate {
            id,
            parent,
            changes: changes.clone(),
            state: CandidateState::Building,
            runs: 0,
            failures: 0,
            role,
            conflict: None,
        });
        if role == Role::Line {
            self.tip_moved();
        }
        self.out.push(Action::Build {
            candidate: id,
            parent,
            changes,
        });
    }

    fn start_test(&mut self, i: usize) {
        let c = &mut self.state.candidates[i];
        c.state = CandidateState::Testing;
        c.runs += 1;
        let (id, changes) = (c.id, c.changes.clone());
        for entry in changes {
            if let Some(e) = self.entry_mut(entry) {
                e.attempts += 1;
            }
        }
        self.out.push(Action::Test { candidate: id });
    }

    /// The line grew or shrank: probes built on an older tip can no longer join it.
    fn tip_moved(&mut self) {
        let tip = self.tip();
        for c in &mut self.state.candidates {
            if c.state.is_live() && c.role == Role::Probe && c.parent != tip {
                c.role = Role::Stale;
            }
        }
    }

    fn cancel(&mut self, id: CandidateId) {
        if let Some(i) = self.index(id) {
            let c = &mut self.state.candidates[i];
            if c.state.is_live() {
                c.state = CandidateState::Cancelled;
                self.out.push(Action::Cancel { candidate: id });
            }
        }
    }

    fn cancel_with_descendants(&mut self, id: CandidateId) {
        self.cancel_descendants(id);
        self.cancel(id);
        self.tip_moved();
    }

    fn cancel_descendants(&mut self, id: CandidateId) {
        let mut doomed = HashSet::from([id]);
        loop {
            let more: Vec<CandidateId> = self
                .state
                .candidates
                .iter()
                .filter(|c| !doomed.contains(&c.id))
                .filter(|c| c.parent.is_some_and(|p| doomed.contains(&p)))
                .map(|c| c.id)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        let mut doomed: Vec<CandidateId> = doomed.into_iter().filter(|&d| d != id).collect();
        doomed.sort_unstable();
        for d in doomed {
            self.cancel(d);
        }
    }

    /// Entries' `Queued`/`Testing` follow whether a live candidate holds them.
    fn refresh_entries(&mut self) {
        let held = self.held();
        for e in &mut self.state.entries {
            if matches!(e.state, EntryState::Queued | EntryState::Testing) {
                e.state = if held.contains(&e.id) {
                    EntryState::Testing
                } else {
                    EntryState::Queued
                };
            }
        }
    }

    fn held(&self) -> HashSet<EntryId> {
        self.state
            .candidates
            .iter()
            .filter(|c| c.state.is_live())
            .flat_map(|c| c.changes.iter().copied())
            .collect()
    }

    fn ancestors_passed(&self, i: usize) -> bool {
        let mut next = self.state.candidates[i].parent;
        let mut hops = 0;
        while let Some(id) = next {
            // An unknown ancestor is not known to have passed.
            let Some(at) = self.index(id) else {
                return false;
            };
            let c = &self.state.candidates[at];
            hops += 1;
            if !matches!(c.state, CandidateState::Passed | CandidateState::Landing)
                || hops > self.state.candidates.len()
            {
                return false;
            }
            next = c.parent;
        }
        true
    }

    fn all_proven(&self, changes: &[EntryId]) -> bool {
        changes.iter().all(|&id| {
            self.state
                .entry(id)
                .is_some_and(|e| e.state == EntryState::Passed)
        })
    }

    fn tip(&self) -> Option<CandidateId> {
        self.state
            .candidates
            .iter()
            .filter(|c| c.state.is_live() && c.role == Role::Line)
            .map(|c| c.id)
            .max()
    }

    fn free_slots(&self) -> usize {
        let running = self
            .state
            .candidates
            .iter()
            .filter(|c| c.state.is_running())
            .count();
        self.settings.parallel.saturating_sub(running)
    }

    fn live_ids(&self) -> Vec<CandidateId> {
        self.state
            .candidates
            .iter()
            .filter(|c| c.state.is_live())
            .map(|c| c.id)
            .collect()
    }

    fn index(&self, id: CandidateId) -> Option<usize> {
        self.state.candidates.iter().rposition(|c| c.id == id)
    }

    fn entry_mut(&mut self, id: EntryId) -> Option<&mut Entry> {
        self.state.entries.iter_mut().find(|e| e.id == id)
    }
}

/// The first entries of `waiting` (in queue order) that fit one candidate of at most `size`
/// changes and no more than any member's `max_batch`.
fn take_group(waiting: &[&Entry], size: usize) -> Vec<EntryId> {
    let mut group = Vec::new();
    let mut limit = size;
    for e in waiting {
        limit = limit.min(e.max_batch.unwrap_or(usize::MAX)).max(1);
        if group.len() >= limit {
            break;
        }
        group.push(e.id);
    }
    group
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn build(candidate: CandidateId, parent: Option<CandidateId>, changes: &[EntryId]) -> Action {
        Action::Build {
            candidate,
            parent,
            changes: changes.to_vec(),
        }
    }

    fn added(entry: EntryId) -> Event {
        Event::Added { entry, priority: 0 }
    }

    fn built(candidate: CandidateId) -> Event {
        Event::Built {
            candidate,
            result: BuildResult::Ready,
        }
    }

    fn tested(candidate: CandidateId, passed: bool) -> Event {
        Event::Tested { candidate, passed }
    }

    /// A world that builds at once and answers each test run from `bad` and `flaky_runs`,
    /// first come first served; every action is kept in `log`.
    struct Lab {
        state: QueueState,
        settings: Settings,
        bad: Vec<EntryId>,
        /// (candidate, run) pairs that fail whatever the tree holds.
        flaky_runs: Vec<(CandidateId, u32)>,
        log: Vec<Action>,
    }

    impl Lab {
        fn new(settings: Settings, bad: &[EntryId]) -> Self {
            Self {
                state: QueueState::default(),
                settings,
                bad: bad.to_vec(),
                flaky_runs: Vec::new(),
                log: Vec::new(),
            }
        }

        fn send(&mut self, event: Event) {
            let mut inbox = VecDeque::from([event]);
            while let Some(event) = inbox.pop_front() {
                for action in step(&mut self.state, &self.settings, event) {
                    match &action {
                        Action::Build { candidate, .. } => inbox.push_back(built(*candidate)),
                        Action::Test { candidate } => {
                            let c = self.state.candidate(*candidate).unwrap();
                            let passed = !self
                                .state
                                .includes(c.id)
                                .iter()
                                .any(|e| self.bad.contains(e))
                                && !self.flaky_runs.contains(&(c.id, c.runs));
                            inbox.push_back(tested(c.id, passed));
                        }
                        Action::Land { candidate } => inbox.push_back(Event::Landed {
                            candidate: *candidate,
                        }),
                        _ => {}
                    }
                    self.log.push(action);
                }
            }
        }

        fn merged(&self) -> Vec<EntryId> {
            let mut merged: Vec<EntryId> = self
                .log
                .iter()
                .filter_map(|a| match a {
                    Action::Merged { entry, .. } => Some(*entry),
                    _ => None,
                })
                .collect();
            merged.sort_unstable();
            merged
        }

        fn evicted(&self) -> Vec<EntryId> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Evicted { entry, .. } => Some(*entry),
                    _ => None,
                })
                .collect()
        }

        fn built_changes(&self) -> Vec<Vec<EntryId>> {
            self.log
                .iter()
                .filter_map(|a| match a {
                    Action::Build { changes, .. } => Some(changes.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_short_queue_is_tested_speculatively_each_change_on_the_ones_ahead() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        assert_eq!(step(&mut q, &settings, added(1)), [build(1, None, &[1])]);
        // Nothing is built on a candidate whose commit does not exist yet.
        assert_eq!(step(&mut q, &settings, added(2)), []);
        assert_eq!(step(&mut q, &settings, added(3)), []);
        assert_eq!(
            step(&mut q, &settings, built(1)),
            [Action::Test { candidate: 1 }, build(2, Some(1), &[2])]
        );
        assert_eq!(
            step(&mut q, &settings, built(2)),
            [Action::Test { candidate: 2 }, build(3, Some(2), &[3])]
        );
        step(&mut q, &settings, built(3));
        assert_eq!(q.includes(3), [1, 2, 3]);
        assert_eq!(q.entry(3).unwrap().state, EntryState::Testing);
        // The last one passing first waits for those ahead of it.
        assert_eq!(step(&mut q, &settings, tested(3, true)), []);
        assert_eq!(step(&mut q, &settings, tested(2, true)), []);
        assert_eq!(
            step(&mut q, &settings, tested(1, true)),
            [Action::Land { candidate: 1 }]
        );
        assert_eq!(
            step(&mut q, &settings, Event::Landed { candidate: 1 }),
            [
                Action::Merged {
                    entry: 1,
                    candidate: 1
                },
                Action::Land { candidate: 2 }
            ]
        );
        assert_eq!(q.candidate(2).unwrap().parent, None, "re-rooted");
        step(&mut q, &settings, Event::Landed { candidate: 2 });
        step(&mut q, &settings, Event::Landed { candidate: 3 });
        assert_eq!(order(&q), Vec::<EntryId>::new());
        assert!(q.entries.iter().all(|e| e.state == EntryState::Merged));
    }

    #[test]
    fn a_failed_batch_is_bisected_and_the_good_changes_in_it_land() {
        let settings = Settings {
            parallel: 2,
            ..Settings::default()
        };
        let mut lab = Lab::new(settings, &[3]);
        // Twelve changes already waiting, as when the queue is read back from the store.
        lab.state.entries = (1..=12).map(|entry| Entry::new(entry, 0)).collect();
        lab.send(Event::Tick);
        let batches = lab.built_changes();
        assert_eq!(batches[0], [1, 2, 3, 4], "a long queue is batched");
        assert!(batches.contains(&vec![1, 2]) && batches.contains(&vec![3, 4]));
        assert!(batches.contains(&vec![3]), "bisected down to the culprit");
        assert_eq!(lab.evicted(), [3]);
        let mut good: Vec<EntryId> = (1..=12).filter(|&e| e != 3).collect();
        good.sort_unstable();
        assert_eq!(lab.merged(), good);
        let culprit = lab.state.entry(3).unwrap();
        assert_eq!(culprit.state, EntryState::Failed);
        // Its batch of 4, its half, and its own candidate twice: a lone failure is re-run.
        assert_eq!(culprit.attempts, 4);
    }

    #[test]
    fn a_flaky_failure_is_retried_on_the_same_tree_and_lands() {
        let mut lab = Lab::new(Settings::default(), &[]);
        lab.flaky_runs.push((1, 1));
        lab.send(added(1));
        let tests = lab
            .log
            .iter()
            .filter(|a| **a == Action::Test { candidate: 1 })
            .count();
        assert_eq!(tests, 2);
        assert!(lab.log.contains(&Action::Flaky { candidate: 1 }));
        assert_eq!(lab.merged(), [1]);
        let c = lab.state.candidate(1).unwrap();
        assert_eq!(
            (c.runs, c.failures, c.state),
            (2, 1, CandidateState::Landed)
        );
    }

    #[test]
    fn a_failure_behind_an_untested_candidate_evicts_nothing_until_those_ahead_pass() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        step(&mut q, &settings, added(1));
        step(&mut q, &settings, added(2));
        step(&mut q, &settings, built(1));
        step(&mut q, &settings, built(2));
        // 2 fails while 1 (which it holds) is still testing: no verdict, no eviction.
        let actions = step(&mut q, &settings, tested(2, false));
        assert!(!actions.iter().any(|a| matches!(a, Action::Evicted { .. })));
        assert_eq!(q.candidate(2).unwrap().state, CandidateState::Suspect);
        // 1 fails: what was built on it is reset, and 2 goes on without it while 1 re-runs.
        let actions = step(&mut q, &settings, tested(1, false));
        assert_eq!(
            actions,
            [
                Action::Cancel { candidate: 2 },
                Action::Test { candidate: 1 },
                build(3, None, &[2])
            ]
        );
        // Twice is bad for good (one retry): evicted.
        let actions = step(&mut q, &settings, tested(1, false));
        assert_eq!(
            actions,
            [Action::Evicted {
                entry: 1,
                why: Eviction::TestsFailed { candidate: 1 }
            }]
        );
        step(&mut q, &settings, built(3));
        assert_eq!(
            step(&mut q, &settings, tested(3, true)),
            [Action::Land { candidate: 3 }]
        );
        assert_eq!(q.entry(2).unwrap().attempts, 2);
    }

    #[test]
    fn removing_a_change_mid_flight_cancels_what_holds_it_and_rebuilds_those_behind() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        for entry in 1..=3 {
            step(&mut q, &settings, added(entry));
        }
        for candidate in 1..=3 {
            step(&mut q, &settings, built(candidate));
        }
        let actions = step(
            &mut q,
            &settings,
            Event::Removed {
                entry: 2,
                reason: "new push".into(),
            },
        );
        assert_eq!(
            actions,
            [
                Action::Cancel { candidate: 3 },
                Action::Cancel { candidate: 2 },
                build(4, Some(1), &[3])
            ]
        );
        assert_eq!(q.entry(2).unwrap().state, EntryState::Removed);
        // A late result for a cancelled candidate changes nothing.
        let before = q.clone();
        assert_eq!(step(&mut q, &settings, tested(2, true)), []);
        assert_eq!(q, before);
    }

    #[test]
    fn when_the_target_moves_every_live_candidate_is_rebuilt_on_its_new_head() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        step(&mut q, &settings, added(1));
        step(&mut q, &settings, added(2));
        step(&mut q, &settings, built(1));
        step(&mut q, &settings, built(2));
        step(&mut q, &settings, tested(1, true)); // Land{1} is out
        let actions = step(&mut q, &settings, Event::TargetMoved);
        assert_eq!(
            actions,
            [
                Action::Cancel { candidate: 1 },
                Action::Cancel { candidate: 2 },
                build(3, None, &[1])
            ]
        );
        // The change that passed already is tested again, on the new head, before landing.
        assert_eq!(q.entry(1).unwrap().state, EntryState::Passed);
        step(&mut q, &settings, built(3));
        assert_eq!(
            step(&mut q, &settings, tested(3, true)),
            [Action::Land { candidate: 3 }]
        );
    }

    #[test]
    fn nothing_lands_while_paused_and_resuming_lands_what_passed() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        step(&mut q, &settings, Event::Paused);
        step(&mut q, &settings, added(1));
        step(&mut q, &settings, built(1));
        assert_eq!(step(&mut q, &settings, tested(1, true)), []);
        assert_eq!(
            step(&mut q, &settings, Event::Resumed),
            [Action::Land { candidate: 1 }]
        );
    }

    #[test]
    fn a_change_that_does_not_merge_is_evicted_with_its_files() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        step(&mut q, &settings, added(1));
        let files = vec!["src/lib.rs".to_string()];
        let actions = step(
            &mut q,
            &settings,
            Event::Built {
                candidate: 1,
                result: BuildResult::Conflict {
                    files: files.clone(),
                },
            },
        );
        assert_eq!(
            actions,
            [Action::Evicted {
                entry: 1,
                why: Eviction::Conflict { files }
            }]
        );
        assert_eq!(
            q.entry(1).unwrap().reason.as_deref(),
            Some("does not merge: src/lib.rs")
        );
    }

    #[test]
    fn what_was_under_way_is_handed_back_after_a_restart() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        step(&mut q, &settings, added(1));
        step(&mut q, &settings, added(2));
        step(&mut q, &settings, built(1));
        assert_eq!(
            outstanding(&q),
            [Action::Test { candidate: 1 }, build(2, Some(1), &[2])]
        );
        step(&mut q, &settings, built(2));
        step(&mut q, &settings, tested(1, true));
        assert_eq!(
            outstanding(&q),
            [Action::Land { candidate: 1 }, Action::Test { candidate: 2 }]
        );
    }

    #[test]
    fn higher_priority_goes_first_then_arrival() {
        let settings = Settings::default();
        let mut q = QueueState::default();
        for (entry, priority) in [(1, 0), (2, 5), (3, 0), (4, 5)] {
            step(&mut q, &settings, Event::Added { entry, priority });
        }
        assert_eq!(order(&q), [2, 4, 1, 3]);
    }

    #[test]
    fn states_read_back_from_their_names() {
        for state in [
            CandidateState::Building,
            CandidateState::Suspect,
            CandidateState::Superseded,
        ] {
            assert_eq!(CandidateState::parse(state.as_str()), Some(state));
        }
        assert_eq!(EntryState::parse("passed"), Some(EntryState::Passed));
        assert_eq!(EntryState::parse("nope"), None);
    }
}
