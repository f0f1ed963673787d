//! The store: desired and observed state of every environment, and the event timeline.
//! SQLite by default, Postgres for several replicas, through sqlx's `Any` driver so every
//! query is written once (`$1` placeholders work on both). Surfaces write desired state
//! (`request_*`); reconcilers write observed state (`set_phase`, `record_*`).

mod audit;
mod github;
mod idle;
mod images;
mod leases;
mod outbox;
mod queue;
mod quota;
mod record;
mod rollouts;
mod testruns;
mod traffic;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::names::{BranchName, CommitSha, EnvName, PrNumber, RepoName};
pub use audit::{AuditEntry, NewAuditEntry};
pub use github::{Delivery, PullRow, PullState};
pub use idle::{BRANCH_EVENT, EXPIRING_EVENT};
pub use images::BuiltImageUse;
pub use leases::{Fence, HeldElsewhere, Lease};
pub use outbox::{finished_run_of, NewNotification, OutboxEntry, OutboxStatus};
pub use queue::{queue_key, Change, EntryUpdate, NewQueueEntry, QueueEntry, QueueRow, TreeResult};
pub use quota::{counts_for_memory, format_idle, QuotaLimits, QuotaRefusal, QuotaScope};
pub use record::{Desired, EnvRecord, Event, IdleState, Phase, ServiceStatus, SharedFrom};
pub use rollouts::{ChannelRow, EnvRole, NewRollout, RolloutRequest, RolloutUpdate};
pub use testruns::{RunOutcome, RunStatus, RunTrigger, TestResult, TestRun};
pub use traffic::{traffic_bucket, TrafficBucket, TrafficWindow};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url `{0}`: use sqlite:// or postgres://")]
    UnsupportedUrl(String),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    /// `env up` for a name another (repo, branch or PR) owns: names are never moved.
    #[error("env `{name}` belongs to {owner}; ask for that one by its own repo and branch, or `env down {name}` first and wait until it is deleted")]
    NameTaken { name: String, owner: String },
    /// `queue add` for a change that is already in line.
    #[error("{change} is already in the queue as entry {entry}; `queue status {entry}` shows where it is")]
    AlreadyQueued { change: String, entry: i64 },
    /// A new env past a quota; nothing was written.
    #[error("{0}")]
    QuotaExceeded(QuotaRefusal),
    /// A write under a lease this replica no longer holds: another replica took the key.
    #[error("the lease on {kind} `{key}` (token {token}) is no longer held by this replica; its work was handed to another")]
    StaleLease {
        kind: String,
        key: String,
        token: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Names of envs whose observed state changed in this process, for reporters.
    changes: tokio::sync::broadcast::Sender<EnvName>,
    /// Set on the store a reconciler writes through while it holds a lease (see `fenced`).
    fence: Option<std::sync::Arc<Fence>>,
    /// The database URL, for connections outside the pool (Postgres `LISTEN`). May hold a
    /// password: never logged.
    url: std::sync::Arc<str>,
    /// When each env's request activity was last written by this process (debounce).
    activity: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<EnvName, i64>>>,
}

/// What a surface asks for with `env up`.
#[derive(Debug, Clone)]
pub struct UpRequest {
    pub name: EnvName,
    pub repo: RepoName,
    pub branch: BranchName,
    pub ttl: Duration,
    pub actor: String,
    /// For a pull request's env: what to fetch and the commit it must yield.
    pub pull_request: Option<PullRequestSource>,
}

/// A pull request's head, as the forge reported it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PullRequestSource {
    pub number: PrNumber,
    /// The ref the forge serves the head under, e.g. `refs/pull/7/head`.
    pub git_ref: String,
    pub head: CommitSha,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

const ENV_COLUMNS: &str =
    "name, repo, branch, requested_by, desired, generation, observed_generation, ttl_ms, \
     expires_at, created_at, updated_at, commit_sha, phase, reason, services, warnings, git_ref, pr_number, want_commit, \
     asleep, pinned, requested_at, last_command_at, slept_at, warned_at, warned_for, last_request_at, branch_gone_at";

/// The TTL of a repo's shared env: none to speak of (a century). It serves every env of the
/// repo, so it goes only when asked (`env down`, refused while envs use it).
pub const SHARED_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// At most one `last_request_at` write per env this often: the front door may pass
/// thousands of requests a second, idle tracking needs minutes.
pub const ACTIVITY_DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// Connects and brings the schema up to date. A SQLite file is created if missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let (backend, url) = if url.starts_with("sqlite:") {
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            (Backend::Postgres, url.to_string())
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_string()));
        };
        let pool = AnyPoolOptions::new()
            // SQLite allows one writer at a time; one connection avoids "database is locked".
            .max_connections(if backend == Backend::Sqlite { 1 } else { 10 })
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA busy_timeout = 10000")
                .execute(&pool)
                .await?;
        }
        match backend {
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        Ok(Self {
            pool,
            backend,
            changes,
            fence: None,
            url: url.as_str().into(),
            activity: Default::default(),
        })
    }

    /// One trivial query, for readiness checks: the database answers and the pool has (or
    /// can open) a connection.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database URL (it may carry a password: do not log it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Env names as their phase or services change (best effort: a slow receiver may miss
    /// some and should then resync).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<EnvName> {
        self.changes.subscribe()
    }

    fn changed(&self, name: &EnvName) {
        let _ = self.changes.send(name.clone());
    }

    /// Whether [`Store::record_request_activity`] would write for a request at `at_ms`: a
    /// cheap check that spares the caller a task per request.
    pub fn activity_due(&self, env: &EnvName, at_ms: i64) -> bool {
        let written = self.activity.lock().expect("activity map poisoned");
        written
            .get(env)
            .is_none_or(|last| at_ms - last >= ACTIVITY_DEBOUNCE.as_millis() as i64)
    }

    /// Records a request through the front door to `env` at `at_ms` (never moves the time
    /// back). Writes at most once per [`ACTIVITY_DEBOUNCE`] per env; returns whether it wrote.
    pub async fn record_request_activity(
        &self,
        env: &EnvName,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        {
            // Check and claim at once, so concurrent callers write once.
            let mut written = self.activity.lock().expect("activity map poisoned");
            let debounce = ACTIVITY_DEBOUNCE.as_millis() as i64;
            if written.get(env).is_some_and(|last| at_ms - last < debounce) {
                return Ok(false);
            }
            written.insert(env.clone(), at_ms);
        }
        sqlx::query(
            "UPDATE envs SET last_request_at = $1 \
             WHERE name = $2 AND (last_request_at IS NULL OR last_request_at < $1)",
        )
        .bind(at_ms)
        .bind(env.as_str())
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    /// A stable id for this installation, made on first use. Runtime resources carry it so
    /// two installations sharing one Docker engine never reap each other's envs.
    pub async fn instance_id(&self) -> Result<String, StoreError> {
        let candidate = format!("{:016x}", rand_u64());
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ('instance_id', $1) ON CONFLICT (key) DO NOTHING",
        )
        .bind(&candidate)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'instance_id'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("value")?)
    }

    /// A value kept in the store's key-value table (surfaces' bookkeeping, e.g. chat threads).
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("value").map_err(StoreError::from))
            .transpose()
    }

    pub async fn meta_set(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records that `env up` was asked for: a new env, or a new generation of an existing one
    /// (which moves it to the branch's newest commit). One statement, so concurrent requests
    /// for one env each bump the generation exactly once.
    pub async fn request_up(&self, req: &UpRequest) -> Result<EnvRecord, StoreError> {
        self.upsert_env(req, None, None, None).await
    }

    /// [`Store::request_up`] for an env that must fit `limits` if it is new (not wanted
    /// yet): past a cap it fails with [`StoreError::QuotaExceeded`] and writes nothing. The
    /// check and the write are one transaction under a lock, so concurrent requests cannot
    /// both take the last slot.
    pub async fn request_up_within(
        &self,
        req: &UpRequest,
        limits: &QuotaLimits,
    ) -> Result<EnvRecord, StoreError> {
        self.upsert_env(req, None, Some(limits), None).await
    }

    /// Like [`Store::request_up`], for an env that deploys exactly `commit`, a commit Slipway
    /// made itself (a submit-queue candidate) that is already in the repo's mirror.
    pub async fn request_candidate_up(
        &self,
        req: &UpRequest,
        commit: &CommitSha,
    ) -> Result<EnvRecord, StoreError> {
        self.upsert_env(req, Some(commit), None, None).await
    }

    /// Asks for `repo`'s shared env (`<repo>-shared`, see [`EnvName::for_shared`]) on its
    /// target branch: created when there is none (or it was deleted), moved to the branch's
    /// newest commit when `move_to_newest` and not already at `newest`, else left as it is.
    /// It is pinned and its TTL is [`SHARED_TTL`]: it goes when asked, once no env uses it.
    /// Returns whether a deploy was asked for.
    pub async fn request_shared_up(
        &self,
        repo: &RepoName,
        target: &BranchName,
        actor: &str,
        newest: Option<&CommitSha>,
    ) -> Result<bool, StoreError> {
        let name = EnvName::for_shared(repo);
        let existing = self.get(&name).await?;
        // A shared env that failed is asked again by the next env needing it: a transient
        // failure (a healthcheck, a pull) must not fail every env of the repo for good.
        let wanted = existing.as_ref().is_some_and(|e| {
            e.desired == Desired::Running && !matches!(e.phase, Phase::Deleted | Phase::Failed)
        });
        let behind = match (&existing, newest) {
            (Some(env), Some(newest)) => env.commit.as_ref() != Some(newest),
            (_, None) => false,
            (None, Some(_)) => true,
        };
        let asked = !wanted || behind;
        if asked {
            let request = UpRequest {
                name: name.clone(),
                repo: repo.clone(),
                branch: target.clone(),
                ttl: SHARED_TTL,
                actor: actor.to_string(),
                pull_request: None,
            };
            self.upsert_env(&request, None, None, None).await?;
        }
        // Pinned on every ask, so a crash between the two writes heals at the next one.
        if !existing.is_some_and(|e| e.idle.pinned) || asked {
            self.set_pinned(&name, true, actor).await?;
        }
        Ok(asked)
    }

    /// The envs of `repo` that are wanted and reach its shared env's services.
    pub async fn shared_users(&self, repo: &RepoName) -> Result<Vec<EnvName>, StoreError> {
        let shared = EnvName::for_shared(repo);
        Ok(self
            .list(false)
            .await?
            .into_iter()
            .filter(|env| {
                &env.repo == repo
                    && env.desired == Desired::Running
                    && env
                        .services
                        .iter()
                        .any(|s| s.shared.as_ref().is_some_and(|from| from.env == shared))
            })
            .map(|env| env.name)
            .collect())
    }

    async fn upsert_env(
        &self,
        req: &UpRequest,
        candidate: Option<&CommitSha>,
        quota: Option<&QuotaLimits>,
        role: Option<&EnvRole>,
    ) -> Result<EnvRecord, StoreError> {
        let now = now_ms();
        let ttl_ms = i64::try_from(req.ttl.as_millis())
            .ok()
            .filter(|ms| now.checked_add(*ms).is_some())
            .ok_or_else(|| StoreError::Corrupt(format!("ttl {:?} is out of range", req.ttl)))?;
        let mut tx = self.pool.begin().await?;
        if let Some(limits) = quota.filter(|limits| !limits.is_unlimited()) {
            if let Some(refusal) = self
                .check_quota(&mut tx, &req.name, &req.repo, &req.actor, limits)
                .await?
            {
                return Err(StoreError::QuotaExceeded(refusal));
            }
        }
        // The owner check is the upsert's own WHERE, so it is atomic on both dialects: an
        // existing row is only updated when it has the same owner (repo and branch for a
        // branch env, repo and PR number for a PR env) or is Deleted (then it is re-owned).
        let changed = sqlx::query(
            "INSERT INTO envs (name, repo, branch, requested_by, desired, generation, observed_generation, ttl_ms, \
                 expires_at, created_at, updated_at, commit_sha, phase, reason, services, warnings, \
                 git_ref, pr_number, want_commit, requested_at, role) \
             VALUES ($1, $2, $3, $4, 'running', 1, 0, $5, $6, $7, $7, NULL, 'Pending', NULL, '[]', '[]', $8, $9, $10, $7, $11) \
             ON CONFLICT (name) DO UPDATE SET \
                 repo = excluded.repo, branch = excluded.branch, requested_by = excluded.requested_by, desired = 'running', \
                 generation = envs.generation + 1, ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at, \
                 updated_at = excluded.updated_at, phase = 'Pending', reason = NULL, \
                 created_at = CASE WHEN envs.phase = 'Deleted' THEN excluded.created_at ELSE envs.created_at END, \
                 services = CASE WHEN envs.phase = 'Deleted' THEN '[]' ELSE envs.services END, \
                 commit_sha = CASE WHEN envs.phase = 'Deleted' THEN NULL ELSE envs.commit_sha END, \
                 git_ref = excluded.git_ref, pr_number = excluded.pr_number, want_commit = excluded.want_commit, \
                 requested_at = excluded.requested_at, asleep = 0, role = excluded.role, \
                 branch_gone_at = CASE WHEN envs.phase = 'Deleted' THEN NULL ELSE envs.branch_gone_at END, \
                 pinned = CASE WHEN envs.phase = 'Deleted' THEN 0 ELSE envs.pinned END \
             WHERE envs.phase = 'Deleted' OR (envs.repo = excluded.repo AND ( \
                 (envs.pr_number IS NULL AND excluded.pr_number IS NULL AND envs.branch = excluded.branch) \
                 OR envs.pr_number = excluded.pr_number))",
        )
        .bind(req.name.as_str())
        .bind(req.repo.as_str())
        .bind(req.branch.as_str())
        .bind(&req.actor)
        .bind(ttl_ms)
        .bind(now + ttl_ms)
        .bind(now)
        .bind(req.pull_request.as_ref().map(|pr| pr.git_ref.clone()))
        .bind(req.pull_request.as_ref().map(|pr| pr.number.as_i64()))
        .bind(
            req.pull_request
                .as_ref()
                .map(|pr| pr.head.to_string())
                .or(candidate.map(|c| c.to_string())),
        )
        .bind(role.map(EnvRole::to_column))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            drop(tx);
            let owner = match self.get(&req.name).await? {
                Some(env) => match env.pull_request {
                    Some(pr) => format!("repo `{}` pull request #{}", env.repo, pr.number),
                    None => format!("repo `{}` branch `{}`", env.repo, env.branch),
                },
                None => "someone else".to_string(),
            };
            return Err(StoreError::NameTaken {
                name: req.name.to_string(),
                owner,
            });
        }
        let what = match (&req.pull_request, candidate) {
            (Some(pr), _) => format!("pull request #{} at {}", pr.number, pr.head.short()),
            (None, Some(commit)) if role.is_some() => {
                format!(
                    "{} at {}",
                    role.expect("checked").describe(),
                    commit.short()
                )
            }
            (None, Some(commit)) => format!("queue candidate {}", commit.short()),
            (None, None) => format!("branch {}", req.branch),
        };
        let message = format!(
            "up requested for {what} (ttl {})",
            humantime::format_duration(req.ttl)
        );
        insert_event(
            &mut tx,
            req.name.as_str(),
            now,
            "requested",
            Some(Phase::Pending),
            &message,
            Some(&req.actor),
        )
        .await?;
        tx.commit().await?;
        self.get(&req.name)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("env {} vanished", req.name)))
    }

    /// Records that the env should be deleted. Returns the env, or `None` if there is none.
    pub async fn request_down(
        &self,
        name: &EnvName,
        actor: &str,
        why: &str,
    ) -> Result<Option<EnvRecord>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE envs SET desired = 'deleted', updated_at = $1 WHERE name = $2 AND desired <> 'deleted'")
            .bind(now)
            .bind(name.as_str())
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
                &format!("down requested: {why}"),
                Some(actor),
            )
            .await?;
        }
        tx.commit().await?;
        self.get(name).await
    }

    /// Pushes the env's expiry back by `by` (at most `max` from now). `None` when the env
    /// does not exist or is not wanted any more.
    pub async fn extend(
        &self,
        name: &EnvName,
        by: Duration,
        max: Duration,
        actor: &str,
    ) -> Result<Option<EnvRecord>, StoreError> {
        let now = now_ms();
        // Checked: `by` past `max` cannot matter (the expiry is capped at now + max), and
        // clamping it first keeps `expires_at + by` far from i64's end.
        let millis = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let max_ms = millis(max);
        let by = millis(by).min(max_ms);
        let cap = now.saturating_add(max_ms);
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE envs SET expires_at = CASE WHEN expires_at + $1 > $2 THEN $2 ELSE expires_at + $1 END, updated_at = $3 \
             WHERE name = $4 AND desired = 'running'",
        )
        .bind(by)
        .bind(cap)
        .bind(now)
        .bind(name.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed > 0 {
            let message = format!(
                "extended by {} (the expiry is capped at {} from now)",
                humantime::format_duration(Duration::from_millis(by.unsigned_abs())),
                humantime::format_duration(max)
            );
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                "extended",
                None,
                &message,
                Some(actor),
            )
            .await?;
        }
        tx.commit().await?;
        if changed == 0 {
            return Ok(None);
        }
        self.get(name).await
    }

    /// Marks every env whose TTL has passed for deletion and returns their names.
    pub async fn expire_due(&self) -> Result<Vec<EnvName>, StoreError> {
        let now = now_ms();
        let rows =
            sqlx::query("SELECT name FROM envs WHERE desired = 'running' AND expires_at <= $1")
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
        let mut expired = Vec::new();
        for row in rows {
            let name: String = row.try_get("name")?;
            let name = EnvName::parse(&name).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // Re-checks the deadline: an `up` in between may have extended it.
            let mut tx = self.pool.begin().await?;
            let changed = sqlx::query("UPDATE envs SET desired = 'deleted', updated_at = $1 WHERE name = $2 AND desired = 'running' AND expires_at <= $1")
                .bind(now)
                .bind(name.as_str())
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
                    "time to live expired",
                    Some("slipway"),
                )
                .await?;
                expired.push(name);
            }
            tx.commit().await?;
        }
        Ok(expired)
    }

    /// The earliest expiry of an env that is still wanted, to wake the reconciler in time.
    pub async fn next_expiry(&self) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT MIN(expires_at) AS next FROM envs WHERE desired = 'running'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<Option<i64>, _>("next")?)
    }

    pub async fn get(&self, name: &EnvName) -> Result<Option<EnvRecord>, StoreError> {
        let row = sqlx::query(&format!("SELECT {ENV_COLUMNS} FROM envs WHERE name = $1"))
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| EnvRecord::from_row(&r)).transpose()
    }

    /// All envs, newest first; deleted ones only when asked for.
    pub async fn list(&self, include_deleted: bool) -> Result<Vec<EnvRecord>, StoreError> {
        let filter = if include_deleted {
            ""
        } else {
            "WHERE phase <> 'Deleted'"
        };
        let rows = sqlx::query(&format!(
            "SELECT {ENV_COLUMNS} FROM envs {filter} ORDER BY created_at DESC, name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(EnvRecord::from_row).collect()
    }

    /// Moves the env to `phase` and writes the change to the timeline. Nothing happens if
    /// phase and reason are unchanged, so the timeline holds changes only.
    pub async fn set_phase(
        &self,
        name: &EnvName,
        phase: Phase,
        reason: Option<&str>,
        cause: &str,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE envs SET phase = $1, reason = $2, updated_at = $3 \
             WHERE name = $4 AND (phase <> $1 OR COALESCE(reason, '') <> COALESCE($2, '')) AND {}",
            self.fence_clause(5)
        );
        let query = sqlx::query(&sql)
            .bind(phase.as_str())
            .bind(reason)
            .bind(now)
            .bind(name.as_str());
        let changed = self
            .bind_fence(query)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed > 0 {
            let message = match reason {
                Some(reason) => format!("{cause}: {reason}"),
                None => cause.to_string(),
            };
            insert_event(
                &mut tx,
                name.as_str(),
                now,
                "phase",
                Some(phase),
                &message,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        self.check_fence(changed).await?;
        if changed > 0 {
            self.changed(name);
        }
        Ok(())
    }

    pub async fn record_commit(
        &self,
        name: &EnvName,
        commit: &CommitSha,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE envs SET commit_sha = $1, updated_at = $2 WHERE name = $3 AND {}",
            self.fence_clause(4)
        );
        let query = sqlx::query(&sql)
            .bind(commit.as_str())
            .bind(now_ms())
            .bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// The services as last seen, with their state and URLs.
    pub async fn record_services(
        &self,
        name: &EnvName,
        services: &[ServiceStatus],
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(services).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = format!(
            "UPDATE envs SET services = $1 WHERE name = $2 AND {}",
            self.fence_clause(3)
        );
        let query = sqlx::query(&sql).bind(json).bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await?;
        self.changed(name);
        Ok(())
    }

    pub async fn record_warnings(
        &self,
        name: &EnvName,
        warnings: &[String],
    ) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(warnings).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let sql = format!(
            "UPDATE envs SET warnings = $1 WHERE name = $2 AND {}",
            self.fence_clause(3)
        );
        let query = sqlx::query(&sql).bind(json).bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// Records that `generation` has been fully acted on (Ready, Failed or Deleted).
    pub async fn record_observed_generation(
        &self,
        name: &EnvName,
        generation: i64,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE envs SET observed_generation = $1 WHERE name = $2 AND observed_generation < $1 AND {}",
            self.fence_clause(3)
        );
        let query = sqlx::query(&sql).bind(generation).bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// Puts a line on `env`'s timeline by Slipway itself, with or without a row for the
    /// env (the reaper tells what it removed of an env the store no longer knows).
    pub async fn record_event(
        &self,
        env: &EnvName,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_event(
            &mut tx,
            env.as_str(),
            now_ms(),
            kind,
            None,
            message,
            Some("slipway"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The env's timeline, oldest first, after event `after` (0 for all).
    pub async fn events(
        &self,
        name: &EnvName,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, env, at, kind, phase, message, actor FROM events WHERE env = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(name.as_str())
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Event::from_row).collect()
    }

    /// The last `limit` events of an env, oldest first.
    pub async fn recent_events(
        &self,
        name: &EnvName,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, env, at, kind, phase, message, actor FROM events WHERE env = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(name.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut events: Vec<Event> = rows.iter().map(Event::from_row).collect::<Result<_, _>>()?;
        events.reverse();
        Ok(events)
    }
}

async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    env: &str,
    at: i64,
    kind: &str,
    phase: Option<Phase>,
    message: &str,
    actor: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO events (env, at, kind, phase, message, actor) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(env)
    .bind(at)
    .bind(kind)
    .bind(phase.map(|p| p.as_str()))
    .bind(message)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Random enough for an instance id, without another dependency.
pub(crate) fn rand_u64() -> u64 {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_i64(now_ms());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

fn column<T>(row: &AnyRow, name: &str) -> Result<T, StoreError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(name).map_err(StoreError::from)
}

/// A text column holding a checked value (a name, a commit): one that does not parse means
/// the store was changed behind Slipway's back.
fn parsed_column<T>(
    row: &AnyRow,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::names::NameError>,
) -> Result<T, StoreError> {
    let text: String = column(row, name)?;
    parse(&text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
}

/// [`parsed_column`] for a column that may be NULL.
fn parsed_optional_column<T>(
    row: &AnyRow,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, crate::names::NameError>,
) -> Result<Option<T>, StoreError> {
    let text: Option<String> = column(row, name)?;
    text.map(|text| parse(&text).map_err(|e| StoreError::Corrupt(format!("{name}: {e}"))))
        .transpose()
}
