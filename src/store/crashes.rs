//! Stored crashes, their groups and the missing-debug-file list, in one sled tree.
//!
//! Everything about crashes lives in the `crashes` tree under key prefixes, so that
//! one crash's record, its index entries and every counter it moves are written in one
//! atomic `sled::Batch`: a kill at any moment leaves the counters matching the crashes.
//! Read-modify-write of counters happens under one writer lock; reads take no lock.
//!
//! Keys (ids are fixed-width hex, so key order is time order for crashes):
//! - `c/{crash_id}` → [`CrashRecord`], JSON deflated
//! - `i/{identity}` → crash id (a keyed hash of the incident id, or of the content)
//! - `g/{group_id}` → [`Group`]
//! - `gc/{group_id}/{crash_id}`, `r/{release}\0{crash_id}` → `()`
//! - `gd/{group_id}/{device_hash}` → crashes of that device in that group (u64 BE)
//! - `m/{debug_id}` → [`MissingDebugFile`]; `mc/{debug_id}/{crash_id}` → `()`
//! - `q/{seq u64 BE}` → a debug id whose crashes must be symbolicated again

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::report::CrashReport;
use crate::scrub::ScrubSummary;

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

pub(super) struct Crashes {
    tree: sled::Tree,
    writer: std::sync::Mutex<()>,
}

/// Pending writes of one atomic batch, readable before they are applied.
struct Tx<'a> {
    tree: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> Tx<'a> {
    fn new(tree: &'a sled::Tree) -> Self {
        Tx {
            tree,
            pending: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.pending.get(key) {
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

    fn commit(self) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (key, value) in self.pending {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch)?;
        Ok(())
    }
}

impl Crashes {
    pub(super) fn open(db: &sled::Db) -> Result<Self, StoreError> {
        Ok(Crashes {
            tree: db.open_tree("crashes")?,
            writer: std::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The lock guards no data of its own; a panic while holding it left sled
        // consistent (batches are atomic), so a poisoned lock is still usable.
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stores each record unless its identity is already stored.
    /// Stores the records of several uploads in one atomic batch, skipping any whose
    /// identity is already stored (or comes earlier in the same batch). One answer per
    /// upload, in order.
    pub(super) fn insert_many(
        &self,
        uploads: Vec<Vec<EncodedCrash>>,
    ) -> Result<Vec<Vec<Inserted>>, StoreError> {
        let _guard = self.lock();
        let mut tx = Tx::new(&self.tree);
        let mut answers = Vec::with_capacity(uploads.len());
        for upload in uploads {
            let mut out = Vec::with_capacity(upload.len());
            for EncodedCrash { record, encoded } in upload {
                let identity_key = format!("i/{}", record.identity);
                if let Some(existing) = tx.get(identity_key.as_bytes())? {
                    let id = String::from_utf8_lossy(&existing).into_owned();
                    if let Some(stored) = self.read_record(&tx, &id)? {
                        out.push(Inserted {
                            id,
                            group_id: stored.group_id,
                            signature: stored.signature,
                            created: false,
                        });
                        continue;
                    }
                }
                tx.put(identity_key, record.id.as_bytes().to_vec());
                add(&mut tx, &record)?;
                tx.put(format!("c/{}", record.id), encoded);
                out.push(Inserted {
                    id: record.id,
                    group_id: record.group_id,
                    signature: record.signature,
                    created: true,
                });
            }
            answers.push(out);
        }
        tx.commit()?;
        Ok(answers)
    }

    fn read_record(&self, tx: &Tx<'_>, id: &str) -> Result<Option<CrashRecord>, StoreError> {
        let key = format!("c/{id}");
        tx.get(key.as_bytes())?
            .map(|raw| decode_record(&key, &raw))
            .transpose()
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<CrashRecord>, StoreError> {
        let key = format!("c/{id}");
        self.tree
            .get(key.as_bytes())?
            .map(|raw| decode_record(&key, &raw))
            .transpose()
    }

    /// Replaces a stored crash with what `update` makes of it, moving every counter and
    /// index entry in the same batch. `update` returning `None` leaves it alone.
    pub(super) fn update(
        &self,
        id: &str,
        update: impl FnOnce(&CrashRecord) -> Option<CrashRecord>,
    ) -> Result<Option<CrashRecord>, StoreError> {
        let _guard = self.lock();
        let mut tx = Tx::new(&self.tree);
        let Some(old) = self.read_record(&tx, id)? else {
            return Ok(None);
        };
        let Some(new) = update(&old) else {
            return Ok(None);
        };
        remove(&mut tx, &old)?;
        add(&mut tx, &new)?;
        put_record(&mut tx, &new)?;
        tx.commit()?;
        Ok(Some(new))
    }

    /// Deletes a crash with its index entries and its share of every counter.
    pub(super) fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let _guard = self.lock();
        let mut tx = Tx::new(&self.tree);
        let Some(old) = self.read_record(&tx, id)? else {
            return Ok(false);
        };
        remove(&mut tx, &old)?;
        tx.remove(format!("c/{id}"));
        tx.remove(format!("i/{}", old.identity));
        tx.commit()?;
        Ok(true)
    }

    /// Ids of crashes that needed `debug_id` and did not have it.
    pub(super) fn needing(&self, debug_id: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(&format!("mc/{debug_id}/"))
    }

    /// Ids of crashes in a group, oldest first.
    pub(super) fn in_group(&self, group_id: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(&format!("gc/{group_id}/"))
    }

    fn ids_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.tree
            .scan_prefix(prefix.as_bytes())
            .keys()
            .map(|key| {
                let key = key?;
                Ok(String::from_utf8_lossy(&key[prefix.len()..]).into_owned())
            })
            .collect()
    }

    /// Crash ids received before `cutoff` (an id prefix: see `crash_id_at`).
    pub(super) fn ids_before(&self, cutoff: &str) -> Result<Vec<String>, StoreError> {
        let end = format!("c/{cutoff}");
        self.tree
            .range(b"c/".to_vec()..end.into_bytes())
            .keys()
            .map(|key| Ok(String::from_utf8_lossy(&key?[2..]).into_owned()))
            .collect()
    }

    pub(super) fn missing(&self) -> Result<Vec<MissingDebugFile>, StoreError> {
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
        let key = format!("g/{id}");
        self.tree
            .get(key.as_bytes())?
            .map(|raw| super::decode(&key, &raw))
            .transpose()
    }

    pub(super) fn groups(&self) -> Result<Vec<Group>, StoreError> {
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

fn put_record(tx: &mut Tx<'_>, record: &CrashRecord) -> Result<(), StoreError> {
    let value = encode_record(record)?;
    tx.put(format!("c/{}", record.id), value);
    Ok(())
}

/// A record with its stored bytes, encoded by the caller so the writer does not.
pub struct EncodedCrash {
    record: CrashRecord,
    encoded: Vec<u8>,
}

impl EncodedCrash {
    pub fn new(record: CrashRecord) -> Result<Self, StoreError> {
        let encoded = encode_record(&record)?;
        Ok(EncodedCrash { record, encoded })
    }
}

/// A crash record as stored: [`RECORD_MAGIC`] then deflated JSON.
fn encode_record(record: &CrashRecord) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(record).map_err(|source| StoreError::Codec {
        key: format!("c/{}", record.id),
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

/// Decodes a stored crash record (deflated JSON behind [`RECORD_MAGIC`]).
pub fn decode_record(key: &str, raw: &[u8]) -> Result<CrashRecord, StoreError> {
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

/// Adds a record's share to groups, devices, releases and the missing list.
fn add(tx: &mut Tx<'_>, record: &CrashRecord) -> Result<(), StoreError> {
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
        let mut key = format!("r/{release}").into_bytes();
        key.push(0);
        key.extend_from_slice(record.id.as_bytes());
        tx.put(key, Vec::new());
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
    tx.put(format!("gc/{}/{}", record.group_id, record.id), Vec::new());

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
        tx.put(format!("mc/{}/{}", needed.debug_id, record.id), Vec::new());
    }
    Ok(())
}

/// Takes a record's share back out: the inverse of [`add`].
fn remove(tx: &mut Tx<'_>, record: &CrashRecord) -> Result<(), StoreError> {
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
        let mut key = format!("r/{release}").into_bytes();
        key.push(0);
        key.extend_from_slice(record.id.as_bytes());
        tx.remove(key);
    }
    tx.remove(format!("gc/{}/{}", record.group_id, record.id));
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
        tx.remove(format!("mc/{}/{}", needed.debug_id, record.id));
    }
    Ok(())
}

fn read_u64(tx: &Tx<'_>, key: &str) -> Result<u64, StoreError> {
    Ok(tx
        .get(key.as_bytes())?
        .and_then(|raw| <[u8; 8]>::try_from(raw.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}
