//! The front door's figures per env and service, in memory and on `/metrics`
//! (`slipway_proxy_*`): requests by status class, connection errors, and the time to the
//! response head. Rollouts will read the same families to compare versions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

type LatencyFamily = Family<ServiceLabels, Histogram, fn() -> Histogram>;

/// Cheap to clone: every clone counts into the same families.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub connection_errors: Family<ServiceLabels, Counter>,
    pub latency: LatencyFamily,
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
    }

    pub fn observe(&self, env: &str, service: &str, status: u16, seconds: f64) {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.requests
            .get_or_create(&RequestLabels {
                env: env.to_string(),
                service: service.to_string(),
                class,
            })
            .inc();
        self.latency
            .get_or_create(&ServiceLabels {
                env: env.to_string(),
                service: service.to_string(),
            })
            .observe(seconds);
    }

    pub fn connection_error(&self, env: &str, service: &str) {
        self.connection_errors
            .get_or_create(&ServiceLabels {
                env: env.to_string(),
                service: service.to_string(),
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
        metrics.observe("shop-main", "web", 204, 0.002);
        metrics.observe("shop-main", "web", 503, 0.002);
        metrics.observe("shop-main", "api", 101, 0.001);
        metrics.connection_error("shop-main", "api");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"slipway_proxy_requests_total{env="shop-main",service="web",class="2xx"} 1"#,
            r#"slipway_proxy_requests_total{env="shop-main",service="web",class="5xx"} 1"#,
            r#"slipway_proxy_requests_total{env="shop-main",service="api",class="1xx"} 1"#,
            r#"slipway_proxy_connection_errors_total{env="shop-main",service="api"} 1"#,
            r#"slipway_proxy_request_duration_seconds_count{env="shop-main",service="web"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
