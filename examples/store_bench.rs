//! The SQLite store under a million crashes, at the store's API (no HTTP):
//!
//! 1. loads N crashes (default 1,000,000) in 10,000 groups across 20 releases, from the
//!    fixture's real scrubbed report, and reports bytes on disk per crash;
//! 2. measures the store's maximum insert rate with 32 concurrent single-crash uploads;
//! 3. measures the group list by count and by last seen, a deep page, and a group's
//!    newest 50 crashes, idle and while inserts run at half that maximum;
//! 4. stores 100,000 crashes whose dSYM is missing, then re-symbolicates them with the
//!    dSYM (`intake::resymbolicate`, real symbolication) while inserts run at half the
//!    maximum, and reports the insert latency during it against the same pace idle.
//!
//! `cargo run --release --example store_bench -- REPORT DSYMS [N]`
//! (`STORE_BENCH_WEBHOOK=1`: with a webhook subscribed to every event)
//! (`benches/store.sh` runs it with the fixture).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crashbox::debug_files::LocalDebugFiles;
use crashbox::intake::{prepare, CrashRecord};
use crashbox::report::ParseLimits;
use crashbox::store::{GroupSort, NewCrash, Store};
use crashbox::symbolicate::NoDebugFiles;

const GROUPS: u64 = 10_000;
const RELEASES: u64 = 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (report, dsyms, n) = match args.as_slice() {
        [_, report, dsyms] => (report, dsyms, 1_000_000u64),
        [_, report, dsyms, n] => (report, dsyms, n.parse().expect("N")),
        _ => {
            eprintln!("usage: store_bench REPORT DSYMS [N]");
            std::process::exit(2);
        }
    };
    let bytes = std::fs::read(report).expect("report");
    let files = LocalDebugFiles::load(&[PathBuf::from(dsyms)], None).expect("dsyms");
    let now = time::OffsetDateTime::now_utc();
    let template = prepare(&bytes, &ParseLimits::default(), b"k", &NoDebugFiles, now)
        .expect("report")
        .remove(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store");
    // STORE_BENCH_WEBHOOK=1: a webhook subscribed to every event, so every batch's flush
    // evaluates group.new, group.regressed and group.spike and writes outbox rows.
    if std::env::var_os("STORE_BENCH_WEBHOOK").is_some() {
        store
            .create_webhook(
                "bench".into(),
                "http://127.0.0.1:9/".into(),
                crashbox::store::EVENTS
                    .iter()
                    .map(|e| e.to_string())
                    .collect(),
                None,
                0,
            )
            .expect("webhook");
        println!("with a webhook subscribed to every event");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // 1. Load.
    let started = Instant::now();
    rt.block_on(load(&store, &template, n));
    let load_secs = started.elapsed().as_secs_f64();
    let disk = disk_bytes(dir.path());
    println!(
        "loaded {n} crashes in {load_secs:.1} s ({:.0}/s); {:.0} MiB on disk, {:.0} bytes per crash",
        n as f64 / load_secs,
        disk as f64 / 1048576.0,
        disk as f64 / n as f64
    );

    // 2. Maximum insert rate: 32 uploads in flight, one crash each.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(n));
    let max = rt.block_on(paced(
        &store,
        &template,
        &next,
        None,
        Duration::from_secs(10),
    ));
    println!(
        "max insert rate: {:.0} crashes/s (p50 {:.2} ms, p99 {:.2} ms)",
        max.rate,
        max.p(0.5),
        max.p(0.99)
    );
    let half = max.rate / 2.0;

    // 3. Queries idle, then under half the maximum insert rate.
    let idle = queries(&store, 300);
    print_queries("idle", &idle);
    let busy_stop = Arc::new(AtomicBool::new(false));
    let intake = {
        let (store, template, next, stop) = (
            store.clone(),
            template.clone(),
            next.clone(),
            busy_stop.clone(),
        );
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            handle.block_on(paced_until(&store, &template, &next, half, &stop))
        })
    };
    let busy = queries(&store, 300);
    busy_stop.store(true, Ordering::SeqCst);
    let intake = intake.join().unwrap();
    print_queries(&format!("under {half:.0} inserts/s"), &busy);
    println!(
        "  inserts meanwhile: {:.0}/s, p99 {:.2} ms",
        intake.rate,
        intake.p(0.99)
    );

    // 4. Re-symbolication of 100,000 crashes while inserts run at half the maximum.
    let resym_n = 100_000u64;
    let missing = rt.block_on(load_missing(&store, &bytes, resym_n));
    let debug_id = missing.clone();
    let baseline = rt.block_on(paced(
        &store,
        &template,
        &next,
        Some(half),
        Duration::from_secs(10),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let intake = {
        let (store, template, next, stop) =
            (store.clone(), template.clone(), next.clone(), stop.clone());
        let handle = rt.handle().clone();
        std::thread::spawn(move || {
            handle.block_on(paced_until(&store, &template, &next, half, &stop))
        })
    };
    let started = Instant::now();
    let changed = crashbox::intake::resymbolicate(
        &store,
        &files,
        crashbox::grouping::Rules::builtin_ref(),
        &debug_id,
    )
    .expect("resym");
    let resym_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let during = intake.join().unwrap();
    println!(
        "re-symbolicated {changed} crashes in {resym_secs:.1} s ({:.0}/s)",
        changed as f64 / resym_secs
    );
    println!(
        "  inserts at {half:.0}/s: p99 {:.2} ms idle, {:.2} ms during re-symbolication (max {:.2} ms), {:.0}/s kept",
        baseline.p(0.99),
        during.p(0.99),
        during.p(1.0),
        during.rate
    );
    let audit = store.audit().expect("audit");
    println!("counters match a recount: {}", audit.is_empty());
}

/// A crash of group `g`, release `r`, device `d`, received `age_ms` ago.
fn crash(template: &CrashRecord, n: u64, spread_days: i64) -> NewCrash {
    let mut record = template.clone();
    let g = (n * 2654435761) % GROUPS;
    record.identity = format!("bench-{n}");
    record.filing.signature = format!("EXC_BAD_ACCESS | frame_{g}");
    record.filing.group_id = format!("{g:016x}");
    record.group_id = record.filing.group_id.clone();
    record.filing.missing = vec![];
    record.release = Some(format!(
        "com.crashbox.bench 1.{} ({})",
        n % RELEASES,
        n % RELEASES
    ));
    record.device_hash = Some(format!("{:064x}", (n * 7919) % 50_000));
    let age_ms = (n * 104729) as i64 % (spread_days * 86_400_000).max(1);
    let received = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(age_ms);
    record.received_at = received
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // The report's own time matches (the crash day leads the dedup key).
    record.report.timestamp = Some(record.received_at.clone());
    record.encode().expect("encode")
}

async fn load(store: &Store, template: &CrashRecord, n: u64) {
    // Eight uploads of 256 crashes in flight: bulk loading, not the intake shape.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, template, next) = (store.clone(), template.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let start = next.fetch_add(256, Ordering::SeqCst);
                if start >= n {
                    return;
                }
                let batch = tokio::task::spawn_blocking({
                    let template = template.clone();
                    move || {
                        (start..(start + 256).min(n))
                            .map(|i| crash(&template, i, 30))
                            .collect::<Vec<_>>()
                    }
                })
                .await
                .unwrap();
                store.insert_crashes(batch).await.expect("insert");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// Stores `n` crashes of the real report analysed without its dSYM; returns the debug
/// id they miss.
async fn load_missing(store: &Store, report: &[u8], n: u64) -> String {
    let template = prepare(
        report,
        &ParseLimits::default(),
        b"k",
        &NoDebugFiles,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
    .remove(0);
    let debug_id = template.filing.missing[0].debug_id.clone();
    let mut sent = 0;
    while sent < n {
        let batch: Vec<NewCrash> = (sent..(sent + 512).min(n))
            .map(|i| {
                let mut record = template.clone();
                record.identity = format!("missing-{i}");
                record.encode().unwrap()
            })
            .collect();
        sent += batch.len() as u64;
        store.insert_crashes(batch).await.unwrap();
    }
    debug_id
}

struct Latencies {
    rate: f64,
    millis: Vec<f64>,
}

impl Latencies {
    fn p(&self, q: f64) -> f64 {
        if self.millis.is_empty() {
            return f64::NAN;
        }
        let i = ((self.millis.len() - 1) as f64 * q).round() as usize;
        self.millis[i]
    }
}

/// 32 tasks inserting one crash each at a time, for `duration`, at `rate` per second in
/// total (`None`: as fast as they can).
async fn paced(
    store: &Store,
    template: &CrashRecord,
    next: &Arc<std::sync::atomic::AtomicU64>,
    rate: Option<f64>,
    duration: Duration,
) -> Latencies {
    let stop = Arc::new(AtomicBool::new(false));
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.store(true, Ordering::SeqCst);
        })
    };
    let result = run_paced(store, template, next, rate, &stop).await;
    timer.await.unwrap();
    result
}

async fn paced_until(
    store: &Store,
    template: &CrashRecord,
    next: &Arc<std::sync::atomic::AtomicU64>,
    rate: f64,
    stop: &Arc<AtomicBool>,
) -> Latencies {
    run_paced(store, template, next, Some(rate), stop).await
}

async fn run_paced(
    store: &Store,
    template: &CrashRecord,
    next: &Arc<std::sync::atomic::AtomicU64>,
    rate: Option<f64>,
    stop: &Arc<AtomicBool>,
) -> Latencies {
    const TASKS: u64 = 32;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, template, next, stop) =
            (store.clone(), template.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut millis = Vec::new();
            // Each task sends at rate/TASKS, on a fixed schedule: a slow answer does
            // not lower the offered load (no coordinated omission).
            let interval = rate.map(|r| Duration::from_secs_f64(TASKS as f64 / r));
            let mut due =
                Instant::now() + interval.map_or(Duration::ZERO, |i| i * t as u32 / TASKS as u32);
            while !stop.load(Ordering::SeqCst) {
                if let Some(interval) = interval {
                    let now = Instant::now();
                    if due > now {
                        tokio::time::sleep(due - now).await;
                    }
                    due += interval;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                let crash = crash(&template, i, 1);
                let sent = match interval {
                    Some(interval) => due - interval,
                    None => Instant::now(),
                };
                store.insert_crashes(vec![crash]).await.expect("insert");
                millis.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
            millis
        }));
    }
    let mut millis = Vec::new();
    for task in tasks {
        millis.extend(task.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    millis.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Latencies {
        rate: millis.len() as f64 / secs,
        millis,
    }
}

struct QueryTimes {
    by_count: Latencies,
    by_last_seen: Latencies,
    deep_page: Latencies,
    group_crashes: Latencies,
}

fn timed(mut f: impl FnMut(usize), n: usize) -> Latencies {
    let mut millis = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        f(i);
        millis.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    millis.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Latencies { rate: 0.0, millis }
}

fn queries(store: &Store, n: usize) -> QueryTimes {
    let by_count = timed(
        |_| {
            assert_eq!(
                store
                    .groups(&Default::default(), GroupSort::Count, None, 50, i64::MAX)
                    .unwrap()
                    .items
                    .len(),
                50
            );
        },
        n,
    );
    let by_last_seen = timed(
        |_| {
            store
                .groups(&Default::default(), GroupSort::LastSeen, None, 50, i64::MAX)
                .unwrap();
        },
        n,
    );
    let deep_page = timed(
        |_| {
            let mut cursor = None;
            for _ in 0..10 {
                cursor = store
                    .groups(
                        &Default::default(),
                        GroupSort::Count,
                        cursor.as_deref(),
                        50,
                        i64::MAX,
                    )
                    .unwrap()
                    .next;
            }
        },
        n / 10,
    );
    let group_crashes = timed(
        |i| {
            let g = (i as u64 * 7919) % GROUPS;
            let page = store
                .crashes_in_group(&format!("{g:016x}"), None, 50)
                .unwrap();
            assert!(!page.items.is_empty());
        },
        n,
    );
    QueryTimes {
        by_count,
        by_last_seen,
        deep_page,
        group_crashes,
    }
}

fn print_queries(label: &str, q: &QueryTimes) {
    println!("queries, {label} (p50 / p99 ms):");
    for (name, l) in [
        ("groups by count, first 50", &q.by_count),
        ("groups by last seen, first 50", &q.by_last_seen),
        ("groups by count, pages 1-10 (whole walk)", &q.deep_page),
        ("a group's newest 50 crashes", &q.group_crashes),
    ] {
        println!("  {name:<42} {:>7.2} / {:>7.2}", l.p(0.5), l.p(0.99));
    }
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
