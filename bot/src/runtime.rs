//! Where envs run, chosen by `[runtime]`: the one place a runtime is built from the config.
//! `kind = "docker"` (the default, and the only kind today) takes its options from
//! `[runtime.docker]` (or the deprecated `[docker]`).

use std::sync::Arc;

use anyhow::{bail, Context as _};
use envmgr::runtime::docker::subnet::SubnetPool;
use envmgr::runtime::docker::{DockerRuntime, DEFAULT_PUBLISH_ADDRESS};
use envmgr::runtime::Runtime;

use crate::config::{Config, DockerConfig};

/// The runtime `[runtime]` names, connected; `instance` labels everything it creates.
pub async fn from_config(config: &Config, instance: &str) -> anyhow::Result<Arc<dyn Runtime>> {
    let docker = DockerSettings::from_config(config)?;
    if config.docker.is_some() {
        tracing::warn!("the [docker] table is deprecated: rename it to [runtime.docker]");
    }
    let runtime = DockerRuntime::connect(instance)
        .await
        .context("Slipway needs a running Docker engine; start it or set DOCKER_HOST")?
        .with_subnet_pool(docker.subnets)
        .with_publish_address(&docker.publish_address);
    let runtime = match &docker.public_host {
        Some(host) => runtime.with_public_host(host),
        None => runtime,
    };
    Ok(Arc::new(runtime))
}

/// `[runtime.docker]`, validated.
#[derive(Debug)]
pub struct DockerSettings {
    /// Where env networks get their subnets.
    pub subnets: SubnetPool,
    /// The host IP published ports listen on.
    pub publish_address: String,
    /// How long a built image no env uses is kept (`image_retention`); `None`: forever.
    pub image_retention: Option<std::time::Duration>,
    /// The host in the URLs of published ports (`public_host`); the publish address when
    /// `None`.
    pub public_host: Option<String>,
}

impl DockerSettings {
    /// Checks the whole `[runtime]` section; called before anything starts, so a mistake
    /// there stops the start.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let docker = docker_config(config)?;
        Ok(Self {
            subnets: subnet_pool(&docker)?,
            publish_address: publish_address(&docker)?,
            image_retention: image_retention(&docker)?,
            public_host: public_host(config)?,
        })
    }
}

/// The Docker runtime settings: `[runtime.docker]`, or the deprecated `[docker]`.
fn docker_config(config: &Config) -> anyhow::Result<DockerConfig> {
    match config.runtime.kind.as_deref().map(str::trim) {
        None | Some("docker") => {}
        Some(other) => bail!(
            "[runtime] kind = \"{other}\" is not a runtime this Slipway has: use \"docker\" \
             (the default; its options go under [runtime.docker])"
        ),
    }
    match (&config.runtime.docker, &config.docker) {
        (Some(_), Some(_)) => bail!(
            "both [runtime.docker] and [docker] are set: move the [docker] keys into \
             [runtime.docker] ([docker] is a deprecated alias)"
        ),
        (Some(docker), None) | (None, Some(docker)) => Ok(DockerConfig {
            network_pool: docker.network_pool.clone(),
            subnet_prefix: docker.subnet_prefix,
            publish_address: docker.publish_address.clone(),
            image_retention: docker.image_retention.clone(),
        }),
        (None, None) => Ok(DockerConfig::default()),
    }
}

/// `[runtime.docker] image_retention`: "0" keeps built images forever.
fn image_retention(docker: &DockerConfig) -> anyhow::Result<Option<std::time::Duration>> {
    use crate::config::ImageRetention;
    match &docker.image_retention {
        None => Ok(Some(envmgr::settings::DEFAULT_IMAGE_RETENTION)),
        Some(ImageRetention::Text(text)) => {
            let retention = humantime::parse_duration(text.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "[runtime.docker] image_retention = \"{text}\": {e}; write a duration \
                     like \"7d\" (\"0\" keeps every built image)"
                )
            })?;
            Ok((!retention.is_zero()).then_some(retention))
        }
        // The key used to be a number of images to keep: such a config still starts, with the
        // default duration, and says what to write instead.
        Some(ImageRetention::Count(n)) => {
            tracing::warn!(
                "[runtime.docker] image_retention = {n}: it is now how long a built image that \
                 no env uses is kept, written as a duration like \"7d\" (\"0\" keeps them all), \
                 no longer a number of images; using the default, 7d"
            );
            Ok(Some(envmgr::settings::DEFAULT_IMAGE_RETENTION))
        }
    }
}

/// The host IP published ports listen on (`[runtime.docker] publish_address`).
fn publish_address(docker: &DockerConfig) -> anyhow::Result<String> {
    let Some(address) = &docker.publish_address else {
        return Ok(DEFAULT_PUBLISH_ADDRESS.to_string());
    };
    let ip: std::net::IpAddr = address.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "[runtime.docker] publish_address `{address}` is not an IP address: use e.g. \
             127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
        )
    })?;
    Ok(ip.to_string())
}

/// `public_host`, checked: it goes into every URL Slipway reports for an env.
fn public_host(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(host) = &config.public_host else {
        return Ok(None);
    };
    let host = host.trim();
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let host = bracketed.unwrap_or(host);
    let valid = host.parse::<std::net::IpAddr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if !valid {
        bail!(
            "public_host `{host}` is not a host name or IP address: give the name people reach \
             published ports at, like envs.example.com (no scheme, port or path)"
        );
    }
    Ok(Some(host.to_string()))
}

/// Where env networks get their subnets.
fn subnet_pool(docker: &DockerConfig) -> anyhow::Result<SubnetPool> {
    let mut pool = SubnetPool::default();
    if let Some(range) = &docker.network_pool {
        pool.range = range
            .parse()
            .map_err(|e| anyhow::anyhow!("[runtime.docker] network_pool: {e}"))?;
    }
    if let Some(prefix) = docker.subnet_prefix {
        pool.prefix = prefix;
    }
    if pool.prefix > 29 || pool.range.subnet_count(pool.prefix) == 0 {
        bail!("[runtime.docker] subnet_prefix /{} does not fit in network_pool {}: use a prefix at least as long as the pool's and at most /29", pool.prefix, pool.range);
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker(text: &str) -> anyhow::Result<DockerSettings> {
        DockerSettings::from_config(&toml::from_str(text).unwrap())
    }

    #[test]
    fn runtime_docker_section_and_its_deprecated_alias() {
        let new = docker("[runtime.docker]\npublish_address = \"0.0.0.0\"\nsubnet_prefix = 26\n")
            .unwrap();
        assert_eq!(new.publish_address, "0.0.0.0");
        assert_eq!(new.subnets.prefix, 26);
        let old = docker("[docker]\nsubnet_prefix = 25\n").unwrap();
        assert_eq!(old.subnets.prefix, 25);
        assert_eq!(old.publish_address, "127.0.0.1");
        let err = docker("[docker]\nsubnet_prefix = 25\n[runtime.docker]\nsubnet_prefix = 25\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[runtime.docker]") && err.contains("[docker]"),
            "{err}"
        );
        let err = docker("[runtime.docker]\npublish_address = \"localhost:80\"\n").unwrap_err();
        assert!(err.to_string().contains("publish_address"));
        assert!(toml::from_str::<Config>("[runtime.docker]\nnope = 1\n").is_err());
    }

    #[test]
    fn the_public_host_is_a_bare_host_name_or_address() {
        assert_eq!(docker("").unwrap().public_host, None);
        for (given, kept) in [
            ("envs.example.com", "envs.example.com"),
            (" 10.0.0.7 ", "10.0.0.7"),
            ("fd00::7", "fd00::7"),
            ("[fd00::7]", "fd00::7"),
        ] {
            let settings = docker(&format!("public_host = \"{given}\"\n")).unwrap();
            assert_eq!(settings.public_host.as_deref(), Some(kept), "{given}");
        }
        for bad in [
            "",
            "https://envs.example.com",
            "envs.example.com:80",
            "a b",
            "h/x",
        ] {
            let err = docker(&format!("public_host = \"{bad}\"\n")).unwrap_err();
            assert!(err.to_string().contains("public_host"), "{bad}: {err}");
        }
    }

    #[test]
    fn only_the_docker_runtime_is_known() {
        let err = docker("[runtime]\nkind = \"kubernetes\"\n").unwrap_err();
        assert!(
            err.to_string().contains("kind = \"kubernetes\"") && err.to_string().contains("docker"),
            "{err}"
        );
        assert_eq!(
            docker("[runtime]\nkind = \"docker\"\n")
                .unwrap()
                .image_retention,
            Some(envmgr::settings::DEFAULT_IMAGE_RETENTION)
        );
    }

    #[test]
    fn image_retention_is_a_duration_and_zero_keeps_every_image() {
        let retention = |text: &str| docker(&format!("[runtime.docker]\n{text}\n"));
        assert_eq!(
            retention("image_retention = \"36h\"")
                .unwrap()
                .image_retention,
            Some(std::time::Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            retention("image_retention = \"0\"")
                .unwrap()
                .image_retention,
            None
        );
        // An old count still starts the server, with the default.
        assert_eq!(
            retention("image_retention = 3").unwrap().image_retention,
            Some(envmgr::settings::DEFAULT_IMAGE_RETENTION)
        );
        assert!(retention("image_retention = \"soon\"").is_err());
    }
}
