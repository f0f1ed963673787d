//! The Discord surface in-process: the real serenity client inside the test app talks to
//! the Discord stand-in; what Discord cannot default is required, `/approve` is not
//! registered and `/help` speaks Discord.

use crate::harness::chatops::*;
use crate::harness::discord::*;
use crate::support::InProcessServer;

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
    let (world, _server, _repo, _name) = setup(InProcessServer::start);
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
