//! The GitHub surface. Webhooks are verified, stored and acknowledged (`webhook`); the
//! processor turns stored deliveries into intent for the engine (`processor`); the reporter
//! mirrors each PR env's state back to GitHub as one sticky comment, a deployment and a
//! commit status (`report`); a periodic sweep lists open PRs to heal missed webhooks.

pub mod events;
pub mod forge;
mod processor;
mod report;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use envmgr::store::Store;
use envmgr::Engine;
use tokio::sync::Notify;

use crate::config::{GitHubLink, GitHubSettings};
use crate::server::metrics::WebhookMetrics;
use forge::{Forge, GitHubForge, Permission};

/// How long a user's permission on a repo is trusted before asking GitHub again.
const PERMISSION_TTL: Duration = Duration::from_secs(60);

pub struct GitHubSurface {
    engine: Engine,
    store: Store,
    forge: Arc<dyn Forge>,
    links: Vec<GitHubLink>,
    skip_label: String,
    /// Base URL of this server, for links in comments.
    public_url: String,
    permissions: Mutex<HashMap<(String, String), (Permission, Instant)>>,
    /// One report at a time per PR, so two never both create the sticky comment.
    reporting: tokio::sync::Mutex<HashSet<String>>,
    report_done: Notify,
}

/// Starts the GitHub surface's background work and returns its webhook routes.
pub fn start(
    settings: GitHubSettings,
    links: Vec<GitHubLink>,
    engine: Engine,
    public_url: String,
    metrics: WebhookMetrics,
) -> anyhow::Result<Router> {
    let forge: Arc<dyn Forge> = Arc::new(GitHubForge::new(&settings)?);
    let store = engine.store().clone();
    let surface = Arc::new(GitHubSurface {
        engine,
        store: store.clone(),
        forge,
        links,
        skip_label: settings.skip_label.clone(),
        public_url,
        permissions: Mutex::default(),
        reporting: tokio::sync::Mutex::default(),
        report_done: Notify::new(),
    });
    let wake = Arc::new(Notify::new());
    tokio::spawn(surface.clone().process_deliveries(wake.clone()));
    tokio::spawn(surface.clone().report_changes());
    tokio::spawn(
        surface
            .clone()
            .heal_periodically(settings.resync_interval, settings.delivery_retention),
    );
    let state = webhook::WebhookState {
        secret: Arc::new(settings.webhook_secret),
        store,
        wake,
        metrics,
    };
    Ok(webhook::routes(state))
}

impl GitHubSurface {
    /// The configured repo linked to GitHub repository `full_name`.
    fn link(&self, full_name: &str) -> Option<&GitHubLink> {
        self.links
            .iter()
            .find(|l| l.github.eq_ignore_ascii_case(full_name))
    }

    fn link_for_repo(&self, repo: &str) -> Option<&GitHubLink> {
        self.links.iter().find(|l| l.repo.as_str() == repo)
    }

    /// The user's permission on `repo`, cached briefly.
    async fn permission(&self, repo: &str, user: &str) -> Result<Permission, forge::ForgeError> {
        let key = (repo.to_ascii_lowercase(), user.to_ascii_lowercase());
        if let Some((permission, at)) = self
            .permissions
            .lock()
            .expect("permissions poisoned")
            .get(&key)
        {
            if at.elapsed() < PERMISSION_TTL {
                return Ok(*permission);
            }
        }
        let permission = self.forge.permission(repo, user).await?;
        self.permissions
            .lock()
            .expect("permissions poisoned")
            .insert(key, (permission, Instant::now()));
        Ok(permission)
    }

    /// Lists open PRs of every linked repo now and then, so an env exists for every open PR
    /// and none for a closed one even when webhooks were lost.
    /// The same loop bounds the stored webhook bodies (`delivery_retention`).
    async fn heal_periodically(self: Arc<Self>, interval: Duration, delivery_retention: Duration) {
        loop {
            for link in self.links.clone() {
                if let Err(e) = self.heal(&link).await {
                    tracing::warn!(repo = %link.github, error = %format!("{e:#}"), "could not list open pull requests");
                }
            }
            match self.store.prune_deliveries(delivery_retention).await {
                Ok((0, 0)) => {}
                Ok((cleared, removed)) => {
                    tracing::info!(cleared, removed, "pruned old webhook deliveries")
                }
                Err(e) => tracing::warn!(error = %e, "could not prune old webhook deliveries"),
            }
            tokio::time::sleep(interval).await;
        }
    }
}
