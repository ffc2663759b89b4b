//! Server configuration: one [`Config`] with documented defaults. `cli` maps flags and
//! their `CRASHBOX_*` environment twins onto it.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::debug_files::IngestLimits;

/// Everything `crashbox serve` needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// The sled store, tokens and the first admin token live here.
    pub data_dir: PathBuf,
    /// Debug files and their SymCaches live here; see `dsyms/README.md`.
    pub dsyms_dir: PathBuf,
    /// Address to bind; port 0 picks a free port (tests use it).
    pub listen: SocketAddr,
    /// Largest debug-file upload body, in bytes. Larger bodies get 413 before they are
    /// read to the end.
    pub max_dsym_upload_bytes: u64,
    /// Bounds on what a zip may expand to.
    pub ingest_limits: IngestLimits,
    /// How many uploads convert debug files at once; each converts one object at a time.
    /// Defaults to the number of cores: conversion is CPU-bound.
    pub conversion_workers: usize,
    /// Largest crash report body, in bytes (413 above it).
    pub max_crash_bytes: u64,
    /// Threads and frames kept per crash; the rest are dropped with a note.
    pub max_crash_threads: usize,
    pub max_crash_frames: usize,
    /// Crashes older than this many days are deleted in the background; 0 keeps all.
    pub retention_days: u32,
    /// Bytes of open SymCaches kept in memory across requests.
    pub symcache_cache_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            dsyms_dir: PathBuf::from("./dsyms"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_dsym_upload_bytes: 2 << 30,
            ingest_limits: IngestLimits::default(),
            conversion_workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            max_crash_bytes: 10 << 20,
            max_crash_threads: 512,
            max_crash_frames: 512,
            retention_days: 90,
            symcache_cache_bytes: 1 << 30,
        }
    }
}

impl Config {
    /// What one crash report may make the parser do.
    pub fn parse_limits(&self) -> crate::report::ParseLimits {
        crate::report::ParseLimits {
            max_bytes: usize::try_from(self.max_crash_bytes).unwrap_or(usize::MAX),
            max_threads: self.max_crash_threads,
            max_frames: self.max_crash_frames,
            ..crate::report::ParseLimits::default()
        }
    }
}

/// Parses a byte size: a plain number of bytes, or a number with a unit such as `10MB`,
/// `512KiB` or `2GiB` (decimal and binary units both mean powers of 1024, as operators
/// expect from disk tools).
pub fn parse_byte_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 10MB or 2GiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size unit `{other}` in `{text}`")),
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_and_without_units() {
        for (text, want) in [
            ("10", Some(10)),
            ("10MB", Some(10 << 20)),
            ("2GiB", Some(2 << 30)),
            ("512 kib", Some(512 << 10)),
            ("x", None),
            ("10 parsecs", None),
        ] {
            assert_eq!(parse_byte_size(text).ok(), want, "{text}");
        }
    }
}
