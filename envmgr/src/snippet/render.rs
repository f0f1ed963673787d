//! Rendering findings to Markdown within a target's character budget.
//!
//! Layout, most important first:
//!
//! ```text
//! **3 tests failed** · exited with code 1      headline, generated text only
//! **Runtime error** + code block               the runtime's error, when there is one
//! **Failed tests** + code block                name, file:line, message; list capped,
//!                                              at most 3/5 of the room when a log follows
//! **Failure 1 of 3: panic, lines …** + block   failure regions, sharing the room left;
//!                                              GitHub collapses all but the first
//! **Last lines (… of N)** + code block         GitHub collapses it when regions exist
//! …(cut to fit; see the full log)              when anything was cut
//! Full log: <url>                              always
//! ```
//!
//! A block that does not fit whole loses lines from its end (a region loses its context
//! before the failure line first) and says so inside its fence; log lines are narrowed
//! for small targets.
//!
//! Guarantees, for any input: the output has at most the target's budget in characters
//! when the budget is at least the link line plus [`MIN_ROOM`] (below that the output is
//! the link alone, which must survive: the bare URL when only that fits); every code fence
//! opened is closed; text from outside never has two backticks in a row, so it cannot
//! close a fence early, and never stands outside a fence, where Markdown, HTML and
//! @mentions would act; the log link is the last line.

use super::scan::{Findings, Line};
use super::{ExitInfo, FailedTest, Redactor, SnippetInput, Target};

/// Below the link line plus this many characters, a snippet is only the link.
pub const MIN_ROOM: usize = 20;

const FENCE_OPEN: &str = "```text\n";
const FENCE_CLOSE: &str = "```\n";
/// Room kept for the cut marker of a block: "…(cut, 18446744073709551615 more lines)\n".
const CUT_RESERVE: usize = 40;
/// A block is not started with less room than this for its first (possibly cut) line.
const MIN_BLOCK_LINE: usize = 12;
const CUT_NOTE: &str = "\n…(cut to fit; see the full log)\n";
/// Test messages are cut to this many characters per line.
const TEXT_LINE_CHARS: usize = 300;

/// What differs between targets besides the budget.
struct Style {
    /// GitHub renders `<details>`; Discord shows the tags as text.
    details: bool,
    max_tests: usize,
    message_lines: usize,
    detail_lines: usize,
}

impl Style {
    fn of(target: Target) -> Self {
        match target {
            Target::GitHubComment | Target::CheckRunText => Style {
                details: true,
                max_tests: 20,
                message_lines: 6,
                detail_lines: 12,
            },
            Target::DiscordMessage | Target::DiscordEmbed => Style {
                details: false,
                max_tests: 8,
                message_lines: 3,
                detail_lines: 0,
            },
            Target::Plain(_) => Style {
                details: false,
                max_tests: 10,
                message_lines: 4,
                detail_lines: 4,
            },
        }
    }
}

/// Renders a snippet for `target`; see the module comment for its layout and guarantees.
pub fn render(findings: &Findings, input: &SnippetInput, target: Target) -> String {
    let budget = target.budget();
    let link = format!("Full log: {}", input.log_url);
    let link_chars = chars(&link);
    if budget < link_chars + MIN_ROOM {
        // Too small for anything else; the link is the one thing that must be there.
        return if link_chars > budget && chars(input.log_url) <= budget {
            input.log_url.to_string()
        } else {
            link
        };
    }
    let style = Style::of(target);
    // Log lines are cut narrower for small targets: one 500-character line would be a
    // quarter of a Discord message.
    let max_line = (budget / 10).clamp(80, 500);
    // Findings are redacted by the scanner already; redacting again with the secrets given
    // here is cheap and covers a scanner that was given fewer.
    let redactor = Redactor::new(input.secrets);
    let mut out = Out::new(budget - link_chars - 1);
    let note_reserved = out.reserve(chars(CUT_NOTE));

    out.headline(&headline(input, &redactor));

    if let Some(error) = input.exit.as_ref().and_then(|e| e.error.as_deref()) {
        let lines = text_lines(&redactor.redact_text(&plain_text(error)), 5);
        out.block("\n**Runtime error**\n", &lines, "", usize::MAX);
    }

    let has_log = !findings.regions.is_empty() || !findings.tail.is_empty();
    if !input.failed_tests.is_empty() {
        let lines = test_lines(input.failed_tests, &redactor, &style);
        // Leave the log some room: the failing assertion's context is often the answer.
        let cap = if has_log {
            out.room() * 3 / 5
        } else {
            usize::MAX
        };
        let title = format!(
            "\n**Failed tests** ({})\n",
            thousands(input.failed_tests.len() as u64)
        );
        out.block(&title, &lines, "", cap);
    }

    let count = findings.regions.len();
    for (i, region) in findings.regions.iter().enumerate() {
        // Regions share the room left, so a small target shows something of each rather
        // than all of the first; room one leaves goes to the next.
        let share = out.room() / (count - i);
        let collapsed = style.details && i > 0; // the first failure, usually the cause, stays open
        let mut shown = &region.lines[..];
        let mut lines = log_lines(shown, &redactor, max_line);
        if !out.fits_titled(&lines, collapsed, share) {
            // Cut the context before the failure line first.
            shown = region.lines.get(region.opened_at..).unwrap_or(shown);
            lines = log_lines(shown, &redactor, max_line);
        }
        let of = if count > 1 {
            format!(" of {count}")
        } else {
            String::new()
        };
        let (first, last) = match (shown.first(), shown.last()) {
            (Some(first), Some(last)) => (first.number, last.last_number()),
            _ => continue,
        };
        let title = format!(
            "Failure {}{of}: {}, {}",
            i + 1,
            region.kind.label(),
            line_range(first, last)
        );
        out.titled_block(&title, &lines, collapsed, share);
    }
    if findings.signals_not_shown > 0 {
        out.push(&format!(
            "\n…and {} more lines that look like failures\n",
            thousands(findings.signals_not_shown)
        ));
    }

    if let (Some(first), Some(last)) = (findings.tail.first(), findings.tail.last()) {
        let (first, last) = (first.number, last.last_number());
        let span = if first == last {
            thousands(first)
        } else {
            format!("{}–{}", thousands(first), thousands(last))
        };
        let title = format!("Last lines ({span} of {})", thousands(findings.total_lines));
        let lines = log_lines(&findings.tail, &redactor, max_line);
        out.titled_block(&title, &lines, style.details && count > 0, usize::MAX);
    }

    if note_reserved {
        out.release(chars(CUT_NOTE));
        if out.cut {
            out.push(CUT_NOTE);
        }
    }
    let mut text = out.text;
    text.push('\n');
    text.push_str(&link);
    text
}

/// "3 tests failed · exited with code 1", "killed: out of memory", …
fn headline(input: &SnippetInput, redactor: &Redactor) -> String {
    let reason = input.exit.as_ref().and_then(ExitInfo::reason);
    let tests = match input.failed_tests.len() {
        0 => None,
        1 => Some("1 test failed".to_string()),
        n => Some(format!("{} tests failed", thousands(n as u64))),
    };
    let line = match (tests, reason) {
        (Some(tests), Some(reason)) => format!("**{tests}** · {reason}"),
        (Some(tests), None) => format!("**{tests}**"),
        (None, Some(reason)) => format!("**{reason}**"),
        (None, None) => "**Integration tests failed**".to_string(),
    };
    // The timeout text comes from configuration: keep it on one line and out of fences.
    one_line(&redactor.redact_line(&line)).replace('`', "'")
}

/// The failed-tests block: one line per test, its message (and stack trace on GitHub)
/// indented below, the list capped with "… and N more".
fn test_lines(tests: &[FailedTest], redactor: &Redactor, style: &Style) -> Vec<String> {
    let mut lines = Vec::new();
    for test in tests.iter().take(style.max_tests) {
        let mut head = format!("✗ {}", test.name);
        if let Some(class) = test.classname.as_deref().filter(|c| !c.is_empty()) {
            head.push_str(&format!(" ({class})"));
        }
        match (test.file.as_deref(), test.line) {
            (Some(file), Some(line)) => head.push_str(&format!(" — {file}:{line}")),
            (Some(file), None) => head.push_str(&format!(" — {file}")),
            _ => {}
        }
        let head = redactor.redact_line(&one_line(&plain_text(&head)));
        lines.push(fence_safe(&cut_chars(&head, TEXT_LINE_CHARS)));
        for (text, max) in [
            (&test.message, style.message_lines),
            (&test.details, style.detail_lines),
        ] {
            if let Some(text) = text {
                let text = redactor.redact_text(&plain_text(text));
                lines.extend(
                    text_lines(&text, max)
                        .into_iter()
                        .map(|l| format!("    {l}")),
                );
            }
        }
    }
    if tests.len() > style.max_tests {
        lines.push(format!("… and {} more", tests.len() - style.max_tests));
    }
    lines
}

/// Up to `max` non-blank-edged lines of `text`, cut and fence-safe, then "…(N more lines)".
fn text_lines(text: &str, max: usize) -> Vec<String> {
    let all: Vec<&str> = text.lines().map(str::trim_end).collect();
    let start = all.iter().position(|l| !l.is_empty()).unwrap_or(all.len());
    let end = all
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |i| i + 1);
    let all = &all[start..end];
    let mut lines: Vec<String> = all
        .iter()
        .take(max)
        .map(|l| fence_safe(&cut_chars(l, TEXT_LINE_CHARS)))
        .collect();
    if max > 0 && all.len() > max {
        lines.push(format!("…({} more lines)", all.len() - max));
    }
    lines
}

/// Kept log lines, redacted again, cut to `max_chars`, with their folding notes.
fn log_lines(lines: &[Line], redactor: &Redactor, max_chars: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        let mut text = match line.cut {
            Some(_) => redactor.redact_cut_line(&line.text),
            None => redactor.redact_line(&line.text),
        };
        let mut cut = line.cut;
        if let Some((end, _)) = text.char_indices().nth(max_chars) {
            text.truncate(end);
            redactor.trim_secret_start(&mut text);
            cut = cut.or(Some(line.text.len() as u64));
        }
        if let Some(bytes) = cut {
            text.push_str(&format!(" …(line cut, {} bytes)", thousands(bytes)));
        }
        out.push(fence_safe(&text));
        if line.repeats > 0 {
            out.push(format!(
                "…(same line repeated {} times)",
                thousands(line.repeats)
            ));
        }
        if line.similar_later > 0 {
            out.push(format!(
                "…(similar line seen {} more times later in the log)",
                thousands(line.similar_later)
            ));
        }
    }
    out
}

/// The output under construction, counting characters against its limit.
struct Out {
    text: String,
    used: usize,
    limit: usize,
    /// Something was left out or cut for lack of room.
    cut: bool,
}

impl Out {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            used: 0,
            limit,
            cut: false,
        }
    }

    fn room(&self) -> usize {
        self.limit - self.used
    }

    /// Sets `n` characters aside, when that still leaves some room.
    fn reserve(&mut self, n: usize) -> bool {
        if self.room() < n + MIN_ROOM {
            return false;
        }
        self.limit -= n;
        true
    }

    fn release(&mut self, n: usize) {
        self.limit += n;
    }

    /// Appends `s` whole, or nothing.
    fn push(&mut self, s: &str) -> bool {
        let n = chars(s);
        if n > self.room() {
            self.cut = true;
            return false;
        }
        self.text.push_str(s);
        self.used += n;
        true
    }

    /// The headline goes in whatever the room; cut when it must be.
    fn headline(&mut self, line: &str) {
        let room = self.room();
        let line = cut_chars(line, room.saturating_sub(1));
        self.push(&line);
        self.push("\n");
    }

    /// A block under a bold title, or (GitHub) collapsed under a `<details>` summary.
    fn titled_block(&mut self, title: &str, lines: &[String], collapsed: bool, cap: usize) -> bool {
        let (before, after) = titled_frame(title, collapsed);
        self.block(&before, lines, after, cap)
    }

    /// Whether [`Out::titled_block`] would fit whole (a title of up to 80 characters).
    fn fits_titled(&self, lines: &[String], collapsed: bool, cap: usize) -> bool {
        let (before, after) = titled_frame(&"x".repeat(80), collapsed);
        let frame = chars(&before) + chars(FENCE_OPEN) + chars(FENCE_CLOSE) + chars(after);
        let whole: usize = lines.iter().map(|l| chars(l) + 1).sum();
        frame + whole <= self.room().min(cap)
    }

    /// Appends `before`, a fenced block of `lines` (fence-safe already) and `after`, in at
    /// most `cap` characters. Lines that do not fit are left out, and the block says so;
    /// a first line too long for the room is cut. Appends nothing (false) when not even
    /// the frame and a start of the first line fit.
    fn block(&mut self, before: &str, lines: &[String], after: &str, cap: usize) -> bool {
        let Some(first) = lines.first() else {
            return true;
        };
        let room = self.room().min(cap);
        let frame = chars(before) + chars(FENCE_OPEN) + chars(FENCE_CLOSE) + chars(after);
        let whole: usize = lines.iter().map(|l| chars(l) + 1).sum();
        let mut text = format!("{before}{FENCE_OPEN}");
        if frame + whole <= room {
            for line in lines {
                text.push_str(line);
                text.push('\n');
            }
        } else {
            self.cut = true;
            if room < frame + CUT_RESERVE + MIN_BLOCK_LINE {
                return false;
            }
            let mut avail = room - frame - CUT_RESERVE;
            let mut shown = 0;
            for line in lines {
                let n = chars(line) + 1;
                if n > avail {
                    break;
                }
                text.push_str(line);
                text.push('\n');
                avail -= n;
                shown += 1;
            }
            if shown == 0 {
                text.push_str(&cut_chars(first, avail - 1));
                text.push('\n');
                shown = 1;
            }
            match lines.len() - shown {
                0 => text.push_str("…(cut)\n"),
                more => text.push_str(&format!("…(cut, {more} more lines)\n")),
            }
        }
        text.push_str(FENCE_CLOSE);
        text.push_str(after);
        self.push(&text)
    }
}

fn titled_frame(title: &str, collapsed: bool) -> (String, &'static str) {
    if collapsed {
        (
            format!("\n<details><summary>{title}</summary>\n\n"),
            "\n</details>\n",
        )
    } else {
        (format!("\n**{title}**\n"), "")
    }
}

/// Breaks every run of backticks with zero-width spaces, so text from a log or a test
/// cannot close the fence it is shown in (Discord closes a fence at ``` anywhere on a line).
pub fn fence_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut after_tick = false;
    for c in s.chars() {
        if c == '`' && after_tick {
            out.push('\u{200B}');
        }
        after_tick = c == '`';
        out.push(c);
    }
    out
}

/// Text from a test report without ANSI escapes and control characters (newlines and
/// tabs stay): colours in JUnit messages are common.
fn plain_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' {
                            chars.next_if_eq(&'\\');
                            break;
                        }
                    }
                }
                _ => {} // a two-character escape
            },
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split(['\n', '\r']).collect::<Vec<_>>().join(" ")
}

/// At most `max` characters of `s`, never cutting a character; a cut ends with "…".
pub(crate) fn cut_chars(s: &str, max: usize) -> String {
    if chars(s) <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    if max > 0 {
        out.push('…');
    }
    out
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn line_range(first: u64, last: u64) -> String {
    if first == last {
        format!("line {}", thousands(first))
    } else {
        format!("lines {}–{}", thousands(first), thousands(last))
    }
}

/// 1234567 → "1,234,567".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}
