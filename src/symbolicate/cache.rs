//! Loaded SymCaches and where they come from.
//!
//! A [`LoadedSymCache`] owns its bytes (a memory map of the dsyms dir's `symcache`
//! file, or a buffer built in memory by the offline CLI) together with the parsed view
//! of them, plus a per-debug-file table of demangled names. Demangling a C++ name costs
//! more than the lookup itself, so each function is demangled once per loaded debug
//! file, not once per frame; the table is keyed by the name's address inside the
//! SymCache's string table, which is stable for the life of the bytes.
//!
//! [`SymCacheCache`] keeps recently used SymCaches open across requests, bounded by
//! their total size, so a hot dSYM is not reopened for every report.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use symbolic::common::{ByteView, Language, Name, NameMangling, SelfCell};
use symbolic::demangle::{Demangle, DemangleOptions};
use symbolic::symcache::SymCache;

/// One debug file's SymCache, open and ready for lookups.
pub struct LoadedSymCache {
    cell: SelfCell<ByteView<'static>, SymCache<'static>>,
    /// Demangled names by the address of the raw name in the SymCache.
    demangled: Mutex<HashMap<usize, Arc<str>>>,
    /// Bytes held, for the cache's budget.
    size: usize,
}

impl LoadedSymCache {
    /// Opens the SymCache at `path` (memory-mapped).
    pub fn open(path: &Path) -> Result<Self, String> {
        let view =
            ByteView::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        Self::from_view(view)
    }

    /// Wraps SymCache bytes built in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, String> {
        Self::from_view(ByteView::from_vec(bytes))
    }

    fn from_view(view: ByteView<'static>) -> Result<Self, String> {
        let size = view.len();
        let cell = SelfCell::try_new(view, |data| SymCache::parse(unsafe { &*data }))
            .map_err(|e| format!("invalid SymCache: {e}"))?;
        Ok(LoadedSymCache {
            cell,
            demangled: Mutex::new(HashMap::new()),
            size,
        })
    }

    pub fn symcache(&self) -> &SymCache<'_> {
        self.cell.get()
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// The display name of a function: demangled (Swift, C++; Objective-C and C names
    /// are already readable), computed once per function.
    pub fn demangle(&self, raw: &str, language: Language) -> Arc<str> {
        let key = raw.as_ptr() as usize;
        if let Some(name) = self
            .demangled
            .lock()
            .expect("demangle table lock")
            .get(&key)
        {
            return name.clone();
        }
        let name: Arc<str> = demangle(raw, language).into();
        self.demangled
            .lock()
            .expect("demangle table lock")
            .insert(key, name.clone());
        name
    }
}

/// Demangles one name the way Xcode and llvm-symbolizer show it: with parameters, no
/// return type.
pub fn demangle(raw: &str, language: Language) -> String {
    let options = DemangleOptions::name_only().parameters(true);
    let name = Name::new(raw, NameMangling::Unknown, language);
    let demangled = name.try_demangle(options);
    if demangled == raw {
        if let Some(swift3) = super::swift3::demangle(raw) {
            return swift3;
        }
    }
    demangled.into_owned()
}

/// A byte-bounded cache of open SymCaches, shared by all requests.
pub struct SymCacheCache {
    max_bytes: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<String, (Arc<LoadedSymCache>, u64)>,
    bytes: usize,
    tick: u64,
}

impl SymCacheCache {
    pub fn new(max_bytes: usize) -> Self {
        SymCacheCache {
            max_bytes,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The cached SymCache under `key`, or the one `load` opens, which is then cached.
    /// Loading happens outside the lock, so a slow open does not stall other lookups.
    pub fn get_or_load(
        &self,
        key: &str,
        load: impl FnOnce() -> Option<LoadedSymCache>,
    ) -> Option<Arc<LoadedSymCache>> {
        {
            let mut inner = self.inner.lock().expect("symcache cache lock");
            inner.tick += 1;
            let tick = inner.tick;
            if let Some((cache, used)) = inner.entries.get_mut(key) {
                *used = tick;
                return Some(cache.clone());
            }
        }
        let loaded = Arc::new(load()?);
        let mut inner = self.inner.lock().expect("symcache cache lock");
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((existing, _)) = inner.entries.get(key) {
            return Some(existing.clone());
        }
        inner.bytes += loaded.size();
        inner.entries.insert(key.to_owned(), (loaded.clone(), tick));
        // Evict least recently used entries until under budget, keeping the new one.
        while inner.bytes > self.max_bytes && inner.entries.len() > 1 {
            let oldest = inner
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            match oldest.and_then(|k| inner.entries.remove(&k)) {
                Some((evicted, _)) => inner.bytes -= evicted.size(),
                None => break,
            }
        }
        Some(loaded)
    }

    /// Drops a cached entry, e.g. after its debug file was replaced.
    pub fn invalidate(&self, key: &str) {
        let mut inner = self.inner.lock().expect("symcache cache lock");
        if let Some((evicted, _)) = inner.entries.remove(key) {
            inner.bytes -= evicted.size();
        }
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.inner.lock().expect("symcache cache lock").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_demangle_like_xcode() {
        assert_eq!(
            demangle("_ZN7fixture10accumulateIiEET_PKS1_m", Language::Unknown),
            "fixture::accumulate<int>(int const*, unsigned long)"
        );
        assert_eq!(
            demangle("-[CRLCrashNULL crash]", Language::ObjC),
            "-[CRLCrashNULL crash]"
        );
        assert_eq!(demangle("main", Language::C), "main");
        let swift = demangle(
            "$s10CrashProbe14ViewControllerC5crashyyF",
            Language::Unknown,
        );
        assert!(swift.contains("ViewController.crash"), "{swift}");
    }
}
