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
        let partial = self
            .secrets
            .iter()
            .filter_map(|secret| {
                // The longest end of `text` that begins `secret` (a proper prefix: a whole
                // secret is already redacted).
                secret
                    .char_indices()
                    .skip(1)
                    .map(|(i, _)| i)
                    .filter(|&i| text.ends_with(&secret[..i]))
                    .max()
            })
            .max();
        if let Some(len) = partial {
            text.truncate(text.len() - len);
            text.push_str(REDACTED);
        }
        text
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

/// The password in `scheme://user:password@host`.
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
        if let Some(colon) = authority[..at_sign].iter().position(|&c| c == b':') {
            if colon + 1 < at_sign {
                out.push(start + colon + 1..start + at_sign);
            }
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
