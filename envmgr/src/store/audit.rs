//! The audit log: one row per command from any surface (CLI, HTTP API, GitHub comments,
//! Discord) with who asked, where, what and how it ended. Append-only; the surfaces write
//! it, `GET /api/v1/audit` reads it newest first.

use sqlx::any::AnyRow;

use super::{column, now_ms, Store, StoreError};

/// Longest text kept in one column; longer text is cut at a character boundary with `…`.
const MAX_FIELD_CHARS: usize = 1000;

/// What a surface records for one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// `cli`, `api`, `github` or `discord`.
    pub surface: String,
    /// Who asked, e.g. `github:alice`, `discord:1234`, `api:bob`.
    pub actor: String,
    /// Where, e.g. `pr acme/shop#7`, `discord guild 1 channel 2`, `api`.
    pub place: String,
    /// The command in its canonical text form, e.g. `env up feature-x repo:shop`.
    pub command: String,
    /// `ok`, `refused: ...` or `error: ...`.
    pub outcome: String,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    /// Unix milliseconds.
    pub at: i64,
    pub surface: String,
    pub actor: String,
    pub place: String,
    pub command: String,
    pub outcome: String,
}

impl AuditEntry {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: column(row, "id")?,
            at: column(row, "at")?,
            surface: column(row, "surface")?,
            actor: column(row, "actor")?,
            place: column(row, "place")?,
            command: column(row, "command")?,
            outcome: column(row, "outcome")?,
        })
    }
}

const AUDIT_COLUMNS: &str = "id, at, surface, actor, place, command, outcome";

impl Store {
    /// Appends an entry, stamped now; returns its id. Over-long fields are shortened.
    pub async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO audit_log (at, surface, actor, place, command, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        )
        .bind(now_ms())
        .bind(shorten(&entry.surface))
        .bind(shorten(&entry.actor))
        .bind(shorten(&entry.place))
        .bind(shorten(&entry.command))
        .bind(shorten(&entry.outcome))
        .fetch_one(&self.pool)
        .await?;
        column(&row, "id")
    }

    /// At most `limit` entries with an id above `after` (0 for all), newest first.
    pub async fn audit_entries(
        &self,
        limit: i64,
        after: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(after)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AuditEntry::from_row).collect()
    }

    /// At most `limit` entries with an id below `before`, newest first: the page after
    /// (older than) one that ended at `before`.
    pub async fn audit_entries_before(
        &self,
        limit: i64,
        before: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(AuditEntry::from_row).collect()
    }
}

fn shorten(text: &str) -> String {
    if text.chars().count() <= MAX_FIELD_CHARS {
        return text.to_string();
    }
    let mut short: String = text.chars().take(MAX_FIELD_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::shorten;

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        assert_eq!(shorten("ok"), "ok");
        let long = "é".repeat(2000);
        let short = shorten(&long);
        assert_eq!(short.chars().count(), 1000);
        assert!(short.ends_with('…'));
    }
}
