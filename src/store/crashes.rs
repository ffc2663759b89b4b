//! Stored crashes, their groups and the missing-debug-file list: one sled tree for
//! blocks, indexes and counters, the crash log for the records themselves, and the
//! identity index for retries.
//!
//! Everything in sled about crashes lives in the `crashes` tree under key prefixes, so
//! that one crash's block entry, its index entries and every counter it moves are
//! written in one atomic `sled::Batch`: a kill at any moment leaves the counters
//! matching the crashes. Its record goes to the crash log ([`log`]) first, synced
//! before that batch is applied. Read-modify-write happens under one writer lock;
//! reads take no lock.
//!
//! sled keeps metadata in memory for every page it has ever written, so its RSS grows
//! with the pages it holds (about 100 bytes per crash with a record key and four index
//! keys per crash; 8 bytes per crash with records in blocks of ten; `examples/sled_rss.rs`
//! and benches/README.md). So sled holds no record bytes and no key per crash: crashes
//! received close together share a **block** (up to 256, 18 bytes each), index entries
//! name a block and list slots in it, and the identity (dedup) index is files of its
//! own ([`identities`]). sled's pages then grow by about one per hundred crashes.
//!
//! A crash id is its location: `{block:016x}{slot:04x}`. A block id is the receive time
//! in milliseconds shifted left 16 bits, plus a sequence number, so ids and block keys
//! sort by arrival time and retention drops whole blocks.
//!
//! Keys:
//! - `c/{block:016x}` → crash block: [`BLOCK_MAGIC`] then `[slot u16][segment u32]
//!   [offset u64][len u32]` per crash, slots ascending, naming its record in the crash
//!   log; each record is [`RECORD_MAGIC`] then deflated JSON
//! - `g/{group_id}` → [`Group`]
//! - `gc/{group_id}/{block}`, `r/{release}\0{block}`, `mc/{debug_id}/{block}` → the
//!   slots (u16 BE each) of that block's crashes in the group, release or needing the
//!   debug id
//! - `gd/{group_id}/{device_hash}` → crashes of that device in that group (u64 BE)
//! - `m/{debug_id}` → [`MissingDebugFile`]
//! - `q/{seq u64 BE}` → a debug id whose crashes must be symbolicated again
//! - `n/block` → the last block id handed out (u64 BE), so block ids never repeat
//! - `n/wal` → how far into the crash log sled is ([`LogPosition`])
//!
//! Inserts do not write sled when they are answered. Their records are synced to the
//! crash log, which is also a write-ahead log: each frame names its crash's block and
//! slot. What the batch would write to sled waits in memory ([`Unapplied`]), readable
//! by every read, and goes to sled in one batch every [`SETTLE_AFTER`], with `n/wal`
//! in the same batch. Writing sled a few times a second instead of once per insert
//! batch is what keeps the server's RSS flat (benches/README.md, "intake RSS"). On open,
//! the insert frames past `n/wal` are applied again ([`replay`]). Updates, deletes and
//! retention take what waits with them in their own batch, so they reach sled before
//! they return.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::StoreError;
use crate::report::CrashReport;
use crate::scrub::ScrubSummary;

mod identities;
mod log;

use identities::{Digest, IdentityIndex};
use log::{Appends, CrashLog, FrameKind, FrameTag, LogPosition, LogWriter, RecordRef};

/// A debug file a crash needed and nobody had uploaded when it was symbolicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededDebugFile {
    pub debug_id: String,
    pub name: String,
}

/// One stored crash: the scrubbed report (raw addresses kept, so it can be symbolicated
/// again) and what its last symbolication decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrashRecord {
    /// Where the crash is stored; the store assigns it and fills it in on reads.
    #[serde(skip)]
    pub id: String,
    /// RFC 3339, when crashbox received it.
    pub received_at: String,
    /// Keyed hash naming the report, for de-duplication of retried uploads.
    pub identity: String,
    /// Keyed hash of the device, for counting affected devices.
    pub device_hash: Option<String>,
    pub release: Option<String>,
    pub signature: String,
    pub group_id: String,
    /// Debug ids its frames needed that were missing.
    pub missing: Vec<NeededDebugFile>,
    pub scrub: ScrubSummary,
    pub report: CrashReport,
}

/// All crashes with one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub signature: String,
    pub first_seen: String,
    pub last_seen: String,
    pub count: u64,
    /// Distinct device hashes among its crashes.
    pub devices: u64,
    /// Crashes per release.
    pub releases: BTreeMap<String, u64>,
    pub status: String,
}

/// A debug id crashes reference and nobody uploaded: the "missing dSYM" list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingDebugFile {
    pub debug_id: String,
    /// The image name the reports gave it.
    pub name: String,
    pub crash_count: u64,
    pub releases: BTreeSet<String>,
    pub last_seen: String,
}

/// What storing one crash did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub id: String,
    pub group_id: String,
    pub signature: String,
    /// False when the same report was stored before (a retried upload).
    pub created: bool,
}

/// A block takes crashes received within this long after its first one...
const BLOCK_SPAN_MS: u64 = 60_000;
/// ...up to this many. A block is rewritten whole each time a batch adds to it, and
/// holds 18 bytes per crash (its records are in the crash log), so 256 crashes make a
/// 4.6 KiB value. Fewer, fuller blocks mean fewer sled pages, and sled's memory grows
/// with its pages.
const BLOCK_MAX_CRASHES: usize = 256;

/// How far before the open block's first crash a crash may have been received and still
/// join it.
const BLOCK_SLACK_MS: u64 = 5_000;

/// Maps a crash log failure on `segment` (`u32::MAX`: the log as a whole).
fn log_error(segment: u32) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::CrashLog { segment, source }
}

/// Maps an identity index failure under `dir`.
fn index_error(dir: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::IdentityIndex {
        path: dir.to_owned(),
        source,
    }
}

/// The last block id handed out (u64 BE).
const LAST_BLOCK_KEY: &[u8] = b"n/block";
/// How far into the crash log sled is; written with every batch that settles inserts.
const APPLIED_KEY: &[u8] = b"n/wal";

/// Inserts wait this long at most before their sled writes are applied...
const SETTLE_AFTER: Duration = Duration::from_millis(500);
/// ...or until this many sled keys wait. A batch finding more waiting (sled failing to
/// take them) applies them first or fails, so memory stays bounded.
const MAX_UNAPPLIED: usize = 1 << 16;

/// sled writes of answered inserts, not applied yet: later writes replace earlier ones
/// to the same key, `None` removes. Their records are synced in the crash log.
#[derive(Default)]
struct Unapplied {
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// When the oldest of them was added.
    since: Option<Instant>,
}

impl Unapplied {
    // A panic while holding either guard leaves a map of whole writes: still usable.
    fn read(lock: &RwLock<Self>) -> std::sync::RwLockReadGuard<'_, Self> {
        lock.read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(lock: &RwLock<Self>) -> std::sync::RwLockWriteGuard<'_, Self> {
        lock.write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Whether a batch's sled writes wait with the other inserts' or go to sled now.
enum Apply {
    Later,
    Now,
}

/// The tag of a frame holding the record of the crash at `at`.
fn frame_tag(kind: FrameKind, at: Location) -> FrameTag {
    FrameTag {
        kind,
        block: at.block,
        slot: at.slot,
    }
}

/// Where a crash is stored: a block and a slot in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Location {
    block: u64,
    slot: u16,
}

impl Location {
    fn id(self) -> String {
        format!("{:016x}{:04x}", self.block, self.slot)
    }

    /// The location an id names; `None` for anything that is not a crash id.
    fn parse(id: &str) -> Option<Self> {
        if id.len() != 20 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Location {
            block: u64::from_str_radix(&id[..16], 16).ok()?,
            slot: u16::from_str_radix(&id[16..], 16).ok()?,
        })
    }
}

/// Milliseconds since the Unix epoch (0 before it): the time unit of block ids.
pub(super) fn unix_millis(at: time::OffsetDateTime) -> u64 {
    (at.unix_timestamp_nanos() / 1_000_000).max(0) as u64
}

/// The first block id of a millisecond: block ids sort by receive time.
fn block_at(millis: u64) -> u64 {
    millis << 16
}

fn block_key(block: u64) -> String {
    format!("c/{block:016x}")
}

/// One block's crashes: `(slot, where its record is)`, slots ascending.
type BlockEntries = Vec<(u16, RecordRef)>;

/// Pending writes of one atomic batch, readable before they are applied.
struct Tx<'a> {
    tree: &'a sled::Tree,
    log: &'a CrashLog,
    unapplied: &'a RwLock<Unapplied>,
    /// Records for the crash log, written (and synced) before the sled batch.
    appends: Appends,
    /// Records no block names after this batch; zeroed once it is applied.
    garbage: Vec<RecordRef>,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Blocks read for change; written back (or removed, when empty) on commit.
    blocks: BTreeMap<u64, BlockEntries>,
    /// Identity index changes, applied to its files once the batch is in sled.
    identities: BTreeMap<Digest, IdentityChange>,
}

#[derive(Clone, Copy)]
enum IdentityChange {
    Put(Location),
    Remove(Location),
}

impl<'a> Tx<'a> {
    /// A transaction that only reads.
    fn new(crashes: &'a Crashes) -> Self {
        Self::over(
            &crashes.tree,
            &crashes.log,
            &crashes.unapplied,
            Appends::none(),
        )
    }

    fn writing(crashes: &'a Crashes, writer: &LogWriter) -> Self {
        let appends = Appends::new(writer);
        Self::over(&crashes.tree, &crashes.log, &crashes.unapplied, appends)
    }

    fn over(
        tree: &'a sled::Tree,
        log: &'a CrashLog,
        unapplied: &'a RwLock<Unapplied>,
        appends: Appends,
    ) -> Self {
        Tx {
            tree,
            log,
            unapplied,
            appends,
            garbage: Vec::new(),
            pending: BTreeMap::new(),
            blocks: BTreeMap::new(),
            identities: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(key) {
            Some(value) => Ok(value.clone()),
            None => self.stored(key),
        }
    }

    /// A key's value as stored: waiting in [`Unapplied`], else in sled. sled is read
    /// under the same lock, as settling moves a write from one to the other under it.
    fn stored(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let unapplied = Unapplied::read(self.unapplied);
        match unapplied.writes.get(key) {
            Some(value) => Ok(value.clone()),
            None => Ok(self.tree.get(key)?.map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, key: impl Into<Vec<u8>>, value: Vec<u8>) {
        self.pending.insert(key.into(), Some(value));
    }

    fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.pending.insert(key.into(), None);
    }

    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        self.get(key.as_bytes())?
            .map(|raw| super::decode(key, &raw))
            .transpose()
    }

    fn put_json<T: Serialize>(&mut self, key: String, value: &T) -> Result<(), StoreError> {
        let raw = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            key: key.clone(),
            source,
        })?;
        self.put(key, raw);
        Ok(())
    }

    /// A block's crashes, loaded for change.
    fn block_mut(&mut self, block: u64) -> Result<&mut BlockEntries, StoreError> {
        if !self.blocks.contains_key(&block) {
            let key = block_key(block);
            let entries = match self.stored(key.as_bytes())? {
                Some(raw) => block_entries(&key, &raw)?,
                None => Vec::new(),
            };
            self.blocks.insert(block, entries);
        }
        Ok(self.blocks.get_mut(&block).expect("inserted above"))
    }

    /// Where the record of the crash at `at` is, pending changes included.
    fn record_ref(&self, at: Location) -> Result<Option<RecordRef>, StoreError> {
        let find = |entries: &[(u16, RecordRef)]| {
            entries
                .iter()
                .find(|(slot, _)| *slot == at.slot)
                .map(|(_, record)| *record)
        };
        if let Some(entries) = self.blocks.get(&at.block) {
            return Ok(find(entries));
        }
        let key = block_key(at.block);
        let Some(raw) = self.stored(key.as_bytes())? else {
            return Ok(None);
        };
        Ok(find(&block_entries(&key, &raw)?))
    }

    /// A record's bytes, from this batch's appends or from the crash log.
    fn read(&self, record: RecordRef) -> Result<Vec<u8>, StoreError> {
        match self.appends.get(record) {
            Some(bytes) => Ok(bytes.to_vec()),
            None => self.log.read(record).map_err(log_error(record.segment)),
        }
    }

    fn record(&self, at: Location) -> Result<Option<CrashRecord>, StoreError> {
        self.record_ref(at)?
            .map(|record| decode_located(at, &self.read(record)?))
            .transpose()
    }

    /// The batch's sled writes, blocks encoded.
    fn writes(
        pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        blocks: BTreeMap<u64, BlockEntries>,
    ) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        let mut writes = pending;
        for (block, entries) in blocks {
            let value = (!entries.is_empty()).then(|| encode_block(&entries));
            writes.insert(block_key(block).into_bytes(), value);
        }
        writes
    }

    /// Writes and syncs the batch's records to the crash log, then hands its sled
    /// writes to [`Unapplied`] (`Apply::Later`) or applies them to sled with whatever
    /// waits there (`Apply::Now`), then applies its identity changes to the index.
    /// Returns the records the batch dropped, for [`Crashes::erase`]. An index that
    /// cannot be written takes no more checkpoints and is rebuilt on the next open;
    /// until then a retry of one of these crashes may be stored twice, which beats
    /// failing an upload the log has taken.
    fn commit(self, state: &mut WriterState, apply: Apply) -> Result<Vec<RecordRef>, StoreError> {
        state
            .log
            .append(&self.appends)
            .map_err(log_error(state.log.segment()))?;
        let writes = Self::writes(self.pending, self.blocks);
        match apply {
            Apply::Later => {
                let mut unapplied = Unapplied::write(self.unapplied);
                unapplied.since.get_or_insert_with(Instant::now);
                unapplied.writes.extend(writes);
            }
            Apply::Now => settle(self.tree, self.unapplied, state.log.position(), writes)?,
        }
        let index = &mut state.identities;
        for (digest, change) in self.identities {
            let written = match change {
                IdentityChange::Put(at) => index.insert(&digest, at),
                IdentityChange::Remove(at) => index.remove(&digest, at),
            };
            if let Err(err) = written {
                tracing::error!(error = %err, "identity index write failed; it is rebuilt on restart");
                index.invalidate();
            }
        }
        Ok(self.garbage)
    }
}

/// What only the writer lock touches: the block new crashes go to while it has room,
/// the identity index and the crash log segment being appended to.
struct WriterState {
    open: Option<OpenBlock>,
    identities: IdentityIndex,
    log: LogWriter,
}

#[derive(Clone, Copy)]
struct OpenBlock {
    block: u64,
    first_millis: u64,
    /// Never lower than a slot handed out before, so a deleted crash's id is not reused.
    next_slot: u16,
}

pub(super) struct Crashes {
    tree: sled::Tree,
    log: CrashLog,
    writer: std::sync::Mutex<WriterState>,
    /// Written only under the writer lock; read by every read.
    unapplied: RwLock<Unapplied>,
}

/// Applies what waits in `unapplied` and `extra` (which wins where both write a key:
/// a batch keeps the last write to a key) to sled in one batch that records `position`
/// as applied. If the batch fails, what waited keeps waiting and `extra` is not applied.
fn settle(
    tree: &sled::Tree,
    unapplied: &RwLock<Unapplied>,
    position: LogPosition,
    extra: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Result<(), StoreError> {
    let mut unapplied = Unapplied::write(unapplied);
    if unapplied.writes.is_empty() && extra.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (key, value) in unapplied.writes.iter().chain(extra.iter()) {
        match value {
            Some(value) => batch.insert(key.as_slice(), value.as_slice()),
            None => batch.remove(key.as_slice()),
        }
    }
    batch.insert(APPLIED_KEY, position.encode());
    tree.apply_batch(batch)?;
    unapplied.writes.clear();
    unapplied.since = None;
    Ok(())
}

impl Crashes {
    /// Opens the crashes tree, the crash log under `data_dir/crashes` and the identity
    /// index under `data_dir/identities`, indexing the crashes the index may have missed
    /// (all of them when it is new).
    pub(super) fn open(db: &sled::Db, data_dir: &Path) -> Result<Self, StoreError> {
        let tree = db.open_tree("crashes")?;
        let log_dir = data_dir.join("crashes");
        let (log, log_writer) = CrashLog::open(&log_dir).map_err(log_error(u32::MAX))?;
        let replayed = replay(&tree, &log, log_writer.segment())?;
        if replayed > 0 {
            tracing::info!(
                crashes = replayed,
                "crashes from the crash log applied to sled"
            );
        }
        let identities_dir = &data_dir.join("identities");
        let (mut identities, from) =
            IdentityIndex::open(identities_dir).map_err(index_error(identities_dir))?;
        let started = std::time::Instant::now();
        let indexed = reindex(&tree, &log, &mut identities, from)?;
        if indexed > 0 {
            tracing::info!(
                crashes = indexed,
                millis = started.elapsed().as_millis() as u64,
                "identity index caught up with the crash blocks"
            );
        }
        // Identity buckets of the layout before the index moved out of sled.
        let mut legacy = sled::Batch::default();
        for key in tree.scan_prefix(b"i/").keys() {
            legacy.remove(key?);
        }
        tree.apply_batch(legacy)?;
        Ok(Crashes {
            tree,
            log,
            writer: std::sync::Mutex::new(WriterState {
                open: None,
                identities,
                log: log_writer,
            }),
            unapplied: RwLock::default(),
        })
    }

    /// Applies the sled writes of every answered insert now.
    pub(super) fn settle(&self) -> Result<(), StoreError> {
        let state = self.lock();
        self.settle_locked(&state)
    }

    fn settle_locked(&self, state: &WriterState) -> Result<(), StoreError> {
        settle(
            &self.tree,
            &self.unapplied,
            state.log.position(),
            BTreeMap::new(),
        )
    }

    /// Applies the waiting sled writes if the oldest has waited [`SETTLE_AFTER`]; the
    /// crash writer calls it after each batch and when idle. Returns how long until it
    /// is worth calling again.
    pub(super) fn settle_if_due(&self) -> Duration {
        // Only the writer thread, the caller, adds writes; a settle elsewhere between
        // this look and the lock below leaves nothing or newer writes to apply.
        let since = Unapplied::read(&self.unapplied).since;
        match since {
            Some(since) if since.elapsed() >= SETTLE_AFTER => {
                if let Err(err) = self.settle() {
                    // The inserts are in the crash log; the next try or open applies them.
                    tracing::error!(error = %err, "applying inserts to sled failed; retrying");
                }
                SETTLE_AFTER
            }
            Some(since) => SETTLE_AFTER.saturating_sub(since.elapsed()),
            None => SETTLE_AFTER,
        }
    }

    fn unapplied_len(&self) -> usize {
        Unapplied::read(&self.unapplied).writes.len()
    }

    /// Makes the identity index durable for every crash stored so far, so that the next
    /// open indexes only newer blocks. Returns whether there was anything to do.
    pub(super) fn checkpoint(&self, db: &sled::Db) -> Result<bool, StoreError> {
        let (bound, files, dir) = {
            let mut state = self.lock();
            // The index may name crashes whose blocks wait in memory: sled gets them
            // first, and the flush below makes them durable there.
            self.settle_locked(&state)?;
            let Some(files) = state.identities.take_dirty() else {
                return Ok(false);
            };
            // Crashes in blocks below the bound are in the index now; blocks from it on
            // (the open block, which may still grow, and newer ones) are indexed again.
            let bound = match state.open {
                Some(open) => open.block,
                None => last_block(&self.tree)?.map_or(0, |last| last.saturating_add(1)),
            };
            (bound, files, state.identities.dir().to_owned())
        };
        let synced = (|| {
            // The blocks first: the checkpoint must not claim crashes sled could lose.
            db.flush()?;
            for file in files {
                file.sync_data().map_err(index_error(&dir))?;
            }
            // Under the lock, so that an index write failing meanwhile is seen here.
            let state = self.lock();
            if state.identities.failed() {
                return Ok(());
            }
            IdentityIndex::write_checkpoint(&dir, bound).map_err(index_error(&dir))
        })();
        if synced.is_err() {
            self.lock().identities.mark_dirty();
        }
        synced.map(|()| true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState> {
        // A panic while holding the lock left sled consistent (batches are atomic);
        // the open block is only a hint, so a poisoned lock is still usable.
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert_batch(
        &self,
        state: &mut WriterState,
        uploads: Vec<Vec<EncodedCrash>>,
    ) -> Result<Vec<Vec<Inserted>>, StoreError> {
        let writing = state.log.segment();
        state
            .log
            .roll_if_full(&self.log)
            .map_err(log_error(writing.saturating_add(1)))?;
        if self.unapplied_len() >= MAX_UNAPPLIED {
            self.settle_locked(state)?;
        }
        let mut tx = Tx::writing(self, &state.log);
        let mut open = state.open;
        let mut answers = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let mut out = Vec::with_capacity(upload.len());
            for EncodedCrash {
                mut record,
                encoded,
                received_millis,
            } in upload
            {
                let digest = identity_digest(&record.identity);
                if let Some(at) = find_identity(&tx, &state.identities, &digest)? {
                    // The index may name a crash that is gone (see `identities`), and
                    // a damaged record must not fail the other uploads in this batch.
                    match tx.record(at) {
                        Ok(Some(stored)) if stored.identity == record.identity => {
                            out.push(Inserted {
                                id: at.id(),
                                group_id: stored.group_id,
                                signature: stored.signature,
                                created: false,
                            });
                            continue;
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(error = %err, "a crash the identity index names is unreadable; storing the upload anew")
                        }
                    }
                }
                let at = place(&mut tx, &mut open, received_millis, encoded)?;
                record.id = at.id();
                tx.identities.insert(digest, IdentityChange::Put(at));
                add(&mut tx, &record, at)?;
                out.push(Inserted {
                    id: record.id,
                    group_id: record.group_id,
                    signature: record.signature,
                    created: true,
                });
            }
            answers.push(out);
        }
        let dropped = tx.commit(state, Apply::Later)?;
        debug_assert!(dropped.is_empty(), "inserts drop no records");
        state.open = open;
        Ok(answers)
    }

    /// Stores the records of several uploads in one atomic batch, skipping any whose
    /// identity is already stored (or comes earlier in the same batch). One answer per
    /// upload, in order. A failed batch forgets the open block: if that block is what
    /// cannot be read, the next batch starts a new one.
    pub(super) fn insert_many(
        &self,
        uploads: Vec<Vec<EncodedCrash>>,
    ) -> Result<Vec<Vec<Inserted>>, StoreError> {
        let mut state = self.lock();
        let answers = self.insert_batch(&mut state, uploads);
        if answers.is_err() {
            state.open = None;
        }
        answers
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<CrashRecord>, StoreError> {
        let Some(at) = Location::parse(id) else {
            return Ok(None);
        };
        // A read that races an update may find the old record already zeroed, or one
        // that races retention its segment gone; the block says which by then.
        let tx = Tx::new(self);
        tx.record(at).or_else(|_| tx.record(at))
    }

    /// Replaces a stored crash with what `update` makes of it, moving every counter and
    /// index entry in the same batch. `update` returning `None` leaves it alone.
    pub(super) fn update(
        &self,
        id: &str,
        update: impl FnOnce(&CrashRecord) -> Option<CrashRecord>,
    ) -> Result<Option<CrashRecord>, StoreError> {
        let Some(at) = Location::parse(id) else {
            return Ok(None);
        };
        let mut state = self.lock();
        let mut tx = Tx::writing(self, &state.log);
        let Some(old) = tx.record(at)? else {
            return Ok(None);
        };
        let Some(mut new) = update(&old) else {
            return Ok(None);
        };
        new.id = old.id.clone();
        // A crash keeps the identity it arrived with: it is how retries find it.
        new.identity = old.identity.clone();
        remove(&mut tx, &old, at)?;
        add(&mut tx, &new, at)?;
        let encoded = encode_record(&new)?;
        let record = tx.appends.push(&encoded, frame_tag(FrameKind::Update, at));
        let entries = tx.block_mut(at.block)?;
        if let Some(entry) = entries.iter_mut().find(|(slot, _)| *slot == at.slot) {
            let old = std::mem::replace(&mut entry.1, record);
            tx.garbage.push(old);
        }
        let dropped = tx.commit(&mut state, Apply::Now)?;
        drop(state);
        self.erase(dropped)?;
        Ok(Some(new))
    }

    /// Deletes a crash with its index entries and its share of every counter.
    pub(super) fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let Some(at) = Location::parse(id) else {
            return Ok(false);
        };
        let mut state = self.lock();
        let mut tx = Tx::writing(self, &state.log);
        let Some(old) = tx.record(at)? else {
            return Ok(false);
        };
        remove(&mut tx, &old, at)?;
        remove_identity(&mut tx, &old.identity, at);
        let entries = tx.block_mut(at.block)?;
        if let Some(position) = entries.iter().position(|(slot, _)| *slot == at.slot) {
            let (_, record) = entries.remove(position);
            tx.garbage.push(record);
        }
        let dropped = tx.commit(&mut state, Apply::Now)?;
        drop(state);
        self.erase(dropped)?;
        Ok(true)
    }

    /// Deletes the crash blocks started before `cutoff_millis` (Unix milliseconds), a
    /// block per batch; a block takes crashes for up to [`BLOCK_SPAN_MS`] after its
    /// start, so crashes up to a minute younger than the cutoff may go with it. A block
    /// or record that no longer decodes is past retention too: it is deleted, and
    /// whatever it added to the counters stays. Returns how many crashes went.
    pub(super) fn prune_before(&self, cutoff_millis: u64) -> Result<usize, StoreError> {
        let end = block_key(block_at(cutoff_millis));
        self.settle()?;
        let mut blocks = Vec::new();
        for key in self.tree.range(b"c/".to_vec()..end.into_bytes()).keys() {
            let key = key?;
            match parse_block(&key[2..]) {
                Some(block) => blocks.push(block),
                None => tracing::warn!(
                    key = %String::from_utf8_lossy(&key),
                    "retention skips a crash key that is not a block"
                ),
            }
        }
        let mut pruned = 0;
        let mut dropped = Vec::new();
        for block in blocks {
            let mut state = self.lock();
            let mut tx = Tx::writing(self, &state.log);
            let entries = match tx.block_mut(block) {
                Ok(entries) => std::mem::take(entries),
                Err(err) => {
                    tracing::warn!(error = %err, "retention deletes an unreadable crash block");
                    tx.remove(block_key(block));
                    Vec::new()
                }
            };
            for (slot, record) in &entries {
                let at = Location { block, slot: *slot };
                match tx.read(*record).and_then(|raw| decode_located(at, &raw)) {
                    Ok(old) => {
                        remove(&mut tx, &old, at)?;
                        remove_identity(&mut tx, &old.identity, at);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "retention deletes an unreadable crash")
                    }
                }
                pruned += 1;
            }
            tx.garbage.extend(entries.iter().map(|(_, record)| *record));
            dropped.extend(tx.commit(&mut state, Apply::Now)?);
        }
        // One flush for every block dropped, then the records and the segments go.
        self.erase(dropped)?;
        self.remove_unused_segments()?;
        Ok(pruned)
    }

    /// Zeroes records no block names any more, once sled has the batches that dropped
    /// them on disk: a block a kill brings back must never name zeroed bytes.
    fn erase(&self, dropped: Vec<RecordRef>) -> Result<(), StoreError> {
        if dropped.is_empty() {
            return Ok(());
        }
        self.tree.flush()?;
        if let Err(err) = self.log.erase(&dropped) {
            tracing::warn!(error = %err, "cannot erase dropped crash records");
        }
        Ok(())
    }

    /// Deletes the crash log segments no block names, once sled has the blocks' removal
    /// on disk. The segment being written and newer ones stay: a block written after
    /// the scan may name them.
    fn remove_unused_segments(&self) -> Result<(), StoreError> {
        // Blocks waiting in memory may name any recent segment; once they are in sled,
        // later ones can only name the segment being written or newer ones.
        let writing = {
            let state = self.lock();
            self.settle_locked(&state)?;
            state.log.segment()
        };
        let mut unused: BTreeSet<u32> = self
            .log
            .segments()
            .map_err(log_error(u32::MAX))?
            .into_iter()
            .filter(|&segment| segment < writing)
            .collect();
        if unused.is_empty() {
            return Ok(());
        }
        for item in self.tree.scan_prefix(b"c/") {
            let (key, raw) = item?;
            let key = String::from_utf8_lossy(&key);
            // An unreadable block names nothing that could still be read.
            for (_, record) in block_entries(&key, &raw).unwrap_or_default() {
                unused.remove(&record.segment);
            }
        }
        if unused.is_empty() {
            return Ok(());
        }
        self.tree.flush()?;
        for segment in unused {
            self.log
                .remove_segment(segment)
                .map_err(log_error(segment))?;
        }
        Ok(())
    }

    /// Ids of crashes that needed `debug_id` and did not have it.
    pub(super) fn needing(&self, debug_id: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(&format!("mc/{debug_id}/"))
    }

    /// Ids of crashes in a group, oldest first.
    pub(super) fn in_group(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(&format!("gc/{group_id}/"))
    }

    /// The crashes an index lists under `prefix`: keys end in a block, values hold slots.
    fn ids_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        // Scans read sled alone, so what waits goes there first.
        self.settle()?;
        let mut ids = Vec::new();
        for item in self.tree.scan_prefix(prefix.as_bytes()) {
            let (key, slots) = item?;
            let block = parse_block(&key[prefix.len()..]).ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                problem: "no block in an index key".into(),
            })?;
            ids.extend(
                slots
                    .chunks_exact(2)
                    .map(|s| Location {
                        block,
                        slot: u16::from_be_bytes([s[0], s[1]]),
                    })
                    .map(Location::id),
            );
        }
        Ok(ids)
    }

    pub(super) fn missing(&self) -> Result<Vec<MissingDebugFile>, StoreError> {
        self.settle()?;
        let mut out: Vec<MissingDebugFile> = self
            .tree
            .scan_prefix(b"m/")
            .map(|item| {
                let (key, raw) = item?;
                super::decode(&String::from_utf8_lossy(&key), &raw)
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| {
            b.crash_count
                .cmp(&a.crash_count)
                .then(b.last_seen.cmp(&a.last_seen))
                .then(a.debug_id.cmp(&b.debug_id))
        });
        Ok(out)
    }

    pub(super) fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        Tx::new(self).json(&format!("g/{id}"))
    }

    pub(super) fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.settle()?;
        self.tree
            .scan_prefix(b"g/")
            .map(|item| {
                let (key, raw) = item?;
                super::decode(&String::from_utf8_lossy(&key), &raw)
            })
            .collect()
    }

    /// Appends debug ids to the durable re-symbolication queue.
    pub(super) fn enqueue(&self, db: &sled::Db, debug_ids: &[String]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for debug_id in debug_ids {
            let seq = db.generate_id()?;
            let mut key = b"q/".to_vec();
            key.extend_from_slice(&seq.to_be_bytes());
            batch.insert(key, debug_id.as_bytes());
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }

    /// The oldest queued debug id and its queue key.
    pub(super) fn next_queued(&self) -> Result<Option<(Vec<u8>, String)>, StoreError> {
        Ok(self
            .tree
            .scan_prefix(b"q/")
            .next()
            .transpose()?
            .map(|(key, value)| (key.to_vec(), String::from_utf8_lossy(&value).into_owned())))
    }

    pub(super) fn dequeue(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        Ok(())
    }
}

/// Appends a new crash's record to the crash log and puts it into the open block, or
/// into a new block when the open one is full, too old or from another time (a clock
/// step, or an import of old crashes).
fn place(
    tx: &mut Tx<'_>,
    open: &mut Option<OpenBlock>,
    received_millis: u64,
    encoded: Vec<u8>,
) -> Result<Location, StoreError> {
    // The frame names the crash's location, for replay: find it first.
    let append =
        |tx: &mut Tx<'_>, at: Location| tx.appends.push(&encoded, frame_tag(FrameKind::Insert, at));
    if let Some(current) = open.as_mut() {
        // Uploads reach the writer slightly out of receive order; a crash stamped a
        // moment before the open block's first one still belongs in it.
        let in_span = received_millis + BLOCK_SLACK_MS >= current.first_millis
            && received_millis < current.first_millis + BLOCK_SPAN_MS;
        if in_span {
            let entries = tx.block_mut(current.block)?;
            let fits = !entries.is_empty()
                && entries.len() < BLOCK_MAX_CRASHES
                && current.next_slot < u16::MAX;
            if fits {
                let at = Location {
                    block: current.block,
                    slot: current.next_slot,
                };
                current.next_slot += 1;
                let record = append(tx, at);
                tx.block_mut(at.block)?.push((at.slot, record));
                return Ok(at);
            }
        }
    }
    // Block ids only grow (the last one handed out is stored with every new block), so
    // no id ever names two crashes, even after its block was deleted and the clock
    // stepped back; two blocks in one millisecond take the next sequence number.
    let last = tx.get(LAST_BLOCK_KEY)?.and_then(|raw| parse_u64(&raw));
    let block = match last {
        Some(last) => block_at(received_millis).max(last.saturating_add(1)),
        None => block_at(received_millis),
    };
    tx.put(LAST_BLOCK_KEY, block.to_be_bytes().to_vec());
    let record = append(tx, Location { block, slot: 0 });
    tx.block_mut(block)?.push((0, record));
    *open = Some(OpenBlock {
        block,
        first_millis: received_millis,
        next_slot: 1,
    });
    Ok(Location { block, slot: 0 })
}

fn parse_block(hex: &[u8]) -> Option<u64> {
    let hex = std::str::from_utf8(hex).ok()?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// Leads every crash block.
const BLOCK_MAGIC: &[u8] = b"CBB2";

const BLOCK_ENTRY_LEN: usize = 2 + RecordRef::ENCODED_LEN;

fn encode_block(entries: &[(u16, RecordRef)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_MAGIC.len() + entries.len() * BLOCK_ENTRY_LEN);
    out.extend_from_slice(BLOCK_MAGIC);
    for (slot, record) in entries {
        out.extend_from_slice(&slot.to_be_bytes());
        record.encode(&mut out);
    }
    out
}

/// The `(slot, record)` entries of a stored block.
fn block_entries(key: &str, raw: &[u8]) -> Result<BlockEntries, StoreError> {
    let corrupt = |problem: &str| StoreError::Corrupt {
        key: key.to_owned(),
        problem: problem.to_owned(),
    };
    let rest = raw
        .strip_prefix(BLOCK_MAGIC)
        .ok_or_else(|| corrupt("no block header"))?;
    if rest.len() % BLOCK_ENTRY_LEN != 0 {
        return Err(corrupt("truncated block entry"));
    }
    Ok(rest
        .chunks_exact(BLOCK_ENTRY_LEN)
        .map(|entry| {
            let slot = u16::from_be_bytes([entry[0], entry[1]]);
            (slot, RecordRef::decode(&entry[2..]).expect("whole entry"))
        })
        .collect())
}

/// Decodes every crash record in a crash log segment file's bytes (ids left empty:
/// they live in sled's blocks). For tools and tests that read the store's files.
pub fn decode_segment(raw: &[u8]) -> Result<Vec<CrashRecord>, StoreError> {
    log::segment_records(raw)
        .into_iter()
        .map(|record| decode_record("crash log record", record))
        .collect()
}

/// A record with its stored bytes, encoded by the caller so the writer does not.
pub struct EncodedCrash {
    record: CrashRecord,
    encoded: Vec<u8>,
    received_millis: u64,
}

impl EncodedCrash {
    /// Stored size in bytes.
    pub fn len(&self) -> usize {
        self.encoded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.encoded.is_empty()
    }

    pub fn new(record: CrashRecord) -> Result<Self, StoreError> {
        let encoded = encode_record(&record)?;
        let received = time::OffsetDateTime::parse(
            &record.received_at,
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
        Ok(EncodedCrash {
            record,
            encoded,
            received_millis: unix_millis(received),
        })
    }
}

/// A crash record as stored: [`RECORD_MAGIC`] then deflated JSON. The id is not stored:
/// it is the record's location.
fn encode_record(record: &CrashRecord) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(record).map_err(|source| StoreError::Codec {
        key: format!("crash {}", record.id),
        source,
    })?;
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(&json).map_err(StoreError::Compression)?;
    let mut value = RECORD_MAGIC.to_vec();
    value.extend(encoder.finish().map_err(StoreError::Compression)?);
    Ok(value)
}

/// Leads every compressed crash record, so a future format can be told apart.
const RECORD_MAGIC: &[u8] = b"CBZ1";

fn decode_located(at: Location, raw: &[u8]) -> Result<CrashRecord, StoreError> {
    let mut record = decode_record(&format!("crash {}", at.id()), raw)?;
    record.id = at.id();
    Ok(record)
}

fn decode_record(key: &str, raw: &[u8]) -> Result<CrashRecord, StoreError> {
    let body = raw
        .strip_prefix(RECORD_MAGIC)
        .ok_or_else(|| StoreError::Corrupt {
            key: key.to_owned(),
            problem: "no record header".into(),
        })?;
    let mut json = Vec::with_capacity(body.len() * 4);
    flate2::read::DeflateDecoder::new(body)
        .read_to_end(&mut json)
        .map_err(StoreError::Compression)?;
    super::decode(key, &json)
}

fn identity_digest(identity: &str) -> Digest {
    Sha256::digest(identity.as_bytes())[..16]
        .try_into()
        .expect("16 bytes")
}

/// Where the crash with this identity is stored, if anywhere, pending changes included.
fn find_identity(
    tx: &Tx<'_>,
    index: &IdentityIndex,
    digest: &Digest,
) -> Result<Option<Location>, StoreError> {
    let stored = || index.find(digest).map_err(index_error(index.dir()));
    match tx.identities.get(digest) {
        Some(IdentityChange::Put(at)) => Ok(Some(*at)),
        Some(IdentityChange::Remove(gone)) => Ok(stored()?.filter(|at| at != gone)),
        None => stored(),
    }
}

fn remove_identity(tx: &mut Tx<'_>, identity: &str, at: Location) {
    tx.identities
        .insert(identity_digest(identity), IdentityChange::Remove(at));
}

fn parse_u64(raw: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(raw).ok().map(u64::from_be_bytes)
}

fn last_block(tree: &sled::Tree) -> Result<Option<u64>, StoreError> {
    Ok(tree.get(LAST_BLOCK_KEY)?.and_then(|raw| parse_u64(&raw)))
}

/// Puts every crash in blocks from `from` on into the identity index. A block or record
/// that does not decode is skipped: it cannot be found by identity, nor read.
fn reindex(
    tree: &sled::Tree,
    log: &CrashLog,
    index: &mut IdentityIndex,
    from: u64,
) -> Result<usize, StoreError> {
    let nothing_waits = RwLock::new(Unapplied::default());
    let tx = Tx::over(tree, log, &nothing_waits, Appends::none());
    let mut indexed = 0;
    for item in tree.range(block_key(from).into_bytes()..b"c0".to_vec()) {
        let (key, raw) = item?;
        let Some(block) = parse_block(&key[2..]) else {
            continue;
        };
        let key = block_key(block);
        let entries = match block_entries(&key, &raw) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::warn!(error = %err, "identity index skips an unreadable crash block");
                continue;
            }
        };
        for (slot, record) in entries {
            let at = Location { block, slot };
            match tx.read(record).and_then(|raw| decode_located(at, &raw)) {
                Ok(record) => {
                    index
                        .insert(&identity_digest(&record.identity), at)
                        .map_err(index_error(index.dir()))?;
                    indexed += 1;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "identity index skips an unreadable crash")
                }
            }
        }
    }
    Ok(indexed)
}

/// Applies to sled the inserts the crash log holds past `n/wal`: answered, but killed
/// before their sled writes were applied. Then records every segment before
/// `writing` (the one this process writes to) as applied. Returns how many crashes.
fn replay(tree: &sled::Tree, log: &CrashLog, writing: u32) -> Result<usize, StoreError> {
    let applied_from_now = LogPosition {
        segment: writing,
        offset: 0,
    };
    let from = match tree.get(APPLIED_KEY)? {
        Some(raw) => LogPosition::decode(&raw).ok_or_else(|| StoreError::Corrupt {
            key: String::from_utf8_lossy(APPLIED_KEY).into_owned(),
            problem: "not a crash log position".into(),
        })?,
        // A new store, or one from before the log was a write-ahead log, when every
        // batch reached sled before it was answered: nothing to replay.
        None => applied_from_now,
    };
    let frames = log
        .frames_after(from, writing)
        .map_err(log_error(from.segment))?;
    let nothing_waits = RwLock::new(Unapplied::default());
    let mut tx = Tx::over(tree, log, &nothing_waits, Appends::none());
    // Damage in sled (a block or counter that no longer decodes) costs that crash, not
    // the start of the server; an I/O error still stops it.
    let skip = |err: StoreError| match err {
        StoreError::Sled(_) => Err(err),
        err => {
            tracing::warn!(error = %err, "crash log replay skips a crash sled cannot take");
            Ok(())
        }
    };
    let mut last = last_block(tree)?;
    let mut replayed = 0;
    for log::Frame { tag, record, bytes } in frames {
        if tag.kind != FrameKind::Insert {
            continue;
        }
        let at = Location {
            block: tag.block,
            slot: tag.slot,
        };
        let crash = match decode_located(at, &bytes) {
            Ok(crash) => crash,
            Err(err) => {
                tracing::warn!(error = %err, "crash log replay skips an undecodable record");
                continue;
            }
        };
        let entries = match tx.block_mut(at.block) {
            Ok(entries) => entries,
            Err(err) => {
                skip(err)?;
                continue;
            }
        };
        let position = entries.partition_point(|(slot, _)| *slot < at.slot);
        if entries
            .get(position)
            .is_some_and(|(slot, _)| *slot == at.slot)
        {
            continue;
        }
        if let Err(err) = add(&mut tx, &crash, at) {
            skip(err)?;
            continue;
        }
        tx.block_mut(at.block)?.insert(position, (at.slot, record));
        last = Some(last.map_or(at.block, |last| last.max(at.block)));
        replayed += 1;
    }
    if let Some(last) = last {
        tx.put(LAST_BLOCK_KEY, last.to_be_bytes().to_vec());
    }
    // Written even with nothing replayed, so the next open starts from this process's
    // segment.
    tx.put(APPLIED_KEY, applied_from_now.encode());
    let writes = Tx::writes(tx.pending, tx.blocks);
    settle(tree, &nothing_waits, applied_from_now, writes)?;
    tree.flush()?;
    Ok(replayed)
}

/// Index keys end in the block; the value lists slots.
fn index_key(prefix: String, block: u64) -> String {
    format!("{prefix}{block:016x}")
}

fn add_slot(tx: &mut Tx<'_>, key: String, slot: u16) -> Result<(), StoreError> {
    let mut slots = tx.get(key.as_bytes())?.unwrap_or_default();
    let position = slots
        .chunks_exact(2)
        .position(|s| u16::from_be_bytes([s[0], s[1]]) >= slot)
        .unwrap_or(slots.len() / 2);
    let at = position * 2;
    if slots.get(at..at + 2) != Some(&slot.to_be_bytes()[..]) {
        slots.splice(at..at, slot.to_be_bytes());
    }
    tx.put(key, slots);
    Ok(())
}

fn remove_slot(tx: &mut Tx<'_>, key: String, slot: u16) -> Result<(), StoreError> {
    let Some(mut slots) = tx.get(key.as_bytes())? else {
        return Ok(());
    };
    if let Some(position) = slots
        .chunks_exact(2)
        .position(|s| u16::from_be_bytes([s[0], s[1]]) == slot)
    {
        slots.drain(position * 2..position * 2 + 2);
    }
    if slots.is_empty() {
        tx.remove(key);
    } else {
        tx.put(key, slots);
    }
    Ok(())
}

fn release_prefix(release: &str) -> String {
    format!("r/{release}\0")
}

/// Adds a record's share to groups, devices, releases and the missing list.
fn add(tx: &mut Tx<'_>, record: &CrashRecord, at: Location) -> Result<(), StoreError> {
    let group_key = format!("g/{}", record.group_id);
    let mut group: Group = tx.json(&group_key)?.unwrap_or_else(|| Group {
        id: record.group_id.clone(),
        signature: record.signature.clone(),
        first_seen: record.received_at.clone(),
        last_seen: record.received_at.clone(),
        count: 0,
        devices: 0,
        releases: BTreeMap::new(),
        status: "unresolved".into(),
    });
    group.count += 1;
    if record.received_at < group.first_seen {
        group.first_seen = record.received_at.clone();
    }
    if record.received_at > group.last_seen {
        group.last_seen = record.received_at.clone();
    }
    if let Some(release) = &record.release {
        *group.releases.entry(release.clone()).or_default() += 1;
        add_slot(tx, index_key(release_prefix(release), at.block), at.slot)?;
    }
    if let Some(device) = &record.device_hash {
        let key = format!("gd/{}/{device}", record.group_id);
        let n = read_u64(tx, &key)?;
        if n == 0 {
            group.devices += 1;
        }
        tx.put(key, (n + 1).to_be_bytes().to_vec());
    }
    tx.put_json(group_key, &group)?;
    let group_index = index_key(format!("gc/{}/", record.group_id), at.block);
    add_slot(tx, group_index, at.slot)?;

    for needed in &record.missing {
        let key = format!("m/{}", needed.debug_id);
        let mut missing: MissingDebugFile = tx.json(&key)?.unwrap_or_else(|| MissingDebugFile {
            debug_id: needed.debug_id.clone(),
            name: needed.name.clone(),
            crash_count: 0,
            releases: BTreeSet::new(),
            last_seen: record.received_at.clone(),
        });
        missing.crash_count += 1;
        if let Some(release) = &record.release {
            missing.releases.insert(release.clone());
        }
        if record.received_at > missing.last_seen {
            missing.last_seen = record.received_at.clone();
        }
        tx.put_json(key, &missing)?;
        let needing = index_key(format!("mc/{}/", needed.debug_id), at.block);
        add_slot(tx, needing, at.slot)?;
    }
    Ok(())
}

/// Takes a record's share back out: the inverse of [`add`].
fn remove(tx: &mut Tx<'_>, record: &CrashRecord, at: Location) -> Result<(), StoreError> {
    let group_key = format!("g/{}", record.group_id);
    if let Some(mut group) = tx.json::<Group>(&group_key)? {
        group.count = group.count.saturating_sub(1);
        if let Some(release) = &record.release {
            if let Some(n) = group.releases.get_mut(release) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    group.releases.remove(release);
                }
            }
        }
        if let Some(device) = &record.device_hash {
            let key = format!("gd/{}/{device}", record.group_id);
            let n = read_u64(tx, &key)?;
            if n <= 1 {
                tx.remove(key);
                group.devices = group.devices.saturating_sub(1);
            } else {
                tx.put(key, (n - 1).to_be_bytes().to_vec());
            }
        }
        if group.count == 0 {
            tx.remove(group_key);
        } else {
            tx.put_json(group_key, &group)?;
        }
    }
    if let Some(release) = &record.release {
        remove_slot(tx, index_key(release_prefix(release), at.block), at.slot)?;
    }
    let group_index = index_key(format!("gc/{}/", record.group_id), at.block);
    remove_slot(tx, group_index, at.slot)?;
    for needed in &record.missing {
        let key = format!("m/{}", needed.debug_id);
        if let Some(mut missing) = tx.json::<MissingDebugFile>(&key)? {
            missing.crash_count = missing.crash_count.saturating_sub(1);
            if missing.crash_count == 0 {
                tx.remove(key);
            } else {
                tx.put_json(key, &missing)?;
            }
        }
        let needing = index_key(format!("mc/{}/", needed.debug_id), at.block);
        remove_slot(tx, needing, at.slot)?;
    }
    Ok(())
}

fn read_u64(tx: &Tx<'_>, key: &str) -> Result<u64, StoreError> {
    Ok(tx
        .get(key.as_bytes())?
        .and_then(|raw| parse_u64(&raw))
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(identity: &str, group: &str, received_at: &str) -> CrashRecord {
        let report = crate::report::parse(
            br#"{"crashbox":1,"app":{"name":"App","version":"1.0","build":"1"},
                "threads":[{"crashed":true,"frames":["0x1010"]}]}"#,
            &crate::report::ParseLimits::default(),
        )
        .unwrap()
        .remove(0);
        CrashRecord {
            id: String::new(),
            received_at: received_at.into(),
            identity: identity.into(),
            device_hash: Some(format!("device-of-{identity}")),
            release: Some("App 1.0 (1)".into()),
            signature: format!("sig {group}"),
            group_id: group.into(),
            missing: vec![NeededDebugFile {
                debug_id: "dbg".into(),
                name: "App".into(),
            }],
            scrub: ScrubSummary::default(),
            report,
        }
    }

    fn open() -> (tempfile::TempDir, Crashes) {
        let dir = tempfile::tempdir().unwrap();
        let (_, crashes) = open_in(dir.path());
        (dir, crashes)
    }

    fn open_in(dir: &Path) -> (sled::Db, Crashes) {
        let db = sled::open(dir.join("db")).unwrap();
        let crashes = Crashes::open(&db, dir).unwrap();
        (db, crashes)
    }

    fn insert(crashes: &Crashes, records: Vec<CrashRecord>) -> Vec<Inserted> {
        let upload = records
            .into_iter()
            .map(|r| EncodedCrash::new(r).unwrap())
            .collect();
        crashes.insert_many(vec![upload]).unwrap().remove(0)
    }

    const T0: &str = "2026-11-25T10:00:00Z";

    /// How many crashes sled's copy of the block holding `id` lists.
    fn in_sled(crashes: &Crashes, id: &str) -> usize {
        let at = Location::parse(id).unwrap();
        let raw = crashes.tree.get(block_key(at.block)).unwrap().unwrap();
        block_entries("block", &raw).unwrap().len()
    }

    #[test]
    fn ids_name_locations_and_sort_by_time() {
        let at = Location {
            block: block_at(1_700_000_000_000) + 3,
            slot: 7,
        };
        assert_eq!(Location::parse(&at.id()), Some(at));
        assert_eq!(at.id().len(), 20);
        let later = Location {
            block: block_at(1_700_000_000_001),
            slot: 0,
        };
        assert!(at.id() < later.id());
        for bad in [
            "",
            "../etc",
            "zzzzzzzzzzzzzzzzzzzz",
            "0123456789abcdef01234",
        ] {
            assert_eq!(Location::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn crashes_share_blocks_and_index_keys() {
        let (_dir, crashes) = open();
        let records = (0..300)
            .map(|i| record(&format!("id{i}"), "g1", T0))
            .collect();
        let inserted = insert(&crashes, records);
        assert!(inserted.iter().all(|i| i.created));
        // The blocks wait in memory until settled.
        assert_eq!(crashes.tree.scan_prefix(b"c/").count(), 0);
        crashes.settle().unwrap();
        let blocks = crashes.tree.scan_prefix(b"c/").count();
        assert_eq!(
            blocks, 2,
            "300 crashes fill a block of 256 and start another"
        );
        assert_eq!(crashes.tree.scan_prefix(b"gc/").count(), blocks);
        let ids: Vec<String> = inserted.iter().map(|i| i.id.clone()).collect();
        assert_eq!(crashes.in_group("g1").unwrap(), ids);
        assert_eq!(crashes.needing("dbg").unwrap(), ids);
        for (i, id) in ids.iter().enumerate() {
            let stored = crashes.get(id).unwrap().unwrap();
            assert_eq!(&stored.id, id);
            assert_eq!(stored.identity, format!("id{i}"));
        }
        let group = crashes.group("g1").unwrap().unwrap();
        assert_eq!((group.count, group.devices), (300, 300));
    }

    fn segment_records(dir: &Path) -> Vec<CrashRecord> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir.join("crashes")).unwrap() {
            out.extend(decode_segment(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap());
        }
        out
    }

    #[test]
    fn the_crash_log_keeps_only_records_a_block_names() {
        let dir = tempfile::tempdir().unwrap();
        let (_db, crashes) = open_in(dir.path());
        let old = insert(&crashes, vec![record("old", "g", "2026-08-01T00:00:00Z")]).remove(0);
        let ids: Vec<String> = insert(&crashes, vec![record("a", "g", T0), record("b", "g", T0)])
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(segment_records(dir.path()).len(), 3);
        // An update appends the new record and zeroes the old one.
        crashes
            .update(&ids[0], |r| {
                Some(CrashRecord {
                    signature: "new sig".into(),
                    ..r.clone()
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(crashes.get(&ids[0]).unwrap().unwrap().signature, "new sig");
        let stored = segment_records(dir.path());
        assert_eq!(stored.len(), 3);
        assert_eq!(
            stored.iter().filter(|r| r.signature == "new sig").count(),
            1
        );
        // A delete zeroes it.
        assert!(crashes.delete(&ids[1]).unwrap());
        assert!(!segment_records(dir.path())
            .iter()
            .any(|r| r.identity == "b"));

        // A restart starts a new segment; retention deletes the one no block names.
        drop((_db, crashes));
        let (_db, crashes) = open_in(dir.path());
        let new = insert(&crashes, vec![record("new", "g", T0)]).remove(0);
        assert!(crashes
            .update(&ids[0], |r| Some(CrashRecord {
                signature: "newer sig".into(),
                ..r.clone()
            }))
            .unwrap()
            .is_some());
        drop((_db, crashes));
        let (_db, crashes) = open_in(dir.path());
        let segments = || {
            std::fs::read_dir(dir.path().join("crashes"))
                .unwrap()
                .count()
        };
        assert_eq!(segments(), 3);
        let cutoff = time::macros::datetime!(2026-09-01 00:00 UTC);
        let millis = (cutoff.unix_timestamp_nanos() / 1_000_000) as u64;
        assert_eq!(crashes.prune_before(millis).unwrap(), 1);
        assert!(crashes.get(&old.id).unwrap().is_none());
        assert_eq!(
            segments(),
            2,
            "the first segment held only old and replaced records"
        );
        assert_eq!(
            crashes.get(&ids[0]).unwrap().unwrap().signature,
            "newer sig"
        );
        assert!(crashes.get(&new.id).unwrap().is_some());
    }

    #[test]
    fn a_later_crash_joins_the_open_block_and_a_distant_one_starts_another() {
        let (_dir, crashes) = open();
        let a = insert(&crashes, vec![record("a", "g", T0)]).remove(0);
        let b = insert(&crashes, vec![record("b", "g", "2026-11-25T10:00:30Z")]).remove(0);
        let c = insert(&crashes, vec![record("c", "g", "2026-11-25T10:05:00Z")]).remove(0);
        assert_eq!(a.id[..16], b.id[..16]);
        assert_ne!(b.id[..16], c.id[..16]);
        assert!(a.id < b.id && b.id < c.id);
        // Deleting the newest crash of the open block does not free its id.
        assert!(crashes.delete(&b.id).unwrap());
        let d = insert(&crashes, vec![record("d", "g", "2026-11-25T10:05:01Z")]).remove(0);
        assert!(d.id > c.id);
    }

    #[test]
    fn duplicates_are_found_in_the_store_and_in_the_same_batch() {
        let (_dir, crashes) = open();
        let first = insert(&crashes, vec![record("x", "g", T0)]).remove(0);
        let again = insert(&crashes, vec![record("x", "g", T0), record("y", "g", T0)]);
        assert_eq!(again[0].id, first.id);
        assert!(!again[0].created);
        assert!(again[1].created);
        let batch = crashes
            .insert_many(vec![
                vec![EncodedCrash::new(record("z", "g", T0)).unwrap()],
                vec![EncodedCrash::new(record("z", "g", T0)).unwrap()],
            ])
            .unwrap();
        assert!(batch[0][0].created);
        assert!(!batch[1][0].created);
        assert_eq!(batch[0][0].id, batch[1][0].id);
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 3);
    }

    #[test]
    fn answered_inserts_are_read_before_sled_has_them_and_replayed_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let ids = {
            let (_db, crashes) = open_in(dir.path());
            let settled = insert(&crashes, vec![record("a", "g", T0)]).remove(0);
            crashes.settle().unwrap();
            let waiting = insert(&crashes, vec![record("b", "g", T0), record("c", "h", T0)]);
            assert_eq!(in_sled(&crashes, &settled.id), 1, "b and c wait in memory");
            // Every read sees them: by id, counters, and a retry.
            assert_eq!(crashes.get(&waiting[1].id).unwrap().unwrap().identity, "c");
            assert_eq!(crashes.group("g").unwrap().unwrap().count, 2);
            let retry = insert(&crashes, vec![record("b", "g", T0)]).remove(0);
            assert!(!retry.created);
            assert_eq!(retry.id, waiting[0].id);
            let ids = vec![
                settled.id.clone(),
                waiting[0].id.clone(),
                waiting[1].id.clone(),
            ];
            // Killed here: dropped without settling, so sled never got b and c.
            ids
        };
        let (_db, crashes) = open_in(dir.path());
        assert_eq!(in_sled(&crashes, &ids[0]), 3, "replayed");
        assert_eq!(crashes.in_group("g").unwrap(), ids[..2].to_vec());
        assert_eq!(crashes.in_group("h").unwrap(), ids[2..].to_vec());
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 2);
        assert_eq!(crashes.needing("dbg").unwrap(), ids);
        for (identity, id) in ["a", "b", "c"].into_iter().zip(&ids) {
            assert_eq!(&crashes.get(id).unwrap().unwrap().identity, identity);
            let retry = insert(&crashes, vec![record(identity, "g", T0)]).remove(0);
            assert!(!retry.created, "{identity}");
        }
        // Replayed once: a second open finds nothing more to apply.
        drop(crashes);
        drop(_db);
        let (_db, crashes) = open_in(dir.path());
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 2);
        let fresh = insert(&crashes, vec![record("d", "g", T0)]).remove(0);
        assert!(fresh.created);
        assert!(
            !ids.contains(&fresh.id),
            "block ids move past replayed ones"
        );
    }

    #[test]
    fn replay_skips_a_crash_whose_block_is_damaged_and_the_store_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (block, kept) = {
            let (_db, crashes) = open_in(dir.path());
            let a = insert(&crashes, vec![record("a", "g", T0)]).remove(0);
            crashes.settle().unwrap();
            // b joins a's block and waits; c waits in a block of its own.
            insert(&crashes, vec![record("b", "g", T0)]);
            let c = insert(&crashes, vec![record("c", "g", "2026-11-25T12:00:00Z")]).remove(0);
            (Location::parse(&a.id).unwrap().block, c.id)
        };
        {
            let db = sled::open(dir.path().join("db")).unwrap();
            let tree = db.open_tree("crashes").unwrap();
            tree.insert(block_key(block), b"damaged".to_vec()).unwrap();
            db.flush().unwrap();
        }
        let (_db, crashes) = open_in(dir.path());
        assert_eq!(crashes.get(&kept).unwrap().unwrap().identity, "c");
        // a's counts stay; b was skipped; c was replayed.
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 2);
    }

    #[test]
    fn updates_and_deletes_take_waiting_inserts_to_sled_with_them() {
        let (_dir, crashes) = open();
        let inserted = insert(&crashes, vec![record("a", "g", T0), record("b", "g", T0)]);
        crashes
            .update(&inserted[0].id, |r| {
                Some(CrashRecord {
                    signature: "new sig".into(),
                    ..r.clone()
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(in_sled(&crashes, &inserted[1].id), 2);
        assert_eq!(crashes.unapplied_len(), 0);
        assert!(crashes.delete(&inserted[1].id).unwrap());
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 1);
        assert_eq!(
            crashes.get(&inserted[0].id).unwrap().unwrap().signature,
            "new sig"
        );
    }

    #[test]
    fn a_retry_after_a_restart_is_still_a_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let (db, crashes) = open_in(dir.path());
            let first = insert(&crashes, vec![record("r", "g", T0)]).remove(0);
            db.flush().unwrap();
            first
        };
        // Killed before any checkpoint: the index is rebuilt from the blocks.
        let (db, crashes) = open_in(dir.path());
        // The open block is forgotten: a new crash starts a block of its own.
        let again = insert(
            &crashes,
            vec![
                record("r", "g", T0),
                record("s", "g", "2026-11-25T10:00:01Z"),
            ],
        );
        assert_eq!(again[0].id, first.id);
        assert!(!again[0].created);
        assert!(again[1].created);
        assert_ne!(again[1].id[..16], first.id[..16]);
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 2);

        // A checkpoint, then more crashes in the open block and in a later one.
        assert!(crashes.checkpoint(&db).unwrap());
        assert!(!crashes.checkpoint(&db).unwrap(), "nothing new to sync");
        let later = insert(
            &crashes,
            vec![
                record("t", "g", "2026-11-25T10:00:02Z"),
                record("u", "g", "2026-11-25T11:00:00Z"),
            ],
        );
        db.flush().unwrap();
        drop((db, crashes));
        let (_db, crashes) = open_in(dir.path());
        for (identity, id) in [
            ("r", &first.id),
            ("s", &again[1].id),
            ("t", &later[0].id),
            ("u", &later[1].id),
        ] {
            let retry = insert(&crashes, vec![record(identity, "g", T0)]).remove(0);
            assert!(!retry.created, "{identity}");
            assert_eq!(&retry.id, id);
        }
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 4);
    }

    #[test]
    fn update_and_delete_move_counters_and_index_entries() {
        let (_dir, crashes) = open();
        let ids: Vec<String> = insert(
            &crashes,
            vec![record("a", "old", T0), record("b", "old", T0)],
        )
        .into_iter()
        .map(|i| i.id)
        .collect();
        let moved = crashes
            .update(&ids[0], |r| {
                Some(CrashRecord {
                    group_id: "new".into(),
                    signature: "sig new".into(),
                    missing: Vec::new(),
                    ..r.clone()
                })
            })
            .unwrap()
            .unwrap();
        assert_eq!(moved.id, ids[0]);
        assert_eq!(crashes.get(&ids[0]).unwrap().unwrap().group_id, "new");
        assert_eq!(crashes.in_group("old").unwrap(), vec![ids[1].clone()]);
        assert_eq!(crashes.in_group("new").unwrap(), vec![ids[0].clone()]);
        assert_eq!(crashes.needing("dbg").unwrap(), vec![ids[1].clone()]);
        assert_eq!(crashes.missing().unwrap()[0].crash_count, 1);

        assert!(crashes.delete(&ids[1]).unwrap());
        assert!(!crashes.delete(&ids[1]).unwrap());
        assert!(crashes.get(&ids[1]).unwrap().is_none());
        assert!(crashes.group("old").unwrap().is_none());
        assert!(crashes.missing().unwrap().is_empty());
        assert!(crashes.tree.scan_prefix(b"mc/").next().is_none());
        // Its identity is free again: the same report is a new crash now.
        assert!(insert(&crashes, vec![record("b", "old", T0)])[0].created);
    }

    #[test]
    fn pruning_drops_whole_blocks_and_their_share() {
        let (_dir, crashes) = open();
        insert(&crashes, vec![record("old1", "g", "2026-08-01T00:00:00Z")]);
        insert(&crashes, vec![record("old2", "g", "2026-08-01T00:00:10Z")]);
        let kept = insert(&crashes, vec![record("new", "g", T0)]).remove(0);
        let cutoff = time::macros::datetime!(2026-09-01 00:00 UTC);
        let millis = (cutoff.unix_timestamp_nanos() / 1_000_000) as u64;
        assert_eq!(crashes.prune_before(millis).unwrap(), 2);
        assert_eq!(crashes.prune_before(millis).unwrap(), 0);
        assert_eq!(crashes.in_group("g").unwrap(), vec![kept.id.clone()]);
        assert_eq!(crashes.group("g").unwrap().unwrap().count, 1);
        assert_eq!(crashes.tree.scan_prefix(b"gd/").count(), 1);
        let index = &crashes.lock().identities;
        assert_eq!(index.find(&identity_digest("old1")).unwrap(), None);
        let kept_at = Location::parse(&kept.id);
        assert_eq!(index.find(&identity_digest("new")).unwrap(), kept_at);
    }

    #[test]
    fn ids_are_never_reused_and_late_arrivals_join_the_open_block() {
        let (_dir, crashes) = open();
        let a = insert(&crashes, vec![record("a", "g", "2026-11-25T10:00:05Z")]).remove(0);
        // Stamped before the open block started (uploads race to the writer).
        let b = insert(&crashes, vec![record("b", "g", T0)]).remove(0);
        assert_eq!(a.id[..16], b.id[..16]);
        assert!(crashes.delete(&a.id).unwrap() && crashes.delete(&b.id).unwrap());
        assert_eq!(crashes.tree.scan_prefix(b"c/").count(), 0);
        // The clock stepped back to the same millisecond: still a new id.
        let c = insert(&crashes, vec![record("c", "g", "2026-11-25T10:00:05Z")]).remove(0);
        assert!(c.id > b.id, "{} after {}", c.id, b.id);
    }

    #[test]
    fn stale_index_entries_and_damaged_blocks_do_not_stop_intake_or_retention() {
        let dir = tempfile::tempdir().unwrap();
        let (db, crashes) = open_in(dir.path());
        // Identity buckets of the old layout go on open.
        db.open_tree("crashes")
            .unwrap()
            .insert("i/0001", &b"old"[..])
            .unwrap();
        drop((db, crashes));
        let (db, crashes) = open_in(dir.path());
        assert!(crashes.tree.get("i/0001").unwrap().is_none());

        let a = insert(&crashes, vec![record("a", "g", "2026-08-01T00:00:00Z")]).remove(0);
        let at_a = Location::parse(&a.id).unwrap();
        // An entry that names a crash with another identity (a batch lost to a kill,
        // its location taken since) is not a duplicate.
        crashes
            .lock()
            .identities
            .insert(&identity_digest("z"), at_a)
            .unwrap();
        let z = insert(&crashes, vec![record("z", "g", T0)]).remove(0);
        assert!(z.created);
        assert!(!insert(&crashes, vec![record("z", "g", T0)])[0].created);
        assert!(!insert(&crashes, vec![record("a", "g", T0)])[0].created);
        // An entry that names nothing at all.
        let nowhere = Location { block: 1, slot: 0 };
        crashes
            .lock()
            .identities
            .insert(&identity_digest("y"), nowhere)
            .unwrap();
        assert!(insert(&crashes, vec![record("y", "g", T0)])[0].created);

        crashes
            .tree
            .insert(block_key(at_a.block), &b"garbage"[..])
            .unwrap();
        let b = insert(&crashes, vec![record("b", "g", T0)]).remove(0);
        assert!(b.created);
        let cutoff = time::macros::datetime!(2026-09-01 00:00 UTC);
        let millis = (cutoff.unix_timestamp_nanos() / 1_000_000) as u64;
        crashes.prune_before(millis).unwrap();
        assert!(crashes.tree.get(block_key(at_a.block)).unwrap().is_none());
        assert!(crashes.get(&b.id).unwrap().is_some());
        // A rebuild skips what does not decode.
        crashes
            .tree
            .insert(
                block_key(Location::parse(&b.id).unwrap().block + 1),
                &b"junk"[..],
            )
            .unwrap();
        drop((db, crashes));
        std::fs::remove_dir_all(dir.path().join("identities")).unwrap();
        let (_db, crashes) = open_in(dir.path());
        assert!(!insert(&crashes, vec![record("b", "g", T0)])[0].created);
    }

    #[test]
    fn blocks_round_trip_and_reject_damage() {
        let record = |segment, offset, len| RecordRef {
            segment,
            offset,
            len,
        };
        let entries = vec![(0u16, record(0, 4, 100)), (5, record(3, 1 << 40, 0))];
        let raw = encode_block(&entries);
        assert_eq!(raw.len(), 4 + 2 * 18);
        assert_eq!(block_entries("c/x", &raw).unwrap(), entries);
        assert!(block_entries("c/x", &raw[..raw.len() - 4]).is_err());
        assert!(block_entries("c/x", b"nope").is_err());
    }
}
