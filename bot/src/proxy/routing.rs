//! Which env and service a request is for (from its Host), which service is an env's main
//! one, and where that service listens. Env rows are cached for a moment and dropped as soon
//! as the store says the env changed, so a request costs no database read in the steady state.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envmgr::names::EnvName;
use envmgr::runtime::{Protocol, Runtime};
use envmgr::store::{EnvRecord, ServiceStatus, Store, StoreError};

/// How long a cached row is trusted without a change notice: another replica's writes reach
/// this process only through the database.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// What the Host header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub env: EnvName,
    /// `None`: the env's main service.
    pub service: Option<String>,
}

/// `<env>.<domain>` or `<service>--<env>.<domain>` (any port, any case). `None`: not a name
/// under `domain`, or not a valid env name.
pub fn parse_host(host: &str, domain: &str) -> Option<Target> {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    // Drop a port (hosts under a domain are names, never IPv6 literals).
    let name = host.rsplit_once(':').map_or(host.as_str(), |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host.as_str()
        }
    });
    let label = name.strip_suffix(domain)?.strip_suffix('.')?;
    if label.is_empty() || label.contains('.') {
        return None;
    }
    let (service, env) = match label.split_once("--") {
        Some((service, env)) if !service.is_empty() => (Some(service.to_string()), env),
        Some(_) => return None,
        None => (None, label),
    };
    let env = EnvName::parse(env).ok()?;
    Some(Target { env, service })
}

/// The service `<env>.<domain>` reaches: the one the reconciler marked main (compose
/// `x-slipway.main`), else `web`, else the first with a published TCP port.
pub fn main_service(services: &[ServiceStatus]) -> Option<&ServiceStatus> {
    let published = |s: &&ServiceStatus| s.ports.iter().any(|p| p.protocol == Protocol::Tcp);
    services
        .iter()
        .find(|s| s.main)
        .or_else(|| services.iter().filter(published).find(|s| s.name == "web"))
        .or_else(|| services.iter().find(published))
}

/// `host:port` of the service's first published TCP port, from the runtime's endpoint.
pub fn upstream_authority(runtime: &dyn Runtime, service: &ServiceStatus) -> Option<String> {
    let port = service.ports.iter().find(|p| p.protocol == Protocol::Tcp)?;
    let url = runtime.endpoint(port);
    let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
    Some(rest.trim_end_matches('/').to_string())
}

/// An env's row (`None`: no such env) and when it was read.
type CachedRow = (Instant, Option<EnvRecord>);

/// Env rows by name, for a moment (see [`CACHE_TTL`]).
#[derive(Clone)]
pub struct RouteCache {
    store: Store,
    entries: Arc<Mutex<HashMap<EnvName, CachedRow>>>,
}

impl RouteCache {
    /// Starts the task that forgets an env as soon as this process changes it.
    pub fn start(store: Store) -> Self {
        let cache = Self {
            store,
            entries: Arc::default(),
        };
        let mut changes = cache.store.subscribe();
        let entries = Arc::downgrade(&cache.entries);
        tokio::spawn(async move {
            loop {
                let changed = changes.recv().await;
                let Some(entries) = entries.upgrade() else {
                    return;
                };
                let mut entries = entries.lock().expect("route cache poisoned");
                match changed {
                    Ok(env) => {
                        entries.remove(&env);
                    }
                    // Missed notices: forget everything rather than serve a stale route.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => entries.clear(),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        cache
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The env's row (`None`: no such env), from the cache when fresh.
    pub async fn get(&self, env: &EnvName) -> Result<Option<EnvRecord>, StoreError> {
        if let Some((at, record)) = self.entries.lock().expect("route cache poisoned").get(env) {
            if at.elapsed() < CACHE_TTL {
                return Ok(record.clone());
            }
        }
        let record = self.store.get(env).await?;
        self.entries
            .lock()
            .expect("route cache poisoned")
            .insert(env.clone(), (Instant::now(), record.clone()));
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envmgr::runtime::PublishedPort;

    fn service(name: &str, port: Option<u16>, main: bool) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state: "running".into(),
            ports: port
                .map(|p| PublishedPort {
                    container_port: 80,
                    host_port: p,
                    protocol: Protocol::Tcp,
                })
                .into_iter()
                .collect(),
            urls: vec![],
            front_door_url: None,
            main,
        }
    }

    #[test]
    fn hosts_name_an_env_and_maybe_a_service() {
        let t = parse_host("Shop-PR-42.preview.example.com:8081", "preview.example.com").unwrap();
        assert_eq!(t.env.as_str(), "shop-pr-42");
        assert_eq!(t.service, None);
        let t = parse_host("api--shop-pr-42.localhost", "localhost").unwrap();
        assert_eq!(t.env.as_str(), "shop-pr-42");
        assert_eq!(t.service.as_deref(), Some("api"));
        assert_eq!(parse_host("localhost:8081", "localhost"), None);
        assert_eq!(parse_host("a.b.localhost", "localhost"), None);
        assert_eq!(parse_host("shop.example.org", "localhost"), None);
        assert_eq!(parse_host("--shop.localhost", "localhost"), None);
        assert_eq!(parse_host("xlocalhost", "localhost"), None);
    }

    #[test]
    fn main_is_marked_then_web_then_first_published() {
        let marked = [
            service("web", Some(1), false),
            service("api", Some(2), true),
        ];
        assert_eq!(main_service(&marked).unwrap().name, "api");
        let web = [
            service("db", None, false),
            service("api", Some(2), false),
            service("web", Some(1), false),
        ];
        assert_eq!(main_service(&web).unwrap().name, "web");
        let first = [service("db", None, false), service("api", Some(2), false)];
        assert_eq!(main_service(&first).unwrap().name, "api");
        assert!(main_service(&[service("db", None, false)]).is_none());
    }
}
