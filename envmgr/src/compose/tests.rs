use super::*;

fn parse(text: &str) -> Result<ComposeFile, ComposeError> {
    ComposeFile::parse(text.as_bytes())
}

#[test]
fn the_demo_compose_file_parses() {
    let file = parse(include_str!("../../../compose/demo.yml")).unwrap();
    let names: Vec<&str> = file.services.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"web") && names.contains(&"worker") && names.contains(&"migrate"),
        "{names:?}"
    );
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
}

#[test]
fn supported_keys_are_read() {
    let file = parse(
        r#"
services:
  db:
    image: postgres:16
    environment: [POSTGRES_PASSWORD=x, UNSET]
    expose: ["5432"]
    healthcheck:
      test: pg_isready
      interval: 1m30s
      retries: 5
    volumes: ["pgdata:/var/lib/postgresql/data:ro"]
    mem_limit: 256m
    cpus: "0.5"
    pids_limit: 100
  web:
    build: { context: ./app, dockerfile: web.Dockerfile, args: { A: "1" }, target: prod }
    command: ./serve --port "8080"
    ports: ["127.0.0.1:80:8080", "9000/udp", { target: 81 }]
    depends_on: { db: { condition: service_healthy } }
    restart: on-failure:3
    user: 1000
  tests:
    image: tester
    profiles: [test]
    depends_on: [web]
volumes:
  pgdata:
"#,
    )
    .unwrap();
    let db = &file.services[0];
    assert_eq!(
        db.environment.get("POSTGRES_PASSWORD").map(String::as_str),
        Some("x")
    );
    assert_eq!(
        db.healthcheck.as_ref().unwrap().interval,
        Duration::from_secs(90)
    );
    assert_eq!(
        db.healthcheck.as_ref().unwrap().test,
        vec!["CMD-SHELL", "pg_isready"]
    );
    assert_eq!(
        db.volumes,
        vec![(
            "pgdata".to_string(),
            "/var/lib/postgresql/data".to_string(),
            true
        )]
    );
    assert_eq!(db.mem_limit, Some(256 * 1024 * 1024));
    assert_eq!(db.nano_cpus, Some(500_000_000));
    assert_eq!(db.pids_limit, Some(100));
    let web = &file.services[1];
    assert_eq!(
        web.command.as_ref().unwrap(),
        &vec!["./serve", "--port", "8080"]
    );
    let ports: Vec<u16> = web.ports.iter().map(|p| p.container_port).collect();
    assert_eq!(ports, vec![8080, 9000, 81]);
    assert_eq!(web.ports[1].protocol, Protocol::Udp);
    assert_eq!(
        web.restart,
        RestartPolicy::OnFailure {
            max_retries: Some(3)
        }
    );
    assert_eq!(web.user.as_deref(), Some("1000"));
    let build = web.build.as_ref().unwrap();
    assert_eq!(
        (
            build.context.as_str(),
            build.dockerfile.as_str(),
            build.target.as_deref()
        ),
        ("./app", "web.Dockerfile", Some("prod"))
    );
    assert_eq!(file.profiled.len(), 1, "profiled services are kept apart");
    assert!(
        file.warnings.iter().any(|w| w.contains("UNSET")),
        "{:?}",
        file.warnings
    );
}

#[test]
fn unsupported_keys_are_reported_not_dropped() {
    let file = parse("services:\n  web:\n    image: x\n    logging: { driver: none }\n    sysctls: { a: 1 }\nnetworks: { front: {} }\nconfigs: {}\n").unwrap();
    let all = file.warnings.join("\n");
    for word in ["logging", "sysctls", "networks", "configs"] {
        assert!(all.contains(word), "{word} missing from {all}");
    }
}

#[test]
fn dangerous_keys_are_refused_with_the_service_and_key() {
    let cases = [
        ("privileged: true", "privileged"),
        ("cap_add: [SYS_ADMIN]", "cap_add"),
        ("devices: ['/dev/sda:/dev/sda']", "devices"),
        ("network_mode: host", "network_mode"),
        ("pid: host", "pid"),
        ("ipc: host", "ipc"),
        (
            "volumes: ['/var/run/docker.sock:/var/run/docker.sock']",
            "volumes",
        ),
        ("volumes: ['./src:/src']", "volumes"),
        (
            "volumes: [{ type: bind, source: /etc, target: /etc }]",
            "volumes",
        ),
        ("security_opt: ['seccomp:unconfined']", "security_opt"),
        ("security_opt: ['apparmor=unconfined']", "security_opt"),
        ("volumes_from: [other]", "volumes_from"),
        ("userns_mode: host", "userns_mode"),
        ("cgroup_parent: /", "cgroup_parent"),
    ];
    for (line, key) in cases {
        let text = format!("services:\n  evil:\n    image: x\n    {line}\n");
        match parse(&text) {
            Err(ComposeError::Policy(v)) => {
                assert_eq!(v.key, key, "{line}");
                assert!(v.location.contains("evil"), "{v}");
            }
            other => panic!("{line}: expected a policy refusal, got {other:?}"),
        }
    }
    let text = "services:\n  a:\n    image: x\nvolumes:\n  v:\n    driver_opts: { type: none, o: bind, device: /etc }\n";
    assert!(matches!(parse(text), Err(ComposeError::Policy(_))));
}

#[test]
fn broken_files_say_what_is_wrong() {
    assert!(matches!(parse("services: ["), Err(ComposeError::Yaml(_))));
    assert!(matches!(
        parse("version: '3'\n"),
        Err(ComposeError::NoServices)
    ));
    let no_image = parse("services:\n  a:\n    command: x\n")
        .unwrap_err()
        .to_string();
    assert!(
        no_image.contains("`a`") && no_image.contains("image"),
        "{no_image}"
    );
    let missing_dep = parse("services:\n  a:\n    image: x\n    depends_on: [b]\n")
        .unwrap_err()
        .to_string();
    assert!(missing_dep.contains("`b`"), "{missing_dep}");
    let cycle = parse("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n").unwrap_err().to_string();
    assert!(cycle.contains("cycle"), "{cycle}");
    let undeclared = parse("services:\n  a:\n    image: x\n    volumes: ['data:/data']\n")
        .unwrap_err()
        .to_string();
    assert!(undeclared.contains("not declared"), "{undeclared}");
    let bad_name = parse("services:\n  '../x':\n    image: x\n")
        .unwrap_err()
        .to_string();
    assert!(bad_name.contains("service name"), "{bad_name}");
}

#[test]
fn env_files_and_sizes_parse() {
    let env = parse_env_file("# comment\nA=1\nexport B=\"two words\"\nC='x'\n\nbroken\n");
    assert_eq!(env.len(), 3);
    assert_eq!(env["B"], "two words");
    assert_eq!(parse_bytes("1g").unwrap(), 1 << 30);
    assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
    assert!(parse_bytes("lots").is_err());
}

fn limited(text: &str, limits: &EnvLimits) -> Result<ComposeFile, ComposeError> {
    ComposeFile::parse_limited(text.as_bytes(), limits)
}

fn one_service(lines: &str) -> String {
    format!("services:\n  web:\n    image: x\n{lines}")
}

fn warnings_of(file: &ComposeFile) -> String {
    file.warnings.join("\n")
}

/// Every value Docker would read as "no limit", and every value out of range, ends between
/// the floor and the ceiling, and each change is reported.
#[test]
fn resource_limits_are_clamped_between_floor_and_ceiling() {
    let max = EnvLimits::default().max;
    let floor = EnvLimits::FLOOR;
    // (memory, nano_cpus, pids) expected; None = not set.
    type Expected = (Option<i64>, Option<i64>, Option<i64>);
    let cases: &[(&str, Expected)] = &[
        ("    mem_limit: 0\n", (Some(max.memory_bytes), None, None)),
        ("    mem_limit: -1\n", (Some(max.memory_bytes), None, None)),
        (
            "    mem_limit: '-1g'\n",
            (Some(max.memory_bytes), None, None),
        ),
        (
            "    mem_limit: 1k\n",
            (Some(floor.memory_bytes), None, None),
        ),
        ("    mem_limit: 1\n", (Some(floor.memory_bytes), None, None)),
        (
            "    mem_limit: 100g\n",
            (Some(max.memory_bytes), None, None),
        ),
        (
            "    mem_limit: 99999999999999999999999999g\n",
            (Some(max.memory_bytes), None, None),
        ),
        (
            "    mem_limit: 10000000000000\n",
            (Some(max.memory_bytes), None, None),
        ),
        ("    cpus: 1e-10\n", (None, Some(floor.nano_cpus), None)),
        (
            "    cpus: 0.000000001\n",
            (None, Some(floor.nano_cpus), None),
        ),
        ("    cpus: 0\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: -2\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: .nan\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: 'NaN'\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: .inf\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: -.inf\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: 1e300\n", (None, Some(max.nano_cpus), None)),
        ("    cpus: 64\n", (None, Some(max.nano_cpus), None)),
        ("    pids_limit: 0\n", (None, None, Some(max.pids))),
        ("    pids_limit: -1\n", (None, None, Some(max.pids))),
        ("    pids_limit: 1\n", (None, None, Some(floor.pids))),
        ("    pids_limit: 1000000\n", (None, None, Some(max.pids))),
        ("    pids_limit: 1e30\n", (None, None, Some(max.pids))),
        (
            "    deploy: { resources: { limits: { memory: '0', cpus: '0', pids: -1 } } }\n",
            (Some(max.memory_bytes), Some(max.nano_cpus), Some(max.pids)),
        ),
        (
            "    deploy: { resources: { limits: { memory: 1b, cpus: '0.000001', pids: 2 } } }\n",
            (
                Some(floor.memory_bytes),
                Some(floor.nano_cpus),
                Some(floor.pids),
            ),
        ),
        (
            "    mem_limit: 0\n    pids_limit: 0\n    cpus: 0.00001\n",
            (
                Some(max.memory_bytes),
                Some(floor.nano_cpus),
                Some(max.pids),
            ),
        ),
    ];
    for (lines, (memory, cpus, pids)) in cases {
        let file = parse(&one_service(lines)).unwrap_or_else(|e| panic!("{lines}: {e}"));
        let web = &file.services[0];
        assert_eq!(
            (web.mem_limit, web.nano_cpus, web.pids_limit),
            (*memory, *cpus, *pids),
            "{lines}"
        );
        for value in [web.mem_limit, web.nano_cpus, web.pids_limit]
            .into_iter()
            .flatten()
        {
            assert!(value > 0, "{lines}: {value} would mean no limit");
        }
        let all = warnings_of(&file);
        assert!(
            all.contains("not applied") && all.contains("service `web`"),
            "{lines}: the change must be reported: {all}"
        );
    }

    // In range: applied as written, nothing reported.
    let file = parse(&one_service(
        "    mem_limit: 256m\n    cpus: '0.5'\n    pids_limit: '100'\n",
    ))
    .unwrap();
    let web = &file.services[0];
    assert_eq!(
        (web.mem_limit, web.nano_cpus, web.pids_limit),
        (Some(256 << 20), Some(500_000_000), Some(100))
    );
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);

    // The ceilings are the configured ones.
    let mut limits = EnvLimits::default();
    limits.max.memory_bytes = 256 << 20;
    limits.max.nano_cpus = 500_000_000;
    limits.max.pids = 64;
    let file = limited(
        &one_service("    mem_limit: 1g\n    cpus: 2\n    pids_limit: 0\n"),
        &limits,
    )
    .unwrap();
    let web = &file.services[0];
    assert_eq!(
        (web.mem_limit, web.nano_cpus, web.pids_limit),
        (Some(256 << 20), Some(500_000_000), Some(64))
    );
    let all = warnings_of(&file);
    for key in ["max_memory", "max_cpus", "no limit"] {
        assert!(all.contains(key), "{key} missing from {all}");
    }
    assert!(parse(&one_service("    mem_limit: lots\n")).is_err());
    assert!(parse(&one_service("    cpus: many\n")).is_err());
    // Beyond what YAML numbers hold: refused, never "no limit".
    assert!(parse(&one_service("    pids_limit: 99999999999999999999999\n")).is_err());
}

#[test]
fn deploy_resources_limits_are_read_and_the_rest_of_deploy_is_reported() {
    let file = parse(&one_service(
        "    deploy:\n      replicas: 3\n      resources:\n        limits: { memory: 64m, cpus: '0.25', pids: 50 }\n        reservations: { memory: 1g }\n",
    ))
    .unwrap();
    let web = &file.services[0];
    assert_eq!(
        (web.mem_limit, web.nano_cpus, web.pids_limit),
        (Some(64 << 20), Some(250_000_000), Some(50))
    );
    let all = warnings_of(&file);
    assert!(all.contains("deploy.replicas"), "{all}");
    assert!(all.contains("deploy.resources.reservations"), "{all}");
    // The service-level key wins, and the loser is reported.
    let file = parse(&one_service(
        "    mem_limit: 32m\n    deploy: { resources: { limits: { memory: 0 } } }\n",
    ))
    .unwrap();
    assert_eq!(file.services[0].mem_limit, Some(32 << 20));
    assert!(warnings_of(&file).contains("deploy.resources.limits.memory"));
    assert!(parse(&one_service("    deploy: [1]\n")).is_err());
}

#[test]
fn count_limits_fail_the_file_with_the_numbers() {
    let services = |n: usize, profiled: usize| {
        let mut text = String::from("services:\n");
        for i in 0..n {
            text.push_str(&format!("  s{i}:\n    image: x\n"));
        }
        for i in 0..profiled {
            text.push_str(&format!("  t{i}:\n    image: x\n    profiles: [test]\n"));
        }
        text
    };
    assert!(
        parse(&services(50, 0)).is_ok() && limited(&services(50, 0), &EnvLimits::default()).is_ok()
    );
    let err = limited(&services(60, 0), &EnvLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "compose file has 60 services; the limit is 50 ([limits] max_services)"
    );
    // Profiled (test) services count too.
    let err = limited(&services(40, 11), &EnvLimits::default()).unwrap_err();
    assert!(err.to_string().contains("has 51 services"), "{err}");

    let mut volumes = String::from("services:\n  a:\n    image: x\nvolumes:\n");
    for i in 0..21 {
        volumes.push_str(&format!("  v{i}: {{}}\n"));
    }
    let err = limited(&volumes, &EnvLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "compose file has 21 volumes; the limit is 20 ([limits] max_volumes)"
    );

    let mut ports = String::from("services:\n");
    for s in 0..3 {
        ports.push_str(&format!("  s{s}:\n    image: x\n    ports:\n"));
        for p in 0..20 {
            ports.push_str(&format!("      - \"{}\"\n", 1000 + p));
        }
    }
    let err = limited(&ports, &EnvLimits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "compose file has 60 published ports; the limit is 50 ([limits] max_published_ports)"
    );

    let limits = EnvLimits {
        max_services: 2,
        ..EnvLimits::default()
    };
    let err = limited(&services(3, 0), &limits).unwrap_err();
    assert!(err.to_string().contains("the limit is 2"), "{err}");
}

#[test]
fn the_size_limit_is_checked_before_the_yaml_is_read() {
    let limits = EnvLimits {
        max_compose_bytes: 1024,
        ..EnvLimits::default()
    };
    // Not even YAML: refused for its size, not its syntax.
    let big = "[".repeat(2000);
    assert_eq!(
        limited(&big, &limits).unwrap_err(),
        ComposeError::TooLarge {
            size: 2000,
            limit: 1024
        }
    );
    let err = limited(&"#".repeat(2 << 20), &EnvLimits::default()).unwrap_err();
    assert!(
        err.to_string().contains("2097152 bytes") && err.to_string().contains("max_compose_size"),
        "{err}"
    );
}

/// Alias bombs are refused quickly without expanding them; ordinary anchors still work.
#[test]
fn yaml_alias_bombs_fail_fast() {
    let started = std::time::Instant::now();
    let laughs = r#"
x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
x-b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
x-c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
x-d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
x-e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
x-f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
x-g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
x-h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
x-i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
services:
  web:
    image: x
    command: *i
"#;
    assert!(parse(laughs).is_err());

    // Few jumps, each replaying a big list: serde_yaml's own jump limit does not catch this.
    let list = vec!["x"; 20_000].join(",");
    let aliases = vec!["*big"; 2_000].join(",");
    let quadratic =
        format!("x-big: &big [{list}]\nx-many: [{aliases}]\nservices:\n  web:\n    image: x\n");
    assert!(quadratic.len() < 1 << 20);
    match parse(&quadratic) {
        Err(ComposeError::TooManyNodes { .. }) => {}
        other => panic!("expected TooManyNodes, got {other:?}"),
    }
    // Deep flow nesting costs the scanner time per token and level: refused from the count.
    let deep = format!("services: {}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(
        parse(&deep),
        Err(ComposeError::TooManyFlowOpeners { .. })
    ));
    let deep_then_flat = format!("services: {}{}", "{a: ".repeat(120), "1,".repeat(500_000));
    assert!(parse(&deep_then_flat).is_err());
    // Block nesting as deep as 1 MiB allows.
    let mut block = String::from("services:\n");
    for depth in 1..1400 {
        block.push_str(&format!("{}a:\n", " ".repeat(depth)));
    }
    assert!(block.len() < 1 << 20);
    assert!(parse(&block).is_err());
    // Without the limits these would run for hours or exhaust memory; the bound is loose
    // so a debug build on a busy machine still passes (speed is the benchmarks' business).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );

    let anchors = "x-env: &env { A: '1' }\nservices:\n  a:\n    image: x\n    environment: *env\n  b:\n    image: x\n    environment: *env\n";
    let file = parse(anchors).unwrap();
    assert_eq!(file.services[1].environment["A"], "1");
}

#[test]
fn dropped_host_addresses_and_ports_are_reported() {
    let cases: &[(&str, u16, &str)] = &[
        (
            "\"0.0.0.0:8080:80\"",
            80,
            "host address and fixed host port are",
        ),
        ("\"127.0.0.1::80\"", 80, "host address is"),
        (
            "\"[::1]:8080:80/udp\"",
            80,
            "host address and fixed host port are",
        ),
        ("\"8080:80\"", 80, "fixed host port is"),
        ("\"8000-8010:80\"", 80, "fixed host port is"),
        ("{ target: 80, published: 8080 }", 80, "fixed host port is"),
        (
            "{ target: 80, published: \"8000-8001\" }",
            80,
            "fixed host port is",
        ),
        ("{ target: 81, host_ip: 0.0.0.0 }", 81, "host address is"),
        (
            "{ target: 82, host_ip: 0.0.0.0, published: 9000, protocol: udp }",
            82,
            "host address and fixed host port are",
        ),
    ];
    for (entry, container, what) in cases {
        let file = parse(&one_service(&format!("    ports: [{entry}]\n"))).unwrap();
        assert_eq!(
            file.services[0].ports[0].container_port, *container,
            "{entry}"
        );
        let all = warnings_of(&file);
        assert!(
            all.contains(&format!("{what} not applied"))
                && all.contains("publish_address")
                && all.contains(&format!("publishes {container}/")),
            "{entry}: {all}"
        );
    }
    for plain in [
        "\"80\"",
        "80",
        "\"80/udp\"",
        "\"0:80\"",
        "\":80\"",
        "{ target: 80 }",
    ] {
        let file = parse(&one_service(&format!("    ports: [{plain}]\n"))).unwrap();
        assert!(file.warnings.is_empty(), "{plain}: {:?}", file.warnings);
    }
    for bad in [
        "\"8000-8010:8000-8010\"",
        "\"0\"",
        "\"70000\"",
        "{ published: 80 }",
        "[1]",
    ] {
        assert!(
            parse(&one_service(&format!("    ports: [{bad}]\n"))).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn bad_names_are_refused_when_the_file_is_read() {
    let bad_volume_names = [
        "'x/../../../../var/lib/docker'",
        "'../x'",
        "'-x'",
        "'.x'",
        "''",
        "'a b'",
        "'a:b'",
        "'a\\x00b'",
        &"v".repeat(65),
    ];
    for name in bad_volume_names {
        let text = format!("services:\n  a:\n    image: x\nvolumes:\n  {name}: {{}}\n");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("volume name"), "{name}: {err}");
        // Also as the source of a long-syntax mount (which the policy lets through).
        let text = format!(
            "services:\n  a:\n    image: x\n    volumes: [{{ type: volume, source: {name}, target: /data }}]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("volume name"), "{name}: {err}");
    }
    let ok = parse("services:\n  a:\n    image: x\n    volumes: ['my_vol-1.x:/data']\nvolumes:\n  my_vol-1.x:\n").unwrap();
    assert_eq!(ok.volumes, vec!["my_vol-1.x".to_string()]);

    for target in ["data", "./data", "/", "//", "/a/../b", "", "~/x"] {
        let text = format!(
            "services:\n  a:\n    image: x\n    volumes: [{{ type: volume, source: v, target: '{target}' }}]\nvolumes:\n  v:\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("volume target"), "{target}: {err}");
    }
    let err = parse(&one_service("    working_dir: app\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("working_dir"), "{err}");
    for image in ["'${REGISTRY}/app'", "'-x'", "'a b'", "'x/../y'"] {
        let err = parse(&format!("services:\n  a:\n    image: {image}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("image"), "{image}: {err}");
    }
}

#[test]
fn stop_signal_and_grace_period_are_read_and_bounded() {
    let read = |lines: &str| parse(&one_service(lines)).map(|f| f.services[0].clone());
    let web = read("").unwrap();
    assert_eq!(
        (web.stop_signal, web.stop_grace),
        (None, Duration::from_secs(5))
    );
    for (given, normal) in [
        ("SIGTERM", "SIGTERM"),
        ("TERM", "SIGTERM"),
        ("sigint", "SIGINT"),
        ("SIGQUIT", "SIGQUIT"),
        ("SIGRTMIN+3", "SIGRTMIN+3"),
        ("9", "9"),
        ("'15'", "15"),
        ("64", "64"),
    ] {
        let web = read(&format!("    stop_signal: {given}\n")).unwrap();
        assert_eq!(web.stop_signal.as_deref(), Some(normal), "{given}");
    }
    for bad in [
        "FOO",
        "0",
        "65",
        "-1",
        "'SIGTERM; rm -rf /'",
        "''",
        "SIGRTMIN+99",
        "1.5",
        "[TERM]",
    ] {
        let err = read(&format!("    stop_signal: {bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("stop_signal"), "{bad}: {err}");
    }
    let generous = EnvLimits {
        max_stop_grace: Duration::from_secs(300),
        ..EnvLimits::default()
    };
    for (given, secs) in [("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("0s", 0.0)] {
        let text = one_service(&format!("    stop_grace_period: {given}\n"));
        let web = limited(&text, &generous).unwrap().services[0].clone();
        assert_eq!(web.stop_grace, Duration::from_secs_f64(secs), "{given}");
    }
    for huge in ["5m", "1h", "99999999999999999999h"] {
        let file = parse(&one_service(&format!("    stop_grace_period: {huge}\n"))).unwrap();
        assert_eq!(
            file.services[0].stop_grace,
            Duration::from_secs(60),
            "{huge}"
        );
        let all = warnings_of(&file);
        assert!(
            all.contains("max_stop_grace") && all.contains("not applied"),
            "{all}"
        );
    }
    for bad in ["soon", "10", "-1s"] {
        assert!(
            read(&format!("    stop_grace_period: {bad}\n")).is_err(),
            "{bad}"
        );
    }
    let limits = EnvLimits {
        max_stop_grace: Duration::from_secs(2),
        ..EnvLimits::default()
    };
    let file = limited(&one_service(""), &limits).unwrap();
    assert_eq!(file.services[0].stop_grace, Duration::from_secs(2));
}

/// `db` and `cache` shared, `web` per env, written both ways the extension allows.
const SHARED_BOTH_SPELLINGS: &str = r#"
x-slipway:
  shared: [cache]
services:
  db:
    image: postgres:16
    x-slipway: { shared: true }
    volumes: ["pgdata:/var/lib/postgresql/data"]
  cache:
    image: redis:7
  web:
    image: web
    depends_on: { db: { condition: service_healthy }, cache: { condition: service_started } }
    volumes: ["uploads:/srv/uploads"]
  tests:
    image: tester
    profiles: [test]
    depends_on: [web, db]
volumes:
  pgdata:
  uploads:
"#;

#[test]
fn shared_services_are_marked_on_the_service_or_listed_at_the_top() {
    let file = parse(SHARED_BOTH_SPELLINGS).unwrap();
    let shared: Vec<&str> = file
        .shared_services()
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(shared, ["db", "cache"]);
    let web = file.services.iter().find(|s| s.name.as_str() == "web");
    assert!(!web.unwrap().shared, "the default stays a copy per env");
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);

    // `shared: false` on the service, nothing at the top: nothing is shared.
    let file = parse(&one_service("    x-slipway: { shared: false }")).unwrap();
    assert!(file.shared_services().is_empty());
    // A key the extension does not know is reported, not dropped silently.
    let file = parse(&one_service("    x-slipway: { shared: true, pool: 3 }")).unwrap();
    assert_eq!(file.shared_services().len(), 1);
    assert!(
        warnings_of(&file).contains("`x-slipway.pool` is not known"),
        "{}",
        warnings_of(&file)
    );
}

#[test]
fn shared_services_that_cannot_work_are_refused_with_the_reason() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    // A shared service depending on a per-env one.
    let e = err(r#"
services:
  db: { image: postgres, x-slipway: { shared: true }, depends_on: [web] }
  web: { image: web }
"#);
    assert!(
        e.contains("service `db`") && e.contains("depends on `web`, which runs in each env"),
        "{e}"
    );
    // ...but on another shared one it may.
    parse(
        r#"
x-slipway: { shared: [db, migrate] }
services:
  db: { image: postgres, depends_on: [migrate] }
  migrate: { image: migrate }
  web: { image: web, depends_on: [db] }
"#,
    )
    .unwrap();
    // Names in the top-level list are checked.
    let e = err("x-slipway: { shared: [dbb] }\nservices:\n  db: { image: postgres }\n");
    assert!(
        e.contains("x-slipway.shared: `dbb` is not a service"),
        "{e}"
    );
    let e = err("x-slipway: { shared: db }\nservices:\n  db: { image: postgres }\n");
    assert!(e.contains("is not a list"), "{e}");
    let e = err("x-slipway: { shared: [[db]] }\nservices:\n  db: { image: postgres }\n");
    assert!(e.contains("is not a service name"), "{e}");
    // A profiled service never starts with the shared env.
    let e = err(r#"
x-slipway: { shared: [tests] }
services:
  db: { image: postgres }
  tests: { image: t, profiles: [test] }
"#);
    assert!(e.contains("`tests` is in a profile"), "{e}");
    let e = err(r#"
services:
  db: { image: postgres }
  tests: { image: t, profiles: [test], x-slipway: { shared: true } }
"#);
    assert!(
        e.contains("service `tests`") && e.contains("in a profile"),
        "{e}"
    );
    // The service's own mark must be a boolean, the extension a mapping.
    let e = err(&one_service("    x-slipway: { shared: yes please }"));
    assert!(e.contains("must be true or false"), "{e}");
    let e = err(&one_service("    x-slipway: shared"));
    assert!(e.contains("`x-slipway` must be a mapping"), "{e}");
    // One volume on both sides would silently be two volumes.
    let e = err(r#"
services:
  db: { image: postgres, x-slipway: { shared: true }, volumes: ["data:/d"] }
  web: { image: web, volumes: ["data:/d"] }
volumes:
  data:
"#);
    assert!(
        e.contains("volume `data` is mounted by shared service `db` and by `web`"),
        "{e}"
    );
}
