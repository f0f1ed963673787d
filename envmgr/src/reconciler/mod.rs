//! The env reconciler: level-triggered, idempotent convergence of each env's desired state
//! (store) with what the runtime reports. Work for one env is serialised (a nudge while it is
//! being reconciled marks it dirty and it runs again after), different envs run in parallel,
//! and a periodic resync revisits every env, expires TTLs and reaps orphaned resources.

mod env;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::git::GitMirrors;
use crate::names::EnvName;
use crate::runtime::Runtime;
use crate::settings::EngineSettings;
use crate::store::{now_ms, Store};

/// What to do after one reconcile pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Converged; the next resync will look again.
    Done,
    /// Look again after this long (backoff after a transient error, or superseded work).
    Requeue(Duration),
}

pub(crate) struct Context {
    pub settings: Arc<EngineSettings>,
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub git: GitMirrors,
    /// A failure's reason can quote a service's log: it is redacted before it is stored
    /// or logged.
    pub redactors: Arc<crate::secrets::Redactors>,
}

/// Which envs are being worked on, and which are backing off after transient failures.
#[derive(Default)]
struct WorkState {
    /// Envs being reconciled now; `true` when asked for again meanwhile (run once more).
    working: HashMap<EnvName, bool>,
    /// Consecutive transient failures per env, for backoff. Kept across passes.
    failures: HashMap<EnvName, u32>,
    /// When an env backing off may be retried; resyncs leave it alone until then.
    retry_at: HashMap<EnvName, tokio::time::Instant>,
}

/// A handle to the running reconciler: nudging makes it look at an env now.
#[derive(Clone)]
pub struct ReconcilerHandle {
    nudges: mpsc::UnboundedSender<EnvName>,
}

impl ReconcilerHandle {
    pub fn nudge(&self, env: &EnvName) {
        // A closed channel means the server is shutting down; the next start resyncs.
        let _ = self.nudges.send(env.clone());
    }
}

struct Reconciler {
    ctx: Arc<Context>,
    state: Mutex<WorkState>,
    nudges: mpsc::UnboundedSender<EnvName>,
}

/// Starts the reconciler loop. It resyncs everything at once, which is how work interrupted
/// by a crash is picked up again.
pub fn spawn(
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
) -> ReconcilerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let git = GitMirrors::new(&settings.data_dir);
    let redactors = Arc::new(crate::secrets::Redactors::new(&settings));
    let ctx = Arc::new(Context {
        settings,
        store,
        runtime,
        git,
        redactors,
    });
    let reconciler = Arc::new(Reconciler {
        ctx,
        state: Mutex::default(),
        nudges: tx.clone(),
    });
    tokio::spawn(reconciler.run(rx));
    ReconcilerHandle { nudges: tx }
}

impl Reconciler {
    async fn run(self: Arc<Self>, mut nudges: mpsc::UnboundedReceiver<EnvName>) {
        let mut next_resync = tokio::time::Instant::now();
        loop {
            let wake = self.next_wake(next_resync).await;
            tokio::select! {
                nudge = nudges.recv() => match nudge {
                    Some(env) => self.schedule(env),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_resync {
                        next_resync = tokio::time::Instant::now() + self.ctx.settings.resync_interval;
                    }
                    self.resync().await;
                }
            }
        }
    }

    /// The next resync, or earlier if an env expires before it.
    async fn next_wake(&self, next_resync: tokio::time::Instant) -> tokio::time::Instant {
        match self.ctx.store.next_expiry().await {
            Ok(Some(at)) => {
                let until = Duration::from_millis((at - now_ms()).max(0) as u64);
                next_resync.min(tokio::time::Instant::now() + until)
            }
            Ok(None) => next_resync,
            Err(e) => {
                warn!(error = %e, "could not read the next expiry");
                next_resync
            }
        }
    }

    /// Expires TTLs, then looks at every env the store or the runtime knows.
    async fn resync(self: &Arc<Self>) {
        match self.ctx.store.expire_due().await {
            Ok(expired) => {
                for env in expired {
                    info!(env = %env, "time to live expired");
                    self.schedule(env);
                }
            }
            Err(e) => warn!(error = %e, "could not expire envs"),
        }
        match self.ctx.store.list(false).await {
            Ok(envs) => {
                for env in envs {
                    self.schedule_resync(env.name);
                }
            }
            Err(e) => warn!(error = %e, "resync could not list envs"),
        }
        // Runtime resources of envs the store no longer wants: reconcile deletes them.
        match self.ctx.runtime.list_envs().await {
            Ok(names) => {
                for name in names {
                    self.schedule_resync(name);
                }
            }
            Err(e) => warn!(error = %e, "resync could not list runtime resources"),
        }
    }

    /// Reconciles `env` now (a request, or a retry that is due).
    fn schedule(self: &Arc<Self>, env: EnvName) {
        {
            let mut state = self.state.lock().expect("work state poisoned");
            if let Some(dirty) = state.working.get_mut(&env) {
                *dirty = true;
                return;
            }
            state.working.insert(env.clone(), false);
        }
        let this = self.clone();
        tokio::spawn(async move { this.work(env).await });
    }

    /// Like `schedule`, but leaves envs that are backing off alone until their retry is due.
    fn schedule_resync(self: &Arc<Self>, env: EnvName) {
        let backing_off = {
            let state = self.state.lock().expect("work state poisoned");
            state
                .retry_at
                .get(&env)
                .is_some_and(|at| *at > tokio::time::Instant::now())
        };
        if !backing_off {
            self.schedule(env);
        }
    }

    /// Reconciles one env until it needs nothing more.
    async fn work(self: Arc<Self>, env: EnvName) {
        loop {
            let action = match env::reconcile(&self.ctx, &env).await {
                Ok(action) => {
                    let mut state = self.state.lock().expect("work state poisoned");
                    state.failures.remove(&env);
                    state.retry_at.remove(&env);
                    action
                }
                Err(e) => {
                    let mut state = self.state.lock().expect("work state poisoned");
                    let failures = state.failures.entry(env.clone()).or_default();
                    *failures += 1;
                    let delay = backoff(*failures);
                    state
                        .retry_at
                        .insert(env.clone(), tokio::time::Instant::now() + delay);
                    warn!(env = %env, error = %format!("{e:#}"), retry_in = ?delay, "reconcile failed");
                    Action::Requeue(delay)
                }
            };
            let mut state = self.state.lock().expect("work state poisoned");
            // Asked for again while working (a new request): look once more right away.
            if state.working.get(&env) == Some(&true) {
                state.working.insert(env.clone(), false);
                continue;
            }
            state.working.remove(&env);
            if let Action::Requeue(delay) = action {
                let nudges = self.nudges.clone();
                let env = env.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = nudges.send(env);
                });
            }
            return;
        }
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(60))
}
