//! What goes, and what stays, on the real Docker engine: objects of this instance without a
//! row (and a job container a crash left) are reaped within one resync while another
//! instance's identical objects are never touched; a quota refusal says the numbers and
//! starts nothing; a warned env that gets a request through the front door stays; an env
//! whose branch is deleted is warned about, then deleted.

mod harness;

use std::time::{Duration, Instant};

use harness::*;

const COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
";

/// The harness's resync interval: "within one resync" below allows this plus some slack.
const RESYNC: Duration = Duration::from_secs(2);

/// The instance id the server labels its Docker objects with (from its start-up log).
fn instance_of(server: &Server) -> String {
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("connected to Docker"))
        .unwrap_or_else(|| panic!("no Docker connection logged:\n{log}"));
    // Without the terminal colours the text log may carry.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| *c == 'm');
        } else {
            plain.push(c);
        }
    }
    let value = plain
        .split_whitespace()
        .find_map(|field| field.strip_prefix("instance="))
        .unwrap_or_else(|| panic!("no instance in {line}"));
    value.trim_matches('"').to_string()
}

/// Labels of an object of `env` owned by `instance`, as `--label` arguments.
fn labels(instance: &str, env: &str, repo: &str) -> Vec<String> {
    [
        format!("dev.slipway.instance={instance}"),
        format!("dev.slipway.env={env}"),
        format!("dev.slipway.repo={repo}"),
    ]
    .into_iter()
    .flat_map(|label| ["--label".to_string(), label])
    .collect()
}

/// `docker <args>` that must succeed.
fn docker_ok(args: &[String]) {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A container, a network and a volume of `env` labelled with `instance`, named after `tag`.
fn plant(instance: &str, env: &str, repo: &str, tag: &str) {
    let labels = labels(instance, env, repo);
    let args = |head: &[&str], tail: &[&str]| -> Vec<String> {
        head.iter()
            .map(|s| s.to_string())
            .chain(labels.iter().cloned())
            .chain(tail.iter().map(|s| s.to_string()))
            .collect()
    };
    let service = ["--label".to_string(), "dev.slipway.service=web".to_string()];
    let mut container = args(&["create", "--name", &format!("{tag}-web")], &[]);
    container.extend(service);
    container.push("slipway/demo-app:latest".into());
    docker_ok(&container);
    docker_ok(&args(&["network", "create"], &[&format!("{tag}-net")]));
    docker_ok(&args(&["volume", "create"], &[&format!("{tag}-data")]));
}

/// Names of every container, network and volume with `instance`'s label on `env`.
fn objects(instance: &str, env: &str) -> Vec<String> {
    let filters = [
        "--filter".to_string(),
        format!("label=dev.slipway.instance={instance}"),
        "--filter".to_string(),
        format!("label=dev.slipway.env={env}"),
    ];
    let list = |head: &[&str], format: &str| {
        let mut args: Vec<&str> = head.to_vec();
        args.extend(filters.iter().map(String::as_str));
        args.extend(["--format", format]);
        docker(&args)
    };
    let mut all = list(&["ps", "-a"], "{{.Names}}");
    all.extend(list(&["network", "ls"], "{{.Name}}"));
    all.extend(list(&["volume", "ls"], "{{.Name}}"));
    all.sort();
    all
}

#[test]
fn objects_of_this_instance_without_a_row_are_reaped_in_one_resync_and_another_instances_are_not() {
    let name = unique_name("reap");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("reap");
    let server = Server::start(ServerOptions::basic(&name, repo.path(), "compose.yml"));
    let instance = instance_of(&server);
    let other = format!("other{}", unique_name("i"));
    let env = format!("{name}-orphan");
    let _cleanup = EnvCleanup(env.clone());
    let live = format!("{name}-main");
    let _live_cleanup = EnvCleanup(live.clone());
    server.up_ready("main");

    // Identical objects: this instance's, and another instance's with the same env label.
    plant(&instance, &env, &name, &format!("slipway-{env}"));
    plant(&other, &env, &name, &format!("slipway-{env}-other"));
    // A test job's container a crash left in a live env, of a run the store never had.
    let mut job = vec![
        "create".to_string(),
        "--name".into(),
        format!("slipway-{live}-run999-tests"),
    ];
    job.extend(labels(&instance, &live, &name));
    job.extend(["--label".into(), "dev.slipway.job=run999-tests".into()]);
    job.push("slipway/demo-app:latest".into());
    docker_ok(&job);
    // (This instance's may be going already: the server resyncs all along.)
    assert_eq!(objects(&other, &env).len(), 3);
    let started = Instant::now();

    let job_left = || {
        !docker(&[
            "ps",
            "-aq",
            "--filter",
            "label=dev.slipway.job=run999-tests",
            "--filter",
            &format!("label=dev.slipway.env={live}"),
        ])
        .is_empty()
    };
    let deadline = started + RESYNC * 2 + Duration::from_secs(10);
    while !objects(&instance, &env).is_empty() || job_left() {
        assert!(
            Instant::now() < deadline,
            "not reaped: {:?}, job left: {}\n{}",
            objects(&instance, &env),
            job_left(),
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    eprintln!("reaped in {took:?} (resync_interval {RESYNC:?})");
    assert!(took < RESYNC + Duration::from_secs(5), "{took:?}");

    // Another instance's objects are never touched, whatever their env label says.
    std::thread::sleep(RESYNC * 2);
    assert_eq!(
        objects(&other, &env),
        vec![
            format!("slipway-{env}-other-data"),
            format!("slipway-{env}-other-net"),
            format!("slipway-{env}-other-web"),
        ]
    );
    // Each removal is on the timeline with its reason.
    let status = server.status(&live);
    let events = status["events"].to_string();
    assert!(
        events.contains("removed job container run999-tests")
            && events.contains("no test run of that id is in the store"),
        "{status:#}"
    );
    assert_eq!(status["phase"], "Ready", "the live env is untouched");
    let log = server.log();
    assert!(
        log.contains("removing orphaned resources"),
        "{}",
        server.tail_log()
    );
    // The server's drop removes the rest: every object carries this test's repo label.
}

#[test]
fn a_quota_refusal_says_the_numbers_and_starts_nothing() {
    let name = unique_name("quota");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("quota");
    repo.git(&["branch", "other"]);
    let server = Server::start(ServerOptions {
        repo_extra: "max_envs = 1",
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let first = format!("{name}-main");
    let refused = format!("{name}-other");
    let _cleanup = (EnvCleanup(first.clone()), EnvCleanup(refused.clone()));
    server.up_ready("main");

    let expected = format!("{name} has 1 of 1 envs; the oldest idle is {first}, idle ");
    let json = server.cli(&["up", "other", "--repo", &name, "--json"]);
    let text = server.cli(&["up", "other", "--repo", &name]);
    for (out, how) in [(&json, "--json"), (&text, "text")] {
        assert!(!out.status.success(), "{how}: refused");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(&expected), "{how}: {said}");
    }
    // Nothing started, nothing recorded.
    std::thread::sleep(RESYNC);
    assert!(containers_of(&refused).is_empty());
    assert!(networks_of(&refused).is_empty());
    let list = server.cli_json(&["list"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, vec![first.as_str()], "{list:#}");
    assert!(!server.cli(&["status", &refused]).status.success());
}

#[test]
fn a_warned_env_that_gets_a_request_through_the_front_door_is_not_deleted() {
    let name = unique_name("warned");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("warned");
    let server = Server::start(ServerOptions {
        repo_extra: "idle_sleep = \"0\"\nidle_delete = \"10s\"\nwarn_before = \"5s\"",
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");
    // Watched through `env list`: a command naming the env would count as using it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let warned_for = loop {
        let list = server.cli_json(&["list"]);
        let found = list
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == env.as_str())
            .cloned();
        if let Some(at) = found
            .as_ref()
            .and_then(|e| e["idle"]["warned_for"].as_i64())
        {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "never warned: {list:#}\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, answer) = get_via(&server.proxy_url, &format!("{env}.localhost"), "*/*");
    assert_eq!(status, 200, "{answer}");
    // Past the deadline it was warned about, and a resync more: still there.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let past = Duration::from_millis((warned_for - now).max(0) as u64) + RESYNC * 2;
    std::thread::sleep(past);
    let list = server.cli_json(&["list"]);
    let record = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == env.as_str())
        .unwrap_or_else(|| panic!("deleted: {list:#}\n{}", server.tail_log()));
    assert_eq!(record["phase"], "Ready", "{record:#}");
    assert_eq!(record["desired"], "running", "{record:#}");
    assert_eq!(service_containers_of(&env).len(), 1);
}

#[test]
fn an_env_whose_branch_is_deleted_is_warned_about_then_deleted() {
    let name = unique_name("gone");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("gone");
    repo.git(&["branch", "feature-x"]);
    let server = Server::start(ServerOptions {
        repo_extra: "idle_sleep = \"0\"\nidle_delete = \"0\"\nwarn_before = \"4s\"",
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let env = format!("{name}-feature-x");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("feature-x");
    assert_eq!(service_containers_of(&env).len(), 1);

    repo.git(&["branch", "-D", "feature-x"]);
    let warned = server.wait_until(&env, "warned", Duration::from_secs(30), |s| {
        s["idle"]["branch_gone_at"].is_i64()
            && s["events"].to_string().contains("will be deleted in")
    });
    let events = warned["events"].to_string();
    assert!(
        events.contains("(its branch feature-x is gone): `/slipway env pin` keeps it"),
        "{warned:#}"
    );
    let text = server.cli(&["status", &env]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("branch:    feature-x gone for"), "{text}");

    let deleted = server.wait_until(&env, "Deleted", Duration::from_secs(30), |s| {
        s["phase"] == "Deleted"
    });
    assert!(
        deleted["events"]
            .to_string()
            .contains("its branch feature-x is gone"),
        "{deleted:#}"
    );
    assert!(containers_of(&env).is_empty());
    assert!(networks_of(&env).is_empty());
}
