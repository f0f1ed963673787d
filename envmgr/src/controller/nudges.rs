//! Nudges between replicas. A key nudged on replica A must be looked at by whichever replica
//! holds it; on Postgres every nudge is also sent with `NOTIFY` and every replica `LISTEN`s.
//! A lost notification (a dropped connection) costs only time: the resync finds the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::store::{Backend, Store, StoreError};

const CHANNEL: &str = "slipway_nudges";
/// Separates the fields of a notification's payload; never part of a kind, key or holder.
const SEP: char = '\u{1f}';

/// Hands nudges to this process's controllers and, on Postgres, to every other replica's.
#[derive(Clone, Default)]
pub struct NudgeBus {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The controller of each kind in this process.
    subscribers: Mutex<HashMap<&'static str, mpsc::UnboundedSender<String>>>,
    /// To the task that sends `NOTIFY`; `None` in a single process.
    outgoing: Option<mpsc::UnboundedSender<String>>,
    /// This process's holder name: its own notifications come back and are skipped.
    holder: String,
}

impl NudgeBus {
    /// Nudges stay in this process (SQLite: one process per store).
    pub fn local() -> Self {
        Self::default()
    }

    /// The bus for `store`: across replicas on Postgres, local on SQLite.
    pub async fn for_store(store: &Store, holder: &str) -> Result<Self, StoreError> {
        match store.backend() {
            Backend::Sqlite => Ok(Self::local()),
            Backend::Postgres => Self::postgres(store.url(), holder).await,
        }
    }

    async fn postgres(url: &str, holder: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<String>();
        let bus = NudgeBus {
            inner: Arc::new(Inner {
                subscribers: Mutex::default(),
                outgoing: Some(outgoing),
                holder: holder.to_string(),
            }),
        };
        tokio::spawn(async move {
            while let Some(payload) = to_send.recv().await {
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(&pool)
                    .await
                {
                    warn!(error = %e, "could not send a nudge to the other replicas");
                }
            }
        });
        let receiving = bus.clone();
        tokio::spawn(async move {
            loop {
                match listener.recv().await {
                    Ok(notification) => receiving.deliver(notification.payload()),
                    Err(e) => {
                        // The listener reconnects on the next call; what was missed meanwhile
                        // is found by the resync.
                        warn!(error = %e, "lost the nudge listener's connection; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(bus)
    }

    /// Registers the controller of `kind` in this process.
    pub(super) fn subscribe(&self, kind: &'static str, controller: mpsc::UnboundedSender<String>) {
        self.inner
            .subscribers
            .lock()
            .expect("nudge subscribers poisoned")
            .insert(kind, controller);
    }

    /// Sends a nudge to the other replicas (this process's controller was told directly).
    pub(super) fn publish(&self, kind: &str, key: &str) {
        if let Some(outgoing) = &self.inner.outgoing {
            let payload = format!("{}{SEP}{kind}{SEP}{key}", self.inner.holder);
            let _ = outgoing.send(payload);
        }
    }

    /// Nudges `key` of the controller of `kind`, in this process and on the other replicas,
    /// without holding that controller's [`super::Nudger`] (for surfaces that only know
    /// the kind).
    pub fn nudge(&self, kind: &str, key: &str) {
        if let Some(controller) = self
            .inner
            .subscribers
            .lock()
            .expect("nudge subscribers poisoned")
            .get(kind)
        {
            let _ = controller.send(key.to_string());
        }
        self.publish(kind, key);
    }

    fn deliver(&self, payload: &str) {
        let mut parts = payload.splitn(3, SEP);
        let (Some(holder), Some(kind), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            debug!(payload, "ignoring a malformed nudge");
            return;
        };
        if holder == self.inner.holder {
            return;
        }
        let subscribers = self
            .inner
            .subscribers
            .lock()
            .expect("nudge subscribers poisoned");
        if let Some(controller) = subscribers.get(kind) {
            let _ = controller.send(key.to_string());
        }
    }
}
