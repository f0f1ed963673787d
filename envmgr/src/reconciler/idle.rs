//! The idle policy, run before each resync: envs idle past their repo's `idle_sleep` are put
//! to sleep, people are warned `warn_before` ahead of an idle deletion, a TTL expiry or the
//! deletion of an env whose branch is gone, and envs idle past `idle_delete` or whose branch
//! has been gone for `warn_before` (warned in time) are deleted. It only writes requests;
//! the env reconciler carries them out. Idle time is recomputed from the signals on every
//! pass, so any use after a warning moves the deadline and cancels an idle deletion; a
//! branch that comes back (or a pin) cancels a branch deletion. Precision: one resync
//! interval.

use std::time::Duration;

use tracing::info;

use crate::settings::EngineSettings;
use crate::store::{now_ms, Desired, EnvRecord, Phase, Store};

/// Why an env is to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Idle,
    /// Its time to live ends (the TTL expiry itself deletes it, not this policy).
    Ttl,
    BranchGone,
}

/// What the policy wants for one env at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdleStep {
    Nothing,
    /// Tell people it goes at `deadline` (unix ms), and why.
    Warn {
        deadline: i64,
        why: Why,
    },
    Sleep,
    /// Delete it now, for being idle or for its branch being gone.
    Delete(Why),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The deadline of an idle deletion, if one applies.
pub(crate) fn idle_deadline(env: &EnvRecord, delete_after: Option<Duration>) -> Option<i64> {
    if env.idle.pinned {
        return None;
    }
    let after = delete_after?;
    Some(
        env.idle
            .last_used_at(env.created_at)
            .saturating_add(millis(after)),
    )
}

/// The deadline of the deletion of an env whose branch is gone: `warn_before` after it was
/// found gone (at once with no warning), none while pinned.
pub(crate) fn branch_deadline(env: &EnvRecord, warn_before: Option<Duration>) -> Option<i64> {
    if env.idle.pinned {
        return None;
    }
    let gone_at = env.idle.branch_gone_at?;
    Some(gone_at.saturating_add(warn_before.map_or(0, millis)))
}

/// When `env` goes if nothing changes, and why: its branch gone, idle, or its TTL,
/// whichever comes first. The soonest deletion is the one people are told about.
pub(crate) fn deletion_deadline(
    env: &EnvRecord,
    policy: &crate::settings::IdleSettings,
) -> (i64, Why) {
    [
        (branch_deadline(env, policy.warn_before), Why::BranchGone),
        (idle_deadline(env, policy.delete_after), Why::Idle),
    ]
    .into_iter()
    .filter_map(|(deadline, why)| deadline.map(|d| (d, why)))
    .chain([(env.expires_at, Why::Ttl)])
    .min_by_key(|(deadline, _)| *deadline)
    .expect("the expiry is always there")
}

/// The deadline people were told `env` goes at, while that warning still holds (a use or
/// an `extend` since then moved the deadline, and a new warning will come when due).
pub(crate) fn warned_deadline(
    env: &EnvRecord,
    policy: &crate::settings::IdleSettings,
) -> Option<DeletionWarning> {
    if env.desired != Desired::Running
        || env.candidate.is_some()
        || env.name.is_shared_of(&env.repo)
    {
        return None;
    }
    let (deadline, why) = deletion_deadline(env, policy);
    (env.idle.warned_for == Some(deadline)).then_some(DeletionWarning {
        at: deadline,
        reason: match why {
            Why::Idle => DeletionReason::Idle,
            Why::Ttl => DeletionReason::Ttl,
            Why::BranchGone => DeletionReason::BranchGone,
        },
    })
}

/// A deletion people were warned of and that still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletionWarning {
    /// Unix milliseconds.
    pub at: i64,
    pub reason: DeletionReason,
}

/// Why a warned env goes, which says what keeps it: use or `env pin` (idle), `env extend`
/// (its TTL), `env pin` (its branch is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionReason {
    Idle,
    Ttl,
    BranchGone,
}

/// The next step for `env` under `policy`. `resync` is the slack allowed between a warning
/// and its deletion (a warning given one pass late still counts as in time).
pub(crate) fn next_step(
    env: &EnvRecord,
    policy: &crate::settings::IdleSettings,
    resync: Duration,
    now: i64,
) -> IdleStep {
    // Queue candidates live and go with their queue entry; deleted envs are done; a repo's
    // shared env serves every env of the repo, used or not (it is pinned besides).
    if env.desired != Desired::Running
        || env.candidate.is_some()
        || env.name.is_shared_of(&env.repo)
    {
        return IdleStep::Nothing;
    }
    let deletions = [
        (branch_deadline(env, policy.warn_before), Why::BranchGone),
        (idle_deadline(env, policy.delete_after), Why::Idle),
    ];
    let warned_in_time = |deadline: i64| match policy.warn_before {
        None => true,
        Some(warn) => {
            env.idle.warned_for == Some(deadline)
                && env.idle.warned_at.is_some_and(|at| {
                    now >= at
                        .saturating_add(millis(warn))
                        .saturating_sub(millis(resync))
                })
        }
    };
    for (deadline, why) in deletions {
        if deadline.is_some_and(|d| now >= d && warned_in_time(d)) {
            return IdleStep::Delete(why);
        }
    }
    if let Some(warn) = policy.warn_before {
        let (deadline, why) = deletion_deadline(env, policy);
        if now >= deadline.saturating_sub(millis(warn)) && env.idle.warned_for != Some(deadline) {
            return IdleStep::Warn { deadline, why };
        }
    }
    if let Some(after) = policy.sleep_after {
        let idle_for = env.idle.idle_for(env.created_at, now);
        if !env.idle.pinned
            && !env.idle.asleep
            && env.observed_generation >= env.generation
            && matches!(env.phase, Phase::Ready | Phase::Degraded)
            && idle_for >= after
        {
            return IdleStep::Sleep;
        }
    }
    IdleStep::Nothing
}

/// `1h`, `25m 3s`: a duration as people read it, to the second.
fn rounded(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) as u64).div_ceil(1000))).to_string()
}

/// One pass of the policy over every env the store wants.
/// `listed`: the repos whose branches this pass listed; an env marked gone in another repo
/// (a webhook, a failed fetch) waits for a listing to confirm it before it is deleted.
pub(crate) async fn sweep(
    settings: &EngineSettings,
    store: &Store,
    listed: &std::collections::HashSet<crate::names::RepoName>,
) -> anyhow::Result<()> {
    let now = now_ms();
    for env in store.list(false).await? {
        let Some(repo) = settings.repo(&env.repo) else {
            continue;
        };
        let idle_for = env.idle.idle_for(env.created_at, now);
        match next_step(&env, &repo.idle, settings.resync_interval, now) {
            IdleStep::Nothing => {}
            IdleStep::Warn { deadline, why } => {
                let left = rounded(deadline - now);
                let message = match why {
                    Why::Idle => format!(
                        "{} will be deleted in {left} (idle for {}): `/slipway env extend` or `/slipway env pin` keeps it",
                        env.name,
                        rounded(millis(idle_for))
                    ),
                    Why::Ttl => format!(
                        "{} will be deleted in {left} (its time to live ends): `/slipway env extend` keeps it",
                        env.name
                    ),
                    Why::BranchGone => format!(
                        "{} will be deleted in {left} (its branch {} is gone): `/slipway env pin` keeps it",
                        env.name, env.branch
                    ),
                };
                if store
                    .record_expiry_warning(&env.name, deadline, &message)
                    .await?
                {
                    info!(env = %env.name, %left, ?why, "deletion warned");
                }
            }
            IdleStep::Sleep => {
                // A test run in progress is use, even with nobody watching.
                let testing = store
                    .runs(&env.name, 1)
                    .await?
                    .first()
                    .is_some_and(|run| !run.status.is_finished());
                if testing {
                    continue;
                }
                let why = format!("idle for {}", rounded(millis(idle_for)));
                if store.request_sleep(&env.name, "slipway", &why).await? {
                    info!(env = %env.name, %why, "putting to sleep");
                }
            }
            IdleStep::Delete(Why::BranchGone) => {
                let Some(gone_at) = env.idle.branch_gone_at else {
                    continue;
                };
                if !listed.contains(&env.repo) {
                    continue;
                }
                let why = format!("its branch {} is gone", env.branch);
                if store.delete_branch_gone(&env.name, gone_at, &why).await? {
                    info!(env = %env.name, branch = %env.branch, "deleting: its branch is gone");
                }
            }
            IdleStep::Delete(_) => {
                let why = format!("idle for {}", rounded(millis(idle_for)));
                let last_used = env.idle.last_used_at(env.created_at);
                if store.delete_idle(&env.name, last_used, &why).await? {
                    info!(env = %env.name, %why, "deleting for being idle");
                }
            }
        }
    }
    Ok(())
}
