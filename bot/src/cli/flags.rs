//! The CLI's own flags: how a command's result is shown, waited for or streamed. They are
//! not part of the command grammar, so they are taken out of the words before the grammar
//! parses the rest.

use std::time::Duration;

use crate::commands::{CommandKind, GROUPS};

use super::UsageError;

/// Where the CLI looks for the server without `--server` or `SLIPWAY_SERVER`.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// The CLI-only flags of one command line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub json: bool,
    pub server: Option<String>,
    pub wait: bool,
    pub timeout: Option<Duration>,
    pub follow: bool,
    /// `--help` / `-h`: show the command's help instead of running it.
    pub help: bool,
}

/// A CLI-only flag, for help and for checking it is given to a command it applies to.
#[derive(Debug, Clone, Copy)]
enum Flag {
    Json,
    Server,
    Wait,
    Timeout,
    Follow,
    Help,
}

const WAITING: &[CommandKind] = &[CommandKind::EnvUp, CommandKind::EnvDown, CommandKind::Test];

impl Flag {
    const ALL: [Flag; 6] = [
        Flag::Json,
        Flag::Server,
        Flag::Wait,
        Flag::Timeout,
        Flag::Follow,
        Flag::Help,
    ];

    /// How it is written in help.
    fn usage(self) -> &'static str {
        match self {
            Flag::Server => "--server <url>",
            Flag::Timeout => "--timeout <duration>",
            Flag::Follow => "-f, --follow",
            Flag::Help => "-h, --help",
            Flag::Json | Flag::Wait => self.name(),
        }
    }

    /// How it is named in errors.
    fn name(self) -> &'static str {
        match self {
            Flag::Json => "--json",
            Flag::Server => "--server",
            Flag::Wait => "--wait",
            Flag::Timeout => "--timeout",
            Flag::Follow => "--follow",
            Flag::Help => "--help",
        }
    }

    fn about(self) -> &'static str {
        match self {
            Flag::Json => "machine-readable output",
            Flag::Server => {
                "the Slipway server (default: SLIPWAY_SERVER, else http://127.0.0.1:8080)"
            }
            Flag::Wait => "wait for the outcome, showing progress on stderr; exit 1 if it failed",
            Flag::Timeout => {
                "with --wait: give up after this long (default: env up 15m, env down 5m, test 1h)"
            }
            Flag::Follow => "keep printing new output",
            Flag::Help => "show the command's help instead of running it",
        }
    }

    /// The commands it applies to; empty for all.
    fn only(self) -> &'static [CommandKind] {
        match self {
            Flag::Json | Flag::Server | Flag::Help => &[],
            Flag::Wait | Flag::Timeout => WAITING,
            Flag::Follow => &[CommandKind::EnvLogs],
        }
    }

    fn applies_to(self, kind: CommandKind) -> bool {
        self.only().is_empty() || self.only().contains(&kind)
    }
}

/// Takes the CLI-only flags out of `args`; the words left are for the grammar.
pub fn split(args: &[String]) -> Result<(Flags, Vec<String>), UsageError> {
    let mut flags = Flags::default();
    let mut words = Vec::with_capacity(args.len());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg.as_str(), None),
        };
        let mut value = |example: &str| match inline {
            Some(value) if !value.is_empty() => Ok(value.to_owned()),
            Some(_) => Err(missing_value(name, example)),
            None => args
                .next()
                .filter(|next| !next.starts_with('-'))
                .cloned()
                .ok_or_else(|| missing_value(name, example)),
        };
        match name {
            "--json" if inline.is_none() => flags.json = true,
            "--wait" if inline.is_none() => flags.wait = true,
            "--follow" | "-f" if inline.is_none() => flags.follow = true,
            "--help" | "-h" if inline.is_none() => flags.help = true,
            "--server" => flags.server = Some(value(DEFAULT_SERVER)?),
            "--timeout" => {
                let text = value("10m")?;
                let timeout = humantime::parse_duration(&text).map_err(|_| {
                    UsageError(format!(
                        "Invalid value `{text}` for `--timeout`: write a duration like `10m` or `1h`."
                    ))
                })?;
                flags.timeout = Some(timeout);
            }
            _ => words.push(arg.clone()),
        }
    }
    Ok((flags, words))
}

fn missing_value(flag: &str, example: &str) -> UsageError {
    UsageError(format!("`{flag}` needs a value, like `{flag} {example}`."))
}

impl Flags {
    fn given(&self, flag: Flag) -> bool {
        match flag {
            Flag::Json => self.json,
            Flag::Server => self.server.is_some(),
            Flag::Wait => self.wait,
            Flag::Timeout => self.timeout.is_some(),
            Flag::Follow => self.follow,
            Flag::Help => self.help,
        }
    }

    /// Refuses a flag given to a command it does not apply to (`env list --wait`).
    pub fn check(&self, kind: CommandKind) -> Result<(), UsageError> {
        match Flag::ALL
            .into_iter()
            .find(|&flag| self.given(flag) && !flag.applies_to(kind))
        {
            Some(flag) => Err(UsageError(format!(
                "`{}` is for {}, not `{}`.",
                flag.name(),
                command_names(flag.only()),
                kind.name()
            ))),
            None => Ok(()),
        }
    }
}

/// `--help` after a command asks for that command's help: `env up x --help` becomes
/// `help env up`, which the grammar then parses (a typo gets its did-you-mean).
pub fn help_words(words: &[String]) -> Vec<String> {
    let mut help = vec!["help".to_owned()];
    match words {
        [first, ..] if first.eq_ignore_ascii_case("help") => return words.to_vec(),
        [group, sub, ..]
            if GROUPS.iter().any(|g| group.eq_ignore_ascii_case(g)) && !sub.starts_with('-') =>
        {
            help.extend([group.clone(), sub.clone()]);
        }
        [first, ..] => help.push(first.clone()),
        [] => {}
    }
    help
}

/// The CLI-only flags that apply to `kind` (all of them without one), as a help section.
pub fn help_section(kind: Option<CommandKind>) -> String {
    let shown: Vec<Flag> = Flag::ALL
        .into_iter()
        .filter(|flag| kind.is_none_or(|kind| flag.applies_to(kind)))
        .collect();
    let width = shown.iter().map(|f| f.usage().len()).max().unwrap_or(0);
    let mut text = String::from("Command-line options, anywhere after the command:\n");
    for flag in shown {
        let only = match kind {
            None if !flag.only().is_empty() => format!(" (for {})", command_names(flag.only())),
            _ => String::new(),
        };
        text.push_str(&format!(
            "  {:<width$}  {}{only}\n",
            flag.usage(),
            flag.about()
        ));
    }
    text.push_str("The API token, when the server has one, is read from SLIPWAY_TOKEN.\n");
    text
}

/// "`env up`, `env down` and `test`".
fn command_names(kinds: &[CommandKind]) -> String {
    let names: Vec<String> = kinds.iter().map(|k| format!("`{}`", k.name())).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn cli_flags_are_taken_out_wherever_they_are() {
        let (flags, rest) = split(&words(
            "env up --json feature-x --server http://h:1 --wait --timeout=3m --repo demo",
        ))
        .unwrap();
        assert_eq!(
            flags,
            Flags {
                json: true,
                server: Some("http://h:1".into()),
                wait: true,
                timeout: Some(Duration::from_secs(180)),
                ..Flags::default()
            }
        );
        assert_eq!(rest, words("env up feature-x --repo demo"));

        let (flags, rest) = split(&words("env logs x -f --server=https://s --tail 5")).unwrap();
        assert!(flags.follow);
        assert_eq!(flags.server.as_deref(), Some("https://s"));
        assert_eq!(rest, words("env logs x --tail 5"));
    }

    #[test]
    fn grammar_options_stay_for_the_grammar() {
        let line = words("env list --all");
        assert_eq!(split(&line).unwrap(), (Flags::default(), line.clone()));
        let line = words("test x --failed failed:true --json=1");
        assert_eq!(split(&line).unwrap().1, line);
    }

    #[test]
    fn flags_without_a_value_are_usage_errors() {
        for (line, expected) in [
            ("env list --server", "`--server` needs a value"),
            ("env list --server --json", "`--server` needs a value"),
            ("env list --server=", "`--server` needs a value"),
            ("env up x --wait --timeout", "`--timeout` needs a value"),
            (
                "env up x --timeout soon",
                "Invalid value `soon` for `--timeout`",
            ),
        ] {
            let error = split(&words(line)).unwrap_err();
            assert!(error.0.starts_with(expected), "{line}: {error}");
        }
    }

    #[test]
    fn flags_only_go_with_the_commands_they_change() {
        let wait = Flags {
            wait: true,
            ..Flags::default()
        };
        assert!(wait.check(CommandKind::EnvUp).is_ok());
        assert_eq!(
            wait.check(CommandKind::EnvList).unwrap_err().0,
            "`--wait` is for `env up`, `env down` and `test`, not `env list`."
        );
        let follow = Flags {
            follow: true,
            json: true,
            ..Flags::default()
        };
        assert!(follow.check(CommandKind::EnvLogs).is_ok());
        assert!(follow.check(CommandKind::Test).is_err());
    }

    #[test]
    fn help_after_a_command_asks_for_its_help() {
        assert_eq!(help_words(&words("env up x")), words("help env up"));
        assert_eq!(help_words(&words("ENV --repo x")), words("help ENV"));
        assert_eq!(help_words(&words("test x")), words("help test"));
        assert_eq!(help_words(&words("help env")), words("help env"));
        assert_eq!(help_words(&[]), words("help"));
    }

    #[test]
    fn help_shows_the_flags_that_apply() {
        let logs = help_section(Some(CommandKind::EnvLogs));
        assert!(
            logs.contains("--follow") && !logs.contains("--wait"),
            "{logs}"
        );
        let all = help_section(None);
        assert!(
            all.contains("--follow") && all.contains("(for `env logs`)"),
            "{all}"
        );
    }
}
