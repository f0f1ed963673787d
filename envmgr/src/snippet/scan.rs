//! The streaming scanner: reads a log of any size in chunks and keeps, in bounded memory,
//! what a snippet needs.
//!
//! Bytes go through three stages:
//! 1. line assembly, across chunk boundaries: ANSI escape sequences and other control
//!    characters are dropped, a `\r` not followed by `\n` starts the line over (progress bars
//!    overwrite themselves that way), and a line keeps at most `line_cap` bytes;
//! 2. per line, on every line: failure detection ([`super::signal`]), private key block
//!    tracking, folding of a line identical to the one before;
//! 3. for the few lines kept (failure regions and the last lines): lossy UTF-8 decoding,
//!    redaction, cutting to `line_chars` characters. Doing this lazily keeps the cost per
//!    line of a multi-gigabyte log down to stages 1 and 2.
//!
//! Memory is bounded by the limits: `regions × region_lines` kept lines, a ring of
//! `max(tail_lines, context_before)` raw lines of at most `line_cap` bytes, and one
//! similarity key per kept failure line.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;

use super::redact::{KeyBlock, Redactor, REDACTED};
use super::signal::{self, LineFacts, SignalKind};

/// How much a scanner keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Failure regions kept: the first ones in the log, usually the cause of the rest.
    pub regions: usize,
    /// Lines kept before a failure line.
    pub context_before: usize,
    /// Lines kept after the last failure line of a region (a failure line in them extends
    /// the region).
    pub context_after: usize,
    /// A region's maximum length in lines, context included.
    pub region_lines: usize,
    /// Last lines of the log kept.
    pub tail_lines: usize,
    /// Kept lines are cut to this many characters.
    pub line_chars: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        Self {
            regions: 5,
            context_before: 3,
            context_after: 6,
            region_lines: 40,
            tail_lines: 30,
            line_chars: 500,
        }
    }
}

/// A kept line, decoded, redacted and cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the log (of the first occurrence when folded).
    pub number: u64,
    pub text: String,
    /// `Some(the line's full length in bytes)` when `text` is only its start.
    pub cut: Option<u64>,
    /// How many more times the same line followed at once (folded into this one).
    pub repeats: u64,
    /// For failure lines: how many later failure lines differed from this one only in
    /// their digits (timestamps, counters) and so opened no region of their own.
    pub similar_later: u64,
}

impl Line {
    /// The number of the last line this one stands for.
    pub fn last_number(&self) -> u64 {
        self.number.saturating_add(self.repeats)
    }
}

/// Consecutive lines around one or more failure lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The kind of the failure line that opened the region.
    pub kind: SignalKind,
    pub lines: Vec<Line>,
    /// Index in `lines` of that failure line; the lines before it are context.
    pub opened_at: usize,
}

impl Region {
    pub fn first_number(&self) -> u64 {
        self.lines.first().map_or(0, |l| l.number)
    }

    pub fn last_number(&self) -> u64 {
        self.lines.last().map_or(0, Line::last_number)
    }
}

/// What a scan found. Its texts are decoded, cut, and redacted of token shapes and private
/// keys, and of the scanner's secrets when it was given some; [`super::render`] redacts
/// the secrets it is given on top.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    /// The first failure regions, in log order.
    pub regions: Vec<Region>,
    /// The last lines of the log, less those already in a region.
    pub tail: Vec<Line>,
    pub total_lines: u64,
    pub total_bytes: u64,
    /// Lines that looked like a failure, shown or not.
    pub signal_lines: u64,
    /// Failure lines not shown: all regions were taken and they were not similar to a
    /// shown one.
    pub signals_not_shown: u64,
}

/// The state of an escape sequence being skipped, across chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// ESC [ parameters… final: colours, cursor moves, erase.
    Csi,
    /// ESC ] … BEL or ESC \: window titles, hyperlinks.
    Osc,
    /// ESC inside an OSC: `\` ends it, anything else starts a new sequence.
    OscEsc,
    /// ESC followed by intermediate bytes (`ESC ( B`).
    Intermediate,
}

/// A line as assembled, kept in the ring before decoding and redaction.
#[derive(Debug)]
struct RawLine {
    number: u64,
    bytes: Vec<u8>,
    overflow: u64,
    key_material: bool,
    repeats: u64,
}

#[derive(Debug)]
struct OpenRegion {
    after_left: usize,
    /// Inside a Python traceback: the column its lines are indented past (any prefix such
    /// as docker compose's `web-1  | ` is left of it).
    traceback_col: Option<usize>,
}

/// How many bytes of a line's cut-off end are looked at for a private key marker.
const OVERFLOW_TAIL: usize = 128;

/// Scans a log fed in chunks; see the module comment.
#[derive(Debug)]
pub struct LogScanner {
    limits: ScanLimits,
    redactor: Redactor,
    /// Bytes of a line kept: enough for `line_chars` characters of up to 4 bytes, plus a
    /// margin so a secret or token that starts before the cut is matched whole.
    line_cap: usize,

    line: Vec<u8>,
    overflow: u64,
    overflow_tail: Vec<u8>,
    escape: Escape,
    pending_cr: bool,

    key_block: KeyBlock,
    recent: VecDeque<RawLine>,
    regions: Vec<Region>,
    open: Option<OpenRegion>,
    /// Similarity key of each kept failure line → (region, line) indices.
    seen: HashMap<u64, (usize, usize)>,

    total_lines: u64,
    total_bytes: u64,
    signal_lines: u64,
    signals_not_shown: u64,
}

impl LogScanner {
    /// A scanner with the default limits that redacts token shapes only; [`super::render`]
    /// redacts the secrets it is given from what this keeps.
    pub fn new() -> Self {
        Self::with_limits(&[], ScanLimits::default())
    }

    /// A scanner that also redacts `secrets` from the lines it keeps, so its [`Findings`]
    /// hold none of them even before rendering.
    pub fn with_secrets(secrets: &[String]) -> Self {
        Self::with_limits(secrets, ScanLimits::default())
    }

    pub fn with_limits(secrets: &[String], limits: ScanLimits) -> Self {
        let redactor = Redactor::new(secrets);
        let line_cap = limits.line_chars * 4 + redactor.longest_secret().max(256) + 64;
        Self {
            limits,
            redactor,
            line_cap,
            line: Vec::new(),
            overflow: 0,
            overflow_tail: Vec::new(),
            escape: Escape::None,
            pending_cr: false,
            key_block: KeyBlock::default(),
            recent: VecDeque::new(),
            regions: Vec::new(),
            open: None,
            seen: HashMap::new(),
            total_lines: 0,
            total_bytes: 0,
            signal_lines: 0,
            signals_not_shown: 0,
        }
    }

    /// Feeds the next bytes of the log; chunks may split lines and UTF-8 characters anywhere.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total_bytes += chunk.len() as u64;
        let mut rest = chunk;
        while let Some((&b, after)) = rest.split_first() {
            if self.pending_cr {
                self.pending_cr = false;
                match b {
                    b'\n' => {} // CRLF: ends the line below
                    b'\r' => {
                        self.pending_cr = true;
                        rest = after;
                        continue;
                    }
                    // A lone CR: what follows overwrites the line, as on a terminal.
                    _ => self.reset_line(),
                }
            }
            if self.escape != Escape::None {
                if self.escape_byte(b) {
                    rest = after;
                }
                continue;
            }
            // Most bytes are ordinary: copy the run up to the next control byte at once.
            let run = find_control(rest).unwrap_or(rest.len());
            if run > 0 {
                self.append(&rest[..run]);
                rest = &rest[run..];
                continue;
            }
            rest = after;
            match b {
                b'\n' => self.end_line(),
                b'\r' => self.pending_cr = true,
                0x1b => self.escape = Escape::Start,
                _ => {} // other control characters (BEL, backspace, NUL): dropped
            }
        }
    }

    /// Ends the scan; a last line without a newline counts.
    pub fn finish(mut self) -> Findings {
        if !self.line.is_empty() || self.overflow > 0 {
            self.end_line();
        }
        let shown_until = self.shown_until();
        let skip = self.recent.len().saturating_sub(self.limits.tail_lines);
        let tail = self
            .recent
            .iter()
            .skip(skip)
            .filter(|raw| raw.number > shown_until)
            .map(|raw| self.keep(raw))
            .collect();
        Findings {
            regions: self.regions,
            tail,
            total_lines: self.total_lines,
            total_bytes: self.total_bytes,
            signal_lines: self.signal_lines,
            signals_not_shown: self.signals_not_shown,
        }
    }

    /// One byte of an escape sequence; false when the byte is not part of it and must be
    /// handled as ordinary input (a newline always ends the line, even mid-sequence).
    fn escape_byte(&mut self, b: u8) -> bool {
        let (next, consumed) = match (self.escape, b) {
            (Escape::Start, b'[') => (Escape::Csi, true),
            (Escape::Start, b']') => (Escape::Osc, true),
            (Escape::Start, 0x20..=0x2f) => (Escape::Intermediate, true),
            (Escape::Start, 0x30..=0x7e) => (Escape::None, true),
            (Escape::Csi, 0x20..=0x3f) => (Escape::Csi, true),
            (Escape::Csi, 0x40..=0x7e) => (Escape::None, true),
            (Escape::Osc, 0x07) => (Escape::None, true),
            (Escape::Osc, 0x1b) => (Escape::OscEsc, true),
            (Escape::Osc, b'\n') => (Escape::None, false),
            (Escape::Osc, _) => (Escape::Osc, true),
            (Escape::OscEsc, b'\\') => (Escape::None, true),
            (Escape::OscEsc, _) => (Escape::Start, false),
            (Escape::Intermediate, 0x20..=0x2f) => (Escape::Intermediate, true),
            (Escape::Intermediate, 0x30..=0x7e) => (Escape::None, true),
            _ => (Escape::None, false),
        };
        self.escape = next;
        consumed
    }

    fn append(&mut self, bytes: &[u8]) {
        let room = self.line_cap.saturating_sub(self.line.len());
        if bytes.len() <= room {
            self.line.extend_from_slice(bytes);
            return;
        }
        let (kept, dropped) = bytes.split_at(room);
        self.line.extend_from_slice(kept);
        self.overflow += dropped.len() as u64;
        // A PEM header at the end of a very long line still opens a key block.
        self.overflow_tail
            .extend_from_slice(&dropped[dropped.len().saturating_sub(OVERFLOW_TAIL)..]);
        let excess = self.overflow_tail.len().saturating_sub(OVERFLOW_TAIL);
        self.overflow_tail.drain(..excess);
    }

    fn reset_line(&mut self) {
        self.line.clear();
        self.overflow = 0;
        self.overflow_tail.clear();
    }

    fn end_line(&mut self) {
        self.total_lines += 1;
        let number = self.total_lines;
        let facts = if self.key_block.is_inside() {
            LineFacts::default()
        } else {
            signal::scan(&self.line)
        };
        let key_material = self.key_block.whole_line(&self.line, facts.key_marker);
        if self.overflow > 0 {
            self.key_block.update(&self.overflow_tail);
        }
        if facts.signal.is_some() {
            self.signal_lines += 1;
        }

        if !self.fold_repeat(key_material) {
            if self.open.is_some() {
                self.continue_region(number, key_material, facts.signal);
            } else if let Some((kind, pos)) = facts.signal {
                self.start_region(number, key_material, kind, pos);
            }
            self.remember(number, key_material);
        }
        self.reset_line();
    }

    /// Folds the line into the previous one when they are the same.
    fn fold_repeat(&mut self, key_material: bool) -> bool {
        let Some(last) = self.recent.back_mut() else {
            return false;
        };
        if last.bytes != self.line
            || last.overflow != self.overflow
            || last.key_material != key_material
        {
            return false;
        }
        last.repeats += 1;
        let last_number = last.number;
        if let Some(kept) = self.regions.last_mut().and_then(|r| r.lines.last_mut()) {
            if kept.number == last_number {
                kept.repeats += 1;
            }
        }
        true
    }

    fn start_region(&mut self, number: u64, key_material: bool, kind: SignalKind, pos: usize) {
        let key = similarity_key(&self.line);
        if let Some(&(r, l)) = self.seen.get(&key) {
            if let Some(line) = self.regions.get_mut(r).and_then(|r| r.lines.get_mut(l)) {
                line.similar_later += 1;
            }
            return;
        }
        if self.regions.len() >= self.limits.regions {
            self.signals_not_shown += 1;
            return;
        }
        let shown_until = self.shown_until();
        let skip = self.recent.len().saturating_sub(self.limits.context_before);
        let mut lines: Vec<Line> = self
            .recent
            .iter()
            .skip(skip)
            .filter(|raw| raw.number > shown_until)
            .map(|raw| self.keep(raw))
            .collect();
        let opened_at = lines.len();
        self.seen.insert(key, (self.regions.len(), opened_at));
        lines.push(self.keep_current(number, key_material));
        self.regions.push(Region {
            kind,
            lines,
            opened_at,
        });
        let open = OpenRegion {
            after_left: self.limits.context_after,
            traceback_col: (kind == SignalKind::Traceback).then_some(pos),
        };
        self.open = Some(open);
        self.close_region_if_done();
    }

    fn continue_region(
        &mut self,
        number: u64,
        key_material: bool,
        signal: Option<(SignalKind, usize)>,
    ) {
        let line = self.keep_current(number, key_material);
        let region_index = self.regions.len().saturating_sub(1);
        let Some(region) = self.regions.last_mut() else {
            self.open = None;
            return;
        };
        if signal.is_some() {
            let key = similarity_key(&self.line);
            self.seen
                .entry(key)
                .or_insert((region_index, region.lines.len()));
        }
        region.lines.push(line);
        let Some(open) = self.open.as_mut() else {
            return;
        };
        let after = self.limits.context_after;
        match (signal, open.traceback_col) {
            (Some((SignalKind::Traceback, pos)), _) => {
                open.traceback_col = Some(pos);
                open.after_left = after;
            }
            (_, Some(col)) => {
                // Indented lines are the traceback's frames; the first line that is not,
                // the exception, ends it.
                if !matches!(self.line.get(col), Some(b' ' | b'\t')) {
                    open.traceback_col = None;
                }
                open.after_left = after;
            }
            (Some(_), None) => open.after_left = after,
            (None, None) => open.after_left = open.after_left.saturating_sub(1),
        }
        self.close_region_if_done();
    }

    fn close_region_if_done(&mut self) {
        let full = self
            .regions
            .last()
            .is_some_and(|r| r.lines.len() >= self.limits.region_lines);
        if let Some(open) = &self.open {
            if full || (open.after_left == 0 && open.traceback_col.is_none()) {
                self.open = None;
            }
        }
    }

    /// Puts the line in the ring of recent lines, reusing the buffer of the line it evicts.
    fn remember(&mut self, number: u64, key_material: bool) {
        let capacity = self
            .limits
            .tail_lines
            .max(self.limits.context_before)
            .max(1);
        let spare = if self.recent.len() >= capacity {
            self.recent.pop_front().map(|old| old.bytes)
        } else {
            None
        };
        let mut bytes = std::mem::replace(&mut self.line, spare.unwrap_or_default());
        if bytes.capacity() > self.line_cap * 2 {
            bytes.shrink_to_fit(); // a buffer grown by one huge append is not kept around
        }
        self.recent.push_back(RawLine {
            number,
            bytes,
            overflow: self.overflow,
            key_material,
            repeats: 0,
        });
    }

    /// The number of the last line already in a region.
    fn shown_until(&self) -> u64 {
        self.regions.last().map_or(0, Region::last_number)
    }

    fn keep(&self, raw: &RawLine) -> Line {
        let (text, cut) = self.line_text(&raw.bytes, raw.overflow, raw.key_material);
        Line {
            number: raw.number,
            text,
            cut,
            repeats: raw.repeats,
            similar_later: 0,
        }
    }

    fn keep_current(&self, number: u64, key_material: bool) -> Line {
        let (text, cut) = self.line_text(&self.line, self.overflow, key_material);
        Line {
            number,
            text,
            cut,
            repeats: 0,
            similar_later: 0,
        }
    }

    /// Decodes (invalid UTF-8 becomes U+FFFD), redacts, then cuts: redacting first means a
    /// secret or token straddling the cut is hidden, not half shown. Also returns the
    /// line's full length when it was cut.
    fn line_text(&self, bytes: &[u8], overflow: u64, key_material: bool) -> (String, Option<u64>) {
        if key_material {
            return (REDACTED.to_string(), None);
        }
        let mut text = self.redactor.redact_line(&String::from_utf8_lossy(bytes));
        let cut_at = text
            .char_indices()
            .nth(self.limits.line_chars)
            .map(|(i, _)| i);
        if cut_at.is_none() && overflow == 0 {
            return (text, None);
        }
        if let Some(i) = cut_at {
            text.truncate(i);
        }
        (text, Some(bytes.len() as u64 + overflow))
    }
}

impl Default for LogScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl std::io::Write for LogScanner {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Control bytes that end a run of ordinary bytes; a tab is ordinary.
fn is_control(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// The first control byte in `bytes`. Eight bytes at a time: this runs over every byte of
/// the log, and a byte-by-byte search was a third of the scanner's time.
fn find_control(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    for (n, word) in words.by_ref().enumerate() {
        let w = u64::from_le_bytes(<[u8; 8]>::try_from(word).unwrap_or_default());
        // Whether some byte is below 0x20, or is 0x7f (the classic "has less" and "has
        // zero" bit tricks: exact about whether, not about which byte).
        let below = w.wrapping_sub(0x20 * ONES) & !w & HIGHS;
        let del = w ^ (0x7f * ONES);
        let del = del.wrapping_sub(ONES) & !del & HIGHS;
        if below | del != 0 {
            // A tab also sets `below`: confirm byte by byte.
            if let Some(i) = word.iter().position(|&c| is_control(c)) {
                return Some(n * 8 + i);
            }
        }
    }
    let done = bytes.len() - words.remainder().len();
    words
        .remainder()
        .iter()
        .position(|&c| is_control(c))
        .map(|i| done + i)
}

/// Failure lines that differ only in digits (timestamps, counters, ids) have the same key.
fn similarity_key(line: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for &b in line.iter().filter(|b| !b.is_ascii_digit()) {
        hasher.write_u8(b);
    }
    hasher.finish()
}
