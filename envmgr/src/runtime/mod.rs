//! Where environments run. The engine describes what it wants (`EnvSpec`), the runtime
//! compares that with what exists (`fetch`) and converges (`apply`, `destroy`). Everything a
//! runtime creates carries labels naming its Slipway instance, env, repo and service, so
//! resources without a store row can always be found and reaped.

pub mod docker;
pub mod fake;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::names::{EnvName, RepoName, ServiceName};

/// Label keys put on every container, network, volume and built image.
pub mod labels {
    /// Which Slipway installation owns the resource (one per store).
    pub const INSTANCE: &str = "dev.slipway.instance";
    pub const ENV: &str = "dev.slipway.env";
    pub const REPO: &str = "dev.slipway.repo";
    pub const SERVICE: &str = "dev.slipway.service";
    pub const SPEC_HASH: &str = "dev.slipway.spec-hash";
    /// On one-shot job containers (test runs): the job's id. Jobs are not services.
    pub const JOB: &str = "dev.slipway.job";
}

/// Everything one environment should consist of.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EnvSpec {
    pub env: EnvName,
    pub repo: RepoName,
    /// Services in the order the compose file lists them.
    pub services: Vec<ServiceSpec>,
    /// Named volumes (the compose file's names); each env gets its own copy.
    pub volumes: Vec<String>,
    /// Services of another env (the repo's shared env) this env reaches under their names.
    #[serde(default)]
    pub shared: Option<SharedServices>,
}

/// Services another env runs that an env's services reach by name: the runtime puts them on
/// the env's network under their service name, and takes them off again (never removing
/// them) when the env is destroyed or stops wanting them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedServices {
    /// The env that runs them.
    pub env: EnvName,
    pub services: Vec<ServiceName>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServiceSpec {
    pub name: ServiceName,
    /// An image reference that exists locally (built) or can be pulled.
    pub image: String,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    /// Container ports published on free host ports and reported as URLs.
    pub ports: Vec<PortSpec>,
    /// Container ports reachable from the env's other services only.
    pub expose: Vec<PortSpec>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<HealthcheckSpec>,
    pub restart: RestartPolicy,
    pub volumes: Vec<VolumeMount>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub limits: ResourceLimits,
    /// Signal sent to stop the container (compose `stop_signal`); Docker's default when `None`.
    pub stop_signal: Option<String>,
    /// How long a stopping container may take before it is killed (compose
    /// `stop_grace_period`, capped by `[limits] max_stop_grace`).
    #[serde(with = "duration_millis")]
    pub stop_grace: Duration,
}

impl ServiceSpec {
    /// Identifies this exact service definition: equal hashes mean the running container
    /// can be kept as it is.
    pub fn spec_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).expect("service specs always serialize");
        hex::encode(&Sha256::digest(&canonical)[..8])
    }

    /// A service with `restart: "no"` that others wait on to complete is a one-shot job.
    pub fn is_one_shot(&self, env: &EnvSpec) -> bool {
        env.services.iter().any(|s| {
            s.depends_on.iter().any(|d| {
                d.service == self.name && d.condition == DependencyCondition::CompletedSuccessfully
            })
        })
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dependency {
    pub service: ServiceName,
    pub condition: DependencyCondition,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DependencyCondition {
    Started,
    Healthy,
    CompletedSuccessfully,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthcheckSpec {
    /// Docker's form: `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    #[serde(with = "duration_millis")]
    pub interval: Duration,
    #[serde(with = "duration_millis")]
    pub timeout: Duration,
    pub retries: u32,
    #[serde(with = "duration_millis")]
    pub start_period: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    No,
    Always,
    UnlessStopped,
    OnFailure { max_retries: Option<u32> },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VolumeMount {
    /// The compose file's volume name; the runtime maps it to the env's own volume.
    pub volume: String,
    pub target: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResourceLimits {
    pub memory_bytes: i64,
    /// CPU quota in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: i64,
    pub pids: i64,
}

/// What exists for one env right now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ObservedEnv {
    pub network: bool,
    pub volumes: Vec<String>,
    pub services: Vec<ObservedService>,
    /// Services of another env of this instance on the env's network under their name (a
    /// shared env's, see [`SharedServices`]). Not the env's own: never removed with it.
    #[serde(default)]
    pub shared: Vec<ObservedService>,
}

impl ObservedEnv {
    /// Nothing of the env's own (services of another env reached from it do not count).
    pub fn is_empty(&self) -> bool {
        !self.network && self.volumes.is_empty() && self.services.is_empty()
    }
    pub fn service(&self, name: &ServiceName) -> Option<&ObservedService> {
        self.services.iter().find(|s| &s.name == name)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObservedService {
    pub name: ServiceName,
    pub container_id: String,
    pub spec_hash: String,
    pub state: ServiceState,
    pub ports: Vec<PublishedPort>,
    /// The container's address on its env network, when it has one (it is running): the
    /// front door connects there rather than through the published host port.
    #[serde(default)]
    pub address: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServiceState {
    /// Waiting for its dependencies, not created yet.
    Waiting,
    /// Image being built or pulled.
    Preparing,
    Created,
    Starting,
    Running,
    Healthy,
    Unhealthy,
    Exited {
        code: i64,
        oom_killed: bool,
    },
    Restarting,
}

impl ServiceState {
    pub fn label(&self) -> String {
        match self {
            ServiceState::Exited {
                code,
                oom_killed: true,
            } => format!("exited ({code}, out of memory)"),
            ServiceState::Exited { code, .. } => format!("exited ({code})"),
            other => serde_json::to_value(other)
                .ok()
                .and_then(|v| v["state"].as_str().map(str::to_string))
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub host_port: u16,
    pub protocol: Protocol,
}

impl PublishedPort {
    /// The port's URL on `host`: `http://host:port` for TCP, `udp://host:port` for UDP (an
    /// IPv6 address in brackets).
    pub fn url_on(&self, host: &str) -> String {
        let scheme = match self.protocol {
            Protocol::Tcp => "http",
            Protocol::Udp => "udp",
        };
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("{scheme}://[{host}]:{}", self.host_port)
        } else {
            format!("{scheme}://{host}:{}", self.host_port)
        }
    }
}

/// How to get one service's image.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// Use the reference if present locally, pull it otherwise.
    Pull { reference: String },
    /// Build from a tar of the context, as produced by `git archive`.
    Build(BuildRequest),
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub service: ServiceName,
    /// The tag to give the built image. Compose builds are tagged by the hash of what goes
    /// into them, so an image under the tag is reused without reading the context.
    pub tag: String,
    /// Path of the Dockerfile inside the context.
    pub dockerfile: String,
    /// The context tar, read only when the image has to be built.
    pub context: BuildContext,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// Labels an existing image under `tag` must carry to be reused (the demo image's
    /// Dockerfile sets its content label). Never added by the build: the classic builder
    /// turns each label into a build step of its own (about a second each).
    pub required_labels: BTreeMap<String, String>,
}

/// What a build reads its context from: a `git archive` in the engine, bytes in tests and
/// for the bundled demo image. Lazy, so a build that is skipped never reads it.
#[derive(Clone)]
pub struct BuildContext(Arc<dyn Fn() -> ContextFuture + Send + Sync>);

type ContextFuture = Pin<Box<dyn std::future::Future<Output = Result<Bytes, String>> + Send>>;

impl BuildContext {
    /// A context already in memory.
    pub fn bytes(tar: impl Into<Bytes>) -> Self {
        let tar: Bytes = tar.into();
        Self(Arc::new(move || {
            let tar = tar.clone();
            Box::pin(async move { Ok(tar) })
        }))
    }

    /// A context produced on demand; the error says why it could not be read.
    pub fn lazy<F, Fut>(read: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Bytes, String>> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(read())))
    }

    /// Reads the context tar.
    pub async fn read(&self) -> Result<Bytes, String> {
        (self.0)().await
    }
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildContext(..)")
    }
}

/// A one-shot job on an env's network, such as an integration test run.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Unique within the env, e.g. `run-12-tests`; names the container.
    pub id: String,
    pub service: ServiceSpec,
    /// The job is killed and reported as timed out after this long.
    pub timeout: Duration,
    /// An absolute path of a file to copy out of the container after it exits (a report).
    pub collect: Option<String>,
}

/// A built image on the engine (see [`Runtime::built_images`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `slipway/<repo>-<service>:<content>`.
    pub reference: String,
    /// A container (of any instance, running or stopped) uses it.
    pub in_use: bool,
}

/// A one-shot job's container (see [`Runtime::list_jobs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobContainer {
    pub env: EnvName,
    /// The job's id ([`JobSpec::id`]).
    pub id: String,
    pub running: bool,
}

/// How a job ended.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobOutcome {
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub timed_out: bool,
    /// Why it could not run at all (image or command not found, ...).
    pub error: Option<String>,
    /// The `collect` file's contents, when it existed.
    pub collected: Option<Vec<u8>>,
}

/// The largest file a job may hand back (a JUnit report).
pub const MAX_COLLECTED_BYTES: usize = 50 * 1024 * 1024;

/// Progress reported while preparing images and applying a spec.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Service {
        service: ServiceName,
        state: ServiceState,
    },
    /// One line of build or pull output.
    Output { service: ServiceName, line: String },
}

pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    /// Only the last N lines (all when `None`).
    pub tail: Option<u64>,
    pub follow: bool,
}

pub type LogStream = Pin<Box<dyn Stream<Item = Result<Bytes, RuntimeError>> + Send>>;

/// Errors a caller can branch on: the first five are the env's fault (the env goes Failed
/// with the message as its reason), `Unavailable` is worth retrying.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("building the image of service `{service}` failed: {message}")]
    Build {
        service: ServiceName,
        message: String,
    },
    #[error("image `{image}` of service `{service}` is not available: {message}")]
    Image {
        service: ServiceName,
        image: String,
        message: String,
    },
    #[error("service `{service}` failed: {reason}")]
    ServiceFailed {
        service: ServiceName,
        reason: String,
    },
    #[error("service `{service}` was not {waiting_for} after {}", humantime::format_duration(*waited))]
    Timeout {
        service: ServiceName,
        waiting_for: String,
        waited: Duration,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("the container runtime is unavailable: {0}")]
    Unavailable(String),
    /// The engine refused a request as invalid (a Docker 4xx other than 409): retrying the
    /// same request cannot succeed, so this is never transient.
    #[error("the Docker engine refused the request: {0}")]
    Rejected(String),
    #[error("no service `{0}` in this environment")]
    NoSuchService(String),
}

impl RuntimeError {
    /// Whether retrying later may succeed without anyone changing the env.
    pub fn is_transient(&self) -> bool {
        matches!(self, RuntimeError::Unavailable(_))
    }
}

#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Short name for logs and status ("docker", "fake").
    fn name(&self) -> &'static str;

    /// Where people reach a service's published `port`: the URL reported for it (env
    /// status, PR comments, notifications). Only the runtime knows: Docker publishes on a
    /// host address, a cluster would answer with its ingress or a front-door proxy.
    fn endpoint(&self, port: &PublishedPort) -> String;

    /// What exists for `env`. An env with nothing is `ObservedEnv::default()`, not an error.
    async fn fetch(&self, env: &EnvName) -> Result<ObservedEnv, RuntimeError>;

    /// Make `source` available; returns the image reference to run.
    async fn prepare_image(
        &self,
        source: &ImageSource,
        progress: ProgressSink,
    ) -> Result<String, RuntimeError>;

    /// Converge `env` to `spec`: keep containers whose spec hash matches (starting them
    /// again when they were stopped), replace the rest,
    /// remove services no longer in the spec, put `spec.shared`'s services on the env's
    /// network (and take off any other env's container no longer wanted there), start in
    /// dependency order (in parallel where dependencies allow) and wait for each service's
    /// readiness. Returns what runs.
    async fn apply(
        &self,
        spec: &EnvSpec,
        ready_timeout: Duration,
        progress: ProgressSink,
    ) -> Result<ObservedEnv, RuntimeError>;

    /// Remove every container, network and volume of `env`. Nothing there is success.
    /// Another env's containers on its network (shared services) are taken off it first,
    /// never removed.
    async fn destroy(&self, env: &EnvName) -> Result<(), RuntimeError>;

    /// Stop every service of `env` (gracefully, like `docker stop`), keeping its containers,
    /// network and volumes: an `apply` of the same spec starts the same containers again.
    /// Nothing there, or nothing running, is success.
    async fn stop(&self, env: &EnvName) -> Result<(), RuntimeError>;

    /// The images Slipway built that are on the engine, each with whether a container (of
    /// anyone, running or not) uses it: what the reaper weighs against `image_retention`.
    /// Runtimes without built images have none.
    async fn built_images(&self) -> Result<Vec<BuiltImage>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Removes built image `reference` unless a container uses it (checked by the engine at
    /// removal, so one that became used meanwhile stays). `Ok(true)` when it was removed,
    /// `Ok(false)` when it was absent or in use.
    async fn remove_built_image(&self, _reference: &str) -> Result<bool, RuntimeError> {
        Ok(false)
    }

    /// This instance's one-shot job containers that exist now. A job's container goes when
    /// its job ends, so one whose run is over was left by a crash.
    async fn list_jobs(&self) -> Result<Vec<JobContainer>, RuntimeError> {
        Ok(Vec::new())
    }

    /// Removes job `id`'s container of `env` (killing it if it runs). Nothing there is success.
    async fn remove_job(&self, _env: &EnvName, _id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// Output of one service, or of all services (each line prefixed by its service name).
    async fn logs(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError>;

    /// Every env this instance has resources for, to find orphans.
    async fn list_envs(&self) -> Result<Vec<EnvName>, RuntimeError>;

    /// Every env's services from one cheap listing (no per-container detail): what a resync
    /// compares with the store to find the envs worth a closer look. States are as a listing
    /// can tell them (an out-of-memory kill reads as a plain exit); ports may be missing.
    /// The default fetches each env.
    async fn glance(&self) -> Result<BTreeMap<EnvName, Vec<ObservedService>>, RuntimeError> {
        let mut all = BTreeMap::new();
        for env in self.list_envs().await? {
            let observed = self.fetch(&env).await?;
            all.insert(env, observed.services);
        }
        Ok(all)
    }

    /// Whether the runtime answers at all, for readiness checks. Runtimes with a cheaper
    /// probe than listing their envs override this.
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.list_envs().await.map(|_| ())
    }

    /// Runs `job` on `env`'s network to completion (or its timeout), sending its output to
    /// `output` as it comes, then removes its container. An env's jobs are not services:
    /// `fetch` and `apply` leave them alone, `destroy` removes them.
    async fn run_job(
        &self,
        env: &EnvSpec,
        job: &JobSpec,
        output: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<JobOutcome, RuntimeError>;
}

mod duration_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
