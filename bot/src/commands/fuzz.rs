//! Property ("fuzz") tests of the one command grammar, run with many cases in CI: whatever a
//! user types in a PR comment, on Discord, on the CLI or in an API body, parsing never
//! panics, an error always renders as a reply of bounded size for every surface, and a
//! parsed command's canonical text parses back to the same command.

use proptest::prelude::*;

use super::*;

/// Every surface's prefix, so each reply renderer is exercised.
const PREFIXES: [&str; 4] = [COMMENT_PREFIX, "slipway ", "/", "@slipway "];

/// A reply never grows with anything but the input it quotes.
fn assert_bounded(reply: &str, input_len: usize) {
    assert!(!reply.trim().is_empty(), "an empty reply");
    assert!(
        reply.len() <= 16 * 1024 + 4 * input_len,
        "a reply of {} bytes for {} bytes of input",
        reply.len(),
        input_len
    );
}

fn check(result: Result<Command, ParseError>, input_len: usize) {
    match result {
        Ok(command) => {
            let canonical = command.to_string();
            assert_eq!(
                Command::parse_line(&canonical).as_ref(),
                Ok(&command),
                "{canonical:?} does not parse back"
            );
        }
        Err(error) => {
            for prefix in PREFIXES {
                assert_bounded(&error.reply_for(prefix), input_len);
            }
        }
    }
}

/// Words that look like the grammar's, so the strategies reach past the command name.
fn grammar_word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("env".to_owned()),
        Just("up".to_owned()),
        Just("down".to_owned()),
        Just("list".to_owned()),
        Just("logs".to_owned()),
        Just("extend".to_owned()),
        Just("status".to_owned()),
        Just("test".to_owned()),
        Just("help".to_owned()),
        Just("approve".to_owned()),
        Just("whoami".to_owned()),
        Just("--all".to_owned()),
        Just("--failed".to_owned()),
        Just("--ttl".to_owned()),
        Just("by:4h".to_owned()),
        Just("ttl=2h".to_owned()),
        Just("tail:100".to_owned()),
        Just("tail:-1".to_owned()),
        Just("tail:99999999999999999999999".to_owned()),
        Just("by:9300000000000000s".to_owned()),
        Just("\"quoted value\"".to_owned()),
        Just("'unclosed".to_owned()),
        Just("\u{201c}typographic\u{201d}".to_owned()),
        "[a-zA-Z0-9:=_./-]{0,12}",
        any::<String>(),
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(grammar_word(), 0..8).prop_map(|words| words.join(" ")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_line_parses_or_renders_an_error(line in line()) {
        check(Command::parse_line(&line), line.len());
        let _ = split_words(&line);
    }

    #[test]
    fn any_cli_words_parse_or_render_an_error(words in prop::collection::vec(grammar_word(), 0..8)) {
        let len = words.iter().map(String::len).sum::<usize>();
        check(Command::from_cli_args(&words), len);
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        check(Command::parse_words(&refs), len);
    }

    #[test]
    fn any_comment_body_parses_or_renders_errors(
        lines in prop::collection::vec(
            prop_oneof![
                line().prop_map(|l| format!("/slipway {l}")),
                line().prop_map(|l| format!("@slipway {l}")),
                line(),
                Just("```\n/slipway env up x\n```".to_owned()),
                Just("> /slipway env down".to_owned()),
            ],
            0..6,
        )
    ) {
        let body = lines.join("\n");
        for result in parse_comment(&body) {
            check(result, body.len());
        }
    }

    #[test]
    fn any_discord_options_parse_or_render_an_error(
        name in prop_oneof![
            prop::sample::select(CommandKind::ALL.map(CommandKind::name).to_vec()).prop_map(str::to_owned),
            grammar_word(),
        ],
        options in prop::collection::vec(
            (
                prop_oneof![
                    prop::sample::select(vec![
                        "branch", "env", "repo", "ttl", "by", "service", "tail", "all", "failed", "topic",
                    ]).prop_map(str::to_owned),
                    any::<String>(),
                ],
                grammar_word(),
            ),
            0..5,
        )
    ) {
        let pairs: Vec<(&str, &str)> = options.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let len = name.len() + options.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        check(Command::from_options(&name, &pairs), len);
    }

    #[test]
    fn help_renders_for_any_topic_on_every_surface(topic in line()) {
        for prefix in PREFIXES {
            assert_bounded(&help_reply(Some(&topic), prefix), topic.len());
        }
    }
}

/// Large inputs (a comment body is at most 65,536 characters on GitHub; the API takes 2 MiB)
/// parse in bounded time and give bounded replies.
#[test]
fn large_inputs_stay_bounded() {
    let started = std::time::Instant::now();
    let many_words = format!("env up {}", "x ".repeat(200_000));
    let quotes = "\"".repeat(500_000);
    let keys = "ttl:1h ".repeat(100_000);
    let long_name = format!("env up {}", "b".repeat(1_000_000));
    for input in [many_words, quotes, keys, long_name] {
        check(Command::parse_line(&input), input.len());
        for result in parse_comment(&format!("/slipway {input}")) {
            check(result, input.len() + 9);
        }
    }
    let lines = "/slipway env up x\n".repeat(50_000);
    assert!(parse_comment(&lines).len() <= 50_000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}
