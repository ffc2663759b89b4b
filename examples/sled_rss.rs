//! How sled's RSS grows with the keys a crash store writes: the experiment behind the
//! crash store's layout (benches/README.md, "intake RSS"). Writes N synthetic crashes
//! in batches with an 8 MiB page cache and prints RSS as it goes.
//!
//! `cargo run --release --example sled_rss -- LAYOUT N`, LAYOUT one of:
//! - `per-crash`: a record key, a random identity key and two index keys per crash
//!   (the layout before the crash blocks);
//! - `blocks`: records in blocks, identities in 65,536 buckets, index keys per block
//!   (the layout before the identity index and the crash log left sled);
//! - `blocks-no-identity`: `blocks` without the identity index.
//!
//! Knobs (environment): `RECORD` bytes per crash in the block (1500; 18 is today's
//! block entry, the record being in the crash log), `BATCH` crashes per block (25),
//! `INDEX=0` to leave out the per-block index keys, `REWRITE` writes of each block as
//! it grows (1; the server rewrites its open block with every batch), `FLUSH_EVERY`
//! batches per flush (4), `PRINT_EVERY` crashes between RSS lines (250,000).

use rand::RngCore;

// The server's allocator, so the figures match its RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, layout, n] = args.as_slice() else {
        eprintln!("usage: sled_rss per-crash|blocks|blocks-no-identity N");
        std::process::exit(2);
    };
    let n: u64 = n.parse().expect("N");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(8 << 20)
        .open()
        .expect("sled");
    let tree = db.open_tree("crashes").expect("tree");
    let mut rng = rand::thread_rng();
    let record_len: usize = std::env::var("RECORD").map_or(1500, |v| v.parse().expect("RECORD"));
    let mut record = vec![0u8; record_len];
    // Crashes per block, and whether the per-block index keys are written: knobs for
    // isolating what each part of the layout costs.
    let batch_size: u64 = std::env::var("BATCH").map_or(25, |v| v.parse().expect("BATCH"));
    let index_keys = std::env::var("INDEX").map_or(true, |v| v != "0");
    let print_every: u64 =
        std::env::var("PRINT_EVERY").map_or(250_000, |v| v.parse().expect("PRINT_EVERY"));
    let flush_every: u64 =
        std::env::var("FLUSH_EVERY").map_or(4, |v| v.parse().expect("FLUSH_EVERY"));
    let started = std::time::Instant::now();
    for batch in 0..n / batch_size {
        let mut writes = sled::Batch::default();
        let mut block = Vec::new();
        let mut buckets = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
        for i in 0..batch_size {
            rng.fill_bytes(&mut record);
            let crash = batch * batch_size + i;
            let identity = rng.next_u64().to_be_bytes();
            match layout.as_str() {
                "per-crash" => {
                    let id = format!("{crash:016x}");
                    writes.insert(format!("c/{id}").as_bytes(), &record[..]);
                    writes.insert(&[b"i/", &identity[..]].concat()[..], id.as_bytes());
                    writes.insert(format!("gc/g/{id}").as_bytes(), &[][..]);
                    writes.insert(format!("r/app 1.0\0{id}").as_bytes(), &[][..]);
                }
                "blocks" | "blocks-no-identity" => {
                    block.extend_from_slice(&record);
                    if layout == "blocks" {
                        let key = [b"i/", &identity[..2]].concat();
                        let bucket = buckets.entry(key.clone()).or_insert_with(|| {
                            tree.get(&key)
                                .expect("get")
                                .map(|v| v.to_vec())
                                .unwrap_or_default()
                        });
                        bucket.extend_from_slice(&identity);
                        bucket.extend_from_slice(&[0; 18]);
                    }
                }
                _ => panic!("unknown layout {layout}"),
            }
        }
        if !block.is_empty() {
            // The server rewrites its open block with every write batch: REWRITE=N
            // writes each block N times, growing, before its last write below.
            let rewrites: usize =
                std::env::var("REWRITE").map_or(1, |v| v.parse().expect("REWRITE"));
            for step in 1..rewrites {
                let len = block.len() * step / rewrites;
                tree.insert(format!("c/{batch:016x}").as_bytes(), &block[..len])
                    .expect("rewrite");
                if step as u64 % flush_every == 0 {
                    db.flush().expect("flush");
                }
            }
            writes.insert(format!("c/{batch:016x}").as_bytes(), block.clone());
        }
        if !block.is_empty() && index_keys {
            writes.insert(format!("gc/g/{batch:016x}").as_bytes(), &[0u8; 50][..]);
            writes.insert(
                format!("r/app 1.0\0{batch:016x}").as_bytes(),
                &[0u8; 50][..],
            );
        }
        for (key, bucket) in buckets {
            writes.insert(key, bucket);
        }
        writes.insert(&b"g/g"[..], &record[..record.len().min(300)]);
        tree.apply_batch(writes).expect("batch");
        if batch % flush_every == 0 {
            db.flush().expect("flush");
        }
        if (batch * batch_size) / print_every != ((batch + 1) * batch_size) / print_every {
            println!(
                "{:>9} crashes  RSS {:>4} MiB  {:>6.1} s",
                batch * batch_size,
                rss_mib(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{:>9} crashes  RSS {:>4} MiB  disk {} MiB",
        n,
        rss_mib(),
        db.size_on_disk().unwrap_or(0) >> 20
    );
}
