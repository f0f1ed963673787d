//! The composition root. `slipway serve` builds one [`App`] from the config, once, and hands
//! it to every surface (the HTTP API, GitHub, Discord, the notifier) and through them to the
//! executor: the access policy, the engine, the forge, the runtime and the public URL travel
//! here instead of through globals. Each section of the config is turned into its module's
//! settings by that module, all before anything starts, so a mistake anywhere stops the
//! start with the key to fix.

pub mod settings;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use envmgr::names::RepoName;
use envmgr::runtime::Runtime;
use envmgr::settings::FrontDoor;
use envmgr::store::Store;
use envmgr::{Engine, RepoSettings};
use tracing::info;

use crate::access::AccessPolicy;
use crate::config::Config;
use crate::discord::DiscordSettings;
use crate::github::forge::{Forge, GitHubForge};
use crate::github::{GitHubLink, GitHubSettings};
use crate::{demo, notify, runtime};

/// What every surface works with.
pub struct App {
    /// Who may run which command (`[permissions]`).
    pub policy: AccessPolicy,
    pub engine: Engine,
    /// The GitHub client, when `[github]` is configured.
    pub forge: Option<Arc<dyn Forge>>,
    /// Where envs run (`[runtime]`).
    pub runtime: Arc<dyn Runtime>,
    /// Base URL people reach this server at, for the links Slipway posts.
    pub public_url: String,
    /// This installation's id (kept in the store); the runtime labels its objects with it.
    pub instance: String,
    /// Which configured repos are GitHub repositories (their changes are pull requests).
    pub github_links: Vec<GitHubLink>,
}

/// The surfaces' own sections, read from the config before anything started; each surface
/// starts from its part and the [`App`].
pub struct Surfaces {
    pub github: Option<GitHubSettings>,
    pub github_links: Vec<GitHubLink>,
    pub discord: Option<DiscordSettings>,
    /// The notification sinks and what each wants (`[[notify]]`, `[discord.channels]`).
    pub notify: Vec<notify::Route>,
}

/// Whether `slipway serve` got a config file, or serves the bundled demo repo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Configured,
    Demo,
}

impl App {
    /// Checks every section of `config`, opens the store, connects the runtime and starts
    /// the engine's controllers. `listening` is the address the server really bound, for
    /// the public URL when the config names none (`listen` may say port 0). `runtime`, when
    /// given, is used instead of the one `[runtime]` names (the in-process test app passes
    /// the runtime's test twin); `[runtime]` is still checked. `front_door`: where env
    /// links point (the front door's bound address or `proxy_url`).
    pub async fn start(
        config: &Config,
        mode: Mode,
        listening: SocketAddr,
        front_door: Option<FrontDoor>,
        runtime: Option<Arc<dyn Runtime>>,
    ) -> anyhow::Result<(Arc<App>, Surfaces)> {
        let policy = AccessPolicy::from_config(config)?;
        let github = GitHubSettings::from_config(config)?;
        let discord = DiscordSettings::from_config(config)?;
        runtime::DockerSettings::from_config(config)?;
        let mut settings = settings::engine_settings(config)?;
        let forge = match &github {
            Some(github) => Some(Arc::new(GitHubForge::new(github)?) as Arc<dyn Forge>),
            None => None,
        };
        let data_dir = settings.data_dir.clone();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;
        if mode == Mode::Demo {
            settings.repos.push(demo_repo(&data_dir)?);
        }

        let store = Store::connect(&config.database_url())
            .await
            .with_context(|| {
                format!(
                    "cannot open the store at {}",
                    redact_url(&config.database_url())
                )
            })?;
        // Right after the store opens, so a config mistake stops the start before anything
        // runs.
        let deps = notify::SinkDeps {
            store: Some(store.clone()),
            discord: discord.as_ref().map(|d| Arc::new(crate::discord::http(d))),
        };
        let notify_routes = notify::routes(config, &deps)?;
        let instance = store.instance_id().await?;
        let runtime = match runtime {
            Some(runtime) => runtime,
            None => runtime::from_config(config, &instance).await?,
        };
        // Only demo mode runs the bundled image; a configured server must not spend its
        // start (or a Docker build) on it. `slipway demo-image` builds it on demand.
        if mode == Mode::Demo {
            demo::ensure_demo_image(runtime.as_ref())
                .await
                .context("cannot prepare the demo image")?;
        }

        // Links people follow must name the port really bound.
        let public_url = match &config.public_url {
            Some(_) => config.public_url(),
            None => format!("http://{listening}"),
        };
        settings.public_url = public_url.clone();
        settings.front_door = front_door;
        // Before the engine starts, so the notifier sees every event from here on.
        notify::prepare(&store, &notify_routes)
            .await
            .context("cannot start notifications")?;
        let engine = Engine::start(settings, store, runtime.clone())
            .await
            .context("cannot start the engine's controllers")?;
        rollout_sources(config, &engine)?;
        let app = Arc::new(App {
            policy,
            engine,
            forge,
            runtime,
            public_url,
            instance,
            github_links: GitHubLink::all(config),
        });
        let surfaces = Surfaces {
            github,
            github_links: GitHubLink::all(config),
            discord,
            notify: notify_routes,
        };
        Ok((app, surfaces))
    }

    pub fn store(&self) -> &Store {
        self.engine.store()
    }
}

/// Plugs `[alertmanager]` and `[prometheus]` into the rollouts' guards and judges.
fn rollout_sources(config: &Config, engine: &Engine) -> anyhow::Result<()> {
    use envmgr::rollout::checks::{AlertGuard, PrometheusJudge};
    use envmgr::rollout::ports::{Alertmanager, Prometheus};
    if let Some(alertmanager) = &config.alertmanager {
        let source = Alertmanager::new(&alertmanager.url).context("[alertmanager] url")?;
        engine
            .rollout_checks()
            .add_guard(Arc::new(AlertGuard::new(Arc::new(source))));
    }
    if let Some(prometheus) = &config.prometheus {
        let source = Prometheus::new(&prometheus.url).context("[prometheus] url")?;
        engine
            .rollout_checks()
            .add_judge(Arc::new(PrometheusJudge::new(Arc::new(source))));
    }
    Ok(())
}

/// The bundled demo repo (created under the data directory), served when there is no
/// config so a fresh clone has something to run.
fn demo_repo(data_dir: &Path) -> anyhow::Result<RepoSettings> {
    let repo_dir = data_dir.join("demo-repo");
    demo::ensure_demo_repo(&repo_dir).context("cannot create the bundled demo repo")?;
    info!(repo = %repo_dir.display(), "no --config given: serving the bundled demo repo");
    Ok(RepoSettings {
        channels: Vec::new(),
        name: RepoName::parse("demo").expect("valid"),
        url: repo_dir.to_string_lossy().into_owned(),
        env_file: "compose.yml".into(),
        default_ttl: Duration::from_secs(8 * 3600),
        test_timeout: Duration::from_secs(15 * 60),
        secret_env: Vec::new(),
        credentials: None,
        queue: Default::default(),
        idle: Default::default(),
        max_envs: None,
    })
}

/// A database URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
        let config = Config::load(&path).unwrap();
        let settings = settings::engine_settings(&config).unwrap();
        assert!(!settings.repos.is_empty());
        let docker = runtime::DockerSettings::from_config(&config).unwrap();
        assert_eq!(docker.subnets.prefix, 24);
        assert_eq!(docker.publish_address, "127.0.0.1");
        assert!(config.api_token.is_some());
        assert!(GitHubSettings::from_config(&config).unwrap().is_some());
        assert_eq!(GitHubLink::all(&config).len(), 1);
        AccessPolicy::from_config(&config).unwrap();
        assert!(DiscordSettings::from_config(&config).unwrap().is_some());
    }

    #[test]
    fn database_passwords_stay_out_of_errors() {
        assert_eq!(
            redact_url("postgres://slipway:hunter2@db:5432/slipway"),
            "postgres://slipway:***@db:5432/slipway"
        );
        assert_eq!(
            redact_url("sqlite:///var/lib/s.db"),
            "sqlite:///var/lib/s.db"
        );
    }
}
