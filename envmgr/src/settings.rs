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
    pub repos: Vec<RepoSettings>,
    /// Limits applied to services whose compose file sets none.
    pub default_limits: ResourceLimits,
    /// How often every env is compared with the world even without a request.
    pub resync_interval: Duration,
    /// How long a replica's claim on a key lasts without renewal: the longest a key waits
    /// after the replica working on it dies (`lease_ttl`, default 15 s).
    pub lease_ttl: Duration,
    /// How long one service may take to become ready before the env fails.
    pub ready_timeout: Duration,
    /// Base URL of the Slipway server, for links to full logs.
    pub public_url: String,
    /// Full test logs kept per env; older runs keep their results but lose their log.
    pub test_log_retention: usize,
    /// What one env's compose file may ask for (`[limits]`); a branch cannot lift these.
    pub env_limits: EnvLimits,
    /// How many envs (and how much memory) the installation and each person may hold.
    pub quotas: Quotas,
    /// A built image no env used for this long is removed (`image_retention`, default 7
    /// days); `None` keeps them all.
    pub image_retention: Option<Duration>,
    /// Where envs' web services are reached through the front door; `None`: no front door,
    /// so envs are reached at their published ports only.
    pub front_door: Option<FrontDoor>,
}

/// The links of the front door: `<env>.<host>` reaches an env's main service,
/// `<service>--<env>.<host>` another one. The one place env links are built, so every
/// surface (and every replica, given the same config) shows the same URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoor {
    /// `http` or `https`.
    scheme: String,
    /// Lowercase host the env label goes in front of (`preview.example.com`).
    host: String,
    /// `None`: the scheme's default port.
    port: Option<u16>,
}

impl FrontDoor {
    /// `scheme` must be `http` or `https`; a port equal to the scheme's default is left out
    /// of links.
    pub fn new(scheme: &str, host: &str, port: Option<u16>) -> Self {
        let default_port = if scheme == "https" { 443 } else { 80 };
        Self {
            scheme: scheme.to_string(),
            host: host.trim_matches('.').to_ascii_lowercase(),
            port: port.filter(|p| *p != default_port),
        }
    }

    /// The front-door URL of `env`'s main service (`service: None`) or of one of its
    /// services.
    pub fn url(&self, env: &str, service: Option<&str>) -> String {
        let label = match service {
            Some(service) => format!("{service}--{env}"),
            None => env.to_string(),
        };
        match self.port {
            Some(port) => format!("{}://{label}.{}:{port}/", self.scheme, self.host),
            None => format!("{}://{label}.{}/", self.scheme, self.host),
        }
    }
}

/// Default of `image_retention`.
pub const DEFAULT_IMAGE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Caps on new envs, checked when one is asked for (`None`: no cap). A repo's own cap is
/// [`RepoSettings::max_envs`]. Envs that are asleep (or not running for another reason)
/// count for the env caps but not for memory.
#[derive(Debug, Clone, Default)]
pub struct Quotas {
    /// Envs in the whole installation (`max_envs`); submit-queue candidates count.
    pub max_envs: Option<usize>,
    /// Envs one caller identity holds (`max_envs_per_user`), counted per actor string as
    /// the surfaces pass it (`github:alice`, `api:cli`, a Discord id); candidates are exempt.
    pub max_envs_per_user: Option<usize>,
    /// Bytes of memory all running envs may have as limits, summed over their services as
    /// the compose planner resolved them (`max_memory`).
    pub max_memory: Option<i64>,
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

impl EnvLimits {
    /// The least any service gets, whatever its compose file says: below these a container
    /// cannot do useful work, and Docker reads 0 as "no limit". 6 MiB is Docker's own minimum
    /// for `--memory`. Values under a floor are raised to it; the ceilings are `max`.
    pub const FLOOR: ResourceLimits = ResourceLimits {
        memory_bytes: 6 * 1024 * 1024,
        nano_cpus: 10_000_000,
        pids: 16,
    };

    /// The same bounds with no count limits: for readers of a compose file that only need
    /// what it says (the env itself was already held to the configured limits).
    pub fn for_reading(&self) -> Self {
        EnvLimits {
            max_compose_bytes: usize::MAX,
            max_services: usize::MAX,
            max_volumes: usize::MAX,
            max_published_ports: usize::MAX,
            ..self.clone()
        }
    }
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
    /// What git authenticates with over HTTP(S), kept off every command line and out of
    /// every message ([`crate::git`] hands it to git through its environment).
    pub credentials: Option<GitCredentials>,
    /// The submit queue (`[repo.queue]`).
    pub queue: QueueSettings,
    /// Envs this repo may have at once (`max_envs`); `None`: no cap of its own.
    pub max_envs: Option<usize>,
    /// When idle envs sleep and go (`idle_sleep`, `idle_delete`, `warn_before`).
    pub idle: IdleSettings,
    /// Release channels in order (`[[repo.channel]]`): where landed changes roll out.
    pub channels: Vec<crate::rollout::ChannelSettings>,
}

/// How long an env may go unused. `None` turns a step off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleSettings {
    /// Idle this long: its containers are stopped (volumes and network kept).
    pub sleep_after: Option<Duration>,
    /// Idle this long: deleted, after a warning.
    pub delete_after: Option<Duration>,
    /// How long before a deletion (idle or TTL) people are told.
    pub warn_before: Option<Duration>,
}

pub use crate::git::MergeMethod;

/// How changes land on a repo's target branch.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    pub target: crate::names::BranchName,
    pub method: MergeMethod,
    /// Candidates tested at once.
    pub parallel: usize,
    /// Changes that may share one candidate when the queue is longer than `parallel`.
    pub batch: usize,
    /// Re-runs of a failing tree before anything is evicted.
    pub retries: u32,
    /// Approving reviews a pull request needs before it is queued.
    pub require_approvals: u32,
    /// Checks (check runs or commit statuses, by name) that must have succeeded on a pull
    /// request's head before it is queued.
    pub required_checks: Vec<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            target: crate::names::BranchName::parse("main").expect("main is a branch name"),
            method: MergeMethod::Merge,
            parallel: 4,
            batch: 4,
            retries: 1,
            require_approvals: 1,
            required_checks: Vec::new(),
        }
    }
}

/// A user name and token for git over HTTP(S).
#[derive(Debug, Clone)]
pub struct GitCredentials {
    /// Most hosts ignore it for tokens; GitHub expects `x-access-token`.
    pub username: String,
    pub token: GitToken,
}

/// A token fixed in the config, or minted when git needs it (a GitHub App's installation
/// token, which expires within the hour).
#[derive(Clone)]
pub enum GitToken {
    Fixed(secrecy::SecretString),
    Minted(std::sync::Arc<dyn MintToken>),
}

impl GitToken {
    /// The token to give git now.
    pub async fn current(&self) -> anyhow::Result<secrecy::SecretString> {
        match self {
            GitToken::Fixed(token) => Ok(token.clone()),
            GitToken::Minted(mint) => mint.mint().await,
        }
    }

    /// The token when it is fixed in the config (known without asking anyone).
    pub fn fixed(&self) -> Option<&secrecy::SecretString> {
        match self {
            GitToken::Fixed(token) => Some(token),
            GitToken::Minted(_) => None,
        }
    }
}

impl std::fmt::Debug for GitToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GitToken::Fixed(_) => f.write_str("GitToken::Fixed([REDACTED])"),
            GitToken::Minted(_) => f.write_str("GitToken::Minted"),
        }
    }
}

/// Mints a short-lived token for git (a caching implementation answers from its cache
/// while the token is still good).
#[async_trait::async_trait]
pub trait MintToken: Send + Sync {
    async fn mint(&self) -> anyhow::Result<secrecy::SecretString>;
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

#[cfg(test)]
mod tests {
    use super::FrontDoor;

    #[test]
    fn front_door_links_name_the_env_and_maybe_a_service() {
        let https = FrontDoor::new("https", ".Preview.Example.com.", Some(443));
        assert_eq!(
            https.url("shop-pr-42", None),
            "https://shop-pr-42.preview.example.com/"
        );
        assert_eq!(
            https.url("shop-pr-42", Some("api")),
            "https://api--shop-pr-42.preview.example.com/"
        );
        let local = FrontDoor::new("http", "localhost", Some(8081));
        assert_eq!(
            local.url("shop-main", None),
            "http://shop-main.localhost:8081/"
        );
        let default_port = FrontDoor::new("http", "localhost", Some(80));
        assert_eq!(
            default_port.url("shop-main", None),
            "http://shop-main.localhost/"
        );
    }
}
