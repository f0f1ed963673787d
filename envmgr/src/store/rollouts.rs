//! Rollouts and release channels in the store (tables `rollouts`, `channels`, and the
//! `role` of release and canary envs). Surfaces write intent (a new rollout, pause, resume,
//! promote, rollback, approve, a freeze), each with an event (who asked) on the
//! release env's timeline in the same transaction; the rollout reconciler writes what
//! happened ([`Store::update_rollout`]), fenced by its lease on the rollout, each change
//! with its event in the same transaction. One live rollout per repo and channel: a new
//! one supersedes the old in the transaction that creates it.

use sqlx::any::AnyRow;

use super::{
    column, insert_event, now_ms, parsed_column, parsed_optional_column, Store, StoreError,
    UpRequest, SHARED_TTL,
};
use crate::names::{BranchName, CommitSha, EnvName, RepoName};
use crate::rollout::{Rollout, RolloutState, FULL_WEIGHT};

/// What an env is to the rollouts (column `envs.role`): the env reconciler plans these
/// differently from branch envs and never runs their integration tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvRole {
    /// The long-lived env serving release channel `channel`: every service of the compose
    /// file (shared ones included), at the channel's version.
    Release { channel: String },
    /// The env running rollout `rollout`'s canary: the services whose spec differs from the
    /// release env's, plus the entry service; the rest are the release env's, reached by name.
    Canary { rollout: i64 },
}

impl EnvRole {
    pub fn to_column(&self) -> String {
        match self {
            EnvRole::Release { channel } => format!("release:{channel}"),
            EnvRole::Canary { rollout } => format!("canary:{rollout}"),
        }
    }

    pub fn from_column(text: &str) -> Option<Self> {
        match text.split_once(':')? {
            ("release", channel) if !channel.is_empty() => Some(EnvRole::Release {
                channel: channel.to_string(),
            }),
            ("canary", id) => id.parse().ok().map(|rollout| EnvRole::Canary { rollout }),
            _ => None,
        }
    }

    /// How the env's timeline names what was asked for.
    pub fn describe(&self) -> String {
        match self {
            EnvRole::Release { channel } => format!("release of channel {channel}"),
            EnvRole::Canary { rollout } => format!("canary of rollout {rollout}"),
        }
    }
}

/// A rollout to record (see [`Store::create_rollout`]).
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub repo: RepoName,
    pub channel: String,
    pub release_env: EnvName,
    pub canary_env: EnvName,
    pub from_commit: Option<CommitSha>,
    pub to_commit: CommitSha,
    /// What was asked for (`queue`, a branch or commit as typed, `promotion from staging`).
    pub source: String,
    pub requested_by: String,
    /// The finished rollout whose version this one carries on to the next channel: marked
    /// handed on in the same transaction.
    pub handed_on_from: Option<i64>,
}

/// A surface's request on a live rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutRequest {
    Pause,
    Resume,
    /// Skip the remaining steps (still through the safe swap at 100%).
    Promote,
    Rollback,
    /// Approves entering step `step` (0 is the first).
    Approve {
        step: usize,
    },
}

impl RolloutRequest {
    /// The command's words, for the audit log and the timeline.
    pub fn words(self) -> String {
        match self {
            RolloutRequest::Pause => "rollout pause".into(),
            RolloutRequest::Resume => "rollout resume".into(),
            RolloutRequest::Promote => "rollout promote".into(),
            RolloutRequest::Rollback => "rollout rollback".into(),
            RolloutRequest::Approve { .. } => "rollout approve".into(),
        }
    }
}

/// What the rollout reconciler changes in one write; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct RolloutUpdate {
    pub state: Option<RolloutState>,
    pub step: Option<usize>,
    pub canary_weight: Option<u16>,
    pub step_started_at: Option<Option<i64>>,
    pub reason: Option<Option<String>>,
    pub from_commit: Option<Option<CommitSha>>,
    pub comparison: Option<Option<serde_json::Value>>,
    pub decision: Option<Option<serde_json::Value>>,
    pub metric_error_since: Option<Option<i64>>,
    pub finished_at: Option<Option<i64>>,
    pub handed_on_at: Option<Option<i64>>,
    /// Clears `promote_asked` (the request was acted on).
    pub promote_done: bool,
    /// The channel's version becomes this (the rollout reached 100%), in the same transaction.
    pub channel_version: Option<CommitSha>,
    /// An event on the release env's timeline: (kind, message).
    pub event: Option<(String, String)>,
}

/// A release channel as stored: its version and freeze.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChannelRow {
    pub repo: RepoName,
    pub channel: String,
    pub version: Option<CommitSha>,
    pub reached_at: Option<i64>,
    pub frozen_reason: Option<String>,
    pub frozen_by: Option<String>,
    pub frozen_at: Option<i64>,
}

const ROLLOUT_COLUMNS: &str = "id, repo, channel, release_env, canary_env, from_commit, to_commit, source, state, \
     step, canary_weight, step_started_at, reason, paused, promote_asked, rollback_asked, approved_by, \
     approved_step, comparison, decision, metric_error_since, requested_by, created_at, updated_at, finished_at, handed_on_at";

/// Live rollouts: not finished.
const LIVE: &str = "state NOT IN ('rolled_back', 'done', 'superseded')";

/// One bound value of a statement built column by column.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
}

fn json_text(value: &Option<serde_json::Value>) -> Option<String> {
    value.as_ref().map(|v| v.to_string())
}

fn rollout_from_row(row: &AnyRow) -> Result<Rollout, StoreError> {
    let state_text: String = column(row, "state")?;
    let state = RolloutState::parse(&state_text)
        .ok_or_else(|| StoreError::Corrupt(format!("rollout state {state_text:?}")))?;
    let json = |name: &str| -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = column(row, name)?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
        })
        .transpose()
    };
    let step: i64 = column(row, "step")?;
    let weight: i64 = column(row, "canary_weight")?;
    let approved_step: Option<i64> = column(row, "approved_step")?;
    Ok(Rollout {
        id: column(row, "id")?,
        repo: parsed_column(row, "repo", RepoName::parse)?,
        channel: column(row, "channel")?,
        release_env: parsed_column(row, "release_env", EnvName::parse)?,
        canary_env: parsed_column(row, "canary_env", EnvName::parse)?,
        from_commit: parsed_optional_column(row, "from_commit", CommitSha::parse)?,
        to_commit: parsed_column(row, "to_commit", CommitSha::parse)?,
        source: column(row, "source")?,
        state,
        step: usize::try_from(step.max(0)).unwrap_or_default(),
        canary_weight: u16::try_from(weight.clamp(0, i64::from(FULL_WEIGHT))).unwrap_or_default(),
        step_started_at: column(row, "step_started_at")?,
        reason: column(row, "reason")?,
        paused: column::<i64>(row, "paused")? != 0,
        promote_asked: column::<i64>(row, "promote_asked")? != 0,
        rollback_asked: column(row, "rollback_asked")?,
        approved_by: column(row, "approved_by")?,
        approved_step: approved_step.and_then(|s| usize::try_from(s).ok()),
        comparison: json("comparison")?,
        decision: json("decision")?,
        metric_error_since: column(row, "metric_error_since")?,
        requested_by: column(row, "requested_by")?,
        created_at: column(row, "created_at")?,
        updated_at: column(row, "updated_at")?,
        finished_at: column(row, "finished_at")?,
    })
}

fn channel_from_row(row: &AnyRow) -> Result<ChannelRow, StoreError> {
    Ok(ChannelRow {
        repo: parsed_column(row, "repo", RepoName::parse)?,
        channel: column(row, "channel")?,
        version: parsed_optional_column(row, "version", CommitSha::parse)?,
        reached_at: column(row, "reached_at")?,
        frozen_reason: column(row, "frozen_reason")?,
        frozen_by: column(row, "frozen_by")?,
        frozen_at: column(row, "frozen_at")?,
    })
}

impl Store {
    /// Records a new rollout (state `pending`) and returns it with the id of the live
    /// rollout of the same channel it superseded, if any: that one is marked `superseded`
    /// with weight 0 in the same transaction (its canary env is taken over by this one).
    pub async fn create_rollout(
        &self,
        new: &NewRollout,
    ) -> Result<(Rollout, Vec<i64>), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let live = sqlx::query(&format!(
            "SELECT id, to_commit FROM rollouts WHERE repo = $1 AND channel = $2 AND {LIVE}"
        ))
        .bind(new.repo.as_str())
        .bind(&new.channel)
        .fetch_all(&mut *tx)
        .await?;
        let mut superseded = Vec::new();
        for row in &live {
            let id: i64 = column(row, "id")?;
            let commit: String = column(row, "to_commit")?;
            sqlx::query(&format!(
                "UPDATE rollouts SET state = 'superseded', canary_weight = 0, finished_at = $1, updated_at = $1, \
                 reason = $2 WHERE id = $3 AND {LIVE}"
            ))
            .bind(now)
            .bind(format!("superseded by a release of {}", new.to_commit.short()))
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let message = format!(
                "rollout {id} of {} in {} superseded by a release of {} ({})",
                commit.get(..7).unwrap_or(&commit),
                new.channel,
                new.to_commit.short(),
                new.source
            );
            insert_event(
                &mut tx,
                new.release_env.as_str(),
                now,
                "rollout.superseded",
                None,
                &message,
                Some(&new.requested_by),
            )
            .await?;
            superseded.push(id);
        }
        let row = sqlx::query(
            "INSERT INTO rollouts (repo, channel, release_env, canary_env, from_commit, to_commit, source, state, \
             step, canary_weight, paused, promote_asked, requested_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, 0, 0, 0, $8, $9, $9) RETURNING id",
        )
        .bind(new.repo.as_str())
        .bind(&new.channel)
        .bind(new.release_env.as_str())
        .bind(new.canary_env.as_str())
        .bind(new.from_commit.as_ref().map(|c| c.to_string()))
        .bind(new.to_commit.as_str())
        .bind(&new.source)
        .bind(&new.requested_by)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = column(&row, "id")?;
        if let Some(from) = new.handed_on_from {
            sqlx::query("UPDATE rollouts SET handed_on_at = $1 WHERE id = $2")
                .bind(now)
                .bind(from)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query(
            "INSERT INTO channels (repo, channel, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo, channel) DO NOTHING",
        )
        .bind(new.repo.as_str())
        .bind(&new.channel)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let from = new
            .from_commit
            .as_ref()
            .map(|c| format!(" (replacing {})", c.short()))
            .unwrap_or_else(|| " (the channel's first release)".into());
        let message = format!(
            "release of {} {} to {} requested ({}){from}: rollout {id}",
            new.repo,
            new.to_commit.short(),
            new.channel,
            new.source
        );
        insert_event(
            &mut tx,
            new.release_env.as_str(),
            now,
            "rollout.requested",
            None,
            &message,
            Some(&new.requested_by),
        )
        .await?;
        tx.commit().await?;
        let rollout = self
            .rollout(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("rollout {id} vanished")))?;
        Ok((rollout, superseded))
    }

    pub async fn rollout(&self, id: i64) -> Result<Option<Rollout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    /// The live (unfinished) rollout of a channel, if any.
    pub async fn current_rollout(
        &self,
        repo: &RepoName,
        channel: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        self.newest_rollout(repo, channel, LIVE).await
    }

    /// The newest rollout of a channel, finished or not.
    pub async fn latest_rollout(
        &self,
        repo: &RepoName,
        channel: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        self.newest_rollout(repo, channel, "TRUE").await
    }

    /// The newest rollout of a channel that `condition` (an SQL condition) holds for.
    async fn newest_rollout(
        &self,
        repo: &RepoName,
        channel: &str,
        condition: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE repo = $1 AND channel = $2 AND {condition} \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(repo.as_str())
        .bind(channel)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rollout_from_row).transpose()
    }

    /// A repo's rollouts, newest first.
    pub async fn rollouts(&self, repo: &RepoName, limit: i64) -> Result<Vec<Rollout>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE repo = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(repo.as_str())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rollout_from_row).collect()
    }

    /// Rollouts the reconciler still has work for: live ones, and those at 100% whose
    /// version has not been handed on to the next channel yet.
    pub async fn rollouts_to_reconcile(&self) -> Result<Vec<i64>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT id FROM rollouts WHERE {LIVE} OR (state = 'done' AND handed_on_at IS NULL) ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| column(r, "id")).collect()
    }

    /// When this rollout was handed on to the next channel (see [`NewRollout::handed_on_from`]).
    pub async fn rollout_handed_on_at(&self, id: i64) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT handed_on_at FROM rollouts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => column(&row, "handed_on_at")?,
            None => None,
        })
    }

    /// A surface's request on live rollout `id`, with an event on the
    /// release env's timeline. `None` when the rollout is finished (or gone) or the request
    /// changes nothing (pausing a paused rollout).
    pub async fn request_rollout(
        &self,
        id: i64,
        request: RolloutRequest,
        actor: &str,
    ) -> Result<Option<Rollout>, StoreError> {
        let Some(rollout) = self.rollout(id).await? else {
            return Ok(None);
        };
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (set, unchanged, value) = match request {
            RolloutRequest::Pause => ("paused = 1", "paused = 0", Value::Int(None)),
            RolloutRequest::Resume => ("paused = 0", "paused = 1", Value::Int(None)),
            RolloutRequest::Promote => ("promote_asked = 1", "promote_asked = 0", Value::Int(None)),
            RolloutRequest::Rollback => (
                "rollback_asked = $3",
                "rollback_asked IS NULL",
                Value::Text(Some(actor.to_string())),
            ),
            RolloutRequest::Approve { step } => (
                "approved_by = $3, approved_step = $4",
                "(approved_step IS NULL OR approved_step <> $4)",
                Value::Int(Some(i64::try_from(step).unwrap_or(i64::MAX))),
            ),
        };
        let sql = format!(
            "UPDATE rollouts SET {set}, updated_at = $1 WHERE id = $2 AND {unchanged} AND {LIVE}"
        );
        let mut query = sqlx::query(&sql).bind(now).bind(id);
        query = match (request, value) {
            (RolloutRequest::Approve { .. }, Value::Int(step)) => {
                query.bind(actor.to_string()).bind(step)
            }
            (_, Value::Text(text)) => query.bind(text),
            _ => query,
        };
        let changed = query.execute(&mut *tx).await?.rows_affected();
        if changed == 0 {
            return Ok(None);
        }
        let what = match request {
            RolloutRequest::Approve { step } => format!("{} of step {}", request.words(), step + 1),
            _ => request.words(),
        };
        let message = format!(
            "{what} by {actor} for {} {} in {} (rollout {id})",
            rollout.repo,
            rollout.to_commit.short(),
            rollout.channel
        );
        insert_event(
            &mut tx,
            rollout.release_env.as_str(),
            now,
            "rollout.requested",
            None,
            &message,
            Some(actor),
        )
        .await?;
        tx.commit().await?;
        self.changed(&rollout.release_env);
        self.rollout(id).await
    }

    /// The rollout reconciler's write: the columns `update` sets, its event and channel
    /// version, in one transaction, refused (StaleLease) once its lease is lost.
    pub async fn update_rollout(
        &self,
        rollout: &Rollout,
        update: &RolloutUpdate,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut sets: Vec<(&str, Value)> = vec![("updated_at", Value::Int(Some(now)))];
        if let Some(state) = update.state {
            sets.push(("state", Value::Text(Some(state.as_str().into()))));
        }
        if let Some(step) = update.step {
            sets.push(("step", Value::Int(Some(step as i64))));
        }
        if let Some(weight) = update.canary_weight {
            sets.push(("canary_weight", Value::Int(Some(i64::from(weight)))));
        }
        if let Some(at) = update.step_started_at {
            sets.push(("step_started_at", Value::Int(at)));
        }
        if let Some(reason) = &update.reason {
            sets.push(("reason", Value::Text(reason.clone())));
        }
        if let Some(from) = &update.from_commit {
            sets.push((
                "from_commit",
                Value::Text(from.as_ref().map(|c| c.to_string())),
            ));
        }
        if let Some(comparison) = &update.comparison {
            sets.push(("comparison", Value::Text(json_text(comparison))));
        }
        if let Some(decision) = &update.decision {
            sets.push(("decision", Value::Text(json_text(decision))));
        }
        if let Some(since) = update.metric_error_since {
            sets.push(("metric_error_since", Value::Int(since)));
        }
        if let Some(at) = update.finished_at {
            sets.push(("finished_at", Value::Int(at)));
        }
        if let Some(at) = update.handed_on_at {
            sets.push(("handed_on_at", Value::Int(at)));
        }
        if update.promote_done {
            sets.push(("promote_asked", Value::Int(Some(0))));
        }
        let assignments: Vec<String> = sets
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{name} = ${}", i + 1))
            .collect();
        let id_param = sets.len() + 1;
        // A finished rollout stays finished: a pass that began before another request
        // superseded it (or before it finished) must not bring it back to life.
        let sql = format!(
            "UPDATE rollouts SET {} WHERE id = ${id_param} AND {LIVE} AND {}",
            assignments.join(", "),
            self.fence_clause(id_param + 1)
        );
        let mut query = sqlx::query(&sql);
        for (_, value) in sets {
            query = match value {
                Value::Int(v) => query.bind(v),
                Value::Text(v) => query.bind(v),
            };
        }
        query = self.bind_fence(query.bind(rollout.id));
        let mut tx = self.pool.begin().await?;
        let changed = query.execute(&mut *tx).await?.rows_affected();
        if changed > 0 {
            if let Some(version) = &update.channel_version {
                sqlx::query(
                    "INSERT INTO channels (repo, channel, version, reached_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (repo, channel) DO UPDATE SET version = excluded.version, \
                     reached_at = excluded.reached_at, updated_at = excluded.updated_at",
                )
                .bind(rollout.repo.as_str())
                .bind(&rollout.channel)
                .bind(version.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            if let Some((kind, message)) = &update.event {
                insert_event(
                    &mut tx,
                    rollout.release_env.as_str(),
                    now,
                    kind,
                    None,
                    message,
                    Some("slipway"),
                )
                .await?;
            }
        }
        tx.commit().await?;
        // Its events may notify: tell whoever follows the timeline now, not at a resync.
        self.changed(&rollout.release_env);
        self.check_fence(changed).await
    }

    /// A channel's stored version and freeze (`None` before its first rollout or freeze).
    pub async fn channel(
        &self,
        repo: &RepoName,
        channel: &str,
    ) -> Result<Option<ChannelRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM channels WHERE repo = $1 AND channel = $2")
            .bind(repo.as_str())
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(channel_from_row).transpose()
    }

    /// Sets a channel's version outside a rollout (an operator's repair; rollouts set it as
    /// they finish, see [`RolloutUpdate::channel_version`]).
    pub async fn set_channel_version(
        &self,
        repo: &RepoName,
        channel: &str,
        version: &CommitSha,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO channels (repo, channel, version, reached_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (repo, channel) DO UPDATE SET version = excluded.version, \
             reached_at = excluded.reached_at, updated_at = excluded.updated_at",
        )
        .bind(repo.as_str())
        .bind(channel)
        .bind(version.as_str())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Freezes (`Some(reason)`) or unfreezes (`None`) a channel, with an
    /// event on the release env's timeline. `false` when nothing changed.
    pub async fn set_channel_freeze(
        &self,
        repo: &RepoName,
        channel: &str,
        release_env: &EnvName,
        reason: Option<&str>,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO channels (repo, channel, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (repo, channel) DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(channel)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let changed = match reason {
            Some(reason) => sqlx::query(
                "UPDATE channels SET frozen_reason = $1, frozen_by = $2, frozen_at = $3, updated_at = $3 \
                 WHERE repo = $4 AND channel = $5 AND (frozen_reason IS NULL OR frozen_reason <> $1)",
            )
            .bind(reason)
            .bind(actor)
            .bind(now)
            .bind(repo.as_str())
            .bind(channel)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            None => sqlx::query(
                "UPDATE channels SET frozen_reason = NULL, frozen_by = NULL, frozen_at = NULL, updated_at = $1 \
                 WHERE repo = $2 AND channel = $3 AND frozen_reason IS NOT NULL",
            )
            .bind(now)
            .bind(repo.as_str())
            .bind(channel)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        if changed > 0 {
            let message = match reason {
                Some(reason) => format!("channel {channel} of {repo} frozen by {actor}: {reason}"),
                None => format!("channel {channel} of {repo} unfrozen by {actor}"),
            };
            insert_event(
                &mut tx,
                release_env.as_str(),
                now,
                "channel.freeze",
                None,
                &message,
                Some(actor),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(changed > 0)
    }

    /// Asks for a release or canary env (`role`) at exactly `commit`, a commit in the
    /// repo's mirror: pinned, with a century to live, on the repo's target `branch` (so no
    /// branch env can own it). A new generation only when it is not already wanted at that
    /// commit in that role; returns whether one was asked for.
    pub async fn request_role_env_up(
        &self,
        name: &EnvName,
        repo: &RepoName,
        branch: &BranchName,
        commit: &CommitSha,
        role: &EnvRole,
        actor: &str,
    ) -> Result<bool, StoreError> {
        let existing = self.get(name).await?;
        let current_role = self.env_role(name).await?;
        let wanted = existing.as_ref().is_some_and(|env| {
            env.desired == super::Desired::Running
                && env.phase != super::Phase::Deleted
                && env.candidate.as_ref() == Some(commit)
                && current_role.as_ref() == Some(role)
        });
        if !wanted {
            let request = UpRequest {
                name: name.clone(),
                repo: repo.clone(),
                branch: branch.clone(),
                ttl: SHARED_TTL,
                actor: actor.to_string(),
                pull_request: None,
            };
            self.upsert_env(&request, Some(commit), None, Some(role))
                .await?;
        }
        // Pinned on every ask, so a crash between the two writes heals at the next one.
        if !existing.is_some_and(|e| e.idle.pinned) || !wanted {
            self.set_pinned(name, true, actor).await?;
        }
        Ok(!wanted)
    }

    /// What `name` is to the rollouts (`None`: an ordinary env, or no such env).
    pub async fn env_role(&self, name: &EnvName) -> Result<Option<EnvRole>, StoreError> {
        let row = sqlx::query("SELECT role FROM envs WHERE name = $1")
            .bind(name.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text: Option<String> = column(&row, "role")?;
        match text {
            None => Ok(None),
            Some(text) => EnvRole::from_column(&text)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("env role {text:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_roles_round_trip_through_their_column() {
        for role in [
            EnvRole::Release {
                channel: "production".into(),
            },
            EnvRole::Canary { rollout: 42 },
        ] {
            assert_eq!(EnvRole::from_column(&role.to_column()), Some(role));
        }
        assert_eq!(EnvRole::from_column("canary:x"), None);
        assert_eq!(EnvRole::from_column("release:"), None);
        assert_eq!(EnvRole::from_column("shared"), None);
    }
}
