//! The embedded store: the only module that imports sled.
//!
//! sled holds the index; large blobs (debug files, SymCaches) live as plain files under
//! the dsyms dir and are owned by `debug_files`; crash records live in the crash log
//! (`DATA_DIR/crashes/`) and crash identities in their own hash files
//! (`DATA_DIR/identities/`), both owned by [`crashes`]. Records are JSON so that they can grow
//! fields without a migration (crash records deflated); index values are packed binary
//! lists. Keys are plain strings chosen so that prefix
//! scans answer the questions the API asks.
//!
//! Trees and keys:
//! - `debug_files`: `"{debug_id}/{arch}"` → [`DebugFile`]. A prefix scan on
//!   `"{debug_id}/"` lists every arch of one debug id.
//! - `crashes`: crashes, groups, the missing-debug-file list and the re-symbolication
//!   queue; see [`crashes`] for its keys.
//!
//! Crash inserts go through one writer thread, which appends every upload waiting in
//! its queue to the crash log (one write and one fsync: group commit) and answers them:
//! the crash log is the write-ahead log, and the sled writes of those inserts wait in
//! memory until the writer applies them, a few times a second (see [`crashes`]).
//! Other writes (updates, deletes, the re-symbolication queue) are durable through
//! sled: such a write returns a [`Ticket`], and [`Store::durable`] waits until a flush
//! that started after the write has finished. One flusher thread runs flushes back to
//! back, so under load one fsync covers every write that arrived during the previous
//! one.
//!
//! The interface is a handful of methods on [`Store`], with no trait in between, so that
//! a shared backend can later replace this file without touching its callers.

mod crashes;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::debug_files::DebugFile;

pub use crashes::{
    decode_segment, CrashRecord, EncodedCrash, Group, Inserted, MissingDebugFile, NeededDebugFile,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption problem.
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record no longer decodes; the store was written by an incompatible
    /// version or damaged.
    #[error("store: undecodable record under {key}: {source}")]
    Codec {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("store: compression: {0}")]
    Compression(#[source] std::io::Error),
    #[error("store: damaged record under {key}: {problem}")]
    Corrupt { key: String, problem: String },
    /// The disk did not confirm a write in time; the caller must not report success.
    #[error("store: the write was not flushed to disk within {0:?}")]
    NotDurable(Duration),
    /// The crash writer thread failed a batch or is gone.
    #[error("store: crash writer: {0}")]
    Writer(String),
    #[error("store: crash log segment {segment:08x}: {source}")]
    CrashLog {
        segment: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("store: identity index under {path}: {source}")]
    IdentityIndex {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A write waiting to be flushed; see [`Store::durable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

/// State shared with the flusher thread.
struct FlushShared {
    state: Mutex<FlushState>,
    /// Wakes the flusher: a ticket was handed out, or stop.
    wake: Condvar,
    flushed: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct FlushState {
    /// Tickets handed out.
    requested: u64,
    stop: bool,
}

impl FlushShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlushState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Stops the flusher and checkpoint threads when the last `Store` clone goes away, so
/// their handles on the database do not keep it (and its file lock) alive.
struct FlushGuard {
    shared: Arc<FlushShared>,
    /// Dropping it disconnects the checkpoint thread's receiver.
    _stop_checkpoints: std::sync::mpsc::Sender<()>,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.stop = true;
        self.shared.wake.notify_all();
    }
}

fn run_flusher(db: sled::Db, shared: Arc<FlushShared>) {
    let mut flushed = 0u64;
    loop {
        let target = {
            let mut state = shared.lock();
            while state.requested == flushed && !state.stop {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if state.requested == flushed && state.stop {
                return;
            }
            state.requested
        };
        let started = std::time::Instant::now();
        let result = db.flush();
        match result {
            Ok(bytes) => {
                tracing::trace!(
                    bytes,
                    tickets = target - flushed,
                    micros = started.elapsed().as_micros() as u64,
                    "store flushed"
                );
                flushed = target;
                shared.flushed.send_replace(flushed);
            }
            Err(err) => {
                tracing::error!(error = %err, "store flush failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// How often the identity index is made durable: after a kill, at most this long of
/// crashes is indexed again on the next open (about a second per 100k crashes).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Checkpoints every [`CHECKPOINT_EVERY`] until `stop` is disconnected.
fn run_checkpoints(
    db: sled::Db,
    crashes: Arc<crashes::Crashes>,
    stop: std::sync::mpsc::Receiver<()>,
) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY)
    {
        if let Err(err) = crashes.checkpoint(&db) {
            tracing::error!(error = %err, "identity index checkpoint failed; retrying later");
        }
    }
}

/// One upload's crashes on their way to the writer thread.
struct InsertJob {
    crashes: Vec<EncodedCrash>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Inserted>, StoreError>>,
}

/// Applies queued uploads in batches until every `Store` (and so every sender) is gone.
fn run_writer(crashes: Arc<crashes::Crashes>, jobs: std::sync::mpsc::Receiver<InsertJob>) {
    // Bounds one batch, so a flood cannot make one write (and its answers) wait long.
    const MAX_BATCH: usize = 256;
    // After the first upload of a batch arrives, the writer waits this long for more.
    // Every batch costs an fsync of the crash log, so under load this trades a
    // millisecond of latency for several times fewer of them.
    const LINGER: Duration = Duration::from_millis(1);
    let mut settle_in = Duration::ZERO;
    loop {
        let first = match jobs.recv_timeout(settle_in) {
            Ok(first) => first,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                settle_in = crashes.settle_if_due();
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut batch = vec![first];
        let linger_until = std::time::Instant::now() + LINGER;
        while batch.len() < MAX_BATCH {
            let wait = linger_until.saturating_duration_since(std::time::Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (uploads, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|job| (job.crashes, job.reply))
            .unzip();
        tracing::trace!(uploads = uploads.len(), "crash batch");
        match crashes.insert_many(uploads) {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(err) => {
                let message = format!("batch write failed: {err}");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Writer(message.clone())));
                }
            }
        }
        settle_in = crashes.settle_if_due();
    }
    if let Err(err) = crashes.settle() {
        tracing::error!(error = %err, "applying the last inserts to sled failed; the next open replays them");
    }
}

/// Handle to the embedded store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    debug_files: sled::Tree,
    crashes: Arc<crashes::Crashes>,
    writer: std::sync::mpsc::Sender<InsertJob>,
    flush: Arc<FlushShared>,
    _flush_guard: Arc<FlushGuard>,
}

/// How long a request waits for its write to reach the disk before giving up.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which debug files a listing wants.
#[derive(Debug, Default, Clone)]
pub struct DebugFileFilter {
    /// Only files uploaded with this release.
    pub release: Option<String>,
    /// Only files whose name contains this text (case-insensitive).
    pub name: Option<String>,
}

impl Store {
    /// Opens (or creates) the store under `DATA_DIR/db`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            // Flushes are explicit (group commit for crash inserts; updates, deletes and
            // retention flush before they zero dropped records), so the
            // background flusher only needs to mop up.
            .flush_every_ms(Some(1000))
            // sled's page cache defaults to 1 GiB and grows toward it as crashes
            // accumulate. Intake only touches the newest pages and a few counters, so
            // a small cache costs it nothing (same throughput at 8 MiB as at 128 MiB in
            // benches/load) and keeps the server's RSS low. sled's real memory use runs
            // several times this figure (its accounting counts serialized sizes).
            .cache_capacity(8 << 20)
            .open()?;
        let debug_files = db.open_tree("debug_files")?;
        let crashes = Arc::new(crashes::Crashes::open(&db, data_dir)?);
        let flush = Arc::new(FlushShared {
            state: Mutex::new(FlushState::default()),
            wake: Condvar::new(),
            flushed: tokio::sync::watch::channel(0).0,
        });
        let (writer, jobs) = std::sync::mpsc::channel();
        let writer_crashes = crashes.clone();
        std::thread::Builder::new()
            .name("crashbox-writer".into())
            .spawn(move || run_writer(writer_crashes, jobs))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        let thread_db = db.clone();
        let thread_shared = flush.clone();
        std::thread::Builder::new()
            .name("crashbox-flush".into())
            .spawn(move || run_flusher(thread_db, thread_shared))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        let (stop_checkpoints, checkpoints_stopped) = std::sync::mpsc::channel();
        let (thread_db, thread_crashes) = (db.clone(), crashes.clone());
        std::thread::Builder::new()
            .name("crashbox-checkpoint".into())
            .spawn(move || run_checkpoints(thread_db, thread_crashes, checkpoints_stopped))
            .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
        Ok(Store {
            db,
            debug_files,
            crashes,
            writer,
            _flush_guard: Arc::new(FlushGuard {
                shared: flush.clone(),
                _stop_checkpoints: stop_checkpoints,
            }),
            flush,
        })
    }

    /// A ticket for everything written so far; pass it to [`Store::durable`].
    fn ticket(&self) -> Ticket {
        let mut state = self.flush.lock();
        state.requested += 1;
        // Only the flusher waits on `wake`.
        self.flush.wake.notify_one();
        Ticket(state.requested)
    }

    /// Waits until the writes before `ticket` are on disk.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut flushed = self.flush.flushed.subscribe();
        let done = tokio::time::timeout(DURABLE_TIMEOUT, async {
            flushed.wait_for(|&done| done >= ticket.0).await.is_ok()
        })
        .await;
        match done {
            Ok(true) => Ok(()),
            _ => Err(StoreError::NotDurable(DURABLE_TIMEOUT)),
        }
    }

    /// Stores one upload's crashes, skipping any whose identity is already stored.
    /// Durable when it returns: the records are synced to the crash log. Uploads
    /// arriving together share one batch and one fsync.
    pub async fn insert_crashes(
        &self,
        crashes: Vec<EncodedCrash>,
    ) -> Result<Vec<Inserted>, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Writer("the writer thread is gone".into());
        self.writer
            .send(InsertJob { crashes, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub fn crash(&self, id: &str) -> Result<Option<CrashRecord>, StoreError> {
        self.crashes.get(id)
    }

    /// Rewrites one crash (after symbolicating it again), moving its counters.
    pub fn update_crash(
        &self,
        id: &str,
        update: impl FnOnce(&CrashRecord) -> Option<CrashRecord>,
    ) -> Result<Option<CrashRecord>, StoreError> {
        self.crashes.update(id, update)
    }

    /// Deletes one crash and its share of every counter. False when there was none.
    pub fn delete_crash(&self, id: &str) -> Result<(bool, Ticket), StoreError> {
        let deleted = self.crashes.delete(id)?;
        Ok((deleted, self.ticket()))
    }

    /// Crashes that needed `debug_id` and lacked it.
    pub fn crashes_needing(&self, debug_id: &str) -> Result<Vec<String>, StoreError> {
        self.crashes.needing(debug_id)
    }

    /// Crash ids of one group, oldest first.
    pub fn crashes_in_group(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        self.crashes.in_group(group_id)
    }

    /// Deletes the crashes received before `cutoff`, with their share of every counter.
    /// Returns how many.
    pub fn prune_crashes_before(&self, cutoff: time::OffsetDateTime) -> Result<usize, StoreError> {
        self.crashes.prune_before(crashes::unix_millis(cutoff))
    }

    /// Debug ids crashes needed and nobody uploaded, most crashes first.
    pub fn missing_debug_files(&self) -> Result<Vec<MissingDebugFile>, StoreError> {
        self.crashes.missing()
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        self.crashes.group(id)
    }

    pub fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.crashes.groups()
    }

    /// Queues debug ids whose crashes must be symbolicated again. Durable once the
    /// returned ticket is.
    pub fn enqueue_resymbolication(&self, debug_ids: &[String]) -> Result<Ticket, StoreError> {
        self.crashes.enqueue(&self.db, debug_ids)?;
        Ok(self.ticket())
    }

    /// The oldest queued debug id, with the key to [`Store::dequeue_resymbolication`].
    pub fn next_resymbolication(&self) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        self.crashes.next_queued()
    }

    pub fn dequeue_resymbolication(&self, key: &[u8]) -> Result<(), StoreError> {
        self.crashes.dequeue(key)
    }

    /// One debug file by its identity.
    pub fn debug_file(&self, debug_id: &str, arch: &str) -> Result<Option<DebugFile>, StoreError> {
        let key = debug_file_key(debug_id, arch);
        self.debug_files
            .get(key.as_bytes())?
            .map(|raw| decode(&key, &raw))
            .transpose()
    }

    /// Every arch stored for one debug id.
    pub fn debug_files_by_id(&self, debug_id: &str) -> Result<Vec<DebugFile>, StoreError> {
        let prefix = format!("{debug_id}/");
        self.debug_files
            .scan_prefix(prefix.as_bytes())
            .map(|item| {
                let (key, raw) = item?;
                decode(&String::from_utf8_lossy(&key), &raw)
            })
            .collect()
    }

    /// All debug files matching `filter`, newest upload first.
    pub fn list_debug_files(&self, filter: &DebugFileFilter) -> Result<Vec<DebugFile>, StoreError> {
        let name = filter.name.as_deref().map(str::to_lowercase);
        let mut out = Vec::new();
        for item in self.debug_files.iter() {
            let (key, raw) = item?;
            let file: DebugFile = decode(&String::from_utf8_lossy(&key), &raw)?;
            if let Some(release) = &filter.release {
                if !file.releases.iter().any(|r| r == release) {
                    continue;
                }
            }
            if let Some(name) = &name {
                if !file.name.to_lowercase().contains(name) {
                    continue;
                }
            }
            out.push(file);
        }
        out.sort_by(|a, b| {
            b.uploaded_at
                .cmp(&a.uploaded_at)
                .then(a.debug_id.cmp(&b.debug_id))
        });
        Ok(out)
    }

    /// Writes `files` in one atomic batch and makes it durable before returning.
    pub fn put_debug_files(&self, files: &[DebugFile]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for file in files {
            let key = debug_file_key(&file.debug_id, &file.arch);
            let value = serde_json::to_vec(file).map_err(|source| StoreError::Codec {
                key: key.clone(),
                source,
            })?;
            batch.insert(key.as_bytes(), value);
        }
        self.debug_files.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// A cheap read that fails when the store is unusable; backs `/readyz`.
    pub fn check(&self) -> Result<(), StoreError> {
        self.debug_files.first()?;
        Ok(())
    }

    /// Writes everything buffered to disk; called on shutdown.
    /// The checkpoint settles waiting inserts into sled first.
    pub fn flush(&self) -> Result<(), StoreError> {
        if !self.crashes.checkpoint(&self.db)? {
            self.db.flush()?;
        }
        Ok(())
    }
}

fn debug_file_key(debug_id: &str, arch: &str) -> String {
    format!("{debug_id}/{arch}")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|source| StoreError::Codec {
        key: key.to_owned(),
        source,
    })
}
