//! The façade HTTP handlers call. It owns the store, the debug-file store, the tokens
//! and the metrics, and decides where work runs: CPU-heavy symbolic work goes to the
//! blocking pool behind a semaphore, never onto the async executor. The Sentry
//! compatibility work (chunks, assembles, envelopes) is in [`sentry`].

pub mod sentry;
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::auth::{AuthError, Identity, Scope, TokenStore};
use crate::config::Config;
use crate::debug_files::{
    DebugFileStore, IngestError, IngestReport, IngestStatus, StoredDebugFiles, UploadMeta,
};
use crate::grouping::Rules;
use crate::intake::{self, CrashRecord, IntakeError};
use crate::metrics::Metrics;
use crate::store::{Inserted, MissingDebugFile, Store, StoreError};
use crate::symbolicate::SymbolicatedCrash;
use crate::triage::TriageError;

/// Reports up to this size are prepared on the executor thread (see `ingest_crash`).
const INLINE_INTAKE_BYTES: usize = 64 * 1024;

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("server secret {path}: {source}")]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("grouping rules: {0}")]
    Rules(#[from] crate::grouping::RulesError),
    #[error("dsyms dir {path}: {source}")]
    DsymsDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shared application state. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    debug_files: DebugFileStore,
    tokens: TokenStore,
    metrics: Metrics,
    /// One permit per conversion worker: at most that many uploads convert at once,
    /// each one object at a time, so memory stays bounded by the largest objects.
    conversions: Semaphore,
    /// Debug files for symbolication, through the shared SymCache cache.
    symbols: Arc<StoredDebugFiles>,
    /// Keys the hashes that replace incident and device ids.
    secret: Vec<u8>,
    /// One permit per core for parsing and symbolicating reports: more would only make
    /// the OS switch between them, and a burst would stretch every request's latency.
    intake_slots: Semaphore,
    /// Wakes the background worker (re-symbolication, retention). Dropping it with
    /// the last `App` stops the worker.
    worker: Mutex<mpsc::Sender<()>>,
    /// sentry-cli chunks, running assemblies and the envelope rate limits.
    sentry: sentry::SentryState,
    /// How crashes are signed: the built-in grouping rules plus the team's file.
    rules: Arc<Rules>,
    /// Keeps the webhook delivery worker running; dropped with the last `App`.
    _webhooks: Mutex<mpsc::Sender<()>>,
}

impl App {
    /// Opens the store, the dsyms dir and the tokens under `config`'s dirs.
    pub fn open(config: Config) -> Result<Self, StartError> {
        // A broken rules file stops the start, before anything is written.
        let rules = Arc::new(match config.grouping_rules_file() {
            Some(path) => Rules::load(&path)?,
            None => Rules::builtin(),
        });
        let store = Store::open(&config.data_dir)?;
        if store.note_grouping_rules(&rules.fingerprint(), intake::RESIGN_ALL)? {
            tracing::info!(
                "grouping rules changed: stored crashes are signed again in the background"
            );
        }
        let debug_files =
            DebugFileStore::open(&config.dsyms_dir, store.clone(), config.ingest_limits).map_err(
                |source| StartError::DsymsDir {
                    path: config.dsyms_dir.clone(),
                    source,
                },
            )?;
        let tokens = TokenStore::open(&config.data_dir)?;
        let conversions = Semaphore::new(config.conversion_workers.max(1));
        let secret_path = config.data_dir.join("secret");
        let secret = load_or_create_secret(&secret_path).map_err(|source| StartError::Secret {
            path: secret_path,
            source,
        })?;
        let symbols = Arc::new(StoredDebugFiles::new(
            debug_files.clone(),
            config.symcache_cache_bytes,
        ));
        let sentry = sentry::SentryState::open(&config).map_err(|source| StartError::DsymsDir {
            path: config.dsyms_dir.join("chunks"),
            source,
        })?;
        store.set_spike_policy(config.webhooks.spike_policy());
        let (webhooks_wake, webhook_wakeups) = mpsc::channel();
        // Links in webhook texts only when the public URL was set: a default listen
        // address is rarely where people reach the server.
        let link_base = config.public_url.as_ref().map(|_| config.public_url());
        crate::webhooks::spawn_worker(store.clone(), config.webhooks, link_base, webhook_wakeups);
        let (wake, wakeups) = mpsc::channel();
        spawn_worker(
            store.clone(),
            symbols.clone(),
            rules.clone(),
            config.retention_days,
            wakeups,
        );
        Ok(App {
            inner: Arc::new(Inner {
                config,
                store,
                debug_files,
                tokens,
                metrics: Metrics::default(),
                conversions,
                symbols,
                secret,
                intake_slots: Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                ),
                worker: Mutex::new(wake),
                sentry,
                rules,
                _webhooks: Mutex::new(webhooks_wake),
            }),
        })
    }

    /// Stores one crash report upload (several crashes for a MetricKit payload). When
    /// this returns `Ok`, the crashes are on disk.
    pub async fn ingest_crash(&self, bytes: bytes::Bytes) -> Result<Vec<Inserted>, IntakeError> {
        self.ingest_crash_as(None, bytes).await
    }

    /// [`App::ingest_crash`] for a report whose format the caller knows.
    pub async fn ingest_crash_as(
        &self,
        format: Option<crate::report::ReportFormat>,
        bytes: bytes::Bytes,
    ) -> Result<Vec<Inserted>, IntakeError> {
        let this = self.clone();
        let result = async {
            let _slot = self.inner.intake_slots.acquire().await;
            let small = bytes.len() <= INLINE_INTAKE_BYTES;
            let prepare = move || {
                let inner = &this.inner;
                let records = intake::prepare_as(
                    format,
                    &bytes,
                    &inner.config.parse_limits(),
                    &inner.secret,
                    inner.symbols.as_ref(),
                    &inner.rules,
                    time::OffsetDateTime::now_utc(),
                )?;
                records
                    .into_iter()
                    .map(CrashRecord::encode)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(IntakeError::from)
            };
            // A typical report parses and symbolicates in about 100 µs: less than
            // handing it to the blocking pool and back costs in thread switches, and
            // the slots keep at most one per core running. Large reports go to the pool.
            let prepared = if small {
                prepare()?
            } else {
                tokio::task::spawn_blocking(prepare)
                    .await
                    .unwrap_or_else(|join| {
                        Err(IntakeError::Store(StoreError::Task(format!(
                            "intake task failed: {join}"
                        ))))
                    })?
            };
            drop(_slot);
            Ok::<_, IntakeError>(self.inner.store.insert_crashes(prepared).await?)
        }
        .await;
        let metrics = self.metrics();
        match &result {
            Ok(inserted) => {
                for crash in inserted {
                    let outcome = if crash.created { "stored" } else { "duplicate" };
                    metrics.crashes.with_label_values(&[outcome]).inc();
                }
            }
            Err(err) => metrics.crashes.with_label_values(&[err.code()]).inc(),
        }
        result
    }

    /// A stored crash, symbolicated with the debug files known now.
    pub async fn crash(
        &self,
        id: String,
    ) -> Result<Option<(CrashRecord, SymbolicatedCrash)>, StoreError> {
        self.blocking(move |app| app.crash_now(&id)).await
    }

    /// [`App::crash`] on the calling thread. Blocking.
    pub fn crash_now(
        &self,
        id: &str,
    ) -> Result<Option<(CrashRecord, SymbolicatedCrash)>, StoreError> {
        let Some(stored) = self.inner.store.crash(id)? else {
            return Ok(None);
        };
        let record = CrashRecord::decode(stored)?;
        let crash = crate::symbolicate::symbolicate(&record.report, self.inner.symbols.as_ref());
        Ok(Some((record, crash)))
    }

    /// The store, for page builders (`web`) running on the blocking pool.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Runs a page build on the blocking pool (store reads, symbolication and the
    /// template all block), with the time it counts from.
    pub async fn page<T: Send + 'static>(
        &self,
        work: impl FnOnce(&App, i64) -> Result<T, TriageError> + Send + 'static,
    ) -> Result<T, TriageError> {
        let app = self.clone();
        let now = crate::store::unix_ms(time::OffsetDateTime::now_utc());
        tokio::task::spawn_blocking(move || work(&app, now))
            .await
            .unwrap_or_else(|join| Err(TriageError::Store(StoreError::Task(join.to_string()))))
    }

    /// Deletes a crash; false when there was none.
    pub async fn delete_crash(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.store.delete_crash(id).await
    }

    /// The missing-dSYM list.
    pub async fn missing_debug_files(&self) -> Result<Vec<MissingDebugFile>, StoreError> {
        self.blocking(|app| app.inner.store.missing_debug_files())
            .await
    }

    /// Runs store work on the blocking pool: store reads block on SQLite.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&App) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || work(&app))
            .await
            .unwrap_or_else(|join| Err(StoreError::Task(join.to_string())))
    }

    fn wake_worker(&self) {
        if let Ok(wake) = self.inner.worker.lock() {
            let _ = wake.send(());
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn tokens(&self) -> &TokenStore {
        &self.inner.tokens
    }

    pub fn debug_files(&self) -> &DebugFileStore {
        &self.inner.debug_files
    }

    /// The scope of a presented token, if it grants `need`.
    pub fn authorize(&self, token: Option<&str>, need: Scope) -> Result<Scope, Denied> {
        self.identify(token, need).map(|identity| identity.scope)
    }

    /// Who a presented token is (scope and name), if it grants `need`.
    pub fn identify(&self, token: Option<&str>, need: Scope) -> Result<Identity, Denied> {
        let token = token.ok_or(Denied::Missing)?;
        let identity = self.inner.tokens.identify(token).ok_or(Denied::Unknown)?;
        if identity.scope.grants(need) {
            Ok(identity)
        } else {
            Err(Denied::Scope {
                have: identity.scope,
                need,
            })
        }
    }

    /// Runs a triage request on the blocking pool (store reads and writes block), with
    /// the time it counts from.
    pub async fn triage<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store, i64) -> Result<T, TriageError> + Send + 'static,
    ) -> Result<T, TriageError> {
        let store = self.inner.store.clone();
        let now = crate::store::unix_ms(time::OffsetDateTime::now_utc());
        tokio::task::spawn_blocking(move || work(&store, now))
            .await
            .unwrap_or_else(|join| Err(TriageError::Store(StoreError::Task(join.to_string()))))
    }

    /// Ingests an upload already spooled to `path`, on the blocking pool.
    pub async fn ingest_debug_files(
        &self,
        path: PathBuf,
        meta: UploadMeta,
    ) -> Result<IngestReport, IngestError> {
        let permit = self.inner.conversions.acquire().await;
        let this = self.clone();
        let result =
            tokio::task::spawn_blocking(move || this.inner.debug_files.ingest(&path, &meta))
                .await
                .unwrap_or_else(|join| {
                    Err(IngestError::Io(std::io::Error::other(format!(
                        "ingest task failed: {join}"
                    ))))
                });
        drop(permit);
        let metrics = self.metrics();
        if let Ok(report) = &result {
            self.after_debug_files(report).await;
        }
        match &result {
            Ok(report) => {
                for file in &report.debug_files {
                    let status = serde_json::to_value(file.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    metrics
                        .debug_files
                        .with_label_values(&[status.as_str()])
                        .inc();
                }
            }
            Err(err) => metrics
                .dsym_uploads_rejected
                .with_label_values(&[err.code()])
                .inc(),
        }
        result
    }

    /// New debug files may complete stored crashes: queue them for the worker.
    async fn after_debug_files(&self, report: &IngestReport) {
        let mut debug_ids = Vec::new();
        for file in &report.debug_files {
            if file.status == IngestStatus::AlreadyPresent {
                continue;
            }
            // A replaced object (binary → dSYM) must not be served from the old cache.
            self.inner
                .symbols
                .invalidate(&file.file.debug_id, &file.file.arch);
            if !debug_ids.contains(&file.file.debug_id) {
                debug_ids.push(file.file.debug_id.clone());
            }
        }
        if debug_ids.is_empty() {
            return;
        }
        match self.inner.store.enqueue_resymbolication(debug_ids).await {
            Ok(()) => self.wake_worker(),
            Err(err) => tracing::error!(error = %err, "cannot queue re-symbolication"),
        }
    }

    /// Whether the store and the dsyms dir are usable.
    pub async fn ready(&self) -> Result<(), String> {
        self.inner.store.check().await.map_err(|e| e.to_string())?;
        let debug_files = self.inner.debug_files.clone();
        tokio::task::spawn_blocking(move || debug_files.check_writable())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("dsyms dir: {e}"))
    }

    /// Flushes the store; called once the server has stopped taking requests.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || store.flush())
            .await
            .unwrap_or_else(|join| Err(StoreError::Task(join.to_string())))
    }

    /// Where upload bodies are spooled.
    pub fn new_upload_path(&self) -> PathBuf {
        self.inner.debug_files.new_upload_path()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }
}

/// The secret that keys identifier hashes: 32 random bytes in `DATA_DIR/secret`
/// (mode 0600), made on first start. Losing it only means retried uploads from before
/// are no longer recognised and device counts restart.
fn load_or_create_secret(path: &Path) -> std::io::Result<Vec<u8>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let secret = crate::util::random_hex(32);
            crate::util::write_atomic(path, secret.as_bytes(), Some(0o600))?;
            secret
        }
        Err(err) => return Err(err),
    };
    hex::decode(text.trim())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// The background worker: drains the durable re-symbolication queue (at start, so a
/// restart resumes it, and whenever debug files arrive), and prunes old crashes.
fn spawn_worker(
    store: Store,
    symbols: Arc<StoredDebugFiles>,
    rules: Arc<Rules>,
    retention_days: u32,
    wakeups: mpsc::Receiver<()>,
) {
    let run = move || {
        let mut last_prune: Option<Instant> = None;
        loop {
            if let Err(err) = drain_resymbolication_queue(&store, symbols.as_ref(), &rules) {
                tracing::error!(error = %err, "re-symbolication stopped; retried on next wake");
            }
            // The trend windows move with the hour; one background job when it turns.
            if let Err(err) = store.refresh_trends() {
                tracing::error!(error = %err, "refreshing group trends failed");
            }
            let hour = Duration::from_secs(3600);
            if retention_days > 0 && last_prune.is_none_or(|at| at.elapsed() >= hour) {
                last_prune = Some(Instant::now());
                let cutoff = time::OffsetDateTime::now_utc()
                    - time::Duration::days(i64::from(retention_days));
                match store.prune_crashes_before(cutoff) {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, retention_days, "old crashes deleted"),
                    Err(err) => tracing::error!(error = %err, "retention failed"),
                }
            }
            match wakeups.recv_timeout(Duration::from_secs(60)) {
                Ok(()) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    };
    if let Err(err) = std::thread::Builder::new()
        .name("crashbox-worker".into())
        .spawn(run)
    {
        tracing::error!(error = %err, "cannot start the background worker");
    }
}

/// Re-symbolicates the crashes of every queued debug id, oldest first, dequeuing each
/// only when done, so a restart resumes where this stopped.
fn drain_resymbolication_queue(
    store: &Store,
    symbols: &StoredDebugFiles,
    rules: &Rules,
) -> Result<(), StoreError> {
    while let Some((key, debug_id)) = store.next_resymbolication()? {
        let changed = if debug_id == intake::RESIGN_ALL {
            intake::resign_all(store, symbols, rules)?
        } else {
            intake::resymbolicate(store, symbols, rules, &debug_id)?
        };
        if changed > 0 {
            tracing::info!(debug_id, changed, "crashes symbolicated again");
        }
        store.dequeue_resymbolication(key)?;
    }
    Ok(())
}

/// Why a request was refused before it did anything.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    #[error("missing `Authorization: Bearer <token>` header")]
    Missing,
    #[error("unknown token")]
    Unknown,
    #[error("a token of scope `{have}` cannot do this; it needs `{need}`")]
    Scope { have: Scope, need: Scope },
}
