//! The one executor behind every surface. A surface parses what was typed into a
//! [`Command`] (the grammar), says who typed it, with which role and where
//! ([`Invocation`]), and calls [`run`] with the application context: the role is checked
//! against the context's access policy, the command is carried out
//! through the engine, and both are written to the audit log. The surface then renders the
//! typed [`Outcome`] in its own way (a chat message, a PR comment, JSON, terminal output).
//!
//! Only what is truly surface-specific stays with a surface: on a pull request `env up`
//! without a branch means "this PR's head" and `approve` approves a fork's head; those use
//! [`authorize`] and [`record`] around their own code.

use std::time::Duration;

use envmgr::engine::{EngineError, EnvStatus};
use envmgr::names::{BranchName, EnvName, RepoName, ServiceName};
use envmgr::store::{EnvRecord, TestRun};
use envmgr::Engine;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::access::{self, Caller, Outcome as AuditOutcome, Refusal, Role};
use crate::app::App;
use crate::commands::{help_reply, Command, CommandKind, ParseError, RolloutVerb};
use crate::queue::{self, EntryView, QueueView};
use crate::rollout::{self, ChannelView, RolloutStatusView, RolloutView};

/// Lines of output `env logs` shows when no `tail` is given.
pub const DEFAULT_LOG_TAIL: u64 = 200;
/// The most output `env logs` returns; the newest part is kept.
pub const MAX_LOG_BYTES: usize = 1024 * 1024;

/// Who runs a command, where, and what an omitted argument means there.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub caller: Caller,
    /// The caller's role on this surface (from Discord ids and roles, the GitHub
    /// permission, or the API token).
    pub role: Role,
    /// For the audit log: `pr acme/shop#7`, `discord guild 1 channel 2`, `api`.
    pub place: String,
    /// How commands are written here, for help and hints: `"/slipway "`, `"/"`, `"slipway "`.
    pub prefix: &'static str,
    /// On a pull request: its repo and env, used when `repo` or `env` is left out.
    pub default_repo: Option<RepoName>,
    pub default_env: Option<EnvName>,
    /// On a pull request: its number, used when a queue command names no change.
    pub default_pull: Option<u64>,
}

/// What a command did, for the surface to show (the API sends it as JSON, the CLI reads it
/// back).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Help {
        text: String,
    },
    WhoAmI(WhoAmI),
    /// The env is requested; the reconciler brings it up.
    EnvUp {
        env: EnvRecord,
    },
    /// The env is marked for deletion; the reconciler removes it.
    EnvDown {
        env: EnvRecord,
    },
    EnvList {
        envs: Vec<EnvRecord>,
    },
    EnvStatus {
        status: Box<EnvStatus>,
    },
    EnvLogs(Logs),
    EnvExtend {
        env: EnvRecord,
    },
    /// `env sleep`, `env wake`, `env pin`, `env unpin`: what was asked, and the env after.
    EnvIdle {
        action: IdleAction,
        env: EnvRecord,
    },
    /// The run is queued; the reconciler runs it.
    Test {
        run: TestRun,
    },
    /// The change is in line (`queue add`); the queue reconciler tests and lands it.
    QueueAdd {
        entry: EntryView,
    },
    /// The change leaves the queue (`queue remove`).
    QueueRemove {
        entry: EntryView,
    },
    /// `queue status`.
    QueueStatus {
        entry: EntryView,
    },
    /// The failed change is back in line (`queue retry`).
    QueueRetry {
        entry: EntryView,
    },
    /// `queue list`: the queues, and their entries (live ones in landing order, then those
    /// finished in the last day, newest last).
    QueueList {
        queues: Vec<QueueView>,
        entries: Vec<EntryView>,
    },
    /// `queue pause` / `queue resume`.
    QueuePaused {
        queue: QueueView,
    },
    /// The rollout is asked for (`release`); the rollout reconciler carries it out.
    Release {
        rollout: RolloutView,
    },
    /// `rollout status`.
    RolloutStatus {
        status: Box<RolloutStatusView>,
    },
    /// `rollout pause|resume|promote|rollback|approve`: what was asked, and the rollout.
    RolloutAction {
        action: RolloutVerb,
        rollout: RolloutView,
    },
    /// `channel freeze` / `channel unfreeze`: the channels after.
    ChannelFrozen {
        channels: Vec<ChannelView>,
    },
}

/// What an idle command asked of an env.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleAction {
    Sleep,
    Wake,
    Pin,
    Unpin,
}

impl IdleAction {
    /// What the env does now, for replies: "is going to sleep", "is waking up", ...
    pub fn reply(self) -> &'static str {
        match self {
            IdleAction::Sleep => "is going to sleep (volumes kept); any use wakes it",
            IdleAction::Wake => "is waking up at the same commit",
            IdleAction::Pin => "is pinned: it never sleeps nor is deleted for being idle",
            IdleAction::Unpin => "is unpinned: it sleeps and is deleted when idle again",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub who: String,
    pub role: String,
    /// The commands the role allows, by canonical name.
    pub may_run: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Logs {
    pub env: EnvName,
    pub service: Option<ServiceName>,
    /// The newest output (at most [`MAX_LOG_BYTES`]).
    pub text: String,
    /// Whether older output was left out to stay within [`MAX_LOG_BYTES`].
    pub truncated: bool,
}

/// Why a command did not run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0} Nothing was done.")]
    Refused(Refusal),
    /// An argument this surface has no default for.
    #[error(
        "`{}` needs {what} here: `{prefix}{}`.",
        .command.name(),
        .command.usage_on(crate::commands::Syntax::for_prefix(prefix))
    )]
    Missing {
        command: CommandKind,
        what: String,
        prefix: &'static str,
    },
    /// A command that only makes sense on another surface.
    #[error("{0}")]
    NotHere(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A surface's own step failed (e.g. GitHub did not answer).
    #[error("{0:#}")]
    Failed(anyhow::Error),
}

impl CommandError {
    /// A surface's own step failed.
    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        CommandError::Failed(error.into())
    }
}

/// Checks the role, runs the command and writes the audit log entry.
pub async fn run(
    app: &App,
    invocation: &Invocation,
    command: Command,
) -> Result<Outcome, CommandError> {
    authorize(app, invocation, &command).await?;
    let text = command.to_string();
    let result = execute(app, invocation, command).await;
    record(&app.engine, invocation, &text, result.as_ref().err()).await;
    result
}

/// Refuses a command the caller's role does not allow, writing the refusal to the audit log.
pub async fn authorize(
    app: &App,
    invocation: &Invocation,
    command: &Command,
) -> Result<(), CommandError> {
    if let Err(refusal) = app.policy.check(invocation.role, command.kind()) {
        audit(
            &app.engine,
            invocation,
            &command.to_string(),
            &AuditOutcome::refused(&refusal),
        )
        .await;
        return Err(CommandError::Refused(refusal));
    }
    Ok(())
}

/// Writes how an allowed command ended to the audit log.
pub async fn record(
    engine: &Engine,
    invocation: &Invocation,
    command: &str,
    error: Option<&CommandError>,
) {
    let outcome = error.map_or(AuditOutcome::Ok, AuditOutcome::error);
    audit(engine, invocation, command, &outcome).await;
}

/// Writes a command that did not parse to the audit log.
pub async fn record_unparsed(
    store: &envmgr::store::Store,
    caller: &Caller,
    place: &str,
    error: &ParseError,
) {
    let what = error
        .command()
        .map_or("(not understood)", CommandKind::name);
    access::audit(store, caller, place, what, &AuditOutcome::error(error)).await;
}

/// How long an env has left, e.g. `3h 59m`.
pub fn time_left(env: &EnvRecord) -> String {
    let left_ms = (env.expires_at - envmgr::store::now_ms()).max(0) as u64;
    humantime::format_duration(Duration::from_secs(left_ms / 1000 / 60 * 60)).to_string()
}

async fn audit(engine: &Engine, invocation: &Invocation, command: &str, outcome: &AuditOutcome) {
    access::audit(
        engine.store(),
        &invocation.caller,
        &invocation.place,
        command,
        outcome,
    )
    .await;
}

/// The env a command names (or means, on a pull request), if it is about one env.
fn named_env(command: &Command, invocation: &Invocation) -> Option<EnvName> {
    let env = match command {
        Command::EnvDown { env }
        | Command::EnvStatus { env }
        | Command::EnvLogs { env, .. }
        | Command::EnvExtend { env, .. }
        | Command::EnvSleep { env }
        | Command::EnvWake { env }
        | Command::EnvPin { env }
        | Command::EnvUnpin { env }
        | Command::Test { env, .. } => env,
        _ => return None,
    };
    match env {
        Some(env) => EnvName::parse(env).ok(),
        None => invocation.default_env.clone(),
    }
}

/// Carries out an allowed command.
async fn execute(
    app: &App,
    invocation: &Invocation,
    command: Command,
) -> Result<Outcome, CommandError> {
    let engine = &app.engine;
    let kind = command.kind();
    let actor = invocation.caller.id.as_str();
    // Engine reads (`list`, `status`, `logs`) come redacted; records a write hands back are
    // redacted here, so no outcome carries a secret to any surface.
    let redactors = engine.redactors();
    // Checked here, once: the engine takes names, not text.
    let env_or_default = |env: Option<String>| match env {
        Some(env) => EnvName::parse(&env).map_err(|e| CommandError::from(EngineError::from(e))),
        None => invocation
            .default_env
            .clone()
            .ok_or_else(|| CommandError::Missing {
                command: kind,
                what: "the environment".into(),
                prefix: invocation.prefix,
            }),
    };
    // A command that names an env is a use of it: it keeps the env awake and alive (its
    // idle time starts again), whatever the command turns out to do.
    if let Some(named) = named_env(&command, invocation) {
        if let Err(e) = engine.record_use(&named).await {
            tracing::warn!(env = %named, error = %e, "could not record the use of an env");
        }
    }
    Ok(match command {
        Command::Help { topic } => Outcome::Help {
            text: help_reply(topic.as_deref(), invocation.prefix),
        },
        Command::WhoAmI => Outcome::WhoAmI(WhoAmI {
            who: invocation.caller.display.clone(),
            role: invocation.role.as_str().to_string(),
            may_run: app
                .policy
                .allowed_commands(invocation.role)
                .into_iter()
                .map(|kind| kind.name().to_string())
                .collect(),
        }),
        Command::EnvUp { branch, repo, ttl } => {
            let branch = branch.ok_or_else(|| CommandError::Missing {
                command: kind,
                what: "the branch".into(),
                prefix: invocation.prefix,
            })?;
            let repo = match (repo, &invocation.default_repo) {
                (Some(repo), _) => engine.repo(&repo)?,
                (None, Some(repo)) => repo.clone(),
                (None, None) => only_repo(engine, invocation)?,
            };
            let branch = BranchName::from_user(&branch).map_err(EngineError::from)?;
            let env = engine.up(&repo, &branch, ttl, actor).await?;
            Outcome::EnvUp {
                env: redactors.env(env).await,
            }
        }
        Command::EnvDown { env } => Outcome::EnvDown {
            env: redactors
                .env(engine.down(&env_or_default(env)?, actor).await?)
                .await,
        },
        Command::EnvList { all } => Outcome::EnvList {
            envs: engine.list(all).await?,
        },
        Command::EnvStatus { env } => Outcome::EnvStatus {
            status: Box::new(engine.status(&env_or_default(env)?).await?),
        },
        Command::EnvLogs { env, service, tail } => {
            let env = env_or_default(env)?;
            let service = service
                .as_deref()
                .map(ServiceName::parse)
                .transpose()
                .map_err(EngineError::from)?;
            let (text, truncated) = read_logs(engine, &env, service.as_ref(), tail).await?;
            Outcome::EnvLogs(Logs {
                env,
                service,
                text,
                truncated,
            })
        }
        Command::EnvExtend { env, by } => Outcome::EnvExtend {
            env: redactors
                .env(engine.extend(&env_or_default(env)?, by, actor).await?)
                .await,
        },
        Command::EnvSleep { env } => Outcome::EnvIdle {
            action: IdleAction::Sleep,
            env: engine.sleep(&env_or_default(env)?, actor).await?,
        },
        Command::EnvWake { env } => Outcome::EnvIdle {
            action: IdleAction::Wake,
            env: engine.wake(&env_or_default(env)?, actor).await?,
        },
        Command::EnvPin { env } => Outcome::EnvIdle {
            action: IdleAction::Pin,
            env: engine.pin(&env_or_default(env)?, true, actor).await?,
        },
        Command::EnvUnpin { env } => Outcome::EnvIdle {
            action: IdleAction::Unpin,
            env: engine.pin(&env_or_default(env)?, false, actor).await?,
        },
        Command::Test { env, failed_only } => Outcome::Test {
            run: engine
                .request_test(&env_or_default(env)?, failed_only, actor)
                .await?,
        },
        Command::QueueAdd {
            change,
            repo,
            priority,
        } => Outcome::QueueAdd {
            entry: queue::add(app, invocation, change, repo, priority).await?,
        },
        Command::QueueRemove { entry, repo } => Outcome::QueueRemove {
            entry: queue::remove(app, invocation, entry, repo).await?,
        },
        Command::QueueRetry { entry, repo } => Outcome::QueueRetry {
            entry: queue::retry(app, invocation, entry, repo).await?,
        },
        Command::QueueStatus { entry, repo } => {
            let (repo, found) = queue::find_entry(app, invocation, kind, entry, repo).await?;
            Outcome::QueueStatus {
                entry: queue::entry_view(app, repo, found.id).await?,
            }
        }
        Command::QueueList { repo } => {
            let (queues, entries) = queue::list(app, invocation, repo).await?;
            Outcome::QueueList { queues, entries }
        }
        Command::QueuePause { reason, repo } => Outcome::QueuePaused {
            queue: queue::set_paused(
                app,
                invocation,
                kind,
                repo,
                Some(reason.unwrap_or_default()),
            )
            .await?,
        },
        Command::QueueResume { repo } => Outcome::QueuePaused {
            queue: queue::set_paused(app, invocation, kind, repo, None).await?,
        },
        Command::Release {
            repo,
            target,
            channel,
        } => Outcome::Release {
            rollout: rollout::release(app, invocation, &repo, &target, channel.as_deref()).await?,
        },
        Command::Rollout {
            action: RolloutVerb::Status,
            repo,
            channel,
        } => Outcome::RolloutStatus {
            status: Box::new(
                rollout::status(app, invocation, repo.as_deref(), channel.as_deref()).await?,
            ),
        },
        Command::Rollout {
            action,
            repo,
            channel,
        } => Outcome::RolloutAction {
            action,
            rollout: rollout::act(app, invocation, action, repo.as_deref(), channel.as_deref())
                .await?,
        },
        Command::ChannelFreeze {
            reason,
            repo,
            channel,
        } => Outcome::ChannelFrozen {
            channels: rollout::set_frozen(
                app,
                invocation,
                kind,
                repo.as_deref(),
                channel.as_deref(),
                Some(reason.unwrap_or_default()),
            )
            .await?,
        },
        Command::ChannelUnfreeze { repo, channel } => Outcome::ChannelFrozen {
            channels: rollout::set_frozen(
                app,
                invocation,
                kind,
                repo.as_deref(),
                channel.as_deref(),
                None,
            )
            .await?,
        },
        Command::Approve => {
            return Err(CommandError::NotHere(
                "`approve` is for pull requests from forks: comment `/slipway approve` on the \
                 pull request."
                    .into(),
            ))
        }
    })
}

/// With one repo configured, `repo` may be left out.
fn only_repo(engine: &Engine, invocation: &Invocation) -> Result<RepoName, CommandError> {
    match engine.settings().repos.as_slice() {
        [only] => Ok(only.name.clone()),
        repos => Err(CommandError::Missing {
            command: CommandKind::EnvUp,
            what: format!(
                "the repo (configured: {})",
                repos
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            prefix: invocation.prefix,
        }),
    }
}

/// The newest output of an env (or one service), at most [`MAX_LOG_BYTES`].
async fn read_logs(
    engine: &Engine,
    env: &EnvName,
    service: Option<&ServiceName>,
    tail: Option<u64>,
) -> Result<(String, bool), EngineError> {
    let options = envmgr::runtime::LogOptions {
        tail: Some(tail.unwrap_or(DEFAULT_LOG_TAIL)),
        follow: false,
    };
    let mut stream = engine.logs(env, service, options).await?;
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    let read = async {
        while let Some(chunk) = stream.next().await {
            kept.extend_from_slice(&chunk?);
            // Keep the end: drop the oldest output in large steps, not per chunk.
            if kept.len() > 2 * MAX_LOG_BYTES {
                kept.drain(..kept.len() - MAX_LOG_BYTES);
                truncated = true;
            }
        }
        Ok::<_, EngineError>(())
    };
    // A service that keeps printing cannot hold a command forever.
    match tokio::time::timeout(Duration::from_secs(30), read).await {
        Ok(result) => result?,
        Err(_) => truncated = true,
    }
    if kept.len() > MAX_LOG_BYTES {
        kept.drain(..kept.len() - MAX_LOG_BYTES);
        truncated = true;
    }
    Ok((String::from_utf8_lossy(&kept).into_owned(), truncated))
}
