//! Observability end to end, against a real `slipway serve` on loopback: `/metrics` counts
//! the controllers' reconciles, HTTP requests by route pattern (never by raw path) and
//! GitHub webhook deliveries by outcome, behind the API's access policy; `/readyz` answers
//! when the store and Docker do; `--log-format json` makes every log line a JSON object.

mod harness;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::github::*;
use harness::*;
use serde_json::{json, Value};

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";
const SECRET: &str = "observability-secret";
const TOKEN: &str = "observability-token-0123456789";

fn light_repo() -> TestRepo {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    repo
}

fn get(server: &Server, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request("GET", &format!("{}{path}", server.url), headers, b"")
}

/// One sample of the exposition: its metric name and labels.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format's samples (comments skipped). Label values here never hold
/// quotes or commas, so a simple split is enough.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').expect("label is key=value");
                    (key.to_string(), value.trim_matches('"').to_string())
                })
                .collect();
            Sample {
                name: name.to_string(),
                labels,
                value: value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value: {line}")),
            }
        })
        .collect()
}

/// The value of the sample with exactly these labels, if there is one.
fn value_of(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == wanted)
        .map(|s| s.value)
}

#[test]
fn metrics_count_reconciles_requests_by_route_and_webhook_deliveries() {
    let repo = light_repo();
    let world = GitHubWorld::start();
    let name = unique_name("obs");
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\n",
        world.url()
    );
    let server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    // Before any delivery, every outcome is there at zero.
    let before = samples(&get(&server, "/metrics", &[]).body);
    assert_eq!(
        value_of(
            &before,
            "slipway_github_webhook_deliveries_total",
            &[("outcome", "duplicate")]
        ),
        Some(0.0),
        "{before:#?}"
    );

    server.up_ready("main");

    // Requests whose raw paths must not become label values.
    let missing = unique_name("nope");
    let raw = unique_name("raw-path");
    assert_eq!(get(&server, "/api/v1/envs", &[]).status, 200);
    assert_eq!(
        get(&server, &format!("/api/v1/envs/{env}"), &[]).status,
        200
    );
    assert_eq!(
        get(&server, &format!("/api/v1/envs/{missing}"), &[]).status,
        404
    );
    assert_eq!(get(&server, &format!("/{raw}/x"), &[]).status, 404);
    assert_eq!(
        get(&server, &format!("/api/v1/{raw}"), &[]).status,
        404,
        "unknown API path"
    );

    // Webhook deliveries of every kind.
    let (status, body) = send_webhook(
        &server.url,
        SECRET,
        "ping",
        "obs-ping",
        &fixture("ping/payload.json"),
    );
    assert_eq!(status, 200, "ping: {body}");
    let (status, _) = send_raw(&server.url, &[("Content-Type", "application/json")], b"{}");
    assert_eq!(status, 401, "no signature");
    let (status, _) = send_webhook(&server.url, "not-the-secret", "ping", "obs-bad", &json!({}));
    assert_eq!(status, 401, "wrong signature");
    let (status, _) = send_webhook(
        &server.url,
        SECRET,
        "pull_request",
        "obs-bad-pr",
        &json!({"action": 5}),
    );
    assert_eq!(status, 400, "malformed payload");
    let clone_url = repo.path().display().to_string();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let payload = pull_request_payload(
        "opened",
        "acme/unlinked",
        &clone_url,
        7,
        head.trim(),
        "feature",
        "acme/unlinked",
        "ernie",
    );
    let (status, body) = send_webhook(&server.url, SECRET, "pull_request", "obs-pr-1", &payload);
    assert_eq!(status, 202, "new delivery: {body}");
    let (status, body) = send_webhook(&server.url, SECRET, "pull_request", "obs-pr-1", &payload);
    assert_eq!(status, 200, "redelivery: {body}");

    // The env's pass ends a moment after it is Ready (it prunes old images last): wait for
    // it to be counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let response = loop {
        let response = get(&server, "/metrics", &[]);
        let counted = value_of(
            &samples(&response.body),
            "slipway_controller_reconciles_total",
            &[("kind", "env")],
        )
        .is_some_and(|n| n >= 1.0);
        if counted || Instant::now() > deadline {
            break response;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/openmetrics-text")),
        "{response:?}"
    );
    let text = &response.body;
    let all = samples(text);

    // The controllers: the env was reconciled, and nothing is left working.
    let reconciles = value_of(
        &all,
        "slipway_controller_reconciles_total",
        &[("kind", "env")],
    );
    assert!(reconciles.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        text.contains("slipway_controller_reconcile_duration_seconds_bucket"),
        "{text}"
    );

    // HTTP requests by route pattern, method and status.
    let requests = |method: &str, route: &str, status: &str| {
        value_of(
            &all,
            "slipway_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
        .unwrap_or(0.0)
    };
    assert!(requests("GET", "/api/v1/envs", "200") >= 1.0, "{text}");
    assert!(
        requests("GET", "/api/v1/envs/{env}", "200") >= 1.0,
        "{text}"
    );
    assert_eq!(requests("GET", "/api/v1/envs/{env}", "404"), 1.0, "{text}");
    assert_eq!(requests("GET", "unmatched", "404"), 2.0, "{text}");
    assert!(requests("POST", "/api/v1/commands", "202") >= 1.0, "{text}");
    assert_eq!(requests("POST", "/webhooks/github", "401"), 2.0, "{text}");
    // The earlier scrapes; a scrape is counted once it has answered, so not this one.
    assert!(requests("GET", "/metrics", "200") >= 1.0, "{text}");
    assert!(
        value_of(
            &all,
            "slipway_http_request_duration_seconds_count",
            &[("method", "GET"), ("route", "/api/v1/envs/{env}")]
        )
        .is_some_and(|n| n >= 2.0),
        "{text}"
    );
    // Route labels are patterns: no env name, no raw path, ever.
    for sample in all.iter().filter(|s| s.name.starts_with("slipway_http_")) {
        let route = &sample.labels["route"];
        assert!(
            route == "unmatched" || route.starts_with('/'),
            "odd route label: {sample:?}"
        );
        for raw_value in [env.as_str(), missing.as_str(), raw.as_str()] {
            assert!(
                !route.contains(raw_value),
                "raw path in a label: {sample:?}"
            );
        }
    }

    // Webhook deliveries by outcome, counted where the webhook decides.
    let deliveries = |outcome: &str| {
        value_of(
            &all,
            "slipway_github_webhook_deliveries_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(deliveries("accepted"), Some(1.0), "{text}");
    assert_eq!(deliveries("duplicate"), Some(1.0), "{text}");
    assert_eq!(deliveries("ignored"), Some(1.0), "{text}");
    assert_eq!(deliveries("bad_signature"), Some(2.0), "{text}");
    assert_eq!(deliveries("malformed"), Some(1.0), "{text}");
    assert_eq!(deliveries("store_failed"), Some(0.0), "{text}");

    for sample in &all {
        assert!(
            sample.name.starts_with("slipway_"),
            "unprefixed: {sample:?}"
        );
    }

    // Ready: the store and Docker both answer.
    let ready = get(&server, "/readyz", &[]);
    assert_eq!(ready.status, 200, "{ready:?}");
    let body = ready.json();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["checks"]["store"]["ok"], true, "{body}");
    assert_eq!(body["checks"]["runtime"]["ok"], true, "{body}");
}

#[test]
fn with_a_token_metrics_need_it_and_readyz_stays_open() {
    let repo = light_repo();
    let name = unique_name("obstok");
    let extra = format!("api_token = \"{TOKEN}\"");
    let server = Server::start(ServerOptions {
        extra: &extra,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });

    let wrong = format!("Bearer {TOKEN}x");
    let basic = format!("Basic {TOKEN}");
    for headers in [
        vec![],
        vec![("Authorization", wrong.as_str())],
        vec![("Authorization", basic.as_str())],
    ] {
        let refused = get(&server, "/metrics", &headers);
        assert_eq!(refused.status, 401, "{headers:?}: {refused:?}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Bearer"),
            "{refused:?}"
        );
        let error = refused.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(error.contains("Authorization: Bearer"), "{error}");
        assert!(!refused.body.contains("slipway_"), "{refused:?}");
        // The same policy as the API.
        assert_eq!(get(&server, "/api/v1/envs", &headers).status, 401);
    }

    let bearer = format!("Bearer {TOKEN}");
    let allowed = get(&server, "/metrics", &[("Authorization", &bearer)]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert!(
        allowed
            .body
            .contains("# TYPE slipway_controller_reconciles counter"),
        "{}",
        allowed.body
    );
    // The refusals were counted too, under the route's pattern.
    let all = samples(&allowed.body);
    assert_eq!(
        value_of(
            &all,
            "slipway_http_requests_total",
            &[("method", "GET"), ("route", "/metrics"), ("status", "401")]
        ),
        Some(3.0),
        "{}",
        allowed.body
    );

    // Readiness and liveness need no token and say nothing secret.
    let ready = get(&server, "/readyz", &[]);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json()["ready"], true);
    assert!(!ready.body.contains(TOKEN));
    assert_eq!(get(&server, "/healthz", &[]).status, 200);
}

#[test]
fn json_log_format_makes_every_log_line_a_json_object() {
    let repo = light_repo();
    let name = unique_name("obsjson");
    let server = Server::start_with_env(
        ServerOptions::basic(&name, repo.path(), "compose.yml"),
        &[("SLIPWAY_LOG_FORMAT", "json")],
    );
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    assert_eq!(get(&server, "/readyz", &[]).status, 200);

    let log = server.log();
    // Only whole lines: the server may be writing the next one.
    let complete = &log[..log.rfind('\n').map_or(0, |end| end + 1)];
    let events: Vec<Value> = complete
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"))
        })
        .collect();
    assert!(events.len() > 3, "{log}");
    for event in &events {
        for key in ["timestamp", "level", "target"] {
            assert!(event[key].is_string(), "no {key}: {event}");
        }
    }
    let serving = events
        .iter()
        .find(|e| e["message"] == "Slipway is serving")
        .unwrap_or_else(|| panic!("no serving event:\n{log}"));
    assert_eq!(serving["url"], server.url.as_str(), "{serving}");
    assert!(
        serving["addr"].is_string(),
        "fields at the top level: {serving}"
    );
    // The engine's events are JSON too, with their fields.
    assert!(
        events.iter().any(|e| e["target"]
            .as_str()
            .is_some_and(|t| t.starts_with("envmgr"))
            && e.to_string().contains(&env)),
        "{log}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["serve", "--log-format", "yaml"], None),
        (vec!["serve"], Some("yaml")),
    ] {
        let mut command = Command::new(SLIPWAY);
        command
            .args(&args)
            .env("XDG_DATA_HOME", dir.path())
            .env_remove("SLIPWAY_CONFIG")
            .env_remove("SLIPWAY_LOG_FORMAT")
            .stdin(Stdio::null());
        if let Some(value) = env {
            command.env("SLIPWAY_LOG_FORMAT", value);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("invalid value 'yaml'"), "{stderr}");
        assert!(stderr.contains("--log-format"), "{stderr}");
        assert!(stderr.contains("[possible values: text, json]"), "{stderr}");
        assert!(!stderr.contains("Slipway is serving"), "{stderr}");
    }
}
