//! Integration test runs end to end on the real Docker engine: the env's `test`-profile
//! services run after the env is Ready, and `slipway test` reports what happened in a few
//! lines, with secrets redacted and a link to the full log.

mod harness;

use harness::*;
use serde_json::Value;

const SECRET: &str = "s3cr3t-value-1234567";

/// A web service and a test service (the demo app's selftest) with extra settings.
fn compose(test_env: &str, test_extra: &str, top_extra: &str) -> String {
    format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  tests:
    image: slipway/demo-app:latest
    command: [selftest]
    profiles: [test]
    environment:
      TARGET_URL: http://web:8080
      API_TOKEN: {SECRET}
{test_env}
{test_extra}
    depends_on:
      web: {{ condition: service_healthy }}
{top_extra}
"
    )
}

fn server_for(compose_text: &str) -> (Server, TestRepo, String) {
    let name = unique_name("tr");
    let repo = TestRepo::new();
    repo.write("compose.yml", compose_text).commit("with tests");
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra: "",
        repo_extra: "secret_env = [\"API_TOKEN\"]\ntest_timeout = \"2m\"",
        tables: "",
    });
    let env = format!("{name}-main");
    (server, repo, env)
}

/// `slipway test <env> --wait --json`: (exit success, the run's JSON).
fn run_tests(server: &Server, env: &str) -> (bool, Value) {
    let out = server.cli_raw(&["test", env, "--wait", "--json", "--timeout", "3m"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.tail_log()
        )
    });
    (out.status.success(), json)
}

#[test]
fn passing_tests_pass_and_show_in_env_status() {
    let (server, _repo, env) = server_for(&compose("", "", ""));
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    let (ok, run) = run_tests(&server, &env);
    assert!(ok, "{run:#}");
    assert_eq!(run["status"], "passed");
    assert_eq!(run["failed_tests"].as_array().unwrap().len(), 0);
    assert_eq!(
        run["results"].as_array().unwrap().len(),
        2,
        "JUnit results: {run:#}"
    );
    let status = server.status(&env);
    assert_eq!(status["latest_run"]["status"], "passed");
    // The auto run after Ready came first, then ours.
    assert!(run["id"].as_i64().unwrap() >= 2);
    assert!(
        containers_of(&env).iter().all(|c| !c.contains("-run")),
        "job containers are removed"
    );
}

#[test]
fn a_failing_assertion_is_reported_with_its_exit_code_and_without_the_secret() {
    let (server, _repo, env) = server_for(&compose(
        "      FAIL_TEST: \"1\"\n      PRINT_SECRET: API_TOKEN",
        "",
        "",
    ));
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    let (ok, run) = run_tests(&server, &env);
    assert!(!ok, "failing tests exit non-zero");
    assert_eq!(run["status"], "failed");
    assert_eq!(run["exit_code"], 1);
    let snippet = run["snippet"].as_str().unwrap();
    assert!(
        snippet.contains("assertion `left == right` failed"),
        "{snippet}"
    );
    assert!(!snippet.contains(SECRET), "the secret leaked: {snippet}");
    assert!(
        snippet.contains(run["log_url"].as_str().unwrap()),
        "{snippet}"
    );
    let failed: Vec<&str> = run["failed_tests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(failed, vec!["demo::greeting_is_localised"]);
    // The full log is there, behind the link.
    let (status, log) = http_get(run["log_url"].as_str().unwrap());
    assert_eq!(status, 200);
    assert!(log.contains("test result: FAILED"), "{log}");
    // Redacted as it is served, like every other text.
    assert!(log.contains("connecting with token [REDACTED]"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the full log shows the secret: {log}"
    );
}

#[test]
fn a_run_past_its_timeout_is_reported_as_timed_out_and_its_container_is_gone() {
    let top = "x-slipway:\n  tests:\n    timeout: 3s\n";
    let (server, _repo, env) = server_for(&compose("      TEST_SLEEP_MS: \"120000\"", "", top));
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    let (ok, run) = run_tests(&server, &env);
    assert!(!ok);
    assert_eq!(run["status"], "timed_out", "{run:#}");
    assert!(
        run["headline"].as_str().unwrap().contains("timed out"),
        "{run:#}"
    );
    assert!(
        containers_of(&env).iter().all(|c| !c.contains("-run")),
        "left: {:?}",
        containers_of(&env)
    );
}

#[test]
fn an_out_of_memory_kill_says_so() {
    let (server, _repo, env) =
        server_for(&compose("      HOG_MB: \"300\"", "    mem_limit: 48m", ""));
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    let (ok, run) = run_tests(&server, &env);
    assert!(!ok);
    assert_eq!(run["status"], "failed", "{run:#}");
    let text = format!("{} {}", run["headline"], run["snippet"]);
    assert!(text.contains("out of memory"), "{run:#}");
}
