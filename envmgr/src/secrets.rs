//! What an env must never show, and the one place that hides it.
//!
//! Every text that leaves Slipway about an env (its logs, reason, warnings and events, a test
//! run's headline and log, notifications, PR comments, chat answers) goes through the
//! [`Redactor`] of that env's repo at that env's commit: the values of the repo's
//! `secret_env` variables as the env's compose file sets them at that commit (its
//! `environment` and `env_file`s), the same values taken from the server's own environment,
//! the repo's git token, and the token shapes the snippet module knows (GitHub and Slack
//! tokens, AWS keys, bearer credentials, passwords in URLs, private key blocks).
//!
//! Nothing secret is stored: the values are read back from git when first needed and kept
//! in memory only, per (repo, commit). A compose file that does not parse still gives up
//! its `NAME: value` lines. When nothing can be read (no mirror yet, no such file) the
//! redactor still hides token shapes and the server-side values; when git itself failed,
//! the next call tries again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secrecy::ExposeSecret;
use tracing::warn;

use crate::compose::{parse_env_file, ComposeFile};
use crate::git::{GitError, GitMirrors, RepoPath};
use crate::names::{CommitSha, RepoName};
use crate::settings::{EngineSettings, RepoSettings};
use crate::snippet::Redactor;
use crate::store::{EnvRecord, Event, TestRun};

/// Redactors kept at most; past this the cache starts over (each is cheap to rebuild).
const MAX_CACHED: usize = 512;

/// Which texts a redactor is for: a repo at a commit (none before the first fetch).
type CacheKey = (RepoName, Option<CommitSha>);

/// Builds and caches one [`Redactor`] per (repo, commit).
pub struct Redactors {
    repos: Vec<RepoSettings>,
    git: GitMirrors,
    /// The largest compose or env file read for its values (`[limits] max_compose_size`).
    max_file_bytes: u64,
    cache: Mutex<HashMap<CacheKey, Arc<Redactor>>>,
}

impl std::fmt::Debug for Redactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactors").finish_non_exhaustive()
    }
}

impl Redactors {
    pub fn new(settings: &EngineSettings) -> Self {
        Self {
            repos: settings.repos.clone(),
            git: GitMirrors::new(&settings.data_dir),
            max_file_bytes: settings.env_limits.max_compose_bytes as u64,
            cache: Mutex::default(),
        }
    }

    /// The redactor for texts about `repo` at `commit` (`None`: before any commit was
    /// fetched; token shapes and server-side values only).
    pub async fn for_commit(&self, repo: &RepoName, commit: Option<&CommitSha>) -> Arc<Redactor> {
        let key = (repo.clone(), commit.cloned());
        if let Some(found) = self.cache.lock().expect("poisoned").get(&key) {
            return found.clone();
        }
        let Some(settings) = self.repos.iter().find(|r| &r.name == repo) else {
            return Arc::new(Redactor::default());
        };
        let mut secrets = server_side_secrets(settings);
        let mut complete = true;
        if let Some(commit) = commit.filter(|_| !settings.secret_env.is_empty()) {
            match self.compose_secrets(settings, commit).await {
                Ok(values) => secrets.extend(values),
                Err(e) => {
                    // A commit never changes: a file missing or too big there stays so, and
                    // only git itself failing (no mirror yet) is worth another try.
                    complete =
                        !matches!(e.downcast_ref::<GitError>(), Some(GitError::Failed { .. }));
                    warn!(repo = %repo, commit = %commit.short(), error = %e,
                        "cannot read the secret values to redact; hiding token shapes only");
                }
            }
        }
        let redactor = Arc::new(Redactor::new(&secrets));
        if complete {
            let mut cache = self.cache.lock().expect("poisoned");
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(key, redactor.clone());
        }
        redactor
    }

    /// The redactor for texts about `env`.
    pub async fn for_env(&self, env: &EnvRecord) -> Arc<Redactor> {
        self.for_commit(&env.repo, env.commit.as_ref()).await
    }

    /// `env` with its reason and warnings redacted.
    pub async fn env(&self, mut env: EnvRecord) -> EnvRecord {
        if env.reason.is_none() && env.warnings.is_empty() {
            return env;
        }
        let redactor = self.for_env(&env).await;
        redact_record(&redactor, &mut env);
        env
    }

    /// `events` of `env` with their messages redacted.
    pub async fn events(&self, env: &EnvRecord, mut events: Vec<Event>) -> Vec<Event> {
        let redactor = self.for_env(env).await;
        for event in &mut events {
            event.message = redactor.redact_text(&event.message);
        }
        events
    }

    /// A test run of `env` with its texts redacted (with the secrets at the run's commit).
    pub async fn run(&self, env: &EnvRecord, mut run: TestRun) -> TestRun {
        let commit = run.commit.as_ref().or(env.commit.as_ref());
        let redactor = self.for_commit(&env.repo, commit).await;
        redact_run(&redactor, &mut run);
        run
    }

    /// The values of the repo's `secret_env` variables in its compose file at `commit`:
    /// as the plan reads them (each service's `env_file`s, then `environment`), and, so a
    /// file that does not parse (whose error may quote it) still hides them, every
    /// `NAME: value` / `NAME=value` line of the file that names one.
    async fn compose_secrets(
        &self,
        repo: &RepoSettings,
        commit: &CommitSha,
    ) -> anyhow::Result<Vec<String>> {
        let compose_path = RepoPath::resolve("", &repo.env_file)?;
        let bytes = self
            .git
            .read_file_limited(&repo.name, commit, &compose_path, self.max_file_bytes)
            .await?;
        let text = String::from_utf8_lossy(&bytes);
        let mut values = assigned_values(&text, &repo.secret_env);
        let Ok(file) = ComposeFile::parse(&bytes) else {
            return Ok(values);
        };
        let base = compose_path.parent();
        for service in file.services.iter().chain(&file.profiled) {
            let mut environment = std::collections::BTreeMap::new();
            for env_file in &service.env_files {
                let Ok(path) = RepoPath::resolve(&base, env_file) else {
                    continue;
                };
                // A missing env_file fails the env anyway; the other values still count.
                let read = self
                    .git
                    .read_file_limited(&repo.name, commit, &path, self.max_file_bytes)
                    .await;
                if let Ok(bytes) = read {
                    let text = String::from_utf8_lossy(&bytes);
                    values.extend(assigned_values(&text, &repo.secret_env));
                    environment.extend(parse_env_file(&text));
                }
            }
            environment.extend(service.environment.clone());
            values.extend(
                environment
                    .into_iter()
                    .filter(|(k, _)| repo.secret_env.iter().any(|name| name == k))
                    .map(|(_, v)| v),
            );
        }
        Ok(values)
    }
}

/// Values given to `names` on lines of the forms a compose or env file uses:
/// `NAME: value`, `NAME=value`, `- NAME=value`, `export NAME=value`, quoted or not.
fn assigned_values(text: &str, names: &[String]) -> Vec<String> {
    // Quotes around the value (or, in `- "NAME=value"`, only after it) and a trailing
    // comment are not part of it.
    let unquote = |v: &str| {
        let v = v.trim();
        let v = v.split(" #").next().unwrap_or(v).trim();
        let v = v.strip_prefix(['"', '\'']).unwrap_or(v);
        v.strip_suffix(['"', '\'']).unwrap_or(v).to_string()
    };
    let mut values = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
        let line = line.strip_prefix("export ").unwrap_or(line);
        for name in names {
            let rest = [name.clone(), format!("\"{name}"), format!("'{name}")]
                .iter()
                .find_map(|prefix| line.strip_prefix(prefix.as_str()));
            let Some(rest) = rest else {
                continue;
            };
            // The closing quote of a quoted key (`"NAME": value`).
            let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest).trim_start();
            if let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) {
                let value = unquote(value);
                if !value.is_empty() {
                    values.push(value);
                }
            }
        }
    }
    values
}

/// Secrets known without reading the repo: the git token and the `secret_env` variables
/// set in the server's own environment.
fn server_side_secrets(repo: &RepoSettings) -> Vec<String> {
    let mut secrets: Vec<String> = repo
        .secret_env
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    // A minted token is not known here; it has GitHub's `ghs_` shape, which is redacted.
    if let Some(token) = repo.credentials.as_ref().and_then(|c| c.token.fixed()) {
        secrets.push(token.expose_secret().to_string());
    }
    secrets
}

/// Redacts the free texts of an env record in place.
pub fn redact_record(redactor: &Redactor, env: &mut EnvRecord) {
    if let Some(reason) = &env.reason {
        env.reason = Some(redactor.redact_text(reason));
    }
    for warning in &mut env.warnings {
        *warning = redactor.redact_text(warning);
    }
}

/// Redacts the free texts of a test run in place.
pub fn redact_run(redactor: &Redactor, run: &mut TestRun) {
    let texts = [
        &mut run.headline,
        &mut run.snippet_check,
        &mut run.snippet_comment,
        &mut run.snippet_chat,
    ];
    for text in texts.into_iter().flatten() {
        *text = redactor.redact_text(text);
    }
    for result in &mut run.results {
        if let Some(message) = &result.message {
            result.message = Some(redactor.redact_text(message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_values_are_found_in_every_form_even_in_a_broken_file() {
        let names = vec!["API_TOKEN".to_string(), "DB_PASSWORD".to_string()];
        let text = "services:
  web:
    environment:
      API_TOKEN: \"one-value\"
      OTHER: x
  db:
    environment:
      - DB_PASSWORD=two-value
      - \"API_TOKEN=three-value\"
      \"DB_PASSWORD\": 'five-value'
  broken: [
export DB_PASSWORD='four-value' # a comment
API_TOKEN_OLD=not-this
";
        assert_eq!(
            assigned_values(text, &names),
            [
                "one-value",
                "two-value",
                "three-value",
                "five-value",
                "four-value"
            ]
        );
    }
}
