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

/// An environment knob, `default` when unset.
fn knob<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {v}"))
    })
}

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
    // Knobs for isolating what each part of the layout costs (see the module docs).
    let mut record = vec![0u8; knob("RECORD", 1500)];
    let batch_size: u64 = knob("BATCH", 25);
    let index_keys = knob::<u8>("INDEX", 1) != 0;
    let print_every: u64 = knob("PRINT_EVERY", 250_000);
    let flush_every: u64 = knob("FLUSH_EVERY", 4);
    let rewrites: usize = knob("REWRITE", 1);
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
        let has_block = !block.is_empty();
        if has_block {
            // The server rewrites its open block with every write batch: REWRITE=N
            // writes each block N times, growing, before its last write below.
            for step in 1..rewrites {
                let len = block.len() * step / rewrites;
                tree.insert(format!("c/{batch:016x}").as_bytes(), &block[..len])
                    .expect("rewrite");
                if step as u64 % flush_every == 0 {
                    db.flush().expect("flush");
                }
            }
            writes.insert(format!("c/{batch:016x}").as_bytes(), block);
        }
        if has_block && index_keys {
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
                (batch + 1) * batch_size,
                rss_mib(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{:>9} crashes  RSS {:>4} MiB  disk {} MiB",
        n / batch_size * batch_size,
        rss_mib(),
        db.size_on_disk().unwrap_or(0) >> 20
    );
}
