//! Leases: one replica at a time works on a key (an env, a test queue, a delivery). A lease
//! is taken before work, renewed while the work lasts and released after. Each new holder
//! gets a larger fencing token; writes made under a lease carry it (see [`Store::fenced`]),
//! so a replica that paused past its lease finds its writes refused instead of undoing the
//! work of the replica that took over.
//!
//! Expiry uses each replica's wall clock: replicas sharing a database need synchronised
//! clocks (NTP), and the lease time-to-live must be well above their skew.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// A lease this replica holds on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub kind: String,
    pub key: String,
    pub holder: String,
    pub token: i64,
    /// Milliseconds since the epoch.
    pub expires_at: i64,
}

/// Why a lease could not be taken: someone else holds it until `until` (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldElsewhere {
    pub holder: String,
    pub until: i64,
}

/// The proof a fenced write carries: the kind, key and token of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub kind: String,
    pub key: String,
    pub token: i64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence {
            kind: self.kind.clone(),
            key: self.key.clone(),
            token: self.token,
        }
    }
}

fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4)
}

impl Store {
    /// Takes the lease on (kind, key) for `holder` when it is free, expired, or already
    /// this holder's; the token grows with every take.
    pub async fn acquire_lease(
        &self,
        kind: &str,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Result<Lease, HeldElsewhere>, StoreError> {
        let now = now_ms();
        let expires_at = now.saturating_add(ttl_ms(ttl));
        let row = sqlx::query(
            "INSERT INTO leases (kind, lease_key, holder, token, expires_at) VALUES ($1, $2, $3, 1, $4) \
             ON CONFLICT (kind, lease_key) DO UPDATE \
             SET holder = excluded.holder, token = leases.token + 1, expires_at = excluded.expires_at \
             WHERE leases.expires_at <= $5 OR leases.holder = excluded.holder \
             RETURNING token",
        )
        .bind(kind)
        .bind(key)
        .bind(holder)
        .bind(expires_at)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(Ok(Lease {
                kind: kind.to_string(),
                key: key.to_string(),
                holder: holder.to_string(),
                token: row.try_get("token")?,
                expires_at,
            }));
        }
        let row =
            sqlx::query("SELECT holder, expires_at FROM leases WHERE kind = $1 AND lease_key = $2")
                .bind(kind)
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
        Ok(Err(match row {
            Some(row) => HeldElsewhere {
                holder: row.try_get("holder")?,
                until: row.try_get("expires_at")?,
            },
            // Released between the two statements: free now, the caller may try again.
            None => HeldElsewhere {
                holder: String::new(),
                until: now,
            },
        }))
    }

    /// Extends a lease still held; `false` when it expired or another holder took it.
    pub async fn renew_lease(&self, lease: &mut Lease, ttl: Duration) -> Result<bool, StoreError> {
        let now = now_ms();
        let expires_at = now.saturating_add(ttl_ms(ttl));
        let done = sqlx::query(
            "UPDATE leases SET expires_at = $1 \
             WHERE kind = $2 AND lease_key = $3 AND token = $4 AND holder = $5 AND expires_at > $6",
        )
        .bind(expires_at)
        .bind(&lease.kind)
        .bind(&lease.key)
        .bind(lease.token)
        .bind(&lease.holder)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let renewed = done.rows_affected() == 1;
        if renewed {
            lease.expires_at = expires_at;
        }
        Ok(renewed)
    }

    /// Gives a lease up so another replica may take the key at once. The row stays, so
    /// tokens keep growing.
    pub async fn release_lease(&self, lease: &Lease) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE kind = $1 AND lease_key = $2 AND token = $3",
        )
        .bind(&lease.kind)
        .bind(&lease.key)
        .bind(lease.token)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends every lease, whoever holds it: for a process that knows it is the only one on
    /// this store (SQLite), so work a killed predecessor held resumes at once instead of
    /// after `lease_ttl`. Tokens keep growing.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE leases SET expires_at = 0 WHERE expires_at > 0")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// Live leases of one kind: (key, holder), who works on what right now.
    pub async fn live_leases(&self, kind: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT lease_key, holder FROM leases WHERE kind = $1 AND expires_at > $2 ORDER BY lease_key",
        )
        .bind(kind)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("lease_key")?, r.try_get("holder")?)))
            .collect()
    }

    /// This store, with every write a reconciler makes to the leased key's rows checked
    /// against `fence`: such a write whose lease is no longer current changes nothing and
    /// fails with [`StoreError::StaleLease`].
    pub fn fenced(&self, fence: Fence) -> Store {
        Store {
            fence: Some(Arc::new(fence)),
            ..self.clone()
        }
    }

    /// SQL that is true while this store's fence is current (`TRUE` without a fence). Its
    /// parameters, when fenced, are the last four of the statement, from `$first`: bind
    /// them with [`Store::bind_fence`] after the others.
    pub(crate) fn fence_clause(&self, first: usize) -> String {
        if self.fence.is_none() {
            return "TRUE".to_string();
        }
        format!(
            "EXISTS (SELECT 1 FROM leases WHERE kind = ${} AND lease_key = ${} AND token = ${} AND expires_at > ${})",
            first,
            first + 1,
            first + 2,
            first + 3
        )
    }

    /// Binds the parameters of [`Store::fence_clause`] (none without a fence).
    pub(crate) fn bind_fence<'q>(
        &self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self.fence.as_deref() {
            Some(f) => query
                .bind(f.kind.clone())
                .bind(f.key.clone())
                .bind(f.token)
                .bind(now_ms()),
            None => query,
        }
    }

    /// Fails with [`StoreError::StaleLease`] when a fenced write changed nothing because its
    /// lease is no longer current (and not because the row is gone).
    pub(crate) async fn check_fence(&self, rows_affected: u64) -> Result<(), StoreError> {
        let Some(fence) = self.fence.as_deref() else {
            return Ok(());
        };
        if rows_affected > 0 {
            return Ok(());
        }
        let current = sqlx::query(
            "SELECT 1 AS held FROM leases WHERE kind = $1 AND lease_key = $2 AND token = $3 AND expires_at > $4",
        )
        .bind(&fence.kind)
        .bind(&fence.key)
        .bind(fence.token)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        match current {
            Some(_) => Ok(()),
            None => Err(StoreError::StaleLease {
                kind: fence.kind.clone(),
                key: fence.key.clone(),
                token: fence.token,
            }),
        }
    }
}
