//! The Discord surface on serenity: slash commands (`/env up`, `/test`, ...) registered per
//! configured guild and generated from the one command grammar, `@Slipway env up ...`
//! mentions, answers within Discord's 3-second deadline (defer first, then edit the answer as
//! the work goes on), and a reconnecting gateway (serenity's shard runner).

mod commands;

use std::sync::{Arc, OnceLock};

use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    Context, CreateMessage, EditInteractionResponse, EditMessage, EventHandler, GatewayIntents,
    GuildId, Interaction, Message, Ready, UserId,
};
use serenity::async_trait;

use crate::access;
use crate::app::App;
use crate::commands::{Command, ParseError};
use crate::config::{env_secret, Config};
use crate::executor::{CommandError, Invocation};

/// `[discord]`, validated.
#[derive(Clone)]
pub struct DiscordSettings {
    pub token: SecretString,
    pub application_id: u64,
    /// Guilds to register the slash commands in (guild commands appear at once).
    pub guilds: Vec<u64>,
    /// Another API base (a proxy, or a stand-in in tests); Discord's own when `None`.
    pub api_url: Option<String>,
}

impl DiscordSettings {
    /// The Discord settings, or `None` when the `[discord]` section is absent.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(discord) = &config.discord else {
            return Ok(None);
        };
        let token = env_secret("SLIPWAY_DISCORD_TOKEN").or_else(|| discord.token.clone());
        let Some(token) = token.filter(|t| !t.expose_secret().is_empty()) else {
            anyhow::bail!("[discord] needs token (or SLIPWAY_DISCORD_TOKEN)");
        };
        if discord.guilds.is_empty() {
            tracing::warn!(
                "[discord] lists no guilds: slash commands will not be registered anywhere"
            );
        }
        Ok(Some(DiscordSettings {
            token,
            application_id: discord.application_id.get(),
            guilds: discord.guilds.iter().map(|g| g.get()).collect(),
            api_url: discord.api_url.clone(),
        }))
    }
}

struct Handler {
    app: Arc<App>,
    settings: DiscordSettings,
    /// Our own user id, learnt at READY, to recognise mentions.
    me: OnceLock<UserId>,
}

/// Connects to Discord and serves commands until the process ends; serenity reconnects the
/// gateway on its own when the connection drops.
pub async fn start(app: Arc<App>, settings: DiscordSettings) -> anyhow::Result<()> {
    let intents =
        GatewayIntents::GUILDS | GatewayIntents::GUILD_MESSAGES | GatewayIntents::MESSAGE_CONTENT;
    let handler = Handler {
        app,
        settings: settings.clone(),
        me: OnceLock::new(),
    };
    let mut client = serenity::client::ClientBuilder::new_with_http(http(&settings), intents)
        .application_id(settings.application_id.into())
        .event_handler(handler)
        .await
        .map_err(|e| anyhow::anyhow!("cannot set up the Discord client: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = client.start().await {
            tracing::error!(error = %e, "the Discord client stopped");
        }
    });
    Ok(())
}

/// A REST client for Discord (or the configured API base).
pub fn http(settings: &DiscordSettings) -> serenity::http::Http {
    let mut http = serenity::http::HttpBuilder::new(settings.token.expose_secret())
        .application_id(settings.application_id.into())
        // Discord's rate-limit headers govern the real API; a stand-in sends none.
        .ratelimiter_disabled(settings.api_url.is_some());
    if let Some(url) = &settings.api_url {
        http = http.proxy(url.trim_end_matches('/'));
    }
    http.build()
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        let _ = self.me.set(ready.user.id);
        tracing::info!(user = %ready.user.name, guilds = self.settings.guilds.len(), "connected to Discord");
        for guild in &self.settings.guilds {
            match GuildId::new(*guild)
                .set_commands(&ctx.http, commands::definitions())
                .await
            {
                Ok(registered) => tracing::info!(
                    guild,
                    commands = registered.len(),
                    "registered slash commands"
                ),
                Err(e) => tracing::warn!(guild, error = %e, "could not register slash commands"),
            }
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Command(call) = interaction else {
            return;
        };
        // Answer first: Discord drops interactions not answered within 3 seconds.
        if let Err(e) = call.defer(&ctx.http).await {
            tracing::warn!(error = %e, "could not defer a Discord interaction");
            return;
        }
        let parsed = commands::parse_interaction(&call);
        let caller = commands::Caller::from_interaction(&call);
        let reply = self.answer(parsed, &caller).await;
        let edit = EditInteractionResponse::new().content(fit(&reply.text));
        if let Err(e) = call.edit_response(&ctx.http, edit).await {
            tracing::warn!(error = %e, "could not answer a Discord interaction");
            return;
        }
        if let Some(follow) = reply.follow {
            let (http, engine) = (ctx.http.clone(), self.app.engine.clone());
            tokio::spawn(async move {
                commands::follow_progress(engine, follow, |text| {
                    let (http, call) = (http.clone(), call.clone());
                    async move {
                        let _ = call
                            .edit_response(
                                &http,
                                EditInteractionResponse::new().content(fit(&text)),
                            )
                            .await;
                    }
                })
                .await
            });
        }
    }

    async fn message(&self, ctx: Context, msg: Message) {
        let Some(me) = self.me.get() else { return };
        if msg.author.bot || !msg.mentions.iter().any(|u| u.id == *me) {
            return;
        }
        // `<@id> env up feature-x`: the command is what follows the mention.
        let line = msg
            .content
            .replace(&format!("<@{me}>"), " ")
            .replace(&format!("<@!{me}>"), " ");
        let parsed = Command::parse_line(line.trim());
        let caller = commands::Caller::from_message(&msg);
        let reply = self.answer(parsed, &caller).await;
        let sent = msg
            .channel_id
            .send_message(&ctx.http, CreateMessage::new().content(fit(&reply.text)))
            .await;
        match (sent, reply.follow) {
            (Ok(sent), Some(follow)) => {
                let (http, engine) = (ctx.http.clone(), self.app.engine.clone());
                tokio::spawn(async move {
                    commands::follow_progress(engine, follow, |text| {
                        let (http, channel, id) = (http.clone(), sent.channel_id, sent.id);
                        async move {
                            let _ = channel
                                .edit_message(&http, id, EditMessage::new().content(fit(&text)))
                                .await;
                        }
                    })
                    .await
                });
            }
            (Err(e), _) => tracing::warn!(error = %e, "could not answer a Discord mention"),
            _ => {}
        }
    }
}

impl Handler {
    /// Runs the command through the shared executor (role check, audit) and words the reply.
    async fn answer(
        &self,
        parsed: Result<Command, ParseError>,
        caller: &commands::Caller,
    ) -> commands::Reply {
        let role = self
            .app
            .policy
            .role_for_discord(caller.user_id, &caller.role_ids);
        let invocation = Invocation {
            caller: access::Caller::discord(caller.user_id, &caller.name),
            role,
            place: caller.place(),
            prefix: PREFIX,
            default_repo: None,
            default_env: None,
            default_pull: None,
        };
        let command = match parsed {
            Ok(command) => command,
            Err(e) => {
                crate::executor::record_unparsed(
                    self.app.store(),
                    &invocation.caller,
                    &invocation.place,
                    &e,
                )
                .await;
                return commands::Reply::text(e.reply_for(PREFIX));
            }
        };
        match crate::executor::run(&self.app, &invocation, command).await {
            Ok(outcome) => commands::render(outcome, caller),
            Err(CommandError::Refused(refusal)) => {
                commands::Reply::text(format!("⛔ {refusal} Nothing was done."))
            }
            Err(e) => commands::Reply::text(format!("❌ {e}")),
        }
    }
}

/// How commands are written on Discord, for help and hints: slash commands.
const PREFIX: &str = "/";

/// Discord refuses messages over 2,000 characters.
pub(crate) fn fit(text: &str) -> String {
    crate::text::truncate(text, 2000)
}
