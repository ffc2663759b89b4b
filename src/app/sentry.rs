//! The App's Sentry-compatible work: chunks, assembles (run in the background and
//! resumed after a restart), the 2.x legacy upload, envelopes and their rate limits.
//! `crate::sentry` holds the protocol pieces; this decides where the work runs and
//! hands files and crashes to the same ingestion `POST /api/v1/dsyms` and
//! `POST /api/v1/crashes` use.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::App;
use crate::config::Config;
use crate::debug_files::{IngestError, UploadMeta};
use crate::intake::IntakeError;
use crate::report::ParseError;
use crate::sentry::chunks::{ChunkError, ChunkStore};
use crate::sentry::envelope::{self, Encoding, Envelope, EnvelopeError, ItemKind};
use crate::sentry::rate::RateLimiter;
use crate::sentry::Dif;
use crate::store::{Inserted, SentryFileRow, SentryFileState, StoreError};

/// Envelopes up to this size are read on the executor thread, like small reports.
const INLINE_ENVELOPE_BYTES: usize = 64 * 1024;

/// The App's Sentry state.
pub(super) struct SentryState {
    chunks: ChunkStore,
    /// Checksums whose assembly runs in this process, so neither a poll nor the resume
    /// at start runs one twice.
    running: Mutex<HashSet<String>>,
    per_token: RateLimiter,
    per_address: RateLimiter,
}

impl SentryState {
    pub(super) fn open(config: &Config) -> io::Result<Self> {
        Ok(SentryState {
            chunks: ChunkStore::open(&config.dsyms_dir.join("chunks"))?,
            running: Mutex::new(HashSet::new()),
            per_token: RateLimiter::new(config.sentry.rate_per_token),
            per_address: RateLimiter::new(config.sentry.rate_per_address),
        })
    }
}

/// One file an assemble call names.
#[derive(Debug, Clone)]
pub struct AssembleFile {
    /// SHA-1 of the whole file (checked by the caller with `is_sha1_hex`).
    pub checksum: String,
    pub name: String,
    pub debug_id: Option<String>,
    /// The chunks' SHA-1s in order (checked by the caller).
    pub chunks: Vec<String>,
}

/// What an assemble call answers for one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssembleState {
    NotFound,
    Assembling,
    Ok,
    Error,
}

impl AssembleState {
    pub fn as_str(self) -> &'static str {
        match self {
            AssembleState::NotFound => "not_found",
            AssembleState::Assembling => "assembling",
            AssembleState::Ok => "ok",
            AssembleState::Error => "error",
        }
    }
}

/// The answer for one file of an assemble call.
#[derive(Debug, Clone)]
pub struct AssembleAnswer {
    pub state: AssembleState,
    pub missing_chunks: Vec<String>,
    pub detail: Option<String>,
    pub dif: Option<Dif>,
}

impl AssembleAnswer {
    fn new(state: AssembleState) -> Self {
        AssembleAnswer {
            state,
            missing_chunks: Vec::new(),
            detail: None,
            dif: None,
        }
    }

    fn error(detail: impl Into<String>) -> Self {
        AssembleAnswer {
            detail: Some(detail.into()),
            ..Self::new(AssembleState::Error)
        }
    }
}

/// Why an envelope was not taken.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeIngestError {
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error(transparent)]
    Intake(#[from] IntakeError),
}

/// What became of an envelope.
#[derive(Debug, Default)]
pub struct EnvelopeOutcome {
    /// The event id to answer with, when the envelope had an event.
    pub event_id: Option<String>,
    /// The crashes stored (or found stored before) from its crash events.
    pub crashes: Vec<Inserted>,
}

/// An envelope read and its events classified, ready for the intake.
pub struct ReadEnvelope {
    /// The public key of the envelope header's DSN.
    pub dsn_key: Option<String>,
    event_id: Option<String>,
    /// Crash event payloads, each with an `event_id`.
    crashes: Vec<Vec<u8>>,
    not_crashes: usize,
    sessions: Vec<(ItemKind, Vec<u8>)>,
    skipped: Vec<ItemKind>,
}

impl App {
    fn sentry(&self) -> &SentryState {
        &self.inner.sentry
    }

    /// Resumes assemblies a restart interrupted and starts the chunk sweep. Called once
    /// the server runs (it needs the async runtime).
    pub fn start_sentry_background(&self) {
        let app = self.clone();
        tokio::spawn(async move {
            match app
                .blocking(|app| app.inner.store.sentry_files_assembling())
                .await
            {
                Ok(rows) => {
                    if !rows.is_empty() {
                        tracing::info!(files = rows.len(), "resuming sentry-cli assemblies");
                    }
                    for row in rows {
                        app.spawn_assembly(row);
                    }
                }
                Err(err) => tracing::error!(error = %err, "cannot resume sentry-cli assemblies"),
            }
            let expiry = app.config().sentry.chunk_expiry;
            let every = (expiry / 2).clamp(Duration::from_millis(500), Duration::from_secs(600));
            loop {
                tokio::time::sleep(every).await;
                app.sweep_chunks().await;
            }
        });
    }

    /// Deletes chunks older than the expiry that no unfinished assembly claims.
    async fn sweep_chunks(&self) {
        let app = self.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let keep: HashSet<String> = app
                .inner
                .store
                .sentry_files_assembling()?
                .into_iter()
                .flat_map(|row| row.chunks)
                .collect();
            app.sentry()
                .chunks
                .sweep(app.config().sentry.chunk_expiry, &keep)
                .map_err(|e| StoreError::Task(format!("chunk sweep: {e}")))
        })
        .await;
        match swept {
            Ok(Ok(0)) => {}
            Ok(Ok(removed)) => tracing::info!(removed, "expired sentry-cli chunks deleted"),
            Ok(Err(err)) => tracing::warn!(error = %err, "chunk sweep failed"),
            Err(err) => tracing::warn!(error = %err, "chunk sweep task failed"),
        }
    }

    /// Verifies and keeps one uploaded chunk, on the blocking pool.
    pub async fn put_chunk(
        &self,
        name: String,
        body: bytes::Bytes,
        gzip: bool,
    ) -> Result<(), ChunkError> {
        let app = self.clone();
        let max = self.config().sentry.chunk_size;
        let result =
            tokio::task::spawn_blocking(move || app.sentry().chunks.put(&name, &body, gzip, max))
                .await
                .unwrap_or_else(|join| Err(ChunkError::Io(io::Error::other(join.to_string()))));
        let outcome = match &result {
            Ok(()) => "stored",
            Err(err) => err.code(),
        };
        self.metrics()
            .sentry_chunks
            .with_label_values(&[outcome])
            .inc();
        result
    }

    /// Answers an assemble call: each file's state, starting the assembly of files
    /// whose chunks are all here.
    pub async fn assemble(
        &self,
        files: Vec<AssembleFile>,
    ) -> Result<Vec<(String, AssembleAnswer)>, StoreError> {
        let checksums: Vec<String> = files.iter().map(|f| f.checksum.clone()).collect();
        let rows = self
            .blocking(move |app| app.inner.store.sentry_files(&checksums))
            .await?;
        let mut answers = Vec::with_capacity(files.len());
        for file in files {
            let answer = match rows.iter().find(|r| r.checksum == file.checksum) {
                Some(row) => self.answer_for(row.clone()).await?,
                None => self.begin(file.clone()).await?,
            };
            answers.push((file.checksum, answer));
        }
        Ok(answers)
    }

    /// The answer for a file with a stored state.
    async fn answer_for(&self, row: SentryFileRow) -> Result<AssembleAnswer, StoreError> {
        Ok(match row.state {
            SentryFileState::Ok => AssembleAnswer {
                dif: row
                    .dif
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok()),
                ..AssembleAnswer::new(AssembleState::Ok)
            },
            SentryFileState::Assembling => {
                // After a restart nothing runs it until someone asks (or the resume).
                self.spawn_assembly(row);
                AssembleAnswer::new(AssembleState::Assembling)
            }
            SentryFileState::Error => {
                // Answered once; the next upload of the file starts afresh.
                let detail = row.detail.unwrap_or_else(|| "assembly failed".into());
                self.inner.store.forget_sentry_error(row.checksum).await?;
                AssembleAnswer::error(detail)
            }
        })
    }

    /// A file without a state: which chunks are missing, or start assembling it.
    async fn begin(&self, file: AssembleFile) -> Result<AssembleAnswer, StoreError> {
        if file.chunks.is_empty() {
            // sentry-cli drops a file answered `not_found` with no chunks.
            return Ok(AssembleAnswer::new(AssembleState::NotFound));
        }
        let app = self.clone();
        let chunks = file.chunks.clone();
        // A chunk past half its expiry counts as missing, so the CLI uploads it again
        // (which renews it) rather than trusting one the sweep may take meanwhile.
        let fresh_for = self.config().sentry.chunk_expiry / 2;
        let (missing, total) = tokio::task::spawn_blocking(move || {
            let mut missing: Vec<String> = Vec::new();
            let mut total: u64 = 0;
            for chunk in &chunks {
                match app.sentry().chunks.fresh_size(chunk, fresh_for) {
                    Some(size) => total += size,
                    None if !missing.contains(chunk) => missing.push(chunk.clone()),
                    None => {}
                }
            }
            (missing, total)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?;
        if !missing.is_empty() {
            return Ok(AssembleAnswer {
                missing_chunks: missing,
                ..AssembleAnswer::new(AssembleState::NotFound)
            });
        }
        let limit = self.config().max_dsym_upload_bytes;
        if total > limit {
            self.metrics()
                .sentry_assemblies
                .with_label_values(&["error"])
                .inc();
            return Ok(AssembleAnswer::error(format!(
                "the file is {total} bytes, over the limit of {limit}"
            )));
        }
        let row = SentryFileRow {
            checksum: file.checksum,
            state: SentryFileState::Assembling,
            name: file.name,
            debug_id: file.debug_id,
            chunks: file.chunks,
            detail: None,
            dif: None,
        };
        match self.inner.store.begin_sentry_assembly(row.clone()).await? {
            None => {
                self.spawn_assembly(row);
                Ok(AssembleAnswer::new(AssembleState::Assembling))
            }
            // Another request began it first.
            Some(existing) => self.answer_for(existing).await,
        }
    }

    /// Runs the assembly of `row` in the background, unless this process runs it already.
    fn spawn_assembly(&self, row: SentryFileRow) {
        {
            let mut running = self
                .sentry()
                .running
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !running.insert(row.checksum.clone()) {
                return;
            }
        }
        let app = self.clone();
        tokio::spawn(async move { app.run_assembly(row).await });
    }

    async fn run_assembly(&self, row: SentryFileRow) {
        let checksum = row.checksum.clone();
        let outcome = self.assemble_file(&row).await;
        let mut finished = row.clone();
        match outcome {
            Ok(dif) => {
                finished.state = SentryFileState::Ok;
                finished.dif = serde_json::to_string(&dif).ok();
            }
            Err(detail) => {
                tracing::warn!(detail = %detail, "sentry-cli assembly failed");
                finished.state = SentryFileState::Error;
                finished.detail = Some(detail);
            }
        }
        self.metrics()
            .sentry_assemblies
            .with_label_values(&[finished.state.as_str()])
            .inc();
        if let Err(err) = self.inner.store.put_sentry_files(vec![finished]).await {
            // The row stays `assembling`: the next poll or restart runs it again.
            tracing::error!(error = %err, "cannot record a sentry-cli assembly");
        }
        self.sentry()
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&checksum);
        // The chunks stay until the sweep: another file may share one (a page of zeros)
        // and have been told a moment ago that it need not upload it.
    }

    /// Concatenates the chunks and ingests the file; the error is the detail the CLI
    /// prints.
    async fn assemble_file(&self, row: &SentryFileRow) -> Result<Dif, String> {
        let target = self.new_upload_path();
        let app = self.clone();
        let (chunks, checksum, path) = (row.chunks.clone(), row.checksum.clone(), target.clone());
        let max = self.config().max_dsym_upload_bytes;
        let (size, companion) = tokio::task::spawn_blocking(move || {
            let size = app
                .sentry()
                .chunks
                .concatenate(&chunks, &checksum, max, &path)
                .map_err(|e| e.to_string())?;
            let mut head = Vec::with_capacity(64);
            std::fs::File::open(&path)
                .and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, 64), &mut head))
                .map_err(|e| e.to_string())?;
            let companion = crate::sentry::is_companion_file(&head);
            if companion {
                let _ = std::fs::remove_file(&path);
            }
            Ok::<_, String>((size, companion))
        })
        .await
        .map_err(|e| e.to_string())??;
        if companion {
            return Ok(Dif::companion(
                &row.name,
                row.debug_id.as_deref(),
                &row.checksum,
                size,
            ));
        }
        let meta = UploadMeta {
            release: None,
            name: Some(row.name.clone()),
        };
        let report = self
            .ingest_debug_files(target, meta)
            .await
            .map_err(|e| e.to_string())?;
        let file = report
            .debug_files
            .iter()
            .find(|f| Some(&f.file.debug_id) == row.debug_id.as_ref())
            .or_else(|| report.debug_files.first())
            .ok_or_else(|| "no debug file in the upload".to_owned())?;
        Ok(Dif::new(&file.file, &row.checksum))
    }

    /// The legacy check: which of `checksums` crashbox has no file for.
    pub async fn sentry_missing_checksums(
        &self,
        checksums: Vec<String>,
    ) -> Result<Vec<String>, StoreError> {
        let asked = checksums.clone();
        let rows = self
            .blocking(move |app| app.inner.store.sentry_files(&asked))
            .await?;
        Ok(checksums
            .into_iter()
            .filter(|c| {
                !rows
                    .iter()
                    .any(|r| &r.checksum == c && r.state == SentryFileState::Ok)
            })
            .collect())
    }

    /// The legacy upload (sentry-cli 2.x without chunks): a zip of debug files, spooled
    /// to `path`, ingested like `POST /api/v1/dsyms`. Each stored file's SHA-1 is kept,
    /// so the next legacy check knows it.
    pub async fn sentry_legacy_upload(&self, path: PathBuf) -> Result<Vec<Dif>, IngestError> {
        // Ingest consumes the upload; a second link keeps the bytes for hashing after
        // ingest has validated the zip (so hashing reads nothing ingest would refuse).
        let keep = path.with_extension("hash");
        let linked = std::fs::hard_link(&path, &keep).is_ok();
        let report = self.ingest_debug_files(path, UploadMeta::default()).await;
        let report = match report {
            Ok(report) => report,
            Err(err) => {
                let _ = tokio::fs::remove_file(&keep).await;
                return Err(err);
            }
        };
        let entries = if linked {
            let for_hashing = keep.clone();
            tokio::task::spawn_blocking(move || entry_sha1s(&for_hashing))
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let _ = tokio::fs::remove_file(&keep).await;
        let difs: Vec<Dif> = report
            .debug_files
            .iter()
            .map(|f| {
                let sha1 = entries
                    .iter()
                    .find(|(path, _, _)| *path == f.file.path)
                    .map(|(_, sha1, _)| sha1.as_str())
                    .unwrap_or("");
                Dif::new(&f.file, sha1)
            })
            .collect();
        // Every entry the CLI sent is on the server now, the ones ingest passed over for
        // a richer file of the same debug id included (an app binary beside its dSYM):
        // each is matched to a stored file by its path, else by its base name.
        let mut rows = Vec::new();
        for (path, sha1, companion) in &entries {
            let base = path.rsplit('/').next().unwrap_or(path);
            let Some(file) = report
                .debug_files
                .iter()
                .find(|f| f.file.path == *path)
                .or_else(|| report.debug_files.iter().find(|f| f.file.name == base))
            else {
                if *companion {
                    let dif = Dif::companion(base, None, sha1, 0);
                    rows.push(SentryFileRow {
                        checksum: sha1.clone(),
                        state: SentryFileState::Ok,
                        name: base.to_owned(),
                        debug_id: None,
                        chunks: Vec::new(),
                        detail: None,
                        dif: serde_json::to_string(&dif).ok(),
                    });
                }
                continue;
            };
            rows.push(SentryFileRow {
                checksum: sha1.clone(),
                state: SentryFileState::Ok,
                name: file.file.name.clone(),
                debug_id: Some(file.file.debug_id.clone()),
                chunks: Vec::new(),
                detail: None,
                dif: serde_json::to_string(&Dif::new(&file.file, sha1)).ok(),
            });
        }
        self.inner.store.put_sentry_files(rows).await?;
        Ok(difs)
    }

    /// Takes one envelope from `address` against the per-address rate; over it, how
    /// long until the next is welcome.
    pub fn sentry_rate_address(&self, address: Option<IpAddr>) -> Result<(), Duration> {
        let Some(address) = address else {
            return Ok(());
        };
        let key = match address {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        let result = self.sentry().per_address.check(&key, Instant::now());
        if result.is_err() {
            self.metrics()
                .rate_limited
                .with_label_values(&["address"])
                .inc();
        }
        result
    }

    /// Takes one envelope for `token` against the per-token rate.
    pub fn sentry_rate_token(&self, token: &str) -> Result<(), Duration> {
        let result = self
            .sentry()
            .per_token
            .check(token.as_bytes(), Instant::now());
        if result.is_err() {
            self.metrics()
                .rate_limited
                .with_label_values(&["token"])
                .inc();
        }
        result
    }

    /// Reads an envelope body and classifies its events, on the blocking pool when large.
    pub async fn read_envelope(
        &self,
        body: bytes::Bytes,
        encoding: Encoding,
    ) -> Result<ReadEnvelope, EnvelopeIngestError> {
        // A compressed body may expand a thousandfold or more: only small plain bodies
        // are read on the executor thread.
        let inline = encoding == Encoding::Identity && body.len() <= INLINE_ENVELOPE_BYTES;
        let app = self.clone();
        let work = move || -> Result<ReadEnvelope, EnvelopeIngestError> {
            let limits = app.config().parse_limits();
            let envelope = envelope::read(
                &body,
                encoding,
                &envelope::Limits {
                    max_decompressed: app.config().sentry.max_envelope_decompressed_bytes,
                    max_event: limits.max_bytes,
                },
            )?;
            classify(envelope, &limits).map_err(|e| EnvelopeIngestError::Intake(e.into()))
        };
        let result = if inline {
            work()
        } else {
            tokio::task::spawn_blocking(work)
                .await
                .unwrap_or_else(|join| {
                    Err(IntakeError::Store(StoreError::Task(join.to_string())).into())
                })
        };
        if let Err(EnvelopeIngestError::Envelope(err)) = &result {
            self.metrics()
                .sentry_events
                .with_label_values(&[err.code()])
                .inc();
        }
        result
    }

    /// A plain event body (the `store` endpoint) as an envelope of one event.
    pub async fn read_store_event(
        &self,
        body: bytes::Bytes,
        encoding: Encoding,
    ) -> Result<ReadEnvelope, EnvelopeIngestError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || -> Result<ReadEnvelope, EnvelopeIngestError> {
            let limits = app.config().parse_limits();
            let event = envelope::decompress(&body, encoding, limits.max_bytes as u64)?;
            let envelope = Envelope {
                events: vec![event],
                ..Envelope::default()
            };
            classify(envelope, &limits).map_err(|e| EnvelopeIngestError::Intake(e.into()))
        })
        .await
        .unwrap_or_else(|join| Err(IntakeError::Store(StoreError::Task(join.to_string())).into()))
    }

    /// Counts an envelope's sessions and skipped items and stores its crash events,
    /// each durably, through the intake. When this returns `Ok`, every crash is on disk.
    pub async fn ingest_envelope(
        &self,
        envelope: ReadEnvelope,
    ) -> Result<EnvelopeOutcome, IntakeError> {
        let metrics = self.metrics();
        for kind in &envelope.skipped {
            metrics
                .sentry_items_dropped
                .with_label_values(&[kind.as_str()])
                .inc();
        }
        // Per release: sessions started and sessions crashed (DESIGN.md: `total` when
        // `init`, `crashed` when the status is crashed).
        let mut per_release: Vec<(String, u64, u64)> = Vec::new();
        for (kind, payload) in &envelope.sessions {
            let counts = session_counts(*kind, payload);
            let crashed = counts
                .by_status
                .iter()
                .find(|(status, _)| *status == "crashed")
                .map_or(0, |(_, n)| *n);
            if let Some(release) = &counts.release {
                if counts.started > 0 || crashed > 0 {
                    match per_release.iter_mut().find(|(r, _, _)| r == release) {
                        Some(entry) => {
                            entry.1 += counts.started;
                            entry.2 += crashed;
                        }
                        None => per_release.push((release.clone(), counts.started, crashed)),
                    }
                }
            }
            for (status, count) in counts.by_status {
                metrics
                    .sentry_sessions
                    .with_label_values(&[status])
                    .inc_by(count);
            }
            metrics.sentry_session_starts.inc_by(counts.started);
        }
        metrics
            .sentry_events
            .with_label_values(&["not_crash"])
            .inc_by(envelope.not_crashes as u64);
        let mut outcome = EnvelopeOutcome {
            event_id: envelope.event_id,
            crashes: Vec::new(),
        };
        for crash in envelope.crashes {
            let result = self
                .ingest_crash_as(
                    Some(crate::report::ReportFormat::SentryEvent),
                    bytes::Bytes::from(crash),
                )
                .await;
            let label = match &result {
                Ok(_) => "crash",
                Err(err) => err.code(),
            };
            metrics.sentry_events.with_label_values(&[label]).inc();
            outcome.crashes.extend(result?);
        }
        // After the crashes: an envelope whose crash failed is sent again whole, and
        // its sessions must not count twice.
        if !per_release.is_empty() {
            self.blocking(move |app| app.inner.store.add_sessions(per_release))
                .await?;
        }
        Ok(outcome)
    }
}

/// Sorts an envelope's events into crashes (given the header's `event_id` when they
/// lack one, so a retry is recognised) and the rest.
fn classify(
    envelope: Envelope,
    limits: &crate::report::ParseLimits,
) -> Result<ReadEnvelope, ParseError> {
    let mut read = ReadEnvelope {
        dsn_key: envelope.dsn_key,
        event_id: envelope.event_id.clone(),
        crashes: Vec::new(),
        not_crashes: 0,
        sessions: envelope.sessions,
        skipped: envelope.skipped,
    };
    for event in envelope.events {
        let head = crate::report::sentry_event_head(&event, limits)?;
        if read.event_id.is_none() {
            read.event_id = head.event_id.clone();
        }
        if !head.crash {
            read.not_crashes += 1;
            continue;
        }
        let payload = match (&head.event_id, &envelope.event_id) {
            (None, Some(id)) => with_event_id(&event, id).unwrap_or(event),
            _ => event,
        };
        read.crashes.push(payload);
    }
    Ok(read)
}

/// `payload` (a JSON object) with `"event_id": id` added as its first member. Only for
/// ids of hex digits and dashes, which need no escaping.
fn with_event_id(payload: &[u8], id: &str) -> Option<Vec<u8>> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    let open = payload.iter().position(|b| !b.is_ascii_whitespace())?;
    if payload[open] != b'{' {
        return None;
    }
    let rest = &payload[open + 1..];
    let empty = rest.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    let mut out = Vec::with_capacity(payload.len() + id.len() + 16);
    out.extend_from_slice(&payload[..=open]);
    out.extend_from_slice(format!("\"event_id\":\"{id}\"").as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    Some(out)
}

/// Session statuses a session update may carry.
const SESSION_STATUSES: [&str; 5] = ["ok", "exited", "crashed", "abnormal", "errored"];

/// What one session item counts: updates by status, and sessions started. A `session`
/// item is one update, started when `init` is true (DESIGN.md: a release's `total`);
/// a `sessions` item holds aggregates (`{"aggregates":[{"exited":3,"crashed":1,…}]}`),
/// each session in them counted once as started. Anything unreadable counts once as
/// `invalid`.
#[derive(Debug, PartialEq, Eq)]
struct SessionCounts {
    by_status: Vec<(&'static str, u64)>,
    started: u64,
    /// The release its `attrs.release` names, as crashbox names releases.
    release: Option<String>,
}

fn session_counts(kind: ItemKind, payload: &[u8]) -> SessionCounts {
    #[derive(serde::Deserialize, Default)]
    struct Attrs {
        #[serde(default)]
        release: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Session {
        status: String,
        #[serde(default)]
        init: bool,
        #[serde(default)]
        attrs: Attrs,
    }
    #[derive(serde::Deserialize)]
    struct Aggregates {
        aggregates: Vec<HashMap<String, serde_json::Value>>,
        #[serde(default)]
        attrs: Attrs,
    }
    let release = |attrs: &Attrs| {
        attrs
            .release
            .as_deref()
            .and_then(crate::release::from_sentry)
    };
    let invalid = SessionCounts {
        by_status: vec![("invalid", 1)],
        started: 0,
        release: None,
    };
    match kind {
        ItemKind::Session => match serde_json::from_slice::<Session>(payload) {
            Ok(session) => match SESSION_STATUSES.iter().find(|s| **s == session.status) {
                Some(status) => SessionCounts {
                    by_status: vec![(*status, 1)],
                    started: u64::from(session.init),
                    release: release(&session.attrs),
                },
                None => invalid,
            },
            Err(_) => invalid,
        },
        _ => match serde_json::from_slice::<Aggregates>(payload) {
            Ok(aggregates) => {
                let mut counts = SessionCounts {
                    by_status: Vec::new(),
                    started: 0,
                    release: release(&aggregates.attrs),
                };
                for status in SESSION_STATUSES {
                    let n: u64 = aggregates
                        .aggregates
                        .iter()
                        .filter_map(|a| a.get(status).and_then(serde_json::Value::as_u64))
                        .fold(0u64, u64::saturating_add);
                    if n > 0 {
                        counts.by_status.push((status, n));
                        counts.started = counts.started.saturating_add(n);
                    }
                }
                counts
            }
            Err(_) => invalid,
        },
    }
}

/// The SHA-1 of every file entry of a zip (ingest has validated it: sizes, ratios and
/// paths are within limits), by entry path, and whether it is a companion file
/// ([`crate::sentry::is_companion_file`]). A file that is no zip (a bare object) is one
/// entry with an empty path.
fn entry_sha1s(path: &std::path::Path) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let Ok(file) = std::fs::File::open(path) else {
        return out;
    };
    let Ok(mut zip) = zip::ZipArchive::new(file) else {
        if let Ok(mut file) = std::fs::File::open(path) {
            let mut hasher = Sha1::new();
            let mut writer = HashWriter::new(&mut hasher);
            if io::copy(&mut file, &mut writer).is_ok() {
                let companion = crate::sentry::is_companion_file(&writer.head);
                out.push((String::new(), hex::encode(hasher.finalize()), companion));
            }
        }
        return out;
    };
    for index in 0..zip.len() {
        let Ok(mut entry) = zip.by_index(index) else {
            continue;
        };
        if !entry.is_file() {
            continue;
        }
        let name = entry.name().to_owned();
        let mut hasher = Sha1::new();
        let mut writer = HashWriter::new(&mut hasher);
        if io::copy(&mut entry, &mut writer).is_ok() {
            let companion = crate::sentry::is_companion_file(&writer.head);
            out.push((name, hex::encode(hasher.finalize()), companion));
        }
    }
    out
}

/// Feeds written bytes to a SHA-1, keeping the first few for a look at the format.
struct HashWriter<'a> {
    hasher: &'a mut Sha1,
    head: Vec<u8>,
}

impl<'a> HashWriter<'a> {
    fn new(hasher: &'a mut Sha1) -> Self {
        HashWriter {
            hasher,
            head: Vec::new(),
        }
    }
}

impl io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        let room = 64usize.saturating_sub(self.head.len());
        self.head.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_added_to_events_that_lack_one() {
        assert_eq!(
            with_event_id(b" {\"a\":1}", "abc").unwrap(),
            b" {\"event_id\":\"abc\",\"a\":1}"
        );
        assert_eq!(
            with_event_id(b"{ }", "abc").unwrap(),
            b"{\"event_id\":\"abc\" }"
        );
        assert!(with_event_id(b"{}", "a\"b").is_none());
        assert!(with_event_id(b"[]", "abc").is_none());
    }

    #[test]
    fn sessions_count_by_status() {
        assert_eq!(
            session_counts(
                ItemKind::Session,
                br#"{"status":"crashed","init":true,"attrs":{"release":"app@1.0+7"}}"#
            ),
            SessionCounts {
                by_status: vec![("crashed", 1)],
                started: 1,
                release: Some("app 1.0 (7)".into()),
            }
        );
        assert_eq!(
            session_counts(ItemKind::Session, br#"{"status":"exited"}"#).started,
            0
        );
        assert_eq!(
            session_counts(ItemKind::Session, br#"{"status":"nope"}"#).by_status,
            vec![("invalid", 1)]
        );
        assert_eq!(
            session_counts(
                ItemKind::Sessions,
                br#"{"aggregates":[{"started":"x","exited":3,"crashed":1},{"exited":2}]}"#
            ),
            SessionCounts {
                by_status: vec![("exited", 5), ("crashed", 1)],
                started: 6,
                release: None,
            }
        );
    }
}
