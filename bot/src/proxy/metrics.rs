//! The front door's figures per env and service, in memory and on `/metrics`
//! (`slipway_proxy_*`): requests by status class, connection errors, and the time to the
//! response head; and per release env and version (`stable`, `canary`) while a rollout
//! splits its traffic (`slipway_proxy_version_*`), labelled by the release env only, so a
//! rollout adds at most two series per status class however many services it has.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use envmgr::rollout::Version;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub env: String,
    pub service: String,
    /// `2xx` .. `5xx` (`1xx` for upgrades).
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub env: String,
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionRequestLabels {
    /// The release env (`<repo>-<channel>`).
    pub env: String,
    /// `stable` or `canary`.
    pub version: &'static str,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub env: String,
    pub version: &'static str,
}

type LatencyFamily = Family<ServiceLabels, Histogram, fn() -> Histogram>;
type VersionLatencyFamily = Family<VersionLabels, Histogram, fn() -> Histogram>;

/// Cheap to clone: every clone counts into the same families.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub connection_errors: Family<ServiceLabels, Counter>,
    pub latency: LatencyFamily,
    pub version_requests: Family<VersionRequestLabels, Counter>,
    pub version_connection_errors: Family<VersionLabels, Counter>,
    pub version_latency: VersionLatencyFamily,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: the proxy's own cost is sub-millisecond, a waking env takes seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            connection_errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            version_requests: Family::default(),
            version_connection_errors: Family::default(),
            version_latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl ProxyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "proxy_requests",
            "Requests answered by the front door, by env, service and status class",
            self.requests.clone(),
        );
        registry.register(
            "proxy_connection_errors",
            "Requests the front door could not pass on (the service refused or dropped the \
             connection), by env and service",
            self.connection_errors.clone(),
        );
        registry.register(
            "proxy_request_duration_seconds",
            "Time from a request's arrival at the front door to its response head, by env \
             and service",
            self.latency.clone(),
        );
        registry.register(
            "proxy_version_requests",
            "Requests to a release env during a rollout, by release env, version (stable or \
             canary) and status class; connection errors count as 5xx. Requests forcing a \
             version are left out",
            self.version_requests.clone(),
        );
        registry.register(
            "proxy_version_connection_errors",
            "Requests to a release env during a rollout that the version's service refused or \
             dropped, by release env and version",
            self.version_connection_errors.clone(),
        );
        registry.register(
            "proxy_version_request_duration_seconds",
            "Time from a request's arrival at the front door to its response head during a \
             rollout, by release env and version",
            self.version_latency.clone(),
        );
    }

    /// The figures of one env's service, looked up once (per route) so that counting a
    /// request touches no label map.
    pub fn service(&self, env: &str, service: &str) -> ServiceFigures {
        ServiceFigures {
            family: self.clone(),
            env: env.to_string(),
            service: service.to_string(),
            classes: Default::default(),
            latency: self
                .latency
                .get_or_create(&ServiceLabels {
                    env: env.to_string(),
                    service: service.to_string(),
                })
                .clone(),
            connection_errors: OnceLock::new(),
        }
    }

    /// The figures of one version of a release env under a rollout, looked up once per
    /// split so counting a request touches no label map.
    pub fn version(&self, env: &str, version: Version) -> VersionFigures {
        let labels = VersionLabels {
            env: env.to_string(),
            version: version.as_str(),
        };
        VersionFigures {
            family: self.clone(),
            labels: labels.clone(),
            classes: Default::default(),
            latency: self.version_latency.get_or_create(&labels).clone(),
            connection_errors: OnceLock::new(),
        }
    }
}

/// One version's counters and histogram (shared handles into [`ProxyMetrics`]'s families).
pub struct VersionFigures {
    family: ProxyMetrics,
    labels: VersionLabels,
    classes: [OnceLock<Counter>; 5],
    latency: Histogram,
    connection_errors: OnceLock<Counter>,
}

impl VersionFigures {
    /// A request answered with `status` after `seconds`.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = class_of(status);
        self.classes[class]
            .get_or_init(|| {
                self.family
                    .version_requests
                    .get_or_create(&VersionRequestLabels {
                        env: self.labels.env.clone(),
                        version: self.labels.version,
                        class: CLASSES[class],
                    })
                    .clone()
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// A request the version's service refused or dropped: counted as a 5xx too, without
    /// a latency (there was no answer).
    pub fn connection_error(&self) {
        self.connection_errors
            .get_or_init(|| {
                self.family
                    .version_connection_errors
                    .get_or_create(&self.labels)
                    .clone()
            })
            .inc();
        self.classes[4]
            .get_or_init(|| {
                self.family
                    .version_requests
                    .get_or_create(&VersionRequestLabels {
                        env: self.labels.env.clone(),
                        version: self.labels.version,
                        class: CLASSES[4],
                    })
                    .clone()
            })
            .inc();
    }
}

/// One service's counters and histogram (shared handles into [`ProxyMetrics`]'s families).
/// A status class's counter is created on its first request, so `/metrics` lists only
/// classes that happened.
pub struct ServiceFigures {
    family: ProxyMetrics,
    env: String,
    service: String,
    /// `1xx` .. `5xx`.
    classes: [OnceLock<Counter>; 5],
    latency: Histogram,
    connection_errors: OnceLock<Counter>,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index into [`CLASSES`] of a status.
fn class_of(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

impl ServiceFigures {
    /// A request answered with `status` after `seconds`.
    pub fn observe(&self, status: u16, seconds: f64) {
        let class = class_of(status);
        self.classes[class]
            .get_or_init(|| {
                self.family
                    .requests
                    .get_or_create(&RequestLabels {
                        env: self.env.clone(),
                        service: self.service.clone(),
                        class: CLASSES[class],
                    })
                    .clone()
            })
            .inc();
        self.latency.observe(seconds);
    }

    /// A request the service refused or dropped.
    pub fn connection_error(&self) {
        self.connection_errors
            .get_or_init(|| {
                self.family
                    .connection_errors
                    .get_or_create(&ServiceLabels {
                        env: self.env.clone(),
                        service: self.service.clone(),
                    })
                    .clone()
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_exported_per_env_and_service() {
        let metrics = ProxyMetrics::default();
        let mut registry = Registry::with_prefix("slipway");
        metrics.register(&mut registry);
        let web = metrics.service("shop-main", "web");
        web.observe(204, 0.002);
        web.observe(503, 0.002);
        // Two handles of one service count into the same series.
        metrics.service("shop-main", "web").observe(200, 0.001);
        let api = metrics.service("shop-main", "api");
        api.observe(101, 0.001);
        api.connection_error();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"slipway_proxy_requests_total{env="shop-main",service="web",class="2xx"} 2"#,
            r#"slipway_proxy_requests_total{env="shop-main",service="web",class="5xx"} 1"#,
            r#"slipway_proxy_requests_total{env="shop-main",service="api",class="1xx"} 1"#,
            r#"slipway_proxy_connection_errors_total{env="shop-main",service="api"} 1"#,
            r#"slipway_proxy_request_duration_seconds_count{env="shop-main",service="web"} 3"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains("4xx"), "only classes that happened: {text}");
    }

    #[test]
    fn version_figures_are_exported_per_release_env_and_version() {
        let metrics = ProxyMetrics::default();
        let mut registry = Registry::with_prefix("slipway");
        metrics.register(&mut registry);
        let stable = metrics.version("shop-production", Version::Stable);
        let canary = metrics.version("shop-production", Version::Canary);
        stable.observe(200, 0.002);
        canary.observe(500, 0.003);
        canary.connection_error();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"slipway_proxy_version_requests_total{env="shop-production",version="stable",class="2xx"} 1"#,
            r#"slipway_proxy_version_requests_total{env="shop-production",version="canary",class="5xx"} 2"#,
            r#"slipway_proxy_version_connection_errors_total{env="shop-production",version="canary"} 1"#,
            r#"slipway_proxy_version_request_duration_seconds_count{env="shop-production",version="canary"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
