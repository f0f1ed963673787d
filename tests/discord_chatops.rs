//! Chat-ops end to end: the real serenity client inside `slipway serve` talks to a loopback
//! Discord stand-in (HTTP API and gateway); slash commands and mentions drive envs on the
//! real Docker engine, roles decide who may do what, and the team channel hears about it.

mod harness;

use std::time::{Duration, Instant};

use harness::discord::*;
use harness::*;

const GUILD: u64 = 900_000_000_000_000_001;
const CHANNEL: u64 = 900_000_000_000_000_002;
const DEV_ROLE: u64 = 900_000_000_000_000_003;
const DANA: u64 = 900_000_000_000_000_010;
const VIC: u64 = 900_000_000_000_000_011;

/// A web service and a test service whose assertion fails and prints a secret.
const COMPOSE: &str = "services:
  web:
    image: slipway/demo-app:latest
    ports: ['8080']
    healthcheck:
      test: [CMD, /demo-app, probe, 'http://127.0.0.1:8080/healthz']
      interval: 1s
  tests:
    image: slipway/demo-app:latest
    command: [selftest]
    profiles: [test]
    environment:
      TARGET_URL: http://web:8080
      FAIL_TEST: '1'
      PRINT_SECRET: API_TOKEN
      API_TOKEN: chat-secret-0123456789
    depends_on:
      web: { condition: service_healthy }
";

fn setup() -> (DiscordWorld, Server, TestRepo, String) {
    let world = DiscordWorld::start();
    world.add_guild(GUILD);
    world.add_channel(GUILD, CHANNEL, "team");
    world.add_role(GUILD, DEV_ROLE, "developers");
    world.add_member(GUILD, DANA, "dana", &[DEV_ROLE]);
    world.add_member(GUILD, VIC, "vic", &[]);
    let name = unique_name("dc");
    let repo = TestRepo::new();
    repo.write("compose.yml", COMPOSE).commit("chat");
    let extra = "";
    // The repo's team channel in the short form, its id a string as Discord shows it.
    let tables = format!(
        "[discord]\ntoken = \"{BOT_TOKEN}\"\napplication_id = {APPLICATION_ID}\nguilds = [{GUILD}]\napi_url = \"{}\"\n\n\
         [discord.channels]\n\"{name}\" = \"{CHANNEL}\"\n\n\
         [permissions.discord_roles]\n\"{DEV_ROLE}\" = \"developer\"\n",
        world.api_url()
    );
    let server = Server::start(ServerOptions {
        repo_name: &name,
        repo_url: repo.path(),
        env_file: "compose.yml",
        extra,
        repo_extra: "secret_env = [\"API_TOKEN\"]",
        tables: &tables,
    });
    world.wait_connected(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.registered_commands(GUILD).is_empty() {
        assert!(
            Instant::now() < deadline,
            "slash commands never registered:\n{}",
            server.tail_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (world, server, repo, name)
}

/// Waits until the interaction's answer satisfies `check`; returns its text.
fn wait_answer(world: &DiscordWorld, id: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let text = world
            .original_response(id)
            .map(|m| m.content)
            .unwrap_or_default();
        if check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the answer never showed {what}; last: {text:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn slash_commands_drive_envs_with_roles_and_the_team_channel_hears_about_it() {
    let (world, server, _repo, name) = setup();
    let env = format!("{name}-main");
    let _cleanup = EnvCleanup(env.clone());

    // Every command of the grammar that means something on Discord exists there.
    let registered: Vec<String> = world
        .registered_commands(GUILD)
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    for command in ["env", "test", "help", "whoami"] {
        assert!(
            registered.iter().any(|r| r == command),
            "{command} missing from {registered:?}"
        );
    }

    // Someone without the developer role is refused and nothing starts.
    let refused = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, VIC, "env")
            .sub("up")
            .opt("branch", "main"),
    );
    let text = wait_answer(&world, &refused, "a refusal", |t| t.contains("needs"));
    assert!(text.contains("developer"), "{text}");
    assert!(
        server.cli(&["status", &env]).status.code() != Some(0),
        "a refused command created an env"
    );

    // A developer's /env up: deferred at once, then edited until the env is Ready with its URL.
    let up = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, DANA, "env")
            .sub("up")
            .opt("branch", "main"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.interaction_responses(&up).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the interaction was never answered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first = world.interaction_responses(&up);
    assert_eq!(
        first.first().map(|r| r["type"].clone()),
        Some(serde_json::json!(5)),
        "deferred first: {first:?}"
    );
    assert!(world.callback_latency(&up).unwrap() < INTERACTION_DEADLINE);
    let ready = wait_answer(&world, &up, "Ready with a URL", |t| {
        t.contains("Ready") && t.contains("http://")
    });
    let status = server.status(&env);
    assert_eq!(status["phase"], "Ready");
    assert!(ready.contains(&url_of(&status, "web")), "{ready}");

    // A mention works like a slash command.
    world.send_message(
        GUILD,
        CHANNEL,
        DANA,
        &format!("<@{BOT_USER_ID}> env status env:{env}"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !world
        .messages(CHANNEL)
        .iter()
        .any(|m| m.content.contains(&env) && m.content.contains("Ready"))
    {
        assert!(
            Instant::now() < deadline,
            "no answer to the mention: {:?}",
            world.messages(CHANNEL)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The env's tests fail: its thread in the team channel gets the snippet, under 2,000
    // characters, with the log link and without the secret.
    let deadline = Instant::now() + Duration::from_secs(90);
    let snippet = loop {
        let thread = world.threads(CHANNEL).into_iter().find(|t| t.name == env);
        let found = thread.and_then(|t| {
            world
                .all_messages(t.id)
                .into_iter()
                .map(|m| m.content)
                .find(|c| c.contains("assertion `left == right` failed"))
        });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no failure snippet in the env's thread; channel: {:?}",
            world.messages(CHANNEL)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(snippet.chars().count() <= 2000);
    assert!(
        snippet.contains("/runs/") && snippet.contains("/log"),
        "{snippet}"
    );
    assert!(
        !snippet.contains("chat-secret-0123456789"),
        "the secret leaked: {snippet}"
    );
    // The channel itself holds one line for the env, edited as its state changes.
    let lines: Vec<_> = world
        .messages(CHANNEL)
        .into_iter()
        .filter(|m| m.content.contains(&env) && m.thread_id.is_some())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");

    // The gateway drops; serenity reconnects and commands keep working.
    world.drop_connections_abruptly();
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.live_sessions() == 0 {
        assert!(Instant::now() < deadline, "the bot never reconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    let list = world.send_interaction(SlashCommand::new(GUILD, CHANNEL, VIC, "env").sub("list"));
    wait_answer(&world, &list, "the env list", |t| t.contains(&env));

    // /env down, answered and followed until the env is gone.
    let down = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, DANA, "env")
            .sub("down")
            .opt("env", &env),
    );
    wait_answer(&world, &down, "Deleted", |t| t.contains("Deleted"));
    assert!(containers_of(&env).is_empty());
    assert!(
        world.unexpected().is_empty(),
        "unexpected Discord API calls: {:?}",
        world.unexpected()
    );
}

/// The options of a registered command (or of one `/env` subcommand) by name, with whether
/// each is required (Discord omits `required` when false).
fn registered_options(
    world: &DiscordWorld,
    command: &str,
    sub: Option<&str>,
) -> Vec<(String, bool)> {
    let commands = world.registered_commands(GUILD);
    let command = commands
        .iter()
        .find(|c| c["name"] == command)
        .unwrap_or_else(|| panic!("/{command} not registered: {commands:?}"));
    let options = match sub {
        Some(sub) => command["options"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == sub)
            .unwrap_or_else(|| panic!("/{command} {sub} not registered"))["options"]
            .clone(),
        None => command["options"].clone(),
    };
    options
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["required"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// Issue 9, items 17 and 18: what Discord cannot default is required, so its client prompts
/// for it; `/approve` (a pull request's command) is not registered; `/help` speaks Discord.
#[test]
fn discord_registers_what_it_can_do_and_its_help_speaks_discord() {
    let (world, _server, _repo, _name) = setup();
    let names: Vec<String> = world
        .registered_commands(GUILD)
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    assert!(!names.iter().any(|n| n == "approve"), "{names:?}");

    let required = |command: &str, sub: Option<&str>, option: &str| -> bool {
        registered_options(&world, command, sub)
            .into_iter()
            .find(|(name, _)| name == option)
            .unwrap_or_else(|| panic!("/{command} {sub:?} has no option {option}"))
            .1
    };
    assert!(required("env", Some("up"), "branch"));
    for sub in ["down", "status", "logs", "extend"] {
        assert!(required("env", Some(sub), "env"), "/env {sub} env");
    }
    assert!(required("env", Some("extend"), "by"));
    assert!(required("test", None, "env"));
    assert!(!required("env", Some("up"), "ttl"));
    assert!(!required("env", Some("up"), "repo"));
    assert!(!required("env", Some("logs"), "tail"));
    assert!(!required("env", Some("list"), "all"));
    assert!(!required("test", None, "failed"));
    assert!(!required("help", None, "topic"));
    // Discord wants required options first.
    for (command, sub) in [("env", Some("up")), ("env", Some("extend")), ("test", None)] {
        let options = registered_options(&world, command, sub);
        let first_optional = options
            .iter()
            .position(|(_, r)| !r)
            .unwrap_or(options.len());
        assert!(
            options[first_optional..].iter().all(|(_, r)| !r),
            "{options:?}"
        );
    }

    let help = world.send_interaction(SlashCommand::new(GUILD, CHANNEL, VIC, "help"));
    let text = wait_answer(&world, &help, "the help", |t| {
        t.contains("Slipway commands")
    });
    assert!(text.contains("`/env up branch:<branch>"), "{text}");
    assert!(text.contains("`/env list [all:True]`"), "{text}");
    assert!(text.contains("`/help topic:<command>`"), "{text}");
    for foreign in [
        "[--all]", "[branch]", "[env]", "--failed", "/slipway", "approve",
    ] {
        assert!(
            !text.contains(foreign),
            "{foreign} in Discord's /help:\n{text}"
        );
    }
    let topic = world
        .send_interaction(SlashCommand::new(GUILD, CHANNEL, VIC, "help").opt("topic", "env logs"));
    let text = wait_answer(&world, &topic, "the topic help", |t| t.contains("env logs"));
    assert!(
        text.contains("`/env logs env:<env> [service:<service>] [tail:<lines>]`"),
        "{text}"
    );
    assert!(text.contains("(required)"), "{text}");
}
