//! The one controller under every loop (the kube-rs shape). A [`Reconciler`] names the keys
//! it owns and converges one key at a time; the controller decides when: at a nudge, at a
//! requeue, after an error (one backoff), and at each resync, which revisits every key and is
//! how work cut off by a crash is picked up again.
//!
//! Several replicas may share one store. Before working on a key the controller takes the
//! key's lease in the store and renews it while the work lasts, so exactly one replica works
//! a key at a time; the reconciler writes through a store fenced by the lease's token, and the
//! work is dropped the moment the lease is lost. A key held by another replica is looked at
//! again when that lease runs out, so a killed replica's keys move on within `lease_ttl`.
//! Nudges reach every replica (Postgres `LISTEN/NOTIFY`; on SQLite, one process, the resync
//! is the fallback).

mod metrics;
mod nudges;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use metrics::ControllerMetrics;
pub use nudges::NudgeBus;

use crate::store::{now_ms, Lease, Store, StoreError};

/// What to do with a key after one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Converged: nothing until a nudge or the next resync.
    AwaitChange,
    /// Look again after this long (waiting on something slow, or superseded work).
    Requeue(Duration),
}

/// One kind of work: envs, test runs, deliveries. Keys are strings the reconciler parses.
#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// The kind's name: the lease kind in the store and the `kind` label of the metrics.
    fn kind(&self) -> &'static str;

    /// Every key that may need work, looked at on each resync.
    async fn keys(&self) -> anyhow::Result<Vec<String>>;

    /// Housekeeping before each resync's keys (e.g. expiring TTLs); safe on every replica.
    async fn before_resync(&self) {}

    /// When something falls due before the next resync (a TTL), how long until then.
    async fn due_in(&self) -> Option<Duration> {
        None
    }

    /// Converges `key` while `work` holds its lease; writes go through `work.store()`.
    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action>;

    /// How long to wait before trying `key` again after its `failures`-th error in a row.
    fn error_policy(&self, _key: &str, _error: &anyhow::Error, failures: u32) -> Duration {
        backoff(failures)
    }
}

/// What a reconcile pass holds: the key's lease and the store fenced by it.
pub struct Work {
    lease: Lease,
    store: Store,
    lease_ttl: Duration,
}

impl Work {
    /// The store, with writes to the key's rows refused once the lease is lost.
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Fails with [`StoreError::StaleLease`] unless the lease is still held, which this
    /// extends: for a step that cannot be taken back (a comment posted), so a replica that
    /// stalled past its lease stops instead of doing the new holder's work again.
    pub async fn still_held(&self) -> Result<(), StoreError> {
        let mut lease = self.lease.clone();
        if self.store.renew_lease(&mut lease, self.lease_ttl).await? {
            Ok(())
        } else {
            Err(StoreError::StaleLease {
                kind: lease.kind,
                key: lease.key,
                token: lease.token,
            })
        }
    }
}

/// How the controllers of one process take part among the replicas.
#[derive(Debug, Clone)]
pub struct ControllerSettings {
    /// Names this process in leases: unique per process (host, pid, a random part).
    pub holder: String,
    /// How long a lease lasts without renewal: the longest a key waits after its holder
    /// dies. Renewed every third of it.
    pub lease_ttl: Duration,
    /// How often every key is revisited without a nudge.
    pub resync_interval: Duration,
}

impl ControllerSettings {
    /// A holder name for this process.
    pub fn holder_name() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let host = if host.is_empty() {
            "slipway".into()
        } else {
            host
        };
        format!(
            "{host}-{}-{:08x}",
            std::process::id(),
            crate::store::rand_u64() as u32
        )
    }
}

/// Default of `lease_ttl`.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(15);

/// Makes a key be looked at now, on whichever replica holds it.
#[derive(Clone)]
pub struct Nudger {
    kind: &'static str,
    local: mpsc::UnboundedSender<String>,
    bus: NudgeBus,
}

impl Nudger {
    pub fn nudge(&self, key: &str) {
        // A closed channel means the process is shutting down; the next start resyncs.
        let _ = self.local.send(key.to_string());
        self.bus.publish(self.kind, key);
    }
}

/// Which keys are being worked on, and which are backing off.
#[derive(Default)]
struct WorkState {
    /// Keys being reconciled now; `true` when nudged meanwhile (run once more).
    working: HashMap<String, bool>,
    /// Consecutive errors per key, for backoff.
    failures: HashMap<String, u32>,
    /// When a key backing off (or held by another replica) is due; resyncs leave it alone.
    retry_at: HashMap<String, tokio::time::Instant>,
    /// The resync in progress: how long a whole pass over every key takes is the control
    /// loop's reaction time to anything that is not nudged (idle deadlines, drift).
    pass: Option<ResyncPass>,
}

/// Keys a resync scheduled (those not known to be converged) that have not finished their
/// turn yet.
struct ResyncPass {
    started: std::time::Instant,
    keys: usize,
    left: HashSet<String>,
}

struct Controller<R: Reconciler> {
    reconciler: R,
    store: Store,
    settings: ControllerSettings,
    state: Mutex<WorkState>,
    local: mpsc::UnboundedSender<String>,
    metrics: Arc<ControllerMetrics>,
}

/// Starts the controller of `reconciler`; it resyncs at once.
pub fn spawn<R: Reconciler>(
    reconciler: R,
    store: Store,
    settings: ControllerSettings,
    bus: NudgeBus,
    metrics: Arc<ControllerMetrics>,
) -> Nudger {
    let kind = reconciler.kind();
    let (tx, rx) = mpsc::unbounded_channel();
    bus.subscribe(kind, tx.clone());
    let controller = Arc::new(Controller {
        reconciler,
        store,
        settings,
        state: Mutex::default(),
        local: tx.clone(),
        metrics,
    });
    tokio::spawn(controller.run(rx));
    Nudger {
        kind,
        local: tx,
        bus,
    }
}

impl<R: Reconciler> Controller<R> {
    fn kind(&self) -> &'static str {
        self.reconciler.kind()
    }

    async fn run(self: Arc<Self>, mut nudges: mpsc::UnboundedReceiver<String>) {
        let mut next_resync = tokio::time::Instant::now();
        loop {
            let now = tokio::time::Instant::now();
            let wake = match self.reconciler.due_in().await {
                Some(due) => next_resync.min(now + due),
                None => next_resync,
            };
            tokio::select! {
                nudge = nudges.recv() => match nudge {
                    Some(key) => self.schedule(key),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake) => {
                    if tokio::time::Instant::now() >= next_resync {
                        next_resync = tokio::time::Instant::now() + self.settings.resync_interval;
                    }
                    self.resync().await;
                }
            }
        }
    }

    async fn resync(self: &Arc<Self>) {
        // Timed from the housekeeping on: it is part of what one resync costs.
        let started = std::time::Instant::now();
        self.reconciler.before_resync().await;
        match self.reconciler.keys().await {
            Ok(keys) => {
                let mut scheduled = HashSet::new();
                for key in keys {
                    let due = {
                        let state = self.state.lock().expect("work state poisoned");
                        state
                            .retry_at
                            .get(&key)
                            .is_none_or(|at| *at <= tokio::time::Instant::now())
                    };
                    if due {
                        scheduled.insert(key.clone());
                        self.schedule(key);
                    }
                }
                let mut state = self.state.lock().expect("work state poisoned");
                // Keys already finished while the rest were being scheduled.
                scheduled.retain(|key| state.working.contains_key(key));
                let pass = ResyncPass {
                    started,
                    keys: scheduled.len(),
                    left: scheduled,
                };
                if pass.left.is_empty() {
                    self.resync_done(&pass);
                } else {
                    state.pass = Some(pass);
                }
            }
            Err(e) => {
                warn!(kind = self.kind(), error = %format!("{e:#}"), "resync could not list keys")
            }
        }
        self.publish_gauges();
    }

    fn resync_done(&self, pass: &ResyncPass) {
        let took = pass.started.elapsed();
        self.metrics.observe_resync(self.kind(), took);
        debug!(
            kind = self.kind(),
            keys = pass.keys,
            took_ms = took.as_millis() as u64,
            "resync done"
        );
    }

    fn publish_gauges(&self) {
        let state = self.state.lock().expect("work state poisoned");
        self.metrics
            .set_waiting(self.kind(), state.retry_at.len() as i64);
        self.metrics
            .set_working(self.kind(), state.working.len() as i64);
    }

    /// Reconciles `key` now, or once more after the pass in progress.
    fn schedule(self: &Arc<Self>, key: String) {
        {
            let mut state = self.state.lock().expect("work state poisoned");
            if let Some(dirty) = state.working.get_mut(&key) {
                *dirty = true;
                return;
            }
            state.working.insert(key.clone(), false);
            state.retry_at.remove(&key);
        }
        let this = self.clone();
        tokio::spawn(async move { this.work(key).await });
    }

    fn requeue(&self, key: &str, after: Duration) {
        {
            let mut state = self.state.lock().expect("work state poisoned");
            state
                .retry_at
                .insert(key.to_string(), tokio::time::Instant::now() + after);
        }
        let local = self.local.clone();
        let key = key.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = local.send(key);
        });
    }

    /// Works on one key until it needs nothing more, holding its lease throughout.
    async fn work(self: Arc<Self>, key: String) {
        let kind = self.kind();
        let lease = match self
            .store
            .acquire_lease(kind, &key, &self.settings.holder, self.settings.lease_ttl)
            .await
        {
            Ok(Ok(lease)) => lease,
            Ok(Err(held)) => {
                // Another replica works on it; look again when its lease would run out.
                let left = Duration::from_millis((held.until - now_ms()).max(0) as u64);
                debug!(kind, key, holder = %held.holder, "held by another replica");
                self.done(&key, Some(left + Duration::from_millis(50)));
                return;
            }
            Err(e) => {
                warn!(kind, key, error = %e, "could not take the lease");
                self.done(&key, Some(backoff(1)));
                return;
            }
        };
        self.metrics.lease_taken(kind);
        let work = Work {
            store: self.store.fenced(lease.fence()),
            lease,
            lease_ttl: self.settings.lease_ttl,
        };
        let mut after = None;
        loop {
            let started = std::time::Instant::now();
            let outcome = self.reconcile_while_held(&key, &work).await;
            self.metrics
                .observe(kind, started.elapsed(), outcome.as_ref().err());
            after = match outcome {
                Ok(Action::AwaitChange) => {
                    self.state
                        .lock()
                        .expect("work state poisoned")
                        .failures
                        .remove(&key);
                    None
                }
                Ok(Action::Requeue(delay)) => {
                    self.state
                        .lock()
                        .expect("work state poisoned")
                        .failures
                        .remove(&key);
                    Some(delay)
                }
                Err(e) => {
                    let failures = {
                        let mut state = self.state.lock().expect("work state poisoned");
                        let failures = state.failures.entry(key.clone()).or_default();
                        *failures += 1;
                        *failures
                    };
                    let delay = self.reconciler.error_policy(&key, &e, failures);
                    if is_stale_lease(&e) {
                        info!(kind, key, "lease lost: another replica carries on");
                        break;
                    }
                    warn!(kind, key, error = %format!("{e:#}"), retry_in = ?delay, "reconcile failed");
                    Some(delay)
                }
            };
            let mut state = self.state.lock().expect("work state poisoned");
            // Nudged while working: look once more right away, still under the lease.
            if state.working.get(&key) == Some(&true) {
                state.working.insert(key.clone(), false);
                continue;
            }
            break;
        }
        if let Err(e) = self.store.release_lease(&work.lease).await {
            debug!(kind, key, error = %e, "could not release the lease; it runs out by itself");
        }
        self.metrics.lease_released(kind);
        self.done(&key, after);
    }

    /// Ends the key's turn; with `after`, it is looked at again then.
    fn done(&self, key: &str, after: Option<Duration>) {
        let again = {
            let mut state = self.state.lock().expect("work state poisoned");
            let again = state.working.remove(key) == Some(true);
            if !again {
                let finished = state.pass.as_mut().is_some_and(|pass| {
                    pass.left.remove(key);
                    pass.left.is_empty()
                });
                if finished {
                    if let Some(pass) = state.pass.take() {
                        self.resync_done(&pass);
                    }
                }
            }
            again
        };
        if again {
            let _ = self.local.send(key.to_string());
        } else if let Some(after) = after {
            self.requeue(key, after);
        }
    }

    /// One reconcile pass, renewing the lease meanwhile; dropped when the lease is lost.
    async fn reconcile_while_held(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let ttl = self.settings.lease_ttl;
        let mut lease = work.lease.clone();
        let store = self.store.clone();
        let keep = async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                match store.renew_lease(&mut lease, ttl).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    // A database hiccup: keep trying while the lease may still be ours.
                    Err(e) if now_ms() < lease.expires_at => {
                        warn!(kind = %lease.kind, key = %lease.key, error = %e, "could not renew the lease");
                    }
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            outcome = self.reconciler.reconcile(key, work) => outcome,
            () = keep => Err(StoreError::StaleLease {
                kind: work.lease.kind.clone(),
                key: key.to_string(),
                token: work.lease.token,
            }
            .into()),
        }
    }
}

fn is_stale_lease(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<StoreError>(),
            Some(StoreError::StaleLease { .. })
        )
    })
}

/// The one backoff: 0.5 s doubling per failure, at most a minute.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(7))).min(Duration::from_secs(60))
}
