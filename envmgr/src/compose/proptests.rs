//! Fuzzing the compose reader with proptest: arbitrary bytes, and arbitrary YAML built from
//! compose-like keys and values (nested mappings and sequences, anchors and aliases). Whatever
//! comes in, `ComposeFile::parse_limited` returns (no panic, no hang), and what it returns is
//! bounded: counts within `[limits]`, every resource limit between floor and ceiling, stop
//! grace within its cap.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

/// Keys the reader looks at, so generated documents reach deep into it.
const KEYS: &[&str] = &[
    "services",
    "volumes",
    "version",
    "name",
    "networks",
    "x-slipway",
    "tests",
    "timeout",
    "report",
    "image",
    "build",
    "context",
    "dockerfile",
    "args",
    "target",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "published",
    "host_ip",
    "protocol",
    "expose",
    "depends_on",
    "condition",
    "healthcheck",
    "test",
    "interval",
    "retries",
    "restart",
    "type",
    "source",
    "read_only",
    "working_dir",
    "user",
    "mem_limit",
    "cpus",
    "pids_limit",
    "profiles",
    "stop_signal",
    "stop_grace_period",
    "deploy",
    "resources",
    "limits",
    "memory",
    "pids",
    "privileged",
    "cap_add",
    "network_mode",
    "security_opt",
    "driver_opts",
    "external",
    "web",
    "db",
    "data",
    "<<",
];

/// Scalars that mean something to some key.
const SCALARS: &[&str] = &[
    "x",
    "0",
    "-1",
    "1e-10",
    ".nan",
    ".inf",
    "99999999999999999999999",
    "512m",
    "1g",
    "0.5",
    "8080",
    "0.0.0.0:8080:80",
    "127.0.0.1::80",
    "8000-8010:80",
    "80/udp",
    "data:/data",
    "data:/data:ro",
    "/",
    "..",
    "x/../../var/lib/docker",
    "SIGTERM",
    "TERM",
    "65",
    "10s",
    "1m30s",
    "500ms",
    "99999999999999h",
    "service_healthy",
    "on-failure:3",
    "always",
    "host",
    "test",
    "CMD",
    "null",
    "~",
    "true",
    "''",
    "\"\"",
    "-",
    "*",
    "&",
    "!tag x",
    "{",
    "[",
    "é✓",
];

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(SCALARS).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:e}")),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_.-]{1,8}",
    ]
}

/// A YAML document as flow-style text: nested mappings and sequences.
fn node() -> impl Strategy<Value = String> {
    let leaf = scalar().prop_map(|s| {
        // Quote most scalars so the document stays valid YAML; leave some bare.
        if s.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            s
        } else {
            format!("{s:?}")
        }
    });
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec((key(), inner), 0..6).prop_map(|pairs| {
                let body: Vec<String> = pairs
                    .into_iter()
                    .map(|(k, v)| format!("{k:?}: {v}"))
                    .collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

/// A compose-shaped document: services with generated bodies, maybe anchors and aliases.
fn compose_doc() -> impl Strategy<Value = String> {
    (
        proptest::collection::vec(("[a-z][a-z0-9]{0,5}", node()), 1..5),
        proptest::option::of(node()),
        proptest::option::of((node(), 1..40usize)),
    )
        .prop_map(|(services, volumes, alias)| {
            let mut text = String::new();
            if let Some((anchored, uses)) = alias {
                text.push_str(&format!("x-a: &a {anchored}\n"));
                text.push_str(&format!("x-b: &b [{}]\n", vec!["*a"; uses].join(", ")));
                text.push_str(&format!("x-c: [{}]\n", vec!["*b"; uses].join(", ")));
            }
            text.push_str("services:\n");
            for (name, body) in services {
                text.push_str(&format!("  {name}: {body}\n"));
            }
            if let Some(volumes) = volumes {
                text.push_str(&format!("volumes: {volumes}\n"));
            }
            text
        })
}

fn check_bounded(file: &ComposeFile, limits: &EnvLimits) {
    let all: Vec<&ComposeService> = file.services.iter().chain(&file.profiled).collect();
    assert!(all.len() <= limits.max_services);
    assert!(file.volumes.len() <= limits.max_volumes);
    let ports: usize = all.iter().map(|s| s.ports.len()).sum();
    assert!(ports <= limits.max_published_ports);
    let floor = EnvLimits::FLOOR;
    for s in all {
        if let Some(m) = s.mem_limit {
            assert!(
                (floor.memory_bytes..=limits.max.memory_bytes).contains(&m),
                "{m}"
            );
        }
        if let Some(c) = s.nano_cpus {
            assert!((floor.nano_cpus..=limits.max.nano_cpus).contains(&c), "{c}");
        }
        if let Some(p) = s.pids_limit {
            assert!((floor.pids..=limits.max.pids).contains(&p), "{p}");
        }
        assert!(s.stop_grace <= limits.max_stop_grace);
        for (volume, target, _) in &s.volumes {
            assert!(limits::volume_name(volume).is_ok() && limits::mount_target(target).is_ok());
        }
    }
}

/// Small limits so generated files hit them.
fn small_limits() -> EnvLimits {
    EnvLimits {
        max_services: 3,
        max_volumes: 2,
        max_published_ports: 3,
        ..EnvLimits::default()
    }
}

proptest! {
    #![proptest_config(Config { cases: 1500, failure_persistence: None, ..Config::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let limits = small_limits();
        if let Ok(file) = ComposeFile::parse_limited(&bytes, &limits) {
            check_bounded(&file, &limits);
        }
    }

    #[test]
    fn compose_shaped_yaml_never_panics_and_stays_bounded(text in compose_doc()) {
        for limits in [small_limits(), EnvLimits::default()] {
            if let Ok(file) = ComposeFile::parse_limited(text.as_bytes(), &limits) {
                check_bounded(&file, &limits);
            }
        }
    }
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    /// Text that is almost a compose file: one line of a valid file replaced by noise.
    #[test]
    fn mutated_compose_files_never_panic(line in 0..40usize, noise in "[ -~]{0,20}") {
        let base = include_str!("../../../compose/demo.yml");
        let mutated: Vec<&str> = base
            .lines()
            .enumerate()
            .map(|(i, l)| if i == line { noise.as_str() } else { l })
            .collect();
        let text = mutated.join("\n");
        let limits = EnvLimits::default();
        if let Ok(file) = ComposeFile::parse_limited(text.as_bytes(), &limits) {
            check_bounded(&file, &limits);
        }
    }
}
