//! What the front door measures per rollout, version and second for the rollout analysis:
//! requests, errors (5xx answers and connection errors) and the latency to the response
//! head, in [`VersionCounts`]. Requests count into this process's running totals in memory;
//! a flusher writes every second that changed since its last write with
//! `Store::record_traffic` (under this process's own `writer`, replacing the row, so a
//! write repeated after a failure never double counts), twice a second. Seconds already
//! written and older than [`KEEP_FLUSHED`] are dropped; a store outage longer than
//! [`KEEP_UNFLUSHED`] drops the oldest unwritten seconds, so memory stays bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use envmgr::rollout::{Version, VersionCounts};
use envmgr::store::{now_ms, traffic_bucket, Store};
use tracing::{info, warn};

/// How often changed seconds are written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// How long a written second is kept in memory (requests still finishing add to it).
const KEEP_FLUSHED: i64 = 10_000;
/// How long an unwritten second is kept while the store does not answer.
const KEEP_UNFLUSHED: i64 = 120_000;

/// How one measured request ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// An answer with this status, its head this many milliseconds after the request came.
    Answered { status: u16, latency_ms: f64 },
    /// The version's service refused or dropped the connection.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    rollout_id: i64,
    version: Version,
    /// Start of the second, unix ms.
    second: i64,
}

#[derive(Default)]
struct Slot {
    counts: VersionCounts,
    /// Requests recorded into the slot so far, and how many of them are in the store.
    recorded: u64,
    written: u64,
}

type Slots = Mutex<HashMap<Key, Slot>>;

/// This process's running totals; cheap to clone.
#[derive(Clone)]
pub struct TrafficMeter {
    slots: Arc<Slots>,
    writer: Arc<str>,
}

impl TrafficMeter {
    /// Starts the flusher, writing as `writer` (unique per front-door process); it ends
    /// when the last handle is dropped.
    pub fn start(store: Store, writer: String) -> Self {
        let meter = Self {
            slots: Arc::default(),
            writer: writer.into(),
        };
        tokio::spawn(flush_loop(
            Arc::downgrade(&meter.slots),
            store,
            meter.writer.clone(),
        ));
        meter
    }

    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// Counts one request of `version` in `rollout_id`, in the current second.
    pub fn record(&self, rollout_id: i64, version: Version, outcome: Outcome) {
        let key = Key {
            rollout_id,
            version,
            second: traffic_bucket(now_ms()),
        };
        let mut slots = self.slots.lock().expect("traffic meter poisoned");
        let slot = slots.entry(key).or_default();
        slot.counts.requests += 1;
        slot.recorded += 1;
        match outcome {
            Outcome::Answered { status, latency_ms } => {
                if status >= 500 {
                    slot.counts.errors += 1;
                }
                slot.counts.latency.record(latency_ms);
            }
            Outcome::Failed => slot.counts.errors += 1,
        }
    }

    /// Seconds held in memory (for tests of the bound).
    pub fn held_seconds(&self) -> usize {
        self.slots.lock().expect("traffic meter poisoned").len()
    }

    /// Writes every changed second now; `Err` when a write failed (those stay due).
    pub async fn flush(&self, store: &Store) -> Result<(), envmgr::store::StoreError> {
        flush_once(&self.slots, store, &self.writer).await
    }
}

async fn flush_loop(slots: Weak<Slots>, store: Store, writer: Arc<str>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = false;
    loop {
        tick.tick().await;
        let Some(slots) = slots.upgrade() else {
            return;
        };
        match flush_once(&slots, &store, &writer).await {
            Ok(()) if outage => {
                info!("front door: rollout traffic written again");
                outage = false;
            }
            Ok(()) => {}
            Err(e) if !outage => {
                warn!(error = %e, "front door: cannot write rollout traffic; keeping it in memory (up to 2 minutes) until the store answers");
                outage = true;
            }
            Err(_) => {}
        }
    }
}

async fn flush_once(
    slots: &Slots,
    store: &Store,
    writer: &str,
) -> Result<(), envmgr::store::StoreError> {
    let due: Vec<(Key, VersionCounts, u64)> = {
        let slots = slots.lock().expect("traffic meter poisoned");
        slots
            .iter()
            .filter(|(_, slot)| slot.recorded != slot.written)
            .map(|(key, slot)| (*key, slot.counts.clone(), slot.recorded))
            .collect()
    };
    let mut result = Ok(());
    for (key, counts, recorded) in due {
        match store
            .record_traffic(key.rollout_id, key.version, key.second, writer, &counts)
            .await
        {
            Ok(()) => {
                let mut slots = slots.lock().expect("traffic meter poisoned");
                if let Some(slot) = slots.get_mut(&key) {
                    slot.written = slot.written.max(recorded);
                }
            }
            Err(e) => {
                // The rest would most likely fail the same way: try again next tick.
                result = Err(e);
                break;
            }
        }
    }
    let now = now_ms();
    let mut slots = slots.lock().expect("traffic meter poisoned");
    let before = slots.len();
    slots.retain(|key, slot| {
        let age = now - key.second;
        if slot.recorded == slot.written {
            age <= KEEP_FLUSHED
        } else {
            age <= KEEP_UNFLUSHED
        }
    });
    let unwritten_dropped = before - slots.len();
    if unwritten_dropped > 0 && result.is_err() {
        warn!(
            seconds = unwritten_dropped,
            "front door: dropped rollout traffic the store did not take in time"
        );
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn running_totals_are_written_once_per_change_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite:{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let meter = TrafficMeter {
            slots: Arc::default(),
            writer: "test-writer".into(),
        };
        let started = now_ms();
        meter.record(
            3,
            Version::Stable,
            Outcome::Answered {
                status: 200,
                latency_ms: 2.0,
            },
        );
        meter.record(
            3,
            Version::Canary,
            Outcome::Answered {
                status: 503,
                latency_ms: 9.0,
            },
        );
        meter.record(3, Version::Canary, Outcome::Failed);
        meter.flush(&store).await.unwrap();
        // Written twice (nothing changed the second time): still counted once.
        meter.flush(&store).await.unwrap();
        meter.record(
            3,
            Version::Stable,
            Outcome::Answered {
                status: 404,
                latency_ms: 4.0,
            },
        );
        meter.flush(&store).await.unwrap();
        let window = store.traffic_window(3, started).await.unwrap();
        assert_eq!(window.stable.requests, 2);
        assert_eq!(window.stable.errors, 0, "a 4xx is not an error");
        assert_eq!(window.stable.latency.count(), 2);
        assert_eq!(window.canary.requests, 2);
        assert_eq!(window.canary.errors, 2);
        assert_eq!(
            window.canary.latency.count(),
            1,
            "a failed connection has no latency"
        );
        let p50 = window.canary.latency.quantile(0.5).unwrap();
        assert!((p50 / 9.0 - 1.0).abs() < 0.05, "{p50}");
    }

    #[tokio::test]
    async fn old_written_seconds_are_dropped_and_unwritten_ones_kept_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite:{}/t.db", dir.path().display()))
            .await
            .unwrap();
        let meter = TrafficMeter {
            slots: Arc::default(),
            writer: "test-writer".into(),
        };
        let now = traffic_bucket(now_ms());
        {
            let mut slots = meter.slots.lock().unwrap();
            for (age, written) in [(0, true), (30_000, true), (30_000, false), (600_000, false)] {
                let slot = slots
                    .entry(Key {
                        rollout_id: 1,
                        version: if written {
                            Version::Stable
                        } else {
                            Version::Canary
                        },
                        second: now - age,
                    })
                    .or_default();
                slot.counts.requests = 1;
                slot.recorded = 1;
                slot.written = u64::from(written);
            }
        }
        // A store that refuses the writes (its table gone).
        let db = sqlx::SqlitePool::connect(&format!("sqlite:{}/t.db", dir.path().display()))
            .await
            .unwrap();
        sqlx::query("DROP TABLE rollout_traffic")
            .execute(&db)
            .await
            .unwrap();
        assert!(meter.flush(&store).await.is_err());
        // Kept: the fresh written second and the unwritten 30 s old one; gone: the written
        // 30 s old one and the unwritten 10 minutes old one.
        let slots = meter.slots.lock().unwrap();
        let mut kept: Vec<(i64, bool)> = slots
            .iter()
            .map(|(key, slot)| (now - key.second, slot.recorded == slot.written))
            .collect();
        kept.sort();
        assert_eq!(kept, vec![(0, true), (30_000, false)]);
    }
}
