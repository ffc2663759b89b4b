//! The crash store alone under intake load: the RSS experiment behind the store's
//! write path (benches/README.md, "intake RSS"). No HTTP, parsing or symbolication:
//! one prepared record, re-identified and encoded per crash, inserted by 32 tasks that
//! each wait for durability, as the server's handlers do. Prints anonymous RSS as it goes.
//!
//! `cargo run --release --example store_rss -- REPORT_TEMPLATE DSYMS N`

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crashbox::debug_files::LocalDebugFiles;
use crashbox::report::ParseLimits;
use crashbox::store::{EncodedCrash, Store};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_anon_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Bytes in the files under `dir`, recursively.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, template, dsyms, n] = args.as_slice() else {
        eprintln!("usage: store_rss REPORT_TEMPLATE DSYMS N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N");
    let template = std::fs::read_to_string(template)
        .expect("template")
        .replace(
            "INCIDENT_PLACEHOLDER",
            "00000000-0000-4000-8000-000000000000",
        );
    let files = LocalDebugFiles::load(&[PathBuf::from(dsyms)], None).expect("dsyms");
    let now = time::OffsetDateTime::now_utc();
    let record = crashbox::intake::prepare(
        template.as_bytes(),
        &ParseLimits::default(),
        &[7u8; 32],
        &files,
        now,
    )
    .expect("report")
    .remove(0);
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store = Store::open(dir.path()).expect("store");
    let next = Arc::new(AtomicU64::new(0));
    let db_dir = dir.path().join("db");
    let started = std::time::Instant::now();
    let print_every = (n / 20).max(1);
    runtime.block_on(async {
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let (store, next, record) = (store.clone(), next.clone(), record.clone());
                let db_dir = db_dir.clone();
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break;
                        }
                        let mut crash = record.clone();
                        crash.identity = format!("{i:032x}");
                        crash.received_at = time::OffsetDateTime::now_utc()
                            .format(&time::format_description::well_known::Rfc3339)
                            .expect("time");
                        let encoded = EncodedCrash::new(crash).expect("encode");
                        store.insert_crashes(vec![encoded]).await.expect("insert");
                        if i % print_every == 0 {
                            println!(
                                "{i:>9} crashes {:>7.1} s  RssAnon {:>6} KiB  sled {:>6} KiB",
                                started.elapsed().as_secs_f64(),
                                rss_anon_kib(),
                                dir_bytes(&db_dir) / 1024
                            );
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!("{n} crashes in {secs:.1} s, RssAnon {} KiB", rss_anon_kib());
    if std::env::var_os("EXIT_LIVE").is_some() {
        // Under heaptrack: what is still allocated now shows as leaked, by call site.
        std::process::exit(0);
    }
    println!(
        "{n} crashes in {secs:.1} s ({:.0}/s), RssAnon {} KiB",
        n as f64 / secs,
        rss_anon_kib()
    );
}
