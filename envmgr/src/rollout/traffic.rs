//! What the front door measures per version during a rollout, in a form that adds up across
//! seconds and front-door replicas: request and error counts and a latency histogram with
//! log-spaced buckets (5% wide), from which the analysis gets latency samples for its rank
//! test. Ties inside one bucket only make that test more conservative.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::analysis::VersionSample;

/// The lower edge of bucket 0, in milliseconds.
const FIRST_EDGE_MS: f64 = 0.1;
/// Each bucket is this much wider than the one before.
const GROWTH: f64 = 1.05;
/// Bucket 300 starts past 200 s: everything slower lands there.
const LAST_BUCKET: u16 = 300;

/// Latencies counted per log-spaced bucket (sparse: only buckets that were hit).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LatencyHistogram(BTreeMap<u16, u64>);

impl LatencyHistogram {
    pub fn record(&mut self, latency_ms: f64) {
        *self.0.entry(bucket_of(latency_ms)).or_default() += 1;
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (bucket, count) in &other.0 {
            *self.0.entry(*bucket).or_default() += count;
        }
    }

    pub fn count(&self) -> u64 {
        self.0.values().sum()
    }

    /// The latency below which `q` (0..=1) of the requests fell, at the bucket's middle.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in &self.0 {
            seen += count;
            if seen >= rank {
                return Some(middle_of(*bucket));
            }
        }
        self.0.keys().last().map(|b| middle_of(*b))
    }

    /// One latency per counted request (the bucket's middle), for the rank test.
    pub fn samples(&self) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.count().min(1 << 20) as usize);
        for (bucket, count) in &self.0 {
            let value = middle_of(*bucket);
            out.extend(std::iter::repeat_n(value, *count as usize));
        }
        out
    }
}

fn bucket_of(latency_ms: f64) -> u16 {
    if latency_ms.is_nan() || latency_ms <= FIRST_EDGE_MS {
        return 0;
    }
    let index = ((latency_ms / FIRST_EDGE_MS).ln() / GROWTH.ln()).floor();
    (index as u64).min(u64::from(LAST_BUCKET)) as u16
}

fn middle_of(bucket: u16) -> f64 {
    FIRST_EDGE_MS * GROWTH.powf(f64::from(bucket) + 0.5)
}

/// What one version served over some window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionCounts {
    /// Requests answered or attempted.
    pub requests: u64,
    /// 5xx answers plus connection errors.
    pub errors: u64,
    /// Latencies of answered requests.
    pub latency: LatencyHistogram,
}

impl VersionCounts {
    pub fn merge(&mut self, other: &VersionCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }

    /// The analysis's view of these counts.
    pub fn sample(&self) -> VersionSample {
        VersionSample {
            requests: self.requests,
            errors: self.errors,
            latencies_ms: self.latency.samples(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_within_five_percent_and_add_up() {
        let mut h = LatencyHistogram::default();
        for ms in [0.01, 1.0, 10.0, 10.2, 250.0, 1e9] {
            h.record(ms);
        }
        assert_eq!(h.count(), 6);
        let samples = h.samples();
        assert_eq!(samples.len(), 6);
        let ten = samples[2];
        assert!((ten / 10.0 - 1.0).abs() < 0.05, "{ten}");
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 / 10.0 - 1.0).abs() < 0.05, "{p50}");
        let mut other = LatencyHistogram::default();
        other.record(10.0);
        h.merge(&other);
        assert_eq!(h.count(), 7);
        let json = serde_json::to_string(&h).unwrap();
        let back: LatencyHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back, h);
    }
}
