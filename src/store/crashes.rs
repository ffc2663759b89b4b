//! Crash rows and every counter they move: groups (count, devices, first and last
//! seen), per-group releases, devices and hours, releases, and the missing-debug-file
//! list. [`add_counts`] and [`remove_counts`] are exact inverses and run in the same
//! transaction as the crash row they account for, so a kill at any moment leaves the
//! counters equal to a recount ([`audit`]). Both adds go through [`Deltas`]: inserts sum
//! theirs over the writer's whole transaction and apply them just before it commits
//! ([`flush_pending`]); a refile applies one crash's at once ([`add_counts`]).

use std::collections::HashMap;
use std::io::{Read, Write};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ms_to_rfc3339, StoreError};

/// A debug file a crash needed and nobody had uploaded when it was symbolicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeededDebugFile {
    pub debug_id: String,
    pub name: String,
    /// Shown in the missing-dSYM list (an in-app image). An image that cannot be told
    /// apart from a system one (MetricKit names no paths) is only watched: its upload
    /// still symbolicates the crash again, but it is not listed as missing.
    #[serde(default = "listed_by_default")]
    pub listed: bool,
}

fn listed_by_default() -> bool {
    true
}

/// What the last symbolication decided about a crash: where it is filed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filing {
    pub signature: String,
    /// The group its signature names (its home); merges may file it elsewhere.
    pub group_id: String,
    /// Debug ids its frames needed that were missing, sorted by debug id.
    pub missing: Vec<NeededDebugFile>,
    /// The call path that reached the crash site; "" when none.
    pub variant: String,
    /// The group's title and culprit as this crash names them.
    pub title: String,
    pub culprit: Option<String>,
}

/// What a crash says about where it ran: counted per group and release, and filtered on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CrashFacts {
    /// The app's bundle id; "" when the report names none. Groups belong to one app.
    pub app: String,
    /// `iOS 17.1.2`.
    pub os: Option<String>,
    pub device_model: Option<String>,
}

/// A crash on its way in. The record (the scrubbed report, as JSON the caller owns) is
/// compressed by [`NewCrash::new`] on the caller's thread, not on the writer's.
pub struct NewCrash {
    /// Keyed hash naming the report, for de-duplication of retried uploads.
    pub identity: String,
    /// The crash's own day (days since 1970-01-01 of the date the report's timestamp
    /// names; 0 when it names none), set by [`NewCrash::on_day`]. It leads the dedup key
    /// so new crashes' keys append; a retry carries the same report, so the same day.
    pub day: u32,
    /// Milliseconds since the Unix epoch.
    pub received_ms: i64,
    /// Keyed hash of the device, for counting affected devices.
    pub device_hash: Option<String>,
    pub release: Option<String>,
    pub facts: CrashFacts,
    pub filing: Filing,
    pub(super) record: Vec<u8>,
}

impl NewCrash {
    pub fn new(
        identity: String,
        received_ms: i64,
        device_hash: Option<String>,
        release: Option<String>,
        facts: CrashFacts,
        filing: Filing,
        record_json: &[u8],
    ) -> Result<Self, StoreError> {
        Ok(NewCrash {
            identity,
            day: 0,
            received_ms,
            device_hash,
            release,
            facts,
            filing,
            record: compress(record_json)?,
        })
    }

    /// The crash's own day (see [`NewCrash::day`]): the caller knows the report.
    pub fn on_day(mut self, day: u32) -> Self {
        self.day = day;
        self
    }

    /// Stored size of the record in bytes.
    pub fn record_len(&self) -> usize {
        self.record.len()
    }
}

/// A stored crash as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCrash {
    pub id: String,
    /// RFC 3339, when crashbox received it.
    pub received_at: String,
    pub device_hash: Option<String>,
    pub release: Option<String>,
    pub facts: CrashFacts,
    /// Where its last symbolication filed it: `filing.group_id` is its home group.
    pub filing: Filing,
    /// Its current group: the home group, or the group that was merged into.
    pub group_id: String,
    /// The record's JSON, as the caller handed it in.
    pub record: Vec<u8>,
}

/// A new filing for a stored crash (after symbolicating it again).
#[derive(Debug, Clone)]
pub struct Refiling {
    pub id: String,
    pub filing: Filing,
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

/// How a record is encoded in `crashes.record`.
const RECORD_DEFLATE_JSON: i64 = 1;

fn compress(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    let mut encoder = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 4),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(json)
        .map_err(|e| StoreError::io("compressing a crash record", e))?;
    encoder
        .finish()
        .map_err(|e| StoreError::io("compressing a crash record", e))
}

pub(super) fn decompress(id: &str, format: i64, raw: &[u8]) -> Result<Vec<u8>, StoreError> {
    if format != RECORD_DEFLATE_JSON {
        return Err(StoreError::Corrupt {
            key: format!("crash {id}"),
            problem: format!("unknown record format {format}"),
        });
    }
    let mut json = Vec::with_capacity(raw.len() * 4);
    flate2::read::DeflateDecoder::new(raw)
        .read_to_end(&mut json)
        .map_err(|e| StoreError::Corrupt {
            key: format!("crash {id}"),
            problem: format!("record does not inflate: {e}"),
        })?;
    Ok(json)
}

/// A crash's public id: its sequence number, which orders by arrival, and its random
/// nonce, which makes ids unguessable.
pub(super) fn crash_id(seq: i64, nonce: i64) -> String {
    format!("{:016x}{:016x}", seq as u64, nonce as u64)
}

/// The sequence number and nonce an id names; `None` for anything that is not one.
pub(super) fn parse_crash_id(id: &str) -> Option<(i64, i64)> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let seq = u64::from_str_radix(&id[..16], 16).ok()? as i64;
    let nonce = u64::from_str_radix(&id[16..], 16).ok()? as i64;
    Some((seq, nonce))
}

/// The dedup key since schema v7: the crash's own day, big-endian, then 128 bits of the
/// identity's digest. The day leads so that new crashes (recent days) insert into the
/// few rightmost leaves of the UNIQUE index instead of one random leaf each, which on a
/// big store was a page read, a WAL frame and a checkpoint write per crash (benches/
/// README.md, triage runs 6-8). The day comes from the report, never the arrival time,
/// so a retry of the same report has the same key and dedup stays exact.
pub(super) fn identity_key(day: u32, identity: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(20);
    key.extend_from_slice(&day.to_be_bytes());
    key.extend_from_slice(&legacy_identity_key(identity));
    key
}

/// The dedup key before schema v7 (16 bytes, no day): rows stored then keep it.
pub(super) fn legacy_identity_key(identity: &str) -> Vec<u8> {
    Sha256::digest(identity.as_bytes())[..16].to_vec()
}

/// Rows keyed the old way, from what migration 7 recorded in `meta`.
#[derive(Debug, Clone, Copy)]
pub(super) struct LegacyKeys {
    /// The UTC day (since 1970-01-01) the store was migrated.
    pub(super) day: i64,
}

fn legacy_keys(conn: &Connection) -> Result<Option<LegacyKeys>, StoreError> {
    let value = |key: &str| -> Result<Option<i64>, StoreError> {
        let text: Option<String> = conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
            .query_row([key], |row| row.get(0))
            .optional()?;
        Ok(text.and_then(|t| t.parse().ok()))
    };
    // Rows up to this seq were stored with 16-byte keys; none when the store was empty
    // at the migration, or once retention (or deletes) removed them all: a rowid range
    // probe, once per upload.
    let max_seq = value(LEGACY_MAX_SEQ)?.unwrap_or(0);
    let any_left = max_seq > 0
        && conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM crashes WHERE seq <= ?1)")?
            .query_row([max_seq], |row| row.get::<_, bool>(0))?;
    if !any_left {
        return Ok(None);
    }
    // Without the day, look every report up the old way too: slower, never wrong.
    let day = value(LEGACY_DAY)?.unwrap_or(i64::MAX);
    Ok(Some(LegacyKeys { day }))
}

/// `meta` keys migration 7 writes (src/store/schema.rs).
pub(super) const LEGACY_MAX_SEQ: &str = "identity_legacy_max_seq";
pub(super) const LEGACY_DAY: &str = "identity_legacy_day";

impl LegacyKeys {
    /// Whether a report of crash day `day`, received at `received_ms`, may have been
    /// stored under the 16-byte key, i.e. before the migration. A legacy row was stored
    /// before the migration day ended (UTC). The crash day is the report's own date as
    /// written, in the device's zone, which runs up to 14 hours ahead of UTC: a report
    /// stored before the upgrade has a day of at most the migration day + 1 -- unless
    /// the device's clock was wrong. A day ahead of the server's own (received) day + 1
    /// can only come from a clock set ahead, so those are looked up too. Every other
    /// report (the hot path: crashes of today on a store upgraded before) cannot be a
    /// retry of a legacy row and skips the second lookup. Day 0 (no timestamp) is
    /// always looked up. What escapes: a report from a clock set ahead, stored before
    /// the upgrade and retried only after the server's date caught up with it.
    pub(super) fn may_hold(&self, day: u32, received_ms: i64) -> bool {
        let day = i64::from(day);
        let received_day = received_ms.div_euclid(86_400_000);
        day <= self.day.saturating_add(1) || day > received_day + 1
    }
}

/// Device hashes are hex; stored as their bytes (half the size).
fn device_key(device_hash: &str) -> Vec<u8> {
    hex::decode(device_hash).unwrap_or_else(|_| device_hash.as_bytes().to_vec())
}

fn missing_json(missing: &[NeededDebugFile]) -> Option<String> {
    if missing.is_empty() {
        return None;
    }
    // `[debug_id, name]` for a listed one (the shape since v1), a third element `"0"`
    // for one only watched.
    let entries: Vec<Vec<&str>> = missing
        .iter()
        .map(|m| {
            let mut entry = vec![m.debug_id.as_str(), m.name.as_str()];
            if !m.listed {
                entry.push("0");
            }
            entry
        })
        .collect();
    serde_json::to_string(&entries).ok()
}

pub(super) fn parse_missing(raw: Option<String>) -> Vec<NeededDebugFile> {
    raw.and_then(|text| serde_json::from_str::<Vec<Vec<String>>>(&text).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_iter();
            let debug_id = parts.next()?;
            let name = parts.next()?;
            let listed = parts.next().is_none_or(|flag| flag != "0");
            Some(NeededDebugFile {
                debug_id,
                name,
                listed,
            })
        })
        .collect()
}

/// The parts of a crash the counters depend on.
#[derive(Clone)]
pub(super) struct Counted {
    pub seq: i64,
    pub received_ms: i64,
    pub device: Option<Vec<u8>>,
    pub release: Option<String>,
    /// The current group (after merges): the one whose counters it adds to.
    pub group_id: String,
    pub missing: Vec<NeededDebugFile>,
    pub os: Option<String>,
    pub device_model: Option<String>,
    pub variant: Option<String>,
}

fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(3_600_000)
}

/// Adds a crash's share to every counter; creates its release when new. Its group row
/// must exist. The same path as an insert's ([`Deltas`]), applied at once.
pub(super) fn add_counts(conn: &Connection, c: &Counted) -> Result<(), StoreError> {
    let mut deltas = Deltas::default();
    deltas.add(c);
    // A crash that moves is not a new crash: it changes no group's state.
    apply(conn, deltas, false)?;
    add_missing(conn, c)
}

/// Adds a crash's share to the missing-debug-file list and its index.
fn add_missing(conn: &Connection, c: &Counted) -> Result<(), StoreError> {
    for needed in &c.missing {
        conn.prepare_cached(
            "INSERT OR IGNORE INTO crash_missing (debug_id, seq, listed) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![needed.debug_id, c.seq, needed.listed])?;
        if !needed.listed {
            continue;
        }
        conn.prepare_cached(
            "INSERT INTO missing_debug_files (debug_id, name, crashes, last_seen)
             VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (debug_id) DO UPDATE SET crashes = crashes + 1,
                 last_seen = max(last_seen, excluded.last_seen)",
        )?
        .execute(params![needed.debug_id, needed.name, c.received_ms])?;
        if let Some(release) = &c.release {
            conn.prepare_cached(
                "INSERT INTO missing_releases (debug_id, release, crashes) VALUES (?1, ?2, 1)
                 ON CONFLICT DO UPDATE SET crashes = crashes + 1",
            )?
            .execute(params![needed.debug_id, release])?;
        }
    }
    Ok(())
}

/// Takes a crash's share back out: the inverse of [`add_counts`]. Groups and releases
/// stay, with their state, when their count reaches zero.
pub(super) fn remove_counts(conn: &Connection, c: &Counted) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE groups SET count = count - 1 WHERE id = ?1")?
        .execute([&c.group_id])?;
    if let Some(device) = &c.device {
        if decrement(
            conn,
            "UPDATE group_devices SET crashes = crashes - 1
             WHERE group_id = ?1 AND device = ?2 RETURNING crashes",
            "DELETE FROM group_devices WHERE group_id = ?1 AND device = ?2",
            params![c.group_id, device],
        )? {
            conn.prepare_cached("UPDATE groups SET devices = devices - 1 WHERE id = ?1")?
                .execute([&c.group_id])?;
        }
    }
    decrement(
        conn,
        "UPDATE group_hours SET crashes = crashes - 1
         WHERE group_id = ?1 AND hour = ?2 RETURNING crashes",
        "DELETE FROM group_hours WHERE group_id = ?1 AND hour = ?2",
        params![c.group_id, hour_of(c.received_ms)],
    )?;
    let now_hour = hour_of(super::unix_ms(time::OffsetDateTime::now_utc()));
    let weight = super::triage::trend_weight(hour_of(c.received_ms), now_hour);
    if weight != 0 {
        conn.prepare_cached("UPDATE groups SET trend = trend - ?2 WHERE id = ?1")?
            .execute(params![c.group_id, weight])?;
    }
    for (value, update, delete) in [
        (
            &c.os,
            "UPDATE group_os SET crashes = crashes - 1
             WHERE group_id = ?1 AND os = ?2 RETURNING crashes",
            "DELETE FROM group_os WHERE group_id = ?1 AND os = ?2",
        ),
        (
            &c.device_model,
            "UPDATE group_device_models SET crashes = crashes - 1
             WHERE group_id = ?1 AND device_model = ?2 RETURNING crashes",
            "DELETE FROM group_device_models WHERE group_id = ?1 AND device_model = ?2",
        ),
        (
            &c.variant,
            "UPDATE group_variants SET crashes = crashes - 1
             WHERE group_id = ?1 AND variant = ?2 RETURNING crashes",
            "DELETE FROM group_variants WHERE group_id = ?1 AND variant = ?2",
        ),
    ] {
        if let Some(value) = value {
            decrement(conn, update, delete, params![c.group_id, value])?;
        }
    }
    if let Some(release) = &c.release {
        if decrement(
            conn,
            "UPDATE group_releases SET crashes = crashes - 1
             WHERE group_id = ?1 AND release = ?2 RETURNING crashes",
            "DELETE FROM group_releases WHERE group_id = ?1 AND release = ?2",
            params![c.group_id, release],
        )? {
            recount_release_bounds(conn, &c.group_id)?;
        }
        conn.prepare_cached("UPDATE releases SET crashes = crashes - 1 WHERE name = ?1")?
            .execute([release])?;
        if let Some(device) = &c.device {
            if decrement(
                conn,
                "UPDATE release_devices SET crashes = crashes - 1
                 WHERE release = ?1 AND device = ?2 RETURNING crashes",
                "DELETE FROM release_devices WHERE release = ?1 AND device = ?2",
                params![release, device],
            )? {
                conn.prepare_cached("UPDATE releases SET devices = devices - 1 WHERE name = ?1")?
                    .execute([release])?;
            }
        }
    }
    for needed in &c.missing {
        conn.prepare_cached("DELETE FROM crash_missing WHERE debug_id = ?1 AND seq = ?2")?
            .execute(params![needed.debug_id, c.seq])?;
        if !needed.listed {
            continue;
        }
        decrement(
            conn,
            "UPDATE missing_debug_files SET crashes = crashes - 1
             WHERE debug_id = ?1 RETURNING crashes",
            "DELETE FROM missing_debug_files WHERE debug_id = ?1",
            params![needed.debug_id],
        )?;
        if let Some(release) = &c.release {
            decrement(
                conn,
                "UPDATE missing_releases SET crashes = crashes - 1
                 WHERE debug_id = ?1 AND release = ?2 RETURNING crashes",
                "DELETE FROM missing_releases WHERE debug_id = ?1 AND release = ?2",
                params![needed.debug_id, release],
            )?;
        }
    }
    Ok(())
}

/// Sets a group's first and last release from its remaining crashes' releases, after
/// one of them lost its last crash.
fn recount_release_bounds(conn: &Connection, group_id: &str) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE groups SET
             (first_release, first_release_key) = (
                 SELECT r.name, r.sort_key FROM group_releases gr JOIN releases r ON r.name = gr.release
                 WHERE gr.group_id = ?1 AND r.sort_key IS NOT NULL
                 ORDER BY r.sort_key, r.name LIMIT 1),
             (last_release, last_release_key) = (
                 SELECT r.name, r.sort_key FROM group_releases gr JOIN releases r ON r.name = gr.release
                 WHERE gr.group_id = ?1 AND r.sort_key IS NOT NULL
                 ORDER BY r.sort_key DESC, r.name DESC LIMIT 1)
         WHERE id = ?1",
    )?
    .execute([group_id])?;
    Ok(())
}

/// Decrements a counter row and deletes it at zero. True when it was deleted.
fn decrement(
    conn: &Connection,
    update: &str,
    delete: &str,
    key: impl rusqlite::Params + Clone,
) -> Result<bool, StoreError> {
    let left: Option<i64> = conn
        .prepare_cached(update)?
        .query_row(key.clone(), |row| row.get(0))
        .optional()?;
    if left.is_some_and(|n| n <= 0) {
        conn.prepare_cached(delete)?.execute(key)?;
        return Ok(true);
    }
    Ok(false)
}

/// Stores one upload's crashes, skipping those whose identity is stored already.
pub(super) fn insert(
    conn: &Connection,
    crashes: &[NewCrash],
    spike: super::webhooks::SpikePolicy,
) -> Result<Vec<Inserted>, StoreError> {
    let mut out = Vec::with_capacity(crashes.len());
    // This upload's counter changes join the batch's only once all of it succeeded.
    let mut deltas = Deltas::default();
    let legacy = legacy_keys(conn)?;
    for crash in crashes {
        let identity = identity_key(crash.day, &crash.identity);
        let mut existing = stored_as(conn, &identity)?;
        // A retry of a report stored before migration 7 is found under its old key.
        if existing.is_none() && legacy.is_some_and(|l| l.may_hold(crash.day, crash.received_ms)) {
            existing = stored_as(conn, &legacy_identity_key(&crash.identity))?;
        }
        if let Some(existing) = existing {
            out.push(existing);
            continue;
        }
        let nonce: i64 = rand::random::<i64>();
        let device = crash.device_hash.as_deref().map(device_key);
        // The group row must exist before the crash row names it; a merged group
        // files the crash in the group it was merged into.
        let current = ensure_group(conn, &crash.filing, &crash.facts.app, crash.received_ms)?;
        let variant = non_empty(&crash.filing.variant);
        conn.prepare_cached(
            "INSERT INTO crashes (nonce, identity, received_at, group_id, release, device,
                                  missing, record_format, record, home, os, device_model, variant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            nonce,
            identity,
            crash.received_ms,
            current,
            crash.release,
            device,
            missing_json(&crash.filing.missing),
            RECORD_DEFLATE_JSON,
            crash.record,
            crash.filing.group_id,
            crash.facts.os,
            crash.facts.device_model,
            variant,
        ])?;
        let seq = conn.last_insert_rowid();
        let counted = Counted {
            seq,
            received_ms: crash.received_ms,
            device,
            release: crash.release.clone(),
            group_id: current.clone(),
            missing: crash.filing.missing.clone(),
            os: crash.facts.os.clone(),
            device_model: crash.facts.device_model.clone(),
            variant: variant.map(str::to_owned),
        };
        add_missing(conn, &counted)?;
        deltas.add(&counted);
        deltas.title(&crash.filing);
        out.push(Inserted {
            id: crash_id(seq, nonce),
            group_id: current,
            signature: crash.filing.signature.clone(),
            created: true,
        });
    }
    PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        pending.merge(deltas);
        pending.spike = Some(spike);
    });
    Ok(out)
}

/// The stored crash a dedup key names, as a retry is answered.
fn stored_as(conn: &Connection, key: &[u8]) -> Result<Option<Inserted>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT c.seq, c.nonce, c.group_id, g.signature FROM crashes c
             JOIN groups g ON g.id = coalesce(c.home, c.group_id) WHERE c.identity = ?1",
        )?
        .query_row([key], |row| {
            Ok(Inserted {
                id: crash_id(row.get(0)?, row.get(1)?),
                group_id: row.get(2)?,
                signature: row.get(3)?,
                created: false,
            })
        })
        .optional()?)
}

thread_local! {
    /// Counter changes of the inserts in the writer's open transaction, applied by
    /// [`flush_pending`] just before it commits. Thread-local: only the writer thread
    /// inserts, one transaction at a time.
    static PENDING: std::cell::RefCell<Deltas> = std::cell::RefCell::new(Deltas::default());
}

/// The counter changes of many inserts, summed per row. Under a crash storm most of a
/// batch lands in one group, release and hour: summed, they cost one update per row
/// instead of one per crash.
#[derive(Default)]
pub(super) struct Deltas {
    /// count, first seen, last seen.
    groups: HashMap<String, (i64, i64, i64)>,
    group_devices: HashMap<(String, Vec<u8>), i64>,
    group_hours: HashMap<(String, i64), i64>,
    group_releases: HashMap<(String, String), i64>,
    releases: HashMap<String, (i64, i64, i64)>,
    release_devices: HashMap<(String, Vec<u8>), i64>,
    group_os: HashMap<(String, String), i64>,
    group_device_models: HashMap<(String, String), i64>,
    group_variants: HashMap<(String, String), i64>,
    /// Per group, the lowest and highest release (order key, name) among the crashes.
    release_bounds: HashMap<String, (NamedRelease, NamedRelease)>,
    /// Per home group, the title and culprit its latest crash gave.
    titles: HashMap<String, (String, Option<String>)>,
    /// What makes a `group.spike`, from the inserts (the store's setting).
    spike: Option<super::webhooks::SpikePolicy>,
}

/// A release's order key and name.
type NamedRelease = (String, String);

/// A string column's value: `None` for "".
fn non_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn widen_bounds(entry: &mut (NamedRelease, NamedRelease), low: &NamedRelease, high: &NamedRelease) {
    if *low < entry.0 {
        entry.0 = low.clone();
    }
    if *high > entry.1 {
        entry.1 = high.clone();
    }
}

fn widen(entry: &mut (i64, i64, i64), n: i64, first: i64, last: i64) {
    entry.0 += n;
    entry.1 = entry.1.min(first);
    entry.2 = entry.2.max(last);
}

impl Deltas {
    fn add(&mut self, c: &Counted) {
        let at = c.received_ms;
        widen(
            self.groups.entry(c.group_id.clone()).or_insert((0, at, at)),
            1,
            at,
            at,
        );
        if let Some(device) = &c.device {
            *self
                .group_devices
                .entry((c.group_id.clone(), device.clone()))
                .or_default() += 1;
        }
        *self
            .group_hours
            .entry((c.group_id.clone(), hour_of(at)))
            .or_default() += 1;
        if let Some(release) = &c.release {
            *self
                .group_releases
                .entry((c.group_id.clone(), release.clone()))
                .or_default() += 1;
            widen(
                self.releases.entry(release.clone()).or_insert((0, at, at)),
                1,
                at,
                at,
            );
            if let Some(device) = &c.device {
                *self
                    .release_devices
                    .entry((release.clone(), device.clone()))
                    .or_default() += 1;
            }
            if let Some(key) = crate::release::sort_key_of(release) {
                let named = (key, release.clone());
                widen_bounds(
                    self.release_bounds
                        .entry(c.group_id.clone())
                        .or_insert_with(|| (named.clone(), named.clone())),
                    &named,
                    &named,
                );
            }
        }
        for (value, map) in [
            (&c.os, &mut self.group_os),
            (&c.device_model, &mut self.group_device_models),
            (&c.variant, &mut self.group_variants),
        ] {
            if let Some(value) = value {
                *map.entry((c.group_id.clone(), value.clone())).or_default() += 1;
            }
        }
    }

    /// Remembers the title and culprit a new crash gives its home group.
    fn title(&mut self, filing: &Filing) {
        if !filing.title.is_empty() {
            self.titles.insert(
                filing.group_id.clone(),
                (filing.title.clone(), filing.culprit.clone()),
            );
        }
    }

    fn merge(&mut self, other: Deltas) {
        for (k, (n, first, last)) in other.groups {
            widen(
                self.groups.entry(k).or_insert((0, first, last)),
                n,
                first,
                last,
            );
        }
        for (k, (n, first, last)) in other.releases {
            widen(
                self.releases.entry(k).or_insert((0, first, last)),
                n,
                first,
                last,
            );
        }
        for (k, n) in other.group_devices {
            *self.group_devices.entry(k).or_default() += n;
        }
        for (k, n) in other.group_hours {
            *self.group_hours.entry(k).or_default() += n;
        }
        for (k, n) in other.group_releases {
            *self.group_releases.entry(k).or_default() += n;
        }
        for (k, n) in other.release_devices {
            *self.release_devices.entry(k).or_default() += n;
        }
        for (k, n) in other.group_os {
            *self.group_os.entry(k).or_default() += n;
        }
        for (k, n) in other.group_device_models {
            *self.group_device_models.entry(k).or_default() += n;
        }
        for (k, n) in other.group_variants {
            *self.group_variants.entry(k).or_default() += n;
        }
        for (k, (low, high)) in other.release_bounds {
            widen_bounds(
                self.release_bounds
                    .entry(k)
                    .or_insert_with(|| (low.clone(), high.clone())),
                &low,
                &high,
            );
        }
        self.titles.extend(other.titles);
        self.spike = other.spike.or(self.spike);
    }
}

/// Forgets the counter changes of a transaction that is being rolled back.
pub(super) fn discard_pending() {
    PENDING.with(|pending| *pending.borrow_mut() = Deltas::default());
}

/// Applies the open transaction's summed counter changes; the writer calls it right
/// before `COMMIT`, so they commit with the crash rows they count.
pub(super) fn flush_pending(conn: &Connection) -> Result<(), StoreError> {
    let deltas = PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()));
    apply(conn, deltas, true)
}

/// Adds summed counter changes to their rows. Group rows must exist; releases are made
/// when new. A device row whose count equals what was added is new, so it counts once
/// more in its group's or release's devices. For `new_crashes` (not moves) the groups'
/// lifecycle follows: regressions, the end of an ignore.
fn apply(conn: &Connection, deltas: Deltas, new_crashes: bool) -> Result<(), StoreError> {
    // Releases first: a group's first and last release are looked up by key below.
    for (release, (n, first, last)) in &deltas.releases {
        let (app, version, build, key) = crate::release::columns(release);
        conn.prepare_cached(
            "INSERT INTO releases (name, crashes, devices, first_seen, last_seen,
                                   app, version, build, sort_key)
             VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (name) DO UPDATE SET crashes = crashes + excluded.crashes,
                 first_seen = min(coalesce(first_seen, excluded.first_seen), excluded.first_seen),
                 last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen)",
        )?
        .execute(params![release, n, first, last, app, version, build, key,])?;
    }
    let mut new_group_devices: HashMap<&str, i64> = HashMap::new();
    for ((group, device), n) in &deltas.group_devices {
        let crashes: i64 = conn
            .prepare_cached(
                "INSERT INTO group_devices (group_id, device, crashes) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes
                 RETURNING crashes",
            )?
            .query_row(params![group, device, n], |row| row.get(0))?;
        if crashes == *n {
            *new_group_devices.entry(group).or_default() += 1;
        }
    }
    // Groups whose state the new crashes changed, for webhooks (after every counter).
    let mut touched = Vec::new();
    for (group, (n, first, last)) in &deltas.groups {
        let devices = new_group_devices.get(group.as_str()).copied().unwrap_or(0);
        let (state, count, new_fired) = conn
            .prepare_cached(
                "UPDATE groups SET count = count + ?2, devices = devices + ?3,
                     first_seen = min(first_seen, ?4), last_seen = max(last_seen, ?5)
                 WHERE id = ?1
                 RETURNING status, resolved_key, resolved_next, ignore_left, ignore_until,
                     count, new_fired",
            )?
            .query_row(params![group, n, devices, first, last], |row| {
                Ok((
                    super::triage::LiveState {
                        status: row.get(0)?,
                        resolved_key: row.get(1)?,
                        resolved_next: row.get(2)?,
                        ignore_left: row.get(3)?,
                        ignore_until: row.get(4)?,
                    },
                    row.get::<_, i64>(5)?,
                    row.get::<_, bool>(6)?,
                ))
            })?;
        let bounds = deltas.release_bounds.get(group);
        if let Some(((low_key, low), (high_key, high))) = bounds {
            conn.prepare_cached(
                "UPDATE groups SET first_release = ?2, first_release_key = ?3
                 WHERE id = ?1 AND (first_release_key IS NULL OR first_release_key > ?3)",
            )?
            .execute(params![group, low, low_key])?;
            conn.prepare_cached(
                "UPDATE groups SET last_release = ?2, last_release_key = ?3
                 WHERE id = ?1 AND (last_release_key IS NULL OR last_release_key < ?3)",
            )?
            .execute(params![group, high, high_key])?;
        }
        if new_crashes {
            let regressed = super::triage::after_new_crashes(
                conn,
                group,
                &state,
                *n,
                bounds.map(|(_, high)| high),
                *last,
            )?;
            touched.push(super::webhooks::Touched {
                group,
                // Its first crash, from a new crash (not a move), and neither it nor a
                // group merged or moved into it fired `group.new` before.
                first: count == *n && !new_fired,
                regressed: regressed.then(|| bounds.map(|(_, (_, name))| name.clone())),
                at_ms: *last,
            });
        }
    }
    for ((group, os), n) in &deltas.group_os {
        conn.prepare_cached(
            "INSERT INTO group_os (group_id, os, crashes) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes",
        )?
        .execute(params![group, os, n])?;
    }
    for ((group, model), n) in &deltas.group_device_models {
        conn.prepare_cached(
            "INSERT INTO group_device_models (group_id, device_model, crashes) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes",
        )?
        .execute(params![group, model, n])?;
    }
    for ((group, variant), n) in &deltas.group_variants {
        conn.prepare_cached(
            "INSERT INTO group_variants (group_id, variant, crashes) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes",
        )?
        .execute(params![group, variant, n])?;
    }
    for (group, (title, culprit)) in &deltas.titles {
        conn.prepare_cached(
            "UPDATE groups SET title = ?2, culprit = ?3
             WHERE id = ?1 AND (title IS NOT ?2 OR culprit IS NOT ?3)",
        )?
        .execute(params![group, title, culprit])?;
    }
    let now_hour = hour_of(super::unix_ms(time::OffsetDateTime::now_utc()));
    let mut trends: HashMap<&str, i64> = HashMap::new();
    for ((group, hour), n) in &deltas.group_hours {
        conn.prepare_cached(
            "INSERT INTO group_hours (group_id, hour, crashes) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes",
        )?
        .execute(params![group, hour, n])?;
        *trends.entry(group).or_default() += n * super::triage::trend_weight(*hour, now_hour);
    }
    for (group, change) in trends {
        if change != 0 {
            conn.prepare_cached("UPDATE groups SET trend = trend + ?2 WHERE id = ?1")?
                .execute(params![group, change])?;
        }
    }
    for ((group, release), n) in &deltas.group_releases {
        conn.prepare_cached(
            "INSERT INTO group_releases (group_id, release, crashes) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes",
        )?
        .execute(params![group, release, n])?;
    }
    for ((release, device), n) in &deltas.release_devices {
        let crashes: i64 = conn
            .prepare_cached(
                "INSERT INTO release_devices (release, device, crashes) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO UPDATE SET crashes = crashes + excluded.crashes
                 RETURNING crashes",
            )?
            .query_row(params![release, device, n], |row| row.get(0))?;
        if crashes == *n {
            conn.prepare_cached("UPDATE releases SET devices = devices + 1 WHERE name = ?1")?
                .execute([release])?;
        }
    }
    if !touched.is_empty() {
        // The outbox rows commit with the crashes that cause them.
        super::webhooks::after_new_crashes(conn, &touched, deltas.spike)?;
    }
    Ok(())
}

/// Creates the group a filing names, empty, unless it exists: crash rows and counters
/// name groups that must be there. Returns the group its crashes are filed in: itself,
/// or the group it was merged or moved into (aliases point at a live group, never at
/// another alias).
fn ensure_group(
    conn: &Connection,
    filing: &Filing,
    app: &str,
    at_ms: i64,
) -> Result<String, StoreError> {
    let current: Option<String> = conn
        .prepare_cached("SELECT coalesce(alias_of, id) FROM groups WHERE id = ?1")?
        .query_row([&filing.group_id], |row| row.get(0))
        .optional()?;
    if let Some(current) = current {
        return Ok(current);
    }
    conn.prepare_cached(
        "INSERT INTO groups (id, signature, count, devices, first_seen, last_seen, app, title, culprit)
         VALUES (?1, ?2, 0, 0, ?3, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        filing.group_id,
        filing.signature,
        at_ms,
        app,
        filing.title,
        filing.culprit
    ])?;
    Ok(filing.group_id.clone())
}

/// The counted parts of the crash `seq`, if it exists.
fn counted(conn: &Connection, seq: i64) -> Result<Option<Counted>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT received_at, device, release, group_id, missing, os, device_model, variant
             FROM crashes WHERE seq = ?1",
        )?
        .query_row([seq], |row| {
            Ok(Counted {
                seq,
                received_ms: row.get(0)?,
                device: row.get(1)?,
                release: row.get(2)?,
                group_id: row.get(3)?,
                missing: parse_missing(row.get(4)?),
                os: row.get(5)?,
                device_model: row.get(6)?,
                variant: row.get(7)?,
            })
        })
        .optional()?)
}

/// Moves stored crashes to new filings, counters and all. A group left with no crash
/// by the move becomes an alias of the group that took its last one (DESIGN.md,
/// "Moves"). Returns how many changed.
pub(super) fn refile(conn: &Connection, changes: &[Refiling]) -> Result<usize, StoreError> {
    let mut changed = 0;
    // Old current group → the group that took its latest crash.
    let mut emptied: Vec<(String, String)> = Vec::new();
    for change in changes {
        let Some((seq, nonce)) = parse_crash_id(&change.id) else {
            continue;
        };
        if !nonce_matches(conn, seq, nonce)? {
            continue;
        }
        let Some(old) = counted(conn, seq)? else {
            continue;
        };
        let app: String = conn
            .prepare_cached("SELECT app FROM groups WHERE id = ?1")?
            .query_row([&old.group_id], |row| row.get(0))?;
        remove_counts(conn, &old)?;
        let current = ensure_group(conn, &change.filing, &app, old.received_ms)?;
        let variant = non_empty(&change.filing.variant).map(str::to_owned);
        conn.prepare_cached(
            "UPDATE crashes SET group_id = ?2, missing = ?3, home = ?4, variant = ?5 WHERE seq = ?1",
        )?
        .execute(params![
            seq,
            current,
            missing_json(&change.filing.missing),
            change.filing.group_id,
            variant,
        ])?;
        if old.group_id != current {
            emptied.retain(|(from, _)| *from != old.group_id);
            emptied.push((old.group_id.clone(), current.clone()));
        }
        add_counts(
            conn,
            &Counted {
                group_id: current,
                missing: change.filing.missing.clone(),
                variant,
                ..old
            },
        )?;
        changed += 1;
    }
    for (from, to) in emptied {
        super::triage::alias_if_empty(conn, &from, &to)?;
    }
    Ok(changed)
}

/// Files the crash `seq` in group `to` (a merge, an unmerge), counters and all.
pub(super) fn move_crash(conn: &Connection, seq: i64, to: &str) -> Result<(), StoreError> {
    let Some(old) = counted(conn, seq)? else {
        return Ok(());
    };
    if old.group_id == to {
        return Ok(());
    }
    remove_counts(conn, &old)?;
    conn.prepare_cached("UPDATE crashes SET group_id = ?2 WHERE seq = ?1")?
        .execute(params![seq, to])?;
    add_counts(
        conn,
        &Counted {
            group_id: to.to_owned(),
            ..old
        },
    )
}

fn nonce_matches(conn: &Connection, seq: i64, nonce: i64) -> Result<bool, StoreError> {
    let stored: Option<i64> = conn
        .prepare_cached("SELECT nonce FROM crashes WHERE seq = ?1")?
        .query_row([seq], |row| row.get(0))
        .optional()?;
    Ok(stored.is_some_and(|stored| {
        use subtle::ConstantTimeEq;
        bool::from(stored.to_le_bytes().ct_eq(&nonce.to_le_bytes()))
    }))
}

/// Deletes the crash `id` and its share of every counter. False when there was none.
pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let Some((seq, nonce)) = parse_crash_id(id) else {
        return Ok(false);
    };
    if !nonce_matches(conn, seq, nonce)? {
        return Ok(false);
    }
    delete_seq(conn, seq)
}

fn delete_seq(conn: &Connection, seq: i64) -> Result<bool, StoreError> {
    let Some(old) = counted(conn, seq)? else {
        return Ok(false);
    };
    remove_counts(conn, &old)?;
    conn.prepare_cached("DELETE FROM crashes WHERE seq = ?1")?
        .execute([seq])?;
    Ok(true)
}

/// Deletes up to `limit` crashes received before `cutoff_ms`, oldest first. Returns how
/// many; fewer than `limit` means none is left.
pub(super) fn prune(conn: &Connection, cutoff_ms: i64, limit: usize) -> Result<usize, StoreError> {
    let seqs: Vec<i64> = conn
        .prepare_cached(
            "SELECT seq FROM crashes WHERE received_at < ?1 ORDER BY received_at LIMIT ?2",
        )?
        .query_map(params![cutoff_ms, limit as i64], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for &seq in &seqs {
        deleted += usize::from(delete_seq(conn, seq)?);
    }
    // Counted as deleted, not as found: rows that cannot be deleted end the caller's
    // loop instead of being found again forever.
    Ok(deleted)
}

/// Reads one crash by id; `None` when absent or when the nonce does not match.
pub(super) fn get(conn: &Connection, id: &str) -> Result<Option<StoredCrash>, StoreError> {
    let Some((seq, nonce)) = parse_crash_id(id) else {
        return Ok(None);
    };
    if !nonce_matches(conn, seq, nonce)? {
        return Ok(None);
    }
    let mut rows = read_crashes(conn, "c.seq = ?1", params![seq], Damaged::Fail)?;
    Ok(rows.pop())
}

/// Crash rows matching `condition` (over `crashes c`), as [`StoredCrash`] with their seq.
pub(super) fn read_crashes(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
    damaged: Damaged,
) -> Result<Vec<StoredCrash>, StoreError> {
    read_crashes_seq(conn, condition, params, damaged)
        .map(|rows| rows.into_iter().map(|(_, c)| c).collect())
}

/// What a read does with a record that no longer inflates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Damaged {
    /// Fails the read: one crash asked for by id.
    Fail,
    /// Skips it with a warning: a page for background work, which one damaged record
    /// must not stop forever.
    Skip,
}

pub(super) fn read_crashes_seq(
    conn: &Connection,
    condition: &str,
    params: impl rusqlite::Params,
    damaged: Damaged,
) -> Result<Vec<(i64, StoredCrash)>, StoreError> {
    let sql = format!(
        "SELECT c.seq, c.nonce, c.received_at, c.device, c.release, c.group_id, g.signature,
                c.missing, c.record_format, c.record, coalesce(c.home, c.group_id), c.variant,
                g.app, c.os, c.device_model, g.title, g.culprit
         FROM crashes c JOIN groups g ON g.id = coalesce(c.home, c.group_id) WHERE {condition}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, |row| {
        let seq: i64 = row.get(0)?;
        let id = crash_id(seq, row.get(1)?);
        let crash = StoredCrash {
            received_at: ms_to_rfc3339(row.get(2)?),
            device_hash: row.get::<_, Option<Vec<u8>>>(3)?.map(hex::encode),
            release: row.get(4)?,
            group_id: row.get(5)?,
            facts: CrashFacts {
                app: row.get(12)?,
                os: row.get(13)?,
                device_model: row.get(14)?,
            },
            filing: Filing {
                signature: row.get(6)?,
                group_id: row.get(10)?,
                missing: parse_missing(row.get(7)?),
                variant: row.get::<_, Option<String>>(11)?.unwrap_or_default(),
                title: row.get(15)?,
                culprit: row.get(16)?,
            },
            id,
            record: Vec::new(),
        };
        Ok((seq, crash, row.get::<_, i64>(8)?, row.get::<_, Vec<u8>>(9)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, mut crash, format, raw) = row?;
        crash.record = match (decompress(&crash.id, format, &raw), damaged) {
            (Ok(record), _) => record,
            (Err(err), Damaged::Fail) => return Err(err),
            (Err(err), Damaged::Skip) => {
                tracing::warn!(error = %err, "a damaged crash record was skipped");
                continue;
            }
        };
        out.push((seq, crash));
    }
    Ok(out)
}

/// A mismatch between a stored counter and a recount from the crash rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub what: String,
    pub stored: i64,
    pub recounted: i64,
}

/// Recounts every counter from the crash rows and lists where they differ.
pub(super) fn audit(conn: &Connection) -> Result<Vec<Mismatch>, StoreError> {
    // Each check: (what, SQL returning key, stored, recounted) rows that differ.
    let spreads: Vec<(String, String)> = [
        ("os", "group_os"),
        ("device_model", "group_device_models"),
        ("variant", "group_variants"),
    ]
    .iter()
    .map(|(column, table)| {
        (
            format!("group {column} crashes"),
            format!(
                "SELECT k.group_id || ' ' || k.{column}, coalesce(t.crashes, 0), count(c.seq)
                 FROM (SELECT group_id, {column} FROM {table}
                       UNION SELECT group_id, {column} FROM crashes WHERE {column} IS NOT NULL) k
                 LEFT JOIN {table} t ON t.group_id = k.group_id AND t.{column} = k.{column}
                 LEFT JOIN crashes c ON c.group_id = k.group_id AND c.{column} = k.{column}
                 GROUP BY k.group_id, k.{column}"
            ),
        )
    })
    .collect();
    let checks: [(&str, &str); 10] = [
        (
            "group device crashes",
            "SELECT hex(k.group_id) || ' ' || hex(k.device), coalesce(d.crashes, 0), count(c.seq)
             FROM (SELECT group_id, device FROM group_devices
                   UNION SELECT group_id, device FROM crashes WHERE device IS NOT NULL) k
             LEFT JOIN group_devices d ON d.group_id = k.group_id AND d.device = k.device
             LEFT JOIN crashes c ON c.group_id = k.group_id AND c.device = k.device
             GROUP BY k.group_id, k.device",
        ),
        (
            "release device crashes",
            "SELECT k.release || ' ' || hex(k.device), coalesce(d.crashes, 0), count(c.seq)
             FROM (SELECT release, device FROM release_devices
                   UNION SELECT release, device FROM crashes
                   WHERE release IS NOT NULL AND device IS NOT NULL) k
             LEFT JOIN release_devices d ON d.release = k.release AND d.device = k.device
             LEFT JOIN crashes c ON c.release = k.release AND c.device = k.device
             GROUP BY k.release, k.device",
        ),
        (
            "missing release crashes",
            "SELECT k.debug_id || ' ' || k.release, coalesce(m.crashes, 0),
                    (SELECT count(*) FROM crash_missing x JOIN crashes c ON c.seq = x.seq
                     WHERE x.debug_id = k.debug_id AND c.release = k.release AND x.listed)
             FROM (SELECT debug_id, release FROM missing_releases
                   UNION SELECT x.debug_id, c.release FROM crash_missing x
                   JOIN crashes c ON c.seq = x.seq WHERE c.release IS NOT NULL AND x.listed) k
             LEFT JOIN missing_releases m ON m.debug_id = k.debug_id AND m.release = k.release",
        ),
        (
            "group count",
            "SELECT g.id, g.count, (SELECT count(*) FROM crashes c WHERE c.group_id = g.id)
             FROM groups g",
        ),
        (
            "group devices",
            "SELECT g.id, g.devices, (SELECT count(DISTINCT device) FROM crashes c
                                      WHERE c.group_id = g.id AND c.device IS NOT NULL)
             FROM groups g",
        ),
        (
            "group release crashes",
            "SELECT k.group_id || ' ' || k.release, coalesce(r.crashes, 0), count(c.seq)
             FROM (SELECT group_id, release FROM group_releases
                   UNION SELECT group_id, release FROM crashes WHERE release IS NOT NULL) k
             LEFT JOIN group_releases r ON r.group_id = k.group_id AND r.release = k.release
             LEFT JOIN crashes c ON c.group_id = k.group_id AND c.release = k.release
             GROUP BY k.group_id, k.release",
        ),
        (
            "group hour crashes",
            "SELECT k.group_id || ' ' || k.hour, coalesce(h.crashes, 0),
                    (SELECT count(*) FROM crashes c WHERE c.group_id = k.group_id
                     AND c.received_at / 3600000 = k.hour)
             FROM (SELECT group_id, hour FROM group_hours
                   UNION SELECT group_id, received_at / 3600000 FROM crashes) k
             LEFT JOIN group_hours h ON h.group_id = k.group_id AND h.hour = k.hour",
        ),
        (
            "release crashes",
            "SELECT r.name, r.crashes, (SELECT count(*) FROM crashes c WHERE c.release = r.name)
             FROM releases r",
        ),
        (
            "release devices",
            "SELECT r.name, r.devices, (SELECT count(DISTINCT device) FROM crashes c
                                        WHERE c.release = r.name AND c.device IS NOT NULL)
             FROM releases r",
        ),
        (
            "missing crashes",
            "SELECT k.debug_id, coalesce(m.crashes, 0),
                    (SELECT count(*) FROM crash_missing x WHERE x.debug_id = k.debug_id AND x.listed)
             FROM (SELECT debug_id FROM missing_debug_files
                   UNION SELECT debug_id FROM crash_missing WHERE listed) k
             LEFT JOIN missing_debug_files m ON m.debug_id = k.debug_id",
        ),
    ];
    let mut out = Vec::new();
    let all = checks.iter().map(|(what, sql)| (*what, *sql)).chain(
        spreads
            .iter()
            .map(|(what, sql)| (what.as_str(), sql.as_str())),
    );
    for (what, sql) in all {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (key, stored, recounted) = row?;
            if stored != recounted {
                out.push(Mismatch {
                    what: format!("{what} {key}"),
                    stored,
                    recounted,
                });
            }
        }
    }
    // Trends, once refreshed for this hour, equal a recount.
    let hour = hour_of(super::unix_ms(time::OffsetDateTime::now_utc()));
    let refreshed: Option<i64> = conn
        .query_row(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'trend_hour'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if refreshed == Some(hour) {
        let mut stmt = conn.prepare(&format!(
            "SELECT g.id, g.trend, {} FROM groups g",
            super::triage::TREND_OF_G
        ))?;
        let rows = stmt.query_map([hour], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (id, stored, recounted) = row?;
            if stored != recounted {
                out.push(Mismatch {
                    what: format!("group trend {id}"),
                    stored,
                    recounted,
                });
            }
        }
    }
    // The index of crashes needing a debug id must match the crash rows' lists.
    let listed: i64 = conn.query_row("SELECT count(*) FROM crash_missing", [], |r| r.get(0))?;
    let mut from_rows = 0i64;
    let mut stmt = conn.prepare("SELECT missing FROM crashes WHERE missing IS NOT NULL")?;
    for missing in stmt.query_map([], |row| row.get::<_, Option<String>>(0))? {
        from_rows += parse_missing(missing?).len() as i64;
    }
    if listed != from_rows {
        out.push(Mismatch {
            what: "crash_missing rows".into(),
            stored: listed,
            recounted: from_rows,
        });
    }
    Ok(out)
}
