//! Chat-ops end to end: the real serenity client inside `slipway serve` talks to a loopback
//! Discord stand-in (HTTP API and gateway); slash commands and mentions drive envs on the
//! real Docker engine, roles decide who may do what, and the team channel hears about it.
//! What Discord registers and its help are tested in-process (`tests/surfaces/discord.rs`).

mod harness;

use std::time::{Duration, Instant};

use harness::chatops::*;
use harness::discord::*;
use harness::*;

#[test]
fn slash_commands_drive_envs_with_roles_and_the_team_channel_hears_about_it() {
    let (world, server, _repo, name) = setup(Server::start);
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
    assert!(ready.contains(&front_door_url_of(&status)), "{ready}");

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
