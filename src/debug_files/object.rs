//! Reading objects out of a file and converting each to a SymCache.
//!
//! Files are memory-mapped, never read whole into the heap: a dSYM can be a gigabyte,
//! and the mapping lets the kernel page it in and out while the converter walks it.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use symbolic::common::{Arch, ByteView};
use symbolic::debuginfo::{Archive, FileFormat, Object, ObjectKind};
use symbolic::symcache::SymCacheConverter;

use super::{DebugFileKind, Features};

/// Identity and features of one object, before it is converted.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    /// Which object of its file (a fat Mach-O holds several).
    pub object_index: usize,
    pub debug_id: String,
    pub arch: String,
    pub code_id: Option<String>,
    pub kind: DebugFileKind,
    pub object_kind: String,
    pub features: Features,
    pub size: u64,
}

/// How good an object is for symbolication, for choosing between two objects of one
/// debug id and arch: DWARF beats a symbol table beats nothing, then the bigger wins.
pub type Rank = (bool, bool, u64);

impl ObjectInfo {
    pub fn rank(&self) -> Rank {
        (self.features.debug_info, self.features.symbols, self.size)
    }
}

/// Every object in one file, plus what was passed over in it.
#[derive(Debug, Default)]
pub struct Inspected {
    pub objects: Vec<ObjectInfo>,
    /// Reasons objects were skipped (no debug info, unsupported arch).
    pub skipped: Vec<String>,
    /// Objects that could not be read.
    pub errors: Vec<String>,
}

/// What [`build_symcache`] wrote.
#[derive(Debug)]
pub struct Built {
    pub size: u64,
    pub sha256: String,
    pub symcache_size: u64,
}

/// Memory-maps `path`. The file lives in crashbox's own staging or dsyms dir, and
/// nobody truncates it while it is mapped.
fn map(path: &Path) -> io::Result<ByteView<'static>> {
    ByteView::open(path)
}

fn format_name(format: FileFormat) -> &'static str {
    match format {
        FileFormat::MachO => "Mach-O",
        FileFormat::Elf => "ELF",
        FileFormat::Breakpad => "Breakpad",
        other => other.name(),
    }
}

/// Parses the file at `path` and describes each object in it.
pub fn inspect_archive(path: &Path) -> Result<Inspected, String> {
    let view = map(path).map_err(|e| format!("cannot read file: {e}"))?;
    let format = Archive::peek(&view);
    let archive =
        Archive::parse(&view).map_err(|e| format!("malformed {}: {e}", format_name(format)))?;
    let mut inspected = Inspected::default();
    for index in 0..archive.object_count() {
        let object = match archive.object_by_index(index) {
            Ok(Some(object)) => object,
            Ok(None) => continue,
            Err(e) => {
                inspected.errors.push(format!(
                    "malformed {} (object {index}): {e}",
                    format_name(format)
                ));
                continue;
            }
        };
        if object.is_malformed() {
            inspected.errors.push(format!(
                "malformed {} (object {index}): truncated or inconsistent load commands",
                format_name(format)
            ));
            continue;
        }
        if object.arch() == Arch::Unknown {
            inspected.skipped.push("unsupported arch".to_owned());
            continue;
        }
        let features = Features {
            symbols: object.has_symbols(),
            debug_info: object.has_debug_info(),
            unwind: object.has_unwind_info(),
            sources: object.has_sources(),
        };
        if !features.symbols && !features.debug_info {
            inspected.skipped.push(format!(
                "no debug info and no symbols ({}, {})",
                object.debug_id(),
                object.arch().name()
            ));
            continue;
        }
        if object.debug_id().is_nil() {
            inspected.errors.push(format!(
                "{} object {index} has no debug id (no LC_UUID or build id)",
                format_name(format)
            ));
            continue;
        }
        inspected.objects.push(ObjectInfo {
            object_index: index,
            debug_id: object.debug_id().to_string().to_ascii_lowercase(),
            arch: object.arch().name().to_owned(),
            code_id: object.code_id().map(|c| c.to_string()),
            kind: kind_of(&object, features),
            object_kind: object.kind().name().to_owned(),
            features,
            size: object.data().len() as u64,
        });
    }
    Ok(inspected)
}

fn kind_of(object: &Object<'_>, features: Features) -> DebugFileKind {
    match object.file_format() {
        FileFormat::Elf => DebugFileKind::Elf,
        FileFormat::Breakpad => DebugFileKind::Breakpad,
        _ if object.kind() == ObjectKind::Debug && features.debug_info => DebugFileKind::Dsym,
        _ => DebugFileKind::Macho,
    }
}

/// Maps the file at `path` and hands `f` the file's bytes and its object
/// `object_index`.
fn with_object<T>(
    path: &Path,
    object_index: usize,
    f: impl FnOnce(&[u8], &Object<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let view = map(path).map_err(|e| format!("cannot read file: {e}"))?;
    let archive = Archive::parse(&view).map_err(|e| format!("malformed object file: {e}"))?;
    let object = archive
        .object_by_index(object_index)
        .map_err(|e| format!("malformed object: {e}"))?
        .ok_or_else(|| format!("object {object_index} vanished"))?;
    f(&view, &object)
}

/// Writes object `object_index` of the file at `path` into `dir` as `object` (its own
/// bytes, one slice of a fat file) and `symcache`. Hashing and copying the original run
/// beside the conversion, on a second thread.
pub fn build_symcache(path: &Path, object_index: usize, dir: &Path) -> Result<Built, String> {
    with_object(path, object_index, |view, object| {
        build_in(path, view, object, dir)
    })
}

fn build_in(path: &Path, view: &[u8], object: &Object<'_>, dir: &Path) -> Result<Built, String> {
    let data = object.data();
    // Where the object's bytes sit in the file: a whole thin file, or one fat slice.
    let offset = (data.as_ptr() as usize).saturating_sub(view.as_ptr() as usize) as u64;
    let len = data.len() as u64;

    std::thread::scope(|scope| {
        let original = scope.spawn(|| write_original(path, offset, len, &dir.join("object")));
        let converted = convert(object, &dir.join("symcache"));
        let (size, sha256) = original
            .join()
            .map_err(|_| "writing the original panicked".to_owned())?
            .map_err(|e| format!("cannot write object: {e}"))?;
        let symcache_size = converted?;
        Ok(Built {
            size,
            sha256,
            symcache_size,
        })
    })
}

/// Keeps bytes `offset..offset + len` of `source` as `target` and hashes them.
///
/// The bytes are read with plain reads rather than through the converter's mapping:
/// pages read through a mapping count toward the process's RSS, and the converter
/// never touches much of a dSYM (`__debug_loc`, the `__apple_*` tables), so hashing
/// through it would add most of the file to the server's peak memory. A whole-file
/// object is hard-linked rather than copied.
fn write_original(
    source: &Path,
    offset: u64,
    len: u64,
    target: &Path,
) -> io::Result<(u64, String)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut input = File::open(source)?;
    let whole = offset == 0 && input.metadata()?.len() == len;
    let mut out = if whole && std::fs::hard_link(source, target).is_ok() {
        input.sync_all()?;
        None
    } else {
        Some(BufWriter::with_capacity(1 << 20, File::create(target)?))
    };
    input.seek(SeekFrom::Start(offset))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object shorter than expected",
            ));
        }
        hasher.update(&buf[..n]);
        if let Some(out) = out.as_mut() {
            out.write_all(&buf[..n])?;
        }
        left -= n as u64;
    }
    if let Some(out) = out {
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    Ok((len, hex::encode(hasher.finalize())))
}

fn convert(object: &Object<'_>, target: &Path) -> Result<u64, String> {
    let file = File::create(target).map_err(|e| format!("cannot write SymCache: {e}"))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    convert_into(object, &mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| format!("cannot write SymCache: {}", e.error()))?;
    file.sync_all()
        .map_err(|e| format!("cannot write SymCache: {e}"))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(size)
}

fn convert_into(object: &Object<'_>, out: &mut impl Write) -> Result<(), String> {
    let mut converter = SymCacheConverter::new();
    converter
        .process_object(object)
        .map_err(|e| format!("cannot build SymCache: {e}"))?;
    converter
        .serialize(out)
        .map_err(|e| format!("cannot write SymCache: {e}"))
}

/// Builds the SymCache of object `object_index` of the file at `path` in memory, for
/// the offline CLI, which keeps nothing on disk.
pub fn symcache_bytes(path: &Path, object_index: usize) -> Result<Vec<u8>, String> {
    with_object(path, object_index, |_, object| {
        let mut out = Vec::new();
        convert_into(object, &mut out)?;
        Ok(out)
    })
}
