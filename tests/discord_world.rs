//! Self-test of the Discord world model in tests/harness/discord.rs: a real serenity client
//! (as `slipway serve` runs it) connects to the stand-in's gateway and REST API, gets slash
//! commands and mentions, answers them, survives dropped connections; every gateway frame and
//! REST shape goes through serenity's own models; Discord's limits answer with Discord's errors.

mod harness;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::discord::*;
use harness::github::http_request;
use serde_json::{json, Value};
use serenity::all::{
    ChannelId, ClientBuilder, CommandInteraction, CommandOptionType, Context, CreateCommand,
    CreateCommandOption, CreateEmbed, CreateInteractionResponseFollowup, CreateMessage,
    CreateThread, EditInteractionResponse, EditMessage, EventHandler, GatewayIntents, GuildId,
    HttpBuilder, Interaction, Message, Ready, ResolvedValue, UserId,
};

const GUILD: u64 = 900_000_000_000_000_001;
const CHANNEL: u64 = 900_000_000_000_000_010;
const OTHER_CHANNEL: u64 = 900_000_000_000_000_011;
const ALICE: u64 = 900_000_000_000_000_100;
const ROLE_DEV: u64 = 900_000_000_000_000_200;
const WAIT: Duration = Duration::from_secs(10);

fn world() -> DiscordWorld {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let world = DiscordWorld::start();
    world.add_guild(GUILD);
    world.add_channel(GUILD, CHANNEL, "general");
    world.add_channel(GUILD, OTHER_CHANNEL, "deploys");
    world.add_member(GUILD, ALICE, "alice", &[ROLE_DEV]);
    world
}

// ---------------------------------------------------------------------------------------------
// A small bot on serenity, shaped like Slipway's.

#[derive(Clone, Default)]
struct Seen {
    errors: Arc<Mutex<Vec<String>>>,
    /// (author id, content) of every MESSAGE_CREATE the handler got.
    messages: Arc<Mutex<Vec<(u64, String)>>>,
    /// Guild ids from GUILD_CREATE.
    guilds: Arc<Mutex<Vec<u64>>>,
    readies: Arc<Mutex<u32>>,
}

impl Seen {
    fn error(&self, what: impl std::fmt::Display) {
        self.errors.lock().unwrap().push(what.to_string());
    }
    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

struct Handler {
    seen: Seen,
}

fn env_command() -> CreateCommand {
    CreateCommand::new("env")
        .description("Preview environments")
        .add_option(
            CreateCommandOption::new(CommandOptionType::SubCommand, "up", "Start an env")
                .add_sub_option(
                    CreateCommandOption::new(CommandOptionType::String, "branch", "The branch")
                        .required(true),
                )
                .add_sub_option(CreateCommandOption::new(
                    CommandOptionType::Integer,
                    "ttl",
                    "Hours to keep it",
                )),
        )
        .add_option(CreateCommandOption::new(
            CommandOptionType::SubCommand,
            "list",
            "List envs",
        ))
}

/// "branch" (and "ttl") of `/env up`.
fn options_of(call: &CommandInteraction) -> (String, Option<i64>) {
    let mut branch = String::new();
    let mut ttl = None;
    for option in call.data.options() {
        if let ResolvedValue::SubCommand(inner) = option.value {
            for o in inner {
                match (o.name, o.value) {
                    ("branch", ResolvedValue::String(s)) => branch = s.to_string(),
                    ("ttl", ResolvedValue::Integer(n)) => ttl = Some(n),
                    _ => {}
                }
            }
        }
    }
    (branch, ttl)
}

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        *self.seen.readies.lock().unwrap() += 1;
        if ready.user.id != UserId::new(BOT_USER_ID) {
            self.seen.error(format!("READY user {}", ready.user.id));
        }
        if let Err(e) = GuildId::new(GUILD)
            .set_commands(&ctx.http, vec![env_command()])
            .await
        {
            self.seen.error(format!("set_commands: {e:?}"));
        }
    }

    async fn guild_create(
        &self,
        _ctx: Context,
        guild: serenity::all::Guild,
        _is_new: Option<bool>,
    ) {
        self.seen.guilds.lock().unwrap().push(guild.id.get());
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Command(call) = interaction else {
            self.seen.error("not a command interaction");
            return;
        };
        let (branch, ttl) = options_of(&call);
        if branch == "slow" {
            tokio::time::sleep(Duration::from_millis(3300)).await;
        }
        if let Err(e) = call.defer(&ctx.http).await {
            self.seen.error(format!("defer: {e}"));
            return;
        }
        let text = match ttl {
            Some(ttl) => format!("got {branch} for {ttl}h"),
            None => format!("got {branch}"),
        };
        if let Err(e) = call
            .edit_response(&ctx.http, EditInteractionResponse::new().content(&text))
            .await
        {
            self.seen.error(format!("edit_response: {e}"));
        }
        if let Err(e) = call
            .create_followup(
                &ctx.http,
                CreateInteractionResponseFollowup::new().content(format!("following {branch}")),
            )
            .await
        {
            self.seen.error(format!("create_followup: {e}"));
        }
    }

    async fn message(&self, ctx: Context, msg: Message) {
        self.seen
            .messages
            .lock()
            .unwrap()
            .push((msg.author.id.get(), msg.content.clone()));
        if msg.author.bot || !msg.mentions_user_id(UserId::new(BOT_USER_ID)) {
            return;
        }
        let sent = match msg
            .channel_id
            .send_message(
                &ctx.http,
                CreateMessage::new()
                    .content(format!("pong: {}", msg.content))
                    .embed(CreateEmbed::new().title("env").description("starting")),
            )
            .await
        {
            Ok(sent) => sent,
            Err(e) => return self.seen.error(format!("send_message: {e}")),
        };
        let thread = match msg
            .channel_id
            .create_thread_from_message(&ctx.http, msg.id, CreateThread::new("env feature-x"))
            .await
        {
            Ok(thread) => thread,
            Err(e) => return self.seen.error(format!("create_thread_from_message: {e}")),
        };
        if let Err(e) = thread
            .id
            .send_message(&ctx.http, CreateMessage::new().content("in the thread"))
            .await
        {
            self.seen.error(format!("send in thread: {e}"));
        }
        if let Err(e) = msg
            .channel_id
            .edit_message(
                &ctx.http,
                sent.id,
                EditMessage::new().content("pong (edited)"),
            )
            .await
        {
            self.seen.error(format!("edit_message: {e}"));
        }
    }
}

struct Bot {
    runtime: Option<tokio::runtime::Runtime>,
    seen: Seen,
}

impl Drop for Bot {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn intents() -> GatewayIntents {
    GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT
}

/// A serenity client against the world, running on its own runtime.
fn start_bot(world: &DiscordWorld) -> Bot {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let seen = Seen::default();
    let http = HttpBuilder::new(world.token())
        .proxy(world.api_url())
        .ratelimiter_disabled(true)
        .build();
    let handler = Handler { seen: seen.clone() };
    let mut client = runtime
        .block_on(async {
            ClientBuilder::new_with_http(http, intents())
                .event_handler(handler)
                .await
        })
        .expect("serenity client builds");
    let errors = seen.clone();
    runtime.spawn(async move {
        if let Err(e) = client.start().await {
            errors.error(format!("client stopped: {e:?}"));
        }
    });
    Bot {
        runtime: Some(runtime),
        seen,
    }
}

/// Every frame the world sent must deserialise as serenity's GatewayEvent (serenity drops
/// events it cannot parse with only a log line, so a bad shape would look like silence).
fn assert_frames_parse(world: &DiscordWorld) {
    let frames = world.gateway_frames();
    assert!(!frames.is_empty());
    for frame in frames {
        let parsed: Result<serenity::model::event::GatewayEvent, _> =
            serde_json::from_value(frame.clone());
        match parsed {
            Ok(serenity::model::event::GatewayEvent::Dispatch(_, event)) => {
                assert!(
                    !matches!(event, serenity::model::event::Event::Unknown(_)),
                    "unknown event {frame}"
                );
            }
            Ok(_) => {}
            Err(e) => panic!("serenity cannot parse {e}: {frame:#}"),
        }
    }
}

fn env_up<'a>(branch: &'a str) -> SlashCommand<'a> {
    SlashCommand {
        guild_id: GUILD,
        channel_id: CHANNEL,
        user_id: ALICE,
        name: "env",
        subcommand: Some("up"),
        options: vec![("branch", branch)],
    }
}

/// Injects `/env up branch` and waits for the deferred answer, its edit and the follow-up.
fn round_trip(world: &DiscordWorld, branch: &str) -> String {
    let id = world.send_interaction(env_up(branch));
    let token = world.interaction_token(&id);
    world.wait_until(&format!("answer to /env up {branch}"), WAIT, |w| {
        (w.followups(&token).len() >= 2).then_some(())
    });
    let responses = world.interaction_responses(&id);
    assert_eq!(responses.len(), 1, "{responses:?}");
    assert_eq!(responses[0]["type"], 5, "deferred first: {responses:?}");
    let latency = world.callback_latency(&id).expect("a callback");
    assert!(latency < INTERACTION_DEADLINE, "answered after {latency:?}");
    let followups = world.followups(&token);
    assert_eq!(followups[0]["content"], format!("got {branch}"));
    assert_eq!(followups[1]["content"], format!("following {branch}"));
    let original = world.original_response(&id).expect("original answer");
    assert_eq!(original.content, format!("got {branch}"));
    assert_eq!(original.edits, 1);
    assert_eq!(original.flags & 128, 0, "no longer loading");
    let all = world.interaction_messages(&id);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].content, format!("following {branch}"));
    id
}

// ---------------------------------------------------------------------------------------------

#[test]
fn serenity_answers_slash_commands_and_mentions() {
    let world = world();
    let bot = start_bot(&world);
    world.wait_connected(WAIT);
    let registered = world.wait_until("commands registered", WAIT, |w| {
        let list = w.registered_commands(GUILD);
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(registered.len(), 1);
    assert_eq!(registered[0]["name"], "env");
    assert_eq!(registered[0]["options"][0]["name"], "up");
    assert_eq!(registered[0]["options"][0]["options"][0]["name"], "branch");

    // Identify carried the token and the intents.
    let identify = &world.identify_payloads()[0];
    assert_eq!(identify["token"], format!("Bot {BOT_TOKEN}"));
    let bits = identify["intents"].as_u64().unwrap();
    assert_eq!(bits, intents().bits());
    assert_eq!(
        *bot.seen.guilds.lock().unwrap(),
        vec![GUILD],
        "GUILD_CREATE reached the handler"
    );

    // A slash command: deferred, then edited, then a follow-up.
    round_trip(&world, "feature-x");

    // Typed options: ttl is an INTEGER, so the handler sees a number.
    let id = world.send_interaction(env_up("feature-y").opt("ttl", "4"));
    let token = world.interaction_token(&id);
    world.wait_until("answer with ttl", WAIT, |w| {
        (w.followups(&token).len() >= 2).then_some(())
    });
    assert_eq!(
        world.followups(&token)[0]["content"],
        "got feature-y for 4h"
    );

    // Commands the bot never registered are not delivered by Discord: the world refuses them.
    for bad in [
        SlashCommand::new(GUILD, CHANNEL, ALICE, "deploy"),
        SlashCommand::new(GUILD, CHANNEL, ALICE, "env").sub("down"),
        SlashCommand::new(GUILD, CHANNEL, ALICE, "env").sub("up"),
        env_up("x").opt("colour", "red"),
        env_up("x").opt("ttl", "four"),
    ] {
        let shown = format!("{bad:?}");
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| world.send_interaction(bad)));
        assert!(result.is_err(), "accepted {shown}");
    }

    // A message mentioning the bot: reply, thread from the message, a post in it, an edit.
    let plain = world.send_message(GUILD, CHANNEL, ALICE, "just chatting");
    let mention = world.send_message(
        GUILD,
        CHANNEL,
        ALICE,
        &format!("<@{BOT_USER_ID}> env up feature-x"),
    );
    let reply = world.wait_until("the reply, edited", WAIT, |w| {
        w.messages(CHANNEL).into_iter().find(|m| m.edits == 1)
    });
    assert_eq!(reply.content, "pong (edited)");
    assert_eq!(reply.author_id, BOT_USER_ID);
    assert_eq!(reply.embeds.len(), 1);
    assert_eq!(reply.embeds[0]["title"], "env");
    assert_eq!(
        world.messages(CHANNEL).len(),
        1,
        "no reply to the plain one"
    );
    let threads = world.threads(CHANNEL);
    assert_eq!(threads.len(), 1);
    assert_eq!(threads[0].name, "env feature-x");
    assert_eq!(threads[0].message_id, Some(mention));
    assert_eq!(threads[0].id, mention, "a message's thread has its id");
    assert_eq!(world.message(mention).unwrap().thread_id, Some(mention));
    assert_eq!(world.message(plain).unwrap().thread_id, None);
    let in_thread = world.messages(threads[0].id);
    assert_eq!(in_thread.len(), 1);
    assert_eq!(in_thread[0].content, "in the thread");

    // The bot saw both users' messages and, as on Discord, its own ones (and ignored those).
    let seen = world.wait_until("the bot's own messages echoed", WAIT, |_| {
        let seen = bot.seen.messages.lock().unwrap().clone();
        (seen.iter().filter(|(a, _)| *a == BOT_USER_ID).count() >= 2).then_some(seen)
    });
    assert!(seen.contains(&(ALICE, "just chatting".to_string())));
    assert!(seen.contains(&(ALICE, format!("<@{BOT_USER_ID}> env up feature-x"))));

    assert_eq!(bot.seen.errors(), Vec::<String>::new());
    assert_eq!(world.unexpected(), Vec::<String>::new());
    assert_eq!(*bot.seen.readies.lock().unwrap(), 1);
    assert_eq!(world.sessions(), 1);
    assert_frames_parse(&world);
    let requests = world.requests();
    for expected in [
        "GET /gateway".to_string(),
        format!("PUT /applications/{APPLICATION_ID}/guilds/{GUILD}/commands"),
        format!("POST /channels/{CHANNEL}/messages"),
        format!("POST /channels/{CHANNEL}/messages/{mention}/threads"),
    ] {
        assert!(requests.contains(&expected), "{expected} in {requests:#?}");
    }
}

#[test]
fn serenity_resumes_after_dropped_connections() {
    let world = world();
    world.set_heartbeat_interval(400);
    let bot = start_bot(&world);
    world.wait_connected(WAIT);
    world.wait_until("commands registered", WAIT, |w| {
        (!w.registered_commands(GUILD).is_empty()).then_some(())
    });
    round_trip(&world, "before");

    // Close code 4000: serenity resumes the session; nothing is identified again.
    world.drop_connections();
    world.wait_sessions(2, WAIT);
    assert_eq!((world.identifies(), world.resumes()), (1, 1));
    round_trip(&world, "after-resume");

    // Dropped without a close frame, and an interaction sent while the client is away: it is
    // replayed on resume and still answered in time.
    world.drop_connections_abruptly();
    let id = world.send_interaction(env_up("while-away"));
    world.wait_sessions(3, WAIT);
    assert_eq!(world.resumes(), 2);
    let token = world.interaction_token(&id);
    world.wait_until("the replayed interaction answered", WAIT, |w| {
        (w.followups(&token).len() >= 2).then_some(())
    });
    assert!(world.callback_latency(&id).unwrap() < INTERACTION_DEADLINE);

    // Op 7 Reconnect: resume again.
    world.send_reconnect();
    world.wait_sessions(4, WAIT);
    assert_eq!(world.resumes(), 3);
    round_trip(&world, "after-reconnect");

    // Heartbeats go on on the resumed connection, acknowledged (else serenity would restart).
    let before = world.heartbeats();
    world.wait_until("two more heartbeats", WAIT, |w| {
        (w.heartbeats() >= before + 2).then_some(())
    });
    assert_eq!(world.sessions(), 4, "no reconnect for want of acks");
    assert_eq!(
        *bot.seen.readies.lock().unwrap(),
        1,
        "resumed, not re-identified"
    );
    assert_eq!(bot.seen.errors(), Vec::<String>::new());
    assert_eq!(world.unexpected(), Vec::<String>::new());
    assert_frames_parse(&world);
}

#[test]
fn serenity_identifies_again_after_an_invalid_session() {
    let world = world();
    let bot = start_bot(&world);
    world.wait_connected(WAIT);
    world.wait_until("commands registered", WAIT, |w| {
        (!w.registered_commands(GUILD).is_empty()).then_some(())
    });

    // Op 9 with d=false: the session is gone; serenity restarts the shard (its shard queuer
    // waits up to 5 s between starts) and identifies anew, getting READY again.
    world.invalidate_sessions(false);
    world.wait_until("a second IDENTIFY", Duration::from_secs(20), |w| {
        (w.identifies() == 2 && w.live_sessions() > 0).then_some(())
    });
    world.wait_until("the second READY handled", WAIT, |_| {
        (*bot.seen.readies.lock().unwrap() == 2).then_some(())
    });
    round_trip(&world, "after-identify");
    assert_eq!(bot.seen.errors(), Vec::<String>::new());
    assert_eq!(world.unexpected(), Vec::<String>::new());
    assert_frames_parse(&world);
}

#[test]
fn a_zombie_connection_is_replaced() {
    let world = world();
    world.set_heartbeat_interval(300);
    let bot = start_bot(&world);
    world.wait_connected(WAIT);
    world.wait_until("commands registered", WAIT, |w| {
        (!w.registered_commands(GUILD).is_empty()).then_some(())
    });
    // No acks: serenity gives up on the connection at its next heartbeat and starts over.
    world.set_ack_heartbeats(false);
    let before = world.sessions();
    world.wait_until("a new session", Duration::from_secs(20), |w| {
        (w.sessions() > before).then_some(())
    });
    world.set_ack_heartbeats(true);
    world.wait_connected(WAIT);
    round_trip(&world, "after-zombie");
    assert_eq!(bot.seen.errors(), Vec::<String>::new());
    assert_eq!(world.unexpected(), Vec::<String>::new());
}

#[test]
fn a_late_answer_is_refused_like_discord_does() {
    let world = world();
    let bot = start_bot(&world);
    world.wait_connected(WAIT);
    world.wait_until("commands registered", WAIT, |w| {
        (!w.registered_commands(GUILD).is_empty()).then_some(())
    });
    // The handler sleeps 3.3 s before deferring: Discord has forgotten the interaction.
    let id = world.send_interaction(env_up("slow"));
    let latency = world.wait_until("the late callback", WAIT, |w| w.callback_latency(&id));
    assert!(latency > INTERACTION_DEADLINE, "{latency:?}");
    assert_eq!(world.interaction_responses(&id), Vec::<Value>::new());
    let errors = world.wait_until("the handler's error", WAIT, |_| {
        let errors = bot.seen.errors();
        (!errors.is_empty()).then_some(errors)
    });
    assert!(
        errors[0].contains("defer") && errors[0].contains("Unknown interaction"),
        "{errors:?}"
    );
    assert!(world.original_response(&id).is_none());
}

// ---------------------------------------------------------------------------------------------
// REST without a gateway client

fn call(world: &DiscordWorld, method: &str, path: &str, body: Value) -> (u16, Value) {
    let auth = format!("Bot {BOT_TOKEN}");
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let r = http_request(
        method,
        &format!("{}/api/v10{path}", world.api_url()),
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        text.as_bytes(),
    );
    let json = if r.body.is_empty() {
        Value::Null
    } else {
        r.json()
    };
    (r.status, json)
}

#[test]
fn rest_shapes_parse_with_serenity_and_limits_hold() {
    let world = world();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = HttpBuilder::new(world.token())
        .proxy(world.api_url())
        .ratelimiter_disabled(true)
        .application_id(APPLICATION_ID.into())
        .build();

    runtime.block_on(async {
        // Startup-ish calls, typed by serenity.
        let gateway = http.get_gateway().await.expect("GET /gateway");
        assert_eq!(gateway.url, world.gateway_url());
        let bot_gateway = http.get_bot_gateway().await.expect("GET /gateway/bot");
        assert_eq!(bot_gateway.shards, 1);
        let me = http.get_current_user().await.expect("GET /users/@me");
        assert_eq!(me.id.get(), BOT_USER_ID);
        assert!(me.bot);
        let app = http
            .get_current_application_info()
            .await
            .expect("GET /oauth2/applications/@me");
        assert_eq!(app.id.get(), APPLICATION_ID);
        let channel = http
            .get_channel(ChannelId::new(CHANNEL))
            .await
            .expect("GET /channels/{id}");
        assert_eq!(channel.guild().unwrap().name, "general");
        let member = http
            .get_member(GuildId::new(GUILD), UserId::new(ALICE))
            .await
            .expect("GET /guilds/{g}/members/{u}");
        assert_eq!(member.user.name, "alice");
        assert_eq!(member.roles.len(), 1);
        let roles = http
            .get_guild_roles(GuildId::new(GUILD))
            .await
            .expect("GET /guilds/{g}/roles");
        assert_eq!(roles.len(), 2);
        let guild = http
            .get_guild(GuildId::new(GUILD))
            .await
            .expect("GET /guilds/{g}");
        assert_eq!(guild.id.get(), GUILD);
        let channels = http
            .get_channels(GuildId::new(GUILD))
            .await
            .expect("GET /guilds/{g}/channels");
        assert_eq!(channels.len(), 2);

        // Messages, edits, reactions, threads, typed.
        let sent = ChannelId::new(OTHER_CHANNEL)
            .send_message(
                &http,
                CreateMessage::new()
                    .content("hello")
                    .embed(CreateEmbed::new().title("t").field("a", "b", true)),
            )
            .await
            .expect("POST message");
        let edited = ChannelId::new(OTHER_CHANNEL)
            .edit_message(&http, sent.id, EditMessage::new().content("hello again"))
            .await
            .expect("PATCH message");
        assert_eq!(edited.content, "hello again");
        assert!(edited.edited_timestamp.is_some());
        sent.react(&http, '🚀').await.expect("PUT reaction");
        let thread = ChannelId::new(OTHER_CHANNEL)
            .create_thread_from_message(&http, sent.id, CreateThread::new("t"))
            .await
            .expect("POST thread");
        assert_eq!(thread.id.get(), sent.id.get());
        let fetched = ChannelId::new(OTHER_CHANNEL)
            .message(&http, sent.id)
            .await
            .expect("GET message");
        assert_eq!(fetched.thread.map(|t| t.id), Some(thread.id));
        let private = ChannelId::new(OTHER_CHANNEL)
            .create_thread(&http, CreateThread::new("private one"))
            .await
            .expect("POST thread without message");
        assert_eq!(private.parent_id, Some(ChannelId::new(OTHER_CHANNEL)));
        let reply = ChannelId::new(OTHER_CHANNEL)
            .send_message(
                &http,
                CreateMessage::new().content("re").reference_message(&sent),
            )
            .await
            .expect("a reply");
        assert!(reply.referenced_message.is_some());
        let global = http
            .create_global_command(&CreateCommand::new("ping").description("pong"))
            .await
            .expect("POST global command");
        assert_eq!(global.name, "ping");
    });
    let stored = world.messages(OTHER_CHANNEL);
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].edits, 1);
    assert_eq!(stored[0].reactions, vec!["🚀".to_string()]);
    assert_eq!(stored[0].thread_id, Some(stored[0].id));
    assert_eq!(stored[1].reply_to, Some(stored[0].id));
    assert_eq!(world.threads(OTHER_CHANNEL).len(), 2);
    assert_eq!(world.threads(OTHER_CHANNEL)[1].kind, 12);

    let post = format!("/channels/{CHANNEL}/messages");

    // Authentication.
    let r = http_request(
        "GET",
        &format!("{}/api/v10/users/@me", world.api_url()),
        &[],
        b"",
    );
    assert_eq!(r.status, 401);
    let r = http_request(
        "GET",
        &format!("{}/api/v10/users/@me", world.api_url()),
        &[("Authorization", "Bot not-the-token")],
        b"",
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "401: Unauthorized");

    // Content over 2,000 characters.
    let (status, body) = call(&world, "POST", &post, json!({"content": "x".repeat(2001)}));
    assert_eq!(status, 400);
    assert_eq!(body["code"], 50035);
    assert_eq!(
        body["errors"]["content"]["_errors"][0]["code"],
        "BASE_TYPE_MAX_LENGTH"
    );
    let (status, _) = call(&world, "POST", &post, json!({"content": "é".repeat(2000)}));
    assert_eq!(
        status, 200,
        "2,000 characters are fine, whatever their bytes"
    );

    // Embeds over 6,000 characters in total, each within its own limits.
    let big = json!({"description": "d".repeat(3500)});
    let (status, body) = call(&world, "POST", &post, json!({"embeds": [big, big]}));
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"]["embeds"]["_errors"][0]["code"],
        "MAX_EMBED_SIZE_EXCEEDED"
    );
    let (status, body) = call(
        &world,
        "POST",
        &post,
        json!({"embeds": [{"title": "t".repeat(257)}]}),
    );
    assert_eq!(status, 400);
    assert!(body["errors"]["embeds"]["0"]["title"]["_errors"].is_array());
    let (status, body) = call(&world, "POST", &post, json!({"content": ""}));
    assert_eq!((status, body["code"].clone()), (400, json!(50006)));
    let (status, body) = call(
        &world,
        "POST",
        "/channels/1/messages",
        json!({"content": "x"}),
    );
    assert_eq!((status, body["code"].clone()), (404, json!(10003)));

    // Command definitions follow Discord's rules.
    let commands = format!("/applications/{APPLICATION_ID}/guilds/{GUILD}/commands");
    let (status, body) = call(
        &world,
        "PUT",
        &commands,
        json!([{"name": "Env", "description": "x"}]),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"]["0"]["name"]["_errors"][0]["code"],
        "APPLICATION_COMMAND_INVALID_NAME"
    );
    let (status, _) = call(
        &world,
        "PUT",
        &commands,
        json!([{"name": "env", "description": "x", "options": [
            {"type": 3, "name": "a", "description": "a"},
            {"type": 3, "name": "b", "description": "b", "required": true},
        ]}]),
    );
    assert_eq!(status, 400, "required after optional");
    let (status, _) = call(
        &world,
        "PUT",
        &commands,
        json!([{"name": "env", "description": ""}]),
    );
    assert_eq!(status, 400, "empty description");
    let (status, body) = call(
        &world,
        "PUT",
        &commands,
        json!([{"name": "env", "description": "Envs"}]),
    );
    assert_eq!(status, 200);
    let first_id = body[0]["id"].clone();
    let (_, body) = call(
        &world,
        "PUT",
        &commands,
        json!([{"name": "env", "description": "Envs again"}]),
    );
    assert_eq!(body[0]["id"], first_id, "same name keeps its id");
    let (status, _) = call(
        &world,
        "PUT",
        &format!("/applications/{BOT_USER_ID}/guilds/{GUILD}/commands"),
        json!([]),
    );
    assert_eq!(status, 403, "the application id is not the bot's user id");

    // Interaction endpoints for unknown interactions and webhooks.
    let (status, body) = call(
        &world,
        "POST",
        "/interactions/1/nope/callback",
        json!({"type": 5}),
    );
    assert_eq!((status, body["code"].clone()), (404, json!(10062)));
    let (status, body) = call(
        &world,
        "PATCH",
        &format!("/webhooks/{APPLICATION_ID}/nope/messages/@original"),
        json!({"content": "x"}),
    );
    assert_eq!((status, body["code"].clone()), (404, json!(10015)));

    // Injected failures.
    world.fail_next(1, 429);
    let (status, body) = call(&world, "GET", "/users/@me", Value::Null);
    assert_eq!(status, 429);
    assert!(body["retry_after"].is_number());
    let (status, _) = call(&world, "GET", "/users/@me", Value::Null);
    assert_eq!(status, 200);

    // Unknown routes are 404s, listed for the test to see.
    assert_eq!(world.unexpected(), Vec::<String>::new());
    let (status, _) = call(&world, "GET", "/nothing/here", Value::Null);
    assert_eq!(status, 404);
    assert_eq!(world.unexpected(), vec!["GET /nothing/here".to_string()]);
}

#[test]
fn interaction_callbacks_follow_discord_rules() {
    // Driven by hand: an interaction without a client (no gateway session is needed to inject).
    let world = world();
    let (status, _) = call(
        &world,
        "PUT",
        &format!("/applications/{APPLICATION_ID}/guilds/{GUILD}/commands"),
        json!([{"name": "env", "description": "Envs", "options": [
            {"type": 1, "name": "up", "description": "Up", "options": [
                {"type": 3, "name": "branch", "description": "b", "required": true},
                {"type": 5, "name": "wait", "description": "w"},
            ]},
        ]}]),
    );
    assert_eq!(status, 200);
    let id = world.send_interaction(env_up("main").opt("wait", "true"));
    let token = world.interaction_token(&id);
    let callback = format!("/interactions/{id}/{token}/callback");
    let webhook = format!("/webhooks/{APPLICATION_ID}/{token}");

    // A follow-up before any answer is refused; so is an edit of the original.
    let (status, _) = call(&world, "POST", &webhook, json!({"content": "early"}));
    assert_eq!(status, 404);
    // A too-long immediate answer is refused with the path under "data".
    let (status, body) = call(
        &world,
        "POST",
        &callback,
        json!({"type": 4, "data": {"content": "x".repeat(2001)}}),
    );
    assert_eq!(status, 400);
    assert!(body["errors"]["data"]["content"]["_errors"].is_array());
    let (status, body) = call(
        &world,
        "POST",
        &callback,
        json!({"type": 4, "data": {"content": "hi", "flags": 64}}),
    );
    assert_eq!((status, body), (204, Value::Null));
    let (status, body) = call(&world, "POST", &callback, json!({"type": 5}));
    assert_eq!((status, body["code"].clone()), (400, json!(40060)));
    let (status, body) = call(
        &world,
        "PATCH",
        &format!("{webhook}/messages/@original"),
        json!({"content": "edited"}),
    );
    assert_eq!(status, 200);
    assert_eq!(body["content"], "edited");
    let (status, body) = call(&world, "POST", &webhook, json!({"content": "more"}));
    assert_eq!(status, 200);
    let followup = body["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &world,
        "PATCH",
        &format!("{webhook}/messages/{followup}"),
        json!({"content": "more, edited"}),
    );
    assert_eq!(status, 200);
    let original = world.original_response(&id).unwrap();
    assert_eq!((original.content.as_str(), original.flags), ("edited", 64));
    let messages = world.interaction_messages(&id);
    assert_eq!(messages[1].content, "more, edited");
    assert_eq!(messages[1].edits, 1);
    assert_eq!(world.followups(&token).len(), 3);
    assert!(world.callback_latency(&id).unwrap() < INTERACTION_DEADLINE);

    // Without a gateway session nothing was sent (and nothing will be replayed).
    assert!(world.gateway_frames().is_empty());
    assert_eq!(world.unexpected(), Vec::<String>::new());
}
