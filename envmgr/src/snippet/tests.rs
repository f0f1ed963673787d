use super::signal::{self, SignalKind};
use super::*;

fn scan_with(log: &[u8], secrets: &[String], chunk: usize) -> Findings {
    let mut scanner = LogScanner::with_secrets(secrets);
    for part in log.chunks(chunk.max(1)) {
        scanner.push(part);
    }
    scanner.finish()
}

fn scan(log: &str) -> Findings {
    scan_with(log.as_bytes(), &[], usize::MAX)
}

/// Every kept line's text, regions first.
fn texts(findings: &Findings) -> Vec<String> {
    findings
        .regions
        .iter()
        .flat_map(|r| r.lines.iter())
        .chain(findings.tail.iter())
        .map(|l| l.text.clone())
        .collect()
}

fn numbered(range: std::ops::RangeInclusive<u32>) -> String {
    range.map(|i| format!("ordinary line {i}\n")).collect()
}

fn input<'a>(tests: &'a [FailedTest], secrets: &'a [String]) -> SnippetInput<'a> {
    SnippetInput {
        exit: Some(ExitInfo {
            code: 1,
            ..ExitInfo::default()
        }),
        failed_tests: tests,
        secrets,
        log_url: "https://slipway.example.com/api/v1/envs/web-pr-7/runs/3/log",
    }
}

fn fences(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("```")).count()
}

// ---------------------------------------------------------------------------------------
// Signals

#[test]
fn each_failure_pattern_is_detected() {
    let cases: &[(&str, SignalKind)] = &[
        (
            "thread 'main' panicked at src/main.rs:3:5:",
            SignalKind::Panic,
        ),
        (
            "panic: runtime error: index out of range [3]",
            SignalKind::Panic,
        ),
        ("assertion `left == right` failed", SignalKind::Assertion),
        ("assertion failed: count > 1", SignalKind::Assertion),
        ("  left: 1", SignalKind::Assertion),
        (" right: 2", SignalKind::Assertion),
        ("    assert_eq!(total, 3);", SignalKind::Assertion),
        ("AssertionError: expected 1", SignalKind::Assertion),
        ("test api::create ... FAILED", SignalKind::TestFailed),
        (
            "FAIL: test_login (tests.test_auth.AuthTest)",
            SignalKind::TestFailed,
        ),
        ("FAIL src/app.test.js", SignalKind::TestFailed),
        ("[INFO] BUILD FAILURE", SignalKind::TestFailed),
        (
            "Error: connect ECONNREFUSED 127.0.0.1:5432",
            SignalKind::Error,
        ),
        ("error: could not compile `app`", SignalKind::Error),
        ("error[E0308]: mismatched types", SignalKind::Error),
        (
            "2024-05-01T10:00:00Z ERROR db: pool timed out",
            SignalKind::Error,
        ),
        ("FATAL: role \"app\" does not exist", SignalKind::Error),
        ("ValueError: invalid literal", SignalKind::Error),
        ("Traceback (most recent call last):", SignalKind::Traceback),
        ("--- FAIL: TestCreate (0.01s)", SignalKind::GoTestFailed),
        ("  ● Cart › adds an item", SignalKind::JestFailed),
        ("    ✕ removes an item (4 ms)", SignalKind::JestFailed),
        ("expected:<200> but was:<500>", SignalKind::ExpectedButWas),
        (
            "Exception in thread \"main\" java.lang.IllegalStateException",
            SignalKind::Exception,
        ),
        (
            "java.lang.NullPointerException: x is null",
            SignalKind::Exception,
        ),
        ("Segmentation fault (core dumped)", SignalKind::Segfault),
        ("exit status 2", SignalKind::ExitStatus),
        ("web-1 exited with code 137", SignalKind::ExitStatus),
        (
            "./run-tests.sh: line 4:    87 Killed    cargo test",
            SignalKind::Killed,
        ),
    ];
    for (line, kind) in cases {
        let found = signal::scan(line.as_bytes()).signal.map(|(k, _)| k);
        assert_eq!(found, Some(*kind), "{line:?}");
    }
}

#[test]
fn ordinary_lines_are_not_failures() {
    for line in [
        "   Compiling app v0.1.0 (/src)",
        "test api::create ... ok",
        "2024-05-01T10:00:00Z INFO listening on 0.0.0.0:8080",
        "NO_ERROR=1 ERRORS=0 terror: none",
        "the left: side is fine",
        "FAILING_OVER to replica",
        "exit status page loaded",
        "status ● online",
        "Skilled workers: 4",
        "",
    ] {
        assert_eq!(signal::scan(line.as_bytes()).signal, None, "{line:?}");
    }
}

#[test]
fn the_most_specific_signal_wins() {
    let facts = signal::scan(b"Error: thread 'main' panicked at src/lib.rs:1:1:");
    assert_eq!(facts.signal.map(|(k, _)| k), Some(SignalKind::Panic));
}

// ---------------------------------------------------------------------------------------
// Regions, folding, tail

#[test]
fn a_region_has_context_before_and_after() {
    let mut log = numbered(1..=9);
    log.push_str("Error: boom\n");
    log.push_str(&numbered(11..=60));
    let findings = scan(&log);
    assert_eq!(findings.regions.len(), 1);
    let region = &findings.regions[0];
    assert_eq!(region.kind, SignalKind::Error);
    let numbers: Vec<u64> = region.lines.iter().map(|l| l.number).collect();
    assert_eq!(numbers, (7..=16).collect::<Vec<_>>());
    assert_eq!(findings.total_lines, 60);
    assert_eq!(findings.total_bytes, log.len() as u64);
    // The tail is the last 30 lines, none of them in the region.
    assert_eq!(findings.tail.len(), 30);
    assert_eq!(findings.tail[0].number, 31);
}

#[test]
fn failure_lines_within_the_context_extend_the_region() {
    let log = format!(
        "{}Error: one\nordinary\nError: two\n{}",
        numbered(1..=5),
        numbered(9..=40)
    );
    let findings = scan(&log);
    assert_eq!(findings.regions.len(), 1);
    let region = &findings.regions[0];
    assert_eq!(region.first_number(), 3);
    assert_eq!(region.last_number(), 8 + 6);
}

#[test]
fn only_the_first_regions_are_kept_and_the_rest_counted() {
    let mut log = String::new();
    for i in 0..8 {
        log.push_str(&numbered(1..=20));
        log.push_str(&format!(
            "Error: failure kind {}\n",
            ["a", "b", "c", "d", "e", "f", "g", "h"][i]
        ));
    }
    let findings = scan(&log);
    assert_eq!(findings.regions.len(), 5);
    assert_eq!(findings.signals_not_shown, 3);
    assert_eq!(findings.signal_lines, 8);
}

#[test]
fn regions_are_capped_in_length() {
    let log: String = (0..200)
        .map(|i| format!("Error: distinct {}\n", "x".repeat(i)))
        .collect();
    let findings = scan(&log);
    assert!(findings.regions.iter().all(|r| r.lines.len() <= 40));
}

#[test]
fn repeated_lines_are_folded() {
    let mut log = numbered(1..=3);
    log.push_str(&"ERROR connection refused\n".repeat(215));
    log.push_str(&numbered(1..=3));
    let findings = scan(&log);
    let line = findings.regions[0]
        .lines
        .iter()
        .find(|l| l.text == "ERROR connection refused")
        .expect("the failure line");
    assert_eq!(line.repeats, 214);
    assert_eq!(findings.signal_lines, 215);
    let out = render(&findings, &input(&[], &[]), Target::GitHubComment);
    assert!(out.contains("(same line repeated 214 times)"), "{out}");
    assert_eq!(out.matches("ERROR connection refused").count(), 1);
}

#[test]
fn similar_failure_lines_later_are_counted_not_repeated() {
    let mut log = String::new();
    for i in 0..50 {
        log.push_str(&numbered(1..=12));
        log.push_str(&format!("12:00:{i:02} ERROR retry {i} failed\n"));
    }
    let findings = scan(&log);
    assert_eq!(findings.regions.len(), 1);
    let shown = &findings.regions[0].lines[3];
    assert!(shown.text.contains("ERROR retry 0 failed"), "{shown:?}");
    assert_eq!(shown.similar_later, 49);
    let out = render(&findings, &input(&[], &[]), Target::Plain(4000));
    assert!(out.contains("similar line seen 49 more times"), "{out}");
}

#[test]
fn a_python_traceback_is_kept_through_its_exception_line() {
    let frames: String = (0..10)
        .map(|i| {
            format!(
                "api-1  |   File \"/app/m{i}.py\", line {i}, in f{i}\napi-1  |     call_{i}()\n"
            )
        })
        .collect();
    let log = format!(
        "{}api-1  | Traceback (most recent call last):\n{frames}api-1  | KeyError: 'user'\n{}",
        numbered(1..=5),
        numbered(1..=30)
    );
    let findings = scan(&log);
    let region = &findings.regions[0];
    assert_eq!(region.kind, SignalKind::Traceback);
    let last_frame = region
        .lines
        .iter()
        .position(|l| l.text.contains("call_9()"));
    let exception = region
        .lines
        .iter()
        .position(|l| l.text.contains("KeyError: 'user'"));
    assert!(
        last_frame.is_some() && exception > last_frame,
        "{region:#?}"
    );
    // … and then the usual context after the exception, no more.
    assert_eq!(region.lines.len() - 1 - exception.unwrap_or(0), 6);
}

#[test]
fn the_tail_skips_lines_already_in_a_region() {
    let log = format!("{}Error: at the end\nlast\n", numbered(1..=100));
    let findings = scan(&log);
    assert_eq!(findings.regions[0].last_number(), 102);
    assert!(findings.tail.is_empty());
}

// ---------------------------------------------------------------------------------------
// Line assembly

#[test]
fn ansi_escapes_and_control_characters_are_stripped() {
    let log = "\x1b[1m\x1b[31mError:\x1b[0m boom \x1b]8;;https://x.test\x07link\x1b]8;;\x1b\\ \x1b(Bok\x07\x08\n";
    let findings = scan(log);
    assert_eq!(texts(&findings), ["Error: boom link ok"]);
}

#[test]
fn carriage_returns_overwrite_and_crlf_ends_lines() {
    let log = b"Downloading 10%\rDownloading 55%\rDownloading 100%\nwindows\r\nline\r\n";
    for chunk in [1, 2, 3, usize::MAX] {
        let findings = scan_with(log, &[], chunk);
        assert_eq!(
            texts(&findings),
            ["Downloading 100%", "windows", "line"],
            "chunk {chunk}"
        );
    }
}

#[test]
fn chunks_may_split_lines_and_characters_anywhere() {
    let log = "héllo wörld ✓ 日本語\nError: ünïcödé ✗ 💥 failed\n\x1b[32mgrün\x1b[0m\r\n".repeat(3);
    let whole = scan_with(log.as_bytes(), &[], usize::MAX);
    for chunk in 1..=7 {
        assert_eq!(
            scan_with(log.as_bytes(), &[], chunk),
            whole,
            "chunk {chunk}"
        );
    }
    assert!(texts(&whole)
        .iter()
        .any(|t| t == "Error: ünïcödé ✗ 💥 failed"));
}

#[test]
fn invalid_utf8_is_replaced() {
    let findings = scan_with(b"Error: bad \xff\xfe bytes \xe2\x82\n", &[], 1);
    assert_eq!(
        texts(&findings),
        ["Error: bad \u{FFFD}\u{FFFD} bytes \u{FFFD}"]
    );
}

#[test]
fn a_last_line_without_newline_counts() {
    let findings = scan("one\ntwo");
    assert_eq!(findings.total_lines, 2);
    assert_eq!(texts(&findings), ["one", "two"]);
}

#[test]
fn long_lines_are_cut_at_a_character_boundary() {
    let long = format!("Error: {}\n", "é".repeat(100_000));
    let findings = scan_with(long.as_bytes(), &[], 4096);
    let line = &findings.regions[0].lines[0];
    assert_eq!(line.text.chars().count(), 500);
    assert_eq!(line.cut, Some(long.len() as u64 - 1));
    let out = render(&findings, &input(&[], &[]), Target::GitHubComment);
    assert!(out.contains("…(line cut, 200,007 bytes)"), "{out}");
}

// ---------------------------------------------------------------------------------------
// Exit reasons

#[test]
fn exit_reasons() {
    let reason = |exit: ExitInfo| exit.reason();
    let oom = ExitInfo {
        code: 137,
        oom_killed: true,
        ..Default::default()
    };
    assert_eq!(reason(oom).as_deref(), Some("killed: out of memory"));
    let timeout = ExitInfo {
        code: 137,
        timed_out: true,
        ..Default::default()
    };
    assert_eq!(reason(timeout).as_deref(), Some("killed: timed out"));
    let missing = ExitInfo {
        code: 127,
        ..Default::default()
    };
    assert_eq!(
        reason(missing).as_deref(),
        Some("command or image not found")
    );
    let image = ExitInfo {
        code: -1,
        error: Some("Error response from daemon: No such image: app:latest".into()),
        ..Default::default()
    };
    assert_eq!(reason(image).as_deref(), Some("command or image not found"));
    let exec = ExitInfo {
        code: 0,
        error: Some("exec: \"pytest\": executable file not found in $PATH".into()),
        ..Default::default()
    };
    assert_eq!(reason(exec).as_deref(), Some("command or image not found"));
    let other = ExitInfo {
        code: -1,
        error: Some("mount denied".into()),
        ..Default::default()
    };
    assert_eq!(
        reason(other).as_deref(),
        Some("the container could not run")
    );
    let segv = ExitInfo {
        code: 139,
        ..Default::default()
    };
    assert_eq!(
        reason(segv).as_deref(),
        Some("exited with code 139 (SIGSEGV)")
    );
    let killed = ExitInfo {
        code: 137,
        ..Default::default()
    };
    assert_eq!(
        reason(killed).as_deref(),
        Some("killed (SIGKILL, exit code 137)")
    );
    assert_eq!(
        reason(ExitInfo {
            code: 1,
            ..Default::default()
        })
        .as_deref(),
        Some("exited with code 1")
    );
    assert_eq!(reason(ExitInfo::default()), None);
}

#[test]
fn the_headline_says_what_happened() {
    let first_line = |findings: &Findings, input: &SnippetInput| {
        render(findings, input, Target::DiscordMessage)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let tests = vec![
        FailedTest {
            name: "a".into(),
            ..Default::default()
        };
        3
    ];
    let findings = Findings::default();
    assert_eq!(
        first_line(&findings, &input(&tests, &[])),
        "**3 tests failed** · exited with code 1"
    );
    let mut oom = input(&[], &[]);
    oom.exit = Some(ExitInfo {
        code: 137,
        oom_killed: true,
        ..Default::default()
    });
    assert_eq!(first_line(&findings, &oom), "**killed: out of memory**");
    let mut unknown = input(&[], &[]);
    unknown.exit = None;
    assert_eq!(
        first_line(&findings, &unknown),
        "**Integration tests failed**"
    );
}

// ---------------------------------------------------------------------------------------
// Redaction

fn redact(line: &str) -> String {
    Redactor::new(&[]).redact_line(line)
}

#[test]
fn token_shapes_are_redacted() {
    let ghp = format!("ghp_{}", "a1B2c3D4e5".repeat(4));
    let pat = format!("github_pat_11ABCDEFG0_{}", "xY9_".repeat(15));
    let cases = [
        (
            format!("token {ghp} used"),
            "token [REDACTED] used".to_string(),
        ),
        (format!("x=gho_{}", "Z".repeat(36)), "x=[REDACTED]".into()),
        (
            format!("ghu_{0} ghs_{0} ghr_{0}", "7".repeat(40)),
            "[REDACTED] [REDACTED] [REDACTED]".into(),
        ),
        (
            format!("GITHUB_TOKEN {pat}."),
            "GITHUB_TOKEN [REDACTED].".into(),
        ),
        (
            "key AKIAIOSFODNN7EXAMPLE ok".into(),
            "key [REDACTED] ok".into(),
        ),
        ("ASIAY34FZKBOKMUTVV7A".into(), "[REDACTED]".into()),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            "aws_secret_access_key = [REDACTED]".into(),
        ),
        (
            "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            "aws_secret_access_key: [REDACTED]".into(),
        ),
        (
            "Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxw".into(),
            "Authorization: Bearer [REDACTED]".into(),
        ),
        (
            "curl -H 'authorization: token abc123def' x".into(),
            "curl -H 'authorization: token [REDACTED]' x".into(),
        ),
        (
            "sent bearer abc.def-ghi to api".into(),
            "sent bearer [REDACTED] to api".into(),
        ),
        (
            "slack xoxb-123456789012-abcdefghij ok".into(),
            "slack [REDACTED] ok".into(),
        ),
        ("xoxp-1234-5678-abcdefgh".into(), "[REDACTED]".into()),
        (
            "GET /cb?code=1&access_token=abc123&state=x".into(),
            "GET /cb?code=1&access_token=[REDACTED]&state=x".into(),
        ),
        (
            "DB_PASSWORD=hunter2 PORT=5432".into(),
            "DB_PASSWORD=[REDACTED] PORT=5432".into(),
        ),
        (
            "--password='p@ss word' -v".into(),
            "--password='[REDACTED]' -v".into(),
        ),
        (
            "client_secret=\"s3cr3t\"".into(),
            "client_secret=\"[REDACTED]\"".into(),
        ),
        (
            r#"{"password": "hunter2", "user": "bob"}"#.into(),
            r#"{"password": "[REDACTED]", "user": "bob"}"#.into(),
        ),
        ("API_TOKEN: abcdef".into(), "API_TOKEN: [REDACTED]".into()),
        (
            "postgres://app:hunter2@db:5432/app".into(),
            "postgres://app:[REDACTED]@db:5432/app".into(),
        ),
        (
            "key: -----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n-----END RSA PRIVATE KEY----- done"
                .into(),
            "key: [REDACTED] done".into(),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(redact(&line), want, "{line:?}");
    }
}

#[test]
fn prose_keeps_its_words() {
    for line in [
        "invalid token: expired signature",
        "max_tokens=100 tokens_used=5",
        "PWD=/home/app",
        "ghp_short is not a token",
        "AKIA lowercase akiaiosfodnn7example",
        "see https://example.com/path",
    ] {
        assert_eq!(redact(line), line);
    }
}

#[test]
fn given_secrets_are_redacted_and_short_ones_ignored() {
    let secrets = vec![
        "s3cr3t-value".into(),
        "abc".into(),
        "".into(),
        "multi\nline-secret-part".into(),
    ];
    let r = Redactor::new(&secrets);
    assert_eq!(r.redact_line("x s3cr3t-value y abc"), "x [REDACTED] y abc");
    assert_eq!(r.redact_line("line-secret-part!"), "[REDACTED]!");
    assert_eq!(r.redact_line("multi"), "[REDACTED]");
    // Overlapping secrets are both hidden completely.
    let r = Redactor::new(&["abcdef".into(), "defghi".into()]);
    assert_eq!(r.redact_line("xxabcdefghixx"), "xx[REDACTED]xx");
}

#[test]
fn a_secret_split_across_chunks_is_redacted() {
    let secret = "pa55-w0rd-ünïcode-long";
    let secrets = vec![secret.to_string()];
    let log = format!("Error: login with {secret} failed\n");
    for chunk in 1..=5 {
        let findings = scan_with(log.as_bytes(), &secrets, chunk);
        assert_eq!(
            texts(&findings),
            ["Error: login with [REDACTED] failed"],
            "chunk {chunk}"
        );
    }
}

#[test]
fn private_key_blocks_are_redacted_across_lines_and_chunks() {
    let log = "Error: config dump\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nQyNTUxOQAAACD\n-----END OPENSSH PRIVATE KEY-----\nafter\n";
    for chunk in [1, 7, usize::MAX] {
        let findings = scan_with(log.as_bytes(), &[], chunk);
        let all = texts(&findings).join("\n");
        assert!(!all.contains("b3Blbn") && !all.contains("QyNTU"), "{all}");
        assert!(all.contains("after") && all.contains("[REDACTED]"), "{all}");
    }
    // In a test's message too.
    let text = Redactor::new(&[])
        .redact_text("got\n-----BEGIN PRIVATE KEY-----\nMIIE\nabc\n-----END PRIVATE KEY-----\nok");
    assert_eq!(
        text,
        "got\n[REDACTED]\n[REDACTED]\n[REDACTED]\n[REDACTED]\nok"
    );
}

#[test]
fn a_key_header_at_the_end_of_a_cut_line_still_opens_a_block() {
    let log = format!(
        "{} -----BEGIN PRIVATE KEY-----\nMIIEsecretmaterial\n-----END PRIVATE KEY-----\nError: x\n",
        "y".repeat(5000)
    );
    let all = texts(&scan(&log)).join("\n");
    assert!(!all.contains("MIIEsecret"), "{all}");
}

#[test]
fn a_secret_straddling_the_line_cut_is_not_half_shown() {
    let secret = "straddling-secret-value";
    let secrets = vec![secret.to_string()];
    let log = format!("Error: {}{secret} tail\n", "x".repeat(480));
    // The scanner knows the secret: it redacts before cutting.
    let out = render(
        &scan_with(log.as_bytes(), &secrets, 3),
        &input(&[], &secrets),
        Target::GitHubComment,
    );
    assert!(!out.contains("straddl"), "{out}");
    // It does not: render hides the secret's start left at the cut.
    let mut scanner = LogScanner::new();
    scanner.push(log.as_bytes());
    let out = render(
        &scanner.finish(),
        &input(&[], &secrets),
        Target::GitHubComment,
    );
    assert!(
        !out.contains("straddl") && out.contains("[REDACTED] …(line cut"),
        "{out}"
    );
}

#[test]
fn everything_rendered_is_redacted() {
    let secrets = vec!["hunter2-secret".to_string()];
    let tests = vec![FailedTest {
        name: "login hunter2-secret".into(),
        classname: Some("auth".into()),
        message: Some("password was hunter2-secret".into()),
        details: Some("at login (hunter2-secret)".into()),
        file: Some("tests/auth.rs".into()),
        line: Some(3),
    }];
    let mut input = input(&tests, &secrets);
    input.exit = Some(ExitInfo {
        code: -1,
        error: Some("pull hunter2-secret: not found".into()),
        ..Default::default()
    });
    let findings = scan("Error: hunter2-secret\n");
    for target in [
        Target::GitHubComment,
        Target::DiscordMessage,
        Target::Plain(500),
    ] {
        let out = render(&findings, &input, target);
        assert!(!out.contains("hunter2"), "{out}");
    }
    let annotations = check_run_annotations(&tests, &secrets);
    assert!(!format!("{annotations:?}").contains("hunter2"));
}

// ---------------------------------------------------------------------------------------
// Rendering

fn failing_log() -> Findings {
    let mut log = numbered(1..=50);
    log.push_str("thread 'api::create' panicked at src/api.rs:42:9:\nassertion `left == right` failed\n  left: 200\n right: 500\n");
    log.push_str(&numbered(55..=120));
    log.push_str("Error: second failure ``` with backticks\n");
    log.push_str("```\n");
    log.push_str(&numbered(123..=400));
    scan(&log)
}

fn many_tests(n: usize) -> Vec<FailedTest> {
    (0..n)
        .map(|i| FailedTest {
            name: format!("api::tests::case_{i}"),
            classname: None,
            message: Some(format!("assertion failed: status == 200\ngot {i}")),
            details: Some("stack line 1\nstack line 2".into()),
            file: Some(format!("src/api_{i}.rs")),
            line: Some(10 + i as u32),
        })
        .collect()
}

#[test]
fn github_output_has_everything_in_order() {
    let tests = many_tests(2);
    let out = render(&failing_log(), &input(&tests, &[]), Target::GitHubComment);
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {out}"))
    };
    assert!(at("**2 tests failed**") < at("✗ api::tests::case_0 — src/api_0.rs:10"));
    assert!(at("✗ api::tests::case_1") < at("**Failure 1 of 2: panic, lines 48–"));
    assert!(at("right: 500") < at("<details><summary>Failure 2 of 2: error"));
    assert!(at("Failure 2 of 2") < at("<details><summary>Last lines (371–400 of 400)</summary>"));
    assert!(
        out.ends_with("\nFull log: https://slipway.example.com/api/v1/envs/web-pr-7/runs/3/log")
    );
    assert_eq!(
        out.matches("<details>").count(),
        out.matches("</details>").count()
    );
    assert_eq!(fences(&out) % 2, 0, "{out}");
    assert!(!out.contains("…(cut"), "{out}");
}

#[test]
fn backticks_from_the_log_cannot_close_a_fence() {
    let out = render(&failing_log(), &input(&[], &[]), Target::DiscordEmbed);
    assert!(!out.contains("``` with"), "{out}");
    assert!(out.contains("`\u{200B}`\u{200B}` with backticks"));
    // The log's own ``` line is inside a block and does not start with three backticks.
    assert_eq!(fences(&out) % 2, 0, "{out}");
}

#[test]
fn every_target_stays_within_its_budget() {
    let tests = many_tests(300);
    let findings = failing_log();
    for target in [
        Target::GitHubComment,
        Target::CheckRunText,
        Target::DiscordMessage,
        Target::DiscordEmbed,
        Target::Plain(100),
        Target::Plain(500),
    ] {
        let out = render(&findings, &input(&tests, &[]), target);
        assert!(
            out.chars().count() <= target.budget(),
            "{target:?}: {}",
            out.chars().count()
        );
        assert_eq!(fences(&out) % 2, 0, "{target:?}: {out}");
        assert!(
            out.ends_with("Full log: https://slipway.example.com/api/v1/envs/web-pr-7/runs/3/log")
        );
    }
}

#[test]
fn discord_has_no_details_and_says_what_was_cut() {
    let tests = many_tests(30);
    let out = render(&failing_log(), &input(&tests, &[]), Target::DiscordMessage);
    assert!(!out.contains("<details>"), "{out}");
    assert!(out.contains("… and 22 more"), "{out}");
    assert!(out.contains("…(cut"), "{out}");
    assert!(out.contains("…(cut to fit; see the full log)"), "{out}");
    assert!(out.chars().count() <= 2000);
}

#[test]
fn github_lists_many_tests_with_and_n_more() {
    let tests = many_tests(300);
    let out = render(&failing_log(), &input(&tests, &[]), Target::GitHubComment);
    assert!(out.contains("… and 280 more"), "{out}");
    assert!(out.contains("stack line 2"), "GitHub shows stack traces");
}

#[test]
fn tiny_budgets_keep_the_link() {
    let findings = failing_log();
    let input = input(&[], &[]);
    let link = format!("Full log: {}", input.log_url);
    // Below link + 20: the link alone.
    let out = render(&findings, &input, Target::Plain(link.chars().count() + 19));
    assert_eq!(out, link);
    // At link + 20: a cut headline and the link.
    let out = render(&findings, &input, Target::Plain(link.chars().count() + 20));
    assert!(
        out.starts_with("**exited with") && out.ends_with(&link),
        "{out}"
    );
    assert!(out.chars().count() <= link.chars().count() + 20);
    // Smaller than the link: the bare URL when it fits.
    assert_eq!(render(&findings, &input, Target::Plain(60)), input.log_url);
}

#[test]
fn a_cut_block_is_closed_and_marked() {
    let out = render(&failing_log(), &input(&[], &[]), Target::Plain(400));
    assert!(out.chars().count() <= 400);
    assert!(out.contains("…(cut"), "{out}");
    assert_eq!(fences(&out) % 2, 0, "{out}");
}

#[test]
fn the_runtime_error_is_shown() {
    let mut input = input(&[], &[]);
    input.exit = Some(ExitInfo {
        code: -1,
        error: Some("\x1b[31mpull access denied for app:latest\x1b[0m, image not found".into()),
        ..Default::default()
    });
    let out = render(&Findings::default(), &input, Target::DiscordMessage);
    assert!(out.starts_with("**command or image not found**\n"), "{out}");
    assert!(
        out.contains("```text\npull access denied for app:latest, image not found\n```"),
        "{out}"
    );
}

#[test]
fn output_from_outside_stays_inside_fences() {
    let tests = vec![FailedTest {
        name: "@everyone <details> **bold**".into(),
        message: Some("```\n@here".into()),
        ..Default::default()
    }];
    let out = render(
        &Findings::default(),
        &input(&tests, &[]),
        Target::DiscordMessage,
    );
    let outside: String = out.split("```").step_by(2).collect::<Vec<_>>().join("|");
    assert!(
        !outside.contains("@everyone") && !outside.contains("@here"),
        "{out}"
    );
    assert_eq!(fences(&out) % 2, 0, "{out}");
}

// ---------------------------------------------------------------------------------------
// Annotations

#[test]
fn annotations_for_failures_with_a_location() {
    let mut tests = many_tests(60);
    tests[0].file = Some("./src/lib.rs".into());
    tests[1].line = None;
    tests[2].message = Some(format!("token ghp_{}", "a".repeat(36)));
    tests[3].details = Some("é".repeat(70_000));
    let annotations = check_run_annotations(&tests, &[]);
    assert_eq!(annotations.len(), MAX_ANNOTATIONS);
    assert_eq!(annotations[0].path, "src/lib.rs");
    assert_eq!(annotations[0].annotation_level, "failure");
    assert_eq!(
        (annotations[0].start_line, annotations[0].end_line),
        (10, 10)
    );
    assert_eq!(
        annotations[1].title, "api::tests::case_2",
        "no line, no annotation"
    );
    assert!(annotations[1].message.starts_with("token [REDACTED]"));
    assert!(annotations[2].message.len() <= 64 * 1024);
    let json = serde_json::to_value(&annotations[0]).unwrap_or_default();
    assert_eq!(json["annotation_level"], "failure");
}

#[test]
fn a_small_target_shows_every_failure_line_before_any_context() {
    let context: String = (1..=3)
        .map(|i| format!("DEBUG payload {i} {}\n", "p".repeat(800)))
        .collect();
    let log: String = [
        "Error: first",
        "thread 'main' panicked at src/a.rs:1:1:",
        "--- FAIL: TestThird (0.00s)",
    ]
    .iter()
    .map(|failure| format!("{context}{failure}\n{}", numbered(1..=30)))
    .collect();
    let findings = scan(&log);
    assert_eq!(findings.regions.len(), 3);
    let out = render(&findings, &input(&[], &[]), Target::DiscordMessage);
    assert!(out.chars().count() <= 2000);
    for failure in [
        "Error: first",
        "panicked at src/a.rs:1:1:",
        "--- FAIL: TestThird",
    ] {
        assert!(out.contains(failure), "{failure:?} in {out}");
    }
    // Context before a failure line goes first; the last region may use the room left.
    assert!(
        out.contains("lines 4–10**\n```text\nError: first\n"),
        "{out}"
    );
    assert!(
        out.contains("lines 38–44**\n```text\nthread 'main'"),
        "{out}"
    );
    // Narrower lines on Discord; on GitHub there is room for all, lines cut at 500.
    let narrow = format!("DEBUG payload 3 {} …(line cut, 816 bytes)", "p".repeat(184));
    assert!(out.contains(&narrow), "{out}");
    let out = render(&findings, &input(&[], &[]), Target::GitHubComment);
    let wide = format!("DEBUG payload 3 {} …(line cut, 816 bytes)", "p".repeat(484));
    assert!(out.contains(&wide), "{out}");
}
