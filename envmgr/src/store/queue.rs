//! The submit queue's rows. Surfaces write what people want (`enqueue`, `request_queue_remove`,
//! `request_queue_retry`, `set_queue_paused`); the queue reconciler writes what happened
//! (`record_entry`, `save_queue_doc`, `record_tree`) through its fenced store, so a replica
//! that lost the queue's lease cannot move an entry.

use sqlx::any::AnyRow;

use super::{column, insert_event, now_ms, Store, StoreError};
use crate::names::{BranchName, CommitSha, EnvName, PrNumber, RepoName};
use crate::queue::machine::EntryState;

/// What a queue entry wants to land: a pull request or a branch of the repo.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Pull(PrNumber),
    Branch(BranchName),
}

impl Change {
    /// The one key of a change within its repo (`pr:42`, `branch:feature-x`).
    pub fn key(&self) -> String {
        match self {
            Change::Pull(n) => format!("pr:{n}"),
            Change::Branch(b) => format!("branch:{b}"),
        }
    }

    /// The env whose timeline tells this change's story (its PR or branch env's name, whether
    /// or not that env exists).
    pub fn env_name(&self, repo: &RepoName) -> EnvName {
        match self {
            Change::Pull(n) => EnvName::for_pull_request(repo, *n),
            Change::Branch(b) => EnvName::for_branch(repo, b),
        }
    }
}

impl Change {
    /// The change with its repo, as people say it: `shop#42`, `shop:feature-x`.
    pub fn label(&self, repo: &RepoName) -> String {
        match self {
            Change::Pull(n) => format!("{repo}#{n}"),
            Change::Branch(b) => format!("{repo}:{b}"),
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Pull(n) => write!(f, "#{n}"),
            Change::Branch(b) => write!(f, "{b}"),
        }
    }
}

/// What a surface asks to enqueue.
#[derive(Debug, Clone)]
pub struct NewQueueEntry {
    pub repo: RepoName,
    pub target: BranchName,
    pub change: Change,
    /// The change's head when it was queued: exactly what lands (a new push takes it out).
    pub head: CommitSha,
    pub title: String,
    pub priority: i64,
    pub actor: String,
}

/// One change in a queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QueueEntry {
    pub id: i64,
    pub repo: RepoName,
    pub target: BranchName,
    pub change: Change,
    pub head: CommitSha,
    pub title: String,
    pub priority: i64,
    pub requested_by: String,
    /// `false` once someone asked for it to leave the queue.
    pub wanted: bool,
    /// Grows with each `queue retry`.
    pub generation: i64,
    pub remove_reason: Option<String>,
    pub state: EntryState,
    pub attempts: i64,
    pub reason: Option<String>,
    pub merged_commit: Option<CommitSha>,
    /// Unix milliseconds.
    pub enqueued_at: i64,
    pub updated_at: i64,
    /// How long its tests took, once it landed.
    pub tested_ms: Option<i64>,
}

impl QueueEntry {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("queue {what}: {e}"));
        let repo = RepoName::parse(&column::<String>(row, "repo")?)
            .map_err(|e| corrupt("repo", e.to_string()))?;
        let change = match (
            column::<Option<i64>>(row, "pr_number")?,
            column::<Option<String>>(row, "branch")?,
        ) {
            (Some(n), _) => {
                Change::Pull(PrNumber::from_i64(n).map_err(|e| corrupt("pr", e.to_string()))?)
            }
            (None, Some(b)) => {
                Change::Branch(BranchName::parse(&b).map_err(|e| corrupt("branch", e.to_string()))?)
            }
            (None, None) => return Err(corrupt("change", "neither PR nor branch".into())),
        };
        let state: String = column(row, "state")?;
        Ok(Self {
            id: column(row, "id")?,
            repo,
            target: BranchName::parse(&column::<String>(row, "target")?)
                .map_err(|e| corrupt("target", e.to_string()))?,
            change,
            head: CommitSha::parse(&column::<String>(row, "head_sha")?)
                .map_err(|e| corrupt("head", e.to_string()))?,
            title: column(row, "title")?,
            priority: column(row, "priority")?,
            requested_by: column(row, "requested_by")?,
            wanted: column::<String>(row, "desired")? == "queued",
            generation: column(row, "generation")?,
            remove_reason: column(row, "remove_reason")?,
            state: EntryState::parse(&state).ok_or_else(|| corrupt("state", state.clone()))?,
            attempts: column(row, "attempts")?,
            reason: column(row, "reason")?,
            merged_commit: column::<Option<String>>(row, "merged_commit")?
                .map(|c| CommitSha::parse(&c))
                .transpose()
                .map_err(|e| corrupt("merged commit", e.to_string()))?,
            enqueued_at: column(row, "enqueued_at")?,
            updated_at: column(row, "updated_at")?,
            tested_ms: column(row, "tested_ms")?,
        })
    }

    /// Still in line (not merged, failed or removed, and nobody asked to take it out).
    pub fn is_live(&self) -> bool {
        self.wanted && self.state.is_live()
    }
}

/// A queue's own row: surface-owned pause, reconciler-owned scheduler state.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueRow {
    pub repo: RepoName,
    pub target: BranchName,
    pub paused: bool,
    pub pause_reason: Option<String>,
    pub paused_by: Option<String>,
    /// The scheduler's state as JSON (`{}` before its first pass).
    pub doc: String,
}

impl QueueRow {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("queue row: {e}"));
        Ok(Self {
            repo: RepoName::parse(&column::<String>(row, "repo")?)
                .map_err(|e| corrupt(e.to_string()))?,
            target: BranchName::parse(&column::<String>(row, "target")?)
                .map_err(|e| corrupt(e.to_string()))?,
            paused: column::<i64>(row, "paused")? != 0,
            pause_reason: column(row, "pause_reason")?,
            paused_by: column(row, "paused_by")?,
            doc: column(row, "doc")?,
        })
    }
}

/// A git tree's test outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeResult {
    pub passed: bool,
    pub run_id: Option<i64>,
    /// Tests that failed and then passed on this tree.
    pub flaky: Vec<String>,
}

/// What the reconciler records about an entry.
#[derive(Debug, Clone, Default)]
pub struct EntryUpdate {
    pub attempts: Option<i64>,
    pub reason: Option<String>,
    pub merged_commit: Option<CommitSha>,
    pub tested_ms: Option<i64>,
}

const ENTRY_COLUMNS: &str = "id, repo, target, pr_number, branch, head_sha, title, priority, requested_by, desired, \
     generation, remove_reason, state, attempts, reason, merged_commit, enqueued_at, updated_at, tested_ms";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.is_unique_violation() || db.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

/// `queue:<repo>/<target>`, the controller key of one queue.
pub fn queue_key(repo: &RepoName, target: &BranchName) -> String {
    format!("{repo}/{target}")
}

/// The queue's row, made on first use.
async fn ensure_queue_row(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    repo: &RepoName,
    target: &BranchName,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO queues (repo, target, updated_at) VALUES ($1, $2, $3) ON CONFLICT (repo, target) DO NOTHING",
    )
    .bind(repo.as_str())
    .bind(target.as_str())
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// The refusal of a second live entry for `change`, naming the entry that holds it.
    async fn already_queued(&self, repo: &RepoName, change: &Change) -> StoreError {
        let holder = match self.live_entry_of(repo, change).await {
            Ok(found) => found.map(|e| e.id).unwrap_or_default(),
            Err(e) => return e,
        };
        StoreError::AlreadyQueued {
            change: change.label(repo),
            entry: holder,
        }
    }

    /// Puts a change in its repo's queue. A change already in line is refused with the
    /// entry that holds it.
    pub async fn enqueue(&self, new: &NewQueueEntry) -> Result<QueueEntry, StoreError> {
        let now = now_ms();
        let (pr, branch) = match &new.change {
            Change::Pull(n) => (Some(n.as_i64()), None),
            Change::Branch(b) => (None, Some(b.to_string())),
        };
        let mut tx = self.pool.begin().await?;
        ensure_queue_row(&mut tx, &new.repo, &new.target, now).await?;
        let inserted = sqlx::query(
            "INSERT INTO queue_entries (repo, target, change_key, pr_number, branch, head_sha, title, priority, \
                 requested_by, desired, state, enqueued_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', 'queued', $10, $10) RETURNING id",
        )
        .bind(new.repo.as_str())
        .bind(new.target.as_str())
        .bind(new.change.key())
        .bind(pr)
        .bind(branch)
        .bind(new.head.as_str())
        .bind(&new.title)
        .bind(new.priority)
        .bind(&new.actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await;
        let id: i64 = match inserted {
            Ok(row) => column(&row, "id")?,
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(self.already_queued(&new.repo, &new.change).await);
            }
            Err(e) => return Err(e.into()),
        };
        insert_event(
            &mut tx,
            new.change.env_name(&new.repo).as_str(),
            now,
            "queue.added",
            None,
            &format!(
                "{} queued as entry {id} for {} at {}{}",
                new.change.label(&new.repo),
                new.target,
                new.head.short(),
                if new.priority != 0 {
                    format!(" (priority {})", new.priority)
                } else {
                    String::new()
                }
            ),
            Some(&new.actor),
        )
        .await?;
        tx.commit().await?;
        self.queue_entry(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("queue entry {id} vanished")))
    }

    pub async fn queue_entry(&self, id: i64) -> Result<Option<QueueEntry>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(QueueEntry::from_row).transpose()
    }

    /// The entry that holds `change` in line now, if any.
    pub async fn live_entry_of(
        &self,
        repo: &RepoName,
        change: &Change,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entries WHERE repo = $1 AND change_key = $2 \
             AND desired = 'queued' AND state IN ('queued', 'testing', 'passed') ORDER BY id DESC LIMIT 1"
        ))
        .bind(repo.as_str())
        .bind(change.key())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(QueueEntry::from_row).transpose()
    }

    /// The newest entry of `change` in `repo`, live or not.
    pub async fn latest_entry_of(
        &self,
        repo: &RepoName,
        change: &Change,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entries WHERE repo = $1 AND change_key = $2 ORDER BY id DESC LIMIT 1"
        ))
        .bind(repo.as_str())
        .bind(change.key())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(QueueEntry::from_row).transpose()
    }

    /// A queue's entries, oldest first: the live ones and those finished in the last
    /// `finished_within_ms`.
    pub async fn queue_entries(
        &self,
        repo: &RepoName,
        target: &BranchName,
        finished_within_ms: i64,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let since = now_ms().saturating_sub(finished_within_ms);
        let rows = sqlx::query(&format!(
            "SELECT {ENTRY_COLUMNS} FROM queue_entries WHERE repo = $1 AND target = $2 \
             AND ((desired = 'queued' AND state IN ('queued', 'testing', 'passed')) OR updated_at >= $3 \
                  OR (desired = 'removed' AND state IN ('queued', 'testing', 'passed'))) \
             ORDER BY id"
        ))
        .bind(repo.as_str())
        .bind(target.as_str())
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(QueueEntry::from_row).collect()
    }

    /// Asks for an entry to leave the queue. `None` when it is not in line any more.
    pub async fn request_queue_remove(
        &self,
        id: i64,
        actor: &str,
        why: &str,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let now = now_ms();
        let Some(entry) = self.queue_entry(id).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE queue_entries SET desired = 'removed', remove_reason = $1, updated_at = $2 \
             WHERE id = $3 AND desired = 'queued' AND state IN ('queued', 'testing', 'passed')",
        )
        .bind(why)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        insert_event(
            &mut tx,
            entry.change.env_name(&entry.repo).as_str(),
            now,
            "queue.removed",
            None,
            &format!(
                "{} leaves the queue: {why}",
                entry.change.label(&entry.repo)
            ),
            Some(actor),
        )
        .await?;
        tx.commit().await?;
        self.queue_entry(id).await
    }

    /// Puts a failed entry back in line (same head); `Ok(None)` when it had not failed.
    pub async fn request_queue_retry(
        &self,
        id: i64,
        actor: &str,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let now = now_ms();
        let Some(entry) = self.queue_entry(id).await? else {
            return Ok(None);
        };
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE queue_entries SET state = 'queued', desired = 'queued', generation = generation + 1, \
                 remove_reason = NULL, updated_at = $1 \
             WHERE id = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await;
        let changed = match changed {
            Ok(done) => done.rows_affected(),
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(self.already_queued(&entry.repo, &entry.change).await);
            }
            Err(e) => return Err(e.into()),
        };
        if changed == 0 {
            return Ok(None);
        }
        insert_event(
            &mut tx,
            entry.change.env_name(&entry.repo).as_str(),
            now,
            "queue.retried",
            None,
            &format!(
                "{} back in the queue as entry {id}",
                entry.change.label(&entry.repo)
            ),
            Some(actor),
        )
        .await?;
        tx.commit().await?;
        self.queue_entry(id).await
    }

    /// Pauses (a reason given) or resumes a queue, creating its row if needed.
    pub async fn set_queue_paused(
        &self,
        repo: &RepoName,
        target: &BranchName,
        pause: Option<&str>,
        actor: &str,
    ) -> Result<QueueRow, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        ensure_queue_row(&mut tx, repo, target, now).await?;
        sqlx::query(
            "UPDATE queues SET paused = $1, pause_reason = $2, paused_by = $3, updated_at = $4 WHERE repo = $5 AND target = $6",
        )
        .bind(pause.is_some() as i64)
        .bind(pause)
        .bind(pause.map(|_| actor))
        .bind(now)
        .bind(repo.as_str())
        .bind(target.as_str())
        .execute(&mut *tx)
        .await?;
        let (kind, message) = match pause {
            Some(why) => (
                "queue.paused",
                format!("queue {repo}/{target} paused: {why} (nothing lands until it is resumed)"),
            ),
            None => ("queue.resumed", format!("queue {repo}/{target} resumed")),
        };
        insert_event(
            &mut tx,
            &format!("{repo}-queue"),
            now,
            kind,
            None,
            &message,
            Some(actor),
        )
        .await?;
        tx.commit().await?;
        self.queue_row(repo, target)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("queue {repo}/{target} vanished")))
    }

    pub async fn queue_row(
        &self,
        repo: &RepoName,
        target: &BranchName,
    ) -> Result<Option<QueueRow>, StoreError> {
        let row = sqlx::query(
            "SELECT repo, target, paused, pause_reason, paused_by, doc FROM queues WHERE repo = $1 AND target = $2",
        )
        .bind(repo.as_str())
        .bind(target.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(QueueRow::from_row).transpose()
    }

    /// Every queue that has a row.
    pub async fn queue_rows(&self) -> Result<Vec<QueueRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT repo, target, paused, pause_reason, paused_by, doc FROM queues ORDER BY repo, target",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(QueueRow::from_row).collect()
    }

    /// Replaces the scheduler's document (fenced: only the queue's lease holder writes it).
    pub async fn save_queue_doc(
        &self,
        repo: &RepoName,
        target: &BranchName,
        doc: &str,
    ) -> Result<(), StoreError> {
        let done = self
            .bind_fence(
                sqlx::query(&format!(
                    "UPDATE queues SET doc = $1, updated_at = $2 WHERE repo = $3 AND target = $4 AND {}",
                    self.fence_clause(5)
                ))
                .bind(doc.to_string())
                .bind(now_ms())
                .bind(repo.as_str().to_string())
                .bind(target.as_str().to_string()),
            )
            .execute(&self.pool)
            .await?;
        self.check_fence(done.rows_affected()).await
    }

    /// Records an entry's new state (fenced), with an event on the change's timeline.
    /// Returns `false` when the entry was already in that state (nothing written).
    pub async fn record_entry(
        &self,
        entry: &QueueEntry,
        state: EntryState,
        update: &EntryUpdate,
        event: Option<(&str, &str)>,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let done = self
            .bind_fence(
                sqlx::query(&format!(
                    "UPDATE queue_entries SET state = $1, attempts = COALESCE($2, attempts), reason = COALESCE($3, reason), \
                         merged_commit = COALESCE($4, merged_commit), tested_ms = COALESCE($5, tested_ms), updated_at = $6 \
                     WHERE id = $7 AND NOT (state = $8 AND attempts = COALESCE($9, attempts)) AND {}",
                    self.fence_clause(10)
                ))
                .bind(state.as_str())
                .bind(update.attempts)
                .bind(update.reason.clone())
                .bind(update.merged_commit.as_ref().map(|c| c.to_string()))
                .bind(update.tested_ms)
                .bind(now)
                .bind(entry.id)
                .bind(state.as_str())
                .bind(update.attempts),
            )
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            drop(tx);
            // Unchanged is fine; a stale lease is not.
            self.check_fence(0).await?;
            return Ok(false);
        }
        if let Some((kind, message)) = event {
            insert_event(
                &mut tx,
                entry.change.env_name(&entry.repo).as_str(),
                now,
                kind,
                None,
                message,
                None,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// A queue-wide event (pause, resume, landing), on the `<repo>-queue` timeline.
    pub async fn record_queue_event(
        &self,
        repo: &RepoName,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_event(
            &mut tx,
            &format!("{repo}-queue"),
            now_ms(),
            kind,
            None,
            message,
            None,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn tree_result(
        &self,
        repo: &RepoName,
        tree: &str,
    ) -> Result<Option<TreeResult>, StoreError> {
        let row = sqlx::query(
            "SELECT passed, run_id, flaky FROM queue_trees WHERE repo = $1 AND tree = $2",
        )
        .bind(repo.as_str())
        .bind(tree)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TreeResult {
                passed: column::<i64>(&r, "passed")? != 0,
                run_id: column(&r, "run_id")?,
                flaky: serde_json::from_str(&column::<String>(&r, "flaky")?)
                    .map_err(|e| StoreError::Corrupt(format!("queue tree flaky: {e}")))?,
            })
        })
        .transpose()
    }

    /// Records that `tree` passed (only passes are kept: a failure may be a flake, and is
    /// re-tested by the scheduler's own retry).
    pub async fn record_tree_passed(
        &self,
        repo: &RepoName,
        tree: &str,
        run_id: i64,
        flaky: &[String],
    ) -> Result<(), StoreError> {
        let flaky = serde_json::to_string(flaky).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO queue_trees (repo, tree, passed, run_id, flaky, tested_at) VALUES ($1, $2, 1, $3, $4, $5) \
             ON CONFLICT (repo, tree) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(tree)
        .bind(run_id)
        .bind(flaky)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Durations (ms) of the repo's recent landed entries' tests, newest first, for ETAs.
    pub async fn recent_queue_test_times(
        &self,
        repo: &RepoName,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT tested_ms FROM queue_entries WHERE repo = $1 AND tested_ms IS NOT NULL ORDER BY id DESC LIMIT $2",
        )
        .bind(repo.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| column(r, "tested_ms")).collect()
    }

    /// Durations (ms) of the repo's recent finished test runs, any env, newest first.
    pub async fn recent_run_durations(
        &self,
        repo: &RepoName,
        limit: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT t.finished_at - t.started_at AS took FROM test_runs t JOIN envs e ON e.name = t.env \
             WHERE e.repo = $1 AND t.started_at IS NOT NULL AND t.finished_at IS NOT NULL \
             ORDER BY t.id DESC LIMIT $2",
        )
        .bind(repo.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| column(r, "took")).collect()
    }
}
