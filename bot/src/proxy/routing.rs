//! Which env and service a request is for (from its Host), which service is an env's main
//! one, and where that service listens. An env's route (its row, and per service where to
//! connect and what to count into) is built once, cached for a moment and dropped as soon as
//! the store says the env changed, so a request costs no database read, no label lookup and
//! no copy of the row in the steady state. The front door connects to a container's own
//! address on its network when it can: the published host port goes through Docker's port
//! proxy, a second copy of every byte.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envmgr::names::EnvName;
use envmgr::runtime::{Protocol, Runtime};
use envmgr::store::{EnvRecord, ServiceStatus, Store, StoreError};
use hyper::http::uri::Authority;
use tokio::sync::OnceCell;
use tracing::debug;

use super::metrics::{ProxyMetrics, ServiceFigures};

/// How long a cached row is trusted without a change notice: another replica's writes reach
/// this process only through the database.
const CACHE_TTL: Duration = Duration::from_secs(2);
/// How long the first request waits to learn whether the container's address is reachable.
const CONTAINER_CONNECT: Duration = Duration::from_millis(500);

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

/// Where requests for one service go, and what they count into.
pub struct Upstream {
    pub service: String,
    /// The service's published host port (`host:port`), from the runtime's endpoint: the
    /// way in when the container's own address is not reachable from here.
    host_port: Authority,
    /// The container's address and the published port's container port.
    container: Option<SocketAddr>,
    /// Which of the two this process reaches, found out by the first request.
    chosen: OnceCell<Authority>,
    pub figures: ServiceFigures,
}

impl Upstream {
    /// `service`'s first published TCP port; `None` when it has none.
    fn new(
        runtime: &dyn Runtime,
        metrics: &ProxyMetrics,
        env: &EnvName,
        service: &ServiceStatus,
    ) -> Option<Self> {
        let port = service.ports.iter().find(|p| p.protocol == Protocol::Tcp)?;
        let url = runtime.endpoint(port);
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let host_port = Authority::try_from(rest.trim_end_matches('/')).ok()?;
        Some(Self {
            service: service.name.clone(),
            host_port,
            container: service
                .address
                .map(|ip| SocketAddr::new(ip, port.container_port)),
            chosen: OnceCell::new(),
            figures: metrics.service(env.as_str(), &service.name),
        })
    }

    /// Where to connect: the container's own address when this process can reach it (no
    /// port proxy in between), else the published host port.
    pub async fn authority(&self) -> &Authority {
        self.chosen
            .get_or_init(|| async {
                let Some(container) = self.container else {
                    return self.host_port.clone();
                };
                let reachable = tokio::time::timeout(
                    CONTAINER_CONNECT,
                    tokio::net::TcpStream::connect(container),
                )
                .await;
                match reachable {
                    Ok(Ok(_)) => Authority::try_from(container.to_string())
                        .unwrap_or_else(|_| self.host_port.clone()),
                    Ok(Err(e)) => {
                        debug!(service = %self.service, %container, error = %e, "front door: container address not reachable, using the host port");
                        self.host_port.clone()
                    }
                    Err(_) => {
                        debug!(service = %self.service, %container, "front door: container address timed out, using the host port");
                        self.host_port.clone()
                    }
                }
            })
            .await
    }
}

/// An env's row and the upstreams of its services, shared by every request until the row
/// changes.
pub struct EnvRoute {
    pub record: EnvRecord,
    main: Option<Arc<Upstream>>,
    services: HashMap<String, Arc<Upstream>>,
}

impl EnvRoute {
    fn new(record: EnvRecord, runtime: &dyn Runtime, metrics: &ProxyMetrics) -> Self {
        let services: HashMap<String, Arc<Upstream>> = record
            .services
            .iter()
            .filter_map(|s| {
                let upstream = Upstream::new(runtime, metrics, &record.name, s)?;
                Some((s.name.clone(), Arc::new(upstream)))
            })
            .collect();
        let main = main_service(&record.services).and_then(|s| services.get(&s.name).cloned());
        Self {
            record,
            main,
            services,
        }
    }

    /// The upstream of `service` (`None`: the main service); `None` when it publishes no
    /// TCP port.
    pub fn upstream(&self, service: Option<&str>) -> Option<&Arc<Upstream>> {
        match service {
            Some(name) => self.services.get(name),
            None => self.main.as_ref(),
        }
    }
}

/// An env's route (`None`: no such env) and when its row was read.
type CachedRoute = (Instant, Option<Arc<EnvRoute>>);

/// Env routes by name, for a moment (see [`CACHE_TTL`]).
#[derive(Clone)]
pub struct RouteCache {
    store: Store,
    runtime: Arc<dyn Runtime>,
    metrics: ProxyMetrics,
    entries: Arc<Mutex<HashMap<EnvName, CachedRoute>>>,
}

impl RouteCache {
    /// Starts the task that forgets an env as soon as this process changes it.
    pub fn start(store: Store, runtime: Arc<dyn Runtime>, metrics: ProxyMetrics) -> Self {
        let cache = Self {
            store,
            runtime,
            metrics,
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

    /// The env's route (`None`: no such env), from the cache when fresh.
    pub async fn get(&self, env: &EnvName) -> Result<Option<Arc<EnvRoute>>, StoreError> {
        let stale = {
            let entries = self.entries.lock().expect("route cache poisoned");
            match entries.get(env) {
                Some((at, route)) if at.elapsed() < CACHE_TTL => return Ok(route.clone()),
                Some((_, route)) => route.clone(),
                None => None,
            }
        };
        let record = self.store.get(env).await?;
        Ok(self.put(env, record, stale))
    }

    /// Caches the route of a row just read (by a request that waited for the env to serve).
    pub fn fresh(&self, record: EnvRecord) -> Arc<EnvRoute> {
        let env = record.name.clone();
        let stale = self
            .entries
            .lock()
            .expect("route cache poisoned")
            .get(&env)
            .and_then(|(_, route)| route.clone());
        self.put(&env, Some(record), stale)
            .expect("a route for a row")
    }

    /// Caches `record`'s route; the stale one is kept when the row did not change, so its
    /// upstreams keep what they found out about reaching the service.
    fn put(
        &self,
        env: &EnvName,
        record: Option<EnvRecord>,
        stale: Option<Arc<EnvRoute>>,
    ) -> Option<Arc<EnvRoute>> {
        let route = record.map(|record| match stale {
            Some(stale) if stale.record == record => stale,
            _ => Arc::new(EnvRoute::new(record, self.runtime.as_ref(), &self.metrics)),
        });
        self.entries
            .lock()
            .expect("route cache poisoned")
            .insert(env.clone(), (Instant::now(), route.clone()));
        route
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
            address: None,
            main,
            shared: None,
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
