//! Walking an upload: a zip of any layout, or one object file.
//!
//! A zip is validated from its central directory before anything is extracted, so a
//! hostile entry rejects the whole upload with nothing written outside the staging dir.
//! Declared sizes are then enforced while reading, because a zip can lie about them.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use symbolic::debuginfo::{Archive, FileFormat};

use super::{FileError, IngestError, IngestLimits, Skipped};

/// How many leading bytes decide whether a zip entry is an object file.
const SNIFF_LEN: usize = 4096;

/// Entries under this size are exempt from the per-entry ratio check: small Mach-O
/// files are mostly zero padding and compress far better than any real bomb needs to.
/// The whole-archive check below still counts them.
const RATIO_EXEMPT_BYTES: u64 = 1 << 20;

/// What any zip may expand to whatever its ratio: small uploads of padded objects may
/// compress very well, and staging this much is harmless.
const RATIO_FLOOR_BYTES: u64 = 16 << 20;

/// Most bytes a zip of `compressed` bytes may expand to: the ratio limit over the
/// whole archive, so many small entries cannot add up to a bomb.
fn expansion_allowance(compressed: u64, limits: &IngestLimits) -> u64 {
    compressed
        .saturating_mul(limits.max_compression_ratio)
        .max(RATIO_FLOOR_BYTES)
        .min(limits.max_uncompressed_bytes)
}

/// A file that holds one or more objects, ready to be parsed.
pub struct Source {
    /// The file on disk: the upload itself or an entry extracted into staging.
    pub file: PathBuf,
    /// The path inside the upload (`Foo.app.dSYM/Contents/Resources/DWARF/Foo`).
    pub path: String,
    /// The last component of `path`, the debug file's display name.
    pub name: String,
}

/// What a walk found.
pub struct Walked {
    pub sources: Vec<Source>,
    pub skipped: Vec<Skipped>,
    pub errors: Vec<FileError>,
    /// The upload was one object, not a zip: its failure is the upload's failure.
    pub single_object: bool,
}

/// Classifies the upload at `upload` and extracts what may be objects into `staging`.
pub fn walk(
    upload: &Path,
    name: Option<&str>,
    staging: &Path,
    limits: &IngestLimits,
) -> Result<Walked, IngestError> {
    let head = read_head(upload)?;
    if head.is_empty() {
        return Err(IngestError::Empty);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return walk_zip(upload, staging, limits);
    }
    match Archive::peek(&head) {
        FileFormat::MachO | FileFormat::Elf | FileFormat::Breakpad => {
            let name = name
                .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_owned())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "upload".to_owned());
            Ok(Walked {
                sources: vec![Source {
                    file: upload.to_owned(),
                    path: name.clone(),
                    name,
                }],
                skipped: Vec::new(),
                errors: Vec::new(),
                single_object: true,
            })
        }
        FileFormat::Unknown => Err(IngestError::UnsupportedFormat {
            detail: "unrecognised leading bytes".to_owned(),
        }),
        other => Err(IngestError::UnsupportedFormat {
            detail: format!("{other} files are not supported"),
        }),
    }
}

fn read_head(path: &Path) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(SNIFF_LEN);
    File::open(path)?
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// Rejects names that could escape the extraction dir on any platform.
fn is_safe_entry_name(name: &str) -> bool {
    if name.is_empty() || name.starts_with('/') || name.starts_with('\\') || name.contains('\0') {
        return false;
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return false;
    }
    !name.split(['/', '\\']).any(|part| part == "..")
}

fn walk_zip(upload: &Path, staging: &Path, limits: &IngestLimits) -> Result<Walked, IngestError> {
    let file = File::open(upload)?;
    let compressed = file.metadata()?.len();
    let allowance = expansion_allowance(compressed, limits);
    let mut zip = zip::ZipArchive::new(file).map_err(|e| IngestError::InvalidZip(e.to_string()))?;
    if zip.len() > limits.max_zip_entries {
        return Err(IngestError::TooLarge(format!(
            "{} entries, limit {}",
            zip.len(),
            limits.max_zip_entries
        )));
    }

    // Phase one: the central directory alone, before anything is extracted.
    let mut total: u64 = 0;
    for index in 0..zip.len() {
        let entry = zip
            .by_index_raw(index)
            .map_err(|e| IngestError::InvalidZip(e.to_string()))?;
        let name = entry.name().to_owned();
        if !is_safe_entry_name(&name) {
            return Err(IngestError::UnsafePath { path: name });
        }
        if entry.is_symlink() {
            return Err(IngestError::Symlink { path: name });
        }
        total = total.saturating_add(entry.size());
        if total > limits.max_uncompressed_bytes {
            return Err(IngestError::TooLarge(format!(
                "entries declare more than {} bytes uncompressed",
                limits.max_uncompressed_bytes
            )));
        }
        // Every entry counts, however small: 400 zero-filled 1 MiB entries once
        // staged 416 MB from a 482 KB upload.
        if total > allowance {
            return Err(IngestError::TooLarge(format!(
                "the entries declare more than {allowance} bytes, {}x the {compressed}-byte upload (limit {}x)",
                allowance / compressed.max(1),
                limits.max_compression_ratio
            )));
        }
        if entry.size() > RATIO_EXEMPT_BYTES
            && entry.size() / entry.compressed_size().max(1) > limits.max_compression_ratio
        {
            return Err(IngestError::TooLarge(format!(
                "entry `{name}` expands {}x, limit {}x",
                entry.size() / entry.compressed_size().max(1),
                limits.max_compression_ratio
            )));
        }
    }

    // Phase two: entry by entry, extracting only what sniffs like an object.
    let mut staged: u64 = 0;
    let mut walked = Walked {
        sources: Vec::new(),
        skipped: Vec::new(),
        errors: Vec::new(),
        single_object: false,
    };
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .map_err(|e| IngestError::InvalidZip(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        let path = entry.name().to_owned();
        let declared = entry.size();
        // One byte past the declared size proves the entry lied about it.
        let mut reader = (&mut entry).take(declared.saturating_add(1));
        let mut head = Vec::with_capacity(SNIFF_LEN);
        if let Err(err) = (&mut reader).take(SNIFF_LEN as u64).read_to_end(&mut head) {
            walked.errors.push(FileError {
                path,
                message: format!("unreadable zip entry: {err}"),
            });
            continue;
        }
        match Archive::peek(&head) {
            FileFormat::MachO | FileFormat::Elf | FileFormat::Breakpad => {}
            FileFormat::Unknown => {
                walked.skipped.push(Skipped {
                    path,
                    reason: "not a debug file".to_owned(),
                });
                continue;
            }
            other => {
                walked.skipped.push(Skipped {
                    path,
                    reason: format!("unsupported debug file format ({other})"),
                });
                continue;
            }
        }
        let target = staging.join(format!("entry-{index}"));
        match extract(&head, &mut reader, &target) {
            Ok(written) if written > declared => {
                return Err(IngestError::TooLarge(format!(
                    "entry `{path}` holds more than the {declared} bytes it declares"
                )));
            }
            Ok(written) => {
                // Counted as it streams too, though each entry is held to its
                // declared size and the declared sizes were checked above: what one
                // upload stages stays within its allowance even if those checks change.
                staged = staged.saturating_add(written);
                if staged > allowance {
                    return Err(IngestError::TooLarge(format!(
                        "the upload expands beyond {allowance} bytes"
                    )));
                }
                let name = path.rsplit('/').next().unwrap_or(&path).to_owned();
                walked.sources.push(Source {
                    file: target,
                    path,
                    name,
                });
            }
            Err(err) => {
                let _ = fs::remove_file(&target);
                walked.errors.push(FileError {
                    path,
                    message: format!("unreadable zip entry: {err}"),
                });
            }
        }
    }
    Ok(walked)
}

fn extract(head: &[u8], rest: &mut impl Read, target: &Path) -> io::Result<u64> {
    let mut out = io::BufWriter::with_capacity(1 << 20, File::create(target)?);
    out.write_all(head)?;
    let copied = io::copy(rest, &mut out)?;
    out.flush()?;
    Ok(head.len() as u64 + copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_scales_with_the_upload_within_floor_and_total() {
        let limits = IngestLimits::default();
        assert_eq!(expansion_allowance(1000, &limits), RATIO_FLOOR_BYTES);
        assert_eq!(expansion_allowance(1 << 20, &limits), 200 << 20);
        assert_eq!(
            expansion_allowance(1 << 30, &limits),
            limits.max_uncompressed_bytes
        );
    }

    #[test]
    fn entry_names_that_escape_are_rejected() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "\\x",
            "C:\\x",
            "a\\..\\b",
            "",
        ] {
            assert!(!is_safe_entry_name(bad), "{bad}");
        }
        for good in ["a.dSYM/Contents/Resources/DWARF/a", "x..y", ".hidden/a"] {
            assert!(is_safe_entry_name(good), "{good}");
        }
    }
}
