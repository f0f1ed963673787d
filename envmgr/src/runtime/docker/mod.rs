//! The Docker runtime: one bridge network, one container per service and one volume per
//! named volume for each env, all talking to the local Docker engine through bollard.
//!
//! Every object carries the instance label and the env label, and every lookup filters on
//! both, so several Slipway instances (or test runs) can share one engine without ever
//! seeing each other's resources. Object names are predictable (`slipway-<env>-<service>`)
//! so people can find them with the usual Docker tools; when a name is taken by something
//! that is not ours we refuse with `RuntimeError::Conflict` instead of touching it.

mod apply;
mod container;
mod errors;
mod image;
mod job;
mod logs;
mod observe;
mod shared;
pub mod subnet;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use tokio::sync::Mutex;

use super::{
    labels, EnvSpec, ImageSource, LogOptions, LogStream, ObservedEnv, ObservedService,
    ProgressSink, PublishedPort, Runtime, RuntimeError,
};
use crate::names::{EnvName, ServiceName};

/// A `Runtime` backed by the local Docker engine.
#[derive(Clone)]
pub struct DockerRuntime {
    docker: Docker,
    /// Value of the `labels::INSTANCE` label on everything this runtime creates.
    instance: String,
    /// Docker happily creates two networks with the same name when two requests race, and
    /// then refuses to attach containers to either ("ambiguous"). Creating networks one at a
    /// time within this process rules that out.
    network_lock: Arc<Mutex<()>>,
    /// Where env networks get their subnets.
    subnets: subnet::SubnetPool,
    /// Host address published ports listen on (`[runtime.docker] publish_address`);
    /// loopback by default so envs are not reachable from the network unless asked for.
    publish_address: String,
    /// The host name people reach published ports at (`public_host`); the publish address
    /// when `None`.
    public_host: Option<String>,
}

/// Default of `[runtime.docker] publish_address`.
pub const DEFAULT_PUBLISH_ADDRESS: &str = "127.0.0.1";

impl DockerRuntime {
    /// Connects to the local engine (`/var/run/docker.sock`, or a `unix://` `DOCKER_HOST`)
    /// and agrees on an API version: older engines refuse requests made with a newer version
    /// than they speak. `instance` labels everything this runtime creates.
    pub async fn connect(instance: &str) -> Result<Self, RuntimeError> {
        if instance.trim().is_empty() {
            return Err(RuntimeError::Unavailable(
                "the Slipway instance id is empty; set one so Docker objects can be labelled"
                    .into(),
            ));
        }
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| errors::unavailable("connecting to the Docker engine", &e))?
            .negotiate_version()
            .await
            .map_err(|e| errors::unavailable("asking the Docker engine for its API version", &e))?;
        tracing::info!(instance, api_version = %docker.client_version(), "connected to Docker");
        Ok(Self {
            docker,
            instance: instance.to_string(),
            network_lock: Arc::default(),
            subnets: subnet::SubnetPool::default(),
            publish_address: DEFAULT_PUBLISH_ADDRESS.to_string(),
            public_host: None,
        })
    }

    /// Published ports listen on `address` (an IP; `0.0.0.0` for every interface) instead
    /// of loopback.
    pub fn with_publish_address(mut self, address: &str) -> Self {
        self.publish_address = address.to_string();
        self
    }

    /// Published ports are reported as URLs on `host` (a name or address people reach this
    /// machine at) instead of the publish address.
    pub fn with_public_host(mut self, host: &str) -> Self {
        self.public_host = Some(host.to_string());
        self
    }

    /// Env networks get `/prefix` subnets of `pool` instead of the default ones.
    pub fn with_subnet_pool(mut self, pool: subnet::SubnetPool) -> Self {
        self.subnets = pool;
        self
    }

    /// The instance id this runtime labels its objects with.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The bollard client, for callers (and tests) that need to look at the engine directly.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Docker `filters` selecting this instance's objects of `env`.
    fn env_filters(&self, env: &EnvName) -> HashMap<String, Vec<String>> {
        let label = vec![
            format!("{}={}", labels::INSTANCE, self.instance),
            format!("{}={}", labels::ENV, env.as_str()),
        ];
        HashMap::from([("label".to_string(), label)])
    }

    /// Docker `filters` selecting all of this instance's objects.
    fn instance_filters(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", labels::INSTANCE, self.instance)],
        )])
    }

    /// Labels every object of `spec`'s env carries.
    fn env_labels(&self, spec: &EnvSpec) -> HashMap<String, String> {
        HashMap::from([
            (labels::INSTANCE.to_string(), self.instance.clone()),
            (labels::ENV.to_string(), spec.env.as_str().to_string()),
            (labels::REPO.to_string(), spec.repo.as_str().to_string()),
        ])
    }

    /// Whether an object with these labels belongs to this instance's `env`. Names alone
    /// are not enough: `slipway-a-b-web` could be env `a` service `b-web` or env `a-b`
    /// service `web`, or something a person created by hand.
    fn owns(&self, env: &EnvName, object_labels: Option<&HashMap<String, String>>) -> bool {
        let Some(object_labels) = object_labels else {
            return false;
        };
        object_labels.get(labels::INSTANCE) == Some(&self.instance)
            && object_labels.get(labels::ENV).map(String::as_str) == Some(env.as_str())
    }

    /// The error for a name that is taken by an object we must not touch.
    fn name_taken(kind: &str, name: &str, env: &EnvName) -> RuntimeError {
        RuntimeError::Conflict(format!(
            "a Docker {kind} named `{name}` already exists but does not belong to env `{env}` \
             of this Slipway instance; remove it (`docker {kind} rm {name}`) or rename it, \
             then retry"
        ))
    }
}

fn network_name(env: &EnvName) -> String {
    format!("slipway-{env}")
}

fn container_name(env: &EnvName, service: &ServiceName) -> String {
    format!("slipway-{env}-{service}")
}

fn volume_prefix(env: &EnvName) -> String {
    format!("slipway-{env}-")
}

fn volume_name(env: &EnvName, volume: &str) -> String {
    format!("{}{volume}", volume_prefix(env))
}

/// How often readiness is polled. Docker has no cheap push notification for health changes
/// that works across versions, and a short interval keeps `apply` close to compose's speed.
const POLL_INTERVAL: Duration = Duration::from_millis(150);

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn endpoint(&self, port: &PublishedPort) -> String {
        port.url_on(reported_host(
            self.public_host.as_deref(),
            &self.publish_address,
        ))
    }

    async fn fetch(&self, env: &EnvName) -> Result<ObservedEnv, RuntimeError> {
        self.observe_env(env).await
    }

    async fn prepare_image(
        &self,
        source: &ImageSource,
        progress: ProgressSink,
    ) -> Result<String, RuntimeError> {
        match source {
            ImageSource::Pull { reference } => self.pull_if_missing(reference, &progress).await,
            ImageSource::Build(request) => self.build_if_changed(request, &progress).await,
        }
    }

    async fn apply(
        &self,
        spec: &EnvSpec,
        ready_timeout: Duration,
        progress: ProgressSink,
    ) -> Result<ObservedEnv, RuntimeError> {
        self.apply_spec(spec, ready_timeout, progress).await
    }

    async fn destroy(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.destroy_env(env).await
    }

    async fn stop(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.stop_env(env).await
    }

    async fn built_images(&self) -> Result<Vec<super::BuiltImage>, RuntimeError> {
        self.list_built_images().await
    }

    async fn remove_built_image(&self, reference: &str) -> Result<bool, RuntimeError> {
        self.remove_unused_image(reference).await
    }

    async fn list_jobs(&self) -> Result<Vec<super::JobContainer>, RuntimeError> {
        self.job_containers().await
    }

    async fn remove_job(&self, env: &EnvName, id: &str) -> Result<(), RuntimeError> {
        self.remove_job_container(env, id).await
    }

    async fn logs(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        self.log_stream(env, service, options).await
    }

    async fn list_envs(&self) -> Result<Vec<EnvName>, RuntimeError> {
        self.instance_envs().await
    }

    /// One container listing for the whole instance.
    async fn glance(
        &self,
    ) -> Result<std::collections::BTreeMap<EnvName, Vec<ObservedService>>, RuntimeError> {
        self.glance_services().await
    }

    /// `GET /_ping`: answers without touching any object.
    async fn ping(&self) -> Result<(), RuntimeError> {
        self.docker
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| errors::unavailable("pinging the Docker engine", &e))
    }

    async fn run_job(
        &self,
        env: &EnvSpec,
        job: &crate::runtime::JobSpec,
        output: tokio::sync::mpsc::Sender<bytes::Bytes>,
    ) -> Result<crate::runtime::JobOutcome, RuntimeError> {
        self.run_job_container(env, job, output).await
    }
}

/// The host in the URLs of published ports: the public host, else the publish address, else
/// (published on every interface) loopback, which always reaches them.
fn reported_host<'a>(public_host: Option<&'a str>, publish_address: &'a str) -> &'a str {
    if let Some(host) = public_host {
        return host;
    }
    match publish_address.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => DEFAULT_PUBLISH_ADDRESS,
        _ => publish_address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Protocol;

    #[test]
    fn published_ports_are_reported_on_the_public_host_or_the_publish_address() {
        let web = PublishedPort {
            container_port: 8080,
            host_port: 40001,
            protocol: Protocol::Tcp,
        };
        let dns = PublishedPort {
            protocol: Protocol::Udp,
            ..web
        };
        let url = |public: Option<&str>, publish: &str, port: &PublishedPort| {
            port.url_on(reported_host(public, publish))
        };
        assert_eq!(url(None, "127.0.0.1", &web), "http://127.0.0.1:40001");
        assert_eq!(url(None, "10.1.2.3", &dns), "udp://10.1.2.3:40001");
        assert_eq!(url(None, "0.0.0.0", &web), "http://127.0.0.1:40001");
        assert_eq!(url(None, "::", &web), "http://127.0.0.1:40001");
        assert_eq!(url(None, "fd00::5", &web), "http://[fd00::5]:40001");
        assert_eq!(
            url(Some("envs.example.com"), "0.0.0.0", &web),
            "http://envs.example.com:40001"
        );
    }
}
