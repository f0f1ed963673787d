//! A Slipway connected to the Discord stand-in, for the chat-ops tests: in a `slipway
//! serve` process (`discord_chatops`) or in the test process (`surfaces`).

use std::time::{Duration, Instant};

use super::discord::*;
use super::*;

pub const GUILD: u64 = 900_000_000_000_000_001;
pub const CHANNEL: u64 = 900_000_000_000_000_002;
pub const DEV_ROLE: u64 = 900_000_000_000_000_003;
pub const DANA: u64 = 900_000_000_000_000_010;
pub const VIC: u64 = 900_000_000_000_000_011;

/// A web service and a test service whose assertion fails and prints a secret.
pub const COMPOSE: &str = "services:
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

/// A Discord stand-in with a guild, a team channel, the developers role, dana (a developer)
/// and vic (no role), and a Slipway that `start` starts, connected to it with its slash
/// commands registered; the repo's team channel is `CHANNEL`.
pub fn setup<S: SlipwayApi>(
    start: impl FnOnce(ServerOptions) -> S,
) -> (DiscordWorld, S, TestRepo, String) {
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
    let server = start(ServerOptions {
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
pub fn wait_answer(
    world: &DiscordWorld,
    id: &str,
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
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
