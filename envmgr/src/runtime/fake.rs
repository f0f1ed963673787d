//! The runtime's test twin: keeps environments in memory, applies specs instantly (or after
//! a configurable delay) and can be told to fail, so reconciler and API tests run without
//! Docker. It follows the same keep-or-replace rules as the real runtime.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BuiltImage, EnvSpec, ImageSource, JobContainer, JobOutcome, JobSpec, LogOptions, LogStream,
    ObservedEnv, ObservedService, Progress, ProgressSink, PublishedPort, Runtime, RuntimeError,
    ServiceState,
};

/// The host the twin reports its published ports on unless told another
/// ([`FakeRuntime::with_public_host`]).
pub const FAKE_PUBLIC_HOST: &str = "envs.example.com";
use crate::names::{EnvName, ServiceName};

#[derive(Default)]
pub struct FakeRuntime {
    envs: Mutex<BTreeMap<EnvName, ObservedEnv>>,
    next_id: AtomicU64,
    /// Services (by name) whose start fails.
    failing_services: Mutex<BTreeSet<String>>,
    /// How long `apply` takes, to let tests interrupt it.
    apply_delay: Mutex<Duration>,
    /// Every call, in order, as "verb env" strings.
    calls: Mutex<Vec<String>>,
    /// What jobs print and how they end (unscripted: no output, exit 0).
    job_script: Mutex<Option<(Vec<u8>, JobOutcome)>>,
    /// Applies running right now, and the most ever seen at once.
    applying: AtomicU64,
    max_applying: AtomicU64,
    /// Tags of the images built so far.
    images: Mutex<BTreeSet<String>>,
    /// The images each env's containers run (what keeps a built image in use).
    images_in_use: Mutex<BTreeMap<EnvName, BTreeSet<String>>>,
    /// Job containers a crash left behind ([`FakeRuntime::leave_job`]).
    left_jobs: Mutex<Vec<JobContainer>>,
    /// When set, `ping` fails with this message (an engine that stopped answering).
    ping_failure: Mutex<Option<String>>,
    /// Where published ports are reported; [`FAKE_PUBLIC_HOST`] when `None`.
    public_host: Option<String>,
    /// The address every container reports on its network ([`FakeRuntime::with_container_address`]).
    container_address: Option<std::net::IpAddr>,
    /// Other envs' containers on each env's network, by (their env, container id): like a
    /// Docker network endpoint, one vanishes with its container.
    attached: Mutex<BTreeMap<EnvName, Vec<(EnvName, String)>>>,
}

impl FakeRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reports published ports on `host` instead of [`FAKE_PUBLIC_HOST`].
    pub fn with_public_host(mut self, host: &str) -> Self {
        self.public_host = Some(host.to_string());
        self
    }

    /// Reports every container at `address` (its own address on the env's network, as
    /// Docker does), so the front door connects to `address` and the service's container
    /// port. A test that listens there on that port stands in for the container.
    pub fn with_container_address(mut self, address: std::net::IpAddr) -> Self {
        self.container_address = Some(address);
        self
    }

    pub fn fail_service(&self, service: &str) {
        self.failing_services
            .lock()
            .unwrap()
            .insert(service.to_string());
    }

    /// Makes `ping` fail with `message` (`None`: answer again).
    pub fn fail_ping(&self, message: Option<&str>) {
        *self.ping_failure.lock().unwrap() = message.map(str::to_string);
    }

    pub fn set_apply_delay(&self, delay: Duration) {
        *self.apply_delay.lock().unwrap() = delay;
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Makes every following job print `output` and end as `outcome`.
    pub fn script_jobs(&self, output: &[u8], outcome: JobOutcome) {
        *self.job_script.lock().unwrap() = Some((output.to_vec(), outcome));
    }

    /// The most `apply` calls that ever ran at the same time.
    pub fn max_concurrent_applies(&self) -> u64 {
        self.max_applying.load(Ordering::SeqCst)
    }

    pub fn observed(&self, env: &EnvName) -> ObservedEnv {
        let envs = self.envs.lock().unwrap();
        let mut observed = envs.get(env).cloned().unwrap_or_default();
        let attached = self.attached.lock().unwrap();
        observed.shared = attached
            .get(env)
            .into_iter()
            .flatten()
            .filter_map(|(owner, id)| {
                let service = envs
                    .get(owner)?
                    .services
                    .iter()
                    .find(|s| &s.container_id == id)?;
                Some(ObservedService {
                    ports: Vec::new(),
                    ..service.clone()
                })
            })
            .collect();
        observed.shared.sort_by(|a, b| a.name.cmp(&b.name));
        observed
    }

    /// Simulates someone removing a container behind Slipway's back.
    pub fn remove_container(&self, env: &EnvName, service: &str) {
        if let Some(observed) = self.envs.lock().unwrap().get_mut(env) {
            observed.services.retain(|s| s.name.as_str() != service);
        }
    }

    /// Simulates a service changing state on its own (e.g. a restart loop: `Restarting`).
    pub fn set_service_state(&self, env: &EnvName, service: &str, state: ServiceState) {
        if let Some(observed) = self.envs.lock().unwrap().get_mut(env) {
            for s in observed
                .services
                .iter_mut()
                .filter(|s| s.name.as_str() == service)
            {
                s.state = state.clone();
            }
        }
    }

    /// Simulates a job container left behind by a crash mid-run.
    pub fn leave_job(&self, env: &EnvName, id: &str) {
        self.left_jobs.lock().unwrap().push(JobContainer {
            env: env.clone(),
            id: id.to_string(),
            running: true,
        });
    }

    /// Whether a built image under `tag` is present.
    pub fn has_image(&self, tag: &str) -> bool {
        self.images.lock().unwrap().contains(tag)
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn endpoint(&self, port: &PublishedPort) -> String {
        port.url_on(self.public_host.as_deref().unwrap_or(FAKE_PUBLIC_HOST))
    }

    async fn fetch(&self, env: &EnvName) -> Result<ObservedEnv, RuntimeError> {
        Ok(self.observed(env))
    }

    async fn prepare_image(
        &self,
        source: &ImageSource,
        progress: ProgressSink,
    ) -> Result<String, RuntimeError> {
        match source {
            ImageSource::Pull { reference } => Ok(reference.clone()),
            ImageSource::Build(req) => {
                // Like Docker: an image under the tag is reused without reading the context.
                if self.images.lock().unwrap().contains(&req.tag) {
                    self.record(format!("reuse {}", req.tag));
                    return Ok(req.tag.clone());
                }
                req.context
                    .read()
                    .await
                    .map_err(|message| RuntimeError::Build {
                        service: req.service.clone(),
                        message: format!("reading the build context: {message}"),
                    })?;
                self.record(format!("build {}", req.tag));
                progress(Progress::Output {
                    service: req.service.clone(),
                    line: format!("built {}", req.tag),
                });
                if req.dockerfile.contains("broken") {
                    return Err(RuntimeError::Build {
                        service: req.service.clone(),
                        message: "The command '/bin/sh -c false' returned a non-zero code: 1"
                            .into(),
                    });
                }
                self.images.lock().unwrap().insert(req.tag.clone());
                Ok(req.tag.clone())
            }
        }
    }

    async fn apply(
        &self,
        spec: &EnvSpec,
        _ready_timeout: Duration,
        progress: ProgressSink,
    ) -> Result<ObservedEnv, RuntimeError> {
        self.record(format!("apply {}", spec.env));
        let now = self.applying.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_applying.fetch_max(now, Ordering::SeqCst);
        let _done = DecrementOnDrop(&self.applying);
        let delay = *self.apply_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let failing = self.failing_services.lock().unwrap().clone();
        self.images_in_use.lock().unwrap().insert(
            spec.env.clone(),
            spec.services.iter().map(|s| s.image.clone()).collect(),
        );
        let mut envs = self.envs.lock().unwrap();
        // As Docker's runtime: the shared services join the network before anything starts.
        let mut attach = Vec::new();
        if let Some(shared) = &spec.shared {
            for service in &shared.services {
                let found = envs
                    .get(&shared.env)
                    .and_then(|o| o.services.iter().find(|s| &s.name == service));
                let Some(found) = found else {
                    return Err(RuntimeError::ServiceFailed {
                        service: service.clone(),
                        reason: format!(
                            "it is shared, but env `{}` has no container of it; see `slipway env status {}`",
                            shared.env, shared.env
                        ),
                    });
                };
                attach.push((shared.env.clone(), found.container_id.clone()));
            }
        }
        self.attached
            .lock()
            .unwrap()
            .insert(spec.env.clone(), attach);
        let observed = envs.entry(spec.env.clone()).or_default();
        observed.network = true;
        observed.volumes = spec.volumes.clone();
        observed
            .services
            .retain(|o| spec.services.iter().any(|s| s.name == o.name));
        for (index, service) in spec.services.iter().enumerate() {
            if failing.contains(service.name.as_str()) {
                return Err(RuntimeError::ServiceFailed {
                    service: service.name.clone(),
                    reason: "exited with code 1".into(),
                });
            }
            let hash = service.spec_hash();
            let running = if service.healthcheck.is_some() {
                ServiceState::Healthy
            } else {
                ServiceState::Running
            };
            let one_shot = service.is_one_shot(spec);
            if let Some(kept) = observed
                .services
                .iter_mut()
                .find(|o| o.name == service.name && o.spec_hash == hash)
            {
                // Like Docker: a stopped container of the same spec is started again.
                let stopped = matches!(kept.state, ServiceState::Exited { .. });
                if stopped && !one_shot {
                    kept.state = running.clone();
                    progress(Progress::Service {
                        service: service.name.clone(),
                        state: running,
                    });
                }
                continue;
            }
            observed.services.retain(|o| o.name != service.name);
            let state = if one_shot {
                ServiceState::Exited {
                    code: 0,
                    oom_killed: false,
                }
            } else {
                running
            };
            progress(Progress::Service {
                service: service.name.clone(),
                state: state.clone(),
            });
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            observed.services.push(ObservedService {
                name: service.name.clone(),
                container_id: format!("fake-{id}"),
                spec_hash: hash,
                state,
                ports: service
                    .ports
                    .iter()
                    .map(|p| PublishedPort {
                        container_port: p.container_port,
                        host_port: 40000 + index as u16,
                        protocol: p.protocol,
                    })
                    .collect(),
                // The twin runs nothing: without an address the front door uses the
                // published port.
                address: self.container_address,
            });
        }
        drop(envs);
        // With the shared services it reaches, as a fetch reports them.
        Ok(self.observed(&spec.env))
    }

    async fn destroy(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.record(format!("destroy {env}"));
        // Only the env's own containers go; other envs' are merely taken off its network.
        self.envs.lock().unwrap().remove(env);
        self.attached.lock().unwrap().remove(env);
        self.images_in_use.lock().unwrap().remove(env);
        self.left_jobs.lock().unwrap().retain(|job| &job.env != env);
        Ok(())
    }

    async fn stop(&self, env: &EnvName) -> Result<(), RuntimeError> {
        self.record(format!("stop {env}"));
        if let Some(observed) = self.envs.lock().unwrap().get_mut(env) {
            for service in &mut observed.services {
                if !matches!(service.state, ServiceState::Exited { .. }) {
                    // What `docker stop` leaves: SIGTERM's exit status, and no host ports
                    // (they are given back until the container starts again).
                    service.state = ServiceState::Exited {
                        code: 143,
                        oom_killed: false,
                    };
                    service.ports.clear();
                }
            }
        }
        Ok(())
    }

    async fn logs(
        &self,
        env: &EnvName,
        service: Option<&ServiceName>,
        _options: LogOptions,
    ) -> Result<LogStream, RuntimeError> {
        let observed = self.observed(env);
        let mut text = String::new();
        for s in &observed.services {
            if service.is_some_and(|wanted| wanted != &s.name) {
                continue;
            }
            text.push_str(&format!("{} | fake log line\n", s.name));
        }
        if let Some(wanted) = service {
            if observed.service(wanted).is_none() {
                return Err(RuntimeError::NoSuchService(wanted.to_string()));
            }
        }
        Ok(Box::pin(futures_util::stream::iter([Ok(Bytes::from(
            text,
        ))])))
    }

    async fn list_envs(&self) -> Result<Vec<EnvName>, RuntimeError> {
        Ok(self.envs.lock().unwrap().keys().cloned().collect())
    }

    async fn built_images(&self) -> Result<Vec<BuiltImage>, RuntimeError> {
        let in_use = self.images_in_use.lock().unwrap();
        Ok(self
            .images
            .lock()
            .unwrap()
            .iter()
            .map(|reference| BuiltImage {
                reference: reference.clone(),
                in_use: in_use.values().any(|images| images.contains(reference)),
            })
            .collect())
    }

    async fn remove_built_image(&self, reference: &str) -> Result<bool, RuntimeError> {
        let in_use = self
            .images_in_use
            .lock()
            .unwrap()
            .values()
            .any(|images| images.contains(reference));
        if in_use {
            return Ok(false);
        }
        self.record(format!("remove image {reference}"));
        Ok(self.images.lock().unwrap().remove(reference))
    }

    async fn list_jobs(&self) -> Result<Vec<JobContainer>, RuntimeError> {
        Ok(self.left_jobs.lock().unwrap().clone())
    }

    async fn remove_job(&self, env: &EnvName, id: &str) -> Result<(), RuntimeError> {
        self.record(format!("remove job {env} {id}"));
        self.left_jobs
            .lock()
            .unwrap()
            .retain(|job| !(&job.env == env && job.id == id));
        Ok(())
    }

    async fn ping(&self) -> Result<(), RuntimeError> {
        match self.ping_failure.lock().unwrap().clone() {
            Some(message) => Err(RuntimeError::Unavailable(message)),
            None => Ok(()),
        }
    }

    async fn run_job(
        &self,
        env: &EnvSpec,
        job: &JobSpec,
        output: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<JobOutcome, RuntimeError> {
        self.record(format!("job {} {}", env.env, job.id));
        let scripted = self.job_script.lock().unwrap().clone();
        let (text, outcome) = scripted.unwrap_or_else(|| {
            (
                Vec::new(),
                JobOutcome {
                    exit_code: Some(0),
                    ..Default::default()
                },
            )
        });
        // In chunks that split lines, as a real log stream does.
        for chunk in text.chunks(7) {
            let _ = output.send(Bytes::copy_from_slice(chunk)).await;
        }
        Ok(outcome)
    }
}

/// Counts an apply as finished however it ends (including being dropped when superseded).
struct DecrementOnDrop<'a>(&'a AtomicU64);

impl Drop for DecrementOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
