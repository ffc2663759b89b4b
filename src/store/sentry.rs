//! Rows for the Sentry compatibility layer: the assemble state of files that
//! `sentry-cli debug-files upload` sends in chunks (table `sentry_files`, migration 3).
//!
//! One row per file, keyed by the SHA-1 of its bytes. `assembling` is written before
//! the assembly starts and read back at start, so a restart resumes it; `ok` rows stay
//! as the index of files already stored (the CLI is answered `ok` at once, and the 2.x
//! legacy `files/dsyms/unknown/` check reads them); an `error` row is answered once and
//! then forgotten, so the next upload of the same file starts afresh.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{unix_ms, Store, StoreError};

/// Where a file's assembly stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentryFileState {
    /// Every chunk was there; the assembly runs (or resumes after a restart).
    Assembling,
    /// Assembled and ingested; `dif` says what was stored.
    Ok,
    /// The assembly failed; `detail` says why.
    Error,
}

impl SentryFileState {
    pub fn as_str(self) -> &'static str {
        match self {
            SentryFileState::Assembling => "assembling",
            SentryFileState::Ok => "ok",
            SentryFileState::Error => "error",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "ok" => SentryFileState::Ok,
            "assembling" => SentryFileState::Assembling,
            // Unknown words (a newer build's) read as an error: the file is uploaded again.
            _ => SentryFileState::Error,
        }
    }
}

/// One file's assemble state as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentryFileRow {
    /// SHA-1 of the whole file, lowercase hex.
    pub checksum: String,
    pub state: SentryFileState,
    /// The file name the CLI gave (the object's basename).
    pub name: String,
    pub debug_id: Option<String>,
    /// The chunks' SHA-1s in file order.
    pub chunks: Vec<String>,
    pub detail: Option<String>,
    /// The caller's JSON describing the stored file, once `Ok`.
    pub dif: Option<String>,
}

const COLUMNS: &str = "checksum, state, name, debug_id, chunks, detail, dif";

fn from_row(row: &Row<'_>) -> rusqlite::Result<SentryFileRow> {
    let state: String = row.get(1)?;
    let chunks: String = row.get(4)?;
    Ok(SentryFileRow {
        checksum: row.get(0)?,
        state: SentryFileState::parse(&state),
        name: row.get(2)?,
        debug_id: row.get(3)?,
        chunks: serde_json::from_str(&chunks).unwrap_or_default(),
        detail: row.get(5)?,
        dif: row.get(6)?,
    })
}

fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

fn get(conn: &Connection, checksum: &str) -> Result<Option<SentryFileRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM sentry_files WHERE checksum = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([checksum], from_row)
        .optional()?)
}

fn put(conn: &Connection, row: &SentryFileRow) -> Result<(), StoreError> {
    let chunks = serde_json::to_string(&row.chunks).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sentry_files
             (checksum, state, name, debug_id, chunks, detail, dif, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        row.checksum,
        row.state.as_str(),
        row.name,
        row.debug_id,
        chunks,
        row.detail,
        row.dif,
        now_ms()
    ])?;
    Ok(())
}

impl Store {
    /// The rows of the given checksums that exist. Blocking.
    pub fn sentry_files(&self, checksums: &[String]) -> Result<Vec<SentryFileRow>, StoreError> {
        self.read(|conn| {
            let mut rows = Vec::new();
            for checksum in checksums {
                if let Some(row) = get(conn, checksum)? {
                    rows.push(row);
                }
            }
            Ok(rows)
        })
    }

    /// Every file whose assembly has not finished: resumed at start, and their chunks
    /// are kept by the expiry sweep. Blocking.
    pub fn sentry_files_assembling(&self) -> Result<Vec<SentryFileRow>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {COLUMNS} FROM sentry_files WHERE state = 'assembling'");
            let rows = conn
                .prepare_cached(&sql)?
                .query_map([], from_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Records that `row` (state `Assembling`) starts assembling, unless a row for its
    /// checksum exists: then nothing changes and that row is returned. The check and
    /// the insert are one write, so of two concurrent assembles of the same file only
    /// one starts the work. Durable on return.
    pub async fn begin_sentry_assembly(
        &self,
        row: SentryFileRow,
    ) -> Result<Option<SentryFileRow>, StoreError> {
        self.inner
            .writer
            .write(move |conn| {
                if let Some(existing) = get(conn, &row.checksum)? {
                    return Ok(Some(existing));
                }
                put(conn, &row)?;
                Ok(None)
            })
            .await
    }

    /// Writes rows as they are (an assembly's outcome, files the legacy upload
    /// stored). Durable on return.
    pub async fn put_sentry_files(&self, rows: Vec<SentryFileRow>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |conn| {
                for row in &rows {
                    put(conn, row)?;
                }
                Ok(())
            })
            .await
    }

    /// Deletes a file's row if it is in `Error`, after the error was answered.
    pub async fn forget_sentry_error(&self, checksum: String) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |conn| {
                conn.prepare_cached(
                    "DELETE FROM sentry_files WHERE checksum = ?1 AND state = 'error'",
                )?
                .execute([&checksum])?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(checksum: &str, state: SentryFileState) -> SentryFileRow {
        SentryFileRow {
            checksum: checksum.into(),
            state,
            name: "App".into(),
            debug_id: Some("54039061-a983-3323-a49d-837a894d667f".into()),
            chunks: vec!["a".repeat(40), "b".repeat(40)],
            detail: None,
            dif: None,
        }
    }

    #[test]
    fn only_the_first_of_two_assemblies_begins_and_errors_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let first = rt
            .block_on(store.begin_sentry_assembly(row("c1", SentryFileState::Assembling)))
            .unwrap();
        assert_eq!(first, None);
        let second = rt
            .block_on(store.begin_sentry_assembly(row("c1", SentryFileState::Assembling)))
            .unwrap();
        assert_eq!(second, Some(row("c1", SentryFileState::Assembling)));
        assert_eq!(store.sentry_files_assembling().unwrap().len(), 1);

        // An ok row is kept; an error row is answered once, then forgotten.
        rt.block_on(store.put_sentry_files(vec![
            row("c1", SentryFileState::Ok),
            row("c2", SentryFileState::Error),
        ]))
        .unwrap();
        rt.block_on(store.forget_sentry_error("c1".into())).unwrap();
        rt.block_on(store.forget_sentry_error("c2".into())).unwrap();
        let rows = store.sentry_files(&["c1".into(), "c2".into()]).unwrap();
        assert_eq!(rows, vec![row("c1", SentryFileState::Ok)]);
        assert!(store.sentry_files_assembling().unwrap().is_empty());
    }
}
