//! Which log lines look like a failure.
//!
//! This runs on every line of a log that may be gigabytes long, so instead of searching for
//! each keyword in turn it walks the line once and only looks closer at a few "anchor"
//! bytes that every keyword contains and that are rare in ordinary text (`:`, `k`, `x`,
//! uppercase letters, ...). Matching is byte-wise, on the line as assembled (ANSI escapes
//! already stripped), so it also works on lines that are not valid UTF-8.

/// The kind of failure a line announces; the most specific one wins when a line has several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalKind {
    /// Rust `thread '…' panicked at`, Go `panic:`.
    Panic,
    /// Python `Traceback (most recent call last):`; the region runs to the exception line.
    Traceback,
    /// Rust `assertion … failed`, `assert_eq!`, its `left:`/`right:` lines, `AssertionError`.
    Assertion,
    /// JUnit-style `expected:<…> but was:<…>`.
    ExpectedButWas,
    /// Go `--- FAIL:`.
    GoTestFailed,
    /// Jest `●` (and `✕`).
    JestFailed,
    /// `FAILED`, `FAIL:`, `FAIL`, `FAILURE` as a word.
    TestFailed,
    /// Java `Exception in thread`, `…Exception:`.
    Exception,
    /// `Segmentation fault`, `SIGSEGV`.
    Segfault,
    /// `Killed` (the shell's word for SIGKILL, often the OOM killer).
    Killed,
    /// `exit status N`, `exited with code N`, `exit code N`.
    ExitStatus,
    /// `Error:`, `error:`, `error[E…]`, `ERROR`, `FATAL`.
    Error,
}

impl SignalKind {
    /// A short label for the region's heading.
    pub fn label(self) -> &'static str {
        match self {
            SignalKind::Panic => "panic",
            SignalKind::Traceback => "Python traceback",
            SignalKind::Assertion => "assertion failed",
            SignalKind::ExpectedButWas => "assertion failed",
            SignalKind::GoTestFailed => "Go test failed",
            SignalKind::JestFailed => "Jest test failed",
            SignalKind::TestFailed => "test failed",
            SignalKind::Exception => "exception",
            SignalKind::Segfault => "segmentation fault",
            SignalKind::Killed => "killed",
            SignalKind::ExitStatus => "non-zero exit",
            SignalKind::Error => "error",
        }
    }

    /// Lower is more specific: a line with `Error:` and `panicked at` is a panic.
    fn rank(self) -> u8 {
        match self {
            SignalKind::Panic | SignalKind::Traceback => 0,
            SignalKind::Assertion
            | SignalKind::ExpectedButWas
            | SignalKind::GoTestFailed
            | SignalKind::JestFailed => 1,
            SignalKind::TestFailed
            | SignalKind::Exception
            | SignalKind::Segfault
            | SignalKind::Killed => 2,
            SignalKind::ExitStatus | SignalKind::Error => 3,
        }
    }
}

/// What one pass over a line found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineFacts {
    /// The most specific signal and the byte offset where its keyword starts.
    pub signal: Option<(SignalKind, usize)>,
    /// The line may hold a `-----BEGIN/END … PRIVATE KEY-----` marker: the caller then
    /// asks [`super::redact::private_key_markers`] for the exact positions.
    pub key_marker: bool,
}

/// Bytes that start a closer look; see the module comment.
const ANCHORS: [bool; 256] = {
    let mut table = [false; 256];
    let anchors = b":kxFRSK`_[\xE2";
    let mut i = 0;
    while i < anchors.len() {
        table[anchors[i] as usize] = true;
        i += 1;
    }
    table
};

pub(crate) fn scan(line: &[u8]) -> LineFacts {
    let mut facts = LineFacts::default();
    for (i, &b) in line.iter().enumerate() {
        if !ANCHORS[b as usize] {
            continue;
        }
        let found = match b {
            b':' => at_colon(line, i),
            b'k' => at(line, i.wrapping_sub(5), b"panicked at").then(|| (SignalKind::Panic, i - 5)),
            b'x' => at_x(line, i),
            b'F' => at_upper_f(line, i),
            b'R' => (i > 0 && word_at(line, i - 1, b"ERROR")).then(|| (SignalKind::Error, i - 1)),
            b'S' => (at(line, i, b"Segmentation fault") || word_at(line, i, b"SIGSEGV"))
                .then_some((SignalKind::Segfault, i)),
            b'K' => {
                if at(line, i, b"KEY") && line[..i].ends_with(b"PRIVATE ") {
                    facts.key_marker = true;
                }
                word_at(line, i, b"Killed").then_some((SignalKind::Killed, i))
            }
            b'`' => line[..i]
                .ends_with(b"assertion ")
                .then(|| (SignalKind::Assertion, i - 10)),
            b'_' => {
                let start = i.wrapping_sub(6);
                (at(line, start, b"assert_eq!") || at(line, start, b"assert_ne!"))
                    .then_some((SignalKind::Assertion, start))
            }
            b'[' => (line[..i].ends_with(b"error")
                && boundary_before(line, i - 5)
                && line.get(i + 1) == Some(&b'E'))
            .then(|| (SignalKind::Error, i - 5)),
            // U+25CF ● and U+2715 ✕ lead Jest's failing tests, after indentation only.
            _ => ((at(line, i, "●".as_bytes()) || at(line, i, "✕".as_bytes()))
                && line[..i].iter().all(|c| c.is_ascii_whitespace()))
            .then_some((SignalKind::JestFailed, i)),
        };
        if let Some((kind, pos)) = found {
            if facts
                .signal
                .is_none_or(|(best, _)| kind.rank() < best.rank())
            {
                facts.signal = Some((kind, pos));
            }
        }
    }
    facts
}

/// Keywords that end just before a colon at `i`.
fn at_colon(line: &[u8], i: usize) -> Option<(SignalKind, usize)> {
    // Most colons are in timestamps and `::` paths: every keyword below ends in one of
    // these bytes, so the checks are skipped for the others.
    let last = i.checked_sub(1).map(|p| line[p]);
    if !matches!(last, Some(b')' | b'c' | b'r' | b'd' | b't' | b's' | b'n')) {
        return None;
    }
    let before = &line[..i];
    let next = line.get(i + 1).copied();
    let ends = |word: &[u8]| before.ends_with(word).then(|| i - word.len());
    let word_ends = |word: &[u8]| ends(word).filter(|&s| boundary_before(line, s));
    if let Some(s) = ends(b"Traceback (most recent call last)") {
        return Some((SignalKind::Traceback, s));
    }
    if let Some(s) = word_ends(b"panic") {
        return Some((SignalKind::Panic, s));
    }
    if let Some(s) = ends(b"AssertionError").or_else(|| ends(b"assertion failed")) {
        return Some((SignalKind::Assertion, s));
    }
    // Rust's assertion output: `  left: 1` / ` right: 2`, indented, at the line's start.
    for word in [&b"left"[..], b"right"] {
        if let Some(s) = ends(word) {
            if line[..s].iter().all(|c| c.is_ascii_whitespace()) {
                return Some((SignalKind::Assertion, s));
            }
        }
    }
    if next == Some(b'<') {
        if let Some(s) = ends(b"expected").or_else(|| ends(b"but was")) {
            return Some((SignalKind::ExpectedButWas, s));
        }
    }
    if let Some(s) = ends(b"Exception") {
        return Some((SignalKind::Exception, s));
    }
    // `Error:` may follow a type name (`ValueError:`); `error:` must be a word of its own.
    if let Some(s) = ends(b"Error").or_else(|| word_ends(b"error")) {
        return Some((SignalKind::Error, s));
    }
    None
}

fn at_x(line: &[u8], i: usize) -> Option<(SignalKind, usize)> {
    let start = i.checked_sub(1)?;
    if at(line, start, b"Exception in thread") {
        return Some((SignalKind::Exception, start));
    }
    for phrase in [&b"exit status "[..], b"exited with code ", b"exit code "] {
        if at(line, start, phrase)
            && boundary_before(line, start)
            && line
                .get(start + phrase.len())
                .is_some_and(|c| c.is_ascii_digit() || *c == b'-')
        {
            return Some((SignalKind::ExitStatus, start));
        }
    }
    None
}

fn at_upper_f(line: &[u8], i: usize) -> Option<(SignalKind, usize)> {
    if word_at(line, i, b"FATAL") {
        return Some((SignalKind::Error, i));
    }
    if !at(line, i, b"FAIL") || !boundary_before(line, i) {
        return None;
    }
    if line[..i].ends_with(b"--- ") {
        return Some((SignalKind::GoTestFailed, i - 4));
    }
    let word = ["FAIL", "FAILED", "FAILURE", "FAILURES"]
        .iter()
        .any(|w| word_at(line, i, w.as_bytes()));
    word.then_some((SignalKind::TestFailed, i))
}

/// `line[start..]` starts with `word`; a `start` past the end (or wrapped) is no match.
fn at(line: &[u8], start: usize, word: &[u8]) -> bool {
    line.get(start..).is_some_and(|rest| rest.starts_with(word))
}

/// `word` at `start`, not glued to letters, digits or `_` on either side.
fn word_at(line: &[u8], start: usize, word: &[u8]) -> bool {
    at(line, start, word)
        && boundary_before(line, start)
        && !line.get(start + word.len()).is_some_and(|&c| is_word(c))
}

fn boundary_before(line: &[u8], start: usize) -> bool {
    start == 0 || !is_word(line[start - 1])
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}
