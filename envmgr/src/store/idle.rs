//! Idle envs in the store: the signals of use Slipway records itself, sleep and wake as
//! requests (surfaces and the idle policy write them; the reconciler carries them out),
//! pins, and the deletion warning given. Each request writes its event in the same
//! transaction, and only when it changes something: a hundred wakes of one sleeping env
//! are one wake on the timeline.

use sqlx::Row;

use super::{insert_event, now_ms, EnvRecord, Store, StoreError};
use crate::names::EnvName;

/// The timeline kind of a deletion warning (and of the notification it becomes).
pub const EXPIRING_EVENT: &str = "env.expiring";

/// The timeline kind of an env's branch found gone from its repo, or back.
pub const BRANCH_EVENT: &str = "branch";

impl Store {
    /// Records that a command on some surface named `name` at `at` (a sign of use).
    pub async fn record_command(&self, name: &EnvName, at: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE envs SET last_command_at = $1 \
             WHERE name = $2 AND (last_command_at IS NULL OR last_command_at < $1)",
        )
        .bind(at)
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Asks for the env to sleep. `Ok(true)` when this request put it to sleep, `Ok(false)`
    /// when it was already asleep or is not wanted any more.
    pub async fn request_sleep(
        &self,
        name: &EnvName,
        actor: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.flip_asleep(name, true, actor, &format!("sleep requested: {why}"))
            .await
    }

    /// Asks for a sleeping env to wake. `Ok(true)` for the one request that woke it, `Ok(false)`
    /// for every other (awake already, or not wanted any more).
    pub async fn request_wake(
        &self,
        name: &EnvName,
        actor: &str,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.flip_asleep(name, false, actor, &format!("wake requested: {why}"))
            .await
    }

    async fn flip_asleep(
        &self,
        name: &EnvName,
        asleep: bool,
        actor: &str,
        message: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let (to, from) = if asleep { (1_i64, 0_i64) } else { (0, 1) };
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE envs SET asleep = $1, updated_at = $2 \
             WHERE name = $3 AND asleep = $4 AND desired = 'running'",
        )
        .bind(to)
        .bind(now)
        .bind(name.as_str())
        .bind(from)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                "requested",
                None,
                message,
                Some(actor),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Pins (or unpins) the env: a pinned env is never put to sleep nor deleted for being
    /// idle. Returns the env, `None` when there is none.
    pub async fn set_pinned(
        &self,
        name: &EnvName,
        pinned: bool,
        actor: &str,
    ) -> Result<Option<EnvRecord>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE envs SET pinned = $1, updated_at = $2 WHERE name = $3 AND pinned <> $1",
        )
        .bind(i64::from(pinned))
        .bind(now)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            let message = if pinned {
                "pinned: never put to sleep nor deleted for being idle"
            } else {
                "unpinned: sleeps and is deleted when idle again"
            };
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                "requested",
                None,
                message,
                Some(actor),
            )
            .await?;
        }
        tx.commit().await?;
        self.get(name).await
    }

    /// Records (under the reconciler's lease) that the env's containers were stopped now.
    pub async fn record_slept(&self, name: &EnvName) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE envs SET slept_at = $1 WHERE name = $2 AND {}",
            self.fence_clause(3)
        );
        let query = sqlx::query(&sql).bind(now_ms()).bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// Records that people were told the env goes at `deadline`, with an [`EXPIRING_EVENT`]
    /// carrying `message`. `false` (and nothing written) when that deadline was told already.
    pub async fn record_expiry_warning(
        &self,
        name: &EnvName,
        deadline: i64,
        message: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE envs SET warned_at = $1, warned_for = $2 \
             WHERE name = $3 AND desired = 'running' AND (warned_for IS NULL OR warned_for <> $2)",
        )
        .bind(now)
        .bind(deadline)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                EXPIRING_EVENT,
                None,
                message,
                Some("slipway"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Records whether the branch of branch env `name` exists (`gone_at`: when it was found
    /// missing; `None`: it exists), with an event on the timeline when that changes. A PR's
    /// or a queue candidate's env is never marked (a closed PR deletes its env; a candidate
    /// goes with its queue entry). `Ok(true)` when this call changed it.
    pub async fn record_branch_presence(
        &self,
        name: &EnvName,
        gone_at: Option<i64>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = match gone_at {
            Some(at) => sqlx::query(
                "UPDATE envs SET branch_gone_at = $1 \
                 WHERE name = $2 AND desired = 'running' AND branch_gone_at IS NULL \
                 AND git_ref IS NULL AND want_commit IS NULL",
            )
            .bind(at)
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => sqlx::query(
                "UPDATE envs SET branch_gone_at = NULL WHERE name = $1 AND branch_gone_at IS NOT NULL",
            )
            .bind(name.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if changed > 0 {
            let branch: String = sqlx::query("SELECT branch FROM envs WHERE name = $1")
                .bind(name.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get("branch")?;
            let message = match gone_at {
                Some(_) => format!("branch {branch} is gone from the repository"),
                None => format!("branch {branch} is back: the env is no longer deleted for it"),
            };
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                BRANCH_EVENT,
                None,
                &message,
                Some("slipway"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Marks the env for deletion because its branch is gone, unless it was pinned or the
    /// branch came back (or was found gone again later) meanwhile: `gone_at` is the time
    /// the caller read.
    pub async fn delete_branch_gone(
        &self,
        name: &EnvName,
        gone_at: i64,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.expire_unless_changed(name, "branch_gone_at = $3", gone_at, why)
            .await
    }

    /// Marks the env for deletion for having been idle, unless a sign of use newer than
    /// `last_used_at` arrived meanwhile (then it stays, and `false`). `last_used_at` is what
    /// the caller computed from the signals it read.
    pub async fn delete_idle(
        &self,
        name: &EnvName,
        last_used_at: i64,
        why: &str,
    ) -> Result<bool, StoreError> {
        self.expire_unless_changed(
            name,
            "COALESCE(requested_at, 0) <= $3 AND COALESCE(last_command_at, 0) <= $3 \
             AND COALESCE(last_request_at, 0) <= $3",
            last_used_at,
            why,
        )
        .await
    }

    /// Marks a running, unpinned env for deletion with an `expired` event, only while
    /// `still` (SQL over the env's row, `$3` bound to `read`) holds: what the caller decided
    /// on has not changed meanwhile, whichever replica changed it.
    async fn expire_unless_changed(
        &self,
        name: &EnvName,
        still: &str,
        read: i64,
        why: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE envs SET desired = 'deleted', updated_at = $1 \
             WHERE name = $2 AND desired = 'running' AND pinned = 0 AND {still}"
        );
        let changed = sqlx::query(&sql)
            .bind(now)
            .bind(name.as_str())
            .bind(read)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                "expired",
                None,
                why,
                Some("slipway"),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }
}
