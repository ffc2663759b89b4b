//! The façade HTTP handlers call. It owns the store, the debug-file store, the tokens
//! and the metrics, and decides where work runs: CPU-heavy symbolic work goes to the
//! blocking pool behind a semaphore, never onto the async executor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::auth::{AuthError, Scope, TokenStore};
use crate::config::Config;
use crate::debug_files::{DebugFileStore, IngestError, IngestReport, UploadMeta};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Why the app could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
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
}

impl App {
    /// Opens the store, the dsyms dir and the tokens under `config`'s dirs.
    pub fn open(config: Config) -> Result<Self, StartError> {
        let store = Store::open(&config.data_dir)?;
        let debug_files =
            DebugFileStore::open(&config.dsyms_dir, store.clone(), config.ingest_limits).map_err(
                |source| StartError::DsymsDir {
                    path: config.dsyms_dir.clone(),
                    source,
                },
            )?;
        let tokens = TokenStore::open(&config.data_dir)?;
        let conversions = Semaphore::new(config.conversion_workers.max(1));
        Ok(App {
            inner: Arc::new(Inner {
                config,
                store,
                debug_files,
                tokens,
                metrics: Metrics::default(),
                conversions,
            }),
        })
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
        let token = token.ok_or(Denied::Missing)?;
        let scope = self.inner.tokens.check(token).ok_or(Denied::Unknown)?;
        if scope.grants(need) {
            Ok(scope)
        } else {
            Err(Denied::Scope { have: scope, need })
        }
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

    /// Whether the store and the dsyms dir are usable.
    pub fn ready(&self) -> Result<(), String> {
        self.inner.store.check().map_err(|e| e.to_string())?;
        self.inner
            .debug_files
            .check_writable()
            .map_err(|e| format!("dsyms dir: {e}"))
    }

    /// Flushes the store; called once the server has stopped taking requests.
    pub fn shutdown(&self) -> Result<(), StoreError> {
        self.inner.store.flush()
    }

    /// Where upload bodies are spooled.
    pub fn new_upload_path(&self) -> PathBuf {
        self.inner.debug_files.new_upload_path()
    }

    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }
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
