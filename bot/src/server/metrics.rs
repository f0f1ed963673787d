//! `GET /metrics`: the server's figures in the Prometheus text format (OpenMetrics), every
//! name prefixed `slipway_`. One registry, built at start: the controllers' figures (from
//! the engine), HTTP requests by route, and GitHub webhook deliveries by outcome. The
//! families are handed out as cheap clones to whoever counts (the HTTP layer, the webhook).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use envmgr::controller::ControllerMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::api::{require_access, Access, ApiError};

/// What the text encoder writes (it ends with `# EOF`); Prometheus reads it.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of a request no route matched: raw paths never become label values.
const UNMATCHED: &str = "unmatched";

/// The registry `/metrics` exports and the families the server counts into.
pub struct ServerMetrics {
    registry: Registry,
    http: HttpMetrics,
    webhooks: WebhookMetrics,
}

impl ServerMetrics {
    #[cfg(test)]
    pub fn new(controller: &ControllerMetrics) -> Self {
        Self::with_proxy(controller, &crate::proxy::ProxyMetrics::default())
    }

    /// The registry with the front door's families (`slipway_proxy_*`) too.
    pub fn with_proxy(controller: &ControllerMetrics, proxy: &crate::proxy::ProxyMetrics) -> Self {
        let mut registry = Registry::with_prefix("slipway");
        controller.register(&mut registry);
        proxy.register(&mut registry);
        let http = HttpMetrics::new();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route (the route's pattern, `unmatched` for \
             none) and status code",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its response head, by method and route",
            http.durations.clone(),
        );
        let webhooks = WebhookMetrics::default();
        registry.register(
            "github_webhook_deliveries",
            "GitHub webhook deliveries, by outcome: accepted (new, stored), duplicate \
             (a redelivery), ignored (ping or an event Slipway does not act on), \
             bad_signature, malformed, store_failed",
            webhooks.deliveries.clone(),
        );
        Self {
            registry,
            http,
            webhooks,
        }
    }

    pub fn http(&self) -> HttpMetrics {
        self.http.clone()
    }

    pub fn webhooks(&self) -> WebhookMetrics {
        self.webhooks.clone()
    }

    /// The whole registry as Prometheus text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `GET /metrics`, behind the API's access policy (the bearer token, or loopback callers
/// when no token is configured): counts and route names are not for everyone.
pub fn routes(metrics: Arc<ServerMetrics>, access: Access) -> Router {
    Router::new()
        .route("/metrics", get(export))
        .route_layer(middleware::from_fn_with_state(access, require_access))
        .with_state(metrics)
}

async fn export(State(metrics): State<Arc<ServerMetrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "could not encode the metrics");
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not encode the metrics".into(),
            )
            .into_response()
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// Requests by route, method and status, and how long they took.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    durations: Durations,
}

impl HttpMetrics {
    fn new() -> Self {
        fn histogram() -> Histogram {
            // 1 ms (a health check) to 10 s (a slow store); answers here never wait on work.
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        }
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(histogram),
        }
    }

    fn observe(&self, method: &'static str, route: String, status: StatusCode, took: Duration) {
        self.durations
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route,
                status: status.as_u16(),
            })
            .inc();
    }
}

/// The middleware counting every request; applied to the whole app after routing, so the
/// matched route's pattern (`/api/v1/envs/{env}`) is known.
pub async fn track_requests(
    State(http): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_string();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    http.observe(method, route, response.status(), started.elapsed());
    response
}

/// The method as a label; anything but the standard methods is `other` (clients may send
/// any token as a method).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .into_iter()
        .find(|known| *known == method.as_str())
        .unwrap_or("other")
}

/// How one GitHub webhook delivery ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// New, stored for processing.
    Accepted,
    /// A redelivery of one already stored.
    Duplicate,
    /// A ping, or an event Slipway does not act on.
    Ignored,
    /// Missing or wrong signature.
    BadSignature,
    /// Missing headers or a payload that does not parse.
    Malformed,
    /// Could not be stored (GitHub may redeliver it).
    StoreFailed,
}

impl DeliveryOutcome {
    const ALL: [DeliveryOutcome; 6] = [
        DeliveryOutcome::Accepted,
        DeliveryOutcome::Duplicate,
        DeliveryOutcome::Ignored,
        DeliveryOutcome::BadSignature,
        DeliveryOutcome::Malformed,
        DeliveryOutcome::StoreFailed,
    ];

    fn label(self) -> &'static str {
        match self {
            DeliveryOutcome::Accepted => "accepted",
            DeliveryOutcome::Duplicate => "duplicate",
            DeliveryOutcome::Ignored => "ignored",
            DeliveryOutcome::BadSignature => "bad_signature",
            DeliveryOutcome::Malformed => "malformed",
            DeliveryOutcome::StoreFailed => "store_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    outcome: &'static str,
}

/// The webhook's handle: counts deliveries by outcome.
#[derive(Clone, Default)]
pub struct WebhookMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
}

impl WebhookMetrics {
    /// Shows every outcome at zero, so rates work from the first delivery on. Called when
    /// a webhook surface starts (a server without one shows no deliveries at all).
    pub fn start_counting(&self) {
        for outcome in DeliveryOutcome::ALL {
            let _zero = self.deliveries.get_or_create(&DeliveryLabels {
                outcome: outcome.label(),
            });
        }
    }

    pub fn count(&self, outcome: DeliveryOutcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome: outcome.label(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_labels_bounded() {
        let metrics = ServerMetrics::new(&ControllerMetrics::new());
        let http = metrics.http();
        http.observe(
            method_label(&Method::GET),
            "/api/v1/envs/{env}".into(),
            StatusCode::OK,
            Duration::from_millis(3),
        );
        let odd = Method::from_bytes(b"BREW").unwrap();
        http.observe(
            method_label(&odd),
            UNMATCHED.into(),
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        metrics.webhooks().start_counting();
        metrics.webhooks().count(DeliveryOutcome::Duplicate);

        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"slipway_http_requests_total{method="GET",route="/api/v1/envs/{env}",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"slipway_http_requests_total{method="other",route="unmatched",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"slipway_http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/v1/envs/{env}"} 1"#)
                || text.contains(r#"slipway_http_request_duration_seconds_bucket{method="GET",route="/api/v1/envs/{env}",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"slipway_github_webhook_deliveries_total{outcome="duplicate"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"slipway_github_webhook_deliveries_total{outcome="bad_signature"} 0"#),
            "{text}"
        );
        // The controllers' families are in the same registry.
        assert!(
            text.contains("# TYPE slipway_controller_reconciles counter"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("slipway_"), "unprefixed: {line}");
        }
    }
}
