//! The engine's front door for surfaces: validate a request, record intent in the store,
//! nudge the reconciler, answer. Nothing here touches a container.

use std::sync::Arc;
use std::time::Duration;

use crate::controller::{self, ControllerMetrics, ControllerSettings, NudgeBus, Nudger};
use crate::git::GitMirrors;
use crate::names::{BranchName, CommitSha, EnvName, NameError, PrNumber, RepoName, ServiceName};
use crate::reconciler::EnvReconciler;
use crate::runtime::{LogOptions, LogStream, Runtime, RuntimeError};
use crate::secrets::Redactors;
use crate::settings::EngineSettings;
use crate::snippet::{LineRedactor, Redactor};
use crate::store::{
    EnvRecord, Event, PullRequestSource, RunTrigger, Store, StoreError, TestRun, UpRequest,
};
use crate::testrun::TestRunner;

/// Longest TTL anyone may ask for, so forgotten envs always end.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown repo `{repo}`; configured repos: {known}")]
    UnknownRepo { repo: String, known: String },
    #[error("no environment named `{0}`; `slipway env list` shows the existing ones")]
    NotFound(String),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("ttl {0} is too long: at most {max}", max = humantime::format_duration(MAX_TTL))]
    TtlTooLong(String),
    #[error("environment `{0}` is deleted; `env up` creates it again")]
    Deleted(String),
    #[error("no test run {0} in this environment; `slipway test <env>` starts one")]
    NoSuchRun(i64),
    #[error("the log of test run {0} is no longer kept (or the run has not started)")]
    NoLog(i64),
    #[error("environment `{env}` is {phase}: only a Ready (or Degraded) env can sleep")]
    CannotSleep { env: String, phase: &'static str },
    /// Something a repo's shared env does not do (sleep, expire, be deleted while in use).
    #[error("`{env}` is the shared env of repo `{repo}` (its shared services, once for every env of the repo): {why}")]
    SharedEnv {
        env: String,
        repo: String,
        why: String,
    },
    /// A new env past a quota (`max_envs`, per repo or per user, or `max_memory`).
    #[error("{0}; `slipway env down <env>` makes room")]
    QuotaExceeded(crate::store::QuotaRefusal),
    /// A rollout request that cannot be done as asked; the text says what to do instead.
    #[error("{0}")]
    Rollout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// An env with its recent timeline, as `env status` shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EnvStatus {
    #[serde(flatten)]
    pub env: EnvRecord,
    pub events: Vec<Event>,
    /// The newest integration test run, if any.
    #[serde(default)]
    pub latest_run: Option<TestRun>,
    /// How long nothing has used it (no deploy, command or request), in milliseconds.
    #[serde(default)]
    pub idle_ms: i64,
}

#[derive(Clone)]
pub struct Engine {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    /// Nudges the env controller (on whichever replica holds the env).
    envs: Nudger,
    /// Nudges the test-run controller.
    test_runs: Nudger,
    /// How this process's controllers take part among the replicas; a surface's own
    /// controllers (deliveries, pull requests) run with the same.
    controllers: ControllerSettings,
    /// This process's one nudge bus, shared by every controller in it.
    bus: NudgeBus,
    metrics: Arc<ControllerMetrics>,
    /// Every text this engine hands out about an env passes through these.
    redactors: Arc<Redactors>,
    /// The guards and metric judges the rollout reconciler asks (surfaces plug theirs in).
    rollout_checks: crate::rollout::RolloutChecks,
}

impl Engine {
    /// Starts the controllers (envs, test runs); work left mid-way by a previous process, or
    /// by a replica that died, is picked up at once. On Postgres, several replicas may run
    /// an engine on one store: each key is worked by one of them at a time.
    pub async fn start(
        settings: EngineSettings,
        store: Store,
        runtime: Arc<dyn Runtime>,
    ) -> Result<Self, crate::store::StoreError> {
        let settings = Arc::new(settings);
        let controllers = ControllerSettings {
            holder: ControllerSettings::holder_name(),
            lease_ttl: settings.lease_ttl,
            resync_interval: settings.resync_interval,
        };
        // One process per SQLite store: leases of a killed predecessor need not run out.
        if store.backend() == crate::store::Backend::Sqlite {
            let released = store.release_all_leases().await?;
            if released > 0 {
                tracing::info!(
                    leases = released,
                    "released leases left by the previous process"
                );
            }
        }
        let bus = NudgeBus::for_store(&store, &controllers.holder).await?;
        let metrics = Arc::new(ControllerMetrics::new());
        let test_runs = controller::spawn(
            TestRunner::new(settings.clone(), store.clone(), runtime.clone()),
            store.clone(),
            controllers.clone(),
            bus.clone(),
            metrics.clone(),
        );
        let envs = controller::spawn(
            EnvReconciler::new(
                settings.clone(),
                store.clone(),
                runtime.clone(),
                test_runs.clone(),
                bus.clone(),
            ),
            store.clone(),
            controllers.clone(),
            bus.clone(),
            metrics.clone(),
        );
        let redactors = Arc::new(Redactors::new(&settings));
        let rollout_checks = crate::rollout::RolloutChecks::default();
        controller::spawn(
            crate::rollout::RolloutReconciler::new(
                settings.clone(),
                store.clone(),
                runtime.clone(),
                redactors.clone(),
                bus.clone(),
                rollout_checks.clone(),
            ),
            store.clone(),
            controllers.clone(),
            bus.clone(),
            metrics.clone(),
        );
        Ok(Self {
            settings,
            store,
            runtime,
            envs,
            test_runs,
            controllers,
            bus,
            metrics,
            redactors,
            rollout_checks,
        })
    }

    /// Where surfaces plug in rollout guards (windows, alerts) and metric judges.
    pub fn rollout_checks(&self) -> &crate::rollout::RolloutChecks {
        &self.rollout_checks
    }

    /// The controllers' figures, for `/metrics`; a surface's controllers add theirs.
    pub fn metrics(&self) -> &Arc<ControllerMetrics> {
        &self.metrics
    }

    /// The holder name, lease TTL and resync interval this process's controllers use.
    pub fn controller_settings(&self) -> &ControllerSettings {
        &self.controllers
    }

    /// Starts a surface's controller beside the engine's: same store, settings, nudge bus
    /// (one per process, so one `LISTEN` connection) and metrics.
    pub fn spawn_controller<R: controller::Reconciler>(&self, reconciler: R) -> Nudger {
        controller::spawn(
            reconciler,
            self.store.clone(),
            self.controllers.clone(),
            self.bus.clone(),
            self.metrics.clone(),
        )
    }

    /// Nudges a key of the controller of `kind`, wherever it runs.
    pub fn nudge(&self, kind: &str, key: &str) {
        self.bus.nudge(kind, key);
    }

    /// Nudges the submit queue `key` (`<repo>/<target>`).
    pub fn nudge_queue(&self, key: &str) {
        self.nudge(crate::queue::QUEUE_KIND, key);
    }

    /// The repos' git mirrors (operations on one mirror are serialised, across processes too).
    pub fn git(&self) -> GitMirrors {
        GitMirrors::new(&self.settings.data_dir)
    }

    /// Asks for the env of a submit-queue candidate: exactly `commit`, a commit Slipway built
    /// in the mirror, under `name` and a branch of Slipway's own (`slipway-queue/<id>`).
    pub async fn up_candidate(
        &self,
        repo: &RepoName,
        name: EnvName,
        branch: BranchName,
        commit: &CommitSha,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let repo = self.known_repo(repo)?;
        let request = UpRequest {
            name,
            repo: repo.name.clone(),
            branch,
            // Candidates are deleted as soon as the queue is done with them; the TTL is a
            // backstop against a queue that stopped caring.
            ttl: Duration::from_secs(24 * 3600),
            actor: actor.to_string(),
            pull_request: None,
        };
        let record = self.store.request_candidate_up(&request, commit).await?;
        self.envs.nudge(request.name.as_str());
        Ok(record)
    }

    /// The redaction every text about an env goes through before it leaves Slipway.
    pub fn redactors(&self) -> &Arc<Redactors> {
        &self.redactors
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A configured repo, by the name people give it.
    pub fn repo(&self, name: &str) -> Result<RepoName, EngineError> {
        match RepoName::parse(name) {
            Ok(repo) => Ok(self.known_repo(&repo)?.name.clone()),
            // Not even a repo's shape: the answer is the same, with the repos there are.
            Err(_) => Err(self.unknown_repo(name)),
        }
    }

    /// Asks for an env of `branch` of `repo` (new, or moved to the branch's newest commit).
    pub async fn up(
        &self,
        repo: &RepoName,
        branch: &BranchName,
        ttl: Option<Duration>,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let repo = self.known_repo(repo)?;
        let branch = branch.clone();
        let ttl = checked_ttl(ttl.unwrap_or(repo.default_ttl))?;
        let mut name = EnvName::for_branch(&repo.name, &branch);
        // Branch `production` of a repo with a `production` channel must not take the
        // channel's release env (or its canary's) name.
        if repo
            .channels
            .iter()
            .any(|c| c.release_env(&repo.name) == name || c.canary_env(&repo.name) == name)
        {
            name = EnvName::for_branch_hashed(&repo.name, &branch);
        }
        let request = UpRequest {
            name,
            repo: repo.name.clone(),
            branch,
            ttl,
            actor: actor.to_string(),
            pull_request: None,
        };
        self.request_up(request).await
    }

    /// Asks for the env of pull request `number` at exactly commit `head` (a newer head
    /// supersedes an older one). `head_ref` is the PR's branch, shown to people.
    pub async fn up_pull_request(
        &self,
        repo: &RepoName,
        number: PrNumber,
        head: CommitSha,
        head_ref: &str,
        ttl: Option<Duration>,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let repo = self.known_repo(repo)?;
        let ttl = checked_ttl(ttl.unwrap_or(repo.default_ttl))?;
        let branch = BranchName::parse(head_ref)
            .or_else(|_| BranchName::parse(&format!("pull/{number}")))?;
        let request = UpRequest {
            name: EnvName::for_pull_request(&repo.name, number),
            repo: repo.name.clone(),
            branch,
            ttl,
            actor: actor.to_string(),
            pull_request: Some(PullRequestSource {
                number,
                git_ref: format!("refs/pull/{number}/head"),
                head,
            }),
        };
        self.request_up(request).await
    }

    /// Records an `up` from a person (or a pull request): a new env must fit the quotas.
    async fn request_up(&self, request: UpRequest) -> Result<EnvRecord, EngineError> {
        let limits = self.quota_limits(&request.repo);
        let record = match self.store.request_up_within(&request, &limits).await {
            Ok(record) => record,
            Err(StoreError::QuotaExceeded(refusal)) => {
                return Err(EngineError::QuotaExceeded(refusal))
            }
            Err(e) => return Err(e.into()),
        };
        self.envs.nudge(request.name.as_str());
        Ok(record)
    }

    /// The deadline people were warned `env` will be deleted at, while the warning holds.
    pub fn deletion_warning(
        &self,
        env: &EnvRecord,
    ) -> Option<crate::reconciler::idle::DeletionWarning> {
        let repo = self.settings.repo(&env.repo)?;
        crate::reconciler::idle::warned_deadline(env, &repo.idle)
    }

    /// Asks for the env to be deleted. A repo's shared env is refused while any wanted env
    /// of the repo reaches its services (they would lose them); once none does, it goes like
    /// any env, and the next env that needs it creates it again.
    pub async fn down(&self, env: &EnvName, actor: &str) -> Result<EnvRecord, EngineError> {
        if let Some(record) = self.store.get(env).await? {
            if record.name.is_shared_of(&record.repo) {
                let users = self.store.shared_users(&record.repo).await?;
                if !users.is_empty() {
                    let names: Vec<&str> = users.iter().map(EnvName::as_str).collect();
                    return Err(self.shared_refusal(
                        &record,
                        format!(
                            "{} still use it; delete those first (`env down <env>`)",
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
        let record = self
            .store
            .request_down(env, actor, &format!("asked by {actor}"))
            .await?;
        let record = record.ok_or_else(|| EngineError::NotFound(env.to_string()))?;
        self.envs.nudge(env.as_str());
        Ok(record)
    }

    /// Gives the env more time to live (at most [`MAX_TTL`] from now).
    pub async fn extend(
        &self,
        env: &EnvName,
        by: Duration,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let name = env;
        if let Some(record) = self.store.get(name).await? {
            if record.name.is_shared_of(&record.repo) {
                let why = "it has no time to live to extend; it stays until `env down`";
                return Err(self.shared_refusal(&record, why.into()));
            }
        }
        // Anything past the cap is the cap: the store clamps the expiry to now + MAX_TTL, so
        // a huge `--by` can neither overflow nor wrap into "expires now".
        let by = by.min(MAX_TTL);
        match self.store.extend(name, by, MAX_TTL, actor).await? {
            Some(record) => {
                self.envs.nudge(name.as_str());
                Ok(record)
            }
            None => match self.store.get(name).await? {
                Some(_) => Err(EngineError::Deleted(env.to_string())),
                None => Err(EngineError::NotFound(env.to_string())),
            },
        }
    }

    /// The envs, their texts redacted.
    pub async fn list(&self, include_deleted: bool) -> Result<Vec<EnvRecord>, EngineError> {
        let mut envs = Vec::new();
        for env in self.store.list(include_deleted).await? {
            envs.push(self.redactors.env(env).await);
        }
        Ok(envs)
    }

    /// The env, its texts (reason, warnings) redacted.
    pub async fn get(&self, env: &EnvName) -> Result<EnvRecord, EngineError> {
        let record = self
            .store
            .get(env)
            .await?
            .ok_or_else(|| EngineError::NotFound(env.to_string()))?;
        Ok(self.redactors.env(record).await)
    }

    /// Makes sure the env is on its way to serving: a sleeping env is woken (one wake however
    /// many callers ask: the first flips it, the rest find it awake), a running one is left as
    /// it is. The front door calls this for a request to an env that is not serving, then
    /// waits for Ready. A wake is a use: the env does not fall straight back asleep. Returns
    /// the env as it is after the request.
    pub async fn wake(&self, env: &EnvName, actor: &str) -> Result<EnvRecord, EngineError> {
        let record = self.get(env).await?;
        if record.desired == crate::store::Desired::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        self.store
            .record_command(&record.name, crate::store::now_ms())
            .await?;
        if self
            .store
            .request_wake(&record.name, actor, &format!("asked by {actor}"))
            .await?
        {
            tracing::info!(env = %env, actor, "waking up");
        }
        self.envs.nudge(env.as_str());
        self.get(env).await
    }

    /// Puts a serving env to sleep: its containers are stopped, its network and volumes
    /// kept, until a wake (`env wake`, `env up`, a request through the front door).
    pub async fn sleep(&self, env: &EnvName, actor: &str) -> Result<EnvRecord, EngineError> {
        use crate::store::Phase;
        let record = self.get(env).await?;
        if record.desired == crate::store::Desired::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        if record.name.is_shared_of(&record.repo) {
            let why = "it never sleeps, since every env of the repo relies on it";
            return Err(self.shared_refusal(&record, why.into()));
        }
        if !matches!(
            record.phase,
            Phase::Ready | Phase::Degraded | Phase::Sleeping
        ) {
            return Err(EngineError::CannotSleep {
                env: env.to_string(),
                phase: record.phase.as_str(),
            });
        }
        self.store
            .request_sleep(&record.name, actor, &format!("asked by {actor}"))
            .await?;
        self.envs.nudge(env.as_str());
        self.get(env).await
    }

    /// Pins the env (`pinned`), so it never sleeps nor is deleted for being idle, or unpins it.
    pub async fn pin(
        &self,
        env: &EnvName,
        pinned: bool,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let record = self.get(env).await?;
        if record.desired == crate::store::Desired::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        if !pinned && record.name.is_shared_of(&record.repo) {
            let why = "it is always pinned: it never sleeps nor goes for being idle";
            return Err(self.shared_refusal(&record, why.into()));
        }
        let record = self
            .store
            .set_pinned(&record.name, pinned, actor)
            .await?
            .ok_or_else(|| EngineError::NotFound(env.to_string()))?;
        self.envs.nudge(env.as_str());
        Ok(self.redactors.env(record).await)
    }

    /// Records that a command named `env` (a sign of use that keeps it awake and alive). An
    /// env that does not exist is no error: the command itself will say so.
    pub async fn record_use(&self, env: &EnvName) -> Result<(), EngineError> {
        self.store
            .record_command(env, crate::store::now_ms())
            .await?;
        Ok(())
    }

    /// Records that `branch` of `repo` was deleted (a forge said so): its branch envs are
    /// deleted after a warning, unless the branch comes back (the resync checks the repo
    /// itself too). Returns the envs marked now.
    pub async fn branch_deleted(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<Vec<EnvName>, EngineError> {
        let now = crate::store::now_ms();
        let mut marked = Vec::new();
        for env in self.store.list(false).await? {
            let of_branch = &env.repo == repo
                && env.branch.as_str() == branch
                && env.pull_request.is_none()
                && env.candidate.is_none();
            if of_branch
                && self
                    .store
                    .record_branch_presence(&env.name, Some(now))
                    .await?
            {
                marked.push(env.name);
            }
        }
        Ok(marked)
    }

    /// The env with its recent events and latest run, every text redacted.
    pub async fn status(&self, env: &EnvName) -> Result<EnvStatus, EngineError> {
        let record = self.get(env).await?;
        let events = self.store.recent_events(&record.name, 20).await?;
        let events = self.redactors.events(&record, events).await;
        let latest_run = match self.store.runs(&record.name, 1).await?.into_iter().next() {
            Some(run) => Some(self.redactors.run(&record, run).await),
            None => None,
        };
        let idle_ms = record
            .idle
            .idle_for(record.created_at, crate::store::now_ms())
            .as_millis() as i64;
        Ok(EnvStatus {
            env: record,
            events,
            latest_run,
            idle_ms,
        })
    }

    /// The env's events after id `after`, their messages redacted.
    pub async fn events(&self, env: &EnvName, after: i64) -> Result<Vec<Event>, EngineError> {
        let record = self.get(env).await?;
        let events = self.store.events(&record.name, after, 500).await?;
        Ok(self.redactors.events(&record, events).await)
    }

    pub async fn logs(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        options: LogOptions,
    ) -> Result<LogStream, EngineError> {
        let record = self.get(env).await?;
        if record.phase == crate::store::Phase::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        let stream = self.runtime.logs(&record.name, service, options).await?;
        let redactor = self.redactors.for_env(&record).await;
        Ok(redacting(stream, (*redactor).clone()))
    }

    /// Queues a run of the env's integration tests (only those that failed last time with
    /// `failed_only`).
    pub async fn request_test(
        &self,
        env: &EnvName,
        failed_only: bool,
        actor: &str,
    ) -> Result<TestRun, EngineError> {
        let record = self.get(env).await?;
        if record.desired == crate::store::Desired::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        let run = self
            .store
            .insert_run(
                &record.name,
                record.commit.as_ref(),
                RunTrigger::Manual,
                actor,
                failed_only,
            )
            .await?;
        self.test_runs.nudge(record.name.as_str());
        Ok(run)
    }

    /// The env's test runs, newest first, their texts redacted.
    pub async fn runs(&self, env: &EnvName, limit: i64) -> Result<Vec<TestRun>, EngineError> {
        let record = self.get(env).await?;
        let mut runs = Vec::new();
        for run in self.store.runs(&record.name, limit).await? {
            runs.push(self.redactors.run(&record, run).await);
        }
        Ok(runs)
    }

    /// One test run of the env, its texts redacted.
    pub async fn run(&self, env: &EnvName, id: i64) -> Result<TestRun, EngineError> {
        let record = self.get(env).await?;
        match self.store.get_run(id).await? {
            Some(run) if run.env == record.name => Ok(self.redactors.run(&record, run).await),
            _ => Err(EngineError::NoSuchRun(id)),
        }
    }

    /// The full log of a run, decompressed and redacted (with the secrets at the run's
    /// commit) as it is read.
    pub async fn run_log_stream(&self, env: &EnvName, id: i64) -> Result<LogStream, EngineError> {
        let record = self.get(env).await?;
        let run = self.run(env, id).await?;
        let path = self.run_log(env, id).await?;
        let redactor = self
            .redactors
            .for_commit(&record.repo, run.commit.as_ref().or(record.commit.as_ref()))
            .await;
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, RuntimeError>>(8);
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let failed = |e: std::io::Error| {
                RuntimeError::Unavailable(format!("cannot read the run's log: {e}"))
            };
            let file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e) => {
                    let _ = tx.blocking_send(Err(failed(e)));
                    return;
                }
            };
            let mut decoder = flate2::read::GzDecoder::new(file);
            let mut buffer = vec![0; 64 * 1024];
            loop {
                match decoder.read(&mut buffer) {
                    Ok(0) => return,
                    Ok(n) => {
                        let chunk = bytes::Bytes::copy_from_slice(&buffer[..n]);
                        if tx.blocking_send(Ok(chunk)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(failed(e)));
                        return;
                    }
                }
            }
        });
        let raw = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(redacting(Box::pin(raw), (*redactor).clone()))
    }

    /// Where the full log of a run is, if it is still kept. The file is not redacted:
    /// surfaces serve [`Engine::run_log_stream`].
    pub async fn run_log(&self, env: &EnvName, id: i64) -> Result<std::path::PathBuf, EngineError> {
        let run = self.run(env, id).await?;
        let path = crate::testrun::run_log_path(&self.settings, &run.env, id);
        if run.log_path.is_none() || !path.exists() {
            return Err(EngineError::NoLog(id));
        }
        Ok(path)
    }

    /// The caps a new env of `repo` must fit. Queue candidates (`up_candidate`) are not
    /// checked: the submit queue must be able to test what is in line; they count toward
    /// the repo's, the installation's and the memory caps others meet, not a person's.
    fn quota_limits(&self, repo: &RepoName) -> crate::store::QuotaLimits {
        let quotas = &self.settings.quotas;
        crate::store::QuotaLimits {
            repo_max_envs: self.settings.repo(repo).and_then(|r| r.max_envs),
            max_envs: quotas.max_envs,
            max_envs_per_user: quotas.max_envs_per_user,
            max_memory: quotas.max_memory,
        }
    }

    fn shared_refusal(&self, env: &EnvRecord, why: String) -> EngineError {
        EngineError::SharedEnv {
            env: env.name.to_string(),
            repo: env.repo.to_string(),
            why,
        }
    }

    fn known_repo(&self, repo: &RepoName) -> Result<&crate::settings::RepoSettings, EngineError> {
        self.settings
            .repo(repo)
            .ok_or_else(|| self.unknown_repo(repo.as_str()))
    }

    fn unknown_repo(&self, repo: &str) -> EngineError {
        EngineError::UnknownRepo {
            repo: repo.to_string(),
            known: self
                .settings
                .repos
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// `stream` redacted line by line: a line leaves only once whole (or at the end), so a
/// secret split across chunks is still found; with `follow`, each line as it completes.
fn redacting(stream: LogStream, redactor: Redactor) -> LogStream {
    use futures_util::StreamExt;
    let state = (stream, LineRedactor::new(redactor), false);
    Box::pin(futures_util::stream::unfold(
        state,
        |(mut stream, mut lines, mut done)| async move {
            loop {
                if done {
                    return None;
                }
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let out = lines.push(&chunk);
                        if !out.is_empty() {
                            return Some((Ok(bytes::Bytes::from(out)), (stream, lines, done)));
                        }
                    }
                    Some(Err(e)) => {
                        // The error ends the stream; a partial line held back is dropped
                        // rather than shown unchecked.
                        done = true;
                        return Some((Err(e), (stream, lines, done)));
                    }
                    None => {
                        done = true;
                        let out = lines.finish();
                        if !out.is_empty() {
                            return Some((Ok(bytes::Bytes::from(out)), (stream, lines, done)));
                        }
                    }
                }
            }
        },
    ))
}

/// `" (capped at 30 days)"` when an env's expiry sits at the [`MAX_TTL`] cap (so an `extend`
/// reply says why it got less than it asked for), else `""`.
pub fn extend_cap_note(expires_at_ms: i64) -> &'static str {
    let cap = crate::store::now_ms().saturating_add(MAX_TTL.as_millis() as i64);
    if expires_at_ms.saturating_add(120_000) >= cap {
        " (capped at 30 days)"
    } else {
        ""
    }
}

/// Refuses a TTL above [`MAX_TTL`].
fn checked_ttl(ttl: Duration) -> Result<Duration, EngineError> {
    if ttl > MAX_TTL {
        return Err(EngineError::TtlTooLong(
            humantime::format_duration(ttl).to_string(),
        ));
    }
    Ok(ttl)
}
