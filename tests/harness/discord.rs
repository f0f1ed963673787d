//! A Discord "world model" for end-to-end tests: a loopback stand-in for Discord that the real
//! serenity client (inside `slipway serve`, or inside a test) connects to. It serves
//!
//! * the REST API under `/api/v10` on one port ([`DiscordWorld::api_url`], what serenity's
//!   `HttpBuilder::proxy` takes: serenity swaps `https://discord.com` for it), and
//! * a gateway WebSocket on another ([`DiscordWorld::gateway_url`], which the client learns from
//!   `GET /gateway`), speaking Discord's gateway protocol v10 as JSON text frames: Hello,
//!   Identify → READY + GUILD_CREATE per guild, heartbeats and acks, Resume → replay + RESUMED,
//!   Reconnect (op 7) and Invalid Session (op 9) on demand, close codes as Discord sends them.
//!
//! Tests put guilds, channels and members in, inject slash commands
//! ([`DiscordWorld::send_interaction`]) and messages ([`DiscordWorld::send_message`]), and
//! inspect what the bot did: interaction callbacks and their latency, follow-ups and edits,
//! channel messages, threads, registered commands, and every request. Discord's limits are
//! enforced with Discord's error bodies (2,000-character content, 6,000-character embeds, the
//! 3-second interaction deadline, command-name rules, ...). Requests that match no route get a
//! 404 and are listed by [`DiscordWorld::unexpected`], which tests assert is empty.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;

// ---------------------------------------------------------------------------------------------
// Constants

/// The bot's user id (what READY reports and mentions use: `<@BOT_USER_ID>`).
pub const BOT_USER_ID: u64 = 1_100_000_000_000_000_001;
/// The application id. Deliberately different from the bot's user id (as for older apps), so
/// code mixing them up fails here.
pub const APPLICATION_ID: u64 = 1_100_000_000_000_000_002;
pub const BOT_NAME: &str = "Slipway";
/// The only token the world accepts (REST `Authorization: Bot <token>`, gateway Identify).
/// Three dot-separated parts, so serenity's token validation accepts it.
pub const BOT_TOKEN: &str =
    "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GsLpWy.c2xpcHdheS1kaXNjb3JkLXdvcmxkLXRva2Vu";
/// Interactions not answered (callback) within this time are gone, as on Discord.
pub const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);
/// Discord's usual heartbeat interval; tests may set a shorter one.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 41_250;

/// Gateway intents (bits of Identify's `intents`).
pub const INTENT_GUILDS: u64 = 1 << 0;
pub const INTENT_GUILD_MEMBERS: u64 = 1 << 1;
pub const INTENT_GUILD_MESSAGES: u64 = 1 << 9;
pub const INTENT_MESSAGE_CONTENT: u64 = 1 << 15;

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const API_PREFIX: &str = "/api/v10";
const ATTACHMENT_SIZE_LIMIT: u64 = 10 * 1024 * 1024;
/// GATEWAY_MESSAGE_CONTENT_LIMITED | APPLICATION_COMMAND_BADGE.
const APPLICATION_FLAGS: u64 = (1 << 19) | (1 << 23);

/// ADD_REACTIONS, VIEW_CHANNEL, SEND_MESSAGES, EMBED_LINKS, ATTACH_FILES, READ_MESSAGE_HISTORY,
/// USE_EXTERNAL_EMOJIS, CONNECT, SPEAK, USE_APPLICATION_COMMANDS, CREATE_PUBLIC_THREADS,
/// SEND_MESSAGES_IN_THREADS.
const MEMBER_PERMISSIONS: u64 = (1 << 6)
    | (1 << 10)
    | (1 << 11)
    | (1 << 14)
    | (1 << 15)
    | (1 << 16)
    | (1 << 18)
    | (1 << 20)
    | (1 << 21)
    | (1 << 31)
    | (1 << 35)
    | (1 << 38);
/// The bot's: the member set plus MANAGE_MESSAGES, MANAGE_THREADS and CREATE_PRIVATE_THREADS.
const BOT_PERMISSIONS: u64 = MEMBER_PERMISSIONS | (1 << 13) | (1 << 34) | (1 << 36);

// ---------------------------------------------------------------------------------------------
// Public data types

/// A slash command to inject with [`DiscordWorld::send_interaction`].
#[derive(Debug, Clone)]
pub struct SlashCommand<'a> {
    pub guild_id: u64,
    pub channel_id: u64,
    pub user_id: u64,
    /// The command's name, e.g. "env".
    pub name: &'a str,
    /// The subcommand, e.g. "up"; "group sub" for a subcommand in a group.
    pub subcommand: Option<&'a str>,
    /// (option name, value). Values are converted to the option's registered type (integer,
    /// boolean, number; user/channel/role ids as snowflakes).
    pub options: Vec<(&'a str, &'a str)>,
}

impl<'a> SlashCommand<'a> {
    pub fn new(guild_id: u64, channel_id: u64, user_id: u64, name: &'a str) -> Self {
        Self {
            guild_id,
            channel_id,
            user_id,
            name,
            subcommand: None,
            options: Vec::new(),
        }
    }

    pub fn sub(mut self, subcommand: &'a str) -> Self {
        self.subcommand = Some(subcommand);
        self
    }

    pub fn opt(mut self, name: &'a str, value: &'a str) -> Self {
        self.options.push((name, value));
        self
    }
}

/// A message as the world holds it, after every edit.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: u64,
    pub channel_id: u64,
    pub author_id: u64,
    pub content: String,
    pub embeds: Vec<Value>,
    pub components: Vec<Value>,
    /// File names of uploaded attachments (multipart requests).
    pub attachments: Vec<String>,
    /// Message flags (64 ephemeral, 128 loading for a deferred answer not yet edited).
    pub flags: u64,
    /// How many times it was edited through the API.
    pub edits: u32,
    /// The thread started from this message, if any (it has the message's id, as on Discord).
    pub thread_id: Option<u64>,
    /// The message this one replies to (`message_reference`).
    pub reply_to: Option<u64>,
    /// Emoji the bot reacted with.
    pub reactions: Vec<String>,
    pub deleted: bool,
}

/// A thread created by the bot.
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub id: u64,
    pub parent_id: u64,
    pub name: String,
    /// The message the thread was started from (then `id == message_id`).
    pub message_id: Option<u64>,
    /// 11 public thread, 12 private thread.
    pub kind: u8,
    pub auto_archive_duration: u64,
}

/// One REST request the world received, whatever it was answered.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path below `/api/v10` (the full path when it had another prefix).
    pub path: String,
    /// The raw query string, "" when there was none.
    pub query: String,
    pub authorization: Option<String>,
    /// The JSON body (`payload_json` of a multipart request).
    pub body: String,
    /// The status the world answered.
    pub status: u16,
    pub at: Instant,
}

// ---------------------------------------------------------------------------------------------
// State

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Source {
    /// Sent by the bot through `POST /channels/{id}/messages`.
    Rest,
    /// An interaction's original answer or a follow-up.
    Interaction(u64),
    /// Injected as a user's message.
    User,
}

struct StoredMessage {
    msg: Message,
    guild_id: Option<u64>,
    source: Source,
    kind: u8,
    created_ms: u64,
    edited_ms: Option<u64>,
}

struct ChannelData {
    id: u64,
    guild_id: u64,
    name: String,
    /// 0 text, 11 public thread, 12 private thread.
    kind: u8,
    parent_id: Option<u64>,
    position: u16,
    owner_id: Option<u64>,
    starter_message: Option<u64>,
    auto_archive_duration: u64,
    created_ms: u64,
}

struct MemberData {
    name: String,
    roles: Vec<u64>,
    joined_ms: u64,
}

struct GuildData {
    name: String,
    members: BTreeMap<u64, MemberData>,
    /// role id → name; the @everyone role has the guild's id.
    roles: BTreeMap<u64, String>,
    joined_ms: u64,
}

struct StoredInteraction {
    token: String,
    guild_id: u64,
    channel_id: u64,
    user_id: u64,
    created: Instant,
    first_callback: Option<Instant>,
    acknowledged: bool,
    responses: Vec<Value>,
    followup_bodies: Vec<Value>,
    original: Option<u64>,
}

enum Out {
    Text(String),
    Close(u16, String),
    Abort,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    /// The session this connection identified or resumed, once READY/RESUMED was sent.
    session: Option<String>,
}

struct Session {
    seq: u64,
    /// Every dispatch sent in this session (seq, frame), for replay on resume.
    log: Vec<(u64, String)>,
    conn: Option<u64>,
    intents: u64,
}

struct State {
    api_url: String,
    gateway_url: String,
    token: String,
    heartbeat_interval_ms: u64,
    ack_heartbeats: bool,
    last_id: u64,
    counter: u64,
    guilds: BTreeMap<u64, GuildData>,
    channels: BTreeMap<u64, ChannelData>,
    users: BTreeMap<u64, String>,
    messages: Vec<StoredMessage>,
    interactions: BTreeMap<u64, StoredInteraction>,
    guild_commands: BTreeMap<u64, Vec<Value>>,
    global_commands: Vec<Value>,
    conns: BTreeMap<u64, Conn>,
    sessions: BTreeMap<String, Session>,
    identifies: u32,
    resumes: u32,
    heartbeats: u32,
    identify_payloads: Vec<Value>,
    frames_sent: Vec<Value>,
    frames_received: Vec<Value>,
    fail: Option<(usize, u16)>,
    requests: Vec<RecordedRequest>,
    unexpected: Vec<String>,
}

impl State {
    /// A fresh, increasing snowflake built from the current time, as Discord's are.
    fn snowflake(&mut self) -> u64 {
        let candidate = now_ms().saturating_sub(DISCORD_EPOCH_MS) << 22;
        self.last_id = self.last_id.max(candidate - 1) + 1;
        self.last_id
    }

    fn user_name(&self, id: u64) -> String {
        if id == BOT_USER_ID {
            return BOT_NAME.to_string();
        }
        self.users
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("user{id}"))
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The world

/// The Discord world model. Cheap to clone; all clones share one state and one server.
#[derive(Clone)]
pub struct DiscordWorld {
    state: Shared,
    api_url: String,
    gateway_url: String,
}

impl DiscordWorld {
    /// Starts the REST server and the gateway on 127.0.0.1 (two free ports) on their own thread
    /// and runtime.
    pub fn start() -> DiscordWorld {
        let api = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let gateway = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        api.set_nonblocking(true).unwrap();
        gateway.set_nonblocking(true).unwrap();
        let api_url = format!("http://{}", api.local_addr().unwrap());
        let gateway_url = format!("ws://{}", gateway.local_addr().unwrap());
        let mut users = BTreeMap::new();
        users.insert(BOT_USER_ID, BOT_NAME.to_string());
        let state = Arc::new(Mutex::new(State {
            api_url: api_url.clone(),
            gateway_url: gateway_url.clone(),
            token: BOT_TOKEN.to_string(),
            heartbeat_interval_ms: DEFAULT_HEARTBEAT_INTERVAL_MS,
            ack_heartbeats: true,
            last_id: 0,
            counter: 0,
            guilds: BTreeMap::new(),
            channels: BTreeMap::new(),
            users,
            messages: Vec::new(),
            interactions: BTreeMap::new(),
            guild_commands: BTreeMap::new(),
            global_commands: Vec::new(),
            conns: BTreeMap::new(),
            sessions: BTreeMap::new(),
            identifies: 0,
            resumes: 0,
            heartbeats: 0,
            identify_payloads: Vec::new(),
            frames_sent: Vec::new(),
            frames_received: Vec::new(),
            fail: None,
            requests: Vec::new(),
            unexpected: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("discord-world".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                runtime.block_on(async move {
                    let gateway = tokio::net::TcpListener::from_std(gateway).unwrap();
                    let gateway_state = shared.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Ok((stream, _)) = gateway.accept().await {
                                let _ = stream.set_nodelay(true);
                                tokio::spawn(gateway_connection(gateway_state.clone(), stream));
                            }
                        }
                    });
                    let api = tokio::net::TcpListener::from_std(api).unwrap();
                    let app = axum::Router::new().fallback(handle).with_state(shared);
                    axum::serve(api, app).await.expect("discord world serves");
                });
            })
            .expect("spawn discord world thread");
        DiscordWorld {
            state,
            api_url,
            gateway_url,
        }
    }

    /// The REST base for serenity's `HttpBuilder::proxy`, e.g. `http://127.0.0.1:41234` (no
    /// trailing slash); serenity then requests `/api/v10/...` on it.
    pub fn api_url(&self) -> String {
        self.api_url.clone()
    }

    /// The gateway URL, e.g. `ws://127.0.0.1:41235`, as `GET /gateway` and `GET /gateway/bot`
    /// report it (serenity appends `?v=10`).
    pub fn gateway_url(&self) -> String {
        self.gateway_url.clone()
    }

    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    // --- setup ---------------------------------------------------------------------------

    /// Adds a guild the bot is in (with its @everyone role and the bot as a member). Sent in
    /// GUILD_CREATE after READY; when sessions are live already, dispatched to them at once
    /// (as when the bot joins a guild).
    pub fn add_guild(&self, guild_id: u64) {
        let mut state = self.lock();
        if state.guilds.contains_key(&guild_id) {
            return;
        }
        let now = now_ms();
        let mut members = BTreeMap::new();
        members.insert(
            BOT_USER_ID,
            MemberData {
                name: BOT_NAME.into(),
                roles: Vec::new(),
                joined_ms: now,
            },
        );
        let mut roles = BTreeMap::new();
        roles.insert(guild_id, "@everyone".to_string());
        state.guilds.insert(
            guild_id,
            GuildData {
                name: format!("Guild {guild_id}"),
                members,
                roles,
                joined_ms: now,
            },
        );
        dispatch_with(&mut state, "GUILD_CREATE", |s, session| {
            Some(guild_json(s, guild_id, session.intents))
        });
    }

    /// Adds a text channel to a guild (dispatches CHANNEL_CREATE to live sessions).
    pub fn add_channel(&self, guild_id: u64, channel_id: u64, name: &str) {
        let mut state = self.lock();
        assert!(
            state.guilds.contains_key(&guild_id),
            "guild {guild_id} not in the world: call add_guild first"
        );
        let position = state
            .channels
            .values()
            .filter(|c| c.guild_id == guild_id && c.kind == 0)
            .count() as u16;
        state.channels.insert(
            channel_id,
            ChannelData {
                id: channel_id,
                guild_id,
                name: name.to_string(),
                kind: 0,
                parent_id: None,
                position,
                owner_id: None,
                starter_message: None,
                auto_archive_duration: 1440,
                created_ms: now_ms(),
            },
        );
        dispatch_with(&mut state, "CHANNEL_CREATE", |s, _| {
            Some(channel_json(s, &s.channels[&channel_id], true))
        });
    }

    /// Adds a role to a guild; [`Self::add_member`] adds unknown roles on its own.
    pub fn add_role(&self, guild_id: u64, role_id: u64, name: &str) {
        let mut state = self.lock();
        guild_mut(&mut state, guild_id)
            .roles
            .insert(role_id, name.to_string());
    }

    /// Adds (or replaces) a guild member with the given roles.
    pub fn add_member(&self, guild_id: u64, user_id: u64, name: &str, roles: &[u64]) {
        let mut state = self.lock();
        state.users.insert(user_id, name.to_string());
        let guild = guild_mut(&mut state, guild_id);
        for role in roles {
            guild
                .roles
                .entry(*role)
                .or_insert_with(|| format!("role-{role}"));
        }
        guild.members.insert(
            user_id,
            MemberData {
                name: name.to_string(),
                roles: roles.to_vec(),
                joined_ms: now_ms(),
            },
        );
    }

    /// The Hello's heartbeat interval for connections opened from now on.
    pub fn set_heartbeat_interval(&self, ms: u64) {
        self.lock().heartbeat_interval_ms = ms;
    }

    /// When false, heartbeats get no ack (op 11): the client should see a zombie connection
    /// and reconnect.
    pub fn set_ack_heartbeats(&self, ack: bool) {
        self.lock().ack_heartbeats = ack;
    }

    /// The next `n` REST requests (whatever they are) get `status` with a Discord-style error
    /// body; a 429 carries `retry_after` and `retry-after` of 0.05 s.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.lock().fail = if n == 0 { None } else { Some((n, status)) };
    }

    // --- injection -----------------------------------------------------------------------

    /// Dispatches INTERACTION_CREATE for a slash command on every live gateway session and
    /// returns the interaction id. The command must be registered (guild or global) by the bot
    /// with that subcommand and options, as Discord only delivers registered commands: anything
    /// else panics. Options get their registered types.
    pub fn send_interaction(&self, command: SlashCommand) -> String {
        self.inject_interaction(command, true)
    }

    /// Like [`Self::send_interaction`] without checking the command against the registered
    /// ones (every option is a string then).
    pub fn send_interaction_unchecked(&self, command: SlashCommand) -> String {
        self.inject_interaction(command, false)
    }

    fn inject_interaction(&self, command: SlashCommand, strict: bool) -> String {
        let mut state = self.lock();
        let SlashCommand {
            guild_id,
            channel_id,
            user_id,
            name,
            subcommand,
            options,
        } = command;
        check_place(&state, guild_id, channel_id, user_id);
        let registered = state
            .guild_commands
            .get(&guild_id)
            .and_then(|list| list.iter().find(|c| c["name"] == name).cloned())
            .or_else(|| {
                state
                    .global_commands
                    .iter()
                    .find(|c| c["name"] == name)
                    .cloned()
            });
        let (command_id, command_guild, built) = match &registered {
            Some(def) => (
                def["id"].as_str().unwrap_or("0").to_string(),
                def.get("guild_id").cloned(),
                build_options(&state, Some(def), subcommand, &options, guild_id)
                    .unwrap_or_else(|e| panic!("/{name}: {e}")),
            ),
            None if strict => panic!(
                "/{name} is not registered in guild {guild_id} (registered: {:?}, global: {:?})",
                state
                    .guild_commands
                    .get(&guild_id)
                    .map(|l| l.iter().map(|c| c["name"].clone()).collect::<Vec<_>>())
                    .unwrap_or_default(),
                state
                    .global_commands
                    .iter()
                    .map(|c| c["name"].clone())
                    .collect::<Vec<_>>()
            ),
            None => (
                "1".to_string(),
                None,
                build_options(&state, None, subcommand, &options, guild_id)
                    .unwrap_or_else(|e| panic!("/{name}: {e}")),
            ),
        };
        let id = state.snowflake();
        state.counter += 1;
        let token = format!(
            "aW50ZXJhY3Rpb246{id}OnNsaXB3YXktd29ybGQ{:x}x{}",
            state.counter,
            now_ms()
        );
        state.interactions.insert(
            id,
            StoredInteraction {
                token: token.clone(),
                guild_id,
                channel_id,
                user_id,
                created: Instant::now(),
                first_callback: None,
                acknowledged: false,
                responses: Vec::new(),
                followup_bodies: Vec::new(),
                original: None,
            },
        );
        let mut data = json!({"id": command_id, "name": name, "type": 1});
        if let Some(g) = command_guild {
            data["guild_id"] = g;
        }
        if !built.0.is_empty() {
            data["options"] = Value::Array(built.0);
        }
        if !built.1.is_empty() {
            data["resolved"] = Value::Object(built.1);
        }
        let channel = &state.channels[&channel_id];
        let payload = json!({
            "id": id.to_string(),
            "application_id": APPLICATION_ID.to_string(),
            "type": 2,
            "data": data,
            "guild_id": guild_id.to_string(),
            "guild": {"id": guild_id.to_string(), "locale": "en-US", "features": []},
            "channel_id": channel_id.to_string(),
            "channel": {
                "id": channel_id.to_string(),
                "type": channel.kind,
                "name": channel.name,
                "guild_id": guild_id.to_string(),
                "parent_id": channel.parent_id.map(|p| p.to_string()),
                "position": channel.position,
                "permissions": MEMBER_PERMISSIONS.to_string(),
                "flags": 0,
                "nsfw": false,
                "rate_limit_per_user": 0,
                "topic": null,
                "last_message_id": null,
            },
            "member": member_json(&state, guild_id, user_id, true, true),
            "token": token,
            "version": 1,
            "app_permissions": BOT_PERMISSIONS.to_string(),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id.to_string()},
            "context": 0,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        });
        dispatch_with(&mut state, "INTERACTION_CREATE", |_, _| {
            Some(payload.clone())
        });
        id.to_string()
    }

    /// Dispatches MESSAGE_CREATE for a user's message on every live session (with the bot in
    /// `mentions` when the content has `<@BOT_USER_ID>`; content blanked for sessions without
    /// the MESSAGE_CONTENT intent unless the bot is mentioned, as Discord does) and returns the
    /// message id.
    pub fn send_message(&self, guild_id: u64, channel_id: u64, user_id: u64, content: &str) -> u64 {
        let mut state = self.lock();
        check_place(&state, guild_id, channel_id, user_id);
        let id = state.snowflake();
        state.messages.push(StoredMessage {
            msg: Message {
                id,
                channel_id,
                author_id: user_id,
                content: content.to_string(),
                embeds: Vec::new(),
                components: Vec::new(),
                attachments: Vec::new(),
                flags: 0,
                edits: 0,
                thread_id: None,
                reply_to: None,
                reactions: Vec::new(),
                deleted: false,
            },
            guild_id: Some(guild_id),
            source: Source::User,
            kind: 0,
            created_ms: now_ms(),
            edited_ms: None,
        });
        dispatch_message_create(&mut state, id);
        id
    }

    /// Closes every gateway connection with close code 4000 (resumable): the client should
    /// reconnect and RESUME. Events injected meanwhile are replayed on resume.
    pub fn drop_connections(&self) {
        self.close_all(Some((4000, "slipway test: connection dropped")));
    }

    /// Drops every gateway connection without a close frame (as a network failure would).
    pub fn drop_connections_abruptly(&self) {
        self.close_all(None);
    }

    /// Closes every connection with the given close code (e.g. 4009 session timed out).
    pub fn close_connections(&self, code: u16, reason: &str) {
        self.close_all(Some((code, reason)));
    }

    fn close_all(&self, close: Option<(u16, &str)>) {
        let mut state = self.lock();
        let conns: Vec<u64> = state.conns.keys().copied().collect();
        for id in conns {
            detach(&mut state, id);
            let conn = &state.conns[&id];
            let _ = conn.tx.send(match close {
                Some((code, reason)) => Out::Close(code, reason.to_string()),
                None => Out::Abort,
            });
        }
    }

    /// Sends op 7 Reconnect on every connection (the client should reconnect and resume).
    pub fn send_reconnect(&self) {
        let mut state = self.lock();
        let conns: Vec<u64> = state.conns.keys().copied().collect();
        for id in conns {
            send_frame(&mut state, id, json!({"op": 7, "d": null}));
            detach(&mut state, id);
        }
    }

    /// Sends op 9 Invalid Session on every connection; when not resumable, the sessions are
    /// forgotten and the client must IDENTIFY again.
    pub fn invalidate_sessions(&self, resumable: bool) {
        let mut state = self.lock();
        let conns: Vec<u64> = state.conns.keys().copied().collect();
        for id in conns {
            send_frame(&mut state, id, json!({"op": 9, "d": resumable}));
            detach(&mut state, id);
        }
        if !resumable {
            state.sessions.clear();
        }
    }

    // --- inspection ----------------------------------------------------------------------

    /// Accepted `POST /interactions/{id}/{token}/callback` bodies, in order.
    pub fn interaction_responses(&self, interaction_id: &str) -> Vec<Value> {
        let state = self.lock();
        interaction(&state, interaction_id)
            .map(|i| i.responses.clone())
            .unwrap_or_default()
    }

    /// Time from the dispatch to the first callback attempt (even a late, refused one).
    pub fn callback_latency(&self, interaction_id: &str) -> Option<Duration> {
        let state = self.lock();
        interaction(&state, interaction_id)
            .and_then(|i| i.first_callback.map(|at| at.duration_since(i.created)))
    }

    /// The interaction's token (what follow-ups use).
    pub fn interaction_token(&self, interaction_id: &str) -> String {
        let state = self.lock();
        interaction(&state, interaction_id)
            .map(|i| i.token.clone())
            .unwrap_or_else(|| panic!("no interaction {interaction_id}"))
    }

    /// Accepted bodies of `POST /webhooks/{app}/{token}` (follow-ups) and
    /// `PATCH /webhooks/{app}/{token}/messages/{@original|id}` (edits), in order.
    pub fn followups(&self, token: &str) -> Vec<Value> {
        let state = self.lock();
        state
            .interactions
            .values()
            .find(|i| i.token == token)
            .map(|i| i.followup_bodies.clone())
            .unwrap_or_default()
    }

    /// The interaction's messages as they are now: the original answer first (when the
    /// callback made one), then follow-ups.
    pub fn interaction_messages(&self, interaction_id: &str) -> Vec<Message> {
        let state = self.lock();
        let Ok(id) = interaction_id.parse::<u64>() else {
            return Vec::new();
        };
        let original = state.interactions.get(&id).and_then(|i| i.original);
        let mut list: Vec<Message> = state
            .messages
            .iter()
            .filter(|m| m.source == Source::Interaction(id))
            .map(|m| m.msg.clone())
            .collect();
        list.sort_by_key(|m| (Some(m.id) != original, m.id));
        list
    }

    /// The interaction's original answer as it is now.
    pub fn original_response(&self, interaction_id: &str) -> Option<Message> {
        let state = self.lock();
        let id: u64 = interaction_id.parse().ok()?;
        let original = state.interactions.get(&id)?.original?;
        message_by_id(&state, original).map(|m| m.msg.clone())
    }

    /// Messages the bot sent in a channel (or thread) through `POST /channels/{id}/messages`,
    /// oldest first, as they are now.
    pub fn messages(&self, channel_id: u64) -> Vec<Message> {
        let state = self.lock();
        state
            .messages
            .iter()
            .filter(|m| m.msg.channel_id == channel_id && m.source == Source::Rest)
            .map(|m| m.msg.clone())
            .collect()
    }

    /// Every message in a channel: users', the bot's, interaction answers; oldest first.
    pub fn all_messages(&self, channel_id: u64) -> Vec<Message> {
        let state = self.lock();
        state
            .messages
            .iter()
            .filter(|m| m.msg.channel_id == channel_id)
            .map(|m| m.msg.clone())
            .collect()
    }

    /// One message by id, whoever sent it.
    pub fn message(&self, message_id: u64) -> Option<Message> {
        message_by_id(&self.lock(), message_id).map(|m| m.msg.clone())
    }

    /// Threads created under a channel, oldest first.
    pub fn threads(&self, channel_id: u64) -> Vec<Thread> {
        let state = self.lock();
        state
            .channels
            .values()
            .filter(|c| c.parent_id == Some(channel_id) && (c.kind == 11 || c.kind == 12))
            .map(|c| Thread {
                id: c.id,
                parent_id: channel_id,
                name: c.name.clone(),
                message_id: c.starter_message,
                kind: c.kind,
                auto_archive_duration: c.auto_archive_duration,
            })
            .collect()
    }

    /// The guild's commands as registered (full command objects as Discord returns them).
    pub fn registered_commands(&self, guild_id: u64) -> Vec<Value> {
        self.lock()
            .guild_commands
            .get(&guild_id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn global_commands(&self) -> Vec<Value> {
        self.lock().global_commands.clone()
    }

    /// Every REST request received, as "METHOD /path" below `/api/v10` (no query string).
    pub fn requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Requests that matched no route ("METHOD /path?query") and gateway protocol violations;
    /// tests assert this is empty.
    pub fn unexpected(&self) -> Vec<String> {
        self.lock().unexpected.clone()
    }

    /// Accepted IDENTIFYs plus RESUMEs.
    pub fn sessions(&self) -> u32 {
        let state = self.lock();
        state.identifies + state.resumes
    }

    pub fn identifies(&self) -> u32 {
        self.lock().identifies
    }

    pub fn resumes(&self) -> u32 {
        self.lock().resumes
    }

    /// Heartbeats (op 1) received.
    pub fn heartbeats(&self) -> u32 {
        self.lock().heartbeats
    }

    /// Gateway connections open now.
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Connections that are past READY/RESUMED now.
    pub fn live_sessions(&self) -> usize {
        self.lock()
            .conns
            .values()
            .filter(|c| c.session.is_some())
            .count()
    }

    /// The `d` of every accepted IDENTIFY (token, intents, shard, properties, ...).
    pub fn identify_payloads(&self) -> Vec<Value> {
        self.lock().identify_payloads.clone()
    }

    /// Every gateway frame the world sent, in order.
    pub fn gateway_frames(&self) -> Vec<Value> {
        self.lock().frames_sent.clone()
    }

    /// Every gateway frame the world received, in order.
    pub fn received_frames(&self) -> Vec<Value> {
        self.lock().frames_received.clone()
    }

    // --- waiting -------------------------------------------------------------------------

    /// Polls `check` until it returns Some, or panics after `timeout` with the request log.
    pub fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&DiscordWorld) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not within {timeout:?}\nrequests:\n  {}\nunexpected: {:?}\nsessions: {} (identify {}, resume {}), connections {}",
                    self.requests().join("\n  "),
                    self.unexpected(),
                    self.sessions(),
                    self.identifies(),
                    self.resumes(),
                    self.connections(),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a client is connected past READY (or RESUMED).
    pub fn wait_connected(&self, timeout: Duration) {
        self.wait_until("a gateway session", timeout, |w| {
            (w.live_sessions() > 0).then_some(())
        });
    }

    /// Waits until `n` sessions (IDENTIFY + RESUME) were accepted and one is live.
    pub fn wait_sessions(&self, n: u32, timeout: Duration) {
        self.wait_until(&format!("{n} gateway sessions"), timeout, |w| {
            (w.sessions() >= n && w.live_sessions() > 0).then_some(())
        });
    }
}

fn guild_mut(state: &mut State, guild_id: u64) -> &mut GuildData {
    state
        .guilds
        .get_mut(&guild_id)
        .unwrap_or_else(|| panic!("guild {guild_id} not in the world: call add_guild first"))
}

fn check_place(state: &State, guild_id: u64, channel_id: u64, user_id: u64) {
    let guild = state
        .guilds
        .get(&guild_id)
        .unwrap_or_else(|| panic!("guild {guild_id} not in the world: call add_guild first"));
    let channel = state
        .channels
        .get(&channel_id)
        .unwrap_or_else(|| panic!("channel {channel_id} not in the world: call add_channel"));
    assert_eq!(
        channel.guild_id, guild_id,
        "channel {channel_id} is not in guild {guild_id}"
    );
    assert!(
        guild.members.contains_key(&user_id),
        "user {user_id} is not a member of guild {guild_id}: call add_member"
    );
}

fn interaction<'a>(state: &'a State, id: &str) -> Option<&'a StoredInteraction> {
    state.interactions.get(&id.parse::<u64>().ok()?)
}

fn message_by_id(state: &State, id: u64) -> Option<&StoredMessage> {
    state.messages.iter().find(|m| m.msg.id == id)
}

fn message_mut(state: &mut State, id: u64) -> Option<&mut StoredMessage> {
    state.messages.iter_mut().find(|m| m.msg.id == id)
}

/// The interaction's `data.options` (and `data.resolved`) for a command call, typed after the
/// registered definition when there is one.
fn build_options(
    state: &State,
    def: Option<&Value>,
    subcommand: Option<&str>,
    options: &[(&str, &str)],
    guild_id: u64,
) -> Result<(Vec<Value>, Map<String, Value>), String> {
    let mut resolved = Map::new();
    let empty = Vec::new();
    let top: &Vec<Value> = def.and_then(|d| d["options"].as_array()).unwrap_or(&empty);
    // Walk down the subcommand path: "sub" or "group sub".
    let path: Vec<&str> = subcommand
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    let mut level = top;
    let mut chain: Vec<(u8, &str)> = Vec::new();
    for (i, part) in path.iter().enumerate() {
        let kind = if path.len() == 2 && i == 0 { 2 } else { 1 };
        if def.is_some() {
            let found = level
                .iter()
                .find(|o| o["name"] == *part && o["type"] == kind)
                .ok_or_else(|| {
                    format!(
                        "no {} `{part}` registered (have {:?})",
                        if kind == 2 {
                            "subcommand group"
                        } else {
                            "subcommand"
                        },
                        level.iter().map(|o| o["name"].clone()).collect::<Vec<_>>()
                    )
                })?;
            level = found["options"].as_array().unwrap_or(&empty);
        }
        chain.push((kind, part));
    }
    if def.is_some() && path.is_empty() && level.iter().any(|o| o["type"] == 1 || o["type"] == 2) {
        return Err("the command has subcommands: give one".into());
    }
    let mut leaves = Vec::new();
    for (name, raw) in options {
        let (kind, choices) = match def {
            Some(_) => {
                let found = level.iter().find(|o| o["name"] == *name).ok_or_else(|| {
                    format!(
                        "no option `{name}` registered (have {:?})",
                        level.iter().map(|o| o["name"].clone()).collect::<Vec<_>>()
                    )
                })?;
                (
                    found["type"].as_u64().unwrap_or(3),
                    found["choices"].as_array().cloned(),
                )
            }
            None => (3, None),
        };
        let value = match kind {
            3 => json!(raw),
            4 => json!(raw
                .parse::<i64>()
                .map_err(|_| format!("option `{name}` wants an integer, got {raw:?}"))?),
            5 => json!(raw
                .parse::<bool>()
                .map_err(|_| format!("option `{name}` wants true/false, got {raw:?}"))?),
            10 => json!(raw
                .parse::<f64>()
                .map_err(|_| format!("option `{name}` wants a number, got {raw:?}"))?),
            6..=9 => {
                let id: u64 = raw
                    .parse()
                    .map_err(|_| format!("option `{name}` wants a snowflake, got {raw:?}"))?;
                if kind == 6 || (kind == 9 && state.users.contains_key(&id)) {
                    let users = resolved
                        .entry("users")
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                        .unwrap();
                    users.insert(id.to_string(), user_json(id, &state.user_name(id), false));
                    if state
                        .guilds
                        .get(&guild_id)
                        .is_some_and(|g| g.members.contains_key(&id))
                    {
                        let members = resolved
                            .entry("members")
                            .or_insert_with(|| json!({}))
                            .as_object_mut()
                            .unwrap();
                        members.insert(
                            id.to_string(),
                            member_json(state, guild_id, id, false, true),
                        );
                    }
                }
                json!(id.to_string())
            }
            other => return Err(format!("option `{name}` has type {other}, not a value")),
        };
        if let Some(choices) = choices {
            if !choices.is_empty() && !choices.iter().any(|c| c["value"] == value) {
                return Err(format!(
                    "option `{name}`: {value} is not one of the registered choices"
                ));
            }
        }
        leaves.push(json!({"type": kind, "name": name, "value": value}));
    }
    if def.is_some() {
        for o in level {
            if o["required"] == true && !options.iter().any(|(n, _)| o["name"] == *n) {
                return Err(format!("required option `{}` missing", o["name"]));
            }
        }
    }
    let mut result = leaves;
    for (kind, name) in chain.into_iter().rev() {
        result = vec![json!({"type": kind, "name": name, "options": result})];
    }
    Ok((result, resolved))
}

// ---------------------------------------------------------------------------------------------
// JSON shapes (checked against serenity's models in tests/discord_world.rs)

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    let mut user = json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { json!(name) },
        "avatar": null,
        "avatar_decoration_data": null,
        "banner": null,
        "accent_color": null,
        "public_flags": 0,
        "primary_guild": null,
        "clan": null,
    });
    if bot {
        user["bot"] = json!(true);
    }
    user
}

fn bot_user_json() -> Value {
    let mut user = user_json(BOT_USER_ID, BOT_NAME, true);
    user["verified"] = json!(true);
    user["mfa_enabled"] = json!(false);
    user["email"] = Value::Null;
    user["flags"] = json!(0);
    user["locale"] = json!("en-US");
    user["premium_type"] = json!(0);
    user
}

fn timestamp(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}000+00:00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// A guild member; `with_user` for the full member object (GUILD_CREATE, interactions), without
/// for the partial one in MESSAGE_CREATE.
fn member_json(
    state: &State,
    guild_id: u64,
    user_id: u64,
    with_user: bool,
    with_permissions: bool,
) -> Value {
    let guild = &state.guilds[&guild_id];
    let member = &guild.members[&user_id];
    let mut m = json!({
        "roles": member.roles.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
        "joined_at": timestamp(member.joined_ms),
        "premium_since": null,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "pending": false,
        "nick": null,
        "avatar": null,
        "banner": null,
        "communication_disabled_until": null,
        "unusual_dm_activity_until": null,
    });
    if with_user {
        m["user"] = user_json(user_id, &member.name, user_id == BOT_USER_ID);
    }
    if with_permissions {
        let permissions = if user_id == BOT_USER_ID {
            BOT_PERMISSIONS
        } else {
            MEMBER_PERMISSIONS
        };
        m["permissions"] = json!(permissions.to_string());
    }
    m
}

fn role_json(guild_id: u64, id: u64, name: &str, position: usize) -> Value {
    json!({
        "id": id.to_string(),
        "name": name,
        "description": null,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
        "hoist": false,
        "icon": null,
        "unicode_emoji": null,
        "position": if id == guild_id { 0 } else { position },
        "permissions": MEMBER_PERMISSIONS.to_string(),
        "managed": false,
        "mentionable": false,
        "flags": 0,
    })
}

fn channel_json(state: &State, c: &ChannelData, with_guild_id: bool) -> Value {
    let mut v = json!({
        "id": c.id.to_string(),
        "type": c.kind,
        "name": c.name,
        "position": c.position,
        "flags": 0,
        "parent_id": c.parent_id.map(|p| p.to_string()),
        "rate_limit_per_user": 0,
        "nsfw": false,
        "last_message_id": state
            .messages
            .iter()
            .filter(|m| m.msg.channel_id == c.id)
            .map(|m| m.msg.id.to_string())
            .next_back(),
    });
    if with_guild_id {
        v["guild_id"] = json!(c.guild_id.to_string());
    }
    if c.kind == 0 {
        v["topic"] = Value::Null;
        v["permission_overwrites"] = json!([]);
        v["last_pin_timestamp"] = Value::Null;
        v["default_auto_archive_duration"] = json!(1440);
        v["icon_emoji"] = Value::Null;
        v["theme_color"] = Value::Null;
    } else {
        let count = state
            .messages
            .iter()
            .filter(|m| m.msg.channel_id == c.id)
            .count();
        v["owner_id"] = json!(c.owner_id.unwrap_or(BOT_USER_ID).to_string());
        v["member_count"] = json!(1);
        v["message_count"] = json!(count);
        v["total_message_sent"] = json!(count);
        v["thread_metadata"] = json!({
            "archived": false,
            "auto_archive_duration": c.auto_archive_duration,
            "archive_timestamp": timestamp(c.created_ms),
            "locked": false,
            "create_timestamp": timestamp(c.created_ms),
        });
        if c.kind == 12 {
            v["thread_metadata"]["invitable"] = json!(true);
        }
    }
    v
}

fn guild_json(state: &State, guild_id: u64, intents: u64) -> Value {
    let guild = &state.guilds[&guild_id];
    let channels: Vec<&ChannelData> = state
        .channels
        .values()
        .filter(|c| c.guild_id == guild_id)
        .collect();
    // As on Discord: without GUILD_MEMBERS, GUILD_CREATE lists only the bot.
    let members: Vec<Value> = guild
        .members
        .keys()
        .filter(|id| **id == BOT_USER_ID || intents & INTENT_GUILD_MEMBERS != 0)
        .map(|id| member_json(state, guild_id, *id, true, false))
        .collect();
    let owner = guild
        .members
        .keys()
        .find(|id| **id != BOT_USER_ID)
        .copied()
        .unwrap_or(guild_id);
    // Two halves: one json! this size exceeds the default macro recursion limit.
    let mut v = json!({
        "id": guild_id.to_string(),
        "name": guild.name,
        "icon": null,
        "icon_hash": null,
        "splash": null,
        "discovery_splash": null,
        "owner_id": owner.to_string(),
        "afk_channel_id": null,
        "afk_timeout": 300,
        "widget_enabled": false,
        "widget_channel_id": null,
        "verification_level": 1,
        "default_message_notifications": 1,
        "explicit_content_filter": 2,
        "roles": guild
            .roles
            .iter()
            .enumerate()
            .map(|(i, (id, name))| role_json(guild_id, *id, name, i))
            .collect::<Vec<_>>(),
        "emojis": [],
        "features": [],
        "mfa_level": 0,
        "application_id": null,
        "system_channel_id": channels.iter().find(|c| c.kind == 0).map(|c| c.id.to_string()),
        "system_channel_flags": 0,
        "rules_channel_id": null,
        "max_presences": null,
        "max_members": 500_000,
        "vanity_url_code": null,
        "description": null,
        "banner": null,
    });
    let rest = json!({
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "public_updates_channel_id": null,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "nsfw_level": 0,
        "nsfw": false,
        "stickers": [],
        "premium_progress_bar_enabled": false,
        "safety_alerts_channel_id": null,
        "incidents_data": null,
        "hub_type": null,
        "latest_onboarding_question_id": null,
        "home_header": null,
        "version": guild.joined_ms,
        "lazy": true,
        "joined_at": timestamp(guild.joined_ms),
        "large": false,
        "unavailable": false,
        "member_count": guild.members.len(),
        "voice_states": [],
        "members": members,
        "channels": channels
            .iter()
            .filter(|c| c.kind == 0)
            .map(|c| channel_json(state, c, false))
            .collect::<Vec<_>>(),
        "threads": channels
            .iter()
            .filter(|c| c.kind != 0)
            .map(|c| channel_json(state, c, true))
            .collect::<Vec<_>>(),
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "embedded_activities": [],
        "activity_instances": [],
        "application_command_counts": {},
    });
    let object = v.as_object_mut().unwrap();
    if let Value::Object(rest) = rest {
        object.extend(rest);
    }
    v
}

/// A message object; `gateway` adds what MESSAGE_CREATE carries on top of the REST shape
/// (guild_id, member, members in mentions).
fn message_json(state: &State, m: &StoredMessage, gateway: bool) -> Value {
    let msg = &m.msg;
    let author_name = state.user_name(msg.author_id);
    let mut author = user_json(msg.author_id, &author_name, msg.author_id == BOT_USER_ID);
    if matches!(m.source, Source::Interaction(_)) {
        author = user_json(BOT_USER_ID, BOT_NAME, true);
    }
    let mut mentions = Vec::new();
    let mut mentioned = Vec::new();
    for id in mentioned_ids(&msg.content) {
        let known = id == BOT_USER_ID || state.users.contains_key(&id);
        if !known || mentioned.contains(&id) {
            continue;
        }
        mentioned.push(id);
        let mut user = user_json(id, &state.user_name(id), id == BOT_USER_ID);
        if gateway {
            if let Some(g) = m.guild_id {
                if state.guilds[&g].members.contains_key(&id) {
                    user["member"] = member_json(state, g, id, false, false);
                }
            }
        }
        mentions.push(user);
    }
    let mut v = json!({
        "id": msg.id.to_string(),
        "channel_id": msg.channel_id.to_string(),
        "author": author,
        "content": msg.content,
        "timestamp": timestamp(m.created_ms),
        "edited_timestamp": m.edited_ms.map(timestamp),
        "tts": false,
        "mention_everyone": false,
        "mentions": mentions,
        "mention_roles": [],
        "attachments": msg
            .attachments
            .iter()
            .enumerate()
            .map(|(i, name)| json!({
                "id": (msg.id + i as u64 + 1).to_string(),
                "filename": name,
                "size": 1,
                "url": format!("{}/attachments/{}/{}", state.api_url, msg.id, name),
                "proxy_url": format!("{}/attachments/{}/{}", state.api_url, msg.id, name),
            }))
            .collect::<Vec<_>>(),
        "embeds": msg.embeds,
        "components": msg.components,
        "pinned": false,
        "type": m.kind,
        "flags": msg.flags,
    });
    if let Some(thread) = msg.thread_id {
        if let Some(c) = state.channels.get(&thread) {
            v["thread"] = channel_json(state, c, true);
        }
    }
    if let Some(reply) = msg.reply_to {
        v["message_reference"] = json!({
            "type": 0,
            "message_id": reply.to_string(),
            "channel_id": msg.channel_id.to_string(),
            "guild_id": m.guild_id.map(|g| g.to_string()),
        });
        v["referenced_message"] = message_by_id(state, reply)
            .map(|r| {
                let mut r = message_json(state, r, false);
                r.as_object_mut().unwrap().remove("referenced_message");
                r
            })
            .unwrap_or(Value::Null);
    }
    if let Source::Interaction(_) = m.source {
        v["webhook_id"] = json!(APPLICATION_ID.to_string());
        v["application_id"] = json!(APPLICATION_ID.to_string());
    }
    if gateway {
        if let Some(g) = m.guild_id {
            v["guild_id"] = json!(g.to_string());
            if state.guilds[&g].members.contains_key(&msg.author_id) {
                v["member"] = member_json(state, g, msg.author_id, false, false);
            }
        }
        v["nonce"] = json!(msg.id.to_string());
    }
    v
}

fn mentioned_ids(content: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("<@") {
        rest = &rest[start + 2..];
        let body = rest.strip_prefix('!').unwrap_or(rest);
        if let Some(end) = body.find('>') {
            if let Ok(id) = body[..end].parse::<u64>() {
                ids.push(id);
            }
        }
    }
    ids
}

fn application_json() -> Value {
    json!({
        "id": APPLICATION_ID.to_string(),
        "name": BOT_NAME,
        "icon": null,
        "description": "Slipway test application",
        "summary": "",
        "type": null,
        "hook": true,
        "bot_public": false,
        "bot_require_code_grant": false,
        "verify_key": "6a3f1e0c4d2b8a7e9f5c1d3b7a9e2f4c6d8b0a1e3f5c7d9b2a4e6f8c0d1b3a5e",
        "flags": APPLICATION_FLAGS,
        "owner": user_json(1_100_000_000_000_000_009, "owner", false),
        "team": null,
        "rpc_origins": [],
        "tags": [],
        "integration_types_config": {"0": {}},
        "approximate_guild_count": 1,
        "redirect_uris": [],
        "interactions_endpoint_url": null,
        "role_connections_verification_url": null,
        "bot": bot_user_json(),
    })
}

// ---------------------------------------------------------------------------------------------
// Gateway

/// Sends a frame on one connection (not a dispatch: those go through a session).
fn send_frame(state: &mut State, conn: u64, frame: Value) {
    if let Some(c) = state.conns.get(&conn) {
        let _ = c.tx.send(Out::Text(frame.to_string()));
    }
    state.frames_sent.push(frame);
}

fn close_conn(state: &mut State, conn: u64, code: u16, reason: &str) {
    if let Some(c) = state.conns.get(&conn) {
        let _ = c.tx.send(Out::Close(code, reason.to_string()));
    }
    detach(state, conn);
}

/// Separates a connection from its session, so dispatches are kept for a resume instead.
fn detach(state: &mut State, conn: u64) {
    if let Some(c) = state.conns.get_mut(&conn) {
        if let Some(sid) = c.session.take() {
            if let Some(s) = state.sessions.get_mut(&sid) {
                if s.conn == Some(conn) {
                    s.conn = None;
                }
            }
        }
    }
}

/// Sends one dispatch in one session: the next sequence number, logged for replay.
fn dispatch_to(state: &mut State, sid: &str, t: &str, d: Value) {
    let Some(session) = state.sessions.get_mut(sid) else {
        return;
    };
    session.seq += 1;
    let frame = json!({"op": 0, "t": t, "s": session.seq, "d": d});
    let text = frame.to_string();
    session.log.push((session.seq, text.clone()));
    if let Some(conn) = session.conn {
        if let Some(c) = state.conns.get(&conn) {
            let _ = c.tx.send(Out::Text(text));
        }
    }
    state.frames_sent.push(frame);
}

/// Dispatches an event to every session; `make` gives the session's `d` (None: not for it).
fn dispatch_with(
    state: &mut State,
    t: &str,
    mut make: impl FnMut(&State, &Session) -> Option<Value>,
) {
    let ids: Vec<String> = state.sessions.keys().cloned().collect();
    for sid in ids {
        let d = match make(state, &state.sessions[&sid]) {
            Some(d) => d,
            None => continue,
        };
        dispatch_to(state, &sid, t, d);
    }
}

fn dispatch_message_create(state: &mut State, message_id: u64) {
    let Some(m) = message_by_id(state, message_id) else {
        return;
    };
    let full = message_json(state, m, true);
    let author = m.msg.author_id;
    let mentions_bot = mentioned_ids(&m.msg.content).contains(&BOT_USER_ID);
    dispatch_with(state, "MESSAGE_CREATE", |_, session| {
        if session.intents & INTENT_GUILD_MESSAGES == 0 {
            return None;
        }
        let mut d = full.clone();
        if session.intents & INTENT_MESSAGE_CONTENT == 0 && author != BOT_USER_ID && !mentions_bot {
            d["content"] = json!("");
            d["embeds"] = json!([]);
            d["attachments"] = json!([]);
            d["components"] = json!([]);
        }
        Some(d)
    });
}

fn dispatch_message_update(state: &mut State, message_id: u64) {
    let Some(m) = message_by_id(state, message_id) else {
        return;
    };
    if m.source != Source::Rest {
        return;
    }
    let full = message_json(state, m, true);
    dispatch_with(state, "MESSAGE_UPDATE", |_, session| {
        (session.intents & INTENT_GUILD_MESSAGES != 0).then(|| full.clone())
    });
}

async fn gateway_connection(shared: Shared, stream: tokio::net::TcpStream) {
    let mut uri = String::new();
    #[allow(clippy::result_large_err)] // tungstenite's ErrorResponse, never built here
    let callback = |req: &WsRequest, resp: WsResponse| {
        uri = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let conn_id = {
        let mut state = lock(&shared);
        state.counter += 1;
        let id = state.counter;
        state.conns.insert(id, Conn { tx, session: None });
        let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
        let params = parse_query(query);
        if params.get("v").map(String::as_str) != Some("10") {
            state
                .unexpected
                .push(format!("gateway connection without v=10: {uri}"));
            close_conn(&mut state, id, 4012, "Invalid API version.");
        } else if params.get("encoding").is_some_and(|e| e != "json")
            || params.contains_key("compress")
        {
            state
                .unexpected
                .push(format!("gateway connection wants etf/compression: {uri}"));
            close_conn(&mut state, id, 4002, "Error while decoding payload.");
        } else {
            let interval = state.heartbeat_interval_ms;
            send_frame(
                &mut state,
                id,
                json!({"op": 10, "t": null, "s": null, "d": {"heartbeat_interval": interval, "_trace": ["[\"slipway-discord-world\"]"]}}),
            );
        }
        id
    };
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Text(text)) => {
                    if sink.send(WsMessage::Text(text)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Close(code, reason)) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
                Some(Out::Abort) | None => break,
            },
            incoming = source.next() => match incoming {
                Some(Ok(WsMessage::Text(text))) => {
                    let mut state = lock(&shared);
                    on_client_frame(&mut state, conn_id, &text);
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    let mut state = lock(&shared);
                    state.unexpected.push("gateway: binary frame from the client".into());
                    close_conn(&mut state, conn_id, 4002, "Error while decoding payload.");
                }
                Some(Ok(WsMessage::Close(_))) => {
                    // Complete the closing handshake (tungstenite queued the reply).
                    let _ = sink.flush().await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let mut state = lock(&shared);
    detach(&mut state, conn_id);
    state.conns.remove(&conn_id);
}

fn on_client_frame(state: &mut State, conn: u64, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        state
            .unexpected
            .push(format!("gateway: undecodable frame {text}"));
        close_conn(state, conn, 4002, "Error while decoding payload.");
        return;
    };
    state.frames_received.push(frame.clone());
    let identified = state.conns.get(&conn).is_some_and(|c| c.session.is_some());
    let op = frame["op"].as_u64().unwrap_or(u64::MAX);
    let d = &frame["d"];
    match op {
        1 => {
            state.heartbeats += 1;
            if state.ack_heartbeats {
                send_frame(state, conn, json!({"op": 11, "d": null}));
            }
        }
        2 => identify(state, conn, d),
        6 => resume(state, conn, d),
        _ if !identified => close_conn(state, conn, 4003, "Not authenticated."),
        3 | 4 => {}
        8 => {
            let Some(guild_id) = d["guild_id"]
                .as_str()
                .and_then(|g| g.parse::<u64>().ok())
                .filter(|g| state.guilds.contains_key(g))
            else {
                return;
            };
            let sid = state.conns[&conn].session.clone().unwrap();
            let members: Vec<Value> = state.guilds[&guild_id]
                .members
                .keys()
                .map(|id| member_json(state, guild_id, *id, true, false))
                .collect();
            let mut chunk = json!({
                "guild_id": guild_id.to_string(),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
            });
            if let Some(nonce) = d.get("nonce") {
                chunk["nonce"] = nonce.clone();
            }
            dispatch_to(state, &sid, "GUILD_MEMBERS_CHUNK", chunk);
        }
        _ => {
            state
                .unexpected
                .push(format!("gateway: unknown opcode in {text}"));
            close_conn(state, conn, 4001, "Unknown opcode.");
        }
    }
}

fn token_ok(state: &State, token: &Value) -> bool {
    token
        .as_str()
        .map(|t| t.strip_prefix("Bot ").unwrap_or(t))
        .is_some_and(|t| t == state.token)
}

fn identify(state: &mut State, conn: u64, d: &Value) {
    if state.conns.get(&conn).is_some_and(|c| c.session.is_some()) {
        close_conn(state, conn, 4005, "Already authenticated.");
        return;
    }
    if !token_ok(state, &d["token"]) {
        close_conn(state, conn, 4004, "Authentication failed.");
        return;
    }
    let Some(intents) = d["intents"].as_u64() else {
        close_conn(state, conn, 4013, "Invalid intent(s).");
        return;
    };
    let shard = d
        .get("shard")
        .cloned()
        .filter(|s| s.is_array())
        .unwrap_or(json!([0, 1]));
    state.identifies += 1;
    state.identify_payloads.push(d.clone());
    state.counter += 1;
    let sid = format!(
        "{:016x}{:016x}",
        now_ms(),
        state.counter.wrapping_mul(0x9e37_79b9)
    );
    state.sessions.insert(
        sid.clone(),
        Session {
            seq: 0,
            log: Vec::new(),
            conn: Some(conn),
            intents,
        },
    );
    state.conns.get_mut(&conn).unwrap().session = Some(sid.clone());
    let guilds: Vec<u64> = state.guilds.keys().copied().collect();
    let ready = json!({
        "v": 10,
        "user": bot_user_json(),
        "user_settings": {},
        "session_type": "normal",
        "session_id": sid,
        "resume_gateway_url": state.gateway_url,
        "guilds": guilds.iter().map(|g| json!({"id": g.to_string(), "unavailable": true})).collect::<Vec<_>>(),
        "shard": shard,
        "application": {"id": APPLICATION_ID.to_string(), "flags": APPLICATION_FLAGS},
        "private_channels": [],
        "relationships": [],
        "presences": [],
        "guild_join_requests": [],
        "geo_ordered_rtc_regions": ["us-east", "us-central"],
        "auth": {},
        "_trace": ["[\"slipway-discord-world\"]"],
    });
    dispatch_to(state, &sid, "READY", ready);
    for g in guilds {
        let guild = guild_json(state, g, intents);
        dispatch_to(state, &sid, "GUILD_CREATE", guild);
    }
}

fn resume(state: &mut State, conn: u64, d: &Value) {
    if state.conns.get(&conn).is_some_and(|c| c.session.is_some()) {
        close_conn(state, conn, 4005, "Already authenticated.");
        return;
    }
    if !token_ok(state, &d["token"]) {
        close_conn(state, conn, 4004, "Authentication failed.");
        return;
    }
    let sid = d["session_id"].as_str().unwrap_or("").to_string();
    let seq = d["seq"].as_u64().unwrap_or(0);
    let Some(session) = state.sessions.get(&sid) else {
        send_frame(state, conn, json!({"op": 9, "d": false}));
        return;
    };
    if seq > session.seq {
        close_conn(state, conn, 4007, "Invalid seq.");
        return;
    }
    if let Some(old) = session.conn {
        detach(state, old);
    }
    state.resumes += 1;
    let session = state.sessions.get_mut(&sid).unwrap();
    session.conn = Some(conn);
    let replay: Vec<String> = session
        .log
        .iter()
        .filter(|(s, _)| *s > seq)
        .map(|(_, text)| text.clone())
        .collect();
    state.conns.get_mut(&conn).unwrap().session = Some(sid.clone());
    for text in replay {
        let _ = state.conns[&conn].tx.send(Out::Text(text));
    }
    dispatch_to(
        state,
        &sid,
        "RESUMED",
        json!({"_trace": ["[\"slipway-discord-world\"]"]}),
    );
}

// ---------------------------------------------------------------------------------------------
// REST

struct Reply {
    status: u16,
    /// None for 204 No Content.
    body: Option<Value>,
    headers: Vec<(String, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        headers: Vec::new(),
    }
}

fn no_content() -> Reply {
    Reply {
        status: 204,
        body: None,
        headers: Vec::new(),
    }
}

fn error(status: u16, code: u64, message: &str) -> Reply {
    reply(status, json!({"message": message, "code": code}))
}

/// Discord's 50035 "Invalid Form Body" with the error at `path` in the request body.
fn form_error(path: &[String], code: &str, message: &str) -> Reply {
    let mut errors = json!({"_errors": [{"code": code, "message": message}]});
    for key in path.iter().rev() {
        errors = json!({ key.as_str(): errors });
    }
    reply(
        400,
        json!({"message": "Invalid Form Body", "code": 50035, "errors": errors}),
    )
}

fn at(prefix: &[String], rest: &[&str]) -> Vec<String> {
    prefix
        .iter()
        .cloned()
        .chain(rest.iter().map(|s| s.to_string()))
        .collect()
}

fn too_long(prefix: &[String], rest: &[&str], max: usize) -> Reply {
    form_error(
        &at(prefix, rest),
        "BASE_TYPE_MAX_LENGTH",
        &format!("Must be {max} or fewer in length."),
    )
}

fn chars(v: &Value) -> usize {
    v.as_str().map(|s| s.chars().count()).unwrap_or(0)
}

/// Discord's message limits: content ≤ 2000, ≤ 10 embeds, per-field embed limits, ≤ 6000
/// characters over all embeds, ≤ 5 component rows; a new message must not be empty.
fn validate_message(
    body: &Value,
    prefix: &[String],
    creating: bool,
    files: usize,
) -> Result<(), Reply> {
    if chars(&body["content"]) > 2000 {
        return Err(too_long(prefix, &["content"], 2000));
    }
    let embeds = body["embeds"].as_array().cloned().unwrap_or_default();
    if embeds.len() > 10 {
        return Err(too_long(prefix, &["embeds"], 10));
    }
    let mut total = 0;
    for (i, e) in embeds.iter().enumerate() {
        let i = i.to_string();
        let i = i.as_str();
        for (field, max) in [("title", 256), ("description", 4096)] {
            let n = chars(&e[field]);
            if n > max {
                return Err(too_long(prefix, &["embeds", i, field], max));
            }
            total += n;
        }
        for (outer, inner, max) in [("footer", "text", 2048), ("author", "name", 256)] {
            let n = chars(&e[outer][inner]);
            if n > max {
                return Err(too_long(prefix, &["embeds", i, outer, inner], max));
            }
            total += n;
        }
        let fields = e["fields"].as_array().cloned().unwrap_or_default();
        if fields.len() > 25 {
            return Err(too_long(prefix, &["embeds", i, "fields"], 25));
        }
        for (j, f) in fields.iter().enumerate() {
            let j = j.to_string();
            let j = j.as_str();
            for (field, max) in [("name", 256), ("value", 1024)] {
                let n = chars(&f[field]);
                if n == 0 {
                    return Err(form_error(
                        &at(prefix, &["embeds", i, "fields", j, field]),
                        "BASE_TYPE_REQUIRED",
                        "This field is required",
                    ));
                }
                if n > max {
                    return Err(too_long(prefix, &["embeds", i, "fields", j, field], max));
                }
                total += n;
            }
        }
    }
    if total > 6000 {
        return Err(form_error(
            &at(prefix, &["embeds"]),
            "MAX_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        ));
    }
    if body["components"].as_array().is_some_and(|c| c.len() > 5) {
        return Err(too_long(prefix, &["components"], 5));
    }
    if creating {
        let has = |key: &str| match &body[key] {
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        };
        if files == 0
            && !has("content")
            && !has("embeds")
            && !has("components")
            && !has("sticker_ids")
            && !has("poll")
        {
            return Err(error(400, 50006, "Cannot send an empty message"));
        }
    }
    Ok(())
}

fn snowflake_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn embeds_of(body: &Value) -> Vec<Value> {
    body["embeds"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut e| {
            if e.get("type").is_none() {
                e["type"] = json!("rich");
            }
            e
        })
        .collect()
}

/// Applies a PATCH body to a stored message (only the keys present change).
fn apply_edit(m: &mut StoredMessage, body: &Value, files: &[String]) {
    if let Some(content) = body.get("content") {
        m.msg.content = content.as_str().unwrap_or("").to_string();
    }
    if body.get("embeds").is_some() {
        m.msg.embeds = embeds_of(body);
    }
    if let Some(components) = body.get("components") {
        m.msg.components = components.as_array().cloned().unwrap_or_default();
    }
    if !files.is_empty() {
        m.msg.attachments.extend(files.iter().cloned());
    }
    if let Some(flags) = body.get("flags").and_then(Value::as_u64) {
        m.msg.flags = (m.msg.flags & 64) | (flags & !64 & !128);
    }
    m.msg.flags &= !128;
    m.msg.edits += 1;
    m.edited_ms = Some(now_ms());
}

async fn handle(
    AxState(shared): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = lock(&shared);
    let full = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let (json_body, files) = parse_body(&content_type, &body);
    let path = full.strip_prefix(API_PREFIX).unwrap_or(&full).to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // Interaction callbacks and webhooks are authorised by the token in the path; Discord
    // accepts them without the header, but not with a wrong one.
    let token_route = matches!(segments.first(), Some(&"interactions" | &"webhooks"));
    let authorized = match &authorization {
        Some(a) => *a == format!("Bot {}", state.token),
        None => token_route,
    };

    let reply = if !full.starts_with(API_PREFIX) {
        state.unexpected.push(format!("{method} {full}"));
        error(404, 0, "404: Not Found")
    } else if !authorized {
        error(401, 0, "401: Unauthorized")
    } else if let Some((n, status)) = state.fail.take() {
        if n > 1 {
            state.fail = Some((n - 1, status));
        }
        injected_failure(status)
    } else {
        match route(&mut state, &method, &segments, &json_body, &files) {
            Some(reply) => reply,
            None => {
                let shown = if query.is_empty() {
                    format!("{method} {path}")
                } else {
                    format!("{method} {path}?{query}")
                };
                state.unexpected.push(shown);
                error(404, 0, "404: Not Found")
            }
        }
    };

    state.requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        query,
        authorization,
        body: if json_body.is_null() {
            String::new()
        } else {
            json_body.to_string()
        },
        status: reply.status,
        at: Instant::now(),
    });
    drop(state);

    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("via", "1.1 google")
        .header("x-discord-world", "slipway");
    for (name, value) in &reply.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    match reply.body {
        Some(body) => builder
            .header("content-type", "application/json")
            .body(Body::from(body.to_string())),
        None => builder.body(Body::empty()),
    }
    .expect("valid response")
}

fn injected_failure(status: u16) -> Reply {
    match status {
        429 => {
            let mut r = reply(
                429,
                json!({"message": "You are being rate limited.", "retry_after": 0.05, "global": false, "code": 0}),
            );
            r.headers.push(("retry-after".into(), "0.05".into()));
            r.headers.push(("x-ratelimit-scope".into(), "user".into()));
            r
        }
        401 => error(401, 0, "401: Unauthorized"),
        403 => error(403, 50013, "Missing Permissions"),
        500 => error(500, 0, "500: Internal Server Error"),
        502 => error(502, 0, "502: Bad Gateway"),
        503 => error(503, 0, "503: Service Unavailable"),
        _ => error(status, 0, "Injected failure"),
    }
}

/// The JSON body (or a multipart request's `payload_json`) and the uploaded files' names.
fn parse_body(content_type: &str, body: &[u8]) -> (Value, Vec<String>) {
    if let Some(boundary) = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))
    {
        let boundary = boundary.trim_matches('"');
        let text = String::from_utf8_lossy(body);
        let mut json_body = Value::Null;
        let mut files = Vec::new();
        for part in text.split(&format!("--{boundary}")) {
            let Some((head, content)) = part.split_once("\r\n\r\n") else {
                continue;
            };
            let content = content.strip_suffix("\r\n").unwrap_or(content);
            let filename = head
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("filename="))
                .map(|f| f.lines().next().unwrap_or("").trim_matches('"').to_string());
            if let Some(name) = filename {
                files.push(name);
            } else if head.contains("name=\"payload_json\"") {
                json_body = serde_json::from_str(content).unwrap_or(Value::Null);
            }
        }
        return (json_body, files);
    }
    if body.is_empty() {
        return (Value::Null, Vec::new());
    }
    (
        serde_json::from_slice(body)
            .unwrap_or_else(|_| json!({"__unparsable": String::from_utf8_lossy(body)})),
        Vec::new(),
    )
}

/// Returns None when no route matches (a 404 recorded as unexpected).
fn route(
    state: &mut State,
    method: &Method,
    seg: &[&str],
    body: &Value,
    files: &[String],
) -> Option<Reply> {
    let m = method.as_str();
    let id = |s: &str| s.parse::<u64>().ok();
    Some(match (m, seg) {
        ("GET", ["gateway"]) => reply(200, json!({"url": state.gateway_url})),
        ("GET", ["gateway", "bot"]) => reply(
            200,
            json!({
                "url": state.gateway_url,
                "shards": 1,
                "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1},
            }),
        ),
        ("GET", ["users", "@me"]) => reply(200, bot_user_json()),
        ("GET", ["users", user]) => match id(user) {
            Some(u) if state.users.contains_key(&u) => {
                reply(200, user_json(u, &state.user_name(u), u == BOT_USER_ID))
            }
            _ => error(404, 10013, "Unknown User"),
        },
        ("GET", ["applications", "@me"]) | ("GET", ["oauth2", "applications", "@me"]) => {
            reply(200, application_json())
        }
        ("GET", ["guilds", g]) => match id(g).filter(|g| state.guilds.contains_key(g)) {
            Some(g) => {
                let mut guild = guild_json(state, g, 0);
                let obj = guild.as_object_mut().unwrap();
                for key in [
                    "members",
                    "channels",
                    "threads",
                    "presences",
                    "voice_states",
                    "joined_at",
                    "large",
                    "member_count",
                    "stage_instances",
                    "guild_scheduled_events",
                    "soundboard_sounds",
                    "embedded_activities",
                    "activity_instances",
                    "lazy",
                    "unavailable",
                    "application_command_counts",
                    "version",
                ] {
                    obj.remove(key);
                }
                reply(200, guild)
            }
            None => error(404, 10004, "Unknown Guild"),
        },
        ("GET", ["guilds", g, "channels"]) => {
            match id(g).filter(|g| state.guilds.contains_key(g)) {
                Some(g) => reply(
                    200,
                    Value::Array(
                        state
                            .channels
                            .values()
                            .filter(|c| c.guild_id == g && c.kind == 0)
                            .map(|c| channel_json(state, c, true))
                            .collect(),
                    ),
                ),
                None => error(404, 10004, "Unknown Guild"),
            }
        }
        ("GET", ["guilds", g, "roles"]) => {
            match id(g).and_then(|g| state.guilds.get(&g).map(|d| (g, d))) {
                Some((g, guild)) => reply(
                    200,
                    Value::Array(
                        guild
                            .roles
                            .iter()
                            .enumerate()
                            .map(|(i, (id, name))| role_json(g, *id, name, i))
                            .collect(),
                    ),
                ),
                None => error(404, 10004, "Unknown Guild"),
            }
        }
        ("GET", ["guilds", g, "members", u]) => {
            match (id(g).filter(|g| state.guilds.contains_key(g)), id(u)) {
                (Some(g), Some(u)) if state.guilds[&g].members.contains_key(&u) => {
                    reply(200, member_json(state, g, u, true, false))
                }
                (Some(_), _) => error(404, 10007, "Unknown Member"),
                _ => error(404, 10004, "Unknown Guild"),
            }
        }
        ("GET", ["channels", c]) => match id(c).and_then(|c| state.channels.get(&c)) {
            Some(channel) => reply(200, channel_json(state, channel, true)),
            None => error(404, 10003, "Unknown Channel"),
        },
        ("POST", ["channels", c, "messages"]) => create_message(state, id(c)?, body, files),
        ("GET", ["channels", c, "messages"]) => {
            let c = id(c)?;
            if !state.channels.contains_key(&c) {
                return Some(error(404, 10003, "Unknown Channel"));
            }
            let list: Vec<Value> = state
                .messages
                .iter()
                .rev()
                .filter(|m| m.msg.channel_id == c && !m.msg.deleted && m.msg.flags & 64 == 0)
                .take(50)
                .map(|m| message_json(state, m, false))
                .collect();
            reply(200, Value::Array(list))
        }
        ("GET", ["channels", c, "messages", mid]) => {
            let (c, mid) = (id(c)?, id(mid)?);
            match message_by_id(state, mid).filter(|m| m.msg.channel_id == c && !m.msg.deleted) {
                Some(m) => reply(200, message_json(state, m, false)),
                None => error(404, 10008, "Unknown Message"),
            }
        }
        ("PATCH", ["channels", c, "messages", mid]) => {
            edit_message(state, id(c)?, id(mid)?, body, files)
        }
        ("DELETE", ["channels", c, "messages", mid]) => {
            let (c, mid) = (id(c)?, id(mid)?);
            match message_mut(state, mid).filter(|m| m.msg.channel_id == c && !m.msg.deleted) {
                Some(m) => {
                    m.msg.deleted = true;
                    no_content()
                }
                None => error(404, 10008, "Unknown Message"),
            }
        }
        ("PUT", ["channels", c, "messages", mid, "reactions", emoji, "@me"]) => {
            let (c, mid) = (id(c)?, id(mid)?);
            let emoji = decode(emoji);
            match message_mut(state, mid).filter(|m| m.msg.channel_id == c && !m.msg.deleted) {
                Some(m) => {
                    if !m.msg.reactions.contains(&emoji) {
                        m.msg.reactions.push(emoji);
                    }
                    no_content()
                }
                None => error(404, 10008, "Unknown Message"),
            }
        }
        ("DELETE", ["channels", c, "messages", mid, "reactions", emoji, "@me"]) => {
            let (c, mid) = (id(c)?, id(mid)?);
            let emoji = decode(emoji);
            match message_mut(state, mid).filter(|m| m.msg.channel_id == c) {
                Some(m) => {
                    m.msg.reactions.retain(|r| *r != emoji);
                    no_content()
                }
                None => error(404, 10008, "Unknown Message"),
            }
        }
        ("POST", ["channels", c, "typing"]) => {
            match id(c).filter(|c| state.channels.contains_key(c)) {
                Some(_) => no_content(),
                None => error(404, 10003, "Unknown Channel"),
            }
        }
        ("POST", ["channels", c, "messages", mid, "threads"]) => {
            create_thread(state, id(c)?, Some(id(mid)?), body)
        }
        ("POST", ["channels", c, "threads"]) => create_thread(state, id(c)?, None, body),
        ("POST", ["interactions", ix, token, "callback"]) => {
            interaction_callback(state, id(ix)?, token, body, files)
        }
        (_, ["webhooks", app, token, rest @ ..]) => {
            let app = id(app)?;
            webhook(state, m, app, token, rest, body, files)?
        }
        (_, ["applications", app, "commands", rest @ ..]) => {
            if id(app) != Some(APPLICATION_ID) {
                return Some(error(403, 50001, "Missing Access"));
            }
            commands(state, m, None, rest, body)?
        }
        (_, ["applications", app, "guilds", g, "commands", rest @ ..]) => {
            if id(app) != Some(APPLICATION_ID) {
                return Some(error(403, 50001, "Missing Access"));
            }
            match id(g).filter(|g| state.guilds.contains_key(g)) {
                Some(g) => commands(state, m, Some(g), rest, body)?,
                None => error(403, 50001, "Missing Access"),
            }
        }
        _ => return None,
    })
}

fn create_message(state: &mut State, channel_id: u64, body: &Value, files: &[String]) -> Reply {
    let Some(channel) = state.channels.get(&channel_id) else {
        return error(404, 10003, "Unknown Channel");
    };
    let guild_id = channel.guild_id;
    if let Err(r) = validate_message(body, &[], true, files.len()) {
        return r;
    }
    let reply_to = snowflake_of(&body["message_reference"]["message_id"]);
    if let Some(target) = reply_to {
        if message_by_id(state, target).is_none_or(|m| m.msg.channel_id != channel_id) {
            return form_error(
                &["message_reference".to_string()],
                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                "Unknown message",
            );
        }
    }
    let id = state.snowflake();
    state.messages.push(StoredMessage {
        msg: Message {
            id,
            channel_id,
            author_id: BOT_USER_ID,
            content: body["content"].as_str().unwrap_or("").to_string(),
            embeds: embeds_of(body),
            components: body["components"].as_array().cloned().unwrap_or_default(),
            attachments: files.to_vec(),
            flags: body["flags"].as_u64().unwrap_or(0) & !64 & !128,
            edits: 0,
            thread_id: None,
            reply_to,
            reactions: Vec::new(),
            deleted: false,
        },
        guild_id: Some(guild_id),
        source: Source::Rest,
        kind: if reply_to.is_some() { 19 } else { 0 },
        created_ms: now_ms(),
        edited_ms: None,
    });
    let json = message_json(state, state.messages.last().unwrap(), false);
    dispatch_message_create(state, id);
    reply(200, json)
}

fn edit_message(
    state: &mut State,
    channel_id: u64,
    message_id: u64,
    body: &Value,
    files: &[String],
) -> Reply {
    let Some(m) = message_by_id(state, message_id)
        .filter(|m| m.msg.channel_id == channel_id && !m.msg.deleted)
    else {
        return error(404, 10008, "Unknown Message");
    };
    if m.msg.author_id != BOT_USER_ID || m.source != Source::Rest {
        return error(403, 50005, "Cannot edit a message authored by another user");
    }
    if let Err(r) = validate_message(body, &[], false, files.len()) {
        return r;
    }
    let m = message_mut(state, message_id).unwrap();
    apply_edit(m, body, files);
    let json = message_json(state, message_by_id(state, message_id).unwrap(), false);
    dispatch_message_update(state, message_id);
    reply(200, json)
}

fn create_thread(
    state: &mut State,
    channel_id: u64,
    message_id: Option<u64>,
    body: &Value,
) -> Reply {
    let Some(parent) = state.channels.get(&channel_id) else {
        return error(404, 10003, "Unknown Channel");
    };
    if parent.kind != 0 {
        return error(400, 50024, "Cannot execute action on this channel type");
    }
    let guild_id = parent.guild_id;
    let name = body["name"].as_str().unwrap_or("");
    let n = name.chars().count();
    if n == 0 {
        return form_error(
            &["name".to_string()],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        );
    }
    if n > 100 {
        return form_error(
            &["name".to_string()],
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        );
    }
    let archive = body["auto_archive_duration"].as_u64().unwrap_or(1440);
    if ![60, 1440, 4320, 10080].contains(&archive) {
        return form_error(
            &["auto_archive_duration".to_string()],
            "BASE_TYPE_CHOICES",
            "Value must be one of {60, 1440, 4320, 10080}.",
        );
    }
    let (id, kind) = match message_id {
        Some(mid) => {
            let Some(m) = message_by_id(state, mid)
                .filter(|m| m.msg.channel_id == channel_id && !m.msg.deleted)
            else {
                return error(404, 10008, "Unknown Message");
            };
            if m.msg.thread_id.is_some() {
                return error(
                    400,
                    160004,
                    "A thread has already been created for this message",
                );
            }
            (mid, 11)
        }
        None => {
            let kind = body["type"].as_u64().unwrap_or(12) as u8;
            if kind != 11 && kind != 12 {
                return form_error(
                    &["type".to_string()],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {10, 11, 12}.",
                );
            }
            (state.snowflake(), kind)
        }
    };
    state.channels.insert(
        id,
        ChannelData {
            id,
            guild_id,
            name: name.to_string(),
            kind,
            parent_id: Some(channel_id),
            position: 0,
            owner_id: Some(BOT_USER_ID),
            starter_message: message_id,
            auto_archive_duration: archive,
            created_ms: now_ms(),
        },
    );
    if let Some(mid) = message_id {
        message_mut(state, mid).unwrap().msg.thread_id = Some(id);
    }
    let json = channel_json(state, &state.channels[&id], true);
    dispatch_with(state, "THREAD_CREATE", |_, session| {
        (session.intents & INTENT_GUILDS != 0).then(|| {
            let mut d = json.clone();
            d["newly_created"] = json!(true);
            d
        })
    });
    reply(201, json)
}

fn interaction_callback(
    state: &mut State,
    id: u64,
    token: &str,
    body: &Value,
    files: &[String],
) -> Reply {
    let Some(ix) = state.interactions.get_mut(&id) else {
        return error(404, 10062, "Unknown interaction");
    };
    if ix.token != token {
        return error(401, 50027, "Invalid Webhook Token");
    }
    let now = Instant::now();
    ix.first_callback.get_or_insert(now);
    if now.duration_since(ix.created) > INTERACTION_DEADLINE {
        return error(404, 10062, "Unknown interaction");
    }
    if ix.acknowledged {
        return error(400, 40060, "Interaction has already been acknowledged.");
    }
    let (guild_id, channel_id) = (ix.guild_id, ix.channel_id);
    let kind = body["type"].as_u64().unwrap_or(0);
    let data = &body["data"];
    let ephemeral = data["flags"].as_u64().unwrap_or(0) & 64;
    let original = match kind {
        4 => {
            if let Err(r) = validate_message(data, &["data".to_string()], true, files.len()) {
                return r;
            }
            Some(Message {
                id: 0,
                channel_id,
                author_id: BOT_USER_ID,
                content: data["content"].as_str().unwrap_or("").to_string(),
                embeds: embeds_of(data),
                components: data["components"].as_array().cloned().unwrap_or_default(),
                attachments: files.to_vec(),
                flags: ephemeral,
                edits: 0,
                thread_id: None,
                reply_to: None,
                reactions: Vec::new(),
                deleted: false,
            })
        }
        5 => Some(Message {
            id: 0,
            channel_id,
            author_id: BOT_USER_ID,
            content: String::new(),
            embeds: Vec::new(),
            components: Vec::new(),
            attachments: Vec::new(),
            flags: ephemeral | 128,
            edits: 0,
            thread_id: None,
            reply_to: None,
            reactions: Vec::new(),
            deleted: false,
        }),
        9 => None,
        _ => {
            return form_error(
                &["type".to_string()],
                "INTERACTION_RESPONSE_TYPE_INVALID",
                "Interaction response type is invalid for this interaction",
            )
        }
    };
    let message_id = match original {
        Some(mut msg) => {
            let mid = state.snowflake();
            msg.id = mid;
            state.messages.push(StoredMessage {
                msg,
                guild_id: Some(guild_id),
                source: Source::Interaction(id),
                kind: 20,
                created_ms: now_ms(),
                edited_ms: None,
            });
            Some(mid)
        }
        None => None,
    };
    let ix = state.interactions.get_mut(&id).unwrap();
    ix.acknowledged = true;
    ix.original = message_id;
    ix.responses.push(body.clone());
    no_content()
}

fn webhook(
    state: &mut State,
    method: &str,
    app: u64,
    token: &str,
    rest: &[&str],
    body: &Value,
    files: &[String],
) -> Option<Reply> {
    let found = state
        .interactions
        .iter()
        .find(|(_, i)| i.token == token)
        .map(|(id, i)| (*id, i.acknowledged, i.original, i.channel_id, i.guild_id));
    let Some((ix_id, acknowledged, original, channel_id, guild_id)) =
        found.filter(|_| app == APPLICATION_ID)
    else {
        return Some(error(404, 10015, "Unknown Webhook"));
    };
    if !acknowledged {
        return Some(error(404, 10015, "Unknown Webhook"));
    }
    let target = |s: &str| -> Option<u64> {
        if s == "@original" {
            original
        } else {
            s.parse::<u64>().ok().filter(|mid| {
                state.messages.iter().any(|m| {
                    m.msg.id == *mid && m.source == Source::Interaction(ix_id) && !m.msg.deleted
                })
            })
        }
    };
    Some(match (method, rest) {
        ("POST", []) => {
            if let Err(r) = validate_message(body, &[], true, files.len()) {
                return Some(r);
            }
            let mid = state.snowflake();
            state.messages.push(StoredMessage {
                msg: Message {
                    id: mid,
                    channel_id,
                    author_id: BOT_USER_ID,
                    content: body["content"].as_str().unwrap_or("").to_string(),
                    embeds: embeds_of(body),
                    components: body["components"].as_array().cloned().unwrap_or_default(),
                    attachments: files.to_vec(),
                    flags: body["flags"].as_u64().unwrap_or(0) & 64,
                    edits: 0,
                    thread_id: None,
                    reply_to: None,
                    reactions: Vec::new(),
                    deleted: false,
                },
                guild_id: Some(guild_id),
                source: Source::Interaction(ix_id),
                kind: 0,
                created_ms: now_ms(),
                edited_ms: None,
            });
            state
                .interactions
                .get_mut(&ix_id)
                .unwrap()
                .followup_bodies
                .push(body.clone());
            reply(
                200,
                message_json(state, message_by_id(state, mid).unwrap(), false),
            )
        }
        ("GET", ["messages", which]) => match target(which) {
            Some(mid) => reply(
                200,
                message_json(state, message_by_id(state, mid).unwrap(), false),
            ),
            None => error(404, 10008, "Unknown Message"),
        },
        ("PATCH", ["messages", which]) => match target(which) {
            Some(mid) => {
                if let Err(r) = validate_message(body, &[], false, files.len()) {
                    return Some(r);
                }
                apply_edit(message_mut(state, mid).unwrap(), body, files);
                state
                    .interactions
                    .get_mut(&ix_id)
                    .unwrap()
                    .followup_bodies
                    .push(body.clone());
                reply(
                    200,
                    message_json(state, message_by_id(state, mid).unwrap(), false),
                )
            }
            None => error(404, 10008, "Unknown Message"),
        },
        ("DELETE", ["messages", which]) => match target(which) {
            Some(mid) => {
                message_mut(state, mid).unwrap().msg.deleted = true;
                no_content()
            }
            None => error(404, 10008, "Unknown Message"),
        },
        _ => return None,
    })
}

// --- application commands -------------------------------------------------------------------

fn commands(
    state: &mut State,
    method: &str,
    guild: Option<u64>,
    rest: &[&str],
    body: &Value,
) -> Option<Reply> {
    let list = match guild {
        Some(g) => state.guild_commands.get(&g).cloned().unwrap_or_default(),
        None => state.global_commands.clone(),
    };
    let store = |state: &mut State, list: Vec<Value>| match guild {
        Some(g) => {
            state.guild_commands.insert(g, list);
        }
        None => state.global_commands = list,
    };
    Some(match (method, rest) {
        ("GET", []) => reply(200, Value::Array(list)),
        ("PUT", []) => {
            let Some(items) = body.as_array() else {
                return Some(form_error(&[], "BASE_TYPE_ARRAY", "Must be an array."));
            };
            if items.len() > 100 {
                return Some(too_long(&[], &[], 100));
            }
            let mut out: Vec<Value> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let path = vec![i.to_string()];
                if let Err(r) = check_command(item, &path) {
                    return Some(r);
                }
                let kind = item["type"].as_u64().unwrap_or(1);
                if out
                    .iter()
                    .any(|c| c["name"] == item["name"] && c["type"] == kind)
                {
                    return Some(form_error(
                        &at(&path, &["name"]),
                        "APPLICATION_COMMANDS_DUPLICATE_NAME",
                        "Application command names must be unique",
                    ));
                }
                let existing = list
                    .iter()
                    .find(|c| c["name"] == item["name"] && c["type"] == kind)
                    .and_then(|c| c["id"].as_str())
                    .and_then(|s| s.parse().ok());
                let id = existing.unwrap_or_else(|| state.snowflake());
                let version = state.snowflake();
                out.push(command_json(item, id, version, guild));
            }
            store(state, out.clone());
            reply(200, Value::Array(out))
        }
        ("POST", []) => {
            if let Err(r) = check_command(body, &[]) {
                return Some(r);
            }
            let kind = body["type"].as_u64().unwrap_or(1);
            let mut list = list;
            let position = list
                .iter()
                .position(|c| c["name"] == body["name"] && c["type"] == kind);
            let id = position
                .and_then(|p| list[p]["id"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or_else(|| state.snowflake());
            let version = state.snowflake();
            let command = command_json(body, id, version, guild);
            let status = match position {
                Some(p) => {
                    list[p] = command.clone();
                    200
                }
                None => {
                    list.push(command.clone());
                    201
                }
            };
            store(state, list);
            reply(status, command)
        }
        (_, [cid]) => {
            let mut list = list;
            let Some(p) = list.iter().position(|c| c["id"] == *cid) else {
                return Some(error(404, 10063, "Unknown application command"));
            };
            match method {
                "GET" => reply(200, list[p].clone()),
                "DELETE" => {
                    list.remove(p);
                    store(state, list);
                    no_content()
                }
                "PATCH" => {
                    let mut merged = list[p].clone();
                    if let Some(fields) = body.as_object() {
                        for (k, v) in fields {
                            merged[k.as_str()] = v.clone();
                        }
                    }
                    if let Err(r) = check_command(&merged, &[]) {
                        return Some(r);
                    }
                    let id = cid.parse().unwrap_or(0);
                    let version = state.snowflake();
                    list[p] = command_json(&merged, id, version, guild);
                    let command = list[p].clone();
                    store(state, list);
                    reply(200, command)
                }
                _ => return None,
            }
        }
        _ => return None,
    })
}

fn command_json(input: &Value, id: u64, version: u64, guild: Option<u64>) -> Value {
    let kind = input["type"].as_u64().unwrap_or(1);
    let mut command = json!({
        "id": id.to_string(),
        "application_id": APPLICATION_ID.to_string(),
        "version": version.to_string(),
        "default_member_permissions": input.get("default_member_permissions").cloned().unwrap_or(Value::Null),
        "type": kind,
        "name": input["name"],
        "name_localizations": input.get("name_localizations").cloned().unwrap_or(Value::Null),
        "description": input["description"].as_str().unwrap_or(""),
        "description_localizations": input.get("description_localizations").cloned().unwrap_or(Value::Null),
        "nsfw": input["nsfw"].as_bool().unwrap_or(false),
        "integration_types": input.get("integration_types").cloned().unwrap_or(json!([0])),
        "contexts": input.get("contexts").cloned().unwrap_or(Value::Null),
    });
    match guild {
        Some(g) => command["guild_id"] = json!(g.to_string()),
        None => {
            command["dm_permission"] = input.get("dm_permission").cloned().unwrap_or(json!(true))
        }
    }
    if let Some(options) = input["options"].as_array().filter(|o| !o.is_empty()) {
        command["options"] = Value::Array(options.clone());
    }
    command
}

fn name_ok(name: &str, chat_input: bool) -> bool {
    let n = name.chars().count();
    (1..=32).contains(&n)
        && if chat_input {
            name.chars()
                .all(|c| (c.is_alphanumeric() && !c.is_uppercase()) || "-_'".contains(c))
        } else {
            !name.trim().is_empty()
        }
}

/// Discord's rules for a command definition (names, descriptions, option structure).
fn check_command(c: &Value, path: &[String]) -> Result<(), Reply> {
    let kind = c["type"].as_u64().unwrap_or(1);
    if !(1..=4).contains(&kind) {
        return Err(form_error(
            &at(path, &["type"]),
            "BASE_TYPE_CHOICES",
            "Value must be one of {1, 2, 3, 4}.",
        ));
    }
    let name = c["name"].as_str().unwrap_or("");
    if !name_ok(name, kind == 1) {
        return Err(form_error(
            &at(path, &["name"]),
            "APPLICATION_COMMAND_INVALID_NAME",
            &format!("Command name is invalid: {name:?}"),
        ));
    }
    let description = chars(&c["description"]);
    if kind == 1 && !(1..=100).contains(&description) {
        return Err(form_error(
            &at(path, &["description"]),
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        ));
    }
    if kind != 1 && description > 0 {
        return Err(form_error(
            &at(path, &["description"]),
            "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
            "Context menu commands cannot have description",
        ));
    }
    let options = c["options"].as_array().cloned().unwrap_or_default();
    let mut total = name.chars().count() + description;
    check_options(&options, &at(path, &["options"]), 0, &mut total)?;
    if total > 8000 {
        return Err(form_error(
            path,
            "APPLICATION_COMMAND_TOO_LARGE",
            "Command exceeds maximum size (8000)",
        ));
    }
    Ok(())
}

fn check_options(
    options: &[Value],
    path: &[String],
    depth: u8,
    total: &mut usize,
) -> Result<(), Reply> {
    if options.len() > 25 {
        return Err(too_long(path, &[], 25));
    }
    let subs = options
        .iter()
        .filter(|o| matches!(o["type"].as_u64(), Some(1 | 2)))
        .count();
    if subs > 0 && subs != options.len() {
        return Err(form_error(
            path,
            "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
            "Sub-command and sub-command group option types are mutually exclusive to all other types",
        ));
    }
    let mut seen_optional = false;
    let mut names: Vec<&str> = Vec::new();
    for (i, o) in options.iter().enumerate() {
        let index = i.to_string();
        let here = at(path, &[index.as_str()]);
        let kind = o["type"].as_u64().unwrap_or(0);
        if !(1..=11).contains(&kind) {
            return Err(form_error(
                &at(&here, &["type"]),
                "BASE_TYPE_CHOICES",
                "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.",
            ));
        }
        if (kind == 2 && depth > 0) || (kind == 1 && depth > 1) {
            return Err(form_error(
                &at(&here, &["type"]),
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-commands cannot be nested this deep",
            ));
        }
        let name = o["name"].as_str().unwrap_or("");
        if !name_ok(name, true) {
            return Err(form_error(
                &at(&here, &["name"]),
                "APPLICATION_COMMAND_INVALID_NAME",
                &format!("Command name is invalid: {name:?}"),
            ));
        }
        if names.contains(&name) {
            return Err(form_error(
                &at(&here, &["name"]),
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            ));
        }
        names.push(name);
        let description = chars(&o["description"]);
        if !(1..=100).contains(&description) {
            return Err(form_error(
                &at(&here, &["description"]),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            ));
        }
        *total += name.chars().count() + description;
        let required = o["required"].as_bool().unwrap_or(false);
        if required && seen_optional {
            return Err(form_error(
                &here,
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            ));
        }
        seen_optional |= !required && kind > 2;
        let choices = o["choices"].as_array().cloned().unwrap_or_default();
        if choices.len() > 25 {
            return Err(too_long(&here, &["choices"], 25));
        }
        for c in &choices {
            *total += chars(&c["name"]) + c["value"].as_str().map_or(0, |s| s.chars().count());
        }
        let nested = o["options"].as_array().cloned().unwrap_or_default();
        if kind > 2 && !nested.is_empty() {
            return Err(form_error(
                &at(&here, &["options"]),
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Only sub-commands and groups have options",
            ));
        }
        if kind == 2 && nested.iter().any(|n| n["type"] != 1) {
            return Err(form_error(
                &at(&here, &["options"]),
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-command groups may only contain sub-commands",
            ));
        }
        check_options(&nested, &at(&here, &["options"]), depth + 1, total)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
