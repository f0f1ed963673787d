//! `[github]` and the `github = "owner/name"` of each `[[repo]]`, turned into what the GitHub
//! surface runs on: validated, with secrets resolved from the environment.

use std::time::Duration;

use anyhow::{bail, Context as _};
use envmgr::names::RepoName;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{env_secret, Config};

/// A configured repo served from a GitHub repository.
#[derive(Debug, Clone)]
pub struct GitHubLink {
    pub repo: RepoName,
    /// `owner/name`.
    pub github: String,
    pub draft_envs: bool,
}

impl GitHubLink {
    /// Which configured repos are linked to which GitHub repositories.
    pub fn all(config: &Config) -> Vec<GitHubLink> {
        config
            .repos
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

impl GitHubSettings {
    /// The GitHub settings, or `None` when the `[github]` section is absent. Refuses a
    /// section without a webhook secret or without credentials.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(github) = &config.github else {
            if let Some(repo) = config.repos.iter().find(|r| r.github.is_some()) {
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
        for repo in &config.repos {
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
            delivery_retention: config
                .delivery_retention
                .unwrap_or(DEFAULT_DELIVERY_RETENTION),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn delivery_retention_is_a_humantime_duration_defaulting_to_a_week() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../slipway.example.toml");
        let example = Config::load(&path).unwrap();
        assert_eq!(example.delivery_retention, Some(DEFAULT_DELIVERY_RETENTION));
        let github = GitHubSettings::from_config(&example).unwrap().unwrap();
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
}
