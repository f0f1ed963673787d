//! Finding commands in a pull-request comment, and shell-like word splitting.
//!
//! A command is a line whose first word is `/slipway` or `@slipway` (any case, optionally
//! followed by `:` or `,`; leading whitespace is fine). Ignored: lines inside fenced code
//! blocks (```` ``` ```` or `~~~`) and multi-line HTML comments (`<!-- ... -->`, as PR
//! templates use), quoted lines (`> ...`, someone quoting an earlier comment), and lines
//! where the prefix is not the first word (so "`/slipway env up`" in inline code, or
//! "run /slipway help", is prose).

use super::error::ParseError;
use super::Command;

/// The words that start a command line, compared case-insensitively.
const PREFIXES: [&str; 2] = ["/slipway", "@slipway"];

/// Every command in a comment, in order. A line with only the prefix gives
/// `Err(ParseError::Empty)`, whose reply is the help.
pub fn parse_comment(body: &str) -> Vec<Result<Command, ParseError>> {
    command_lines(body)
        .into_iter()
        .map(Command::parse_line)
        .collect()
}

/// The text after the prefix of every command line.
pub(crate) fn command_lines(body: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut in_html_comment = false;
    for line in body.lines() {
        let line = line.trim_start();
        if let Some((marker, length)) = fence {
            if closes_fence(line, marker, length) {
                fence = None;
            }
            continue;
        }
        if in_html_comment {
            in_html_comment = !line.contains("-->");
            continue;
        }
        if let Some(opened) = opens_fence(line) {
            fence = Some(opened);
            continue;
        }
        if line.starts_with('>') {
            continue;
        }
        if let Some(rest) = strip_prefix(line) {
            lines.push(rest);
        } else if opens_html_comment(line) {
            in_html_comment = true;
        }
    }
    lines
}

/// The rest of the line, if its first word is a prefix.
fn strip_prefix(line: &str) -> Option<&str> {
    let end = line.find(char::is_whitespace).unwrap_or(line.len());
    let first = line[..end].trim_end_matches([':', ',']);
    PREFIXES
        .iter()
        .any(|prefix| first.eq_ignore_ascii_case(prefix))
        .then(|| &line[end..])
}

/// `(marker, length)` when the line opens a code fence (three or more backticks or
/// tildes; a backtick fence's info string cannot hold a backtick).
fn opens_fence(line: &str) -> Option<(char, usize)> {
    let marker = line.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let length = line.chars().take_while(|c| *c == marker).count();
    let info = &line[length..]; // The marker is one byte.
    (length >= 3 && !(marker == '`' && info.contains('`'))).then_some((marker, length))
}

fn closes_fence(line: &str, marker: char, length: usize) -> bool {
    let run = line.chars().take_while(|c| *c == marker).count();
    run >= length && line[run..].trim().is_empty()
}

/// Whether the line leaves an HTML comment open.
fn opens_html_comment(line: &str) -> bool {
    line.rfind("<!--")
        .is_some_and(|at| !line[at + 4..].contains("-->"))
}

/// Quote characters that open a quoted part of a word, with the characters that close
/// it. Typographic quotes are there because phones and chat apps insert them.
fn closing_quotes(open: char) -> Option<&'static [char]> {
    Some(match open {
        '"' => &['"'],
        '\'' => &['\''],
        '\u{201C}' => &['\u{201D}', '\u{201C}'], // “ ”
        '\u{2018}' => &['\u{2019}', '\u{2018}'], // ‘ ’
        '\u{201E}' => &['\u{201C}', '\u{201D}'], // „ “
        _ => return None,
    })
}

pub(crate) fn is_quote(c: char) -> bool {
    closing_quotes(c).is_some()
}

/// Splits a line into words at whitespace. A quote at the start of a word, or right after
/// the `:`/`=` of `key:value`, runs to its closing quote and may hold spaces: `"a b"`,
/// `ttl:"1h 30m"`, `'say "hi"'`. There are no escapes, and quotes elsewhere are literal,
/// so `what's` is one word.
pub fn split_words(line: &str) -> Result<Vec<String>, ParseError> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut word));
                in_word = false;
            }
            continue;
        }
        let may_quote = !in_word || word.ends_with([':', '=']);
        match closing_quotes(c).filter(|_| may_quote) {
            Some(closers) => loop {
                match chars.next() {
                    None => return Err(ParseError::UnclosedQuote { quote: c }),
                    Some(d) if closers.contains(&d) => break,
                    Some(d) => word.push(d),
                }
            },
            None => word.push(c),
        }
        in_word = true;
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}
