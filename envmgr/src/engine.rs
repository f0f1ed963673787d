//! The engine's front door for surfaces: validate a request, record intent in the store,
//! nudge the reconciler, answer. Nothing here touches a container.

use std::sync::Arc;
use std::time::Duration;

use crate::names::{BranchName, CommitSha, EnvName, NameError, RepoName, ServiceName};
use crate::reconciler::{self, ReconcilerHandle};
use crate::runtime::{LogOptions, LogStream, Runtime, RuntimeError};
use crate::settings::EngineSettings;
use crate::store::{EnvRecord, Event, PullRequestSource, Store, StoreError, TestRun, UpRequest};

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
}

#[derive(Clone)]
pub struct Engine {
    settings: Arc<EngineSettings>,
    store: Store,
    runtime: Arc<dyn Runtime>,
    reconciler: ReconcilerHandle,
}

impl Engine {
    /// Starts the reconciler; envs left mid-way by a previous process are picked up at once.
    pub fn start(settings: EngineSettings, store: Store, runtime: Arc<dyn Runtime>) -> Self {
        let settings = Arc::new(settings);
        let reconciler = reconciler::spawn(settings.clone(), store.clone(), runtime.clone());
        crate::testrun::spawn(settings.clone(), store.clone(), runtime.clone());
        Self {
            settings,
            store,
            runtime,
            reconciler,
        }
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Asks for an env of `branch` of `repo` (new, or moved to the branch's newest commit).
    pub async fn up(
        &self,
        repo: &str,
        branch: &str,
        ttl: Option<Duration>,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let repo = self.known_repo(repo)?;
        let branch = BranchName::parse(branch)?;
        let ttl = checked_ttl(ttl.unwrap_or(repo.default_ttl))?;
        let name = EnvName::for_branch(&repo.name, &branch);
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
        number: u64,
        head: CommitSha,
        head_ref: &str,
        ttl: Option<Duration>,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let repo = self.known_repo(repo.as_str())?;
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
                number: number as i64,
                git_ref: format!("refs/pull/{number}/head"),
                head,
            }),
        };
        self.request_up(request).await
    }

    async fn request_up(&self, request: UpRequest) -> Result<EnvRecord, EngineError> {
        let record = self.store.request_up(&request).await?;
        self.reconciler.nudge(&request.name);
        Ok(record)
    }

    /// Asks for the env to be deleted.
    pub async fn down(&self, env: &str, actor: &str) -> Result<EnvRecord, EngineError> {
        let name = EnvName::parse(env)?;
        let record = self
            .store
            .request_down(&name, actor, &format!("asked by {actor}"))
            .await?;
        let record = record.ok_or_else(|| EngineError::NotFound(env.to_string()))?;
        self.reconciler.nudge(&name);
        Ok(record)
    }

    /// Gives the env more time to live (at most [`MAX_TTL`] from now).
    pub async fn extend(
        &self,
        env: &str,
        by: Duration,
        actor: &str,
    ) -> Result<EnvRecord, EngineError> {
        let name = EnvName::parse(env)?;
        match self.store.extend(&name, by, MAX_TTL, actor).await? {
            Some(record) => {
                self.reconciler.nudge(&name);
                Ok(record)
            }
            None => match self.store.get(&name).await? {
                Some(_) => Err(EngineError::Deleted(env.to_string())),
                None => Err(EngineError::NotFound(env.to_string())),
            },
        }
    }

    pub async fn list(&self, include_deleted: bool) -> Result<Vec<EnvRecord>, EngineError> {
        Ok(self.store.list(include_deleted).await?)
    }

    pub async fn get(&self, env: &str) -> Result<EnvRecord, EngineError> {
        let name = EnvName::parse(env)?;
        self.store
            .get(&name)
            .await?
            .ok_or_else(|| EngineError::NotFound(env.to_string()))
    }

    pub async fn status(&self, env: &str) -> Result<EnvStatus, EngineError> {
        let record = self.get(env).await?;
        let events = self.store.recent_events(&record.name, 20).await?;
        let latest_run = self.store.runs(&record.name, 1).await?.into_iter().next();
        Ok(EnvStatus {
            env: record,
            events,
            latest_run,
        })
    }

    pub async fn events(&self, env: &str, after: i64) -> Result<Vec<Event>, EngineError> {
        let record = self.get(env).await?;
        Ok(self.store.events(&record.name, after, 500).await?)
    }

    pub async fn logs(
        &self,
        env: &str,
        service: Option<&str>,
        options: LogOptions,
    ) -> Result<LogStream, EngineError> {
        let record = self.get(env).await?;
        if record.phase == crate::store::Phase::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        let service = service.map(ServiceName::parse).transpose()?;
        Ok(self
            .runtime
            .logs(&record.name, service.as_ref(), options)
            .await?)
    }

    /// Queues a run of the env's integration tests (only those that failed last time with
    /// `failed_only`).
    pub async fn request_test(
        &self,
        env: &str,
        failed_only: bool,
        actor: &str,
    ) -> Result<TestRun, EngineError> {
        let record = self.get(env).await?;
        if record.desired == crate::store::Desired::Deleted {
            return Err(EngineError::Deleted(env.to_string()));
        }
        let commit = record.commit.as_ref().map(|c| c.to_string());
        Ok(self
            .store
            .insert_run(
                &record.name,
                commit.as_deref(),
                "manual",
                actor,
                failed_only,
            )
            .await?)
    }

    /// The env's test runs, newest first.
    pub async fn runs(&self, env: &str, limit: i64) -> Result<Vec<TestRun>, EngineError> {
        let record = self.get(env).await?;
        Ok(self.store.runs(&record.name, limit).await?)
    }

    pub async fn run(&self, env: &str, id: i64) -> Result<TestRun, EngineError> {
        let record = self.get(env).await?;
        match self.store.get_run(id).await? {
            Some(run) if run.env == record.name.as_str() => Ok(run),
            _ => Err(EngineError::NoSuchRun(id)),
        }
    }

    /// Where the full log of a run is, if it is still kept.
    pub async fn run_log(&self, env: &str, id: i64) -> Result<std::path::PathBuf, EngineError> {
        let run = self.run(env, id).await?;
        let name = EnvName::parse(&run.env)?;
        let path = crate::testrun::run_log_path(&self.settings, &name, id);
        if run.log_path.is_none() || !path.exists() {
            return Err(EngineError::NoLog(id));
        }
        Ok(path)
    }

    fn known_repo(&self, repo: &str) -> Result<&crate::settings::RepoSettings, EngineError> {
        let unknown = || EngineError::UnknownRepo {
            repo: repo.to_string(),
            known: self
                .settings
                .repos
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        let name = RepoName::parse(repo).map_err(|_| unknown())?;
        self.settings.repo(&name).ok_or_else(unknown)
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
