//! End to end against the real Docker engine: `[limits]` hold whatever a branch's compose
//! file asks for. Over a count or size limit the env fails with the numbers and nothing is
//! created; resource limits out of range are clamped, reported under "not applied", and the
//! container really gets the clamped value.

mod harness;

use harness::*;

fn failed_env(compose: &str, extra: &str) -> (serde_json::Value, Vec<String>, Vec<String>) {
    ensure_demo_image();
    let name = unique_name("lim");
    let repo = TestRepo::new();
    repo.write("compose.yml", compose).commit("over the limits");
    let mut options = ServerOptions::basic(&name, repo.path(), "compose.yml");
    options.extra = extra;
    let server = Server::start(options);
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let out = server.cli(&["up", "main", "--repo", &name, "--wait", "--timeout", "1m"]);
    assert!(!out.status.success(), "must fail: {out:?}");
    let status = server.status(&env);
    (status, containers_of(&env), volumes_of(&env))
}

#[test]
fn too_many_services_fail_the_env_with_the_numbers_and_start_nothing() {
    let mut compose = String::from("services:\n");
    for i in 0..60 {
        compose.push_str(&format!("  s{i}:\n    image: slipway/demo-app:latest\n"));
    }
    let (status, containers, volumes) = failed_env(&compose, "");
    assert_eq!(status["phase"], "Failed", "{status:#}");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("compose file has 60 services; the limit is 50 ([limits] max_services)"),
        "{reason}"
    );
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "{containers:?} {volumes:?}"
    );
}

#[test]
fn an_oversized_compose_file_fails_before_it_is_read() {
    // 2 MiB of comments after a valid service.
    let compose = format!(
        "services:\n  web:\n    image: slipway/demo-app:latest\n{}",
        "# padding padding padding padding padding padding padding padding padding\n"
            .repeat(2 * 1024 * 1024 / 74 + 1)
    );
    assert!(compose.len() > 2 * 1024 * 1024);
    let (status, containers, _) = failed_env(&compose, "");
    assert_eq!(status["phase"], "Failed", "{status:#}");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("{} bytes", compose.len()))
            && reason.contains("the limit is 1048576 bytes ([limits] max_compose_size)"),
        "{reason}"
    );
    assert!(containers.is_empty(), "{containers:?}");
}

#[test]
fn a_configured_volume_limit_fails_the_env() {
    let compose = "services:\n  web:\n    image: slipway/demo-app:latest\nvolumes:\n  a: {}\n  b: {}\n  c: {}\n";
    let (status, containers, volumes) = failed_env(compose, "[limits]\nmax_volumes = 2\n");
    let reason = status["reason"].as_str().unwrap();
    assert!(
        reason.contains("compose file has 3 volumes; the limit is 2 ([limits] max_volumes)"),
        "{reason}"
    );
    assert!(
        containers.is_empty() && volumes.is_empty(),
        "{containers:?} {volumes:?}"
    );
}

#[test]
fn out_of_range_limits_are_clamped_reported_and_applied() {
    ensure_demo_image();
    let name = unique_name("clamp");
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n    ports: ['127.0.0.1:8080:8080']\n    environment: { PORT: '8080' }\n    mem_limit: 0\n    pids_limit: -1\n    cpus: 1e-10\n",
    )
    .commit("no limits please");
    let mut options = ServerOptions::basic(&name, repo.path(), "compose.yml");
    options.extra = "[limits]\nmax_memory = \"256m\"\nmax_pids = 300\nmax_cpus = 1.0\n";
    let server = Server::start(options);
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    let record = server.up_ready("main");
    assert_eq!(record["phase"], "Ready");
    let status = server.status(&env);
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings in {status:#}"))
        .iter()
        .filter_map(|w| w.as_str())
        .collect();
    let all = warnings.join("\n");
    for expected in [
        "`mem_limit: 0` would mean no limit: not applied; the service gets 256 MiB",
        "`pids_limit: -1` would mean no limit: not applied; the service gets 300",
        "`cpus: 1e-10` is below the floor: not applied; the service gets 0.01 CPUs",
        "host address and fixed host port are not applied",
    ] {
        assert!(all.contains(expected), "{expected} missing from:\n{all}");
    }
    let inspect = |format: &str| {
        docker(&["inspect", "--format", format, &format!("slipway-{env}-web")]).join("")
    };
    assert_eq!(
        inspect("{{.HostConfig.Memory}}"),
        (256 * 1024 * 1024).to_string()
    );
    assert_eq!(inspect("{{.HostConfig.PidsLimit}}"), "300");
    assert_eq!(inspect("{{.HostConfig.NanoCpus}}"), "10000000");
    server.cli_json(&["down", &env, "--wait"]);
}
