//! `slipway serve`: opens the store, connects the runtime, starts the engine's reconciler and
//! serves the HTTP API until Ctrl-C or SIGTERM.

mod api;
pub mod metrics;
mod ready;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use envmgr::names::ServiceName;
use envmgr::runtime::docker::DockerRuntime;
use envmgr::runtime::{BuildContext, BuildRequest, ImageSource, Runtime};
use envmgr::store::Store;
use envmgr::{Engine, RepoSettings};
use tracing::info;

use crate::config::Config;
use crate::logging::LogFormat;
use crate::{demo, github, notify};

pub async fn serve(config_path: Option<&Path>, log_format: LogFormat) -> anyhow::Result<()> {
    let config = match config_path {
        Some(path) => Config::load(path)?,
        None => Config::embedded_defaults(),
    };
    let token = config.api_token()?;
    crate::access::install(config.access_policy()?)?;
    let github = config.github_settings()?;
    let discord = config.discord_settings()?;
    let subnets = config.subnet_pool()?;
    let publish_address = config.publish_address()?;
    let image_retention = config
        .docker_config()?
        .image_retention
        .unwrap_or(envmgr::runtime::docker::DEFAULT_IMAGE_RETENTION);
    let mut settings = config.engine_settings()?;
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data_dir {}", data_dir.display()))?;

    if config_path.is_none() {
        // No config: serve the bundled demo repo so a fresh clone has something to run.
        let repo_dir = data_dir.join("demo-repo");
        demo::ensure_demo_repo(&repo_dir).context("cannot create the bundled demo repo")?;
        settings.repos.push(RepoSettings {
            name: envmgr::names::RepoName::parse("demo").expect("valid"),
            url: repo_dir.to_string_lossy().into_owned(),
            env_file: "compose.yml".into(),
            default_ttl: std::time::Duration::from_secs(8 * 3600),
            test_timeout: std::time::Duration::from_secs(15 * 60),
            secret_env: Vec::new(),
            credentials: None,
        });
        info!(repo = %repo_dir.display(), "no --config given: serving the bundled demo repo");
    }

    let store = Store::connect(&config.database_url())
        .await
        .with_context(|| {
            format!(
                "cannot open the store at {}",
                redact_url(&config.database_url())
            )
        })?;
    // Right after the store opens, so a config mistake stops the start before anything runs.
    let deps = notify::SinkDeps {
        store: Some(store.clone()),
        discord: discord
            .as_ref()
            .map(|d| std::sync::Arc::new(crate::discord::http(d))),
    };
    let notify_routes = notify::routes(&config, &deps)?;
    let instance = store.instance_id().await?;
    let runtime = DockerRuntime::connect(&instance)
        .await
        .context("Slipway needs a running Docker engine; start it or set DOCKER_HOST")?
        .with_subnet_pool(subnets)
        .with_publish_address(&publish_address)
        .with_image_retention(image_retention);
    let runtime = match &config.public_host {
        Some(host) => runtime.with_public_host(host),
        None => runtime,
    };
    let runtime: Arc<dyn Runtime> = Arc::new(runtime);
    // Only demo mode runs the bundled image; a configured server must not spend its start
    // (or a Docker build) on it. `slipway demo-image` builds it on demand.
    if config_path.is_none() {
        ensure_demo_image(runtime.as_ref())
            .await
            .context("cannot prepare the demo image")?;
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {}; is another Slipway running? set `listen` in the config",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    // Links people follow must name the port really bound (`listen` may say port 0).
    let public_url = match &config.public_url {
        Some(_) => config.public_url(),
        None => format!("http://{addr}"),
    };
    settings.public_url = public_url.clone();

    // Before the engine starts, so the notifier sees every event from here on.
    let redactors = std::sync::Arc::new(envmgr::secrets::Redactors::new(&settings));
    notify::start(notify_routes, store.clone(), public_url.clone(), redactors)
        .await
        .context("cannot start notifications")?;
    let probes = ready::Probes {
        store: store.clone(),
        runtime: runtime.clone(),
    };
    let engine = Engine::start(settings, store, runtime)
        .await
        .context("cannot start the engine's controllers")?;
    if let Some(discord) = discord {
        crate::discord::start(discord, engine.clone()).await?;
    }
    let metrics = Arc::new(metrics::ServerMetrics::new(engine.metrics()));
    let access = api::Access::new(token);
    let mut app = api::router(engine.clone(), access.clone())
        .merge(metrics::routes(metrics.clone(), access))
        .merge(ready::routes(probes));
    if let Some(github) = github {
        let links = config.github_links();
        info!(repos = links.len(), api = %github.api_url, "GitHub surface on: webhooks at /webhooks/github");
        app = app.merge(github::start(
            github,
            links,
            engine,
            public_url,
            metrics.webhooks(),
        )?);
    }

    // After the routes, so the webhook routes get the same error shape as the API; the
    // request counter outermost, so it sees the status that really went out.
    let app = app
        .layer(axum::middleware::from_fn(api::json_errors))
        .layer(axum::middleware::from_fn_with_state(
            metrics.http(),
            metrics::track_requests,
        ));
    let url = format!("http://{addr}");
    info!(%addr, %url, instance, "Slipway is serving");
    // For people reading a terminal; JSON logs carry the same as the event above.
    if log_format == LogFormat::Text {
        eprintln!(
            "Slipway is serving on {url} (data in {})",
            data_dir.display()
        );
    }
    // The peer address feeds the API's loopback check.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    info!("stopped");
    Ok(())
}

/// `slipway demo-image`: builds the bundled demo image without starting a server.
pub async fn build_demo_image() -> anyhow::Result<()> {
    let runtime = DockerRuntime::connect("demo-image").await.context(
        "building the demo image needs a running Docker engine; start it or set DOCKER_HOST",
    )?;
    ensure_demo_image(&runtime)
        .await
        .context("cannot prepare the demo image")?;
    eprintln!("{} is ready", demo::DEMO_IMAGE);
    Ok(())
}

/// Log line written whenever the demo image is checked or built (tests look for it).
const DEMO_IMAGE_LOG: &str = "preparing the bundled demo image";

/// Builds the demo app image when it is missing or stale (its content label differs).
/// Cheap when it is current: one image lookup.
async fn ensure_demo_image(runtime: &dyn Runtime) -> anyhow::Result<()> {
    info!(image = demo::DEMO_IMAGE, "{DEMO_IMAGE_LOG}");
    let request = BuildRequest {
        service: ServiceName::parse("demo-app")?,
        tag: demo::DEMO_IMAGE.to_string(),
        dockerfile: "Dockerfile".into(),
        context: BuildContext::bytes(demo::demo_image_context()?),
        args: Default::default(),
        target: None,
        // Set by the demo Dockerfile itself: a stale image (older binary) is rebuilt.
        required_labels: [(
            demo::CONTENT_LABEL.to_string(),
            demo::demo_image_content_label(),
        )]
        .into(),
    };
    runtime
        .prepare_image(&ImageSource::Build(request), Arc::new(|_| {}))
        .await?;
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

/// A database URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
