//! The GitHub surface. Webhooks are verified, stored and acknowledged (`webhook`); the
//! deliveries controller turns stored deliveries into intent for the engine (`deliveries`,
//! `processor`); the reports controller mirrors each PR env's state back to GitHub as one
//! sticky comment, a deployment and a commit status (`report`); the sweep controller lists
//! open PRs to heal missed webhooks (`sweep`).
//!
//! All three run on the engine's controller (see `envmgr::controller`), so with several
//! replicas on one store each delivery and each PR is worked by one replica at a time, under
//! a lease: a delivery is handled once, and one PR's deliveries in the order they came.

mod deliveries;
pub mod events;
pub mod forge;
mod processor;
pub(crate) mod report;
mod settings;
mod sweep;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use envmgr::controller::Nudger;
use envmgr::names::{PrNumber, RepoName};
use envmgr::store::Store;

pub use settings::{GitHubLink, GitHubSettings};

use crate::app::App;
use crate::server::metrics::WebhookMetrics;
use forge::{Forge, Permission};

/// How long a user's permission on a repo is trusted before asking GitHub again.
const PERMISSION_TTL: Duration = Duration::from_secs(60);

pub struct GitHubSurface {
    app: Arc<App>,
    store: Store,
    forge: Arc<dyn Forge>,
    links: Vec<GitHubLink>,
    skip_label: String,
    permissions: Mutex<HashMap<(String, String), (Permission, Instant)>>,
    /// Nudges the report of a PR (on whichever replica holds it); set once at the start.
    reports: OnceLock<Nudger>,
}

/// Starts the GitHub surface's controllers and returns its webhook routes.
pub fn start(
    app: Arc<App>,
    settings: GitHubSettings,
    links: Vec<GitHubLink>,
    metrics: WebhookMetrics,
) -> anyhow::Result<Router> {
    let forge = app
        .forge
        .clone()
        .context("the GitHub surface needs the forge the application context makes for [github]")?;
    let engine = app.engine.clone();
    let store = engine.store().clone();
    let surface = Arc::new(GitHubSurface {
        app,
        store: store.clone(),
        forge,
        links,
        skip_label: settings.skip_label.clone(),
        permissions: Mutex::default(),
        reports: OnceLock::new(),
    });
    let reports = engine.spawn_controller(report::PullReports::new(surface.clone()));
    // Set before anything can handle a delivery: the deliveries controller starts below.
    let _ = surface.reports.set(reports.clone());
    tokio::spawn(report::nudge_on_env_changes(surface.clone(), reports));
    let deliveries = engine.spawn_controller(deliveries::Deliveries::new(
        surface.clone(),
        settings.delivery_retention,
        settings.resync_interval,
    ));
    engine.spawn_controller(sweep::Sweeps::new(
        surface,
        engine.controller_settings().holder.clone(),
        settings.resync_interval,
    ));
    let state = webhook::WebhookState {
        secret: Arc::new(settings.webhook_secret),
        store,
        deliveries,
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

    fn link_for_repo(&self, repo: &RepoName) -> Option<&GitHubLink> {
        self.links.iter().find(|l| &l.repo == repo)
    }

    /// Asks for the PR's comment, deployment and statuses to be brought in line with it.
    fn nudge_report(&self, repo: &RepoName, number: PrNumber) {
        if let Some(reports) = self.reports.get() {
            reports.nudge(&report::key(repo, number));
        }
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
}
