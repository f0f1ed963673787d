//! JUnit XML test reports, the de-facto format written by pytest `--junitxml`, Maven Surefire,
//! Gradle, Jest (`jest-junit`), `go-junit-report`, cargo-nextest, PHPUnit and many more, parsed
//! into one [`TestCase`] per `<testcase>`.
//!
//! Reports come out of untrusted test containers, so the parser is defensive: input over
//! [`MAX_INPUT`] is refused, at most [`MAX_CASES`] cases are kept (the rest are still counted
//! in [`Totals`]), every text field is cut at a fixed size on a char boundary, nesting is
//! bounded, a `<!DOCTYPE>` is ignored and no custom entity is ever expanded (an unknown
//! `&name;` stays as written), and invalid UTF-8 is decoded lossily. Memory use is therefore
//! proportional to the input, which is itself bounded.
//!
//! The dialects differ mostly in attributes; what is read:
//! - root `<testsuites>` or a single `<testsuite>`, suites nested to any reasonable depth;
//! - `<testcase name classname time file line>` (`class` is accepted for `classname`,
//!   `lineno` for `line`); a missing `file` is taken from the nearest enclosing
//!   `<testsuite file>`, or from `classname` when that is a source path (jest-junit's
//!   `{filepath}` template);
//! - children `<failure>`, `<error>`, `<skipped>`, `<system-out>`, `<system-err>`, and
//!   Surefire's reruns `<flakyFailure>`/`<flakyError>`/`<rerunFailure>`/`<rerunError>`
//!   (with their `<stackTrace>`): a case without a real failure but with reruns passed on a
//!   retry, so it is [`Outcome::Passed`] with a note in [`TestCase::message`];
//! - when a case has no `line` attribute, the location is looked for in the failure text
//!   (Rust panics, Python tracebacks and pytest reprs, Go `t.Error` lines, JS and Java stack
//!   frames, …), skipping frames in toolchains and dependencies.

use std::borrow::Cow;
use std::io::Read;
use std::time::Duration;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// Largest report accepted, in bytes.
pub const MAX_INPUT: usize = 50 * 1024 * 1024;
/// Most test cases kept in [`TestReport::tests`]; later ones are only counted.
pub const MAX_CASES: usize = 100_000;
/// Cap on [`TestCase::message`], in bytes.
pub const MAX_MESSAGE: usize = 4 * 1024;
/// Cap on [`TestCase::details`], in bytes.
pub const MAX_DETAILS: usize = 16 * 1024;
/// Cap on [`TestCase::system_out`] and [`TestCase::system_err`], in bytes.
pub const MAX_OUTPUT: usize = 8 * 1024;
/// Cap on names, class names, suite names and file paths, in bytes.
pub const MAX_NAME: usize = 2 * 1024;
/// Deepest element nesting accepted.
pub const MAX_DEPTH: usize = 256;

/// What ends a text field that was cut; counted within the field's cap.
pub const TRUNCATION_MARKER: &str = "… [truncated]";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JunitError {
    #[error("test report is {size} bytes, more than the {limit} bytes accepted")]
    TooLarge { size: usize, limit: usize },
    #[error("malformed test report at line {line}, column {column} (byte {offset}): {message}")]
    Malformed {
        /// 1-based line in the (decoded) document.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// Byte offset in the decoded document.
        offset: usize,
        message: String,
    },
    #[error("not a JUnit XML report: {0}")]
    NotJunit(String),
    #[error("reading test report: {0}")]
    Io(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Passed,
    Failed,
    Errored,
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Errored => "errored",
            Outcome::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub classname: Option<String>,
    /// Name of the innermost enclosing `<testsuite>`.
    pub suite: Option<String>,
    pub outcome: Outcome,
    pub duration: Option<Duration>,
    /// The failure's (or skip's) `message` attribute, else the first line of its text, else
    /// its `type`; for a case that passed on a rerun, a note saying so. Cut to [`MAX_MESSAGE`].
    pub message: Option<String>,
    /// Text of the failure (usually a stack trace), of the skip, or of the first failed run of
    /// a case that passed on a rerun. Cut to [`MAX_DETAILS`].
    pub details: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// Cut to [`MAX_OUTPUT`].
    pub system_out: Option<String>,
    /// Cut to [`MAX_OUTPUT`].
    pub system_err: Option<String>,
    /// Failed runs reported by Surefire-style reruns (`flakyFailure`, `rerunFailure`, …).
    pub reruns: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub total: usize,
    pub passed: usize,
    pub failed: usize,
    pub errored: usize,
    pub skipped: usize,
    /// The root element's `time`, else the sum of the outermost suites' `time`, else the sum
    /// of the cases' `time`.
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub tests: Vec<TestCase>,
    /// Counted from every case, including those past [`MAX_CASES`].
    pub totals: Totals,
    /// Cases counted in `totals` but not kept in `tests` (past [`MAX_CASES`]).
    pub omitted: usize,
}

impl TestCase {
    /// `classname::name`, or just `name` when there is no class name or it repeats the name
    /// (jest-junit's default).
    pub fn full_name(&self) -> String {
        match self.classname.as_deref() {
            Some(class) if !class.is_empty() && class != self.name => {
                format!("{class}::{}", self.name)
            }
            _ => self.name.clone(),
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self.outcome, Outcome::Failed | Outcome::Errored)
    }
}

impl TestReport {
    /// Cases that failed or errored.
    pub fn failed(&self) -> impl Iterator<Item = &TestCase> {
        self.tests.iter().filter(|t| t.is_failure())
    }
}

/// Reads at most [`MAX_INPUT`] bytes from `reader` and parses them.
pub fn parse_reader(reader: impl Read) -> Result<TestReport, JunitError> {
    let mut buf = Vec::new();
    reader
        .take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| JunitError::Io(e.to_string()))?;
    parse(&buf)
}

/// Parses a JUnit XML report.
pub fn parse(xml: &[u8]) -> Result<TestReport, JunitError> {
    if xml.len() > MAX_INPUT {
        return Err(JunitError::TooLarge {
            size: xml.len(),
            limit: MAX_INPUT,
        });
    }
    let text = decode(xml);
    Parser::new(&text).run()
}

/// Decodes the document: UTF-16 when it starts with a UTF-16 byte order mark, otherwise
/// UTF-8 with invalid sequences replaced. A declared `encoding` is not honoured.
fn decode(xml: &[u8]) -> Cow<'_, str> {
    let utf16 = |bytes: &[u8], be: bool| {
        let units = bytes.chunks_exact(2).map(|c| {
            if be {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        });
        Cow::Owned(
            char::decode_utf16(units)
                .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect(),
        )
    };
    if let Some(rest) = xml.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(rest)
    } else if let Some(rest) = xml.strip_prefix(b"\xFF\xFE") {
        utf16(rest, false)
    } else if let Some(rest) = xml.strip_prefix(b"\xFE\xFF") {
        utf16(rest, true)
    } else {
        String::from_utf8_lossy(xml)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// Where character data inside the current element goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    Ignore,
    Failure,
    Flaky,
    Skip,
    Out,
    Err,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Suites,
    Suite,
    Case,
    /// `<failure>` or `<error>`.
    Failure,
    /// `<flakyFailure>`, `<rerunFailure>`, … (Surefire).
    Rerun,
    Skipped,
    Other,
}

struct Frame {
    kind: Kind,
    sink: Sink,
    /// Whether this frame pushed onto `suites`.
    suite: bool,
}

struct SuiteCtx {
    name: Option<String>,
    file: Option<String>,
}

/// A text field being collected, capped at `limit` bytes.
struct TextBuf {
    text: String,
    limit: usize,
    cut: bool,
}

impl TextBuf {
    fn new(limit: usize) -> Self {
        Self {
            text: String::new(),
            limit,
            cut: false,
        }
    }

    fn push(&mut self, mut piece: &str) {
        if self.cut {
            return;
        }
        if self.text.is_empty() {
            piece = piece.trim_start();
        }
        if self.text.len() + piece.len() <= self.limit {
            self.text.push_str(piece);
        } else {
            let room = self.limit - self.text.len();
            self.text
                .push_str(&piece[..floor_char_boundary(piece, room)]);
            self.cut = true;
        }
    }

    fn finish(self) -> Option<String> {
        let mut text = self.text;
        if self.cut {
            let keep =
                floor_char_boundary(&text, self.limit.saturating_sub(TRUNCATION_MARKER.len()));
            text.truncate(keep);
            text.truncate(text.trim_end().len());
            text.push_str(TRUNCATION_MARKER);
        } else {
            text.truncate(text.trim_end().len());
        }
        (!text.is_empty()).then_some(text)
    }
}

#[derive(Default)]
struct FailureInfo {
    message: Option<String>,
    kind: Option<String>,
}

struct CaseBuilder {
    keep: bool,
    name: String,
    classname: Option<String>,
    suite: Option<String>,
    file: Option<String>,
    line: Option<u32>,
    duration: Option<Duration>,
    /// `status` and `result` attributes (googletest, ctest and others), lowercased.
    statuses: Vec<String>,
    /// First `<failure>` or `<error>`: whether it was an error, and its attributes.
    failure: Option<(Outcome, FailureInfo)>,
    skipped: Option<FailureInfo>,
    flaky: Option<FailureInfo>,
    reruns: u32,
    failure_text: TextBuf,
    flaky_text: TextBuf,
    skip_text: TextBuf,
    out: TextBuf,
    err: TextBuf,
}

struct Parser<'a> {
    doc: &'a str,
    reader: Reader<&'a [u8]>,
    stack: Vec<Frame>,
    suites: Vec<SuiteCtx>,
    case: Option<CaseBuilder>,
    report: TestReport,
    saw_root: bool,
    roots: usize,
    root_time: Option<Duration>,
    /// Sum of the `time` of the outermost `<testsuite>`s.
    suite_time_sum: Option<Duration>,
    case_time_sum: Option<Duration>,
    /// Byte offset where the event being handled starts.
    event_start: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.allow_dangling_amp = true;
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Self {
            doc: text,
            reader,
            stack: Vec::new(),
            suites: Vec::new(),
            case: None,
            report: TestReport::default(),
            saw_root: false,
            roots: 0,
            root_time: None,
            suite_time_sum: None,
            case_time_sum: None,
            event_start: 0,
        }
    }

    fn run(mut self) -> Result<TestReport, JunitError> {
        loop {
            self.event_start = self.reader.buffer_position() as usize;
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let at = self.reader.error_position() as usize;
                    return Err(self.malformed_at(at, e.to_string()));
                }
            };
            match event {
                Event::Start(e) => self.start(&e)?,
                Event::Empty(e) => {
                    self.start(&e)?;
                    self.end();
                }
                Event::End(_) => self.end(),
                Event::Text(t) => self.text(&t.xml10_content()),
                Event::CData(t) => self.text(&t.xml10_content()),
                Event::GeneralRef(r) => {
                    let mut resolved = String::new();
                    push_reference(&mut resolved, &r);
                    self.text(&resolved);
                }
                // No DTD is ever read: its entities stay unexpanded references.
                Event::DocType(_) | Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = self.stack.last() {
            let what = match open.kind {
                Kind::Suites => "<testsuites>",
                Kind::Suite => "<testsuite>",
                Kind::Case => "<testcase>",
                Kind::Failure => "<failure>",
                Kind::Rerun => "a rerun element",
                Kind::Skipped => "<skipped>",
                Kind::Other => "an element",
            };
            return Err(self.malformed_at(
                self.doc.len(),
                format!("unexpected end of input inside {what} (truncated report?)"),
            ));
        }
        if !self.saw_root {
            return Err(JunitError::NotJunit(
                "no <testsuites> or <testsuite> element".into(),
            ));
        }
        let mut report = self.report;
        let root_time = if self.roots == 1 {
            self.root_time
        } else {
            None
        };
        report.totals.duration = root_time.or(self.suite_time_sum).or(self.case_time_sum);
        Ok(report)
    }

    fn malformed_at(&self, offset: usize, message: String) -> JunitError {
        let offset = floor_char_boundary(self.doc, offset.min(self.doc.len()));
        let before = &self.doc[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        JunitError::Malformed {
            line,
            column,
            offset,
            message,
        }
    }

    fn start(&mut self, e: &BytesStart<'_>) -> Result<(), JunitError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(self.malformed_at(
                self.event_start,
                format!("elements nested more than {MAX_DEPTH} deep"),
            ));
        }
        let attrs = self.attributes(e)?;
        let attr = |key: &str| -> Option<&str> {
            attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.as_str())
        };
        let local = e.local_name();
        let name: &str = local.as_ref();
        let parent = self.stack.last().map(|f| (f.kind, f.sink));
        let in_case = self.case.is_some();
        let mut frame = Frame {
            kind: Kind::Other,
            sink: Sink::Ignore,
            suite: false,
        };

        if parent.is_none() && !self.saw_root {
            match name {
                "testsuites" | "testsuite" => {
                    self.saw_root = true;
                }
                other => {
                    return Err(JunitError::NotJunit(format!(
                        "the root element is <{}>, not <testsuites> or <testsuite>",
                        cut(other, 64)
                    )))
                }
            }
        }

        if parent.is_none() && matches!(name, "testsuites" | "testsuite") {
            // More than one root: reports concatenated into one file.
            self.roots += 1;
            self.root_time = attr("time").and_then(parse_seconds);
        }

        match name {
            "testsuites" if !in_case => frame.kind = Kind::Suites,
            "testsuite" if !in_case => {
                frame.kind = Kind::Suite;
                frame.suite = true;
                if self.suites.is_empty() {
                    if let Some(time) = attr("time").and_then(parse_seconds) {
                        let sum = self.suite_time_sum.unwrap_or_default();
                        self.suite_time_sum = Some(sum.saturating_add(time));
                    }
                }
                let inherited = self.suites.last().and_then(|s| s.file.clone());
                self.suites.push(SuiteCtx {
                    name: attr("name").map(|n| cut(n, MAX_NAME)),
                    file: attr("file")
                        .or_else(|| attr("filepath"))
                        .filter(|f| !f.trim().is_empty())
                        .map(|f| cut(f.trim(), MAX_NAME))
                        .or(inherited),
                });
            }
            "testcase" if !in_case => {
                frame.kind = Kind::Case;
                let keep = self.report.tests.len() < MAX_CASES;
                let suite = self.suites.last();
                let classname = attr("classname")
                    .or_else(|| attr("class"))
                    .filter(|c| !c.is_empty())
                    .map(|c| cut(c, MAX_NAME));
                let file = attr("file")
                    .or_else(|| attr("filepath"))
                    .filter(|f| !f.trim().is_empty())
                    .map(|f| cut(f.trim(), MAX_NAME))
                    .or_else(|| suite.and_then(|s| s.file.clone()))
                    .or_else(|| classname.clone().filter(|c| looks_like_source_path(c)));
                self.case = Some(CaseBuilder {
                    keep,
                    name: attr("name").map(|n| cut(n, MAX_NAME)).unwrap_or_default(),
                    classname,
                    suite: suite.and_then(|s| s.name.clone()),
                    file,
                    line: attr("line")
                        .or_else(|| attr("lineno"))
                        .and_then(|l| l.trim().parse().ok()),
                    duration: attr("time").and_then(parse_seconds),
                    statuses: [attr("status"), attr("result")]
                        .into_iter()
                        .flatten()
                        .map(|s| cut(s.trim(), 64).to_ascii_lowercase())
                        .collect(),
                    failure: None,
                    skipped: None,
                    flaky: None,
                    reruns: 0,
                    failure_text: TextBuf::new(if keep { MAX_DETAILS } else { 0 }),
                    flaky_text: TextBuf::new(if keep { MAX_DETAILS } else { 0 }),
                    skip_text: TextBuf::new(if keep { MAX_DETAILS } else { 0 }),
                    out: TextBuf::new(if keep { MAX_OUTPUT } else { 0 }),
                    err: TextBuf::new(if keep { MAX_OUTPUT } else { 0 }),
                });
            }
            _ if parent.map(|p| p.0) == Some(Kind::Case) => {
                let case = self.case.as_mut().expect("a case frame has a case");
                let info = || FailureInfo {
                    message: attr("message").map(|m| cut(m, MAX_MESSAGE)),
                    kind: attr("type").map(|t| cut(t, MAX_MESSAGE)),
                };
                match name {
                    "failure" | "error" => {
                        frame.kind = Kind::Failure;
                        if case.failure.is_none() {
                            let outcome = if name == "error" {
                                Outcome::Errored
                            } else {
                                Outcome::Failed
                            };
                            case.failure = Some((outcome, info()));
                            frame.sink = Sink::Failure;
                        }
                    }
                    "flakyFailure" | "flakyError" | "rerunFailure" | "rerunError" => {
                        frame.kind = Kind::Rerun;
                        case.reruns = case.reruns.saturating_add(1);
                        if case.flaky.is_none() {
                            case.flaky = Some(info());
                            frame.sink = Sink::Flaky;
                        }
                    }
                    "skipped" => {
                        frame.kind = Kind::Skipped;
                        if case.skipped.is_none() {
                            case.skipped = Some(info());
                            frame.sink = Sink::Skip;
                        }
                    }
                    "system-out" => frame.sink = Sink::Out,
                    "system-err" => frame.sink = Sink::Err,
                    _ => {}
                }
            }
            // Surefire nests the trace of a rerun in <stackTrace>.
            "stackTrace" if parent == Some((Kind::Rerun, Sink::Flaky)) => frame.sink = Sink::Flaky,
            _ => {}
        }
        self.stack.push(frame);
        Ok(())
    }

    fn end(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if frame.suite {
            self.suites.pop();
        }
        if frame.kind == Kind::Case {
            if let Some(case) = self.case.take() {
                self.finish_case(case);
            }
        }
    }

    fn text(&mut self, piece: &str) {
        let (Some(frame), Some(case)) = (self.stack.last(), self.case.as_mut()) else {
            return;
        };
        let buf = match frame.sink {
            Sink::Ignore => return,
            Sink::Failure => &mut case.failure_text,
            Sink::Flaky => &mut case.flaky_text,
            Sink::Skip => &mut case.skip_text,
            Sink::Out => &mut case.out,
            Sink::Err => &mut case.err,
        };
        buf.push(piece);
    }

    fn attributes(&self, e: &BytesStart<'_>) -> Result<Vec<(String, String)>, JunitError> {
        let mut out = Vec::new();
        let mut attrs = e.attributes();
        attrs.with_checks(false);
        for attr in attrs {
            let attr = attr.map_err(|err| {
                self.malformed_at(self.event_start, format!("bad attribute: {err}"))
            })?;
            let key = attr.key.local_name().into_inner();
            if out.iter().any(|(k, _): &(String, String)| k == key) {
                continue;
            }
            out.push((key.to_string(), unescape_attribute(&attr.value)));
        }
        Ok(out)
    }

    fn finish_case(&mut self, case: CaseBuilder) {
        let status_is =
            |values: &[&str]| case.statuses.iter().any(|s| values.contains(&s.as_str()));
        let outcome = if let Some((outcome, _)) = &case.failure {
            *outcome
        } else if case.skipped.is_some() {
            Outcome::Skipped
        } else {
            if status_is(&["error", "errored"]) {
                Outcome::Errored
            } else if status_is(&["failed", "fail", "failure"]) {
                Outcome::Failed
            } else if status_is(&[
                "skipped",
                "skip",
                "notrun",
                "disabled",
                "ignored",
                "pending",
                "suppressed",
            ]) {
                Outcome::Skipped
            } else {
                Outcome::Passed
            }
        };

        let totals = &mut self.report.totals;
        totals.total += 1;
        match outcome {
            Outcome::Passed => totals.passed += 1,
            Outcome::Failed => totals.failed += 1,
            Outcome::Errored => totals.errored += 1,
            Outcome::Skipped => totals.skipped += 1,
        }
        if let Some(d) = case.duration {
            self.case_time_sum = Some(self.case_time_sum.unwrap_or_default().saturating_add(d));
        }
        if !case.keep {
            self.report.omitted += 1;
            return;
        }

        let (info, details) = match (&case.failure, outcome) {
            (Some((_, info)), _) => (Some(info), case.failure_text.finish()),
            (None, Outcome::Skipped) => (case.skipped.as_ref(), case.skip_text.finish()),
            (None, Outcome::Passed) if case.flaky.is_some() => {
                (case.flaky.as_ref(), case.flaky_text.finish())
            }
            _ => (None, None),
        };
        let mut message = info.and_then(|info| {
            info.message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .or_else(|| {
                    details
                        .as_deref()
                        .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
                        .map(|l| cut(l, MAX_MESSAGE))
                })
                .or_else(|| info.kind.clone().filter(|k| !k.trim().is_empty()))
        });
        if outcome == Outcome::Passed && case.reruns > 0 {
            let note = format!(
                "flaky: passed after {} failed run{}",
                case.reruns,
                if case.reruns == 1 { "" } else { "s" }
            );
            message = Some(match message {
                Some(m) => cut(&format!("{note}: {m}"), MAX_MESSAGE),
                None => note,
            });
        }

        let mut file = case.file;
        let mut line = case.line;
        if line.is_none() {
            let haystacks = [details.as_deref(), message.as_deref()];
            if let Some(loc) = haystacks
                .into_iter()
                .flatten()
                .find_map(|text| find_location(text, file.as_deref(), case.classname.as_deref()))
            {
                // A file the report names is kept, and paired only with a line in it.
                if file.is_none() {
                    file = Some(cut(&loc.path, MAX_NAME));
                    line = Some(loc.line);
                } else if loc.matches_file {
                    line = Some(loc.line);
                }
            }
        }

        self.report.tests.push(TestCase {
            name: case.name,
            classname: case.classname,
            suite: case.suite,
            outcome,
            duration: case.duration,
            message,
            details,
            file,
            line,
            system_out: case.out.finish(),
            system_err: case.err.finish(),
            reruns: case.reruns,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Text helpers

fn floor_char_boundary(s: &str, index: usize) -> usize {
    if index >= s.len() {
        return s.len();
    }
    let mut i = index;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `s` cut to at most `limit` bytes, ending in [`TRUNCATION_MARKER`] when cut.
fn cut(s: &str, limit: usize) -> String {
    if s.len() <= limit {
        return s.to_string();
    }
    let keep = floor_char_boundary(s, limit.saturating_sub(TRUNCATION_MARKER.len()));
    format!("{}{TRUNCATION_MARKER}", s[..keep].trim_end())
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "apos" => '\'',
        "quot" => '"',
        _ => return None,
    })
}

/// Resolves a character reference or predefined entity; anything else is kept as written.
fn push_reference(out: &mut String, name: &str) {
    let resolved = match name.strip_prefix('#') {
        Some(num) => {
            let code = match num.strip_prefix('x').or_else(|| num.strip_prefix('X')) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse::<u32>().ok(),
            };
            code.map(|c| char::from_u32(c).unwrap_or(char::REPLACEMENT_CHARACTER))
                .filter(|c| *c != '\0')
        }
        None => predefined_entity(name),
    };
    match resolved {
        Some(c) => out.push(c),
        None => {
            out.push('&');
            out.push_str(name);
            out.push(';');
        }
    }
}

/// Unescapes an attribute value leniently: references as in [`push_reference`], a lone `&`
/// kept, and literal tabs and line breaks turned into spaces as XML requires.
fn unescape_attribute(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find(['&', '\t', '\n', '\r']) {
        out.push_str(&rest[..i]);
        let c = rest.as_bytes()[i];
        rest = &rest[i + 1..];
        match c {
            b'&' => match rest.find(';') {
                Some(end)
                    if end <= 32
                        && !rest[..end].is_empty()
                        && !rest[..end].contains(['&', ' ', '<']) =>
                {
                    push_reference(&mut out, &rest[..end]);
                    rest = &rest[end + 1..];
                }
                _ => out.push('&'),
            },
            b'\r' => {
                out.push(' ');
                rest = rest.strip_prefix('\n').unwrap_or(rest);
            }
            _ => out.push(' '),
        }
    }
    out.push_str(rest);
    out
}

/// Seconds as written in a `time` attribute: a float, tolerating thousands separators
/// (`1,234.5`), a decimal comma (`0,25`), surrounding blanks and a trailing `s`.
fn parse_seconds(raw: &str) -> Option<Duration> {
    let s = raw.trim();
    let s = s.strip_suffix('s').unwrap_or(s).trim_end();
    if s.is_empty() {
        return None;
    }
    let normalized: Cow<'_, str> = if !s.contains(',') {
        Cow::Borrowed(s)
    } else if s.contains('.') {
        Cow::Owned(s.replace(',', ""))
    } else {
        let groups: Vec<&str> = s.split(',').collect();
        let head = groups[0].trim_start_matches(['-', '+']);
        let thousands = groups.len() > 2
            || (groups[1].len() == 3 && !head.is_empty() && !head.starts_with('0'));
        if thousands {
            Cow::Owned(groups.concat())
        } else {
            Cow::Owned(s.replace(',', "."))
        }
    };
    let secs: f64 = normalized.parse().ok()?;
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

const SOURCE_EXTENSIONS: &[&str] = &[
    "js", "jsx", "mjs", "cjs", "ts", "tsx", "mts", "cts", "vue", "svelte", "py", "rb", "php", "go",
    "rs",
];

/// Whether a class name is really a source path, as jest-junit writes with `{filepath}`.
fn looks_like_source_path(s: &str) -> bool {
    if s.contains(char::is_whitespace) {
        return false;
    }
    let base = s.rsplit(['/', '\\']).next().unwrap_or(s);
    base.rsplit_once('.')
        .is_some_and(|(stem, ext)| !stem.is_empty() && SOURCE_EXTENSIONS.contains(&ext))
}

// ---------------------------------------------------------------------------------------------
// Locations in failure text

#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    path: String,
    line: u32,
    matches_file: bool,
}

struct Candidate {
    path: String,
    line: u32,
    /// The `pkg.Class.method` of a Java/Kotlin stack frame `at pkg.Class.method(File.java:12)`.
    frame: Option<String>,
}

/// Paths from toolchains and dependencies, never where a test failed.
fn is_vendored(path: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/usr/",
        "/root/.cargo/",
        "/root/.rustup/",
        "/rustc/",
        "/opt/hostedtoolcache/",
        "/opt/conda/",
        "/lib/",
        "/lib64/",
        "/nix/store/",
    ];
    // Also matched at the start of a relative path, without the leading `/`.
    const PARTS: &[&str] = &[
        "/node_modules/",
        "/site-packages/",
        "/dist-packages/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/.rustup/",
        "/go/pkg/mod/",
        "/.pyenv/",
        "/.venv/",
        "/venv/",
        "/.m2/repository/",
        "/.gradle/caches/",
        "/vendor/",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p))
        || PARTS
            .iter()
            .any(|p| path.contains(p) || path.starts_with(&p[1..]))
        || path.starts_with('<')
}

/// Java/Kotlin frames from the JDK and test frameworks.
fn is_framework_frame(frame: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "java.",
        "javax.",
        "jdk.",
        "sun.",
        "com.sun.",
        "kotlin.",
        "kotlinx.",
        "scala.",
        "org.junit.",
        "junit.",
        "org.opentest4j.",
        "org.testng.",
        "org.assertj.",
        "org.hamcrest.",
        "org.mockito.",
        "org.apache.maven.",
        "org.gradle.",
        "worker.org.gradle.",
        "org.springframework.",
        "io.kotest.",
        "com.google.common.truth.",
    ];
    PREFIXES.iter().any(|p| frame.starts_with(p))
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '\\' | '@' | '+' | '~' | '$')
}

/// Whether `path` names a source file: its last segment has a stem and an extension with a
/// letter, as `lib.rs`, `x.test.js` or `Foo.java` (not `127.0.0.1` or `localhost`).
fn has_source_extension(path: &str) -> bool {
    let base = path.rsplit(['/', '\\']).next().unwrap_or(path);
    match base.rsplit_once('.') {
        Some((stem, ext)) => {
            !stem.is_empty()
                && !stem.chars().all(|c| c == '.')
                && (1..=10).contains(&ext.len())
                && ext.chars().all(|c| c.is_ascii_alphanumeric())
                && ext.chars().any(|c| c.is_ascii_alphabetic())
        }
        None => false,
    }
}

fn leading_number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: u32 = s[..end].parse().ok()?;
    (n > 0).then_some((n, &s[end..]))
}

/// All `path:line` places in `text`, in order.
fn candidates(text: &str) -> Vec<Candidate> {
    let mut found = Vec::new();

    // Python tracebacks: File "tests/test_x.py", line 12, in test_x
    let mut rest = text;
    while let Some(i) = rest.find("File \"") {
        rest = &rest[i + 6..];
        let Some(end) = rest.find('"') else { break };
        let path = &rest[..end];
        if let Some(after) = rest[end + 1..].strip_prefix(", line ") {
            if let Some((line, _)) = leading_number(after) {
                if !path.contains('\n') {
                    found.push((
                        text.len() - rest.len(),
                        Candidate {
                            path: path.to_string(),
                            line,
                            frame: None,
                        },
                    ));
                }
            }
        }
        rest = &rest[end + 1..];
    }

    // Everything else: path:line, path:line:col, path:line: and C#'s path:line N.
    for (colon, _) in text.match_indices(':') {
        let after = &text[colon + 1..];
        let (line, tail) = match leading_number(after) {
            Some(found) => found,
            None => match after.strip_prefix("line ").and_then(leading_number) {
                Some(found) => found,
                None => continue,
            },
        };
        let mut tail_chars = tail.chars();
        match (tail_chars.next(), tail_chars.next()) {
            (Some(c), _) if c.is_alphanumeric() || c == '_' => continue,
            (Some('.'), Some(d)) if d.is_ascii_digit() => continue,
            _ => {}
        }
        let before = &text[..colon];
        let start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| !is_path_char(c))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let mut path = &before[start..];
        let prefix = &before[..start];
        if prefix.ends_with(':') {
            // A URL (`http://host:80`), a `node:internal` module, or a file URL.
            match (prefix.ends_with("file:"), path.strip_prefix("//")) {
                (true, Some(p)) => path = p,
                _ => continue,
            }
        }
        let path = path.trim_start_matches("./");
        let path = path.trim_end_matches('.');
        if path.is_empty() || !has_source_extension(path) {
            continue;
        }
        // Java/Kotlin: at com.example.FooTest.testBar(FooTest.java:15)
        let frame = prefix.strip_suffix('(').and_then(|p| {
            let p = p.trim_end();
            let start = p.rfind(|c: char| c.is_whitespace()).map_or(0, |i| i + 1);
            // Without a class loader or module prefix (`app//`, `java.base/`).
            let frame = p[start..].rsplit('/').next().unwrap_or_default();
            (p[..start].trim_end().ends_with("at") && frame.contains('.'))
                .then(|| frame.to_string())
        });
        found.push((
            colon,
            Candidate {
                path: path.to_string(),
                line,
                frame,
            },
        ));
    }
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, c)| c).collect()
}

/// Whether two spellings of a path name the same file: equal, or one ends with the other
/// at a segment boundary (`/app/src/x.rs` and `src/x.rs`).
fn same_file(a: &str, b: &str) -> bool {
    let a = a.trim_start_matches("./");
    let b = b.trim_start_matches("./");
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    !short.is_empty()
        && long.ends_with(short)
        && (long.len() == short.len()
            || long[..long.len() - short.len()].ends_with(['/', '\\'])
            || short.starts_with(['/', '\\']))
}

/// Whether a candidate belongs to the test's class: a Java frame in the class (or one of its
/// nested classes), or the Python module path (`tests.test_x` for `tests/test_x.py`).
fn matches_class(candidate: &Candidate, classname: &str) -> bool {
    if let Some(frame) = &candidate.frame {
        return frame
            .strip_prefix(classname)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('$'));
    }
    let stem = candidate
        .path
        .rsplit_once('.')
        .map_or(candidate.path.as_str(), |(stem, _)| stem);
    let module = stem.replace(['/', '\\'], ".");
    let module = module.trim_matches('.');
    // The module or a class inside it, matched on any dotted suffix of the path's module
    // (`/app/tests/test_x.py` is `tests.test_x` when the tests run from `/app`).
    let mut suffix = module;
    loop {
        if !suffix.is_empty()
            && (classname == suffix
                || classname
                    .strip_prefix(suffix)
                    .is_some_and(|rest| rest.starts_with('.')))
        {
            return true;
        }
        match suffix.split_once('.') {
            Some((_, rest)) => suffix = rest,
            None => return false,
        }
    }
}

/// The most likely place a failure happened, from its text: a place in `file` when given,
/// else a frame of the test's class, else the first place outside toolchains and
/// dependencies, relative paths before absolute ones.
fn find_location(text: &str, file: Option<&str>, classname: Option<&str>) -> Option<Location> {
    let mut best: Option<(u32, Location)> = None;
    for candidate in candidates(text) {
        if is_vendored(&candidate.path) {
            continue;
        }
        if candidate.frame.as_deref().is_some_and(is_framework_frame) {
            continue;
        }
        let matches_file = file.is_some_and(|f| {
            same_file(f, &candidate.path)
                || (candidate.frame.is_some() && f.ends_with(&candidate.path))
        });
        let mut score = 0;
        if matches_file {
            score += 8;
        }
        if classname.is_some_and(|c| matches_class(&candidate, c)) {
            score += 4;
        }
        if !candidate.path.starts_with('/') {
            score += 2;
        }
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((
                score,
                Location {
                    path: candidate.path,
                    line: candidate.line,
                    matches_file,
                },
            ));
        }
    }
    best.map(|(_, loc)| loc)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            parse(include_bytes!(concat!("../tests/fixtures/junit/", $name)))
                .unwrap_or_else(|e| panic!("{}: {e}", $name))
        };
    }

    fn parse_str(xml: &str) -> TestReport {
        parse(xml.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn case<'r>(report: &'r TestReport, name: &str) -> &'r TestCase {
        report
            .tests
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no test case {name}"))
    }

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn totals(report: &TestReport) -> (usize, usize, usize, usize, usize) {
        let t = &report.totals;
        (t.total, t.passed, t.failed, t.errored, t.skipped)
    }

    fn loc(text: &str) -> Option<(String, u32)> {
        find_location(text, None, None).map(|l| (l.path, l.line))
    }

    fn at(path: &str, line: u32) -> Option<(String, u32)> {
        Some((path.to_string(), line))
    }

    #[test]
    fn pytest_report() {
        let report = fixture!("pytest.xml");
        assert_eq!(totals(&report), (5, 2, 1, 1, 1));
        assert_eq!(report.totals.duration, ms(321));
        assert_eq!(report.omitted, 0);

        let add = case(&report, "test_add");
        assert_eq!(add.outcome, Outcome::Passed);
        assert_eq!(add.classname.as_deref(), Some("tests.test_math"));
        assert_eq!(add.suite.as_deref(), Some("pytest"));
        assert_eq!(add.duration, ms(1));
        assert_eq!(add.full_name(), "tests.test_math::test_add");
        assert_eq!((add.message.as_deref(), add.file.as_deref()), (None, None));

        let sub = case(&report, "test_sub");
        assert_eq!(sub.outcome, Outcome::Failed);
        assert_eq!(
            sub.message.as_deref(),
            Some("assert 1 == 2\n +  where 1 = sub(3, 2)")
        );
        let details = sub.details.as_deref().unwrap();
        assert!(details.starts_with("def test_sub():\n>       assert sub(3, 2) == 2"));
        assert!(details.ends_with("tests/test_math.py:9: AssertionError"));
        assert_eq!(
            (sub.file.as_deref(), sub.line),
            (Some("tests/test_math.py"), Some(9))
        );

        let skip = case(&report, "test_windows_only");
        assert_eq!(skip.outcome, Outcome::Skipped);
        assert_eq!(skip.message.as_deref(), Some("not on linux"));
        assert_eq!(
            (skip.file.as_deref(), skip.line),
            (Some("/app/tests/test_math.py"), Some(12))
        );

        let db = case(&report, "test_connect");
        assert_eq!(db.outcome, Outcome::Errored);
        assert_eq!(
            db.message.as_deref(),
            Some("failed on setup with \"psycopg.OperationalError: connection refused\"")
        );
        // The site-packages frame and the URL's host:port are not the place.
        assert_eq!(
            (db.file.as_deref(), db.line),
            (Some("tests/test_db.py"), Some(6))
        );

        let param = case(&report, "test_upper[a-A]");
        assert_eq!(param.outcome, Outcome::Passed);
        assert_eq!(
            param.system_out.as_deref(),
            Some("--- Captured stdout call ---\nupper('a') -> 'A'")
        );
        assert_eq!(
            param.system_err.as_deref(),
            Some("--- Captured stderr call ---\nwarning: slow")
        );

        let failed: Vec<_> = report.failed().map(|t| t.name.as_str()).collect();
        assert_eq!(failed, ["test_sub", "test_connect"]);
    }

    #[test]
    fn pytest_xunit1_file_and_line_attributes_win() {
        let report = parse_str(
            r#"<testsuite name="pytest" tests="1"><testcase classname="tests.test_a" name="test_one" file="tests/test_a.py" line="3" time="0.5"><failure message="boom">tests/helpers.py:20: ValueError</failure></testcase></testsuite>"#,
        );
        let one = &report.tests[0];
        assert_eq!(
            (one.file.as_deref(), one.line),
            (Some("tests/test_a.py"), Some(3))
        );
        assert_eq!(report.totals.duration, ms(500));
    }

    #[test]
    fn surefire_report_with_reruns() {
        let report = fixture!("surefire.xml");
        assert_eq!(totals(&report), (4, 2, 1, 0, 1));
        assert_eq!(
            report.totals.duration,
            Some(Duration::from_secs_f64(1234.567))
        );

        let add = case(&report, "addsNumbers");
        assert_eq!(add.full_name(), "com.example.CalculatorTest::addsNumbers");
        assert_eq!(add.suite.as_deref(), Some("com.example.CalculatorTest"));
        assert_eq!((add.outcome, add.reruns), (Outcome::Passed, 0));

        let div = case(&report, "dividesByZero");
        assert_eq!(div.outcome, Outcome::Failed);
        assert_eq!(div.reruns, 2);
        assert_eq!(div.message.as_deref(), Some("expected: <0> but was: <1>"));
        let details = div.details.as_deref().unwrap();
        assert!(details.starts_with("org.opentest4j.AssertionFailedError: expected: <0>"));
        assert!(details.ends_with("(ArrayList.java:1596)"));
        // The frame in the test class, not JUnit's or the JDK's.
        assert_eq!(
            (div.file.as_deref(), div.line),
            (Some("CalculatorTest.java"), Some(27))
        );
        assert_eq!(div.system_out.as_deref(), Some("dividing 1 by 0"));

        let flaky = case(&report, "fetchesRates");
        assert_eq!(flaky.outcome, Outcome::Passed);
        assert_eq!(flaky.reruns, 1);
        assert_eq!(
            flaky.message.as_deref(),
            Some("flaky: passed after 1 failed run: Connection reset")
        );
        assert!(flaky
            .details
            .as_deref()
            .unwrap()
            .starts_with("java.net.SocketException: Connection reset\n"));
        assert_eq!(
            (flaky.file.as_deref(), flaky.line),
            (Some("CalculatorTest.java"), Some(40))
        );
        // The output of the failed run is not the case's output.
        assert_eq!(flaky.system_out, None);

        let skipped = case(&report, "roundsHalfEven");
        assert_eq!(skipped.outcome, Outcome::Skipped);
        assert_eq!(skipped.message.as_deref(), Some("not implemented yet"));
        assert_eq!(skipped.duration, Some(Duration::ZERO));
    }

    #[test]
    fn jest_junit_report() {
        let report = fixture!("jest.xml");
        assert_eq!(totals(&report), (4, 2, 1, 0, 1));
        assert_eq!(report.totals.duration, ms(1532));

        let adds = case(&report, "Calculator adds numbers");
        // jest-junit repeats the title as class name.
        assert_eq!(adds.full_name(), "Calculator adds numbers");
        assert_eq!(adds.suite.as_deref(), Some("Calculator"));

        let divides = case(&report, "Calculator divides numbers");
        assert_eq!(divides.outcome, Outcome::Failed);
        assert_eq!(
            divides.message.as_deref(),
            Some("Error: expect(received).toBe(expected) // Object.is equality")
        );
        assert!(divides
            .details
            .as_deref()
            .unwrap()
            .contains("at new Promise (<anonymous>)"));
        assert_eq!(
            (divides.file.as_deref(), divides.line),
            (Some("/app/src/calculator.test.js"), Some(14))
        );

        let todo = case(&report, "Calculator todo: handles overflow");
        assert_eq!(todo.outcome, Outcome::Skipped);
        assert_eq!(todo.message, None);

        let pads = case(&report, "format pads numbers");
        assert_eq!(pads.suite.as_deref(), Some("format"));
        assert_eq!(pads.file.as_deref(), Some("src/format.test.ts"));
        assert_eq!(pads.line, None);
    }

    #[test]
    fn jest_file_attribute_and_filepath_class_names() {
        let report = parse_str(
            r#"<testsuites name="jest tests">
              <testsuite name="src/sum.test.js" tests="2">
                <testcase classname="src/sum.test.js" name="sum adds" time="0.002">
                  <failure>Error: boom
    at Object.&lt;anonymous&gt; (/app/src/helpers.js:3:9)
    at Object.&lt;anonymous&gt; (/app/src/sum.test.js:7:10)</failure>
                </testcase>
                <testcase classname="sum" name="sum subtracts" file="src/sum.test.js">
                  <failure>Error: boom
    at fail (/app/src/other.js:3:9)</failure>
                </testcase>
              </testsuite>
            </testsuites>"#,
        );
        // The class name is the file: the frame in it wins over the first one.
        let adds = case(&report, "sum adds");
        assert_eq!(
            (adds.file.as_deref(), adds.line),
            (Some("src/sum.test.js"), Some(7))
        );
        // A `file` attribute is kept; a line from another file is not paired with it.
        let subtracts = case(&report, "sum subtracts");
        assert_eq!(
            (subtracts.file.as_deref(), subtracts.line),
            (Some("src/sum.test.js"), None)
        );
        assert_eq!(subtracts.full_name(), "sum::sum subtracts");
    }

    #[test]
    fn go_junit_report() {
        let report = fixture!("go-junit-report.xml");
        assert_eq!(totals(&report), (4, 2, 1, 0, 1));
        // No time on the root: the suites' times are summed.
        assert_eq!(report.totals.duration, ms(12));

        let empty = case(&report, "TestParse/empty_input");
        assert_eq!(empty.outcome, Outcome::Failed);
        assert_eq!(empty.message.as_deref(), Some("Failed"));
        assert_eq!(
            empty.details.as_deref(),
            Some("parse_test.go:33: expected error for empty input, got nil")
        );
        assert_eq!(
            (empty.file.as_deref(), empty.line),
            (Some("parse_test.go"), Some(33))
        );
        assert_eq!(
            empty.full_name(),
            "github.com/acme/widget/pkg/parse::TestParse/empty_input"
        );
        // The suite's own output belongs to no case.
        assert!(report.tests.iter().all(|t| t.system_out.is_none()));

        let fetch = case(&report, "TestFetch");
        assert_eq!(fetch.outcome, Outcome::Skipped);
        assert_eq!(fetch.message.as_deref(), Some("Skipped"));
        assert_eq!(
            (fetch.file.as_deref(), fetch.line),
            (Some("parse_test.go"), Some(41))
        );
    }

    #[test]
    fn cargo_nextest_report() {
        let report = fixture!("nextest.xml");
        assert_eq!(totals(&report), (3, 2, 1, 0, 0));
        assert_eq!(report.totals.duration, ms(123));

        let sub = case(&report, "tests::subtracts");
        assert_eq!(sub.outcome, Outcome::Failed);
        assert_eq!(sub.full_name(), "widget::tests::subtracts");
        assert_eq!(
            sub.message.as_deref(),
            Some("thread 'tests::subtracts' panicked at src/lib.rs:42:9:")
        );
        assert_eq!(
            (sub.file.as_deref(), sub.line),
            (Some("src/lib.rs"), Some(42))
        );
        let out = sub.system_out.as_deref().unwrap();
        assert!(out.starts_with("running 1 test\n"), "{out:?}");
        assert!(out.ends_with("finished in 0.00s"), "{out:?}");
        assert!(sub.system_err.as_deref().unwrap().contains("left == right"));

        let roundtrip = case(&report, "roundtrip");
        assert_eq!(roundtrip.suite.as_deref(), Some("widget::integration"));
        assert_eq!((roundtrip.outcome, roundtrip.reruns), (Outcome::Passed, 1));
        assert_eq!(
            roundtrip.message.as_deref(),
            Some("flaky: passed after 1 failed run: thread 'roundtrip' panicked at tests/integration.rs:10:5:")
        );
        assert_eq!(
            (roundtrip.file.as_deref(), roundtrip.line),
            (Some("tests/integration.rs"), Some(10))
        );
        assert_eq!(
            (
                roundtrip.system_out.as_deref(),
                roundtrip.system_err.as_deref()
            ),
            (None, None)
        );
    }

    #[test]
    fn error_and_skipped_cases() {
        let report = parse_str(
            r#"<?xml version="1.0"?>
            <testsuite name="suite" tests="4" failures="9" errors="9" time="2.5">
              <testcase name="ok" classname="c" time="1"/>
              <testcase name="crashes" classname="c" time="0.25">
                <error message="NullPointerException" type="java.lang.NullPointerException"/>
              </testcase>
              <testcase name="typed" classname="c"><failure type="AssertionError"/></testcase>
              <testcase name="later" classname="c"><skipped>waiting on #12</skipped></testcase>
              <testcase name="by-status" status="notrun"/>
              <testcase name="both" classname="c">
                <error message="first"/><failure message="second">second text</failure>
              </testcase>
            </testsuite>"#,
        );
        // Counts come from the cases, not from the suite's attributes.
        assert_eq!(totals(&report), (6, 1, 1, 2, 2));
        assert_eq!(report.totals.duration, ms(2500));
        let crashes = case(&report, "crashes");
        assert_eq!(crashes.outcome, Outcome::Errored);
        assert_eq!(crashes.message.as_deref(), Some("NullPointerException"));
        assert_eq!(
            (crashes.details.as_deref(), crashes.duration),
            (None, ms(250))
        );
        assert_eq!(
            case(&report, "typed").message.as_deref(),
            Some("AssertionError")
        );
        let later = case(&report, "later");
        assert_eq!(later.outcome, Outcome::Skipped);
        assert_eq!(later.message.as_deref(), Some("waiting on #12"));
        assert_eq!(later.details.as_deref(), Some("waiting on #12"));
        assert_eq!(case(&report, "by-status").outcome, Outcome::Skipped);
        let both = case(&report, "both");
        assert_eq!(
            (both.outcome, both.message.as_deref()),
            (Outcome::Errored, Some("first"))
        );
        assert_eq!(both.details, None);
        assert_eq!(report.failed().count(), 3);
    }

    #[test]
    fn status_attributes_and_concatenated_reports() {
        let report = parse_str(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="2" name="AllTests" time="0.5">
  <testsuite name="MathTest" tests="2" time="0.5">
    <testcase name="Adds" status="run" result="completed" time="0.001" classname="MathTest"/>
    <testcase name="Later" status="run" result="skipped" time="0" classname="MathTest"><skipped message="GTEST_SKIP"/></testcase>
    <testcase name="Disabled" status="notrun" result="suppressed" time="0" classname="MathTest"/>
  </testsuite>
</testsuites>
<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="second" time="2"><testcase name="Other" result="skipped"/></testsuite>
<unrelated/>"#,
        );
        assert_eq!(totals(&report), (4, 1, 0, 0, 3));
        assert_eq!(
            case(&report, "Later").message.as_deref(),
            Some("GTEST_SKIP")
        );
        // Two roots: their times are summed.
        assert_eq!(report.totals.duration, ms(2500));
        assert_eq!(Outcome::Errored.to_string(), "errored");
    }

    #[test]
    fn nested_suites() {
        let report = parse_str(
            r#"<testsuites time="9">
              <testsuite name="outer" file="spec/calc_spec.rb" time="3">
                <testsuite name="inner" time="2">
                  <testcase name="adds" time="1"/>
                  <testsuite name="deepest" file="spec/deep_spec.rb">
                    <testcase name="deep"/>
                  </testsuite>
                </testsuite>
                <testcase name="subtracts" time="1"/>
              </testsuite>
              <testsuite name="second" time="4"><testcase name="alone"/></testsuite>
              <testcase name="rootless"/>
            </testsuites>"#,
        );
        assert_eq!(report.totals.total, 5);
        assert_eq!(report.totals.duration, Some(Duration::from_secs(9)));
        let adds = case(&report, "adds");
        assert_eq!(adds.suite.as_deref(), Some("inner"));
        assert_eq!(adds.file.as_deref(), Some("spec/calc_spec.rb"));
        let deep = case(&report, "deep");
        assert_eq!(deep.suite.as_deref(), Some("deepest"));
        assert_eq!(deep.file.as_deref(), Some("spec/deep_spec.rb"));
        assert_eq!(case(&report, "subtracts").suite.as_deref(), Some("outer"));
        let alone = case(&report, "alone");
        assert_eq!(
            (alone.suite.as_deref(), alone.file.as_deref()),
            (Some("second"), None)
        );
        assert_eq!(case(&report, "rootless").suite, None);

        // Without a root time, the outermost suites' times are summed.
        let report = parse_str(
            r#"<testsuites><testsuite time="1.5"><testsuite time="7"/></testsuite><testsuite time="2"/></testsuites>"#,
        );
        assert_eq!(report.totals.duration, ms(3500));
        // Without any suite time, the cases' times are.
        let report = parse_str(
            r#"<testsuite><testcase name="a" time="0.5"/><testcase name="b" time="0.25"/><testcase name="c"/></testsuite>"#,
        );
        assert_eq!(report.totals.duration, ms(750));
        let report = parse_str(r#"<testsuite name="empty"/>"#);
        assert_eq!((report.totals.total, report.totals.duration), (0, None));
    }

    #[test]
    fn cdata_and_entities() {
        let report = parse_str(
            "<testsuite><testcase name=\"a &lt; b &amp;&amp; c\" classname=\"x&#10;y\tz\">\
             <failure message=\"&quot;q&quot; &apos;s&apos; &#x41;&#66; &nbsp; AT&amp;T & co\">\
             x &lt; y &amp; z<![CDATA[ <raw> & &amp; ]]>&gt; &unknown; done &#9731;\r\nnext</failure>\
             </testcase></testsuite>",
        );
        let t = &report.tests[0];
        assert_eq!(t.name, "a < b && c");
        assert_eq!(t.classname.as_deref(), Some("x\ny z"));
        assert_eq!(t.message.as_deref(), Some("\"q\" 's' AB &nbsp; AT&T & co"));
        assert_eq!(
            t.details.as_deref(),
            Some("x < y & z <raw> & &amp; > &unknown; done \u{2603}\nnext")
        );
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily() {
        let mut xml = b"<testsuite><testcase name=\"caf".to_vec();
        xml.extend_from_slice(
            b"\xC3\xA9 \xFF\xFE\"><failure>bad \xC3\x28 byte</failure></testcase></testsuite>",
        );
        let report = parse(&xml).unwrap();
        let t = &report.tests[0];
        assert_eq!(t.name, "caf\u{e9} \u{fffd}\u{fffd}");
        assert_eq!(t.details.as_deref(), Some("bad \u{fffd}( byte"));
    }

    #[test]
    fn byte_order_marks() {
        let doc = "<testsuite><testcase name=\"caf\u{e9}\"/></testsuite>";
        let mut utf8 = b"\xEF\xBB\xBF".to_vec();
        utf8.extend_from_slice(doc.as_bytes());
        let mut le = vec![0xFF, 0xFE];
        le.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        let mut be = vec![0xFE, 0xFF];
        be.extend(doc.encode_utf16().flat_map(u16::to_be_bytes));
        for xml in [utf8, le, be] {
            assert_eq!(parse(&xml).unwrap().tests[0].name, "caf\u{e9}");
        }
    }

    #[test]
    fn malformed_xml_is_an_error_with_a_position() {
        let err = parse(b"<testsuite>\n  <testcase name=\"a\">\n  </testsuite>").unwrap_err();
        let JunitError::Malformed { line, message, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(*line, 3, "{err}");
        assert!(message.contains("testcase"), "{err}");

        // Truncated inside a text, inside a tag, inside an attribute.
        for xml in [
            "<testsuites><testsuite><testcase name=\"a\"><failure>boom",
            "<testsuites><testsuite><testcase name=\"a\"",
            "<testsuites><testsuite><testcase name=\"a",
            "<testsuites><testsuite><testcase name=\"a\"/>",
            "<testsuite><!-- never closed",
            "<testsuite><![CDATA[ never closed",
        ] {
            let err = parse(xml.as_bytes()).unwrap_err();
            assert!(
                matches!(err, JunitError::Malformed { .. }),
                "{xml}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("malformed test report at line 1"),
                "{err}"
            );
        }
        let err = parse(b"<testsuite>\n<testcase name=\"a\"/>\n<testcase name=\"b\">").unwrap_err();
        assert!(
            err.to_string()
                .contains("unexpected end of input inside <testcase>"),
            "{err}"
        );

        for xml in ["", "   ", "not xml at all", "<?xml version=\"1.0\"?>"] {
            let err = parse(xml.as_bytes()).unwrap_err();
            assert!(matches!(err, JunitError::NotJunit(_)), "{xml:?}: {err:?}");
        }
        let err = parse(b"<html><body>502 Bad Gateway</body></html>").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a JUnit XML report: the root element is <html>, not <testsuites> or <testsuite>"
        );
        let err = parse(b"<testsuite><testcase name=\"a\" name=b/></testsuite>").unwrap_err();
        assert!(matches!(err, JunitError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn oversized_input_and_fields() {
        let err = parse(&vec![b' '; MAX_INPUT + 1]).unwrap_err();
        assert_eq!(
            err,
            JunitError::TooLarge {
                size: MAX_INPUT + 1,
                limit: MAX_INPUT
            }
        );
        let err = parse_reader(std::io::repeat(b' ')).unwrap_err();
        assert!(matches!(err, JunitError::TooLarge { .. }), "{err:?}");

        let long_message = "m".repeat(10_000);
        let trace = "at frame\n".repeat(10_000);
        let out = "\u{e9}".repeat(20_000);
        let name = "n".repeat(5_000);
        let xml = format!(
            "<testsuite><testcase name=\"{name}\"><failure message=\"{long_message}\">{trace}</failure><system-out>{out}</system-out><system-err><![CDATA[{out}]]></system-err></testcase></testsuite>"
        );
        let report = parse_reader(xml.as_bytes()).unwrap();
        let t = &report.tests[0];
        for (field, limit) in [
            (&t.message, MAX_MESSAGE),
            (&t.details, MAX_DETAILS),
            (&t.system_out, MAX_OUTPUT),
            (&t.system_err, MAX_OUTPUT),
            (&Some(t.name.clone()), MAX_NAME),
        ] {
            let field = field.as_deref().unwrap();
            assert!(field.len() <= limit, "{} > {limit}", field.len());
            assert!(field.len() > limit - 64, "{} too short", field.len());
            assert!(field.ends_with(TRUNCATION_MARKER));
        }
        assert!(t
            .details
            .as_deref()
            .unwrap()
            .starts_with("at frame\nat frame\n"));
        assert!(t.system_out.as_deref().unwrap().starts_with("\u{e9}\u{e9}"));

        // Exactly at the limit: kept whole.
        let exact = "x".repeat(MAX_DETAILS);
        let report = parse_str(&format!(
            "<testsuite><testcase name=\"a\"><failure>{exact}</failure></testcase></testsuite>"
        ));
        assert_eq!(report.tests[0].details.as_deref(), Some(exact.as_str()));
    }

    #[test]
    fn case_count_is_capped_but_all_are_counted() {
        let mut xml = String::from("<testsuite>");
        for i in 0..MAX_CASES + 10 {
            if i % 2 == 0 {
                xml.push_str("<testcase name=\"t\" time=\"0.001\"/>");
            } else {
                xml.push_str("<testcase name=\"t\"><failure>x</failure></testcase>");
            }
        }
        xml.push_str("</testsuite>");
        let report = parse_str(&xml);
        assert_eq!(report.tests.len(), MAX_CASES);
        assert_eq!(report.omitted, 10);
        assert_eq!(report.totals.total, MAX_CASES + 10);
        assert_eq!(report.totals.passed, MAX_CASES / 2 + 5);
        assert_eq!(report.totals.failed, MAX_CASES / 2 + 5);
        assert_eq!(report.totals.duration, ms(MAX_CASES as u64 / 2 + 5));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let depth = MAX_DEPTH + 10;
        let xml = format!(
            "<testsuites>{}{}</testsuites>",
            "<testsuite>".repeat(depth),
            "</testsuite>".repeat(depth)
        );
        let err = parse(xml.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("nested more than"), "{err}");
        let ok = format!(
            "<testsuites>{}<testcase name=\"deep\"/>{}</testsuites>",
            "<testsuite>".repeat(100),
            "</testsuite>".repeat(100)
        );
        assert_eq!(parse_str(&ok).tests[0].name, "deep");
    }

    #[test]
    fn billion_laughs_is_not_expanded() {
        let xml = r#"<?xml version="1.0"?>
<!DOCTYPE testsuite [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
  <!ENTITY xxe SYSTEM "file:///etc/passwd">
]>
<testsuite name="&lol9;">
  <testcase name="&lol9;" classname="&xxe;">
    <failure message="&lol9;&lol9;">&lol9;&lol9;&xxe;</failure>
  </testcase>
</testsuite>"#;
        let report = parse_str(xml);
        let t = &report.tests[0];
        assert_eq!(t.name, "&lol9;");
        assert_eq!(t.suite.as_deref(), Some("&lol9;"));
        assert_eq!(t.classname.as_deref(), Some("&xxe;"));
        assert_eq!(t.message.as_deref(), Some("&lol9;&lol9;"));
        assert_eq!(t.details.as_deref(), Some("&lol9;&lol9;&xxe;"));
    }

    #[test]
    fn namespaced_and_odd_attributes() {
        let report = parse_str(
            r#"<j:testsuites xmlns:j="urn:x"><j:testsuite name="s"><j:testcase name="a" class="pkg.A" lineno="7" filepath="a.py" time=" 1,5 "/></j:testsuite></j:testsuites>"#,
        );
        let t = &report.tests[0];
        assert_eq!(t.classname.as_deref(), Some("pkg.A"));
        assert_eq!((t.file.as_deref(), t.line), (Some("a.py"), Some(7)));
        assert_eq!(t.duration, ms(1500));
    }

    #[test]
    fn seconds_are_parsed_tolerantly() {
        let secs = |s: &str| parse_seconds(s).map(|d| d.as_secs_f64());
        assert_eq!(secs("0.123"), Some(0.123));
        assert_eq!(secs("12"), Some(12.0));
        assert_eq!(secs("1,234.5"), Some(1234.5));
        assert_eq!(secs("1,234,567.25"), Some(1_234_567.25));
        assert_eq!(secs("1,234"), Some(1234.0));
        assert_eq!(secs("0,25"), Some(0.25));
        assert_eq!(secs("3,5"), Some(3.5));
        assert_eq!(secs(" 2.5s "), Some(2.5));
        assert_eq!(secs("1e-3"), Some(0.001));
        for bad in ["", "-1", "NaN", "inf", "1e400", "abc", "1.2.3", ","] {
            assert_eq!(secs(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn locations_in_rust_panics() {
        assert_eq!(
            loc("thread 'tests::it_works' panicked at src/lib.rs:42:5:\nassertion failed"),
            at("src/lib.rs", 42)
        );
        // Before Rust 1.73.
        assert_eq!(
            loc("thread 'it_works' panicked at 'explicit panic', tests/api.rs:17:9\nnote: ..."),
            at("tests/api.rs", 17)
        );
        // Frames in the standard library and in dependencies are skipped.
        assert_eq!(
            loc("thread 'main' panicked at /root/.cargo/registry/src/index.crates.io-6f17d22bba15001f/tokio-1.38.0/src/runtime/blocking/shutdown.rs:51:21:\n   0: rust_begin_unwind\n             at /rustc/129f3b9964af4d4a709d1383930ade12dfe7c081/library/std/src/panicking.rs:652:5\n  12: widget::tests::shuts_down\n             at ./src/tests.rs:88:9"),
            at("src/tests.rs", 88)
        );
    }

    #[test]
    fn locations_in_python_tracebacks() {
        let native = r#"Traceback (most recent call last):
  File "/usr/lib/python3.12/unittest/case.py", line 58, in testPartExecutor
    yield
  File "/app/.venv/lib/python3.12/site-packages/_pytest/python.py", line 159, in pytest_pyfunc_call
    result = testfunction(**testargs)
  File "tests/test_api.py", line 12, in test_get
    assert resp.status_code == 200
AssertionError"#;
        assert_eq!(loc(native), at("tests/test_api.py", 12));
        // pytest's own repr.
        assert_eq!(
            loc("    def test_x():\n>       assert f() == {'a:1': 2}\nE       AssertionError\n\ntests/unit/test_x.py:31: AssertionError"),
            at("tests/unit/test_x.py", 31)
        );
        // The frame in the test's module wins over an earlier one.
        let report = parse_str(
            r#"<testsuite><testcase classname="tests.test_b.TestThing" name="test_y"><failure>src/app/util.py:5: in helper
    raise ValueError
/app/tests/test_b.py:20: ValueError</failure></testcase></testsuite>"#,
        );
        let t = &report.tests[0];
        assert_eq!(
            (t.file.as_deref(), t.line),
            (Some("/app/tests/test_b.py"), Some(20))
        );
    }

    #[test]
    fn locations_in_go_output() {
        assert_eq!(
            loc("    widget_test.go:33: got 1, want 2"),
            at("widget_test.go", 33)
        );
        let panic = "panic: runtime error: index out of range [3] with length 3 [recovered]\n\ngoroutine 7 [running]:\ntesting.tRunner.func1.2({0x5a1b80, 0xc000016138})\n\t/usr/local/go/src/testing/testing.go:1631 +0x24a\ngithub.com/stretchr/testify/assert.Fail(...)\n\t/go/pkg/mod/github.com/stretchr/testify@v1.9.0/assert/assertions.go:333 +0x1d\ngithub.com/acme/widget.TestIndex(0xc0000a0820)\n\t/src/widget/index_test.go:14 +0x1d";
        assert_eq!(loc(panic), at("/src/widget/index_test.go", 14));
    }

    #[test]
    fn locations_in_js_stacks() {
        let stack = "TypeError: Cannot read properties of undefined (reading 'x')\n    at processTicksAndRejections (node:internal/process/task_queues:95:5)\n    at Object.<anonymous> (/app/node_modules/jest-circus/build/utils.js:298:28)\n    at get (/app/src/api.js:10:5)\n    at file:///app/test/api.test.mjs:22:3";
        assert_eq!(loc(stack), at("/app/src/api.js", 10));
        // A file the case names wins.
        let found = find_location(stack, Some("test/api.test.mjs"), None).unwrap();
        assert_eq!(
            (found.path.as_str(), found.line, found.matches_file),
            ("/app/test/api.test.mjs", 22, true)
        );
        // A relative path wins over an absolute one.
        assert_eq!(
            loc("at a (/app/src/a.ts:1:1)\n at b (src/b.test.ts:2:2)"),
            at("src/b.test.ts", 2)
        );
    }

    #[test]
    fn locations_in_java_csharp_and_others() {
        let trace = "java.lang.AssertionError: expected:<1> but was:<2>\n\tat org.junit.Assert.fail(Assert.java:89)\n\tat app//com.example.FooTest.check(FooTest.java:31)\n\tat java.base/jdk.internal.reflect.NativeMethodAccessorImpl.invoke0(Native Method)";
        assert_eq!(loc(trace), at("FooTest.java", 31));
        let found = find_location(
            "\tat com.example.Helper.run(Helper.kt:5)\n\tat com.example.FooTest$Nested.check(FooTest.kt:9)",
            None,
            Some("com.example.FooTest"),
        );
        assert_eq!(found.map(|l| (l.path, l.line)), at("FooTest.kt", 9));
        assert_eq!(
            loc("   at Widget.Tests.FooTests.Adds() in /src/Widget.Tests/FooTests.cs:line 42"),
            at("/src/Widget.Tests/FooTests.cs", 42)
        );
        assert_eq!(
            loc("Failed asserting that false is true.\n\n/app/tests/FooTest.php:23"),
            at("/app/tests/FooTest.php", 23)
        );
        assert_eq!(
            loc("expected: 1\n     got: 2\n# ./spec/foo_spec.rb:12:in `block (2 levels)'"),
            at("spec/foo_spec.rb", 12)
        );
        assert_eq!(loc("failed at src/lib.rs:7."), at("src/lib.rs", 7));
    }

    #[test]
    fn text_without_locations() {
        for text in [
            "connect to http://localhost:8080/health failed",
            "GET https://example.com:443/a.js:3 refused",
            "dial tcp 127.0.0.1:5432: connection refused",
            "at 2024-05-01T12:30:00.123Z",
            "expected 3:4 ratio",
            "see version 1.2:3",
            "/usr/lib/python3.12/json/decoder.py:337: JSONDecodeError",
            "at Object.<anonymous> (/app/node_modules/lib/index.js:3:1)",
            "src/lib.rs:0:1",
            "src/lib.rs:99999999999:1",
        ] {
            assert_eq!(loc(text), None, "{text}");
        }
    }

    #[test]
    fn full_name_and_failed() {
        let mut t = TestCase {
            name: "test_x".into(),
            classname: None,
            suite: None,
            outcome: Outcome::Errored,
            duration: None,
            message: None,
            details: None,
            file: None,
            line: None,
            system_out: None,
            system_err: None,
            reruns: 0,
        };
        assert_eq!(t.full_name(), "test_x");
        t.classname = Some(String::new());
        assert_eq!(t.full_name(), "test_x");
        t.classname = Some("test_x".into());
        assert_eq!(t.full_name(), "test_x");
        t.classname = Some("mod".into());
        assert_eq!(t.full_name(), "mod::test_x");
        let mut passed = t.clone();
        passed.outcome = Outcome::Passed;
        let mut skipped = t.clone();
        skipped.outcome = Outcome::Skipped;
        let mut failed = t.clone();
        failed.outcome = Outcome::Failed;
        let report = TestReport {
            tests: vec![t, passed, skipped, failed],
            ..TestReport::default()
        };
        let outcomes: Vec<_> = report.failed().map(|t| t.outcome).collect();
        assert_eq!(outcomes, [Outcome::Errored, Outcome::Failed]);
    }
}
