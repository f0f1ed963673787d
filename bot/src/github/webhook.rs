//! `POST /webhooks/github`: verify the signature over the raw body before reading anything,
//! parse, store the delivery durably under its `X-GitHub-Delivery` id, acknowledge at once,
//! and nudge the deliveries controller (on whichever replica holds the delivery's PR) to
//! act on it asynchronously. GitHub waits 10 s at most; this answers
//! in about a database write.

use std::sync::Arc;

use super::deliveries::DeliveryKey;
use super::events::WebhookEvent;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use envmgr::controller::Nudger;
use envmgr::store::Store;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::Sha256;

use crate::server::metrics::{DeliveryOutcome, WebhookMetrics};

/// GitHub caps payloads at 25 MB; pull-request events are far smaller than this.
pub const BODY_LIMIT: usize = 10 * 1024 * 1024;

#[derive(Clone)]
pub struct WebhookState {
    pub secret: Arc<SecretString>,
    pub store: Store,
    /// Nudges the deliveries controller when a new delivery is stored.
    pub deliveries: Nudger,
    /// Counts each delivery's outcome, where it is decided.
    pub metrics: WebhookMetrics,
}

pub fn routes(state: WebhookState) -> Router {
    state.metrics.start_counting();
    Router::new()
        .route("/webhooks/github", post(receive))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn receive(State(state): State<WebhookState>, headers: HeaderMap, body: Bytes) -> Response {
    let count = |outcome| state.metrics.count(outcome);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signature = header("x-hub-signature-256");
    if signature.is_empty() {
        count(DeliveryOutcome::BadSignature);
        return answer(
            StatusCode::UNAUTHORIZED,
            "missing X-Hub-Signature-256: configure the webhook's secret",
        );
    }
    if !signature_matches(state.secret.expose_secret().as_bytes(), signature, &body) {
        tracing::warn!("webhook refused: signature does not match");
        count(DeliveryOutcome::BadSignature);
        return answer(
            StatusCode::UNAUTHORIZED,
            "signature does not match the configured webhook secret",
        );
    }
    let (event, delivery) = (header("x-github-event"), header("x-github-delivery"));
    if event.is_empty() || delivery.is_empty() || delivery.len() > 100 {
        count(DeliveryOutcome::Malformed);
        return answer(
            StatusCode::BAD_REQUEST,
            "missing X-GitHub-Event or X-GitHub-Delivery header",
        );
    }
    let parsed = match WebhookEvent::parse(event, &body) {
        Ok(parsed) => parsed,
        Err(e) => {
            count(DeliveryOutcome::Malformed);
            return answer(
                StatusCode::BAD_REQUEST,
                &format!("malformed {event} payload: {e}"),
            );
        }
    };
    match parsed {
        WebhookEvent::Ping => {
            count(DeliveryOutcome::Ignored);
            answer(StatusCode::OK, "pong")
        }
        WebhookEvent::Ignored { event } => {
            count(DeliveryOutcome::Ignored);
            answer(
                StatusCode::ACCEPTED,
                &format!("ignored: Slipway does not act on {event} events"),
            )
        }
        handled => {
            debug_assert!(handled.is_handled());
            // Parsed above, so the body is valid JSON and valid UTF-8.
            let payload = String::from_utf8_lossy(&body);
            match state.store.insert_delivery(delivery, event, &payload).await {
                Ok(true) => {
                    count(DeliveryOutcome::Accepted);
                    state
                        .deliveries
                        .nudge(&DeliveryKey::of(delivery, &handled).to_string());
                    answer(StatusCode::ACCEPTED, "accepted")
                }
                Ok(false) => {
                    count(DeliveryOutcome::Duplicate);
                    answer(StatusCode::OK, "duplicate delivery: already accepted")
                }
                Err(e) => {
                    count(DeliveryOutcome::StoreFailed);
                    tracing::error!(error = %e, delivery, "could not store a webhook delivery");
                    answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "could not store the delivery; GitHub may redeliver it",
                    )
                }
            }
        }
    }
}

/// Constant-time check of `sha256=<hex>` against the HMAC of the raw body.
pub fn signature_matches(secret: &[u8], header: &str, body: &[u8]) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature GitHub would send for `body`.
#[cfg(test)]
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A refusal has the API's error shape (`error`); `message` stays for GitHub's delivery log
/// and existing clients.
fn answer(status: StatusCode, message: &str) -> Response {
    let body = if status.is_client_error() || status.is_server_error() {
        json!({ "error": message, "message": message })
    } else {
        json!({ "message": message })
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let body = br#"{"zen":"x"}"#;
        let good = sign(b"secret", body);
        assert!(signature_matches(b"secret", &good, body));
        assert!(!signature_matches(b"other", &good, body));
        assert!(!signature_matches(b"secret", &good, b"{\"zen\":\"y\"}"));
        assert!(!signature_matches(
            b"secret",
            good.trim_start_matches("sha256="),
            body
        ));
        assert!(!signature_matches(b"secret", "sha256=zz", body));
        assert!(!signature_matches(b"secret", "", body));
    }
}
