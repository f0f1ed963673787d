//! One-shot jobs (integration test runs) on an env's network: a container labelled as a
//! job, its output streamed while it runs, killed at its timeout, a report file copied out
//! after it exits, and the container removed whatever happened.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    StartContainerOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::container::container_config;
use super::{errors, DockerRuntime};
use crate::names::EnvName;
use crate::runtime::{
    labels, EnvSpec, JobContainer, JobOutcome, JobSpec, RuntimeError, MAX_COLLECTED_BYTES,
};

impl DockerRuntime {
    pub(super) async fn run_job_container(
        &self,
        env: &EnvSpec,
        job: &JobSpec,
        output: mpsc::Sender<Bytes>,
    ) -> Result<JobOutcome, RuntimeError> {
        let name = format!("slipway-{}-{}", env.env, job.id);
        let mut config = container_config(&self.instance, &self.publish_address, env, &job.service);
        if let Some(labels) = config.labels.as_mut() {
            labels.insert(labels::JOB.to_string(), job.id.clone());
        }
        // A job publishes nothing and never restarts.
        if let Some(host) = config.host_config.as_mut() {
            host.port_bindings = None;
            host.restart_policy = None;
        }
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        // A container left by an interrupted run of the same job goes first.
        let _ = self.remove_container(&name).await;
        let id = match self.docker.create_container(Some(options), config).await {
            Ok(created) => created.id,
            Err(e) if errors::is_connection(&e) => {
                return Err(errors::unavailable("creating a job container", &e))
            }
            Err(e) => {
                return Ok(JobOutcome {
                    error: Some(errors::describe(&e)),
                    ..Default::default()
                })
            }
        };
        let outcome = self.supervise(&id, job, output).await;
        // Whatever happened, the job's container goes (its output has been streamed).
        self.remove_container(&id).await?;
        outcome
    }

    async fn supervise(
        &self,
        id: &str,
        job: &JobSpec,
        output: mpsc::Sender<Bytes>,
    ) -> Result<JobOutcome, RuntimeError> {
        if let Err(e) = self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            if errors::is_connection(&e) {
                return Err(errors::unavailable("starting a job container", &e));
            }
            return Ok(JobOutcome {
                error: Some(errors::describe(&e)),
                ..Default::default()
            });
        }
        let follow = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(id, Some(follow));
        let stream_output = async {
            while let Some(chunk) = logs.next().await {
                match chunk {
                    Ok(chunk) => {
                        if output.send(chunk.into_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        };
        // The log stream ends when the container exits.
        let timed_out = tokio::time::timeout(job.timeout, stream_output)
            .await
            .is_err();
        if timed_out {
            let kill = KillContainerOptionsBuilder::new().signal("SIGKILL").build();
            let _ = self.docker.kill_container(id, Some(kill)).await;
        }
        let info = self.wait_stopped(id).await?;
        let state = info.as_ref().and_then(|i| i.state.as_ref());
        let exit_code = state.and_then(|s| s.exit_code);
        let oom_killed = state.and_then(|s| s.oom_killed).unwrap_or(false);
        let error = state
            .and_then(|s| s.error.clone())
            .filter(|e| !e.is_empty());
        let collected = match &job.collect {
            Some(path) if !timed_out => self.copy_out(id, path).await,
            _ => None,
        };
        Ok(JobOutcome {
            exit_code,
            oom_killed,
            timed_out,
            error,
            collected,
        })
    }

    /// Inspects until the container is no longer running (a kill takes a moment).
    async fn wait_stopped(
        &self,
        id: &str,
    ) -> Result<Option<bollard::models::ContainerInspectResponse>, RuntimeError> {
        for _ in 0..100 {
            let info = self.inspect_container(id).await?;
            let running = info
                .as_ref()
                .and_then(|i| i.state.as_ref())
                .and_then(|s| s.running)
                .unwrap_or(false);
            if !running {
                return Ok(info);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.inspect_container(id).await
    }

    /// The file at `path` in the stopped container, if it exists and is not too large.
    async fn copy_out(&self, id: &str, path: &str) -> Option<Vec<u8>> {
        let options = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.docker.download_from_container(id, Some(options));
        let mut archive = Vec::new();
        while let Some(chunk) = stream.next().await {
            archive.extend_from_slice(&chunk.ok()?);
            // A tar holds some headers beyond the file itself.
            if archive.len() > MAX_COLLECTED_BYTES + 64 * 1024 {
                tracing::warn!(path, "job report too large; ignored");
                return None;
            }
        }
        first_file(&archive)
    }
}

impl DockerRuntime {
    /// This instance's job containers, from one listing.
    pub(super) async fn job_containers(&self) -> Result<Vec<JobContainer>, RuntimeError> {
        let mut filters = self.instance_filters();
        filters
            .entry("label".to_string())
            .or_default()
            .push(labels::JOB.to_string());
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| errors::other("listing this instance's job containers", &e))?;
        Ok(containers
            .into_iter()
            .filter_map(|c| {
                let labels = c.labels?;
                let env = EnvName::parse(labels.get(labels::ENV)?).ok()?;
                Some(JobContainer {
                    env,
                    id: labels.get(labels::JOB)?.clone(),
                    running: c
                        .state
                        .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING),
                })
            })
            .collect())
    }

    /// Removes job `id`'s container of `env`, found by its labels (never by name alone).
    pub(super) async fn remove_job_container(
        &self,
        env: &EnvName,
        id: &str,
    ) -> Result<(), RuntimeError> {
        let mut filters = self.env_filters(env);
        filters
            .entry("label".to_string())
            .or_default()
            .push(format!("{}={id}", labels::JOB));
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| errors::other(&format!("listing job `{id}` of env `{env}`"), &e))?;
        for container in containers {
            if let Some(container_id) = container.id {
                self.remove_container(&container_id).await?;
            }
        }
        Ok(())
    }
}

/// The first regular file in a tar archive.
fn first_file(archive: &[u8]) -> Option<Vec<u8>> {
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().ok()? {
        let mut entry = entry.ok()?;
        if entry.header().entry_type().is_file() {
            let mut contents = Vec::new();
            entry
                .by_ref()
                .take(MAX_COLLECTED_BYTES as u64)
                .read_to_end(&mut contents)
                .ok()?;
            return Some(contents);
        }
    }
    None
}

/// Whether a listed container is a job rather than a service.
pub(super) fn is_job(labels: Option<&HashMap<String, String>>) -> bool {
    labels.is_some_and(|l| l.contains_key(labels::JOB))
}
