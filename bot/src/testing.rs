//! Slipway in-process, for tests of its surfaces: the whole application built from a config
//! text exactly as `slipway serve` builds it, with the runtime's test twin ([`FakeRuntime`])
//! where Docker would be, and its HTTP side (API, webhooks, metrics, probes) served on
//! `listen`. Discord, GitHub and the notifier start as the config says. A test drives it over
//! HTTP (or through the real CLI client) and tells the twin what to do through
//! [`TestApp::runtime`]. [`TestApp::start_with_front_door`] serves the front door too, on a
//! twin whose containers report a loopback address: a test listening on a service's
//! container port there stands in for that container.
//!
//! The app runs on its own tokio runtime on its own thread, so plain `#[test]` functions use
//! it as they would a server process, and an async test can hold one too. Dropping the
//! [`TestApp`] stops the server (open connections get a moment to finish), then the runtime
//! and with it every task of the app.
//!
//! Not part of Slipway's interface: the `slipway` binary never calls it, so the linker leaves
//! it out of the binary.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _};
use envmgr::runtime::fake::FakeRuntime;
use envmgr::runtime::Runtime;
use tokio::sync::watch;

use crate::app::Mode;
use crate::config::Config;
use crate::proxy::ProxySettings;
use crate::server;

/// How long connections still open at drop may take to finish before they are cut.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long the app's leftover blocking work may take once the server has stopped.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(5);

/// One Slipway server inside the test process.
pub struct TestApp {
    url: String,
    front_door_url: Option<String>,
    runtime: Arc<FakeRuntime>,
    log: LogBuffer,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl TestApp {
    /// Starts Slipway from `config` (the text of a `slipway.toml`) on a fresh
    /// [`FakeRuntime`], and returns once it serves. The config must name its `data_dir`
    /// (a temp dir), so a test never touches the user's; it is served at `listen`, so give
    /// `listen = "127.0.0.1:0"` for a free loopback port. `SLIPWAY_API_TOKEN` is not read:
    /// what a test checks does not depend on the environment it runs in.
    pub fn start(config: &str) -> anyhow::Result<Self> {
        Self::launch(config, false)
    }

    /// [`TestApp::start`], and the front door served where `[proxy] listen` says (give
    /// `127.0.0.1:0`), on a twin whose containers are all at 127.0.0.1: requests for an
    /// env's service go to 127.0.0.1 and the service's container port, where the test
    /// serves its stand-in.
    pub fn start_with_front_door(config: &str) -> anyhow::Result<Self> {
        Self::launch(config, true)
    }

    fn launch(config: &str, front_door: bool) -> anyhow::Result<Self> {
        let config: Config =
            toml::from_str(config).context("the test app's config is not valid")?;
        if config.data_dir.is_none() {
            bail!("the test app's config needs a data_dir (a temp dir), so a test never uses the user's");
        }
        let token = server::token::api_token_from(&config, None)?;
        let runtime = Arc::new(if front_door {
            // Published ports on loopback too: a front door that cannot reach a stand-in
            // falls back to a port nothing serves there, never to a name it must resolve.
            FakeRuntime::new()
                .with_container_address(std::net::Ipv4Addr::LOCALHOST.into())
                .with_public_host("127.0.0.1")
        } else {
            FakeRuntime::new()
        });
        let log = LogBuffer::default();
        let (stop, stopped) = watch::channel(false);
        let (started, start_result) = mpsc::channel();
        let twin = runtime.clone() as Arc<dyn Runtime>;
        let thread_log = log.clone();
        let thread = std::thread::Builder::new()
            .name("slipway-test-app".into())
            .spawn(move || {
                run_app(
                    config, token, twin, front_door, thread_log, stopped, started,
                );
            })
            .context("cannot start the test app's thread")?;
        let (url, front_door_url) = match start_result.recv() {
            Ok(Ok(urls)) => urls,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e.context(format!("the test app did not start; its log:\n{log}")));
            }
            Err(_) => {
                let _ = thread.join();
                bail!("the test app's thread ended while starting; its log:\n{log}");
            }
        };
        Ok(Self {
            url,
            front_door_url,
            runtime,
            log,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the HTTP side serves: `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the front door serves (`http://127.0.0.1:<port>`), when started with it.
    pub fn front_door_url(&self) -> Option<&str> {
        self.front_door_url.as_deref()
    }

    /// The runtime's test twin the app runs envs on.
    pub fn runtime(&self) -> &Arc<FakeRuntime> {
        &self.runtime
    }

    /// Everything the app logged so far (info, and debug from the engine).
    pub fn log(&self) -> String {
        self.log.to_string()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The app's URL and its front door's, when served.
type Urls = (String, Option<String>);

/// The app's thread: its own runtime, logging into `log`; reports the URLs (or why it could
/// not start) through `started`, then serves until `stop` says so.
fn run_app(
    config: Config,
    token: Option<secrecy::SecretString>,
    twin: Arc<dyn Runtime>,
    serve_front_door: bool,
    log: LogBuffer,
    stop: watch::Receiver<bool>,
    started: mpsc::Sender<anyhow::Result<Urls>>,
) {
    // Per thread, not global: several apps in one test process each keep their own log.
    let dispatch = log.dispatch();
    let _log_here = tracing::dispatcher::set_default(&dispatch);
    let worker_dispatch = dispatch.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("slipway-test-app-worker")
        .on_thread_start(move || {
            // The runtime's threads live exactly as long as the runtime: keep it set.
            std::mem::forget(tracing::dispatcher::set_default(&worker_dispatch));
        })
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = started.send(Err(
                anyhow::Error::new(e).context("cannot build a tokio runtime")
            ));
            return;
        }
    };
    runtime.block_on(async move {
        let app = async {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let addr = listener.local_addr()?;
            // Most in-process tests drive the API only and leave the front door unbound;
            // env links still name it as `[proxy]` says.
            let mut proxy_settings = ProxySettings::from_config(config.proxy.as_ref())?;
            let proxy_listener = if serve_front_door {
                let proxy_listener = proxy_settings.bind().await?;
                proxy_settings = proxy_settings.bound_at(proxy_listener.local_addr()?);
                Some(proxy_listener)
            } else {
                None
            };
            let (_app, router, front_door) = server::start(
                &config,
                Mode::Configured,
                token,
                addr,
                proxy_settings,
                Some(twin),
            )
            .await?;
            let front_door_url = proxy_listener.map(|proxy_listener| {
                let url = format!("http://{}", front_door.settings().listen);
                // Ends with the runtime, like every task of the app.
                front_door.serve(proxy_listener);
                url
            });
            anyhow::Ok((listener, addr, router, front_door_url))
        };
        let (listener, addr, router, front_door_url) = match app.await {
            Ok(started_app) => started_app,
            Err(e) => {
                let _ = started.send(Err(e));
                return;
            }
        };
        tracing::info!(%addr, "the test app is serving");
        let _ = started.send(Ok((format!("http://{addr}"), front_door_url)));
        let mut graceful = stop.clone();
        let serving = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            // A dropped sender stops the app too.
            let _ = graceful.wait_for(|stop| *stop).await;
        });
        let mut cut = stop;
        tokio::select! {
            result = serving => {
                if let Err(e) = result {
                    tracing::error!(error = %e, "the test app's server failed");
                }
            }
            // A connection that stays open (a followed log) must not hold the drop up.
            _ = async move {
                let _ = cut.wait_for(|stop| *stop).await;
                tokio::time::sleep(STOP_GRACE).await;
            } => {}
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
}

/// The app's log, kept in memory.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl LogBuffer {
    /// A subscriber writing plain text lines here: info, and debug from the engine.
    fn dispatch(&self) -> tracing::Dispatch {
        let buffer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,envmgr=debug"))
            .with_ansi(false)
            .with_writer(move || buffer.clone())
            .finish();
        tracing::Dispatch::new(subscriber)
    }
}

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Display for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f.write_str(&String::from_utf8_lossy(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::Instant;

    use super::*;

    fn config(dir: &tempfile::TempDir) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            dir.path().display()
        )
    }

    /// `GET path` on a fresh connection: the status line and the body.
    fn get(url: &str, path: &str) -> String {
        let host = url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(host).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    #[test]
    fn the_app_runs_on_the_twin_it_was_given_and_stops_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let app = TestApp::start(&config(&dir)).unwrap();
        let ready = get(app.url(), "/readyz");
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        // The runtime the readiness check pings is the twin the test holds.
        app.runtime().fail_ping(Some("the twin was told to fail"));
        let unready = get(app.url(), "/readyz");
        assert!(unready.starts_with("HTTP/1.1 503"), "{unready}");
        assert!(unready.contains("the twin was told to fail"), "{unready}");
        assert!(
            app.log().contains("the test app is serving"),
            "{}",
            app.log()
        );

        // A connection left open must not hold the drop up past its grace.
        let host = app.url().trim_start_matches("http://").to_string();
        let _idle = TcpStream::connect(&host).unwrap();
        let stopping = Instant::now();
        drop(app);
        assert!(
            stopping.elapsed() < STOP_GRACE + RUNTIME_SHUTDOWN,
            "the drop took {:?}",
            stopping.elapsed()
        );
        assert!(
            TcpStream::connect(&host).is_err(),
            "still listening after the drop"
        );
    }

    #[test]
    fn a_config_without_its_own_data_dir_is_refused() {
        let Err(e) = TestApp::start("listen = \"127.0.0.1:0\"\n") else {
            panic!("started on the default data dir");
        };
        assert!(e.to_string().contains("data_dir"), "{e:#}");
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = TestApp::start(&format!("{}nope = 1\n", config(&dir))) else {
            panic!("started with an unknown key");
        };
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
    }
}
