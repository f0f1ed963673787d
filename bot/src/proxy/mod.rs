//! The front door: one HTTP reverse proxy in `slipway serve` for every env's web services.
//! `<env>.<domain>` reaches the env's main service, `<service>--<env>.<domain>` another one
//! (see `routing`). HTTP/1.1 and HTTP/2 (cleartext) in, HTTP/1.1 to the service over a
//! pooled client; bodies stream both ways; WebSocket (HTTP/1.1 upgrade) connections are
//! joined and copied both ways. A request to an env that is not serving yet wakes it and
//! waits for Ready (browsers get a "waking up" page after 2 s instead); a failed env answers
//! 503 with its reason and logs link, an unknown name 404 with the envs that exist.
//!
//! While a rollout runs in a release env, its requests are split between the release env's
//! service (stable) and the same service in the canary env (`split`), every request not
//! forcing a version is measured per version for the analysis (`measure`), and the answer
//! says which version served it (`X-Slipway-Version`).

mod measure;
mod metrics;
mod pages;
pub mod routing;
pub mod split;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use envmgr::controller::ControllerSettings;
use envmgr::names::EnvName;
use envmgr::rollout;
use envmgr::settings::FrontDoor;
use envmgr::store::{now_ms, EnvRecord, Phase};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tracing::{debug, warn};

use measure::Outcome;
pub use measure::TrafficMeter;
pub use metrics::ProxyMetrics;
use routing::{parse_host, EnvRoute, RouteCache, Target, Upstream};
use split::{Choice, SplitEntry, Splits};

use crate::app::App;
use crate::config::ProxyConfig;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// How long a browser waits for a starting env before it gets the "waking up" page.
const BROWSER_WAIT: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, hyper::Error>;

/// `[proxy]`, checked.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Lowercase, without dots at either end.
    pub domain: String,
    /// Scheme, host and port of env links, from `proxy_url`; `None`: `http://<domain>` on the
    /// port the front door really listens on.
    link_base: Option<(String, String, Option<u16>)>,
}

impl ProxySettings {
    pub fn from_config(config: Option<&ProxyConfig>) -> anyhow::Result<Self> {
        let empty = ProxyConfig::default();
        let config = config.unwrap_or(&empty);
        let listen = config
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8081)));
        let domain = config
            .domain
            .as_deref()
            .unwrap_or("localhost")
            .trim()
            .trim_matches('.')
            .to_ascii_lowercase();
        if domain.is_empty() || domain.contains([':', '/', ' ']) {
            bail!("[proxy] domain `{domain}` must be a DNS name such as preview.example.com");
        }
        let mut settings = Self {
            listen,
            domain,
            link_base: None,
        };
        if let Some(url) = &config.proxy_url {
            let (scheme, rest) = url.trim().split_once("://").with_context(|| {
                format!("[proxy] proxy_url `{url}` must look like http://preview.example.com")
            })?;
            let authority = rest.trim_end_matches('/');
            if !matches!(scheme, "http" | "https")
                || authority.is_empty()
                || authority.contains('/')
            {
                bail!("[proxy] proxy_url `{url}` must be scheme://host[:port] (http or https), with no path");
            }
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    Some(port.parse::<u16>().with_context(|| {
                        format!("[proxy] proxy_url `{url}`: port `{port}` is not a number")
                    })?),
                ),
                None => (authority, None),
            };
            settings.link_base = Some((scheme.to_string(), host.to_string(), port));
        }
        Ok(settings)
    }

    /// The settings once the front door is bound at `addr` (`listen` may say port 0): links
    /// without a `proxy_url` name the port really bound.
    pub fn bound_at(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Where env links point: `proxy_url`, else `http://<domain>:<listen port>`.
    pub fn front_door(&self) -> FrontDoor {
        match &self.link_base {
            Some((scheme, host, port)) => FrontDoor::new(scheme, host, *port),
            None => FrontDoor::new("http", &self.domain, Some(self.listen.port())),
        }
    }

    /// Binds `listen`: before the app starts, so env links can name the port really bound.
    pub async fn bind(&self) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| {
                format!(
                    "the front door cannot listen on {}; set [proxy] listen in the config",
                    self.listen
                )
            })
    }
}

/// The front door's shared state: one per server.
pub struct Proxy {
    app: Arc<App>,
    settings: ProxySettings,
    routes: RouteCache,
    client: UpstreamClient,
    splits: Splits,
    meter: TrafficMeter,
}

impl Proxy {
    /// The front door, with the rollouts' traffic splits as the store has them now (kept
    /// fresh from here on) and its measurements written under a name unique to it.
    pub async fn new(app: Arc<App>, settings: ProxySettings, metrics: ProxyMetrics) -> Arc<Self> {
        let client = upstream_client();
        let store = app.store().clone();
        let splits = Splits::start(store.clone(), metrics.clone()).await;
        let meter = TrafficMeter::start(
            store.clone(),
            format!("front-door-{}", ControllerSettings::holder_name()),
        );
        let routes = RouteCache::start(store, app.runtime.clone(), metrics);
        Arc::new(Self {
            app,
            settings,
            routes,
            client,
            splits,
            meter,
        })
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// Serves the front door on `listener` (from [`ProxySettings::bind`]).
    pub fn serve(
        self: &Arc<Self>,
        listener: tokio::net::TcpListener,
    ) -> tokio::task::JoinHandle<()> {
        let proxy = self.clone();
        tokio::spawn(async move { proxy.accept_loop(listener).await })
    }

    async fn accept_loop(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(error = %e, "front door: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.clone();
            tokio::spawn(async move {
                // Once per connection rather than per request.
                let peer_ip = HeaderValue::try_from(peer.ip().to_string())
                    .expect("an IP address is a valid header value");
                let service = hyper::service::service_fn(move |req| {
                    let proxy = proxy.clone();
                    let peer_ip = peer_ip.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(&peer_ip, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, %peer, "front door: connection ended with an error");
                }
            });
        }
    }

    async fn handle(&self, peer_ip: &HeaderValue, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let host = request_host(&req).unwrap_or_default();
        let Some(target) = parse_host(&host, &self.settings.domain) else {
            return self.not_found(&format!("No environment at `{host}`")).await;
        };
        let route = match self.routes.get(&target.env).await {
            Ok(Some(route)) if route.record.phase != Phase::Deleted => route,
            Ok(_) => {
                return self
                    .not_found(&format!("No environment named `{}`", target.env))
                    .await
            }
            Err(e) => {
                warn!(error = %e, "front door: store read failed");
                return html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    pages::unavailable(target.env.as_str(), "the store is unavailable", ""),
                );
            }
        };
        let wants_html = accepts_html(req.headers());
        let route = match self.serving(route, wants_html).await {
            Ok(route) => route,
            Err(response) => return response,
        };
        let record = &route.record;
        let Some(upstream) = route.upstream(target.service.as_deref()) else {
            return self.not_found(&missing_service(&target, record)).await;
        };
        self.note_activity(&record.name);
        let splits = self.splits.current();
        if let Some(split) = splits.for_env(&record.name) {
            return self
                .split(peer_ip, &host, &record.name, upstream, split, req, started)
                .await;
        }
        match self.pass(peer_ip, &host, upstream, req, started).await {
            Ok(response) => response,
            Err(e) => self.bad_gateway(&record.name, upstream, &e),
        }
    }

    /// Passes `req` to `upstream`, counting it into the service's figures. `started`: when
    /// this attempt began.
    async fn pass<B>(
        &self,
        peer_ip: &HeaderValue,
        host: &str,
        upstream: &Upstream,
        req: Request<B>,
        started: Instant,
    ) -> anyhow::Result<Response<Body>>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
    {
        let authority = upstream.authority().await;
        match forward(&self.client, peer_ip, host, authority, req).await {
            Ok(response) => {
                upstream
                    .figures
                    .observe(response.status().as_u16(), started.elapsed().as_secs_f64());
                Ok(response)
            }
            Err(e) => {
                upstream.figures.connection_error();
                debug!(service = %upstream.service, error = %e, "front door: upstream failed");
                upstream
                    .figures
                    .observe(502, started.elapsed().as_secs_f64());
                Err(e)
            }
        }
    }

    fn bad_gateway(&self, env: &EnvName, upstream: &Upstream, e: &anyhow::Error) -> Response<Body> {
        html(
            StatusCode::BAD_GATEWAY,
            pages::unavailable(
                env.as_str(),
                &format!("service `{}` did not answer: {e}", upstream.service),
                &self.logs_url(env),
            ),
        )
    }

    /// A request to a release env under a rollout: to the canary env's copy of the service
    /// or the release env's own (`stable`), as `split` says; measured per version unless
    /// the request forced one; the answer says which version served it.
    #[allow(clippy::too_many_arguments)]
    async fn split(
        &self,
        peer_ip: &HeaderValue,
        host: &str,
        release_env: &EnvName,
        stable: &Arc<Upstream>,
        split: &SplitEntry,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<Body> {
        let choice = split::choose(&split.split, req.headers());
        // Meant for the front door, not the app.
        req.headers_mut().remove(split::VERSION_HEADER);
        let attempt = Attempt {
            proxy: self,
            peer_ip,
            host,
            split,
            counted: matches!(choice, Choice::Weighted(_)),
        };
        // A canary env that does not exist, is not serving, or lacks the service: stable
        // serves (and the request counts as stable's, which it is).
        let canary = match choice.version() {
            rollout::Version::Canary => {
                self.canary_upstream(&split.split.canary_env, &stable.service)
                    .await
            }
            rollout::Version::Stable => None,
        };
        let (version, result) = match canary {
            None => (
                rollout::Version::Stable,
                attempt
                    .send(rollout::Version::Stable, stable, req, started)
                    .await,
            ),
            Some(canary) => {
                self.note_activity(&split.split.canary_env);
                let replay = replayable(&req);
                let first = attempt
                    .send(rollout::Version::Canary, &canary, req, started)
                    .await;
                match (first, replay) {
                    // The canary's failure is counted against it; a GET, HEAD or OPTIONS
                    // without a body is safe to send again, so it goes once to stable and
                    // the user still gets an answer (stable's, counted as stable's and
                    // timed from the retry).
                    (Err((e, _)), Some(again)) => {
                        debug!(env = %release_env, error = %e, "front door: the canary failed; retrying on stable");
                        let retried = Instant::now();
                        (
                            rollout::Version::Stable,
                            attempt
                                .send(rollout::Version::Stable, stable, again, retried)
                                .await,
                        )
                    }
                    (result, _) => (rollout::Version::Canary, result),
                }
            }
        };
        let mut response = match result {
            Ok(response) => response,
            Err((e, upstream)) => self.bad_gateway(release_env, &upstream, &e),
        };
        response.headers_mut().insert(
            split::VERSION_HEADER,
            HeaderValue::from_static(version.as_str()),
        );
        response
    }

    /// The canary env's copy of `service`, when the canary env is serving and has it.
    /// A canary env is never woken by a request: stable serves meanwhile.
    async fn canary_upstream(&self, canary_env: &EnvName, service: &str) -> Option<Arc<Upstream>> {
        match self.routes.get(canary_env).await {
            Ok(Some(route)) if matches!(route.record.phase, Phase::Ready | Phase::Degraded) => {
                route.upstream(Some(service)).cloned()
            }
            Ok(_) => None,
            Err(e) => {
                debug!(env = %canary_env, error = %e, "front door: cannot read the canary env; stable serves");
                None
            }
        }
    }

    /// The env's row once it serves; otherwise the answer to give instead. A starting env is
    /// woken and waited for: `ready_timeout` for API clients, 2 s for browsers (then a page
    /// that reloads itself).
    async fn serving(
        &self,
        route: Arc<EnvRoute>,
        wants_html: bool,
    ) -> Result<Arc<EnvRoute>, Response<Body>> {
        let record = &route.record;
        match record.phase {
            Phase::Ready | Phase::Degraded => return Ok(route),
            Phase::Failed => return Err(self.failed(record)),
            Phase::Deleting | Phase::Deleted => {
                return Err(self
                    .not_found(&format!("Environment `{}` is being deleted", record.name))
                    .await)
            }
            _ => {}
        }
        let env = record.name.clone();
        let mut changes = self.routes.store().subscribe();
        if let Err(e) = self.app.engine.wake(&env, "proxy").await {
            return Err(html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::unavailable(env.as_str(), &e.to_string(), &self.logs_url(&env)),
            ));
        }
        let ready_timeout = self.app.engine.settings().ready_timeout;
        let wait = if wants_html {
            BROWSER_WAIT.min(ready_timeout)
        } else {
            ready_timeout
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut last = record.clone();
        loop {
            // A change notice, or a poll in case the change happened in another replica.
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(500)),
                changes.recv(),
            )
            .await;
            match self.routes.store().get(&env).await {
                Ok(Some(record)) => match record.phase {
                    Phase::Ready | Phase::Degraded => return Ok(self.routes.fresh(record)),
                    Phase::Failed => return Err(self.failed(&record)),
                    Phase::Deleting | Phase::Deleted => {
                        return Err(self
                            .not_found(&format!("Environment `{env}` is being deleted"))
                            .await)
                    }
                    _ => last = record,
                },
                Ok(None) => {
                    return Err(self
                        .not_found(&format!("No environment named `{env}`"))
                        .await)
                }
                Err(e) => warn!(error = %e, "front door: store read failed while waiting"),
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        if wants_html && wait < ready_timeout {
            let mut response = html(
                StatusCode::SERVICE_UNAVAILABLE,
                pages::waking(env.as_str(), last.phase.as_str()),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
            return Err(response);
        }
        let reason = format!(
            "not ready after {} (it is {}{})",
            humantime::format_duration(ready_timeout),
            last.phase.as_str(),
            last.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        Err(html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(env.as_str(), &reason, &self.logs_url(&env)),
        ))
    }

    fn failed(&self, record: &EnvRecord) -> Response<Body> {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(
                record.name.as_str(),
                record.reason.as_deref().unwrap_or("the environment failed"),
                &self.logs_url(&record.name),
            ),
        )
    }

    fn logs_url(&self, env: &EnvName) -> String {
        format!("{}/api/v1/envs/{env}/logs", self.app.public_url)
    }

    async fn not_found(&self, what: &str) -> Response<Body> {
        let front_door = self.settings.front_door();
        let envs = match self.app.store().list(false).await {
            Ok(envs) => envs
                .into_iter()
                .map(|e| {
                    let url = e
                        .url
                        .clone()
                        .unwrap_or_else(|| front_door.url(e.name.as_str(), None));
                    (e.name.to_string(), url)
                })
                .collect(),
            Err(e) => {
                warn!(error = %e, "front door: could not list envs");
                Vec::new()
            }
        };
        html(StatusCode::NOT_FOUND, pages::not_found(what, &envs))
    }

    /// Records the request time for idle tracking, off the request's path.
    fn note_activity(&self, env: &EnvName) {
        let store = self.app.store().clone();
        let env = env.clone();
        let at = now_ms();
        if store.activity_due(&env, at) {
            tokio::spawn(async move {
                if let Err(e) = store.record_request_activity(&env, at).await {
                    debug!(env = %env, error = %e, "front door: could not record activity");
                }
            });
        }
    }
}

/// One request to a release env under a rollout, sent to one version after another.
struct Attempt<'a> {
    proxy: &'a Proxy,
    peer_ip: &'a HeaderValue,
    host: &'a str,
    split: &'a SplitEntry,
    /// Whether the request counts for the analysis (it did not force a version).
    counted: bool,
}

impl Attempt<'_> {
    /// Passes `req` to `version`'s `upstream` and counts how it went for that version
    /// (latency from `since`). `Err`: the upstream failed, and which one it was.
    async fn send<B>(
        &self,
        version: rollout::Version,
        upstream: &Arc<Upstream>,
        req: Request<B>,
        since: Instant,
    ) -> Result<Response<Body>, (anyhow::Error, Arc<Upstream>)>
    where
        B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
    {
        let result = self
            .proxy
            .pass(self.peer_ip, self.host, upstream, req, since)
            .await;
        if self.counted {
            let outcome = match &result {
                Ok(response) => Outcome::Answered {
                    status: response.status().as_u16(),
                    latency_ms: since.elapsed().as_secs_f64() * 1000.0,
                },
                Err(_) => Outcome::Failed,
            };
            self.proxy
                .meter
                .record(self.split.split.rollout_id, version, outcome);
            let figures = self.split.figures(version);
            match outcome {
                Outcome::Answered { status, latency_ms } => {
                    figures.observe(status, latency_ms / 1000.0)
                }
                Outcome::Failed => figures.connection_error(),
            }
        }
        result.map_err(|e| (e, upstream.clone()))
    }
}

type UpstreamClient = Client<HttpConnector, Body>;

/// The pooled HTTP/1.1 client the front door talks to services with.
fn upstream_client() -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

/// Passes the request to `authority` (HTTP/1.1) and streams the answer back; joins the
/// two connections of a WebSocket (or any HTTP/1.1) upgrade. `peer_ip`: the client's
/// address, for `X-Forwarded-For`.
async fn forward<B>(
    client: &UpstreamClient,
    peer_ip: &HeaderValue,
    host: &str,
    authority: &Authority,
    mut req: Request<B>,
) -> anyhow::Result<Response<Body>>
where
    B: hyper::body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + 'static,
{
    let upgrade = upgrade_protocol(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut uri = std::mem::take(&mut parts.uri).into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority.clone());
    if uri.path_and_query.is_none() {
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(uri).context("the request's path is not a valid URI")?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // HTTP/2 requests name the host in the URI only; HTTP/1.1 ones already carry it.
    if !parts.headers.contains_key(header::HOST) && !host.is_empty() {
        parts
            .headers
            .insert(header::HOST, HeaderValue::from_str(host)?);
    }
    add_forwarded(&mut parts.headers, peer_ip);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    let request = Request::from_parts(parts, body.boxed());
    let mut response = client.request(request).await?;

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            bail!("the service switched protocols without being asked to");
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let mut client = TokioIo::new(client);
                    let mut upstream = TokioIo::new(upstream);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                    {
                        debug!(error = %e, "front door: upgraded connection ended");
                    }
                }
                Err(e) => debug!(error = %e, "front door: upgrade failed"),
            }
        });
        let (parts, _) = response.into_parts();
        return Ok(Response::from_parts(parts, empty()));
    }
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// A copy of `req` to send again when its first upstream failed: only for GET, HEAD and
/// OPTIONS without a body and without an upgrade, which a service must treat as safe to
/// repeat.
fn replayable(req: &Request<Incoming>) -> Option<Request<Body>> {
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !idempotent || !req.body().is_end_stream() || upgrade_protocol(req.headers()).is_some() {
        return None;
    }
    let mut copy = Request::new(empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The host the client asked for: the Host header, or the URI's authority (HTTP/2).
fn request_host<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The protocol an HTTP/1.1 client asks to switch to (`Connection: upgrade` + `Upgrade`).
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes the headers that describe one connection, not the message (RFC 9110 7.6.1),
/// including those the Connection header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// `X-Forwarded-For` (appended to what a proxy in front of us said), `-Host` (the Host
/// the client asked for, already in `headers`), `-Proto`.
fn add_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue) {
    let for_value = match headers.get("x-forwarded-for").map(HeaderValue::as_bytes) {
        Some(before) => {
            let mut value = Vec::with_capacity(before.len() + 2 + peer_ip.len());
            value.extend_from_slice(before);
            value.extend_from_slice(b", ");
            value.extend_from_slice(peer_ip.as_bytes());
            HeaderValue::from_bytes(&value).ok()
        }
        None => Some(peer_ip.clone()),
    };
    if let Some(value) = for_value {
        headers.insert(X_FORWARDED_FOR, value);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    // The front door speaks cleartext (TLS ends before it, if anywhere).
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

fn missing_service(target: &Target, record: &EnvRecord) -> String {
    let published: Vec<&str> = record
        .services
        .iter()
        .filter(|s| !s.ports.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    let which = match &target.service {
        Some(name) => format!("no service `{name}` with a published port"),
        None => "no service with a published port".to_string(),
    };
    if published.is_empty() {
        format!("Environment `{}` has {which}", record.name)
    } else {
        format!(
            "Environment `{}` has {which}; these have one: {}",
            record.name,
            published.join(", ")
        )
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(page))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn env_links_come_from_the_proxy_url_else_the_bound_port() {
        let config = ProxyConfig {
            listen: None,
            domain: Some("preview.example.com".into()),
            proxy_url: Some("https://preview.example.com".into()),
        };
        let settings = ProxySettings::from_config(Some(&config)).unwrap();
        assert_eq!(
            settings.front_door().url("shop-pr-42", None),
            "https://shop-pr-42.preview.example.com/"
        );
        assert_eq!(
            settings.front_door().url("shop-pr-42", Some("api")),
            "https://api--shop-pr-42.preview.example.com/"
        );
        let default = ProxySettings::from_config(None).unwrap();
        assert_eq!(
            default.front_door().url("shop-main", None),
            "http://shop-main.localhost:8081/"
        );
        let bound = default.bound_at("127.0.0.1:40123".parse().unwrap());
        assert_eq!(
            bound.front_door().url("shop-main", None),
            "http://shop-main.localhost:40123/"
        );
        let bad = ProxyConfig {
            proxy_url: Some("preview.example.com/x".into()),
            ..ProxyConfig::default()
        };
        assert!(ProxySettings::from_config(Some(&bad)).is_err());
    }

    #[test]
    fn hop_by_hop_headers_go_and_forwarded_ones_come() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers);
        headers.insert(header::HOST, HeaderValue::from_static("shop.localhost"));
        add_forwarded(&mut headers, &HeaderValue::from_static("10.0.0.2"));
        assert!(headers.get("x-private").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 10.0.0.2");
        assert_eq!(headers["x-forwarded-host"], "shop.localhost");
        assert_eq!(headers[header::ACCEPT], "*/*");
    }
}
