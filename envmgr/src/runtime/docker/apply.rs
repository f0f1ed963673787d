//! Converging an env to its spec.
//!
//! Containers whose spec hash still matches and that are in a good state are kept, and so
//! are stopped ones (an env that slept): those are started again, with their writable layer,
//! rather than recreated. The rest are removed first. Then every service gets its own task: it waits for its dependencies'
//! conditions (published by their tasks through watch channels), creates and starts its
//! container, and polls it until it is ready. Independent services thus start in parallel,
//! and the first failure cancels everything else.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::container::has_healthcheck;
use super::observe::service_state;
use super::{DockerRuntime, POLL_INTERVAL};
use crate::names::ServiceName;
use crate::runtime::{
    Dependency, DependencyCondition, EnvSpec, ObservedEnv, ObservedService, Progress, ProgressSink,
    RuntimeError, ServiceSpec, ServiceState,
};

/// Log lines quoted when a service fails.
const FAILURE_LOG_LINES: u64 = 20;

/// How long a just-started service without a health check must stay running before it
/// counts as ready. "Running" is true for a moment even for a process that dies at once on
/// a bad config; this catches those crashes without slowing dependents (they only need to
/// see it running) and, as services settle in parallel, adds at most this much to `apply`.
const SETTLE_TIME: Duration = Duration::from_millis(300);

/// Restarts tolerated while a service starts. A service with a restart policy that exits in
/// a loop is `Running` or `Restarting` most of the time and never `Exited`; past this many
/// restarts it is failed with its exit code instead of being waited for (or called ready).
const MAX_START_RESTARTS: i64 = 2;

impl DockerRuntime {
    pub(super) async fn apply_spec(
        &self,
        spec: &EnvSpec,
        ready_timeout: Duration,
        progress: ProgressSink,
    ) -> Result<ObservedEnv, RuntimeError> {
        check_dependencies(spec)?;
        tracing::info!(env = %spec.env, services = spec.services.len(), "applying spec");
        tokio::try_join!(self.ensure_network(spec), self.ensure_volumes(spec))?;
        // Before the services start: they may reach a shared one as soon as they run.
        self.attach_shared(spec).await?;
        let kept = self.remove_outdated(spec).await?;

        let ctx = Arc::new(ApplyContext {
            runtime: self.clone(),
            spec: spec.clone(),
            ready_timeout,
            progress,
        });
        run_services(ctx, kept).await?;
        self.observe_env(&spec.env).await
    }

    /// Removes containers that are not in the spec, are outdated or are in a bad state;
    /// returns the containers kept, by service.
    async fn remove_outdated(
        &self,
        spec: &EnvSpec,
    ) -> Result<HashMap<ServiceName, Kept>, RuntimeError> {
        let mut kept = HashMap::new();
        let mut doomed = Vec::new();
        for observed in self.observe_services(&spec.env).await? {
            let wanted = spec.services.iter().find(|s| s.name == observed.name);
            match wanted {
                Some(service) if !kept.contains_key(&observed.name) => {
                    match keepable(spec, service, &observed) {
                        Some(start) => {
                            let id = observed.container_id;
                            kept.insert(observed.name, Kept { id, start });
                        }
                        None => {
                            tracing::info!(env = %spec.env, service = %observed.name,
                                state = observed.state.label(), "removing outdated container");
                            doomed.push(observed.container_id);
                        }
                    }
                }
                _ => {
                    let state = observed.state.label();
                    tracing::info!(env = %spec.env, service = %observed.name, state,
                        "removing outdated container");
                    doomed.push(observed.container_id);
                }
            }
        }
        // Graceful, in parallel: a replaced service gets its stop signal and grace period.
        try_join_all(doomed.iter().map(|id| self.stop_and_remove(id))).await?;
        Ok(kept)
    }
}

/// A container kept from before.
struct Kept {
    id: String,
    /// Stopped: start it again (after its dependencies, as a new one would be).
    start: bool,
}

/// Whether an existing container already is what the spec asks for: `Some(false)` to keep it
/// as it is, `Some(true)` to start it again (stopped, e.g. by a sleep), `None` to replace it.
fn keepable(spec: &EnvSpec, service: &ServiceSpec, observed: &ObservedService) -> Option<bool> {
    if observed.spec_hash != service.spec_hash() {
        return None;
    }
    match observed.state {
        // Still starting up (an earlier apply was interrupted): wait for it rather than restart.
        ServiceState::Running | ServiceState::Healthy | ServiceState::Starting => Some(false),
        // A one-shot job that succeeded has done its work.
        ServiceState::Exited { code: 0, .. } if service.is_one_shot(spec) => Some(false),
        // Stopped (by a sleep, or it exited): the same container, started again, keeps its
        // files; a crash loop is still caught while it starts.
        ServiceState::Exited { .. } | ServiceState::Created => Some(true),
        _ => None,
    }
}

/// Refuses dependencies on unknown services and cycles, which would otherwise wait forever.
fn check_dependencies(spec: &EnvSpec) -> Result<(), RuntimeError> {
    let by_name: BTreeMap<&ServiceName, &ServiceSpec> =
        spec.services.iter().map(|s| (&s.name, s)).collect();
    for service in &spec.services {
        for dep in &service.depends_on {
            if !by_name.contains_key(&dep.service) {
                return Err(RuntimeError::ServiceFailed {
                    service: service.name.clone(),
                    reason: format!(
                        "it depends on `{}`, which is not a service of this env",
                        dep.service
                    ),
                });
            }
        }
    }
    // Depth-first search; `on_path` holds the chain being explored.
    fn visit<'a>(
        name: &'a ServiceName,
        by_name: &BTreeMap<&'a ServiceName, &'a ServiceSpec>,
        on_path: &mut Vec<&'a ServiceName>,
        done: &mut Vec<&'a ServiceName>,
    ) -> Result<(), RuntimeError> {
        if done.contains(&name) {
            return Ok(());
        }
        if let Some(start) = on_path.iter().position(|n| *n == name) {
            let cycle: Vec<String> = on_path[start..]
                .iter()
                .chain([&name])
                .map(|n| n.to_string())
                .collect();
            return Err(RuntimeError::ServiceFailed {
                service: name.clone(),
                reason: format!("its dependencies form a cycle: {}", cycle.join(" -> ")),
            });
        }
        on_path.push(name);
        for dep in by_name
            .get(name)
            .map(|s| s.depends_on.as_slice())
            .unwrap_or_default()
        {
            visit(&dep.service, by_name, on_path, done)?;
        }
        on_path.pop();
        done.push(name);
        Ok(())
    }
    let mut done = Vec::new();
    for service in &spec.services {
        visit(&service.name, &by_name, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

struct ApplyContext {
    runtime: DockerRuntime,
    spec: EnvSpec,
    ready_timeout: Duration,
    progress: ProgressSink,
}

/// Why a service task ended without its service being ready.
struct TaskFailure {
    error: RuntimeError,
    /// The service only failed because a dependency did; that dependency's own error says more.
    because_of_dependency: bool,
}

/// Starts one task per service and waits until all are ready or one fails.
async fn run_services(
    ctx: Arc<ApplyContext>,
    mut kept: HashMap<ServiceName, Kept>,
) -> Result<(), RuntimeError> {
    let channels: HashMap<ServiceName, watch::Sender<ServiceState>> = ctx
        .spec
        .services
        .iter()
        .map(|s| (s.name.clone(), watch::channel(ServiceState::Waiting).0))
        .collect();
    let mut tasks = JoinSet::new();
    for (index, service) in ctx.spec.services.iter().enumerate() {
        let deps: Vec<(Dependency, watch::Receiver<ServiceState>)> = service
            .depends_on
            .iter()
            .filter_map(|d| {
                channels
                    .get(&d.service)
                    .map(|tx| (d.clone(), tx.subscribe()))
            })
            .collect();
        let Some(tx) = channels.get(&service.name).cloned() else {
            continue;
        };
        let task = ServiceTask {
            ctx: ctx.clone(),
            index,
            kept: kept.remove(&service.name),
            deps,
            tx,
        };
        tasks.spawn(task.run());
    }
    // Dependents only hold receivers; dropping our senders lets them notice a dependency's
    // task ending.
    drop(channels);

    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(failure)) => {
                failures.push(failure);
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failures.push(TaskFailure {
                    error: RuntimeError::Unavailable(format!("a service task crashed: {e}")),
                    because_of_dependency: false,
                });
                tasks.abort_all();
            }
        }
    }
    // Report the root cause rather than a dependent that merely noticed it.
    let root = failures
        .iter()
        .position(|f| !f.because_of_dependency)
        .unwrap_or(0);
    match failures.into_iter().nth(root) {
        Some(failure) => Err(failure.error),
        None => Ok(()),
    }
}

/// The work of bringing up one service.
struct ServiceTask {
    ctx: Arc<ApplyContext>,
    index: usize,
    /// A container kept from before, if any.
    kept: Option<Kept>,
    deps: Vec<(Dependency, watch::Receiver<ServiceState>)>,
    /// Where this service's state is published for its dependents.
    tx: watch::Sender<ServiceState>,
}

impl ServiceTask {
    fn service(&self) -> &ServiceSpec {
        &self.ctx.spec.services[self.index]
    }

    async fn run(mut self) -> Result<(), TaskFailure> {
        let (id, fresh) = match self.kept.take() {
            Some(Kept { id, start: false }) => (id, false),
            Some(Kept { id, start: true }) => {
                self.wait_for_dependencies().await?;
                self.ctx
                    .runtime
                    .start_existing(self.service(), &id)
                    .await
                    .map_err(|e| self.fail(e))?;
                (id, true)
            }
            None => {
                self.wait_for_dependencies().await?;
                let id = self
                    .ctx
                    .runtime
                    .create_and_start(&self.ctx.spec, self.service())
                    .await
                    .map_err(|e| self.fail(e))?;
                self.publish(ServiceState::Created);
                (id, true)
            }
        };
        self.wait_until_ready(&id, fresh)
            .await
            .map_err(|e| self.fail(e))
    }

    /// Publishes `state` to dependents and progress if it changed.
    fn publish(&self, state: ServiceState) {
        let changed = self.tx.send_if_modified(|current| {
            if *current == state {
                return false;
            }
            *current = state.clone();
            true
        });
        if changed {
            let (env, service) = (&self.ctx.spec.env, &self.service().name);
            tracing::debug!(%env, %service, state = %state.label(), "service state");
            (self.ctx.progress)(Progress::Service {
                service: self.service().name.clone(),
                state,
            });
        }
    }

    fn fail(&self, error: RuntimeError) -> TaskFailure {
        TaskFailure {
            error,
            because_of_dependency: false,
        }
    }

    async fn wait_for_dependencies(&mut self) -> Result<(), TaskFailure> {
        if self.deps.is_empty() {
            return Ok(());
        }
        (self.ctx.progress)(Progress::Service {
            service: self.service().name.clone(),
            state: ServiceState::Waiting,
        });
        let name = self.service().name.clone();
        let spec = &self.ctx.spec;
        let waits = self.deps.iter_mut().map(|(dep, rx)| {
            let dep_has_health = spec
                .services
                .iter()
                .any(|s| s.name == dep.service && has_healthcheck(s));
            wait_for_dependency(&name, dep, dep_has_health, rx)
        });
        try_join_all(waits)
            .await
            .map(|_| ())
            .map_err(|error| TaskFailure {
                error,
                because_of_dependency: true,
            })
    }

    /// Polls the container until it is ready, failed, or out of time. A `fresh` container
    /// (just started) without a health check must keep running for `SETTLE_TIME` first.
    async fn wait_until_ready(&self, id: &str, fresh: bool) -> Result<(), RuntimeError> {
        let service = self.service();
        let goal = Goal::of(&self.ctx.spec, service);
        let deadline = Instant::now() + self.ctx.ready_timeout;
        let mut running_since = None;
        let mut restarts_seen: Option<i64> = None;
        loop {
            let Some(info) = self.ctx.runtime.inspect_container(id).await? else {
                return Err(RuntimeError::ServiceFailed {
                    service: service.name.clone(),
                    reason: "its container was removed while starting".into(),
                });
            };
            let state = service_state(&info);
            let restarts = restart_count(&info);
            if restarts > MAX_START_RESTARTS {
                let reason = self.restart_loop_reason(id, &info, restarts).await;
                self.publish(state);
                return Err(RuntimeError::ServiceFailed {
                    service: service.name.clone(),
                    reason,
                });
            }
            // A restart since the last poll means the process died: settle again from zero.
            let restarted = restarts_seen.is_some_and(|seen| restarts > seen);
            restarts_seen = Some(restarts);
            running_since = match state {
                ServiceState::Running if !restarted => {
                    running_since.or_else(|| Some(Instant::now()))
                }
                ServiceState::Running => Some(Instant::now()),
                _ => None,
            };
            let settling =
                fresh && running_since.is_some_and(|since| since.elapsed() < SETTLE_TIME);
            match goal.check(&state) {
                // Dependents may go ahead (they see `Running`), but apply is not done yet.
                Readiness::Ready if settling => self.publish(state),
                Readiness::Ready => {
                    self.publish(state);
                    return Ok(());
                }
                Readiness::Failed => {
                    // Explain first, publish after: dependents then fail after this task does.
                    let reason = self.failure_reason(id, &state, &info).await;
                    self.publish(state);
                    return Err(RuntimeError::ServiceFailed {
                        service: service.name.clone(),
                        reason,
                    });
                }
                Readiness::Pending => self.publish(state),
            }
            if Instant::now() >= deadline {
                return Err(RuntimeError::Timeout {
                    service: service.name.clone(),
                    waiting_for: goal.describe().into(),
                    waited: self.ctx.ready_timeout,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// "it keeps exiting (exit code 3, restarted 4 times)" with the last log lines.
    async fn restart_loop_reason(
        &self,
        id: &str,
        info: &bollard::models::ContainerInspectResponse,
        restarts: i64,
    ) -> String {
        let code = info
            .state
            .as_ref()
            .and_then(|s| s.exit_code)
            .unwrap_or_default();
        let mut reason = format!("it keeps exiting (exit code {code}, restarted {restarts} times)");
        let logs = self.ctx.runtime.log_tail(id, FAILURE_LOG_LINES).await;
        if !logs.trim().is_empty() {
            reason.push_str(&format!("; last lines:\n{}", logs.trim_end()));
        }
        reason
    }

    async fn failure_reason(
        &self,
        id: &str,
        state: &ServiceState,
        info: &bollard::models::ContainerInspectResponse,
    ) -> String {
        let mut reason = match state {
            ServiceState::Exited {
                code,
                oom_killed: true,
            } => {
                format!("it exited with code {code}: out of memory (raise its memory limit)")
            }
            ServiceState::Exited { code, .. } => format!("it exited with code {code}"),
            ServiceState::Unhealthy => match last_health_output(info) {
                Some(output) => {
                    format!("it became unhealthy; the last health check said: {output}")
                }
                None => "it became unhealthy".to_string(),
            },
            other => format!("it is {}", other.label()),
        };
        let logs = self.ctx.runtime.log_tail(id, FAILURE_LOG_LINES).await;
        if !logs.trim().is_empty() {
            reason.push_str(&format!(
                "\nlast {FAILURE_LOG_LINES} log lines:\n{}",
                logs.trim_end()
            ));
        }
        reason
    }
}

/// How many times Docker restarted the container (its restart policy at work).
fn restart_count(info: &bollard::models::ContainerInspectResponse) -> i64 {
    info.restart_count.unwrap_or_default()
}

/// Waits until `dep` is met by its service's published state.
async fn wait_for_dependency(
    dependent: &ServiceName,
    dep: &Dependency,
    dep_has_health: bool,
    rx: &mut watch::Receiver<ServiceState>,
) -> Result<(), RuntimeError> {
    let failed = |why: String| RuntimeError::ServiceFailed {
        service: dependent.clone(),
        reason: format!("its dependency `{}` {why}", dep.service),
    };
    loop {
        let state = rx.borrow_and_update().clone();
        match condition_met(dep.condition, dep_has_health, &state) {
            Some(true) => return Ok(()),
            Some(false) => return Err(failed(state_failure(&state))),
            None => {}
        }
        if rx.changed().await.is_err() {
            // The dependency's task ended: its last state is final.
            let state = rx.borrow().clone();
            return match condition_met(dep.condition, dep_has_health, &state) {
                Some(true) => Ok(()),
                _ => Err(failed("did not become ready".into())),
            };
        }
    }
}

fn state_failure(state: &ServiceState) -> String {
    match state {
        ServiceState::Exited {
            code,
            oom_killed: true,
        } => format!("exited with code {code} (out of memory)"),
        ServiceState::Exited { code, .. } => format!("exited with code {code}"),
        other => format!("is {}", other.label()),
    }
}

/// Whether a dependency in `state` satisfies `condition`: `Some(true)` yes, `Some(false)`
/// never will, `None` not yet.
fn condition_met(
    condition: DependencyCondition,
    has_health: bool,
    state: &ServiceState,
) -> Option<bool> {
    use ServiceState::*;
    match (condition, state) {
        (_, Exited { code, .. }) if *code != 0 => Some(false),
        (DependencyCondition::CompletedSuccessfully, Exited { .. }) => Some(true),
        (DependencyCondition::CompletedSuccessfully, _) => None,
        (
            DependencyCondition::Started,
            Running | Starting | Healthy | Unhealthy | Exited { .. },
        ) => Some(true),
        (DependencyCondition::Healthy, Healthy) => Some(true),
        (DependencyCondition::Healthy, Running) if !has_health => Some(true),
        (DependencyCondition::Healthy, Unhealthy | Exited { .. }) => Some(false),
        _ => None,
    }
}

/// What "ready" means for a service.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Goal {
    /// A one-shot job: it must exit 0.
    Complete,
    /// It has a health check, which must pass.
    Healthy,
    Running,
}

enum Readiness {
    Ready,
    Pending,
    Failed,
}

impl Goal {
    fn of(spec: &EnvSpec, service: &ServiceSpec) -> Self {
        if service.is_one_shot(spec) {
            Goal::Complete
        } else if has_healthcheck(service) {
            Goal::Healthy
        } else {
            Goal::Running
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Goal::Complete => "completed",
            Goal::Healthy => "healthy",
            Goal::Running => "running",
        }
    }

    fn check(self, state: &ServiceState) -> Readiness {
        use ServiceState::*;
        match (self, state) {
            (_, Exited { code, .. }) if *code != 0 => Readiness::Failed,
            (_, Unhealthy) => Readiness::Failed,
            (Goal::Complete, Exited { .. }) => Readiness::Ready,
            (Goal::Complete, _) => Readiness::Pending,
            // A service that finished its work cleanly is not an error, but one that should
            // serve a health check cannot pass it any more.
            (Goal::Running, Exited { .. }) => Readiness::Ready,
            (Goal::Healthy, Exited { .. }) => Readiness::Failed,
            // An image's own HEALTHCHECK still reports health: wait for it too.
            (_, Healthy) => Readiness::Ready,
            (Goal::Running, Running) => Readiness::Ready,
            _ => Readiness::Pending,
        }
    }
}

/// The output of the most recent health check, trimmed.
fn last_health_output(info: &bollard::models::ContainerInspectResponse) -> Option<String> {
    let health = info.state.as_ref()?.health.as_ref()?;
    let output = health.log.as_ref()?.last()?.output.as_deref()?.trim();
    (!output.is_empty()).then(|| super::errors::keep_end(output, 500))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::names::{EnvName, RepoName};
    use crate::runtime::{ResourceLimits, RestartPolicy};

    fn service(name: &str, deps: &[(&str, DependencyCondition)]) -> ServiceSpec {
        ServiceSpec {
            name: ServiceName::parse(name).unwrap(),
            image: "img".into(),
            command: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            ports: vec![],
            expose: vec![],
            depends_on: deps
                .iter()
                .map(|(s, c)| Dependency {
                    service: ServiceName::parse(s).unwrap(),
                    condition: *c,
                })
                .collect(),
            healthcheck: None,
            restart: RestartPolicy::No,
            volumes: vec![],
            working_dir: None,
            user: None,
            limits: ResourceLimits {
                memory_bytes: 0,
                nano_cpus: 0,
                pids: 0,
            },
            stop_signal: None,
            stop_grace: std::time::Duration::from_secs(5),
        }
    }

    fn env(services: Vec<ServiceSpec>) -> EnvSpec {
        EnvSpec {
            env: EnvName::parse("demo-main").unwrap(),
            repo: RepoName::parse("demo").unwrap(),
            services,
            volumes: vec![],
            shared: None,
        }
    }

    #[test]
    fn cycles_and_unknown_dependencies_are_refused() {
        use DependencyCondition::Started;
        let ok = env(vec![service("a", &[("b", Started)]), service("b", &[])]);
        assert!(check_dependencies(&ok).is_ok());
        let cycle = env(vec![
            service("a", &[("b", Started)]),
            service("b", &[("a", Started)]),
        ]);
        let err = check_dependencies(&cycle).unwrap_err().to_string();
        assert!(err.contains("a -> b -> a"), "{err}");
        let unknown = env(vec![service("a", &[("x", Started)])]);
        assert!(check_dependencies(&unknown)
            .unwrap_err()
            .to_string()
            .contains("`x`"));
    }

    #[test]
    fn dependency_conditions() {
        use DependencyCondition::*;
        let exited = |code| ServiceState::Exited {
            code,
            oom_killed: false,
        };
        assert_eq!(
            condition_met(Started, false, &ServiceState::Running),
            Some(true)
        );
        assert_eq!(condition_met(Started, false, &ServiceState::Created), None);
        assert_eq!(condition_met(Healthy, true, &ServiceState::Running), None);
        assert_eq!(
            condition_met(Healthy, false, &ServiceState::Running),
            Some(true)
        );
        assert_eq!(
            condition_met(Healthy, true, &ServiceState::Healthy),
            Some(true)
        );
        assert_eq!(
            condition_met(CompletedSuccessfully, false, &ServiceState::Running),
            None
        );
        assert_eq!(
            condition_met(CompletedSuccessfully, false, &exited(0)),
            Some(true)
        );
        assert_eq!(
            condition_met(CompletedSuccessfully, false, &exited(2)),
            Some(false)
        );
        assert_eq!(condition_met(Started, false, &exited(1)), Some(false));
    }

    #[test]
    fn readiness_goals() {
        let exited = |code| ServiceState::Exited {
            code,
            oom_killed: false,
        };
        assert!(matches!(
            Goal::Complete.check(&ServiceState::Running),
            Readiness::Pending
        ));
        assert!(matches!(Goal::Complete.check(&exited(0)), Readiness::Ready));
        assert!(matches!(
            Goal::Complete.check(&exited(1)),
            Readiness::Failed
        ));
        assert!(matches!(
            Goal::Healthy.check(&ServiceState::Running),
            Readiness::Pending
        ));
        assert!(matches!(
            Goal::Healthy.check(&ServiceState::Starting),
            Readiness::Pending
        ));
        assert!(matches!(
            Goal::Healthy.check(&ServiceState::Healthy),
            Readiness::Ready
        ));
        assert!(matches!(
            Goal::Healthy.check(&ServiceState::Unhealthy),
            Readiness::Failed
        ));
        assert!(matches!(
            Goal::Running.check(&ServiceState::Running),
            Readiness::Ready
        ));
        assert!(matches!(
            Goal::Running.check(&ServiceState::Restarting),
            Readiness::Pending
        ));
        assert!(matches!(Goal::Running.check(&exited(0)), Readiness::Ready));
    }

    #[test]
    fn stopped_containers_are_started_again_and_succeeded_jobs_kept() {
        use DependencyCondition::CompletedSuccessfully;
        let spec = env(vec![
            service("migrate", &[]),
            service("web", &[("migrate", CompletedSuccessfully)]),
        ]);
        let migrate = &spec.services[0];
        let observed = |state| ObservedService {
            name: migrate.name.clone(),
            container_id: "x".into(),
            spec_hash: migrate.spec_hash(),
            state,
            ports: vec![],
            address: None,
        };
        let exited = |code| ServiceState::Exited {
            code,
            oom_killed: false,
        };
        assert_eq!(keepable(&spec, migrate, &observed(exited(0))), Some(false));
        assert_eq!(keepable(&spec, migrate, &observed(exited(1))), Some(true));
        assert_eq!(
            keepable(&spec, migrate, &observed(ServiceState::Running)),
            Some(false)
        );
        let web = &spec.services[1];
        let mut stopped = observed(exited(143));
        stopped.name = web.name.clone();
        stopped.spec_hash = web.spec_hash();
        assert_eq!(
            keepable(&spec, web, &stopped),
            Some(true),
            "a stopped service of the same spec is started again, not recreated"
        );
        let web = &spec.services[1];
        let mut stale = observed(ServiceState::Running);
        stale.name = web.name.clone();
        assert!(
            keepable(&spec, web, &stale).is_none(),
            "a different spec hash means replace"
        );
    }
}
