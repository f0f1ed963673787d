//! Typed parse errors, each with a one-line `Display` and a Markdown [`ParseError::reply`].

use super::{command_list, help_text_for, help_topic, usage_block, CommandKind, COMMENT_PREFIX};

/// Why a command did not parse. `Display` is one helpful line (user-supplied text is shown
/// in code spans, shortened and with control characters replaced).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Only the prefix (`/slipway`), or nothing at all. Replied to with the help.
    #[error("No command given.")]
    Empty,
    #[error("Unclosed quote {}.", code(&.quote.to_string()))]
    UnclosedQuote { quote: char },
    #[error("Unknown command {}.{}", code(.given), did_you_mean(.suggestion))]
    UnknownCommand {
        given: String,
        suggestion: Option<&'static str>,
    },
    /// `env` alone.
    #[error("`{group}` needs a subcommand: {}.", subcommands(.group))]
    MissingSubcommand { group: &'static str },
    #[error("Unknown argument {} for `{command}`.{}", code(.argument), did_you_mean(.suggestion))]
    UnknownArgument {
        command: &'static str,
        argument: String,
        suggestion: Option<&'static str>,
    },
    #[error("`{argument}` is given more than once to `{command}`.")]
    DuplicateArgument {
        command: &'static str,
        argument: &'static str,
    },
    #[error("`{command}` needs `{argument}`, like `{argument}:{}`.", example(.argument))]
    MissingArgument {
        command: &'static str,
        argument: &'static str,
    },
    /// `ttl:` or `--ttl` with nothing after it.
    #[error("`{argument}` needs a value, like `{argument}:{}`.", example(.argument))]
    MissingValue {
        command: &'static str,
        argument: &'static str,
    },
    /// A plain word where the command takes no (more) plain words.
    #[error("Unexpected {}: `{command}` takes no more plain words.", code(.value))]
    UnexpectedPositional {
        command: &'static str,
        value: String,
    },
    #[error("Invalid value {} for `{argument}`: {why}.", code(.value))]
    InvalidValue {
        command: &'static str,
        argument: &'static str,
        value: String,
        why: String,
    },
}

impl ParseError {
    /// The command the error is about, when it got that far.
    pub fn command(&self) -> Option<CommandKind> {
        match self {
            ParseError::UnknownArgument { command, .. }
            | ParseError::DuplicateArgument { command, .. }
            | ParseError::MissingArgument { command, .. }
            | ParseError::MissingValue { command, .. }
            | ParseError::UnexpectedPositional { command, .. }
            | ParseError::InvalidValue { command, .. } => CommandKind::from_name(command),
            ParseError::Empty
            | ParseError::UnclosedQuote { .. }
            | ParseError::UnknownCommand { .. }
            | ParseError::MissingSubcommand { .. } => None,
        }
    }

    /// A Markdown reply for a pull-request comment: the error line, then the usage of the
    /// command concerned (or the commands there are).
    pub fn reply(&self) -> String {
        self.reply_for(COMMENT_PREFIX)
    }

    /// [`ParseError::reply`] with the surface's prefix (see [`super::help_text_for`]).
    pub fn reply_for(&self, prefix: &str) -> String {
        let details = match self {
            ParseError::Empty => return help_text_for(prefix),
            ParseError::UnclosedQuote { .. } => {
                "Close the quote, or use the other kind of quote around a value that holds one."
                    .to_owned()
            }
            ParseError::UnknownCommand {
                suggestion: Some(suggestion),
                ..
            } => match CommandKind::from_name(suggestion) {
                Some(kind) => usage_block(kind, prefix),
                None => help_topic(suggestion, prefix).unwrap_or_else(|| help_text_for(prefix)),
            },
            ParseError::UnknownCommand {
                suggestion: None, ..
            } => format!("Commands:\n\n{}", command_list(prefix, CommandKind::ALL)),
            ParseError::MissingSubcommand { group } => {
                help_topic(group, prefix).unwrap_or_else(|| help_text_for(prefix))
            }
            ParseError::UnknownArgument { .. }
            | ParseError::DuplicateArgument { .. }
            | ParseError::MissingArgument { .. }
            | ParseError::MissingValue { .. }
            | ParseError::UnexpectedPositional { .. }
            | ParseError::InvalidValue { .. } => match self.command() {
                Some(kind) => usage_block(kind, prefix),
                None => help_text_for(prefix),
            },
        };
        format!("{self}\n\n{details}")
    }
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|s| format!(" Did you mean `{s}`?"))
        .unwrap_or_default()
}

fn subcommands(group: &str) -> String {
    let words: Vec<String> = CommandKind::ALL
        .into_iter()
        .filter_map(|kind| kind.subcommand_of(group))
        .map(|sub| format!("`{sub}`"))
        .collect();
    words.join(", ")
}

/// A made-up value for an argument, for "like `by:4h`".
fn example(argument: &str) -> &'static str {
    match argument {
        "ttl" | "by" => "4h",
        "tail" => "100",
        "failed" => "true",
        "topic" => "env up",
        "priority" | "pr" => "1",
        _ => "<value>",
    }
}

/// Longest user text quoted back, in characters.
const MAX_QUOTED_CHARS: usize = 60;

/// User text as a Markdown code span that cannot break out of itself: shortened, control
/// characters replaced, fenced with more backticks than it contains in a row.
pub(crate) fn code(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().count() > MAX_QUOTED_CHARS {
        shown.push('…');
    }
    let mut longest_run = 0;
    let mut run = 0;
    for c in shown.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest_run = longest_run.max(run);
    }
    if longest_run == 0 && !shown.is_empty() {
        return format!("`{shown}`");
    }
    let fence = "`".repeat(longest_run + 1);
    format!("{fence} {shown} {fence}")
}
