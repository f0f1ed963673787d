//! Idle environments on the real Docker engine: an env nobody uses goes to sleep (its
//! containers stopped, its volume kept), and waking it brings the same containers back to
//! Ready at the same commit.

mod harness;

use std::time::Duration;

use harness::*;

const COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    volumes: ['data:/data']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
volumes:
  data: {}
";

fn running_containers(env: &str) -> Vec<String> {
    let mut ids = docker(&[
        "ps",
        "--filter",
        &format!("label=dev.slipway.env={env}"),
        "--format",
        "{{.ID}}",
    ]);
    ids.sort();
    ids
}

fn all_container_ids(env: &str) -> Vec<String> {
    let mut ids = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dev.slipway.env={env}"),
        "--format",
        "{{.ID}}",
    ]);
    ids.sort();
    ids
}

/// Polls `env list --json` until the env shows `phase`; returns its record.
fn listed_until(server: &Server, env: &str, phase: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = server.cli_json(&["list"]);
        if let Some(found) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env && e["phase"] == phase)
        {
            return found.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{env} never {phase}: {list:#}\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn an_idle_env_sleeps_and_wakes_with_the_same_containers_and_volume() {
    let name = unique_name("idle");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("idle");
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra: "",
        repo_extra: "idle_sleep = \"4s\"\nidle_delete = \"0\"",
        tables: "",
    });
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let ready = server.up_ready("main");
    let commit = ready["commit"].clone();
    let before = all_container_ids(&env);
    assert!(!before.is_empty());
    // Watched through `env list`: a command naming the env would count as using it.
    let asleep = listed_until(&server, &env, "Sleeping");
    assert_eq!(asleep["commit"], commit);
    // Sleeping is recorded first (the front door then wakes rather than proxies), the
    // containers stop right after.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !running_containers(&env).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "containers never stopped"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(all_container_ids(&env), before, "containers kept");
    assert!(!volumes_of(&env).is_empty(), "volume kept");

    let out = server.cli_raw(&["env", "wake", &env, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let awake = listed_until(&server, &env, "Ready");
    assert_eq!(awake["commit"], commit, "the same commit");
    assert_eq!(
        all_container_ids(&env),
        before,
        "the same containers, started again"
    );
    assert_eq!(running_containers(&env), before);
}
