use std::time::Duration;

use super::comment::command_lines;
use super::error::code;
use super::suggest::distance;
use super::*;

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

fn s(text: &str) -> Option<String> {
    Some(text.to_owned())
}

/// One command in every surface's form.
struct Case {
    /// After `/slipway ` in a PR comment.
    text: &'static str,
    /// Discord: command name and named options.
    discord: (&'static str, &'static [(&'static str, &'static str)]),
    /// CLI words, as the shell hands them over.
    cli: &'static [&'static str],
    expected: Command,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            text: "env up",
            discord: ("env up", &[]),
            cli: &["env", "up"],
            expected: Command::EnvUp {
                branch: None,
                repo: None,
                ttl: None,
            },
        },
        Case {
            text: "env up feature-x repo:shop ttl:2h",
            discord: (
                "env up",
                &[("branch", "feature-x"), ("repo", "shop"), ("ttl", "2h")],
            ),
            cli: &["env", "up", "feature-x", "--repo", "shop", "--ttl=2h"],
            expected: Command::EnvUp {
                branch: s("feature-x"),
                repo: s("shop"),
                ttl: Some(hours(2)),
            },
        },
        Case {
            text: "env up ttl:\"1h 30m\" feature/Long-Name",
            discord: (
                "env up",
                &[("ttl", "1h 30m"), ("branch", "feature/Long-Name")],
            ),
            cli: &["env", "up", "feature/Long-Name", "--ttl", "1h 30m"],
            expected: Command::EnvUp {
                branch: s("feature/Long-Name"),
                repo: None,
                ttl: Some(Duration::from_secs(5400)),
            },
        },
        Case {
            text: "env down",
            discord: ("env down", &[]),
            cli: &["env", "down"],
            expected: Command::EnvDown { env: None },
        },
        Case {
            text: "env down pr-12",
            discord: ("env down", &[("env", "pr-12")]),
            cli: &["env", "down", "pr-12"],
            expected: Command::EnvDown { env: s("pr-12") },
        },
        Case {
            text: "env sleep pr-12",
            discord: ("env sleep", &[("env", "pr-12")]),
            cli: &["env", "sleep", "pr-12"],
            expected: Command::EnvSleep { env: s("pr-12") },
        },
        Case {
            text: "env wake",
            discord: ("env wake", &[]),
            cli: &["env", "wake"],
            expected: Command::EnvWake { env: None },
        },
        Case {
            text: "env pin shop-main",
            discord: ("env pin", &[("env", "shop-main")]),
            cli: &["env", "pin", "shop-main"],
            expected: Command::EnvPin {
                env: s("shop-main"),
            },
        },
        Case {
            text: "env unpin",
            discord: ("env unpin", &[]),
            cli: &["env", "unpin"],
            expected: Command::EnvUnpin { env: None },
        },
        Case {
            text: "env list",
            discord: ("env list", &[]),
            cli: &["env", "list"],
            expected: Command::EnvList { all: false },
        },
        Case {
            text: "env list --all",
            discord: ("env list", &[("all", "true")]),
            cli: &["env", "list", "--all"],
            expected: Command::EnvList { all: true },
        },
        Case {
            text: "env status pr-12",
            discord: ("env status", &[("env", "pr-12")]),
            cli: &["env", "status", "pr-12"],
            expected: Command::EnvStatus { env: s("pr-12") },
        },
        Case {
            text: "env status",
            discord: ("env status", &[]),
            cli: &["env", "status"],
            expected: Command::EnvStatus { env: None },
        },
        Case {
            text: "env logs pr-12 service:web tail:100",
            discord: (
                "env logs",
                &[("env", "pr-12"), ("service", "web"), ("tail", "100")],
            ),
            cli: &["env", "logs", "pr-12", "--service", "web", "--tail", "100"],
            expected: Command::EnvLogs {
                env: s("pr-12"),
                service: s("web"),
                tail: Some(100),
            },
        },
        Case {
            text: "env logs tail=5",
            discord: ("env logs", &[("tail", "5")]),
            cli: &["env", "logs", "--tail=5"],
            expected: Command::EnvLogs {
                env: None,
                service: None,
                tail: Some(5),
            },
        },
        Case {
            text: "env extend by:4h",
            discord: ("env extend", &[("by", "4h")]),
            cli: &["env", "extend", "--by", "4h"],
            expected: Command::EnvExtend {
                env: None,
                by: hours(4),
            },
        },
        Case {
            text: "env extend pr-12 by:1d",
            discord: ("env extend", &[("env", "pr-12"), ("by", "1d")]),
            cli: &["env", "extend", "pr-12", "--by=1d"],
            expected: Command::EnvExtend {
                env: s("pr-12"),
                by: hours(24),
            },
        },
        Case {
            text: "test",
            discord: ("test", &[]),
            cli: &["test"],
            expected: Command::Test {
                env: None,
                failed_only: false,
            },
        },
        Case {
            text: "test pr-12 --failed",
            discord: ("test", &[("env", "pr-12"), ("failed", "true")]),
            cli: &["test", "pr-12", "--failed"],
            expected: Command::Test {
                env: s("pr-12"),
                failed_only: true,
            },
        },
        Case {
            text: "test failed:true",
            discord: ("test", &[("failed", "true")]),
            cli: &["test", "--failed=true"],
            expected: Command::Test {
                env: None,
                failed_only: true,
            },
        },
        Case {
            text: "approve",
            discord: ("approve", &[]),
            cli: &["approve"],
            expected: Command::Approve,
        },
        Case {
            text: "queue add pr:42 repo:shop",
            discord: ("queue add", &[("pr", "42"), ("repo", "shop")]),
            cli: &["queue", "add", "--pr", "42", "--repo", "shop"],
            expected: Command::QueueAdd {
                change: Some(QueueRef::Pull(42)),
                repo: s("shop"),
                priority: None,
            },
        },
        Case {
            text: "queue add feature-x priority:2",
            discord: ("queue add", &[("change", "feature-x"), ("priority", "2")]),
            cli: &["queue", "add", "feature-x", "--priority", "2"],
            expected: Command::QueueAdd {
                change: Some(QueueRef::Branch("feature-x".into())),
                repo: None,
                priority: Some(2),
            },
        },
        Case {
            text: "queue add 42",
            discord: ("queue add", &[("change", "42")]),
            cli: &["queue", "add", "42"],
            expected: Command::QueueAdd {
                change: Some(QueueRef::Number(42)),
                repo: None,
                priority: None,
            },
        },
        Case {
            text: "queue remove #7",
            discord: ("queue remove", &[("entry", "#7")]),
            cli: &["queue", "remove", "#7"],
            expected: Command::QueueRemove {
                entry: Some(QueueRef::Pull(7)),
                repo: None,
            },
        },
        Case {
            text: "queue list repo:shop",
            discord: ("queue list", &[("repo", "shop")]),
            cli: &["queue", "list", "--repo", "shop"],
            expected: Command::QueueList { repo: s("shop") },
        },
        Case {
            text: "queue status feature-x",
            discord: ("queue status", &[("entry", "feature-x")]),
            cli: &["queue", "status", "feature-x"],
            expected: Command::QueueStatus {
                entry: Some(QueueRef::Branch("feature-x".into())),
                repo: None,
            },
        },
        Case {
            text: "queue pause release freeze repo:shop",
            discord: (
                "queue pause",
                &[("reason", "release freeze"), ("repo", "shop")],
            ),
            cli: &["queue", "pause", "release", "freeze", "--repo", "shop"],
            expected: Command::QueuePause {
                reason: s("release freeze"),
                repo: s("shop"),
            },
        },
        Case {
            text: "queue resume",
            discord: ("queue resume", &[]),
            cli: &["queue", "resume"],
            expected: Command::QueueResume { repo: None },
        },
        Case {
            text: "queue retry 3",
            discord: ("queue retry", &[("entry", "3")]),
            cli: &["queue", "retry", "3"],
            expected: Command::QueueRetry {
                entry: Some(QueueRef::Number(3)),
                repo: None,
            },
        },
        Case {
            text: "release shop 1a2b3c4 channel:production",
            discord: (
                "release",
                &[
                    ("repo", "shop"),
                    ("target", "1a2b3c4"),
                    ("channel", "production"),
                ],
            ),
            cli: &["release", "shop", "1a2b3c4", "--channel", "production"],
            expected: Command::Release {
                repo: "shop".into(),
                target: "1a2b3c4".into(),
                channel: s("production"),
            },
        },
        Case {
            text: "rollout status shop",
            discord: ("rollout status", &[("repo", "shop")]),
            cli: &["rollout", "status", "shop"],
            expected: Command::Rollout {
                action: RolloutVerb::Status,
                repo: s("shop"),
                channel: None,
            },
        },
        Case {
            text: "rollout pause channel:staging",
            discord: ("rollout pause", &[("channel", "staging")]),
            cli: &["rollout", "pause", "--channel", "staging"],
            expected: Command::Rollout {
                action: RolloutVerb::Pause,
                repo: None,
                channel: s("staging"),
            },
        },
        Case {
            text: "rollout resume shop",
            discord: ("rollout resume", &[("repo", "shop")]),
            cli: &["rollout", "resume", "shop"],
            expected: Command::Rollout {
                action: RolloutVerb::Resume,
                repo: s("shop"),
                channel: None,
            },
        },
        Case {
            text: "rollout promote",
            discord: ("rollout promote", &[]),
            cli: &["rollout", "promote"],
            expected: Command::Rollout {
                action: RolloutVerb::Promote,
                repo: None,
                channel: None,
            },
        },
        Case {
            text: "rollout rollback shop channel:production",
            discord: (
                "rollout rollback",
                &[("repo", "shop"), ("channel", "production")],
            ),
            cli: &["rollout", "rollback", "shop", "--channel", "production"],
            expected: Command::Rollout {
                action: RolloutVerb::Rollback,
                repo: s("shop"),
                channel: s("production"),
            },
        },
        Case {
            text: "rollout approve shop",
            discord: ("rollout approve", &[("repo", "shop")]),
            cli: &["rollout", "approve", "shop"],
            expected: Command::Rollout {
                action: RolloutVerb::Approve,
                repo: s("shop"),
                channel: None,
            },
        },
        Case {
            text: "channel freeze incident 42 repo:shop",
            discord: (
                "channel freeze",
                &[("reason", "incident 42"), ("repo", "shop")],
            ),
            cli: &["channel", "freeze", "incident", "42", "--repo", "shop"],
            expected: Command::ChannelFreeze {
                reason: s("incident 42"),
                repo: s("shop"),
                channel: None,
            },
        },
        Case {
            text: "channel unfreeze channel:production",
            discord: ("channel unfreeze", &[("channel", "production")]),
            cli: &["channel", "unfreeze", "--channel", "production"],
            expected: Command::ChannelUnfreeze {
                repo: None,
                channel: s("production"),
            },
        },
        Case {
            text: "help",
            discord: ("help", &[]),
            cli: &["help"],
            expected: Command::Help { topic: None },
        },
        Case {
            text: "help env up",
            discord: ("help", &[("topic", "env up")]),
            cli: &["help", "env", "up"],
            expected: Command::Help { topic: s("env up") },
        },
        Case {
            text: "help \"ENV  Logs\"",
            discord: ("help", &[("topic", "env logs")]),
            cli: &["help", "env logs"],
            expected: Command::Help {
                topic: s("env logs"),
            },
        },
        Case {
            text: "help env",
            discord: ("help", &[("topic", "env")]),
            cli: &["help", "env"],
            expected: Command::Help { topic: s("env") },
        },
        Case {
            text: "whoami",
            discord: ("whoami", &[]),
            cli: &["whoami"],
            expected: Command::WhoAmI,
        },
    ]
}

#[test]
fn every_command_parses_the_same_on_every_surface() {
    for case in cases() {
        let comment = format!("Thanks!\n\n/slipway {}\n", case.text);
        assert_eq!(
            parse_comment(&comment),
            vec![Ok(case.expected.clone())],
            "comment {:?}",
            case.text
        );
        let (name, options) = case.discord;
        assert_eq!(
            Command::from_options(name, options),
            Ok(case.expected.clone()),
            "discord {name} {options:?}"
        );
        let cli: Vec<String> = case.cli.iter().map(|w| w.to_string()).collect();
        assert_eq!(
            Command::from_cli_args(&cli),
            Ok(case.expected.clone()),
            "cli {:?}",
            case.cli
        );
        assert_eq!(
            Command::parse_words(case.cli),
            Ok(case.expected.clone()),
            "words {:?}",
            case.cli
        );
        assert_eq!(case.expected.name(), name);
        // The canonical text form parses back to the same command.
        let canonical = case.expected.to_string();
        assert_eq!(
            Command::parse_line(&canonical),
            Ok(case.expected.clone()),
            "canonical {canonical:?}"
        );
    }
}

#[test]
fn merge_is_queue_add_and_a_change_is_named_once() {
    assert_eq!(
        parse_comment("LGTM\n/slipway merge\n"),
        vec![Ok(Command::QueueAdd {
            change: None,
            repo: None,
            priority: None,
        })]
    );
    assert_eq!(
        Command::parse_line("merge priority:1"),
        Ok(Command::QueueAdd {
            change: None,
            repo: None,
            priority: Some(1),
        })
    );
    let twice = Command::parse_line("queue add 42 branch:feature-x").unwrap_err();
    assert!(twice.to_string().contains("name one change"), "{twice}");
    let missing = Command::parse_line("queue").unwrap_err();
    assert!(missing.to_string().contains("`add`"), "{missing}");
    let typo = Command::parse_line("queue ad 4").unwrap_err();
    assert!(typo.to_string().contains("queue add"), "{typo}");
}

#[test]
fn the_cases_cover_every_command() {
    let cases = cases();
    for kind in CommandKind::ALL {
        assert!(
            cases.iter().any(|case| case.expected.kind() == kind),
            "no case for {kind:?}"
        );
    }
}

#[test]
fn alternative_spellings_give_the_same_command() {
    let expected = Command::EnvUp {
        branch: s("feature-x"),
        repo: None,
        ttl: Some(hours(2)),
    };
    for text in [
        "/slipway env up feature-x ttl:2h",
        "/slipway env up feature-x ttl=2h",
        "/slipway env up feature-x --ttl 2h",
        "/slipway env up feature-x --ttl=2h",
        "/slipway env up feature-x \u{2014}ttl 2h",
        "/slipway env up feature-x ttl: 2h",
        "/slipway env up ttl:2h branch:feature-x",
        "/slipway env up ttl:'2 hours' feature-x",
        "/slipway ENV Up feature-x TTL:2h",
        "/SLIPWAY env up feature-x ttl:120m",
        "   /slipway   env   up   feature-x   ttl:2h   ",
        "@slipway env up feature-x ttl:2h",
        "@Slipway: env up feature-x ttl:2h",
        "@slipway, env up \u{201C}feature-x\u{201D} ttl:2h",
        "/slipway env up feature-x ttl:2h\r",
    ] {
        assert_eq!(parse_comment(text), vec![Ok(expected.clone())], "{text:?}");
    }
    for text in [
        "test --failed",
        "test failed:yes",
        "test failed=on",
        "test --failed=1",
    ] {
        assert_eq!(
            Command::parse_line(text),
            Ok(Command::Test {
                env: None,
                failed_only: true
            }),
            "{text}"
        );
    }
    assert_eq!(
        Command::parse_line("test --failed=false"),
        Ok(Command::Test {
            env: None,
            failed_only: false
        })
    );
    // A first word holding the whole name, as a CLI or API caller might pass it.
    assert_eq!(
        Command::parse_words(&["env status", "pr-1"]),
        Ok(Command::EnvStatus { env: s("pr-1") })
    );
}

fn err(text: &str) -> ParseError {
    match Command::parse_line(text) {
        Ok(command) => panic!("{text:?} parsed as {command:?}"),
        Err(e) => e,
    }
}

#[test]
fn unknown_commands_suggest_the_closest() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("evn up", "evn up", Some("env up")),
        ("env dwon", "env dwon", Some("env down")),
        ("env stat pr-1", "env stat", Some("env status")),
        ("env create feature", "env create", Some("env up")),
        ("env rm", "env rm", Some("env down")),
        ("tset pr-1", "tset", Some("test")),
        ("whoamii", "whoamii", Some("whoami")),
        ("up feature-x", "up", Some("env up")),
        ("ls", "ls", Some("env list")),
        ("aprove", "aprove", Some("approve")),
        ("evn", "evn", Some("env")),
        ("frobnicate now", "frobnicate", None),
        ("env frobnicate", "env frobnicate", None),
        ("deploy-everything", "deploy-everything", None),
    ];
    for &(text, given, suggestion) in cases {
        assert_eq!(
            err(text),
            ParseError::UnknownCommand {
                given: given.to_owned(),
                suggestion: suggestion.map(|s| CommandKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .chain(["env"])
                    .find(|n| *n == s)
                    .unwrap()),
            },
            "{text}"
        );
    }
    assert_eq!(
        err("evn up").reply(),
        "Unknown command `evn up`. Did you mean `env up`?\n\n\
         Usage: `/slipway env up [branch] [repo:<repo>] [ttl:<duration>]`\n\n\
         - `branch`: the branch to deploy (on a pull request: defaults to its head)\n\
         - `repo`: the repository, when Slipway serves several\n\
         - `ttl`: how long the environment lives, e.g. `4h`\n"
    );
    let reply = err("frobnicate").reply();
    assert!(reply.starts_with("Unknown command `frobnicate`.\n\nCommands:"));
    for kind in CommandKind::ALL {
        assert!(
            reply.contains(kind.usage()),
            "{kind:?} missing from {reply}"
        );
    }
    // `evn` suggests the group; the reply lists its commands.
    assert!(err("evn")
        .reply()
        .contains("`/slipway env extend [env] by:<duration>`"));
    // `env` alone.
    let e = err("env");
    assert_eq!(e, ParseError::MissingSubcommand { group: "env" });
    assert_eq!(
        e.to_string(),
        "`env` needs a subcommand: `up`, `down`, `list`, `status`, `logs`, `extend`, `sleep`, `wake`, `pin`, `unpin`."
    );
    assert!(e.reply().contains("`/slipway env logs"));
    // Help topics are checked too.
    assert_eq!(
        err("help evn up"),
        ParseError::UnknownCommand {
            given: "evn up".into(),
            suggestion: Some("env up")
        }
    );
    // Discord names go through the same resolution.
    assert_eq!(
        Command::from_options("evn up", &[]),
        Err(ParseError::UnknownCommand {
            given: "evn up".into(),
            suggestion: Some("env up")
        })
    );
    assert_eq!(
        Command::from_options("env up now", &[]),
        Err(ParseError::UnknownCommand {
            given: "env up now".into(),
            suggestion: Some("env up")
        })
    );
    assert_eq!(Command::from_options(" ", &[]), Err(ParseError::Empty));
    assert_eq!(Command::parse_words(&[]), Err(ParseError::Empty));
}

#[test]
fn bad_arguments_give_typed_errors() {
    use ParseError::*;
    let cases: Vec<(&str, ParseError)> = vec![
        (
            "env up ttll:2h",
            UnknownArgument {
                command: "env up",
                argument: "ttll".into(),
                suggestion: Some("ttl"),
            },
        ),
        (
            "env up --tll 2h",
            UnknownArgument {
                command: "env up",
                argument: "--tll".into(),
                suggestion: Some("ttl"),
            },
        ),
        (
            "env logs lines:10",
            UnknownArgument {
                command: "env logs",
                argument: "lines".into(),
                suggestion: Some("tail"),
            },
        ),
        (
            "test -f",
            UnknownArgument {
                command: "test",
                argument: "-f".into(),
                suggestion: None,
            },
        ),
        (
            "test -failed",
            UnknownArgument {
                command: "test",
                argument: "-failed".into(),
                suggestion: Some("failed"),
            },
        ),
        (
            "env down colour:blue",
            UnknownArgument {
                command: "env down",
                argument: "colour".into(),
                suggestion: None,
            },
        ),
        (
            "env up ttl:2h ttl:3h",
            DuplicateArgument {
                command: "env up",
                argument: "ttl",
            },
        ),
        (
            "env up feature branch:other",
            DuplicateArgument {
                command: "env up",
                argument: "branch",
            },
        ),
        (
            "help env topic:up",
            DuplicateArgument {
                command: "help",
                argument: "topic",
            },
        ),
        (
            "env extend pr-1",
            MissingArgument {
                command: "env extend",
                argument: "by",
            },
        ),
        (
            "env up ttl:",
            MissingValue {
                command: "env up",
                argument: "ttl",
            },
        ),
        (
            "env up --ttl",
            MissingValue {
                command: "env up",
                argument: "ttl",
            },
        ),
        (
            "env up --ttl --repo x",
            MissingValue {
                command: "env up",
                argument: "ttl",
            },
        ),
        (
            "env up branch:\"\"",
            MissingValue {
                command: "env up",
                argument: "branch",
            },
        ),
        (
            "env up one two",
            UnexpectedPositional {
                command: "env up",
                value: "two".into(),
            },
        ),
        (
            "env list everything",
            UnexpectedPositional {
                command: "env list",
                value: "everything".into(),
            },
        ),
        (
            "approve please",
            UnexpectedPositional {
                command: "approve",
                value: "please".into(),
            },
        ),
        (
            "env extend by:soon",
            InvalidValue {
                command: "env extend",
                argument: "by",
                value: "soon".into(),
                why: "expected a duration like `30m`, `4h` or `2d`".into(),
            },
        ),
        (
            "env extend by:4",
            InvalidValue {
                command: "env extend",
                argument: "by",
                value: "4".into(),
                why: "needs a unit, like `4m`, `4h` or `4d`".into(),
            },
        ),
        (
            "env up ttl:0s",
            InvalidValue {
                command: "env up",
                argument: "ttl",
                value: "0s".into(),
                why: "must be longer than zero".into(),
            },
        ),
        (
            "env logs tail:many",
            InvalidValue {
                command: "env logs",
                argument: "tail",
                value: "many".into(),
                why: "expected a whole number like `100`".into(),
            },
        ),
        (
            "env logs tail:-1",
            InvalidValue {
                command: "env logs",
                argument: "tail",
                value: "-1".into(),
                why: "expected a whole number like `100`".into(),
            },
        ),
        (
            "env logs tail:99999999999999999999999",
            InvalidValue {
                command: "env logs",
                argument: "tail",
                value: "99999999999999999999999".into(),
                why: "is too large".into(),
            },
        ),
        (
            "test failed:maybe",
            InvalidValue {
                command: "test",
                argument: "failed",
                value: "maybe".into(),
                why: "expected `true` or `false`".into(),
            },
        ),
        (
            "env up \"feature x\"",
            InvalidValue {
                command: "env up",
                argument: "branch",
                value: "feature x".into(),
                why: "must not contain spaces".into(),
            },
        ),
        (
            "env down pr\u{202E}21",
            InvalidValue {
                command: "env down",
                argument: "env",
                value: "pr\u{202E}21".into(),
                why: "must not contain invisible characters".into(),
            },
        ),
        ("env up \"feature", UnclosedQuote { quote: '"' }),
    ];
    for (text, expected) in cases {
        assert_eq!(err(text), expected, "{text}");
    }
    // Control characters can only arrive through the CLI, the API or Discord.
    assert!(matches!(
        Command::parse_words(&["env", "down", "pr\u{7}1"]),
        Err(InvalidValue { why, .. }) if why == "must not contain control characters"
    ));
    let long = "x".repeat(300);
    assert!(matches!(
        Command::parse_words(&["env", "down", &long]),
        Err(InvalidValue { .. })
    ));
}

#[test]
fn argument_errors_reply_with_usage_and_did_you_mean() {
    let reply = err("env up ttll:2h").reply();
    assert!(reply.starts_with(
        "Unknown argument `ttll` for `env up`. Did you mean `ttl`?\n\n\
         Usage: `/slipway env up [branch] [repo:<repo>] [ttl:<duration>]`"
    ));
    assert_eq!(
        err("env extend").to_string(),
        "`env extend` needs `by`, like `by:4h`."
    );
    assert!(err("env extend")
        .reply()
        .contains("- `by` (required): how much longer"));
    assert_eq!(
        err("env up ttl:2h ttl:3h").to_string(),
        "`ttl` is given more than once to `env up`."
    );
    assert_eq!(
        err("env extend by:soon").to_string(),
        "Invalid value `soon` for `by`: expected a duration like `30m`, `4h` or `2d`."
    );
    // The same errors from Discord options.
    assert_eq!(
        Command::from_options("env up", &[("ttll", "2h")]),
        Err(err("env up ttll:2h"))
    );
    assert_eq!(
        Command::from_options("env extend", &[("by", "soon")]),
        Err(err("env extend by:soon"))
    );
    assert_eq!(
        Command::from_options("env extend", &[]),
        Err(err("env extend"))
    );
    // Other surfaces use their own prefix.
    assert!(err("env extend")
        .reply_for("slipway ")
        .contains("Usage: `slipway env extend <env> --by <duration>`"));
    assert!(err("env extend")
        .reply_for("/")
        .contains("Usage: `/env extend env:<env> by:<duration>`"));
}

#[test]
fn user_text_in_replies_stays_inside_its_code_span() {
    assert_eq!(code("plain"), "`plain`");
    assert_eq!(code("a`b"), "`` a`b ``");
    assert_eq!(code("a``b`"), "``` a``b` ```");
    assert_eq!(code(""), "`  `");
    assert_eq!(code("a\nb"), "`a\u{FFFD}b`");
    assert_eq!(code(&"y".repeat(100)), format!("`{}…`", "y".repeat(60)));
    let e = Command::parse_words(&["env", "up", "x`y@everyone\n"]).unwrap_err();
    assert!(e.to_string().contains("`` x`y@everyone\u{FFFD} ``"), "{e}");
}

#[test]
fn code_blocks_quotes_and_prose_are_ignored() {
    let body = "\
Looks good. Try `/slipway env up` to get an environment, or run /slipway help.
`/slipway env down`
> /slipway env down
>/slipway approve

```
/slipway env down
```
~~~~ text
/slipway env down
~~~
/slipway env down
~~~~
  ```sh
  /slipway env down
  ```` 
<!-- template instructions
/slipway env down
-->
<!-- one-line comment --> 
/slipwayx env down
slipway env down
- /slipway env down
/slipway env status
";
    assert_eq!(command_lines(body), vec![" env status"]);
    assert_eq!(
        parse_comment(body),
        vec![Ok(Command::EnvStatus { env: None })]
    );
    // A one-line "fence" with a backtick in its info string is inline code, not a fence.
    assert_eq!(
        parse_comment("```not a fence```\n/slipway whoami"),
        vec![Ok(Command::WhoAmI)]
    );
    // An unclosed fence swallows the rest of the comment, as Markdown renders it.
    assert!(parse_comment("```\n/slipway env down").is_empty());
}

#[test]
fn several_commands_come_back_in_order() {
    let body = "/slipway env up feature-x\r\nsome words\r\n@slipway test --failed\r\n/slipway evn list\r\n/slipway\r\n/slipway whoami";
    let results = parse_comment(body);
    assert_eq!(
        results,
        vec![
            Ok(Command::EnvUp {
                branch: s("feature-x"),
                repo: None,
                ttl: None
            }),
            Ok(Command::Test {
                env: None,
                failed_only: true
            }),
            Err(ParseError::UnknownCommand {
                given: "evn list".into(),
                suggestion: Some("env list")
            }),
            Err(ParseError::Empty),
            Ok(Command::WhoAmI),
        ]
    );
    // `/slipway` alone is answered with the help.
    assert_eq!(ParseError::Empty.reply(), help_text_for(COMMENT_PREFIX));
    assert!(parse_comment("no commands here").is_empty());
    assert!(parse_comment("").is_empty());
}

#[test]
fn quoted_values() {
    assert_eq!(
        split_words(r#"a "b c" 'd "e"' key:"f g" h=' i ' j"k l"m what's “n o” ‘p’ """#),
        Ok(vec![
            "a".to_owned(),
            "b c".into(),
            "d \"e\"".into(),
            "key:f g".into(),
            "h= i ".into(),
            "j\"k".into(),
            "l\"m".into(),
            "what's".into(),
            "n o".into(),
            "p".into(),
            "".into(),
        ])
    );
    assert_eq!(
        split_words("say 'hi"),
        Err(ParseError::UnclosedQuote { quote: '\'' })
    );
    assert_eq!(
        parse_comment("/slipway help 'env extend'"),
        vec![Ok(Command::Help {
            topic: s("env extend")
        })]
    );
    assert_eq!(
        parse_comment("/slipway env logs service:'web' tail:\"20\""),
        vec![Ok(Command::EnvLogs {
            env: None,
            service: s("web"),
            tail: Some(20)
        })]
    );
    let reply = parse_comment("/slipway env up \"oops")
        .remove(0)
        .unwrap_err()
        .reply();
    assert!(reply.starts_with("Unclosed quote `\"`."), "{reply}");
}

#[test]
fn help_mentions_every_command() {
    let help = help_text_for(COMMENT_PREFIX);
    for kind in CommandKind::ALL {
        let usage = CommandKind::from_name(kind.name()).unwrap().usage();
        assert!(usage.starts_with(kind.name()));
        assert!(help.contains(&format!("`/slipway {usage}`")), "{kind:?}");
        assert!(help.contains(kind.info().summary), "{kind:?}");
        let topic = help_topic(kind.name(), COMMENT_PREFIX).unwrap();
        assert!(topic.contains(usage));
        for arg in kind.args() {
            assert!(topic.contains(arg.about), "{kind:?} {}", arg.name);
        }
        assert_eq!(CommandKind::from_name(kind.name()), Some(kind));
    }
    assert_eq!(
        CommandKind::from_name(" ENV   up "),
        Some(CommandKind::EnvUp)
    );
    assert_eq!(CommandKind::from_name("env"), None);
    assert_eq!(CommandKind::from_name("nope"), None);
    assert!(help_reply(Some("env"), "/").contains("`/env up"));
    assert_eq!(help_reply(None, "/slipway "), help_text_for(COMMENT_PREFIX));
    assert!(help_text_for("/").contains("`/help topic:<command>`"));
}

#[test]
fn usages_match_the_argument_specs() {
    for kind in CommandKind::ALL {
        let usage = kind.usage();
        let mut mentioned = Vec::new();
        for part in usage[kind.name().len()..].split_whitespace() {
            let part = part.trim_matches(['[', ']']);
            let name = part
                .trim_start_matches("--")
                .split(':')
                .next()
                .unwrap()
                .trim_matches(['<', '>']);
            mentioned.push(name);
            let spec = kind.arg(name).unwrap_or_else(|| {
                // `help [command]` names its topic by what it is.
                assert_eq!((kind, name), (CommandKind::Help, "command"));
                kind.arg("topic").unwrap()
            });
            let optional = part.len() < usage.len() && usage.contains(&format!("[{part}]"));
            assert_eq!(spec.required, !optional, "{kind:?} {name}");
            assert_eq!(
                spec.positional,
                !part.contains(':') && !part.starts_with("--"),
                "{kind:?} {name}"
            );
        }
        assert_eq!(mentioned.len(), kind.args().len(), "{kind:?}: {usage}");
    }
}

#[test]
fn edit_distance() {
    assert_eq!(distance("", ""), 0);
    assert_eq!(distance("ttl", "ttl"), 0);
    assert_eq!(distance("ttll", "ttl"), 1);
    assert_eq!(distance("evn", "env"), 1);
    assert_eq!(distance("kitten", "sitting"), 3);
    assert_eq!(distance("", "abc"), 3);
    assert_eq!(distance("abc", ""), 3);
    assert_eq!(distance("ünï", "uni"), 2);
    assert_eq!(distance("ca", "abc"), 3);
}

/// Strings that have broken parsers before.
const NASTY: &[&str] = &[
    "",
    " ",
    "\n",
    "\r\n\r\n",
    "\0",
    "/slipway",
    "/slipway ",
    "/slipway\t",
    "/slipway \"",
    "/slipway '",
    "/slipway “",
    "/slipway env",
    "/slipway env up --",
    "/slipway env up -",
    "/slipway env up --=",
    "/slipway env up :",
    "/slipway env up =",
    "/slipway env up ::::",
    "/slipway env up ttl:\u{200B}",
    "/slipway env up ttl:18446744073709551616s",
    "/slipway env up ttl:9999999999999999999999y",
    "/slipway env logs tail:18446744073709551616",
    "/slipway help \"\"",
    "/slipway help ''",
    "/slipway help \"   \"",
    "/slipway \u{1F600} \u{1F600}:\u{1F600}",
    "/slipway é:é",
    "/slipway env up ﷽:﷽",
    "/slipway env up \u{0301}\u{0301}",
    "/slipway \u{202E}pu vne",
    "/slipway ————",
    "/slipway ––ttl",
    "/slipway env up —",
    "/slipway env up —ttl",
    "@slipway:",
    "@slipway,,",
    "```",
    "~~~",
    "````\n```\n/slipway env up\n````\n/slipway whoami",
    "<!--",
    "<!-- -->",
    "-->",
    "> ",
    "\u{FEFF}/slipway env up",
    "/slipway\u{00A0}env\u{00A0}up",
    "/slipway\u{2028}env up",
    "/SLIPWAY ENV UP TTL:2H",
];

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PIECES: &[&str] = &[
    "/slipway",
    "@slipway",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "env",
    "up",
    "down",
    "list",
    "status",
    "logs",
    "extend",
    "test",
    "approve",
    "help",
    "whoami",
    "evn",
    "ttl:",
    "ttl",
    "by:",
    "tail:",
    "service:",
    "repo:",
    "failed:",
    "topic:",
    "branch:",
    "env:",
    "--",
    "-",
    "—",
    "=",
    ":",
    "2h",
    "0s",
    "4",
    "x",
    "pr-1",
    "feature/x",
    "\"",
    "'",
    "“",
    "”",
    "‘",
    "’",
    "`",
    "```",
    "~~~",
    ">",
    "<!--",
    "-->",
    "\\",
    "\0",
    "\u{7}",
    "\u{200B}",
    "\u{202E}",
    "\u{FEFF}",
    "é",
    "\u{0301}",
    "ß",
    "İ",
    "\u{1F600}",
    "﷽",
    "\u{10FFFF}",
    "99999999999999999999",
    "true",
    "maybe",
];

fn random_text(rng: &mut Rng) -> String {
    let mut text = String::new();
    for _ in 0..rng.below(24) {
        if rng.below(8) == 0 {
            // Any scalar value, now and then.
            let c = loop {
                if let Some(c) = char::from_u32((rng.next() % 0x11_0000) as u32) {
                    break c;
                }
            };
            text.push(c);
        } else {
            text.push_str(PIECES[rng.below(PIECES.len())]);
        }
    }
    text
}

/// Everything a surface does with a parse result: it must not panic.
fn exercise(result: &Result<Command, ParseError>) {
    match result {
        Ok(command) => {
            let canonical = command.to_string();
            assert_eq!(
                Command::parse_line(&canonical).as_ref(),
                Ok(command),
                "canonical form {canonical:?} does not parse back"
            );
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.to_string().contains('\n'), "{e}");
            assert!(!e.reply().is_empty());
            let _ = e.command();
        }
    }
}

#[test]
fn parsing_never_panics_on_arbitrary_text() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut inputs: Vec<String> = NASTY.iter().map(|s| s.to_string()).collect();
    inputs.extend((0..3000).map(|_| random_text(&mut rng)));
    let mut commands = 0;
    for input in &inputs {
        for body in [
            input.clone(),
            format!("/slipway {input}"),
            format!("/slipway env up {input}"),
        ] {
            for result in parse_comment(&body) {
                commands += usize::from(result.is_ok());
                exercise(&result);
            }
        }
        let words: Vec<&str> = input.split(' ').collect();
        exercise(&Command::parse_words(&words));
        let (name, rest) = input.split_once(' ').unwrap_or((input, ""));
        let options: Vec<(&str, &str)> = rest
            .split(' ')
            .map(|option| option.split_once(':').unwrap_or((option, "")))
            .collect();
        exercise(&Command::from_options(name, &options));
        exercise(&Command::from_options("env up", &options));
    }
    // The generator does reach valid commands, not only errors.
    assert!(commands > 50, "only {commands} commands parsed");
}

// ---------------------------------------------------------------------------------------------
// Help and usage per surface (issue 9, items 17 and 18)

#[test]
fn the_comment_usage_is_generated_from_the_argument_specs() {
    for kind in CommandKind::ALL {
        assert_eq!(kind.usage_on(Syntax::Comment), kind.usage(), "{kind:?}");
    }
}

#[test]
fn each_surface_gets_its_own_syntax() {
    let cases = [
        (
            CommandKind::EnvUp,
            "env up [branch] [repo:<repo>] [ttl:<duration>]",
            "env up <branch> [--repo <repo>] [--ttl <duration>]",
            "env up branch:<branch> [repo:<repo>] [ttl:<duration>]",
        ),
        (
            CommandKind::EnvDown,
            "env down [env]",
            "env down <env>",
            "env down env:<env>",
        ),
        (
            CommandKind::EnvList,
            "env list [--all]",
            "env list [--all]",
            "env list [all:True]",
        ),
        (
            CommandKind::EnvLogs,
            "env logs [env] [service:<service>] [tail:<lines>]",
            "env logs <env> [--service <service>] [--tail <lines>]",
            "env logs env:<env> [service:<service>] [tail:<lines>]",
        ),
        (
            CommandKind::EnvExtend,
            "env extend [env] by:<duration>",
            "env extend <env> --by <duration>",
            "env extend env:<env> by:<duration>",
        ),
        (
            CommandKind::Test,
            "test [env] [--failed]",
            "test <env> [--failed]",
            "test env:<env> [failed:True]",
        ),
        (
            CommandKind::Help,
            "help [command]",
            "help [<command>]",
            "help [topic:<command>]",
        ),
    ];
    for (kind, comment, cli, discord) in cases {
        assert_eq!(kind.usage_on(Syntax::Comment), comment);
        assert_eq!(kind.usage_on(Syntax::Cli), cli);
        assert_eq!(kind.usage_on(Syntax::Discord), discord);
    }
    assert_eq!(Syntax::for_prefix("/"), Syntax::Discord);
    assert_eq!(Syntax::for_prefix("slipway "), Syntax::Cli);
    assert_eq!(Syntax::for_prefix(COMMENT_PREFIX), Syntax::Comment);
    assert_eq!(Syntax::for_prefix("@slipway "), Syntax::Comment);
}

#[test]
fn discord_help_never_shows_another_surfaces_syntax() {
    let help = help_text_for("/");
    assert!(
        help.contains("`/env up branch:<branch> [repo:<repo>] [ttl:<duration>]`"),
        "{help}"
    );
    assert!(help.contains("`/env list [all:True]`"), "{help}");
    for cli_only in [
        "[--all]",
        "[branch]",
        "[env]",
        "--failed",
        "/slipway",
        "`/approve",
    ] {
        assert!(
            !help.contains(cli_only),
            "{cli_only} in Discord help:\n{help}"
        );
    }
    for topic in ["env", "env up", "env list", "test", "help"] {
        let text = help_reply(Some(topic), "/");
        for foreign in ["[--all]", "[branch]", "[env]", "--failed", "/slipway"] {
            assert!(
                !text.contains(foreign),
                "{foreign} in /help {topic}:\n{text}"
            );
        }
    }
    // Errors carry the same syntax.
    let reply = Command::from_options("env up", &[("ttll", "2h")])
        .unwrap_err()
        .reply_for("/");
    assert!(reply.contains("`/env up branch:<branch>"), "{reply}");

    let cli = help_text_for("slipway ");
    assert!(
        cli.contains("`slipway env up <branch> [--repo <repo>] [--ttl <duration>]`"),
        "{cli}"
    );
    assert!(!cli.contains("`slipway approve"), "{cli}");
    let comment = help_text_for(COMMENT_PREFIX);
    assert!(comment.contains("`/slipway approve`"), "{comment}");
    assert!(comment.contains("`/slipway env up [branch] [repo:<repo>] [ttl:<duration>]`"));
}

#[test]
fn arguments_only_a_pull_request_can_default_are_required_elsewhere() {
    for kind in CommandKind::ALL {
        for arg in kind.args() {
            if arg.pr_default {
                assert!(!arg.required_on(Syntax::Comment), "{kind:?} {}", arg.name);
                assert!(arg.required_on(Syntax::Cli), "{kind:?} {}", arg.name);
                assert!(arg.required_on(Syntax::Discord), "{kind:?} {}", arg.name);
            } else {
                for syntax in [Syntax::Comment, Syntax::Cli, Syntax::Discord] {
                    assert_eq!(
                        arg.required_on(syntax),
                        arg.required,
                        "{kind:?} {}",
                        arg.name
                    );
                }
            }
        }
    }
    let pr_defaulted: Vec<(CommandKind, &str)> = CommandKind::ALL
        .into_iter()
        .flat_map(|k| {
            k.args()
                .iter()
                .filter(|a| a.pr_default)
                .map(move |a| (k, a.name))
        })
        .collect();
    assert_eq!(
        pr_defaulted,
        [
            (CommandKind::EnvUp, "branch"),
            (CommandKind::EnvDown, "env"),
            (CommandKind::EnvStatus, "env"),
            (CommandKind::EnvLogs, "env"),
            (CommandKind::EnvExtend, "env"),
            (CommandKind::EnvSleep, "env"),
            (CommandKind::EnvWake, "env"),
            (CommandKind::EnvPin, "env"),
            (CommandKind::EnvUnpin, "env"),
            (CommandKind::Test, "env"),
        ]
    );
    assert!(!CommandKind::Approve.available_on(Syntax::Discord));
    assert!(!CommandKind::Approve.available_on(Syntax::Cli));
    assert!(CommandKind::Approve.available_on(Syntax::Comment));
}
