//! How queue outcomes read: Markdown for pull-request comments and Discord, a table for the
//! terminal. `--json` prints the outcome's own fields instead.

use super::{EntryView, QueueView};
use crate::executor::Outcome;

/// A queue outcome as Markdown (PR comments, Discord); `None` for any other outcome.
pub fn markdown(outcome: &Outcome) -> Option<String> {
    Some(match outcome {
        Outcome::QueueAdd { entry } => format!("🚢 {}", entry_line(entry)),
        Outcome::QueueRemove { entry } => {
            format!("`{}` leaves the submit queue.", label(entry))
        }
        Outcome::QueueRetry { entry } => format!("🔁 {}", entry_line(entry)),
        Outcome::QueueStatus { entry } => {
            let mut text = entry_line(entry);
            text.push_str(&format!(
                "\n\nEntry {} at {}, queued by {}, {} test attempt{}.",
                entry.id,
                &entry.head[..entry.head.len().min(7)],
                entry.requested_by,
                entry.attempts,
                if entry.attempts == 1 { "" } else { "s" }
            ));
            if let (Some(reason), Some(_)) = (&entry.reason, entry.position) {
                text.push_str(&format!(" Last failure: {reason}"));
            }
            text
        }
        Outcome::QueueList { queues, entries } => markdown_list(queues, entries),
        Outcome::QueuePaused { queue } => queue_line(queue),
        _ => return None,
    })
}

/// One entry in a sentence: "`shop#42` is 2nd in line for main (ETA 16m)".
pub fn entry_line(entry: &EntryView) -> String {
    let change = label(entry);
    let why = entry
        .reason
        .as_deref()
        .map(|r| format!(": {r}"))
        .unwrap_or_default();
    match (entry.state.as_str(), entry.position) {
        (state, Some(position)) => format!(
            "`{change}` is {} in line for `{}` ({state}{}).",
            ordinal(position),
            entry.target,
            entry
                .eta
                .as_deref()
                .map(|eta| format!(", ETA {eta}"))
                .unwrap_or_else(|| "; ETA once a first candidate was tested".into())
        ),
        ("merged", None) => format!(
            "`{change}` landed on `{}` as {}.",
            entry.target,
            entry
                .merged_commit
                .as_deref()
                .map(|c| &c[..c.len().min(7)])
                .unwrap_or("?")
        ),
        (state, None) => format!("`{change}` {state}{why}."),
    }
}

/// `shop#42`, `shop:feature-x`.
pub fn label(entry: &EntryView) -> String {
    match entry.pr {
        Some(_) => format!("{}{}", entry.repo, entry.change),
        None => format!("{}:{}", entry.repo, entry.change),
    }
}

/// What the change is, beyond its name: a PR's title (a branch is its own title).
fn title(entry: &EntryView) -> &str {
    if entry.branch.as_deref() == Some(entry.title.as_str()) {
        ""
    } else {
        &entry.title
    }
}

/// `1st`, `2nd`, `3rd`, `4th`, ..., `11th`, `21st`.
pub fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A queue's state in a sentence.
pub fn queue_line(queue: &QueueView) -> String {
    let length = match queue.length {
        0 => "empty".to_string(),
        1 => "1 change in line".to_string(),
        n => format!("{n} changes in line"),
    };
    if queue.paused {
        format!(
            "The queue of `{}` → `{}` is **paused** ({}): nothing lands until `queue resume`; {length}.",
            queue.repo,
            queue.target,
            queue.pause_reason.as_deref().unwrap_or("no reason given")
        )
    } else {
        format!(
            "The queue of `{}` → `{}` is open; {length}.",
            queue.repo, queue.target
        )
    }
}

/// Markdown: a line per queue and a table of its entries.
pub fn markdown_list(queues: &[QueueView], entries: &[EntryView]) -> String {
    let mut text = String::new();
    for queue in queues {
        text.push_str(&queue_line(queue));
        text.push('\n');
        let mine: Vec<&EntryView> = entries
            .iter()
            .filter(|e| e.repo == queue.repo && e.target == queue.target)
            .collect();
        if mine.is_empty() {
            continue;
        }
        text.push_str("\n| # | change | state | since | ETA |\n|---|---|---|---|---|\n");
        for entry in mine.iter().take(50) {
            text.push_str(&format!(
                "| {} | `{}` {} | {} | {} | {} |\n",
                entry.position.map(|p| p.to_string()).unwrap_or("-".into()),
                entry.change,
                crate::text::truncate(title(entry), 60).replace('|', "\\|"),
                entry.state,
                ago(entry.since),
                entry.eta.as_deref().unwrap_or("-")
            ));
        }
        text.push('\n');
    }
    text
}

/// The terminal table of `queue list`.
pub fn table(queues: &[QueueView], entries: &[EntryView]) -> String {
    let mut out = String::new();
    for queue in queues {
        out.push_str(&queue_line(queue).replace('`', "").replace("**", ""));
        out.push('\n');
        let rows: Vec<[String; 5]> = entries
            .iter()
            .filter(|e| e.repo == queue.repo && e.target == queue.target)
            .map(|e| {
                [
                    e.position.map(|p| p.to_string()).unwrap_or("-".into()),
                    format!("{} {}", e.change, crate::text::truncate(title(e), 40))
                        .trim_end()
                        .to_string(),
                    match &e.reason {
                        Some(r) if e.position.is_none() => {
                            format!("{} ({})", e.state, crate::text::truncate(r, 50))
                        }
                        _ => e.state.clone(),
                    },
                    ago(e.since),
                    e.eta.clone().unwrap_or("-".into()),
                ]
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let header = ["POSITION", "CHANGE", "STATE", "SINCE", "ETA"];
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                s.push_str(&format!("{cell:<width$}", width = widths[i]));
                s.push_str(if i < 4 { "  " } else { "" });
            }
            s.trim_end().to_string() + "\n"
        };
        out.push_str(&line(header));
        for row in &rows {
            out.push_str(&line(row.each_ref().map(String::as_str)));
        }
    }
    out
}

/// `3m ago`, from unix milliseconds.
fn ago(ms: i64) -> String {
    let secs = ((envmgr::store::now_ms() - ms).max(0) / 1000) as u64;
    let rounded = if secs < 60 { secs } else { secs / 60 * 60 };
    format!(
        "{} ago",
        humantime::format_duration(std::time::Duration::from_secs(rounded))
    )
}
