//! The rollout's ports to the outside world, each a small trait with a real client and a twin
//! for tests:
//!
//! - [`AlertSource`]: which alerts fire now. Real: [`Alertmanager`] (its v2 API). A channel's
//!   `alerts = [...]` is one set of matchers that must all hold, as in Alertmanager's own
//!   `filter`; a rollout does not start or advance while an alert matching it fires. Answers
//!   are cached per matcher set for at most [`ALERT_CACHE_TTL`], and a request gives up after
//!   [`REQUEST_TIMEOUT`], so the state acted on is at most 25 s old (the issue allows 30 s)
//!   while `firing` may be called every second.
//! - [`MetricSource`]: one number from a query. Real: [`Prometheus`] (an instant query).
//!   [`MetricCheck`] is a `[[repo.channel.metric]]` entry; [`evaluate_metric`] runs its query
//!   for the canary and for the baseline (the query is a template, see [`render_query`]) and
//!   compares the two.
//!
//! Every failure is a [`PortError`] that names the URL and what went wrong; the caller holds
//! the rollout (and aborts only after `metric_outage`), so nothing here retries.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use regex_automata::dfa::regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long an Alertmanager answer is reused for the same matcher set.
pub const ALERT_CACHE_TTL: Duration = Duration::from_secs(15);
/// How long one request to Alertmanager or Prometheus may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed when asking the outside world.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortError {
    /// No answer: connection refused, timeout, DNS.
    #[error("GET {url} failed: {reason}")]
    Request { url: String, reason: String },
    /// An HTTP error status, with the start of the body.
    #[error("GET {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// An answer that is not what the API documents.
    #[error("GET {url} gave an unexpected answer: {reason}")]
    Answer { url: String, reason: String },
    /// The server understood the query and refused it (Prometheus' `errorType` and `error`).
    #[error("query {query:?} at {url} failed ({error_type}): {error}")]
    Query {
        url: String,
        query: String,
        error_type: String,
        error: String,
    },
    /// A query template or matcher that cannot be used as written.
    #[error("{0}")]
    Config(String),
}

// ---------------------------------------------------------------------------------------
// Alerts

/// One alert that fires now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiringAlert {
    /// The `alertname` label.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// When it started firing (RFC 3339, as Alertmanager says it).
    pub starts_at: Option<String>,
    /// The `summary` annotation, else `description`.
    pub summary: Option<String>,
}

impl FiringAlert {
    /// An alert with these labels (`alertname` among them) and nothing else.
    pub fn with_labels<'a>(labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FiringAlert {
            name: labels.get("alertname").cloned().unwrap_or_default(),
            labels,
            starts_at: None,
            summary: None,
        }
    }
}

/// Which alerts fire now.
#[async_trait]
pub trait AlertSource: Send + Sync {
    /// The active (not silenced, not inhibited) alerts that every matcher in `matchers`
    /// holds for, e.g. `["alertname=\"HighLatency\"", "service=~\"web.*\""]`.
    async fn firing(&self, matchers: &[String]) -> Result<Vec<FiringAlert>, PortError>;
}

/// The matcher operators Alertmanager knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// One parsed `label<op>"value"` matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// The anchored pattern, for `=~` and `!~`.
    regex: Option<Arc<Regex>>,
}

impl Matcher {
    /// Reads `name="value"`, `name!="value"`, `name=~"regex"` or `name!~"regex"` (the value
    /// may also be unquoted, as Alertmanager accepts). A bad label name, operator or regex is
    /// an error naming the matcher, so a channel's config can be checked when it is read.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("alert matcher {text:?}: {why}");
        let trimmed = text.trim();
        let label_end = trimmed
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or_else(|| bad("no operator (use =, !=, =~ or !~)"))?;
        let label = &trimmed[..label_end];
        if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("the label name must start with a letter or _"));
        }
        let rest = trimmed[label_end..].trim_start();
        let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
            (MatchOp::Regex, r)
        } else if let Some(r) = rest.strip_prefix("!~") {
            (MatchOp::NotRegex, r)
        } else if let Some(r) = rest.strip_prefix("!=") {
            (MatchOp::NotEqual, r)
        } else if let Some(r) = rest.strip_prefix('=') {
            (MatchOp::Equal, r)
        } else {
            return Err(bad("no operator after the label (use =, !=, =~ or !~)"));
        };
        let rest = rest.trim();
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            let inner = quoted
                .strip_suffix('"')
                .ok_or_else(|| bad("the value's closing quote is missing"))?;
            unescape(inner).ok_or_else(|| bad("a bad escape in the value"))?
        } else {
            rest.to_string()
        };
        let regex = match op {
            MatchOp::Regex | MatchOp::NotRegex => Some(Arc::new(
                // Alertmanager anchors matcher regexes at both ends.
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| bad(&format!("the regex does not compile: {e}")))?,
            )),
            _ => None,
        };
        Ok(Matcher {
            label: label.to_string(),
            op,
            value,
            regex,
        })
    }

    /// Whether an alert with these labels satisfies the matcher (a missing label reads as
    /// the empty string, as in Alertmanager).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.label).map_or("", String::as_str);
        let regex_hit = || {
            self.regex
                .as_ref()
                .is_some_and(|r| r.is_match(value.as_bytes()))
        };
        match self.op {
            MatchOp::Equal => value == self.value,
            MatchOp::NotEqual => value != self.value,
            MatchOp::Regex => regex_hit(),
            MatchOp::NotRegex => !regex_hit(),
        }
    }
}

fn unescape(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                'n' => out.push('\n'),
                other => out.push(other),
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// The Alertmanager v2 API, with answers cached per matcher set.
pub struct Alertmanager {
    base_url: String,
    http: reqwest::Client,
    ttl: Duration,
    /// One slot per matcher set, so concurrent callers of one set wait for one request.
    cache: Mutex<HashMap<Vec<String>, AlertSlot>>,
}

/// The cached answer for one matcher set; its lock is held while it is fetched.
type AlertSlot = Arc<tokio::sync::Mutex<Option<CachedAlerts>>>;

struct CachedAlerts {
    fetched: Instant,
    alerts: Vec<FiringAlert>,
}

impl Alertmanager {
    /// `base_url` is Alertmanager's root, e.g. `http://alertmanager:9093`.
    pub fn new(base_url: &str) -> Result<Self, PortError> {
        Self::with_cache_ttl(base_url, ALERT_CACHE_TTL)
    }

    /// `new` with another cache lifetime (tests use zero to see every change at once).
    pub fn with_cache_ttl(base_url: &str, ttl: Duration) -> Result<Self, PortError> {
        Ok(Alertmanager {
            base_url: base_url.trim_end_matches('/').to_string(),
            http: http_client()?,
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    async fn fetch(&self, matchers: &[String]) -> Result<Vec<FiringAlert>, PortError> {
        let url = format!("{}/api/v2/alerts", self.base_url);
        let mut query: Vec<(&str, &str)> = vec![
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
        ];
        query.extend(matchers.iter().map(|m| ("filter", m.as_str())));
        let body = get_json(&self.http, &url, &query).await?;
        let answer = |reason: String| PortError::Answer {
            url: crate::snippet::strip_url_credentials(&url),
            reason,
        };
        let alerts: Vec<GettableAlert> = serde_json::from_value(body)
            .map_err(|e| answer(format!("not a list of alerts: {e}")))?;
        Ok(alerts
            .into_iter()
            // The query already leaves silenced and inhibited alerts out; an Alertmanager
            // that ignored the flags still marks them `suppressed`. (`unprocessed` alerts,
            // just received and not yet routed, fire too.)
            .filter(|a| a.status.as_ref().is_none_or(|s| s.state != "suppressed"))
            .map(|a| FiringAlert {
                name: a.labels.get("alertname").cloned().unwrap_or_default(),
                summary: a
                    .annotations
                    .get("summary")
                    .or_else(|| a.annotations.get("description"))
                    .cloned(),
                starts_at: a.starts_at,
                labels: a.labels,
            })
            .collect())
    }
}

/// The parts of Alertmanager's `gettableAlert` used here.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    status: Option<AlertStatus>,
}

#[derive(Deserialize)]
struct AlertStatus {
    state: String,
}

#[async_trait]
impl AlertSource for Alertmanager {
    async fn firing(&self, matchers: &[String]) -> Result<Vec<FiringAlert>, PortError> {
        for matcher in matchers {
            Matcher::parse(matcher).map_err(PortError::Config)?;
        }
        // A set: order and repeats do not change the answer.
        let mut key: Vec<String> = matchers.iter().map(|m| m.trim().to_string()).collect();
        key.sort();
        key.dedup();
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.entry(key.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(cached) = slot.as_ref() {
            if cached.fetched.elapsed() < self.ttl {
                return Ok(cached.alerts.clone());
            }
        }
        let alerts = self.fetch(&key).await?;
        tracing::debug!(
            matchers = ?key,
            firing = alerts.len(),
            "asked Alertmanager which alerts fire"
        );
        *slot = Some(CachedAlerts {
            fetched: Instant::now(),
            alerts: alerts.clone(),
        });
        Ok(alerts)
    }
}

/// The twin: a firing set the test changes, filtered by the same matcher rules.
#[derive(Default)]
pub struct StaticAlerts {
    state: Mutex<StaticAlertState>,
}

#[derive(Default)]
struct StaticAlertState {
    alerts: Vec<FiringAlert>,
    outage: Option<String>,
    calls: usize,
}

impl StaticAlerts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the firing set.
    pub fn set(&self, alerts: Vec<FiringAlert>) {
        self.lock().alerts = alerts;
    }

    /// Makes every later call fail with `reason` (`None` ends the outage).
    pub fn set_outage(&self, reason: Option<&str>) {
        self.lock().outage = reason.map(str::to_string);
    }

    /// How often `firing` was called.
    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StaticAlertState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl AlertSource for StaticAlerts {
    async fn firing(&self, matchers: &[String]) -> Result<Vec<FiringAlert>, PortError> {
        let parsed = matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(PortError::Config)?;
        let mut state = self.lock();
        state.calls += 1;
        if let Some(reason) = &state.outage {
            return Err(PortError::Request {
                url: "static-alerts".to_string(),
                reason: reason.clone(),
            });
        }
        Ok(state
            .alerts
            .iter()
            .filter(|a| parsed.iter().all(|m| m.matches(&a.labels)))
            .cloned()
            .collect())
    }
}

// ---------------------------------------------------------------------------------------
// Metrics

/// One number from a query; `None` when the query has no data (an empty result, or NaN such
/// as a ratio of two zero rates).
#[async_trait]
pub trait MetricSource: Send + Sync {
    async fn query(&self, promql: &str) -> Result<Option<f64>, PortError>;
}

/// Prometheus' HTTP API: instant queries.
pub struct Prometheus {
    base_url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// `base_url` is Prometheus' root, e.g. `http://prometheus:9090`.
    pub fn new(base_url: &str) -> Result<Self, PortError> {
        Ok(Prometheus {
            base_url: base_url.trim_end_matches('/').to_string(),
            http: http_client()?,
        })
    }
}

#[async_trait]
impl MetricSource for Prometheus {
    async fn query(&self, promql: &str) -> Result<Option<f64>, PortError> {
        let url = format!("{}/api/v1/query", self.base_url);
        let body = match get_json(&self.http, &url, &[("query", promql)]).await {
            Ok(body) => body,
            // Prometheus answers a refused query with 400/422/503 and a JSON error body.
            Err(PortError::Status { status, body, .. })
                if serde_json::from_str::<Value>(&body).is_ok_and(|b| b["status"] == "error") =>
            {
                let parsed: Value = serde_json::from_str(&body).unwrap_or_default();
                return Err(prometheus_error(&url, promql, &parsed, status));
            }
            Err(e) => return Err(e),
        };
        let value = instant_value(&body).map_err(|reason| match reason {
            InstantError::Refused => prometheus_error(&url, promql, &body, 200),
            InstantError::Shape(reason) => PortError::Answer {
                url: crate::snippet::strip_url_credentials(&url),
                reason: format!("query {promql:?}: {reason}"),
            },
        })?;
        tracing::debug!(query = promql, ?value, "asked Prometheus");
        Ok(value)
    }
}

fn prometheus_error(url: &str, query: &str, body: &Value, status: u16) -> PortError {
    let url = &crate::snippet::strip_url_credentials(url);
    PortError::Query {
        url: url.to_string(),
        query: query.to_string(),
        error_type: body["errorType"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_string),
        error: body["error"]
            .as_str()
            .unwrap_or("no error text")
            .to_string(),
    }
}

enum InstantError {
    Refused,
    Shape(String),
}

/// The number in an instant query's answer: a scalar, or a vector of at most one sample.
fn instant_value(body: &Value) -> Result<Option<f64>, InstantError> {
    if body["status"] != "success" {
        return Err(InstantError::Refused);
    }
    let data = &body["data"];
    let sample = match data["resultType"].as_str() {
        Some("scalar") => &data["result"],
        Some("vector") => {
            let series = data["result"]
                .as_array()
                .ok_or_else(|| InstantError::Shape("a vector without a result list".into()))?;
            match series.as_slice() {
                [] => return Ok(None),
                [one] => &one["value"],
                many => {
                    return Err(InstantError::Shape(format!(
                        "{} series where one number is needed; aggregate them, e.g. with sum(...)",
                        many.len()
                    )))
                }
            }
        }
        other => {
            return Err(InstantError::Shape(format!(
                "result type {} where a vector or scalar is needed",
                other.unwrap_or("missing")
            )))
        }
    };
    let text = sample[1]
        .as_str()
        .ok_or_else(|| InstantError::Shape(format!("a sample without a value: {sample}")))?;
    let value = match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        _ => text
            .parse::<f64>()
            .map_err(|_| InstantError::Shape(format!("the value {text:?} is not a number")))?,
    };
    Ok((!value.is_nan()).then_some(value))
}

/// The twin: fixed answers per query text.
#[derive(Default)]
pub struct StaticMetrics {
    answers: Mutex<HashMap<String, Result<Option<f64>, String>>>,
    asked: Mutex<Vec<String>>,
}

impl StaticMetrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// `query` answers `value` from now on.
    pub fn set(&self, query: &str, value: Option<f64>) {
        self.lock_answers().insert(query.to_string(), Ok(value));
    }

    /// `query` fails with `error` from now on.
    pub fn set_error(&self, query: &str, error: &str) {
        self.lock_answers()
            .insert(query.to_string(), Err(error.to_string()));
    }

    /// The queries asked so far, in order.
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn lock_answers(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Result<Option<f64>, String>>> {
        self.answers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl MetricSource for StaticMetrics {
    async fn query(&self, promql: &str) -> Result<Option<f64>, PortError> {
        self.asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(promql.to_string());
        match self.lock_answers().get(promql) {
            Some(Ok(value)) => Ok(*value),
            Some(Err(error)) => Err(PortError::Query {
                url: "static-metrics".to_string(),
                query: promql.to_string(),
                error_type: "static".to_string(),
                error: error.clone(),
            }),
            None => Err(PortError::Query {
                url: "static-metrics".to_string(),
                query: promql.to_string(),
                error_type: "static".to_string(),
                error: "no answer set for this query".to_string(),
            }),
        }
    }
}

/// A `[[repo.channel.metric]]` entry: a query whose value must not be more than `max_ratio`
/// times higher on the canary than on the baseline (higher is worse: error ratios,
/// latencies, memory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    pub name: String,
    /// A PromQL template, see [`render_query`].
    pub query: String,
    pub max_ratio: f64,
}

/// The placeholders a query template may use.
pub const QUERY_PLACEHOLDERS: [&str; 5] = ["version", "env", "commit", "channel", "repo"];

impl MetricCheck {
    /// Whether the entry can be used: a positive `max_ratio` and a template that only uses
    /// known placeholders. For checking a config when it is read.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_ratio.is_finite() && self.max_ratio > 0.0) {
            return Err(format!(
                "metric {:?}: max_ratio must be a positive number, not {}",
                self.name, self.max_ratio
            ));
        }
        let sample: BTreeMap<&str, String> = QUERY_PLACEHOLDERS
            .iter()
            .map(|p| (*p, "x".to_string()))
            .collect();
        render_query(&self.query, &sample)
            .map(|_| ())
            .map_err(|e| format!("metric {:?}: {e}", self.name))
    }
}

/// Fills `{{version}}`, `{{env}}`, `{{commit}}`, `{{channel}}` and `{{repo}}` (spaces inside
/// the braces allowed) from `vars`. Values are escaped for a double-quoted PromQL string
/// (`\` and `"`), which is where label values go: `rate(http_errors{version="{{version}}"}[1m])`.
/// An unknown placeholder, one without a value, or an unclosed `{{` is an error naming it.
pub fn render_query(template: &str, vars: &BTreeMap<&str, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            format!("query template: `{{{{` without a closing `}}}}` in {template:?}")
        })?;
        let name = after[..close].trim();
        if !QUERY_PLACEHOLDERS.contains(&name) {
            return Err(format!(
                "query template: unknown placeholder {{{{{name}}}}} (known: {})",
                QUERY_PLACEHOLDERS
                    .iter()
                    .map(|p| format!("{{{{{p}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let value = vars
            .get(name)
            .ok_or_else(|| format!("query template: no value for {{{{{name}}}}}"))?;
        for c in value.chars() {
            match c {
                '\\' | '"' => {
                    out.push('\\');
                    out.push(c);
                }
                '\n' => out.push_str("\\n"),
                _ => out.push(c),
            }
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One metric check's canary-against-baseline result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricComparison {
    /// The canary's value; `None` when its query had no data.
    pub canary: Option<f64>,
    /// The baseline's value; `None` when its query had no data.
    pub baseline: Option<f64>,
    /// `canary / baseline`: 1 when both are 0, infinite when only the baseline is 0 (a
    /// version that turns a zero metric nonzero is worse by any ratio); `None` without data.
    pub ratio: Option<f64>,
    /// `Some(ratio <= max_ratio)`; `None` without data on either side, which is no evidence
    /// either way: the rollout waits as for too few requests, never passes silently.
    pub passed: Option<bool>,
}

/// Runs `check.query` rendered with `canary_vars` and with `baseline_vars` and compares the
/// values. A query error, or a template error (as [`PortError::Config`]), is returned as is
/// so the rollout can hold.
pub async fn evaluate_metric(
    source: &dyn MetricSource,
    check: &MetricCheck,
    canary_vars: &BTreeMap<&str, String>,
    baseline_vars: &BTreeMap<&str, String>,
) -> Result<MetricComparison, PortError> {
    let render = |vars| {
        render_query(&check.query, vars)
            .map_err(|e| PortError::Config(format!("metric {:?}: {e}", check.name)))
    };
    let (canary_query, baseline_query) = (render(canary_vars)?, render(baseline_vars)?);
    let canary = source.query(&canary_query).await?;
    let baseline = source.query(&baseline_query).await?;
    let ratio = match (canary, baseline) {
        (Some(c), Some(b)) => Some(metric_ratio(c, b)),
        _ => None,
    };
    Ok(MetricComparison {
        canary,
        baseline,
        ratio,
        passed: ratio.map(|r| r <= check.max_ratio),
    })
}

fn metric_ratio(canary: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        if canary <= 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        canary / baseline
    }
}

// ---------------------------------------------------------------------------------------
// HTTP

fn http_client() -> Result<reqwest::Client, PortError> {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| PortError::Config(format!("building the HTTP client: {}", chain(&e))))
}

/// GET with query parameters; the JSON body of a 2xx answer.
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
) -> Result<Value, PortError> {
    // Errors name the URL without any user:password in it: they reach status and chat.
    let shown = crate::snippet::strip_url_credentials(url);
    let response = http
        .get(url)
        .query(query)
        .send()
        .await
        .map_err(|e| PortError::Request {
            url: shown.clone(),
            reason: chain(&e.without_url()),
        })?;
    let status = response.status();
    let text = response.text().await.map_err(|e| PortError::Request {
        url: shown.clone(),
        reason: format!("reading the answer: {}", chain(&e.without_url())),
    })?;
    if !status.is_success() {
        return Err(PortError::Status {
            url: shown.clone(),
            status: status.as_u16(),
            body: text
                .chars()
                .take(500)
                .collect::<String>()
                .trim()
                .to_string(),
        });
    }
    serde_json::from_str(&text).map_err(|e| PortError::Answer {
        url: shown.clone(),
        reason: format!(
            "not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })
}

/// An error and its causes on one line: reqwest's own message is only "error sending request".
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(version: &str) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("version", version.to_string()),
            ("env", "shop-production".to_string()),
            ("commit", "0123abc".to_string()),
            ("channel", "production".to_string()),
            ("repo", "shop".to_string()),
        ])
    }

    #[test]
    fn templates_fill_known_placeholders_and_name_unknown_ones() {
        let q = render_query(
            r#"sum(rate(errors{env="{{env}}", version="{{ version }}"}[1m])) / {{repo}}"#,
            &vars("v2"),
        );
        assert_eq!(
            q.as_deref(),
            Ok(r#"sum(rate(errors{env="shop-production", version="v2"}[1m])) / shop"#)
        );
        assert_eq!(
            render_query("up{job=\"{{ job }}\"}", &vars("v2")).unwrap_err(),
            "query template: unknown placeholder {{job}} (known: {{version}}, {{env}}, \
             {{commit}}, {{channel}}, {{repo}})"
        );
        assert_eq!(
            render_query("x{{commit}}", &BTreeMap::new()).unwrap_err(),
            "query template: no value for {{commit}}"
        );
        assert!(render_query("x{{version", &vars("v"))
            .unwrap_err()
            .contains("without a closing"));
        assert_eq!(
            render_query(r#"a{v="{{version}}"}"#, &vars(r#"we"ird\"#)).unwrap(),
            r#"a{v="we\"ird\\"}"#
        );
        assert_eq!(
            render_query("no placeholders", &BTreeMap::new()).unwrap(),
            "no placeholders"
        );
    }

    #[test]
    fn metric_checks_validate() {
        let check = MetricCheck {
            name: "p99".into(),
            query: "q{v=\"{{version}}\"}".into(),
            max_ratio: 1.2,
        };
        assert_eq!(check.validate(), Ok(()));
        let bad_ratio = MetricCheck {
            max_ratio: 0.0,
            ..check.clone()
        };
        assert!(bad_ratio.validate().unwrap_err().contains("max_ratio"));
        let bad_template = MetricCheck {
            query: "{{sha}}".into(),
            ..check
        };
        assert!(bad_template.validate().unwrap_err().contains("{{sha}}"));
    }

    #[tokio::test]
    async fn comparisons_handle_zero_and_missing_baselines() {
        let metrics = StaticMetrics::new();
        let check = MetricCheck {
            name: "errors".into(),
            query: "errors{version=\"{{version}}\"}".into(),
            max_ratio: 1.5,
        };
        let (canary_vars, baseline_vars) = (vars("v2"), vars("v1"));
        let compare = |canary: Option<f64>, baseline: Option<f64>| {
            metrics.set("errors{version=\"v2\"}", canary);
            metrics.set("errors{version=\"v1\"}", baseline);
            evaluate_metric(&metrics, &check, &canary_vars, &baseline_vars)
        };
        let c = compare(Some(3.0), Some(2.0)).await.unwrap();
        assert_eq!((c.ratio, c.passed), (Some(1.5), Some(true)));
        let c = compare(Some(3.1), Some(2.0)).await.unwrap();
        assert_eq!(c.passed, Some(false));
        let c = compare(Some(0.0), Some(0.0)).await.unwrap();
        assert_eq!((c.ratio, c.passed), (Some(1.0), Some(true)));
        let c = compare(Some(0.01), Some(0.0)).await.unwrap();
        assert_eq!((c.ratio, c.passed), (Some(f64::INFINITY), Some(false)));
        let c = compare(None, Some(1.0)).await.unwrap();
        assert_eq!((c.ratio, c.passed), (None, None));
        assert_eq!(
            metrics.asked().last().map(String::as_str),
            Some("errors{version=\"v1\"}")
        );
        metrics.set_error("errors{version=\"v2\"}", "boom");
        let err = evaluate_metric(&metrics, &check, &vars("v2"), &vars("v1"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[test]
    fn matchers_parse_and_match_like_alertmanager() {
        let labels = BTreeMap::from([
            ("alertname".to_string(), "HighLatency".to_string()),
            ("service".to_string(), "web-api".to_string()),
            ("severity".to_string(), "page".to_string()),
        ]);
        let hit = |m: &str| Matcher::parse(m).unwrap().matches(&labels);
        assert!(hit(r#"alertname="HighLatency""#));
        assert!(!hit(r#"alertname="High""#));
        assert!(hit(r#"service=~"web.*""#));
        assert!(!hit(r#"service=~"web""#), "regexes are anchored");
        assert!(hit(r#"severity!="info""#));
        assert!(hit(r#"severity !~ "info|warning""#));
        assert!(hit("team!=platform"), "a missing label is empty");
        assert!(hit(r#"team="""#));
        for bad in ["alertname", "=x", "1abc=\"x\"", "a=~\"(\"", "a=\"x"] {
            assert!(Matcher::parse(bad).is_err(), "{bad} should not parse");
        }
        assert!(Matcher::parse("a=~\"(\"").unwrap_err().contains("regex"));
    }

    #[tokio::test]
    async fn static_alerts_filter_by_all_matchers() {
        let alerts = StaticAlerts::new();
        alerts.set(vec![
            FiringAlert::with_labels([("alertname", "HighLatency"), ("service", "web")]),
            FiringAlert::with_labels([("alertname", "DiskFull"), ("service", "db")]),
        ]);
        let set = |ms: &[&str]| ms.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        let names = |v: Vec<FiringAlert>| v.into_iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(
            names(alerts.firing(&set(&["service=~\"web|db\""])).await.unwrap()),
            ["HighLatency", "DiskFull"]
        );
        assert_eq!(
            names(
                alerts
                    .firing(&set(&["service=~\"web|db\"", "alertname!=\"DiskFull\""]))
                    .await
                    .unwrap()
            ),
            ["HighLatency"]
        );
        alerts.set(vec![]);
        assert!(alerts
            .firing(&set(&["service=\"web\""]))
            .await
            .unwrap()
            .is_empty());
        alerts.set_outage(Some("connection refused"));
        assert!(alerts.firing(&[]).await.is_err());
        assert_eq!(alerts.calls(), 4);
    }

    #[test]
    fn instant_answers() {
        let value = |body: &str| instant_value(&serde_json::from_str(body).unwrap());
        let ok = |body: &str| value(body).ok().unwrap();
        assert_eq!(
            ok(
                r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#
            ),
            Some(0.25)
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#),
            None
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"NaN"]}}"#),
            None
        );
        assert_eq!(
            ok(r#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"+Inf"]}}"#),
            Some(f64::INFINITY)
        );
        let Err(InstantError::Shape(why)) = value(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"1"]},{"value":[1,"2"]}]}}"#,
        ) else {
            panic!("two series must be refused");
        };
        assert!(why.contains("2 series"), "{why}");
        assert!(matches!(
            value(r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#),
            Err(InstantError::Shape(_))
        ));
        assert!(matches!(
            value(r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#),
            Err(InstantError::Refused)
        ));
    }
}
