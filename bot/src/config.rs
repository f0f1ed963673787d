//! The server's TOML config file: its structure only. Unknown keys are errors, so a typo
//! never silently falls back to a default. Each module turns its own section into its
//! settings and says what is wrong with it (`access`, `github`, `discord`, `notify`,
//! `runtime`, `server`'s API token, and `app::settings` for the engine's keys).
//! `slipway.example.toml` at the repository root documents every key and is parsed by tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
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
    /// Envs the whole installation may hold at once (default: no cap). Submit-queue
    /// candidates count, but are never refused.
    pub max_envs: Option<usize>,
    /// Envs one caller may hold at once, by the identity a surface reports (`github:alice`,
    /// a Discord user, `api:<token name>`); default: no cap. Queue candidates are exempt.
    pub max_envs_per_user: Option<usize>,
    /// Memory all running envs may reserve together, summed over their services' limits
    /// (e.g. `"64GiB"`; default: no cap). Not `[limits] max_memory`, the ceiling of one service.
    pub max_memory: Option<String>,
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
    /// `AccessPolicy::from_config` (`access`).
    #[serde(default)]
    pub permissions: PermissionsConfig,
    /// `[proxy]`: the front door (HTTP reverse proxy to envs' services); read by
    /// `crate::proxy::ProxySettings`. On by default.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
    /// Prometheus for the channels' `[[repo.channel.metric]]` checks.
    pub prometheus: Option<PrometheusConfig>,
    /// Alertmanager for the channels' `alerts` guards.
    pub alertmanager: Option<AlertmanagerConfig>,
}

/// The `[proxy]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Where the front door listens. Default `127.0.0.1:8081`.
    pub listen: Option<SocketAddr>,
    /// Envs answer at `<env>.<domain>` and `<service>--<env>.<domain>`. Default `localhost`.
    pub domain: Option<String>,
    /// The public base of env links, `scheme://domain[:port]` (no env in it): an env's URL
    /// is the base with `<env>.` in front of the host. Default `http://<domain>:<listen port>`.
    pub proxy_url: Option<String>,
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
    /// How long a built image no env uses is kept (default "7d"; "0" keeps them all).
    pub image_retention: Option<ImageRetention>,
}

/// `image_retention` as written: a duration, or the image count older configs gave (read as
/// the default, with a warning saying what to write instead).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ImageRetention {
    Text(String),
    Count(i64),
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
    /// The submit queue (`[repo.queue]`); every key has a default.
    #[serde(default)]
    pub queue: QueueConfig,
    /// Envs this repo may have at once (default: no cap of its own).
    pub max_envs: Option<usize>,
    /// Idle this long (no push, command or request): the env's containers are stopped until
    /// the next use. "0" never.
    #[serde(default = "default_idle_sleep", with = "humantime_serde")]
    pub idle_sleep: Duration,
    /// Idle this long: the env is deleted, after a warning. "0" never.
    #[serde(default = "default_idle_delete", with = "humantime_serde")]
    pub idle_delete: Duration,
    /// How long before a deletion (idle or TTL) the PR and the repo's sinks are told. "0":
    /// no warning.
    #[serde(default = "default_warn_before", with = "humantime_serde")]
    pub warn_before: Duration,
    /// Release channels in rollout order (`[[repo.channel]]`): staging, then production.
    #[serde(default, rename = "channel")]
    pub channels: Vec<ChannelConfig>,
}

/// `[[repo.channel]]`: one stage of production a landed change rolls out through.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Names the release env `<repo>-<name>` and its front-door host.
    pub name: String,
    /// Canary weight per step (default `["5%", "25%", "50%", "100%"]`).
    pub steps: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub min_step_time: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_step_time: Option<Duration>,
    #[serde(default)]
    pub requires_approval: bool,
    /// How long the version runs at 100% here before the next channel starts.
    #[serde(default, with = "humantime_serde")]
    pub soak: Option<Duration>,
    /// When deploys may start or advance; none: any time.
    #[serde(default)]
    pub windows: Vec<envmgr::rollout::windows::DeployWindow>,
    /// A freeze written in the config: the reason nothing may roll out here now.
    pub freeze: Option<String>,
    /// Alertmanager matchers: no start or step while an alert matching all of them fires.
    #[serde(default)]
    pub alerts: Vec<String>,
    /// How long a failing metric source (Prometheus, Alertmanager) may hold a rollout
    /// before it is rolled back (default 2m).
    #[serde(default, with = "humantime_serde")]
    pub metric_outage: Option<Duration>,
    /// Prometheus queries compared between canary and baseline (`[[repo.channel.metric]]`).
    #[serde(default, rename = "metric")]
    pub metrics: Vec<envmgr::rollout::ports::MetricCheck>,
}

/// `[prometheus]`: where `[[repo.channel.metric]]` queries go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusConfig {
    pub url: String,
}

/// `[alertmanager]`: whose firing alerts hold rollouts (a channel's `alerts`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    pub url: String,
}

fn default_idle_sleep() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_idle_delete() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_warn_before() -> Duration {
    Duration::from_secs(3600)
}

/// `[repo.queue]`: how changes land on the target branch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// The branch changes land on (default `main`).
    pub target: Option<String>,
    /// `merge` (default), `squash` or `rebase`.
    pub method: Option<String>,
    /// Candidates tested at once (default 4).
    pub parallel: Option<usize>,
    /// Changes that may share one candidate when the queue is long (default 4).
    pub batch: Option<usize>,
    /// Re-runs of a failing tree before a change is evicted (default 1).
    pub retries: Option<u32>,
    /// Approving reviews a pull request needs to be queued (default 1).
    pub require_approvals: Option<u32>,
    /// Check runs or statuses that must have succeeded on a pull request's head.
    #[serde(default)]
    pub required_checks: Vec<String>,
}

fn default_test_timeout() -> Duration {
    Duration::from_secs(15 * 60)
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

    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.listen),
        }
    }
}

/// A secret from the environment variable `name`, when it is set and not empty (it wins
/// over the file).
pub fn env_secret(name: &str) -> Option<SecretString> {
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
    fn unknown_keys_are_errors() {
        let err =
            toml::from_str::<Config>("listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(err.to_string().contains("listen_port"), "{err}");
        let err =
            toml::from_str::<Config>("[[repo]]\nname = \"a\"\nurl = \"x\"\nenvfile = \"c.yml\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("envfile"), "{err}");
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
}
