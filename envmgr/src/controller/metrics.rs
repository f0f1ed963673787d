//! The controller's own figures, per reconciler kind, in a Prometheus registry the server
//! exports on `/metrics` (names prefixed `slipway_`).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::runtime::RuntimeError;
use crate::store::StoreError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

type Durations = Family<KindLabels, Histogram, fn() -> Histogram>;

/// Counters and gauges of every controller in this process.
pub struct ControllerMetrics {
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    durations: Durations,
    resyncs: Durations,
    waiting: Family<KindLabels, Gauge>,
    working: Family<KindLabels, Gauge>,
    leases: Family<KindLabels, Gauge>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        fn histogram() -> Histogram {
            // 5 ms to about 22 min: a status check to a slow build.
            Histogram::new(exponential_buckets(0.005, 4.0, 10))
        }
        ControllerMetrics {
            reconciles: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(histogram),
            resyncs: Family::new_with_constructor(histogram),
            waiting: Family::default(),
            working: Family::default(),
            leases: Family::default(),
        }
    }

    /// Adds these metrics to `registry` (which adds the `slipway_` prefix when it has one).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "controller_reconciles",
            "Reconcile passes, by reconciler kind",
            self.reconciles.clone(),
        );
        registry.register(
            "controller_errors",
            "Reconcile passes that failed, by kind and reason",
            self.errors.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "How long one reconcile pass took",
            self.durations.clone(),
        );
        registry.register(
            "controller_resync_duration_seconds",
            "How long one resync took, from its housekeeping until each key it listed was looked at",
            self.resyncs.clone(),
        );
        registry.register(
            "controller_keys_waiting",
            "Keys waiting for a requeue, a retry or another replica's lease",
            self.waiting.clone(),
        );
        registry.register(
            "controller_keys_working",
            "Keys being reconciled now",
            self.working.clone(),
        );
        registry.register(
            "controller_leases_held",
            "Leases this replica holds now",
            self.leases.clone(),
        );
    }

    fn kind(kind: &str) -> KindLabels {
        KindLabels {
            kind: kind.to_string(),
        }
    }

    pub(super) fn observe(&self, kind: &str, took: Duration, error: Option<&anyhow::Error>) {
        self.reconciles.get_or_create(&Self::kind(kind)).inc();
        self.durations
            .get_or_create(&Self::kind(kind))
            .observe(took.as_secs_f64());
        if let Some(error) = error {
            let labels = ErrorLabels {
                kind: kind.to_string(),
                reason: reason(error).to_string(),
            };
            self.errors.get_or_create(&labels).inc();
        }
    }

    pub(super) fn observe_resync(&self, kind: &str, took: Duration) {
        self.resyncs
            .get_or_create(&Self::kind(kind))
            .observe(took.as_secs_f64());
    }

    pub(super) fn set_waiting(&self, kind: &str, keys: i64) {
        self.waiting.get_or_create(&Self::kind(kind)).set(keys);
    }

    pub(super) fn set_working(&self, kind: &str, keys: i64) {
        self.working.get_or_create(&Self::kind(kind)).set(keys);
    }

    pub(super) fn lease_taken(&self, kind: &str) {
        self.leases.get_or_create(&Self::kind(kind)).inc();
    }

    pub(super) fn lease_released(&self, kind: &str) {
        self.leases.get_or_create(&Self::kind(kind)).dec();
    }
}

/// A short, bounded label for what went wrong.
fn reason(error: &anyhow::Error) -> &'static str {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return match e {
                StoreError::StaleLease { .. } => "lease_lost",
                _ => "store",
            };
        }
        if let Some(e) = cause.downcast_ref::<RuntimeError>() {
            return if e.is_transient() {
                "runtime_unavailable"
            } else {
                "runtime"
            };
        }
    }
    "other"
}
