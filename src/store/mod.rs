//! The embedded store: one SQLite database, `DATA_DIR/crashbox.db`, and the only module
//! that names SQLite. Debug files and SymCaches stay as files in the dsyms dir (owned
//! by `debug_files`); every record and index is here.
//!
//! - **Writes** go through one writer thread ([`writer`]): it batches whatever waits
//!   (group commit) into one transaction, isolates a failing job (savepoints, on a
//!   re-run), and answers after `COMMIT` returns. WAL mode with `synchronous=FULL`: a
//!   commit is fsynced.
//! - **Reads** use a small pool of read-only connections ([`pool`]); in WAL mode they
//!   never wait for the writer. Every method here blocks: callers on the async executor
//!   use the `async` ones or run the rest on the blocking pool.
//! - **Checkpoints** run on the writer between batches, after their answers went out,
//!   so a commit never waits for the WAL to be copied into the database.
//! - **Schema** is numbered migrations ([`schema`]), applied at open.
//!
//! Callers hand in and get back the store's own row types ([`NewCrash`],
//! [`StoredCrash`], [`DebugFileRow`], …): what a crash record holds is the caller's
//! JSON, compressed here; no report or debug-file type is the on-disk format.

mod crashes;
mod debug_files;
mod pool;
mod schema;
mod sentry;
mod sessions;
mod triage;
mod webhooks;
mod writer;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use writer::Priority;

pub use crashes::{
    CrashFacts, Filing, Inserted, Mismatch, NeededDebugFile, NewCrash, Refiling, StoredCrash,
};
pub use debug_files::{DebugFileFilter, DebugFileRow};
pub use sentry::{SentryFileRow, SentryFileState};
pub use triage::{
    Activity, Group, GroupDetail, GroupFilter, GroupSort, Release, ReleaseDetail, ReleaseUpdate,
    Spread, StateChange, TriageRefusal, SYSTEM_ACTOR,
};
pub use webhooks::{
    AttemptOutcome, Delivery, DueDelivery, SpikePolicy, Webhook, EVENTS, EVENT_NEW,
    EVENT_REGRESSED, EVENT_SPIKE,
};

/// How long a connection waits for a lock (a checkpoint, another process's backup)
/// before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 128;

/// The database file's name in the data dir.
pub const DB_FILE: &str = "crashbox.db";

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("store: schema migration: {0}")]
    Migration(String),
    #[error("store: damaged record under {key}: {problem}")]
    Corrupt { key: String, problem: String },
    /// The writer thread failed a batch or is gone.
    #[error("store: writer: {0}")]
    Writer(String),
    #[error("store: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task running store work failed.
    #[error("store: task failed: {0}")]
    Task(String),
}

impl StoreError {
    fn io(context: &str, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.to_owned(),
            source,
        }
    }
}

/// A page of a listing and the cursor of the next one (`None` at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// A page of rows keyed by crash sequence number: a full page's cursor is its last
    /// row's seq, a short page is the end.
    fn by_seq(rows: Vec<(i64, T)>, limit: usize) -> Self {
        let next = (rows.len() == limit)
            .then(|| rows.last().map(|(seq, _)| seq.to_string()))
            .flatten();
        Page {
            items: rows.into_iter().map(|(_, item)| item).collect(),
            next,
        }
    }
}

/// One crash in a group's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashSummary {
    pub id: String,
    pub received_at: String,
    pub release: Option<String>,
    pub os: Option<String>,
    pub device_model: Option<String>,
}

/// A debug id crashes reference and nobody uploaded: the "missing dSYM" list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingDebugFile {
    pub debug_id: String,
    /// The image name the reports gave it.
    pub name: String,
    pub crash_count: u64,
    pub releases: BTreeSet<String>,
    pub last_seen: String,
}

/// Handle to the embedded store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: writer::Writer,
    readers: pool::Readers,
    /// For the full checkpoints a delete and shutdown ask for (the writer runs the
    /// periodic ones).
    checkpoints: Mutex<Connection>,
    /// What makes a `group.spike`; every insert hands it to the counter flush.
    spike: Mutex<SpikePolicy>,
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(at: time::OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 in UTC with milliseconds, the way every stored time reads back.
pub(crate) fn ms_to_rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// The read-write connection's settings. `synchronous=FULL` makes every commit an
/// fsync of the WAL: a 2xx survives a power cut. Incremental auto-vacuum can only be
/// chosen before the first table exists, so it is set on a new file only.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // rusqlite keeps 16 prepared statements by default; an insert alone uses a dozen,
    // and a statement evicted is prepared again (tens of microseconds) on next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    if tables == 0 {
        conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
    }
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Migration(format!(
            "the database would not switch to WAL mode (got {mode})"
        )));
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         -- Deleted crash bytes are overwritten, not left in free pages.
         PRAGMA secure_delete = ON;
         -- The page cache stays at SQLite's 2 MiB default: measured with 32 MiB, intake
         -- was 7% slower (the cache's bookkeeping grows with it; the pages it would
         -- hold are in the OS page cache anyway).
         -- SQLite's heap, all connections together, is held near 4 MiB by evicting
         -- cached pages: without it the writer's cache kept growing past its size
         -- (2.1 -> 3.1 MiB in 90 s at full load) and so did the server's RSS.
         PRAGMA soft_heap_limit = 4194304;
         -- After a checkpoint the WAL file shrinks back to this (64 MiB) instead of
         -- keeping its largest size on disk.
         PRAGMA journal_size_limit = 67108864;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, to: Option<usize>) -> Result<(), StoreError> {
    let migrations = schema::migrations();
    let result = match to {
        Some(version) => migrations.to_version(conn, version),
        None => migrations.to_latest(conn),
    };
    result.map_err(|e| StoreError::Migration(e.to_string()))
}

/// Runs a checkpoint; returns whether it copied every frame of the WAL.
pub(super) fn checkpoint(conn: &Connection, mode: &str) -> Result<bool, StoreError> {
    let (busy, log, done): (i64, i64, i64) =
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    Ok(busy == 0 && log == done)
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, applying every migration.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_at(data_dir, None)
    }

    fn open_at(data_dir: &Path, version: Option<usize>) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io(&format!("creating {}", data_dir.display()), e))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = open_writer(&path)?;
        migrate(&mut conn, version)?;
        if version.is_none() {
            triage::backfill_releases(&conn)?;
        }
        let checkpoints = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // A TRUNCATE checkpoint holds the WAL's write lock while it waits for readers,
        // so it waits briefly and retries rather than stall the writer for long.
        checkpoints.busy_timeout(Duration::from_millis(50))?;
        let checkpoints = Mutex::new(checkpoints);
        let writer = writer::Writer::start(conn)?;
        Ok(Store {
            inner: Arc::new(Inner {
                readers: pool::Readers::new(path.clone()),
                path,
                writer,
                checkpoints,
                spike: Mutex::new(SpikePolicy::default()),
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.inner.readers.get()?;
        f(&conn)
    }

    /// Stores one upload's crashes, skipping any whose identity is already stored.
    /// Durable when it returns: the transaction holding them has committed. Uploads
    /// arriving together share one transaction and one fsync.
    pub async fn insert_crashes(
        &self,
        crashes: Vec<NewCrash>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let spike = self.spike_policy();
        self.inner
            .writer
            .write_crashes(move |conn| crashes::insert(conn, &crashes, spike))
            .await
    }

    /// Sets what makes a `group.spike` (the server's flags).
    pub fn set_spike_policy(&self, policy: SpikePolicy) {
        if let Ok(mut spike) = self.inner.spike.lock() {
            *spike = policy;
        }
    }

    fn spike_policy(&self) -> SpikePolicy {
        self.inner.spike.lock().map(|s| *s).unwrap_or_default()
    }

    /// Adds a webhook subscription (`id` random, from the caller).
    pub fn create_webhook(
        &self,
        id: String,
        url: String,
        events: Vec<String>,
        secret: Option<String>,
        now_ms: i64,
    ) -> Result<Webhook, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                webhooks::create(conn, &id, &url, &events, secret.as_deref(), now_ms)
            })
    }

    /// Opens a web UI session: `id` and `token` are hashes (see `store::sessions`).
    pub fn create_session(
        &self,
        id: String,
        token: String,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                sessions::create(conn, &id, &token, now_ms, expires_ms)
            })
    }

    /// The token hash a live session was opened with.
    pub fn session_token(&self, id: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        self.read(|conn| sessions::token_of(conn, id, now_ms))
    }

    /// Ends a session; false when there was none.
    pub fn delete_session(&self, id: String) -> Result<bool, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| sessions::delete(conn, &id))
    }

    /// Every webhook subscription, oldest first.
    pub fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read(webhooks::list)
    }

    /// Deletes a webhook and its deliveries (pending ones are not sent); false when
    /// there was none.
    pub fn delete_webhook(&self, id: String) -> Result<bool, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| webhooks::delete(conn, &id))
    }

    /// A webhook's latest deliveries, newest first; `None` for an unknown webhook.
    pub fn webhook_deliveries(
        &self,
        id: &str,
        limit: usize,
    ) -> Result<Option<Vec<Delivery>>, StoreError> {
        self.read(|conn| webhooks::deliveries(conn, id, limit))
    }

    /// Pending deliveries due at `now_ms`, oldest first.
    pub fn due_deliveries(
        &self,
        now_ms: i64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        self.read(|conn| webhooks::due(conn, now_ms, limit))
    }

    /// Records a delivery attempt's outcome. Blocking: not for the async executor.
    pub fn finish_delivery(
        &self,
        delivery_id: String,
        outcome: AttemptOutcome,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                webhooks::finish(conn, &delivery_id, &outcome, now_ms)
            })
    }

    /// Deletes delivered and failed deliveries created before `cutoff_ms`.
    pub fn prune_deliveries(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Background, move |conn| {
                webhooks::prune(conn, cutoff_ms)
            })
    }

    /// The live group an id names (itself, or the group it was merged or moved into),
    /// as a webhook delivery shows it.
    pub fn current_group(&self, id: &str, now_ms: i64) -> Result<Option<Group>, StoreError> {
        self.read(|conn| {
            let Some(current) = triage::current_id(conn, id)? else {
                return Ok(None);
            };
            triage::group_row(conn, &current, now_ms)
        })
    }

    /// One crash by id; `None` for an unknown or malformed id.
    pub fn crash(&self, id: &str) -> Result<Option<StoredCrash>, StoreError> {
        self.read(|conn| crashes::get(conn, id))
    }

    /// Files stored crashes anew (after symbolicating them again), moving their
    /// counters, in one transaction. Blocking: not for the async executor.
    pub fn refile_crashes(&self, changes: Vec<Refiling>) -> Result<usize, StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Background, move |conn| {
                crashes::refile(conn, &changes)
            })
    }

    /// Deletes one crash and its share of every counter, then checkpoints the WAL so
    /// that the record's bytes are gone from both files (`secure_delete` zeroes them in
    /// the database). False when there was none.
    pub async fn delete_crash(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        let deleted = self
            .inner
            .writer
            .write(move |conn| crashes::delete(conn, &id))
            .await?;
        if deleted {
            let store = self.clone();
            let truncated = tokio::task::spawn_blocking(move || store.checkpoint_truncate())
                .await
                .map_err(|e| StoreError::Task(e.to_string()))
                .and_then(|r| r);
            // The crash is deleted either way; only its old page images may linger in
            // the WAL until the writer's next checkpoint restarts it.
            if let Err(err) = truncated {
                tracing::warn!(error = %err, "WAL truncation after a delete failed");
            }
        }
        Ok(deleted)
    }

    /// Copies the whole WAL into the database and truncates it. Retries while readers
    /// hold old snapshots, for up to a few seconds.
    fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        let conn = self
            .inner
            .checkpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for _ in 0..50 {
            match checkpoint(&conn, "TRUNCATE") {
                Ok(true) => return Ok(()),
                // Busy: a reader holds an old snapshot (a backup, a long read).
                Ok(false) | Err(StoreError::Database(_)) => {}
                Err(err) => return Err(err),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        tracing::warn!("the WAL could not be truncated: readers kept old snapshots");
        Ok(())
    }

    /// Up to `limit` crashes that needed `debug_id` and lacked it, after the cursor
    /// `after` (from a previous page), oldest first.
    pub fn crashes_needing(
        &self,
        debug_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<StoredCrash>, StoreError> {
        let after: i64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        let rows = self.read(|conn| {
            crashes::read_crashes_seq(
                conn,
                "c.seq IN (SELECT seq FROM crash_missing WHERE debug_id = ?1 AND seq > ?2
                           ORDER BY seq LIMIT ?3) ORDER BY c.seq",
                params![debug_id, after, limit as i64],
                crashes::Damaged::Skip,
            )
        })?;
        Ok(Page::by_seq(rows, limit))
    }

    /// Up to `limit` crashes after the cursor `after` (from a previous page), oldest
    /// first: every stored crash, a page at a time.
    pub fn crashes_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<StoredCrash>, StoreError> {
        let after: i64 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        let rows = self.read(|conn| {
            crashes::read_crashes_seq(
                conn,
                "c.seq > ?1 ORDER BY c.seq LIMIT ?2",
                params![after, limit as i64],
                crashes::Damaged::Skip,
            )
        })?;
        Ok(Page::by_seq(rows, limit))
    }

    /// Records the grouping rules' fingerprint; when it differs from the stored one,
    /// queues `resign` (every stored crash signed again) in the same transaction, so a
    /// restart neither loses nor repeats it. True when the rules changed. Blocking.
    pub fn note_grouping_rules(&self, fingerprint: &str, resign: &str) -> Result<bool, StoreError> {
        let fingerprint = fingerprint.to_owned();
        let resign = resign.to_owned();
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| {
                let stored: Option<String> = conn
                    .prepare_cached("SELECT value FROM meta WHERE key = 'grouping_rules'")?
                    .query_row([], |r| r.get(0))
                    .optional()?;
                if stored.as_deref() == Some(fingerprint.as_str()) {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ('grouping_rules', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute([&fingerprint])?;
                let crashes: i64 =
                    conn.query_row("SELECT count(*) FROM crashes", [], |r| r.get(0))?;
                if crashes > 0 {
                    conn.prepare_cached(
                        "INSERT INTO resymbolication_queue (debug_id) VALUES (?1)",
                    )?
                    .execute([&resign])?;
                }
                Ok(true)
            })
    }

    /// A group's crashes, newest first, `limit` at a time.
    pub fn crashes_in_group(
        &self,
        group_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page<CrashSummary>, StoreError> {
        let before: i64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(i64::MAX);
        let rows: Vec<(i64, CrashSummary)> = self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, nonce, received_at, release, os, device_model FROM crashes
                 WHERE group_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(params![group_id, before, limit as i64], |row| {
                    let seq: i64 = row.get(0)?;
                    Ok((
                        seq,
                        CrashSummary {
                            id: crashes::crash_id(seq, row.get(1)?),
                            received_at: ms_to_rfc3339(row.get(2)?),
                            release: row.get(3)?,
                            os: row.get(4)?,
                            device_model: row.get(5)?,
                        },
                    ))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })?;
        Ok(Page::by_seq(rows, limit))
    }

    /// For stepping through a group's crashes: the ids of the crash just newer and just
    /// older than `crash_id` in `group_id`. `None` when `crash_id` is not a crash of
    /// that group.
    #[allow(clippy::type_complexity)]
    pub fn crash_neighbors(
        &self,
        group_id: &str,
        crash_id: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, StoreError> {
        let Some((seq, nonce)) = crashes::parse_crash_id(crash_id) else {
            return Ok(None);
        };
        self.read(|conn| {
            let here: Option<i64> = conn
                .prepare_cached("SELECT nonce FROM crashes WHERE seq = ?1 AND group_id = ?2")?
                .query_row(params![seq, group_id], |r| r.get(0))
                .optional()?;
            if here != Some(nonce) {
                return Ok(None);
            }
            let step = |sql: &str| -> Result<Option<String>, StoreError> {
                Ok(conn
                    .prepare_cached(sql)?
                    .query_row(params![group_id, seq], |r| {
                        Ok(crashes::crash_id(r.get(0)?, r.get(1)?))
                    })
                    .optional()?)
            };
            let newer = step(
                "SELECT seq, nonce FROM crashes WHERE group_id = ?1 AND seq > ?2
                 ORDER BY seq LIMIT 1",
            )?;
            let older = step(
                "SELECT seq, nonce FROM crashes WHERE group_id = ?1 AND seq < ?2
                 ORDER BY seq DESC LIMIT 1",
            )?;
            Ok(Some((newer, older)))
        })
    }

    /// Deletes the crashes received before `cutoff`, with their share of every
    /// counter, a chunk per transaction so intake never waits long; then gives the
    /// freed pages back to the file system. Returns how many. Blocking.
    pub fn prune_crashes_before(&self, cutoff: time::OffsetDateTime) -> Result<usize, StoreError> {
        const CHUNK: usize = 500;
        let cutoff = unix_ms(cutoff);
        let mut total = 0;
        loop {
            let pruned = self
                .inner
                .writer
                .write_blocking(Priority::Background, move |conn| {
                    crashes::prune(conn, cutoff, CHUNK)
                })?;
            total += pruned;
            if pruned < CHUNK {
                break;
            }
        }
        if total > 0 {
            self.vacuum()?;
        }
        Ok(total)
    }

    /// Returns free pages to the file system, up to 2,000 (8 MiB) per transaction.
    pub fn vacuum(&self) -> Result<(), StoreError> {
        loop {
            let freed = self
                .inner
                .writer
                .write_blocking(Priority::Background, |conn| {
                    let before: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                    // The pragma frees one page per row it returns: step it to the end.
                    let mut stmt = conn.prepare_cached("PRAGMA incremental_vacuum(2000)")?;
                    let mut rows = stmt.query([])?;
                    while rows.next()?.is_some() {}
                    let after: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
                    Ok(before - after)
                })?;
            if freed <= 0 {
                return Ok(());
            }
        }
    }

    /// Debug ids crashes needed and nobody uploaded, most crashes first.
    pub fn missing_debug_files(&self) -> Result<Vec<MissingDebugFile>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT m.debug_id, m.name, m.crashes, m.last_seen,
                        (SELECT json_group_array(release) FROM missing_releases r
                         WHERE r.debug_id = m.debug_id)
                 FROM missing_debug_files m ORDER BY m.crashes DESC, m.debug_id",
            )?;
            let rows = stmt
                .query_map([], |row| {
                    let releases: Option<String> = row.get(4)?;
                    Ok(MissingDebugFile {
                        debug_id: row.get(0)?,
                        name: row.get(1)?,
                        crash_count: row.get::<_, i64>(2)?.max(0) as u64,
                        last_seen: ms_to_rfc3339(row.get(3)?),
                        releases: releases
                            .and_then(|r| serde_json::from_str(&r).ok())
                            .unwrap_or_default(),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Queues debug ids whose crashes must be symbolicated again; durable on return.
    pub async fn enqueue_resymbolication(&self, debug_ids: Vec<String>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |conn| {
                let mut stmt = conn
                    .prepare_cached("INSERT INTO resymbolication_queue (debug_id) VALUES (?1)")?;
                for id in &debug_ids {
                    stmt.execute([id])?;
                }
                Ok(())
            })
            .await
    }

    /// The oldest queued debug id, with the key to [`Store::dequeue_resymbolication`].
    pub fn next_resymbolication(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT seq, debug_id FROM resymbolication_queue ORDER BY seq LIMIT 1",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?)
        })
    }

    /// Removes one queue entry. Blocking.
    pub fn dequeue_resymbolication(&self, key: i64) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Background, move |conn| {
                conn.prepare_cached("DELETE FROM resymbolication_queue WHERE seq = ?1")?
                    .execute([key])?;
                Ok(())
            })
    }

    /// One debug file by its identity.
    pub fn debug_file(
        &self,
        debug_id: &str,
        arch: &str,
    ) -> Result<Option<DebugFileRow>, StoreError> {
        self.read(|conn| debug_files::get(conn, debug_id, arch))
    }

    /// Every arch stored for one debug id.
    pub fn debug_files_by_id(&self, debug_id: &str) -> Result<Vec<DebugFileRow>, StoreError> {
        self.read(|conn| debug_files::by_id(conn, debug_id))
    }

    /// All debug files matching `filter`, newest upload first.
    pub fn list_debug_files(
        &self,
        filter: &DebugFileFilter,
    ) -> Result<Vec<DebugFileRow>, StoreError> {
        self.read(|conn| debug_files::list(conn, filter))
    }

    /// Writes `files` in one transaction, durable when it returns. Blocking.
    pub fn put_debug_files(&self, files: Vec<DebugFileRow>) -> Result<(), StoreError> {
        self.inner
            .writer
            .write_blocking(Priority::Now, move |conn| debug_files::put(conn, &files))
    }

    /// Whether the store can take writes: the writer thread runs and a small write
    /// commits. Backs `/readyz`.
    pub async fn check(&self) -> Result<(), StoreError> {
        if !self.inner.writer.alive() {
            return Err(StoreError::Writer("the writer thread has stopped".into()));
        }
        let probe = self.inner.writer.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('ready_probe', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute([unix_ms(time::OffsetDateTime::now_utc()).to_string()])?;
            Ok(())
        });
        match tokio::time::timeout(Duration::from_secs(5), probe).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Writer("a probe write took over 5 s".into())),
        }
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.read(|conn| Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?))
    }

    /// Recounts every counter from the crash rows; empty when all agree.
    pub fn audit(&self) -> Result<Vec<Mismatch>, StoreError> {
        self.read(crashes::audit)
    }

    /// Every stored crash record's JSON, for tools and tests that inspect what is kept.
    pub fn records(&self) -> Result<Vec<StoredCrash>, StoreError> {
        self.read(|conn| {
            crashes::read_crashes(conn, "1 ORDER BY c.seq", [], crashes::Damaged::Fail)
        })
    }

    /// Copies the WAL into the database; called on shutdown. Blocking.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.checkpoint_truncate()
    }

    /// A consistent copy of the database in `data_dir`, taken with SQLite's backup API
    /// while a server may be writing: it reads one snapshot (WAL readers never block
    /// the writer) into `to`'s temporary twin, checks it, then renames it into place.
    pub fn backup(data_dir: &Path, to: &Path) -> Result<(), StoreError> {
        let source = pool::open_reader(&data_dir.join(DB_FILE))?;
        let tmp = to.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        {
            let mut target = Connection::open(&tmp)?;
            let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
            // One step over every page: a step-wise copy restarts whenever the server
            // commits, which under load would be forever.
            let mut tries = 0;
            loop {
                match backup.step(-1)? {
                    rusqlite::backup::StepResult::Done => break,
                    _ if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    other => {
                        return Err(StoreError::Writer(format!(
                            "the backup could not read the database: {other:?}"
                        )))
                    }
                }
            }
            drop(backup);
            let check: String = target.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if check != "ok" {
                return Err(StoreError::Corrupt {
                    key: tmp.display().to_string(),
                    problem: format!("the copy fails its check: {check}"),
                });
            }
            // A self-contained file: no WAL beside it.
            target.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))?;
        }
        std::fs::rename(&tmp, to).map_err(|e| StoreError::io("renaming the backup", e))?;
        Ok(())
    }

    /// A store whose schema stops at `version`, for building test fixtures.
    #[doc(hidden)]
    pub fn open_at_version(data_dir: &Path, version: usize) -> Result<Self, StoreError> {
        Self::open_at(data_dir, Some(version))
    }

    /// Runs raw SQL on the writer, for tests that shape a database by hand.
    #[doc(hidden)]
    pub async fn execute_for_tests(&self, sql: &'static str) -> Result<(), StoreError> {
        self.inner
            .writer
            .write(move |conn| Ok(conn.execute_batch(sql)?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn filing(signature: &str, missing: &[&str]) -> Filing {
        Filing {
            signature: signature.into(),
            group_id: format!("g-{signature}"),
            missing: missing
                .iter()
                .map(|id| NeededDebugFile {
                    debug_id: (*id).into(),
                    name: "App".into(),
                    listed: true,
                })
                .collect(),
            ..Filing::default()
        }
    }

    fn crash(identity: &str, signature: &str, device: &str, release: &str) -> NewCrash {
        NewCrash::new(
            identity.into(),
            1_700_000_000_000,
            Some(hex::encode(device)),
            Some(release.into()),
            CrashFacts::default(),
            filing(signature, &["dbg-1"]),
            format!(r#"{{"marker":"record of {identity}"}}"#).as_bytes(),
        )
        .unwrap()
    }

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_new_store_is_at_the_latest_schema_in_wal_mode() {
        let (_dir, store) = open();
        let conn = store.inner.readers.get().unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, schema::LATEST as i64);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let vacuum: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "incremental auto-vacuum");
    }

    #[test]
    fn inserts_dedup_count_and_read_back() {
        let (_dir, store) = open();
        let rt = runtime();
        let first = rt
            .block_on(store.insert_crashes(vec![
                crash("a", "s1", "d1", "app 1.0 (1)"),
                crash("b", "s1", "d1", "app 1.0 (1)"),
                crash("c", "s2", "d2", "app 1.1 (2)"),
            ]))
            .unwrap();
        assert!(first.iter().all(|i| i.created));
        let again = rt
            .block_on(store.insert_crashes(vec![crash("b", "s1", "d1", "app 1.0 (1)")]))
            .unwrap();
        assert_eq!(again[0].id, first[1].id);
        assert!(!again[0].created);
        let group = store.group("g-s1").unwrap().unwrap();
        assert_eq!((group.count, group.devices), (2, 1));
        let stored = store.crash(&first[2].id).unwrap().unwrap();
        assert_eq!(stored.record, br#"{"marker":"record of c"}"#);
        assert_eq!(stored.filing.signature, "s2");
        assert_eq!(stored.release.as_deref(), Some("app 1.1 (2)"));
        assert_eq!(store.missing_debug_files().unwrap()[0].crash_count, 3);
        let releases = store.releases().unwrap();
        assert_eq!(releases.len(), 2);
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    /// Today's UTC day number, as migration 7 records it.
    fn today() -> u32 {
        (time::OffsetDateTime::now_utc().unix_timestamp() / 86_400) as u32
    }

    #[test]
    fn dedup_keys_lead_with_the_crash_day_so_new_crashes_append() {
        let (_dir, store) = open();
        let rt = runtime();
        // Identities whose digests sort the other way round from their days.
        let mut ids: Vec<String> = (0..40).map(|i| format!("id-{i}")).collect();
        ids.sort_by_key(|id| std::cmp::Reverse(crashes::legacy_identity_key(id)));
        let batch = ids
            .iter()
            .enumerate()
            .map(|(i, id)| crash(id, "s1", "d1", "r").on_day(20_000 + i as u32))
            .collect();
        rt.block_on(store.insert_crashes(batch)).unwrap();
        let conn = store.inner.readers.get().unwrap();
        let keys: Vec<Vec<u8>> = conn
            .prepare("SELECT identity FROM crashes ORDER BY identity")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let days: Vec<u32> = keys
            .iter()
            .map(|k| {
                assert_eq!(k.len(), 20);
                u32::from_be_bytes(k[..4].try_into().unwrap())
            })
            .collect();
        assert_eq!(days, (20_000..20_040).collect::<Vec<_>>());
        assert_eq!(keys[7], crashes::identity_key(20_007, &ids[7]));
        // A retry carries the same report, so the same day: the same crash.
        let again = rt
            .block_on(store.insert_crashes(vec![crash(&ids[7], "s1", "d1", "r").on_day(20_007)]))
            .unwrap();
        assert!(!again[0].created);
        assert_eq!(store.group("g-s1").unwrap().unwrap().count, 40);
        // An empty store needs no look-up the old way.
        let legacy: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'identity_legacy_max_seq'",
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap();
        assert_eq!(legacy, None);
    }

    #[test]
    fn a_retry_of_a_crash_stored_under_the_old_key_is_found_after_migration_7() {
        let dir = tempfile::tempdir().unwrap();
        let rt = runtime();
        let old_day = today() - 3;
        let ids = {
            let store = Store::open_at_version(dir.path(), 6).unwrap();
            let stored = rt
                .block_on(store.insert_crashes(vec![
                    crash("old-a", "s1", "d1", "r"),
                    crash("old-b", "s1", "d2", "r"),
                ]))
                .unwrap();
            // Key them as the v6 code did: 16 bytes of the digest, no day.
            rt.block_on(store.inner.writer.write(|conn| {
                for id in ["old-a", "old-b"] {
                    conn.execute(
                        "UPDATE crashes SET identity = ?1 WHERE identity = ?2",
                        params![
                            crashes::legacy_identity_key(id),
                            crashes::identity_key(0, id)
                        ],
                    )?;
                }
                Ok(())
            }))
            .unwrap();
            stored.into_iter().map(|i| i.id).collect::<Vec<_>>()
        };
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), 7);
        let meta = |key: &str| -> Option<String> {
            let conn = store.inner.readers.get().unwrap();
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
                .unwrap()
        };
        assert_eq!(meta("identity_legacy_max_seq").as_deref(), Some("2"));
        assert_eq!(
            meta("identity_legacy_day").as_deref(),
            Some(today().to_string().as_str())
        );
        // The same reports again, now keyed with their day: found under the old key.
        let received = i64::from(today()) * 86_400_000;
        let mut retry_a = crash("old-a", "s1", "d1", "r").on_day(old_day);
        retry_a.received_ms = received;
        let retry_b = crash("old-b", "s1", "d2", "r"); // no timestamp: day 0
        let again = rt
            .block_on(store.insert_crashes(vec![retry_a, retry_b]))
            .unwrap();
        assert_eq!(
            again
                .iter()
                .map(|i| (i.id.clone(), i.created))
                .collect::<Vec<_>>(),
            vec![(ids[0].clone(), false), (ids[1].clone(), false)]
        );
        // A new crash is stored under the new key, and its retry finds it there.
        let mut new = crash("new-c", "s1", "d1", "r").on_day(today());
        new.received_ms = received;
        let first = rt.block_on(store.insert_crashes(vec![new])).unwrap();
        let mut new = crash("new-c", "s1", "d1", "r").on_day(today());
        new.received_ms = received;
        let second = rt.block_on(store.insert_crashes(vec![new])).unwrap();
        assert!(first[0].created && !second[0].created);
        assert_eq!(first[0].id, second[0].id);
        assert_eq!(store.group("g-s1").unwrap().unwrap().count, 3);
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    #[test]
    fn the_old_key_is_looked_up_only_for_reports_old_enough_to_have_it() {
        let legacy = crashes::LegacyKeys { day: 20_000 };
        let received = |day: i64| day * 86_400_000 + 3_600_000;
        // Before the migration, and its day + 1 (a device east of UTC): looked up.
        assert!(legacy.may_hold(19_990, received(20_100)));
        assert!(legacy.may_hold(20_001, received(20_100)));
        // No timestamp (day 0): always.
        assert!(legacy.may_hold(0, received(20_100)));
        // After the migration, not ahead of the server's clock: cannot be a legacy row.
        assert!(!legacy.may_hold(20_002, received(20_100)));
        assert!(!legacy.may_hold(20_101, received(20_100)));
        // Ahead of the server's date + 1: a device clock set ahead, so maybe.
        assert!(legacy.may_hold(20_102, received(20_100)));
    }

    #[test]
    fn crash_ids_are_unguessable() {
        let (_dir, store) = open();
        let id = runtime()
            .block_on(store.insert_crashes(vec![crash("a", "s1", "d1", "r")]))
            .unwrap()
            .remove(0)
            .id;
        assert!(store.crash(&id).unwrap().is_some());
        // The same sequence number with another nonce names nothing.
        let (seq, nonce) = crashes::parse_crash_id(&id).unwrap();
        let guessed = crashes::crash_id(seq, nonce ^ 1);
        assert!(store.crash(&guessed).unwrap().is_none());
        assert!(!runtime().block_on(store.delete_crash(&guessed)).unwrap());
        assert!(store
            .crash("00000000000000010000000000000000")
            .unwrap()
            .is_none());
        assert!(store.crash("not an id").unwrap().is_none());
    }

    #[test]
    fn a_failed_commit_answers_an_error_and_stores_nothing() {
        // If the writer answered before COMMIT returned, this insert would report
        // success for a crash that was rolled back.
        let (_dir, store) = open();
        let rt = runtime();
        rt.block_on(store.inner.writer.write(|conn| {
            let fired = std::sync::atomic::AtomicBool::new(false);
            // The hook vetoes the next commit only (the one of the insert below).
            conn.commit_hook(Some(move || {
                !fired.swap(true, std::sync::atomic::Ordering::SeqCst)
            }))?;
            Ok(())
        }))
        .unwrap_err();
        let result = rt.block_on(store.insert_crashes(vec![crash("a", "s1", "d1", "r")]));
        // The hook fired on the batch that installed it; the next commit goes through.
        assert!(result.is_ok(), "{result:?}");
        rt.block_on(store.inner.writer.write(|conn| {
            conn.commit_hook(Some(|| true))?;
            Ok(())
        }))
        .unwrap_err();
        let err = rt
            .block_on(store.insert_crashes(vec![crash("b", "s1", "d1", "r")]))
            .unwrap_err();
        assert!(matches!(err, StoreError::Writer(_)), "{err}");
        rt.block_on(store.inner.writer.write(|conn| {
            conn.commit_hook(None::<fn() -> bool>)?;
            Ok(())
        }))
        .unwrap();
        assert_eq!(store.records().unwrap().len(), 1, "only the first crash");
        assert_eq!(store.group("g-s1").unwrap().unwrap().count, 1);
    }

    #[test]
    fn a_failing_job_fails_alone_in_its_batch() {
        let (_dir, store) = open();
        let rt = runtime();
        let bad = store.inner.writer.submit(
            writer::Priority::Now,
            |conn: &Connection| -> Result<(), StoreError> {
                conn.execute_batch("INSERT INTO meta (key, value) VALUES ('half', 'done')")?;
                Err(StoreError::Writer("this upload was bad".into()))
            },
        );
        let good = store.inner.writer.submit(writer::Priority::Now, |conn| {
            crashes::insert(conn, &[crash("a", "s1", "d1", "r")], SpikePolicy::default())
        });
        assert!(rt.block_on(bad).unwrap().is_err());
        assert!(rt.block_on(good).unwrap().is_ok());
        let conn = store.inner.readers.get().unwrap();
        let half: i64 = conn
            .query_row("SELECT count(*) FROM meta WHERE key = 'half'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(half, 0, "the failed job's own write was rolled back");
        assert_eq!(store.records().unwrap().len(), 1);
        assert_eq!(store.audit().unwrap(), vec![], "the re-run counted once");
    }

    #[test]
    fn refiling_moves_counters_and_keeps_an_emptied_group() {
        let (_dir, store) = open();
        let rt = runtime();
        let ids = rt
            .block_on(store.insert_crashes(vec![
                crash("a", "s1", "d1", "r"),
                crash("b", "s1", "d2", "r"),
            ]))
            .unwrap();
        rt.block_on(
            store.execute_for_tests("UPDATE groups SET status = 'resolved' WHERE id = 'g-s1'"),
        )
        .unwrap();
        let page = store.crashes_needing("dbg-1", None, 1).unwrap();
        assert_eq!(page.items.len(), 1);
        assert!(page.next.is_some());
        let changes = ids
            .iter()
            .map(|i| Refiling {
                id: i.id.clone(),
                filing: filing("s9", &[]),
            })
            .collect();
        std::thread::scope(|s| {
            s.spawn(|| assert_eq!(store.refile_crashes(changes).unwrap(), 2));
        });
        let old = store.group("g-s1").unwrap().unwrap();
        assert_eq!((old.count, old.devices), (0, 0));
        assert_eq!(old.status, "resolved", "a group is never deleted");
        assert_eq!(store.group("g-s9").unwrap().unwrap().count, 2);
        assert!(store.missing_debug_files().unwrap().is_empty());
        assert!(store
            .crashes_needing("dbg-1", None, 10)
            .unwrap()
            .items
            .is_empty());
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    /// The events queued so far, oldest first.
    fn queued(store: &Store) -> Vec<(String, String)> {
        store
            .read(|conn| {
                let mut stmt =
                    conn.prepare("SELECT event, group_id FROM webhook_deliveries ORDER BY seq")?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    #[test]
    fn group_new_is_queued_once_per_group_through_retries_moves_and_merges() {
        let (_dir, store) = open();
        let rt = runtime();
        let insert = |crashes: Vec<NewCrash>| rt.block_on(store.insert_crashes(crashes)).unwrap();
        // Before any webhook: the marker is set, nothing is queued.
        insert(vec![crash("z", "s0", "d1", "r")]);
        assert!(queued(&store).is_empty());
        store
            .create_webhook(
                "w".into(),
                "http://127.0.0.1:9/".into(),
                vec![EVENT_NEW.into()],
                None,
                0,
            )
            .unwrap();
        let new = |group: &str| (EVENT_NEW.to_owned(), group.to_owned());
        // Two crashes of a new group in one batch: one event. A retried upload: none.
        let ids = insert(vec![
            crash("a", "s1", "d1", "r"),
            crash("b", "s1", "d2", "r"),
        ]);
        insert(vec![crash("a", "s1", "d1", "r")]);
        insert(vec![crash("y", "s0", "d1", "r")]);
        assert_eq!(queued(&store), vec![new("g-s1")]);
        // Every crash of g-s1 moves to a new group g-s9 (a late dSYM): g-s1 becomes an
        // alias of g-s9, which inherits its marker; new crashes of either signature fire
        // nothing.
        let changes = ids
            .iter()
            .map(|i| Refiling {
                id: i.id.clone(),
                filing: filing("s9", &[]),
            })
            .collect();
        assert_eq!(store.refile_crashes(changes).unwrap(), 2);
        // Even once g-s9 is empty again (its crashes deleted), its first crash is past.
        for inserted in &ids {
            assert!(rt.block_on(store.delete_crash(&inserted.id)).unwrap());
        }
        assert_eq!(store.group("g-s9").unwrap().unwrap().count, 0);
        insert(vec![
            crash("c", "s1", "d1", "r"),
            crash("d", "s9", "d1", "r"),
        ]);
        assert_eq!(queued(&store), vec![new("g-s1")]);
        // A merge: nothing new either.
        insert(vec![crash("e", "s2", "d1", "r")]);
        let merged = store
            .merge_groups("g-s9".into(), vec!["g-s2".into()], "t".into(), 0)
            .unwrap();
        assert_eq!(merged.unwrap(), "g-s9");
        insert(vec![crash("f", "s2", "d3", "r")]);
        assert_eq!(queued(&store), vec![new("g-s1"), new("g-s2")]);
        // Part of a group moves to a new group: that group's next crash is no first.
        let ids = insert(vec![
            crash("g", "s5", "d1", "r"),
            crash("h", "s5", "d2", "r"),
        ]);
        store
            .refile_crashes(vec![Refiling {
                id: ids[0].id.clone(),
                filing: filing("s6", &[]),
            }])
            .unwrap();
        insert(vec![crash("i", "s6", "d1", "r")]);
        assert_eq!(queued(&store), vec![new("g-s1"), new("g-s2"), new("g-s5")]);
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    #[test]
    fn a_damaged_record_does_not_stop_background_pages() {
        let (_dir, store) = open();
        let rt = runtime();
        rt.block_on(store.insert_crashes(vec![
            crash("a", "s1", "d1", "r"),
            crash("b", "s1", "d1", "r"),
        ]))
        .unwrap();
        rt.block_on(store.execute_for_tests("UPDATE crashes SET record = x'00ff00' WHERE seq = 1"))
            .unwrap();
        let page = store.crashes_needing("dbg-1", None, 10).unwrap();
        assert_eq!(
            page.items.len(),
            1,
            "the damaged one is skipped, the other read"
        );
        assert!(store.records().is_err(), "a read of everything reports it");
    }

    #[test]
    fn a_deleted_record_leaves_neither_file() {
        let (dir, store) = open();
        let rt = runtime();
        // An incompressible record, so its stored bytes are easy to look for.
        let noise: String = (0..64).map(|_| crate::util::random_hex(16)).collect();
        let record = format!(r#"{{"noise":"{noise}"}}"#);
        let new = NewCrash::new(
            "a".into(),
            1,
            None,
            None,
            CrashFacts::default(),
            filing("s1", &[]),
            record.as_bytes(),
        )
        .unwrap();
        let stored_bytes = new.record[100..164].to_vec();
        let id = rt.block_on(store.insert_crashes(vec![new])).unwrap()[0]
            .id
            .clone();
        let contains = |needle: &[u8]| {
            ["crashbox.db", "crashbox.db-wal"].iter().any(|name| {
                std::fs::read(dir.path().join(name))
                    .map(|raw| raw.windows(needle.len()).any(|w| w == needle))
                    .unwrap_or(false)
            })
        };
        assert!(contains(&stored_bytes), "the record is on disk");
        assert!(rt.block_on(store.delete_crash(&id)).unwrap());
        assert!(!contains(&stored_bytes), "the record's bytes are gone");
        assert!(store.crash(&id).unwrap().is_none());
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    #[test]
    fn retention_gives_the_pages_back_to_the_file_system() {
        let (dir, store) = open();
        let rt = runtime();
        let batch: Vec<NewCrash> = (0..300)
            .map(|i| {
                let noise: String = (0..32).map(|_| crate::util::random_hex(16)).collect();
                NewCrash::new(
                    format!("old-{i}"),
                    1_000,
                    None,
                    None,
                    CrashFacts::default(),
                    filing("s1", &[]),
                    noise.as_bytes(),
                )
                .unwrap()
            })
            .collect();
        rt.block_on(store.insert_crashes(batch)).unwrap();
        store.flush().unwrap();
        let size = || std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len();
        let full = size();
        let pruned = std::thread::scope(|s| {
            s.spawn(|| store.prune_crashes_before(time::OffsetDateTime::now_utc()))
                .join()
                .unwrap()
                .unwrap()
        });
        assert_eq!(pruned, 300);
        store.flush().unwrap();
        assert!(
            size() < full / 2,
            "{} bytes after pruning, {full} before",
            size()
        );
        assert_eq!(store.group("g-s1").unwrap().unwrap().count, 0);
        assert_eq!(store.audit().unwrap(), vec![]);
    }

    #[test]
    fn groups_page_by_count_and_last_seen() {
        let (_dir, store) = open();
        let rt = runtime();
        let mut batch = Vec::new();
        for g in 0..5 {
            for n in 0..=g {
                batch.push(crash(&format!("{g}-{n}"), &format!("s{g}"), "d", "r"));
            }
        }
        rt.block_on(store.insert_crashes(batch)).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = store
                .groups(
                    &Default::default(),
                    GroupSort::Count,
                    cursor.as_deref(),
                    2,
                    i64::MAX,
                )
                .unwrap();
            seen.extend(page.items.iter().map(|g| g.count));
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, vec![5, 4, 3, 2, 1]);
        let by_time = store
            .groups(&Default::default(), GroupSort::LastSeen, None, 10, i64::MAX)
            .unwrap();
        assert_eq!(by_time.items.len(), 5);
        let newest = store.crashes_in_group("g-s4", None, 3).unwrap();
        assert_eq!(newest.items.len(), 3);
        let rest = store
            .crashes_in_group("g-s4", newest.next.as_deref(), 3)
            .unwrap();
        assert_eq!(rest.items.len(), 2);
        assert!(newest.items[0].id > rest.items[0].id, "newest first");
    }

    #[test]
    fn backup_copies_a_consistent_database() {
        let (dir, store) = open();
        let rt = runtime();
        rt.block_on(store.insert_crashes(vec![crash("a", "s1", "d1", "r")]))
            .unwrap();
        let to = dir.path().join("copy.db");
        Store::backup(dir.path(), &to).unwrap();
        let restored = tempfile::tempdir().unwrap();
        std::fs::copy(&to, restored.path().join(DB_FILE)).unwrap();
        let copy = Store::open(restored.path()).unwrap();
        assert_eq!(copy.records().unwrap().len(), 1);
        assert_eq!(copy.audit().unwrap(), vec![]);
    }

    #[test]
    fn readiness_needs_a_write_to_commit() {
        let (_dir, store) = open();
        let rt = runtime();
        rt.block_on(store.check()).unwrap();
        // A job that panics is rolled back; the writer lives on.
        let _ = rt.block_on(
            store
                .inner
                .writer
                .write(|_| -> Result<(), StoreError> { panic!("a bug in a write") }),
        );
        rt.block_on(store.check()).unwrap();
        // A database that refuses writes (as a full or read-only disk would) is not ready.
        rt.block_on(store.inner.writer.write(|conn| {
            conn.execute_batch("PRAGMA query_only = ON")?;
            Ok(())
        }))
        .unwrap();
        assert!(rt.block_on(store.check()).is_err());
    }

    fn app_crash(identity: &str, signature: &str, device: &str, release: &str) -> NewCrash {
        NewCrash::new(
            identity.into(),
            1_700_000_000_000,
            Some(hex::encode(device)),
            Some(release.into()),
            CrashFacts {
                app: "com.app".into(),
                ..CrashFacts::default()
            },
            filing(signature, &[]),
            format!(r#"{{"marker":"record of {identity}"}}"#).as_bytes(),
        )
        .unwrap()
    }

    /// An insert submitted without waiting, so the next job joins its batch.
    fn insert_in_flight(
        store: &Store,
        crash: NewCrash,
    ) -> tokio::sync::oneshot::Receiver<Result<Vec<Inserted>, StoreError>> {
        let crashes = vec![crash];
        store.inner.writer.submit_job(
            writer::Priority::Now,
            move |conn| crashes::insert(conn, &crashes, SpikePolicy::default()),
            true,
        )
    }

    #[test]
    fn a_merge_in_the_batch_of_an_insert_moves_its_counters_exactly() {
        // Found in review: the insert's counters waited for the flush while the merge
        // moved its row, so the alias kept counts and the release counted twice.
        let (_dir, store) = open();
        let rt = runtime();
        for i in 0..20 {
            let (a, b) = (format!("a{i}"), format!("b{i}"));
            rt.block_on(store.insert_crashes(vec![
                app_crash(&format!("x{i}"), &a, "d1", "com.app 1.0 (1)"),
                app_crash(&format!("y{i}"), &b, "d2", "com.app 1.0 (1)"),
            ]))
            .unwrap();
            let pending = insert_in_flight(
                &store,
                app_crash(
                    &format!("c{i}"),
                    &a,
                    &format!("dev{i}"),
                    &format!("com.app 2.{i} (1)"),
                ),
            );
            store
                .merge_groups(format!("g-{b}"), vec![format!("g-{a}")], "x".into(), 0)
                .unwrap()
                .unwrap();
            rt.block_on(pending).unwrap().unwrap();
            assert_eq!(store.audit().unwrap(), vec![], "iteration {i}");
            assert_eq!(store.group(&format!("g-{a}")).unwrap().unwrap().count, 0);
        }
    }

    #[test]
    fn a_crash_before_a_resolve_in_one_batch_does_not_regress_it() {
        let (_dir, store) = open();
        let rt = runtime();
        rt.block_on(store.insert_crashes(vec![app_crash("a", "s1", "d1", "com.app 1.0 (1)")]))
            .unwrap();
        let pending = insert_in_flight(&store, app_crash("b", "s1", "d2", "com.app 1.0 (1)"));
        store
            .change_group_state(
                "g-s1".into(),
                StateChange::Resolve {
                    release: None,
                    next: false,
                },
                "x".into(),
                0,
            )
            .unwrap()
            .unwrap();
        rt.block_on(pending).unwrap().unwrap();
        let g = store.group("g-s1").unwrap().unwrap();
        assert_eq!(g.status, "resolved");
        assert_eq!(g.count, 2);
    }

    #[test]
    fn refreshing_trends_recounts_them_from_the_hours() {
        let (_dir, store) = open();
        let rt = runtime();
        let now = unix_ms(time::OffsetDateTime::now_utc());
        let mut crash = app_crash("t1", "s1", "d1", "com.app 1.0 (1)");
        crash.received_ms = now;
        rt.block_on(store.insert_crashes(vec![crash])).unwrap();
        // A trend gone stale (the hour turned) is put right by the refresh.
        rt.block_on(store.execute_for_tests(
            "UPDATE groups SET trend = 99; DELETE FROM meta WHERE key = 'trend_hour';",
        ))
        .unwrap();
        assert!(store.refresh_trends().unwrap());
        assert!(!store.refresh_trends().unwrap(), "once per hour");
        assert_eq!(store.audit().unwrap(), vec![]);
    }
}
