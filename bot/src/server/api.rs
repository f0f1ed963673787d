//! The HTTP API (`/api/v1/...`) that the CLI and other tools use. Every handler validates,
//! calls the engine (which records intent and nudges the reconciler) and answers at once.
//! Errors are JSON `{"error": "..."}` with a status code a client can branch on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use envmgr::engine::EngineError;
use envmgr::names::{EnvName, ServiceName};
use envmgr::runtime::{LogOptions, RuntimeError};
use envmgr::store::StoreError;
use futures_util::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::access::{Caller, Surface};
use crate::app::App;
use crate::commands::{Command, CommandKind};
use crate::executor::{self, CommandError, Invocation, Outcome};

/// The handlers' state: the application context.
type AppState = Arc<App>;

pub fn router(state: Arc<App>, access: Access) -> Router {
    let api = Router::new()
        .route("/envs", get(list_envs).post(env_up))
        .route("/envs/{env}", get(env_status).delete(env_down))
        .route("/envs/{env}/events", get(env_events))
        .route("/envs/{env}/extend", post(env_extend))
        .route("/envs/{env}/logs", get(env_logs))
        .route("/envs/{env}/runs", get(list_runs).post(start_run))
        .route("/envs/{env}/runs/{id}", get(get_run))
        .route("/envs/{env}/runs/{id}/log", get(run_log))
        .route("/repos", get(list_repos))
        .route("/rollouts/{id}", get(get_rollout))
        .route("/rollouts/{id}/chart.png", get(rollout_chart))
        .route("/audit", get(audit_log))
        .route("/commands", post(run_command))
        .route_layer(middleware::from_fn_with_state(access, require_access));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .nest("/api/v1", api)
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API lives under /api/v1".into(),
            )
        })
        .with_state(state)
}

/// The one mapping of every rejection to the API's error shape. axum's extractors (Json,
/// Path, Query, Bytes, the body limit) and its router (405) answer in plain text, and a
/// JSON body that does not fit its type with 422: this layer, around every route including
/// the webhooks, turns any error answer that is not already JSON into `{"error": "..."}`
/// with the same status, except 422, which becomes 400 (a bad body is a bad request here).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json && status != StatusCode::UNPROCESSABLE_ENTITY {
        return response;
    }
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    let (parts, body) = response.into_parts();
    // Rejection texts are short; anything larger is not one of them.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_string();
    let message = if is_json {
        serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or(text)
    } else if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                "this endpoint does not accept that method; see the HTTP API in the README".into()
            }
            StatusCode::NOT_FOUND => "no such endpoint; the API lives under /api/v1".into(),
            other => other
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase(),
        }
    } else {
        text
    };
    let mut answer = ApiError(status, message).into_response();
    // Keep `Allow` (405) and `WWW-Authenticate`-style headers the rejection carried.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// Who may call the API (and read `/metrics`): whoever sends the configured bearer token;
/// without one, callers on loopback only. The config refuses to listen beyond loopback
/// without a token, so the peer check is the second line of defence, not the first.
#[derive(Clone)]
pub struct Access {
    token: Option<Arc<SecretString>>,
}

impl Access {
    pub fn new(token: Option<SecretString>) -> Self {
        Self {
            token: token.map(Arc::new),
        }
    }

    /// The decision for one request: its `Authorization` header and the peer's address
    /// (`None` when unknown, which is refused unless the token is given).
    fn check(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<(), ApiError> {
        match &self.token {
            Some(expected) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default();
                // Constant time, so the answer's timing says nothing about the token.
                let ok: bool = given
                    .as_bytes()
                    .ct_eq(expected.expose_secret().as_bytes())
                    .into();
                if ok {
                    Ok(())
                } else {
                    Err(ApiError(
                        StatusCode::UNAUTHORIZED,
                        "missing or wrong API token: send `Authorization: Bearer <api_token>` \
                         (the CLI reads it from SLIPWAY_TOKEN)"
                            .into(),
                    ))
                }
            }
            None if peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) => Ok(()),
            None => Err(ApiError(
                StatusCode::FORBIDDEN,
                "without an api_token only callers on this machine (loopback) may use the API; \
                 set api_token (or SLIPWAY_API_TOKEN) to let others in with it"
                    .into(),
            )),
        }
    }
}

/// The [`Access`] check as a route layer.
pub async fn require_access(
    State(access): State<Access>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    match access.check(request.headers(), peer) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            let mut answer = refusal.into_response();
            if answer.status() == StatusCode::UNAUTHORIZED {
                answer.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            answer
        }
    }
}

/// Who is asking, for the audit trail: the CLI sends the local user name.
fn actor(headers: &HeaderMap) -> String {
    let user = headers
        .get("x-slipway-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous");
    let user: String = user
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-@".contains(*c))
        .take(64)
        .collect();
    format!("api:{user}")
}

/// A command from the API: the CLI names its user in `x-slipway-user`; other clients count
/// as the API. Everyone holding the token has `api_token_role`.
fn invocation(app: &App, headers: &HeaderMap) -> Invocation {
    let surface = if headers.contains_key("x-slipway-user") {
        Surface::Cli
    } else {
        Surface::Api
    };
    Invocation {
        caller: Caller::api(surface, &actor(headers)),
        role: app.policy.role_for_api_token(),
        place: "api".into(),
        prefix: CLI_PREFIX,
        default_repo: None,
        default_env: None,
        default_pull: None,
    }
}

/// How commands are written in hints and help given through the API: the CLI's way.
const CLI_PREFIX: &str = "slipway ";

/// Runs a command through the shared executor (role check, audit log).
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    command: Command,
) -> Result<Outcome, ApiError> {
    executor::run(state, &invocation(state, headers), command)
        .await
        .map_err(ApiError::from)
}

/// Reads (polling a status, streaming logs) are not commands and are not audited, but the
/// token's role must still allow them.
fn allow_read(app: &App, kind: CommandKind) -> Result<(), ApiError> {
    let policy = &app.policy;
    policy
        .check(policy.role_for_api_token(), kind)
        .map_err(|refusal| ApiError(StatusCode::FORBIDDEN, refusal.to_string()))
}

/// `POST /api/v1/commands`: any command of the grammar, as one line of text, as words (what
/// the CLI sends), or as a name with named options (like a Discord slash command).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    command: Option<String>,
    args: Option<Vec<String>>,
    name: Option<String>,
    #[serde(default)]
    options: serde_json::Map<String, serde_json::Value>,
}

async fn run_command(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CommandBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let parsed = match (body.command, body.args, body.name) {
        (Some(line), None, None) if body.options.is_empty() => Command::parse_line(&line),
        (None, Some(args), None) if body.options.is_empty() => Command::from_cli_args(&args),
        (None, None, Some(name)) => {
            let mut options = Vec::new();
            for (key, value) in &body.options {
                let value = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ApiError(
                            StatusCode::BAD_REQUEST,
                            format!("option `{key}` must be a string, a number or a boolean"),
                        ))
                    }
                };
                options.push((key.clone(), value));
            }
            let pairs: Vec<(&str, &str)> = options
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            Command::from_options(&name, &pairs)
        }
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "send one of {\"command\": \"env up feature-x\"}, {\"args\": [\"env\", \"up\", \"feature-x\"]} \
                 or {\"name\": \"env up\", \"options\": {\"branch\": \"feature-x\"}}"
                    .into(),
            ))
        }
    };
    let invocation = invocation(&state, &headers);
    let command = match parsed {
        Ok(command) => command,
        Err(e) => {
            executor::record_unparsed(
                state.engine.store(),
                &invocation.caller,
                &invocation.place,
                &e,
            )
            .await;
            let body = json!({ "error": e.to_string(), "help": e.reply_for(CLI_PREFIX) });
            return Ok((StatusCode::BAD_REQUEST, Json(body)).into_response());
        }
    };
    let canonical = command.to_string();
    let outcome = executor::run(&state, &invocation, command)
        .await
        .map_err(ApiError::from)?;
    let status = match outcome {
        Outcome::EnvUp { .. } | Outcome::EnvDown { .. } | Outcome::Test { .. } => {
            StatusCode::ACCEPTED
        }
        _ => StatusCode::OK,
    };
    Ok((
        status,
        Json(json!({ "command": canonical, "outcome": outcome })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpBody {
    repo: Option<String>,
    branch: String,
    /// humantime, e.g. "2h".
    ttl: Option<String>,
}

async fn env_up(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<UpBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let ttl = body.ttl.as_deref().map(parse_duration).transpose()?;
    let command = Command::EnvUp {
        branch: Some(body.branch),
        repo: body.repo,
        ttl,
    };
    match execute(&state, &headers, command).await? {
        Outcome::EnvUp { env } => Ok((StatusCode::ACCEPTED, Json(env)).into_response()),
        other => Err(unexpected(other)),
    }
}

/// An env named in a path, checked as the engine checks names: a bad one is a 400.
fn env_name(text: &str) -> Result<EnvName, ApiError> {
    Ok(EnvName::parse(text).map_err(EngineError::from)?)
}

/// A duration in a JSON body, e.g. "2h".
fn parse_duration(text: &str) -> Result<std::time::Duration, ApiError> {
    humantime::parse_duration(text).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("{text:?} is not a duration: {e} (write it like 2h or 30m)"),
        )
    })
}

/// The executor answered a command with another command's outcome: a bug.
fn unexpected(outcome: Outcome) -> ApiError {
    tracing::error!(?outcome, "unexpected outcome");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: unexpected outcome".into(),
    )
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list_envs(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvList)?;
    Ok(Json(state.engine.list(q.all).await?).into_response())
}

async fn env_status(
    State(state): State<AppState>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvStatus)?;
    Ok(Json(state.engine.status(&env_name(&env)?).await?).into_response())
}

async fn env_down(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    match execute(&state, &headers, Command::EnvDown { env: Some(env) }).await? {
        Outcome::EnvDown { env } => Ok((StatusCode::ACCEPTED, Json(env)).into_response()),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtendBody {
    /// humantime, e.g. "2h".
    by: String,
}

async fn env_extend(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(env): Path<String>,
    body: Result<Json<ExtendBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body?;
    let command = Command::EnvExtend {
        env: Some(env),
        by: parse_duration(&body.by)?,
    };
    match execute(&state, &headers, command).await? {
        Outcome::EnvExtend { env } => Ok(Json(env).into_response()),
        other => Err(unexpected(other)),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: i64,
}

async fn env_events(
    State(state): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvStatus)?;
    let env = env_name(&env)?;
    Ok(Json(state.engine.events(&env, q.after).await?).into_response())
}

#[derive(Deserialize)]
struct LogsQuery {
    service: Option<String>,
    tail: Option<u64>,
    #[serde(default)]
    follow: bool,
}

/// Streams logs as plain text; with `follow` the response stays open.
async fn env_logs(
    State(state): State<AppState>,
    Path(env): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvLogs)?;
    let options = LogOptions {
        tail: q.tail,
        follow: q.follow,
    };
    let env = env_name(&env)?;
    let service = q
        .service
        .as_deref()
        .map(ServiceName::parse)
        .transpose()
        .map_err(EngineError::from)?;
    let stream = state.engine.logs(&env, service.as_ref(), options).await?;
    let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    failed_only: bool,
}

async fn start_run(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(env): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none (or only whitespace) means the defaults.
    let body: RunBody = if body.iter().all(u8::is_ascii_whitespace) {
        RunBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("bad request body: {e}; send {{\"failed_only\": true}} or nothing"),
            )
        })?
    };
    let command = Command::Test {
        env: Some(env),
        failed_only: body.failed_only,
    };
    match execute(&state, &headers, command).await? {
        Outcome::Test { run } => Ok((StatusCode::ACCEPTED, Json(run)).into_response()),
        other => Err(unexpected(other)),
    }
}

async fn list_runs(
    State(state): State<AppState>,
    Path(env): Path<String>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvStatus)?;
    Ok(Json(state.engine.runs(&env_name(&env)?, 50).await?).into_response())
}

async fn get_run(
    State(state): State<AppState>,
    Path((env, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvStatus)?;
    Ok(Json(state.engine.run(&env_name(&env)?, id).await?).into_response())
}

/// The full log of a run, decompressed and redacted as it is sent.
async fn run_log(
    State(state): State<AppState>,
    Path((env, id)): Path<(String, i64)>,
) -> Result<Response, ApiError> {
    allow_read(&state, CommandKind::EnvLogs)?;
    // Redacted by the engine as it is read, like the env's own logs.
    let stream = state.engine.run_log_stream(&env_name(&env)?, id).await?;
    let body = Body::from_stream(stream.map(|chunk| chunk.map_err(std::io::Error::other)));
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
}

/// A rollout and the view surfaces show of it.
async fn find_rollout(
    state: &App,
    id: i64,
) -> Result<(envmgr::rollout::Rollout, &envmgr::RepoSettings), ApiError> {
    allow_read(state, CommandKind::RolloutStatus)?;
    let rollout = state
        .engine
        .store()
        .rollout(id)
        .await
        .map_err(EngineError::from)?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no rollout {id}")))?;
    let repo = state.engine.settings().repo(&rollout.repo).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "rollout {id} is of repo `{}`, no longer configured",
                rollout.repo
            ),
        )
    })?;
    Ok((rollout, repo))
}

/// `GET /api/v1/rollouts/<id>`: what `rollout status --json` shows of it.
async fn get_rollout(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (rollout, repo) = find_rollout(&state, id).await?;
    Ok(Json(crate::rollout::view(&state, repo, &rollout)).into_response())
}

/// `GET /api/v1/rollouts/<id>/chart.png`: both versions' error rate and p99 latency.
async fn rollout_chart(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Response, ApiError> {
    let (rollout, _) = find_rollout(&state, id).await?;
    let png = crate::rollout::chart::chart_png(state.engine.store(), &rollout)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        png,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// At most this many entries (default 100, at most 1000).
    limit: Option<i64>,
    /// Only entries with a larger id (newer).
    after: Option<i64>,
    /// Only entries with a smaller id (older): the next page back.
    before: Option<i64>,
}

/// The audit log, newest first.
async fn audit_log(
    State(state): State<AppState>,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let store = state.engine.store();
    let entries = match q.before {
        Some(before) => store.audit_entries_before(limit, before).await,
        None => store.audit_entries(limit, q.after.unwrap_or(0)).await,
    }
    .map_err(EngineError::from)?;
    Ok(Json(entries).into_response())
}

async fn list_repos(State(state): State<AppState>) -> Response {
    let repos: Vec<_> = state
        .engine
        .settings()
        .repos
        .iter()
        .map(|r| json!({"name": r.name, "env_file": r.env_file, "default_ttl": humantime::format_duration(r.default_ttl).to_string()}))
        .collect();
    Json(repos).into_response()
}

pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    /// Keeps the rejection's own status (413 too large, 415 not JSON), but a body that is
    /// JSON of the wrong shape is a 400 like any other bad request, not axum's 422.
    fn from(e: JsonRejection) -> Self {
        let status = match e.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            other => other,
        };
        ApiError(status, format!("bad request body: {}", e.body_text()))
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Refused(_) => ApiError(StatusCode::FORBIDDEN, e.to_string()),
            CommandError::Missing { .. } | CommandError::NotHere(_) => {
                ApiError(StatusCode::BAD_REQUEST, e.to_string())
            }
            CommandError::Engine(e) => e.into(),
            CommandError::Failed(e) => {
                tracing::error!(error = %format!("{e:#}"), "command failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::UnknownRepo { .. }
            | EngineError::InvalidName(_)
            | EngineError::TtlTooLong(_) => StatusCode::BAD_REQUEST,
            EngineError::NotFound(_) | EngineError::NoSuchRun(_) | EngineError::NoLog(_) => {
                StatusCode::NOT_FOUND
            }
            EngineError::Deleted(_) => StatusCode::GONE,
            EngineError::Runtime(RuntimeError::NoSuchService(_)) => StatusCode::NOT_FOUND,
            EngineError::Runtime(RuntimeError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Store(StoreError::Database(_)) => StatusCode::SERVICE_UNAVAILABLE,
            EngineError::Store(StoreError::NameTaken { .. }) => StatusCode::CONFLICT,
            // The request is fine; the installation is full until someone makes room.
            EngineError::QuotaExceeded(_) => StatusCode::CONFLICT,
            // The env is fine; what was asked does not apply to a shared env (or not yet).
            EngineError::SharedEnv { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        ApiError(status, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> Option<SocketAddr> {
        Some(addr.parse().unwrap())
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn without_a_token_only_loopback_callers_get_in() {
        let open = Access::new(None);
        let none = HeaderMap::new();
        for local in [
            "127.0.0.1:5000",
            "127.8.9.10:1",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(open.check(&none, peer(local)).is_ok(), "{local}");
        }
        for remote in [
            "10.0.0.5:5000",
            "192.168.1.2:80",
            "[2001:db8::1]:443",
            "[::ffff:10.0.0.1]:80",
        ] {
            let Err(ApiError(status, message)) = open.check(&none, peer(remote)) else {
                panic!("{remote} got in");
            };
            assert_eq!(status, StatusCode::FORBIDDEN, "{remote}");
            assert!(message.contains("api_token"), "{message}");
        }
        // An unknown peer is not trusted.
        assert!(open.check(&none, None).is_err());
    }

    #[test]
    fn with_a_token_everyone_needs_it_and_nobody_else_matters() {
        let guarded = Access::new(Some(SecretString::from("0123456789abcdef-token")));
        for from in [peer("127.0.0.1:1"), peer("10.0.0.5:5000"), None] {
            assert!(guarded
                .check(&bearer("0123456789abcdef-token"), from)
                .is_ok());
            for headers in [
                HeaderMap::new(),
                bearer("0123456789abcdef-toke"),
                bearer("wrong"),
                bearer(""),
            ] {
                let Err(ApiError(status, message)) = guarded.check(&headers, from) else {
                    panic!("{headers:?} from {from:?} got in");
                };
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(message.contains("Authorization: Bearer"), "{message}");
            }
        }
    }
}
