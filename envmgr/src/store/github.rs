//! What the GitHub surface keeps: webhook deliveries (stored before they are acknowledged,
//! so none is lost or handled twice) and one row per pull request with what Slipway last
//! posted back, so reporting is idempotent.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{column, now_ms, parsed_column, parsed_optional_column, Store, StoreError};
use crate::names::{CommitSha, EnvName, PrNumber, RepoName};

/// One stored webhook delivery awaiting processing.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub event: String,
    pub payload: String,
}

/// Whether a pull request is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    Open,
    Closed,
}

impl PullState {
    pub fn as_str(self) -> &'static str {
        match self {
            PullState::Open => "open",
            PullState::Closed => "closed",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [PullState::Open, PullState::Closed]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A pull request as Slipway knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullRow {
    pub repo: RepoName,
    pub number: PrNumber,
    /// `owner/name` on GitHub.
    pub github_repo: String,
    pub env: EnvName,
    pub state: PullState,
    pub head_sha: CommitSha,
    pub head_ref: String,
    pub is_fork: bool,
    pub is_draft: bool,
    /// Opted out with the `slipway:skip` label.
    pub skip: bool,
    pub approved_sha: Option<CommitSha>,
    pub approved_by: Option<String>,
    pub comment_id: Option<i64>,
    pub comment_body: Option<String>,
    pub deployment_id: Option<i64>,
    pub deployment_sha: Option<CommitSha>,
    pub deployment_state: Option<String>,
    pub status_sha: Option<CommitSha>,
    pub status_state: Option<String>,
    /// The deletion deadline of the env last told on the PR (see [`Store::record_pull_warning`]).
    pub warned_for: Option<i64>,
}

impl PullRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let state: String = column(row, "state")?;
        Ok(Self {
            repo: parsed_column(row, "repo", RepoName::parse)?,
            number: PrNumber::from_i64(column(row, "number")?)
                .map_err(|e| StoreError::Corrupt(format!("number: {e}")))?,
            github_repo: column(row, "github_repo")?,
            env: parsed_column(row, "env", EnvName::parse)?,
            state: PullState::parse(&state)
                .ok_or_else(|| StoreError::Corrupt(format!("pull request state {state}")))?,
            head_sha: parsed_column(row, "head_sha", CommitSha::parse)?,
            head_ref: column(row, "head_ref")?,
            is_fork: column::<i64>(row, "is_fork")? != 0,
            is_draft: column::<i64>(row, "is_draft")? != 0,
            skip: column::<i64>(row, "skip")? != 0,
            approved_sha: parsed_optional_column(row, "approved_sha", CommitSha::parse)?,
            approved_by: column(row, "approved_by")?,
            comment_id: column(row, "comment_id")?,
            comment_body: column(row, "comment_body")?,
            deployment_id: column(row, "deployment_id")?,
            deployment_sha: parsed_optional_column(row, "deployment_sha", CommitSha::parse)?,
            deployment_state: column(row, "deployment_state")?,
            status_sha: parsed_optional_column(row, "status_sha", CommitSha::parse)?,
            status_state: column(row, "status_state")?,
            warned_for: column(row, "warned_for")?,
        })
    }

    /// Fork PRs run only once someone with write access approved their current head.
    pub fn approved(&self) -> bool {
        !self.is_fork || self.approved_sha.as_ref() == Some(&self.head_sha)
    }
}

/// How long a handled delivery's id is kept (for redelivery dedup) after its body is gone:
/// ids are small, and GitHub redelivers only recent deliveries.
pub const DELIVERY_ID_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

const PULL_COLUMNS: &str = "repo, number, github_repo, env, state, head_sha, head_ref, is_fork, is_draft, skip, \
     approved_sha, approved_by, comment_id, comment_body, deployment_id, deployment_sha, deployment_state, \
     status_sha, status_state, warned_for";

impl Store {
    /// Stores a delivery; `false` when one with this id was stored before (a redelivery).
    pub async fn insert_delivery(
        &self,
        id: &str,
        event: &str,
        payload: &str,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO webhook_deliveries (id, event, received_at, payload) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(event)
        .bind(now_ms())
        .bind(payload)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted > 0)
    }

    /// Ids of the deliveries not yet acted on, oldest first: cheap to list often, the bodies
    /// are read one by one with [`Store::pending_delivery`].
    pub async fn pending_delivery_ids(&self, limit: i64) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM webhook_deliveries WHERE processed_at IS NULL \
             ORDER BY received_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| column(r, "id")).collect()
    }

    /// A delivery not yet acted on; `None` once it is handled (or when the id is unknown).
    pub async fn pending_delivery(&self, id: &str) -> Result<Option<Delivery>, StoreError> {
        let row = sqlx::query(
            "SELECT id, event, payload FROM webhook_deliveries WHERE id = $1 AND processed_at IS NULL",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Delivery {
                id: column(&r, "id")?,
                event: column(&r, "event")?,
                payload: column(&r, "payload")?,
            })
        })
        .transpose()
    }

    /// Marks a delivery handled, once. Through a store fenced by a lease (see
    /// [`Store::fenced`]), a holder whose lease is gone changes nothing and gets
    /// [`StoreError::StaleLease`].
    pub async fn finish_delivery(&self, id: &str, outcome: &str) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE webhook_deliveries SET processed_at = $1, outcome = $2 \
             WHERE id = $3 AND processed_at IS NULL AND {}",
            self.fence_clause(4)
        );
        let query = sqlx::query(&sql).bind(now_ms()).bind(outcome).bind(id);
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// Bounds what deliveries keep: the body (up to 10 MB) of a delivery handled and received
    /// before `keep_bodies_for` ago is cleared, and the whole row (its id, kept for
    /// redelivery dedup) goes after [`DELIVERY_ID_RETENTION`]. Unhandled deliveries keep
    /// everything: the processor still needs them. Returns (bodies cleared, rows removed).
    pub async fn prune_deliveries(
        &self,
        keep_bodies_for: std::time::Duration,
    ) -> Result<(u64, u64), StoreError> {
        let now = now_ms();
        let ago = |d: std::time::Duration| {
            now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        };
        let cleared = sqlx::query(
            "UPDATE webhook_deliveries SET payload = '' \
             WHERE processed_at IS NOT NULL AND received_at < $1 AND payload <> ''",
        )
        .bind(ago(keep_bodies_for))
        .execute(&self.pool)
        .await?
        .rows_affected();
        let removed = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE processed_at IS NOT NULL AND received_at < $1",
        )
        .bind(ago(DELIVERY_ID_RETENTION.max(keep_bodies_for)))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok((cleared, removed))
    }

    /// The body of a stored delivery (`""` once pruned), `None` when the id is not kept.
    pub async fn delivery_payload(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT payload FROM webhook_deliveries WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| column(&r, "payload")).transpose()
    }

    /// How many deliveries are stored, and how many of them were processed.
    pub async fn delivery_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS total, COUNT(processed_at) AS processed FROM webhook_deliveries",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((column(&row, "total")?, column(&row, "processed")?))
    }

    /// Records the latest facts about a PR from GitHub, keeping what Slipway posted and
    /// approvals. Returns the row as stored.
    pub async fn upsert_pull(&self, pull: &PullRow) -> Result<PullRow, StoreError> {
        sqlx::query(
            "INSERT INTO pull_requests (repo, number, github_repo, env, state, head_sha, head_ref, is_fork, \
                 is_draft, skip, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (repo, number) DO UPDATE SET \
                 github_repo = excluded.github_repo, state = excluded.state, head_sha = excluded.head_sha, \
                 head_ref = excluded.head_ref, is_fork = excluded.is_fork, is_draft = excluded.is_draft, \
                 skip = excluded.skip, updated_at = excluded.updated_at",
        )
        .bind(pull.repo.as_str())
        .bind(pull.number.as_i64())
        .bind(&pull.github_repo)
        .bind(pull.env.as_str())
        .bind(pull.state.as_str())
        .bind(pull.head_sha.as_str())
        .bind(&pull.head_ref)
        .bind(pull.is_fork as i64)
        .bind(pull.is_draft as i64)
        .bind(pull.skip as i64)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.get_pull(&pull.repo, pull.number)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "pull request {}#{} vanished",
                    pull.repo, pull.number
                ))
            })
    }

    pub async fn get_pull(
        &self,
        repo: &RepoName,
        number: PrNumber,
    ) -> Result<Option<PullRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PULL_COLUMNS} FROM pull_requests WHERE repo = $1 AND number = $2"
        ))
        .bind(repo.as_str())
        .bind(number.as_i64())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PullRow::from_row).transpose()
    }

    pub async fn pull_for_env(&self, env: &EnvName) -> Result<Option<PullRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PULL_COLUMNS} FROM pull_requests WHERE env = $1"
        ))
        .bind(env.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(PullRow::from_row).transpose()
    }

    /// PRs of `repo` Slipway believes open.
    pub async fn open_pulls(&self, repo: &RepoName) -> Result<Vec<PullRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PULL_COLUMNS} FROM pull_requests WHERE repo = $1 AND state = 'open' ORDER BY number"
        ))
        .bind(repo.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(PullRow::from_row).collect()
    }

    pub async fn approve_pull(
        &self,
        repo: &RepoName,
        number: PrNumber,
        sha: &CommitSha,
        by: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE pull_requests SET approved_sha = $1, approved_by = $2, updated_at = $3 WHERE repo = $4 AND number = $5")
            .bind(sha.as_str())
            .bind(by)
            .bind(now_ms())
            .bind(repo.as_str())
            .bind(number.as_i64())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// What Slipway last posted to a PR: its sticky comment. This and the other
    /// `record_pull_*` writes are fenced when the store is (see [`Store::fenced`]).
    pub async fn record_pull_comment(
        &self,
        repo: &RepoName,
        number: PrNumber,
        id: i64,
        body: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE pull_requests SET comment_id = $1, comment_body = $2 \
             WHERE repo = $3 AND number = $4 AND {}",
            self.fence_clause(5)
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(body)
            .bind(repo.as_str())
            .bind(number.as_i64());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    /// The PR was told its env goes at `deadline` (unix ms).
    pub async fn record_pull_warning(
        &self,
        repo: &RepoName,
        number: PrNumber,
        deadline: i64,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE pull_requests SET warned_for = $1 WHERE repo = $2 AND number = $3 AND {}",
            self.fence_clause(4)
        );
        let query = sqlx::query(&sql)
            .bind(deadline)
            .bind(repo.as_str())
            .bind(number.as_i64());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    pub async fn record_pull_deployment(
        &self,
        repo: &RepoName,
        number: PrNumber,
        id: Option<i64>,
        sha: Option<&CommitSha>,
        state: Option<&str>,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE pull_requests SET deployment_id = $1, deployment_sha = $2, deployment_state = $3 \
             WHERE repo = $4 AND number = $5 AND {}",
            self.fence_clause(6)
        );
        let query = sqlx::query(&sql)
            .bind(id)
            .bind(sha.map(CommitSha::as_str))
            .bind(state)
            .bind(repo.as_str())
            .bind(number.as_i64());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }

    pub async fn record_pull_status(
        &self,
        repo: &RepoName,
        number: PrNumber,
        sha: &CommitSha,
        state: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE pull_requests SET status_sha = $1, status_state = $2 \
             WHERE repo = $3 AND number = $4 AND {}",
            self.fence_clause(5)
        );
        let query = sqlx::query(&sql)
            .bind(sha.as_str())
            .bind(state)
            .bind(repo.as_str())
            .bind(number.as_i64());
        let done = self.bind_fence(query).execute(&self.pool).await?;
        self.check_fence(done.rows_affected()).await
    }
}
