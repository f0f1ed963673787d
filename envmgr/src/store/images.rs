//! The built images this instance uses, and when an env last used each: what the reaper
//! weighs against `image_retention`. Built images are shared by content between instances
//! on one engine, so an image not listed here is never this instance's to remove.

use sqlx::Row;

use super::{column, parsed_column, Store, StoreError};
use crate::names::EnvName;

/// One built image's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImageUse {
    pub reference: String,
    /// The env that used it last (its timeline tells when the image is removed).
    pub env: EnvName,
    /// Unix milliseconds.
    pub last_used_at: i64,
}

impl Store {
    /// Records that `env` used built image `reference` at `at` (never moves the time back).
    pub async fn record_image_use(
        &self,
        reference: &str,
        env: &EnvName,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO built_images (reference, env, last_used_at) VALUES ($1, $2, $3) \
             ON CONFLICT (reference) DO UPDATE SET env = excluded.env, last_used_at = excluded.last_used_at \
             WHERE built_images.last_used_at < excluded.last_used_at",
        )
        .bind(reference)
        .bind(env.as_str())
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every built image this instance has used, least recently used first.
    pub async fn built_images(&self) -> Result<Vec<BuiltImageUse>, StoreError> {
        let rows = sqlx::query(
            "SELECT reference, env, last_used_at FROM built_images ORDER BY last_used_at, reference",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(BuiltImageUse {
                    reference: row.try_get("reference")?,
                    env: parsed_column(row, "env", EnvName::parse)?,
                    last_used_at: column(row, "last_used_at")?,
                })
            })
            .collect()
    }

    /// Forgets a built image (removed, or gone from the engine), unless it was used after
    /// `last_used_at` meanwhile. `Ok(true)` when the row went.
    pub async fn forget_image(
        &self,
        reference: &str,
        last_used_at: i64,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM built_images WHERE reference = $1 AND last_used_at <= $2")
                .bind(reference)
                .bind(last_used_at)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }
}
