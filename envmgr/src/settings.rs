//! What the engine needs to know about its installation, already validated. The `slipway`
//! binary builds this from its TOML config file.

use std::path::PathBuf;
use std::time::Duration;

use crate::names::RepoName;
use crate::runtime::ResourceLimits;

#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Where git mirrors and other files live; nothing from a branch is written elsewhere.
    pub data_dir: PathBuf,
    /// Host name used in the URLs reported for published ports.
    pub public_host: String,
    pub repos: Vec<RepoSettings>,
    /// Limits applied to services whose compose file sets none.
    pub default_limits: ResourceLimits,
    /// How often every env is compared with the world even without a request.
    pub resync_interval: Duration,
    /// How long one service may take to become ready before the env fails.
    pub ready_timeout: Duration,
    /// Base URL of the Slipway server, for links to full logs.
    pub public_url: String,
    /// Full test logs kept per env; older runs keep their results but lose their log.
    pub test_log_retention: usize,
    /// What one env's compose file may ask for (`[limits]`); a branch cannot lift these.
    pub env_limits: EnvLimits,
}

/// Bounds on what one env may ask for. Compose values beyond the resource ceilings are
/// clamped (and reported under "not applied"); past a count limit the env fails with the
/// numbers and nothing starts.
#[derive(Debug, Clone)]
pub struct EnvLimits {
    /// Ceilings for `mem_limit`, `cpus` and `pids_limit`.
    pub max: ResourceLimits,
    /// Ceiling for `stop_grace_period`.
    pub max_stop_grace: Duration,
    pub max_compose_bytes: usize,
    pub max_services: usize,
    pub max_volumes: usize,
    pub max_published_ports: usize,
    /// Images built at once for one env.
    pub parallel_builds: usize,
}

impl Default for EnvLimits {
    fn default() -> Self {
        EnvLimits {
            max: ResourceLimits {
                memory_bytes: 8 * 1024 * 1024 * 1024,
                nano_cpus: 4_000_000_000,
                pids: 4096,
            },
            max_stop_grace: Duration::from_secs(60),
            max_compose_bytes: 1024 * 1024,
            max_services: 50,
            max_volumes: 20,
            max_published_ports: 50,
            parallel_builds: 2,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RepoSettings {
    pub name: RepoName,
    /// Anything `git fetch` accepts: a path, file://, https://.
    pub url: String,
    /// Path of the compose file inside the repository.
    pub env_file: String,
    pub default_ttl: Duration,
    /// How long one integration test run may take (the compose file may ask for less).
    pub test_timeout: Duration,
    /// Environment variables whose values are secrets: redacted from every snippet.
    pub secret_env: Vec<String>,
}

impl EngineSettings {
    pub fn repo(&self, name: &RepoName) -> Option<&RepoSettings> {
        self.repos.iter().find(|r| &r.name == name)
    }
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits {
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids: 512,
        }
    }
}
