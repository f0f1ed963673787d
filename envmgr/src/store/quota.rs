//! Quotas on new envs: how many envs the installation, a repo and a caller hold, and how
//! much memory the running ones reserve. Checked inside the transaction that would create
//! the env, under a lock (Postgres: a transaction-scoped advisory lock; SQLite: the single
//! writer connection), so two requests can never both take the last slot. A refusal writes
//! nothing.

use std::time::Duration;

use sqlx::Row;

use super::{now_ms, Backend, Phase, Store, StoreError};
use crate::names::{EnvName, RepoName};

/// The caps that apply to one request (`None`: no cap). Built by the engine from
/// [`crate::settings::Quotas`] and the repo's own `max_envs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaLimits {
    pub repo_max_envs: Option<usize>,
    pub max_envs: Option<usize>,
    pub max_envs_per_user: Option<usize>,
    pub max_memory: Option<i64>,
}

impl QuotaLimits {
    pub fn is_unlimited(&self) -> bool {
        self == &QuotaLimits::default()
    }
}

/// Which cap a request ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaScope {
    /// The repo's own `max_envs`.
    Repo(RepoName),
    /// The installation's `max_envs`.
    Installation,
    /// `max_envs_per_user`, for this caller identity.
    User(String),
    /// `max_memory`; `needed` is what the new env is expected to reserve (the last planned
    /// env of its repo), 0 when no env of the repo was planned yet.
    Memory { needed: i64 },
}

/// A refused request, with the numbers people need to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRefusal {
    pub scope: QuotaScope,
    /// Envs (or bytes, for memory) held now ...
    pub used: i64,
    /// ... of this many allowed.
    pub limit: i64,
    /// The env in the same scope untouched the longest, and for how long (since its last
    /// recorded change).
    pub oldest_idle: Option<(EnvName, Duration)>,
}

impl std::fmt::Display for QuotaRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.scope {
            QuotaScope::Repo(repo) => write!(f, "{repo} has {} of {} envs", self.used, self.limit)?,
            QuotaScope::Installation => {
                write!(f, "Slipway has {} of {} envs", self.used, self.limit)?
            }
            QuotaScope::User(user) => write!(f, "{user} has {} of {} envs", self.used, self.limit)?,
            QuotaScope::Memory { needed } => {
                write!(
                    f,
                    "running envs reserve {} of {} memory",
                    format_bytes(self.used),
                    format_bytes(self.limit)
                )?;
                if *needed > 0 {
                    write!(f, " and a new env needs about {}", format_bytes(*needed))?;
                }
            }
        }
        if let Some((env, idle)) = &self.oldest_idle {
            write!(f, "; the oldest idle is {env}, idle {}", format_idle(*idle))?;
        }
        Ok(())
    }
}

/// Whether an env in `phase` reserves its memory: envs that run or are on their way to
/// running do; failed, deleted and sleeping ones hold no running containers to speak of. Exhaustive on purpose: a new phase must decide.
pub fn counts_for_memory(phase: Phase) -> bool {
    match phase {
        Phase::Pending
        | Phase::Fetching
        | Phase::Building
        | Phase::Starting
        | Phase::Ready
        | Phase::Degraded => true,
        Phase::Failed | Phase::Deleting | Phase::Deleted | Phase::Sleeping => false,
    }
}

/// `3 d`, `5 h`, `12 min`, `40 s`: the largest whole unit.
pub fn format_idle(idle: Duration) -> String {
    let secs = idle.as_secs();
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

fn format_bytes(bytes: i64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

/// One live env as the quota check sees it.
struct Held {
    name: String,
    repo: String,
    requested_by: String,
    phase: Option<Phase>,
    updated_at: i64,
    memory_bytes: i64,
    /// A submit-queue candidate (a commit Slipway made): exempt from the per-user cap.
    candidate: bool,
}

/// An arbitrary constant naming the quota lock among Postgres advisory locks.
const QUOTA_LOCK: i64 = 0x736c_6970_7175_6f74;

impl Store {
    /// Takes the quota lock for the rest of `tx` and checks whether `name`, asked for by
    /// `actor` in `repo`, fits. An env that is already wanted (`desired = running`) always
    /// fits: an `up` of it moves it, it makes nothing new.
    pub(super) async fn check_quota(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        name: &EnvName,
        repo: &RepoName,
        actor: &str,
        limits: &QuotaLimits,
    ) -> Result<Option<QuotaRefusal>, StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(QUOTA_LOCK)
                .execute(&mut **tx)
                .await?;
        }
        let rows = sqlx::query(
            "SELECT name, repo, requested_by, phase, updated_at, memory_bytes, pr_number, want_commit \
             FROM envs WHERE desired = 'running'",
        )
        .fetch_all(&mut **tx)
        .await?;
        let mut held = Vec::with_capacity(rows.len());
        for row in &rows {
            let phase: String = row.try_get("phase")?;
            let pr_number: Option<i64> = row.try_get("pr_number")?;
            let want_commit: Option<String> = row.try_get("want_commit")?;
            held.push(Held {
                name: row.try_get("name")?,
                repo: row.try_get("repo")?,
                requested_by: row.try_get("requested_by")?,
                phase: Phase::parse(&phase),
                updated_at: row.try_get("updated_at")?,
                memory_bytes: row.try_get("memory_bytes")?,
                candidate: pr_number.is_none() && want_commit.is_some(),
            });
        }
        if held.iter().any(|env| env.name == name.as_str()) {
            return Ok(None);
        }
        let now = now_ms();
        let refusal = |scope: QuotaScope, used: i64, limit: i64, among: &[&Held]| {
            let oldest_idle = among
                .iter()
                .min_by_key(|env| (env.updated_at, env.name.as_str()))
                .and_then(|env| {
                    let idle = Duration::from_millis((now - env.updated_at).max(0) as u64);
                    EnvName::parse(&env.name).ok().map(|name| (name, idle))
                });
            QuotaRefusal {
                scope,
                used,
                limit,
                oldest_idle,
            }
        };
        let count_cap = |cap: Option<usize>, among: Vec<&Held>, scope: QuotaScope| {
            let cap = cap?;
            let cap = i64::try_from(cap).unwrap_or(i64::MAX);
            let used = among.len() as i64;
            (used >= cap).then(|| refusal(scope, used, cap, &among))
        };
        let repo_envs: Vec<&Held> = held.iter().filter(|e| e.repo == repo.as_str()).collect();
        if let Some(refused) = count_cap(
            limits.repo_max_envs,
            repo_envs,
            QuotaScope::Repo(repo.clone()),
        ) {
            return Ok(Some(refused));
        }
        if let Some(refused) = count_cap(
            limits.max_envs,
            held.iter().collect(),
            QuotaScope::Installation,
        ) {
            return Ok(Some(refused));
        }
        let mine: Vec<&Held> = held
            .iter()
            .filter(|e| !e.candidate && e.requested_by == actor)
            .collect();
        if let Some(refused) = count_cap(
            limits.max_envs_per_user,
            mine,
            QuotaScope::User(actor.to_string()),
        ) {
            return Ok(Some(refused));
        }
        if let Some(max_memory) = limits.max_memory {
            let running: Vec<&Held> = held
                .iter()
                .filter(|e| e.phase.is_some_and(counts_for_memory))
                .collect();
            let used: i64 = running.iter().map(|e| e.memory_bytes).sum();
            // The new env's size is only known once its compose file is planned: expect
            // what the repo's last planned env reserved.
            let needed: i64 = sqlx::query(
                "SELECT memory_bytes FROM envs WHERE repo = $1 AND memory_bytes > 0 \
                 ORDER BY updated_at DESC LIMIT 1",
            )
            .bind(repo.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .map(|row| row.try_get("memory_bytes"))
            .transpose()?
            .unwrap_or(0);
            if used >= max_memory || used.saturating_add(needed) > max_memory {
                return Ok(Some(refusal(
                    QuotaScope::Memory { needed },
                    used,
                    max_memory,
                    &running,
                )));
            }
        }
        Ok(None)
    }

    /// The memory `name` reserves (its services' limits summed), written at each deploy.
    pub async fn record_memory(&self, name: &EnvName, bytes: i64) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE envs SET memory_bytes = $1 WHERE name = $2 AND {}",
            self.fence_clause(3)
        );
        let query = sqlx::query(&sql).bind(bytes).bind(name.as_str());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }
}
