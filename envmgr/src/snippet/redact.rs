//! Redaction of secrets from everything a snippet shows.
//!
//! Two sources: the exact values the caller knows to be secret (the environment's secrets),
//! and token shapes that are secret wherever they appear (GitHub and Slack tokens, AWS keys,
//! bearer credentials, `password=…` forms, passwords in URLs, private key blocks).
//!
//! Redaction works on one assembled line at a time, so a secret split across the chunks a
//! log arrives in is still whole when it is looked for. The only multi-line shape, a
//! `-----BEGIN … PRIVATE KEY-----` block, is followed across lines by [`KeyBlock`].
//!
//! Every match becomes a byte range; overlapping ranges are merged before replacing, so two
//! overlapping secrets are both hidden completely rather than one leaving a tail of the other.

use std::ops::Range;

pub const REDACTED: &str = "[REDACTED]";

/// Shorter secrets are ignored: replacing every `abc` or `1` in a log would hide the log
/// without protecting anything.
const MIN_SECRET_CHARS: usize = 4;

/// Keys whose `key=value` value is a secret (matched as a suffix, lowercase:
/// `DB_PASSWORD`, `access_token`, `client_secret`, `--password`).
const SENSITIVE_KEYS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "apikey",
    "api_key",
    "api-key",
    "access_key",
    "accesskey",
    "private_key",
    "secret_key",
    "signing_key",
    "credentials",
];

#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Longest first, so the longest match wins when one secret contains another.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: &[String]) -> Self {
        // A multi-line secret (a PEM key, a JSON credential) is matched line by line, as the
        // log is redacted line by line.
        let mut parts: Vec<String> = secrets
            .iter()
            .flat_map(|s| s.lines())
            .map(str::trim)
            .filter(|p| p.chars().count() >= MIN_SECRET_CHARS)
            .map(str::to_string)
            .collect();
        parts.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        parts.dedup();
        Self { secrets: parts }
    }

    /// Length in bytes of the longest secret: how far past a cut a line must be kept so a
    /// secret that starts before the cut is still matched whole.
    pub fn longest_secret(&self) -> usize {
        self.secrets.first().map_or(0, String::len)
    }

    /// Redacts one line. A private key marker on the line hides the block's part on it; a
    /// caller that follows lines uses [`KeyBlock`] to hide the lines inside the block.
    pub fn redact_line(&self, line: &str) -> String {
        let mut ranges = Vec::new();
        for secret in &self.secrets {
            ranges.extend(
                line.match_indices(secret.as_str())
                    .map(|(i, s)| i..i + s.len()),
            );
        }
        token_ranges(line.as_bytes(), &mut ranges);
        replace_ranges(line, ranges)
    }

    /// Redacts a line whose end was cut off: as [`Redactor::redact_line`], and also hides
    /// the start of a secret that the cut left at the end (a line cut by a scanner that did
    /// not know the secrets).
    pub fn redact_cut_line(&self, line: &str) -> String {
        let mut text = self.redact_line(line);
        if let Some(len) = self.secret_start_at_end(&text) {
            text.truncate(text.len() - len);
            text.push_str(REDACTED);
        }
        text
    }

    /// Drops from the end of already redacted `text` what could be the start of a secret,
    /// for text about to be cut there: nothing of a secret is left at a cut, even text that
    /// only looks like its first characters.
    pub fn trim_secret_start(&self, text: &mut String) {
        if let Some(len) = self.secret_start_at_end(text) {
            text.truncate(text.len() - len);
        }
    }

    /// The length of the longest end of `text` that begins a secret (a proper prefix: a
    /// whole secret is already redacted).
    fn secret_start_at_end(&self, text: &str) -> Option<usize> {
        self.secrets
            .iter()
            .filter_map(|secret| {
                secret
                    .char_indices()
                    .skip(1)
                    .map(|(i, _)| i)
                    .filter(|&i| text.ends_with(&secret[..i]))
                    .max()
            })
            .max()
    }

    /// Redacts text of several lines (a test's message or stack trace), hiding whole
    /// private key blocks.
    pub fn redact_text(&self, text: &str) -> String {
        let mut block = KeyBlock::default();
        let lines: Vec<String> = text
            .split('\n')
            .map(|line| {
                if block.whole_line(line.as_bytes(), true) {
                    REDACTED.to_string()
                } else {
                    self.redact_line(line)
                }
            })
            .collect();
        lines.join("\n")
    }
}

/// Follows `-----BEGIN … PRIVATE KEY-----` … `-----END … PRIVATE KEY-----` across lines.
///
/// A block that never ends hides the rest of the log: showing key material because its end
/// marker went missing would be worse than a snippet without its last lines.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyBlock {
    inside: bool,
}

impl KeyBlock {
    /// Whether all of `line` is key material (the block was open when the line started).
    /// `may_have_marker` false skips the search on lines known to have no marker.
    pub fn whole_line(&mut self, line: &[u8], may_have_marker: bool) -> bool {
        let was_inside = self.inside;
        if was_inside || may_have_marker {
            self.update(line);
        }
        was_inside
    }

    pub fn is_inside(&self) -> bool {
        self.inside
    }

    /// Follows the markers in `bytes`: the last one decides whether a block is open.
    pub fn update(&mut self, bytes: &[u8]) {
        if let Some(last) = private_key_markers(bytes).last() {
            self.inside = last.begin;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyMarker {
    pub begin: bool,
    /// From the first `-` of `-----BEGIN`/`-----END` to past the closing dashes.
    pub span: (usize, usize),
}

/// The `-----BEGIN/END [RSA|EC|OPENSSH|PGP|…] PRIVATE KEY[ BLOCK]-----` markers on a line.
pub(crate) fn private_key_markers(line: &[u8]) -> Vec<KeyMarker> {
    const LABEL: &[u8] = b"PRIVATE KEY";
    let mut markers = Vec::new();
    for at in find_all(line, LABEL) {
        // The algorithm name between BEGIN and PRIVATE is short; look back a little only.
        let window_start = at.saturating_sub(40);
        let window = &line[window_start..at];
        let begin = rfind(window, b"-----BEGIN ").map(|i| (true, window_start + i));
        let end = rfind(window, b"-----END ").map(|i| (false, window_start + i));
        let Some((is_begin, start)) = [begin, end].into_iter().flatten().max_by_key(|m| m.1) else {
            continue;
        };
        let mut stop = at + LABEL.len();
        if line[stop..].starts_with(b" BLOCK") {
            stop += b" BLOCK".len();
        }
        while line.get(stop) == Some(&b'-') {
            stop += 1;
        }
        markers.push(KeyMarker {
            begin: is_begin,
            span: (start, stop),
        });
    }
    markers
}

/// Byte ranges of token shapes in `line`.
fn token_ranges(line: &[u8], out: &mut Vec<Range<usize>>) {
    private_key_ranges(line, out);
    prefixed_tokens(line, out);
    key_value_ranges(line, out);
    authorization_ranges(line, out);
    url_password_ranges(line, out);
}

/// The part of a private key block on this line. An END with no BEGIN before it means the
/// line started inside a block.
fn private_key_ranges(line: &[u8], out: &mut Vec<Range<usize>>) {
    let mut open: Option<usize> = None;
    for marker in private_key_markers(line) {
        match (marker.begin, open) {
            (true, None) => open = Some(marker.span.0),
            (true, Some(_)) => {}
            (false, start) => {
                out.push(start.unwrap_or(0)..marker.span.1);
                open = None;
            }
        }
    }
    if let Some(start) = open {
        out.push(start..line.len());
    }
}

/// A token recognisable by its prefix and the characters of its body.
struct TokenShape {
    prefixes: &'static [&'static [u8]],
    body: fn(u8) -> bool,
    /// Shorter bodies are not that token ("ghp_short" in prose).
    min_body: usize,
}

const TOKEN_SHAPES: &[TokenShape] = &[
    TokenShape {
        prefixes: &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"],
        body: |c| c.is_ascii_alphanumeric(),
        min_body: 36,
    },
    TokenShape {
        prefixes: &[b"github_pat_"],
        body: |c| c.is_ascii_alphanumeric() || c == b'_',
        min_body: 22,
    },
    // AWS access key ids.
    TokenShape {
        prefixes: &[b"AKIA", b"ASIA"],
        body: |c| c.is_ascii_uppercase() || c.is_ascii_digit(),
        min_body: 16,
    },
    // Slack.
    TokenShape {
        prefixes: &[b"xoxa-", b"xoxb-", b"xoxp-", b"xoxr-", b"xoxo-", b"xoxs-"],
        body: |c| c.is_ascii_alphanumeric() || c == b'-',
        min_body: 10,
    },
];

fn prefixed_tokens(line: &[u8], out: &mut Vec<Range<usize>>) {
    for shape in TOKEN_SHAPES {
        for prefix in shape.prefixes {
            for at in find_all(line, prefix) {
                let start = at + prefix.len();
                let len = line[start..]
                    .iter()
                    .take_while(|&&c| (shape.body)(c))
                    .count();
                if len >= shape.min_body {
                    out.push(at..start + len);
                }
            }
        }
    }
}

/// `password=…`, `?token=…`, `DB_PASSWORD: …`, `"client_secret": "…"`,
/// `aws_secret_access_key = …`.
fn key_value_ranges(line: &[u8], out: &mut Vec<Range<usize>>) {
    for (sep_at, &sep) in line.iter().enumerate() {
        if sep != b'=' && sep != b':' {
            continue;
        }
        let mut key_end = sep_at;
        while key_end > 0 && line[key_end - 1] == b' ' {
            key_end -= 1;
        }
        let quoted = key_end > 0 && matches!(line[key_end - 1], b'"' | b'\'');
        if quoted {
            key_end -= 1;
        }
        let key_start = line[..key_end]
            .iter()
            .rposition(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.')))
            .map_or(0, |i| i + 1);
        let key = line[key_start..key_end].to_ascii_lowercase();
        if key.is_empty() || !SENSITIVE_KEYS.iter().any(|k| key.ends_with(k.as_bytes())) {
            continue;
        }
        // After a colon the value is a secret only in config-like forms: prose such as
        // "invalid token: expired" must keep its words.
        let config_like = quoted
            || key.contains(&b'_')
            || key.contains(&b'-')
            || line[key_start..key_end]
                .iter()
                .all(|c| !c.is_ascii_lowercase());
        if sep == b':' && (!config_like || line[sep_at + 1..].starts_with(b"//")) {
            continue;
        }
        if let Some(value) = value_after(line, sep_at + 1) {
            out.push(value);
        }
    }
}

/// `Authorization: Bearer …` (any scheme) and `bearer …` anywhere.
fn authorization_ranges(line: &[u8], out: &mut Vec<Range<usize>>) {
    for at in find_all_ci(line, b"authorization") {
        // A header passed quoted whole (`-H 'Authorization: Bearer x'`) ends at its quote.
        let outer_quote = at
            .checked_sub(1)
            .map(|i| line[i])
            .filter(|c| matches!(c, b'"' | b'\''));
        let mut i = at + b"authorization".len();
        while matches!(line.get(i), Some(b'"' | b'\'' | b' ')) {
            i += 1;
        }
        if !matches!(line.get(i), Some(b':' | b'=')) {
            continue;
        }
        i += 1;
        while matches!(line.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        let quote = match line.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                i += 1;
                Some(q)
            }
            _ => outer_quote,
        };
        // Keep the scheme word (`Bearer`, `Basic`, `token`): it tells what was sent.
        let scheme = line[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphabetic())
            .count();
        if scheme > 0 && line.get(i + scheme) == Some(&b' ') {
            i += scheme + 1;
        }
        let end = match quote {
            Some(q) => line[i..]
                .iter()
                .position(|&c| c == q)
                .map_or(line.len(), |p| i + p),
            None => line.len(),
        };
        if end > i {
            out.push(i..end);
        }
    }
    for at in find_all_ci(line, b"bearer") {
        if at > 0 && line[at - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut i = at + b"bearer".len();
        let spaces = line[i..]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        if spaces == 0 {
            continue;
        }
        i += spaces;
        let len = line[i..]
            .iter()
            .take_while(|&&c| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c))
            .count();
        if len > 0 {
            out.push(i..i + len);
        }
    }
}

/// The password in `scheme://user:password@host`, and a long user part alone
/// (`https://TOKEN@host`: git hosts take a token as the user name).
fn url_password_ranges(line: &[u8], out: &mut Vec<Range<usize>>) {
    for at in find_all(line, b"://") {
        let start = at + 3;
        let authority = line[start..]
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b"/?#\"'<>".contains(&c))
            .map_or(&line[start..], |end| &line[start..start + end]);
        let Some(at_sign) = authority.iter().rposition(|&c| c == b'@') else {
            continue;
        };
        match authority[..at_sign].iter().position(|&c| c == b':') {
            Some(colon) if colon + 1 < at_sign => out.push(start + colon + 1..start + at_sign),
            Some(_) => {}
            None if at_sign >= MIN_URL_USER_TOKEN => out.push(start..start + at_sign),
            None => {}
        }
    }
}

/// A URL's user part this long is taken for a token (`git`, `deploy`, `alice` are not).
const MIN_URL_USER_TOKEN: usize = 16;

/// `url` as it may be shown or logged: without the user and password of
/// `scheme://user:password@host/…` (git needs them; nobody needs to see them). Text that is
/// not such a URL (a path, `git@host:repo`) is returned as it is.
pub fn display_url(url: &str) -> String {
    strip_url_credentials(url)
}

/// Removes the `user:password@` part of every `scheme://…` URL in `text`: for messages that
/// quote a URL, such as git's `fatal: unable to access 'https://oauth2:…@host/…'`.
pub fn strip_url_credentials(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for at in find_all(bytes, b"://") {
        let start = at + 3;
        if start < copied {
            continue;
        }
        let authority_len = bytes[start..]
            .iter()
            .position(|&c| c.is_ascii_whitespace() || b"/?#\"'<>`".contains(&c))
            .unwrap_or(bytes.len() - start);
        let Some(at_sign) = bytes[start..start + authority_len]
            .iter()
            .rposition(|&c| c == b'@')
        else {
            continue;
        };
        // Everything here is ASCII-delimited, so both ends are char boundaries.
        out.push_str(&text[copied..start]);
        copied = start + at_sign + 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// Redacts a byte stream (a service's log, followed or not) line by line as it arrives: a
/// line is shown only once it is whole, so a secret split across chunks is still found.
/// A private key block is hidden across lines. A line longer than [`MAX_PENDING_LINE`] is
/// let out whole at that size, so a stream without newlines cannot grow without bound.
#[derive(Debug, Clone)]
pub struct LineRedactor {
    redactor: Redactor,
    pending: Vec<u8>,
    block: KeyBlock,
}

/// The longest line [`LineRedactor`] holds back waiting for its end.
pub const MAX_PENDING_LINE: usize = 256 * 1024;

impl LineRedactor {
    pub fn new(redactor: Redactor) -> Self {
        Self {
            redactor,
            pending: Vec::new(),
            block: KeyBlock::default(),
        }
    }

    /// Takes the next chunk; returns the redacted text of the lines it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(nl) = self.pending[from..].iter().position(|&c| c == b'\n') {
            let end = from + nl;
            self.emit(from, end, &mut out);
            out.push(b'\n');
            from = end + 1;
        }
        if self.pending.len() - from > MAX_PENDING_LINE {
            let end = self.pending.len();
            self.emit(from, end, &mut out);
            from = end;
        }
        self.pending.drain(..from);
        out
    }

    /// The redacted rest of the stream (its last line had no newline).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            let end = self.pending.len();
            self.emit(0, end, &mut out);
            self.pending.clear();
        }
        out
    }

    fn emit(&mut self, from: usize, end: usize, out: &mut Vec<u8>) {
        let raw = &self.pending[from..end];
        let (line, cr) = match raw.strip_suffix(b"\r") {
            Some(line) => (line, true),
            None => (raw, false),
        };
        if self.block.whole_line(line, true) {
            out.extend_from_slice(REDACTED.as_bytes());
        } else {
            let text = String::from_utf8_lossy(line);
            out.extend_from_slice(self.redactor.redact_line(&text).as_bytes());
        }
        if cr {
            out.push(b'\r');
        }
    }
}

/// The value starting at `from` (after optional spaces): up to its closing quote when
/// quoted, else up to a delimiter. All delimiters are ASCII, so the range ends on a char
/// boundary.
fn value_after(line: &[u8], from: usize) -> Option<Range<usize>> {
    let mut start = from;
    while matches!(line.get(start), Some(b' ' | b'\t')) {
        start += 1;
    }
    let (start, end) = match line.get(start) {
        Some(&q @ (b'"' | b'\'')) => {
            let start = start + 1;
            let end = line[start..]
                .iter()
                .position(|&c| c == q)
                .map_or(line.len(), |p| start + p);
            (start, end)
        }
        _ => {
            let end = line[start..]
                .iter()
                .position(|&c| c.is_ascii_whitespace() || b"&,;\"'()[]{}<>".contains(&c))
                .map_or(line.len(), |p| start + p);
            (start, end)
        }
    };
    (end > start).then_some(start..end)
}

/// Replaces the (merged) ranges with [`REDACTED`]. Ranges are widened to char boundaries so
/// a mismatch can only hide more, never split a character.
fn replace_ranges(line: &str, mut ranges: Vec<Range<usize>>) -> String {
    if ranges.is_empty() {
        return line.to_string();
    }
    ranges.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(line.len());
    let mut copied = 0;
    let mut pending: Option<Range<usize>> = None;
    for range in ranges {
        let mut start = range.start.min(line.len());
        let mut end = range.end.min(line.len());
        while !line.is_char_boundary(start) {
            start -= 1;
        }
        while !line.is_char_boundary(end) {
            end += 1;
        }
        match &mut pending {
            Some(p) if start <= p.end => p.end = p.end.max(end),
            _ => {
                if let Some(p) = pending.take() {
                    out.push_str(&line[copied..p.start]);
                    out.push_str(REDACTED);
                    copied = p.end;
                }
                pending = Some(start..end);
            }
        }
    }
    if let Some(p) = pending {
        out.push_str(&line[copied..p.start]);
        out.push_str(REDACTED);
        copied = p.end;
    }
    out.push_str(&line[copied..]);
    out
}

/// Start offsets of `needle` in `hay`, overlapping ones included.
fn find_all<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| *w == needle)
        .map(|(i, _)| i)
}

/// As [`find_all`], ignoring ASCII case; `needle` is lowercase.
fn find_all_ci<'a>(hay: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    hay.windows(needle.len())
        .enumerate()
        .filter(move |(_, w)| w.eq_ignore_ascii_case(needle))
        .map(|(i, _)| i)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    fn redact_in_chunks(redactor: &Redactor, text: &str, size: usize) -> String {
        let mut lines = LineRedactor::new(redactor.clone());
        let mut out = Vec::new();
        for chunk in text.as_bytes().chunks(size) {
            out.extend(lines.push(chunk));
        }
        out.extend(lines.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_secret_split_across_chunks_is_still_hidden() {
        let redactor = Redactor::new(&["hunter2-secret".to_string()]);
        let log = "start\r\nconnecting with hunter2-secret now\nghp_abcdefghijklmnopqrstuvwxyz0123456789AB\nend without newline hunter2-secret";
        for size in [1, 2, 3, 5, 7, 64, 4096] {
            let out = redact_in_chunks(&redactor, log, size);
            assert_eq!(
                out,
                "start\r\nconnecting with [REDACTED] now\n[REDACTED]\nend without newline [REDACTED]",
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_private_key_block_is_hidden_across_lines_and_chunks() {
        let log =
            "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----\nb\n";
        let out = redact_in_chunks(&Redactor::default(), log, 3);
        assert!(!out.contains("MIIEow") && !out.contains("AAAA"), "{out}");
        assert!(out.starts_with("a\n") && out.ends_with("b\n"), "{out}");
    }

    #[test]
    fn short_secrets_do_not_turn_a_log_into_stars() {
        let redactor = Redactor::new(&["abc".to_string(), "1".to_string()]);
        let out = redact_in_chunks(&redactor, "abc 1 abcdef\n", 2);
        assert_eq!(out, "abc 1 abcdef\n");
    }

    #[test]
    fn a_line_without_end_is_let_out_at_the_bound() {
        let mut lines = LineRedactor::new(Redactor::default());
        let out = lines.push(&vec![b'x'; MAX_PENDING_LINE + 10]);
        assert_eq!(out.len(), MAX_PENDING_LINE + 10);
        assert!(lines.finish().is_empty());
    }

    #[test]
    fn urls_lose_their_userinfo() {
        assert_eq!(
            display_url("https://oauth2:TOKEN@git.example.com/shop.git"),
            "https://git.example.com/shop.git"
        );
        assert_eq!(
            display_url("https://ghp_only_a_user_part@github.com/a/b"),
            "https://github.com/a/b"
        );
        assert_eq!(display_url("/srv/git/shop"), "/srv/git/shop");
        assert_eq!(
            display_url("git@github.com:a/b.git"),
            "git@github.com:a/b.git"
        );
        assert_eq!(
            display_url("https://git.example.com/a@b"),
            "https://git.example.com/a@b",
            "an @ in the path is not userinfo"
        );
        assert_eq!(
            strip_url_credentials(
                "fatal: unable to access 'https://u:p@h/x.git/': nope; also http://a:b@c:1/ y"
            ),
            "fatal: unable to access 'https://h/x.git/': nope; also http://c:1/ y"
        );
    }

    #[test]
    fn a_long_user_part_of_a_url_is_taken_for_a_token() {
        let redactor = Redactor::default();
        assert_eq!(
            redactor.redact_line("cloning https://abcdef0123456789abcdef@host/x"),
            "cloning https://[REDACTED]@host/x"
        );
        assert_eq!(redactor.redact_line("ssh://git@host/x"), "ssh://git@host/x");
    }
}
