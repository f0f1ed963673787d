//! The HTTP surface end to end, against a real `slipway serve` on loopback: every
//! rejection has the one error shape (`{"error": "..."}`) with the right status on every
//! route (API and webhooks), pull-request numbers outside 1..=2^31-1 are refused, a
//! configured server never builds the demo image, and an unsafe `api_token` stops the
//! start before anything listens.

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::github::*;
use harness::*;
use serde_json::{json, Value};

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";
const SECRET: &str = "http-surface-secret";

fn server_with_github() -> (Server, GitHubWorld, TestRepo) {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    let world = GitHubWorld::start();
    let name = unique_name("http");
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\n",
        world.url()
    );
    let server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    (server, world, repo)
}

/// Asserts the response is the API's error shape with `status`; returns the message.
fn assert_error(response: &HttpResponse, status: u16, what: &str) -> String {
    assert_eq!(response.status, status, "{what}: {response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{what}: not JSON: {response:?}"
    );
    let body: Value = serde_json::from_str(&response.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {}", response.body));
    let message = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no error string: {body}"));
    assert!(!message.trim().is_empty(), "{what}: empty message");
    message.to_string()
}

fn request(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    http_request(method, &format!("{}{path}", server.url), headers, body)
}

/// Like [`http_request`], but a server that answers before reading the whole (too large)
/// body may close the connection while we still write: keep what it answered.
fn request_large(
    server: &Server,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    use std::io::{Read, Write};
    let host = server.url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body));
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    HttpResponse {
        status,
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect(),
        body: body.to_string(),
    }
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn every_rejection_has_the_json_error_shape_and_the_right_status() {
    let (server, _world, _repo) = server_with_github();

    // Bad path and query values: 400 with JSON, not axum's plain text.
    for path in [
        "/api/v1/envs/x/runs/notanumber",
        "/api/v1/envs/x/runs/1.5",
        "/api/v1/envs/x/runs/99999999999999999999999",
        "/api/v1/envs/x/runs/notanumber/log",
        "/api/v1/audit?limit=abc",
        "/api/v1/audit?after=zz",
        "/api/v1/audit?before=-",
        "/api/v1/envs/x/logs?tail=-1",
        "/api/v1/envs/x/logs?tail=abc",
        "/api/v1/envs/x/logs?follow=maybe",
        "/api/v1/envs/x/events?after=zz",
        "/api/v1/envs?all=perhaps",
        "/api/v1/audit?limit=99999999999999999999",
        "/api/v1/audit?limit=1&limit=2",
        "/api/v1/envs/x/logs?tail=1e3",
        "/api/v1/envs/%ZZ/runs/1",
    ] {
        assert_error(&request(&server, "GET", path, &[], b""), 400, path);
    }

    // Unknown routes and methods.
    assert_error(
        &request(&server, "GET", "/nope", &[], b""),
        404,
        "unknown route",
    );
    assert_error(
        &request(&server, "GET", "/api/v1/nope", &[], b""),
        404,
        "unknown api route",
    );
    for (method, path) in [
        ("PUT", "/api/v1/envs"),
        ("PATCH", "/api/v1/commands"),
        ("GET", "/api/v1/commands"),
        ("DELETE", "/api/v1/repos"),
        ("GET", "/webhooks/github"),
        ("POST", "/healthz"),
    ] {
        assert_error(
            &request(&server, method, path, &[], b""),
            405,
            &format!("{method} {path}"),
        );
    }

    // Bodies: wrong shape is 400 (never 422), not JSON at all is 400, no content type 415.
    for (path, body) in [
        ("/api/v1/envs/x/runs", &b"{\"failed_only\": \"yes\"}"[..]),
        ("/api/v1/envs/x/runs", b"{\"unknown\": 1}"),
        ("/api/v1/envs/x/runs", b"[1, 2"),
        ("/api/v1/envs", b"{\"branch\": 3}"),
        ("/api/v1/envs", b"{}"),
        ("/api/v1/envs", b"not json"),
        ("/api/v1/envs/x/extend", b"{\"by\": 7}"),
        ("/api/v1/commands", b"{\"command\": 7}"),
        ("/api/v1/commands", b"{}"),
    ] {
        let what = format!("POST {path} {}", String::from_utf8_lossy(body));
        assert_error(&request(&server, "POST", path, &[JSON], body), 400, &what);
    }
    assert_error(
        &request(&server, "POST", "/api/v1/envs", &[], b"{\"branch\": \"x\"}"),
        415,
        "no content type",
    );
    assert_error(
        &request(
            &server,
            "POST",
            "/api/v1/commands",
            &[("Content-Type", "text/plain")],
            b"{}",
        ),
        415,
        "text/plain",
    );

    // Too large: 413 on every route that takes a body, the webhooks included.
    let big = vec![b' '; 10 * 1024 * 1024 + 1];
    for path in [
        "/api/v1/commands",
        "/api/v1/envs",
        "/api/v1/envs/x/extend",
        "/api/v1/envs/x/runs",
        "/webhooks/github",
    ] {
        let signature = sign_body(SECRET, &big);
        let headers = [
            JSON,
            ("X-GitHub-Event", "ping"),
            ("X-GitHub-Delivery", "big-1"),
            ("X-Hub-Signature-256", signature.as_str()),
        ];
        assert_error(&request_large(&server, path, &headers, &big), 413, path);
    }

    // The webhook's own answers keep their status and get the same shape.
    let (status, body) = send_raw(&server.url, &[JSON], b"{}");
    assert_eq!(status, 401, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"].is_string(),
        "{body}"
    );
}

#[test]
fn pull_request_numbers_outside_the_32_bit_range_are_refused() {
    let (server, _world, repo) = server_with_github();
    let clone_url = repo.path().display().to_string();
    let head = repo.git(&["rev-parse", "HEAD"]);
    let out_of_range: [Value; 6] = [
        json!(0),
        json!(-1),
        json!(2_147_483_648u64),
        json!(4_294_967_297u64),
        json!(u64::MAX),
        json!(1.5),
    ];
    for (i, number) in out_of_range.iter().enumerate() {
        let mut payload = pull_request_payload(
            "opened",
            "acme/shop",
            &clone_url,
            7,
            head.trim(),
            "feature",
            "acme/shop",
            "ernie",
        );
        payload["number"] = number.clone();
        payload["pull_request"]["number"] = number.clone();
        let (status, body) = send_webhook(
            &server.url,
            SECRET,
            "pull_request",
            &format!("pr-range-{i}"),
            &payload,
        );
        assert_eq!(status, 400, "number {number}: {body}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains("malformed"),
            "{body}"
        );

        let mut comment = issue_comment_payload("acme/shop", 7, "/slipway help", "ernie");
        comment["issue"]["number"] = number.clone();
        let (status, body) = send_webhook(
            &server.url,
            SECRET,
            "issue_comment",
            &format!("c-range-{i}"),
            &comment,
        );
        assert_eq!(status, 400, "comment on {number}: {body}");
    }
    // The edges of the range are accepted (stored for processing).
    for (i, number) in [1u64, 2_147_483_647].into_iter().enumerate() {
        let payload = pull_request_payload(
            "opened",
            "acme/other",
            &clone_url,
            number,
            head.trim(),
            "feature",
            "acme/other",
            "ernie",
        );
        let (status, body) = send_webhook(
            &server.url,
            SECRET,
            "pull_request",
            &format!("pr-edge-{i}"),
            &payload,
        );
        assert!(
            status == 202 || status == 200,
            "number {number}: {status} {body}"
        );
    }
}

/// A Unix-socket proxy in front of the real Docker engine that records what its clients
/// send, so a test can see which Docker calls `slipway serve` makes.
struct DockerRecorder {
    socket: std::path::PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl DockerRecorder {
    fn start() -> Self {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock") else {
                    return;
                };
                let (mut client_read, mut engine_write) =
                    (client.try_clone().unwrap(), engine.try_clone().unwrap());
                let record = record.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = client_read.read(&mut buf) {
                        if n == 0 || engine_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = engine_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut engine, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            socket,
            seen,
            _dir: dir,
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The request lines (method and path) clients sent so far.
    fn requests(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        String::from_utf8_lossy(&seen)
            .lines()
            .filter(|l| {
                ["GET ", "POST ", "HEAD ", "DELETE ", "PUT "]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Starts `slipway serve` (with `config`, or in demo mode) against `docker`, waits until it
/// serves (or exits), stops it and returns its stderr.
fn serve_through(
    docker: &DockerRecorder,
    config: Option<&std::path::Path>,
    data: &std::path::Path,
) -> String {
    let log_path = data.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(SLIPWAY);
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .env("DOCKER_HOST", docker.docker_host())
        .env("XDG_DATA_HOME", data)
        .env("RUST_LOG", "info")
        .env_remove("SLIPWAY_API_TOKEN")
        .env_remove("SLIPWAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let done = text.contains("Slipway is serving") || child.try_wait().unwrap().is_some();
        if done || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_configured_server_does_not_build_the_demo_image() {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slipway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[repo]]\nname = \"{}\"\nurl = \"{}\"\nenv_file = \"compose.yml\"\n",
            dir.path().join("data").display(),
            unique_name("nodemo"),
            repo.path().display()
        ),
    )
    .unwrap();
    let docker = DockerRecorder::start();
    let log = serve_through(&docker, Some(&config), dir.path());
    assert!(log.contains("Slipway is serving"), "{log}");
    let requests = docker.requests();
    assert!(
        !requests.is_empty(),
        "the server never reached Docker through the recorder"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("demo-app") || r.contains("/build")),
        "a server with --config looked up or built the demo image: {requests:#?}"
    );
    assert!(!log.contains("preparing the bundled demo image"), "{log}");

    // The control: demo mode (no config) does prepare it, through the same recorder. It
    // may fail to listen (its port is fixed); the image comes before the listener.
    let demo_dir = tempfile::tempdir().unwrap();
    let docker = DockerRecorder::start();
    let log = serve_through(&docker, None, demo_dir.path());
    assert!(log.contains("preparing the bundled demo image"), "{log}");
    assert!(
        docker.requests().iter().any(|r| r.contains("demo-app")),
        "demo mode did not look the demo image up: {:#?}\n{log}",
        docker.requests()
    );
}

/// Runs `slipway serve --config <file>` with `config` (plus `SLIPWAY_API_TOKEN` when given)
/// and expects it to exit non-zero, without ever listening, within a bounded time.
fn serve_must_refuse(config: &str, env_token: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n{config}", dir.path().display()),
    )
    .unwrap();
    let mut command = Command::new(SLIPWAY);
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("SLIPWAY_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = env_token {
        command.env("SLIPWAY_API_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("slipway serve kept running with {config:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success(),
        "serve started with {config:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("Slipway is serving"),
        "serve listened with {config:?}:\n{stderr}"
    );
    stderr
}

#[test]
fn an_empty_or_short_api_token_stops_the_start() {
    for token in ["", " ", "\t \t"] {
        for listen in ["0.0.0.0:0", "127.0.0.1:0"] {
            let config = format!("listen = \"{listen}\"\napi_token = {token:?}\n");
            let stderr = serve_must_refuse(&config, None);
            assert!(stderr.contains("api_token is empty"), "{config}: {stderr}");
        }
        let stderr = serve_must_refuse("listen = \"0.0.0.0:0\"\n", Some(token));
        assert!(stderr.contains("SLIPWAY_API_TOKEN is empty"), "{stderr}");
    }
    for token in ["x", "short-token", "123456789012345"] {
        let config = format!("listen = \"0.0.0.0:0\"\napi_token = \"{token}\"\n");
        let stderr = serve_must_refuse(&config, None);
        assert!(stderr.contains("api_token is shorter than 16"), "{stderr}");
        let stderr = serve_must_refuse("listen = \"[::]:0\"\n", Some(token));
        assert!(
            stderr.contains("SLIPWAY_API_TOKEN is shorter than 16"),
            "{stderr}"
        );
    }
}
