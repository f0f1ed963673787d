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
}

#[derive(Default)]
struct Slot {
    /// Asked for again while running: run once more when done.
    dirty: bool,
    /// Consecutive transient failures, for backoff.
    failures: u32,
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
    slots: Mutex<HashMap<EnvName, Slot>>,
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
    let ctx = Arc::new(Context {
        settings,
        store,
        runtime,
        git,
    });
    let reconciler = Arc::new(Reconciler {
        ctx,
        slots: Mutex::default(),
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
                    self.schedule(env.name);
                }
            }
            Err(e) => warn!(error = %e, "resync could not list envs"),
        }
        // Runtime resources of envs the store no longer wants: reconcile deletes them.
        match self.ctx.runtime.list_envs().await {
            Ok(names) => {
                for name in names {
                    self.schedule(name);
                }
            }
            Err(e) => warn!(error = %e, "resync could not list runtime resources"),
        }
    }

    fn schedule(self: &Arc<Self>, env: EnvName) {
        {
            let mut slots = self.slots.lock().expect("slots poisoned");
            if let Some(slot) = slots.get_mut(&env) {
                slot.dirty = true;
                return;
            }
            slots.insert(env.clone(), Slot::default());
        }
        let this = self.clone();
        tokio::spawn(async move { this.work(env).await });
    }

    /// Reconciles one env until it needs nothing more, then frees its slot.
    async fn work(self: Arc<Self>, env: EnvName) {
        loop {
            let action = match env::reconcile(&self.ctx, &env).await {
                Ok(action) => {
                    self.with_slot(&env, |slot| slot.failures = 0);
                    action
                }
                Err(e) => {
                    let failures = self.with_slot(&env, |slot| {
                        slot.failures += 1;
                        slot.failures
                    });
                    let delay = backoff(failures);
                    warn!(env = %env, error = %format!("{e:#}"), retry_in = ?delay, "reconcile failed");
                    Action::Requeue(delay)
                }
            };
            let mut slots = self.slots.lock().expect("slots poisoned");
            let slot = slots.get_mut(&env).expect("a working env has a slot");
            if slot.dirty {
                slot.dirty = false;
                continue;
            }
            slots.remove(&env);
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

    fn with_slot<T>(&self, env: &EnvName, f: impl FnOnce(&mut Slot) -> T) -> T {
        let mut slots = self.slots.lock().expect("slots poisoned");
        f(slots.entry(env.clone()).or_default())
    }
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(60))
}
