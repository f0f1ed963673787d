//! Another env's containers on an env's network: a repo's shared services (one container
//! each, in the `<repo>-shared` env) are connected to the network of every env that uses
//! them, under their service name, so `db` resolves to the shared `db` there. Such a
//! container belongs to its own env: an env takes it off its network (before removing the
//! network, or when it stops wanting it) but never stops or removes it.

use std::collections::{BTreeSet, HashMap};

use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::InspectNetworkOptions;
use futures_util::future::try_join_all;

use super::observe::observed_service;
use super::{errors, network_name, DockerRuntime};
use crate::names::{EnvName, ServiceName};
use crate::runtime::{labels, EnvSpec, ObservedService, RuntimeError};

impl DockerRuntime {
    /// Ids of the containers on network `id` (an env's), `None` when the network is gone.
    async fn network_members(&self, id: &str) -> Result<Option<Vec<String>>, RuntimeError> {
        match self
            .docker
            .inspect_network(id, None::<InspectNetworkOptions>)
            .await
        {
            Ok(network) => Ok(Some(
                network.containers.unwrap_or_default().into_keys().collect(),
            )),
            Err(e) if errors::is_not_found(&e) => Ok(None),
            Err(e) => Err(errors::other(&format!("inspecting network {id}"), &e)),
        }
    }

    /// The containers of other envs of this instance on `env`'s network, as services of
    /// theirs. `own` are the ids of `env`'s service containers (skipped without a look).
    pub(super) async fn observe_shared(
        &self,
        env: &EnvName,
        own: &BTreeSet<String>,
    ) -> Result<Vec<ObservedService>, RuntimeError> {
        let mut members = Vec::new();
        for network in self.env_network_ids(env).await? {
            members.extend(self.network_members(&network).await?.unwrap_or_default());
        }
        let others = members.iter().filter(|id| !own.contains(*id));
        let inspected = try_join_all(others.map(|id| self.inspect_container(id))).await?;
        let mut shared: Vec<ObservedService> = inspected
            .iter()
            .flatten()
            .filter(|info| {
                let of = info.config.as_ref().and_then(|c| c.labels.as_ref());
                self.of_other_env(env, of)
            })
            .filter_map(observed_service)
            // Their published ports are their own env's, not this one's.
            .map(|service| ObservedService {
                ports: Vec::new(),
                ..service
            })
            .collect();
        shared.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(shared)
    }

    /// Whether labels name a container of this instance that belongs to an env other than
    /// `env` (and is not a job).
    fn of_other_env(&self, env: &EnvName, object: Option<&HashMap<String, String>>) -> bool {
        object.is_some_and(|l| {
            l.get(labels::INSTANCE) == Some(&self.instance)
                && l.get(labels::ENV).is_some_and(|e| e != env.as_str())
                && !l.contains_key(labels::JOB)
        })
    }

    /// Makes `spec.shared`'s services (and no other env's container) reachable on the env's
    /// network under their service names. Runs after the network exists.
    pub(super) async fn attach_shared(&self, spec: &EnvSpec) -> Result<(), RuntimeError> {
        let network = network_name(&spec.env);
        let members: BTreeSet<String> = self
            .network_members(&network)
            .await?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut wanted: Vec<(ServiceName, String)> = Vec::new();
        if let Some(shared) = &spec.shared {
            let containers = self.env_containers(&shared.env).await?;
            for service in &shared.services {
                let id = containers
                    .iter()
                    .filter(|c| !super::job::is_job(c.labels.as_ref()))
                    .find(|c| {
                        c.labels.as_ref().and_then(|l| l.get(labels::SERVICE))
                            == Some(&service.to_string())
                    })
                    .and_then(|c| c.id.clone());
                let Some(id) = id else {
                    return Err(RuntimeError::ServiceFailed {
                        service: service.clone(),
                        reason: format!(
                            "it is shared, but env `{}` has no container of it; see `slipway env status {}`",
                            shared.env, shared.env
                        ),
                    });
                };
                wanted.push((service.clone(), id));
            }
        }
        // Another env's container no longer wanted here (a service that stopped being
        // shared, an old copy) would answer to the same name as the env's own: off it goes.
        let keep: BTreeSet<&String> = wanted.iter().map(|(_, id)| id).collect();
        let unwanted = members.iter().filter(|id| !keep.contains(id));
        for id in unwanted {
            let info = self.inspect_container(id).await?;
            let of = info
                .as_ref()
                .and_then(|i| i.config.as_ref())
                .and_then(|c| c.labels.as_ref());
            if self.of_other_env(&spec.env, of) {
                self.disconnect(&network, id).await?;
                tracing::info!(env = %spec.env, container = %id, "took another env's container off the network");
            }
        }
        for (service, id) in wanted.iter().filter(|(_, id)| !members.contains(id)) {
            let request = NetworkConnectRequest {
                container: Some(id.clone()),
                endpoint_config: Some(EndpointSettings {
                    aliases: Some(vec![service.to_string()]),
                    ..Default::default()
                }),
            };
            match self.docker.connect_network(&network, request).await {
                Ok(()) => {}
                // Connected meanwhile (another pass): what we wanted.
                Err(e) if errors::describe(&e).contains("already exists") => {}
                Err(e) if errors::is_connection(&e) => {
                    return Err(errors::unavailable("connecting a shared service", &e))
                }
                Err(e) => {
                    return Err(RuntimeError::ServiceFailed {
                        service: service.clone(),
                        reason: format!(
                            "the shared container could not join the env's network: {}",
                            errors::describe(&e)
                        ),
                    })
                }
            }
            tracing::info!(env = %spec.env, %service, container = %id, "shared service attached");
        }
        Ok(())
    }

    /// Takes every container still on network `id` off it (run once the env's own are
    /// removed: what is left belongs to other envs and must survive the network).
    pub(super) async fn detach_all(&self, id: &str) -> Result<(), RuntimeError> {
        let members = self.network_members(id).await?.unwrap_or_default();
        for container in &members {
            self.disconnect(id, container).await?;
        }
        if !members.is_empty() {
            tracing::info!(network = %id, containers = members.len(), "took other envs' containers off the network");
        }
        Ok(())
    }

    async fn disconnect(&self, network: &str, container: &str) -> Result<(), RuntimeError> {
        let request = NetworkDisconnectRequest {
            container: Some(container.to_string()),
            force: Some(true),
        };
        match self.docker.disconnect_network(network, request).await {
            Ok(()) => Ok(()),
            // Gone, or already off the network: what we wanted.
            Err(e) if errors::is_not_found(&e) => Ok(()),
            Err(e) if errors::describe(&e).contains("not connected") => Ok(()),
            Err(e) => Err(errors::other(
                &format!("taking container {container} off network {network}"),
                &e,
            )),
        }
    }
}
