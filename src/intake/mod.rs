//! Crash intake: the pipeline from report bytes to stored crash, and the
//! re-symbolication a late debug file triggers.
//!
//! ```text
//! bytes → report::parse → scrub::scrub → symbolicate → signature → group id
//!       → store (one atomic batch per upload) → flush (group commit) → 2xx
//! ```
//!
//! Nothing here knows about HTTP; `App` runs [`prepare`] on the blocking pool and
//! waits for durability on the executor. The raw bytes are only hashed (for the
//! identity of reports without an incident id) and never stored.

use sha2::{Digest, Sha256};

use crate::render::signature;
use crate::report::{self, CrashReport, ParseError, ParseLimits};
use crate::scrub::{keyed_hash, scrub};
use crate::store::{CrashRecord, NeededDebugFile, Store, StoreError};
use crate::symbolicate::{release_of, symbolicate, DebugFileSource};

/// Why a report was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntakeError {
    /// A stable machine-readable code for API answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            IntakeError::Parse(err) => match err.kind {
                report::ParseErrorKind::TooLarge => "report_too_large",
                report::ParseErrorKind::Invalid => "invalid_report",
                report::ParseErrorKind::Empty => "empty_report",
                report::ParseErrorKind::InvalidUtf8 => "invalid_utf8",
                report::ParseErrorKind::UnknownFormat => "unknown_format",
                _ => "unparseable_report",
            },
            IntakeError::Store(_) => "store_error",
        }
    }
}

/// What symbolication decides about a crash: the parts a stored record keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    pub signature: String,
    pub group_id: String,
    pub missing: Vec<NeededDebugFile>,
}

/// Symbolicates `report` and derives its signature, group and missing debug files.
pub fn analyze(report: &CrashReport, source: &dyn DebugFileSource) -> Analysis {
    let crash = symbolicate(report, source);
    let signature = signature(report, &crash);
    let mut missing: Vec<NeededDebugFile> = crash
        .missing_debug_ids()
        // System libraries have no dSYM a team could upload; listing them would bury
        // the app's own missing dSYMs.
        .filter(|image| image.in_app)
        .filter_map(|image| {
            Some(NeededDebugFile {
                debug_id: image.debug_id.clone()?,
                name: image.name.clone(),
            })
        })
        .collect();
    missing.sort_by(|a, b| a.debug_id.cmp(&b.debug_id));
    missing.dedup_by(|a, b| a.debug_id == b.debug_id);
    Analysis {
        group_id: group_id(&signature),
        signature,
        missing,
    }
}

/// A group's id: derived from its signature, so it needs no lookup table.
pub fn group_id(signature: &str) -> String {
    hex::encode(&Sha256::digest(signature.as_bytes())[..8])
}

/// A new crash id: milliseconds since the epoch then random bits, in fixed-width hex,
/// so ids sort by arrival time.
pub fn new_crash_id(now: time::OffsetDateTime) -> String {
    let millis = (now.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    format!("{millis:012x}{:08x}", rand::random::<u32>())
}

/// The id prefix of crashes received at `when`; ids below it are older.
pub fn crash_id_at(when: time::OffsetDateTime) -> String {
    let millis = (when.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
    format!("{millis:012x}")
}

/// Parses, scrubs and symbolicates one upload into the records to store (several for
/// a MetricKit payload).
pub fn prepare(
    bytes: &[u8],
    limits: &ParseLimits,
    secret: &[u8],
    source: &dyn DebugFileSource,
    now: time::OffsetDateTime,
) -> Result<Vec<CrashRecord>, ParseError> {
    let reports = report::parse(bytes, limits)?;
    let received_at = now
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let content = hex::encode(Sha256::digest(bytes));
    let mut records = Vec::with_capacity(reports.len());
    for (index, mut report) in reports.into_iter().enumerate() {
        let scrubbed = scrub(&mut report, secret);
        // The incident id names a report across retries; without one, the bytes do.
        let identity = scrubbed
            .incident_hash
            .unwrap_or_else(|| keyed_hash(secret, "content", &format!("{content}/{index}")));
        let analysis = analyze(&report, source);
        records.push(CrashRecord {
            id: new_crash_id(now),
            received_at: received_at.clone(),
            identity,
            device_hash: scrubbed.device_hash,
            release: release_of(&report),
            signature: analysis.signature,
            group_id: analysis.group_id,
            missing: analysis.missing,
            scrub: scrubbed.summary,
            report,
        });
    }
    Ok(records)
}

/// Symbolicates again every stored crash that lacked `debug_id`, moving it to the group
/// its new signature names. Returns how many crashes changed.
pub fn resymbolicate(
    store: &Store,
    source: &dyn DebugFileSource,
    debug_id: &str,
) -> Result<usize, StoreError> {
    let mut changed = 0;
    for id in store.crashes_needing(debug_id)? {
        let updated = store.update_crash(&id, |old| {
            let analysis = analyze(&old.report, source);
            let same = analysis.signature == old.signature && analysis.missing == old.missing;
            (!same).then(|| CrashRecord {
                signature: analysis.signature,
                group_id: analysis.group_id,
                missing: analysis.missing,
                ..old.clone()
            })
        })?;
        changed += usize::from(updated.is_some());
    }
    Ok(changed)
}

/// Deletes crashes received before `cutoff`. Returns how many.
pub fn prune(store: &Store, cutoff: time::OffsetDateTime) -> Result<usize, StoreError> {
    let mut pruned = 0;
    for id in store.crashes_before(&crash_id_at(cutoff))? {
        pruned += usize::from(store.delete_crash(&id)?.0);
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_ids_sort_by_time() {
        let early = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let late = early + time::Duration::milliseconds(1);
        let (a, b) = (new_crash_id(early), new_crash_id(late));
        assert!(a < b);
        assert_eq!(a.len(), 20);
        assert!(b.as_str() >= crash_id_at(late).as_str());
        assert!(a.as_str() < crash_id_at(late).as_str());
    }
}
