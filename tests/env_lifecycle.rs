//! End to end against the real Docker engine: the `slipway` server and CLI driving envs of
//! real git repositories, from `env up` to `env down`.

mod harness;

use std::time::Duration;

use harness::*;

fn demo_server(repo: &TestRepo, name: &str) -> Server {
    Server::start(ServerOptions::basic(name, repo.path(), "compose/demo.yml"))
}

#[test]
fn the_demo_comes_up_answers_and_goes_down_without_leftovers() {
    let name = unique_name("demo");
    let repo = TestRepo::new();
    repo.with_demo_files().commit("demo");
    let server = demo_server(&repo, &name);
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    let record = server.up_ready("main");
    assert_eq!(record["phase"], "Ready");
    assert_eq!(record["name"], env.as_str());
    let (status, body) = http_get(&url_of(&record, "web"));
    assert_eq!(status, 200);
    assert!(body.contains("hello from main"), "{body}");

    let listed = server.cli_json(&["list"]);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == env.as_str()));
    let logs = server.cli(&["logs", &env, "--service", "migrate"]);
    assert!(logs.status.success());
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("migration"),
        "{}",
        String::from_utf8_lossy(&logs.stdout)
    );
    let extended = server.cli(&["extend", &env, "--by", "1h"]);
    let stdout = String::from_utf8_lossy(&extended.stdout);
    assert!(extended.status.success(), "{extended:?}");
    assert!(
        stdout.starts_with(&format!("{env} now expires in ")),
        "{stdout}"
    );
    assert!(
        server.status(&env)["expires_at"].as_i64().unwrap()
            > record["expires_at"].as_i64().unwrap() + 50 * 60 * 1000,
        "an hour was added"
    );
    let whoami = server.cli_raw(&["whoami"]);
    let stdout = String::from_utf8_lossy(&whoami.stdout);
    assert!(whoami.status.success(), "{whoami:?}");
    assert!(
        stdout.contains("role:    admin") && stdout.contains("env up"),
        "{stdout}"
    );
    assert_eq!(
        service_containers_of(&env).len(),
        3,
        "{:?}",
        containers_of(&env)
    );

    let down = server.cli_json(&["down", &env, "--wait"]);
    assert_eq!(down["phase"], "Deleted");
    assert!(
        containers_of(&env).is_empty(),
        "containers left: {:?}",
        containers_of(&env)
    );
    assert!(
        networks_of(&env).is_empty(),
        "networks left: {:?}",
        networks_of(&env)
    );
    assert!(
        volumes_of(&env).is_empty(),
        "volumes left: {:?}",
        volumes_of(&env)
    );
}

#[test]
fn a_new_commit_replaces_only_the_changed_service() {
    let name = unique_name("upd");
    let repo = TestRepo::new();
    repo.with_demo_files().commit("demo");
    let server = demo_server(&repo, &name);
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    let first = server.up_ready("main");
    let ids = |service: &str| container_id(&format!("slipway-{env}-{service}"));
    let (web1, worker1, migrate1) = (ids("web"), ids("worker"), ids("migrate"));
    assert!(!web1.is_empty() && !worker1.is_empty() && !migrate1.is_empty());

    let dockerfile =
        std::fs::read_to_string(repo.path().join("compose/demo/web/Dockerfile")).unwrap();
    repo.write(
        "compose/demo/web/Dockerfile",
        &dockerfile.replace("hello from main", "hello from the second commit"),
    );
    let second_commit = repo.commit("change the greeting");

    let second = server.up_ready("main");
    assert_eq!(second["commit"], second_commit.as_str());
    assert_ne!(first["commit"], second["commit"]);
    assert_ne!(ids("web"), web1, "web changed and must be replaced");
    assert_eq!(
        ids("worker"),
        worker1,
        "worker did not change and must be kept"
    );
    assert_eq!(
        ids("migrate"),
        migrate1,
        "migrate did not change and must be kept"
    );
    let (_, body) = http_get(&url_of(&second, "web"));
    assert!(body.contains("hello from the second commit"), "{body}");
    server.cli_json(&["down", &env, "--wait"]);
}

#[test]
fn compose_files_asking_for_host_access_fail_and_start_nothing() {
    let cases = [
        ("privileged", "services:\n  evil:\n    image: slipway/demo-app:latest\n    privileged: true\n", "privileged"),
        (
            "socket",
            "services:\n  evil:\n    image: slipway/demo-app:latest\n    volumes: ['/var/run/docker.sock:/var/run/docker.sock']\n",
            "docker.sock",
        ),
        ("hostpath", "services:\n  evil:\n    image: slipway/demo-app:latest\n    volumes: ['/etc:/host-etc']\n", "/etc"),
    ];
    for (branch, compose, expected) in cases {
        let name = unique_name("pol");
        let repo = TestRepo::new();
        repo.write("compose.yml", compose).commit("evil");
        let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
        let env = format!("{name}-main");
        let _cleanup = EnvCleanup(env.clone());
        let out = server.cli(&["up", "main", "--repo", &name, "--wait", "--timeout", "1m"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{branch}: must fail");
        let status = server.status(&env);
        assert_eq!(status["phase"], "Failed", "{branch}");
        let reason = status["reason"].as_str().unwrap();
        assert!(
            reason.contains("evil") && reason.contains(expected),
            "{branch}: reason {reason}"
        );
        assert!(
            stderr.lines().last().unwrap().contains(expected),
            "{branch}: last line {stderr}"
        );
        assert!(
            containers_of(&env).is_empty(),
            "{branch}: something started"
        );
        assert!(networks_of(&env).is_empty(), "{branch}: a network was made");
    }
}

#[test]
fn a_broken_build_fails_with_the_build_error_in_the_reason() {
    let name = unique_name("brk");
    let repo = TestRepo::new();
    repo.write("compose.yml", "services:\n  app:\n    build: ./app\n")
        .write(
            "app/Dockerfile",
            "FROM slipway/demo-app:latest\nENV MIGRATE_EXIT=7\nRUN [\"/demo-app\", \"migrate\"]\n",
        )
        .commit("broken build");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let out = server.cli(&["up", "main", "--repo", &name, "--wait", "--timeout", "2m"]);
    assert!(!out.status.success());
    let status = server.status(&env);
    assert_eq!(status["phase"], "Failed");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("app") && reason.contains("non-zero code: 7"),
        "reason: {reason}"
    );
    assert!(containers_of(&env).is_empty());
}

#[test]
fn an_expired_ttl_deletes_the_env() {
    let name = unique_name("ttl");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['8080']\n",
    )
    .commit("one service");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let record = server.cli_json(&["up", "main", "--repo", &name, "--ttl", "4s", "--wait"]);
    assert_eq!(record["phase"], "Ready");
    assert_eq!(containers_of(&env).len(), 1);
    let deleted = server.wait_until(&env, "Deleted", Duration::from_secs(30), |s| {
        s["phase"] == "Deleted"
    });
    assert!(
        deleted["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "expired"),
        "{deleted:#}"
    );
    assert!(containers_of(&env).is_empty());
    assert!(networks_of(&env).is_empty());
}

#[test]
fn bad_requests_get_one_line_errors_and_change_nothing() {
    let name = unique_name("bad");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n",
    )
    .commit("x");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    for (args, expected) in [
        (
            vec!["up", "../../etc", "--repo", name.as_str()],
            "branch name",
        ),
        (
            vec!["up", "branch:--upload-pack=touch", "--repo", name.as_str()],
            "branch name",
        ),
        (vec!["up", "main", "--repo", "nope"], "unknown repo"),
        (vec!["status", "no-such-env"], "no environment"),
        (vec!["down", "no-such-env"], "no environment"),
        (vec!["logs", "../x"], "environment name"),
    ] {
        let out = server.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{args:?}: one line, got {stderr}"
        );
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    // What the grammar does not take is explained on the spot, with the usage: exit code 2.
    for (args, expected) in [
        (
            vec!["up", "main", "--repo", name.as_str(), "--ttl", "forever"],
            "Invalid value `forever` for `ttl`",
        ),
        (
            vec![
                "up",
                "--repo",
                name.as_str(),
                "--",
                "--upload-pack=touch /tmp/x",
            ],
            "Unknown argument `--`",
        ),
        (
            vec!["lst"],
            "Unknown command `env lst`. Did you mean `env list`?",
        ),
        (vec!["list", "--wait"], "`--wait` is for `env up`"),
    ] {
        let out = server.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(expected),
            "{args:?}: {stderr}"
        );
    }
    let typo = server.cli(&["lst"]);
    assert!(
        String::from_utf8_lossy(&typo.stderr).contains("Usage: `slipway env list [--all]`"),
        "{typo:?}"
    );
    let help = server.cli_raw(&["help", "env", "up"]);
    let stdout = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(
        stdout.starts_with("`slipway env up <branch> [--repo <repo>] [--ttl <duration>]`")
            && stdout.contains("--wait"),
        "{stdout}"
    );
    assert_eq!(server.cli(&["up", "--help"]).stdout, help.stdout);

    let out = server.cli(&["up", "no-such-branch", "--repo", &name, "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.lines().last().unwrap().contains("does not exist"),
        "{stderr}"
    );
    let listed = server.cli_json(&["list"]);
    assert_eq!(
        listed.as_array().unwrap().len(),
        1,
        "only the failed no-such-branch env: {listed:#}"
    );
}

#[test]
fn the_api_requires_its_token_when_one_is_set() {
    let name = unique_name("tok");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n",
    )
    .commit("x");
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra: "api_token = \"s3cret-token\"",
        repo_extra: "",
        tables: "",
    });
    let out = server.cli(&["list"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token"));
    let ok = std::process::Command::new(SLIPWAY)
        .args(["env", "list", "--json"])
        .env("SLIPWAY_SERVER", &server.url)
        .env("SLIPWAY_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}
