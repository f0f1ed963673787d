//! The CLI's HTTP client for the server's API. Errors are turned into one line that says
//! what went wrong and what to do (plus the usage, for a command the server did not parse).

use anyhow::{anyhow, bail};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::{terminal, UsageError};

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    user: String,
}

impl Client {
    pub fn new(server: &str) -> anyhow::Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            bail!("--server {server}: expected a URL like http://127.0.0.1:8080");
        }
        let token = std::env::var("SLIPWAY_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        let user = std::env::var("USER").unwrap_or_else(|_| "cli".into());
        Ok(Self {
            http: reqwest::Client::new(),
            base,
            token,
            user,
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.get(self.url(path)))
            .await?
            .json()
            .await
            .map_err(|e| anyhow!("unreadable answer from the server: {e}"))
    }

    /// Runs a command of the grammar on the server: `words` as typed after `slipway`,
    /// without the CLI's own flags. Answers the command's outcome.
    pub async fn command<T: DeserializeOwned>(&self, words: &[String]) -> anyhow::Result<T> {
        #[derive(Deserialize)]
        struct Reply<T> {
            outcome: T,
        }
        let request = self
            .http
            .post(self.url("/commands"))
            .json(&json!({ "args": words }));
        let reply: Reply<T> = self
            .send(request)
            .await?
            .json()
            .await
            .map_err(|e| anyhow!("unreadable answer from the server: {e}"))?;
        Ok(reply.outcome)
    }

    /// A response whose body the caller streams.
    pub async fn stream(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        self.send(self.http.get(self.url(path))).await
    }

    /// The full log of a test run, as the server serves it.
    pub fn log_url(&self, env: &str, run: i64) -> String {
        self.url(&format!("/envs/{}/runs/{run}/log", encode(env)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.base, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let mut request = request.header("x-slipway-user", &self.user);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the Slipway server at {}: start it with `slipway serve`, or point --server / SLIPWAY_SERVER at it", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
        let message = body["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("the server answered {status}"));
        // A command the server's grammar did not take comes with its usage.
        match body["help"].as_str() {
            Some(help) => Err(UsageError(format!("{message}\n\n{}", terminal(help))).into()),
            None => Err(anyhow!(message)),
        }
    }
}

pub use crate::text::percent_encode as encode;
