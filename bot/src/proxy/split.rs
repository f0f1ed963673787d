//! Traffic splits in the front door: which release envs have a rollout running and what share
//! of their requests the canary gets, and the per-request choice of a version.
//!
//! The table is read from the store (`Store::traffic_splits`) every 250 ms by one task per
//! front door, so a weight written by any replica applies in every front door within about
//! 250 ms plus one store read; a store that fails keeps the last table (logged once per
//! outage). A release env with two unfinished rollouts follows the oldest: a newer one waits
//! (pending) for it to finish.
//!
//! The choice, per request to a release env with a split:
//! - `X-Slipway-Version: stable|canary` on the request forces that version (testers trying
//!   the canary, at any weight, 0 included). Forced requests are served but never counted
//!   for the analysis: they are not a sample of users' traffic.
//! - `X-Slipway-Sticky: <key>` (or the cookie `slipway_sticky=<key>`) pins a client: the
//!   key and the rollout id hash to a position in 0..1000, the client gets the canary while
//!   the weight is above its position. One client sees one version at a given weight, and
//!   a client on the canary stays there as the weight grows; every replica agrees.
//! - Otherwise a fresh uniform draw in 0..1000 against the weight.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use envmgr::names::EnvName;
use envmgr::rollout::{TrafficSplit, Version, FULL_WEIGHT};
use envmgr::store::Store;
use hyper::header::{self, HeaderMap, HeaderName};
use sha2::{Digest as _, Sha256};
use tracing::{info, warn};

use super::metrics::{ProxyMetrics, VersionFigures};

/// How often the table is read from the store.
pub const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// Request header that forces a version; the same name on the answer says which served.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-slipway-version");
/// Request header that pins a client to a version by a key of its choosing.
pub const STICKY_HEADER: HeaderName = HeaderName::from_static("x-slipway-sticky");
/// Cookie that does the same as [`STICKY_HEADER`].
pub const STICKY_COOKIE: &str = "slipway_sticky";

/// One release env's split and the figures its requests count into.
pub struct SplitEntry {
    pub split: TrafficSplit,
    stable: VersionFigures,
    canary: VersionFigures,
}

impl SplitEntry {
    pub fn figures(&self, version: Version) -> &VersionFigures {
        match version {
            Version::Stable => &self.stable,
            Version::Canary => &self.canary,
        }
    }
}

/// The splits in force, by release env.
#[derive(Default)]
pub struct SplitTable {
    by_release: HashMap<EnvName, Arc<SplitEntry>>,
    /// What the table was built from, to skip rebuilding an unchanged one.
    source: Vec<TrafficSplit>,
}

impl SplitTable {
    /// Builds the table from the store's splits (ordered by rollout id); entries of splits
    /// that did not change are taken over from `previous`.
    fn build(splits: Vec<TrafficSplit>, previous: &SplitTable, metrics: &ProxyMetrics) -> Self {
        let mut by_release: HashMap<EnvName, Arc<SplitEntry>> = HashMap::new();
        for split in &splits {
            if by_release.contains_key(&split.release_env) {
                continue;
            }
            let entry = match previous.by_release.get(&split.release_env) {
                Some(old) if old.split == *split => old.clone(),
                _ => Arc::new(SplitEntry {
                    stable: metrics.version(split.release_env.as_str(), Version::Stable),
                    canary: metrics.version(split.release_env.as_str(), Version::Canary),
                    split: split.clone(),
                }),
            };
            by_release.insert(split.release_env.clone(), entry);
        }
        Self {
            by_release,
            source: splits,
        }
    }

    /// The split of `env` when it is a release env with a rollout running.
    pub fn for_env(&self, env: &EnvName) -> Option<&Arc<SplitEntry>> {
        self.by_release.get(env)
    }

    pub fn is_empty(&self) -> bool {
        self.by_release.is_empty()
    }
}

/// The front door's current table, shared by every request; cheap to clone.
#[derive(Clone)]
pub struct Splits {
    current: Arc<RwLock<Arc<SplitTable>>>,
}

impl Splits {
    /// Reads the table now (so the first requests see it) and starts the task that keeps
    /// it fresh; the task ends when the last handle is dropped.
    pub async fn start(store: Store, metrics: ProxyMetrics) -> Self {
        let splits = Self {
            current: Arc::default(),
        };
        let mut outage = false;
        splits.refresh(&store, &metrics, &mut outage).await;
        let weak = Arc::downgrade(&splits.current);
        tokio::spawn(refresh_loop(weak, store, metrics, outage));
        splits
    }

    /// The table in force now.
    pub fn current(&self) -> Arc<SplitTable> {
        self.current.read().expect("split table poisoned").clone()
    }

    async fn refresh(&self, store: &Store, metrics: &ProxyMetrics, outage: &mut bool) {
        refresh_into(&self.current, store, metrics, outage).await
    }
}

async fn refresh_loop(
    table: Weak<RwLock<Arc<SplitTable>>>,
    store: Store,
    metrics: ProxyMetrics,
    mut outage: bool,
) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(table) = table.upgrade() else {
            return;
        };
        refresh_into(&table, &store, &metrics, &mut outage).await;
    }
}

async fn refresh_into(
    table: &RwLock<Arc<SplitTable>>,
    store: &Store,
    metrics: &ProxyMetrics,
    outage: &mut bool,
) {
    match store.traffic_splits().await {
        Ok(splits) => {
            if *outage {
                info!("front door: traffic splits readable again");
                *outage = false;
            }
            let previous = table.read().expect("split table poisoned").clone();
            if previous.source != splits {
                let next = Arc::new(SplitTable::build(splits, &previous, metrics));
                *table.write().expect("split table poisoned") = next;
            }
        }
        Err(e) => {
            if !*outage {
                warn!(error = %e, "front door: cannot read traffic splits; keeping the last ones until the store answers");
                *outage = true;
            }
        }
    }
}

/// How a request's version was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// Asked for with `X-Slipway-Version`: served, not counted.
    Forced(Version),
    /// Chosen by the weight (sticky or drawn): served and counted.
    Weighted(Version),
}

impl Choice {
    pub fn version(self) -> Version {
        match self {
            Choice::Forced(v) | Choice::Weighted(v) => v,
        }
    }
}

/// The version a request gets under `split`, from its headers.
pub fn choose(split: &TrafficSplit, headers: &HeaderMap) -> Choice {
    if let Some(forced) = forced_version(headers) {
        return Choice::Forced(forced);
    }
    let position = match sticky_key(headers) {
        Some(key) => sticky_position(key, split.rollout_id),
        None => random_position(),
    };
    Choice::Weighted(pick(split.canary_weight, position))
}

/// Canary when `position` (in 0..1000) is below the weight (per mille): weight 0 never,
/// [`FULL_WEIGHT`] always, and a position on the canary stays there as the weight grows.
pub fn pick(canary_weight: u16, position: u16) -> Version {
    if position < canary_weight.min(FULL_WEIGHT) {
        Version::Canary
    } else {
        Version::Stable
    }
}

/// Where a sticky key falls for a rollout, in 0..1000: the same in every process and
/// release, and independent between rollouts (a client first on the canary of one rollout
/// is not always first on the next one's).
pub fn sticky_position(key: &[u8], rollout_id: i64) -> u16 {
    let digest = Sha256::new()
        .chain_update(rollout_id.to_le_bytes())
        .chain_update(key)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_le_bytes(first) % u64::from(FULL_WEIGHT)) as u16
}

/// A uniform draw in 0..1000 from a per-thread generator (splitmix64, seeded once per
/// thread from the standard library's random hasher keys): no lock, no system call.
pub fn random_position() -> u16 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    let value = STATE.with(|state| {
        let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    });
    // 2^64 mod 1000 is 616: the bias is below 1e-16 per value.
    (value % u64::from(FULL_WEIGHT)) as u16
}

fn seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(u64::from(std::process::id()));
    hasher.finish()
}

/// `X-Slipway-Version: stable|canary` (any case); anything else forces nothing.
pub fn forced_version(headers: &HeaderMap) -> Option<Version> {
    let value = headers.get(VERSION_HEADER)?.to_str().ok()?.trim();
    Version::parse(&value.to_ascii_lowercase())
}

/// The client's sticky key: `X-Slipway-Sticky`, else the `slipway_sticky` cookie. Empty
/// keys do not count.
pub fn sticky_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(STICKY_HEADER) {
        let key = value.as_bytes().trim_ascii();
        if !key.is_empty() {
            return Some(key);
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let value = pair
                .strip_prefix(STICKY_COOKIE.as_bytes())?
                .strip_prefix(b"=")?
                .trim_ascii();
            (!value.is_empty()).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn split(weight: u16) -> TrafficSplit {
        TrafficSplit {
            rollout_id: 7,
            release_env: EnvName::parse("shop-production").unwrap(),
            canary_env: EnvName::parse("shop-production-canary").unwrap(),
            canary_weight: weight,
        }
    }

    fn canaries(weight: u16, picks: usize) -> usize {
        let headers = HeaderMap::new();
        (0..picks)
            .filter(|_| choose(&split(weight), &headers).version() == Version::Canary)
            .count()
    }

    #[test]
    fn weight_0_never_picks_the_canary_and_1000_always_does() {
        assert_eq!(canaries(0, 4000), 0);
        assert_eq!(canaries(FULL_WEIGHT, 4000), 4000);
        for position in 0..FULL_WEIGHT {
            assert_eq!(pick(0, position), Version::Stable);
            assert_eq!(pick(FULL_WEIGHT, position), Version::Canary);
        }
    }

    #[test]
    fn a_quarter_weight_gives_a_binomial_share() {
        // 4,000 draws at p = 0.25: mean 1000, sd ~27.4; five sd either side fails by chance
        // about once in 1.7 million runs.
        let got = canaries(250, 4000);
        assert!((863..=1137).contains(&got), "{got} canaries of 4000 at 25%");
    }

    #[test]
    fn sticky_clients_keep_their_version_and_stay_on_the_canary_as_it_grows() {
        let keys: Vec<String> = (0..2000).map(|i| format!("client-{i}")).collect();
        let mut on_canary_before = vec![false; keys.len()];
        for weight in [0, 50, 250, 500, 999, 1000] {
            let mut canaries = 0;
            for (i, key) in keys.iter().enumerate() {
                let mut headers = HeaderMap::new();
                headers.insert(STICKY_HEADER, HeaderValue::from_str(key).unwrap());
                let first = choose(&split(weight), &headers);
                // The same client asking again (or asking another replica) gets the same.
                for _ in 0..3 {
                    assert_eq!(choose(&split(weight), &headers), first);
                }
                let on_canary = first.version() == Version::Canary;
                assert!(
                    on_canary || !on_canary_before[i],
                    "{key} left the canary when the weight grew to {weight}"
                );
                on_canary_before[i] = on_canary;
                canaries += usize::from(on_canary);
            }
            // The keys spread like draws: 2000 at p, within 5 sd.
            let p = f64::from(weight) / 1000.0;
            let sd = (2000.0 * p * (1.0 - p)).sqrt();
            let expected = 2000.0 * p;
            assert!(
                (canaries as f64 - expected).abs() <= 5.0 * sd + 0.5,
                "{canaries} sticky clients on the canary at {weight}"
            );
        }
    }

    #[test]
    fn sticky_positions_differ_between_rollouts() {
        let same = (0..1000)
            .filter(|i| {
                let key = format!("client-{i}");
                sticky_position(key.as_bytes(), 1) == sticky_position(key.as_bytes(), 2)
            })
            .count();
        assert!(same < 10, "{same} of 1000 keys kept their position");
    }

    #[test]
    fn a_cookie_pins_like_the_header_and_a_header_forces() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; slipway_sticky=abc ; other=1"),
        );
        assert_eq!(sticky_key(&headers), Some(&b"abc"[..]));
        let mut by_header = HeaderMap::new();
        by_header.insert(STICKY_HEADER, HeaderValue::from_static("abc"));
        for weight in [100, 500, 900] {
            assert_eq!(
                choose(&split(weight), &headers),
                choose(&split(weight), &by_header)
            );
        }
        let mut empty = HeaderMap::new();
        empty.insert(header::COOKIE, HeaderValue::from_static("slipway_sticky="));
        empty.insert(STICKY_HEADER, HeaderValue::from_static("  "));
        assert_eq!(sticky_key(&empty), None);

        let mut forced = HeaderMap::new();
        forced.insert(VERSION_HEADER, HeaderValue::from_static("Canary"));
        assert_eq!(choose(&split(0), &forced), Choice::Forced(Version::Canary));
        forced.insert(VERSION_HEADER, HeaderValue::from_static("stable"));
        assert_eq!(
            choose(&split(1000), &forced),
            Choice::Forced(Version::Stable)
        );
        forced.insert(VERSION_HEADER, HeaderValue::from_static("newest"));
        assert_eq!(
            choose(&split(1000), &forced),
            Choice::Weighted(Version::Canary)
        );
    }
}
