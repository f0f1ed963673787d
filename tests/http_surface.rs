//! The HTTP surface end to end, against a real `slipway serve` process: a configured server
//! never builds the demo image, and an unsafe `api_token` stops the start before anything
//! listens. The error shape and the refusals of the API and webhooks are tested in-process
//! (`tests/surfaces/http.rs`).

mod harness;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::*;

const LIGHT: &str = "services: { web: { image: slipway/demo-app:latest, ports: ['8080'] } }\n";

/// A Unix-socket proxy in front of the real Docker engine that records what its clients
/// send, so a test can see which Docker calls `slipway serve` makes.
struct DockerRecorder {
    socket: std::path::PathBuf,
    seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    _dir: tempfile::TempDir,
}

impl DockerRecorder {
    fn start() -> Self {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock") else {
                    return;
                };
                let (mut client_read, mut engine_write) =
                    (client.try_clone().unwrap(), engine.try_clone().unwrap());
                let record = record.clone();
                std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = client_read.read(&mut buf) {
                        if n == 0 || engine_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                    let _ = engine_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut engine, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Self {
            socket,
            seen,
            _dir: dir,
        }
    }

    fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The request lines (method and path) clients sent so far.
    fn requests(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        String::from_utf8_lossy(&seen)
            .lines()
            .filter(|l| {
                ["GET ", "POST ", "HEAD ", "DELETE ", "PUT "]
                    .iter()
                    .any(|m| l.starts_with(m))
            })
            .map(str::to_owned)
            .collect()
    }
}

/// Starts `slipway serve` (with `config`, or in demo mode) against `docker`, waits until it
/// serves (or exits), stops it and returns its stderr.
fn serve_through(
    docker: &DockerRecorder,
    config: Option<&std::path::Path>,
    data: &std::path::Path,
) -> String {
    let log_path = data.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut command = Command::new(SLIPWAY);
    command.arg("serve");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .env("DOCKER_HOST", docker.docker_host())
        .env("XDG_DATA_HOME", data)
        .env("RUST_LOG", "info")
        .env_remove("SLIPWAY_API_TOKEN")
        .env_remove("SLIPWAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let done = text.contains("Slipway is serving") || child.try_wait().unwrap().is_some();
        if done || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_configured_server_does_not_build_the_demo_image() {
    let repo = TestRepo::new();
    repo.write("compose.yml", LIGHT).commit("light");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("slipway.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[proxy]\nlisten = \"127.0.0.1:0\"\n\
             [[repo]]\nname = \"{}\"\nurl = \"{}\"\nenv_file = \"compose.yml\"\n",
            dir.path().join("data").display(),
            unique_name("nodemo"),
            repo.path().display()
        ),
    )
    .unwrap();
    let docker = DockerRecorder::start();
    let log = serve_through(&docker, Some(&config), dir.path());
    assert!(log.contains("Slipway is serving"), "{log}");
    let requests = docker.requests();
    assert!(
        !requests.is_empty(),
        "the server never reached Docker through the recorder"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("demo-app") || r.contains("/build")),
        "a server with --config looked up or built the demo image: {requests:#?}"
    );
    assert!(!log.contains("preparing the bundled demo image"), "{log}");

    // The control: demo mode (no config) does prepare it, through the same recorder. It
    // may fail to listen (its port is fixed); the image comes before the listener.
    let demo_dir = tempfile::tempdir().unwrap();
    let docker = DockerRecorder::start();
    let log = serve_through(&docker, None, demo_dir.path());
    assert!(log.contains("preparing the bundled demo image"), "{log}");
    assert!(
        docker.requests().iter().any(|r| r.contains("demo-app")),
        "demo mode did not look the demo image up: {:#?}\n{log}",
        docker.requests()
    );
}

/// Runs `slipway serve --config <file>` with `config` (plus `SLIPWAY_API_TOKEN` when given)
/// and expects it to exit non-zero, without ever listening, within a bounded time.
fn serve_must_refuse(config: &str, env_token: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slipway.toml");
    std::fs::write(
        &path,
        format!("data_dir = \"{}\"\n{config}", dir.path().display()),
    )
    .unwrap();
    let mut command = Command::new(SLIPWAY);
    command
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("SLIPWAY_API_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = env_token {
        command.env("SLIPWAY_API_TOKEN", token);
    }
    let mut child = command.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("slipway serve kept running with {config:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        !status.success(),
        "serve started with {config:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("Slipway is serving"),
        "serve listened with {config:?}:\n{stderr}"
    );
    stderr
}

#[test]
fn an_empty_or_short_api_token_stops_the_start() {
    for token in ["", " ", "\t \t"] {
        for listen in ["0.0.0.0:0", "127.0.0.1:0"] {
            let config = format!("listen = \"{listen}\"\napi_token = {token:?}\n");
            let stderr = serve_must_refuse(&config, None);
            assert!(stderr.contains("api_token is empty"), "{config}: {stderr}");
        }
        let stderr = serve_must_refuse("listen = \"0.0.0.0:0\"\n", Some(token));
        assert!(stderr.contains("SLIPWAY_API_TOKEN is empty"), "{stderr}");
    }
    for token in ["x", "short-token", "123456789012345"] {
        let config = format!("listen = \"0.0.0.0:0\"\napi_token = \"{token}\"\n");
        let stderr = serve_must_refuse(&config, None);
        assert!(stderr.contains("api_token is shorter than 16"), "{stderr}");
        let stderr = serve_must_refuse("listen = \"[::]:0\"\n", Some(token));
        assert!(
            stderr.contains("SLIPWAY_API_TOKEN is shorter than 16"),
            "{stderr}"
        );
    }
}
