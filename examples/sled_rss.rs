//! How sled's RSS grows with the keys a crash store writes: the experiment behind the
//! crash store's layout (benches/README.md, "intake RSS"). Writes N synthetic crashes of
//! 1.5 KB in batches of 25 with an 8 MiB page cache and prints RSS every 100k.
//!
//! `cargo run --release --example sled_rss -- LAYOUT N`, LAYOUT one of:
//! - `per-crash`: a record key, a random identity key and two index keys per crash
//!   (the layout before the crash blocks);
//! - `blocks`: records in blocks of 25, identities in 65,536 buckets, index keys per
//!   block (today's layout);
//! - `blocks-no-identity`: `blocks` without the identity index, to isolate its share.

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
        if batch % 4 == 0 {
            db.flush().expect("flush");
        }
        if (batch * batch_size) % 100_000 == 0 {
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
