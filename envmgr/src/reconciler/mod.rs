//! The env reconciler: level-triggered, idempotent convergence of each env's desired state
//! (store) with what the runtime reports, on the shared controller (one env is worked by one
//! replica at a time, under its lease). Its resync expires TTLs and revisits every env the
//! store or the runtime knows, which is also how orphaned resources are reaped.

mod env;
pub(crate) mod idle;
pub use idle::{DeletionReason, DeletionWarning};
mod reaper;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use tracing::info;

pub use crate::controller::Action;
use crate::controller::{NudgeBus, Nudger, Reconciler, Work};
use crate::git::GitMirrors;
use crate::names::EnvName;
use crate::runtime::{ObservedService, PublishedPort, Runtime, ServiceState};
use crate::settings::EngineSettings;
use crate::store::{Desired, EnvRecord, Phase, Store};

/// The lease kind and metrics label of env work.
pub const KIND: &str = "env";

pub(crate) struct Context {
    pub settings: Arc<EngineSettings>,
    /// Fenced by the env's lease during a pass: writes after the lease is lost fail.
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
    pub git: GitMirrors,
    /// A failure's reason can quote a service's log: it is redacted before it is stored
    /// or logged.
    pub redactors: Arc<crate::secrets::Redactors>,
    /// Told when a deploy queues its test run.
    pub test_runs: Nudger,
    /// Nudges other envs (a shared env and the envs that use it nudge each other).
    pub bus: NudgeBus,
}

pub(crate) struct EnvReconciler {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    git: GitMirrors,
    redactors: Arc<crate::secrets::Redactors>,
    test_runs: Nudger,
    bus: NudgeBus,
}

/// How long a finished rollout's measurements (its chart) are kept.
const TRAFFIC_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;

impl EnvReconciler {
    pub fn new(
        settings: Arc<EngineSettings>,
        store: Store,
        runtime: Arc<dyn Runtime>,
        test_runs: Nudger,
        bus: NudgeBus,
    ) -> Self {
        let git = GitMirrors::new(&settings.data_dir);
        let redactors = Arc::new(crate::secrets::Redactors::new(&settings));
        EnvReconciler {
            settings,
            store,
            runtime,
            git,
            redactors,
            test_runs,
            bus,
        }
    }
}

#[async_trait]
impl Reconciler for EnvReconciler {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// The envs worth a look: every env the store wants that is not quietly converged, and
    /// every env the runtime has resources of that the store does not want (orphans). What
    /// "quietly converged" means is decided from one listing of the runtime, so a resync of
    /// thousands of idle envs costs three queries, not a lease and a fetch per env.
    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let (envs, glance, resources) = tokio::try_join!(
            async { anyhow::Ok(self.store.list(false).await?) },
            async { anyhow::Ok(self.runtime.glance().await?) },
            async { anyhow::Ok(self.runtime.list_envs().await?) },
        )?;
        let now = crate::store::now_ms();
        let wanted: HashSet<&EnvName> = envs.iter().map(|env| &env.name).collect();
        let mut keys: Vec<String> = envs
            .iter()
            .filter(|env| !quiet(env, &glance, now))
            .map(|env| env.name.to_string())
            .chain(
                resources
                    .iter()
                    .filter(|name| !wanted.contains(name))
                    .map(|name| name.to_string()),
            )
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn before_resync(&self) {
        // Before the idle policy, so a branch found gone is warned about in the same pass.
        let listed = match reaper::check_branches(&self.settings, &self.store, &self.git).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not check the envs' branches");
                HashSet::new()
            }
        };
        if let Err(e) = idle::sweep(&self.settings, &self.store, &listed).await {
            tracing::warn!(error = %format!("{e:#}"), "could not apply the idle policy");
        }
        match self.store.expire_due().await {
            Ok(expired) => {
                for env in expired {
                    info!(env = %env, "time to live expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not expire envs"),
        }
        if let Err(e) = reaper::reap_jobs(&self.store, self.runtime.as_ref()).await {
            tracing::warn!(error = %format!("{e:#}"), "could not reap stale job containers");
        }
        if let Some(retention) = self.settings.image_retention {
            if let Err(e) = reaper::reap_images(&self.store, self.runtime.as_ref(), retention).await
            {
                tracing::warn!(error = %format!("{e:#}"), "could not reap unused built images");
            }
        }
        // A finished rollout's per-second measurements are kept for its chart for a month.
        let month_ago = crate::store::now_ms() - TRAFFIC_RETENTION_MS;
        if let Err(e) = self.store.prune_traffic(month_ago).await {
            tracing::warn!(error = %e, "could not prune old rollout measurements");
        }
    }

    async fn due_in(&self) -> Option<std::time::Duration> {
        match self.store.next_expiry().await {
            Ok(Some(at)) => Some(std::time::Duration::from_millis(
                (at - crate::store::now_ms()).max(0) as u64,
            )),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the next expiry");
                None
            }
        }
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let name = EnvName::parse(key)?;
        let ctx = Context {
            settings: self.settings.clone(),
            store: work.store().clone(),
            runtime: self.runtime.clone(),
            git: self.git.clone(),
            redactors: self.redactors.clone(),
            test_runs: self.test_runs.clone(),
            bus: self.bus.clone(),
        };
        env::reconcile(&ctx, &name).await
    }
}

/// Whether a resync has nothing to do for `env`: converged, not expiring, and either failed
/// (it stays so until asked again) or Ready with the runtime showing exactly the services,
/// states and ports last recorded, none restarting or exited with an error, and the shared
/// services it reaches still the containers it was given (what `verify` would otherwise
/// act on). `glance` holds every env's services.
fn quiet(env: &EnvRecord, glance: &BTreeMap<EnvName, Vec<ObservedService>>, now: i64) -> bool {
    let services = glance.get(&env.name);
    let converged = env.desired == Desired::Running
        && env.observed_generation >= env.generation
        && env.expires_at > now;
    if !converged {
        return false;
    }
    match env.phase {
        Phase::Failed => true,
        // Asleep as asked, nothing running: a wake or a started container needs a look.
        Phase::Sleeping => {
            env.idle.asleep
                && services
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .all(|s| !env::awake(&s.state))
        }
        Phase::Ready if env.idle.asleep => false,
        Phase::Ready => {
            let services = services.map(Vec::as_slice).unwrap_or_default();
            let troubled = services.iter().any(|s| {
                matches!(
                    s.state,
                    ServiceState::Restarting | ServiceState::Exited { code: 1.., .. }
                ) || matches!(s.state, ServiceState::Exited { code: ..=-1, .. })
            });
            let mut seen: Vec<(String, String, Vec<PublishedPort>)> = services
                .iter()
                .map(|s| (s.name.to_string(), s.state.label(), sorted(&s.ports)))
                .collect();
            let mut recorded: Vec<(String, String, Vec<PublishedPort>)> = env
                .services
                .iter()
                .filter(|s| s.shared.is_none())
                .map(|s| (s.name.clone(), s.state.clone(), sorted(&s.ports)))
                .collect();
            seen.sort_by(|a, b| a.0.cmp(&b.0));
            recorded.sort_by(|a, b| a.0.cmp(&b.0));
            // A shared service replaced by its env (a redeploy) left this env's network.
            let shared_current = env.services.iter().all(|s| match &s.shared {
                None => true,
                Some(from) => glance.get(&from.env).is_some_and(|theirs| {
                    theirs
                        .iter()
                        .any(|t| t.name.as_str() == s.name && t.container_id == from.container)
                }),
            });
            !troubled && seen == recorded && shared_current
        }
        _ => false,
    }
}

fn sorted(ports: &[PublishedPort]) -> Vec<PublishedPort> {
    let mut ports = ports.to_vec();
    ports.sort_by_key(|p| (p.container_port, p.host_port, p.protocol.as_str()));
    ports.dedup();
    ports
}
