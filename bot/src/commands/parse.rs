//! Words → [`Command`]: one argument spec per command, shared by the text forms
//! (PR comments, Discord mentions, CLI, HTTP API) and Discord's named options.

use std::time::Duration;

use super::error::ParseError;
use super::suggest;
use super::{normalize_name, Command, CommandKind, QueueRef, RolloutVerb, GROUPS};

/// What an argument's value is parsed as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// A name (branch, env, repo, service): non-empty, no whitespace, no control or
    /// invisible characters. The engine validates it properly later.
    Text,
    /// A `humantime` duration such as `4h` or `1h 30m`, greater than zero.
    Duration,
    /// A whole number (`u64`).
    Count,
    /// `--flag`, or `flag:true` / `flag:false` (also yes/no, on/off, 1/0).
    Flag,
    /// The rest of the plain words, naming a command (`help env up`).
    Topic,
    /// The rest of the plain words, as free text (`queue pause release freeze`).
    Reason,
}

impl ArgKind {
    /// Takes every plain word after the command.
    pub const fn takes_rest(self) -> bool {
        matches!(self, ArgKind::Topic | ArgKind::Reason)
    }
}

/// One argument of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArgSpec {
    /// The key (`ttl`), also the name of a positional (`branch`) and of the Discord option.
    pub name: &'static str,
    pub kind: ArgKind,
    /// Whether it may be given as a plain word (it may always be given as `name:value`).
    pub positional: bool,
    /// Required everywhere: no surface can supply it.
    pub required: bool,
    /// Missing on a pull-request comment, the pull request supplies it (its head branch,
    /// its env). No other surface has such a context, so there the argument is required:
    /// see [`ArgSpec::required_on`].
    pub pr_default: bool,
    /// Shown in help and under errors.
    pub about: &'static str,
}

const fn positional(name: &'static str, kind: ArgKind, about: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        positional: true,
        required: false,
        pr_default: false,
        about,
    }
}

/// A positional that a pull request can default and every other surface must be given.
const fn pr_defaulted(name: &'static str, kind: ArgKind, about: &'static str) -> ArgSpec {
    ArgSpec {
        pr_default: true,
        ..positional(name, kind, about)
    }
}

/// A positional every surface must be given.
const fn positional_required(name: &'static str, kind: ArgKind, about: &'static str) -> ArgSpec {
    ArgSpec {
        required: true,
        ..positional(name, kind, about)
    }
}

const fn optional(name: &'static str, kind: ArgKind, about: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        positional: false,
        required: false,
        pr_default: false,
        about,
    }
}

const fn required(name: &'static str, kind: ArgKind, about: &'static str) -> ArgSpec {
    ArgSpec {
        name,
        kind,
        positional: false,
        required: true,
        pr_default: false,
        about,
    }
}

impl ArgSpec {
    /// Whether `syntax`'s surface must insist on this argument: always for a required one,
    /// and for one only a pull request can default wherever there is no pull request.
    pub const fn required_on(&self, syntax: super::Syntax) -> bool {
        self.required || (self.pr_default && !matches!(syntax, super::Syntax::Comment))
    }

    /// The description for `syntax`: where no pull request can default the argument, the
    /// note saying what a pull request defaults it to is left out.
    pub fn about_on(&self, syntax: super::Syntax) -> &'static str {
        match self.about.split_once(" (on a pull request") {
            Some((about, _)) if self.pr_default && !matches!(syntax, super::Syntax::Comment) => {
                about
            }
            _ => self.about,
        }
    }
}

const ENV: ArgSpec = pr_defaulted(
    "env",
    ArgKind::Text,
    "the environment (on a pull request: defaults to the pull request's own)",
);
const ENV_UP: &[ArgSpec] = &[
    pr_defaulted(
        "branch",
        ArgKind::Text,
        "the branch to deploy (on a pull request: defaults to its head)",
    ),
    optional(
        "repo",
        ArgKind::Text,
        "the repository, when Slipway serves several",
    ),
    optional(
        "ttl",
        ArgKind::Duration,
        "how long the environment lives, e.g. `4h`",
    ),
];
const ENV_ONLY: &[ArgSpec] = &[ENV];
const ENV_LOGS: &[ArgSpec] = &[
    ENV,
    optional("service", ArgKind::Text, "only this service's output"),
    optional(
        "tail",
        ArgKind::Count,
        "only the last this many lines (default 200)",
    ),
];
const ENV_EXTEND: &[ArgSpec] = &[
    ENV,
    required("by", ArgKind::Duration, "how much longer, e.g. `4h`"),
];
const TEST: &[ArgSpec] = &[
    ENV,
    optional(
        "failed",
        ArgKind::Flag,
        "rerun only the tests that failed last time",
    ),
];
const ENV_LIST: &[ArgSpec] = &[optional(
    "all",
    ArgKind::Flag,
    "include deleted environments",
)];
const REPO: ArgSpec = optional(
    "repo",
    ArgKind::Text,
    "the repository, when Slipway serves several",
);
const QUEUE_ADD: &[ArgSpec] = &[
    positional(
        "change",
        ArgKind::Text,
        "a pull request number (`42`) or a branch (on a pull request: defaults to it)",
    ),
    optional("pr", ArgKind::Count, "the pull request, by number"),
    optional(
        "branch",
        ArgKind::Text,
        "the branch (teams without pull requests)",
    ),
    REPO,
    optional(
        "priority",
        ArgKind::Count,
        "goes ahead of lower priorities (default 0; above 0 needs the deployer role)",
    ),
];
const QUEUE_ENTRY: &[ArgSpec] = &[
    positional(
        "entry",
        ArgKind::Text,
        "the change: its pull request (`42`), its branch, or its entry number (on a pull request: defaults to it)",
    ),
    REPO,
];
const QUEUE_PAUSE: &[ArgSpec] = &[
    positional("reason", ArgKind::Reason, "why, shown to everyone who asks"),
    REPO,
];
const REPO_ONLY: &[ArgSpec] = &[REPO];
const CHANNEL: ArgSpec = optional(
    "channel",
    ArgKind::Text,
    "the release channel (default: the one with a rollout in progress, else the first)",
);
const RELEASE: &[ArgSpec] = &[
    positional_required("repo", ArgKind::Text, "the repository"),
    positional_required(
        "target",
        ArgKind::Text,
        "the commit (full or abbreviated) or branch to roll out; an older commit redeploys it",
    ),
    optional(
        "channel",
        ArgKind::Text,
        "the release channel to roll out to (default: the repo's first)",
    ),
];
const ROLLOUT: &[ArgSpec] = &[
    positional(
        "repo",
        ArgKind::Text,
        "the repository (may be left out when Slipway serves one)",
    ),
    CHANNEL,
];
const CHANNEL_FREEZE: &[ArgSpec] = &[
    positional("reason", ArgKind::Reason, "why, shown to everyone who asks"),
    REPO,
    CHANNEL,
];
const CHANNEL_ONLY: &[ArgSpec] = &[REPO, CHANNEL];
const HELP: &[ArgSpec] = &[positional(
    "topic",
    ArgKind::Topic,
    "a command, e.g. `env up`",
)];

/// Longest accepted name value, in characters.
const MAX_TEXT_CHARS: usize = 256;

impl CommandKind {
    /// The arguments this command takes. An exhaustive match: a new kind needs a spec.
    pub fn args(self) -> &'static [ArgSpec] {
        match self {
            CommandKind::EnvUp => ENV_UP,
            CommandKind::EnvDown
            | CommandKind::EnvStatus
            | CommandKind::EnvSleep
            | CommandKind::EnvWake
            | CommandKind::EnvPin
            | CommandKind::EnvUnpin => ENV_ONLY,
            CommandKind::EnvLogs => ENV_LOGS,
            CommandKind::EnvExtend => ENV_EXTEND,
            CommandKind::Test => TEST,
            CommandKind::Help => HELP,
            CommandKind::EnvList => ENV_LIST,
            CommandKind::Approve | CommandKind::WhoAmI => &[],
            CommandKind::QueueAdd => QUEUE_ADD,
            CommandKind::QueueRemove | CommandKind::QueueStatus | CommandKind::QueueRetry => {
                QUEUE_ENTRY
            }
            CommandKind::QueuePause => QUEUE_PAUSE,
            CommandKind::QueueList | CommandKind::QueueResume => REPO_ONLY,
            CommandKind::Release => RELEASE,
            CommandKind::RolloutStatus
            | CommandKind::RolloutPause
            | CommandKind::RolloutResume
            | CommandKind::RolloutPromote
            | CommandKind::RolloutRollback
            | CommandKind::RolloutApprove => ROLLOUT,
            CommandKind::ChannelFreeze => CHANNEL_FREEZE,
            CommandKind::ChannelUnfreeze => CHANNEL_ONLY,
        }
    }

    /// The argument with this key (case-insensitive).
    pub fn arg(self, key: &str) -> Option<&'static ArgSpec> {
        let key = key.to_lowercase();
        self.args().iter().find(|arg| arg.name == key)
    }
}

impl Command {
    /// Parses a command from words: the command name (one or two words; a first word
    /// holding whitespace, like `"env up"`, is split) followed by its arguments.
    pub fn parse_words(words: &[&str]) -> Result<Command, ParseError> {
        let mut all: Vec<&str> = Vec::with_capacity(words.len() + 1);
        if let Some((first, rest)) = words.split_first() {
            all.extend(first.split_whitespace());
            all.extend_from_slice(rest);
        }
        if all.is_empty() {
            return Err(ParseError::Empty);
        }
        let (kind, used) = resolve(&all)?;
        let mut args = Collector::new(kind);
        let rest = &all[used..];
        let mut i = 0;
        while i < rest.len() {
            let word = rest[i];
            i += 1;
            if let Some(option) = strip_dashes(word) {
                // `--key value`, `--key=value`, `--flag`.
                let (key, inline) = match option.split_once('=') {
                    Some((key, value)) => (key, Some(value)),
                    None => (option, None),
                };
                let spec = args.lookup(key, word)?;
                let value = match inline {
                    Some(value) => value,
                    None if spec.kind == ArgKind::Flag => "true",
                    None => match rest.get(i) {
                        Some(next) if !looks_like_option(next) => {
                            i += 1;
                            next
                        }
                        _ => return Err(args.missing_value(spec)),
                    },
                };
                args.set(spec, value)?;
            } else if word.starts_with('-') {
                // `-x`: single-dash options do not exist (and names cannot start with `-`).
                return Err(ParseError::UnknownArgument {
                    command: kind.name(),
                    argument: word.to_owned(),
                    suggestion: suggest::argument(kind, word.trim_start_matches('-')),
                });
            } else if let Some((key, value)) = split_key_value(word) {
                let spec = args.lookup(key, key)?;
                // `key: value` (a space after the colon) takes the next word.
                let value = match rest.get(i) {
                    Some(next) if value.is_empty() && !looks_like_option(next) => {
                        i += 1;
                        next
                    }
                    _ => value,
                };
                args.set(spec, value)?;
            } else {
                args.positional(word)?;
            }
        }
        args.finish()
    }

    /// The CLI's form: the same as [`Command::parse_words`] (the shell has split and
    /// unquoted the words already).
    pub fn from_cli_args(args: &[String]) -> Result<Command, ParseError> {
        let words: Vec<&str> = args.iter().map(String::as_str).collect();
        Command::parse_words(&words)
    }

    /// One line of text without a prefix (a Discord mention's text, an HTTP API `command`
    /// field): split like a shell, then [`Command::parse_words`].
    pub fn parse_line(line: &str) -> Result<Command, ParseError> {
        let words = super::split_words(line)?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        Command::parse_words(&words)
    }

    /// Discord slash commands: `name` is the command's name (`"env up"`, `"test"`) and
    /// `options` its named options (`[("branch", "feature-x"), ("ttl", "2h")]`). Gives
    /// exactly the command the text forms give.
    pub fn from_options(name: &str, options: &[(&str, &str)]) -> Result<Command, ParseError> {
        let words: Vec<&str> = name.split_whitespace().collect();
        if words.is_empty() {
            return Err(ParseError::Empty);
        }
        let (kind, used) = resolve(&words)?;
        if used < words.len() {
            let given = words.join(" ");
            return Err(ParseError::UnknownCommand {
                suggestion: suggest::command(&words).1,
                given,
            });
        }
        let mut args = Collector::new(kind);
        for &(key, value) in options {
            let key = key.trim();
            let spec = args.lookup(key.trim_start_matches('-'), key)?;
            args.set(spec, value)?;
        }
        args.finish()
    }
}

/// The command named by the first one or two words, and how many words that took.
fn resolve(words: &[&str]) -> Result<(CommandKind, usize), ParseError> {
    let first = words[0].to_lowercase();
    if let Some(group) = GROUPS.into_iter().find(|g| *g == first) {
        let Some(sub) = words.get(1) else {
            return Err(ParseError::MissingSubcommand { group });
        };
        if let Some(kind) = CommandKind::from_name(&format!("{group} {sub}")) {
            return Ok((kind, 2));
        }
    } else if first == MERGE_ALIAS {
        return Ok((CommandKind::QueueAdd, 1));
    } else if let Some(kind) = CommandKind::from_name(&first) {
        return Ok((kind, 1));
    }
    let (given, suggestion) = suggest::command(words);
    Err(ParseError::UnknownCommand { given, suggestion })
}

/// `merge`: `queue add` for the pull request it is written on (bors' and GitHub's word).
pub const MERGE_ALIAS: &str = "merge";

/// `--key` (also with a typographic en or em dash, as phones like to autocorrect).
fn strip_dashes(word: &str) -> Option<&str> {
    word.strip_prefix("--")
        .or_else(|| word.strip_prefix('\u{2014}'))
        .or_else(|| word.strip_prefix('\u{2013}'))
}

fn looks_like_option(word: &str) -> bool {
    strip_dashes(word).is_some() || split_key_value(word).is_some()
}

/// `key:value` or `key=value`, split at the first `:` or `=`, when the key looks like one
/// (ASCII letters, digits, `-`, `_`). Git branch names cannot contain `:`, so a branch
/// can always be given as `branch:<name>`.
fn split_key_value(word: &str) -> Option<(&str, &str)> {
    let at = word.find([':', '='])?;
    let (key, value) = (&word[..at], &word[at + 1..]);
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    is_key.then_some((key, value))
}

/// A parsed argument value.
enum Value {
    Text(String),
    Duration(Duration),
    Count(u64),
    Flag(bool),
}

/// The arguments given so far to one command.
struct Collector {
    kind: CommandKind,
    values: Vec<(&'static str, Value)>,
    /// Plain words (or the `topic` option) of a `Topic` argument.
    topic: Vec<String>,
    positionals: usize,
}

impl Collector {
    fn new(kind: CommandKind) -> Collector {
        Collector {
            kind,
            values: Vec::new(),
            topic: Vec::new(),
            positionals: 0,
        }
    }

    /// The spec of `key`, or `UnknownArgument` showing `shown` with a suggestion.
    fn lookup(&self, key: &str, shown: &str) -> Result<&'static ArgSpec, ParseError> {
        self.kind
            .arg(key)
            .ok_or_else(|| ParseError::UnknownArgument {
                command: self.kind.name(),
                argument: shown.to_owned(),
                suggestion: suggest::argument(self.kind, key),
            })
    }

    fn missing_value(&self, spec: &ArgSpec) -> ParseError {
        ParseError::MissingValue {
            command: self.kind.name(),
            argument: spec.name,
        }
    }

    fn is_set(&self, spec: &ArgSpec) -> bool {
        match spec.kind {
            ArgKind::Topic | ArgKind::Reason => !self.topic.is_empty(),
            _ => self.values.iter().any(|(name, _)| *name == spec.name),
        }
    }

    fn positional(&mut self, word: &str) -> Result<(), ParseError> {
        let mut positionals = self.kind.args().iter().filter(|arg| arg.positional);
        if let Some(topic) = positionals.clone().find(|arg| arg.kind.takes_rest()) {
            // `help env up`: the topic takes every plain word.
            if self.positionals == 0 && self.is_set(topic) {
                return Err(self.duplicate(topic));
            }
            self.positionals += 1;
            self.topic.push(word.to_owned());
            return Ok(());
        }
        let Some(spec) = positionals.nth(self.positionals) else {
            return Err(ParseError::UnexpectedPositional {
                command: self.kind.name(),
                value: word.to_owned(),
            });
        };
        self.positionals += 1;
        self.set(spec, word)
    }

    fn duplicate(&self, spec: &ArgSpec) -> ParseError {
        ParseError::DuplicateArgument {
            command: self.kind.name(),
            argument: spec.name,
        }
    }

    fn set(&mut self, spec: &'static ArgSpec, raw: &str) -> Result<(), ParseError> {
        if self.is_set(spec) {
            return Err(self.duplicate(spec));
        }
        if raw.is_empty() {
            return Err(self.missing_value(spec));
        }
        let command = self.kind.name();
        let invalid = |why: String| ParseError::InvalidValue {
            command,
            argument: spec.name,
            value: raw.to_owned(),
            why,
        };
        let value = match spec.kind {
            ArgKind::Topic | ArgKind::Reason => {
                self.topic.push(raw.to_owned());
                return Ok(());
            }
            ArgKind::Text => Value::Text(check_text(raw).map_err(invalid)?.to_owned()),
            ArgKind::Duration => Value::Duration(parse_duration(raw).map_err(invalid)?),
            ArgKind::Count => Value::Count(parse_count(raw).map_err(invalid)?),
            ArgKind::Flag => Value::Flag(parse_flag(raw).map_err(invalid)?),
        };
        self.values.push((spec.name, value));
        Ok(())
    }

    fn take(&mut self, name: &str) -> Option<Value> {
        let at = self.values.iter().position(|(n, _)| *n == name)?;
        Some(self.values.swap_remove(at).1)
    }

    fn text(&mut self, name: &str) -> Option<String> {
        match self.take(name) {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        }
    }

    fn duration(&mut self, name: &str) -> Option<Duration> {
        match self.take(name) {
            Some(Value::Duration(duration)) => Some(duration),
            _ => None,
        }
    }

    fn count(&mut self, name: &str) -> Option<u64> {
        match self.take(name) {
            Some(Value::Count(count)) => Some(count),
            _ => None,
        }
    }

    fn flag(&mut self, name: &str) -> Option<bool> {
        match self.take(name) {
            Some(Value::Flag(flag)) => Some(flag),
            _ => None,
        }
    }

    fn finish(mut self) -> Result<Command, ParseError> {
        let command = self.kind.name();
        if let Some(missing) = self
            .kind
            .args()
            .iter()
            .find(|arg| arg.required && !self.is_set(arg))
        {
            return Err(ParseError::MissingArgument {
                command,
                argument: missing.name,
            });
        }
        Ok(match self.kind {
            CommandKind::EnvUp => Command::EnvUp {
                branch: self.text("branch"),
                repo: self.text("repo"),
                ttl: self.duration("ttl"),
            },
            CommandKind::EnvDown => Command::EnvDown {
                env: self.text("env"),
            },
            CommandKind::EnvList => Command::EnvList {
                all: self.flag("all").unwrap_or(false),
            },
            CommandKind::EnvStatus => Command::EnvStatus {
                env: self.text("env"),
            },
            CommandKind::EnvSleep => Command::EnvSleep {
                env: self.text("env"),
            },
            CommandKind::EnvWake => Command::EnvWake {
                env: self.text("env"),
            },
            CommandKind::EnvPin => Command::EnvPin {
                env: self.text("env"),
            },
            CommandKind::EnvUnpin => Command::EnvUnpin {
                env: self.text("env"),
            },
            CommandKind::EnvLogs => Command::EnvLogs {
                env: self.text("env"),
                service: self.text("service"),
                tail: self.count("tail"),
            },
            CommandKind::EnvExtend => Command::EnvExtend {
                env: self.text("env"),
                by: self.duration("by").ok_or(ParseError::MissingArgument {
                    command,
                    argument: "by",
                })?,
            },
            CommandKind::Test => Command::Test {
                env: self.text("env"),
                failed_only: self.flag("failed").unwrap_or(false),
            },
            CommandKind::Approve => Command::Approve,
            CommandKind::Help => Command::Help {
                topic: resolve_topic(&self.topic)?,
            },
            CommandKind::WhoAmI => Command::WhoAmI,
            CommandKind::QueueAdd => {
                let change = self.text("change").map(|c| QueueRef::parse(&c));
                let pr = self.count("pr").map(QueueRef::Pull);
                let branch = self.text("branch").map(QueueRef::Branch);
                let given: Vec<QueueRef> = [change, pr, branch].into_iter().flatten().collect();
                if given.len() > 1 {
                    return Err(ParseError::InvalidValue {
                        command,
                        argument: "change",
                        value: given
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" "),
                        why: "name one change: a pull request or a branch".to_owned(),
                    });
                }
                Command::QueueAdd {
                    change: given.into_iter().next(),
                    repo: self.text("repo"),
                    priority: self.count("priority"),
                }
            }
            CommandKind::QueueRemove => Command::QueueRemove {
                entry: self.text("entry").map(|e| QueueRef::parse(&e)),
                repo: self.text("repo"),
            },
            CommandKind::QueueStatus => Command::QueueStatus {
                entry: self.text("entry").map(|e| QueueRef::parse(&e)),
                repo: self.text("repo"),
            },
            CommandKind::QueueRetry => Command::QueueRetry {
                entry: self.text("entry").map(|e| QueueRef::parse(&e)),
                repo: self.text("repo"),
            },
            CommandKind::QueueList => Command::QueueList {
                repo: self.text("repo"),
            },
            CommandKind::QueueResume => Command::QueueResume {
                repo: self.text("repo"),
            },
            CommandKind::QueuePause => Command::QueuePause {
                reason: (!self.topic.is_empty()).then(|| self.topic.join(" ")),
                repo: self.text("repo"),
            },
            CommandKind::Release => Command::Release {
                repo: self.text("repo").unwrap_or_default(),
                target: self.text("target").unwrap_or_default(),
                channel: self.text("channel"),
            },
            CommandKind::RolloutStatus => self.rollout(RolloutVerb::Status),
            CommandKind::RolloutPause => self.rollout(RolloutVerb::Pause),
            CommandKind::RolloutResume => self.rollout(RolloutVerb::Resume),
            CommandKind::RolloutPromote => self.rollout(RolloutVerb::Promote),
            CommandKind::RolloutRollback => self.rollout(RolloutVerb::Rollback),
            CommandKind::RolloutApprove => self.rollout(RolloutVerb::Approve),
            CommandKind::ChannelFreeze => Command::ChannelFreeze {
                reason: (!self.topic.is_empty()).then(|| self.topic.join(" ")),
                repo: self.text("repo"),
                channel: self.text("channel"),
            },
            CommandKind::ChannelUnfreeze => Command::ChannelUnfreeze {
                repo: self.text("repo"),
                channel: self.text("channel"),
            },
        })
    }

    fn rollout(&mut self, action: RolloutVerb) -> Command {
        Command::Rollout {
            action,
            repo: self.text("repo"),
            channel: self.text("channel"),
        }
    }
}

/// `help`'s topic, as a canonical command name or `"env"`.
fn resolve_topic(parts: &[String]) -> Result<Option<String>, ParseError> {
    if parts.is_empty() {
        return Ok(None);
    }
    let topic = normalize_name(&parts.join(" "));
    if topic.is_empty() {
        return Err(ParseError::MissingValue {
            command: CommandKind::Help.name(),
            argument: "topic",
        });
    }
    if GROUPS.contains(&topic.as_str()) || CommandKind::from_name(&topic).is_some() {
        return Ok(Some(topic));
    }
    let words: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
    let (_, suggestion) = suggest::command(&words);
    Err(ParseError::UnknownCommand {
        given: words.join(" "),
        suggestion,
    })
}

/// Characters that render as nothing or reorder text (zero-width, bidi controls, BOM, soft
/// hyphen): a name holding one is not what it looks like.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Early, rough validation of names; the engine has the real rules.
fn check_text(value: &str) -> Result<&str, String> {
    if value.chars().count() > MAX_TEXT_CHARS {
        Err(format!("longer than {MAX_TEXT_CHARS} characters"))
    } else if value.chars().any(char::is_whitespace) {
        Err("must not contain spaces".to_owned())
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".to_owned())
    } else if value.chars().any(is_invisible) {
        Err("must not contain invisible characters".to_owned())
    } else {
        Ok(value)
    }
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    use humantime::DurationError;
    match humantime::parse_duration(value) {
        Ok(duration) if duration.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(duration) => Ok(duration),
        Err(DurationError::UnknownUnit { unit, value, .. }) if unit.is_empty() => Err(format!(
            "needs a unit, like `{value}m`, `{value}h` or `{value}d`"
        )),
        Err(DurationError::NumberOverflow) => Err("is too long".to_owned()),
        Err(_) => Err("expected a duration like `30m`, `4h` or `2d`".to_owned()),
    }
}

fn parse_count(value: &str) -> Result<u64, String> {
    value.parse().map_err(|_| {
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            "is too large".to_owned()
        } else {
            "expected a whole number like `100`".to_owned()
        }
    })
}

fn parse_flag(value: &str) -> Result<bool, String> {
    match value.to_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err("expected `true` or `false`".to_owned()),
    }
}
