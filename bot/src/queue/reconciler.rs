//! The submit queue's reconciler: one key per queue (`<repo>/<target>`), worked by one
//! replica at a time. It turns what people asked for (entries added, removed, retried; the
//! queue paused) and what the world did (candidates built, tests finished, the target moved)
//! into events for the scheduler ([`envmgr::queue::machine`]), and carries out the
//! scheduler's actions with real git, the engine and the forge.
//!
//! Crash safety: the scheduler's state and what is known of each candidate are one JSON
//! document in the queue's row, written under the lease. A landing is written down before the
//! push and checked again after a restart: the push is a compare-and-swap on the target's
//! old value, and a push that already happened is recognised (the target is the candidate),
//! so no change lands twice and the target only ever moves to a tree that passed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envmgr::controller::{Action as Next, Reconciler, Work};
use envmgr::git::{CandidateBuild, ChangeToMerge, PushOutcome};
use envmgr::names::{BranchName, CommitSha, EnvName, PrNumber, RepoName};
use envmgr::queue::machine::{
    self, BuildResult, CandidateId, CandidateState, EntryId, EntryState, Event, Eviction,
    QueueState,
};
use envmgr::queue::QUEUE_KIND;
use envmgr::store::{now_ms, queue_key, Change, EntryUpdate, Phase, QueueEntry, RunStatus, Store};
use envmgr::RepoSettings;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::app::App;
use crate::github::forge::StatusState;

/// The commit status Slipway keeps on a queued pull request's head.
pub const QUEUE_CONTEXT: &str = "slipway/queue";
/// Who the queue acts as, in the audit log and on timelines.
const ACTOR: &str = "slipway-queue";
/// How often a queue with candidates under test looks at them.
const POLL: Duration = Duration::from_secs(2);

/// The scheduler's state and what the world knows about each candidate, kept as one
/// document per queue.
#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueDoc {
    machine: QueueState,
    #[serde(default)]
    candidates: BTreeMap<CandidateId, CandidateWorld>,
    /// The target's head the queue last saw (roots are built on it).
    #[serde(default)]
    target_head: Option<CommitSha>,
    /// The generation of each entry the scheduler was told about (a retry bumps it).
    #[serde(default)]
    generations: BTreeMap<EntryId, i64>,
    /// A push in flight: written before it starts, cleared once it is recorded.
    #[serde(default)]
    landing: Option<Landing>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Landing {
    candidate: CandidateId,
    expected: CommitSha,
    commit: CommitSha,
}

/// What git, the engine and the tests said about one candidate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct CandidateWorld {
    /// The commit it was built on (the target's head or its parent's commit).
    base: Option<CommitSha>,
    commit: Option<CommitSha>,
    tree: Option<String>,
    env: Option<EnvName>,
    /// The test run being waited for; `None` with an env means "its automatic run".
    run: Option<i64>,
    /// Runs already counted for this tree.
    counted: Vec<i64>,
    /// When its first test run was asked for (unix ms).
    started_at: Option<i64>,
    /// The last failure: the snippet and where the full log is.
    failure: Option<String>,
    /// The last failure in one plain line (the run's headline).
    #[serde(default)]
    headline: Option<String>,
    /// Test names that failed and then passed on this tree.
    flaky: Vec<String>,
    /// Conflicting files, when the merge did not go through.
    conflict: Vec<String>,
}

pub struct QueueReconciler {
    app: Arc<App>,
}

impl QueueReconciler {
    pub fn new(app: Arc<App>) -> Self {
        QueueReconciler { app }
    }
}

/// Starts the queue controller beside the engine's.
pub fn start(app: &Arc<App>) {
    app.engine
        .spawn_controller(QueueReconciler::new(app.clone()));
}

fn parse_key(key: &str) -> Option<(RepoName, BranchName)> {
    let (repo, target) = key.split_once('/')?;
    Some((RepoName::parse(repo).ok()?, BranchName::parse(target).ok()?))
}

#[async_trait::async_trait]
impl Reconciler for QueueReconciler {
    fn kind(&self) -> &'static str {
        QUEUE_KIND
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .app
            .store()
            .queue_rows()
            .await?
            .into_iter()
            .map(|row| queue_key(&row.repo, &row.target))
            .collect())
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Next> {
        let Some((repo_name, target)) = parse_key(key) else {
            return Ok(Next::AwaitChange);
        };
        let Some(repo) = self
            .app
            .engine
            .settings()
            .repos
            .iter()
            .find(|r| r.name == repo_name)
            .cloned()
        else {
            return Ok(Next::AwaitChange);
        };
        if repo.queue.target != target {
            // The config moved the queue to another target: this one is left as it is.
            return Ok(Next::AwaitChange);
        }
        let mut pass = Pass::load(&self.app, work, repo).await?;
        if pass.idle() {
            // Nothing in line and nothing under way: not even a fetch of the target.
            return Ok(Next::AwaitChange);
        }
        pass.run().await?;
        pass.save().await?;
        Ok(if pass.waiting() {
            Next::Requeue(POLL)
        } else {
            Next::AwaitChange
        })
    }
}

/// One reconcile of one queue.
struct Pass<'a> {
    app: &'a App,
    store: Store,
    work: &'a Work,
    repo: RepoSettings,
    doc: QueueDoc,
    entries: BTreeMap<EntryId, QueueEntry>,
    paused: bool,
    events: VecDeque<Event>,
}

impl<'a> Pass<'a> {
    async fn load(app: &'a App, work: &'a Work, repo: RepoSettings) -> anyhow::Result<Self> {
        let store = work.store().clone();
        let row = store
            .queue_row(&repo.name, &repo.queue.target)
            .await?
            .context("the queue's row is gone")?;
        let doc: QueueDoc = if row.doc.trim() == "{}" || row.doc.trim().is_empty() {
            QueueDoc::default()
        } else {
            serde_json::from_str(&row.doc).context("the queue's stored state is unreadable")?
        };
        let entries = store
            .queue_entries(&repo.name, &repo.queue.target, 0)
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        Ok(Pass {
            app,
            store,
            work,
            repo,
            doc,
            entries,
            paused: row.paused,
            events: VecDeque::new(),
        })
    }

    async fn save(&self) -> anyhow::Result<()> {
        let doc = serde_json::to_string(&self.doc)?;
        self.store
            .save_queue_doc(&self.repo.name, &self.repo.queue.target, &doc)
            .await?;
        Ok(())
    }

    /// No entry in the store or the scheduler needs anything.
    fn idle(&self) -> bool {
        self.entries.is_empty()
            && self.doc.landing.is_none()
            && self.paused == self.doc.machine.paused
            && !self
                .doc
                .machine
                .candidates
                .iter()
                .any(|c| c.state.is_live())
            && !self.doc.machine.entries.iter().any(|e| e.state.is_live())
    }

    /// Whether something is under way that nobody will nudge about (tests running).
    fn waiting(&self) -> bool {
        self.doc
            .machine
            .candidates
            .iter()
            .any(|c| matches!(c.state, CandidateState::Testing | CandidateState::Landing))
    }

    async fn run(&mut self) -> anyhow::Result<()> {
        // A landing cut off by a crash is finished (or found finished) first, then whatever
        // else was under way when the last pass stopped short.
        if let Some(landing) = self.doc.landing.clone() {
            self.land(landing.candidate, Some(landing)).await?;
        }
        for action in machine::outstanding(&self.doc.machine) {
            if self.unfinished(&action) {
                self.act(action).await?;
            }
        }
        self.observe_requests();
        self.drop_unseen_removals().await?;
        self.observe_target().await?;
        self.observe_tests().await?;
        let moved = !self.events.is_empty();
        self.events.push_back(Event::Tick);
        while let Some(event) = self.events.pop_front() {
            let settings = machine::Settings {
                parallel: self.repo.queue.parallel,
                batch: self.repo.queue.batch,
                retries: self.repo.queue.retries,
                ..Default::default()
            };
            let before = self.entry_states();
            let actions = machine::step(&mut self.doc.machine, &settings, event);
            for action in actions {
                self.act(action).await?;
                self.work.still_held().await?;
            }
            self.record_entry_states(&before).await?;
        }
        self.forget_finished().await?;
        if moved {
            // Positions and ETAs of everyone in line changed: their sticky comments follow.
            for entry in self.entries.values().filter(|e| e.is_live()) {
                if let Change::Pull(number) = entry.change {
                    self.app.engine.nudge(
                        crate::github::report::KIND,
                        &crate::github::report::key(&entry.repo, number),
                    );
                }
            }
        }
        Ok(())
    }

    /// Whether an action the scheduler had under way was cut off before its effect was known.
    fn unfinished(&self, action: &machine::Action) -> bool {
        let world = |id: CandidateId| self.doc.candidates.get(&id).cloned().unwrap_or_default();
        match action {
            machine::Action::Build { candidate, .. } => {
                let world = world(*candidate);
                world.commit.is_none() && world.conflict.is_empty()
            }
            machine::Action::Test { candidate } => world(*candidate).env.is_none(),
            machine::Action::Land { .. } => self.doc.landing.is_none(),
            _ => false,
        }
    }

    fn entry_states(&self) -> BTreeMap<EntryId, EntryState> {
        self.doc
            .machine
            .entries
            .iter()
            .map(|e| (e.id, e.state))
            .collect()
    }

    /// People's requests since the last pass, as scheduler events.
    fn observe_requests(&mut self) {
        let known: BTreeMap<EntryId, EntryState> = self.entry_states();
        for entry in self.entries.values() {
            let seen = self.doc.generations.get(&entry.id).copied();
            match known.get(&entry.id) {
                None if entry.is_live() => {
                    self.events.push_back(Event::Added {
                        entry: entry.id,
                        priority: entry.priority,
                    });
                    self.doc.generations.insert(entry.id, entry.generation);
                }
                Some(EntryState::Failed) if entry.is_live() && seen < Some(entry.generation) => {
                    self.events.push_back(Event::Retry { entry: entry.id });
                    self.doc.generations.insert(entry.id, entry.generation);
                }
                Some(state) if !entry.wanted && state.is_live() => {
                    self.events.push_back(Event::Removed {
                        entry: entry.id,
                        reason: entry
                            .remove_reason
                            .clone()
                            .unwrap_or_else(|| "removed".into()),
                    });
                }
                _ => {}
            }
        }
        if self.paused != self.doc.machine.paused {
            self.events.push_back(if self.paused {
                Event::Paused
            } else {
                Event::Resumed
            });
        }
    }

    /// Entries taken out before the scheduler ever saw them: recorded removed at once.
    async fn drop_unseen_removals(&mut self) -> anyhow::Result<()> {
        let known = self.entry_states();
        let unseen: Vec<QueueEntry> = self
            .entries
            .values()
            .filter(|e| !e.wanted && !known.contains_key(&e.id))
            .cloned()
            .collect();
        for entry in unseen {
            let why = entry
                .remove_reason
                .clone()
                .unwrap_or_else(|| "removed".into());
            self.store
                .record_entry(
                    &entry,
                    EntryState::Removed,
                    &EntryUpdate {
                        reason: Some(why),
                        ..Default::default()
                    },
                    None,
                )
                .await?;
            self.entries.remove(&entry.id);
        }
        Ok(())
    }

    /// The target's head: someone else moving it means every candidate is rebuilt.
    async fn observe_target(&mut self) -> anyhow::Result<()> {
        let git = self.app.engine.git();
        let head = git
            .fetch_branch(&self.repo, &self.repo.queue.target)
            .await
            .with_context(|| {
                format!("cannot fetch the target branch {}", self.repo.queue.target)
            })?;
        match &self.doc.target_head {
            Some(known) if *known == head => {}
            Some(known) => {
                info!(queue = %self.repo.name, from = %known.short(), to = %head.short(), "the target moved outside the queue; rebuilding");
                self.doc.target_head = Some(head);
                self.events.push_back(Event::TargetMoved);
            }
            None => self.doc.target_head = Some(head),
        }
        Ok(())
    }

    /// Test outcomes of candidates under test.
    async fn observe_tests(&mut self) -> anyhow::Result<()> {
        let testing: Vec<CandidateId> = self
            .doc
            .machine
            .candidates
            .iter()
            .filter(|c| c.state == CandidateState::Testing)
            .map(|c| c.id)
            .collect();
        for id in testing {
            if let Some(passed) = self.test_outcome(id).await? {
                self.events.push_back(Event::Tested {
                    candidate: id,
                    passed,
                });
            }
        }
        Ok(())
    }

    /// `Some(passed)` once the candidate's current test run is over.
    async fn test_outcome(&mut self, id: CandidateId) -> anyhow::Result<Option<bool>> {
        let Some(world) = self.doc.candidates.get(&id).cloned() else {
            return Ok(None);
        };
        let (Some(env), Some(commit)) = (&world.env, &world.commit) else {
            return Ok(None);
        };
        let Some(record) = self.store.get(env).await? else {
            return Ok(Some(false));
        };
        if record.phase == Phase::Failed && record.commit.as_ref() == Some(commit) {
            let why = record
                .reason
                .clone()
                .unwrap_or_else(|| "the candidate's environment failed".into());
            let world = self.doc.candidates.entry(id).or_default();
            world.failure = Some(format!("the environment failed: {why}"));
            world.headline = Some(format!("the environment failed: {why}"));
            return Ok(Some(false));
        }
        if record.phase == Phase::Failed || record.phase == Phase::Deleted {
            return Ok(Some(false));
        }
        let runs = self.store.runs(env, 20).await?;
        let run = match world.run {
            Some(run_id) => runs.into_iter().find(|r| r.id == run_id),
            None => runs
                .into_iter()
                .find(|r| r.commit.as_ref() == Some(commit) && !world.counted.contains(&r.id)),
        };
        let Some(run) = run else {
            // Ready with no test services: the env coming up is the whole test.
            if record.phase == Phase::Ready
                && record.commit.as_ref() == Some(commit)
                && record.observed_generation >= record.generation
                && self.store.runs(env, 1).await?.is_empty()
            {
                return Ok(Some(true));
            }
            return Ok(None);
        };
        if !run.status.is_finished() {
            return Ok(None);
        }
        let passed = run.status == RunStatus::Passed;
        let world = self.doc.candidates.entry(id).or_default();
        world.counted.push(run.id);
        world.run = None;
        let (counted, failed_before) = (world.counted.clone(), world.failure.is_some());
        if passed {
            if failed_before {
                // Failed before on this very tree, passed now: those failures were flakes.
                let flaky = self.failed_tests_of(&counted).await?;
                let world = self.doc.candidates.entry(id).or_default();
                world.flaky = flaky;
            }
            let world = self.doc.candidates.entry(id).or_default();
            if let Some(tree) = world.tree.clone() {
                let flaky = world.flaky.clone();
                self.store
                    .record_tree_passed(&self.repo.name, &tree, run.id, &flaky)
                    .await?;
            }
        } else {
            let log = format!(
                "{}/api/v1/envs/{}/runs/{}/log",
                self.app.public_url, run.env, run.id
            );
            let snippet = run
                .snippet_comment
                .clone()
                .or(run.headline.clone())
                .unwrap_or_else(|| format!("tests {}", run.status.as_str()));
            world.failure = Some(format!("{snippet}\n\nFull log: {log}"));
            world.headline = Some(
                run.headline
                    .clone()
                    .unwrap_or_else(|| format!("tests {}", run.status.as_str())),
            );
        }
        Ok(Some(passed))
    }

    async fn failed_tests_of(&self, runs: &[i64]) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for id in runs {
            if let Some(run) = self.store.get_run(*id).await? {
                names.extend(run.failed_tests().map(|t| t.name.clone()));
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn act(&mut self, action: machine::Action) -> anyhow::Result<()> {
        match action {
            machine::Action::Build {
                candidate,
                parent,
                changes,
            } => self.build(candidate, parent, &changes).await,
            machine::Action::Test { candidate } => self.test(candidate).await,
            machine::Action::Cancel { candidate } => self.drop_env(candidate).await,
            machine::Action::Land { candidate } => self.land(candidate, None).await,
            machine::Action::Merged { entry, candidate } => self.merged(entry, candidate).await,
            machine::Action::Evicted { entry, why } => self.evicted(entry, why).await,
            machine::Action::Flaky { candidate } => {
                info!(queue = %self.repo.name, candidate, "a flaky tree passed on retry");
                Ok(())
            }
        }
    }

    fn entry(&self, id: EntryId) -> Option<&QueueEntry> {
        self.entries.get(&id)
    }

    /// The merge of the parent's commit (or the target's head) with `changes`, in the mirror.
    async fn build(
        &mut self,
        candidate: CandidateId,
        parent: Option<CandidateId>,
        changes: &[EntryId],
    ) -> anyhow::Result<()> {
        let base = match parent {
            Some(p) => self.doc.candidates.get(&p).and_then(|w| w.commit.clone()),
            None => self.doc.target_head.clone(),
        };
        let Some(base) = base else {
            // The parent has no commit yet: the scheduler builds parents first, so this is
            // a parent that could not be built; it says so itself.
            self.events.push_back(Event::Built {
                candidate,
                result: BuildResult::Conflict { files: vec![] },
            });
            return Ok(());
        };
        let git = self.app.engine.git();
        let mut merges = Vec::new();
        for id in changes {
            let Some(entry) = self.entry(*id).cloned() else {
                continue;
            };
            let refs = match &entry.change {
                Change::Pull(n) => vec![format!("refs/pull/{n}/head")],
                Change::Branch(b) => vec![format!("refs/heads/{b}")],
            };
            git.fetch_commit(&self.repo, &refs, &entry.head)
                .await
                .with_context(|| format!("cannot fetch {}", entry.change.label(&entry.repo)))?;
            merges.push(ChangeToMerge {
                head: entry.head.clone(),
                title: change_title(&entry),
            });
        }
        let built = git
            .build_candidate(&self.repo.name, &base, &merges, self.repo.queue.method)
            .await
            .context("cannot build the candidate")?;
        let world = self.doc.candidates.entry(candidate).or_default();
        world.base = Some(base);
        let result = match built {
            CandidateBuild::Built { commit, tree } => {
                world.commit = Some(commit);
                world.tree = Some(tree);
                BuildResult::Ready
            }
            CandidateBuild::Conflict { files, .. } => {
                world.conflict = files.clone();
                BuildResult::Conflict { files }
            }
        };
        self.events.push_back(Event::Built { candidate, result });
        Ok(())
    }

    /// Tests the candidate's tree: at once when that tree passed before, else in its env.
    async fn test(&mut self, candidate: CandidateId) -> anyhow::Result<()> {
        let world = self.doc.candidates.entry(candidate).or_default().clone();
        let (Some(commit), Some(tree)) = (world.commit.clone(), world.tree.clone()) else {
            self.events.push_back(Event::Tested {
                candidate,
                passed: false,
            });
            return Ok(());
        };
        if let Some(result) = self.store.tree_result(&self.repo.name, &tree).await? {
            if result.passed {
                info!(queue = %self.repo.name, candidate, tree = %&tree[..tree.len().min(12)], "this tree passed before; not testing it again");
                self.events.push_back(Event::Tested {
                    candidate,
                    passed: true,
                });
                return Ok(());
            }
        }
        let name = candidate_env(&self.repo.name, candidate)?;
        let now = now_ms();
        let current = self.store.get(&name).await?;
        let same = current.as_ref().is_some_and(|env| {
            env.candidate.as_ref() == Some(&commit)
                && env.desired == envmgr::store::Desired::Running
        });
        let world = self.doc.candidates.entry(candidate).or_default();
        world.started_at.get_or_insert(now);
        world.env = Some(name.clone());
        if same {
            // A retry on the same tree: run the tests again in the env that has it.
            let run = self
                .app
                .engine
                .request_test(&name, false, ACTOR)
                .await
                .context("cannot start the candidate's tests")?;
            self.doc.candidates.entry(candidate).or_default().run = Some(run.id);
        } else {
            let branch = BranchName::parse(&format!("slipway-queue/{candidate}"))?;
            self.app
                .engine
                .up_candidate(&self.repo.name, name, branch, &commit, ACTOR)
                .await
                .context("cannot start the candidate's environment")?;
            self.doc.candidates.entry(candidate).or_default().run = None;
        }
        Ok(())
    }

    async fn drop_env(&mut self, candidate: CandidateId) -> anyhow::Result<()> {
        if let Some(env) = self
            .doc
            .candidates
            .get(&candidate)
            .and_then(|w| w.env.clone())
        {
            match self.app.engine.down(&env, ACTOR).await {
                Ok(_) | Err(envmgr::engine::EngineError::NotFound(_)) => {}
                Err(e) => warn!(env = %env, error = %e, "cannot delete a candidate's environment"),
            }
        }
        Ok(())
    }

    /// Moves the target to the candidate's commit, compare-and-swap on the head it was built
    /// on; `resumed` is a landing a crash cut off.
    async fn land(
        &mut self,
        candidate: CandidateId,
        resumed: Option<Landing>,
    ) -> anyhow::Result<()> {
        let landing = match resumed {
            Some(landing) => landing,
            None => {
                let commit = self
                    .doc
                    .candidates
                    .get(&candidate)
                    .and_then(|w| w.commit.clone())
                    .context("a candidate to land has no commit")?;
                // Compare-and-swap on the commit it was built on: the target's head then.
                let expected = self
                    .doc
                    .candidates
                    .get(&candidate)
                    .and_then(|w| w.base.clone())
                    .context("a candidate to land has no base")?;
                let landing = Landing {
                    candidate,
                    expected,
                    commit,
                };
                // Written down before the push: a crash after it is found and finished.
                self.doc.landing = Some(landing.clone());
                self.save().await?;
                landing
            }
        };
        // Paused since the scheduler chose to land: hold it (the next passes try again).
        let paused = self
            .store
            .queue_row(&self.repo.name, &self.repo.queue.target)
            .await?
            .is_some_and(|r| r.paused);
        if paused {
            self.doc.landing = None;
            return Ok(());
        }
        self.work.still_held().await?;
        let git = self.app.engine.git();
        let outcome = git
            .push_target(
                &self.repo,
                &self.repo.queue.target,
                &landing.expected,
                &landing.commit,
            )
            .await
            .context("cannot push the target branch")?;
        self.doc.landing = None;
        match outcome {
            PushOutcome::Pushed | PushOutcome::AlreadyThere => {
                info!(queue = %self.repo.name, commit = %landing.commit.short(), "landed");
                // The exact tested artifact rolls out through the repo's channels. Asked
                // before the landing is forgotten (saved later), so a crash here asks again
                // after the restart; asking twice for one commit is a no-op.
                self.app
                    .engine
                    .release_landed(&self.repo.name, &landing.commit, ACTOR)
                    .await
                    .context("cannot start the rollout of the landed commit")?;
                self.doc.target_head = Some(landing.commit.clone());
                self.events.push_back(Event::Landed {
                    candidate: landing.candidate,
                });
            }
            PushOutcome::Moved { now } => {
                info!(queue = %self.repo.name, "the target moved under the queue; rebuilding, never forcing");
                self.doc.target_head = now.or(self.doc.target_head.clone());
                self.events.push_back(Event::TargetMoved);
            }
        }
        Ok(())
    }

    async fn merged(&mut self, entry_id: EntryId, candidate: CandidateId) -> anyhow::Result<()> {
        let Some(entry) = self.entry(entry_id).cloned() else {
            return Ok(());
        };
        let world = self
            .doc
            .candidates
            .get(&candidate)
            .cloned()
            .unwrap_or_default();
        let commit = world.commit.clone();
        let now = now_ms();
        let tested_ms = world.started_at.map(|s| now - s);
        let queued = fmt_minutes(now - entry.enqueued_at);
        let tested = tested_ms
            .map(fmt_minutes)
            .unwrap_or_else(|| "not re-tested".into());
        let flaky = if world.flaky.is_empty() {
            String::new()
        } else {
            format!("; flaky tests: {}", world.flaky.join(", "))
        };
        let message = format!(
            "{} merged as {} (queued {queued}, tested {tested}){flaky}",
            entry.change.label(&entry.repo),
            commit.as_ref().map(|c| c.short()).unwrap_or("?"),
        );
        let changed = self
            .store
            .record_entry(
                &entry,
                EntryState::Merged,
                &EntryUpdate {
                    merged_commit: commit.clone(),
                    tested_ms,
                    ..Default::default()
                },
                Some(("queue.merged", &message)),
            )
            .await?;
        if !changed {
            return Ok(());
        }
        info!(queue = %self.repo.name, change = %entry.change, "{message}");
        // Its own env has done its job.
        let env = entry.change.env_name(&entry.repo);
        if let Err(e) = self.app.engine.down(&env, ACTOR).await {
            if !matches!(e, envmgr::engine::EngineError::NotFound(_)) {
                warn!(env = %env, error = %e, "cannot delete the landed change's environment");
            }
        }
        if let Change::Pull(number) = entry.change {
            let body = format!(
                "🚢 Landed on `{}` as {} by the submit queue (queued {queued}, tested {tested}){flaky}.",
                entry.target,
                commit.as_ref().map(|c| c.as_str()).unwrap_or("?"),
            );
            self.tell_pull(number, &entry, StatusState::Success, "landed", &body)
                .await;
            if self.repo.queue.method != envmgr::settings::MergeMethod::Merge {
                // Squashed or rebased commits do not contain the head: GitHub cannot see it
                // merged, so the queue closes it, having named the landed commit above.
                if let Some((forge, github)) = self.forge() {
                    if let Err(e) = forge.close_pull_request(github, number).await {
                        warn!(pr = %number, error = %e, "cannot close the landed pull request");
                    }
                }
            }
        }
        Ok(())
    }

    async fn evicted(&mut self, entry_id: EntryId, why: Eviction) -> anyhow::Result<()> {
        let Some(entry) = self.entry(entry_id).cloned() else {
            return Ok(());
        };
        let (reason, detail) = match &why {
            Eviction::Conflict { files } => {
                let files = if files.is_empty() {
                    "conflicting changes".to_string()
                } else {
                    files.join(", ")
                };
                (
                    format!("does not merge cleanly with {}: {files}", entry.target),
                    format!(
                        "It does not merge cleanly with `{}` and the changes ahead of it. Conflicting files:\n\n{}",
                        entry.target,
                        match &why {
                            Eviction::Conflict { files } => files
                                .iter()
                                .map(|f| format!("- `{f}`"))
                                .collect::<Vec<_>>()
                                .join("\n"),
                            _ => String::new(),
                        }
                    ),
                )
            }
            Eviction::TestsFailed { candidate } => {
                let world = self
                    .doc
                    .candidates
                    .get(candidate)
                    .cloned()
                    .unwrap_or_default();
                let failure = world.failure.unwrap_or_else(|| "the tests failed".into());
                let headline = world.headline.unwrap_or_else(|| "see the log".into());
                (
                    format!("tests failed: {}", crate::text::truncate(&headline, 200)),
                    format!("The merged tree failed its tests:\n\n{failure}"),
                )
            }
        };
        let message = format!(
            "{} left the queue: {reason}",
            entry.change.label(&entry.repo)
        );
        let changed = self
            .store
            .record_entry(
                &entry,
                EntryState::Failed,
                &EntryUpdate {
                    reason: Some(reason.clone()),
                    ..Default::default()
                },
                Some(("queue.failed", &format!("{message}\n\n{detail}"))),
            )
            .await?;
        if !changed {
            return Ok(());
        }
        if let Change::Pull(number) = entry.change {
            let body = format!(
                "❌ `{}` left the submit queue. {detail}\n\n`/slipway queue retry` puts it back in line once fixed (or push a fix and `/slipway merge` again).",
                entry.change.label(&entry.repo)
            );
            self.tell_pull(number, &entry, StatusState::Failure, &reason, &body)
                .await;
        }
        Ok(())
    }

    /// Writes the machine's entry states that changed this step (queued → testing → passed),
    /// and the final ones it reached without an action of their own (removed).
    async fn record_entry_states(
        &mut self,
        before: &BTreeMap<EntryId, EntryState>,
    ) -> anyhow::Result<()> {
        let after: Vec<(EntryId, EntryState, u32)> = self
            .doc
            .machine
            .entries
            .iter()
            .map(|e| (e.id, e.state, e.attempts))
            .collect();
        for (id, state, attempts) in after {
            let Some(entry) = self.entry(id).cloned() else {
                continue;
            };
            // Merged and Failed are written by their actions, with their events.
            if matches!(state, EntryState::Merged | EntryState::Failed) {
                continue;
            }
            if before.get(&id) == Some(&state) && entry.attempts == attempts as i64 {
                continue;
            }
            let event = match state {
                EntryState::Removed => Some((
                    "queue.left",
                    format!(
                        "{} is out of the queue: {}",
                        entry.change.label(&entry.repo),
                        entry
                            .remove_reason
                            .clone()
                            .unwrap_or_else(|| "removed".into())
                    ),
                )),
                _ => None,
            };
            let changed = self
                .store
                .record_entry(
                    &entry,
                    state,
                    &EntryUpdate {
                        attempts: Some(attempts as i64),
                        reason: (state == EntryState::Removed)
                            .then(|| entry.remove_reason.clone())
                            .flatten(),
                        ..Default::default()
                    },
                    event.as_ref().map(|(k, m)| (*k, m.as_str())),
                )
                .await?;
            if changed && state == EntryState::Removed {
                if let Change::Pull(number) = entry.change {
                    let why = entry
                        .remove_reason
                        .clone()
                        .unwrap_or_else(|| "removed".into());
                    self.tell_pull(
                        number,
                        &entry,
                        StatusState::Failure,
                        "removed from the queue",
                        &format!(
                            "`{}` left the submit queue: {why}.",
                            entry.change.label(&entry.repo)
                        ),
                    )
                    .await;
                }
            }
            if changed && state == EntryState::Queued && before.get(&id).is_none() {
                if let Change::Pull(number) = entry.change {
                    self.status(number, &entry, StatusState::Pending, "in the submit queue")
                        .await;
                }
            }
        }
        Ok(())
    }

    /// Drops what finished candidates left behind: their envs, and their facts once the
    /// scheduler no longer knows them.
    async fn forget_finished(&mut self) -> anyhow::Result<()> {
        let finished: Vec<CandidateId> = self
            .doc
            .machine
            .candidates
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    CandidateState::Landed
                        | CandidateState::Failed
                        | CandidateState::Conflict
                        | CandidateState::Cancelled
                        | CandidateState::Superseded
                )
            })
            .map(|c| c.id)
            .collect();
        let git = self.app.engine.git();
        for id in finished {
            self.drop_env(id).await?;
            if let Some(world) = self.doc.candidates.get_mut(&id) {
                world.env = None;
                // Its commit may go with the mirror's next gc (a landed one is on the target).
                if let Some(commit) = world.commit.clone() {
                    if let Err(e) = git.forget_candidate(&self.repo.name, &commit).await {
                        warn!(commit = %commit.short(), error = %e, "cannot drop a candidate's ref");
                    }
                }
            }
        }
        self.doc.machine.prune();
        let known: Vec<CandidateId> = self.doc.machine.candidates.iter().map(|c| c.id).collect();
        self.doc.candidates.retain(|id, _| known.contains(id));
        let live: Vec<EntryId> = self.doc.machine.entries.iter().map(|e| e.id).collect();
        self.doc
            .generations
            .retain(|id, _| live.contains(id) || self.entries.contains_key(id));
        Ok(())
    }

    fn forge(&self) -> Option<(&dyn crate::github::forge::Forge, &str)> {
        let link = self
            .app
            .github_links
            .iter()
            .find(|l| l.repo == self.repo.name)?;
        Some((self.app.forge.as_deref()?, link.github.as_str()))
    }

    /// A comment on the pull request and its `slipway/queue` status. Best effort: GitHub
    /// being down must not hold the queue (the timeline and the sinks have it too).
    async fn tell_pull(
        &self,
        number: PrNumber,
        entry: &QueueEntry,
        state: StatusState,
        description: &str,
        body: &str,
    ) {
        let Some((forge, github)) = self.forge() else {
            return;
        };
        // Snippets come redacted from the test runner; this also covers values of the
        // change's own compose file and the server's tokens in anything else said here.
        let body = self
            .app
            .engine
            .redactors()
            .for_commit(&self.repo.name, Some(&entry.head))
            .await
            .redact_text(body);
        if let Err(e) = forge.create_comment(github, number, &body).await {
            warn!(pr = %number, error = %e, "cannot comment on the pull request");
        }
        self.status(number, entry, state, description).await;
    }

    async fn status(
        &self,
        number: PrNumber,
        entry: &QueueEntry,
        state: StatusState,
        description: &str,
    ) {
        let Some((forge, github)) = self.forge() else {
            return;
        };
        // The sticky comment shows the queue's line too.
        self.app.engine.nudge(
            crate::github::report::KIND,
            &crate::github::report::key(&entry.repo, number),
        );
        let description = crate::text::truncate(description, 140);
        if let Err(e) = forge
            .commit_status(
                github,
                entry.head.as_str(),
                state,
                QUEUE_CONTEXT,
                &description,
                None,
            )
            .await
        {
            warn!(pr = %number, error = %e, "cannot set the queue status");
        }
    }
}

/// `<repo>-q-<candidate>`: the env a candidate is tested in.
fn candidate_env(repo: &RepoName, candidate: CandidateId) -> anyhow::Result<EnvName> {
    Ok(EnvName::parse(&format!("{repo}-q-{candidate}"))?)
}

/// What a change's merge commit says: `shop#42: Add the cart (queued by ernie)`.
fn change_title(entry: &QueueEntry) -> String {
    match &entry.change {
        Change::Pull(n) => format!("{}#{n}: {}", entry.repo, entry.title),
        Change::Branch(b) => format!("branch '{b}' of {}", entry.repo),
    }
}

fn fmt_minutes(ms: i64) -> String {
    let minutes = (ms.max(0) as f64 / 60_000.0).round() as i64;
    if minutes < 1 {
        "<1 min".into()
    } else {
        format!("{minutes} min")
    }
}
