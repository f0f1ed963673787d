//! Failure snippets: the few log lines that matter when an environment's integration tests
//! fail, redacted, cut to what a surface accepts, with a link to the full log. Every
//! surface (GitHub check run, the PR's sticky comment, Discord) renders from this module so
//! they agree on what is shown and on what is hidden.
//!
//! ```text
//! log chunks ──▶ LogScanner::push … finish() ──▶ Findings ─┐
//! exit status, JUnit failures, secrets, log URL ──▶ SnippetInput ─┴─▶ render(…, Target) ──▶ Markdown
//!                                        failures with file:line ──▶ check_run_annotations
//! ```
//!
//! The scanner reads a log of any size in bounded memory ([`scan`]); [`render`] fits the
//! findings to a target's character budget, keeps every code fence closed and always ends
//! with the link to the full log. Everything shown from outside (log lines, test messages,
//! the runtime's error) is redacted ([`redact`]) and sits inside code fences, where Markdown,
//! HTML and @mentions are inert.

mod redact;
mod render;
mod scan;
mod signal;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde::Serialize;

pub use redact::{display_url, strip_url_credentials, LineRedactor, Redactor, REDACTED};
pub use render::{fence_safe, render};
pub use scan::{Findings, Line, LogScanner, Region, ScanLimits};
pub use signal::SignalKind;

/// What a snippet is made from besides the log.
#[derive(Debug, Clone)]
pub struct SnippetInput<'a> {
    /// How the test container stopped, when known.
    pub exit: Option<ExitInfo>,
    /// Failures from the test report (JUnit XML and the like), when there is one.
    pub failed_tests: &'a [FailedTest],
    /// Values to redact wherever they appear (the environment's secrets).
    pub secrets: &'a [String],
    /// The full log; always the last line of a snippet, never redacted.
    pub log_url: &'a str,
}

/// How a container stopped, as the runtime reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitInfo {
    pub code: i64,
    pub oom_killed: bool,
    /// Slipway stopped it for running too long.
    pub timed_out: bool,
    /// The runtime's error, e.g. "image not found" or "executable file not found in $PATH".
    pub error: Option<String>,
}

impl ExitInfo {
    /// Why the container stopped, in words, when that is a failure: the headline uses it
    /// when the log does not say. `None` for a clean exit.
    pub fn reason(&self) -> Option<String> {
        let error = self.error.as_deref().unwrap_or("").to_ascii_lowercase();
        if self.oom_killed {
            return Some("killed: out of memory".into());
        }
        if self.timed_out {
            return Some("killed: timed out".into());
        }
        if self.code == 127 || error.contains("not found") || error.contains("no such image") {
            return Some("command or image not found".into());
        }
        if self.code == 126 {
            return Some("command not executable (exit code 126)".into());
        }
        if !error.is_empty() {
            return Some("the container could not run".into());
        }
        match self.code {
            0 => None,
            137 => Some("killed (SIGKILL, exit code 137)".into()),
            code => Some(match signal_name(code - 128) {
                Some(name) if code > 128 => format!("exited with code {code} ({name})"),
                _ => format!("exited with code {code}"),
            }),
        }
    }
}

/// Names of the signals a test process commonly dies of (exit code 128 + N).
fn signal_name(signal: i64) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// One failed test from a test report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailedTest {
    pub name: String,
    pub classname: Option<String>,
    /// The short failure message (JUnit `message=`).
    pub message: Option<String>,
    /// The long form: stack trace, captured output.
    pub details: Option<String>,
    /// Source file of the failure, relative to the repository root.
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// Where a snippet goes; each has its own size limit in characters (GitHub and Discord count
/// characters, not bytes) and its own Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// An issue or PR comment body: 65,536 characters; `<details>` collapses long parts.
    GitHubComment,
    /// A check run's `output.text`: 65,535 characters; `<details>` as in comments.
    CheckRunText,
    /// A Discord message's content: 2,000 characters.
    DiscordMessage,
    /// A Discord embed's description: 4,096 characters. (6,000 is the limit on all of an
    /// embed's text together; its description alone, where a snippet goes, takes 4,096.)
    DiscordEmbed,
    /// Plain Markdown (no `<details>`) in at most this many characters.
    Plain(usize),
}

impl Target {
    pub fn budget(self) -> usize {
        match self {
            Target::GitHubComment => 65_536,
            Target::CheckRunText => 65_535,
            Target::DiscordMessage => 2_000,
            Target::DiscordEmbed => 4_096,
            Target::Plain(chars) => chars,
        }
    }
}

/// A check run annotation, serialized as GitHub's API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    pub annotation_level: &'static str,
    pub title: String,
    pub message: String,
}

/// GitHub accepts at most 50 annotations per request.
pub const MAX_ANNOTATIONS: usize = 50;
/// GitHub's limit on an annotation's message, in bytes.
const ANNOTATION_MESSAGE_BYTES: usize = 64 * 1024;
const ANNOTATION_TITLE_CHARS: usize = 255;

/// Annotations for the failures that name a file and line: at most [`MAX_ANNOTATIONS`],
/// titles and messages redacted and cut to GitHub's limits.
pub fn check_run_annotations(failed: &[FailedTest], secrets: &[String]) -> Vec<Annotation> {
    let redactor = Redactor::new(secrets);
    failed
        .iter()
        .filter_map(|test| {
            let path = test.file.as_deref()?.trim().trim_start_matches("./");
            let line = test.line.filter(|&l| l > 0)?;
            if path.is_empty() {
                return None;
            }
            let title = match &test.classname {
                Some(class) if !class.is_empty() => format!("{class} › {}", test.name),
                _ => test.name.clone(),
            };
            let message = match (&test.message, &test.details) {
                (Some(m), Some(d)) => format!("{m}\n\n{d}"),
                (Some(text), None) | (None, Some(text)) => text.clone(),
                (None, None) => "test failed".to_string(),
            };
            // Redact before cutting: a secret straddling the cut is hidden, not half shown.
            Some(Annotation {
                path: path.to_string(),
                start_line: line,
                end_line: line,
                annotation_level: "failure",
                title: render::cut_chars(&redactor.redact_line(&title), ANNOTATION_TITLE_CHARS),
                message: cut_bytes(&redactor.redact_text(&message), ANNOTATION_MESSAGE_BYTES),
            })
        })
        .take(MAX_ANNOTATIONS)
        .collect()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut_bytes(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
