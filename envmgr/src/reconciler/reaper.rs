//! Housekeeping run before each resync, beside the idle policy: which branch envs lost their
//! branch, and the reaper of what the env passes do not cover: job containers a crash left
//! behind, and built images no env used for `image_retention`. (Containers, networks and
//! volumes of envs without a row are reaped by the env passes themselves, see `env.rs`.)
//! Everything here is safe on every replica at once: it only removes what is provably
//! unused and writes each removal's event once. Each removal is a `reaped` event on the
//! env's timeline, with the reason, and a log line.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use tracing::{info, warn};

use crate::git::GitMirrors;
use crate::names::RepoName;
use crate::runtime::Runtime;
use crate::settings::EngineSettings;
use crate::store::{now_ms, Desired, EnvRecord, Store};

/// The timeline kind of every removal the reaper makes.
pub(crate) const REAPED: &str = "reaped";

/// How long one repo's branch listing may take before the check skips it this time.
const BRANCH_LIST_TIMEOUT: Duration = Duration::from_secs(20);

/// Asks each repo with branch envs which branches it has (one `ls-remote` per repo) and
/// records which envs lost theirs, or got it back. A repo that cannot be asked is skipped:
/// an unreachable remote never counts as a deleted branch. Returns the repos whose branches
/// were listed in this pass: only their envs may be deleted for a gone branch now.
pub(crate) async fn check_branches(
    settings: &EngineSettings,
    store: &Store,
    git: &GitMirrors,
) -> anyhow::Result<HashSet<RepoName>> {
    let mut listed_repos = HashSet::new();
    let mut by_repo: BTreeMap<RepoName, Vec<EnvRecord>> = BTreeMap::new();
    for env in store.list(false).await? {
        let branch_env = env.pull_request.is_none() && env.candidate.is_none();
        if branch_env && env.desired == Desired::Running {
            by_repo.entry(env.repo.clone()).or_default().push(env);
        }
    }
    for (repo, envs) in by_repo {
        let Some(settings) = settings.repo(&repo) else {
            continue;
        };
        // Bounded: a remote that hangs must not hold up the resync of every env.
        let listed = tokio::time::timeout(BRANCH_LIST_TIMEOUT, git.remote_branches(settings)).await;
        let branches = match listed {
            Ok(Ok(branches)) => {
                listed_repos.insert(repo.clone());
                branches
            }
            Ok(Err(e)) => {
                warn!(repo = %repo, error = %e, "could not list the repo's branches; not checking its envs' branches");
                continue;
            }
            Err(_) => {
                warn!(repo = %repo, timeout = ?BRANCH_LIST_TIMEOUT, "listing the repo's branches timed out; not checking its envs' branches");
                continue;
            }
        };
        let now = now_ms();
        for env in envs {
            let exists = branches.contains(env.branch.as_str());
            // Written only when it changes: a resync of envs whose branches exist is reads.
            let change = match (exists, env.idle.branch_gone_at) {
                (false, None) => Some(Some(now)),
                (true, Some(_)) => Some(None),
                _ => None,
            };
            if let Some(gone_at) = change {
                if store.record_branch_presence(&env.name, gone_at).await? {
                    let state = if exists { "back" } else { "gone" };
                    info!(env = %env.name, branch = %env.branch, state, "the env's branch is {state}");
                }
            }
        }
    }
    Ok(listed_repos)
}

/// Removes job containers (test runs) whose run is finished or unknown to the store: a
/// job's container goes when its job ends, so these were left by a crash. A run that is
/// queued or running keeps its container (a queued run's next attempt replaces it).
pub(crate) async fn reap_jobs(store: &Store, runtime: &dyn Runtime) -> anyhow::Result<()> {
    for job in runtime.list_jobs().await? {
        let run = match crate::testrun::run_of_job(&job.id) {
            Some(id) => store.get_run(id).await?,
            None => None,
        };
        let why = match &run {
            Some(run) if run.env != job.env => "its test run belongs to another env".to_string(),
            Some(run) if run.status.is_finished() => {
                format!("its test run {} is {}", run.id, run.status.as_str())
            }
            Some(_) => continue,
            None => "no test run of that id is in the store".to_string(),
        };
        runtime.remove_job(&job.env, &job.id).await?;
        let message = format!(
            "removed job container {}{}: labelled with this instance but {why}",
            job.id,
            if job.running { " (still running)" } else { "" }
        );
        info!(env = %job.env, job = %job.id, %why, "reaped a stale job container");
        store.record_event(&job.env, REAPED, &message).await?;
    }
    Ok(())
}

/// Removes built images this instance used that no env used for `retention`. An image a
/// container uses counts as used now (a sleeping env's stopped containers too); one that
/// left the engine by other means is forgotten. Images another instance built and this one
/// never used are not in the store, so never touched.
pub(crate) async fn reap_images(
    store: &Store,
    runtime: &dyn Runtime,
    retention: Duration,
) -> anyhow::Result<()> {
    let recorded = store.built_images().await?;
    if recorded.is_empty() {
        return Ok(());
    }
    let present: HashMap<String, bool> = runtime
        .built_images()
        .await?
        .into_iter()
        .map(|image| (image.reference, image.in_use))
        .collect();
    let now = now_ms();
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    // An image in use is marked used at most this often: enough precision against the
    // retention, without a write per image on every resync.
    let touch_every = (retention_ms / 4).min(3_600_000);
    for image in recorded {
        match present.get(&image.reference) {
            None => {
                store
                    .forget_image(&image.reference, image.last_used_at)
                    .await?;
            }
            Some(true) => {
                if now - image.last_used_at >= touch_every {
                    store
                        .record_image_use(&image.reference, &image.env, now)
                        .await?;
                }
            }
            Some(false) if now - image.last_used_at >= retention_ms => {
                if !runtime.remove_built_image(&image.reference).await? {
                    continue; // A container took it up meanwhile, or it is gone already.
                }
                store
                    .forget_image(&image.reference, image.last_used_at)
                    .await?;
                let unused = humantime::format_duration(Duration::from_secs(
                    ((now - image.last_used_at).max(0) / 1000) as u64,
                ));
                let why = format!(
                    "no env used it for {unused} (image_retention {})",
                    humantime::format_duration(retention)
                );
                info!(image = %image.reference, env = %image.env, %why, "reaped a built image");
                store
                    .record_event(
                        &image.env,
                        REAPED,
                        &format!("removed built image {}: {why}", image.reference),
                    )
                    .await?;
            }
            Some(false) => {}
        }
    }
    Ok(())
}
