//! The forge: what Slipway asks of GitHub, behind a small trait. `GitHubForge` talks to the
//! REST API through octocrab (any base URL, so tests point it at a loopback world model); it
//! reads only the fields it needs and retries rate limits and server errors with backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use envmgr::names::PrNumber;
use octocrab::Octocrab;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::settings::{GitHubAuth, GitHubSettings};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ForgeError {
    #[error("GitHub answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("GitHub is unreachable: {0}")]
    Unavailable(String),
}

impl ForgeError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ForgeError::Status { status: 404, .. })
    }
    /// Worth trying again after a pause.
    fn is_transient(&self) -> bool {
        match self {
            ForgeError::Unavailable(_) => true,
            ForgeError::Status { status, message } => {
                *status >= 500
                    || *status == 429
                    || (*status == 403 && message.to_ascii_lowercase().contains("rate limit"))
            }
        }
    }
}

/// A collaborator's permission on a repository, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    None,
    Read,
    Triage,
    Write,
    Maintain,
    Admin,
}

impl Permission {
    fn parse(text: &str) -> Self {
        match text {
            "admin" => Permission::Admin,
            "maintain" => Permission::Maintain,
            "write" | "push" => Permission::Write,
            "triage" => Permission::Triage,
            "read" | "pull" => Permission::Read,
            _ => Permission::None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::None => "none",
            Permission::Read => "read",
            Permission::Triage => "triage",
            Permission::Write => "write",
            Permission::Maintain => "maintain",
            Permission::Admin => "admin",
        }
    }
}

/// A pull request as the API reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PullInfo {
    pub number: PrNumber,
    pub open: bool,
    pub draft: bool,
    pub labels: Vec<String>,
    pub head_sha: String,
    pub head_ref: String,
    /// `owner/name` of the head's repository (`None` if the fork was deleted).
    pub head_repo: Option<String>,
    pub base_repo: String,
    pub title: String,
    /// The author's login.
    pub author: String,
}

impl PullInfo {
    pub fn is_fork(&self) -> bool {
        self.head_repo
            .as_ref()
            .is_none_or(|h| !h.eq_ignore_ascii_case(&self.base_repo))
    }
}

/// Deployment states GitHub knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentState {
    InProgress,
    Success,
    Failure,
    Inactive,
}

impl DeploymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::InProgress => "in_progress",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failure",
            DeploymentState::Inactive => "inactive",
        }
    }
}

/// Commit status states GitHub knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
        }
    }
}

/// A check run's state as GitHub models it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    pub name: String,
    pub head_sha: String,
    /// queued, in_progress or completed.
    pub status: &'static str,
    /// With `completed`: success, failure, timed_out, cancelled, neutral.
    pub conclusion: Option<&'static str>,
    pub title: String,
    pub summary: String,
    pub text: Option<String>,
    pub details_url: Option<String>,
    pub annotations: Vec<serde_json::Value>,
}

#[async_trait]
pub trait Forge: Send + Sync + 'static {
    async fn permission(&self, repo: &str, user: &str) -> Result<Permission, ForgeError>;
    async fn pull_request(&self, repo: &str, number: PrNumber) -> Result<PullInfo, ForgeError>;
    async fn open_pull_requests(&self, repo: &str) -> Result<Vec<PullInfo>, ForgeError>;
    /// The id of the first comment on the issue whose body contains `marker`.
    async fn find_comment(
        &self,
        repo: &str,
        number: PrNumber,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError>;
    async fn create_comment(
        &self,
        repo: &str,
        number: PrNumber,
        body: &str,
    ) -> Result<u64, ForgeError>;
    async fn update_comment(
        &self,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError>;
    async fn create_deployment(
        &self,
        repo: &str,
        sha: &str,
        environment: &str,
    ) -> Result<u64, ForgeError>;
    async fn deployment_status(
        &self,
        repo: &str,
        deployment_id: u64,
        state: DeploymentState,
        environment_url: Option<&str>,
        log_url: Option<&str>,
        description: &str,
    ) -> Result<(), ForgeError>;
    async fn commit_status(
        &self,
        repo: &str,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError>;
    /// Creates a check run (`id: None`) or updates one; returns its id.
    async fn check_run(
        &self,
        repo: &str,
        id: Option<u64>,
        check: &CheckRun,
    ) -> Result<u64, ForgeError>;
    /// Logins whose latest review of the pull request approves it.
    async fn approvals(&self, repo: &str, number: PrNumber) -> Result<Vec<String>, ForgeError>;
    /// Every check run and commit status on `sha`: (name, outcome), where the outcome is
    /// `success`, `failure`, `pending`, ... as GitHub says it.
    async fn checks(&self, repo: &str, sha: &str) -> Result<Vec<(String, String)>, ForgeError>;
    async fn close_pull_request(&self, repo: &str, number: PrNumber) -> Result<(), ForgeError>;
}

/// The octocrab client of `[github]`, and whether it acts as a GitHub App.
fn build_client(settings: &GitHubSettings) -> anyhow::Result<(Octocrab, bool)> {
    let builder = Octocrab::builder()
        .base_uri(settings.api_url.as_str())
        .map_err(|e| anyhow::anyhow!("[github] api_url {}: {e}", settings.api_url))?
        // Retries are ours (see `retrying`), with backoff that suits webhooks.
        .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
        .set_connect_timeout(Some(Duration::from_secs(10)))
        .set_read_timeout(Some(Duration::from_secs(30)));
    let (builder, app) = match &settings.auth {
        GitHubAuth::Token(token) => (
            builder.personal_token(token.expose_secret().to_string()),
            false,
        ),
        GitHubAuth::App {
            app_id,
            private_key_pem,
        } => {
            let key =
                octocrab::EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "[github] private_key_path is not an RSA private key in PEM form: {e}"
                        )
                    })?;
            (builder.app(octocrab::models::AppId(*app_id), key), true)
        }
    };
    let client = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the GitHub client: {e}"))?;
    Ok((client, app))
}

/// Installation tokens of the GitHub App, for git over HTTPS to one repository: minted when
/// git needs one and reused while good for 30 s more (octocrab caches them), so no token is
/// ever written into the config or a URL.
pub struct InstallationTokens {
    app: Octocrab,
    /// `owner/name`.
    repo: String,
    installation: tokio::sync::Mutex<Option<Octocrab>>,
}

impl InstallationTokens {
    /// `None` unless `[github]` authenticates as an App.
    pub fn for_app(settings: &GitHubSettings, repo: &str) -> anyhow::Result<Option<Self>> {
        let (app, is_app) = build_client(settings)?;
        Ok(is_app.then(|| Self {
            app,
            repo: repo.to_string(),
            installation: tokio::sync::Mutex::default(),
        }))
    }
}

#[async_trait]
impl envmgr::MintToken for InstallationTokens {
    async fn mint(&self) -> anyhow::Result<SecretString> {
        let mut installation = self.installation.lock().await;
        if installation.is_none() {
            let (owner, name) = self.repo.split_once('/').unwrap_or((&self.repo, ""));
            let found = retrying(|| async {
                self.app
                    .apps()
                    .get_repository_installation(owner, name)
                    .await
                    .map_err(map_error)
            })
            .await
            .map_err(|e| {
                anyhow::anyhow!("the GitHub App is not installed on {}: {e}", self.repo)
            })?;
            *installation = Some(self.app.installation(found.id).map_err(map_error)?);
        }
        let client = installation.as_ref().expect("set above");
        let token = client.installation_token().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot mint an installation token for {}: {}",
                self.repo,
                map_error(e)
            )
        })?;
        Ok(token)
    }
}

/// GitHub through octocrab.
pub struct GitHubForge {
    client: Octocrab,
    app: bool,
    /// App auth: one installation client per repository owner/name.
    installations: Mutex<HashMap<String, Octocrab>>,
}

impl GitHubForge {
    pub fn new(settings: &GitHubSettings) -> anyhow::Result<Self> {
        let (client, app) = build_client(settings)?;
        Ok(Self {
            client,
            app,
            installations: Mutex::default(),
        })
    }

    /// The client to act on `repo` with: the token's, or the app installation's.
    async fn client_for(&self, repo: &str) -> Result<Octocrab, ForgeError> {
        if !self.app {
            return Ok(self.client.clone());
        }
        if let Some(client) = self
            .installations
            .lock()
            .expect("installations poisoned")
            .get(repo)
        {
            return Ok(client.clone());
        }
        let (owner, name) = repo.split_once('/').unwrap_or((repo, ""));
        let installation = retrying(|| async {
            self.client
                .apps()
                .get_repository_installation(owner, name)
                .await
                .map_err(map_error)
        })
        .await?;
        let client = self
            .client
            .installation(installation.id)
            .map_err(map_error)?;
        self.installations
            .lock()
            .expect("installations poisoned")
            .insert(repo.to_string(), client.clone());
        Ok(client)
    }

    async fn get<T: DeserializeOwned>(&self, repo: &str, route: &str) -> Result<T, ForgeError> {
        let client = self.client_for(repo).await?;
        retrying(|| async { client.get::<T, _, ()>(route, None).await.map_err(map_error) }).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        repo: &str,
        route: &str,
        body: serde_json::Value,
    ) -> Result<T, ForgeError> {
        let client = self.client_for(repo).await?;
        retrying(|| async {
            client
                .post::<_, T>(route, Some(&body))
                .await
                .map_err(map_error)
        })
        .await
    }

    async fn patch<T: DeserializeOwned>(
        &self,
        repo: &str,
        route: &str,
        body: serde_json::Value,
    ) -> Result<T, ForgeError> {
        let client = self.client_for(repo).await?;
        retrying(|| async {
            client
                .patch::<T, _, _>(route, Some(&body))
                .await
                .map_err(map_error)
        })
        .await
    }
}

#[derive(Deserialize)]
struct PermissionBody {
    /// The legacy level: `maintain` shows as `write` and `triage` as `read` here.
    permission: String,
    /// The finer role (`maintain`, `triage`, or a custom role's name).
    #[serde(default)]
    role_name: Option<String>,
    #[serde(default)]
    user: Option<PermissionUser>,
}

#[derive(Deserialize)]
struct PermissionUser {
    #[serde(default)]
    permissions: Option<std::collections::HashMap<String, bool>>,
}

impl PermissionBody {
    /// The strongest level any of the answer's fields grants: the legacy field alone would
    /// make a maintainer a writer.
    fn level(&self) -> Permission {
        let flags = self
            .user
            .as_ref()
            .and_then(|u| u.permissions.as_ref())
            .map(|flags| {
                ["admin", "maintain", "push", "triage", "pull"]
                    .into_iter()
                    .find(|flag| flags.get(*flag).copied().unwrap_or(false))
                    .map_or(Permission::None, Permission::parse)
            })
            .unwrap_or(Permission::None);
        let role = self
            .role_name
            .as_deref()
            .map_or(Permission::None, Permission::parse);
        Permission::parse(&self.permission).max(role).max(flags)
    }
}

#[derive(Deserialize)]
struct PullBody {
    number: PrNumber,
    state: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    labels: Vec<NameBody>,
    head: RefBody,
    base: RefBody,
    #[serde(default)]
    title: String,
    user: Option<LoginBody>,
}

#[derive(Deserialize)]
struct LoginBody {
    login: String,
}

#[derive(Deserialize)]
struct ReviewBody {
    user: Option<LoginBody>,
    state: String,
}

#[derive(Deserialize)]
struct CheckRunsBody {
    #[serde(default)]
    check_runs: Vec<CheckRunBody>,
}

#[derive(Deserialize)]
struct CheckRunBody {
    name: String,
    status: String,
    conclusion: Option<String>,
}

#[derive(Deserialize)]
struct CombinedStatusBody {
    #[serde(default)]
    statuses: Vec<StatusBody>,
}

#[derive(Deserialize)]
struct StatusBody {
    context: String,
    state: String,
}

#[derive(Deserialize)]
struct RefBody {
    sha: Option<String>,
    #[serde(rename = "ref")]
    git_ref: String,
    repo: Option<RepoBody>,
}

#[derive(Deserialize)]
struct RepoBody {
    full_name: String,
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

#[derive(Deserialize)]
struct IdBody {
    id: u64,
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
    #[serde(default)]
    body: Option<String>,
}

/// Responses whose content Slipway does not need.
#[derive(Deserialize, Serialize)]
struct Ignored {}

impl PullBody {
    fn into_info(self) -> PullInfo {
        PullInfo {
            number: self.number,
            open: self.state == "open",
            draft: self.draft,
            labels: self.labels.into_iter().map(|l| l.name).collect(),
            head_sha: self.head.sha.unwrap_or_default(),
            head_ref: self.head.git_ref,
            head_repo: self.head.repo.map(|r| r.full_name),
            base_repo: self.base.repo.map(|r| r.full_name).unwrap_or_default(),
            title: self.title,
            author: self.user.map(|u| u.login).unwrap_or_default(),
        }
    }
}

const PAGE: usize = 100;
/// Enough for any PR's comments or a repo's open PRs without paging forever.
const MAX_PAGES: usize = 20;

#[async_trait]
impl Forge for GitHubForge {
    async fn approvals(&self, repo: &str, number: PrNumber) -> Result<Vec<String>, ForgeError> {
        // Reviews come oldest first; a later review (changes requested, dismissed) replaces
        // a reviewer's earlier approval. Comments alone change nothing.
        let mut latest: Vec<(String, String)> = Vec::new();
        for page in 1..=MAX_PAGES {
            let route = format!("/repos/{repo}/pulls/{number}/reviews?per_page={PAGE}&page={page}");
            let batch: Vec<ReviewBody> = self.get(repo, &route).await?;
            let done = batch.len() < PAGE;
            for review in batch {
                let Some(user) = review.user else { continue };
                if review.state.eq_ignore_ascii_case("COMMENTED") {
                    continue;
                }
                latest.retain(|(login, _)| *login != user.login);
                latest.push((user.login, review.state.to_ascii_uppercase()));
            }
            if done {
                break;
            }
        }
        Ok(latest
            .into_iter()
            .filter(|(_, state)| state == "APPROVED")
            .map(|(login, _)| login)
            .collect())
    }

    async fn checks(&self, repo: &str, sha: &str) -> Result<Vec<(String, String)>, ForgeError> {
        let runs: CheckRunsBody = self
            .get(
                repo,
                &format!("/repos/{repo}/commits/{sha}/check-runs?per_page={PAGE}"),
            )
            .await?;
        let statuses: CombinedStatusBody = self
            .get(repo, &format!("/repos/{repo}/commits/{sha}/status"))
            .await?;
        let mut all: Vec<(String, String)> = runs
            .check_runs
            .into_iter()
            .map(|run| {
                let outcome = match run.conclusion {
                    Some(conclusion) if run.status == "completed" => conclusion,
                    _ => "pending".to_string(),
                };
                (run.name, outcome)
            })
            .collect();
        all.extend(statuses.statuses.into_iter().map(|s| (s.context, s.state)));
        Ok(all)
    }

    async fn close_pull_request(&self, repo: &str, number: PrNumber) -> Result<(), ForgeError> {
        self.patch::<Ignored>(
            repo,
            &format!("/repos/{repo}/pulls/{number}"),
            serde_json::json!({ "state": "closed" }),
        )
        .await?;
        Ok(())
    }

    async fn permission(&self, repo: &str, user: &str) -> Result<Permission, ForgeError> {
        let route = format!(
            "/repos/{repo}/collaborators/{}/permission",
            crate::text::percent_encode(user)
        );
        match self.get::<PermissionBody>(repo, &route).await {
            Ok(body) => Ok(body.level()),
            // Not a collaborator (or not a user at all).
            Err(e) if e.is_not_found() => Ok(Permission::None),
            Err(e) => Err(e),
        }
    }

    async fn pull_request(&self, repo: &str, number: PrNumber) -> Result<PullInfo, ForgeError> {
        Ok(self
            .get::<PullBody>(repo, &format!("/repos/{repo}/pulls/{number}"))
            .await?
            .into_info())
    }

    async fn open_pull_requests(&self, repo: &str) -> Result<Vec<PullInfo>, ForgeError> {
        let mut all = Vec::new();
        for page in 1..=MAX_PAGES {
            let route = format!("/repos/{repo}/pulls?state=open&per_page={PAGE}&page={page}");
            let batch: Vec<PullBody> = self.get(repo, &route).await?;
            let done = batch.len() < PAGE;
            all.extend(batch.into_iter().map(PullBody::into_info));
            if done {
                break;
            }
        }
        Ok(all)
    }

    async fn find_comment(
        &self,
        repo: &str,
        number: PrNumber,
        marker: &str,
    ) -> Result<Option<u64>, ForgeError> {
        for page in 1..=MAX_PAGES {
            let route =
                format!("/repos/{repo}/issues/{number}/comments?per_page={PAGE}&page={page}");
            let batch: Vec<CommentBody> = self.get(repo, &route).await?;
            if let Some(found) = batch
                .iter()
                .find(|c| c.body.as_deref().is_some_and(|b| b.contains(marker)))
            {
                return Ok(Some(found.id));
            }
            if batch.len() < PAGE {
                break;
            }
        }
        Ok(None)
    }

    async fn create_comment(
        &self,
        repo: &str,
        number: PrNumber,
        body: &str,
    ) -> Result<u64, ForgeError> {
        let route = format!("/repos/{repo}/issues/{number}/comments");
        Ok(self
            .post::<IdBody>(repo, &route, json!({ "body": body }))
            .await?
            .id)
    }

    async fn update_comment(
        &self,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), ForgeError> {
        let route = format!("/repos/{repo}/issues/comments/{comment_id}");
        self.patch::<Ignored>(repo, &route, json!({ "body": body }))
            .await?;
        Ok(())
    }

    async fn create_deployment(
        &self,
        repo: &str,
        sha: &str,
        environment: &str,
    ) -> Result<u64, ForgeError> {
        let body = json!({
            "ref": sha,
            "environment": environment,
            "description": format!("Slipway environment {environment}"),
            "auto_merge": false,
            "required_contexts": [],
            "transient_environment": true,
            "production_environment": false,
        });
        Ok(self
            .post::<IdBody>(repo, &format!("/repos/{repo}/deployments"), body)
            .await?
            .id)
    }

    async fn deployment_status(
        &self,
        repo: &str,
        deployment_id: u64,
        state: DeploymentState,
        environment_url: Option<&str>,
        log_url: Option<&str>,
        description: &str,
    ) -> Result<(), ForgeError> {
        let mut body =
            json!({ "state": state.as_str(), "description": truncate(description, 140) });
        if let Some(url) = environment_url {
            body["environment_url"] = json!(url);
        }
        if let Some(url) = log_url {
            body["log_url"] = json!(url);
        }
        let route = format!("/repos/{repo}/deployments/{deployment_id}/statuses");
        self.post::<Ignored>(repo, &route, body).await?;
        Ok(())
    }

    async fn commit_status(
        &self,
        repo: &str,
        sha: &str,
        state: StatusState,
        context: &str,
        description: &str,
        target_url: Option<&str>,
    ) -> Result<(), ForgeError> {
        let mut body = json!({ "state": state.as_str(), "context": context, "description": truncate(description, 140) });
        if let Some(url) = target_url {
            body["target_url"] = json!(url);
        }
        self.post::<Ignored>(repo, &format!("/repos/{repo}/statuses/{sha}"), body)
            .await?;
        Ok(())
    }

    async fn check_run(
        &self,
        repo: &str,
        id: Option<u64>,
        check: &CheckRun,
    ) -> Result<u64, ForgeError> {
        let body = check_body(check);
        match id {
            None => Ok(self
                .post::<IdBody>(repo, &format!("/repos/{repo}/check-runs"), body)
                .await?
                .id),
            Some(id) => {
                self.patch::<Ignored>(repo, &format!("/repos/{repo}/check-runs/{id}"), body)
                    .await?;
                Ok(id)
            }
        }
    }
}

fn check_body(check: &CheckRun) -> serde_json::Value {
    let mut body =
        json!({ "name": check.name, "head_sha": check.head_sha, "status": check.status });
    if let Some(conclusion) = check.conclusion {
        body["conclusion"] = json!(conclusion);
    }
    if let Some(url) = &check.details_url {
        body["details_url"] = json!(url);
    }
    let mut output = json!({ "title": truncate(&check.title, 250), "summary": truncate(&check.summary, 65_535) });
    if let Some(text) = &check.text {
        output["text"] = json!(truncate(text, 65_535));
    }
    // GitHub takes at most 50 annotations per request.
    let annotations: Vec<_> = check.annotations.iter().take(50).cloned().collect();
    if !annotations.is_empty() {
        output["annotations"] = json!(annotations);
    }
    body["output"] = output;
    body
}

/// Runs `call` again after rate limits, server errors and network failures: 4 tries with
/// growing pauses, then the last error.
async fn retrying<T, F, Fut>(mut call: F) -> Result<T, ForgeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ForgeError>>,
{
    let mut pause = Duration::from_millis(200);
    for attempt in 1.. {
        match call().await {
            Err(e) if e.is_transient() && attempt < 4 => {
                tracing::warn!(error = %e, attempt, retry_in = ?pause, "GitHub call failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            other => return other,
        }
    }
    unreachable!("the loop returns")
}

fn map_error(error: octocrab::Error) -> ForgeError {
    match error {
        octocrab::Error::GitHub { source, .. } => ForgeError::Status {
            status: source.status_code.as_u16(),
            message: source.message.clone(),
        },
        other => ForgeError::Unavailable(other.to_string()),
    }
}

pub use crate::text::truncate;

#[cfg(test)]
mod tests {
    use super::*;

    fn level(body: serde_json::Value) -> Permission {
        serde_json::from_value::<PermissionBody>(body)
            .expect("a permission answer")
            .level()
    }

    #[test]
    fn a_maintainer_is_not_taken_for_a_writer() {
        // GitHub's answer for a maintainer: the legacy field says write.
        let maintainer = serde_json::json!({
            "permission": "write", "role_name": "maintain",
            "user": {"permissions": {"admin": false, "maintain": true, "push": true, "triage": true, "pull": true}}
        });
        assert_eq!(level(maintainer), Permission::Maintain);
        // A custom role: its name means nothing here, its flags do.
        let custom = serde_json::json!({
            "permission": "read", "role_name": "security-reviewer",
            "user": {"permissions": {"admin": false, "maintain": false, "push": false, "triage": true, "pull": true}}
        });
        assert_eq!(level(custom), Permission::Triage);
        // Older servers send only the legacy field.
        assert_eq!(
            level(serde_json::json!({"permission": "admin"})),
            Permission::Admin
        );
    }
}
