//! Secrets end to end (real `slipway serve`, real Docker, real git): the value of a repo's
//! `secret_env` variable, printed by a service, never leaves Slipway in clear: not in
//! `env logs` (CLI, API, followed or not), not in a failed env's reason or events (status,
//! CLI, API), not in the full log of a test run, not in a webhook notification; and
//! credentials inside a repo `url`, or in its `token` key, never appear in any output, in
//! the server's log or in the audit log.

mod harness;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use harness::*;
use serde_json::Value;

const REDACTED: &str = "[REDACTED]";

/// A webhook receiver on loopback that keeps every body it gets.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(bodies.clone());
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}/hook"),
            bodies,
            _runtime: runtime,
        }
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

async fn receive(State(bodies): State<Arc<Mutex<Vec<String>>>>, Json(body): Json<Value>) {
    bodies.lock().unwrap().push(body.to_string());
}

/// Everything the server answers to a GET, read until it closes or `for_at_most` passes
/// (a followed log never closes).
fn http_read(url: &str, for_at_most: Duration) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let deadline = Instant::now() + for_at_most;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading {url}: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_secret_env_value_never_leaves_in_logs_status_events_or_notifications() {
    // Set inline for the web service (which prints it as its host name when it starts), and
    // from an env_file for the service that prints it and fails.
    let secret = "s3cr3t-Value-7f1e2d";
    let other_secret = "env-file-S3cret-42ab";
    let receiver = Receiver::start();
    let name = unique_name("sec");
    let repo = TestRepo::new();
    let compose = format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    environment:
      API_TOKEN: {secret}
      HOSTNAME: {secret}
"
    );
    repo.write("compose.yml", &compose).commit("web");
    repo.checkout_new("crash");
    let crashing = "services:
  web:
    image: slipway/demo-app:latest
    command: [selftest]
    restart: 'no'
    env_file: [secrets.env]
    environment:
      TARGET_URL: http://127.0.0.1:1
      PRINT_SECRET: API_TOKEN
";
    repo.write("compose.yml", crashing)
        .write("secrets.env", &format!("API_TOKEN={other_secret}\n"))
        .commit("prints its secret and fails");
    let tables = format!(
        "[[notify]]\nname = \"team\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        receiver.url
    );
    let server = Server::start(ServerOptions {
        repo_extra: "secret_env = [\"API_TOKEN\"]",
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    let env = format!("{name}-main");
    let crash = format!("{name}-crash");
    let _cleanup = (EnvCleanup(env.clone()), EnvCleanup(crash.clone()));

    // A running service's log: the CLI, the API, and the API followed.
    server.up_ready("main");
    let deadline = Instant::now() + Duration::from_secs(30);
    let logs = loop {
        let out = server.cli(&["logs", &env, "--service", "web"]);
        let logs = text(&out);
        if logs.contains("demo-app serving on") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        logs.contains(&format!("demo-app serving on 0.0.0.0:8080 as {REDACTED}")),
        "{logs}"
    );
    assert!(!logs.contains(secret), "CLI logs show the secret: {logs}");
    let api = format!("{}/api/v1/envs/{env}/logs?service=web&tail=50", server.url);
    let body = http_read(&api, Duration::from_secs(10));
    assert!(body.contains(REDACTED) && !body.contains(secret), "{body}");
    let followed = http_read(&format!("{api}&follow=true"), Duration::from_secs(3));
    assert!(
        followed.contains(REDACTED) && !followed.contains(secret),
        "{followed}"
    );
    let logs = server.cli_json(&["logs", &env]);
    assert!(!logs.to_string().contains(secret), "{logs}");

    // A service that prints its secret (from an env_file) and exits: the env fails with its
    // last log lines as the reason, which every surface shows redacted.
    let up = server.cli(&["up", "crash", "--repo", &name, "--wait", "--timeout", "3m"]);
    let up = text(&up);
    assert!(!up.contains(other_secret), "CLI up shows the secret: {up}");
    let failed = server.wait_until(&crash, "Failed", Duration::from_secs(120), |e| {
        e["phase"] == "Failed"
    });
    let reason = failed["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("connecting with token {REDACTED}")),
        "the reason keeps the log line, redacted: {failed:#}"
    );
    for shown in [
        failed.to_string(),
        text(&server.cli(&["status", &crash])),
        http_get(&format!("{}/api/v1/envs/{crash}", server.url)).1,
        http_get(&format!("{}/api/v1/envs/{crash}/events", server.url)).1,
        http_get(&format!("{}/api/v1/envs", server.url)).1,
        text(&server.cli(&["list"])),
    ] {
        assert!(!shown.contains(other_secret), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    }

    // The team's webhook heard of the failure, without the value.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !receiver
        .bodies()
        .iter()
        .any(|b| b.contains("env.failed") && b.contains(&crash))
    {
        assert!(
            Instant::now() < deadline,
            "no env.failed notification: {:#?}\n{}",
            receiver.bodies(),
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for body in receiver.bodies() {
        assert!(!body.contains(other_secret), "{body}");
        assert!(!body.contains(secret), "{body}");
    }
    let failure = receiver
        .bodies()
        .into_iter()
        .find(|b| b.contains("env.failed"))
        .unwrap();
    assert!(failure.contains(REDACTED), "{failure}");

    // Nor did the server's own log, or the audit log, get it.
    for shown in [
        server.log(),
        http_get(&format!("{}/api/v1/audit", server.url)).1,
    ] {
        assert!(!shown.contains(other_secret), "{shown}");
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[test]
fn credentials_in_a_repo_url_or_its_token_are_never_shown() {
    let url_token = "SECRETTOKEN1a2b3c";
    let key_token = "KEYTOKEN9z8y7x6w";
    let name = unique_name("cred");
    let other = format!("{name}k");
    let url = format!("https://oauth2:{url_token}@127.0.0.1:1/nothing.git");
    let tables = format!(
        "[[repo]]\nname = \"{other}\"\nurl = \"https://127.0.0.1:1/other.git\"\ntoken = \"{key_token}\"\n"
    );
    let server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, std::path::Path::new(&url), "compose.yml")
    });
    let mut shown = Vec::new();
    for repo in [&name, &other] {
        let env = format!("{repo}-main");
        let up = server.cli(&["up", "main", "--repo", repo, "--wait", "--timeout", "2m"]);
        assert!(!up.status.success(), "nothing to fetch: {}", text(&up));
        shown.push(text(&up));
        let failed = server.wait_until(&env, "Failed", Duration::from_secs(60), |e| {
            e["phase"] == "Failed"
        });
        let reason = failed["reason"].as_str().unwrap_or_default().to_string();
        assert!(
            reason.contains("127.0.0.1"),
            "the reason names the host: {reason}"
        );
        shown.push(failed.to_string());
        shown.push(text(&server.cli(&["status", &env])));
        shown.push(http_get(&format!("{}/api/v1/envs/{env}/events", server.url)).1);
    }
    shown.push(http_get(&format!("{}/api/v1/envs", server.url)).1);
    shown.push(http_get(&format!("{}/api/v1/repos", server.url)).1);
    shown.push(http_get(&format!("{}/api/v1/audit", server.url)).1);
    shown.push(server.log());
    for text in shown {
        assert!(!text.contains(url_token), "the url's token shows: {text}");
        assert!(!text.contains(key_token), "the token key shows: {text}");
        assert!(
            !text.contains("oauth2:"),
            "the url's userinfo shows: {text}"
        );
    }
}

/// A git server over HTTP on loopback (git's "dumb" protocol: the bare repository's files,
/// served as they are) that answers only requests carrying one of `accepted` (user, password)
/// as Basic credentials, and asks for them (401) otherwise.
struct GitHttpServer {
    base: String,
    _runtime: tokio::runtime::Runtime,
}

impl GitHttpServer {
    fn start(bare: std::path::PathBuf, accepted: &[(&str, &str)]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let accepted: Vec<String> = accepted
            .iter()
            .map(|(user, password)| format!("Basic {}", base64(&format!("{user}:{password}"))))
            .collect();
        let state = Arc::new((bare, accepted));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(serve_git_file).with_state(state);
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            base: format!("127.0.0.1:{}", addr.port()),
            _runtime: runtime,
        }
    }
}

async fn serve_git_file(
    State(state): State<Arc<(std::path::PathBuf, Vec<String>)>>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let (root, accepted) = &*state;
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| accepted.iter().any(|a| a == v));
    if !authorized {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
        )
            .into_response();
    }
    let path = request.uri().path().trim_start_matches("/repo.git/");
    if path.split('/').any(|p| p == ".." || p.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match std::fs::read(root.join(path)) {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn git_over_http_authenticates_with_the_url_or_the_token_key_and_shows_neither() {
    let url_token = "URLTOKEN5d4c3b2a";
    let key_token = "KEYTOKEN1q2w3e4r";
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services: { web: { image: slipway/demo-app:latest } }\n",
    )
    .commit("web");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("repo.git");
    let clone = std::process::Command::new("git")
        .args(["clone", "--quiet", "--bare"])
        .arg(repo.path())
        .arg(&bare)
        .status()
        .unwrap();
    assert!(clone.success());
    let info = std::process::Command::new("git")
        .args(["update-server-info"])
        .current_dir(&bare)
        .status()
        .unwrap();
    assert!(info.success());
    let git = GitHttpServer::start(
        bare,
        &[("oauth2", url_token), ("x-access-token", key_token)],
    );

    let name = unique_name("gith");
    let keyed = format!("{name}k");
    let anonymous = format!("{name}n");
    let url = format!("http://oauth2:{url_token}@{}/repo.git", git.base);
    let tables = format!(
        "[[repo]]\nname = \"{keyed}\"\nurl = \"http://{base}/repo.git\"\ntoken = \"{key_token}\"\n\n\
         [[repo]]\nname = \"{anonymous}\"\nurl = \"http://{base}/repo.git\"\n",
        base = git.base
    );
    let server = Server::start(ServerOptions {
        tables: &tables,
        ..ServerOptions::basic(&name, std::path::Path::new(&url), "compose.yml")
    });
    let _cleanup = (
        EnvCleanup(format!("{name}-main")),
        EnvCleanup(format!("{keyed}-main")),
        EnvCleanup(format!("{anonymous}-main")),
    );
    let mut shown = Vec::new();
    // Credentials in the url, and in the `token` key: both fetch.
    for repo in [&name, &keyed] {
        let ready = server.cli_json(&["up", "main", "--repo", repo, "--wait", "--timeout", "3m"]);
        assert_eq!(ready["phase"], "Ready", "{ready:#}");
        shown.push(ready.to_string());
        // A branch the server does not have: the reason names the URL, without userinfo.
        let env = format!("{repo}-nope");
        let _gone = EnvCleanup(env.clone());
        let up = server.cli(&["up", "nope", "--repo", repo, "--wait", "--timeout", "2m"]);
        shown.push(text(&up));
        let failed = server.wait_until(&env, "Failed", Duration::from_secs(60), |e| {
            e["phase"] == "Failed"
        });
        let reason = failed["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(&format!("http://{}/repo.git", git.base)),
            "the reason names the repo: {reason}"
        );
        shown.push(failed.to_string());
        shown.push(http_get(&format!("{}/api/v1/envs/{env}/events", server.url)).1);
    }
    // Without credentials the server refuses, and git says so without prompting.
    let up = server.cli(&[
        "up",
        "main",
        "--repo",
        &anonymous,
        "--wait",
        "--timeout",
        "2m",
    ]);
    assert!(!up.status.success(), "{}", text(&up));
    shown.push(text(&up));
    shown.push(http_get(&format!("{}/api/v1/audit", server.url)).1);
    shown.push(server.log());
    for text in shown {
        assert!(!text.contains(url_token), "the url's token shows: {text}");
        assert!(!text.contains(key_token), "the token key shows: {text}");
        assert!(
            !text.contains("oauth2:"),
            "the url's userinfo shows: {text}"
        );
    }
}

#[test]
fn discord_env_logs_needs_the_developer_role_and_never_shows_a_secret() {
    use harness::discord::*;
    const GUILD: u64 = 910_000_000_000_000_001;
    const CHANNEL: u64 = 910_000_000_000_000_002;
    const DEV_ROLE: u64 = 910_000_000_000_000_003;
    const DANA: u64 = 910_000_000_000_000_010;
    const VIC: u64 = 910_000_000_000_000_011;
    let secret = "chat-s3cret-Value-5e6f";
    let world = DiscordWorld::start();
    world.add_guild(GUILD);
    world.add_channel(GUILD, CHANNEL, "team");
    world.add_role(GUILD, DEV_ROLE, "developers");
    world.add_member(GUILD, DANA, "dana", &[DEV_ROLE]);
    world.add_member(GUILD, VIC, "vic", &[]);
    let name = unique_name("secd");
    let repo = TestRepo::new();
    let compose = format!(
        "services:
  web:
    image: slipway/demo-app:latest
    environment:
      API_TOKEN: {secret}
      HOSTNAME: {secret}
"
    );
    repo.write("compose.yml", &compose).commit("web");
    let tables = format!(
        "[discord]\ntoken = \"{BOT_TOKEN}\"\napplication_id = {APPLICATION_ID}\nguilds = [{GUILD}]\napi_url = \"{}\"\n\n\
         [discord.channels]\n\"{name}\" = \"{CHANNEL}\"\n\n\
         [permissions.discord_roles]\n\"{DEV_ROLE}\" = \"developer\"\n",
        world.api_url()
    );
    let server = Server::start(ServerOptions {
        repo_extra: "secret_env = [\"API_TOKEN\"]",
        tables: &tables,
        ..ServerOptions::basic(&name, repo.path(), "compose.yml")
    });
    world.wait_connected(Duration::from_secs(30));
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());
    server.up_ready("main");

    let answer = |user: u64, check: &dyn Fn(&str) -> bool| {
        let id = world.send_interaction(
            SlashCommand::new(GUILD, CHANNEL, user, "env")
                .sub("logs")
                .opt("env", &env)
                .opt("service", "web"),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = world
                .original_response(&id)
                .map(|m| m.content)
                .unwrap_or_default();
            if check(&text) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A viewer (no role) is refused.
    let refused = answer(VIC, &|t| t.contains("needs"));
    assert!(
        refused.contains("`env logs` needs the developer role"),
        "{refused}"
    );
    // A developer sees the log, the value redacted.
    let deadline = Instant::now() + Duration::from_secs(60);
    let logs = loop {
        let text = answer(DANA, &|t| !t.is_empty() && !t.contains("thinking"));
        if text.contains("demo-app serving on") || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        logs.contains(&format!("demo-app serving on 0.0.0.0:8080 as {REDACTED}")),
        "{logs}"
    );
    // Nothing the bot sent Discord (answers, team channel, threads) has the value.
    for request in world.request_log() {
        assert!(
            !request.body.contains(secret),
            "{} {} sent the secret: {}",
            request.method,
            request.path,
            request.body
        );
    }
}

#[test]
fn a_github_app_fetches_with_an_installation_token_it_never_shows() {
    use harness::github::GitHubWorld;
    // The world mints this token for any installation.
    let minted = "ghs_testtoken";
    let repo = TestRepo::new();
    repo.write(
        "compose.yml",
        "services: { web: { image: slipway/demo-app:latest } }\n",
    )
    .commit("web");
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("repo.git");
    for (args, dir) in [
        (vec!["clone", "--quiet", "--bare"], served.path()),
        (vec!["update-server-info"], bare.as_path()),
    ] {
        let mut command = std::process::Command::new("git");
        command.args(&args).current_dir(dir);
        if args[0] == "clone" {
            command.arg(repo.path()).arg(&bare);
        }
        assert!(command.status().unwrap().success(), "git {args:?}");
    }
    let git = GitHttpServer::start(bare, &[("x-access-token", minted)]);
    let key = served.path().join("app.pem");
    let generated = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .unwrap();
    assert!(generated.status.success(), "{generated:?}");

    let name = unique_name("app");
    let github = format!("acme/{name}");
    let world = GitHubWorld::start();
    world.add_repo(&github);
    let url = format!("http://{}/repo.git", git.base);
    let tables = format!(
        "[github]\napi_url = \"{}\"\nwebhook_secret = \"w-secret\"\napp_id = 1\nprivate_key_path = \"{}\"\n",
        world.url(),
        key.display()
    );
    let repo_extra = format!("github = \"{github}\"");
    let server = Server::start(ServerOptions {
        repo_extra: &repo_extra,
        tables: &tables,
        ..ServerOptions::basic(&name, std::path::Path::new(&url), "compose.yml")
    });
    let _cleanup = EnvCleanup(format!("{name}-main"));
    let ready = server.cli_json(&["up", "main", "--repo", &name, "--wait", "--timeout", "3m"]);
    assert_eq!(ready["phase"], "Ready", "{ready:#}");
    assert!(
        world
            .requests()
            .iter()
            .any(|r| r.contains("/app/installations/1/access_tokens")),
        "a token was minted: {:?}",
        world.requests()
    );
    let status = text(&server.cli(&["status", &format!("{name}-main")]));
    for shown in [ready.to_string(), status, server.log()] {
        assert!(!shown.contains(minted), "{shown}");
    }
}
