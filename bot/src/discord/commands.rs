//! Discord's side of the one command grammar: slash commands generated from
//! `CommandKind::ALL` (so every command and argument exists on Discord too), interactions
//! turned back into `Command`s through `Command::from_options`, and their execution.

use std::future::Future;
use std::time::{Duration, Instant};

use envmgr::store::{Phase, RunStatus};
use envmgr::Engine;
use serenity::all::{
    CommandInteraction, CommandOptionType, CreateCommand, CreateCommandOption, Message,
    ResolvedOption, ResolvedValue,
};

use crate::access::{self, Role};
use crate::commands::{help_reply, ArgKind, Command, CommandKind, ParseError, ENV_GROUP};

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

    pub fn actor(&self) -> String {
        format!("discord:{}", self.name)
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
    /// Set when the command failed, for the audit log.
    pub error: Option<String>,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            follow: None,
            error: None,
        }
    }

    fn with_follow(text: String, follow: Follow) -> Self {
        Self {
            text,
            follow: Some(follow),
            error: None,
        }
    }
}

/// Something slow a reply keeps following.
pub enum Follow {
    /// An env on its way to Ready (or Failed, or Deleted) at generation `generation`.
    Env {
        name: String,
        generation: i64,
        deleting: bool,
    },
    /// A test run until it finishes.
    Run { env: String, id: i64 },
}

/// Slash commands: `/env` with one subcommand per `env ...` kind, and a top-level command
/// for each other kind.
pub fn definitions() -> Vec<CreateCommand> {
    let mut env = CreateCommand::new(ENV_GROUP)
        .description("Ephemeral environments: up, down, list, status, logs, extend");
    let mut top = Vec::new();
    for kind in CommandKind::ALL {
        // Discord wants required options before optional ones.
        let mut args: Vec<_> = kind.args().iter().collect();
        args.sort_by_key(|arg| !arg.required);
        let options: Vec<CreateCommandOption> = args
            .into_iter()
            .map(|arg| {
                let kind = match arg.kind {
                    ArgKind::Count => CommandOptionType::Integer,
                    ArgKind::Flag => CommandOptionType::Boolean,
                    ArgKind::Text | ArgKind::Duration | ArgKind::Topic => CommandOptionType::String,
                };
                CreateCommandOption::new(kind, arg.name, short(arg.about)).required(arg.required)
            })
            .collect();
        match kind.env_subcommand() {
            Some(sub) => {
                let mut option = CreateCommandOption::new(
                    CommandOptionType::SubCommand,
                    sub,
                    short(kind.info().summary),
                );
                for o in options {
                    option = option.add_sub_option(o);
                }
                env = env.add_option(option);
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
    let mut all = vec![env];
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

/// Runs a command for `caller` (whose role allows it) and says what happened.
pub async fn execute(engine: &Engine, command: Command, caller: &Caller, role: Role) -> Reply {
    let actor = caller.actor();
    let result: Result<Reply, String> = async {
        Ok(match command {
            Command::Help { topic } => Reply::text(help_reply(topic.as_deref(), "/")),
            Command::WhoAmI => {
                let allowed: Vec<&str> = access::policy().allowed_commands(role).iter().map(|k| k.name()).collect();
                Reply::text(format!(
                    "You are {} (Discord user {}), with the {} role: you may run {}.",
                    caller.name,
                    caller.user_id,
                    role.as_str(),
                    allowed.join(", ")
                ))
            }
            Command::EnvUp { branch, repo, ttl } => {
                let Some(branch) = branch else {
                    return Err("name the branch: `/env up branch:<name>`".to_string());
                };
                let repo = match repo {
                    Some(repo) => repo,
                    None => only_repo(engine)?,
                };
                let record = engine.up(&repo, &branch, ttl, &actor).await.map_err(|e| e.to_string())?;
                Reply::with_follow(
                    format!("⏳ `{}`: requested branch `{branch}` of `{repo}`…", record.name),
                    Follow::Env { name: record.name.to_string(), generation: record.generation, deleting: false },
                )
            }
            Command::EnvDown { env } => {
                let env = env.ok_or("name the env: `/env down env:<name>`")?;
                let record = engine.down(&env, &actor).await.map_err(|e| e.to_string())?;
                Reply::with_follow(
                    format!("🗑 `{}`: deleting…", record.name),
                    Follow::Env { name: record.name.to_string(), generation: record.generation, deleting: true },
                )
            }
            Command::EnvList => {
                let envs = engine.list(false).await.map_err(|e| e.to_string())?;
                if envs.is_empty() {
                    Reply::text("No environments. `/env up branch:<name>` makes one.")
                } else {
                    let lines: Vec<String> = envs
                        .iter()
                        .map(|e| format!("`{}` {} ({} @ {})", e.name, e.phase.as_str(), e.branch, e.commit.as_ref().map(|c| c.short()).unwrap_or("-")))
                        .collect();
                    Reply::text(lines.join("\n"))
                }
            }
            Command::EnvStatus { env } => {
                let env = env.ok_or("name the env: `/env status env:<name>`")?;
                let status = engine.status(&env).await.map_err(|e| e.to_string())?;
                Reply::text(describe_env(&status.env))
            }
            Command::EnvLogs { env, service, tail } => {
                let env = env.ok_or("name the env: `/env logs env:<name>`")?;
                let options = envmgr::runtime::LogOptions { tail: Some(tail.unwrap_or(20).min(200)), follow: false };
                let mut stream = engine.logs(&env, service.as_deref(), options).await.map_err(|e| e.to_string())?;
                let mut text = Vec::new();
                use futures_util::StreamExt;
                while let Some(chunk) = stream.next().await {
                    text.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
                    if text.len() > 64 * 1024 {
                        break;
                    }
                }
                let text = String::from_utf8_lossy(&text).replace("```", "ʼʼʼ");
                // Keep the end: the newest lines matter.
                let tail: String = text.chars().rev().take(1800).collect::<Vec<_>>().into_iter().rev().collect();
                Reply::text(format!("```\n{tail}\n```"))
            }
            Command::EnvExtend { env, by } => {
                let env = env.ok_or("name the env: `/env extend env:<name> by:<duration>`")?;
                let record = engine.extend(&env, by, &actor).await.map_err(|e| e.to_string())?;
                let left = Duration::from_millis((record.expires_at - envmgr::store::now_ms()).max(0) as u64);
                Reply::text(format!("⏱ `{}` now expires in {}.", record.name, humantime::format_duration(Duration::from_secs(left.as_secs()))))
            }
            Command::Test { env, failed_only } => {
                let env = env.ok_or("name the env: `/test env:<name>`")?;
                let run = engine.request_test(&env, failed_only, &actor).await.map_err(|e| e.to_string())?;
                Reply::with_follow(format!("🧪 `{env}`: test run {} queued…", run.id), Follow::Run { env, id: run.id })
            }
            Command::Approve => Reply::text("`approve` is for pull requests from forks: comment `/slipway approve` on the pull request."),
        })
    }
    .await;
    result.unwrap_or_else(|e| Reply {
        text: format!("❌ {e}"),
        follow: None,
        error: Some(e),
    })
}

fn only_repo(engine: &Engine) -> Result<String, String> {
    match engine.settings().repos.as_slice() {
        [only] => Ok(only.name.to_string()),
        repos => Err(format!(
            "name the repo (`repo:`); configured: {}",
            repos
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
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
