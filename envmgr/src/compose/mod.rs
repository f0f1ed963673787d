//! Compose files, read from a branch and therefore untrusted. Parsing happens in three steps:
//! the YAML is read as plain values, the [`policy`] refuses what could reach the host, and the
//! keys Slipway supports are deserialised with the value types of `docker-compose-types`
//! (its `Service` type rejects keys it does not know and lacks `cpus`/`pids_limit`, so the
//! service-level struct is ours). Every key Slipway does not apply is reported as a warning.
//!
//! The reader is bounded before it reads: the file's size, the number of YAML nodes it
//! expands to ([`yaml`]), and the number of services, volumes and published ports are held
//! to `[limits]` ([`EnvLimits`]); resource limits are clamped between a floor and the
//! configured ceilings, and names that reach Docker are checked here, with the reason.

mod limits;
pub mod plan;
pub mod policy;
mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use docker_compose_types as dct;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

use crate::names::ServiceName;
use crate::runtime::{
    Dependency, DependencyCondition, HealthcheckSpec, PortSpec, Protocol, RestartPolicy,
};
use crate::settings::EnvLimits;

pub use limits::show_bytes;
pub use policy::PolicyViolation;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComposeError {
    #[error("the compose file is not valid YAML: {0}")]
    Yaml(String),
    #[error("the compose file has no `services`")]
    NoServices,
    #[error("service `{service}`: {message}")]
    Service { service: String, message: String },
    #[error("{0}")]
    Policy(#[from] PolicyViolation),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "compose file is {size} bytes; the limit is {limit} bytes ([limits] max_compose_size)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error("compose file has {count} {what}; the limit is {limit} ([limits] {key})")]
    OverLimit {
        what: &'static str,
        count: usize,
        limit: usize,
        key: &'static str,
    },
    #[error("the compose file expands to more than {budget} YAML nodes (anchors and aliases repeated too often?); it was not read")]
    TooManyNodes { budget: usize },
    #[error("the compose file has {count} `[`/`{{` (flow collections); a file of its size may have at most {allowed}: write it in block style, or make it smaller")]
    TooManyFlowOpeners { count: usize, allowed: usize },
}

/// A compose file reduced to what Slipway applies, plus what it does not.
#[derive(Debug, Clone, PartialEq)]
pub struct ComposeFile {
    /// Services started in an env, in file order. Services in a profile are left out.
    pub services: Vec<ComposeService>,
    /// Services that only run when their profile is asked for (e.g. `test`).
    pub profiled: Vec<ComposeService>,
    pub volumes: Vec<String>,
    /// Keys present in the file that Slipway does not apply, one line each.
    pub warnings: Vec<String>,
    /// `x-slipway: { tests: { timeout, report } }`.
    pub tests: TestOptions,
    /// `x-slipway: { main: <service> }`: what the front door's `<env>.<domain>` reaches.
    pub main: Option<ServiceName>,
}

impl ComposeFile {
    /// The services that run once per repo, in its shared env (see [`ComposeService::shared`]),
    /// in file order.
    pub fn shared_services(&self) -> Vec<&ComposeService> {
        self.services.iter().filter(|s| s.shared).collect()
    }
}

/// How the integration tests of a compose file run: its services in the `test` profile,
/// with these options from the `x-slipway` extension.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestOptions {
    /// At most this long per run (the repo's `test_timeout` is the ceiling).
    pub timeout: Option<Duration>,
    /// Where test services write their JUnit XML report (default [`DEFAULT_REPORT_PATH`]).
    pub report: Option<String>,
}

/// The compose profile whose services are the integration tests.
pub const TEST_PROFILE: &str = "test";
/// Where a test service writes its JUnit report unless `x-slipway.tests.report` says
/// otherwise; the path is also in the service's `SLIPWAY_JUNIT_PATH` variable.
pub const DEFAULT_REPORT_PATH: &str = "/tmp/slipway-junit.xml";

impl ComposeFile {
    /// The integration test services (profile `test`), in file order.
    pub fn test_services(&self) -> Vec<&ComposeService> {
        self.profiled
            .iter()
            .filter(|s| s.profiles.iter().any(|p| p == TEST_PROFILE))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComposeService {
    pub name: ServiceName,
    pub image: Option<String>,
    pub build: Option<BuildDef>,
    pub command: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    /// `env_file` paths, relative to the compose file's folder, read from the same commit.
    pub env_files: Vec<String>,
    pub ports: Vec<PortSpec>,
    pub expose: Vec<PortSpec>,
    pub depends_on: Vec<Dependency>,
    pub healthcheck: Option<HealthcheckSpec>,
    pub restart: RestartPolicy,
    /// (volume name, target, read only)
    pub volumes: Vec<(String, String, bool)>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub mem_limit: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub profiles: Vec<String>,
    /// `stop_signal`, normalised (`SIGTERM`, or a number); Docker's default when `None`.
    pub stop_signal: Option<String>,
    /// `stop_grace_period`, or [`DEFAULT_STOP_GRACE`]; at most `[limits] max_stop_grace`.
    pub stop_grace: Duration,
    /// Runs once per repo, at the repo's target branch, in the `<repo>-shared` env, and every
    /// env of the repo reaches it under its name (`x-slipway: { shared: true }` on the
    /// service, or its name in the top-level `x-slipway: { shared: [..] }`). Otherwise each
    /// env has its own copy.
    pub shared: bool,
}

/// How long a container may take to stop when the compose file does not say.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildDef {
    /// Relative to the compose file's folder.
    pub context: String,
    pub dockerfile: String,
    pub args: BTreeMap<String, String>,
    pub target: Option<String>,
}

/// Keys of a service that Slipway applies.
const SUPPORTED_SERVICE_KEYS: &[&str] = &[
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "depends_on",
    "healthcheck",
    "restart",
    "volumes",
    "working_dir",
    "user",
    "mem_limit",
    "cpus",
    "pids_limit",
    "profiles",
    "stop_signal",
    "stop_grace_period",
    "deploy",
];

/// Keys with no effect on what runs, accepted without a warning.
const HARMLESS_SERVICE_KEYS: &[&str] =
    &["container_name", "labels", "hostname", "tty", "stdin_open"];

/// The supported subset of a service. Value types come from docker-compose-types.
#[derive(Deserialize)]
struct ServiceDef {
    image: Option<String>,
    build: Option<dct::BuildStep>,
    command: Option<dct::Command>,
    entrypoint: Option<dct::Entrypoint>,
    #[serde(default)]
    environment: Option<dct::Environment>,
    env_file: Option<dct::StringOrList>,
    /// Short and long forms may be mixed, which `dct::Ports` does not allow.
    #[serde(default)]
    ports: Vec<Value>,
    #[serde(default)]
    expose: Vec<Value>,
    #[serde(default)]
    depends_on: Option<dct::DependsOnOptions>,
    healthcheck: Option<dct::Healthcheck>,
    restart: Option<String>,
    #[serde(default)]
    volumes: Vec<dct::Volumes>,
    working_dir: Option<String>,
    user: Option<Value>,
    mem_limit: Option<Value>,
    cpus: Option<Value>,
    pids_limit: Option<Value>,
    #[serde(default)]
    profiles: Vec<String>,
    stop_signal: Option<Value>,
    stop_grace_period: Option<Value>,
    deploy: Option<Value>,
}

impl ComposeFile {
    /// Reads a compose file with the default resource ceilings and no count limits: for
    /// readers that only need what a file says. Envs are read with [`Self::parse_limited`].
    pub fn parse(text: &[u8]) -> Result<Self, ComposeError> {
        Self::parse_limited(text, &EnvLimits::default().for_reading())
    }

    /// Reads a compose file held to `limits`: past a size or count limit nothing is returned
    /// (so nothing starts); resource limits out of range are clamped and reported.
    pub fn parse_limited(text: &[u8], limits: &EnvLimits) -> Result<Self, ComposeError> {
        if text.len() > limits.max_compose_bytes {
            return Err(ComposeError::TooLarge {
                size: text.len() as u64,
                limit: limits.max_compose_bytes as u64,
            });
        }
        let root = yaml::load(text).map_err(|e| match e {
            yaml::LoadError::Syntax(message) => ComposeError::Yaml(message),
            yaml::LoadError::TooManyNodes { budget } => ComposeError::TooManyNodes { budget },
            yaml::LoadError::TooManyFlowOpeners { count, allowed } => {
                ComposeError::TooManyFlowOpeners { count, allowed }
            }
        })?;
        let root = root
            .as_mapping()
            .ok_or_else(|| ComposeError::Invalid("the compose file must be a mapping".into()))?;
        policy::check(root)?;

        let mut warnings = Vec::new();
        for key in root.keys().filter_map(Value::as_str) {
            match key {
                "services" | "volumes" | "version" | "name" => {}
                k if k.starts_with("x-") => {}
                "networks" => warnings
                    .push("`networks` is ignored: each env gets one private network".to_string()),
                other => warnings.push(format!(
                    "top-level `{other}` is not supported and was ignored"
                )),
            }
        }

        let volumes: Vec<String> = match root.get("volumes") {
            Some(Value::Mapping(map)) => {
                over_limit("volumes", map.len(), limits.max_volumes, "max_volumes")?;
                map.keys()
                    .map(|k| {
                        let name = match k {
                            Value::String(_) | Value::Number(_) => scalar_string(k),
                            _ => {
                                return Err(ComposeError::Invalid(
                                    "volume names must be strings".into(),
                                ))
                            }
                        };
                        limits::volume_name(&name).map_err(ComposeError::Invalid)?;
                        Ok(name)
                    })
                    .collect::<Result<_, _>>()?
            }
            Some(Value::Null) | None => Vec::new(),
            Some(_) => {
                return Err(ComposeError::Invalid(
                    "`volumes` must be a mapping of volume names".into(),
                ))
            }
        };

        let services_map = match root.get("services") {
            Some(Value::Mapping(map)) if !map.is_empty() => map,
            _ => return Err(ComposeError::NoServices),
        };
        // Every service counts, those in profiles too: test services run in the env as well.
        over_limit(
            "services",
            services_map.len(),
            limits.max_services,
            "max_services",
        )?;

        let mut services = Vec::new();
        let mut profiled = Vec::new();
        let mut published = 0usize;
        for (name, body) in services_map {
            let name = name
                .as_str()
                .ok_or_else(|| ComposeError::Invalid("service names must be strings".into()))?;
            let service = parse_service(name, body, &volumes, limits, &mut warnings)?;
            published += service.ports.len();
            if service.profiles.is_empty() {
                services.push(service);
            } else {
                profiled.push(service);
            }
        }
        over_limit(
            "published ports",
            published,
            limits.max_published_ports,
            "max_published_ports",
        )?;
        if services.is_empty() {
            return Err(ComposeError::Invalid(
                "every service is in a profile: nothing would start".into(),
            ));
        }
        check_dependencies(&services, &profiled)?;
        mark_shared(root.get("x-slipway"), &mut services, &profiled)?;
        let tests = test_options(root.get("x-slipway"))?;
        let main = main_service(root.get("x-slipway"), &services)?;
        Ok(Self {
            services,
            profiled,
            volumes,
            warnings,
            tests,
            main,
        })
    }
}

/// Past a count limit the whole file is refused, with the numbers and the key to raise.
fn over_limit(
    what: &'static str,
    count: usize,
    limit: usize,
    key: &'static str,
) -> Result<(), ComposeError> {
    if count > limit {
        return Err(ComposeError::OverLimit {
            what,
            count,
            limit,
            key,
        });
    }
    Ok(())
}

/// Applies the top-level `x-slipway.shared` list on top of the services' own marks, then
/// checks what sharing needs: a shared service starts with every env (no profile), depends
/// only on other shared services (the shared env runs nothing else), and shares no volume
/// with a per-env service (each env has its own copy of a volume, so they would not see
/// the same files).
fn mark_shared(
    extension: Option<&Value>,
    services: &mut [ComposeService],
    profiled: &[ComposeService],
) -> Result<(), ComposeError> {
    let invalid = |what: String| ComposeError::Invalid(format!("x-slipway.shared: {what}"));
    match extension.and_then(|x| x.get("shared")) {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(names)) => {
            for name in names {
                let name = match name {
                    Value::String(name) => name,
                    other => {
                        return Err(invalid(format!(
                            "`{}` is not a service name; list the names of services",
                            scalar_string(other)
                        )))
                    }
                };
                if profiled.iter().any(|s| s.name.as_str() == name) {
                    return Err(invalid(format!(
                        "`{name}` is in a profile; only services that start with every env can be shared"
                    )));
                }
                match services.iter_mut().find(|s| s.name.as_str() == name) {
                    Some(service) => service.shared = true,
                    None => {
                        return Err(invalid(format!("`{name}` is not a service of this file")))
                    }
                }
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "`{}` is not a list; write `shared: [db, cache]`, or `x-slipway: {{ shared: true }}` on the service",
                scalar_string(other)
            )))
        }
    }
    if let Some(service) = profiled.iter().find(|s| s.shared) {
        return Err(ComposeError::Service {
            service: service.name.to_string(),
            message:
                "is shared but in a profile; only services that start with every env can be shared"
                    .into(),
        });
    }
    let shared: BTreeSet<&ServiceName> = services
        .iter()
        .filter(|s| s.shared)
        .map(|s| &s.name)
        .collect();
    for service in services.iter().filter(|s| s.shared) {
        if let Some(dep) = service
            .depends_on
            .iter()
            .find(|d| !shared.contains(&d.service))
        {
            return Err(ComposeError::Service {
                service: service.name.to_string(),
                message: format!(
                    "is shared (one copy for every env of the repo) but depends on `{}`, which runs in each env; share `{}` too, or drop the dependency",
                    dep.service, dep.service
                ),
            });
        }
    }
    for shared_service in services.iter().filter(|s| s.shared) {
        for (volume, _, _) in &shared_service.volumes {
            let per_env = services
                .iter()
                .chain(profiled)
                .filter(|s| !s.shared)
                .find(|s| s.volumes.iter().any(|(v, _, _)| v == volume));
            if let Some(per_env) = per_env {
                return Err(ComposeError::Invalid(format!(
                    "volume `{volume}` is mounted by shared service `{}` and by `{}`, which runs in each env: they would not see the same files; give each its own volume",
                    shared_service.name, per_env.name
                )));
            }
        }
    }
    Ok(())
}

/// A service's own `x-slipway` extension: `shared: true|false`; other keys are reported.
fn service_extension(
    name: &str,
    extension: Option<&Value>,
    warnings: &mut Vec<String>,
) -> Result<bool, String> {
    let extension = match extension {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Mapping(map)) => map,
        Some(_) => return Err("`x-slipway` must be a mapping, e.g. `{ shared: true }`".into()),
    };
    let mut shared = false;
    for (key, value) in extension {
        match (key.as_str().unwrap_or_default(), value) {
            ("shared", Value::Bool(value)) => shared = *value,
            ("shared", other) => {
                return Err(format!(
                    "`x-slipway.shared` must be true or false, not `{}`",
                    scalar_string(other)
                ))
            }
            (other, _) => warnings.push(format!(
                "service `{name}`: `x-slipway.{other}` is not known and was ignored (known: shared)"
            )),
        }
    }
    Ok(shared)
}

/// `x-slipway.main`: a service of the file that starts with the env.
fn main_service(
    extension: Option<&Value>,
    services: &[ComposeService],
) -> Result<Option<ServiceName>, ComposeError> {
    let Some(main) = extension.and_then(|x| x.get("main")) else {
        return Ok(None);
    };
    let name = scalar_string(main);
    match services.iter().find(|s| s.name.as_str() == name) {
        Some(service) => Ok(Some(service.name.clone())),
        None => Err(ComposeError::Invalid(format!(
            "x-slipway.main: `{name}` is not a service that starts with the env"
        ))),
    }
}

fn test_options(extension: Option<&Value>) -> Result<TestOptions, ComposeError> {
    let Some(tests) = extension.and_then(|x| x.get("tests")) else {
        return Ok(TestOptions::default());
    };
    let invalid = |what: String| ComposeError::Invalid(format!("x-slipway.tests: {what}"));
    let timeout = match tests.get("timeout") {
        None => None,
        Some(value) => Some(parse_duration(&scalar_string(value)).map_err(invalid)?),
    };
    let report = match tests.get("report").map(scalar_string) {
        None => None,
        Some(path) if path.starts_with('/') && !path.contains("..") => Some(path),
        Some(path) => {
            return Err(invalid(format!(
                "report `{path}` must be an absolute path in the container"
            )))
        }
    };
    Ok(TestOptions { timeout, report })
}

fn parse_service(
    name: &str,
    body: &Value,
    volumes: &[String],
    limits: &EnvLimits,
    warnings: &mut Vec<String>,
) -> Result<ComposeService, ComposeError> {
    let err = |message: String| ComposeError::Service {
        service: name.to_string(),
        message,
    };
    let service_name = ServiceName::parse(name).map_err(|e| err(e.to_string()))?;
    let empty = Mapping::new();
    let map = match body {
        Value::Mapping(map) => map,
        Value::Null => &empty,
        _ => return Err(err("must be a mapping".into())),
    };

    let mut supported = Mapping::new();
    for (key, value) in map {
        let key_str = key.as_str().unwrap_or_default();
        if SUPPORTED_SERVICE_KEYS.contains(&key_str) {
            supported.insert(key.clone(), value.clone());
        } else if !HARMLESS_SERVICE_KEYS.contains(&key_str) && !key_str.starts_with("x-") {
            warnings.push(format!(
                "service `{name}`: `{key_str}` is not supported and was ignored"
            ));
        }
    }
    let def: ServiceDef =
        serde_yaml::from_value(Value::Mapping(supported)).map_err(|e| err(e.to_string()))?;

    if def.image.is_none() && def.build.is_none() {
        return Err(err("needs `image` or `build`".into()));
    }
    if let Some(image) = &def.image {
        limits::image_reference(image).map_err(err)?;
    }
    if let Some(dir) = &def.working_dir {
        limits::working_dir(dir).map_err(err)?;
    }
    let resources = limits::resources(
        name,
        def.mem_limit.as_ref(),
        def.cpus.as_ref(),
        def.pids_limit.as_ref(),
        def.deploy.as_ref(),
        limits,
        warnings,
    )
    .map_err(err)?;
    let stop_signal = def
        .stop_signal
        .as_ref()
        .filter(|v| !v.is_null())
        .map(limits::stop_signal)
        .transpose()
        .map_err(err)?;
    let stop_grace =
        limits::stop_grace(name, def.stop_grace_period.as_ref(), limits, warnings).map_err(err)?;
    let build = def
        .build
        .map(|b| build_def(b, name, warnings))
        .transpose()
        .map_err(err)?;
    let shared = service_extension(name, map.get("x-slipway"), warnings).map_err(err)?;
    let env_files = match def.env_file {
        None => Vec::new(),
        Some(dct::StringOrList::Simple(path)) => vec![path],
        Some(dct::StringOrList::List(paths)) => paths,
    };

    Ok(ComposeService {
        name: service_name,
        image: def.image,
        build,
        command: def.command.map(command_words).transpose().map_err(err)?,
        entrypoint: def
            .entrypoint
            .map(entrypoint_words)
            .transpose()
            .map_err(err)?,
        environment: environment(def.environment, name, warnings),
        env_files,
        ports: def
            .ports
            .iter()
            .map(|p| port(p, name, warnings))
            .collect::<Result<_, _>>()
            .map_err(err)?,
        expose: def
            .expose
            .iter()
            .map(expose_port)
            .collect::<Result<_, _>>()
            .map_err(err)?,
        depends_on: def
            .depends_on
            .map(dependencies)
            .transpose()
            .map_err(err)?
            .unwrap_or_default(),
        healthcheck: def
            .healthcheck
            .map(healthcheck)
            .transpose()
            .map_err(err)?
            .flatten(),
        restart: restart(def.restart.as_deref()).map_err(err)?,
        volumes: def
            .volumes
            .into_iter()
            .map(|v| volume_mount(v, volumes))
            .collect::<Result<_, _>>()
            .map_err(err)?,
        working_dir: def.working_dir,
        user: def.user.map(|u| scalar_string(&u)),
        mem_limit: resources.memory_bytes,
        nano_cpus: resources.nano_cpus,
        pids_limit: resources.pids,
        profiles: def.profiles,
        stop_signal,
        stop_grace,
        shared,
    })
}

fn build_def(
    step: dct::BuildStep,
    service: &str,
    warnings: &mut Vec<String>,
) -> Result<BuildDef, String> {
    match step {
        dct::BuildStep::Simple(context) => Ok(BuildDef {
            context,
            dockerfile: "Dockerfile".into(),
            args: BTreeMap::new(),
            target: None,
        }),
        dct::BuildStep::Advanced(adv) => {
            if adv.dockerfile_inline.is_some() {
                return Err(
                    "`build.dockerfile_inline` is not supported: commit the Dockerfile".into(),
                );
            }
            if !adv.cache_from.is_empty() || adv.shm_size.is_some() {
                warnings.push(format!(
                    "service `{service}`: `build.cache_from`/`build.shm_size` are ignored"
                ));
            }
            let args = match adv.args {
                None => BTreeMap::new(),
                Some(dct::BuildArgs::Simple(arg)) => [(arg, String::new())].into(),
                Some(dct::BuildArgs::List(list)) => list
                    .into_iter()
                    .map(|item| match item.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (item, String::new()),
                    })
                    .collect(),
                Some(dct::BuildArgs::KvPair(map)) => map.into_iter().collect(),
            };
            Ok(BuildDef {
                context: if adv.context.is_empty() {
                    ".".into()
                } else {
                    adv.context
                },
                dockerfile: adv.dockerfile.unwrap_or_else(|| "Dockerfile".into()),
                args,
                target: adv.target,
            })
        }
    }
}

fn command_words(command: dct::Command) -> Result<Vec<String>, String> {
    match command {
        dct::Command::Simple(s) => {
            shell_words::split(&s).map_err(|e| format!("`command` cannot be split into words: {e}"))
        }
        dct::Command::Args(args) => Ok(args),
    }
}

fn entrypoint_words(entrypoint: dct::Entrypoint) -> Result<Vec<String>, String> {
    match entrypoint {
        dct::Entrypoint::Simple(s) => shell_words::split(&s)
            .map_err(|e| format!("`entrypoint` cannot be split into words: {e}")),
        dct::Entrypoint::List(args) => Ok(args),
    }
}

fn environment(
    env: Option<dct::Environment>,
    service: &str,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut unset = Vec::new();
    match env {
        None => {}
        Some(dct::Environment::List(items)) => {
            for item in items {
                match item.split_once('=') {
                    Some((k, v)) => {
                        out.insert(k.to_string(), v.to_string());
                    }
                    None => unset.push(item),
                }
            }
        }
        Some(dct::Environment::KvPair(map)) => {
            for (k, v) in map {
                match v {
                    Some(v) => {
                        out.insert(k, v.to_string());
                    }
                    None => unset.push(k),
                }
            }
        }
    }
    for name in unset {
        warnings.push(format!("service `{service}`: environment `{name}` has no value and Slipway passes no host variables; it was left unset"));
    }
    out
}

/// One `ports:` entry. Slipway publishes the container port on a free host port of
/// `[runtime.docker] publish_address`, so envs never clash; a host address or fixed host port
/// in the entry is reported as not applied.
fn port(value: &Value, service: &str, warnings: &mut Vec<String>) -> Result<PortSpec, String> {
    let (spec, host_ip, host_port, shown) = match value {
        Value::Mapping(map) => {
            let shown = serde_json::to_string(value).unwrap_or_else(|_| scalar_string(value));
            let target = map
                .get("target")
                .map(scalar_string)
                .ok_or_else(|| format!("port `{shown}` needs a `target` (the container port)"))?;
            let proto = map.get("protocol").map(scalar_string);
            let spec = PortSpec {
                container_port: container_port(&target, &shown)?,
                protocol: protocol(proto.as_deref())?,
            };
            let host_ip = map
                .get("host_ip")
                .filter(|v| !v.is_null())
                .map(scalar_string);
            let published = map
                .get("published")
                .filter(|v| !v.is_null())
                .map(scalar_string);
            (spec, host_ip, published, shown)
        }
        Value::Sequence(_) | Value::Tagged(_) => {
            return Err(format!(
                "port `{}` is neither `[[host_ip:]host_port:]port[/protocol]` nor a mapping",
                scalar_string(value)
            ))
        }
        other => {
            let text = scalar_string(other);
            let (addr, proto) = match text.split_once('/') {
                Some((addr, proto)) => (addr, Some(proto)),
                None => (text.as_str(), None),
            };
            let (host, container) = match addr.rsplit_once(':') {
                Some((host, container)) => (Some(host), container),
                None => (None, addr),
            };
            let (host_ip, host_port) = match host.map(|h| h.rsplit_once(':')) {
                None => (None, None),
                Some(Some((ip, port))) => (Some(ip.to_string()), Some(port.to_string())),
                Some(None) => (None, host.map(str::to_string)),
            };
            let spec = PortSpec {
                container_port: container_port(container, &text)?,
                protocol: protocol(proto)?,
            };
            (spec, host_ip, host_port, text)
        }
    };
    let host_ip = host_ip.filter(|ip| !ip.trim().is_empty());
    let host_port = host_port.filter(|p| !p.trim().is_empty() && p.trim() != "0");
    let dropped = match (&host_ip, &host_port) {
        (None, None) => None,
        (Some(_), None) => Some("host address is"),
        (None, Some(_)) => Some("fixed host port is"),
        (Some(_), Some(_)) => Some("host address and fixed host port are"),
    };
    if let Some(dropped) = dropped {
        warnings.push(format!(
            "service `{service}`: ports `{shown}`: {dropped} not applied; Slipway publishes {}/{} on a free port of [runtime.docker] publish_address",
            spec.container_port,
            spec.protocol.as_str()
        ));
    }
    Ok(spec)
}

/// One container port, 1..=65535; ranges of container ports are not supported.
fn container_port(text: &str, entry: &str) -> Result<u16, String> {
    text.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            format!("port `{entry}` is not supported: give one container port from 1 to 65535 (ranges are not supported)")
        })
}

fn expose_port(value: &Value) -> Result<PortSpec, String> {
    let text = scalar_string(value);
    let (addr, proto) = match text.split_once('/') {
        Some((addr, proto)) => (addr, Some(proto)),
        None => (text.as_str(), None),
    };
    Ok(PortSpec {
        container_port: container_port(addr.rsplit(':').next().unwrap_or(addr), &text)?,
        protocol: protocol(proto)?,
    })
}

fn protocol(proto: Option<&str>) -> Result<Protocol, String> {
    match proto {
        None | Some("tcp") => Ok(Protocol::Tcp),
        Some("udp") => Ok(Protocol::Udp),
        Some(other) => Err(format!("protocol `{other}` is not supported (tcp or udp)")),
    }
}

fn dependencies(options: dct::DependsOnOptions) -> Result<Vec<Dependency>, String> {
    let named = |name: &str| ServiceName::parse(name).map_err(|e| e.to_string());
    match options {
        dct::DependsOnOptions::Simple(names) => names
            .iter()
            .map(|n| {
                Ok(Dependency {
                    service: named(n)?,
                    condition: DependencyCondition::Started,
                })
            })
            .collect(),
        dct::DependsOnOptions::Conditional(map) => map
            .iter()
            .map(|(n, c)| {
                let condition = match c.condition.as_str() {
                    "service_started" => DependencyCondition::Started,
                    "service_healthy" => DependencyCondition::Healthy,
                    "service_completed_successfully" => DependencyCondition::CompletedSuccessfully,
                    other => return Err(format!("depends_on condition `{other}` is not known")),
                };
                Ok(Dependency {
                    service: named(n)?,
                    condition,
                })
            })
            .collect(),
    }
}

fn healthcheck(hc: dct::Healthcheck) -> Result<Option<HealthcheckSpec>, String> {
    let test = match (hc.disable, hc.test) {
        (true, _) => vec!["NONE".to_string()],
        (false, None) => return Ok(None),
        (false, Some(dct::HealthcheckTest::Single(cmd))) => vec!["CMD-SHELL".to_string(), cmd],
        (false, Some(dct::HealthcheckTest::Multiple(list))) => {
            match list.first().map(String::as_str) {
                Some("CMD") | Some("CMD-SHELL") | Some("NONE") => list,
                _ => return Err("healthcheck `test` must start with CMD, CMD-SHELL or NONE".into()),
            }
        }
    };
    let duration = |value: Option<String>, default: Duration| -> Result<Duration, String> {
        match value {
            None => Ok(default),
            Some(text) => parse_duration(&text),
        }
    };
    Ok(Some(HealthcheckSpec {
        test,
        interval: duration(hc.interval, Duration::from_secs(30))?,
        timeout: duration(hc.timeout, Duration::from_secs(30))?,
        retries: if hc.retries > 0 { hc.retries as u32 } else { 3 },
        start_period: duration(hc.start_period, Duration::ZERO)?,
    }))
}

/// Compose durations: `1m30s`, `500ms`, `10s`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    compose_duration(text).map_err(|e| format!("duration `{text}`: {e}"))
}

fn compose_duration(text: &str) -> Result<Duration, humantime::DurationError> {
    let mut spaced = String::new();
    let mut prev_alpha = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() && prev_alpha {
            spaced.push(' ');
        }
        prev_alpha = c.is_ascii_alphabetic();
        spaced.push(c);
    }
    humantime::parse_duration(&spaced)
}

fn restart(value: Option<&str>) -> Result<RestartPolicy, String> {
    Ok(match value {
        None | Some("no") => RestartPolicy::No,
        Some("always") => RestartPolicy::Always,
        Some("unless-stopped") => RestartPolicy::UnlessStopped,
        Some("on-failure") => RestartPolicy::OnFailure { max_retries: None },
        Some(other) => match other.strip_prefix("on-failure:").map(str::parse::<u32>) {
            Some(Ok(n)) => RestartPolicy::OnFailure {
                max_retries: Some(n),
            },
            _ => {
                return Err(format!(
                    "restart `{other}` is not known (no, always, on-failure[:N], unless-stopped)"
                ))
            }
        },
    })
}

/// Only named volumes declared at the top level; host paths were refused by the policy.
fn volume_mount(
    volume: dct::Volumes,
    declared: &[String],
) -> Result<(String, String, bool), String> {
    let (source, target, read_only) = match volume {
        dct::Volumes::Simple(text) => {
            let parts: Vec<&str> = text.split(':').collect();
            match parts.as_slice() {
                [source, target] => (source.to_string(), target.to_string(), false),
                [source, target, mode] => (
                    source.to_string(),
                    target.to_string(),
                    mode.split(',').any(|m| m == "ro"),
                ),
                _ => return Err(format!("volume `{text}` needs the form `name:/path[:ro]`")),
            }
        }
        dct::Volumes::Advanced(adv) => match (adv._type.as_str(), adv.source) {
            ("volume", Some(source)) => (source, adv.target, adv.read_only),
            (kind, _) => {
                return Err(format!(
                    "volume of type `{kind}` is not supported: use a named volume"
                ))
            }
        },
    };
    limits::volume_name(&source)?;
    if !declared.contains(&source) {
        return Err(format!(
            "volume `{source}` is not declared under the top-level `volumes`"
        ));
    }
    limits::mount_target(&target)?;
    Ok((source, target, read_only))
}

fn check_dependencies(
    services: &[ComposeService],
    profiled: &[ComposeService],
) -> Result<(), ComposeError> {
    let started: BTreeSet<&ServiceName> = services.iter().map(|s| &s.name).collect();
    for service in services.iter().chain(profiled) {
        for dep in &service.depends_on {
            if !started.contains(&dep.service) {
                return Err(ComposeError::Service {
                    service: service.name.to_string(),
                    message: format!(
                        "depends on `{}`, which is not a service started by default",
                        dep.service
                    ),
                });
            }
        }
    }
    // Depth-first search for a cycle among the services that start.
    fn visit<'a>(
        name: &'a ServiceName,
        all: &'a [ComposeService],
        path: &mut Vec<&'a ServiceName>,
        done: &mut BTreeSet<&'a ServiceName>,
    ) -> Result<(), ComposeError> {
        if done.contains(name) {
            return Ok(());
        }
        if path.contains(&name) {
            let cycle: Vec<String> = path
                .iter()
                .map(|s| s.to_string())
                .chain([name.to_string()])
                .collect();
            return Err(ComposeError::Invalid(format!(
                "depends_on has a cycle: {}",
                cycle.join(" -> ")
            )));
        }
        path.push(name);
        if let Some(service) = all.iter().find(|s| &s.name == name) {
            for dep in &service.depends_on {
                visit(&dep.service, all, path, done)?;
            }
        }
        path.pop();
        done.insert(name);
        Ok(())
    }
    let mut done = BTreeSet::new();
    for service in services {
        visit(&service.name, services, &mut Vec::new(), &mut done)?;
    }
    Ok(())
}

fn scalar_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Docker's memory sizes: `64m`, `1g`, `512MiB`, `1048576`.
pub fn parse_bytes(text: &str) -> Result<i64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("size `{text}` is not a number with a unit (e.g. 512m)"))?;
    let factor: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("size unit `{other}` is not known (b, k, m, g)")),
    };
    Ok((number * factor) as i64)
}

/// Parses an `env_file`: `KEY=VALUE` lines, `#` comments, optional `export ` and quotes.
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            out.insert(key.trim().to_string(), unquoted.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod proptests;
