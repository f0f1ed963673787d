//! Crash safety: the server is killed with SIGKILL in the middle of building or starting an
//! env; after a restart the reconciler picks the work up again, the env reaches Ready, and
//! Docker holds exactly the env's containers, nothing half-made.

mod harness;

use std::time::Duration;

use harness::*;

/// A compose file whose build and start each take a few seconds, so a kill lands mid-way.
const SLOW_COMPOSE: &str = "\
services:
  migrate:
    image: slipway/demo-app:latest
    command: [migrate]
    environment: { MIGRATE_SLEEP_MS: \"4000\" }
  web:
    build: ./web
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
      retries: 30
    depends_on:
      migrate: { condition: service_completed_successfully }
  worker:
    image: slipway/demo-app:latest
    command: [worker]
    environment: { TARGET_URL: 'http://web:8080/' }
    depends_on:
      web: { condition: service_healthy }
";

/// `name` goes into the Dockerfile: the image's content tag is then new to this Docker
/// engine, so the build really runs (an image left by an earlier run would be reused).
fn slow_repo(build_sleep_ms: u32, name: &str) -> TestRepo {
    let repo = TestRepo::new();
    repo.write("compose.yml", SLOW_COMPOSE)
        .write(
            "web/Dockerfile",
            &format!("FROM slipway/demo-app:latest\nENV RUN_NAME={name} MIGRATE_SLEEP_MS={build_sleep_ms}\nRUN [\"/demo-app\", \"migrate\"]\nENV GREETING=crash-test\n"),
        )
        .commit("slow env");
    repo
}

fn kill_during(phase: &str, build_sleep_ms: u32) {
    let name = unique_name("crash");
    let repo = slow_repo(build_sleep_ms, &name);
    let mut server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    server.cli_json(&["up", "main", "--repo", &name]);
    server.wait_until(&env, phase, Duration::from_secs(60), |s| {
        s["phase"] == phase
    });
    // Let the phase get under way (a build running, containers being created).
    std::thread::sleep(Duration::from_millis(1500));
    server.kill9();

    server.spawn();
    let ready = server.wait_until(&env, "Ready", Duration::from_secs(120), |s| {
        assert_ne!(s["phase"], "Failed", "recovery failed: {s:#}");
        s["phase"] == "Ready"
    });
    let (status, body) = http_get(&url_of(&ready, "web"));
    assert_eq!(status, 200);
    assert!(body.contains("crash-test"), "{body}");
    let expected: Vec<String> = ["migrate", "web", "worker"]
        .iter()
        .map(|s| format!("slipway-{env}-{s}"))
        .collect();
    assert_eq!(
        containers_of(&env),
        expected,
        "exactly the env's containers"
    );
    assert_eq!(networks_of(&env).len(), 1, "one network");

    server.cli_json(&["down", &env, "--wait"]);
    assert!(containers_of(&env).is_empty());
}

#[test]
fn killed_while_building_then_restarted_reaches_ready_with_no_leftovers() {
    kill_during("Building", 5000);
}

#[test]
fn killed_while_starting_then_restarted_reaches_ready_with_no_leftovers() {
    kill_during("Starting", 0);
}

#[test]
fn resources_of_deleted_envs_are_reaped_after_a_crash() {
    let name = unique_name("reap");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n",
    )
    .commit("x");
    let mut server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    server.kill9();
    // While the server is down, its env's container disappears behind its back.
    docker(&["rm", "-f", &format!("slipway-{env}-web")]);
    server.spawn();
    // The resync notices and brings the service back at the same commit.
    server.wait_until(&env, "restored", Duration::from_secs(60), |s| {
        s["phase"] == "Ready" && containers_of(&env).len() == 1
    });
    server.cli_json(&["down", &env, "--wait"]);
    assert!(containers_of(&env).is_empty());
}
