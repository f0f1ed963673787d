//! Discord's side of the one command grammar: slash commands generated from
//! `CommandKind::ALL` (so every command and argument exists on Discord too), interactions
//! turned back into `Command`s through `Command::from_options`, and the shared executor's
//! outcomes worded for Discord (with a message that keeps following slow work).

use std::future::Future;
use std::time::{Duration, Instant};

use envmgr::names::EnvName;
use envmgr::store::{Phase, RunStatus};
use envmgr::Engine;
use serenity::all::{
    CommandInteraction, CommandOptionType, CreateCommand, CreateCommandOption, Message,
    ResolvedOption, ResolvedValue,
};

use crate::commands::{
    ArgKind, Command, CommandKind, ParseError, Syntax, CHANNEL_GROUP, ENV_GROUP, QUEUE_GROUP,
    ROLLOUT_GROUP,
};
use crate::executor::Outcome;
use envmgr::snippet::fence_safe;

/// How long a command's message keeps following what it started.
const FOLLOW_FOR: Duration = Duration::from_secs(15 * 60);

/// Who typed a command, and where.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: u64,
    pub name: String,
    pub role_ids: Vec<u64>,
    pub guild_id: Option<u64>,
    pub channel_id: u64,
}

impl Caller {
    pub fn from_interaction(call: &CommandInteraction) -> Self {
        Self {
            user_id: call.user.id.get(),
            name: call.user.name.clone(),
            role_ids: call
                .member
                .as_ref()
                .map(|m| m.roles.iter().map(|r| r.get()).collect())
                .unwrap_or_default(),
            guild_id: call.guild_id.map(|g| g.get()),
            channel_id: call.channel_id.get(),
        }
    }

    pub fn from_message(msg: &Message) -> Self {
        Self {
            user_id: msg.author.id.get(),
            name: msg.author.name.clone(),
            role_ids: msg
                .member
                .as_ref()
                .map(|m| m.roles.iter().map(|r| r.get()).collect())
                .unwrap_or_default(),
            guild_id: msg.guild_id.map(|g| g.get()),
            channel_id: msg.channel_id.get(),
        }
    }

    /// Where the command was typed, for the audit log.
    pub fn place(&self) -> String {
        match self.guild_id {
            Some(guild) => format!("discord guild {guild} channel {}", self.channel_id),
            None => format!("discord direct message {}", self.channel_id),
        }
    }
}

/// What to say, and what to keep reporting on afterwards by editing the same message.
pub struct Reply {
    pub text: String,
    pub follow: Option<Follow>,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            follow: None,
        }
    }

    fn with_follow(text: String, follow: Follow) -> Self {
        Self {
            text,
            follow: Some(follow),
        }
    }
}

/// Something slow a reply keeps following.
pub enum Follow {
    /// An env on its way to Ready (or Failed, or Deleted) at generation `generation`.
    Env {
        name: EnvName,
        generation: i64,
        deleting: bool,
    },
    /// A test run until it finishes.
    Run { env: EnvName, id: i64 },
}

/// Slash commands: `/env` with one subcommand per `env ...` kind, and a top-level command
/// for each other kind.
pub fn definitions() -> Vec<CreateCommand> {
    let mut env = CreateCommand::new(ENV_GROUP)
        .description("Ephemeral environments: up, down, list, status, logs, extend");
    let mut queue = CreateCommand::new(QUEUE_GROUP)
        .description("Submit queue: add, remove, list, status, pause, resume, retry");
    let mut rollout = CreateCommand::new(ROLLOUT_GROUP)
        .description("Rollouts: status, pause, resume, promote, rollback, approve");
    let mut channel =
        CreateCommand::new(CHANNEL_GROUP).description("Release channels: freeze, unfreeze");
    let mut top = Vec::new();
    for kind in CommandKind::ALL {
        // Only what means something here: `approve` needs a pull request, Discord has none.
        if !kind.available_on(Syntax::Discord) {
            continue;
        }
        // Discord wants required options before optional ones. An argument only a pull
        // request could default is required here, so Discord's client prompts for it.
        let mut args: Vec<_> = kind.args().iter().collect();
        args.sort_by_key(|arg| !arg.required_on(Syntax::Discord));
        let options: Vec<CreateCommandOption> = args
            .into_iter()
            .map(|arg| {
                let kind = match arg.kind {
                    ArgKind::Count => CommandOptionType::Integer,
                    ArgKind::Flag => CommandOptionType::Boolean,
                    ArgKind::Text | ArgKind::Duration | ArgKind::Topic | ArgKind::Reason => {
                        CommandOptionType::String
                    }
                };
                CreateCommandOption::new(kind, arg.name, short(arg.about_on(Syntax::Discord)))
                    .required(arg.required_on(Syntax::Discord))
            })
            .collect();
        match kind.group() {
            Some((group, sub)) => {
                let mut option = CreateCommandOption::new(
                    CommandOptionType::SubCommand,
                    sub,
                    short(kind.info().summary),
                );
                for o in options {
                    option = option.add_sub_option(o);
                }
                match group {
                    ENV_GROUP => env = env.add_option(option),
                    QUEUE_GROUP => queue = queue.add_option(option),
                    ROLLOUT_GROUP => rollout = rollout.add_option(option),
                    _ => channel = channel.add_option(option),
                }
            }
            None => {
                let mut command =
                    CreateCommand::new(kind.name()).description(short(kind.info().summary));
                for o in options {
                    command = command.add_option(o);
                }
                top.push(command);
            }
        }
    }
    let mut all = vec![env, queue, rollout, channel];
    all.extend(top);
    all
}

/// Discord descriptions are 1 to 100 characters.
fn short(text: &str) -> String {
    crate::text::truncate(text.trim_end_matches('.'), 100)
}

/// The interaction's command, parsed by the same grammar as every other surface.
pub fn parse_interaction(call: &CommandInteraction) -> Result<Command, ParseError> {
    let mut name = call.data.name.clone();
    let mut values: Vec<(String, String)> = Vec::new();
    let collect = |options: &[ResolvedOption<'_>], values: &mut Vec<(String, String)>| {
        for option in options {
            let value = match &option.value {
                ResolvedValue::String(s) => s.to_string(),
                ResolvedValue::Integer(n) => n.to_string(),
                ResolvedValue::Number(n) => n.to_string(),
                ResolvedValue::Boolean(b) => b.to_string(),
                _ => continue,
            };
            values.push((option.name.to_string(), value));
        }
    };
    for option in call.data.options() {
        match &option.value {
            ResolvedValue::SubCommand(inner) => {
                name = format!("{name} {}", option.name);
                collect(inner, &mut values);
            }
            _ => collect(std::slice::from_ref(&option), &mut values),
        }
    }
    let pairs: Vec<(&str, &str)> = values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Command::from_options(&name, &pairs)
}

/// What the shared executor's outcome looks like in Discord.
pub fn render(outcome: Outcome, caller: &Caller) -> Reply {
    match outcome {
        Outcome::Help { text } => Reply::text(text),
        Outcome::WhoAmI(who) => Reply::text(format!(
            "You are {} (Discord user {}), with the {} role: you may run {}.",
            caller.name,
            caller.user_id,
            who.role,
            who.may_run.join(", ")
        )),
        Outcome::EnvUp { env } => Reply::with_follow(
            format!(
                "⏳ `{}`: requested branch `{}` of `{}`…",
                env.name, env.branch, env.repo
            ),
            Follow::Env {
                name: env.name.clone(),
                generation: env.generation,
                deleting: false,
            },
        ),
        Outcome::EnvDown { env } => Reply::with_follow(
            format!("🗑 `{}`: deleting…", env.name),
            Follow::Env {
                name: env.name.clone(),
                generation: env.generation,
                deleting: true,
            },
        ),
        Outcome::EnvList { envs } if envs.is_empty() => {
            Reply::text("No environments. `/env up branch:<name>` makes one.")
        }
        Outcome::EnvList { envs } => Reply::text(
            envs.iter()
                .map(|e| {
                    format!(
                        "`{}` {} ({} @ {})",
                        e.name,
                        e.phase.as_str(),
                        e.branch,
                        e.commit.as_ref().map(|c| c.short()).unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Outcome::EnvStatus { status } => Reply::text(describe_env(&status.env)),
        Outcome::EnvLogs(logs) if logs.text.trim().is_empty() => {
            Reply::text(format!("`{}` has no output yet.", logs.env))
        }
        // The newest lines matter; the fence must hold whatever the log prints.
        Outcome::EnvLogs(logs) => Reply::text(format!(
            "```\n{}\n```",
            fence_safe(crate::text::last_chars(&logs.text, 1800))
        )),
        Outcome::EnvIdle { action, env } => {
            Reply::text(format!("`{}` {}.", env.name, action.reply()))
        }
        Outcome::EnvExtend { env } => Reply::text(format!(
            "⏱ `{}` now expires in {}{}.",
            env.name,
            crate::executor::time_left(&env),
            envmgr::engine::extend_cap_note(env.expires_at)
        )),
        Outcome::Test { run } => Reply::with_follow(
            format!("🧪 `{}`: test run {} queued…", run.env, run.id),
            Follow::Run {
                env: run.env.clone(),
                id: run.id,
            },
        ),
        Outcome::QueueAdd { .. }
        | Outcome::QueueRemove { .. }
        | Outcome::QueueRetry { .. }
        | Outcome::QueueStatus { .. }
        | Outcome::QueueList { .. }
        | Outcome::QueuePaused { .. } => Reply::text(crate::text::truncate(
            &crate::queue::render::markdown(&outcome).unwrap_or_default(),
            1900,
        )),
        Outcome::Release { .. }
        | Outcome::RolloutStatus { .. }
        | Outcome::RolloutAction { .. }
        | Outcome::ChannelFrozen { .. } => Reply::text(crate::text::truncate(
            &crate::rollout::render::markdown(&outcome).unwrap_or_default(),
            1900,
        )),
    }
}

fn describe_env(env: &envmgr::store::EnvRecord) -> String {
    let mut text = format!(
        "`{}`: **{}** (branch `{}`, commit `{}`)",
        env.name,
        env.phase.as_str(),
        env.branch,
        env.commit.as_ref().map(|c| c.short()).unwrap_or("-")
    );
    if let Some(reason) = &env.reason {
        text.push_str(&format!("\n{reason}"));
    }
    for (service, url) in env.urls() {
        text.push_str(&format!("\n{service}: {url}"));
    }
    text
}

/// Edits the reply (through `edit`) each time what it follows changes, until it settles.
pub async fn follow_progress<F, Fut>(engine: Engine, follow: Follow, mut edit: F)
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let began = Instant::now();
    let mut last = String::new();
    while began.elapsed() < FOLLOW_FOR {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (text, done) = match &follow {
            Follow::Env {
                name,
                generation,
                deleting,
            } => match engine.get(name).await {
                Ok(env) => {
                    let settled = if *deleting {
                        env.phase == Phase::Deleted
                    } else {
                        env.observed_generation >= *generation
                            && matches!(env.phase, Phase::Ready | Phase::Failed)
                    };
                    let icon = match env.phase {
                        Phase::Ready => "✅",
                        Phase::Failed => "❌",
                        Phase::Deleted => "🗑",
                        _ => "⏳",
                    };
                    (
                        format!("{icon} {}", describe_env(&env)),
                        settled || env.phase == Phase::Deleted,
                    )
                }
                Err(e) => (format!("❌ {e}"), true),
            },
            Follow::Run { env, id } => match engine.run(env, *id).await {
                Ok(run) => {
                    let done = run.status.is_finished();
                    let icon = match run.status {
                        RunStatus::Passed => "✅",
                        RunStatus::Queued | RunStatus::Running => "🧪",
                        _ => "❌",
                    };
                    let mut text = format!(
                        "{icon} `{env}` test run {}: {}",
                        run.id,
                        run.status.as_str().replace('_', " ")
                    );
                    if let Some(headline) = &run.headline {
                        text.push_str(&format!(" — {headline}"));
                    }
                    if let Some(snippet) = run.snippet_chat.as_deref().filter(|_| done) {
                        // The snippet is made for a 2,000-character message: it replaces the line.
                        text = snippet.to_string();
                    }
                    (text, done)
                }
                Err(e) => (format!("❌ {e}"), true),
            },
        };
        if text != last {
            edit(text.clone()).await;
            last = text;
        }
        if done {
            return;
        }
    }
}
