//! The `[[notify]]` tables and `[discord.channels]`, validated into routes: a sink and the
//! repos and events it wants.

use std::sync::Arc;

use anyhow::bail;

use super::message::{Notification, NotificationKind};
use super::sink::{LogSink, Sink, WebhookSink};
use crate::config::{Config, NotifyConfig};

pub const KINDS: [&str; 3] = ["webhook", "log", "discord"];

/// A sink and what goes to it.
pub struct Route {
    /// Named as in the config (`Sink::name`); the outbox knows it by this name.
    pub sink: Arc<dyn Sink>,
    /// `None`: every repo.
    pub repos: Option<Vec<String>>,
    /// `None`: every event.
    pub events: Option<Vec<NotificationKind>>,
}

impl Route {
    pub fn name(&self) -> &str {
        self.sink.name()
    }

    pub fn wants(&self, n: &Notification) -> bool {
        self.repos
            .as_ref()
            .is_none_or(|repos| repos.contains(&n.repo))
            && self
                .events
                .as_ref()
                .is_none_or(|events| events.contains(&n.kind))
    }
}

/// What sinks other than HTTP and the log need: the store (for their bookkeeping) and a
/// Discord client when `[discord]` is configured.
#[derive(Clone, Default)]
pub struct SinkDeps {
    pub store: Option<envmgr::store::Store>,
    pub discord: Option<std::sync::Arc<serenity::http::Http>>,
}

/// The routes of the config; refuses anything it would not act on exactly as written.
pub fn routes(config: &Config, deps: &SinkDeps) -> anyhow::Result<Vec<Route>> {
    let repos: Vec<&str> = config.repos.iter().map(|r| r.name.as_str()).collect();
    let channels = discord_channel_tables(config, &repos)?;
    let mut routes: Vec<Route> = Vec::new();
    for table in &config.notify {
        for (repo, generated) in &channels {
            if table.name == generated.name {
                bail!(
                    "[[notify]] name `{}` is taken by the route [discord.channels] makes for repo \
                     `{repo}`; rename the [[notify]] table",
                    table.name
                );
            }
            // Both would post to the same env message and thread: everything twice.
            let same_repo = table
                .repos
                .as_ref()
                .is_none_or(|repos| repos.iter().any(|r| r == repo));
            if table.kind == "discord" && table.channel == generated.channel && same_repo {
                bail!(
                    "[[notify]] `{}` sends repo `{repo}` to the channel [discord.channels] \
                     already gives it, so every message would appear twice; drop one of them",
                    table.name
                );
            }
        }
        let route = route(table, &repos, deps)?;
        if routes.iter().any(|r| r.name() == route.name()) {
            bail!(
                "[[notify]] name `{}` is used twice; every sink needs a name of its own",
                route.name()
            );
        }
        routes.push(route);
    }
    for (_, table) in &channels {
        routes.push(route(table, &repos, deps)?);
    }
    Ok(routes)
}

/// `[discord.channels]`, each entry as the `[[notify]]` table it is short for: a Discord
/// sink named `discord-<repo>` with every event of that one repo.
fn discord_channel_tables<'a>(
    config: &'a Config,
    known_repos: &[&str],
) -> anyhow::Result<Vec<(&'a str, NotifyConfig)>> {
    let Some(discord) = &config.discord else {
        return Ok(Vec::new());
    };
    discord
        .channels
        .iter()
        .map(|(repo, &channel)| {
            if !known_repos.contains(&repo.as_str()) {
                bail!(
                    "[discord.channels] names `{repo}`, which is not a configured [[repo]] \
                     (configured: {})",
                    configured(known_repos)
                );
            }
            let table = NotifyConfig {
                name: format!("discord-{repo}"),
                kind: "discord".into(),
                url: None,
                channel: Some(channel),
                repos: Some(vec![repo.clone()]),
                events: None,
            };
            Ok((repo.as_str(), table))
        })
        .collect()
}

fn configured(known_repos: &[&str]) -> String {
    if known_repos.is_empty() {
        "none".to_string()
    } else {
        known_repos.join(", ")
    }
}

fn route(table: &NotifyConfig, known_repos: &[&str], deps: &SinkDeps) -> anyhow::Result<Route> {
    let name = table.name.as_str();
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        bail!("[[notify]] name `{name}`: use 1 to 64 letters, digits, '-' or '_'");
    }
    let sink: Arc<dyn Sink> = match table.kind.as_str() {
        "discord" => {
            let Some(channel) = table.channel else {
                bail!("[[notify]] `{name}`: kind = \"discord\" needs channel = <the team channel's id>");
            };
            let Some(http) = deps.discord.clone() else {
                bail!("[[notify]] `{name}`: kind = \"discord\" needs the [discord] section (token, application_id)");
            };
            let store = deps
                .store
                .clone()
                .ok_or_else(|| anyhow::anyhow!("[[notify]] `{name}`: no store"))?;
            Arc::new(super::discord::DiscordSink::new(
                name,
                channel.get(),
                http,
                store,
            ))
        }
        "log" => {
            if table.url.is_some() {
                bail!("[[notify]] `{name}`: url is only for kind = \"webhook\"");
            }
            Arc::new(LogSink::new(name))
        }
        "webhook" => {
            let Some(url) = &table.url else {
                bail!("[[notify]] `{name}`: kind = \"webhook\" needs url = \"https://...\"");
            };
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| anyhow::anyhow!("[[notify]] `{name}`: url is not a URL: {e}"))?;
            match parsed.scheme() {
                "http" | "https" => {}
                other => {
                    bail!("[[notify]] `{name}`: url has scheme `{other}`; use https:// or http://")
                }
            }
            Arc::new(WebhookSink::new(name, parsed)?)
        }
        other => bail!(
            "[[notify]] `{name}`: kind = \"{other}\" is not known; use one of: {}",
            KINDS.join(", ")
        ),
    };
    let repos = match &table.repos {
        None => None,
        Some(list) if list.is_empty() => {
            bail!("[[notify]] `{name}`: repos = [] matches nothing; leave repos out for every repo")
        }
        Some(list) => {
            if let Some(unknown) = list.iter().find(|r| !known_repos.contains(&r.as_str())) {
                bail!(
                    "[[notify]] `{name}`: repos names `{unknown}`, which is not a configured [[repo]] \
                     (configured: {})",
                    configured(known_repos)
                );
            }
            Some(list.clone())
        }
    };
    let events = match &table.events {
        None => None,
        Some(list) if list.is_empty() => bail!(
            "[[notify]] `{name}`: events = [] matches nothing; leave events out for every event"
        ),
        Some(list) => {
            let mut kinds = Vec::new();
            for event in list {
                let Some(kind) = NotificationKind::parse(event) else {
                    let valid: Vec<&str> =
                        NotificationKind::ALL.iter().map(|k| k.as_str()).collect();
                    bail!(
                        "[[notify]] `{name}`: event `{event}` is not known; use any of: {}",
                        valid.join(", ")
                    );
                };
                kinds.push(kind);
            }
            Some(kinds)
        }
    };
    Ok(Route {
        sink,
        repos,
        events,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        let base =
            "[[repo]]\nname = \"demo\"\nurl = \"/x\"\n[[repo]]\nname = \"shop\"\nurl = \"/y\"\n";
        toml::from_str(&format!("{base}{text}")).unwrap()
    }

    fn error(text: &str) -> String {
        match routes(&config(text), &SinkDeps::default()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    fn notification(repo: &str, kind: NotificationKind) -> Notification {
        Notification {
            event_id: 1,
            kind,
            env: format!("{repo}-main"),
            repo: repo.into(),
            at: 0,
            title: String::new(),
            text: String::new(),
            url: None,
            branch: None,
            commit: None,
            pull_request: None,
            run_id: None,
            chart_url: None,
            rollout_id: None,
        }
    }

    #[test]
    fn routes_filter_by_repo_and_event() {
        let routes = routes(
            &config(
                "[[notify]]\nname = \"all\"\nkind = \"log\"\n\
             [[notify]]\nname = \"team\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n\
             repos = [\"demo\"]\nevents = [\"env.ready\", \"tests.failed\"]\n",
            ),
            &SinkDeps::default(),
        )
        .unwrap();
        assert_eq!(routes.len(), 2);
        let (all, team) = (&routes[0], &routes[1]);
        assert_eq!(team.sink.name(), "team");
        for kind in NotificationKind::ALL {
            assert!(all.wants(&notification("demo", kind)));
            assert!(all.wants(&notification("shop", kind)));
            assert!(!team.wants(&notification("shop", kind)));
        }
        assert!(team.wants(&notification("demo", NotificationKind::EnvReady)));
        assert!(team.wants(&notification("demo", NotificationKind::TestsFailed)));
        assert!(!team.wants(&notification("demo", NotificationKind::EnvFailed)));
        assert!(!team.wants(&notification("demo", NotificationKind::TestsPassed)));
    }

    #[test]
    fn mistakes_are_refused_with_what_would_be_valid() {
        let e = error("[[notify]]\nname = \"a\"\nkind = \"slack\"\n");
        assert!(e.contains("slack") && e.contains("webhook, log"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"log\"\nevents = [\"env.up\"]\n");
        assert!(
            e.contains("env.up")
                && e.contains("env.ready, env.failed, env.deleted, env.expiring, tests.passed"),
            "{e}"
        );
        let e = error(
            "[[notify]]\nname = \"a\"\nkind = \"log\"\n[[notify]]\nname = \"a\"\nkind = \"log\"\n",
        );
        assert!(e.contains("used twice"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"webhook\"\n");
        assert!(e.contains("needs url"), "{e}");
        let e =
            error("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"ftp://example.com/x\"\n");
        assert!(e.contains("scheme `ftp`"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"not a url\"\n");
        assert!(e.contains("is not a URL"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"log\"\nrepos = [\"nope\"]\n");
        assert!(e.contains("nope") && e.contains("demo, shop"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"log\"\nevents = []\n");
        assert!(e.contains("matches nothing"), "{e}");
        let e = error("[[notify]]\nname = \"a b\"\nkind = \"log\"\n");
        assert!(e.contains("letters, digits"), "{e}");
        let e = error("[[notify]]\nname = \"a\"\nkind = \"log\"\nurl = \"http://x\"\n");
        assert!(e.contains("only for kind"), "{e}");
        assert!(toml::from_str::<Config>(
            "[[notify]]\nname = \"a\"\nkind = \"log\"\nchannel = \"x\"\n"
        )
        .is_err());
    }

    const DISCORD: &str = "[discord]\ntoken = \"t\"\napplication_id = 1\n";

    /// What a Discord sink needs, with a store that lives as long as the returned dir.
    async fn discord_deps(config: &Config) -> (tempfile::TempDir, SinkDeps) {
        let dir = tempfile::tempdir().unwrap();
        let store = envmgr::store::Store::connect(&format!(
            "sqlite://{}",
            dir.path().join("s.db").display()
        ))
        .await
        .unwrap();
        let discord = crate::discord::DiscordSettings::from_config(config)
            .unwrap()
            .unwrap();
        let deps = SinkDeps {
            store: Some(store),
            discord: Some(Arc::new(crate::discord::http(&discord))),
        };
        (dir, deps)
    }

    #[tokio::test]
    async fn a_discord_channels_entry_is_a_route_for_that_repo_with_every_event() {
        let config = config(&format!(
            "{DISCORD}[discord.channels]\ndemo = \"222222222222222222\"\n\
             [[notify]]\nname = \"all\"\nkind = \"log\"\n"
        ));
        let (_dir, deps) = discord_deps(&config).await;
        let routes = routes(&config, &deps).unwrap();
        let names: Vec<&str> = routes.iter().map(Route::name).collect();
        assert_eq!(names, ["all", "discord-demo"]);
        for kind in NotificationKind::ALL {
            assert!(routes[1].wants(&notification("demo", kind)));
            assert!(!routes[1].wants(&notification("shop", kind)));
        }
    }

    #[test]
    fn discord_channels_mistakes_are_refused() {
        let e = error(&format!("{DISCORD}[discord.channels]\nnope = 2\n"));
        assert!(
            e.contains("[discord.channels]") && e.contains("nope") && e.contains("demo, shop"),
            "{e}"
        );
        let e = error(&format!(
            "{DISCORD}[discord.channels]\ndemo = 2\n[[notify]]\nname = \"discord-demo\"\nkind = \"log\"\n"
        ));
        assert!(e.contains("discord-demo") && e.contains("rename"), "{e}");
        let e = error(&format!(
            "{DISCORD}[discord.channels]\ndemo = 2\n\
             [[notify]]\nname = \"team\"\nkind = \"discord\"\nchannel = 2\n"
        ));
        assert!(e.contains("team") && e.contains("twice"), "{e}");
        // An id of 0 is refused when the config is read (config::tests).
    }

    #[test]
    fn no_tables_no_routes() {
        assert!(routes(&config(""), &SinkDeps::default())
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn the_example_config_has_valid_notify_tables() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
        let config = Config::load(&path).unwrap();
        let (_dir, deps) = discord_deps(&config).await;
        let names: Vec<String> = routes(&config, &deps)
            .unwrap()
            .iter()
            .map(|r| r.name().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "team-webhook",
                "server-log",
                "failures-channel",
                "discord-demo"
            ],
            "the example documents three [[notify]] tables and one [discord.channels] entry"
        );
    }
}
