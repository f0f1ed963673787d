//! Rollout guards and recovery end to end on the real Docker engine with the demo app, each
//! test with its own `slipway serve`, one release channel and a version `v1` released
//! first:
//!
//! - a firing alert in a real Alertmanager (Debian's `prometheus-alertmanager`, started here
//!   on a free loopback port) blocks the rollout of `v2` with a reason naming the alert and
//!   no traffic to a canary; once the alert resolves the rollout goes on to `done`;
//! - `channel freeze` blocks it (the reason in `rollout status`, text and JSON) until
//!   `channel unfreeze`, both before its start and at a promotion (the step and its weight
//!   stay);
//! - `slipway serve` killed with SIGKILL while a step splits traffic: the restarted server
//!   carries the same rollout on from the same step to `done`, and the canary env goes;
//! - `rollout rollback` from Discord (the loopback stand-in driving the real serenity
//!   client) rolls a progressing rollout back: the reply says so, the canary weight is 0 and
//!   the front door serves the stable version.
//!
//! Without the Alertmanager binary the alert test says why on stderr and passes, unless
//! `CI=true`, where it fails.

mod harness;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use harness::chatops::{wait_answer, CHANNEL, DANA, GUILD, VIC};
use harness::discord::*;
use harness::*;
use serde_json::{json, Value};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
/// Slipway's Alertmanager client reuses an answer this long (`ALERT_CACHE_TTL`), plus a
/// second of slack.
const ALERT_CACHE: Duration = Duration::from_secs(16);

fn compose(greeting: &str) -> String {
    format!(
        "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    environment:
      GREETING: {greeting}
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
"
    )
}

/// One short channel; `extra` adds keys to its table.
fn staging(extra: &str) -> String {
    format!(
        "
[[repo.channel]]
name = \"staging\"
steps = [\"50%\", \"100%\"]
min_step_time = \"3s\"
max_step_time = \"3m\"
soak = \"1s\"
{extra}
"
    )
}

/// A server whose `staging` channel runs `v1`, with `v2` committed but not released.
struct Deployed {
    server: Server,
    repo: TestRepo,
    name: String,
    release_env: String,
    canary_env: String,
    v2: String,
    _cleanup: [EnvCleanup; 2],
}

impl Deployed {
    fn start(channel: &str, tables: &str) -> Self {
        Self::start_with(channel, tables, unique_name("rg"))
    }

    fn start_with(channel: &str, tables: &str, name: String) -> Self {
        ensure_demo_image();
        let repo = TestRepo::new();
        let v1 = repo.write("compose.yml", &compose("v1")).commit("v1");
        let server = Server::start(ServerOptions {
            repo_extra: channel,
            tables,
            ..ServerOptions::basic(&name, repo.path(), "compose.yml")
        });
        let release_env = format!("{name}-staging");
        let canary_env = format!("{release_env}-canary");
        let cleanup = [
            EnvCleanup(release_env.clone()),
            EnvCleanup(canary_env.clone()),
        ];
        release(&server, &v1);
        wait_for_state(&server, &v1, &["done"], Duration::from_secs(180));
        assert_greeting(&server, &release_env, "v1");
        let v2 = repo.write("compose.yml", &compose("v2")).commit("v2");
        Self {
            server,
            repo,
            name,
            release_env,
            canary_env,
            v2,
            _cleanup: cleanup,
        }
    }

    fn host(&self) -> String {
        format!("{}.localhost", self.release_env)
    }
}

fn cli_ok(server: &Server, args: &[&str]) -> Vec<u8> {
    let out = server.cli_raw(args);
    assert!(
        out.status.success(),
        "slipway {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.tail_log()
    );
    out.stdout
}

fn release(server: &Server, target: &str) -> Value {
    let out = cli_ok(
        server,
        &["release", &server.repo, target, "channel:staging", "--json"],
    );
    serde_json::from_slice(&out).unwrap()
}

fn rollout_status(server: &Server) -> Value {
    let out = cli_ok(
        server,
        &[
            "rollout",
            "status",
            &server.repo,
            "channel:staging",
            "--json",
        ],
    );
    serde_json::from_slice(&out).unwrap()
}

/// Polls `rollout status` until the rollout of `version` is in one of `states`.
fn wait_for_state(server: &Server, version: &str, states: &[&str], timeout: Duration) -> Value {
    wait_for(server, timeout, &format!("{version} in {states:?}"), |r| {
        r["to_version"] == version && states.iter().any(|s| r["state"] == *s)
    })
}

/// Polls `rollout status` until its rollout satisfies `check`; returns the whole status.
fn wait_for(
    server: &Server,
    timeout: Duration,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status = rollout_status(server);
        if check(&status["rollout"]) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout never became {what}: {status:#}\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The rollout events on `env`'s timeline: (kind, message).
fn rollout_events(server: &Server, env: &str) -> Vec<(String, String)> {
    let (status, body) = http_get(&format!("{}/api/v1/envs/{env}/events", server.url));
    assert_eq!(status, 200, "{body}");
    let events: Value = serde_json::from_str(&body).unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["kind"].as_str()?, e["message"].as_str()?)))
        .filter(|(kind, _)| kind.starts_with("rollout."))
        .map(|(k, m)| (k.to_string(), m.to_string()))
        .collect()
}

/// The front door answers for `env` with `greeting` (and never from the canary).
fn assert_greeting(server: &Server, env: &str, greeting: &str) {
    let (status, answer) = get_via(&server.proxy_url, &format!("{env}.localhost"), "*/*");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(greeting), "wanted {greeting}: {answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("x-slipway-version: canary"),
        "{answer}"
    );
}

/// While the rollout stays blocked for `hold`, the canary gets no traffic and its env is not
/// started.
fn assert_held(deployed: &Deployed, hold: Duration) {
    let until = Instant::now() + hold;
    while Instant::now() < until {
        let status = rollout_status(&deployed.server);
        assert_eq!(status["state"], "blocked", "{status:#}");
        assert_eq!(status["weights"]["canary"], 0.0, "{status:#}");
        assert!(
            containers_of(&deployed.canary_env).is_empty(),
            "a blocked rollout started its canary: {:?}",
            containers_of(&deployed.canary_env)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until `env` has no container left.
fn wait_gone(env: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !containers_of(env).is_empty() {
        assert!(
            Instant::now() < deadline,
            "{env} still has containers: {:?}",
            containers_of(env)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

// --- Alertmanager ------------------------------------------------------------------------

/// Whether Alertmanager is installed; without it, fails on CI and skips (saying so) elsewhere.
fn alertmanager_installed() -> bool {
    if Path::new(ALERTMANAGER).exists() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{ALERTMANAGER} is missing: CI must install the Debian package prometheus-alertmanager"
        );
    }
    eprintln!(
        "skipping: {ALERTMANAGER} is not installed (apt-get install -y prometheus-alertmanager)"
    );
    false
}

/// A real Alertmanager on a free loopback port with a temp config and storage, killed (by
/// its own pid) when dropped.
struct Alertmanager {
    child: Child,
    url: String,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: nowhere\nreceivers:\n  - name: nowhere\n",
        )
        .expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(dir.path().join("alertmanager.log")).expect("log");
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus-alertmanager starts");
        let mut alertmanager = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && http_get(&format!("{}/-/ready", alertmanager.url)).0 == 200
            {
                return alertmanager;
            }
            if let Ok(Some(status)) = alertmanager.child.try_wait() {
                panic!("alertmanager exited with {status}:\n{}", alertmanager.log());
            }
            assert!(
                Instant::now() < deadline,
                "alertmanager not ready after 60 s:\n{}",
                alertmanager.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }

    /// Posts the alert `alertname` as firing, or as resolved a second ago.
    fn post(&mut self, alertname: &str, firing: bool) {
        let now = SystemTime::now();
        let mut alert = json!({
            "labels": {"alertname": alertname, "severity": "page"},
            "annotations": {"summary": "the shop answers 503"},
            "startsAt": humantime::format_rfc3339_seconds(now - Duration::from_secs(60)).to_string(),
        });
        if !firing {
            alert["endsAt"] = humantime::format_rfc3339_seconds(now - Duration::from_secs(1))
                .to_string()
                .into();
        }
        let (status, body) =
            http_post_json(&format!("{}/api/v2/alerts", self.url), &json!([alert]));
        assert_eq!(status, 200, "posting the alert: {body}\n{}", self.log());
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_firing_alert_in_alertmanager_blocks_the_rollout_until_it_resolves() {
    if !alertmanager_installed() {
        return;
    }
    let mut alertmanager = Alertmanager::start();
    let tables = format!("[alertmanager]\nurl = \"{}\"\n", alertmanager.url);
    let channel = staging("alerts = ['alertname=\"ShopDown\"']");
    let deployed = Deployed::start(&channel, &tables);
    let server = &deployed.server;

    // Another alert fires and does not match the channel's matchers.
    alertmanager.post("DiskFull", true);
    alertmanager.post("ShopDown", true);
    // v1's release asked Alertmanager last; its answer (no alert) is cached for a while.
    std::thread::sleep(ALERT_CACHE);
    let started = Instant::now();
    release(server, &deployed.v2);
    let blocked = wait_for_state(server, &deployed.v2, &["blocked"], Duration::from_secs(30));
    eprintln!("blocked {:?} after the release", started.elapsed());
    let reason = blocked["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("ShopDown"), "{blocked:#}");
    assert!(!reason.contains("DiskFull"), "{blocked:#}");
    assert!(reason.contains("the shop answers 503"), "{blocked:#}");
    assert_eq!(blocked["step"], 1, "{blocked:#}");
    assert_held(&deployed, Duration::from_secs(5));
    assert_greeting(server, &deployed.release_env, "v1");
    let events = rollout_events(server, &deployed.release_env);
    assert!(
        events
            .iter()
            .any(|(k, m)| k == "rollout.blocked" && m.contains("ShopDown")),
        "{events:?}"
    );

    // Resolved: within the client's cache lifetime the rollout starts and goes on to done.
    alertmanager.post("ShopDown", false);
    let resolved = Instant::now();
    let _load = Load::start(&server.proxy_url, &deployed.host());
    let progressing = wait_for(
        server,
        ALERT_CACHE + Duration::from_secs(60),
        "started",
        |r| r["to_version"] == deployed.v2.as_str() && r["state"] != "blocked",
    );
    eprintln!(
        "unblocked {:?} after the alert resolved: {}",
        resolved.elapsed(),
        progressing["rollout"]["state"]
    );
    wait_for_state(server, &deployed.v2, &["done"], Duration::from_secs(180));
    eprintln!("done {:?} after the alert resolved", resolved.elapsed());
    assert_greeting(server, &deployed.release_env, "v2");
}

#[test]
fn a_frozen_channel_blocks_the_rollout_until_unfrozen() {
    let deployed = Deployed::start(&staging(""), "");
    let server = &deployed.server;
    let repo = format!("repo:{}", server.repo);
    cli_ok(
        server,
        &["channel", "freeze", "audit", &repo, "channel:staging"],
    );

    release(server, &deployed.v2);
    let blocked = wait_for_state(server, &deployed.v2, &["blocked"], Duration::from_secs(30));
    assert_eq!(blocked["frozen"], true, "{blocked:#}");
    assert_eq!(blocked["freeze_reason"], "audit", "{blocked:#}");
    let reason = blocked["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("frozen") && reason.contains("audit"),
        "{blocked:#}"
    );
    let text = String::from_utf8(cli_ok(
        server,
        &["rollout", "status", &server.repo, "channel:staging"],
    ))
    .unwrap();
    eprintln!("rollout status:\n{text}");
    assert!(text.contains("blocked"), "{text}");
    assert!(text.contains("audit"), "{text}");
    assert_held(&deployed, Duration::from_secs(4));
    assert_greeting(server, &deployed.release_env, "v1");

    let load = Load::start(&server.proxy_url, &deployed.host());
    let unfrozen = Instant::now();
    cli_ok(server, &["channel", "unfreeze", &repo, "channel:staging"]);
    let done = wait_for_state(server, &deployed.v2, &["done"], Duration::from_secs(180));
    eprintln!("done {:?} after the unfreeze", unfrozen.elapsed());
    assert_eq!(done["frozen"], false, "{done:#}");
    assert_greeting(server, &deployed.release_env, "v2");
    let events = rollout_events(server, &deployed.release_env);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    let blocked_at = kinds.iter().rposition(|k| *k == "rollout.blocked");
    let started_at = kinds.iter().rposition(|k| *k == "rollout.started");
    assert!(
        blocked_at.is_some() && blocked_at < started_at,
        "blocked before it started: {kinds:?}"
    );
    drop(load);

    // A freeze while a step splits traffic holds the promotion: the step and its weight stay.
    let v3 = deployed
        .repo
        .write("compose.yml", &compose("v3"))
        .commit("v3");
    release(server, &v3);
    wait_for(
        server,
        Duration::from_secs(120),
        "progressing with canary traffic",
        |r| {
            r["to_version"] == v3.as_str()
                && r["state"] == "progressing"
                && r["weights"]["canary"].as_f64() > Some(0.0)
        },
    );
    cli_ok(
        server,
        &[
            "channel",
            "freeze",
            "audit",
            "again",
            &repo,
            "channel:staging",
        ],
    );
    let _load = Load::start(&server.proxy_url, &deployed.host());
    let held = wait_for_state(server, &v3, &["blocked", "done"], Duration::from_secs(60));
    assert_eq!(held["state"], "blocked", "{held:#}");
    assert_eq!(held["step"], 1, "{held:#}");
    assert_eq!(held["weights"]["canary"], 50.0, "{held:#}");
    let reason = held["rollout"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("audit again"), "{held:#}");
    std::thread::sleep(Duration::from_secs(3));
    let still = rollout_status(server);
    assert_eq!(still["state"], "blocked", "{still:#}");
    assert_eq!(still["step"], 1, "{still:#}");
    cli_ok(server, &["channel", "unfreeze", &repo, "channel:staging"]);
    wait_for_state(server, &v3, &["done"], Duration::from_secs(180));
    assert_greeting(server, &deployed.release_env, "v3");
}

#[test]
fn a_rollout_survives_kill_9_mid_step_and_finishes_from_the_same_step() {
    let mut deployed = Deployed::start(&staging(""), "");
    // No traffic yet: the first step cannot be promoted, so it is still on when killed.
    release(&deployed.server, &deployed.v2);
    let before = wait_for(
        &deployed.server,
        Duration::from_secs(120),
        "progressing with canary traffic",
        |r| {
            r["to_version"] == deployed.v2.as_str()
                && r["state"] == "progressing"
                && r["weights"]["canary"].as_f64() > Some(0.0)
        },
    );
    assert_eq!(before["step"], 1, "{before:#}");
    let id = before["rollout"]["id"].clone();

    deployed.server.kill9();
    deployed.server.spawn();
    let restarted = Instant::now();
    let after = rollout_status(&deployed.server);
    assert_eq!(after["rollout"]["id"], id, "{after:#}");
    assert_eq!(
        after["step"], 1,
        "the same step after the restart: {after:#}"
    );
    assert_eq!(after["rollout"]["state"], "progressing", "{after:#}");

    let server = &deployed.server;
    let _load = Load::start(&server.proxy_url, &deployed.host());
    let done = wait_for_state(server, &deployed.v2, &["done"], Duration::from_secs(180));
    eprintln!("done {:?} after the restart", restarted.elapsed());
    assert_eq!(done["rollout"]["id"], id, "{done:#}");
    assert_greeting(server, &deployed.release_env, "v2");

    let events = rollout_events(server, &deployed.release_env);
    let short = &deployed.v2[..7];
    let of_v2 = |kind: &str| {
        events
            .iter()
            .filter(|(k, m)| k == kind && m.contains(short))
            .count()
    };
    assert_eq!(of_v2("rollout.started"), 1, "{events:#?}");
    assert_eq!(of_v2("rollout.done"), 1, "{events:#?}");
    assert_eq!(of_v2("rollout.rolled_back"), 0, "{events:#?}");
    wait_gone(&deployed.canary_env, Duration::from_secs(60));
}

#[test]
fn rollout_rollback_from_discord_returns_all_traffic_to_the_stable_version() {
    let world = DiscordWorld::start();
    world.add_guild(GUILD);
    world.add_channel(GUILD, CHANNEL, "team");
    world.add_member(GUILD, DANA, "dana", &[]);
    world.add_member(GUILD, VIC, "vic", &[]);
    let name = unique_name("rg");
    let tables = format!(
        "[discord]\ntoken = \"{BOT_TOKEN}\"\napplication_id = {APPLICATION_ID}\nguilds = [{GUILD}]\napi_url = \"{}\"\n\n\
         [discord.channels]\n\"{name}\" = \"{CHANNEL}\"\n\n\
         [permissions.discord_users]\n\"{DANA}\" = \"deployer\"\n",
        world.api_url()
    );
    let deployed = Deployed::start_with(&staging(""), &tables, name);
    let server = &deployed.server;
    world.wait_connected(Duration::from_secs(30));

    // No traffic: the first step stays on until the rollback.
    release(server, &deployed.v2);
    wait_for(
        server,
        Duration::from_secs(120),
        "progressing with canary traffic",
        |r| {
            r["to_version"] == deployed.v2.as_str()
                && r["state"] == "progressing"
                && r["weights"]["canary"].as_f64() > Some(0.0)
        },
    );

    // A viewer may not.
    let refused = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, VIC, "rollout")
            .sub("rollback")
            .opt("repo", &deployed.name)
            .opt("channel", "staging"),
    );
    let text = wait_answer(&world, &refused, "a refusal", |t| t.contains("needs"));
    assert!(text.contains("deployer"), "{text}");
    assert_eq!(rollout_status(server)["state"], "progressing");

    let asked = Instant::now();
    let rollback = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, DANA, "rollout")
            .sub("rollback")
            .opt("repo", &deployed.name)
            .opt("channel", "staging"),
    );
    let reply = wait_answer(&world, &rollback, "rolling back", |t| {
        t.contains("Rolling back")
    });
    eprintln!("reply: {reply}");
    assert!(reply.contains(&deployed.v2[..7]), "{reply}");
    let rolled_back = wait_for_state(
        server,
        &deployed.v2,
        &["rolled_back"],
        Duration::from_secs(60),
    );
    eprintln!("rolled back {:?} after the command", asked.elapsed());
    let rollout = &rolled_back["rollout"];
    assert_eq!(rollout["weights"]["canary"], 0.0, "{rollout:#}");
    assert_eq!(rollout["decision"]["check"], "manual", "{rollout:#}");
    let reason = rollout["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("rollout rollback"), "{rollout:#}");
    // Every request through the front door gets the stable version.
    for _ in 0..20 {
        assert_greeting(server, &deployed.release_env, "v1");
    }
    assert_eq!(rolled_back["version"], rollout["from_version"]);
    wait_gone(&deployed.canary_env, Duration::from_secs(60));

    // The team channel hears about it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let everything: Vec<String> = std::iter::once(CHANNEL)
            .chain(world.threads(CHANNEL).iter().map(|t| t.id))
            .flat_map(|c| world.all_messages(c))
            .map(|m| m.content)
            .collect();
        if everything
            .iter()
            .any(|m| m.contains("rolled back") && m.contains(&deployed.v2[..7]))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no rollback message in the team channel: {everything:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        world.unexpected().is_empty(),
        "unexpected Discord API calls: {:?}",
        world.unexpected()
    );
}
