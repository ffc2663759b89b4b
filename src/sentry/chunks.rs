//! Chunks of files sentry-cli uploads, kept as files `DSYMS_DIR/chunks/<sha1>` until an
//! assemble uses them or the sweep deletes them.
//!
//! A chunk is accepted only when the SHA-1 of its (gunzipped) bytes is its name, so an
//! assemble can trust any chunk it finds. Gunzipping stops one byte past the chunk
//! size: a gzip bomb costs at most that much memory and time. Chunks are written
//! through a temporary file, fsynced and renamed, so a chunk file is whole or absent.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha1::{Digest, Sha1};

use super::is_sha1_hex;
use crate::util;

/// Why a chunk was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The part's file name is not a SHA-1.
    #[error("chunk name `{0}` is not a SHA-1 (40 lowercase hex digits)")]
    InvalidName(String),
    /// The chunk (after gunzip) is larger than the advertised chunk size.
    #[error("Chunk size too large: a chunk is at most {0} bytes")]
    TooLarge(u64),
    /// `file_gzip` that does not gunzip.
    #[error("chunk {0} is not valid gzip")]
    BadGzip(String),
    /// The bytes do not hash to the chunk's name.
    #[error("chunk {name} has SHA-1 {actual}; a chunk must be named by the SHA-1 of its bytes")]
    ChecksumMismatch { name: String, actual: String },
    #[error("chunk store: {0}")]
    Io(#[from] io::Error),
}

impl ChunkError {
    /// A stable machine-readable name, for API answers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ChunkError::InvalidName(_) => "invalid_chunk_name",
            ChunkError::TooLarge(_) => "chunk_too_large",
            ChunkError::BadGzip(_) => "invalid_gzip",
            ChunkError::ChecksumMismatch { .. } => "chunk_checksum_mismatch",
            ChunkError::Io(_) => "io_error",
        }
    }
}

/// Why chunks could not be assembled into a file. The detail goes to the CLI.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error("chunk {0} is missing (expired or never uploaded)")]
    MissingChunk(String),
    #[error("the file is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the assembled file has SHA-1 {actual}, not {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("chunk store: {0}")]
    Io(#[from] io::Error),
}

/// The chunk directory.
#[derive(Debug, Clone)]
pub struct ChunkStore {
    dir: PathBuf,
}

impl ChunkStore {
    /// Opens (creating) `dir`, removing temporary files an interrupted write left.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(ChunkStore {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, sha1: &str) -> PathBuf {
        self.dir.join(sha1)
    }

    /// The size of a stored chunk, `None` when it is not there.
    pub fn size(&self, sha1: &str) -> Option<u64> {
        if !is_sha1_hex(sha1) {
            return None;
        }
        fs::metadata(self.path(sha1)).ok().map(|m| m.len())
    }

    /// The size of a stored chunk uploaded (or renewed) less than `fresh_for` ago;
    /// `None` when it is not there or older.
    pub fn fresh_size(&self, sha1: &str, fresh_for: Duration) -> Option<u64> {
        if !is_sha1_hex(sha1) {
            return None;
        }
        let meta = fs::metadata(self.path(sha1)).ok()?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        (age < fresh_for).then_some(meta.len())
    }

    /// Verifies and stores one chunk named `name`; `gzip` when it came as `file_gzip`.
    /// Blocking: gunzip, hashing and an fsync.
    pub fn put(
        &self,
        name: &str,
        body: &[u8],
        gzip: bool,
        max_chunk: u64,
    ) -> Result<(), ChunkError> {
        if !is_sha1_hex(name) {
            return Err(ChunkError::InvalidName(name.chars().take(64).collect()));
        }
        let gunzipped;
        let bytes: &[u8] = if gzip {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(max_chunk.saturating_add(1))
                .read_to_end(&mut out)
                .map_err(|_| ChunkError::BadGzip(name.to_owned()))?;
            gunzipped = out;
            &gunzipped
        } else {
            body
        };
        if bytes.len() as u64 > max_chunk {
            return Err(ChunkError::TooLarge(max_chunk));
        }
        let actual = hex::encode(Sha1::digest(bytes));
        if actual != name {
            return Err(ChunkError::ChecksumMismatch {
                name: name.to_owned(),
                actual,
            });
        }
        let path = self.path(name);
        if path.is_file() {
            // Same name, same bytes: the CLI retried, or another file shares the chunk.
            // Touch it so the sweep counts its age from this upload.
            let _ = File::options()
                .append(true)
                .open(&path)
                .and_then(|f| f.set_modified(SystemTime::now()));
            return Ok(());
        }
        util::write_atomic(&path, bytes, None)?;
        Ok(())
    }

    /// Writes the chunks, in order, to `target`, checking that the whole file hashes to
    /// `checksum` and stays within `max_bytes`. Blocking.
    pub fn concatenate(
        &self,
        chunks: &[String],
        checksum: &str,
        max_bytes: u64,
        target: &Path,
    ) -> Result<u64, AssembleError> {
        let result = self.concatenate_inner(chunks, checksum, max_bytes, target);
        if result.is_err() {
            let _ = fs::remove_file(target);
        }
        result
    }

    fn concatenate_inner(
        &self,
        chunks: &[String],
        checksum: &str,
        max_bytes: u64,
        target: &Path,
    ) -> Result<u64, AssembleError> {
        let mut out = io::BufWriter::with_capacity(1 << 20, File::create(target)?);
        let mut hasher = Sha1::new();
        let mut total: u64 = 0;
        let mut buf = vec![0u8; 1 << 20];
        for chunk in chunks {
            if !is_sha1_hex(chunk) {
                return Err(AssembleError::MissingChunk(
                    chunk.chars().take(64).collect(),
                ));
            }
            let mut file = match File::open(self.path(chunk)) {
                Ok(file) => file,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(AssembleError::MissingChunk(chunk.clone()))
                }
                Err(err) => return Err(err.into()),
            };
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
                if total > max_bytes {
                    return Err(AssembleError::TooLarge(max_bytes));
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])?;
            }
        }
        out.flush()?;
        let actual = hex::encode(hasher.finalize());
        if actual != checksum {
            return Err(AssembleError::ChecksumMismatch {
                expected: checksum.to_owned(),
                actual,
            });
        }
        Ok(total)
    }

    /// Deletes chunks older than `expiry` that no assembly claims (`keep`), and stale
    /// temporary files. Returns how many went. Blocking.
    pub fn sweep(&self, expiry: Duration, keep: &HashSet<String>) -> io::Result<usize> {
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
                continue;
            };
            let age = now.duration_since(modified).unwrap_or_default();
            if age >= expiry && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1(bytes: &[u8]) -> String {
        hex::encode(Sha1::digest(bytes))
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn chunks_are_verified_and_assembled_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(&dir.path().join("chunks")).unwrap();
        let (a, b) = (b"hello ".to_vec(), b"world".to_vec());
        store.put(&sha1(&a), &gzip(&a), true, 16).unwrap();
        store.put(&sha1(&b), &b, false, 16).unwrap();
        let wrong = store.put(&sha1(&a), &b, false, 16).unwrap_err();
        assert!(
            matches!(wrong, ChunkError::ChecksumMismatch { .. }),
            "{wrong}"
        );
        let big = vec![0u8; 17];
        let too_large = store.put(&sha1(&big), &gzip(&big), true, 16).unwrap_err();
        assert!(matches!(too_large, ChunkError::TooLarge(16)), "{too_large}");
        assert!(matches!(
            store.put("../x", &a, false, 16).unwrap_err(),
            ChunkError::InvalidName(_)
        ));

        let target = dir.path().join("file");
        let whole = b"hello world";
        let n = store
            .concatenate(&[sha1(&a), sha1(&b)], &sha1(whole), 100, &target)
            .unwrap();
        assert_eq!(n, 11);
        assert_eq!(fs::read(&target).unwrap(), whole);
        let err = store
            .concatenate(&[sha1(&b), sha1(&a)], &sha1(whole), 100, &target)
            .unwrap_err();
        assert!(matches!(err, AssembleError::ChecksumMismatch { .. }));
        assert!(!target.exists(), "a failed assembly leaves no file");
        let err = store
            .concatenate(&[sha1(&a), sha1(&b)], &sha1(whole), 10, &target)
            .unwrap_err();
        assert!(matches!(err, AssembleError::TooLarge(10)));

        let keep: HashSet<String> = [sha1(&a)].into_iter().collect();
        assert_eq!(store.sweep(Duration::ZERO, &keep).unwrap(), 1);
        assert!(store.size(&sha1(&a)).is_some());
        assert!(store.size(&sha1(&b)).is_none());
    }
}
