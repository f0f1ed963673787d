//! `chatops`: (1) commands parsed per second by the one command grammar, from PR-comment
//! text and from Discord options, beside parsing the interaction's JSON payload (what
//! reading a Discord command costs at the least); (2) slash commands through the real
//! `slipway serve` (serenity, grammar, permission check, audit) against the loopback Discord
//! stand-in: handled per second, and the time from an interaction arriving to its deferred
//! answer (p50, p99, max) against Discord's 3-second deadline.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use slipway::commands::{self, Command};

use crate::{cores, slipway_binary, Repo, Server};

#[path = "../../tests/harness/discord.rs"]
#[allow(dead_code)]
mod discord;

use discord::{DiscordWorld, SlashCommand, APPLICATION_ID, BOT_TOKEN, INTERACTION_DEADLINE};

const GUILD: u64 = 910_000_000_000_000_001;
const CHANNEL: u64 = 910_000_000_000_000_002;
const USER: u64 = 910_000_000_000_000_003;

pub fn chatops(interactions: usize) -> Result<()> {
    println!("== chatops: the command grammar, and {interactions} slash commands through slipway serve, {} cores", cores());
    parser();
    through_the_server(interactions)
}

fn parser() {
    let lines = [
        "env up feature-x ttl:2h",
        "env down demo-feature-x",
        "env list",
        "env status demo-pr-7",
        "env logs demo-main service:web tail:50",
        "env extend demo-main by:4h",
        "test demo-main --failed",
        "help env up",
        "whoami",
        "evn up typo",
    ];
    let options: [(&str, &[(&str, &str)]); 4] = [
        ("env up", &[("branch", "feature-x"), ("ttl", "2h")]),
        (
            "env logs",
            &[("env", "demo-main"), ("service", "web"), ("tail", "50")],
        ),
        ("test", &[("env", "demo-main"), ("failed", "true")]),
        ("help", &[]),
    ];
    let payload = serde_json::json!({
        "id": "1", "type": 2, "token": "t", "application_id": "2", "guild_id": "3", "channel_id": "4",
        "data": {"id": "5", "name": "env", "type": 1, "options": [{"type": 1, "name": "up",
            "options": [{"type": 3, "name": "branch", "value": "feature-x"}, {"type": 3, "name": "ttl", "value": "2h"}]}]},
        "member": {"user": {"id": "6", "username": "dana"}, "roles": ["7"]}
    })
    .to_string();

    let rate = |work: &mut dyn FnMut() -> usize| {
        let started = Instant::now();
        let mut done = 0;
        while started.elapsed() < Duration::from_secs(1) {
            done += work();
        }
        done as f64 / started.elapsed().as_secs_f64()
    };
    let text = rate(&mut || {
        for line in lines {
            std::hint::black_box(Command::parse_line(line).is_ok());
        }
        lines.len()
    });
    let discord_options = rate(&mut || {
        for (name, opts) in options {
            std::hint::black_box(Command::from_options(name, opts).is_ok());
        }
        options.len()
    });
    let comment_body = "Looks good!\n\n```\n/slipway env down x\n```\n/slipway env up feature-x ttl:2h\n> /slipway approve\n/slipway test demo-pr-7 --failed\n";
    let comments = rate(&mut || {
        std::hint::black_box(commands::parse_comment(comment_body).len());
        2
    });
    let json = rate(&mut || {
        std::hint::black_box(serde_json::from_str::<serde_json::Value>(&payload).is_ok());
        1
    });
    println!();
    println!("                                          per second");
    println!("grammar, comment/mention text           {text:>12.0}");
    println!("grammar, Discord options                {discord_options:>12.0}");
    println!("grammar, PR comments (2 commands each)  {comments:>12.0}");
    println!("reference: parse the interaction JSON   {json:>12.0}");
}

fn through_the_server(count: usize) -> Result<()> {
    let world = DiscordWorld::start();
    world.add_guild(GUILD);
    world.add_channel(GUILD, CHANNEL, "team");
    world.add_member(GUILD, USER, "dana", &[]);
    let slipway = slipway_binary()?;
    let repo = Repo::new()?;
    repo.write(
        "compose.yml",
        "services:\n  web:\n    image: slipway/demo-app:latest\n",
    )?;
    repo.commit()?;
    let tables = format!(
        "[discord]\ntoken = \"{BOT_TOKEN}\"\napplication_id = {APPLICATION_ID}\nguilds = [{GUILD}]\napi_url = \"{}\"\n",
        world.api_url()
    );
    let _server = Server::start_with(&slipway, &repo, "chat", "compose.yml", "chatops", &tables)?;
    world.wait_connected(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.registered_commands(GUILD).is_empty() {
        if Instant::now() > deadline {
            bail!("the bot never registered its commands");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // `/env list` and `/help`: parsed, permission-checked, audited, answered; no Docker work.
    let started = Instant::now();
    let ids: Vec<String> = (0..count)
        .map(|i| {
            let command = if i % 2 == 0 {
                SlashCommand::new(GUILD, CHANNEL, USER, "env").sub("list")
            } else {
                SlashCommand::new(GUILD, CHANNEL, USER, "help")
            };
            world.send_interaction(command)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ids.iter().all(|id| world.original_response(id).is_some()) {
        if Instant::now() > deadline {
            bail!("not every interaction was answered");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = ids
        .iter()
        .filter_map(|id| world.callback_latency(id))
        .collect();
    latencies.sort();
    let late = latencies
        .iter()
        .filter(|l| **l >= INTERACTION_DEADLINE)
        .count();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!();
    println!("{count} slash commands through slipway serve (serenity → grammar → permission check → audit → answer):");
    println!(
        "  handled: {:.0} commands/s ({:.2} s for all, answered in full)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "  interaction → deferred answer: p50 {}, p99 {}, max {}; over the 3 s deadline: {late}",
        ms(at(0.50)),
        ms(at(0.99)),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "  reference: Discord's deadline {} ms",
        INTERACTION_DEADLINE.as_millis()
    );
    Ok(())
}
