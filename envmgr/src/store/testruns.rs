//! Integration test runs: requested by a surface (or automatically when an env becomes
//! Ready), executed by the test runner, reported to GitHub and chat.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;

use super::{
    column, insert_event, now_ms, parsed_column, parsed_optional_column, Store, StoreError,
};
use crate::names::{CommitSha, EnvName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Passed,
    Failed,
    TimedOut,
    /// The run could not be carried out (e.g. no test service, image missing).
    Error,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Error => "error",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Passed,
            RunStatus::Failed,
            RunStatus::TimedOut,
            RunStatus::Error,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

/// Why a run was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunTrigger {
    /// The env became Ready at a new commit.
    Auto,
    /// Someone asked (`slipway test`, a chat or PR command, the API).
    Manual,
}

impl RunTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RunTrigger::Auto => "auto",
            RunTrigger::Manual => "manual",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [RunTrigger::Auto, RunTrigger::Manual]
            .into_iter()
            .find(|t| t.as_str() == text)
    }
}

/// One test case's outcome, from the suite's JUnit report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    pub name: String,
    /// passed, failed, errored or skipped.
    pub outcome: String,
    pub duration_ms: Option<u64>,
    pub message: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestRun {
    pub id: i64,
    pub env: EnvName,
    pub commit: Option<CommitSha>,
    pub trigger: RunTrigger,
    pub requested_by: String,
    pub failed_only: bool,
    pub status: RunStatus,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub exit_code: Option<i64>,
    /// One line: "2 of 14 tests failed", "killed: out of memory", ...
    pub headline: Option<String>,
    pub results: Vec<TestResult>,
    pub snippet_check: Option<String>,
    pub snippet_comment: Option<String>,
    pub snippet_chat: Option<String>,
    #[serde(skip)]
    pub log_path: Option<String>,
    #[serde(skip)]
    pub check_run_id: Option<i64>,
    #[serde(skip)]
    pub check_state: Option<String>,
}

impl TestRun {
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at? - self.started_at?)
    }

    pub fn failed_tests(&self) -> impl Iterator<Item = &TestResult> {
        self.results
            .iter()
            .filter(|r| r.outcome == "failed" || r.outcome == "errored")
    }

    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        let status: String = column(row, "status")?;
        let trigger: String = column(row, "trigger_kind")?;
        Ok(Self {
            id: column(row, "id")?,
            env: parsed_column(row, "env", EnvName::parse)?,
            commit: parsed_optional_column(row, "commit_sha", CommitSha::parse)?,
            trigger: RunTrigger::parse(&trigger)
                .ok_or_else(|| StoreError::Corrupt(format!("run trigger {trigger}")))?,
            requested_by: column(row, "requested_by")?,
            failed_only: column::<i64>(row, "failed_only")? != 0,
            status: RunStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("run status {status}")))?,
            created_at: column(row, "created_at")?,
            started_at: column(row, "started_at")?,
            finished_at: column(row, "finished_at")?,
            exit_code: column(row, "exit_code")?,
            headline: column(row, "headline")?,
            results: serde_json::from_str(&column::<String>(row, "results")?)
                .map_err(|e| StoreError::Corrupt(format!("run results: {e}")))?,
            snippet_check: column(row, "snippet_check")?,
            snippet_comment: column(row, "snippet_comment")?,
            snippet_chat: column(row, "snippet_chat")?,
            log_path: column(row, "log_path")?,
            check_run_id: column(row, "check_run_id")?,
            check_state: column(row, "check_state")?,
        })
    }
}

/// What a finished run found.
#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    pub status: Option<RunStatus>,
    pub exit_code: Option<i64>,
    pub headline: String,
    pub results: Vec<TestResult>,
    pub snippet_check: Option<String>,
    pub snippet_comment: Option<String>,
    pub snippet_chat: Option<String>,
    pub log_path: Option<String>,
}

const RUN_COLUMNS: &str = "id, env, commit_sha, trigger_kind, requested_by, failed_only, status, created_at, started_at, \
     finished_at, exit_code, headline, results, snippet_check, snippet_comment, snippet_chat, log_path, check_run_id, check_state";

impl Store {
    /// Queues a run of the env's tests.
    pub async fn insert_run(
        &self,
        env: &EnvName,
        commit: Option<&CommitSha>,
        trigger: RunTrigger,
        actor: &str,
        failed_only: bool,
    ) -> Result<TestRun, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "INSERT INTO test_runs (env, commit_sha, trigger_kind, requested_by, failed_only, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', $6) RETURNING id",
        )
        .bind(env.as_str())
        .bind(commit.map(CommitSha::as_str))
        .bind(trigger.as_str())
        .bind(actor)
        .bind(failed_only as i64)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = column(&row, "id")?;
        let what = if failed_only { "failed tests" } else { "tests" };
        insert_event(
            &mut tx,
            env.as_str(),
            now,
            "tests",
            None,
            &format!("run {id}: {what} queued ({})", trigger.as_str()),
            Some(actor),
        )
        .await?;
        tx.commit().await?;
        self.changed(env);
        self.get_run(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("run {id} vanished")))
    }

    pub async fn get_run(&self, id: i64) -> Result<Option<TestRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM test_runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(TestRun::from_row).transpose()
    }

    /// The env's runs, newest first.
    pub async fn runs(&self, env: &EnvName, limit: i64) -> Result<Vec<TestRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM test_runs WHERE env = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(env.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TestRun::from_row).collect()
    }

    /// Queued runs, oldest first.
    /// The env's queued runs, oldest first.
    pub async fn queued_runs(&self, env: &EnvName) -> Result<Vec<TestRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM test_runs WHERE status = 'queued' AND env = $1 ORDER BY id"
        ))
        .bind(env.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TestRun::from_row).collect()
    }

    /// Envs with a run queued or marked running.
    pub async fn envs_with_open_runs(&self) -> Result<Vec<EnvName>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT env FROM test_runs WHERE status IN ('queued', 'running') ORDER BY env",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parsed_column(r, "env", EnvName::parse))
            .collect()
    }

    /// Marks a queued run running; `false` if it was not queued any more.
    pub async fn start_run(&self, id: i64, commit: Option<&CommitSha>) -> Result<bool, StoreError> {
        let changed = sqlx::query("UPDATE test_runs SET status = 'running', started_at = $1, commit_sha = COALESCE($2, commit_sha) WHERE id = $3 AND status = 'queued'")
            .bind(now_ms())
            .bind(commit.map(CommitSha::as_str))
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if let Some(run) = self.get_run(id).await? {
            self.changed(&run.env);
        }
        Ok(changed > 0)
    }

    /// Records a finished run and its event.
    pub async fn finish_run(&self, id: i64, outcome: &RunOutcome) -> Result<(), StoreError> {
        let now = now_ms();
        let status = outcome.status.unwrap_or(RunStatus::Error);
        let results = serde_json::to_string(&outcome.results)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE test_runs SET status = $1, finished_at = $2, exit_code = $3, headline = $4, results = $5, \
                 snippet_check = $6, snippet_comment = $7, snippet_chat = $8, log_path = $9 \
             WHERE id = $10 RETURNING env",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(outcome.exit_code)
        .bind(&outcome.headline)
        .bind(results)
        .bind(&outcome.snippet_check)
        .bind(&outcome.snippet_comment)
        .bind(&outcome.snippet_chat)
        .bind(&outcome.log_path)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(()) };
        let env = parsed_column(&row, "env", EnvName::parse)?;
        let message = format!(
            "run {id}: tests {}: {}",
            status.as_str().replace('_', " "),
            outcome.headline
        );
        insert_event(&mut tx, env.as_str(), now, "tests", None, &message, None).await?;
        tx.commit().await?;
        self.changed(&env);
        Ok(())
    }

    /// Puts the env's runs marked running back in the queue: called under the env's
    /// `tests` lease, when nothing can be running them any more.
    pub async fn requeue_interrupted_runs(&self, env: &EnvName) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE test_runs SET status = 'queued', started_at = NULL WHERE status = 'running' AND env = $1",
        )
        .bind(env.as_str())
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    pub async fn record_check_run(
        &self,
        id: i64,
        check_run_id: i64,
        state: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE test_runs SET check_run_id = $1, check_state = $2 WHERE id = $3")
            .bind(check_run_id)
            .bind(state)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Finished runs of `env` beyond the newest `keep`, whose logs may be deleted.
    pub async fn runs_past_retention(
        &self,
        env: &EnvName,
        keep: i64,
    ) -> Result<Vec<TestRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM test_runs WHERE env = $1 AND log_path IS NOT NULL ORDER BY id DESC LIMIT 100000 OFFSET $2"
        ))
        .bind(env.as_str())
        .bind(keep)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(TestRun::from_row).collect()
    }

    pub async fn forget_run_log(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE test_runs SET log_path = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
