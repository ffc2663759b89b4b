//! The debug-file store: what CI uploads, indexed by debug id and arch.
//!
//! An upload is never trusted. It is streamed to a temporary file by the caller, then
//! [`DebugFileStore::ingest`] runs on a blocking thread in three phases:
//!
//! 1. **Walk** ([`upload`]): a zip is checked whole before a byte is extracted (no
//!    `..` or absolute paths, no symlinks, declared sizes and ratios within limits), then
//!    read entry by entry; only entries whose first bytes look like an object file are
//!    extracted, each into the upload's private staging dir. A bare object is used as is.
//! 2. **Inspect** ([`object`]): every object in every extracted file (fat Mach-O holds
//!    several) is parsed for its identity and features. When one upload carries the same
//!    debug id and arch twice (an `.xcarchive` holds the dSYM and the app binary), the
//!    one with more debug information wins.
//! 3. **Convert and commit**: each new object is written as `object` plus `symcache`
//!    into its own staging dir, then the dir is renamed into place and the index entry
//!    is written to the store. Nothing visible changes until the commit, so a rejected
//!    upload (bad path, zip bomb, nothing usable) leaves the store as it was, and a crash
//!    mid-upload leaves only staging dirs, which `open` deletes.
//!
//! On-disk layout (described for operators in the repo's `dsyms/README.md`):
//! `objects/<first two hex digits>/<debug_id>/<arch>/{object,symcache}` and `tmp/`.

mod local;
mod object;
mod upload;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{DebugFileFilter, DebugFileRow, Store, StoreError};
use crate::util;

pub use local::LocalDebugFiles;
pub use object::{build_symcache, inspect_archive, symcache_bytes, ObjectInfo};

/// How crashbox classifies a debug file, after DESIGN.md's domain terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DebugFileKind {
    /// A Mach-O companion file with DWARF, as `dsymutil` writes into a `.dSYM` bundle.
    Dsym,
    /// Any other Mach-O: an executable or dylib, usually with a symbol table only.
    Macho,
    /// An ELF object, with or without DWARF.
    Elf,
    /// A Breakpad text `.sym` file.
    Breakpad,
}

/// What a debug file can answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Features {
    /// A symbol table: function names and start addresses.
    pub symbols: bool,
    /// DWARF or equivalent: files, lines and inlined functions.
    pub debug_info: bool,
    /// Call frame information for stack walking.
    pub unwind: bool,
    /// Embedded source code.
    pub sources: bool,
}

/// One indexed object: one debug id and arch from an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugFile {
    /// The object's UUID (Mach-O) or build id derived id, lowercase and hyphenated.
    pub debug_id: String,
    /// Architecture name as symbolic spells it: `arm64`, `arm64e`, `x86_64`, …
    pub arch: String,
    /// The code id when the format has one separate from the debug id (ELF build id).
    pub code_id: Option<String>,
    /// File name of the object inside its upload, e.g. `CrashProbeiOS`.
    pub name: String,
    /// Where the object sat inside its upload, to let a user find it again.
    pub path: String,
    pub kind: DebugFileKind,
    /// symbolic's view of the object's role: `debug`, `executable`, `library`, …
    pub object_kind: String,
    pub features: Features,
    /// Size of the object's own bytes (one slice of a fat file).
    pub size: u64,
    /// SHA-256 of those bytes, so an operator can compare with the file CI archived.
    pub sha256: String,
    /// Size of the SymCache built from it.
    pub symcache_size: u64,
    /// SymCache format version, so a newer crashbox knows which caches to rebuild.
    pub symcache_version: u32,
    pub uploaded_at: String,
    /// Every release this object was uploaded with.
    pub releases: Vec<String>,
}

impl DebugFile {
    /// The store's row for this file.
    fn to_row(&self) -> DebugFileRow {
        DebugFileRow {
            debug_id: self.debug_id.clone(),
            arch: self.arch.clone(),
            code_id: self.code_id.clone(),
            name: self.name.clone(),
            path: self.path.clone(),
            kind: self.kind.as_str().to_owned(),
            object_kind: self.object_kind.clone(),
            has_symbols: self.features.symbols,
            has_debug_info: self.features.debug_info,
            has_unwind_info: self.features.unwind,
            has_sources: self.features.sources,
            size: self.size,
            sha256: self.sha256.clone(),
            symcache_size: self.symcache_size,
            symcache_version: self.symcache_version,
            uploaded_at: self.uploaded_at.clone(),
            releases: self.releases.clone(),
        }
    }

    fn from_row(row: DebugFileRow) -> Self {
        DebugFile {
            kind: DebugFileKind::parse(&row.kind),
            features: Features {
                symbols: row.has_symbols,
                debug_info: row.has_debug_info,
                unwind: row.has_unwind_info,
                sources: row.has_sources,
            },
            debug_id: row.debug_id,
            arch: row.arch,
            code_id: row.code_id,
            name: row.name,
            path: row.path,
            object_kind: row.object_kind,
            size: row.size,
            sha256: row.sha256,
            symcache_size: row.symcache_size,
            symcache_version: row.symcache_version,
            uploaded_at: row.uploaded_at,
            releases: row.releases,
        }
    }
}

impl DebugFileKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DebugFileKind::Dsym => "dsym",
            DebugFileKind::Macho => "macho",
            DebugFileKind::Elf => "elf",
            DebugFileKind::Breakpad => "breakpad",
        }
    }

    /// The kind a stored name names; an unknown name (a newer build's) reads as Mach-O.
    fn parse(name: &str) -> Self {
        match name {
            "dsym" => DebugFileKind::Dsym,
            "elf" => DebugFileKind::Elf,
            "breakpad" => DebugFileKind::Breakpad,
            _ => DebugFileKind::Macho,
        }
    }
}

/// What became of one object found in an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestStatus {
    /// New: written and indexed.
    Stored,
    /// The same debug id and arch was already stored; nothing new was written.
    AlreadyPresent,
    /// Stored before without debug info; this upload replaced it with a richer file.
    Upgraded,
}

/// One object's outcome in an [`IngestReport`].
#[derive(Debug, Clone)]
pub struct IngestedFile {
    pub file: DebugFile,
    pub status: IngestStatus,
}

/// A file in the upload that was passed over, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

/// A file in the upload that looked like an object but could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileError {
    pub path: String,
    pub message: String,
}

/// The outcome of one upload.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub debug_files: Vec<IngestedFile>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<FileError>,
}

/// Who sent an upload and what they said about it.
#[derive(Debug, Clone, Default)]
pub struct UploadMeta {
    /// The release the files belong to, e.g. `com.example.app 1.2.0 (42)`.
    pub release: Option<String>,
    /// A file name for a bare object upload, which carries none of its own.
    pub name: Option<String>,
}

/// Bounds on what an upload may make crashbox do.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Sum of the uncompressed sizes of a zip's entries.
    pub max_uncompressed_bytes: u64,
    /// Largest uncompressed/compressed ratio of a whole zip (small entries included)
    /// and of one entry over 1 MiB; any zip may still expand to 16 MiB.
    pub max_compression_ratio: u64,
    /// Most entries in one zip.
    pub max_zip_entries: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        IngestLimits {
            max_uncompressed_bytes: 8 << 30,
            max_compression_ratio: 200,
            max_zip_entries: 100_000,
        }
    }
}

/// Why an upload was rejected as a whole. Nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The body had no bytes.
    #[error("the upload is empty")]
    Empty,
    /// Neither a zip nor an object file crashbox reads.
    #[error("the upload is neither a zip nor a debug file crashbox reads (Mach-O, ELF, Breakpad): {detail}")]
    UnsupportedFormat { detail: String },
    /// The zip could not be read.
    #[error("the zip is unreadable: {0}")]
    InvalidZip(String),
    /// A zip entry would land outside the extraction dir.
    #[error("zip entry `{path}` has an absolute path or a `..` component")]
    UnsafePath { path: String },
    /// A zip entry is a symbolic link, which could point anywhere.
    #[error("zip entry `{path}` is a symbolic link")]
    Symlink { path: String },
    /// The zip would expand beyond the configured limits.
    #[error("the zip expands beyond the limits: {0}")]
    TooLarge(String),
    /// A single object was uploaded and it is unusable.
    #[error("{0}")]
    Malformed(String),
    /// Nothing in the upload was a usable debug file.
    #[error("no usable debug file in the upload ({} skipped, {} errors)", .skipped.len(), .errors.len())]
    NoDebugFiles {
        skipped: Vec<Skipped>,
        errors: Vec<FileError>,
    },
    /// The server could not write to its dsyms dir.
    #[error("debug-file store: {0}")]
    Io(#[from] io::Error),
    /// The index could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// A stable machine-readable name for the error, used in API answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            IngestError::Empty => "empty_body",
            IngestError::UnsupportedFormat { .. } => "unsupported_format",
            IngestError::InvalidZip(_) => "invalid_zip",
            IngestError::UnsafePath { .. } => "unsafe_zip_path",
            IngestError::Symlink { .. } => "zip_symlink",
            IngestError::TooLarge(_) => "zip_too_large",
            IngestError::Malformed(_) => "malformed_debug_file",
            IngestError::NoDebugFiles { .. } => "no_debug_files",
            IngestError::Io(_) => "io_error",
            IngestError::Store(_) => "store_error",
        }
    }
}

/// The dsyms dir plus the index entries that describe it.
#[derive(Clone)]
pub struct DebugFileStore {
    root: PathBuf,
    store: Store,
    limits: IngestLimits,
    /// Held while a commit replaces object dirs: two uploads of the same debug id and
    /// arch (sentry-cli assembles a fat binary's slices and its dSYM at once) would
    /// otherwise both see no target, and the second rename would fail with "Directory
    /// not empty" on the first one's dir.
    commits: std::sync::Arc<std::sync::Mutex<()>>,
}

impl DebugFileStore {
    /// Opens the dsyms dir, creating it, and deletes leftovers of interrupted uploads.
    pub fn open(root: &Path, store: Store, limits: IngestLimits) -> io::Result<Self> {
        fs::create_dir_all(root.join("objects"))?;
        let tmp = root.join("tmp");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        Ok(DebugFileStore {
            root: root.to_owned(),
            store,
            limits,
            commits: Default::default(),
        })
    }

    /// Where uploads in flight are written; same file system as `objects/`, so the
    /// commit is a rename.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// A fresh, unique path under [`Self::tmp_dir`] for an upload body.
    pub fn new_upload_path(&self) -> PathBuf {
        self.tmp_dir()
            .join(format!("upload-{}", util::random_hex(12)))
    }

    /// The directory holding one object's `object` and `symcache`.
    pub fn object_dir(&self, debug_id: &str, arch: &str) -> PathBuf {
        let shard = debug_id.get(..2).unwrap_or("__");
        self.root
            .join("objects")
            .join(shard)
            .join(debug_id)
            .join(arch)
    }

    /// The SymCache of one debug file, when it is stored.
    pub fn symcache_path(&self, debug_id: &str, arch: &str) -> Option<PathBuf> {
        let path = self.object_dir(debug_id, arch).join("symcache");
        path.is_file().then_some(path)
    }

    /// Whether the dsyms dir accepts writes; backs `/readyz`.
    pub fn check_writable(&self) -> io::Result<()> {
        let probe = self
            .tmp_dir()
            .join(format!(".probe-{}", util::random_hex(6)));
        fs::write(&probe, b"ok")?;
        fs::remove_file(probe)
    }

    pub fn get(&self, debug_id: &str) -> Result<Vec<DebugFile>, StoreError> {
        let rows = self
            .store
            .debug_files_by_id(&debug_id.to_ascii_lowercase())?;
        Ok(rows.into_iter().map(DebugFile::from_row).collect())
    }

    pub fn list(&self, filter: &DebugFileFilter) -> Result<Vec<DebugFile>, StoreError> {
        let rows = self.store.list_debug_files(filter)?;
        Ok(rows.into_iter().map(DebugFile::from_row).collect())
    }

    /// Ingests the upload at `upload_path` (a zip or one object file). Blocking and
    /// CPU-heavy: call it on a blocking thread. The file is consumed.
    pub fn ingest(
        &self,
        upload_path: &Path,
        meta: &UploadMeta,
    ) -> Result<IngestReport, IngestError> {
        let staging = StagingDir::create(&self.tmp_dir())?;
        let result = self.ingest_staged(upload_path, meta, &staging.0);
        let _ = fs::remove_file(upload_path);
        result
    }

    fn ingest_staged(
        &self,
        upload_path: &Path,
        meta: &UploadMeta,
        staging: &Path,
    ) -> Result<IngestReport, IngestError> {
        let walked = upload::walk(upload_path, meta.name.as_deref(), staging, &self.limits)?;
        let mut report = IngestReport {
            skipped: walked.skipped,
            errors: walked.errors,
            ..IngestReport::default()
        };

        // Inspect every object of every extracted file, keeping the richest per key.
        let mut best: Vec<(usize, ObjectInfo)> = Vec::new();
        for (source_index, source) in walked.sources.iter().enumerate() {
            match inspect_archive(&source.file) {
                Ok(inspected) => {
                    report
                        .skipped
                        .extend(inspected.skipped.into_iter().map(|reason| Skipped {
                            path: source.path.clone(),
                            reason,
                        }));
                    report
                        .errors
                        .extend(inspected.errors.into_iter().map(|message| FileError {
                            path: source.path.clone(),
                            message,
                        }));
                    for info in inspected.objects {
                        keep_richest(
                            &mut best,
                            &mut report.skipped,
                            &walked.sources,
                            source_index,
                            info,
                        );
                    }
                }
                Err(message) => report.errors.push(FileError {
                    path: source.path.clone(),
                    message,
                }),
            }
        }

        let uploaded_at = util::now_rfc3339();
        let mut staged: Vec<(PathBuf, DebugFile)> = Vec::new();
        let mut index_updates: Vec<DebugFile> = Vec::new();
        for (n, (source_index, info)) in best.into_iter().enumerate() {
            let source = &walked.sources[source_index];
            let existing = self
                .store
                .debug_file(&info.debug_id, &info.arch)?
                .map(DebugFile::from_row);
            if let Some(mut existing) = existing.clone() {
                if existing.features.debug_info || !info.features.debug_info {
                    if let Some(release) = &meta.release {
                        if !existing.releases.contains(release) {
                            existing.releases.push(release.clone());
                            index_updates.push(existing.clone());
                        }
                    }
                    report.debug_files.push(IngestedFile {
                        file: existing,
                        status: IngestStatus::AlreadyPresent,
                    });
                    continue;
                }
            }
            let dir = staging.join(format!("object-{n}"));
            fs::create_dir_all(&dir)?;
            match build_symcache(&source.file, info.object_index, &dir) {
                Ok(built) => {
                    let status = if existing.is_some() {
                        IngestStatus::Upgraded
                    } else {
                        IngestStatus::Stored
                    };
                    let mut releases = existing.map(|e| e.releases).unwrap_or_default();
                    if let Some(release) = &meta.release {
                        if !releases.contains(release) {
                            releases.push(release.clone());
                        }
                    }
                    let file = DebugFile {
                        debug_id: info.debug_id,
                        arch: info.arch,
                        code_id: info.code_id,
                        name: source.name.clone(),
                        path: source.path.clone(),
                        kind: info.kind,
                        object_kind: info.object_kind,
                        features: info.features,
                        size: built.size,
                        sha256: built.sha256,
                        symcache_size: built.symcache_size,
                        symcache_version: symbolic::symcache::SYMCACHE_VERSION,
                        uploaded_at: uploaded_at.clone(),
                        releases,
                    };
                    report.debug_files.push(IngestedFile {
                        file: file.clone(),
                        status,
                    });
                    staged.push((dir, file));
                }
                Err(message) => report.errors.push(FileError {
                    path: source.path.clone(),
                    message,
                }),
            }
        }

        if report.debug_files.is_empty() {
            if walked.single_object {
                let message = report
                    .errors
                    .first()
                    .map(|e| e.message.clone())
                    .or_else(|| report.skipped.first().map(|s| s.reason.clone()))
                    .unwrap_or_else(|| "no usable debug file".to_owned());
                return Err(IngestError::Malformed(message));
            }
            return Err(IngestError::NoDebugFiles {
                skipped: report.skipped,
                errors: report.errors,
            });
        }

        self.commit(staged, index_updates)?;
        Ok(report)
    }

    /// Moves staged objects into place, then writes their index entries in one batch.
    /// The index is written last: an object dir without an index entry is invisible
    /// and is replaced by the next upload of the same debug id and arch.
    fn commit(
        &self,
        staged: Vec<(PathBuf, DebugFile)>,
        mut index_updates: Vec<DebugFile>,
    ) -> Result<(), IngestError> {
        // A poisoned lock only means another commit panicked; the dirs are still
        // consistent (each step is a whole rename), so carry on.
        let _one_at_a_time = self
            .commits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (dir, file) in &staged {
            let target = self.object_dir(&file.debug_id, &file.arch);
            let parent = target.parent().expect("object dir has a parent");
            fs::create_dir_all(parent)?;
            if target.exists() {
                fs::remove_dir_all(&target)?;
            }
            fs::rename(dir, &target)?;
            util::sync_dir(parent)?;
        }
        index_updates.extend(staged.into_iter().map(|(_, file)| file));
        if !index_updates.is_empty() {
            self.store
                .put_debug_files(index_updates.iter().map(DebugFile::to_row).collect())?;
        }
        Ok(())
    }
}

/// Keeps the richest candidate per (debug id, arch); the others are listed as skipped.
fn keep_richest(
    best: &mut Vec<(usize, ObjectInfo)>,
    skipped: &mut Vec<Skipped>,
    sources: &[upload::Source],
    source_index: usize,
    info: ObjectInfo,
) {
    match best
        .iter_mut()
        .find(|(_, b)| b.debug_id == info.debug_id && b.arch == info.arch)
    {
        None => best.push((source_index, info)),
        Some(slot) => {
            let (loser_index, winner_path) = if info.rank() > slot.1.rank() {
                let loser = slot.0;
                *slot = (source_index, info);
                (loser, sources[source_index].path.clone())
            } else {
                (source_index, sources[slot.0].path.clone())
            };
            skipped.push(Skipped {
                path: sources[loser_index].path.clone(),
                reason: format!(
                    "same debug id and arch as `{winner_path}`, which has more debug information"
                ),
            });
        }
    }
}

/// A staging dir that is deleted when the upload ends, however it ends.
struct StagingDir(PathBuf);

impl StagingDir {
    fn create(tmp: &Path) -> io::Result<Self> {
        let dir = tmp.join(format!("stage-{}", util::random_hex(12)));
        fs::create_dir_all(&dir)?;
        Ok(StagingDir(dir))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The server's [`DebugFileSource`](crate::symbolicate::DebugFileSource): the debug-file
/// store's index and SymCaches, opened through a cache bounded by bytes and shared by
/// all requests.
#[derive(Clone)]
pub struct StoredDebugFiles {
    store: DebugFileStore,
    cache: std::sync::Arc<crate::symbolicate::SymCacheCache>,
}

impl StoredDebugFiles {
    pub fn new(store: DebugFileStore, cache_bytes: usize) -> Self {
        StoredDebugFiles {
            store,
            cache: std::sync::Arc::new(crate::symbolicate::SymCacheCache::new(cache_bytes)),
        }
    }

    /// Forgets the cached SymCache of one debug file, after it was replaced.
    pub fn invalidate(&self, debug_id: &str, arch: &str) {
        self.cache.invalidate(&format!("{debug_id}/{arch}"));
    }

    fn open(
        &self,
        debug_id: &str,
        arch: &str,
    ) -> Option<std::sync::Arc<crate::symbolicate::LoadedSymCache>> {
        let key = format!("{debug_id}/{arch}");
        self.cache.get_or_load(&key, || {
            let path = self.store.symcache_path(debug_id, arch)?;
            match crate::symbolicate::LoadedSymCache::open(&path) {
                Ok(cache) => Some(cache),
                Err(err) => {
                    tracing::warn!(error = %err, debug_id, arch, "unreadable SymCache");
                    None
                }
            }
        })
    }
}

impl crate::symbolicate::DebugFileSource for StoredDebugFiles {
    fn by_debug_id(
        &self,
        debug_id: &str,
        arch: Option<&str>,
    ) -> Option<std::sync::Arc<crate::symbolicate::LoadedSymCache>> {
        let debug_id = debug_id.to_ascii_lowercase();
        let files = self.store.get(&debug_id).ok()?;
        let file = files
            .iter()
            .find(|f| Some(f.arch.as_str()) == arch)
            .or_else(|| files.first())?;
        self.open(&debug_id, &file.arch)
    }

    fn by_name(
        &self,
        name: &str,
        release: Option<&str>,
    ) -> Option<(String, std::sync::Arc<crate::symbolicate::LoadedSymCache>)> {
        // Without a release, a name alone could match any build of the app: refuse
        // rather than symbolicate against the wrong build.
        let release = release?;
        let filter = DebugFileFilter {
            release: Some(release.to_owned()),
            name: None,
        };
        let files = self.store.list(&filter).ok()?;
        let mut matching = files.iter().filter(|f| f.name == name);
        let file = matching.next()?;
        if matching.any(|f| f.debug_id != file.debug_id) {
            return None;
        }
        Some((
            file.debug_id.clone(),
            self.open(&file.debug_id, &file.arch)?,
        ))
    }
}
