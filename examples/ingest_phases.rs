//! Diagnostic for `benches/ingest.sh`: where an upload's time goes, phase by phase,
//! outside the server, with the same calls the server makes.
//!
//! ```sh
//! cargo run --release --example ingest_phases -- DSYMS.zip DWARF_FILE
//! ```
//!
//! Times, in one process and in order:
//! 1. `inflate`: the zip entry whose path ends in `DWARF_FILE`'s name extracted to a
//!    temporary file, as `debug_files::upload` does (`zip` crate, `io::copy` into a
//!    1 MiB `BufWriter`);
//! 2. `inspect`: `crashbox::debug_files::inspect_archive` of the extracted file;
//! 3. `build_symcache`: `crashbox::debug_files::build_symcache` (SymCache conversion
//!    plus, on a second thread, SHA-256 and copy of the original; both `fsync`ed);
//! 4. `bare`: a bare symbolic conversion of the same file into a `Vec<u8>` (the
//!    baseline of `examples/bare_symcache.rs`);
//! 5. the two halves of `build_symcache` one after the other, alone: the conversion
//!    written to a file and fsynced, then SHA-256 + copy of the original, fsynced.
//!
//! Prints one line per phase, then the process's RssFile (file-backed resident
//! memory) after the conversions and after the SHA-256 + copy, which read the object
//! through the same memory map: the difference is what `build_symcache`'s copy adds
//! to the server's RSS.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use symbolic::common::ByteView;
use symbolic::debuginfo::Archive;
use symbolic::symcache::SymCacheConverter;

fn main() -> Result<(), String> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(zip_path), Some(dwarf)) = (args.next(), args.next()) else {
        return Err("usage: ingest_phases DSYMS.zip DWARF_FILE".into());
    };
    let name = dwarf
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("DWARF_FILE has no name")?
        .to_owned();
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let extracted = tmp.path().join("entry");

    let t = Instant::now();
    let file = File::open(&zip_path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
    let index = (0..zip.len())
        .find(|&i| {
            zip.by_index_raw(i)
                .map(|e| e.name().ends_with(&format!("/{name}")))
                .unwrap_or(false)
        })
        .ok_or("no such entry in the zip")?;
    let mut entry = zip.by_index(index).map_err(|e| e.to_string())?;
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(&extracted).map_err(|e| e.to_string())?,
    );
    io::copy(&mut entry, &mut out).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    drop(entry);
    let inflate = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let inspected = crashbox::debug_files::inspect_archive(&extracted)?;
    let object_index = inspected
        .objects
        .first()
        .ok_or("no usable object")?
        .object_index;
    let inspect = t.elapsed().as_secs_f64();

    let dir = tmp.path().join("object");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let built = crashbox::debug_files::build_symcache(&extracted, object_index, &dir)?;
    let build = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let view = ByteView::open(&dwarf).map_err(|e| e.to_string())?;
    let archive = Archive::parse(&view).map_err(|e| e.to_string())?;
    let object = archive
        .object_by_index(0)
        .map_err(|e| e.to_string())?
        .ok_or("no object")?;
    let mut converter = SymCacheConverter::new();
    converter
        .process_object(&object)
        .map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    converter.serialize(&mut bytes).map_err(|e| e.to_string())?;
    let bare = t.elapsed().as_secs_f64();
    let rss_file_bare = rss_file_kb();

    // The two halves of build_symcache, alone: the conversion written to a file and
    // fsynced, and the SHA-256 + copy of the original (fsynced), read through a map.
    let t = Instant::now();
    let mut converter = SymCacheConverter::new();
    converter
        .process_object(&object)
        .map_err(|e| e.to_string())?;
    let target = tmp.path().join("symcache-alone");
    let mut out =
        BufWriter::with_capacity(1 << 20, File::create(&target).map_err(|e| e.to_string())?);
    converter.serialize(&mut out).map_err(|e| e.to_string())?;
    let file = out.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    let convert_fsync = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let data = object.data();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(tmp.path().join("object-alone")).map_err(|e| e.to_string())?,
    );
    for chunk in data.chunks(1 << 20) {
        sha2::Digest::update(&mut hasher, chunk);
        out.write_all(chunk).map_err(|e| e.to_string())?;
    }
    let file = out.into_inner().map_err(|e| e.to_string())?;
    file.sync_all().map_err(|e| e.to_string())?;
    let _ = sha2::Digest::finalize(hasher);
    let copy = t.elapsed().as_secs_f64();
    let rss_file_copy = rss_file_kb();

    let mb = built.size as f64 / 1e6;
    println!(
        "ingest_phases: {mb:.1} MB object, SymCache {:.1} MB",
        built.symcache_size as f64 / 1e6
    );
    println!(
        "  inflate         {inflate:6.2} s  ({:.0} MB/s of output)",
        mb / inflate
    );
    println!("  inspect         {inspect:6.2} s");
    println!(
        "  build_symcache  {build:6.2} s  (conversion + SHA-256/copy of the original, fsynced)"
    );
    println!("  bare            {bare:6.2} s  (conversion only, into memory)");
    println!(
        "  convert+fsync   {convert_fsync:6.2} s  (the conversion half of build_symcache, alone)"
    );
    println!("  sha256+copy     {copy:6.2} s  (the other half, alone)");
    println!(
        "  build_symcache / bare = {:.2}; (inflate + inspect + build_symcache) / bare = {:.2}",
        build / bare,
        (inflate + inspect + build) / bare
    );
    println!(
        "  RssFile of this process with the DWARF file mapped: {} MiB after the conversions, \
         {} MiB after SHA-256 + copy read the object through the same map",
        rss_file_bare / 1024,
        rss_file_copy / 1024
    );
    Ok(())
}

/// This process's file-backed resident memory (kB), from /proc/self/status.
fn rss_file_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("RssFile:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
