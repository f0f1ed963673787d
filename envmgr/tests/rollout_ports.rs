//! The rollout ports' real clients against real servers, each started by the test on a free
//! loopback port with temp config and storage:
//!
//! - Debian's `prometheus-alertmanager`: an alert posted to its v2 API is found by a matching
//!   matcher set and not by another; posted again as resolved, it goes (at once for a client
//!   without a cache, after the cache lifetime for the default client).
//! - Debian's `prometheus`, scraping a tiny metrics endpoint served by the test: instant
//!   queries, the canary/baseline comparison with a template, no data, refused queries.
//!
//! Without the binary a test says why on stderr and passes, unless `CI=true`, where it fails.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envmgr::rollout::ports::{
    evaluate_metric, AlertSource, Alertmanager, MetricCheck, MetricSource, PortError, Prometheus,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Whether `binary` is installed; without it, fails on CI and skips (saying so) elsewhere.
fn installed(binary: &str, package: &str) -> bool {
    if Path::new(binary).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{binary} is missing: CI must install the Debian package {package}");
    }
    eprintln!("skipping: {binary} is not installed (apt-get install -y {package})");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A server process killed (by its own pid) when the test ends, with its log kept for
/// failure messages.
struct Server {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(binary: &str, args: &[String], dir: tempfile::TempDir) -> Server {
        let log = dir.path().join("server.log");
        let child = Command::new(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(dir.path().join("server.err")).expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Server {
            child,
            log,
            _dir: dir,
        }
    }

    fn output(&self) -> String {
        let err = self.log.with_file_name("server.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }

    /// Waits for `GET url` to answer 200.
    async fn wait_ready(&mut self, url: &str) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{url}: the server exited with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "{url} not ready after 60 s:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rfc3339(offset_secs: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset_secs);
    at.to_string()
}

async fn post_alert(base: &str, labels: serde_json::Value, ends_at: Option<String>) {
    let mut alert = serde_json::json!({
        "labels": labels,
        "annotations": {"summary": "p99 above 1 s on web"},
        "startsAt": rfc3339(-60),
    });
    if let Some(ends_at) = ends_at {
        alert["endsAt"] = ends_at.into();
    }
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v2/alerts"))
        .json(&serde_json::json!([alert]))
        .send()
        .await
        .expect("POST /api/v2/alerts");
    assert!(
        response.status().is_success(),
        "posting the alert: {} {}",
        response.status(),
        response.text().await.unwrap_or_default()
    );
}

fn matchers(list: &[&str]) -> Vec<String> {
    list.iter().map(|m| m.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_firing_follows_real_alerts() {
    if !installed(ALERTMANAGER, "prometheus-alertmanager") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
    )
    .expect("config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(
        ALERTMANAGER,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_string(),
        ],
        dir,
    );
    server.wait_ready(&format!("{base}/-/ready")).await;

    let fresh = Alertmanager::with_cache_ttl(&base, Duration::ZERO).expect("client");
    let cached = Alertmanager::new(&base).expect("client");
    let web_latency = matchers(&[r#"alertname="HighLatency""#, r#"service=~"web.*""#]);
    let other_service = matchers(&[r#"alertname="HighLatency""#, r#"service="db""#]);
    let not_paging = matchers(&[r#"severity!="page""#]);
    assert!(fresh.firing(&web_latency).await.expect("firing").is_empty());

    let labels = serde_json::json!({
        "alertname": "HighLatency", "service": "web-api", "severity": "page"
    });
    post_alert(&base, labels.clone(), None).await;
    let firing = fresh.firing(&web_latency).await.expect("firing");
    assert_eq!(firing.len(), 1, "{firing:?}");
    assert_eq!(firing[0].name, "HighLatency");
    assert_eq!(firing[0].labels["service"], "web-api");
    assert_eq!(firing[0].summary.as_deref(), Some("p99 above 1 s on web"));
    assert!(firing[0].starts_at.is_some());
    assert!(fresh
        .firing(&other_service)
        .await
        .expect("firing")
        .is_empty());
    assert!(fresh.firing(&not_paging).await.expect("firing").is_empty());
    // The cached client reads it now, and keeps that answer for its cache lifetime.
    assert_eq!(cached.firing(&web_latency).await.expect("firing").len(), 1);

    post_alert(&base, labels, Some(rfc3339(-1))).await;
    assert!(
        fresh.firing(&web_latency).await.expect("firing").is_empty(),
        "a resolved alert no longer fires"
    );
    // Same set in another order: the same cache entry, still the answer from before.
    let reordered = matchers(&[r#"service=~"web.*""#, r#"alertname="HighLatency""#]);
    assert_eq!(cached.firing(&reordered).await.expect("firing").len(), 1);

    // A matcher Alertmanager would refuse never reaches it.
    let err = fresh
        .firing(&matchers(&["service=~\"(\""]))
        .await
        .unwrap_err();
    assert!(matches!(err, PortError::Config(_)), "{err}");
}

#[tokio::test]
async fn unreachable_servers_are_named() {
    let port = free_port(); // nothing listens there once the probe socket is closed
    let base = format!("http://127.0.0.1:{port}");
    let err = Alertmanager::new(&base)
        .expect("client")
        .firing(&[])
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("GET {base}/api/v2/alerts failed: ")),
        "{text}"
    );
    let err = Prometheus::new(&base)
        .expect("client")
        .query("up")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PortError::Request { url, .. } if url == &format!("{base}/api/v1/query")),
        "{err}"
    );
}

/// Serves `body` as Prometheus text exposition on every request, for the scrape.
async fn serve_metrics(body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    port
}

const DEMO_METRICS: &str = "# TYPE demo_errors gauge\n\
demo_errors{version=\"v1\"} 2\n\
demo_errors{version=\"v2\"} 6\n\
demo_errors{version=\"v3\"} 0\n\
demo_errors{version=\"v4\"} 0\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_queries_a_real_scrape() {
    if !installed(PROMETHEUS, "prometheus") {
        return;
    }
    let target = serve_metrics(DEMO_METRICS).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: demo\n    \
             static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .expect("config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(
        PROMETHEUS,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        dir,
    );
    server.wait_ready(&format!("{base}/-/ready")).await;
    let prometheus = Prometheus::new(&base).expect("client");

    // Wait for the first scrape.
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus
        .query("demo_errors{version=\"v2\"}")
        .await
        .expect("query")
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "no scrape after 60 s:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(
        prometheus.query("demo_errors{version=\"v1\"}").await,
        Ok(Some(2.0))
    );
    assert_eq!(
        prometheus
            .query("scalar(demo_errors{version=\"v2\"}) * 2")
            .await,
        Ok(Some(12.0))
    );
    assert_eq!(
        prometheus.query("demo_errors{version=\"v9\"}").await,
        Ok(None)
    );
    // 0/0 is NaN in PromQL: no data, not a number to compare.
    assert_eq!(
        prometheus
            .query("sum(demo_errors{version=\"v3\"}) / sum(demo_errors{version=\"v4\"})")
            .await,
        Ok(None)
    );

    let err = prometheus.query("sum(demo_errors").await.unwrap_err();
    let PortError::Query {
        error_type, error, ..
    } = &err
    else {
        panic!("a refused query: {err:?}");
    };
    assert_eq!(error_type, "bad_data");
    assert!(!error.is_empty(), "{err}");

    let err = prometheus.query("demo_errors").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("series where one number is needed"),
        "{err}"
    );

    let check = MetricCheck {
        name: "errors".into(),
        query: "demo_errors{version=\"{{version}}\"}".into(),
        max_ratio: 2.0,
    };
    let vars = |version: &str| BTreeMap::from([("version", version.to_string())]);
    let comparison = evaluate_metric(&prometheus, &check, &vars("v2"), &vars("v1"))
        .await
        .expect("comparison");
    assert_eq!(comparison.canary, Some(6.0));
    assert_eq!(comparison.baseline, Some(2.0));
    assert_eq!(comparison.ratio, Some(3.0));
    assert_eq!(comparison.passed, Some(false));
    let comparison = evaluate_metric(&prometheus, &check, &vars("v1"), &vars("v2"))
        .await
        .expect("comparison");
    assert_eq!(comparison.passed, Some(true));
}
