//! The ingestion baseline: a bare `symbolic` SymCache conversion of one debug file,
//! with nothing of crashbox around it (no upload, no zip, no copy, no index).
//!
//! ```sh
//! cargo run --release --example bare_symcache -- FILE [OUT.symcache]
//! ```
//!
//! Memory-maps FILE (symbolic's `ByteView`, as crashbox does), parses it, takes its
//! first object, runs `SymCacheConverter::process_object` and `serialize` into OUT (a
//! `BufWriter<File>`) or, without OUT, into a `Vec<u8>`. Prints one line:
//!
//! `bare_symcache input_bytes=… symcache_bytes=… seconds=… mb_per_s=… debug_id=…`
//!
//! where `seconds` covers parse + convert + serialize and `mb_per_s` is input
//! megabytes (10^6 bytes) per second. `benches/ingest.sh` runs it under
//! `/usr/bin/time -v` for the peak RSS.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use symbolic::common::ByteView;
use symbolic::debuginfo::Archive;
use symbolic::symcache::SymCacheConverter;

pub fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(input) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bare_symcache FILE [OUT.symcache]");
        return ExitCode::FAILURE;
    };
    let output = args.next().map(PathBuf::from);
    match run(&input, output.as_ref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bare_symcache: {}: {err}", input.display());
            ExitCode::FAILURE
        }
    }
}

fn run(input: &PathBuf, output: Option<&PathBuf>) -> Result<(), String> {
    let start = Instant::now();
    let view = ByteView::open(input).map_err(|e| format!("cannot open: {e}"))?;
    let archive = Archive::parse(&view).map_err(|e| format!("cannot parse: {e}"))?;
    let object = archive
        .object_by_index(0)
        .map_err(|e| format!("cannot parse object 0: {e}"))?
        .ok_or("no object in the file")?;
    let mut converter = SymCacheConverter::new();
    converter
        .process_object(&object)
        .map_err(|e| format!("cannot convert: {e}"))?;
    let symcache_bytes = match output {
        Some(path) => {
            let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            converter
                .serialize(&mut out)
                .map_err(|e| format!("cannot write: {e}"))?;
            out.flush().map_err(|e| format!("cannot write: {e}"))?;
            out.get_ref().metadata().map(|m| m.len()).unwrap_or(0)
        }
        None => {
            let mut out = Vec::new();
            converter
                .serialize(&mut out)
                .map_err(|e| format!("cannot write: {e}"))?;
            out.len() as u64
        }
    };
    let seconds = start.elapsed().as_secs_f64();
    let input_bytes = view.len() as u64;
    println!(
        "bare_symcache input_bytes={input_bytes} symcache_bytes={symcache_bytes} seconds={seconds:.3} mb_per_s={:.1} debug_id={}",
        input_bytes as f64 / 1e6 / seconds,
        object.debug_id().to_string().to_ascii_lowercase()
    );
    Ok(())
}
