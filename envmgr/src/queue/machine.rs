//! Placeholder until the scheduler lands: the entry states only.
use serde::{Deserialize, Serialize};

pub type EntryId = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    Queued,
    Testing,
    Passed,
    Merged,
    Failed,
    Removed,
}

impl EntryState {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Queued => "queued",
            EntryState::Testing => "testing",
            EntryState::Passed => "passed",
            EntryState::Merged => "merged",
            EntryState::Failed => "failed",
            EntryState::Removed => "removed",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        [
            EntryState::Queued,
            EntryState::Testing,
            EntryState::Passed,
            EntryState::Merged,
            EntryState::Failed,
            EntryState::Removed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}
