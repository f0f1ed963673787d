//! The Discord surface in-process: the real serenity client inside the test app talks to
//! the Discord stand-in; what Discord cannot default is required, `/approve` is not
//! registered and `/help` speaks Discord.

use crate::harness::chatops::*;
use crate::harness::discord::*;
use crate::harness::SlipwayApi;
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
        // `/approve` (a pull request's own command) is not offered; `rollout approve` is.
        "[--all]",
        "[branch]",
        "[env]",
        "--failed",
        "/slipway",
        "`/approve",
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

/// The submit queue from Discord, on the runtime's twin: `/queue add branch:...` by a
/// developer lands the branch (its tests pass on the twin) in the repo's working copy;
/// `/queue list` shows it merged; someone with no role may look but not queue, and closing
/// the tree is for deployers.
#[test]
fn the_queue_from_discord_lands_a_branch_and_checks_roles() {
    let (world, server, repo, _name) = setup(InProcessServer::start);
    repo.checkout_new("docs");
    repo.write("DOCS.md", "docs\n");
    let docs = repo.commit("docs");
    repo.git(&["checkout", "--quiet", "main"]);

    let refused = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, VIC, "queue")
            .sub("add")
            .opt("branch", "docs"),
    );
    wait_answer(&world, &refused, "vic refused", |t| {
        t.contains("needs the developer role")
    });
    let pause = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, DANA, "queue")
            .sub("pause")
            .opt("reason", "freeze"),
    );
    wait_answer(&world, &pause, "dana refused", |t| {
        t.contains("needs the deployer role")
    });

    let add = world.send_interaction(
        SlashCommand::new(GUILD, CHANNEL, DANA, "queue")
            .sub("add")
            .opt("branch", "docs"),
    );
    let text = wait_answer(&world, &add, "the position", |t| t.contains("in line"));
    assert!(text.contains(":docs` is 1st in line"), "{text}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list =
            world.send_interaction(SlashCommand::new(GUILD, CHANNEL, VIC, "queue").sub("list"));
        let text = wait_answer(&world, &list, "the queue", |t| t.contains("The queue of"));
        if text.contains("| merged |") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never merged: {text}\n{}",
            server.tail_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let contains = std::process::Command::new("git")
        .args(["merge-base", "--is-ancestor", &docs, "main"])
        .current_dir(repo.path())
        .status()
        .unwrap();
    assert!(contains.success(), "main has the branch");
}
