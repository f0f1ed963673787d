//! One reconcile pass for one env. Every step re-reads the store, so a newer `up` or a
//! `down` that arrives mid-way supersedes the work in progress at the next step (and during
//! the wait for services to become ready), without leaving half-made resources behind:
//! whatever was created carries the env's labels and the next pass converges it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::mpsc;
use tracing::{debug, info};

use super::{Action, Context};
use crate::compose::plan::{plan, plan as plan_env, PlanInput};
use crate::compose::ComposeFile;
use crate::git::{GitError, RepoPath};
use crate::names::{CommitSha, EnvName, ServiceName};
use crate::runtime::{
    ObservedEnv, ObservedService, Progress, ProgressSink, Protocol, RuntimeError, ServiceState,
    SharedServices,
};
use crate::store::{
    now_ms, Desired, EnvRecord, EnvRole, Phase, RunTrigger, ServiceStatus, SharedFrom,
};

/// How often a long step checks whether its work was superseded.
const SUPERSEDE_POLL: Duration = Duration::from_millis(300);

/// How often an env waiting for its repo's shared env looks at it again.
const SHARED_POLL: Duration = Duration::from_millis(500);

pub(crate) async fn reconcile(ctx: &Context, name: &EnvName) -> anyhow::Result<Action> {
    let Some(env) = ctx.store.get(name).await? else {
        // Resources with no row at all: an orphan from a lost store or a crash.
        let observed = ctx.runtime.fetch(name).await?;
        if !observed.is_empty() {
            info!(env = %name, "removing orphaned resources");
            ctx.runtime.destroy(name).await?;
            ctx.store
                .record_event(
                    name,
                    super::reaper::REAPED,
                    &orphan_message(&observed, "no env of that name is in the store"),
                )
                .await?;
        }
        return Ok(Action::AwaitChange);
    };
    if env.desired == Desired::Deleted {
        return delete(ctx, &env).await;
    }
    if env.expires_at <= now_ms() {
        ctx.store.expire_due().await?;
        return Ok(Action::Requeue(Duration::ZERO));
    }
    if env.observed_generation < env.generation || env.phase.in_progress() {
        return deploy(ctx, &env, None).await;
    }
    if env.idle.asleep {
        return sleep(ctx, &env).await;
    }
    if env.phase == Phase::Sleeping {
        return wake(ctx, &env).await;
    }
    if matches!(env.phase, Phase::Ready | Phase::Degraded) {
        return verify(ctx, &env).await;
    }
    Ok(Action::AwaitChange)
}

/// What the reaper removed of an env nobody wants, and why.
fn orphan_message(observed: &ObservedEnv, why: &str) -> String {
    let mut parts = Vec::new();
    if !observed.services.is_empty() {
        let names: Vec<&str> = observed.services.iter().map(|s| s.name.as_str()).collect();
        parts.push(format!("containers of {}", names.join(", ")));
    }
    if observed.network {
        parts.push("its network".to_string());
    }
    if !observed.volumes.is_empty() {
        parts.push(format!("volumes {}", observed.volumes.join(", ")));
    }
    format!(
        "removed {}: labelled with this instance but {why}",
        parts.join(", ")
    )
}

async fn delete(ctx: &Context, env: &EnvRecord) -> anyhow::Result<Action> {
    if env.phase == Phase::Deleted {
        // Converged, unless something reappeared (a crash between create and record).
        let observed = ctx.runtime.fetch(&env.name).await?;
        if !observed.is_empty() {
            ctx.runtime.destroy(&env.name).await?;
            let what = orphan_message(&observed, "the env is deleted");
            ctx.store
                .record_event(&env.name, super::reaper::REAPED, &what)
                .await?;
        }
        return Ok(Action::AwaitChange);
    }
    ctx.store
        .set_phase(
            &env.name,
            Phase::Deleting,
            None,
            "removing containers, network and volumes",
        )
        .await?;
    ctx.runtime.destroy(&env.name).await?;
    ctx.store.record_services(&env.name, &[]).await?;
    ctx.store
        .set_phase(&env.name, Phase::Deleted, None, "everything removed")
        .await?;
    ctx.store
        .record_observed_generation(&env.name, env.generation)
        .await?;
    info!(env = %env.name, "deleted");
    Ok(Action::AwaitChange)
}

/// Stops a serving env's containers (network and volumes stay), or makes sure a sleeping
/// one's are still stopped. A Failed env is left as it is: there is nothing to save.
async fn sleep(ctx: &Context, env: &EnvRecord) -> anyhow::Result<Action> {
    match env.phase {
        Phase::Ready | Phase::Degraded => {
            // Sleeping first: from here the front door wakes it rather than proxying to it.
            ctx.store
                .set_phase(
                    &env.name,
                    Phase::Sleeping,
                    None,
                    "stopping the containers (volumes kept); the next use wakes it",
                )
                .await?;
            ctx.runtime.stop(&env.name).await?;
            ctx.store.record_slept(&env.name).await?;
            let observed = ctx.runtime.fetch(&env.name).await?;
            ctx.store
                .record_services(
                    &env.name,
                    &statuses(ctx, env, &observed, main_of(env), &recorded_shared_env(env)),
                )
                .await?;
            info!(env = %env.name, "asleep");
        }
        Phase::Sleeping => {
            // Someone started a container behind Slipway's back: stop it again.
            let observed = ctx.runtime.fetch(&env.name).await?;
            if observed.services.iter().any(|s| awake(&s.state)) {
                ctx.runtime.stop(&env.name).await?;
                let observed = ctx.runtime.fetch(&env.name).await?;
                ctx.store
                    .record_services(
                        &env.name,
                        &statuses(ctx, env, &observed, main_of(env), &recorded_shared_env(env)),
                    )
                    .await?;
            }
        }
        _ => {}
    }
    Ok(Action::AwaitChange)
}

/// Whether a service in `state` is using resources (what a sleeping env must not have).
pub(super) fn awake(state: &ServiceState) -> bool {
    !matches!(
        state,
        ServiceState::Exited { .. }
            | ServiceState::Created
            | ServiceState::Waiting
            | ServiceState::Preparing
    )
}

/// A normal reconcile back to Ready at the commit it slept at: the runtime starts the stopped
/// containers again (same spec, so nothing is recreated and volumes are as they were).
async fn wake(ctx: &Context, env: &EnvRecord) -> anyhow::Result<Action> {
    info!(env = %env.name, "waking up");
    ctx.store
        .set_phase(
            &env.name,
            Phase::Starting,
            None,
            "waking up: starting the stopped containers",
        )
        .await?;
    deploy(ctx, env, env.commit.clone()).await
}

/// Ready envs are compared with the world: a service that vanished or died is brought back
/// at the same commit.
async fn verify(ctx: &Context, env: &EnvRecord) -> anyhow::Result<Action> {
    let observed = ctx.runtime.fetch(&env.name).await?;
    let broken = env.services.iter().find(|recorded| {
        if let Some(from) = &recorded.shared {
            // Gone from the env's network: the shared env replaced or removed its container.
            return !observed
                .shared
                .iter()
                .any(|o| o.name.as_str() == recorded.name && o.container_id == from.container);
        }
        let Ok(name) = ServiceName::parse(&recorded.name) else {
            return false;
        };
        match observed.service(&name).map(|o| &o.state) {
            None => true,
            Some(ServiceState::Exited { code, .. }) => {
                *code != 0 || !recorded.state.starts_with("exited")
            }
            Some(_) => false,
        }
    });
    match broken {
        Some(service) => {
            let cause = match &service.shared {
                Some(from) => format!(
                    "shared service `{}` of `{}` is no longer on the env's network (it was replaced); attaching it again",
                    service.name, from.env
                ),
                None => format!(
                    "service `{}` is gone or stopped; restoring it",
                    service.name
                ),
            };
            info!(env = %env.name, %cause);
            ctx.store
                .set_phase(&env.name, Phase::Starting, None, &cause)
                .await?;
            deploy(ctx, env, env.commit.clone()).await
        }
        None => {
            // Written only when something changed: a resync of an idle env costs reads only.
            let now = statuses(ctx, env, &observed, main_of(env), &recorded_shared_env(env));
            if now != env.services {
                ctx.store.record_services(&env.name, &now).await?;
            }
            // A service whose restart policy keeps bringing it back is up but not working:
            // Degraded while any is restarting, Ready again once none is (checked on every
            // resync, so a service that becomes stable clears it by itself).
            let restarting = observed
                .services
                .iter()
                .find(|s| s.state == ServiceState::Restarting);
            match (restarting, env.phase) {
                (Some(service), _) => {
                    let reason = format!(
                        "service `{}` keeps exiting and being restarted; see `slipway env logs`",
                        service.name
                    );
                    if env.phase != Phase::Degraded || env.reason.as_deref() != Some(&reason) {
                        info!(env = %env.name, %reason, "env degraded");
                        ctx.store
                            .set_phase(&env.name, Phase::Degraded, Some(&reason), "degraded")
                            .await?;
                    }
                }
                (None, Phase::Degraded) => {
                    info!(env = %env.name, "no service restarting any more: ready again");
                    ctx.store
                        .set_phase(&env.name, Phase::Ready, None, "services stable again")
                        .await?;
                }
                (None, _) => {}
            }
            Ok(Action::AwaitChange)
        }
    }
}

/// Prepares one service's image, reporting it as preparing, then waiting for its start.
async fn prepare_one(
    ctx: &Context,
    service: &ServiceName,
    source: &crate::runtime::ImageSource,
    sink: crate::runtime::ProgressSink,
) -> Result<String, crate::runtime::RuntimeError> {
    sink(Progress::Service {
        service: service.clone(),
        state: ServiceState::Preparing,
    });
    let prepared = ctx.runtime.prepare_image(source, sink.clone()).await?;
    sink(Progress::Service {
        service: service.clone(),
        state: ServiceState::Waiting,
    });
    Ok(prepared)
}

/// The step failed in a way only a change to the env can fix.
async fn fail(ctx: &Context, env: &EnvRecord, reason: String) -> anyhow::Result<Action> {
    // The reason may quote the service's last log lines: redact with the secrets at the
    // commit just recorded (`env` may predate it) before it is logged or stored.
    let current = ctx.store.get(&env.name).await?;
    let redactor = ctx.redactors.for_env(current.as_ref().unwrap_or(env)).await;
    let reason = redactor.redact_text(&reason);
    info!(env = %env.name, %reason, "env failed");
    ctx.store
        .set_phase(&env.name, Phase::Failed, Some(&reason), "failed")
        .await?;
    ctx.store
        .record_observed_generation(&env.name, env.generation)
        .await?;
    Ok(Action::AwaitChange)
}

/// Whether the generation being worked on is still the one wanted.
async fn superseded(ctx: &Context, env: &EnvRecord) -> anyhow::Result<bool> {
    let current = ctx.store.get(&env.name).await?;
    Ok(current.is_none_or(|c| c.generation != env.generation || c.desired != Desired::Running))
}

/// Fetch → Building → Starting → Ready, for the env's current generation. With `pinned`,
/// redeploys that commit instead of the branch's newest.
async fn deploy(
    ctx: &Context,
    env: &EnvRecord,
    pinned: Option<CommitSha>,
) -> anyhow::Result<Action> {
    let repo = match ctx.settings.repo(&env.repo) {
        Some(repo) => repo.clone(),
        None => {
            return fail(
                ctx,
                env,
                format!("repo `{}` is no longer in the configuration", env.repo),
            )
            .await
        }
    };

    // A fresh deploy (not a restore of the same commit) runs the integration tests.
    let fresh = pinned.is_none();
    let commit = match pinned {
        Some(commit) => commit,
        None => {
            let fetched = match &env.pull_request {
                None if env.candidate.is_some() => {
                    let commit = env.candidate.clone().expect("checked above");
                    // Slipway made this commit in the mirror: nothing to fetch, but check.
                    ctx.git.fetch_commit(&repo, &[], &commit).await
                }
                Some(pr) => {
                    let cause = format!(
                        "fetching pull request #{} at {}",
                        pr.number,
                        pr.head.short()
                    );
                    ctx.store
                        .set_phase(&env.name, Phase::Fetching, None, &cause)
                        .await?;
                    // The PR's ref first; the head branch works for PRs from the same repo.
                    let refs = [pr.git_ref.clone(), env.branch.to_string()];
                    ctx.git.fetch_commit(&repo, &refs, &pr.head).await
                }
                None => {
                    let cause = format!("fetching branch {}", env.branch);
                    ctx.store
                        .set_phase(&env.name, Phase::Fetching, None, &cause)
                        .await?;
                    ctx.git.fetch_branch(&repo, &env.branch).await
                }
            };
            match fetched {
                Ok(commit) => commit,
                Err(e @ GitError::BranchNotFound { .. }) => {
                    // A branch env whose branch went is deleted after a warning (the idle
                    // policy); one whose branch never existed goes the same way.
                    if env.pull_request.is_none() && env.candidate.is_none() {
                        ctx.store
                            .record_branch_presence(&env.name, Some(now_ms()))
                            .await?;
                    }
                    return fail(ctx, env, format!("{e}; push it first")).await;
                }
                Err(e) => return fail(ctx, env, e.to_string()).await,
            }
        }
    };
    ctx.store.record_commit(&env.name, &commit).await?;
    if superseded(ctx, env).await? {
        return Ok(Action::Requeue(Duration::ZERO));
    }

    let compose_path = match RepoPath::resolve("", &repo.env_file) {
        Ok(path) => path,
        Err(e) => return fail(ctx, env, format!("env_file of repo `{}`: {e}", repo.name)).await,
    };
    // Held to `[limits]`: an oversized file is refused from its size, before it is read.
    let limits = &ctx.settings.env_limits;
    let max_size = limits.max_compose_bytes as u64;
    let role = ctx.store.env_role(&env.name).await?;
    let file = match ctx
        .git
        .read_file_limited(&repo.name, &commit, &compose_path, max_size)
        .await
    {
        Ok(bytes) => match ComposeFile::parse_limited(&bytes, limits) {
            Ok(file) => file,
            Err(e) => return fail(ctx, env, format!("{}: {e}", repo.env_file)).await,
        },
        Err(GitError::TooLarge { size, limit, .. }) => {
            let e = crate::compose::ComposeError::TooLarge { size, limit };
            return fail(ctx, env, format!("{}: {e}", repo.env_file)).await;
        }
        Err(GitError::FileNotFound { .. }) => {
            let reason = format!(
                "compose file `{}` not found at commit {}; add it or set env_file for repo `{}`",
                repo.env_file,
                commit.short(),
                repo.name
            );
            return fail(ctx, env, reason).await;
        }
        Err(e) => return fail(ctx, env, e.to_string()).await,
    };
    ctx.store.record_warnings(&env.name, &file.warnings).await?;
    let mut file = file;
    if role.is_some() {
        // A release env runs every service itself (a channel never uses the repo's shared
        // env, which follows the target branch); a canary reaches the release env's.
        for service in &mut file.services {
            service.shared = false;
        }
    }
    let is_shared_env = env.name.is_shared_of(&repo.name);
    if !is_shared_env && !file.shared_services().is_empty() {
        // An env that reaches shared services makes sure its repo's shared env exists; the
        // target branch's own env moving to a new commit moves the shared env with it.
        let on_target = env.pull_request.is_none()
            && env.candidate.is_none()
            && env.branch == repo.queue.target;
        let newest = (fresh && on_target).then_some(&commit);
        let shared = EnvName::for_shared(&repo.name);
        if ctx
            .store
            .request_shared_up(&repo.name, &repo.queue.target, "slipway", newest)
            .await?
        {
            info!(env = %env.name, %shared, "asked for the repo's shared env");
            ctx.bus.nudge(super::KIND, shared.as_str());
        }
    }
    let main = file.main.as_ref().map(|m| m.as_str());
    let input = PlanInput {
        env: &env.name,
        repo: &repo.name,
        commit: &commit,
        compose_path: &compose_path,
        file: &file,
        default_limits: ctx.settings.default_limits,
    };
    let plan = match plan(input, &ctx.git).await {
        Ok(plan) => plan,
        Err(e) => return fail(ctx, env, e.to_string()).await,
    };
    let plan = match &role {
        Some(EnvRole::Canary { rollout }) => {
            match canary_only(ctx, *rollout, &repo, &compose_path, &file, plan).await? {
                Ok(plan) => plan,
                Err(reason) => return fail(ctx, env, reason).await,
            }
        }
        _ => plan,
    };
    let shared_env = plan
        .spec
        .shared
        .as_ref()
        .map(|s| s.env.clone())
        .unwrap_or_else(|| EnvName::for_shared(&repo.name));
    // What the `max_memory` quota counts for this env.
    let memory: i64 = plan
        .spec
        .services
        .iter()
        .map(|s| s.limits.memory_bytes)
        .sum();
    ctx.store.record_memory(&env.name, memory).await?;

    // Before an image is looked up for reuse: the reaper never removes one used this recently.
    record_image_use(ctx, env, &plan.images).await?;
    let tracker = ProgressTracker::start(ctx, &env.name);
    ctx.store
        .set_phase(
            &env.name,
            Phase::Building,
            None,
            &format!("preparing images for {}", commit.short()),
        )
        .await?;
    // Independent images build at once, at most `parallel_builds` of them (the engine and
    // the CPUs are shared); the first failure stops the rest.
    let parallel = ctx.settings.env_limits.parallel_builds.max(1);
    let builds = {
        use futures_util::{StreamExt as _, TryStreamExt as _};
        let jobs: Vec<_> = plan
            .images
            .iter()
            .map(|(service, source)| prepare_one(ctx, service, source, tracker.sink.clone()))
            .collect();
        futures_util::stream::iter(jobs)
            .buffer_unordered(parallel)
            .try_collect::<Vec<_>>()
    };
    match until_superseded(ctx, env, builds).await? {
        None => return Ok(Action::Requeue(Duration::ZERO)),
        Some(Ok(_)) => {}
        Some(Err(e)) => return runtime_failure(ctx, env, Phase::Building, e).await,
    }
    // Again once built: the reaper forgets rows of images Docker does not have (yet).
    record_image_use(ctx, env, &plan.images).await?;

    if let Some(shared) = &plan.spec.shared {
        match until_superseded(ctx, env, wait_for_shared(ctx, env, shared)).await? {
            None => return Ok(Action::Requeue(Duration::ZERO)),
            Some(Ok(None)) => {}
            Some(Ok(Some(reason))) => {
                tracker.finish().await;
                return fail(ctx, env, reason).await;
            }
            Some(Err(e)) => return Err(e),
        }
    }

    ctx.store
        .set_phase(&env.name, Phase::Starting, None, "starting services")
        .await?;
    let applied = ctx
        .runtime
        .apply(&plan.spec, ctx.settings.ready_timeout, tracker.sink.clone());
    let observed = match until_superseded(ctx, env, applied).await? {
        None => return Ok(Action::Requeue(Duration::ZERO)),
        Some(Ok(observed)) => observed,
        Some(Err(e)) => {
            tracker.finish().await;
            if let Ok(observed) = ctx.runtime.fetch(&env.name).await {
                ctx.store
                    .record_services(&env.name, &statuses(ctx, env, &observed, main, &shared_env))
                    .await?;
            }
            return runtime_failure(ctx, env, Phase::Starting, e).await;
        }
    };
    tracker.finish().await;
    ctx.store
        .record_services(&env.name, &statuses(ctx, env, &observed, main, &shared_env))
        .await?;
    if superseded(ctx, env).await? {
        return Ok(Action::Requeue(Duration::ZERO));
    }
    // Queued before the env is Ready, so whoever sees it Ready sees its test run too (and a
    // `slipway test` asked right then comes after it). Once per commit: a pass cut off
    // between here and Ready does not queue it twice.
    // The shared env runs no tests: the envs that use it do. Nor do release and canary
    // envs: they deploy a commit the submit queue (or a person) already chose, and a test
    // run against a channel's live services is not what its users signed up for.
    if fresh && !is_shared_env && role.is_none() && !file.test_services().is_empty() {
        let newest = ctx.store.runs(&env.name, 1).await?.into_iter().next();
        let queued = newest.is_some_and(|run| {
            run.trigger == RunTrigger::Auto
                && run.commit.as_ref() == Some(&commit)
                && !run.status.is_finished()
        });
        if !queued {
            ctx.store
                .insert_run(&env.name, Some(&commit), RunTrigger::Auto, "slipway", false)
                .await?;
        }
        ctx.test_runs.nudge(env.name.as_str());
    }
    ctx.store
        .set_phase(
            &env.name,
            Phase::Ready,
            None,
            &format!("all services ready at {}", commit.short()),
        )
        .await?;
    ctx.store
        .record_observed_generation(&env.name, env.generation)
        .await?;
    info!(env = %env.name, commit = %commit.short(), "ready");
    if is_shared_env {
        // Replaced containers left the networks of the envs using them: they attach again.
        for user in ctx.store.shared_users(&repo.name).await? {
            ctx.bus.nudge(super::KIND, user.as_str());
        }
    }
    if let Some(EnvRole::Release { channel }) = &role {
        // The same for the channel's canary, which reaches the release env's services.
        let canary = EnvName::for_canary(&repo.name, channel);
        ctx.bus.nudge(super::KIND, canary.as_str());
    }
    Ok(Action::AwaitChange)
}

/// A canary env's plan: `plan` (every service at the new version) cut down to what differs
/// from the release env at the commit it runs, plus the entry service (see
/// [`crate::rollout::canary`]). `Err(reason)`: the canary cannot be planned.
async fn canary_only(
    ctx: &Context,
    rollout: i64,
    repo: &crate::settings::RepoSettings,
    compose_path: &RepoPath,
    file: &ComposeFile,
    plan: crate::compose::plan::EnvPlan,
) -> anyhow::Result<Result<crate::compose::plan::EnvPlan, String>> {
    let Some(rollout) = ctx.store.rollout(rollout).await? else {
        return Ok(Err(format!(
            "rollout {rollout} is not in the store any more"
        )));
    };
    let release_env = rollout.release_env;
    let Some(release_commit) = ctx.store.get(&release_env).await?.and_then(|r| r.commit) else {
        return Ok(Err(format!(
            "the release env `{release_env}` runs no version yet: a canary needs a stable version beside it"
        )));
    };
    let limits = &ctx.settings.env_limits;
    let bytes = match ctx
        .git
        .read_file_limited(
            &repo.name,
            &release_commit,
            compose_path,
            limits.max_compose_bytes as u64,
        )
        .await
    {
        Ok(bytes) => bytes,
        Err(e) => {
            return Ok(Err(format!(
                "reading the release env's compose file at {}: {e}",
                release_commit.short()
            )))
        }
    };
    let mut release_file = match ComposeFile::parse_limited(&bytes, limits) {
        Ok(file) => file,
        Err(e) => {
            return Ok(Err(format!(
                "the release env's compose file at {}: {e}",
                release_commit.short()
            )))
        }
    };
    for service in &mut release_file.services {
        service.shared = false;
    }
    let input = PlanInput {
        env: &release_env,
        repo: &repo.name,
        commit: &release_commit,
        compose_path,
        file: &release_file,
        default_limits: ctx.settings.default_limits,
    };
    let release_plan = match plan_env(input, &ctx.git).await {
        Ok(plan) => plan,
        Err(e) => return Ok(Err(format!("planning the release env: {e}"))),
    };
    let entry = crate::rollout::canary::entry_service(file);
    Ok(Ok(crate::rollout::canary::canary_plan(
        plan,
        &release_plan.spec,
        &release_env,
        entry.as_ref(),
    )))
}

/// The env whose services `env` reached at its last deploy (its repo's shared env unless a
/// recorded service says otherwise: a canary reaches its release env's).
fn recorded_shared_env(env: &EnvRecord) -> EnvName {
    env.services
        .iter()
        .find_map(|s| s.shared.as_ref().map(|from| from.env.clone()))
        .unwrap_or_else(|| EnvName::for_shared(&env.repo))
}

/// Waits until the repo's shared env serves every service of `shared`, saying so in the env's
/// phase (Pending, with the reason). `Some(reason)`: it cannot, and the env fails with that.
async fn wait_for_shared(
    ctx: &Context,
    env: &EnvRecord,
    shared: &SharedServices,
) -> anyhow::Result<Option<String>> {
    let names: Vec<String> = shared.services.iter().map(|s| format!("`{s}`")).collect();
    let names = names.join(", ");
    // Bounded like a service's readiness: a shared env that never settles (pushes keep
    // moving it) fails this env with the reason instead of holding its worker for ever.
    let started = std::time::Instant::now();
    loop {
        let Some(record) = ctx.store.get(&shared.env).await? else {
            return Ok(Some(format!(
                "the shared env `{}` does not exist; `env up` this env again to create it",
                shared.env
            )));
        };
        if record.desired == Desired::Deleted {
            return Ok(Some(format!(
                "the shared env `{}` (shared services {names}) is being deleted; `env up` this env again to bring it back",
                shared.env
            )));
        }
        let converged = record.observed_generation >= record.generation;
        match record.phase {
            Phase::Ready | Phase::Degraded if converged => {
                let missing = shared
                    .services
                    .iter()
                    .find(|s| !record.services.iter().any(|r| r.name == s.as_str()));
                return Ok(missing.map(|service| {
                    format!(
                        "service `{service}` is shared, but the shared env `{}` (branch `{}` at {}) does not run it: shared services run from the repo's target branch; merge the change there, then `env up` this env again",
                        shared.env,
                        record.branch,
                        record.commit.as_ref().map(|c| c.short()).unwrap_or("no commit")
                    )
                }));
            }
            Phase::Failed if converged => {
                let why = record.reason.as_deref().unwrap_or("no reason recorded");
                return Ok(Some(format!(
                    "the shared env `{}` failed: {}; `slipway env status {}` says more",
                    shared.env,
                    why.lines().next().unwrap_or(why),
                    shared.env
                )));
            }
            Phase::Sleeping => {
                let why = format!("{} needs its shared services", env.name);
                if ctx.store.request_wake(&shared.env, "slipway", &why).await? {
                    ctx.bus.nudge(super::KIND, shared.env.as_str());
                }
            }
            _ => {}
        }
        if started.elapsed() > ctx.settings.ready_timeout {
            return Ok(Some(format!(
                "the shared env `{}` (shared services {names}) was not ready within {}; it is {}: `slipway env status {}` says why",
                shared.env,
                humantime::format_duration(ctx.settings.ready_timeout),
                record.phase.as_str(),
                shared.env
            )));
        }
        let reason = format!(
            "waiting for the shared env `{}` (shared services {names}) to be ready; it is {}",
            shared.env,
            record.phase.as_str()
        );
        ctx.store
            .set_phase(
                &env.name,
                Phase::Pending,
                Some(&reason),
                "waiting for shared services",
            )
            .await?;
        tokio::time::sleep(SHARED_POLL).await;
    }
}

/// Transient runtime trouble is retried with backoff (the env keeps its phase and says
/// why it waits); anything else fails the env.
async fn runtime_failure(
    ctx: &Context,
    env: &EnvRecord,
    phase: Phase,
    error: RuntimeError,
) -> anyhow::Result<Action> {
    if error.is_transient() {
        let reason = format!("{error}; retrying");
        ctx.store
            .set_phase(&env.name, phase, Some(&reason), "waiting for the runtime")
            .await?;
        return Err(error).context("the runtime is unavailable");
    }
    fail(ctx, env, error.to_string()).await
}

/// Runs `work` unless the env's generation changes first (then `None`: the work is dropped
/// and the next pass converges from whatever it left).
async fn until_superseded<T>(
    ctx: &Context,
    env: &EnvRecord,
    work: impl std::future::Future<Output = T>,
) -> anyhow::Result<Option<T>> {
    tokio::pin!(work);
    loop {
        tokio::select! {
            result = &mut work => return Ok(Some(result)),
            _ = tokio::time::sleep(SUPERSEDE_POLL) => {
                if superseded(ctx, env).await? {
                    info!(env = %env.name, "superseded by a newer request");
                    return Ok(None);
                }
            }
        }
    }
}

/// What the reaper weighs against `image_retention`: this env uses these built images now.
async fn record_image_use(
    ctx: &Context,
    env: &EnvRecord,
    images: &[(ServiceName, crate::runtime::ImageSource)],
) -> anyhow::Result<()> {
    let now = now_ms();
    for (_, source) in images {
        if let crate::runtime::ImageSource::Build(build) = source {
            ctx.store
                .record_image_use(&build.tag, &env.name, now)
                .await?;
        }
    }
    Ok(())
}

/// The main service the env's last deploy recorded (the compose file is not read again).
fn main_of(env: &EnvRecord) -> Option<&str> {
    env.services
        .iter()
        .find(|s| s.main)
        .map(|s| s.name.as_str())
}

/// The services of `env` as a person should see them: state and URLs, then the shared
/// services the env reaches (its repo's shared env's). `main`: the service the compose file
/// names as the front door's default (else `web`, else the first with a published TCP
/// port). Front-door URLs outlive a stop (a stopped container has no host port, but its
/// front-door URL still reaches it: a request wakes the env), so they are kept from the
/// services as last recorded.
fn statuses(
    ctx: &Context,
    env: &EnvRecord,
    observed: &ObservedEnv,
    main: Option<&str>,
    shared_env: &EnvName,
) -> Vec<ServiceStatus> {
    let before = &env.services;
    let published = |s: &ObservedService| s.ports.iter().any(|p| p.protocol == Protocol::Tcp);
    let main = main
        .filter(|m| observed.services.iter().any(|s| s.name.as_str() == *m))
        .or_else(|| {
            let services = || observed.services.iter().filter(|s| published(s));
            services()
                .find(|s| s.name.as_str() == "web")
                .or_else(|| services().next())
                .map(|s| s.name.as_str())
        });
    observed
        .services
        .iter()
        .map(|s| {
            let is_main = main == Some(s.name.as_str());
            let front_door_url = match &ctx.settings.front_door {
                Some(front_door) if published(s) => {
                    let service = (!is_main).then_some(s.name.as_str());
                    Some(front_door.url(env.name.as_str(), service))
                }
                Some(_) if !awake(&s.state) => before
                    .iter()
                    .find(|b| b.name == s.name.as_str())
                    .and_then(|b| b.front_door_url.clone()),
                _ => None,
            };
            ServiceStatus {
                name: s.name.to_string(),
                state: s.state.label(),
                ports: s.ports.clone(),
                urls: s.ports.iter().map(|p| ctx.runtime.endpoint(p)).collect(),
                front_door_url,
                address: s.address,
                main: is_main,
                shared: None,
            }
        })
        .chain(observed.shared.iter().map(|s| ServiceStatus {
            name: s.name.to_string(),
            state: s.state.label(),
            ports: vec![],
            urls: vec![],
            front_door_url: None,
            address: None,
            main: false,
            shared: Some(SharedFrom {
                env: shared_env.clone(),
                container: s.container_id.clone(),
            }),
        }))
        .collect()
}

/// Writes per-service progress to the store as it happens, so `env status` and `--wait`
/// show what each service is doing during a slow start.
struct ProgressTracker {
    sink: ProgressSink,
    sender: Arc<Mutex<Option<mpsc::UnboundedSender<Progress>>>>,
    writer: tokio::task::JoinHandle<()>,
}

impl ProgressTracker {
    fn start(ctx: &Context, env: &EnvName) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
        let sender = Arc::new(Mutex::new(Some(tx)));
        let sink_sender = sender.clone();
        let sink: ProgressSink = Arc::new(move |progress| {
            if let Some(tx) = sink_sender
                .lock()
                .expect("progress sender poisoned")
                .as_ref()
            {
                let _ = tx.send(progress);
            }
        });
        let store = ctx.store.clone();
        let env = env.clone();
        let writer = tokio::spawn(async move {
            let mut states: BTreeMap<String, String> = BTreeMap::new();
            while let Some(progress) = rx.recv().await {
                match progress {
                    Progress::Service { service, state } => {
                        states.insert(service.to_string(), state.label());
                        let services: Vec<ServiceStatus> = states
                            .iter()
                            .map(|(name, state)| ServiceStatus {
                                name: name.clone(),
                                state: state.clone(),
                                ports: vec![],
                                urls: vec![],
                                front_door_url: None,
                                address: None,
                                main: false,
                                shared: None,
                            })
                            .collect();
                        if let Err(e) = store.record_services(&env, &services).await {
                            debug!(error = %e, "could not record progress");
                        }
                    }
                    Progress::Output { service, line } => {
                        debug!(env = %env, service = %service, "{line}")
                    }
                }
            }
        });
        Self {
            sink,
            sender,
            writer,
        }
    }

    /// Stops taking progress and waits until what was reported is written, so the final
    /// statuses written after this are not overwritten by a late update.
    async fn finish(self) {
        self.sender.lock().expect("progress sender poisoned").take();
        let _ = self.writer.await;
    }
}
