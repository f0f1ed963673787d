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
