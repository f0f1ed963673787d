//! The front door's measurements per rollout and version (table `rollout_traffic`) and the
//! traffic splits it applies (read from `rollouts`). Each front-door process writes its own
//! rows (`writer`), replacing them with its running totals per second, so replicas and
//! retries never double count; readers add the rows up.

use crate::names::EnvName;
use crate::rollout::{TrafficSplit, Version, VersionCounts, FULL_WEIGHT};

use super::{column, Store, StoreError};

/// One second of one version's traffic, added up over every writer.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficBucket {
    /// Start of the second, unix milliseconds.
    pub at: i64,
    pub version: Version,
    pub counts: VersionCounts,
}

/// Both versions' traffic over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficWindow {
    pub stable: VersionCounts,
    pub canary: VersionCounts,
}

/// A second's start for a time in unix milliseconds.
pub fn traffic_bucket(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(1000)
}

impl Store {
    /// Writes this front door's totals for (rollout, version, second): the row is replaced,
    /// so writing the same running total twice is harmless.
    pub async fn record_traffic(
        &self,
        rollout_id: i64,
        version: Version,
        bucket_at: i64,
        writer: &str,
        counts: &VersionCounts,
    ) -> Result<(), StoreError> {
        let latency = serde_json::to_string(&counts.latency).expect("histograms serialize");
        sqlx::query(
            "INSERT INTO rollout_traffic (rollout_id, version, bucket_at, writer, requests, errors, latency) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (rollout_id, version, bucket_at, writer) DO UPDATE \
             SET requests = excluded.requests, errors = excluded.errors, latency = excluded.latency",
        )
        .bind(rollout_id)
        .bind(version.as_str())
        .bind(traffic_bucket(bucket_at))
        .bind(writer)
        .bind(i64::try_from(counts.requests).unwrap_or(i64::MAX))
        .bind(i64::try_from(counts.errors).unwrap_or(i64::MAX))
        .bind(latency)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Each second of a rollout's traffic from `since` (unix ms, inclusive of its second),
    /// oldest first, added up over writers.
    pub async fn traffic_series(
        &self,
        rollout_id: i64,
        since: i64,
    ) -> Result<Vec<TrafficBucket>, StoreError> {
        let rows = sqlx::query(
            "SELECT version, bucket_at, requests, errors, latency FROM rollout_traffic \
             WHERE rollout_id = $1 AND bucket_at >= $2 ORDER BY bucket_at, version",
        )
        .bind(rollout_id)
        .bind(traffic_bucket(since))
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<TrafficBucket> = Vec::new();
        for row in &rows {
            let version_text: String = column(row, "version")?;
            let version = Version::parse(&version_text)
                .ok_or_else(|| StoreError::Corrupt(format!("traffic version {version_text:?}")))?;
            let at: i64 = column(row, "bucket_at")?;
            let latency_text: String = column(row, "latency")?;
            let counts = VersionCounts {
                requests: u64::try_from(column::<i64>(row, "requests")?).unwrap_or_default(),
                errors: u64::try_from(column::<i64>(row, "errors")?).unwrap_or_default(),
                latency: serde_json::from_str(&latency_text)
                    .map_err(|e| StoreError::Corrupt(format!("traffic latency: {e}")))?,
            };
            match out.last_mut() {
                Some(last) if last.at == at && last.version == version => {
                    last.counts.merge(&counts)
                }
                _ => out.push(TrafficBucket {
                    at,
                    version,
                    counts,
                }),
            }
        }
        Ok(out)
    }

    /// Both versions' traffic of a rollout from `since` (unix ms): the current step's window.
    pub async fn traffic_window(
        &self,
        rollout_id: i64,
        since: i64,
    ) -> Result<TrafficWindow, StoreError> {
        let mut window = TrafficWindow::default();
        for bucket in self.traffic_series(rollout_id, since).await? {
            match bucket.version {
                Version::Stable => window.stable.merge(&bucket.counts),
                Version::Canary => window.canary.merge(&bucket.counts),
            }
        }
        Ok(window)
    }

    /// Drops the measurements of rollouts that finished before `before` (unix ms).
    pub async fn prune_traffic(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM rollout_traffic WHERE rollout_id IN \
             (SELECT id FROM rollouts WHERE finished_at IS NOT NULL AND finished_at < $1)",
        )
        .bind(before)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The splits the front door applies now: one per rollout that is not finished. A split
    /// with weight 0 still tells the front door which rollout to count stable traffic for.
    pub async fn traffic_splits(&self) -> Result<Vec<TrafficSplit>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, release_env, canary_env, canary_weight FROM rollouts \
             WHERE state NOT IN ('rolled_back', 'done', 'superseded') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut splits = Vec::with_capacity(rows.len());
        for row in &rows {
            let env = |name: &str| -> Result<EnvName, StoreError> {
                let text: String = column(row, name)?;
                EnvName::parse(&text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
            };
            let weight: i64 = column(row, "canary_weight")?;
            splits.push(TrafficSplit {
                rollout_id: column(row, "id")?,
                release_env: env("release_env")?,
                canary_env: env("canary_env")?,
                canary_weight: u16::try_from(weight.clamp(0, i64::from(FULL_WEIGHT)))
                    .unwrap_or_default(),
            });
        }
        Ok(splits)
    }
}
