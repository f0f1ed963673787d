//! The deliveries controller: stored webhook deliveries become intent (see `processor`).
//!
//! A key is one pull request (`owner/name#7`), so one PR's deliveries are handled by one
//! replica at a time, in the order they arrived (an `opened` before its `synchronize`, a
//! command before the next); different PRs go in parallel. Under the key's lease a delivery
//! is read again (still pending?), handled, then marked handled through the fenced store,
//! so a delivery is handled once across replicas; a crash between handling and marking
//! means handling it again, never losing it.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use envmgr::controller::{Action, Reconciler, Work};
use envmgr::names::PrNumber;

use super::events::WebhookEvent;
use super::GitHubSurface;

/// The lease kind and metrics label of webhook deliveries.
pub const KIND: &str = "delivery";
/// Attempts before a delivery that keeps failing is put aside (marked failed).
const MAX_ATTEMPTS: u32 = 5;
/// Pending deliveries looked at per query.
const PENDING_BATCH: i64 = 500;

/// Which deliveries are handled in order by one replica at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeliveryKey {
    /// Every delivery about one pull request (or its comments) of a GitHub repository.
    Pull {
        /// `owner/name`, lowercase: GitHub names are case-insensitive.
        github: String,
        number: PrNumber,
    },
    /// A delivery about no pull request (or one that does not parse): on its own.
    Alone(String),
}

impl DeliveryKey {
    /// The key of delivery `id` of `event`.
    pub fn of(id: &str, event: &WebhookEvent) -> Self {
        match event {
            WebhookEvent::PullRequest(e) => DeliveryKey::Pull {
                github: e.repository.full_name.to_ascii_lowercase(),
                number: e.number,
            },
            WebhookEvent::IssueComment(e) => DeliveryKey::Pull {
                github: e.repository.full_name.to_ascii_lowercase(),
                number: e.issue.number,
            },
            WebhookEvent::Ping | WebhookEvent::Ignored { .. } | WebhookEvent::BranchDeleted(_) => {
                DeliveryKey::Alone(id.into())
            }
        }
    }

    /// The key of a stored delivery, from its body.
    fn of_stored(id: &str, event: &str, payload: &str) -> Self {
        match WebhookEvent::parse(event, payload.as_bytes()) {
            Ok(parsed) => Self::of(id, &parsed),
            Err(_) => DeliveryKey::Alone(id.into()),
        }
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryKey::Pull { github, number } => write!(f, "{github}#{number}"),
            DeliveryKey::Alone(id) => write!(f, "delivery:{id}"),
        }
    }
}

pub(super) struct Deliveries {
    surface: Arc<GitHubSurface>,
    /// How long handled deliveries keep their bodies.
    retention: Duration,
    /// How often this replica prunes old deliveries.
    prune_every: Duration,
    last_prune: Mutex<Option<Instant>>,
    /// The key of each pending delivery this replica has seen, so a body is parsed once
    /// here rather than on every look at the queue.
    keys: Mutex<HashMap<String, String>>,
    /// Failed attempts per delivery on this replica.
    attempts: Mutex<HashMap<String, u32>>,
}

impl Deliveries {
    pub fn new(surface: Arc<GitHubSurface>, retention: Duration, prune_every: Duration) -> Self {
        Deliveries {
            surface,
            retention,
            prune_every,
            last_prune: Mutex::default(),
            keys: Mutex::default(),
            attempts: Mutex::default(),
        }
    }

    /// The key of pending delivery `id`; `None` once it is handled.
    async fn key_of(&self, id: &str) -> anyhow::Result<Option<String>> {
        if let Some(key) = self.keys.lock().expect("keys poisoned").get(id) {
            return Ok(Some(key.clone()));
        }
        let Some(delivery) = self.surface.store.pending_delivery(id).await? else {
            return Ok(None);
        };
        let key = DeliveryKey::of_stored(id, &delivery.event, &delivery.payload).to_string();
        self.keys
            .lock()
            .expect("keys poisoned")
            .insert(id.to_string(), key.clone());
        Ok(Some(key))
    }

    /// The pending deliveries of `key`, oldest first.
    async fn pending_of(&self, key: &str) -> anyhow::Result<Vec<String>> {
        let mut mine = Vec::new();
        for id in self
            .surface
            .store
            .pending_delivery_ids(PENDING_BATCH)
            .await?
        {
            if self.key_of(&id).await?.as_deref() == Some(key) {
                mine.push(id);
            }
        }
        Ok(mine)
    }

    /// Handles one delivery if it is still pending, and marks it handled.
    async fn handle(&self, id: &str, work: &Work) -> anyhow::Result<()> {
        let store = work.store();
        let Some(delivery) = store.pending_delivery(id).await? else {
            return Ok(()); // Handled meanwhile (by the replica that held this key before).
        };
        work.still_held().await?;
        let outcome = match self.surface.process(&delivery).await {
            Ok(outcome) => {
                tracing::info!(delivery = %delivery.id, event = %delivery.event, %outcome, "webhook handled");
                outcome
            }
            Err(e) => {
                let tries = {
                    let mut attempts = self.attempts.lock().expect("attempts poisoned");
                    let tries = attempts.entry(id.to_string()).or_default();
                    *tries += 1;
                    *tries
                };
                if tries < MAX_ATTEMPTS {
                    // The key's later deliveries wait: their order matters.
                    return Err(e.context(format!(
                        "handling webhook delivery {id} ({}), attempt {tries} of {MAX_ATTEMPTS}",
                        delivery.event
                    )));
                }
                tracing::warn!(delivery = %delivery.id, error = %format!("{e:#}"), attempts = tries, "webhook handling failed; giving up on it");
                format!("failed: {e:#}")
            }
        };
        store
            .finish_delivery(id, &outcome)
            .await
            .with_context(|| format!("cannot mark webhook delivery {id} handled"))?;
        self.attempts.lock().expect("attempts poisoned").remove(id);
        self.keys.lock().expect("keys poisoned").remove(id);
        Ok(())
    }

    async fn prune(&self) {
        {
            let mut last = self.last_prune.lock().expect("prune time poisoned");
            if last.is_some_and(|at| at.elapsed() < self.prune_every) {
                return;
            }
            *last = Some(Instant::now());
        }
        match self.surface.store.prune_deliveries(self.retention).await {
            Ok((0, 0)) => {}
            Ok((cleared, removed)) => {
                tracing::info!(cleared, removed, "pruned old webhook deliveries")
            }
            Err(e) => tracing::warn!(error = %e, "could not prune old webhook deliveries"),
        }
    }
}

#[async_trait::async_trait]
impl Reconciler for Deliveries {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// Bounds what stored deliveries keep (`delivery_retention`); the same on every replica.
    async fn before_resync(&self) {
        self.prune().await;
    }

    /// The keys of the pending deliveries, each once.
    async fn keys(&self) -> anyhow::Result<Vec<String>> {
        let ids = self
            .surface
            .store
            .pending_delivery_ids(PENDING_BATCH)
            .await?;
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for id in &ids {
            if let Some(key) = self.key_of(id).await? {
                if seen.insert(key.clone()) {
                    keys.push(key);
                }
            }
        }
        // What is no longer pending (handled by another replica) leaves the cache.
        let pending: HashSet<&String> = ids.iter().collect();
        self.keys
            .lock()
            .expect("keys poisoned")
            .retain(|id, _| pending.contains(id));
        self.attempts
            .lock()
            .expect("attempts poisoned")
            .retain(|id, _| pending.contains(id));
        Ok(keys)
    }

    async fn reconcile(&self, key: &str, work: &Work) -> anyhow::Result<Action> {
        loop {
            let mine = self.pending_of(key).await?;
            if mine.is_empty() {
                return Ok(Action::AwaitChange);
            }
            for id in &mine {
                self.handle(id, work).await?;
            }
            // More may have come meanwhile: look again while the lease is ours.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_requests_events_and_comments_share_one_key() {
        let opened = r#"{"action":"opened","number":7,"pull_request":{"number":7,"state":"open",
            "head":{"sha":"a","ref":"f","repo":null},"base":{"ref":"main","repo":{"full_name":"Acme/Shop"}},
            "user":{"login":"u"}},"repository":{"full_name":"Acme/Shop"},"sender":{"login":"u"}}"#;
        let comment = r#"{"action":"created","issue":{"number":7,"pull_request":{}},
            "comment":{"id":1,"body":"/slipway help","user":{"login":"u"}},
            "repository":{"full_name":"acme/shop"}}"#;
        let pr = DeliveryKey::of_stored("d1", "pull_request", opened);
        assert_eq!(pr.to_string(), "acme/shop#7");
        assert_eq!(DeliveryKey::of_stored("d2", "issue_comment", comment), pr);
        let other = comment.replace("\"number\":7", "\"number\":8");
        assert_eq!(
            DeliveryKey::of_stored("d3", "issue_comment", &other).to_string(),
            "acme/shop#8"
        );
        // What names no pull request, or does not parse, stands alone.
        assert_eq!(
            DeliveryKey::of_stored("d4", "push", "{}").to_string(),
            "delivery:d4"
        );
        assert_eq!(
            DeliveryKey::of_stored("d5", "pull_request", "{\"truncated").to_string(),
            "delivery:d5"
        );
    }
}
