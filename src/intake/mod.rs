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
    // Only reports without an incident id need the content hash; most have one.
    let content = std::cell::OnceCell::new();
    let mut records = Vec::with_capacity(reports.len());
    for (index, mut report) in reports.into_iter().enumerate() {
        let scrubbed = scrub(&mut report, secret);
        // The incident id names a report across retries; without one, the bytes do.
        let identity = scrubbed.incident_hash.unwrap_or_else(|| {
            let content = content.get_or_init(|| hex::encode(Sha256::digest(bytes)));
            keyed_hash(secret, "content", &format!("{content}/{index}"))
        });
        let analysis = analyze(&report, source);
        records.push(CrashRecord {
            // The store names a crash by where it puts it.
            id: String::new(),
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

#[cfg(test)]
mod store_tests {
    use super::*;
    use crate::store::EncodedCrash;
    use crate::symbolicate::NoDebugFiles;

    const REPORT: &str = r#"{"crashbox":1,"app":{"name":"App","version":"1.0","build":"1"},
        "exception":{"type":"EXC_BAD_ACCESS"},
        "images":[{"name":"App","path":"/var/containers/Bundle/Application/X/App.app/App",
                   "uuid":"54039061-a983-3323-a49d-837a894d667f","load_address":"0x1000","size":4096}],
        "threads":[{"crashed":true,"frames":["0x1010"]}]}"#;

    fn store_with(ages_in_days: &[i64]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (i, age) in ages_in_days.iter().enumerate() {
            let now = time::OffsetDateTime::now_utc() - time::Duration::days(*age);
            // A distinct incident per crash, so none is a duplicate.
            let report = REPORT.replace(
                "\"crashbox\":1",
                &format!("\"crashbox\":1,\"incident_id\":\"i{i}\""),
            );
            let records = prepare(
                report.as_bytes(),
                &ParseLimits::default(),
                b"k",
                &NoDebugFiles,
                now,
            )
            .unwrap();
            let encoded = records
                .into_iter()
                .map(|r| EncodedCrash::new(r).unwrap())
                .collect();
            let inserted = runtime.block_on(store.insert_crashes(encoded)).unwrap();
            assert!(inserted[0].created);
        }
        (dir, store)
    }

    #[test]
    fn retention_prunes_old_crashes_with_their_counts() {
        let (_dir, store) = store_with(&[100, 95, 1]);
        let groups = store.groups().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].count, 3);
        assert_eq!(store.missing_debug_files().unwrap()[0].crash_count, 3);
        let cutoff = time::OffsetDateTime::now_utc() - time::Duration::days(90);
        assert_eq!(store.prune_crashes_before(cutoff).unwrap(), 2);
        assert_eq!(store.groups().unwrap()[0].count, 1);
        assert_eq!(store.missing_debug_files().unwrap()[0].crash_count, 1);
        assert_eq!(store.crashes_in_group(&groups[0].id).unwrap().len(), 1);
        assert_eq!(store.prune_crashes_before(cutoff).unwrap(), 0);
    }

    #[test]
    fn the_resymbolication_queue_survives_a_restart() {
        let (dir, store) = store_with(&[0]);
        let ticket = store
            .enqueue_resymbolication(&["54039061-a983-3323-a49d-837a894d667f".into()])
            .unwrap();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(store.durable(ticket))
            .unwrap();
        drop(store);
        // The flusher and writer threads let go of the database when the store drops.
        let mut reopened = None;
        for _ in 0..100 {
            match Store::open(dir.path()) {
                Ok(store) => {
                    reopened = Some(store);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        let store = reopened.expect("the store reopens");
        let (key, debug_id) = store.next_resymbolication().unwrap().unwrap();
        assert_eq!(debug_id, "54039061-a983-3323-a49d-837a894d667f");
        assert_eq!(
            store.crashes_needing(&debug_id).unwrap().len(),
            1,
            "the crash still needs it"
        );
        store.dequeue_resymbolication(&key).unwrap();
        assert!(store.next_resymbolication().unwrap().is_none());
    }
}
