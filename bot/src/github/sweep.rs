//! The sweep controller: lists each linked repo's open PRs now and then, so an env exists
//! for every open PR and none for a closed one even when webhooks were lost.
//!
//! A key is a configured repo. Its lease makes one replica sweep a repo at a time; and so
//! that the replicas together sweep it once per `[github] resync_interval` (not once each),
//! a sweep takes the repo's turn for that long first: a second lease, of kind
//! [`TURN_KIND`], never released, that another replica finding it held waits out.

use std::sync::Arc;
use std::time::Duration;

use envmgr::controller::{backoff, Action, Reconciler, Work};
use envmgr::names::RepoName;
use envmgr::store::now_ms;

use super::GitHubSurface;

/// The lease kind and metrics label of the sweep; keys are configured repo names.
pub const KIND: &str = "pr-sweep";
/// The kind of the lease that marks a repo swept until the next sweep is due.
pub const TURN_KIND: &str = "pr-sweep-turn";

pub(super) struct Sweeps {
    surface: Arc<GitHubSurface>,
    /// This process's holder name (the controllers').
    holder: String,
    /// How often each repo is swept (`[github] resync_interval`).
    interval: Duration,
}

impl Sweeps {
    pub fn new(surface: Arc<GitHubSurface>, holder: String, interval: Duration) -> Self {
        Sweeps {
            surface,
            holder,
            interval,
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Sweeps {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .surface
            .links
            .iter()
            .map(|l| l.repo.to_string())
            .collect())
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        let repo = RepoName::parse(key).ok();
        let Some(link) = repo.and_then(|r| self.surface.link_for_repo(&r).cloned()) else {
            return Ok(Action::AwaitChange);
        };
        let turn = work
            .store()
            .acquire_lease(TURN_KIND, key, &self.holder, self.interval)
            .await?;
        if let Err(held) = turn {
            // Another replica swept it lately; the next sweep is due when its turn ends.
            let left = Duration::from_millis((held.until - now_ms()).max(0) as u64);
            return Ok(Action::Requeue(left + Duration::from_millis(50)));
        }
        self.surface.heal(&link).await.map_err(|e| {
            e.context(format!(
                "could not list the open pull requests of {}",
                link.github
            ))
        })?;
        Ok(Action::Requeue(self.interval))
    }

    /// Soon after a failure, but never more often than the sweep itself.
    fn error_policy(&self, _key: &str, _error: &anyhow::Error, failures: u32) -> Duration {
        backoff(failures).min(self.interval)
    }
}
