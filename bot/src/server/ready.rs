//! `GET /readyz`: whether this replica can do its work now, for load balancers and
//! orchestrators. Ready means the store answers a trivial query and the container runtime
//! answers a ping, each within [`CHECK_TIMEOUT`]. `/healthz` only says the process is
//! alive. Open like `/healthz`: it names what failed and why, nothing secret.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use envmgr::runtime::Runtime;
use envmgr::store::Store;
use serde_json::{json, Value};

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Probes {
    pub store: Store,
    pub runtime: Arc<dyn Runtime>,
}

pub fn routes(probes: Probes) -> Router {
    Router::new()
        .route("/readyz", get(readyz))
        .with_state(probes)
}

async fn readyz(State(probes): State<Probes>) -> Response {
    let (store, runtime) = tokio::join!(
        check(probes.store.ping(), CHECK_TIMEOUT),
        check(probes.runtime.ping(), CHECK_TIMEOUT),
    );
    let failed: Vec<String> = [("store", &store), ("runtime", &runtime)]
        .into_iter()
        .filter_map(|(part, result)| result.as_ref().err().map(|why| format!("{part}: {why}")))
        .collect();
    let checks = json!({
        "store": outcome(&store),
        "runtime": outcome(&runtime),
    });
    if failed.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "ready": true, "checks": checks })),
        )
            .into_response()
    } else {
        let error = format!("not ready: {}", failed.join("; "));
        tracing::warn!(%error, "readiness check failed");
        // The API's error shape (`error`), with the details beside it.
        let body = json!({ "ready": false, "error": error, "checks": checks });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Runs one probe, bounded by `limit`; the error says why it failed.
async fn check<E: std::fmt::Display>(
    probe: impl Future<Output = Result<(), E>>,
    limit: Duration,
) -> Result<(), String> {
    match tokio::time::timeout(limit, probe).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )),
    }
}

fn outcome(result: &Result<(), String>) -> Value {
    match result {
        Ok(()) => json!({ "ok": true }),
        Err(why) => json!({ "ok": false, "error": why }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envmgr::runtime::fake::FakeRuntime;

    async fn body_of(response: Response) -> Value {
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_runtime_that_does_not_answer_makes_the_replica_unready() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ready.db").display());
        let store = Store::connect(&url).await.unwrap();
        let runtime = Arc::new(FakeRuntime::new());
        let probes = Probes {
            store,
            runtime: runtime.clone(),
        };

        let response = readyz(State(probes.clone())).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = body_of(response).await;
        assert_eq!(body["ready"], true, "{body}");
        assert_eq!(body["checks"]["store"]["ok"], true, "{body}");
        assert_eq!(body["checks"]["runtime"]["ok"], true, "{body}");

        runtime.fail_ping(Some("Cannot connect to the Docker daemon"));
        let response = readyz(State(probes.clone())).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(response).await;
        assert_eq!(body["ready"], false, "{body}");
        assert_eq!(body["checks"]["store"]["ok"], true, "{body}");
        assert_eq!(body["checks"]["runtime"]["ok"], false, "{body}");
        let why = body["checks"]["runtime"]["error"].as_str().unwrap();
        assert!(
            why.contains("Cannot connect to the Docker daemon"),
            "{body}"
        );
        let error = body["error"].as_str().unwrap();
        assert!(error.starts_with("not ready: runtime: "), "{body}");
        assert!(!error.contains("store"), "{body}");

        // Ready again as soon as the runtime answers.
        runtime.fail_ping(None);
        assert_eq!(readyz(State(probes)).await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_probe_that_hangs_fails_after_the_timeout() {
        let started = std::time::Instant::now();
        let result = check(
            std::future::pending::<Result<(), String>>(),
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(result, Err("no answer within 50ms".to_string()));
        assert!(started.elapsed() < Duration::from_secs(2));
        let failed = check(async { Err::<(), _>("refused") }, CHECK_TIMEOUT).await;
        assert_eq!(failed, Err("refused".to_string()));
    }
}
