//! Reading what exists: containers and their states, the network, volumes, and which envs
//! this instance has anything for.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, EndpointSettings,
    HealthStatusEnum,
};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder,
};
use futures_util::future::try_join_all;

use super::{errors, volume_prefix, DockerRuntime};
use crate::names::{EnvName, ServiceName};
use crate::runtime::{
    labels, ObservedEnv, ObservedService, Protocol, PublishedPort, RuntimeError, ServiceState,
};

impl DockerRuntime {
    /// Containers (running or not) of this instance's `env`.
    pub(super) async fn env_containers(
        &self,
        env: &EnvName,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&self.env_filters(env))
            .build();
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(|e| errors::other(&format!("listing the containers of env `{env}`"), &e))
    }

    /// Full details of one container; `None` when it no longer exists.
    pub(super) async fn inspect_container(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(e) if errors::is_not_found(&e) => Ok(None),
            Err(e) => Err(errors::other(&format!("inspecting container {id}"), &e)),
        }
    }

    /// Every service container of `env`, sorted by service name.
    pub(super) async fn observe_services(
        &self,
        env: &EnvName,
    ) -> Result<Vec<ObservedService>, RuntimeError> {
        let summaries = self.env_containers(env).await?;
        // Inspect in parallel: only inspect reports health and OOM kills.
        let inspected = try_join_all(
            summaries
                .iter()
                .filter(|s| !super::job::is_job(s.labels.as_ref()))
                .filter_map(|s| s.id.as_deref())
                .map(|id| self.inspect_container(id)),
        )
        .await?;
        let mut services: Vec<ObservedService> = inspected
            .iter()
            .flatten()
            .filter_map(observed_service)
            .collect();
        services.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(services)
    }

    pub(super) async fn observe_env(&self, env: &EnvName) -> Result<ObservedEnv, RuntimeError> {
        let (services, network, volumes) = tokio::try_join!(
            self.observe_services(env),
            self.network_exists(env),
            self.env_volumes(env)
        )?;
        let own: BTreeSet<String> = services.iter().map(|s| s.container_id.clone()).collect();
        let shared = if network {
            self.observe_shared(env, &own).await?
        } else {
            Vec::new()
        };
        Ok(ObservedEnv {
            network,
            volumes,
            services,
            shared,
        })
    }

    async fn network_exists(&self, env: &EnvName) -> Result<bool, RuntimeError> {
        Ok(!self.env_network_ids(env).await?.is_empty())
    }

    /// Ids of this instance's networks for `env` (normally one).
    pub(super) async fn env_network_ids(&self, env: &EnvName) -> Result<Vec<String>, RuntimeError> {
        let options = ListNetworksOptionsBuilder::new()
            .filters(&self.env_filters(env))
            .build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| errors::other(&format!("listing the networks of env `{env}`"), &e))?;
        Ok(networks.into_iter().filter_map(|n| n.id).collect())
    }

    /// Docker names of this instance's volumes for `env`.
    pub(super) async fn env_volume_names(
        &self,
        env: &EnvName,
    ) -> Result<Vec<String>, RuntimeError> {
        let options = ListVolumesOptionsBuilder::new()
            .filters(&self.env_filters(env))
            .build();
        let response = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(|e| errors::other(&format!("listing the volumes of env `{env}`"), &e))?;
        Ok(response
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    /// The env's volumes under their compose names.
    async fn env_volumes(&self, env: &EnvName) -> Result<Vec<String>, RuntimeError> {
        let prefix = volume_prefix(env);
        let mut names: Vec<String> = self
            .env_volume_names(env)
            .await?
            .into_iter()
            .filter_map(|name| name.strip_prefix(&prefix).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every env with a container, network or volume labelled with this instance.
    pub(super) async fn instance_envs(&self) -> Result<Vec<EnvName>, RuntimeError> {
        let filters = self.instance_filters();
        let containers = self.docker.list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ));
        let networks = self.docker.list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ));
        let volumes = self.docker.list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ));
        let (containers, networks, volumes) = tokio::try_join!(containers, networks, volumes)
            .map_err(|e| errors::other("listing this instance's Docker objects", &e))?;

        let label_sets = containers
            .into_iter()
            .filter_map(|c| c.labels)
            .chain(networks.into_iter().filter_map(|n| n.labels))
            .chain(
                volumes
                    .volumes
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| v.labels),
            );
        let envs: BTreeSet<EnvName> = label_sets.filter_map(|labels| env_label(&labels)).collect();
        Ok(envs.into_iter().collect())
    }
}

impl DockerRuntime {
    /// Every service container of this instance, grouped by env, from one listing: state
    /// from the listing's state and status text (health in parentheses, the exit code of
    /// "Exited (N) …"), ports from its port list.
    pub(super) async fn glance_services(
        &self,
    ) -> Result<BTreeMap<EnvName, Vec<ObservedService>>, RuntimeError> {
        let containers = self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&self.instance_filters())
                    .build(),
            ))
            .await
            .map_err(|e| errors::other("listing this instance's containers", &e))?;
        let mut all: BTreeMap<EnvName, Vec<ObservedService>> = BTreeMap::new();
        for container in containers {
            let Some(container_labels) = container.labels.as_ref() else {
                continue;
            };
            if super::job::is_job(Some(container_labels)) {
                continue;
            }
            let (Some(env), Some(name)) = (
                env_label(container_labels),
                container_labels
                    .get(labels::SERVICE)
                    .and_then(|s| ServiceName::parse(s).ok()),
            ) else {
                continue;
            };
            let mut ports: Vec<PublishedPort> = container
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(PublishedPort {
                        container_port: p.private_port,
                        host_port: p.public_port?,
                        protocol: match p.typ {
                            Some(bollard::models::PortTypeEnum::UDP) => Protocol::Udp,
                            _ => Protocol::Tcp,
                        },
                    })
                })
                .collect();
            ports.sort_by_key(|p| (p.container_port, p.host_port, p.protocol.as_str()));
            ports.dedup();
            let address = env_address(
                container
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref()),
                &env,
            );
            all.entry(env).or_default().push(ObservedService {
                name,
                container_id: container.id.clone().unwrap_or_default(),
                spec_hash: container_labels
                    .get(labels::SPEC_HASH)
                    .cloned()
                    .unwrap_or_default(),
                state: listed_state(
                    container.state.as_ref().map(|s| s.to_string()).as_deref(),
                    container.status.as_deref().unwrap_or_default(),
                ),
                ports,
                address,
            });
        }
        for services in all.values_mut() {
            services.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(all)
    }
}

/// A container's state as a listing tells it: `state` is Docker's word ("running",
/// "exited", …), `status` its text ("Up 2 minutes (healthy)", "Exited (3) 5 seconds ago").
fn listed_state(state: Option<&str>, status: &str) -> ServiceState {
    match state.unwrap_or_default() {
        "running" if status.contains("(healthy)") => ServiceState::Healthy,
        "running" if status.contains("(unhealthy)") => ServiceState::Unhealthy,
        "running" if status.contains("(health: starting)") => ServiceState::Starting,
        "running" => ServiceState::Running,
        "restarting" => ServiceState::Restarting,
        "paused" => ServiceState::Unhealthy,
        "exited" | "dead" | "removing" => ServiceState::Exited {
            code: status
                .strip_prefix("Exited (")
                .and_then(|rest| rest.split(')').next())
                .and_then(|code| code.trim().parse().ok())
                .unwrap_or(-1),
            oom_killed: false,
        },
        _ => ServiceState::Created,
    }
}

fn env_label(object_labels: &HashMap<String, String>) -> Option<EnvName> {
    let value = object_labels.get(labels::ENV)?;
    match EnvName::parse(value) {
        Ok(env) => Some(env),
        Err(e) => {
            let error = e.to_string();
            tracing::warn!(env = %value, error, "ignoring Docker object with an invalid env label");
            None
        }
    }
}

/// The service a container runs, from its labels; `None` for containers without a valid
/// service label (nothing Slipway created).
pub(super) fn observed_service(info: &ContainerInspectResponse) -> Option<ObservedService> {
    let container_labels = info.config.as_ref()?.labels.as_ref()?;
    let name = ServiceName::parse(container_labels.get(labels::SERVICE)?).ok()?;
    let address = env_label(container_labels).and_then(|env| {
        let networks = info.network_settings.as_ref()?.networks.as_ref();
        env_address(networks, &env)
    });
    Some(ObservedService {
        address,
        name,
        container_id: info.id.clone()?,
        spec_hash: container_labels
            .get(labels::SPEC_HASH)
            .cloned()
            .unwrap_or_default(),
        state: service_state(info),
        ports: published_ports(info),
    })
}

/// The container's IP on `env`'s network (else on any network it has one on): none while
/// it is stopped.
fn env_address(
    networks: Option<&HashMap<String, EndpointSettings>>,
    env: &EnvName,
) -> Option<IpAddr> {
    let networks = networks?;
    let ip = |settings: &EndpointSettings| {
        settings
            .ip_address
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
    };
    networks
        .get(&super::network_name(env))
        .and_then(ip)
        .or_else(|| networks.values().find_map(ip))
}

/// The container's state in Slipway's terms.
pub(super) fn service_state(info: &ContainerInspectResponse) -> ServiceState {
    let Some(state) = info.state.as_ref() else {
        return ServiceState::Created;
    };
    let exited = || ServiceState::Exited {
        code: state.exit_code.unwrap_or_default(),
        oom_killed: state.oom_killed.unwrap_or_default(),
    };
    match state.status {
        Some(ContainerStateStatusEnum::RUNNING) => {
            match state.health.as_ref().and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) => ServiceState::Healthy,
                Some(HealthStatusEnum::UNHEALTHY) => ServiceState::Unhealthy,
                Some(HealthStatusEnum::STARTING) => ServiceState::Starting,
                _ => ServiceState::Running,
            }
        }
        Some(ContainerStateStatusEnum::RESTARTING) => ServiceState::Restarting,
        // A paused container serves nothing; reporting it as unhealthy gets it replaced.
        Some(ContainerStateStatusEnum::PAUSED) => ServiceState::Unhealthy,
        Some(
            ContainerStateStatusEnum::EXITED
            | ContainerStateStatusEnum::DEAD
            | ContainerStateStatusEnum::REMOVING,
        ) => exited(),
        Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::EMPTY) | None => {
            ServiceState::Created
        }
    }
}

/// Host ports Docker picked for the container's published ports.
pub(super) fn published_ports(info: &ContainerInspectResponse) -> Vec<PublishedPort> {
    let Some(ports) = info
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.as_ref())
    else {
        return Vec::new();
    };
    let mut published = Vec::new();
    for (key, bindings) in ports {
        let Some((container_port, protocol)) = parse_port_key(key) else {
            continue;
        };
        // Docker 20.10 may bind IPv4 and IPv6 on *different* host ports; report one port per
        // container port, the IPv4 one when there is one, since URLs use an IPv4 host.
        let mut candidates: Vec<_> = bindings.iter().flatten().collect();
        candidates.sort_by_key(|b| b.host_ip.as_deref().is_some_and(|ip| ip.contains(':')));
        for binding in candidates {
            let host_port = binding
                .host_port
                .as_deref()
                .and_then(|p| p.parse::<u16>().ok());
            let Some(host_port) = host_port else { continue };
            let already = published.iter().any(|p: &PublishedPort| {
                p.container_port == container_port && p.protocol == protocol
            });
            if !already {
                published.push(PublishedPort {
                    container_port,
                    host_port,
                    protocol,
                });
            }
        }
    }
    published.sort_by_key(|p| (p.container_port, p.protocol.as_str(), p.host_port));
    published
}

/// `"8080/tcp"` → `(8080, Tcp)`.
fn parse_port_key(key: &str) -> Option<(u16, Protocol)> {
    let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some((port.parse().ok()?, protocol))
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerState, Health, NetworkSettings, PortBinding};

    use super::*;

    fn with_state(state: ContainerState) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(state),
            ..Default::default()
        }
    }

    #[test]
    fn states_follow_status_and_health() {
        let running = |health: Option<HealthStatusEnum>| ContainerState {
            status: Some(ContainerStateStatusEnum::RUNNING),
            health: health.map(|status| Health {
                status: Some(status),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            service_state(&with_state(running(None))),
            ServiceState::Running
        );
        assert_eq!(
            service_state(&with_state(running(Some(HealthStatusEnum::STARTING)))),
            ServiceState::Starting
        );
        assert_eq!(
            service_state(&with_state(running(Some(HealthStatusEnum::HEALTHY)))),
            ServiceState::Healthy
        );
        assert_eq!(
            service_state(&with_state(running(Some(HealthStatusEnum::UNHEALTHY)))),
            ServiceState::Unhealthy
        );
        let oom = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..Default::default()
        };
        assert_eq!(
            service_state(&with_state(oom)),
            ServiceState::Exited {
                code: 137,
                oom_killed: true
            }
        );
    }

    #[test]
    fn published_ports_are_deduplicated_and_parsed() {
        let binding = |ip: &str, port: &str| PortBinding {
            host_ip: Some(ip.into()),
            host_port: Some(port.into()),
        };
        let ports = HashMap::from([
            (
                "8080/tcp".to_string(),
                Some(vec![
                    binding("::", "49152"),
                    binding("0.0.0.0", "49153"),
                    binding("::", "49153"),
                ]),
            ),
            (
                "53/udp".to_string(),
                Some(vec![binding("0.0.0.0", "49154")]),
            ),
            ("9000/tcp".to_string(), None),
        ]);
        let info = ContainerInspectResponse {
            network_settings: Some(NetworkSettings {
                ports: Some(ports),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            published_ports(&info),
            vec![
                PublishedPort {
                    container_port: 53,
                    host_port: 49154,
                    protocol: Protocol::Udp
                },
                PublishedPort {
                    container_port: 8080,
                    host_port: 49153,
                    protocol: Protocol::Tcp
                },
            ]
        );
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;

    #[test]
    fn listed_states_read_health_and_exit_codes() {
        assert_eq!(
            listed_state(Some("running"), "Up 2 minutes (healthy)"),
            ServiceState::Healthy
        );
        assert_eq!(
            listed_state(Some("running"), "Up 2 seconds (health: starting)"),
            ServiceState::Starting
        );
        assert_eq!(
            listed_state(Some("running"), "Up 1 hour"),
            ServiceState::Running
        );
        assert_eq!(
            listed_state(Some("exited"), "Exited (3) 5 seconds ago"),
            ServiceState::Exited {
                code: 3,
                oom_killed: false
            }
        );
        assert_eq!(
            listed_state(Some("restarting"), "Restarting (1) 2 seconds ago"),
            ServiceState::Restarting
        );
        assert_eq!(listed_state(None, ""), ServiceState::Created);
    }
}
