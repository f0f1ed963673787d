//! Turns a parsed compose file at one commit into the runtime's desired state: which images
//! to build or pull, and the `EnvSpec` to apply. A repo's shared env gets the file's shared
//! services only; any other env gets the rest, and reaches the shared ones by name. Built images are tagged by the content of
//! their build (git tree id of the context, Dockerfile path, args, target), so a service whose
//! build did not change keeps its image and therefore its container.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{parse_env_file, ComposeFile, ComposeService};
use crate::git::{GitError, GitMirrors, RepoPath};
use crate::names::{CommitSha, EnvName, RepoName, ServiceName};
use crate::runtime::{
    BuildContext, BuildRequest, EnvSpec, ImageSource, ResourceLimits, ServiceSpec, SharedServices,
    VolumeMount,
};

#[derive(Debug, Clone, thiserror::Error)]
pub enum PlanError {
    #[error("service `{service}`: {source}")]
    Git { service: String, source: GitError },
}

/// What to do for one env: get these images, then apply this spec.
#[derive(Debug, Clone)]
pub struct EnvPlan {
    pub images: Vec<(ServiceName, ImageSource)>,
    pub spec: EnvSpec,
}

pub struct PlanInput<'a> {
    pub env: &'a EnvName,
    pub repo: &'a RepoName,
    pub commit: &'a CommitSha,
    /// The compose file's own path, to resolve relative paths against its folder.
    pub compose_path: &'a RepoPath,
    pub file: &'a ComposeFile,
    pub default_limits: ResourceLimits,
}

pub async fn plan(input: PlanInput<'_>, git: &GitMirrors) -> Result<EnvPlan, PlanError> {
    let base = input.compose_path.parent();
    let mut images = Vec::new();
    let mut services = Vec::new();
    let in_shared_env = input.env.is_shared_of(input.repo);
    let shared: Vec<ServiceName> = input
        .file
        .shared_services()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    for service in input
        .file
        .services
        .iter()
        .filter(|s| s.shared == in_shared_env)
    {
        let git_err = |source| PlanError::Git {
            service: service.name.to_string(),
            source,
        };
        let source = image_source(&input, &base, service, git)
            .await
            .map_err(git_err)?;
        let image = match &source {
            ImageSource::Pull { reference } => reference.clone(),
            ImageSource::Build(req) => req.tag.clone(),
        };
        images.push((service.name.clone(), source));
        let environment = environment(&input, &base, service, git)
            .await
            .map_err(git_err)?;
        let mut spec = service_spec(service, image, environment, input.default_limits);
        // The shared env is Ready before this env applies (the reconciler waits for it),
        // which is what a dependency on a shared service waits for.
        spec.depends_on.retain(|d| !shared.contains(&d.service));
        services.push(spec);
    }
    // Each env's own copy of the volumes its services mount; the shared env's are the ones
    // its services mount (the parser refused a volume mounted on both sides).
    let mounted_by_shared: Vec<&String> = input
        .file
        .shared_services()
        .iter()
        .flat_map(|s| s.volumes.iter().map(|(volume, _, _)| volume))
        .collect();
    let volumes = input
        .file
        .volumes
        .iter()
        .filter(|v| mounted_by_shared.contains(v) == in_shared_env)
        .cloned()
        .collect();
    let shared = (!in_shared_env && !shared.is_empty()).then(|| SharedServices {
        env: EnvName::for_shared(input.repo),
        services: shared,
    });
    let spec = EnvSpec {
        env: input.env.clone(),
        repo: input.repo.clone(),
        services,
        volumes,
        shared,
    };
    Ok(EnvPlan { images, spec })
}

async fn image_source(
    input: &PlanInput<'_>,
    base: &str,
    service: &ComposeService,
    git: &GitMirrors,
) -> Result<ImageSource, GitError> {
    let Some(build) = &service.build else {
        return Ok(ImageSource::Pull {
            reference: service.image.clone().unwrap_or_default(),
        });
    };
    let context = RepoPath::resolve(base, &build.context)?;
    // The Dockerfile must be inside the context: the context tar is all the build sees.
    let dockerfile = RepoPath::resolve("", &build.dockerfile)?;
    let tree = git.tree_id(input.repo, input.commit, &context).await?;
    let mut hasher = Sha256::new();
    for part in [
        tree.as_str(),
        dockerfile.as_str(),
        build.target.as_deref().unwrap_or(""),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    for (k, v) in &build.args {
        hasher.update(format!("{k}={v}\0").as_bytes());
    }
    let content = hex::encode(hasher.finalize());
    // A compose `image:` next to `build:` names the result; Slipway keeps its own content tag
    // so two branches never overwrite each other's image, and an image under the tag is
    // what this content builds (128 bits of the hash: no labels to compare, see BuildRequest).
    let tag = format!("slipway/{}-{}:{}", input.repo, service.name, &content[..32]);
    let context = {
        let (git, repo, commit) = (git.clone(), input.repo.clone(), input.commit.clone());
        BuildContext::lazy(move || {
            let (git, repo, commit, context) =
                (git.clone(), repo.clone(), commit.clone(), context.clone());
            async move {
                git.archive(&repo, &commit, &context)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
    };
    Ok(ImageSource::Build(BuildRequest {
        service: service.name.clone(),
        tag,
        dockerfile: dockerfile.as_str().to_string(),
        context,
        args: build.args.clone(),
        target: build.target.clone(),
        required_labels: BTreeMap::new(),
    }))
}

/// `env_file` contents first, then `environment`, which wins (as in compose).
async fn environment(
    input: &PlanInput<'_>,
    base: &str,
    service: &ComposeService,
    git: &GitMirrors,
) -> Result<BTreeMap<String, String>, GitError> {
    let mut env = BTreeMap::new();
    for file in &service.env_files {
        let path = RepoPath::resolve(base, file)?;
        let bytes = git.read_file(input.repo, input.commit, &path).await?;
        env.extend(parse_env_file(&String::from_utf8_lossy(&bytes)));
    }
    env.extend(service.environment.clone());
    Ok(env)
}

fn service_spec(
    service: &ComposeService,
    image: String,
    environment: BTreeMap<String, String>,
    defaults: ResourceLimits,
) -> ServiceSpec {
    ServiceSpec {
        name: service.name.clone(),
        image,
        command: service.command.clone(),
        entrypoint: service.entrypoint.clone(),
        environment,
        ports: service.ports.clone(),
        expose: service.expose.clone(),
        depends_on: service.depends_on.clone(),
        healthcheck: service.healthcheck.clone(),
        restart: service.restart.clone(),
        volumes: service
            .volumes
            .iter()
            .map(|(volume, target, read_only)| VolumeMount {
                volume: volume.clone(),
                target: target.clone(),
                read_only: *read_only,
            })
            .collect(),
        working_dir: service.working_dir.clone(),
        user: service.user.clone(),
        limits: ResourceLimits {
            memory_bytes: service.mem_limit.unwrap_or(defaults.memory_bytes),
            nano_cpus: service.nano_cpus.unwrap_or(defaults.nano_cpus),
            pids: service.pids_limit.unwrap_or(defaults.pids),
        },
        stop_signal: service.stop_signal.clone(),
        stop_grace: service.stop_grace,
    }
}
