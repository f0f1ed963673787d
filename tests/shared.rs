//! Shared stable dependencies on the real Docker engine: a service the compose file marks
//! shared runs once for the repo (in `<repo>-shared`, at the target branch), two envs reach
//! that one container under its service name, and deleting both envs leaves it Ready and
//! running, off their (removed) networks.

mod harness;

use std::time::Duration;

use harness::*;

/// `store` is shared; `web` has a copy per env and is only healthy while it reaches `store`
/// by name (its health check asks `http://store:8080/healthz`).
const COMPOSE: &str = "x-slipway:
  shared: [store]
services:
  store:
    image: slipway/demo-app:latest
    environment: { GREETING: 'the shared store' }
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    depends_on: { store: { condition: service_healthy } }
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://store:8080/healthz']
      interval: 1s
";

/// Ids of the running containers of `repo` that run `service`, whatever their env.
fn running_service(repo: &str, service: &str) -> Vec<String> {
    docker(&[
        "ps",
        "--filter",
        &format!("label=dev.slipway.repo={repo}"),
        "--filter",
        &format!("label=dev.slipway.service={service}"),
        "--format",
        "{{.ID}}",
    ])
}

/// The networks a container is on, by name.
fn networks_of_container(id: &str) -> Vec<String> {
    let mut names: Vec<String> = docker(&[
        "inspect",
        "--format",
        "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}\n{{end}}",
        id,
    ]);
    names.sort();
    names
}

#[test]
fn a_shared_service_is_reached_from_two_envs_and_survives_both_being_deleted() {
    let name = unique_name("shared");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("shared store");
    repo.git(&["branch", "feature-a"]);
    repo.git(&["branch", "feature-b"]);
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let shared_env = format!("{name}-shared");
    let envs = [format!("{name}-feature-a"), format!("{name}-feature-b")];
    let _cleanup = [
        EnvCleanup(shared_env.clone()),
        EnvCleanup(envs[0].clone()),
        EnvCleanup(envs[1].clone()),
    ];

    // `--wait` ends Ready only once web's health check reached the shared store by name.
    for branch in ["feature-a", "feature-b"] {
        server.up_ready(branch);
    }
    let shared = server.wait_until(&shared_env, "Ready", Duration::from_secs(60), |s| {
        s["phase"] == "Ready"
    });
    assert_eq!(shared["branch"], "main", "{shared:#}");
    assert_eq!(shared["idle"]["pinned"], true, "{shared:#}");
    let stores = running_service(&name, "store");
    assert_eq!(stores.len(), 1, "one store for the repo: {stores:?}");
    let store = container_id(&stores[0]);
    assert_eq!(
        service_containers_of(&shared_env),
        [format!("slipway-{shared_env}-store")]
    );

    for env in &envs {
        assert_eq!(
            service_containers_of(env),
            [format!("slipway-{env}-web")],
            "{env} runs no store of its own"
        );
        // From inside the env, `store` answers: the shared container, under its name.
        let web = format!("slipway-{env}-web");
        let out = std::process::Command::new("docker")
            .args(["exec", &web, "/demo-app", "probe", "http://store:8080/"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{env} cannot reach store: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let status = server.status(env);
        let entry = status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "store")
            .unwrap_or_else(|| panic!("no store in {status:#}"))
            .clone();
        assert_eq!(entry["shared"]["env"], shared_env.as_str(), "{entry:#}");
        assert_eq!(entry["shared"]["container"], store.as_str(), "{entry:#}");
    }
    let mut expected: Vec<String> = [&shared_env, &envs[0], &envs[1]]
        .iter()
        .map(|env| format!("slipway-{env}"))
        .collect();
    expected.sort();
    assert_eq!(networks_of_container(&store), expected);

    // In use, the shared env is not deleted; the refusal names its users.
    let out = server.cli(&["down", &shared_env]);
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "down of a shared env in use succeeded"
    );
    assert!(
        said.contains(&envs[0]) && said.contains(&envs[1]) && said.contains("delete those first"),
        "{said}"
    );

    for env in &envs {
        server.cli_json(&["down", env]);
    }
    for env in &envs {
        server.wait_until(env, "Deleted", Duration::from_secs(60), |s| {
            s["phase"] == "Deleted"
        });
        assert!(containers_of(env).is_empty(), "{env}");
        assert!(networks_of(env).is_empty(), "{env}'s network is gone");
    }
    let shared = server.status(&shared_env);
    assert_eq!(shared["phase"], "Ready", "{shared:#}");
    assert_eq!(
        running_service(&name, "store"),
        stores,
        "the same store, still running"
    );
    assert_eq!(
        networks_of_container(&store),
        [format!("slipway-{shared_env}")]
    );
}
