//! Debug files read straight from local paths, for `crashbox symbolicate`: no server,
//! no data dir. Each path may be a directory (searched recursively: `.dSYM` bundles,
//! `.xcarchive`s, folders of them), a zip, or a single object file. SymCaches are built
//! in memory; zips are unpacked into a temporary dir that is removed afterwards.
//!
//! Converting a large dSYM takes seconds, so with a cache dir (the CLI uses
//! `~/.cache/crashbox`) each built SymCache is also saved there, keyed by the source
//! file's path, size, modification time and object index, and memory-mapped on the next
//! run. SymCache files themselves (a crashbox dsyms dir's `symcache` files) are
//! recognised and mapped directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use symbolic::debuginfo::{Archive, FileFormat};

use super::object::{inspect_archive, symcache_bytes, Rank};
use super::upload;
use super::IngestLimits;
use crate::symbolicate::{DebugFileSource, LoadedSymCache};

/// Debug files found under some local paths, converted and ready for lookups.
#[derive(Default)]
pub struct LocalDebugFiles {
    /// By debug id, then arch, with the rank that picked it.
    by_id: HashMap<String, Vec<(String, Rank, Arc<LoadedSymCache>)>>,
    /// Object file name → debug ids, for reports that name images without UUIDs.
    by_name: HashMap<String, Vec<String>>,
    /// What could not be read, for the CLI to mention.
    pub warnings: Vec<String>,
    /// Where built SymCaches are kept between runs.
    cache_dir: Option<PathBuf>,
}

impl LocalDebugFiles {
    /// Loads every debug file under `paths`. A path that does not exist is an error;
    /// unreadable files inside a directory become warnings. With `cache_dir`, built
    /// SymCaches are saved there and reused by later calls.
    pub fn load(paths: &[PathBuf], cache_dir: Option<&Path>) -> Result<Self, String> {
        let mut files = LocalDebugFiles {
            cache_dir: cache_dir.map(Path::to_owned),
            ..LocalDebugFiles::default()
        };
        let staging =
            tempfile::tempdir().map_err(|e| format!("cannot create a temporary dir: {e}"))?;
        for (n, path) in paths.iter().enumerate() {
            if !path.exists() {
                return Err(format!("{}: no such file or directory", path.display()));
            }
            let mut stack = vec![path.clone()];
            let mut m = 0;
            while let Some(path) = stack.pop() {
                if path.is_dir() {
                    let entries =
                        std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    for entry in entries.flatten() {
                        stack.push(entry.path());
                    }
                    continue;
                }
                m += 1;
                let dir = staging.path().join(format!("{n}-{m}"));
                if let Err(err) = std::fs::create_dir_all(&dir) {
                    return Err(format!("cannot create a temporary dir: {err}"));
                }
                files.load_file(&path, &dir);
            }
        }
        Ok(files)
    }

    fn load_file(&mut self, path: &Path, staging: &Path) {
        match sniff(path) {
            Sniffed::SymCache => return self.load_symcache_file(path),
            Sniffed::Other => return,
            Sniffed::Loadable => {}
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let walked = match upload::walk(path, name.as_deref(), staging, &IngestLimits::default()) {
            Ok(walked) => walked,
            Err(err) => {
                self.warnings.push(format!("{}: {err}", path.display()));
                return;
            }
        };
        for source in walked.sources {
            let inspected = match inspect_archive(&source.file) {
                Ok(inspected) => inspected,
                Err(err) => {
                    self.warnings.push(format!("{}: {err}", source.path));
                    continue;
                }
            };
            for info in inspected.objects {
                // Entries extracted from a zip are keyed by the zip plus their path in it.
                let origin = if source.file == path {
                    path.to_owned()
                } else {
                    path.join(&source.path)
                };
                // As in the store, the richest object of a debug id wins: a dSYM next
                // to its stripped binary (an .xcarchive has both) must not lose to it.
                let rank = info.rank();
                let known = self
                    .by_id
                    .get(&info.debug_id)
                    .and_then(|arches| arches.iter().find(|(arch, ..)| *arch == info.arch))
                    .map(|(_, rank, _)| *rank);
                if known.is_some_and(|known| known >= rank) {
                    continue;
                }
                let loaded = self.build(&origin, path, &source.file, info.object_index);
                match loaded {
                    Ok(cache) => {
                        let arches = self.by_id.entry(info.debug_id.clone()).or_default();
                        arches.retain(|(arch, ..)| *arch != info.arch);
                        arches.push((info.arch.clone(), rank, cache));
                        let names = self.by_name.entry(source.name.clone()).or_default();
                        if !names.contains(&info.debug_id) {
                            names.push(info.debug_id);
                        }
                    }
                    Err(err) => self.warnings.push(format!("{}: {err}", source.path)),
                }
            }
        }
    }
}

enum Sniffed {
    /// A zip or an object file.
    Loadable,
    /// A SymCache, as the debug-file store keeps them.
    SymCache,
    /// Anything else (plists, sources): skipped quietly.
    Other,
}

fn sniff(path: &Path) -> Sniffed {
    let mut head = [0u8; 64];
    let Ok(mut file) = std::fs::File::open(path) else {
        return Sniffed::Other;
    };
    let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    let head = &head[..n];
    if head.starts_with(b"SYMC") {
        Sniffed::SymCache
    } else if head.starts_with(b"PK\x03\x04") || !matches!(Archive::peek(head), FileFormat::Unknown)
    {
        Sniffed::Loadable
    } else {
        Sniffed::Other
    }
}

impl LocalDebugFiles {
    fn load_symcache_file(&mut self, path: &Path) {
        match LoadedSymCache::open(path) {
            Ok(cache) => {
                let debug_id = cache.symcache().debug_id().to_string().to_ascii_lowercase();
                let arch = cache.symcache().arch().name().to_owned();
                // A SymCache is what the store built from the best object it had.
                let arches = self.by_id.entry(debug_id).or_default();
                arches.retain(|(a, ..)| *a != arch);
                arches.push((arch, (true, true, u64::MAX), Arc::new(cache)));
            }
            Err(err) => self.warnings.push(format!("{}: {err}", path.display())),
        }
    }

    /// The SymCache of one object: from the cache dir when a previous run built it,
    /// else built now (and saved when there is a cache dir).
    fn build(
        &self,
        origin: &Path,
        stat_path: &Path,
        file: &Path,
        object_index: usize,
    ) -> Result<Arc<LoadedSymCache>, String> {
        let cached =
            self.cache_dir.as_ref().and_then(|dir| {
                let meta = std::fs::metadata(stat_path).ok()?;
                let modified = meta
                    .modified()
                    .ok()?
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?;
                let key = format!(
                    "{}\0{}\0{}\0{object_index}\0{}",
                    std::fs::canonicalize(origin)
                        .unwrap_or_else(|_| origin.to_owned())
                        .display(),
                    meta.len(),
                    modified.as_nanos(),
                    symbolic::symcache::SYMCACHE_VERSION
                );
                Some(dir.join("symcaches").join(hex::encode(
                    <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()),
                )))
            });
        if let Some(cached) = cached.as_ref().filter(|p| p.is_file()) {
            if let Ok(cache) = LoadedSymCache::open(cached) {
                return Ok(Arc::new(cache));
            }
        }
        let bytes = symcache_bytes(file, object_index)?;
        if let Some(cached) = &cached {
            // A cache that cannot be written only costs speed next time.
            let _ = crate::util::write_atomic(cached, &bytes, None);
        }
        LoadedSymCache::from_bytes(bytes).map(Arc::new)
    }
}

impl DebugFileSource for LocalDebugFiles {
    fn by_debug_id(&self, debug_id: &str, arch: Option<&str>) -> Option<Arc<LoadedSymCache>> {
        let arches = self.by_id.get(&debug_id.to_ascii_lowercase())?;
        arches
            .iter()
            .find(|(a, ..)| Some(a.as_str()) == arch)
            .or_else(|| arches.first())
            .map(|(.., cache)| cache.clone())
    }

    fn by_name(&self, name: &str, _release: Option<&str>) -> Option<(String, Arc<LoadedSymCache>)> {
        // Offline, the user chose the dSYMs: a unique name is enough.
        let ids = self.by_name.get(name)?;
        let [id] = ids.as_slice() else {
            return None;
        };
        Some((id.clone(), self.by_debug_id(id, None)?))
    }
}
