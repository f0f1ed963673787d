//! One command grammar for every surface: pull-request comments (`/slipway env up`),
//! Discord slash commands and mentions, the CLI and the HTTP API.
//!
//! Modelled on rust-lang/bors: a typed [`Command`], a small parser per command
//! ([`parse`]), typed [`ParseError`]s that render as helpful replies with a
//! did-you-mean ([`suggest`]), and help text derived from an exhaustive `match` over
//! [`CommandKind`], so a new command without help (or without an argument spec) does not
//! compile. Help and usage are generated per surface ([`Syntax`]: CLI, PR comment,
//! Discord) from the argument specs, and so is which arguments a surface must insist on
//! (those only a pull request can default) and which commands it offers at all.
//!
//! Text grammar, after the surface's prefix (`/slipway`, `@slipway`, `slipway` on the CLI):
//!
//! ```text
//! <command name> (positional | key:value | key=value | --key value | --key=value | --flag)*
//! ```
//!
//! Command names and keys are case-insensitive; values keep their case. Values with spaces
//! are quoted (`"..."`, `'...'`, or typographic quotes). Which defaults apply when an
//! optional argument is missing (e.g. "this pull request's head") is the surface's call:
//! the grammar keeps those arguments as `Option`s.

mod comment;
mod error;
#[cfg(test)]
mod fuzz;
mod parse;
mod suggest;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use comment::{parse_comment, split_words};
pub use error::ParseError;
pub use parse::{ArgKind, ArgSpec};

/// The prefix shown in help and replies for pull-request comments.
pub const COMMENT_PREFIX: &str = "/slipway ";

/// How a surface writes commands, so help and usage are generated for it from the one
/// grammar rather than shown in another surface's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// Pull-request comments: `/slipway env up [branch] [ttl:<duration>]`; the pull request
    /// supplies a missing branch or env.
    Comment,
    /// The command line (and the HTTP API's hints): `slipway env up <branch> [--ttl <duration>]`.
    Cli,
    /// Discord slash commands with named options: `/env up branch:<branch> [ttl:<duration>]`.
    Discord,
}

impl Syntax {
    /// The syntax a surface prefix stands for: `"/"` is Discord's slash commands, a prefix
    /// without a leading slash (`"slipway "`) the CLI, anything else a comment prefix.
    pub fn for_prefix(prefix: &str) -> Syntax {
        if prefix == "/" {
            Syntax::Discord
        } else if !prefix.starts_with('/') && !prefix.starts_with('@') {
            Syntax::Cli
        } else {
            Syntax::Comment
        }
    }
}

/// A parsed command, the same whichever surface it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `env up [branch] [repo:<repo>] [ttl:<duration>]`; on a pull request no branch means
    /// the PR's head, elsewhere the surface must insist on one.
    EnvUp {
        branch: Option<String>,
        repo: Option<String>,
        ttl: Option<Duration>,
    },
    /// `env down [env]`; on a pull request no env means the PR's.
    EnvDown { env: Option<String> },
    /// `env list [--all]`; `all` includes deleted environments.
    EnvList { all: bool },
    /// `env status [env]`
    EnvStatus { env: Option<String> },
    /// `env logs [env] [service:<service>] [tail:<lines>]`
    EnvLogs {
        env: Option<String>,
        service: Option<String>,
        tail: Option<u64>,
    },
    /// `env extend [env] by:<duration>`
    EnvExtend { env: Option<String>, by: Duration },
    /// `env sleep [env]`
    EnvSleep { env: Option<String> },
    /// `env wake [env]`
    EnvWake { env: Option<String> },
    /// `env pin [env]`
    EnvPin { env: Option<String> },
    /// `env unpin [env]`
    EnvUnpin { env: Option<String> },
    /// `test [env] [--failed]`
    Test {
        env: Option<String>,
        failed_only: bool,
    },
    /// `approve`: approve a fork pull request's current head commit.
    Approve,
    /// `queue add [change] [pr:<n>] [branch:<b>] [repo:<repo>] [priority:<n>]`; on a pull
    /// request no change means the pull request (`/slipway merge` is the same).
    QueueAdd {
        change: Option<QueueRef>,
        repo: Option<String>,
        priority: Option<u64>,
    },
    /// `queue remove [entry] [repo:<repo>]`
    QueueRemove {
        entry: Option<QueueRef>,
        repo: Option<String>,
    },
    /// `queue list [repo:<repo>]`
    QueueList { repo: Option<String> },
    /// `queue status [entry] [repo:<repo>]`
    QueueStatus {
        entry: Option<QueueRef>,
        repo: Option<String>,
    },
    /// `queue pause [reason...] [repo:<repo>]`
    QueuePause {
        reason: Option<String>,
        repo: Option<String>,
    },
    /// `queue resume [repo:<repo>]`
    QueueResume { repo: Option<String> },
    /// `queue retry [entry] [repo:<repo>]`
    QueueRetry {
        entry: Option<QueueRef>,
        repo: Option<String>,
    },
    /// `release <repo> <commit|branch> [channel:<c>]`: roll a version out through a channel
    /// (the first one when none is named).
    Release {
        repo: String,
        target: String,
        channel: Option<String>,
    },
    /// `rollout status|pause|resume|promote|rollback|approve [repo] [channel:<c>]`.
    Rollout {
        action: RolloutVerb,
        repo: Option<String>,
        channel: Option<String>,
    },
    /// `channel freeze [reason...] [repo:<repo>] [channel:<c>]`: nothing starts or advances
    /// in the channel until `channel unfreeze`.
    ChannelFreeze {
        reason: Option<String>,
        repo: Option<String>,
        channel: Option<String>,
    },
    /// `channel unfreeze [repo:<repo>] [channel:<c>]`.
    ChannelUnfreeze {
        repo: Option<String>,
        channel: Option<String>,
    },
    /// `help [command]`; the topic is a canonical command name (`"env up"`) or `"env"`.
    Help { topic: Option<String> },
    /// `whoami`
    WhoAmI,
}

/// The `rollout` subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutVerb {
    Status,
    Pause,
    Resume,
    Promote,
    Rollback,
    Approve,
}

impl RolloutVerb {
    pub const fn kind(self) -> CommandKind {
        match self {
            RolloutVerb::Status => CommandKind::RolloutStatus,
            RolloutVerb::Pause => CommandKind::RolloutPause,
            RolloutVerb::Resume => CommandKind::RolloutResume,
            RolloutVerb::Promote => CommandKind::RolloutPromote,
            RolloutVerb::Rollback => CommandKind::RolloutRollback,
            RolloutVerb::Approve => CommandKind::RolloutApprove,
        }
    }
}

/// A change (or its queue entry) as someone named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRef {
    /// A bare number: a pull request, or else an entry's number (`queue status 7`).
    Number(u64),
    /// `#42` or `pr:42`: a pull request.
    Pull(u64),
    /// Anything else: a branch.
    Branch(String),
}

impl QueueRef {
    /// `42`, `#42`, or a branch name.
    pub fn parse(text: &str) -> QueueRef {
        if let Some(n) = text.strip_prefix('#').and_then(|n| n.parse().ok()) {
            return QueueRef::Pull(n);
        }
        match text.parse() {
            Ok(n) => QueueRef::Number(n),
            Err(_) => QueueRef::Branch(text.to_owned()),
        }
    }
}

impl fmt::Display for QueueRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueueRef::Number(n) => write!(f, "{n}"),
            QueueRef::Pull(n) => write!(f, "#{n}"),
            QueueRef::Branch(b) => f.write_str(b),
        }
    }
}

/// The commands without their arguments: the unit that help, usage and argument specs
/// hang off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    EnvUp,
    EnvDown,
    EnvList,
    EnvStatus,
    EnvLogs,
    EnvExtend,
    EnvSleep,
    EnvWake,
    EnvPin,
    EnvUnpin,
    Test,
    Approve,
    QueueAdd,
    QueueRemove,
    QueueList,
    QueueStatus,
    QueuePause,
    QueueResume,
    QueueRetry,
    Release,
    RolloutStatus,
    RolloutPause,
    RolloutResume,
    RolloutPromote,
    RolloutRollback,
    RolloutApprove,
    ChannelFreeze,
    ChannelUnfreeze,
    Help,
    WhoAmI,
}

/// Name, usage and one-line description of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandInfo {
    /// The canonical name, e.g. `"env up"`.
    pub name: &'static str,
    /// Usage without any prefix, starting with the name.
    pub usage: &'static str,
    /// One line, ending with a full stop.
    pub summary: &'static str,
}

/// The group of the two-word commands (`env up`, `env down`, ...).
pub const ENV_GROUP: &str = "env";
/// The submit queue's commands (`queue add`, `queue list`, ...).
pub const QUEUE_GROUP: &str = "queue";
/// Monitored rollouts (`rollout status`, `rollout rollback`, ...).
pub const ROLLOUT_GROUP: &str = "rollout";
/// Release channels (`channel freeze`, `channel unfreeze`).
pub const CHANNEL_GROUP: &str = "channel";
/// Every group of two-word commands.
pub const GROUPS: [&str; 4] = [ENV_GROUP, QUEUE_GROUP, ROLLOUT_GROUP, CHANNEL_GROUP];

impl CommandKind {
    /// Every kind, in help order. When adding a variant, add it here too: `index` (an
    /// exhaustive match) will not compile until it has a place, and a const check below
    /// keeps the two in step.
    pub const ALL: [CommandKind; 30] = [
        CommandKind::EnvUp,
        CommandKind::EnvDown,
        CommandKind::EnvList,
        CommandKind::EnvStatus,
        CommandKind::EnvLogs,
        CommandKind::EnvExtend,
        CommandKind::EnvSleep,
        CommandKind::EnvWake,
        CommandKind::EnvPin,
        CommandKind::EnvUnpin,
        CommandKind::Test,
        CommandKind::Approve,
        CommandKind::QueueAdd,
        CommandKind::QueueRemove,
        CommandKind::QueueList,
        CommandKind::QueueStatus,
        CommandKind::QueuePause,
        CommandKind::QueueResume,
        CommandKind::QueueRetry,
        CommandKind::Release,
        CommandKind::RolloutStatus,
        CommandKind::RolloutPause,
        CommandKind::RolloutResume,
        CommandKind::RolloutPromote,
        CommandKind::RolloutRollback,
        CommandKind::RolloutApprove,
        CommandKind::ChannelFreeze,
        CommandKind::ChannelUnfreeze,
        CommandKind::Help,
        CommandKind::WhoAmI,
    ];

    /// The position of this kind in [`CommandKind::ALL`].
    pub const fn index(self) -> usize {
        match self {
            CommandKind::EnvUp => 0,
            CommandKind::EnvDown => 1,
            CommandKind::EnvList => 2,
            CommandKind::EnvStatus => 3,
            CommandKind::EnvLogs => 4,
            CommandKind::EnvExtend => 5,
            CommandKind::EnvSleep => 6,
            CommandKind::EnvWake => 7,
            CommandKind::EnvPin => 8,
            CommandKind::EnvUnpin => 9,
            CommandKind::Test => 10,
            CommandKind::Approve => 11,
            CommandKind::QueueAdd => 12,
            CommandKind::QueueRemove => 13,
            CommandKind::QueueList => 14,
            CommandKind::QueueStatus => 15,
            CommandKind::QueuePause => 16,
            CommandKind::QueueResume => 17,
            CommandKind::QueueRetry => 18,
            CommandKind::Release => 19,
            CommandKind::RolloutStatus => 20,
            CommandKind::RolloutPause => 21,
            CommandKind::RolloutResume => 22,
            CommandKind::RolloutPromote => 23,
            CommandKind::RolloutRollback => 24,
            CommandKind::RolloutApprove => 25,
            CommandKind::ChannelFreeze => 26,
            CommandKind::ChannelUnfreeze => 27,
            CommandKind::Help => 28,
            CommandKind::WhoAmI => 29,
        }
    }

    /// Name, usage and description. An exhaustive match: a new kind needs its help here.
    pub const fn info(self) -> CommandInfo {
        const fn info(
            name: &'static str,
            usage: &'static str,
            summary: &'static str,
        ) -> CommandInfo {
            CommandInfo {
                name,
                usage,
                summary,
            }
        }
        match self {
            CommandKind::EnvUp => info(
                "env up",
                "env up [branch] [repo:<repo>] [ttl:<duration>]",
                "Create an environment for a branch, or move it to the branch's newest commit \
                 (on a pull request the branch defaults to its head).",
            ),
            CommandKind::EnvDown => info(
                "env down",
                "env down [env]",
                "Delete an environment (on a pull request: the pull request's own).",
            ),
            CommandKind::EnvList => info(
                "env list",
                "env list [--all]",
                "List the environments, deleted ones too when asked.",
            ),
            CommandKind::EnvStatus => info(
                "env status",
                "env status [env]",
                "Show an environment's phase, services and URLs.",
            ),
            CommandKind::EnvLogs => info(
                "env logs",
                "env logs [env] [service:<service>] [tail:<lines>]",
                "Show an environment's recent output, optionally of one service.",
            ),
            CommandKind::EnvExtend => info(
                "env extend",
                "env extend [env] by:<duration>",
                "Keep an environment alive for longer.",
            ),
            CommandKind::EnvSleep => info(
                "env sleep",
                "env sleep [env]",
                "Stop an environment's containers (volumes kept) until it is used again.",
            ),
            CommandKind::EnvWake => info(
                "env wake",
                "env wake [env]",
                "Start a sleeping environment again, at the same commit.",
            ),
            CommandKind::EnvPin => info(
                "env pin",
                "env pin [env]",
                "Keep an environment from sleeping or being deleted for being idle.",
            ),
            CommandKind::EnvUnpin => info(
                "env unpin",
                "env unpin [env]",
                "Let a pinned environment sleep and be deleted when idle again.",
            ),
            CommandKind::Test => info(
                "test",
                "test [env] [--failed]",
                "Run the tests against an environment, or rerun only the ones that failed.",
            ),
            CommandKind::Approve => info(
                "approve",
                "approve",
                "Allow CI and environments for this fork pull request's current head commit.",
            ),
            CommandKind::QueueAdd => info(
                "queue add",
                "queue add [change] [pr:<pr>] [branch:<branch>] [repo:<repo>] [priority:<priority>]",
                "Put a change in the submit queue: it lands on the target branch once the exact \
                 merged tree passed the tests (on a pull request, `merge` does the same).",
            ),
            CommandKind::QueueRemove => info(
                "queue remove",
                "queue remove [entry] [repo:<repo>]",
                "Take a change out of the submit queue.",
            ),
            CommandKind::QueueList => info(
                "queue list",
                "queue list [repo:<repo>]",
                "Show the submit queue: position, change, state, since when and ETA.",
            ),
            CommandKind::QueueStatus => info(
                "queue status",
                "queue status [entry] [repo:<repo>]",
                "Show one change in the submit queue: where it is, its candidate, why it failed.",
            ),
            CommandKind::QueuePause => info(
                "queue pause",
                "queue pause [reason] [repo:<repo>]",
                "Close the tree: nothing lands until `queue resume` (tests may still run).",
            ),
            CommandKind::QueueResume => info(
                "queue resume",
                "queue resume [repo:<repo>]",
                "Open the tree again after `queue pause`.",
            ),
            CommandKind::QueueRetry => info(
                "queue retry",
                "queue retry [entry] [repo:<repo>]",
                "Put a change that failed in the submit queue back in line.",
            ),
            CommandKind::Release => info(
                "release",
                "release repo target [channel:<channel>]",
                "Roll a commit or branch out through a release channel (the first when none is \
                 named), step by step, compared live with the version it replaces.",
            ),
            CommandKind::RolloutStatus => info(
                "rollout status",
                "rollout status [repo] [channel:<channel>]",
                "Show a channel's rollout: step, weights, canary vs baseline, and why it waits.",
            ),
            CommandKind::RolloutPause => info(
                "rollout pause",
                "rollout pause [repo] [channel:<channel>]",
                "Hold the rollout at its current step (traffic stays as it is).",
            ),
            CommandKind::RolloutResume => info(
                "rollout resume",
                "rollout resume [repo] [channel:<channel>]",
                "Let a paused rollout go on.",
            ),
            CommandKind::RolloutPromote => info(
                "rollout promote",
                "rollout promote [repo] [channel:<channel>]",
                "Skip the remaining steps: move the channel to the new version now.",
            ),
            CommandKind::RolloutRollback => info(
                "rollout rollback",
                "rollout rollback [repo] [channel:<channel>]",
                "Send all traffic back to the old version at once and remove the canary.",
            ),
            CommandKind::RolloutApprove => info(
                "rollout approve",
                "rollout approve [repo] [channel:<channel>]",
                "Approve the next step of a channel that requires approval (you are recorded).",
            ),
            CommandKind::ChannelFreeze => info(
                "channel freeze",
                "channel freeze [reason] [repo:<repo>] [channel:<channel>]",
                "Ban rollouts in a channel until `channel unfreeze` (running ones hold).",
            ),
            CommandKind::ChannelUnfreeze => info(
                "channel unfreeze",
                "channel unfreeze [repo:<repo>] [channel:<channel>]",
                "Lift a channel's freeze.",
            ),
            CommandKind::Help => info(
                "help",
                "help [command]",
                "Show this help, or the details of one command.",
            ),
            CommandKind::WhoAmI => info(
                "whoami",
                "whoami",
                "Show who Slipway thinks you are and what you may do.",
            ),
        }
    }

    /// The canonical name, e.g. `"env up"`.
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The spec's usage line, in PR-comment syntax, e.g. `"env down [env]"`; surfaces
    /// show [`CommandKind::usage_on`], and tests check the two agree.
    #[cfg(test)]
    pub const fn usage(self) -> &'static str {
        self.info().usage
    }

    /// The kind with this name; case and runs of whitespace do not matter.
    pub fn from_name(name: &str) -> Option<CommandKind> {
        let name = normalize_name(name);
        CommandKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }

    /// Whether the command means anything on a surface written in `syntax`. An exhaustive
    /// match: a new command has to say where it belongs.
    pub const fn available_on(self, syntax: Syntax) -> bool {
        match self {
            // Approves a fork pull request's head: only a comment on that pull request says
            // which one.
            CommandKind::Approve => matches!(syntax, Syntax::Comment),
            CommandKind::QueueAdd
            | CommandKind::QueueRemove
            | CommandKind::QueueList
            | CommandKind::QueueStatus
            | CommandKind::QueuePause
            | CommandKind::QueueResume
            | CommandKind::QueueRetry
            | CommandKind::Release
            | CommandKind::RolloutStatus
            | CommandKind::RolloutPause
            | CommandKind::RolloutResume
            | CommandKind::RolloutPromote
            | CommandKind::RolloutRollback
            | CommandKind::RolloutApprove
            | CommandKind::ChannelFreeze
            | CommandKind::ChannelUnfreeze
            | CommandKind::EnvUp
            | CommandKind::EnvDown
            | CommandKind::EnvList
            | CommandKind::EnvStatus
            | CommandKind::EnvLogs
            | CommandKind::EnvExtend
            | CommandKind::EnvSleep
            | CommandKind::EnvWake
            | CommandKind::EnvPin
            | CommandKind::EnvUnpin
            | CommandKind::Test
            | CommandKind::Help
            | CommandKind::WhoAmI => true,
        }
    }

    /// Usage without a prefix, in `syntax`, generated from the argument specs:
    /// `env up <branch> [--repo <repo>] [--ttl <duration>]` on the CLI,
    /// `env up branch:<branch> [repo:<repo>] [ttl:<duration>]` on Discord.
    pub fn usage_on(self, syntax: Syntax) -> String {
        let mut usage = self.name().to_owned();
        let mut args: Vec<&ArgSpec> = self.args().iter().collect();
        // Discord lists required options first; the text forms keep the spec's order.
        if syntax == Syntax::Discord {
            args.sort_by_key(|arg| !arg.required_on(syntax));
        }
        for arg in args {
            let placeholder = match arg.kind {
                ArgKind::Duration => "duration".to_owned(),
                ArgKind::Count if arg.name == "tail" => "lines".to_owned(),
                ArgKind::Topic => "command".to_owned(),
                ArgKind::Count => arg.name.to_owned(),
                ArgKind::Text | ArgKind::Flag | ArgKind::Reason => arg.name.to_owned(),
            };
            let word = match (syntax, arg.kind) {
                (Syntax::Discord, ArgKind::Flag) => format!("{}:True", arg.name),
                (_, ArgKind::Flag) => format!("--{}", arg.name),
                (Syntax::Discord, _) => format!("{}:<{placeholder}>", arg.name),
                (Syntax::Cli, ArgKind::Topic) => "<command>".to_owned(),
                (_, ArgKind::Topic) => "command".to_owned(),
                (Syntax::Cli, _) if arg.positional => format!("<{}>", arg.name),
                (Syntax::Comment, _) if arg.positional => arg.name.to_owned(),
                (Syntax::Cli, _) => format!("--{} <{placeholder}>", arg.name),
                (Syntax::Comment, _) => format!("{}:<{placeholder}>", arg.name),
            };
            let required = arg.required_on(syntax);
            usage.push(' ');
            if required {
                usage.push_str(&word);
            } else {
                usage.push_str(&format!("[{word}]"));
            }
        }
        usage
    }

    /// The `env` subcommand word (`"up"`), or `None` for other commands.
    pub fn env_subcommand(self) -> Option<&'static str> {
        self.subcommand_of(ENV_GROUP)
    }

    /// The subcommand word of `group` (`"add"` of `queue add`), or `None`.
    pub fn subcommand_of(self, group: &str) -> Option<&'static str> {
        self.name()
            .strip_prefix(group)
            .and_then(|rest| rest.strip_prefix(' '))
    }

    /// The group and subcommand (`("queue", "add")`), or `None` for one-word commands.
    pub fn group(self) -> Option<(&'static str, &'static str)> {
        GROUPS
            .into_iter()
            .find_map(|group| Some((group, self.subcommand_of(group)?)))
    }
}

// `ALL` lists each kind once, at its `index`.
const _: () = {
    let mut i = 0;
    while i < CommandKind::ALL.len() {
        assert!(CommandKind::ALL[i].index() == i);
        i += 1;
    }
};

impl Command {
    /// What kind of command this is. Exhaustive: a new variant needs a kind.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::EnvUp { .. } => CommandKind::EnvUp,
            Command::EnvDown { .. } => CommandKind::EnvDown,
            Command::EnvList { .. } => CommandKind::EnvList,
            Command::EnvStatus { .. } => CommandKind::EnvStatus,
            Command::EnvLogs { .. } => CommandKind::EnvLogs,
            Command::EnvExtend { .. } => CommandKind::EnvExtend,
            Command::EnvSleep { .. } => CommandKind::EnvSleep,
            Command::EnvWake { .. } => CommandKind::EnvWake,
            Command::EnvPin { .. } => CommandKind::EnvPin,
            Command::EnvUnpin { .. } => CommandKind::EnvUnpin,
            Command::Test { .. } => CommandKind::Test,
            Command::Approve => CommandKind::Approve,
            Command::QueueAdd { .. } => CommandKind::QueueAdd,
            Command::QueueRemove { .. } => CommandKind::QueueRemove,
            Command::QueueList { .. } => CommandKind::QueueList,
            Command::QueueStatus { .. } => CommandKind::QueueStatus,
            Command::QueuePause { .. } => CommandKind::QueuePause,
            Command::QueueResume { .. } => CommandKind::QueueResume,
            Command::QueueRetry { .. } => CommandKind::QueueRetry,
            Command::Release { .. } => CommandKind::Release,
            Command::Rollout { action, .. } => action.kind(),
            Command::ChannelFreeze { .. } => CommandKind::ChannelFreeze,
            Command::ChannelUnfreeze { .. } => CommandKind::ChannelUnfreeze,
            Command::Help { .. } => CommandKind::Help,
            Command::WhoAmI => CommandKind::WhoAmI,
        }
    }

    /// The canonical name, e.g. `"env up"`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The canonical text form, which parses back to the same command. Used in logs and
    /// audit entries ("ran `env up feature-x ttl:4h`").
    fn argument_words(&self) -> Vec<String> {
        let mut words = Words::default();
        match self {
            Command::EnvUp { branch, repo, ttl } => {
                words.positional("branch", branch.as_deref());
                words.keyed("repo", repo.as_deref());
                words.duration("ttl", *ttl);
            }
            Command::EnvDown { env }
            | Command::EnvStatus { env }
            | Command::EnvSleep { env }
            | Command::EnvWake { env }
            | Command::EnvPin { env }
            | Command::EnvUnpin { env } => {
                words.positional("env", env.as_deref());
            }
            Command::EnvList { all } => {
                if *all {
                    words.0.push("--all".to_owned());
                }
            }
            Command::Approve | Command::WhoAmI => {}
            Command::EnvLogs { env, service, tail } => {
                words.positional("env", env.as_deref());
                words.keyed("service", service.as_deref());
                words.keyed("tail", tail.map(|n| n.to_string()).as_deref());
            }
            Command::EnvExtend { env, by } => {
                words.positional("env", env.as_deref());
                words.duration("by", Some(*by));
            }
            Command::Test { env, failed_only } => {
                words.positional("env", env.as_deref());
                if *failed_only {
                    words.0.push("--failed".to_owned());
                }
            }
            Command::Help { topic } => {
                if let Some(topic) = topic {
                    words.0.extend(topic.split_whitespace().map(str::to_owned));
                }
            }
            Command::QueueAdd {
                change,
                repo,
                priority,
            } => {
                words.queue_ref("change", change.as_ref());
                words.keyed("repo", repo.as_deref());
                words.keyed("priority", priority.map(|p| p.to_string()).as_deref());
            }
            Command::QueueRemove { entry, repo }
            | Command::QueueStatus { entry, repo }
            | Command::QueueRetry { entry, repo } => {
                words.queue_ref("entry", entry.as_ref());
                words.keyed("repo", repo.as_deref());
            }
            Command::QueueList { repo } | Command::QueueResume { repo } => {
                words.keyed("repo", repo.as_deref());
            }
            Command::QueuePause { reason, repo } => {
                words.keyed("reason", reason.as_deref());
                words.keyed("repo", repo.as_deref());
            }
            Command::Release {
                repo,
                target,
                channel,
            } => {
                words.positional("repo", Some(repo));
                words.positional("target", Some(target));
                words.keyed("channel", channel.as_deref());
            }
            Command::Rollout { repo, channel, .. } => {
                words.positional("repo", repo.as_deref());
                words.keyed("channel", channel.as_deref());
            }
            Command::ChannelFreeze {
                reason,
                repo,
                channel,
            } => {
                words.keyed("reason", reason.as_deref());
                words.keyed("repo", repo.as_deref());
                words.keyed("channel", channel.as_deref());
            }
            Command::ChannelUnfreeze { repo, channel } => {
                words.keyed("repo", repo.as_deref());
                words.keyed("channel", channel.as_deref());
            }
        }
        words.0
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        for word in self.argument_words() {
            write!(f, " {word}")?;
        }
        Ok(())
    }
}

/// Builds the canonical argument words of a command.
#[derive(Default)]
struct Words(Vec<String>);

impl Words {
    fn positional(&mut self, key: &str, value: Option<&str>) {
        let Some(value) = value else { return };
        let plain = !value.is_empty()
            && !value.starts_with(['-', '\u{2013}', '\u{2014}'])
            && !value.contains([':', '='])
            && !value
                .chars()
                .any(|c| c.is_whitespace() || comment::is_quote(c));
        if plain {
            self.0.push(value.to_owned());
        } else {
            self.keyed(key, Some(value));
        }
    }

    fn keyed(&mut self, key: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.0.push(format!("{key}:{}", quote_if_needed(value)));
        }
    }

    /// A change: `#42` for a pull request, the plain word otherwise.
    fn queue_ref(&mut self, key: &str, value: Option<&QueueRef>) {
        match value {
            Some(QueueRef::Pull(n)) => self.0.push(format!("#{n}")),
            Some(QueueRef::Number(n)) => self.0.push(n.to_string()),
            Some(QueueRef::Branch(b)) if b.parse::<u64>().is_ok() || b.starts_with('#') => {
                self.0.push(format!("branch:{}", quote_if_needed(b)))
            }
            Some(QueueRef::Branch(b)) => self.positional(key, Some(b)),
            None => {}
        }
    }

    fn duration(&mut self, key: &str, value: Option<Duration>) {
        let value = value.map(|d| humantime::format_duration(d).to_string());
        self.keyed(key, value.as_deref());
    }
}

fn quote_if_needed(value: &str) -> String {
    // A quote opens a quoted part at the start of a value, and after a `:` or `=` in it.
    let opens_quote = value
        .chars()
        .zip(value.chars().skip(1))
        .any(|(a, b)| matches!(a, ':' | '=') && comment::is_quote(b));
    let needs = value.is_empty()
        || value.chars().any(char::is_whitespace)
        || value.starts_with(comment::is_quote)
        || opens_quote;
    if !needs {
        value.to_owned()
    } else if value.contains('"') {
        format!("'{value}'")
    } else {
        format!("\"{value}\"")
    }
}

/// Lower case, single spaces, no surrounding whitespace.
fn normalize_name(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Markdown help listing every command, with the surface's prefix (`"/slipway "` in
/// comments, `"slipway "` on the CLI, `"/"` for Discord slash commands).
pub fn help_text_for(prefix: &str) -> String {
    let syntax = Syntax::for_prefix(prefix);
    let mut text = String::from("**Slipway commands**\n\n");
    if syntax == Syntax::Discord {
        // A Discord message holds 2,000 characters: the queue's commands get one line, and
        // `/help topic:queue` has the rest.
        const COLLAPSED: [(&str, &str); 3] = [
            (QUEUE_GROUP, "the submit queue"),
            (ROLLOUT_GROUP, "monitored rollouts"),
            (CHANNEL_GROUP, "release channels"),
        ];
        let env_and_others = CommandKind::ALL.into_iter().filter(|kind| {
            COLLAPSED
                .iter()
                .all(|(group, _)| kind.subcommand_of(group).is_none())
        });
        text.push_str(&command_list(prefix, env_and_others));
        for (group, about) in COLLAPSED {
            let subcommands: Vec<&str> = CommandKind::ALL
                .into_iter()
                .filter_map(|kind| kind.subcommand_of(group))
                .collect();
            text.push_str(&format!(
                "- `{prefix}{group} {}`: {about} (`{prefix}help topic:{group}`).\n",
                subcommands.join("|")
            ));
        }
    } else {
        text.push_str(&command_list(prefix, CommandKind::ALL));
    }
    let notes = match syntax {
        Syntax::Comment => {
            "Arguments are written `key:value` (`key=value` and `--key value` work \
                            too); quote values with spaces."
        }
        Syntax::Cli => {
            "Options are written `--key value` (`key:value` works too); quote values \
                        with spaces."
        }
        Syntax::Discord => "Discord prompts for each option; those in `[...]` are optional.",
    };
    let help = match syntax {
        Syntax::Discord => format!("`{prefix}help topic:<command>`"),
        _ => format!("`{prefix}help <command>`"),
    };
    text.push_str(&format!(
        "\n{notes} Durations look like `30m`, `4h` or `2d`. {help} explains one command.\n"
    ));
    text
}

/// Markdown help for one topic: a command name (`"env up"`) or the `"env"` group.
pub fn help_topic(topic: &str, prefix: &str) -> Option<String> {
    let topic = normalize_name(topic);
    if let Some(group) = GROUPS.into_iter().find(|g| *g == topic) {
        let commands = CommandKind::ALL
            .into_iter()
            .filter(|kind| kind.subcommand_of(group).is_some());
        let title = match group {
            ENV_GROUP => "Environment commands",
            QUEUE_GROUP => "Submit queue commands",
            ROLLOUT_GROUP => "Rollout commands",
            _ => "Release channel commands",
        };
        // command_list keeps only what this surface has.
        return Some(format!("**{title}**\n\n{}", command_list(prefix, commands)));
    }
    let kind = CommandKind::from_name(&topic)?;
    Some(command_help(kind, prefix))
}

/// The reply to a [`Command::Help`].
pub fn help_reply(topic: Option<&str>, prefix: &str) -> String {
    topic
        .and_then(|topic| help_topic(topic, prefix))
        .unwrap_or_else(|| help_text_for(prefix))
}

/// Usage, description and arguments of one command.
fn command_help(kind: CommandKind, prefix: &str) -> String {
    let syntax = Syntax::for_prefix(prefix);
    let info = kind.info();
    let mut text = format!("`{prefix}{}`\n\n{}\n", kind.usage_on(syntax), info.summary);
    if !kind.available_on(syntax) {
        text.push_str("\nOnly in a comment on a pull request (`/slipway approve`).\n");
    }
    let arguments = argument_list(kind, syntax);
    if !arguments.is_empty() {
        text.push('\n');
        text.push_str(&arguments);
    }
    text
}

/// "Usage: ..." plus the argument list, shown under errors about one command.
fn usage_block(kind: CommandKind, prefix: &str) -> String {
    let syntax = Syntax::for_prefix(prefix);
    let mut text = format!("Usage: `{prefix}{}`\n", kind.usage_on(syntax));
    let arguments = argument_list(kind, syntax);
    if !arguments.is_empty() {
        text.push('\n');
        text.push_str(&arguments);
    }
    text
}

fn argument_list(kind: CommandKind, syntax: Syntax) -> String {
    kind.args()
        .iter()
        .map(|arg| {
            let requirement = if arg.required_on(syntax) {
                " (required)"
            } else {
                ""
            };
            format!("- `{}`{requirement}: {}\n", arg.name, arg.about_on(syntax))
        })
        .collect()
}

/// One line per command this surface has, in its syntax.
fn command_list(prefix: &str, kinds: impl IntoIterator<Item = CommandKind>) -> String {
    let syntax = Syntax::for_prefix(prefix);
    kinds
        .into_iter()
        .filter(|kind| kind.available_on(syntax))
        .map(|kind| {
            let info = kind.info();
            format!("- `{prefix}{}`: {}\n", kind.usage_on(syntax), info.summary)
        })
        .collect()
}
