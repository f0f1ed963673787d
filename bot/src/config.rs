//! The server's TOML config file. Unknown keys are errors, so a typo never silently falls
//! back to a default. `slipway.example.toml` at the repository root documents every key and
//! is parsed by a test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use envmgr::compose::parse_bytes;
use envmgr::git::RepoPath;
use envmgr::names::RepoName;
use envmgr::runtime::docker::subnet::SubnetPool;
use envmgr::runtime::ResourceLimits;
use envmgr::{EngineSettings, GitCredentials, GitToken, RepoSettings};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub api_token: Option<SecretString>,
    /// The host name (or IP) people reach envs' published ports at, in the URLs Slipway
    /// reports. Default: `[runtime.docker] publish_address` (loopback when that is every
    /// interface).
    pub public_host: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub resync_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub ready_timeout: Option<Duration>,
    /// How long a replica's claim on an env, test queue or delivery lasts unrenewed: the
    /// longest work waits after the replica doing it dies (default 15 s).
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<Duration>,
    /// How long handled webhook deliveries keep their bodies (default 7 days); their ids
    /// are kept longer for redelivery dedup.
    #[serde(default, with = "humantime_serde")]
    pub delivery_retention: Option<Duration>,
    /// Full logs of test runs kept per env (default 20); older runs keep their results.
    pub test_log_retention: Option<usize>,
    /// Base URL people reach this server at, for links (logs) posted to GitHub and chat.
    /// Default: `http://<listen>`.
    pub public_url: Option<String>,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Deprecated alias of `[runtime.docker]` (an error when both are given).
    #[serde(default)]
    pub docker: Option<DockerConfig>,
    /// `[runtime]`: `[runtime.docker]` holds the Docker runtime's settings.
    #[serde(default)]
    pub runtime: RuntimeSection,
    /// Present: the GitHub surface is on (webhooks, PR comments, deployments, statuses).
    pub github: Option<GitHubConfig>,
    /// Present: the Discord bot is on (slash commands and mentions).
    pub discord: Option<DiscordConfig>,
    #[serde(default, rename = "repo")]
    pub repos: Vec<RepoConfig>,
    /// Notification sinks (`[[notify]]`), each with the repos and events it wants;
    /// validated by `crate::notify::routes`.
    #[serde(default)]
    pub notify: Vec<NotifyConfig>,
    /// Who may run which command (`[permissions]`); validated by
    /// `crate::access::AccessPolicy::from_config`.
    #[serde(default)]
    pub permissions: PermissionsConfig,
}

/// The `[permissions]` table. Roles are `none`, `viewer`, `developer`, `deployer`, `admin`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionsConfig {
    /// Role of a Discord user whose id and roles are not listed. Default `viewer`.
    pub default_role: Option<String>,
    /// Role of whoever holds the API token (the CLI). Default `admin`.
    pub api_token_role: Option<String>,
    /// Discord user id → role.
    #[serde(default)]
    pub discord_users: BTreeMap<String, String>,
    /// Discord role id → role.
    #[serde(default)]
    pub discord_roles: BTreeMap<String, String>,
    /// GitHub permission level (`admin`, `maintain`, `write`, `triage`, `read`, `none`) →
    /// role.
    #[serde(default)]
    pub github: BTreeMap<String, String>,
    /// Command name (`"env down"`) → the role it needs.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
}

/// One `[[notify]]` table: a sink and what it wants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Unique; names the sink in logs and in the outbox (renaming it starts afresh).
    pub name: String,
    /// `webhook` or `log`.
    pub kind: String,
    /// The webhook's URL (`kind = "webhook"`).
    pub url: Option<String>,
    /// The team channel's id (`kind = "discord"`).
    pub channel: Option<DiscordId>,
    /// Repos whose events go here. Default: all.
    pub repos: Option<Vec<String>>,
    /// Events that go here (`env.ready`, `env.failed`, ...). Default: all.
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubConfig {
    #[serde(default = "default_github_api")]
    pub api_url: String,
    /// HMAC secret of the webhook (or `SLIPWAY_GITHUB_WEBHOOK_SECRET`). Required.
    pub webhook_secret: Option<SecretString>,
    /// Auth as a GitHub App (installation tokens) ...
    pub app_id: Option<u64>,
    pub private_key_path: Option<PathBuf>,
    /// ... or with a token (or `SLIPWAY_GITHUB_TOKEN`).
    pub token: Option<SecretString>,
    /// How often open PRs are listed to heal missed webhooks.
    #[serde(default = "default_github_resync", with = "humantime_serde")]
    pub resync_interval: Duration,
    /// PRs with this label get no env.
    #[serde(default = "default_skip_label")]
    pub skip_label: String,
}

fn default_github_api() -> String {
    "https://api.github.com".into()
}
fn default_github_resync() -> Duration {
    Duration::from_secs(300)
}
fn default_skip_label() -> String {
    "slipway:skip".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscordConfig {
    /// The bot's token (or `SLIPWAY_DISCORD_TOKEN`). Required.
    pub token: Option<SecretString>,
    pub application_id: DiscordId,
    /// Guilds whose slash commands Slipway registers on start.
    #[serde(default, alias = "guild_ids")]
    pub guilds: Vec<DiscordId>,
    /// Another API base, e.g. a proxy. Default: Discord's.
    pub api_url: Option<String>,
    /// Repo name → its team channel, which gets every event of that repo; validated by
    /// `crate::notify::routes`.
    #[serde(default)]
    pub channels: BTreeMap<String, DiscordId>,
}

/// A Discord id (snowflake), written as a TOML integer or, as Discord shows ids, a string
/// of digits. Never 0: serenity's id types panic on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscordId(u64);

impl DiscordId {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for DiscordId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DiscordId;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a Discord id: an integer or a string of digits, like \"222222222222222222\"",
                )
            }

            fn visit_u64<E: serde::de::Error>(self, id: u64) -> Result<DiscordId, E> {
                if id == 0 {
                    return Err(E::custom(
                        "a Discord id is never 0; copy it in Discord (Developer Mode, Copy ID)",
                    ));
                }
                Ok(DiscordId(id))
            }

            fn visit_i64<E: serde::de::Error>(self, id: i64) -> Result<DiscordId, E> {
                let id = u64::try_from(id)
                    .map_err(|_| E::custom(format!("a Discord id is never negative (got {id})")))?;
                self.visit_u64(id)
            }

            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<DiscordId, E> {
                // `parse` alone would take "+1".
                match id.parse() {
                    Ok(n) if id.bytes().all(|b| b.is_ascii_digit()) => self.visit_u64(n),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(id), &self)),
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A configured repo served from a GitHub repository.
#[derive(Debug, Clone)]
pub struct GitHubLink {
    pub repo: RepoName,
    /// `owner/name`.
    pub github: String,
    pub draft_envs: bool,
}

/// How Slipway authenticates to GitHub.
pub enum GitHubAuth {
    Token(SecretString),
    App {
        app_id: u64,
        private_key_pem: SecretString,
    },
}

/// `delivery_retention` when the config sets none.
pub const DEFAULT_DELIVERY_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The GitHub section, validated, with secrets resolved from the environment.
pub struct GitHubSettings {
    pub api_url: String,
    pub webhook_secret: SecretString,
    pub auth: GitHubAuth,
    pub resync_interval: Duration,
    pub skip_label: String,
    /// From the top-level `delivery_retention`.
    pub delivery_retention: Duration,
}

/// `[limits]`: defaults for services whose compose file sets none, the ceilings a compose
/// file cannot lift, and bounds on what one env may ask for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub memory: Option<String>,
    pub cpus: Option<f64>,
    pub pids: Option<i64>,
    pub max_memory: Option<String>,
    pub max_cpus: Option<f64>,
    pub max_pids: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub max_stop_grace: Option<Duration>,
    pub max_compose_size: Option<String>,
    pub max_services: Option<usize>,
    pub max_volumes: Option<usize>,
    pub max_published_ports: Option<usize>,
    pub parallel_builds: Option<usize>,
}

impl LimitsConfig {
    /// The defaults and the env limits, validated: every value between the floor and its
    /// ceiling, each error naming its key.
    pub fn settings(&self) -> anyhow::Result<(ResourceLimits, envmgr::settings::EnvLimits)> {
        use envmgr::compose::show_bytes;
        use envmgr::settings::EnvLimits;
        let floor = EnvLimits::FLOOR;
        let mut env = EnvLimits::default();
        let size = |key: &str, text: &Option<String>| -> anyhow::Result<Option<i64>> {
            text.as_deref()
                .map(|t| parse_bytes(t).map_err(|e| anyhow::anyhow!("[limits] {key}: {e}")))
                .transpose()
        };
        let nanos = |key: &str, cpus: Option<f64>| -> anyhow::Result<Option<i64>> {
            match cpus {
                None => Ok(None),
                Some(c) if c.is_finite() && c > 0.0 && c <= 1e6 => Ok(Some((c * 1e9) as i64)),
                Some(c) => bail!("[limits] {key} = {c} is not a number of CPUs"),
            }
        };
        // Ceilings first: the defaults are checked against them.
        if let Some(max) = size("max_memory", &self.max_memory)? {
            env.max.memory_bytes = max;
        }
        if let Some(max) = nanos("max_cpus", self.max_cpus)? {
            env.max.nano_cpus = max;
        }
        if let Some(max) = self.max_pids {
            env.max.pids = max;
        }
        let check = |key: &str,
                     value: i64,
                     min: i64,
                     max: i64,
                     max_key: &str,
                     show: &dyn Fn(i64) -> String| {
            if value < min {
                bail!("[limits] {key} = {} is below the floor of {}: Docker reads 0 as no limit, and less leaves a service unable to run", show(value), show(min));
            }
            if value > max {
                bail!("[limits] {key} = {} is above [limits] {max_key} = {}: lower {key} or raise {max_key}", show(value), show(max));
            }
            Ok(())
        };
        let cpus = |n: i64| format!("{}", n as f64 / 1e9);
        let plain = |n: i64| n.to_string();
        check(
            "max_memory",
            env.max.memory_bytes,
            floor.memory_bytes,
            i64::MAX,
            "",
            &show_bytes,
        )?;
        check(
            "max_cpus",
            env.max.nano_cpus,
            floor.nano_cpus,
            i64::MAX,
            "",
            &cpus,
        )?;
        check("max_pids", env.max.pids, floor.pids, i64::MAX, "", &plain)?;

        let mut defaults = ResourceLimits::default();
        // Unset defaults never exceed a lowered ceiling.
        defaults.memory_bytes = defaults.memory_bytes.min(env.max.memory_bytes);
        defaults.nano_cpus = defaults.nano_cpus.min(env.max.nano_cpus);
        defaults.pids = defaults.pids.min(env.max.pids);
        if let Some(memory) = size("memory", &self.memory)? {
            defaults.memory_bytes = memory;
        }
        if let Some(n) = nanos("cpus", self.cpus)? {
            defaults.nano_cpus = n;
        }
        if let Some(pids) = self.pids {
            defaults.pids = pids;
        }
        check(
            "memory",
            defaults.memory_bytes,
            floor.memory_bytes,
            env.max.memory_bytes,
            "max_memory",
            &show_bytes,
        )?;
        check(
            "cpus",
            defaults.nano_cpus,
            floor.nano_cpus,
            env.max.nano_cpus,
            "max_cpus",
            &cpus,
        )?;
        check(
            "pids",
            defaults.pids,
            floor.pids,
            env.max.pids,
            "max_pids",
            &plain,
        )?;

        if let Some(grace) = self.max_stop_grace {
            env.max_stop_grace = grace;
        }
        if let Some(bytes) = size("max_compose_size", &self.max_compose_size)? {
            if bytes < 1024 {
                bail!("[limits] max_compose_size = {bytes} bytes is too small for any compose file: use at least 1k");
            }
            env.max_compose_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        let count = |key: &str, value: Option<usize>, min: usize, default: usize| match value {
            Some(n) if n < min => bail!("[limits] {key} = {n} must be at least {min}"),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        env.max_services = count("max_services", self.max_services, 1, env.max_services)?;
        env.max_volumes = count("max_volumes", self.max_volumes, 0, env.max_volumes)?;
        env.max_published_ports = count(
            "max_published_ports",
            self.max_published_ports,
            0,
            env.max_published_ports,
        )?;
        env.parallel_builds = count(
            "parallel_builds",
            self.parallel_builds,
            1,
            env.parallel_builds,
        )?;
        Ok((defaults, env))
    }
}

/// The `[runtime]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSection {
    /// Which runtime runs the envs: `docker` (the default, and the only one today).
    pub kind: Option<String>,
    pub docker: Option<DockerConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// Env networks get subnets from this range (default 172.16.0.0/16) ...
    pub network_pool: Option<String>,
    /// ... of this size (default /24).
    pub subnet_prefix: Option<u8>,
    /// Host IP published ports listen on (default 127.0.0.1: only this machine).
    pub publish_address: Option<String>,
    /// Built images kept per (repo, service) beside those in use (default 3).
    pub image_retention: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub name: String,
    pub url: String,
    #[serde(default = "default_env_file")]
    pub env_file: String,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    pub default_ttl: Duration,
    /// The GitHub repository (`owner/name`) whose pull requests get envs.
    pub github: Option<String>,
    /// Give draft pull requests an env too.
    #[serde(default)]
    pub draft_envs: bool,
    /// The longest an integration test run may take.
    #[serde(default = "default_test_timeout", with = "humantime_serde")]
    pub test_timeout: Duration,
    /// Environment variables (of the compose services) whose values are secrets: they are
    /// redacted from every test failure snippet.
    #[serde(default)]
    pub secret_env: Vec<String>,
    /// Token git authenticates with over HTTP(S) (instead of one inside `url`). Passed to
    /// git through its environment, never on a command line; redacted everywhere.
    pub token: Option<SecretString>,
    /// A file holding the token (or `username:token`), e.g. a mounted secret.
    pub credentials_file: Option<PathBuf>,
}

fn default_test_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

/// The shortest API token accepted when `listen` is reachable from other machines.
pub const MIN_API_TOKEN_CHARS: usize = 16;

/// Why the API token in the config (or `SLIPWAY_API_TOKEN`) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error(
        "listen = \"{listen}\" is reachable from other machines, so an API token is required: \
         set api_token in the config or SLIPWAY_API_TOKEN (at least {MIN_API_TOKEN_CHARS} \
         characters, e.g. from `openssl rand -hex 32`)"
    )]
    Missing { listen: SocketAddr },
    #[error(
        "{key} is empty: an empty token does not turn authentication off. Set a token of at \
         least {MIN_API_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`), or remove the \
         key and listen on loopback only (listen = \"127.0.0.1:8080\")"
    )]
    Empty { key: &'static str },
    #[error(
        "{key} is shorter than {MIN_API_TOKEN_CHARS} characters while listen = \"{listen}\" \
         is reachable from other machines: set a longer token (e.g. `openssl rand -hex 32`) \
         or listen on loopback only"
    )]
    TooShort {
        key: &'static str,
        listen: SocketAddr,
    },
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_env_file() -> String {
    "compose.yml".into()
}
fn default_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}

/// Where Slipway keeps its files when the config names no `data_dir`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("slipway");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/slipway"),
        None => PathBuf::from(".slipway"),
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut config: Config = toml::from_str(&text)
            .with_context(|| format!("config file {} is not valid", path.display()))?;
        // Relative repo paths are relative to the config file, not to wherever serve runs.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for repo in &mut config.repos {
            if is_local_path(&repo.url) && Path::new(&repo.url).is_relative() {
                repo.url = absolute(&base.join(&repo.url))
                    .to_string_lossy()
                    .into_owned();
            }
            if let Some(file) = repo.credentials_file.as_mut().filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
        }
        if let Some(dir) = &config.data_dir {
            if dir.is_relative() {
                config.data_dir = Some(base.join(dir));
            }
        }
        Ok(config)
    }

    /// The config used when `slipway serve` gets none: everything default, no repos yet
    /// (the bundled demo repo is added by the caller).
    pub fn embedded_defaults() -> Self {
        toml::from_str("").expect("an empty config is valid")
    }

    pub fn data_dir(&self) -> PathBuf {
        absolute(&self.data_dir.clone().unwrap_or_else(default_data_dir))
    }

    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir().join("slipway.db").display()),
        }
    }

    /// The API token from the config or `SLIPWAY_API_TOKEN`; required off loopback.
    pub fn api_token(&self) -> anyhow::Result<Option<SecretString>> {
        let from_env = std::env::var("SLIPWAY_API_TOKEN").ok();
        Ok(self.api_token_from(from_env.as_deref())?)
    }

    /// [`Config::api_token`] with the environment variable passed in, so tests need not
    /// touch the process environment. An empty token once meant "authentication off" and so
    /// gave anyone who could reach `listen` the admin role: it is now always an error, and a
    /// short one is an error wherever other machines can try to guess it.
    pub fn api_token_from(
        &self,
        from_env: Option<&str>,
    ) -> Result<Option<SecretString>, ApiTokenError> {
        let (token, source) = match from_env {
            Some(token) => (Some(token.to_string()), "SLIPWAY_API_TOKEN"),
            None => (
                self.api_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                "api_token",
            ),
        };
        let loopback = self.listen.ip().is_loopback();
        match token {
            None if loopback => Ok(None),
            None => Err(ApiTokenError::Missing {
                listen: self.listen,
            }),
            Some(token) if token.trim().is_empty() => Err(ApiTokenError::Empty { key: source }),
            Some(token) if !loopback && token.trim().chars().count() < MIN_API_TOKEN_CHARS => {
                Err(ApiTokenError::TooShort {
                    key: source,
                    listen: self.listen,
                })
            }
            Some(token) => {
                if token.trim().chars().count() < MIN_API_TOKEN_CHARS {
                    tracing::warn!(
                        key = source,
                        "the API token is shorter than {MIN_API_TOKEN_CHARS} characters; \
                         fine on loopback, but use a longer one before listening beyond it"
                    );
                }
                Ok(Some(SecretString::from(token)))
            }
        }
    }

    /// The GitHub settings, or `None` when the `[github]` section is absent. Refuses a
    /// section without a webhook secret or without credentials.
    /// What git authenticates with for `repo`: its `token` or `credentials_file`, else, for
    /// a GitHub repository, the `[github]` token (`SLIPWAY_GITHUB_TOKEN`).
    fn git_credentials(&self, repo: &RepoConfig) -> anyhow::Result<Option<GitCredentials>> {
        const USERNAME: &str = "x-access-token";
        let credentials = |username: &str, token: &str| {
            let token = token.trim();
            (!token.is_empty()).then(|| GitCredentials {
                username: username.to_string(),
                token: GitToken::Fixed(SecretString::from(token.to_string())),
            })
        };
        match (&repo.token, &repo.credentials_file) {
            (Some(_), Some(_)) => bail!(
                "[[repo]] `{}` sets both token and credentials_file; keep one",
                repo.name
            ),
            (Some(token), None) => match credentials(USERNAME, token.expose_secret()) {
                Some(found) => Ok(Some(found)),
                None => bail!("[[repo]] `{}` token is empty", repo.name),
            },
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "[[repo]] `{}` credentials_file {}",
                        repo.name,
                        path.display()
                    )
                })?;
                let text = text.trim();
                let found = match text.split_once(':') {
                    Some((user, token))
                        if !user.is_empty() && !user.contains(char::is_whitespace) =>
                    {
                        credentials(user, token)
                    }
                    _ => credentials(USERNAME, text),
                };
                match found {
                    Some(found) => Ok(Some(found)),
                    None => bail!(
                        "[[repo]] `{}` credentials_file {} holds no token",
                        repo.name,
                        path.display()
                    ),
                }
            }
            (None, None) => {
                let (Some(github_repo), Some(github)) = (&repo.github, &self.github) else {
                    return Ok(None);
                };
                // As the forge does: the App when it is configured, else the token.
                if github.app_id.is_some() && github.private_key_path.is_some() {
                    let settings = self.github_settings()?.context("[github] is set")?;
                    let tokens =
                        crate::github::forge::InstallationTokens::for_app(&settings, github_repo)?;
                    return Ok(tokens.map(|tokens| GitCredentials {
                        username: USERNAME.to_string(),
                        token: GitToken::Minted(std::sync::Arc::new(tokens)),
                    }));
                }
                let github_token =
                    env_secret("SLIPWAY_GITHUB_TOKEN").or_else(|| github.token.clone());
                Ok(github_token.and_then(|t| credentials(USERNAME, t.expose_secret())))
            }
        }
    }

    pub fn github_settings(&self) -> anyhow::Result<Option<GitHubSettings>> {
        let Some(github) = &self.github else {
            if let Some(repo) = self.repos.iter().find(|r| r.github.is_some()) {
                bail!(
                    "[[repo]] `{}` names a GitHub repository but there is no [github] section",
                    repo.name
                );
            }
            return Ok(None);
        };
        let secret =
            env_secret("SLIPWAY_GITHUB_WEBHOOK_SECRET").or_else(|| github.webhook_secret.clone());
        let Some(webhook_secret) = secret.filter(|s| !s.expose_secret().is_empty()) else {
            bail!("[github] needs webhook_secret (or SLIPWAY_GITHUB_WEBHOOK_SECRET): unsigned webhooks are never accepted");
        };
        let token = env_secret("SLIPWAY_GITHUB_TOKEN").or_else(|| github.token.clone());
        let auth = match (github.app_id, &github.private_key_path, token) {
            (Some(app_id), Some(path), _) => {
                let pem = std::fs::read_to_string(path)
                    .with_context(|| format!("[github] private_key_path {}", path.display()))?;
                GitHubAuth::App { app_id, private_key_pem: SecretString::from(pem) }
            }
            (Some(_), None, _) | (None, Some(_), _) => bail!("[github] app auth needs both app_id and private_key_path"),
            (None, None, Some(token)) => GitHubAuth::Token(token),
            (None, None, None) => bail!("[github] needs credentials: token (or SLIPWAY_GITHUB_TOKEN), or app_id and private_key_path"),
        };
        for repo in &self.repos {
            if let Some(name) = &repo.github {
                let valid = name.split_once('/').is_some_and(|(o, n)| {
                    !o.is_empty()
                        && !n.is_empty()
                        && !n.contains('/')
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
                });
                if !valid {
                    bail!(
                        "[[repo]] `{}`: github = \"{name}\" should look like \"owner/name\"",
                        repo.name
                    );
                }
            }
        }
        Ok(Some(GitHubSettings {
            api_url: github.api_url.trim_end_matches('/').to_string(),
            webhook_secret,
            auth,
            resync_interval: github.resync_interval,
            skip_label: github.skip_label.clone(),
            delivery_retention: self
                .delivery_retention
                .unwrap_or(DEFAULT_DELIVERY_RETENTION),
        }))
    }

    /// Who may run which command, from `[permissions]`; unknown roles, commands, GitHub
    /// levels and malformed Discord ids are errors.
    pub fn access_policy(&self) -> anyhow::Result<crate::access::AccessPolicy> {
        crate::access::AccessPolicy::from_config(&self.permissions)
    }

    /// The Docker runtime settings: `[runtime.docker]`, or the deprecated `[docker]`.
    pub fn docker_config(&self) -> anyhow::Result<DockerConfig> {
        match self.runtime.kind.as_deref().map(str::trim) {
            None | Some("docker") => {}
            Some(other) => bail!(
                "[runtime] kind = \"{other}\" is not a runtime this Slipway has: use \"docker\" \
                 (the default; its options go under [runtime.docker])"
            ),
        }
        if self.docker.is_some() && self.runtime.docker.is_none() {
            tracing::warn!("the [docker] table is deprecated: rename it to [runtime.docker]");
        }
        match (&self.runtime.docker, &self.docker) {
            (Some(_), Some(_)) => bail!(
                "both [runtime.docker] and [docker] are set: move the [docker] keys into \
                 [runtime.docker] ([docker] is a deprecated alias)"
            ),
            (Some(docker), None) | (None, Some(docker)) => Ok(DockerConfig {
                network_pool: docker.network_pool.clone(),
                subnet_prefix: docker.subnet_prefix,
                publish_address: docker.publish_address.clone(),
                image_retention: docker.image_retention,
            }),
            (None, None) => Ok(DockerConfig::default()),
        }
    }

    /// The host IP published ports listen on (`[runtime.docker] publish_address`).
    pub fn publish_address(&self) -> anyhow::Result<String> {
        let docker = self.docker_config()?;
        let Some(address) = docker.publish_address else {
            return Ok(envmgr::runtime::docker::DEFAULT_PUBLISH_ADDRESS.to_string());
        };
        let ip: std::net::IpAddr = address.trim().parse().map_err(|_| {
            anyhow::anyhow!(
                "[runtime.docker] publish_address `{address}` is not an IP address: use e.g. \
                 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
            )
        })?;
        Ok(ip.to_string())
    }

    /// Where env networks get their subnets.
    pub fn subnet_pool(&self) -> anyhow::Result<SubnetPool> {
        let docker = self.docker_config()?;
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

    /// The Discord settings, or `None` when the `[discord]` section is absent.
    pub fn discord_settings(&self) -> anyhow::Result<Option<crate::discord::DiscordSettings>> {
        let Some(discord) = &self.discord else {
            return Ok(None);
        };
        let token = env_secret("SLIPWAY_DISCORD_TOKEN").or_else(|| discord.token.clone());
        let Some(token) = token.filter(|t| !t.expose_secret().is_empty()) else {
            bail!("[discord] needs token (or SLIPWAY_DISCORD_TOKEN)");
        };
        if discord.guilds.is_empty() {
            tracing::warn!(
                "[discord] lists no guilds: slash commands will not be registered anywhere"
            );
        }
        Ok(Some(crate::discord::DiscordSettings {
            token,
            application_id: discord.application_id.get(),
            guilds: discord.guilds.iter().map(|g| g.get()).collect(),
            api_url: discord.api_url.clone(),
        }))
    }

    /// Which configured repos are linked to which GitHub repositories.
    pub fn github_links(&self) -> Vec<GitHubLink> {
        self.repos
            .iter()
            .filter_map(|r| {
                let github = r.github.clone()?;
                Some(GitHubLink {
                    repo: RepoName::parse(&r.name).ok()?,
                    github,
                    draft_envs: r.draft_envs,
                })
            })
            .collect()
    }

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }

    pub fn engine_settings(&self) -> anyhow::Result<EngineSettings> {
        let mut repos: Vec<RepoSettings> = Vec::new();
        for repo in &self.repos {
            let name = RepoName::parse(&repo.name)
                .with_context(|| format!("[[repo]] name `{}`", repo.name))?;
            if repos.iter().any(|r| r.name == name) {
                bail!("[[repo]] `{name}` is listed twice");
            }
            if repo.url.trim().is_empty() {
                bail!("[[repo]] `{name}` needs a url");
            }
            RepoPath::resolve("", &repo.env_file)
                .with_context(|| format!("[[repo]] `{name}` env_file"))?;
            repos.push(RepoSettings {
                name,
                url: repo.url.clone(),
                env_file: repo.env_file.clone(),
                default_ttl: repo.default_ttl,
                test_timeout: repo.test_timeout,
                secret_env: repo.secret_env.clone(),
                credentials: self.git_credentials(repo)?,
            });
        }
        let (default_limits, env_limits) = self.limits.settings()?;
        let lease_ttl = self
            .lease_ttl
            .unwrap_or(envmgr::controller::DEFAULT_LEASE_TTL);
        if lease_ttl < Duration::from_secs(1) {
            anyhow::bail!(
                "lease_ttl = {} is too short: leases are renewed every third of it, so give at least 1s (default 15s)",
                humantime::format_duration(lease_ttl)
            );
        }
        Ok(EngineSettings {
            lease_ttl,
            data_dir: self.data_dir(),
            repos,
            default_limits,
            resync_interval: self.resync_interval.unwrap_or(Duration::from_secs(30)),
            ready_timeout: self.ready_timeout.unwrap_or(Duration::from_secs(300)),
            public_url: self.public_url(),
            test_log_retention: self.test_log_retention.unwrap_or(20),
            env_limits,
        })
    }
}

fn env_secret(name: &str) -> Option<SecretString> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .map(SecretString::from)
}

/// A path, not a URL or `host:path` git remote.
fn is_local_path(url: &str) -> bool {
    !url.contains("://") && !url.split('/').next().unwrap_or_default().contains(':')
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_docker_section_and_its_deprecated_alias() {
        let new: Config =
            toml::from_str("[runtime.docker]\npublish_address = \"0.0.0.0\"\nsubnet_prefix = 26\n")
                .unwrap();
        assert_eq!(new.publish_address().unwrap(), "0.0.0.0");
        assert_eq!(new.subnet_pool().unwrap().prefix, 26);
        let old: Config = toml::from_str("[docker]\nsubnet_prefix = 25\n").unwrap();
        assert_eq!(old.subnet_pool().unwrap().prefix, 25);
        assert_eq!(old.publish_address().unwrap(), "127.0.0.1");
        let both: Config =
            toml::from_str("[docker]\nsubnet_prefix = 25\n[runtime.docker]\nsubnet_prefix = 25\n")
                .unwrap();
        let err = both.subnet_pool().unwrap_err().to_string();
        assert!(
            err.contains("[runtime.docker]") && err.contains("[docker]"),
            "{err}"
        );
        let bad: Config =
            toml::from_str("[runtime.docker]\npublish_address = \"localhost:80\"\n").unwrap();
        assert!(bad
            .publish_address()
            .unwrap_err()
            .to_string()
            .contains("publish_address"));
        assert!(toml::from_str::<Config>("[runtime.docker]\nnope = 1\n").is_err());
    }

    #[test]
    fn the_example_config_parses_and_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
        let config = Config::load(&path).unwrap();
        let settings = config.engine_settings().unwrap();
        assert!(!settings.repos.is_empty());
        assert_eq!(config.subnet_pool().unwrap().prefix, 24);
        assert_eq!(config.publish_address().unwrap(), "127.0.0.1");
        assert!(config.api_token.is_some());
        assert!(config.github_settings().unwrap().is_some());
        assert_eq!(config.github_links().len(), 1);
    }

    #[test]
    fn delivery_retention_is_a_humantime_duration_defaulting_to_a_week() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
        let example = Config::load(&path).unwrap();
        assert_eq!(example.delivery_retention, Some(DEFAULT_DELIVERY_RETENTION));
        let github = example.github_settings().unwrap().unwrap();
        assert_eq!(
            github.delivery_retention,
            Duration::from_secs(7 * 24 * 3600)
        );

        let set: Config = toml::from_str("delivery_retention = \"36h\"\n").unwrap();
        assert_eq!(set.delivery_retention, Some(Duration::from_secs(36 * 3600)));
        let unset: Config = toml::from_str("").unwrap();
        assert_eq!(unset.delivery_retention, None);
        assert!(toml::from_str::<Config>("delivery_retention = \"a week\"\n").is_err());
        assert!(toml::from_str::<Config>("delivery_retention = 7\n").is_err());
    }

    #[test]
    fn git_credentials_come_from_token_credentials_file_or_the_github_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cred"), "deploy:tok-from-file\n").unwrap();
        std::fs::write(dir.path().join("bare"), "  tok-bare \n").unwrap();
        let repo =
            |extra: &str| format!("[[repo]]\nname = \"a\"\nurl = \"https://h/a.git\"\n{extra}\n");
        let credentials = |text: &str| {
            let path = dir.path().join("slipway.toml");
            std::fs::write(&path, text).unwrap();
            let config = Config::load(&path)?;
            config
                .engine_settings()
                .map(|s| s.repos[0].credentials.clone())
        };
        let found = credentials(&repo("token = \"tok-key\"")).unwrap().unwrap();
        assert_eq!(
            (
                found.username.as_str(),
                found.token.fixed().unwrap().expose_secret()
            ),
            ("x-access-token", "tok-key")
        );
        let found = credentials(&repo("credentials_file = \"cred\""))
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                found.username.as_str(),
                found.token.fixed().unwrap().expose_secret()
            ),
            ("deploy", "tok-from-file")
        );
        let found = credentials(&repo("credentials_file = \"bare\""))
            .unwrap()
            .unwrap();
        assert_eq!(found.token.fixed().unwrap().expose_secret(), "tok-bare");
        assert!(credentials(&repo("")).unwrap().is_none());
        if std::env::var_os("SLIPWAY_GITHUB_TOKEN").is_none() {
            let github = format!(
                "{}[github]\nwebhook_secret = \"w\"\ntoken = \"tok-github\"\n",
                repo("github = \"o/a\"")
            );
            let found = credentials(&github).unwrap().unwrap();
            assert_eq!(found.token.fixed().unwrap().expose_secret(), "tok-github");
        }
        let both = credentials(&repo("token = \"t\"\ncredentials_file = \"cred\""));
        assert!(both.unwrap_err().to_string().contains("both"));
        let empty = credentials(&repo("token = \" \""));
        assert!(empty.unwrap_err().to_string().contains("empty"));
        let missing = credentials(&repo("credentials_file = \"nope\"")).unwrap_err();
        assert!(
            format!("{missing:#}").contains("credentials_file"),
            "{missing:#}"
        );
        // Debug output (logs, panics) never shows the token.
        let found = credentials(&repo("token = \"tok-hidden\"")).unwrap();
        assert!(!format!("{found:?}").contains("tok-hidden"));
    }

    #[test]
    fn limits_are_validated_and_each_error_names_its_key() {
        let limits = |text: &str| {
            toml::from_str::<Config>(&format!("[limits]\n{text}\n"))
                .unwrap()
                .limits
                .settings()
        };
        let (defaults, env) = limits("max_memory = \"1g\"\nmax_services = 3\nmax_stop_grace = \"10s\"\nmax_compose_size = \"64k\"\nparallel_builds = 4").unwrap();
        assert_eq!(env.max.memory_bytes, 1 << 30);
        assert_eq!((env.max_services, env.parallel_builds), (3, 4));
        assert_eq!(env.max_stop_grace, Duration::from_secs(10));
        assert_eq!(env.max_compose_bytes, 64 * 1024);
        assert_eq!(defaults.memory_bytes, 512 << 20);
        // An unset default never exceeds a lowered ceiling.
        let (defaults, _) = limits("max_memory = \"256m\"").unwrap();
        assert_eq!(defaults.memory_bytes, 256 << 20);
        for (text, key) in [
            ("memory = \"0\"", "memory"),
            ("memory = \"16g\"", "max_memory"),
            ("cpus = 0.0", "cpus"),
            ("cpus = 8.0", "max_cpus"),
            ("cpus = nan", "cpus"),
            ("pids = 0", "pids"),
            ("pids = -1", "pids"),
            ("pids = 5000", "max_pids"),
            ("max_memory = \"1k\"", "max_memory"),
            ("max_cpus = 0.0", "max_cpus"),
            ("max_pids = 1", "max_pids"),
            ("max_compose_size = \"10\"", "max_compose_size"),
            ("max_services = 0", "max_services"),
            ("parallel_builds = 0", "parallel_builds"),
        ] {
            let err = limits(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("[limits] {key}")) || err.contains(key),
                "{text}: {err}"
            );
            assert!(err.starts_with("[limits]"), "{text}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err =
            toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err =
            toml::from_str::<Config>("[[repo]]\nname = \"a\"\nurl = \"x\"\nenvfile = \"c.yml\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("envfile"), "{err}");
    }

    #[test]
    fn a_token_is_required_off_loopback() {
        std::env::remove_var("SLIPWAY_API_TOKEN");
        let config: Config = toml::from_str("listen = \"0.0.0.0:8080\"").unwrap();
        assert!(config.api_token().is_err());
        let config: Config =
            toml::from_str("listen = \"0.0.0.0:8080\"\napi_token = \"0123456789abcdef\"").unwrap();
        assert!(config.api_token_from(None).unwrap().is_some());
    }

    fn token_config(listen: &str, token: Option<&str>) -> Config {
        let mut text = format!("listen = \"{listen}\"\n");
        if let Some(token) = token {
            text.push_str(&format!("api_token = {token:?}\n"));
        }
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn an_empty_or_blank_token_is_refused_everywhere() {
        for listen in [
            "127.0.0.1:8080",
            "[::1]:0",
            "0.0.0.0:8080",
            "[::]:80",
            "10.1.2.3:9",
        ] {
            for blank in ["", " ", "\t", "  \n "] {
                let err = token_config(listen, Some(blank))
                    .api_token_from(None)
                    .unwrap_err();
                assert!(
                    matches!(err, ApiTokenError::Empty { .. }),
                    "{listen} {blank:?}"
                );
                assert!(err.to_string().contains("api_token is empty"), "{err}");
                // The same through the environment, which wins over the file.
                let good = "0123456789abcdef0123";
                let err = token_config(listen, Some(good))
                    .api_token_from(Some(blank))
                    .unwrap_err();
                assert!(
                    err.to_string().contains("SLIPWAY_API_TOKEN is empty"),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn a_short_token_is_refused_beyond_loopback_only() {
        for listen in ["0.0.0.0:8080", "[::]:80", "192.168.1.5:1"] {
            for short in ["t", "x", "123456789012345", "  padded-short  "] {
                let err = token_config(listen, Some(short))
                    .api_token_from(None)
                    .unwrap_err();
                assert!(
                    matches!(err, ApiTokenError::TooShort { .. }),
                    "{listen} {short:?}"
                );
                assert!(
                    err.to_string().contains("api_token is shorter than 16"),
                    "{err}"
                );
                let err = token_config(listen, None)
                    .api_token_from(Some(short))
                    .unwrap_err();
                assert!(err.to_string().contains("SLIPWAY_API_TOKEN"), "{err}");
            }
            let ok = token_config(listen, Some("0123456789abcdef"));
            assert!(ok.api_token_from(None).unwrap().is_some());
        }
        for listen in ["127.0.0.1:8080", "[::1]:0", "127.0.0.2:3"] {
            assert!(token_config(listen, Some("t"))
                .api_token_from(None)
                .unwrap()
                .is_some());
            assert!(token_config(listen, None)
                .api_token_from(None)
                .unwrap()
                .is_none());
        }
    }

    fn discord(text: &str) -> Result<DiscordConfig, toml::de::Error> {
        toml::from_str::<Config>(&format!("[discord]\ntoken = \"t\"\n{text}"))
            .map(|c| c.discord.unwrap())
    }

    #[test]
    fn discord_ids_are_integers_or_strings_of_digits() {
        let d = discord(
            "application_id = 111111111111111111\nguilds = [333, \"18446744073709551615\"]\n\
             [discord.channels]\ndemo = \"222222222222222222\"\nshop = 7\n",
        )
        .unwrap();
        assert_eq!(d.application_id.get(), 111_111_111_111_111_111);
        let guilds: Vec<u64> = d.guilds.iter().map(|g| g.get()).collect();
        assert_eq!(guilds, [333, u64::MAX]);
        assert_eq!(d.channels["demo"].get(), 222_222_222_222_222_222);
        assert_eq!(d.channels["shop"].get(), 7);
        let d = discord("application_id = \"1\"\nguild_ids = [\"2\"]\n").unwrap();
        assert_eq!(d.application_id.get(), 1);
        assert_eq!(d.guilds, [DiscordId(2)]);
        assert!(d.channels.is_empty());
    }

    #[test]
    fn bad_discord_ids_are_refused() {
        for (value, says) in [
            ("0", "never 0"),
            ("\"0\"", "never 0"),
            ("-5", "never negative"),
            ("\"+5\"", "string of digits"),
            ("\"12a\"", "string of digits"),
            ("\"\"", "string of digits"),
            ("1.5", "string of digits"),
            ("true", "string of digits"),
        ] {
            let err = discord(&format!("application_id = {value}\n")).unwrap_err();
            assert!(err.to_string().contains(says), "{value}: {err}");
        }
        let err = discord("application_id = 1\n[discord.channels]\ndemo = 0\n").unwrap_err();
        assert!(err.to_string().contains("demo = 0"), "{err}");
    }

    #[test]
    fn bad_repos_are_refused() {
        let config: Config =
            toml::from_str("[[repo]]\nname = \"Bad Name\"\nurl = \"/x\"\n").unwrap();
        assert!(config.engine_settings().is_err());
        let config: Config =
            toml::from_str("[[repo]]\nname = \"a\"\nurl = \"/x\"\nenv_file = \"../c.yml\"\n")
                .unwrap();
        assert!(config.engine_settings().is_err());
    }
}
