//! A GitHub "world model" for end-to-end tests: a small in-memory GitHub served over HTTP on
//! loopback, which the real octocrab client inside `slipway serve` talks to (the test config
//! sets `[github] api_url = world.url()`). It holds repos, pull requests, users with
//! permissions, comments, deployments, deployment statuses and commit statuses, answers with
//! GitHub REST v3 shapes (complete enough for octocrab's typed models), and lets tests inspect
//! what the bot did. Requests that match no route get a 404 and are listed by
//! [`GitHubWorld::unexpected`], which tests assert is empty.
//!
//! Also here: helpers that send signed webhooks to a Slipway server and build webhook payloads
//! from the real GitHub examples in `shared/fixtures/github-webhooks/`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

/// The login the world gives to everything the API client creates.
pub const BOT_LOGIN: &str = "slipway[bot]";

/// The base SHA every pull request in the world points at.
pub const BASE_SHA: &str = "0000000000000000000000000000000000000b45";

// ---------------------------------------------------------------------------------------------
// Public data types

/// A pull request to put into the world with [`GitHubWorld::add_pull`].
#[derive(Debug, Clone)]
pub struct PullSpec {
    pub number: u64,
    pub head_sha: String,
    pub head_ref: String,
    /// Full name of the head repository; differs from the base repository for forks.
    pub head_repo: String,
    pub draft: bool,
    pub labels: Vec<String>,
    /// "open" or "closed".
    pub state: String,
    pub author: String,
}

impl PullSpec {
    /// An open, non-draft pull request without labels.
    pub fn new(number: u64, head_sha: &str, head_ref: &str, head_repo: &str, author: &str) -> Self {
        Self {
            number,
            head_sha: head_sha.to_string(),
            head_ref: head_ref.to_string(),
            head_repo: head_repo.to_string(),
            author: author.to_string(),
            ..Self::default()
        }
    }
}

impl Default for PullSpec {
    fn default() -> Self {
        Self {
            number: 1,
            head_sha: String::new(),
            head_ref: "feature".into(),
            head_repo: String::new(),
            draft: false,
            labels: Vec::new(),
            state: "open".into(),
            author: "octocat".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comment {
    pub id: u64,
    pub body: String,
    pub user: String,
    /// How many times the comment was edited through the API.
    pub edits: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    pub environment: String,
    /// In the order they were created (oldest first).
    pub statuses: Vec<DeploymentStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentStatus {
    pub state: String,
    pub environment_url: Option<String>,
    pub log_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitStatus {
    pub state: String,
    pub context: String,
    pub description: Option<String>,
    pub target_url: Option<String>,
}

/// A check run as the world holds it: its latest state after every create and update.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRun {
    pub id: u64,
    pub name: String,
    pub head_sha: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub title: Option<String>,
    pub summary: Option<String>,
    pub text: Option<String>,
    pub annotations: Vec<Value>,
    /// How many times it was created or updated.
    pub writes: u32,
}

/// One request the world received, whatever it was answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string, "" when there was none.
    pub query: String,
    pub authorization: Option<String>,
    pub body: String,
    /// The status the world answered.
    pub status: u16,
}

// ---------------------------------------------------------------------------------------------
// State

struct StoredPull {
    spec: PullSpec,
    created_at: u64,
    updated_at: u64,
}

struct StoredComment {
    id: u64,
    number: u64,
    body: String,
    user: String,
    edits: u32,
    created_at: u64,
    updated_at: u64,
}

struct StoredDeploymentStatus {
    id: u64,
    state: String,
    environment_url: Option<String>,
    log_url: Option<String>,
    description: Option<String>,
    created_at: u64,
}

struct StoredDeployment {
    id: u64,
    sha: String,
    git_ref: String,
    task: String,
    environment: String,
    description: Option<String>,
    payload: Value,
    transient_environment: bool,
    production_environment: bool,
    created_at: u64,
    statuses: Vec<StoredDeploymentStatus>,
}

struct StoredStatus {
    id: u64,
    sha: String,
    status: CommitStatus,
    created_at: u64,
}

struct Repo {
    id: u64,
    permissions: BTreeMap<String, String>,
    pulls: BTreeMap<u64, StoredPull>,
    comments: Vec<StoredComment>,
    deployments: Vec<StoredDeployment>,
    statuses: Vec<StoredStatus>,
    check_runs: Vec<CheckRun>,
    /// Reviews per pull request, oldest first: (login, state).
    reviews: BTreeMap<u64, Vec<(String, String)>>,
}

struct State {
    url: String,
    repos: BTreeMap<String, Repo>,
    clone_urls: BTreeMap<String, String>,
    next_id: u64,
    fail: Option<(usize, u16)>,
    requests: Vec<RecordedRequest>,
    unexpected: Vec<String>,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn clone_url(&self, full_name: &str) -> String {
        self.clone_urls
            .get(full_name)
            .cloned()
            .unwrap_or_else(|| format!("https://github.com/{full_name}.git"))
    }
}

// ---------------------------------------------------------------------------------------------
// The world

/// The GitHub world model. Cheap to clone; all clones share one state and one server.
#[derive(Clone)]
pub struct GitHubWorld {
    state: Arc<Mutex<State>>,
    url: String,
}

impl GitHubWorld {
    /// Starts the HTTP server on 127.0.0.1 (a free port) on its own thread and runtime.
    pub fn start() -> GitHubWorld {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            url: url.clone(),
            repos: BTreeMap::new(),
            clone_urls: BTreeMap::new(),
            next_id: 1000,
            fail: None,
            requests: Vec::new(),
            unexpected: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("github-world".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    let app = axum::Router::new().fallback(handle).with_state(shared);
                    axum::serve(listener, app)
                        .await
                        .expect("github world serves");
                });
            })
            .expect("spawn github world thread");
        GitHubWorld { state, url }
    }

    /// The API base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    // --- setup ---------------------------------------------------------------------------

    pub fn add_repo(&self, full_name: &str) {
        assert!(
            full_name.contains('/'),
            "repo must be owner/name: {full_name}"
        );
        let mut state = self.lock();
        if state.repos.contains_key(full_name) {
            return;
        }
        let id = state.next_id();
        state.repos.insert(
            full_name.to_string(),
            Repo {
                id,
                permissions: BTreeMap::new(),
                pulls: BTreeMap::new(),
                comments: Vec::new(),
                deployments: Vec::new(),
                statuses: Vec::new(),
                check_runs: Vec::new(),
                reviews: BTreeMap::new(),
            },
        );
    }

    /// A review of a pull request: `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`.
    pub fn add_review(&self, repo: &str, number: u64, login: &str, state: &str) {
        let mut world = self.lock();
        let repo = world.repos.get_mut(repo).expect("repo added");
        repo.reviews
            .entry(number)
            .or_default()
            .push((login.to_string(), state.to_string()));
    }

    /// A commit status someone else's CI set (`success`, `failure`, `pending`).
    pub fn add_status(&self, repo: &str, sha: &str, context: &str, state: &str) {
        let mut world = self.lock();
        let id = world.next_id();
        let now = now_secs();
        world
            .repos
            .get_mut(repo)
            .expect("repo added")
            .statuses
            .push(StoredStatus {
                id,
                sha: sha.to_string(),
                status: CommitStatus {
                    state: state.to_string(),
                    context: context.to_string(),
                    description: None,
                    target_url: None,
                },
                created_at: now,
            });
    }

    /// The pull request's state as the API reports it (`open`, `closed`).
    pub fn pull_state(&self, repo: &str, number: u64) -> String {
        let world = self.lock();
        world.repos[repo].pulls[&number].spec.state.clone()
    }

    /// The clone URL the API reports for a repository (default `https://github.com/<name>.git`).
    pub fn set_clone_url(&self, full_name: &str, clone_url: &str) {
        self.lock()
            .clone_urls
            .insert(full_name.to_string(), clone_url.to_string());
    }

    /// `perm` is one of admin, maintain, write, triage, read, none. Users never set are "none".
    pub fn set_permission(&self, repo: &str, login: &str, perm: &str) {
        assert!(
            ["admin", "maintain", "write", "triage", "read", "none"].contains(&perm),
            "unknown permission {perm}"
        );
        let mut state = self.lock();
        repo_mut(&mut state, repo)
            .permissions
            .insert(login.to_string(), perm.to_string());
    }

    pub fn add_pull(&self, repo: &str, spec: PullSpec) {
        assert!(
            spec.state == "open" || spec.state == "closed",
            "state must be open or closed"
        );
        let mut spec = spec;
        if spec.head_repo.is_empty() {
            spec.head_repo = repo.to_string();
        }
        let now = now_secs();
        let mut state = self.lock();
        repo_mut(&mut state, repo).pulls.insert(
            spec.number,
            StoredPull {
                spec,
                created_at: now,
                updated_at: now,
            },
        );
    }

    pub fn set_pull_head(&self, repo: &str, number: u64, sha: &str) {
        let mut state = self.lock();
        let pull = pull_mut(&mut state, repo, number);
        pull.spec.head_sha = sha.to_string();
        pull.updated_at = now_secs();
    }

    pub fn close_pull(&self, repo: &str, number: u64) {
        let mut state = self.lock();
        let pull = pull_mut(&mut state, repo, number);
        pull.spec.state = "closed".into();
        pull.updated_at = now_secs();
    }

    /// Adds a comment as `user` (e.g. an earlier comment of the bot's); returns its id.
    pub fn add_comment(&self, repo: &str, number: u64, user: &str, body: &str) -> u64 {
        let mut state = self.lock();
        let id = state.next_id();
        let now = now_secs();
        repo_mut(&mut state, repo).comments.push(StoredComment {
            id,
            number,
            body: body.to_string(),
            user: user.to_string(),
            edits: 0,
            created_at: now,
            updated_at: now,
        });
        id
    }

    /// The next `n` API requests (whatever they are) get `status` with a GitHub-style error
    /// body; a 429 also carries `retry-after: 0`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.lock().fail = if n == 0 { None } else { Some((n, status)) };
    }

    // --- inspection ----------------------------------------------------------------------

    pub fn comments(&self, repo: &str, number: u64) -> Vec<Comment> {
        let state = self.lock();
        state
            .repos
            .get(repo)
            .map(|r| {
                r.comments
                    .iter()
                    .filter(|c| c.number == number)
                    .map(|c| Comment {
                        id: c.id,
                        body: c.body.clone(),
                        user: c.user.clone(),
                        edits: c.edits,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All deployments of a repo, oldest first.
    pub fn deployments(&self, repo: &str) -> Vec<Deployment> {
        let state = self.lock();
        state
            .repos
            .get(repo)
            .map(|r| {
                r.deployments
                    .iter()
                    .map(|d| Deployment {
                        id: d.id,
                        sha: d.sha.clone(),
                        environment: d.environment.clone(),
                        statuses: d
                            .statuses
                            .iter()
                            .map(|s| DeploymentStatus {
                                state: s.state.clone(),
                                environment_url: s.environment_url.clone(),
                                log_url: s.log_url.clone(),
                            })
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// All commit statuses posted for `sha`, in the order they were posted.
    /// Check runs of `repo`, in creation order.
    pub fn check_runs(&self, repo: &str) -> Vec<CheckRun> {
        self.lock()
            .repos
            .get(repo)
            .map(|r| r.check_runs.clone())
            .unwrap_or_default()
    }

    pub fn statuses(&self, repo: &str, sha: &str) -> Vec<CommitStatus> {
        let state = self.lock();
        state
            .repos
            .get(repo)
            .map(|r| {
                r.statuses
                    .iter()
                    .filter(|s| s.sha == sha)
                    .map(|s| s.status.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every request received, as "METHOD /path" (without the query string).
    pub fn requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    /// Every request received, with query, authorization header, body and answered status.
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests that matched no route ("METHOD /path?query"); tests assert this is empty.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }
}

fn repo_mut<'a>(state: &'a mut State, repo: &str) -> &'a mut Repo {
    state
        .repos
        .get_mut(repo)
        .unwrap_or_else(|| panic!("repo {repo} not in the world: call add_repo first"))
}

fn pull_mut<'a>(state: &'a mut State, repo: &str, number: u64) -> &'a mut StoredPull {
    repo_mut(state, repo)
        .pulls
        .get_mut(&number)
        .unwrap_or_else(|| panic!("no pull {repo}#{number} in the world"))
}

// ---------------------------------------------------------------------------------------------
// HTTP handling

type Shared = Arc<Mutex<State>>;

struct Reply {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body,
        headers: Vec::new(),
    }
}

fn error(status: u16, message: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": "https://docs.github.com/rest", "status": status.to_string()}),
    )
}

fn not_found() -> Reply {
    error(404, "Not Found")
}

fn validation_failed(resource: &str, field: &str, code: &str) -> Reply {
    reply(
        422,
        json!({
            "message": "Validation Failed",
            "errors": [{"resource": resource, "code": code, "field": field}],
            "documentation_url": "https://docs.github.com/rest",
            "status": "422",
        }),
    )
}

async fn handle(
    AxState(shared): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body_text = String::from_utf8_lossy(&body).into_owned();

    let reply = if let Some((n, status)) = state.fail.take() {
        if n > 1 {
            state.fail = Some((n - 1, status));
        }
        injected_failure(status)
    } else if !authorization.as_deref().is_some_and(|a| {
        let lower = a.to_ascii_lowercase();
        (lower.starts_with("bearer ") || lower.starts_with("token ")) && a.len() > 7
    }) {
        error(401, "Requires authentication")
    } else {
        match route(&mut state, &method, &path, &query, &body) {
            Some(reply) => reply,
            None => {
                let shown = if query.is_empty() {
                    format!("{method} {path}")
                } else {
                    format!("{method} {path}?{query}")
                };
                state.unexpected.push(shown);
                not_found()
            }
        }
    };

    state.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        authorization,
        body: body_text,
        status: reply.status,
    });
    drop(state);

    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json; charset=utf-8")
        .header("x-github-media-type", "github.v3; format=json")
        .header("x-github-request-id", "0000:0000:0000000:0000000:00000000");
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder
        .body(Body::from(reply.body.to_string()))
        .expect("valid response")
}

fn injected_failure(status: u16) -> Reply {
    let message = match status {
        429 => "API rate limit exceeded for installation ID 1.",
        403 => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        500 => "Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "We couldn't respond to your request in time. Sorry about that.",
        _ => "Injected failure",
    };
    let mut r = error(status, message);
    if status == 429 || status == 403 {
        r.headers.push(("retry-after".into(), "0".into()));
        r.headers.push(("x-ratelimit-limit".into(), "5000".into()));
        r.headers.push(("x-ratelimit-remaining".into(), "0".into()));
        r.headers
            .push(("x-ratelimit-reset".into(), now_secs().to_string()));
    }
    r
}

/// Returns None when no route matches (a 404 recorded as unexpected).
fn route(
    state: &mut State,
    method: &Method,
    path: &str,
    query: &str,
    body: &[u8],
) -> Option<Reply> {
    // Path segments percent-decoded ('+' is literal in a path).
    let decoded: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| decode(&s.replace('+', "%2B")))
        .collect();
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let q = parse_query(query);
    let post = *method == Method::POST;
    let patch = *method == Method::PATCH;

    if let ["app", "installations", id, "access_tokens"] = segs[..] {
        if !post {
            return None;
        }
        let id: u64 = id.parse().ok()?;
        return Some(reply(
            201,
            json!({
                "token": "ghs_testtoken",
                "expires_at": rfc3339(now_secs() + 3600),
                "permissions": {
                    "contents": "read", "deployments": "write", "issues": "write",
                    "metadata": "read", "pull_requests": "write", "statuses": "write",
                },
                "repository_selection": "selected",
                "installation_id": id,
            }),
        ));
    }

    let ["repos", owner, name, rest @ ..] = segs.as_slice() else {
        return None;
    };
    let full = format!("{owner}/{name}");
    let base = state.url.clone();

    // Which routes exist, independently of whether the repo does.
    let known = matches!(
        (method.as_str(), rest),
        ("GET", ["collaborators", _, "permission"])
            | ("GET", ["pulls"])
            | ("GET", ["pulls", _])
            | ("PATCH", ["pulls", _])
            | ("GET", ["pulls", _, "reviews"])
            | ("GET", ["commits", _, "check-runs"])
            | ("GET", ["commits", _, "status"])
            | ("GET", ["issues", "comments", _])
            | ("PATCH" | "POST", ["issues", "comments", _])
            | ("GET", ["issues", _, "comments"])
            | ("POST", ["issues", _, "comments"])
            | ("GET", ["deployments"])
            | ("POST", ["deployments"])
            | ("GET", ["deployments", _])
            | ("GET", ["deployments", _, "statuses"])
            | ("POST", ["deployments", _, "statuses"])
            | ("POST", ["statuses", _])
            | ("GET", ["commits", _, "statuses"])
            | ("GET", ["installation"])
            | ("POST", ["check-runs"])
            | ("PATCH", ["check-runs", _])
    );
    if !known {
        return None;
    }
    if rest == ["installation"] {
        return Some(reply(200, installation_json(&base, owner)));
    }
    if !state.repos.contains_key(&full) {
        return Some(not_found());
    }
    let now = now_secs();

    let r = match rest {
        ["collaborators", login, "permission"] => {
            let repo = &state.repos[&full];
            let role = repo
                .permissions
                .get(*login)
                .cloned()
                .unwrap_or_else(|| "none".into());
            let legacy = match role.as_str() {
                "maintain" => "write",
                "triage" => "read",
                other => other,
            };
            let level = |r: &str| match r {
                "admin" => 5,
                "maintain" => 4,
                "write" => 3,
                "triage" => 2,
                "read" => 1,
                _ => 0,
            };
            let l = level(&role);
            let mut user = user_json(&base, login);
            user["permissions"] = json!({
                "admin": l >= 5, "maintain": l >= 4, "push": l >= 3, "triage": l >= 2, "pull": l >= 1,
            });
            user["role_name"] = json!(role);
            reply(
                200,
                json!({"permission": legacy, "role_name": role, "user": user}),
            )
        }

        ["pulls"] => {
            let wanted = q.get("state").map(String::as_str).unwrap_or("open");
            let repo = &state.repos[&full];
            let mut pulls: Vec<&StoredPull> = repo
                .pulls
                .values()
                .filter(|p| wanted == "all" || p.spec.state == wanted)
                .collect();
            // GitHub's default order: newest first.
            pulls.reverse();
            let items: Vec<Value> = pulls
                .iter()
                .map(|p| pull_json(state, &full, p, false))
                .collect();
            paginate(&base, path, &q, items)
        }

        ["pulls", number] if patch => {
            let number: u64 = number.parse().ok()?;
            let body = match parse_body(body) {
                Ok(b) => b,
                Err(r) => return Some(r),
            };
            let Some(pull) = state.repos.get_mut(&full).unwrap().pulls.get_mut(&number) else {
                return Some(not_found());
            };
            if let Some(new_state) = body["state"].as_str() {
                if !["open", "closed"].contains(&new_state) {
                    return Some(validation_failed("PullRequest", "state", "invalid"));
                }
                pull.spec.state = new_state.to_string();
                pull.updated_at = now;
            }
            let pull = &state.repos[&full].pulls[&number];
            reply(200, pull_json(state, &full, pull, true))
        }

        ["pulls", number] => {
            let number: u64 = number.parse().ok()?;
            match state.repos[&full].pulls.get(&number) {
                Some(p) => reply(200, pull_json(state, &full, p, true)),
                None => not_found(),
            }
        }

        ["pulls", number, "reviews"] => {
            let number: u64 = number.parse().ok()?;
            if !state.repos[&full].pulls.contains_key(&number) {
                return Some(not_found());
            }
            let reviews = state.repos[&full]
                .reviews
                .get(&number)
                .cloned()
                .unwrap_or_default();
            let items: Vec<Value> = reviews
                .iter()
                .enumerate()
                .map(|(i, (login, st))| {
                    json!({
                        "id": i + 1,
                        "user": user_json(&base, login),
                        "state": st,
                        "body": "",
                        "commit_id": state.repos[&full].pulls[&number].spec.head_sha,
                    })
                })
                .collect();
            paginate(&base, path, &q, items)
        }

        ["commits", sha, "check-runs"] => {
            let runs: Vec<Value> = state.repos[&full]
                .check_runs
                .iter()
                .filter(|c| c.head_sha == *sha)
                .map(|c| {
                    json!({
                        "name": c.name,
                        "head_sha": c.head_sha,
                        "status": c.status,
                        "conclusion": c.conclusion,
                    })
                })
                .collect();
            reply(
                200,
                json!({ "total_count": runs.len(), "check_runs": runs }),
            )
        }

        ["commits", sha, "status"] => {
            // The newest status per context, as GitHub's combined status.
            let mut latest: BTreeMap<String, String> = BTreeMap::new();
            for s in state.repos[&full].statuses.iter().filter(|s| s.sha == *sha) {
                latest.insert(s.status.context.clone(), s.status.state.clone());
            }
            let statuses: Vec<Value> = latest
                .iter()
                .map(|(context, st)| json!({ "context": context, "state": st }))
                .collect();
            let combined = if latest.values().any(|s| s == "failure" || s == "error") {
                "failure"
            } else if latest.values().all(|s| s == "success") && !latest.is_empty() {
                "success"
            } else {
                "pending"
            };
            reply(
                200,
                json!({ "state": combined, "sha": sha, "statuses": statuses }),
            )
        }

        ["issues", number, "comments"] => {
            let Ok(number) = number.parse::<u64>() else {
                return Some(not_found());
            };
            if !state.repos[&full].pulls.contains_key(&number) {
                return Some(not_found());
            }
            if post {
                let body = match parse_body(body) {
                    Ok(b) => b,
                    Err(r) => return Some(r),
                };
                let Some(text) = body["body"].as_str() else {
                    return Some(validation_failed("IssueComment", "body", "missing_field"));
                };
                let id = state.next_id();
                let repo = state.repos.get_mut(&full).unwrap();
                repo.comments.push(StoredComment {
                    id,
                    number,
                    body: text.to_string(),
                    user: BOT_LOGIN.into(),
                    edits: 0,
                    created_at: now,
                    updated_at: now,
                });
                let c = state.repos[&full].comments.last().unwrap();
                reply(201, comment_json(state, &full, c))
            } else {
                let repo = &state.repos[&full];
                let items: Vec<Value> = repo
                    .comments
                    .iter()
                    .filter(|c| c.number == number)
                    .map(|c| comment_json(state, &full, c))
                    .collect();
                paginate(&base, path, &q, items)
            }
        }

        ["issues", "comments", id] => {
            let Ok(id) = id.parse::<u64>() else {
                return Some(not_found());
            };
            let Some(index) = state.repos[&full].comments.iter().position(|c| c.id == id) else {
                return Some(not_found());
            };
            // GitHub also takes POST for its PATCH endpoints (octocrab's update_comment uses it).
            if patch || post {
                let body = match parse_body(body) {
                    Ok(b) => b,
                    Err(r) => return Some(r),
                };
                let Some(text) = body["body"].as_str() else {
                    return Some(validation_failed("IssueComment", "body", "missing_field"));
                };
                let c = &mut state.repos.get_mut(&full).unwrap().comments[index];
                c.body = text.to_string();
                c.edits += 1;
                c.updated_at = now;
            }
            let c = &state.repos[&full].comments[index];
            reply(200, comment_json(state, &full, c))
        }

        ["deployments"] if post => {
            let body = match parse_body(body) {
                Ok(b) => b,
                Err(r) => return Some(r),
            };
            let Some(git_ref) = body["ref"].as_str() else {
                return Some(validation_failed("Deployment", "ref", "missing_field"));
            };
            let sha = resolve_ref(state, &full, git_ref);
            let id = state.next_id();
            let d = StoredDeployment {
                id,
                sha,
                git_ref: git_ref.to_string(),
                task: body["task"].as_str().unwrap_or("deploy").to_string(),
                environment: body["environment"]
                    .as_str()
                    .unwrap_or("production")
                    .to_string(),
                description: body["description"].as_str().map(str::to_string),
                payload: match &body["payload"] {
                    Value::Null => json!({}),
                    Value::String(s) => serde_json::from_str(s).unwrap_or(json!(s)),
                    other => other.clone(),
                },
                transient_environment: body["transient_environment"].as_bool().unwrap_or(false),
                production_environment: body["production_environment"].as_bool().unwrap_or(
                    body["environment"]
                        .as_str()
                        .is_none_or(|e| e == "production"),
                ),
                created_at: now,
                statuses: Vec::new(),
            };
            let j = deployment_json(&base, &full, &d);
            state.repos.get_mut(&full).unwrap().deployments.push(d);
            reply(201, j)
        }

        ["deployments"] => {
            let repo = &state.repos[&full];
            let items: Vec<Value> = repo
                .deployments
                .iter()
                .rev()
                .filter(|d| q.get("environment").is_none_or(|e| *e == d.environment))
                .filter(|d| q.get("sha").is_none_or(|s| *s == d.sha))
                .filter(|d| q.get("ref").is_none_or(|r| *r == d.git_ref))
                .filter(|d| q.get("task").is_none_or(|t| *t == d.task))
                .map(|d| deployment_json(&base, &full, d))
                .collect();
            paginate(&base, path, &q, items)
        }

        ["deployments", id] => {
            let Ok(id) = id.parse::<u64>() else {
                return Some(not_found());
            };
            match state.repos[&full].deployments.iter().find(|d| d.id == id) {
                Some(d) => reply(200, deployment_json(&base, &full, d)),
                None => not_found(),
            }
        }

        ["deployments", id, "statuses"] => {
            let Ok(id) = id.parse::<u64>() else {
                return Some(not_found());
            };
            let Some(index) = state.repos[&full]
                .deployments
                .iter()
                .position(|d| d.id == id)
            else {
                return Some(not_found());
            };
            if post {
                let body = match parse_body(body) {
                    Ok(b) => b,
                    Err(r) => return Some(r),
                };
                let valid = [
                    "error",
                    "failure",
                    "inactive",
                    "in_progress",
                    "queued",
                    "pending",
                    "success",
                ];
                let Some(st) = body["state"].as_str().filter(|s| valid.contains(s)) else {
                    return Some(validation_failed("DeploymentStatus", "state", "invalid"));
                };
                let status_id = state.next_id();
                let opt = |k: &str| body[k].as_str().map(str::to_string);
                let status = StoredDeploymentStatus {
                    id: status_id,
                    state: st.to_string(),
                    environment_url: opt("environment_url"),
                    log_url: opt("log_url").or_else(|| opt("target_url")),
                    description: opt("description"),
                    created_at: now,
                };
                let repo = state.repos.get_mut(&full).unwrap();
                // GitHub's auto_inactive (default true): a new success status marks earlier
                // successful deployments of the same environment inactive, unless they are
                // transient or production environments.
                if st == "success" && body["auto_inactive"].as_bool() != Some(false) {
                    let env = repo.deployments[index].environment.clone();
                    let mut marked = Vec::new();
                    for (i, d) in repo.deployments.iter().enumerate() {
                        if i != index
                            && d.environment == env
                            && !d.transient_environment
                            && !d.production_environment
                            && d.statuses.last().is_some_and(|s| s.state == "success")
                        {
                            marked.push(i);
                        }
                    }
                    for i in marked {
                        state.next_id += 1;
                        let sid = state.next_id;
                        let repo = state.repos.get_mut(&full).unwrap();
                        let last = repo.deployments[i].statuses.last().unwrap();
                        let inactive = StoredDeploymentStatus {
                            id: sid,
                            state: "inactive".into(),
                            environment_url: last.environment_url.clone(),
                            log_url: last.log_url.clone(),
                            description: None,
                            created_at: now,
                        };
                        repo.deployments[i].statuses.push(inactive);
                    }
                }
                let repo = state.repos.get_mut(&full).unwrap();
                let d = &mut repo.deployments[index];
                d.statuses.push(status);
                let d = &repo.deployments[index];
                reply(
                    201,
                    deployment_status_json(&base, &full, d, d.statuses.last().unwrap()),
                )
            } else {
                let d = &state.repos[&full].deployments[index];
                let items: Vec<Value> = d
                    .statuses
                    .iter()
                    .rev()
                    .map(|s| deployment_status_json(&base, &full, d, s))
                    .collect();
                paginate(&base, path, &q, items)
            }
        }

        ["statuses", sha] => {
            let body = match parse_body(body) {
                Ok(b) => b,
                Err(r) => return Some(r),
            };
            let valid = ["error", "failure", "pending", "success"];
            let Some(st) = body["state"].as_str().filter(|s| valid.contains(s)) else {
                return Some(validation_failed("Status", "state", "invalid"));
            };
            let id = state.next_id();
            let status = StoredStatus {
                id,
                sha: sha.to_string(),
                status: CommitStatus {
                    state: st.to_string(),
                    context: body["context"].as_str().unwrap_or("default").to_string(),
                    description: body["description"].as_str().map(str::to_string),
                    target_url: body["target_url"].as_str().map(str::to_string),
                },
                created_at: now,
            };
            let j = status_json(&base, &full, &status);
            state.repos.get_mut(&full).unwrap().statuses.push(status);
            reply(201, j)
        }

        ["check-runs"] | ["check-runs", _] => {
            let body = match parse_body(body) {
                Ok(b) => b,
                Err(r) => return Some(r),
            };
            let checks = &mut state.repos.get_mut(&full).unwrap().check_runs;
            let index = match rest {
                ["check-runs", id] => {
                    let Some(index) = checks.iter().position(|c| id.parse() == Ok(c.id)) else {
                        return Some(not_found());
                    };
                    index
                }
                _ => {
                    let (Some(name), Some(sha)) =
                        (body["name"].as_str(), body["head_sha"].as_str())
                    else {
                        return Some(validation_failed("CheckRun", "name", "missing"));
                    };
                    let id = 90_000 + checks.len() as u64;
                    checks.push(CheckRun {
                        id,
                        name: name.to_string(),
                        head_sha: sha.to_string(),
                        status: "queued".into(),
                        conclusion: None,
                        title: None,
                        summary: None,
                        text: None,
                        annotations: vec![],
                        writes: 0,
                    });
                    checks.len() - 1
                }
            };
            let check = &mut checks[index];
            if let Some(status) = body["status"].as_str() {
                if !["queued", "in_progress", "completed"].contains(&status) {
                    return Some(validation_failed("CheckRun", "status", "invalid"));
                }
                check.status = status.to_string();
            }
            if let Some(conclusion) = body["conclusion"].as_str() {
                check.conclusion = Some(conclusion.to_string());
                check.status = "completed".into();
            }
            let output = &body["output"];
            if output.is_object() {
                check.title = output["title"].as_str().map(str::to_string);
                check.summary = output["summary"].as_str().map(str::to_string);
                check.text = output["text"].as_str().map(str::to_string);
                if let Some(annotations) = output["annotations"].as_array() {
                    if annotations.len() > 50 {
                        return Some(validation_failed("CheckRun", "annotations", "too many"));
                    }
                    check.annotations.extend(annotations.iter().cloned());
                }
            }
            check.writes += 1;
            let j = json!({ "id": check.id, "name": check.name, "head_sha": check.head_sha, "status": check.status, "conclusion": check.conclusion });
            reply(if rest.len() == 1 { 201 } else { 200 }, j)
        }

        ["commits", git_ref, "statuses"] => {
            let sha = resolve_ref(state, &full, git_ref);
            let items: Vec<Value> = state.repos[&full]
                .statuses
                .iter()
                .rev()
                .filter(|s| s.sha == sha)
                .map(|s| status_json(&base, &full, s))
                .collect();
            paginate(&base, path, &q, items)
        }

        _ => return None,
    };
    Some(r)
}

/// A ref as GitHub would resolve it: a SHA stays, a branch name is the head of an open pull
/// request with that head ref in this repo, anything else is kept as it is.
fn resolve_ref(state: &State, full: &str, git_ref: &str) -> String {
    if git_ref.len() == 40 && git_ref.chars().all(|c| c.is_ascii_hexdigit()) {
        return git_ref.to_string();
    }
    let short = git_ref.trim_start_matches("refs/heads/");
    state.repos[full]
        .pulls
        .values()
        .find(|p| p.spec.head_ref == short && p.spec.head_repo == full)
        .map(|p| p.spec.head_sha.clone())
        .unwrap_or_else(|| git_ref.to_string())
}

fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) if v.is_object() => Ok(v),
        _ => Err(error(400, "Problems parsing JSON")),
    }
}

fn paginate(base: &str, path: &str, q: &BTreeMap<String, String>, items: Vec<Value>) -> Reply {
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = q
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let link_to = |p: usize| {
        let mut params: Vec<String> = q
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "per_page")
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        params.push(format!("per_page={per_page}"));
        params.push(format!("page={p}"));
        format!("<{base}{path}?{}>", params.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", link_to(page + 1)));
        links.push(format!("{}; rel=\"last\"", link_to(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", link_to(page - 1)));
        links.push(format!("{}; rel=\"first\"", link_to(1)));
    }
    let mut r = reply(200, Value::Array(slice));
    if !links.is_empty() {
        r.headers.push(("link".into(), links.join(", ")));
    }
    r
}

// ---------------------------------------------------------------------------------------------
// JSON shapes (complete enough for octocrab's typed models)

fn user_id(login: &str) -> u64 {
    // FNV-1a: a stable id per login.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in login.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    1_000_000 + h % 90_000_000
}

fn path_login(login: &str) -> String {
    login.replace('[', "%5B").replace(']', "%5D")
}

fn user_json(base: &str, login: &str) -> Value {
    let id = user_id(login);
    let p = path_login(login);
    let kind = if login.ends_with("[bot]") {
        "Bot"
    } else {
        "User"
    };
    json!({
        "login": login,
        "id": id,
        "node_id": format!("MDQ6VXNlcj{id}"),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{id}?v=4"),
        "gravatar_id": "",
        "url": format!("{base}/users/{p}"),
        "html_url": format!("https://github.com/{p}"),
        "followers_url": format!("{base}/users/{p}/followers"),
        "following_url": format!("{base}/users/{p}/following{{/other_user}}"),
        "gists_url": format!("{base}/users/{p}/gists{{/gist_id}}"),
        "starred_url": format!("{base}/users/{p}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{base}/users/{p}/subscriptions"),
        "organizations_url": format!("{base}/users/{p}/orgs"),
        "repos_url": format!("{base}/users/{p}/repos"),
        "events_url": format!("{base}/users/{p}/events{{/privacy}}"),
        "received_events_url": format!("{base}/users/{p}/received_events"),
        "type": kind,
        "user_view_type": "public",
        "site_admin": false,
    })
}

fn repo_json(state: &State, full: &str) -> Value {
    let base = &state.url;
    let (owner, name) = full.split_once('/').unwrap_or((full, full));
    let id = state
        .repos
        .get(full)
        .map(|r| r.id)
        .unwrap_or_else(|| user_id(full));
    json!({
        "id": id,
        "node_id": format!("R_kgDO{id}"),
        "name": name,
        "full_name": full,
        "owner": user_json(base, owner),
        "private": false,
        "html_url": format!("https://github.com/{full}"),
        "description": null,
        "fork": !state.repos.contains_key(full),
        "url": format!("{base}/repos/{full}"),
        "pulls_url": format!("{base}/repos/{full}/pulls{{/number}}"),
        "statuses_url": format!("{base}/repos/{full}/statuses/{{sha}}"),
        "deployments_url": format!("{base}/repos/{full}/deployments"),
        "git_url": format!("git://github.com/{full}.git"),
        "ssh_url": format!("git@github.com:{full}.git"),
        "clone_url": state.clone_url(full),
        "default_branch": "main",
        "visibility": "public",
        "archived": false,
        "disabled": false,
    })
}

fn label_json(base: &str, full: &str, name: &str) -> Value {
    let id = user_id(&format!("{full}#{name}"));
    json!({
        "id": id,
        "node_id": format!("LA_kwDO{id}"),
        "url": format!("{base}/repos/{full}/labels/{}", encode(name)),
        "name": name,
        "color": "ededed",
        "default": false,
        "description": null,
    })
}

fn pull_json(state: &State, full: &str, p: &StoredPull, detailed: bool) -> Value {
    let base = &state.url;
    let s = &p.spec;
    let n = s.number;
    let head_owner = s.head_repo.split('/').next().unwrap_or_default();
    let base_owner = full.split('/').next().unwrap_or_default();
    let repo_id = state.repos.get(full).map(|r| r.id).unwrap_or(1);
    let id = repo_id * 100_000 + n;
    let association = match state
        .repos
        .get(full)
        .and_then(|r| r.permissions.get(&s.author))
    {
        Some(p) if p != "none" => "COLLABORATOR",
        _ => "CONTRIBUTOR",
    };
    let mut j = json!({
        "url": format!("{base}/repos/{full}/pulls/{n}"),
        "id": id,
        "node_id": format!("PR_kwDO{id}"),
        "html_url": format!("https://github.com/{full}/pull/{n}"),
        "diff_url": format!("https://github.com/{full}/pull/{n}.diff"),
        "patch_url": format!("https://github.com/{full}/pull/{n}.patch"),
        "issue_url": format!("{base}/repos/{full}/issues/{n}"),
        "commits_url": format!("{base}/repos/{full}/pulls/{n}/commits"),
        "review_comments_url": format!("{base}/repos/{full}/pulls/{n}/comments"),
        "review_comment_url": format!("{base}/repos/{full}/pulls/comments{{/number}}"),
        "comments_url": format!("{base}/repos/{full}/issues/{n}/comments"),
        "statuses_url": format!("{base}/repos/{full}/statuses/{}", s.head_sha),
        "number": n,
        "state": s.state,
        "locked": false,
        "title": format!("PR #{n}: {}", s.head_ref),
        "user": user_json(base, &s.author),
        "body": null,
        "labels": s.labels.iter().map(|l| label_json(base, full, l)).collect::<Vec<_>>(),
        "milestone": null,
        "active_lock_reason": null,
        "created_at": rfc3339(p.created_at),
        "updated_at": rfc3339(p.updated_at),
        "closed_at": if s.state == "closed" { json!(rfc3339(p.updated_at)) } else { Value::Null },
        "merged_at": null,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": {
            "label": format!("{head_owner}:{}", s.head_ref),
            "ref": s.head_ref,
            "sha": s.head_sha,
            "user": user_json(base, head_owner),
            "repo": repo_json(state, &s.head_repo),
        },
        "base": {
            "label": format!("{base_owner}:main"),
            "ref": "main",
            "sha": BASE_SHA,
            "user": user_json(base, base_owner),
            "repo": repo_json(state, full),
        },
        "author_association": association,
        "auto_merge": null,
        "draft": s.draft,
    });
    if detailed {
        let extra = json!({
            "merged": false,
            "mergeable": true,
            "rebaseable": true,
            "mergeable_state": if s.draft { "draft" } else { "clean" },
            "merged_by": null,
            "comments": state.repos.get(full).map(|r| r.comments.iter().filter(|c| c.number == n).count()).unwrap_or(0),
            "review_comments": 0,
            "maintainer_can_modify": false,
            "commits": 1,
            "additions": 1,
            "deletions": 0,
            "changed_files": 1,
        });
        for (k, v) in extra.as_object().unwrap() {
            j[k] = v.clone();
        }
    }
    j
}

fn comment_json(state: &State, full: &str, c: &StoredComment) -> Value {
    let base = &state.url;
    let association = if c.user == BOT_LOGIN {
        "NONE"
    } else {
        match state
            .repos
            .get(full)
            .and_then(|r| r.permissions.get(&c.user))
        {
            Some(p) if p != "none" => "COLLABORATOR",
            _ => "NONE",
        }
    };
    json!({
        "url": format!("{base}/repos/{full}/issues/comments/{}", c.id),
        "html_url": format!("https://github.com/{full}/pull/{}#issuecomment-{}", c.number, c.id),
        "issue_url": format!("{base}/repos/{full}/issues/{}", c.number),
        "id": c.id,
        "node_id": format!("IC_kwDO{}", c.id),
        "user": user_json(base, &c.user),
        "created_at": rfc3339(c.created_at),
        "updated_at": rfc3339(c.updated_at),
        "author_association": association,
        "body": c.body,
        "reactions": {
            "url": format!("{base}/repos/{full}/issues/comments/{}/reactions", c.id),
            "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0,
            "confused": 0, "heart": 0, "rocket": 0, "eyes": 0,
        },
        "performed_via_github_app": null,
    })
}

fn deployment_json(base: &str, full: &str, d: &StoredDeployment) -> Value {
    json!({
        "url": format!("{base}/repos/{full}/deployments/{}", d.id),
        "id": d.id,
        "node_id": format!("DE_kwDO{}", d.id),
        "sha": d.sha,
        "ref": d.git_ref,
        "task": d.task,
        "payload": d.payload,
        "original_environment": d.environment,
        "environment": d.environment,
        "description": d.description,
        "creator": user_json(base, BOT_LOGIN),
        "created_at": rfc3339(d.created_at),
        "updated_at": rfc3339(d.statuses.last().map(|s| s.created_at).unwrap_or(d.created_at)),
        "statuses_url": format!("{base}/repos/{full}/deployments/{}/statuses", d.id),
        "repository_url": format!("{base}/repos/{full}"),
        "transient_environment": d.transient_environment,
        "production_environment": d.production_environment,
        "performed_via_github_app": null,
    })
}

fn deployment_status_json(
    base: &str,
    full: &str,
    d: &StoredDeployment,
    s: &StoredDeploymentStatus,
) -> Value {
    json!({
        "url": format!("{base}/repos/{full}/deployments/{}/statuses/{}", d.id, s.id),
        "id": s.id,
        "node_id": format!("DES_kwDO{}", s.id),
        "state": s.state,
        "creator": user_json(base, BOT_LOGIN),
        "description": s.description.clone().unwrap_or_default(),
        "environment": d.environment,
        "target_url": s.log_url.clone().unwrap_or_default(),
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.created_at),
        "deployment_url": format!("{base}/repos/{full}/deployments/{}", d.id),
        "repository_url": format!("{base}/repos/{full}"),
        "environment_url": s.environment_url.clone().unwrap_or_default(),
        "log_url": s.log_url.clone().unwrap_or_default(),
        "performed_via_github_app": null,
    })
}

fn status_json(base: &str, full: &str, s: &StoredStatus) -> Value {
    json!({
        "url": format!("{base}/repos/{full}/statuses/{}", s.sha),
        "avatar_url": "https://avatars.githubusercontent.com/u/1?v=4",
        "id": s.id,
        "node_id": format!("SC_kwDO{}", s.id),
        "state": s.status.state,
        "description": s.status.description,
        "target_url": s.status.target_url,
        "context": s.status.context,
        "created_at": rfc3339(s.created_at),
        "updated_at": rfc3339(s.created_at),
        "creator": user_json(base, BOT_LOGIN),
    })
}

fn installation_json(base: &str, owner: &str) -> Value {
    let account = user_json(base, owner);
    json!({
        "id": 1,
        "account": account,
        "access_tokens_url": format!("{base}/app/installations/1/access_tokens"),
        "repositories_url": format!("{base}/installation/repositories"),
        "html_url": format!("https://github.com/settings/installations/1"),
        "app_id": 1,
        "app_slug": "slipway",
        "target_id": user_id(owner),
        "target_type": "User",
        "permissions": {
            "contents": "read", "deployments": "write", "issues": "write",
            "metadata": "read", "pull_requests": "write", "statuses": "write",
        },
        "events": ["issue_comment", "pull_request"],
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "single_file_name": null,
        "repository_selection": "selected",
        "suspended_at": null,
        "suspended_by": null,
    })
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// A plain HTTP/1.1 client (std only)

/// A response from [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one HTTP/1.1 request (`Connection: close`); adds Host and Content-Length itself.
pub fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size_text = String::from_utf8_lossy(&rest[..pos]);
            let size =
                usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let start = pos + 2;
            let end = (start + size).min(rest.len());
            decoded.extend_from_slice(&rest[start..end]);
            rest = rest.get(end + 2..).unwrap_or_default();
        }
        body = decoded;
    }
    HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks

/// `sha256=<hex HMAC-SHA256 of body>`, as GitHub puts in `X-Hub-Signature-256`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Same as [`signature`].
pub fn sign_body(secret: &str, body: &[u8]) -> String {
    signature(secret, body)
}

fn webhook_url(server_url: &str) -> String {
    format!("{}/webhooks/github", server_url.trim_end_matches('/'))
}

/// POSTs a signed webhook delivery to `{server_url}/webhooks/github`; returns (status, body).
pub fn send_webhook(
    server_url: &str,
    secret: &str,
    event: &str,
    delivery_id: &str,
    payload: &Value,
) -> (u16, String) {
    let body = serde_json::to_vec(payload).unwrap();
    let sig = signature(secret, &body);
    send_raw(
        server_url,
        &[
            ("X-GitHub-Event", event),
            ("X-GitHub-Delivery", delivery_id),
            ("X-Hub-Signature-256", &sig),
            ("Content-Type", "application/json"),
            ("User-Agent", "GitHub-Hookshot/test"),
        ],
        &body,
    )
}

/// POSTs `body` to `{server_url}/webhooks/github` with exactly `headers` (plus Host,
/// Content-Length and Connection); for negative tests. Returns (status, body).
pub fn send_raw(server_url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let r = http_request("POST", &webhook_url(server_url), headers, body);
    (r.status, r.body)
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/github-webhooks/"
);

/// A webhook example from `shared/fixtures/github-webhooks/<path>`.
pub fn fixture(path: &str) -> Value {
    let full = format!("{FIXTURES}{path}");
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
}

fn set_repository(v: &mut Value, full_name: &str, clone_url: Option<&str>) {
    let (owner, name) = full_name.split_once('/').expect("owner/name");
    v["full_name"] = json!(full_name);
    v["name"] = json!(name);
    v["owner"]["login"] = json!(owner);
    v["html_url"] = json!(format!("https://github.com/{full_name}"));
    if let Some(url) = clone_url {
        v["clone_url"] = json!(url);
    }
}

/// A `pull_request` event payload from the real example for `action` (or `opened` with the
/// action replaced when there is no example for it), pointed at the given repo and head.
/// `pull_request.user.login` is set to `sender` too.
#[allow(clippy::too_many_arguments)]
pub fn pull_request_payload(
    action: &str,
    repo_full_name: &str,
    clone_url: &str,
    number: u64,
    head_sha: &str,
    head_ref: &str,
    head_repo_full_name: &str,
    sender: &str,
) -> Value {
    let path = format!("pull_request/{action}.payload.json");
    let mut v = if std::path::Path::new(&format!("{FIXTURES}{path}")).exists() {
        fixture(&path)
    } else {
        fixture("pull_request/opened.payload.json")
    };
    v["action"] = json!(action);
    v["number"] = json!(number);
    if v.get("after").is_some() {
        v["after"] = json!(head_sha);
    }
    set_repository(&mut v["repository"], repo_full_name, Some(clone_url));
    let pr = &mut v["pull_request"];
    pr["number"] = json!(number);
    pr["draft"] = json!(false);
    pr["state"] = json!(if action == "closed" { "closed" } else { "open" });
    pr["labels"] = json!([]);
    pr["user"]["login"] = json!(sender);
    pr["html_url"] = json!(format!("https://github.com/{repo_full_name}/pull/{number}"));
    let head_owner = head_repo_full_name.split('/').next().unwrap_or_default();
    pr["head"]["sha"] = json!(head_sha);
    pr["head"]["ref"] = json!(head_ref);
    pr["head"]["label"] = json!(format!("{head_owner}:{head_ref}"));
    let head_clone = if head_repo_full_name == repo_full_name {
        clone_url.to_string()
    } else {
        format!("https://github.com/{head_repo_full_name}.git")
    };
    set_repository(
        &mut pr["head"]["repo"],
        head_repo_full_name,
        Some(&head_clone),
    );
    pr["head"]["repo"]["fork"] = json!(head_repo_full_name != repo_full_name);
    set_repository(&mut pr["base"]["repo"], repo_full_name, Some(clone_url));
    v["sender"]["login"] = json!(sender);
    v
}

/// An `issue_comment` `created` payload: `commenter` wrote `body` on pull request `number`.
pub fn issue_comment_payload(
    repo_full_name: &str,
    number: u64,
    body: &str,
    commenter: &str,
) -> Value {
    static COMMENT_ID: AtomicU64 = AtomicU64::new(900_000_000);
    let id = COMMENT_ID.fetch_add(1, Ordering::Relaxed);
    let mut v = fixture("issue_comment/created.payload.json");
    set_repository(&mut v["repository"], repo_full_name, None);
    let web = format!("https://github.com/{repo_full_name}/pull/{number}");
    let api = format!("https://api.github.com/repos/{repo_full_name}/pulls/{number}");
    let issue = &mut v["issue"];
    issue["number"] = json!(number);
    issue["html_url"] = json!(web);
    issue["state"] = json!("open");
    issue["pull_request"] = json!({
        "url": api,
        "html_url": web,
        "diff_url": format!("{web}.diff"),
        "patch_url": format!("{web}.patch"),
        "merged_at": null,
    });
    let comment = &mut v["comment"];
    comment["id"] = json!(id);
    comment["body"] = json!(body);
    comment["user"]["login"] = json!(commenter);
    comment["html_url"] = json!(format!("{web}#issuecomment-{id}"));
    v["sender"]["login"] = json!(commenter);
    v
}
