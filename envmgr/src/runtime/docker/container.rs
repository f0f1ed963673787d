//! Creating the env's network, volumes and containers, and removing them again.
//!
//! Container settings come only from `ServiceSpec`; host binds, privileged mode and extra
//! capabilities are deliberately impossible to express here.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Ipam, IpamConfig, Mount,
    MountTypeEnum, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum, VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, InspectNetworkOptions,
    ListNetworksOptions, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StartContainerOptions,
};
use futures_util::future::try_join_all;

use super::{container_name, errors, network_name, subnet, volume_name, DockerRuntime};
use crate::names::EnvName;
use crate::runtime::{labels, EnvSpec, HealthcheckSpec, RestartPolicy, RuntimeError, ServiceSpec};

impl DockerRuntime {
    /// Creates the env's network unless it exists; refuses to adopt someone else's.
    pub(super) async fn ensure_network(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        let name = network_name(&spec.env);
        let _one_at_a_time = self.network_lock.lock().await;
        match self
            .docker
            .inspect_network(&name, None::<InspectNetworkOptions>)
            .await
        {
            Ok(network) if self.owns(&spec.env, network.labels.as_ref()) => return Ok(()),
            Ok(_) => return Err(Self::name_taken("network", &name, &spec.env)),
            Err(e) if errors::is_not_found(&e) => {}
            Err(e) => return Err(errors::other(&format!("inspecting network `{name}`"), &e)),
        }
        let mut taken = self.subnets_in_use().await?;
        // Another engine user may take a subnet between our look and our create: try the
        // next free one a few times.
        for _ in 0..5 {
            let Some(subnet) = self.subnets.first_free(&taken) else {
                break;
            };
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                labels: Some(self.env_labels(spec)),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => {
                    tracing::info!(env = %spec.env, network = %name, %subnet, "created network");
                    return Ok(());
                }
                Err(e)
                    if errors::describe(&e)
                        .to_ascii_lowercase()
                        .contains("overlap") =>
                {
                    taken.push(subnet)
                }
                Err(e) => return Err(errors::other(&format!("creating network `{name}`"), &e)),
            }
        }
        Err(RuntimeError::Conflict(format!(
            "no free /{} subnet left in the network pool {} for env `{}`; delete unused envs or give Slipway a larger pool",
            self.subnets.prefix, self.subnets.range, spec.env
        )))
    }

    /// Every IPv4 subnet any network on the engine uses (not only ours).
    async fn subnets_in_use(&self) -> Result<Vec<subnet::Cidr>, RuntimeError> {
        let networks = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| errors::other("listing networks", &e))?;
        Ok(networks
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_deref()?.parse().ok())
            .collect())
    }

    /// Creates the env's volumes that do not exist yet: the declared ones and any a service
    /// mounts (Docker would otherwise create those itself, unlabelled and never cleaned up).
    pub(super) async fn ensure_volumes(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        let mounted = spec
            .services
            .iter()
            .flat_map(|s| s.volumes.iter().map(|m| m.volume.as_str()));
        let wanted: BTreeSet<&str> = spec
            .volumes
            .iter()
            .map(String::as_str)
            .chain(mounted)
            .collect();
        try_join_all(
            wanted
                .into_iter()
                .map(|volume| self.ensure_volume(spec, volume)),
        )
        .await?;
        Ok(())
    }

    async fn ensure_volume(&self, spec: &EnvSpec, volume: &str) -> Result<(), RuntimeError> {
        let name = volume_name(&spec.env, volume);
        match self.docker.inspect_volume(&name).await {
            Ok(existing) if self.owns(&spec.env, Some(&existing.labels)) => return Ok(()),
            Ok(_) => return Err(Self::name_taken("volume", &name, &spec.env)),
            Err(e) if errors::is_not_found(&e) => {}
            Err(e) => return Err(errors::other(&format!("inspecting volume `{name}`"), &e)),
        }
        let request = VolumeCreateOptions {
            name: Some(name.clone()),
            labels: Some(self.env_labels(spec)),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| errors::other(&format!("creating volume `{name}`"), &e))?;
        tracing::info!(env = %spec.env, volume = %name, "created volume");
        Ok(())
    }

    /// Creates and starts `service`'s container; returns its id.
    pub(super) async fn create_and_start(
        &self,
        spec: &EnvSpec,
        service: &ServiceSpec,
    ) -> Result<String, RuntimeError> {
        let id = self.create_container(spec, service).await?;
        match self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(id),
            Err(e) if errors::is_connection(&e) => {
                Err(errors::unavailable("starting a container", &e))
            }
            Err(e) => Err(RuntimeError::ServiceFailed {
                service: service.name.clone(),
                reason: format!(
                    "its container could not be started: {}",
                    errors::describe(&e)
                ),
            }),
        }
    }

    async fn create_container(
        &self,
        spec: &EnvSpec,
        service: &ServiceSpec,
    ) -> Result<String, RuntimeError> {
        let name = container_name(&spec.env, &service.name);
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let body = container_config(&self.instance, &self.publish_address, spec, service);
        let mut removed_leftover = false;
        loop {
            let err = match self
                .docker
                .create_container(Some(options.clone()), body.clone())
                .await
            {
                Ok(created) => {
                    let (env, id) = (&spec.env, &created.id);
                    tracing::debug!(%env, service = %service.name, %id, "created container");
                    return Ok(created.id);
                }
                Err(err) => err,
            };
            // A container of ours with this name that the label listing did not return (it was
            // being created concurrently, say) is replaced once; anyone else's is left alone.
            if errors::is_conflict(&err)
                && !removed_leftover
                && self.remove_if_ours(&spec.env, &name).await?
            {
                removed_leftover = true;
                continue;
            }
            return Err(self.create_error(spec, service, &name, &err));
        }
    }

    fn create_error(
        &self,
        spec: &EnvSpec,
        service: &ServiceSpec,
        name: &str,
        err: &bollard::errors::Error,
    ) -> RuntimeError {
        if errors::is_conflict(err) {
            return Self::name_taken("container", name, &spec.env);
        }
        if errors::is_connection(err) {
            return errors::unavailable(&format!("creating container `{name}`"), err);
        }
        if errors::is_not_found(err) {
            return RuntimeError::Image {
                service: service.name.clone(),
                image: service.image.clone(),
                message: errors::describe(err),
            };
        }
        RuntimeError::ServiceFailed {
            service: service.name.clone(),
            reason: format!(
                "its container could not be created: {}",
                errors::describe(err)
            ),
        }
    }

    /// Removes the container named `name` if it belongs to `env`; returns whether it did.
    async fn remove_if_ours(&self, env: &EnvName, name: &str) -> Result<bool, RuntimeError> {
        let info = match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if errors::is_not_found(&e) => return Ok(true),
            Err(e) => return Err(errors::other(&format!("inspecting container `{name}`"), &e)),
        };
        let container_labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
        if !self.owns(env, container_labels) {
            return Ok(false);
        }
        self.remove_container(name).await?;
        Ok(true)
    }

    /// Force-removes a container and its anonymous volumes; a missing container is fine.
    pub(super) async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if errors::is_not_found(&e) => Ok(()),
            // 409 "removal already in progress": someone else is doing our job.
            Err(e)
                if errors::is_conflict(&e)
                    && errors::describe(&e).contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(errors::other(&format!("removing container {id}"), &e)),
        }
    }

    /// Stops a container gracefully (its own StopSignal, then SIGKILL after its StopTimeout,
    /// both set at create from the service's `stop_signal`/`stop_grace`), then removes it.
    pub(super) async fn stop_and_remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .stop_container(id, None::<bollard::query_parameters::StopContainerOptions>)
            .await
        {
            // 304: already stopped; 404: already gone. Anything else: the forced remove
            // below still gets rid of it, so only log.
            Ok(()) => {}
            Err(e) if matches!(errors::status(&e), Some(304 | 404)) => {}
            Err(e) if errors::is_connection(&e) => {
                return Err(errors::unavailable(&format!("stopping container {id}"), &e))
            }
            Err(e) => tracing::warn!(%id, error = %errors::describe(&e), "stopping failed"),
        }
        self.remove_container(id).await
    }

    /// Stops every container of `env` gracefully (each with its own stop signal and grace
    /// period, in parallel); containers, network and volumes stay for a later `apply`.
    pub(super) async fn stop_env(&self, env: &EnvName) -> Result<(), RuntimeError> {
        let containers = self.env_containers(env).await?;
        try_join_all(
            containers
                .iter()
                .filter_map(|c| c.id.as_deref())
                .map(|id| self.stop_container(id)),
        )
        .await?;
        tracing::info!(%env, containers = containers.len(), "stopped env");
        Ok(())
    }

    /// Stops one container; already stopped (304) or gone (404) is success.
    async fn stop_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self
            .docker
            .stop_container(id, None::<bollard::query_parameters::StopContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if matches!(errors::status(&e), Some(304 | 404)) => Ok(()),
            Err(e) if errors::is_connection(&e) => {
                Err(errors::unavailable(&format!("stopping container {id}"), &e))
            }
            Err(e) => Err(errors::other(&format!("stopping container {id}"), &e)),
        }
    }

    /// Starts an existing (stopped) container of `service` again.
    pub(super) async fn start_existing(
        &self,
        service: &ServiceSpec,
        id: &str,
    ) -> Result<(), RuntimeError> {
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            // 304: already running (started by someone else meanwhile).
            Ok(()) => Ok(()),
            Err(e) if errors::status(&e) == Some(304) => Ok(()),
            Err(e) if errors::is_connection(&e) => {
                Err(errors::unavailable("starting a container", &e))
            }
            Err(e) => Err(RuntimeError::ServiceFailed {
                service: service.name.clone(),
                reason: format!(
                    "its stopped container could not be started again: {}",
                    errors::describe(&e)
                ),
            }),
        }
    }

    pub(super) async fn destroy_env(&self, env: &EnvName) -> Result<(), RuntimeError> {
        let containers = self.env_containers(env).await?;
        // In parallel: tearing down many services takes about one grace period, not the sum.
        try_join_all(
            containers
                .iter()
                .filter_map(|c| c.id.as_deref())
                .map(|id| self.stop_and_remove(id)),
        )
        .await?;
        // Networks and volumes can only go once no container uses them; what is left on the
        // network is another env's (a shared service): taken off, never removed.
        let (networks, volumes) =
            tokio::try_join!(self.env_network_ids(env), self.env_volume_names(env))?;
        try_join_all(networks.iter().map(|id| self.detach_all(id))).await?;
        try_join_all(networks.iter().map(|id| self.remove_network(id))).await?;
        try_join_all(volumes.iter().map(|name| self.remove_volume(name))).await?;
        tracing::info!(%env, containers = containers.len(), "destroyed env");
        Ok(())
    }

    async fn remove_network(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.remove_network(id).await {
            Ok(()) => Ok(()),
            Err(e) if errors::is_not_found(&e) => Ok(()),
            Err(e) => Err(errors::other(&format!("removing network {id}"), &e)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::new().force(true).build();
        match self.docker.remove_volume(name, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if errors::is_not_found(&e) => Ok(()),
            Err(e) => Err(errors::other(&format!("removing volume `{name}`"), &e)),
        }
    }
}

/// The full container definition of one service.
pub(super) fn container_config(
    instance: &str,
    publish_address: &str,
    spec: &EnvSpec,
    service: &ServiceSpec,
) -> ContainerCreateBody {
    let network = network_name(&spec.env);
    let endpoint = EndpointSettings {
        aliases: Some(vec![service.name.to_string()]),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(service.image.clone()),
        cmd: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        env: Some(
            service
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        exposed_ports: Some(exposed_ports(service)),
        healthcheck: service.healthcheck.as_ref().map(health_config),
        labels: Some(container_labels(instance, spec, service)),
        working_dir: service.working_dir.clone(),
        user: service.user.clone(),
        host_config: Some(host_config(publish_address, spec, service)),
        // Set on the container so every stop (ours, `docker stop`, engine shutdown) sends
        // the service's signal and waits its grace before killing.
        stop_signal: service.stop_signal.clone(),
        stop_timeout: Some(service.stop_grace.as_secs().max(1) as i64),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network, endpoint)])),
        }),
        ..Default::default()
    }
}

fn container_labels(
    instance: &str,
    spec: &EnvSpec,
    service: &ServiceSpec,
) -> HashMap<String, String> {
    HashMap::from([
        (labels::INSTANCE.to_string(), instance.to_string()),
        (labels::ENV.to_string(), spec.env.to_string()),
        (labels::REPO.to_string(), spec.repo.to_string()),
        (labels::SERVICE.to_string(), service.name.to_string()),
        (labels::SPEC_HASH.to_string(), service.spec_hash()),
    ])
}

fn port_key(port: &crate::runtime::PortSpec) -> String {
    format!("{}/{}", port.container_port, port.protocol.as_str())
}

fn exposed_ports(service: &ServiceSpec) -> HashMap<String, HashMap<(), ()>> {
    service
        .ports
        .iter()
        .chain(&service.expose)
        .map(|p| (port_key(p), HashMap::new()))
        .collect()
}

fn host_config(publish_address: &str, spec: &EnvSpec, service: &ServiceSpec) -> HostConfig {
    // An empty host port lets Docker pick a free one, so envs never collide on ports. The
    // host IP is explicit: an empty one would listen on 0.0.0.0 and [::].
    let any_port = || {
        Some(vec![PortBinding {
            host_ip: Some(publish_address.to_string()),
            host_port: Some(String::new()),
        }])
    };
    let mounts = service
        .volumes
        .iter()
        .map(|m| Mount {
            typ: Some(MountTypeEnum::VOLUME),
            source: Some(volume_name(&spec.env, &m.volume)),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            ..Default::default()
        })
        .collect();
    let limits = &service.limits;
    HostConfig {
        network_mode: Some(network_name(&spec.env)),
        port_bindings: Some(
            service
                .ports
                .iter()
                .map(|p| (port_key(p), any_port()))
                .collect(),
        ),
        restart_policy: Some(restart_policy(&service.restart)),
        mounts: Some(mounts),
        // Zero means "no limit" in the spec; Docker wants the field absent for that.
        memory: (limits.memory_bytes > 0).then_some(limits.memory_bytes),
        nano_cpus: (limits.nano_cpus > 0).then_some(limits.nano_cpus),
        pids_limit: (limits.pids > 0).then_some(limits.pids),
        ..Default::default()
    }
}

fn restart_policy(policy: &RestartPolicy) -> DockerRestartPolicy {
    let (name, retries) = match policy {
        RestartPolicy::No => (RestartPolicyNameEnum::NO, None),
        RestartPolicy::Always => (RestartPolicyNameEnum::ALWAYS, None),
        RestartPolicy::UnlessStopped => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
        RestartPolicy::OnFailure { max_retries } => (
            RestartPolicyNameEnum::ON_FAILURE,
            max_retries.map(i64::from),
        ),
    };
    DockerRestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
}

fn health_config(check: &HealthcheckSpec) -> HealthConfig {
    let nanos = |d: std::time::Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    HealthConfig {
        test: Some(check.test.clone()),
        interval: Some(nanos(check.interval)),
        timeout: Some(nanos(check.timeout)),
        retries: Some(i64::from(check.retries)),
        start_period: Some(nanos(check.start_period)),
        // `StartInterval` needs API 1.44 (Docker 25); unset, every engine uses its default.
        ..Default::default()
    }
}

/// Whether Docker will run a health check for the service (`["NONE"]` disables one).
pub(super) fn has_healthcheck(service: &ServiceSpec) -> bool {
    service
        .healthcheck
        .as_ref()
        .is_some_and(|h| h.test.first().is_some_and(|t| t != "NONE"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::names::{RepoName, ServiceName};
    use crate::runtime::{PortSpec, Protocol, ResourceLimits, VolumeMount};

    fn spec() -> EnvSpec {
        let web = ServiceSpec {
            name: ServiceName::parse("web").unwrap(),
            image: "app:1".into(),
            command: Some(vec!["serve".into()]),
            entrypoint: None,
            environment: BTreeMap::from([("A".into(), "1".into())]),
            ports: vec![PortSpec {
                container_port: 8080,
                protocol: Protocol::Tcp,
            }],
            expose: vec![PortSpec {
                container_port: 9000,
                protocol: Protocol::Tcp,
            }],
            depends_on: vec![],
            healthcheck: Some(HealthcheckSpec {
                test: vec!["CMD".into(), "true".into()],
                interval: Duration::from_millis(500),
                timeout: Duration::from_secs(1),
                retries: 3,
                start_period: Duration::ZERO,
            }),
            restart: RestartPolicy::OnFailure {
                max_retries: Some(2),
            },
            volumes: vec![VolumeMount {
                volume: "data".into(),
                target: "/data".into(),
                read_only: false,
            }],
            working_dir: None,
            user: None,
            limits: ResourceLimits {
                memory_bytes: 256 << 20,
                nano_cpus: 0,
                pids: 100,
            },
            stop_signal: None,
            stop_grace: Duration::from_secs(5),
        };
        EnvSpec {
            env: EnvName::parse("demo-main").unwrap(),
            repo: RepoName::parse("demo").unwrap(),
            services: vec![web],
            volumes: vec!["data".into()],
            shared: None,
        }
    }

    #[test]
    fn container_config_maps_the_service_spec() {
        let spec = spec();
        let config = container_config("inst", "127.0.0.1", &spec, &spec.services[0]);
        assert_eq!(config.env, Some(vec!["A=1".to_string()]));
        let exposed = config.exposed_ports.unwrap();
        assert!(exposed.contains_key("8080/tcp") && exposed.contains_key("9000/tcp"));
        let labels = config.labels.unwrap();
        assert_eq!(labels[labels::SERVICE], "web");
        assert_eq!(labels[labels::SPEC_HASH], spec.services[0].spec_hash());
        assert_eq!(config.healthcheck.unwrap().interval, Some(500_000_000));

        let host = config.host_config.unwrap();
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings.len(), 1, "only `ports` are published");
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0]
                .host_port
                .as_deref(),
            Some("")
        );
        assert_eq!(
            bindings["8080/tcp"].as_ref().unwrap()[0].host_ip.as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(config.stop_timeout, Some(5));
        let mount = &host.mounts.unwrap()[0];
        assert_eq!(mount.source.as_deref(), Some("slipway-demo-main-data"));
        assert_eq!(mount.typ, Some(MountTypeEnum::VOLUME));
        assert_eq!(
            (host.memory, host.nano_cpus, host.pids_limit),
            (Some(256 << 20), None, Some(100))
        );
        assert_eq!(host.restart_policy.unwrap().maximum_retry_count, Some(2));
        assert!(host.binds.is_none() && host.privileged.is_none() && host.cap_add.is_none());

        let endpoints = config.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(
            endpoints["slipway-demo-main"].aliases,
            Some(vec!["web".to_string()])
        );
    }

    #[test]
    fn disabled_healthchecks_do_not_count() {
        let mut service = spec().services.remove(0);
        assert!(has_healthcheck(&service));
        service.healthcheck.as_mut().unwrap().test = vec!["NONE".into()];
        assert!(!has_healthcheck(&service));
    }
}
