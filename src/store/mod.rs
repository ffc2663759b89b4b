//! The embedded store: the only module that imports sled.
//!
//! sled holds the index; large blobs (debug files, SymCaches) live as plain files under
//! the dsyms dir and are owned by `debug_files`. Every value is JSON so that a record
//! can grow fields without a migration; keys are plain strings chosen so that prefix
//! scans answer the questions the API asks.
//!
//! Trees and keys:
//! - `debug_files`: `"{debug_id}/{arch}"` → [`DebugFile`]. A prefix scan on
//!   `"{debug_id}/"` lists every arch of one debug id.
//!
//! The interface is a handful of methods on [`Store`], with no trait in between, so that
//! a shared backend can later replace this file without touching its callers.

use std::path::Path;

use crate::debug_files::DebugFile;

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
}

/// Handle to the embedded store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    debug_files: sled::Tree,
}

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
            // Flushes are explicit (after every committed write batch), so the
            // background flusher only needs to mop up.
            .flush_every_ms(Some(1000))
            .open()?;
        let debug_files = db.open_tree("debug_files")?;
        Ok(Store { db, debug_files })
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
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
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
