//! The end-to-end harness: real `slipway` processes, real git repositories in temp dirs and
//! the machine's real Docker engine. Each test gets its own server, data dir and repo name,
//! so tests run in parallel without seeing each other's envs.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
pub mod chatops;
pub mod discord;
pub mod github;
pub mod prs;

pub const SLIPWAY: &str = env!("CARGO_BIN_EXE_slipway");

/// A unique lowercase name for this test process and call, usable as a repo name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    // The pid alone repeats across runs on a fresh machine, and Docker keeps images (and a
    // killed run's leftovers) between runs: the start time tells runs apart.
    static RUN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (micros ^ u64::from(std::process::id())) % 1_000_000
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{run}x{n}")
}

/// A git repository on disk with helpers to commit files.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    pub fn new() -> Self {
        let repo = Self {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, path: &str, contents: &str) -> &Self {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, contents).unwrap();
        self
    }

    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "--quiet", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    pub fn checkout_new(&self, branch: &str) {
        self.git(&["checkout", "--quiet", "-b", branch]);
    }

    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The project's demo compose file and web Dockerfile, at the same paths as in this repo.
    pub fn with_demo_files(&self) -> &Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["compose/demo.yml", "compose/demo/web/Dockerfile"] {
            self.write(file, &std::fs::read_to_string(root.join(file)).unwrap());
        }
        self
    }
}

/// Builds `slipway/demo-app:latest` (what the tests' compose files use) once per test
/// binary: a server started with a config no longer builds it (only demo mode does).
pub fn ensure_demo_image() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(SLIPWAY)
            .arg("demo-image")
            .output()
            .expect("slipway demo-image runs");
        assert!(
            out.status.success(),
            "slipway demo-image failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// One `slipway serve` process with its own data dir and config.
pub struct Server {
    child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub url: String,
    /// The front door's address (`http://127.0.0.1:<port>`), for requests with a Host.
    pub proxy_url: String,
    pub repo: String,
    log_path: PathBuf,
    /// Environment variables given to `slipway serve` (e.g. `SLIPWAY_LOG_FORMAT`).
    serve_env: Vec<(String, String)>,
}

pub struct ServerOptions<'a> {
    pub repo_name: &'a str,
    pub repo_url: &'a Path,
    pub env_file: &'a str,
    /// Top-level config keys.
    pub extra: &'a str,
    /// Keys added to the `[[repo]]` table.
    pub repo_extra: &'a str,
    /// Whole tables (e.g. `[github]`), placed last.
    pub tables: &'a str,
}

impl<'a> ServerOptions<'a> {
    /// The text of the server's `slipway.toml`, its data kept in `data_dir`.
    pub fn config(&self, data_dir: &Path) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\nresync_interval = \"2s\"\nready_timeout = \"90s\"\n{extra}\n\
             [[repo]]\nname = \"{name}\"\nurl = \"{url}\"\nenv_file = \"{env_file}\"\n{ttl}{repo_extra}\n{tables}\n{proxy}",
            data = data_dir.display(),
            extra = self.extra,
            name = self.repo_name,
            url = self.repo_url.display(),
            env_file = self.env_file,
            repo_extra = self.repo_extra,
            tables = self.tables,
            // Servers of parallel tests each get a free port for the front door.
            proxy = if self.tables.contains("[proxy]") { "" } else { "[proxy]\nlisten = \"127.0.0.1:0\"\n" },
            ttl = if self.repo_extra.contains("default_ttl") { "" } else { "default_ttl = \"1h\"\n" },
        )
    }

    /// One repo, no extra configuration.
    pub fn basic(repo_name: &'a str, repo_url: &'a Path, env_file: &'a str) -> Self {
        Self {
            repo_name,
            repo_url,
            env_file,
            extra: "",
            repo_extra: "",
            tables: "",
        }
    }
}

impl Server {
    pub fn start(options: ServerOptions) -> Self {
        Self::start_with_env(options, &[])
    }

    /// [`Server::start`] with these environment variables set for `slipway serve`.
    pub fn start_with_env(options: ServerOptions, serve_env: &[(&str, &str)]) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let config_path = data_dir.path().join("slipway.toml");
        std::fs::write(&config_path, options.config(data_dir.path())).unwrap();
        let log_path = data_dir.path().join("server.log");
        let mut server = Self {
            child: None,
            data_dir,
            config_path,
            url: String::new(),
            proxy_url: String::new(),
            repo: options.repo_name.to_string(),
            log_path,
            serve_env: serve_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        server.spawn();
        server
    }

    /// Starts the process and waits until it says where it listens.
    pub fn spawn(&mut self) {
        ensure_demo_image();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let start_offset = std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0) as usize;
        let child = Command::new(SLIPWAY)
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info,envmgr=debug")
            .env_remove("SLIPWAY_API_TOKEN")
            .env_remove("SLIPWAY_LOG_FORMAT")
            .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slipway starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            let lines = || text[start_offset.min(text.len())..].lines();
            if let Some(url) = lines().find_map(serving_url) {
                self.url = url;
                self.proxy_url = lines().find_map(front_door_url).unwrap_or_default();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("slipway serve exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "slipway serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn tail_log(&self) -> String {
        last_lines(&self.log(), 40)
    }
}

/// The last `count` lines of `text`.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(count)..].join("\n")
}

impl Drop for Server {
    /// Stops the server first, then removes whatever Docker objects its repo still has: a
    /// test that failed half-way leaves nothing behind (a live server would restore them).
    fn drop(&mut self) {
        self.kill9();
        remove_labelled(&format!("label=dev.slipway.repo={}", self.repo));
    }
}

/// What a test does against a running Slipway, whether a `slipway serve` process
/// ([`Server`]) or one inside the test process: the real CLI client, pointed at its URL.
pub trait SlipwayApi {
    /// Where the server serves: `http://127.0.0.1:<port>`.
    fn url(&self) -> &str;
    /// The repo of its config.
    fn repo(&self) -> &str;
    /// The newest lines of its log, for failure messages.
    fn tail_log(&self) -> String;

    /// Runs `slipway env <args>` against this server.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(SLIPWAY)
            .arg("env")
            .args(args)
            .env("SLIPWAY_SERVER", self.url())
            .env_remove("SLIPWAY_TOKEN")
            .output()
            .expect("slipway cli runs")
    }

    /// Runs `slipway <args>` (any command) against this server.
    fn cli_raw(&self, args: &[&str]) -> Output {
        Command::new(SLIPWAY)
            .args(args)
            .env("SLIPWAY_SERVER", self.url())
            .env_remove("SLIPWAY_TOKEN")
            .output()
            .expect("slipway cli runs")
    }

    /// Runs a CLI command with `--json` that must succeed and returns its output.
    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.cli(&all);
        assert!(
            out.status.success(),
            "slipway env {args:?} failed: {}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.tail_log()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// `env up --wait` that must end Ready.
    fn up_ready(&self, branch: &str) -> Value {
        self.cli_json(&[
            "up",
            branch,
            "--repo",
            self.repo(),
            "--wait",
            "--timeout",
            "3m",
        ])
    }

    fn status(&self, env: &str) -> Value {
        self.cli_json(&["status", env])
    }

    /// Polls `env status` until `check` holds.
    fn wait_until(
        &self,
        env: &str,
        what: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(env);
            if check(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{env} never became {what}; last status: {status:#}\n{}",
                self.tail_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl SlipwayApi for Server {
    fn url(&self) -> &str {
        &self.url
    }

    fn repo(&self) -> &str {
        &self.repo
    }

    fn tail_log(&self) -> String {
        Server::tail_log(self)
    }
}

/// The URL in the line a server writes when it serves: the plain line for people, or the
/// event's `url` field when it logs JSON (`--log-format json`).
/// The front door's address from the line `slipway serve` logs when it listens (text or JSON).
fn front_door_url(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("Slipway's front door is on ") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    let event: Value = serde_json::from_str(line).ok()?;
    if event["message"] != "front door listening" {
        return None;
    }
    event["addr"].as_str().map(|a| format!("http://{a}"))
}

fn serving_url(line: &str) -> Option<String> {
    if let Some(rest) = line.strip_prefix("Slipway is serving on ") {
        return rest.split_whitespace().next().map(str::to_string);
    }
    let event: Value = serde_json::from_str(line).ok()?;
    if event["message"] != "Slipway is serving" {
        return None;
    }
    event["url"].as_str().map(str::to_string)
}

/// Removes every Docker object of an env, whatever state a failed test left.
pub struct EnvCleanup(pub String);

impl Drop for EnvCleanup {
    fn drop(&mut self) {
        remove_labelled(&format!("label=dev.slipway.env={}", self.0));
    }
}

/// Removes every container, network and volume matching a `docker ... --filter`.
fn remove_labelled(filter: &str) {
    for id in docker(&["ps", "-aq", "--filter", filter]) {
        docker(&["rm", "-f", "-v", &id]);
    }
    for id in docker(&["network", "ls", "-q", "--filter", filter]) {
        docker(&["network", "rm", &id]);
    }
    for id in docker(&["volume", "ls", "-q", "--filter", filter]) {
        docker(&["volume", "rm", "-f", &id]);
    }
}

/// Runs the docker CLI and returns its output lines.
pub fn docker(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Names of every container (running or not) carrying the env's label.
pub fn containers_of(env: &str) -> Vec<String> {
    let mut names = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=dev.slipway.env={env}"),
        "--format",
        "{{.Names}}",
    ]);
    names.sort();
    names
}

/// Names of the env's service containers: without one-shot jobs such as test runs.
pub fn service_containers_of(env: &str) -> Vec<String> {
    let filter = format!("label=dev.slipway.env={env}");
    let rows = docker(&[
        "ps",
        "-a",
        "--filter",
        &filter,
        "--format",
        "{{.Names}} {{.Label \"dev.slipway.job\"}}",
    ]);
    // Rows are "name job-id"; services have no job id.
    let mut names: Vec<String> = rows
        .iter()
        .filter(|row| {
            row.split_once(' ')
                .is_none_or(|(_, job)| job.trim().is_empty())
        })
        .map(|row| row.split(' ').next().unwrap_or_default().to_string())
        .collect();
    names.sort();
    names
}

pub fn networks_of(env: &str) -> Vec<String> {
    docker(&[
        "network",
        "ls",
        "--filter",
        &format!("label=dev.slipway.env={env}"),
        "--format",
        "{{.Name}}",
    ])
}

pub fn volumes_of(env: &str) -> Vec<String> {
    docker(&[
        "volume",
        "ls",
        "--filter",
        &format!("label=dev.slipway.env={env}"),
        "--format",
        "{{.Name}}",
    ])
}

pub fn container_id(name: &str) -> String {
    docker(&["inspect", "--format", "{{.Id}}", name])
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// GET a URL with a plain HTTP/1.1 request; returns (status, body).
pub fn http_get(url: &str) -> (u16, String) {
    http_request("GET", url, None)
}

/// POST a JSON body; returns (status, body).
#[allow(dead_code)] // not every test binary posts
pub fn http_post_json(url: &str, body: &Value) -> (u16, String) {
    http_request("POST", url, Some(body))
}

fn http_request(method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The env's front-door URL (its main service's), as people are shown it.
pub fn front_door_url_of(record: &Value) -> String {
    record["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no front-door URL in {record:#}"))
        .to_string()
}

/// The first direct (host-port) URL the env reports for `service`: connectable as it is.
pub fn url_of(record: &Value, service: &str) -> String {
    record["services"]
        .as_array()
        .and_then(|services| services.iter().find(|s| s["name"] == service))
        .and_then(|s| s["urls"][0].as_str())
        .unwrap_or_else(|| panic!("no URL for {service} in {record:#}"))
        .to_string()
}

/// GET `/` at the front door `proxy` (`http://127.0.0.1:<port>`) with this Host header.
/// Returns (status, headers and body as text), when the whole answer is in.
pub fn get_via(proxy: &str, host: &str, accept: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = proxy.strip_prefix("http://").expect("http URL");
    let mut stream = std::net::TcpStream::connect(addr).expect("the front door accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// Requests through the front door to `host`, about 100 a second, until dropped.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub fn start(proxy: &str, host: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..2)
            .map(|_| {
                let (stop, sent) = (stop.clone(), sent.clone());
                let (proxy, host) = (proxy.to_string(), host.to_string());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = get_via(&proxy, &host, "*/*");
                        sent.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        Self {
            stop,
            sent,
            threads,
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        eprintln!("load: {} requests", self.sent.load(Ordering::Relaxed));
    }
}
