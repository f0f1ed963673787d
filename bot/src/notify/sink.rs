//! Where notifications go. A sink sends one notification and says whether it got through;
//! retries, backoff and the never-twice bookkeeping are the notifier's (`super`).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};

use super::message::Notification;

/// How long one webhook request may take.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The receiver answered, but not with 2xx.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    /// No answer: connection refused, timeout, ...
    #[error("{0}")]
    Transport(String),
}

impl SinkError {
    /// A 4xx other than 429: the request itself may be wrong (bad URL, revoked hook), so a
    /// retry may not help. Retried all the same, but worth a louder log line.
    pub fn is_client_error(&self) -> bool {
        matches!(self, SinkError::Status { status, .. } if (400..500).contains(status) && *status != 429)
    }
}

#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> &str;
    async fn send(&self, n: &Notification) -> Result<(), SinkError>;
}

/// The server log: one structured line per notification.
pub struct LogSink {
    name: String,
}

impl LogSink {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }
}

#[async_trait]
impl Sink for LogSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        tracing::info!(
            target: "slipway::notify",
            sink = %self.name,
            event = n.kind.as_str(),
            event_id = n.event_id,
            env = %n.env,
            repo = %n.repo,
            url = n.url.as_deref().unwrap_or(""),
            "notification: {}",
            n.title
        );
        Ok(())
    }
}

/// A JSON webhook with a Slack incoming-webhook compatible body: Slack (and most chat
/// relays) show `text`; everything else is under `slipway`.
pub struct WebhookSink {
    name: String,
    url: reqwest::Url,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(name: &str, url: reqwest::Url) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            name: name.into(),
            url,
            client,
        })
    }
}

/// The JSON posted for `n`.
pub fn webhook_body(n: &Notification) -> Value {
    let text = if n.text.is_empty() {
        n.title.clone()
    } else {
        format!("{}\n{}", n.title, n.text)
    };
    json!({
        "text": text,
        "slipway": {
            "event": n.kind.as_str(),
            "event_id": n.event_id,
            "env": n.env,
            "repo": n.repo,
            "at": n.at,
            "title": n.title,
            "body": n.text,
            "url": n.url,
            "branch": n.branch,
            "commit": n.commit,
            "pull_request": n.pull_request,
            "run_id": n.run_id,
            "chart_url": n.chart_url,
        }
    })
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, n: &Notification) -> Result<(), SinkError> {
        let response = self
            .client
            .post(self.url.clone())
            .json(&webhook_body(n))
            .send()
            .await
            // Without the URL: a webhook's path is often its secret, and errors are logged.
            .map_err(|e| SinkError::Transport(error_chain(&e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let body: String = body.trim().chars().take(200).collect();
        Err(SinkError::Status {
            status: status.as_u16(),
            body,
        })
    }
}

/// An error with its causes ("error sending request: connection refused").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::message::NotificationKind;

    #[test]
    fn the_webhook_body_is_slack_compatible_with_the_details_beside() {
        let n = Notification {
            event_id: 9,
            kind: NotificationKind::EnvReady,
            env: "demo-main".into(),
            repo: "demo".into(),
            at: 5,
            title: "demo-main is ready".into(),
            text: "- web: http://h:1".into(),
            url: Some("http://h:1".into()),
            branch: Some("main".into()),
            commit: None,
            pull_request: None,
            run_id: None,
            chart_url: None,
            rollout_id: None,
        };
        let body = webhook_body(&n);
        assert_eq!(body["text"], "demo-main is ready\n- web: http://h:1");
        assert_eq!(body["slipway"]["event"], "env.ready");
        assert_eq!(body["slipway"]["env"], "demo-main");
        assert_eq!(body["slipway"]["repo"], "demo");
        assert_eq!(body["slipway"]["url"], "http://h:1");
        assert_eq!(body["slipway"]["event_id"], 9);
        assert!(body["slipway"]["commit"].is_null());
    }

    #[tokio::test]
    async fn transport_errors_do_not_show_the_secret_url() {
        let url = reqwest::Url::parse("http://127.0.0.1:1/services/T0/B0/secret-token").unwrap();
        let sink = WebhookSink::new("hook", url).unwrap();
        let n = Notification {
            event_id: 1,
            kind: NotificationKind::EnvDeleted,
            env: "demo-main".into(),
            repo: "demo".into(),
            at: 0,
            title: "demo-main was deleted".into(),
            text: String::new(),
            url: None,
            branch: None,
            commit: None,
            pull_request: None,
            run_id: None,
            chart_url: None,
            rollout_id: None,
        };
        let error = sink.send(&n).await.unwrap_err();
        assert!(matches!(error, SinkError::Transport(_)), "{error}");
        assert!(!error.to_string().contains("secret-token"), "{error}");
    }

    #[test]
    fn client_errors_are_told_apart() {
        let status = |status| SinkError::Status {
            status,
            body: String::new(),
        };
        assert!(status(404).is_client_error());
        assert!(!status(429).is_client_error());
        assert!(!status(503).is_client_error());
        assert!(!SinkError::Transport("refused".into()).is_client_error());
    }
}
