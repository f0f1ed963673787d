//! The HTTP surface in-process: every rejection has the one error shape (`{"error": "..."}`)
//! with the right status on every route (API and webhooks), and pull-request numbers outside
//! 1..=2^31-1 are refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::github::*;
use crate::harness::*;
use crate::support::InProcessServer;

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";
const SECRET: &str = "http-surface-secret";

fn server_with_github() -> (InProcessServer, GitHubWorld, TestRepo) {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    let world = GitHubWorld::start();
    let name = unique_name("http");
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"{SECRET}\"\ntoken = \"ghp_testtoken\"\n",
        world.url()
    );
    let server = InProcessServer::start(ServerOptions {
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
    server: &InProcessServer,
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
    server: &InProcessServer,
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
