//! The env reconciler: level-triggered, idempotent convergence of each env's desired state
//! (store) with what the runtime reports, on the shared controller (one env is worked by one
//! replica at a time, under its lease). Its resync expires TTLs and revisits every env the
//! store or the runtime knows, which is also how orphaned resources are reaped.

mod env;

use std::sync::Arc;

use async_trait::async_trait;
use tracing::info;

pub use crate::controller::Action;
use crate::controller::{Nudger, Reconciler, Work};
use crate::git::GitMirrors;
use crate::names::EnvName;
use crate::runtime::Runtime;
use crate::settings::EngineSettings;
use crate::store::Store;

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
}

pub(crate) struct EnvReconciler {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    git: GitMirrors,
    redactors: Arc<crate::secrets::Redactors>,
    test_runs: Nudger,
}

impl EnvReconciler {
    pub fn new(
        settings: Arc<EngineSettings>,
        store: Store,
        runtime: Arc<dyn Runtime>,
        test_runs: Nudger,
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
        }
    }
}

#[async_trait]
impl Reconciler for EnvReconciler {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Every env the store knows, and every env the runtime has resources of (the store
    /// may no longer want them: reconciling deletes them).
    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let now = crate::store::now_ms();
        let mut keys: Vec<String> = self
            .store
            .list(false)
            .await?
            .into_iter()
            // A failed env stays failed until someone asks again (a nudge) or its TTL
            // passes (expiry turns it into a deletion): resyncs have nothing to do for it.
            .filter(|env| {
                !(env.phase == crate::store::Phase::Failed
                    && env.observed_generation >= env.generation
                    && env.desired == crate::store::Desired::Running
                    && env.expires_at > now)
            })
            .map(|env| env.name.to_string())
            .collect();
        keys.extend(
            self.runtime
                .list_envs()
                .await?
                .into_iter()
                .map(|name| name.to_string()),
        );
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn before_resync(&self) {
        match self.store.expire_due().await {
            Ok(expired) => {
                for env in expired {
                    info!(env = %env, "time to live expired");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not expire envs"),
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
        };
        env::reconcile(&ctx, &name).await
    }
}
