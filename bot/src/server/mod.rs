//! `slipway serve`: builds the application context ([`App`]) from the config, starts the
//! surfaces on it (notifier, Discord, GitHub) and serves the HTTP API until Ctrl-C or
//! SIGTERM.

mod api;
pub mod metrics;
mod ready;
pub mod token;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use envmgr::runtime::Runtime;
use secrecy::SecretString;
use tracing::info;

use crate::app::{App, Mode};
use crate::config::Config;
use crate::logging::LogFormat;
use crate::{discord, github, notify, proxy};

pub use crate::demo::build_demo_image;

/// Builds the application context and starts every surface on it: the notifier, Discord,
/// GitHub. Returns the router of the HTTP side (API, webhooks, metrics, probes), to be
/// served at `addr`, and the front door, to be served by the caller on the listener it
/// bound with `proxy_settings` (env links name that address).
/// `runtime`: where envs run instead of the one `[runtime]` names.
pub(crate) async fn start(
    config: &Config,
    mode: Mode,
    token: Option<SecretString>,
    addr: SocketAddr,
    proxy_settings: proxy::ProxySettings,
    runtime: Option<Arc<dyn Runtime>>,
) -> anyhow::Result<(Arc<App>, Router, Arc<proxy::Proxy>)> {
    let front_door = Some(proxy_settings.front_door());
    let (app, surfaces) = App::start(config, mode, addr, front_door, runtime).await?;

    notify::start(&app, surfaces.notify);
    crate::queue::reconciler::start(&app);
    if let Some(settings) = surfaces.discord {
        discord::start(app.clone(), settings).await?;
    }
    let proxy_metrics = proxy::ProxyMetrics::default();
    let metrics = Arc::new(metrics::ServerMetrics::with_proxy(
        app.engine.metrics(),
        &proxy_metrics,
    ));
    let front_door = proxy::Proxy::new(app.clone(), proxy_settings, proxy_metrics).await;
    let access = api::Access::new(token);
    let probes = ready::Probes {
        store: app.store().clone(),
        runtime: app.runtime.clone(),
    };
    let mut router = api::router(app.clone(), access.clone())
        .merge(metrics::routes(metrics.clone(), access))
        .merge(ready::routes(probes));
    if let Some(settings) = surfaces.github {
        let links = surfaces.github_links;
        info!(repos = links.len(), api = %settings.api_url, "GitHub surface on: webhooks at /webhooks/github");
        router = router.merge(github::start(
            app.clone(),
            settings,
            links,
            metrics.webhooks(),
        )?);
    }

    // After the routes, so the webhook routes get the same error shape as the API; the
    // request counter outermost, so it sees the status that really went out.
    let router = router
        .layer(axum::middleware::from_fn(api::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            metrics.http(),
            metrics::track_requests,
        ));
    Ok((app, router, front_door))
}

pub async fn serve(config_path: Option<&Path>, log_format: LogFormat) -> anyhow::Result<()> {
    let (config, mode) = match config_path {
        Some(path) => (Config::load(path)?, Mode::Configured),
        None => (Config::embedded_defaults(), Mode::Demo),
    };
    let token = token::api_token(&config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another Slipway running? set `listen` in the config",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    let proxy_settings = proxy::ProxySettings::from_config(config.proxy.as_ref())?;
    let proxy_listener = proxy_settings.bind().await?;
    let proxy_addr = proxy_listener.local_addr()?;
    let proxy_settings = proxy_settings.bound_at(proxy_addr);
    let (app, router, front_door) = start(&config, mode, token, addr, proxy_settings, None).await?;
    let _front_door_task = front_door.serve(proxy_listener);
    let url = format!("http://{addr}");
    info!(addr = %proxy_addr, domain = %front_door.settings().domain, "front door listening");
    let data_dir = config.data_dir();
    info!(%addr, %url, instance = %app.instance, "Slipway is serving");
    // For people reading a terminal; JSON logs carry the same as the event above.
    if log_format == LogFormat::Text {
        eprintln!(
            "Slipway's front door is on http://{proxy_addr} (envs at <env>.{})",
            front_door.settings().domain
        );
        eprintln!(
            "Slipway is serving on {url} (data in {})",
            data_dir.display()
        );
    }
    // The peer address feeds the API's loopback check.
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
