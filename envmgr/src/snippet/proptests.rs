//! Property tests: for random logs split into random chunks and random budgets, a snippet
//! fits its budget, keeps its fences balanced and its link, and shows no secret.

use proptest::prelude::*;
use proptest::test_runner::Config;

use super::*;

/// One line of a generated log; secrets are referred to by index into the case's set.
#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Bytes(Vec<u8>),
    Secret(usize, String, String),
    /// A GitHub token shape, with text around it.
    Token(String, String),
    /// A long line with a secret near where lines are cut (500 characters).
    LongWithSecret(usize, usize),
}

const FAILURES: &[&str] = &[
    "thread 'main' panicked at src/lib.rs:10:5:",
    "assertion `left == right` failed",
    "  left: 1",
    "Error: connection refused",
    "ERROR pool exhausted",
    "test it_works ... FAILED",
    "Traceback (most recent call last):",
    "  File \"/app/x.py\", line 3, in <module>",
    "--- FAIL: TestX (0.00s)",
    "  ● Suite › case",
    "expected:<1> but was:<2>",
    "Segmentation fault",
    "exit status 1",
    "Killed",
    "-----BEGIN RSA PRIVATE KEY-----",
    "-----END RSA PRIVATE KEY-----",
];

fn secret() -> impl Strategy<Value = String> {
    prop_oneof!["Sk[a-z0-9]{8,14}", "pw-[a-zé✓0-9]{6,10}",]
}

fn token() -> impl Strategy<Value = String> {
    "gh[pousr]_[A-Za-z0-9]{36,40}"
}

fn piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => "[ -~]{0,100}".prop_map(Piece::Text),
        2 => "[a-zé✓日💥 `]{0,60}".prop_map(Piece::Text),
        1 => "(```|`{1,5})[a-z ]{0,10}".prop_map(Piece::Text),
        2 => (0..FAILURES.len(), "[ -~]{0,30}")
            .prop_map(|(i, rest)| Piece::Text(format!("{}{rest}", FAILURES[i]))),
        1 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(Piece::Bytes),
        2 => (0..4usize, "[ -~]{0,20}", "[ -~]{0,20}").prop_map(|(i, a, b)| Piece::Secret(i, a, b)),
        1 => ("[ -~]{0,20}", token()).prop_map(|(a, t)| Piece::Token(a, t)),
        1 => (0..4usize, 470..520usize).prop_map(|(i, pad)| Piece::LongWithSecret(i, pad)),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        4 => (100usize..3000).prop_map(Target::Plain),
        1 => Just(Target::GitHubComment),
        1 => Just(Target::DiscordMessage),
        1 => Just(Target::DiscordEmbed),
    ]
}

/// The log's bytes, and the tokens it holds.
fn build(pieces: &[Piece], secrets: &[String]) -> (Vec<u8>, Vec<String>) {
    let mut log = Vec::new();
    let mut tokens = Vec::new();
    for piece in pieces {
        match piece {
            Piece::Text(t) => log.extend_from_slice(t.as_bytes()),
            Piece::Bytes(b) => log.extend_from_slice(b),
            Piece::Secret(i, a, b) => {
                log.extend_from_slice(format!("{a}{}{b}", secrets[i % secrets.len()]).as_bytes())
            }
            Piece::Token(a, t) => {
                log.extend_from_slice(format!("Error: {a}{t} rejected").as_bytes());
                tokens.push(t.clone());
            }
            Piece::LongWithSecret(i, pad) => log.extend_from_slice(
                format!(
                    "Error: {}{} and more",
                    "é".repeat(*pad),
                    secrets[i % secrets.len()]
                )
                .as_bytes(),
            ),
        }
        log.push(b'\n');
    }
    (log, tokens)
}

proptest! {
    #![proptest_config(Config { cases: 200, failure_persistence: None, ..Config::default() })]

    #[test]
    fn snippets_fit_stay_balanced_keep_the_link_and_hide_secrets(
        secrets in proptest::collection::vec(secret(), 1..4),
        pieces in proptest::collection::vec(piece(), 0..60),
        chunk_sizes in proptest::collection::vec(1usize..300, 1..8),
        test_secret in 0..4usize,
        test_token in token(),
        failed in 0..30usize,
        target in target(),
        scanner_knows_secrets in any::<bool>(),
    ) {
        let (log, mut tokens) = build(&pieces, &secrets);
        let mut scanner = if scanner_knows_secrets {
            LogScanner::with_secrets(&secrets)
        } else {
            LogScanner::new()
        };
        let mut rest = &log[..];
        for size in chunk_sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, after) = rest.split_at((*size).min(rest.len()));
            scanner.push(chunk);
            rest = after;
        }
        let findings = scanner.finish();

        let secret_in_test = &secrets[test_secret % secrets.len()];
        let failed_tests: Vec<FailedTest> = (0..failed)
            .map(|i| FailedTest {
                name: format!("case_{i} ``` {secret_in_test}"),
                message: Some(format!("boom {test_token}\n```\nwith {secret_in_test}")),
                file: Some("src/lib.rs".into()),
                line: Some(i as u32 + 1),
                ..FailedTest::default()
            })
            .collect();
        tokens.push(test_token.clone());
        let input = SnippetInput {
            exit: Some(ExitInfo { code: 1, error: Some(format!("not found: {secret_in_test}")), ..ExitInfo::default() }),
            failed_tests: &failed_tests,
            secrets: &secrets,
            log_url: "https://slipway.test/api/v1/envs/a-b/runs/1/log",
        };
        let out = render(&findings, &input, target);

        prop_assert!(out.chars().count() <= target.budget(), "{} > {}", out.chars().count(), target.budget());
        prop_assert!(std::str::from_utf8(out.as_bytes()).is_ok());
        let fences = out.lines().filter(|l| l.starts_with("```")).count();
        prop_assert_eq!(fences % 2, 0, "unbalanced fences:\n{}", out);
        prop_assert!(out.contains(input.log_url));
        for secret in &secrets {
            prop_assert!(!out.contains(secret.as_str()), "secret {:?} in:\n{}", secret, out);
            // Nor its start, left where a long line was cut.
            for (i, _) in secret.char_indices().skip(1) {
                let left = format!("{} …(line cut", &secret[..i]);
                prop_assert!(!out.contains(&left), "{:?} in:\n{}", left, out);
            }
        }
        for token in &tokens {
            prop_assert!(!out.contains(token.as_str()), "token {:?} in:\n{}", token, out);
        }
    }
}
