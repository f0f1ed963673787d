//! The Docker runtime against the real engine. Nothing is pulled: a tiny image is built
//! from the host's static busybox (`apt-get install busybox-static`).
//!
//! Every test uses its own env name and instance id, so tests run in parallel, and destroys
//! its env at the end even when an assertion fails.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bytes::Bytes;
use envmgr::names::{EnvName, RepoName, ServiceName};
use envmgr::runtime::docker::DockerRuntime;
use envmgr::runtime::{
    labels, BuildContext, BuildRequest, Dependency, DependencyCondition, EnvSpec, HealthcheckSpec,
    ImageSource, LogOptions, ObservedEnv, PortSpec, Progress, ProgressSink, Protocol,
    ResourceLimits, RestartPolicy, Runtime, RuntimeError, ServiceSpec, ServiceState,
    SharedServices, VolumeMount,
};
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

const IMAGE: &str = "slipway-test/busybox:1";
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn runtime(test: &str) -> DockerRuntime {
    let instance = format!("test-{}-{test}", std::process::id());
    DockerRuntime::connect(&instance)
        .await
        .expect("these tests need a running Docker engine")
}

fn env_name(test: &str) -> EnvName {
    EnvName::parse(&format!("t{}-{test}", std::process::id())).expect("test env names are valid")
}

/// Runs `body` with a fresh runtime and env, then destroys the env whatever happened.
async fn with_env<F, Fut>(test: &str, body: F)
where
    F: FnOnce(DockerRuntime, EnvName) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = runtime(test).await;
    let env = env_name(test);
    let outcome = tokio::time::timeout(
        TEST_TIMEOUT,
        AssertUnwindSafe(body(rt.clone(), env.clone())).catch_unwind(),
    )
    .await;
    rt.destroy(&env).await.expect("destroy after the test");
    match outcome {
        Err(_) => panic!("test `{test}` took longer than {TEST_TIMEOUT:?}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(())) => {}
    }
}

/// Builds the busybox test image once per test binary.
async fn busybox_image(rt: &DockerRuntime) -> String {
    static IMAGE_READY: OnceCell<String> = OnceCell::const_new();
    IMAGE_READY
        .get_or_init(|| async {
            // The label is what `build_request` requires of an image it reuses.
            let dockerfile = "FROM scratch\n\
                LABEL dev.slipway.test=busybox-1\n\
                COPY busybox /bin/busybox\n\
                RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
                RUN mkdir -p /www && echo hello-slipway > /www/index.html\n";
            let busybox = std::fs::read("/bin/busybox")
                .expect("install busybox-static: /bin/busybox is missing");
            let context = context_tar(&[
                ("Dockerfile", dockerfile.as_bytes(), 0o644),
                ("busybox", &busybox, 0o755),
            ]);
            let request = build_request(IMAGE, context);
            rt.prepare_image(&ImageSource::Build(request), quiet())
                .await
                .expect("building the busybox test image")
        })
        .await
        .clone()
}

fn build_request(tag: &str, context: Bytes) -> BuildRequest {
    BuildRequest {
        service: service_name("web"),
        tag: tag.to_string(),
        dockerfile: "Dockerfile".into(),
        context: BuildContext::bytes(context),
        args: BTreeMap::new(),
        target: None,
        required_labels: BTreeMap::from([(
            "dev.slipway.test".to_string(),
            "busybox-1".to_string(),
        )]),
    }
}

fn context_tar(files: &[(&str, &[u8], u32)]) -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        builder
            .append_data(&mut header, path, *data)
            .expect("in-memory tar");
    }
    Bytes::from(builder.into_inner().expect("in-memory tar"))
}

fn quiet() -> ProgressSink {
    Arc::new(|_| {})
}

/// A progress sink and everything it received.
fn recorder() -> (ProgressSink, Arc<Mutex<Vec<Progress>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (Arc::new(move |p| sink.lock().unwrap().push(p)), events)
}

fn service_name(name: &str) -> ServiceName {
    ServiceName::parse(name).unwrap()
}

fn service(name: &str, image: &str, command: &str) -> ServiceSpec {
    ServiceSpec {
        name: service_name(name),
        image: image.to_string(),
        command: Some(vec!["sh".into(), "-c".into(), command.into()]),
        entrypoint: None,
        environment: BTreeMap::new(),
        ports: vec![],
        expose: vec![],
        depends_on: vec![],
        healthcheck: None,
        restart: RestartPolicy::No,
        volumes: vec![],
        working_dir: None,
        user: None,
        limits: ResourceLimits {
            memory_bytes: 64 << 20,
            nano_cpus: 500_000_000,
            pids: 100,
        },
        stop_signal: None,
        stop_grace: Duration::from_secs(5),
    }
}

fn depends(service: &str, condition: DependencyCondition) -> Dependency {
    Dependency {
        service: service_name(service),
        condition,
    }
}

fn fast_healthcheck(test: &[&str]) -> HealthcheckSpec {
    HealthcheckSpec {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        retries: 20,
        start_period: Duration::ZERO,
    }
}

fn env_spec(env: &EnvName, services: Vec<ServiceSpec>, volumes: &[&str]) -> EnvSpec {
    EnvSpec {
        env: env.clone(),
        repo: RepoName::parse("demo").unwrap(),
        services,
        volumes: volumes.iter().map(|v| v.to_string()).collect(),
        shared: None,
    }
}

fn container_id(observed: &ObservedEnv, name: &str) -> String {
    observed
        .service(&service_name(name))
        .unwrap_or_else(|| panic!("no service {name}"))
        .container_id
        .clone()
}

async fn read_logs(rt: &DockerRuntime, env: &EnvName, service: Option<&str>) -> String {
    let service = service.map(service_name);
    let mut stream = rt
        .logs(env, service.as_ref(), LogOptions::default())
        .await
        .expect("logs");
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.expect("log chunk")));
    }
    text
}

/// Logs of `service` once they contain `needle` (output can lag the container's state).
async fn logs_containing(
    rt: &DockerRuntime,
    env: &EnvName,
    service: Option<&str>,
    needle: &str,
) -> String {
    for _ in 0..50 {
        let text = read_logs(rt, env, service).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "logs of {service:?} never contained {needle:?}: {}",
        read_logs(rt, env, service).await
    );
}

async fn http_get(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to published port");
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// Containers, networks and volumes carrying `env`'s label, as seen by Docker itself.
async fn leftovers(rt: &DockerRuntime, env: &EnvName) -> usize {
    let filters = HashMap::from([("label", vec![format!("{}={env}", labels::ENV)])]);
    let docker = rt.docker();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    containers.len() + networks.len() + volumes.volumes.unwrap_or_default().len()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn env_starts_in_dependency_order_serves_http_and_is_destroyed() {
    with_env("full", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let spec = three_service_spec(&env, &image);
        let (progress, events) = recorder();
        let observed = rt
            .apply(&spec, READY_TIMEOUT, progress)
            .await
            .expect("apply");

        assert!(observed.network);
        assert_eq!(observed.volumes, vec!["data".to_string()]);
        let state = |name: &str| observed.service(&service_name(name)).unwrap().state.clone();
        let completed = ServiceState::Exited {
            code: 0,
            oom_killed: false,
        };
        assert_eq!(state("web"), ServiceState::Healthy);
        assert_eq!(state("migrate"), completed);
        assert_eq!(state("worker"), ServiceState::Running);

        // The worker was created only once both of its dependencies were satisfied.
        let events = events.lock().unwrap().clone();
        let worker_created = event_index(&events, "worker", &ServiceState::Created);
        assert!(event_index(&events, "web", &ServiceState::Healthy) < worker_created);
        assert!(event_index(&events, "migrate", &completed) < worker_created);

        let web = observed.service(&service_name("web")).unwrap();
        let port = web.ports.iter().find(|p| p.container_port == 8080);
        let response = http_get(port.expect("published port").host_port).await;
        assert!(response.contains("hello-slipway"), "{response}");

        let migrate_logs = read_logs(&rt, &env, Some("migrate")).await;
        assert!(migrate_logs.contains("migrated"), "{migrate_logs}");
        let worker_logs = logs_containing(&rt, &env, Some("worker"), "hello-slipway").await;
        assert!(
            worker_logs.contains("done"),
            "no shared volume: {worker_logs}"
        );
        let merged = logs_containing(&rt, &env, None, "worker | hello-slipway").await;
        assert!(merged.contains("migrate | migrated"), "{merged}");
        let unknown = service_name("nope");
        let err = rt
            .logs(&env, Some(&unknown), LogOptions::default())
            .await
            .err();
        assert!(
            matches!(err, Some(RuntimeError::NoSuchService(_))),
            "{err:?}"
        );

        assert!(rt.list_envs().await.unwrap().contains(&env));
        // The one-listing glance tells what the full fetch tells: names, states, ports.
        let fetched = rt.fetch(&env).await.unwrap().services;
        let glance = rt.glance().await.unwrap();
        let glanced = glance.get(&env).expect("the env is in the glance");
        let summary = |services: &[envmgr::runtime::ObservedService]| {
            services
                .iter()
                .map(|s| {
                    (
                        s.name.to_string(),
                        s.state.clone(),
                        s.ports.clone(),
                        s.spec_hash.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(glanced), summary(&fetched));
        rt.destroy(&env).await.expect("destroy");
        assert_eq!(rt.fetch(&env).await.unwrap(), ObservedEnv::default());
        assert!(!rt.glance().await.unwrap().contains_key(&env));
        assert_eq!(
            leftovers(&rt, &env).await,
            0,
            "destroy left Docker objects behind"
        );
        rt.destroy(&env).await.expect("destroying twice is fine");
        assert!(!rt.list_envs().await.unwrap().contains(&env));
    })
    .await;
}

/// web (HTTP with a health check and a published port), a one-shot migrate writing to a
/// volume, and a worker that needs both and reaches web by its service name.
fn three_service_spec(env: &EnvName, image: &str) -> EnvSpec {
    let mut web = service("web", image, "exec httpd -f -p 8080 -h /www");
    web.ports = vec![PortSpec {
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let probe = ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/"];
    web.healthcheck = Some(fast_healthcheck(&probe));
    let mut migrate = service(
        "migrate",
        image,
        "echo migrated; echo done > /data/migrated",
    );
    migrate.volumes = vec![mount("data", "/data", false)];
    let script = "cat /data/migrated; wget -q -O- http://web:8080/; exec sleep 3600";
    let mut worker = service("worker", image, script);
    worker.volumes = vec![mount("data", "/data", true)];
    worker.depends_on = vec![
        depends("web", DependencyCondition::Healthy),
        depends("migrate", DependencyCondition::CompletedSuccessfully),
    ];
    env_spec(env, vec![web, migrate, worker], &["data"])
}

fn mount(volume: &str, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        volume: volume.into(),
        target: target.into(),
        read_only,
    }
}

/// Where in `events` `service` reported `wanted`.
fn event_index(events: &[Progress], service: &str, wanted: &ServiceState) -> usize {
    let is_it = |e: &Progress| match e {
        Progress::Service { service: s, state } => s.as_str() == service && state == wanted,
        Progress::Output { .. } => false,
    };
    events
        .iter()
        .position(is_it)
        .unwrap_or_else(|| panic!("no {wanted:?} event for {service}: {events:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn reapply_replaces_only_what_changed() {
    with_env("reapply", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let services = ["a", "b", "c"].map(|name| service(name, &image, "exec sleep 3600"));
        let first = rt
            .apply(
                &env_spec(&env, services.to_vec(), &[]),
                READY_TIMEOUT,
                quiet(),
            )
            .await
            .expect("apply");

        let same = rt
            .apply(
                &env_spec(&env, services.to_vec(), &[]),
                READY_TIMEOUT,
                quiet(),
            )
            .await
            .expect("re-apply");
        for name in ["a", "b", "c"] {
            assert_eq!(
                container_id(&first, name),
                container_id(&same, name),
                "{name} should be kept"
            );
        }

        let [a, mut b, _c] = services;
        b.environment.insert("CHANGED".into(), "yes".into());
        let second = rt
            .apply(&env_spec(&env, vec![a, b], &[]), READY_TIMEOUT, quiet())
            .await
            .expect("apply changed");
        assert_eq!(
            container_id(&first, "a"),
            container_id(&second, "a"),
            "a is unchanged"
        );
        assert_ne!(
            container_id(&first, "b"),
            container_id(&second, "b"),
            "b changed"
        );
        assert!(
            second.service(&service_name("c")).is_none(),
            "c left the spec"
        );
        assert_eq!(second.services.len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_one_shot_reports_its_exit_code_and_output() {
    with_env("failing", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let migrate = service("migrate", &image, "echo migration-broke >&2; exit 3");
        let mut web = service("web", &image, "exec sleep 3600");
        web.depends_on = vec![depends(
            "migrate",
            DependencyCondition::CompletedSuccessfully,
        )];
        let spec = env_spec(&env, vec![web, migrate], &[]);

        let err = rt
            .apply(&spec, READY_TIMEOUT, quiet())
            .await
            .expect_err("migrate fails");
        let RuntimeError::ServiceFailed { service, reason } = &err else {
            panic!("unexpected error: {err}")
        };
        assert_eq!(service.as_str(), "migrate");
        assert!(reason.contains("exited with code 3"), "{reason}");
        assert!(
            reason.contains("migration-broke"),
            "the reason should quote the logs: {reason}"
        );
        let observed = rt.fetch(&env).await.unwrap();
        assert!(
            observed.service(&service_name("web")).is_none(),
            "web must not start without its dependency"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crashing_service_fails_and_slow_health_times_out() {
    with_env("crash", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let crash = service("crash", &image, "echo crashing; exit 1");
        let err = rt
            .apply(&env_spec(&env, vec![crash], &[]), READY_TIMEOUT, quiet())
            .await
            .expect_err("crash");
        assert!(
            matches!(&err, RuntimeError::ServiceFailed { reason, .. } if reason.contains("code 1")),
            "{err}"
        );

        let mut never = service("never", &image, "exec sleep 3600");
        never.healthcheck = Some(fast_healthcheck(&["CMD", "false"]));
        never.healthcheck.as_mut().unwrap().retries = 1000;
        let err = rt
            .apply(
                &env_spec(&env, vec![never], &[]),
                Duration::from_secs(2),
                quiet(),
            )
            .await
            .expect_err("timeout");
        assert!(
            matches!(&err, RuntimeError::Timeout { waiting_for, .. } if waiting_for == "healthy"),
            "{err}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn names_taken_by_others_are_a_conflict() {
    with_env("conflict", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let name = format!("slipway-{env}-web");
        let body = bollard::models::ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(vec!["true".into()]),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        rt.docker()
            .create_container(Some(options), body)
            .await
            .expect("create a foreign container");

        let spec = env_spec(&env, vec![service("web", &image, "exec sleep 3600")], &[]);
        let result = rt.apply(&spec, READY_TIMEOUT, quiet()).await;
        let foreign_still_there = rt
            .docker()
            .inspect_container(
                &name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .is_ok();
        let remove = RemoveContainerOptionsBuilder::new().force(true).build();
        rt.docker()
            .remove_container(&name, Some(remove))
            .await
            .expect("remove the foreign container");

        assert!(
            matches!(&result, Err(RuntimeError::Conflict(m)) if m.contains(&name)),
            "{result:?}"
        );
        assert!(
            foreign_still_there,
            "a container without our labels must never be removed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn image_failures_are_reported_with_their_cause() {
    let rt = runtime("images").await;
    let image = busybox_image(&rt).await;

    // Building again with the same tag and labels is skipped without reading the context.
    let (progress, events) = recorder();
    let again = BuildRequest {
        context: BuildContext::lazy(|| async { Err("the context must not be read".to_string()) }),
        ..build_request(
            IMAGE,
            context_tar(&[("Dockerfile", b"FROM scratch\n", 0o644)]),
        )
    };
    assert_eq!(
        rt.prepare_image(&ImageSource::Build(again), progress)
            .await
            .unwrap(),
        image
    );
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Progress::Output { line, .. } if line.contains("existing"))));

    let dockerfile = format!("FROM {image}\nRUN echo step-output && exit 7\n");
    let broken = BuildRequest {
        tag: format!("slipway-test/broken:{}", std::process::id()),
        ..build_request(
            IMAGE,
            context_tar(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]),
        )
    };
    let err = rt
        .prepare_image(&ImageSource::Build(broken), quiet())
        .await
        .expect_err("the build fails");
    let RuntimeError::Build { message, .. } = &err else {
        panic!("unexpected error: {err}")
    };
    assert!(message.contains("step-output"), "{message}");
    assert!(message.contains("returned a non-zero code: 7"), "{message}");

    let present = ImageSource::Pull {
        reference: image.clone(),
    };
    assert_eq!(rt.prepare_image(&present, quiet()).await.unwrap(), image);
    let missing = ImageSource::Pull {
        reference: "slipway-test/does-not-exist:1".into(),
    };
    let err = rt
        .prepare_image(&missing, quiet())
        .await
        .expect_err("nothing to pull from");
    let is_image_error =
        matches!(&err, RuntimeError::Image { image, .. } if image.contains("does-not"));
    assert!(is_image_error, "{err}");
}

// ---------------------------------------------------------------------------------------
// Hardening (issue 9): publish address, 4xx classification, graceful stops
// ---------------------------------------------------------------------------------------

/// Whether anything LISTENs on `port` on the wildcard address (0.0.0.0 or [::]).
fn wildcard_listener(port: u16) -> bool {
    let wanted = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|file| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (local, state) = (fields[1], fields[3]);
                let (addr, port_part) = local.split_at(local.len() - 5);
                state == "0A" && port_part == wanted && addr.chars().all(|c| c == '0')
            })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn published_ports_listen_on_the_publish_address_only() {
    with_env("publish", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let mut web = service("web", &image, "exec httpd -f -p 8080 -h /www");
        web.ports = vec![PortSpec {
            container_port: 8080,
            protocol: Protocol::Tcp,
        }];
        let spec = env_spec(&env, vec![web], &[]);
        let observed = rt
            .apply(&spec, READY_TIMEOUT, quiet())
            .await
            .expect("apply");
        let id = container_id(&observed, "web");
        let info = rt
            .docker()
            .inspect_container(
                &id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .unwrap();
        let bindings = info.network_settings.unwrap().ports.unwrap()["8080/tcp"]
            .clone()
            .expect("8080 is published");
        assert!(!bindings.is_empty());
        for binding in &bindings {
            assert_eq!(
                binding.host_ip.as_deref(),
                Some("127.0.0.1"),
                "{bindings:?}"
            );
        }
        let port: u16 = bindings[0].host_port.as_deref().unwrap().parse().unwrap();
        assert!(http_get(port).await.contains("hello-slipway"));
        assert!(
            !wildcard_listener(port),
            "port {port} listens on 0.0.0.0 or [::]"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_refusals_are_not_transient() {
    with_env("refused", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let mut web = service("web", &image, "sleep 60");
        // Docker refuses this volume name with a 400; it must not read as "unavailable".
        web.volumes = vec![mount("bad name!", "/data", false)];
        let spec = env_spec(&env, vec![web], &["bad name!"]);
        let err = rt
            .apply(&spec, READY_TIMEOUT, quiet())
            .await
            .expect_err("an invalid volume name cannot be created");
        assert!(!err.is_transient(), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("bad name!"),
            "Docker's message is kept: {text}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn replaced_and_destroyed_containers_are_stopped_gracefully() {
    with_env("graceful", |rt, env| async move {
        let image = busybox_image(&rt).await;
        // v1 records the stop signal it got in the volume; v2 (a new spec, so v1 is
        // replaced) prints what v1 wrote.
        let mut v1 = service(
            "web",
            &image,
            "trap 'echo got-usr1 > /data/stopped; exit 0' USR1; \
             echo up; while true; do sleep 0.1; done",
        );
        v1.volumes = vec![mount("data", "/data", false)];
        v1.stop_signal = Some("SIGUSR1".into());
        v1.stop_grace = Duration::from_secs(20);
        rt.apply(
            &env_spec(&env, vec![v1.clone()], &["data"]),
            READY_TIMEOUT,
            quiet(),
        )
        .await
        .expect("apply v1");
        logs_containing(&rt, &env, Some("web"), "up").await;
        let mut v2 = v1.clone();
        v2.command = Some(vec![
            "sh".into(),
            "-c".into(),
            "cat /data/stopped; echo v2; sleep 60".into(),
        ]);
        v2.stop_signal = None;
        v2.stop_grace = Duration::from_secs(1);
        let started = std::time::Instant::now();
        rt.apply(&env_spec(&env, vec![v2], &["data"]), READY_TIMEOUT, quiet())
            .await
            .expect("apply v2");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "v1 handled its stop signal and did not need its 20s grace"
        );
        let logs = logs_containing(&rt, &env, Some("web"), "v2").await;
        assert!(logs.contains("got-usr1"), "v1's trap did not run: {logs}");

        // Services ignoring SIGTERM are killed after their grace, all stopped in parallel.
        let mut stubborn = Vec::new();
        for name in ["a", "b", "c"] {
            let mut s = service(name, &image, "trap '' TERM; while true; do sleep 0.1; done");
            s.stop_grace = Duration::from_secs(2);
            stubborn.push(s);
        }
        rt.apply(&env_spec(&env, stubborn, &[]), READY_TIMEOUT, quiet())
            .await
            .expect("apply stubborn services");
        let started = std::time::Instant::now();
        rt.destroy(&env).await.expect("destroy");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1900),
            "killed before the grace: {took:?}"
        );
        assert!(
            took < Duration::from_secs(5),
            "not stopped in parallel: {took:?}"
        );
        assert_eq!(leftovers(&rt, &env).await, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn services_restarting_in_a_loop_fail_with_their_exit_code() {
    with_env("restartloop", |rt, env| async move {
        let image = busybox_image(&rt).await;
        let policies = [
            RestartPolicy::Always,
            RestartPolicy::UnlessStopped,
            RestartPolicy::OnFailure { max_retries: None },
        ];
        for (i, restart) in policies.into_iter().enumerate() {
            // A fresh command each round so the previous container is replaced.
            let mut web = service("web", &image, &format!("echo boom-{i}; sleep 0.2; exit 3"));
            web.restart = restart.clone();
            let err = rt
                .apply(&env_spec(&env, vec![web], &[]), READY_TIMEOUT, quiet())
                .await
                .expect_err("a service exiting in a loop is not ready");
            let text = err.to_string();
            assert!(
                matches!(err, RuntimeError::ServiceFailed { .. })
                    && text.contains("keeps exiting (exit code 3, restarted")
                    && text.contains(&format!("boom-{i}")),
                "{restart:?}: {text}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn built_images_are_listed_with_their_use_and_only_unused_ones_can_be_removed() {
    with_env("builtimages", |rt, env| async move {
        let base = busybox_image(&rt).await;
        // Its own image name, so other tests' images do not matter.
        let name = format!("slipway/builtimages{}-web", std::process::id());
        let mut tags = Vec::new();
        for version in 0..2 {
            let dockerfile = format!("FROM {base}\nRUN echo {version} > /version\n");
            let tag = format!("{name}:v{version}");
            let request = build_request(
                &tag,
                context_tar(&[("Dockerfile", dockerfile.as_bytes(), 0o644)]),
            );
            rt.prepare_image(&ImageSource::Build(request), quiet())
                .await
                .expect("build");
            tags.push(tag);
        }
        // v0 runs (then stops: a stopped container still uses its image).
        let web = service("web", &tags[0], "sleep 60");
        rt.apply(&env_spec(&env, vec![web], &[]), READY_TIMEOUT, quiet())
            .await
            .expect("apply");
        rt.stop(&env).await.unwrap();
        let listed = rt.built_images().await.unwrap();
        let used = |tag: &str| listed.iter().find(|i| i.reference == tag).map(|i| i.in_use);
        assert_eq!(used(&tags[0]), Some(true), "{listed:?}");
        assert_eq!(used(&tags[1]), Some(false), "{listed:?}");
        assert!(listed.iter().all(|i| i.reference.starts_with("slipway/")));

        assert!(
            !rt.remove_built_image(&tags[0]).await.unwrap(),
            "in use: kept"
        );
        assert!(rt.docker().inspect_image(&tags[0]).await.is_ok());
        assert!(rt.remove_built_image(&tags[1]).await.unwrap());
        assert!(rt.docker().inspect_image(&tags[1]).await.is_err());
        assert!(
            !rt.remove_built_image(&tags[1]).await.unwrap(),
            "gone already"
        );

        rt.destroy(&env).await.unwrap();
        assert!(
            rt.remove_built_image(&tags[0]).await.unwrap(),
            "unused once destroyed"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_answers_without_touching_any_object() {
    let rt = runtime("ping").await;
    rt.ping().await.expect("a running engine answers a ping");
    // The trait's default (listing envs) agrees that the engine is there.
    rt.list_envs().await.expect("the engine lists containers");
}

/// Another env's service on an env's network: reached there by its name, taken off again
/// when no longer wanted, and left running (and on its own network only) when the env that
/// reached it is destroyed.
#[tokio::test]
async fn shared_services_join_an_envs_network_and_survive_its_destruction() {
    let rt = runtime("shared").await;
    let shared_env = env_name("shared-store");
    let env = env_name("shared-user");
    let body = {
        let (rt, shared_env, env) = (rt.clone(), shared_env.clone(), env.clone());
        async move {
            let image = busybox_image(&rt).await;
            let serve = "mkdir -p /www && echo from-the-shared-store > /www/index.html && exec httpd -f -p 8080 -h /www";
            let shared_spec = env_spec(&shared_env, vec![service("store", &image, serve)], &[]);
            rt.apply(&shared_spec, READY_TIMEOUT, quiet())
                .await
                .expect("the shared env starts");
            let store = rt.fetch(&shared_env).await.unwrap().services[0].clone();

            let fetch = "until wget -q -O- http://store:8080/; do sleep 0.2; done; exec sleep 3600";
            let mut spec = env_spec(&env, vec![service("client", &image, fetch)], &[]);
            spec.shared = Some(SharedServices {
                env: shared_env.clone(),
                services: vec![service_name("store")],
            });
            rt.apply(&spec, READY_TIMEOUT, quiet())
                .await
                .expect("the env starts");
            logs_containing(&rt, &env, Some("client"), "from-the-shared-store").await;
            let observed = rt.fetch(&env).await.unwrap();
            let names: Vec<&str> = observed.services.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["client"], "the store is not the env's own");
            assert_eq!(observed.shared.len(), 1, "{observed:#?}");
            assert_eq!(observed.shared[0].name.as_str(), "store");
            assert_eq!(observed.shared[0].container_id, store.container_id);
            // Applying again changes nothing (it is on the network already).
            rt.apply(&spec, READY_TIMEOUT, quiet()).await.unwrap();
            assert_eq!(rt.fetch(&env).await.unwrap().shared, observed.shared);

            // Not wanted any more: off the network, still running.
            let unshared = EnvSpec {
                shared: None,
                ..spec.clone()
            };
            rt.apply(&unshared, READY_TIMEOUT, quiet()).await.unwrap();
            assert!(rt.fetch(&env).await.unwrap().shared.is_empty());

            rt.apply(&spec, READY_TIMEOUT, quiet()).await.unwrap();
            assert_eq!(rt.fetch(&env).await.unwrap().shared.len(), 1);
            rt.destroy(&env)
                .await
                .expect("the env's network goes though the store is on it");
            assert_eq!(leftovers(&rt, &env).await, 0, "destroy left objects behind");
            let after = rt.fetch(&shared_env).await.unwrap();
            assert_eq!(after.services.len(), 1);
            assert_eq!(after.services[0].container_id, store.container_id);
            assert_eq!(after.services[0].state, ServiceState::Running);
            assert!(after.shared.is_empty());
        }
    };
    let outcome = tokio::time::timeout(TEST_TIMEOUT, AssertUnwindSafe(body).catch_unwind()).await;
    rt.destroy(&env).await.expect("destroy after the test");
    rt.destroy(&shared_env)
        .await
        .expect("destroy after the test");
    match outcome {
        Err(_) => panic!("the shared-services test took longer than {TEST_TIMEOUT:?}"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(())) => {}
    }
}
