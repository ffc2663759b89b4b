//! Writes the triage benchmark's data dir (`benches/triage.sh`): N crashes (default
//! 1,000,000) of one app, `com.crashbox.bench`, through `Store::insert_crashes`, with
//! the variety triage queries filter and sort on:
//!
//! - 10,000 groups whose sizes follow a Zipf law (s = 1: the biggest group holds about
//!   a tenth of the crashes, the smallest about ten crashes), each with a title and
//!   culprit naming one of 40 classes (the `q` filter), one to four call-path variants;
//! - 20 releases, `1.0 (100)` to `1.19 (119)`, one every 1.5 days over 30 days; a group
//!   is born in one release (a third in the first) and some stop in a later one; a
//!   release's crashes fall in the six days after it ships, so the last 48 hours (the
//!   `trend` sort) hold the newest releases;
//! - 8 OS versions (iOS 16 to 18, iPadOS) and 14 device models, skewed; 200,000 devices,
//!   and one group in ten crash-looping on a handful of devices (so `devices` and `count`
//!   sort differently);
//! - crashes stored in arrival order. At day 24 (release 1.16 ships), a quarter of the
//!   groups seen so far are resolved through the store API (in a release, in `next`, or
//!   bare) and one in twenty ignored (for good or for 50 crashes); the crashes after
//!   that regress many of them, so every status filter selects something.
//!
//! Writes `OUT/data` (the store: `crashbox serve --data-dir OUT/data`), `OUT/groups.txt`
//! (200 group ids spread over the size ranks, biggest first) and `OUT/meta.txt`.
//!
//! `cargo run --release --example triage_load -- REPORT OUT [N]`

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crashbox::grouping::Rules;
use crashbox::intake::{prepare, CrashRecord, RESIGN_ALL};
use crashbox::report::ParseLimits;
use crashbox::store::{NewCrash, ReleaseUpdate, StateChange, Store};
use crashbox::symbolicate::NoDebugFiles;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const APP: &str = "com.crashbox.bench";
const GROUPS: usize = 10_000;
const RELEASES: u32 = 20;
const DEVICES: u32 = 200_000;
const DAY_MS: i64 = 86_400_000;
const SPAN_DAYS: i64 = 30;
/// Release r ships at r × 1.5 days into the 30; its crashes fall in the six days after.
const RELEASE_EVERY_MS: i64 = DAY_MS * 3 / 2;
const RELEASE_ACTIVE_MS: i64 = 6 * DAY_MS;
/// When the triage actions happen: release 16 ships.
const TRIAGE_AT_MS: i64 = 16 * RELEASE_EVERY_MS;

const OS: [(&str, &str, u32); 8] = [
    ("iOS", "18.1.1", 30),
    ("iOS", "18.0", 18),
    ("iOS", "18.2", 14),
    ("iOS", "17.6.1", 14),
    ("iOS", "17.5", 8),
    ("iOS", "16.7.10", 6),
    ("iPadOS", "18.1", 6),
    ("iPadOS", "17.6.1", 4),
];
const MODELS: [(&str, u32); 14] = [
    ("iPhone16,2", 16),
    ("iPhone16,1", 12),
    ("iPhone15,3", 11),
    ("iPhone15,2", 10),
    ("iPhone14,7", 9),
    ("iPhone14,5", 8),
    ("iPhone17,1", 7),
    ("iPhone17,2", 6),
    ("iPhone13,2", 6),
    ("iPhone12,1", 5),
    ("iPhone14,6", 3),
    ("iPad13,18", 3),
    ("iPad14,1", 2),
    ("iPad16,3", 2),
];
const OS_INDEX: [u8; 8] = [0, 1, 2, 3, 4, 5, 6, 7];
const MODEL_INDEX: [u8; 14] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13];
const CLASSES: [&str; 40] = [
    "FeedViewController",
    "ImageCache",
    "NetworkSession",
    "CheckoutFlow",
    "ProfileStore",
    "SyncEngine",
    "AudioPlayer",
    "VideoDecoder",
    "MapOverlay",
    "SearchIndex",
    "PushRegistrar",
    "KeychainVault",
    "CoreDataStack",
    "AnalyticsQueue",
    "PhotoPicker",
    "ChatThread",
    "PaymentSheet",
    "OnboardingPager",
    "SettingsForm",
    "DownloadManager",
    "WidgetTimeline",
    "LocationTracker",
    "CameraSession",
    "FontLoader",
    "ThemeManager",
    "DeepLinkRouter",
    "CartModel",
    "OrderHistory",
    "ReviewPrompt",
    "BadgeCounter",
    "StoryPlayer",
    "CommentComposer",
    "LiveActivity",
    "HealthBridge",
    "WatchConnector",
    "SiriIntent",
    "ShareExtension",
    "WebViewBridge",
    "PDFRenderer",
    "ARScene",
];
const EXCEPTIONS: [(&str, u32); 5] = [
    ("EXC_BAD_ACCESS (SIGSEGV)", 45),
    ("EXC_BREAKPOINT (SIGTRAP)", 25),
    ("EXC_CRASH (SIGABRT)", 20),
    ("EXC_BAD_ACCESS (SIGBUS)", 7),
    ("EXC_BAD_INSTRUCTION (SIGILL)", 3),
];

fn weighted<T: Copy>(rng: &mut StdRng, items: &[T], weight: impl Fn(&T) -> u32) -> T {
    let total: u32 = items.iter().map(&weight).sum();
    let mut pick = rng.gen_range(0..total);
    for item in items {
        let w = weight(item);
        if pick < w {
            return *item;
        }
        pick -= w;
    }
    items[items.len() - 1]
}

/// A group's fixed traits.
struct GroupSpec {
    id: String,
    signature: String,
    title: String,
    culprit: String,
    birth: u32,
    death: u32,
    /// Devices it crashes on: a handful (a crash loop) or any.
    device_pool: Option<u32>,
    variants: u32,
}

/// One crash to store, before its record is built.
#[derive(Clone, Copy)]
struct CrashSpec {
    at_ms: i64,
    group: u32,
    release: u8,
    os: u8,
    model: u8,
    variant: u8,
    device: u32,
}

pub fn release_name(r: u32) -> String {
    format!("{APP} 1.{r} ({})", 100 + r)
}

fn group_id(g: usize) -> String {
    format!(
        "{:016x}",
        (g as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (report, out, n) = match args.as_slice() {
        [_, report, out] => (report, out, 1_000_000usize),
        [_, report, out, n] => (report, out, n.parse().expect("N")),
        _ => {
            eprintln!("usage: triage_load REPORT OUT [N]");
            std::process::exit(2);
        }
    };
    let out = PathBuf::from(out);
    let data = out.join("data");
    if data.exists() {
        eprintln!("{} exists; remove it first", data.display());
        std::process::exit(2);
    }
    let bytes = std::fs::read(report).expect("report");
    let now = time::OffsetDateTime::now_utc();
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let start_ms = now_ms - SPAN_DAYS * DAY_MS;
    let mut template = prepare(&bytes, &ParseLimits::default(), b"k", &NoDebugFiles, now)
        .expect("report")
        .remove(0);
    template.filing.missing = vec![];
    template.report.app.bundle_id = Some(APP.to_owned());
    let mut rng = StdRng::seed_from_u64(16);

    // Groups: traits, then Zipf ranks (rank 0 = biggest).
    let groups: Vec<GroupSpec> = (0..GROUPS)
        .map(|g| {
            let class = CLASSES[rng.gen_range(0..CLASSES.len())];
            let method = format!("method{}", g % 97);
            let (exception, _) = weighted(&mut rng, &EXCEPTIONS, |e| e.1);
            let birth = if rng.gen_bool(0.35) {
                0
            } else {
                rng.gen_range(0..RELEASES)
            };
            let death = if rng.gen_bool(0.7) {
                RELEASES - 1
            } else {
                rng.gen_range(birth..RELEASES)
            };
            GroupSpec {
                id: group_id(g),
                signature: format!("{exception} | {class}.{method}() + {}", g),
                title: format!("{exception}: {class}.{method}()"),
                culprit: format!("BenchApp: {class}.swift:{}", 20 + g % 900),
                birth,
                death,
                device_pool: rng.gen_bool(0.1).then(|| rng.gen_range(1..6)),
                variants: rng.gen_range(1..5),
            }
        })
        .collect();
    let mut cumulative = Vec::with_capacity(GROUPS);
    let mut sum = 0.0;
    for rank in 0..GROUPS {
        sum += 1.0 / (rank as f64 + 1.0);
        cumulative.push(sum);
    }

    // Crashes, in arrival order.
    let mut specs: Vec<CrashSpec> = (0..n)
        .map(|_| {
            let x = rng.gen::<f64>() * sum;
            let group = cumulative.partition_point(|&c| c < x).min(GROUPS - 1);
            let spec = &groups[group];
            let release = rng.gen_range(spec.birth..=spec.death);
            let ships = release as i64 * RELEASE_EVERY_MS;
            let until = (ships + RELEASE_ACTIVE_MS).min(SPAN_DAYS * DAY_MS - 1);
            let os = weighted(&mut rng, &OS_INDEX, |&i| OS[i as usize].2);
            let model = weighted(&mut rng, &MODEL_INDEX, |&i| MODELS[i as usize].1);
            let device = match spec.device_pool {
                Some(pool) => (group as u32 * 31 + rng.gen_range(0..pool)) % DEVICES,
                None => rng.gen_range(0..DEVICES),
            };
            CrashSpec {
                at_ms: rng.gen_range(ships..until),
                group: group as u32,
                release: release as u8,
                os,
                model,
                variant: rng.gen_range(0..spec.variants) as u8,
                device,
            }
        })
        .collect();
    specs.sort_by_key(|s| s.at_ms);
    let cut = specs.partition_point(|s| s.at_ms < TRIAGE_AT_MS);

    let store = Store::open(&data).expect("store");
    // What `crashbox serve` records when it opens a store: without it, the server the
    // benchmark starts on this data dir takes its built-in rules for a rules change and
    // signs all N crashes again in the background (moving them out of their synthetic
    // groups) while the queries and the intake are measured.
    let rules = Rules::builtin().fingerprint();
    store
        .note_grouping_rules(&rules, RESIGN_ALL)
        .expect("grouping rules");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let template = Arc::new(template);
    let groups = Arc::new(groups);
    let started = Instant::now();
    let specs = Arc::new(specs);
    rt.block_on(load(&store, &template, &groups, &specs, 0..cut, start_ms));
    let first_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "stored {cut} crashes before the triage point in {first_secs:.1} s ({:.0}/s)",
        cut as f64 / first_secs
    );

    // Triage: a quarter of the groups seen so far resolved, one in twenty ignored.
    let seen: HashSet<u32> = specs[..cut].iter().map(|s| s.group).collect();
    let mut seen: Vec<u32> = seen.into_iter().collect();
    seen.sort_unstable();
    let (mut resolved, mut ignored) = (0, 0);
    for &g in &seen {
        let id = groups[g as usize].id.clone();
        let pick: f64 = rng.gen();
        let change = if pick < 0.125 {
            // In a release around the triage point (1.14 to 1.17; 1.17 not seen yet).
            StateChange::Resolve {
                release: Some(release_name(rng.gen_range(14..18))),
                next: false,
            }
        } else if pick < 0.1875 {
            StateChange::Resolve {
                release: None,
                next: true,
            }
        } else if pick < 0.25 {
            StateChange::Resolve {
                release: None,
                next: false,
            }
        } else if pick < 0.275 {
            StateChange::Ignore {
                until_ms: None,
                count: None,
            }
        } else if pick < 0.3 {
            StateChange::Ignore {
                until_ms: None,
                count: Some(50),
            }
        } else {
            continue;
        };
        if matches!(change, StateChange::Resolve { .. }) {
            resolved += 1;
        } else {
            ignored += 1;
        }
        store
            .change_group_state(id, change, "bench".to_owned(), now_ms)
            .expect("store")
            .expect("change");
    }
    eprintln!(
        "resolved {resolved} and ignored {ignored} of {} groups",
        seen.len()
    );

    let started = Instant::now();
    rt.block_on(load(&store, &template, &groups, &specs, cut..n, start_ms));
    eprintln!(
        "stored the other {} crashes in {:.1} s",
        n - cut,
        started.elapsed().as_secs_f64()
    );
    for r in 0..RELEASES {
        store
            .update_release(
                release_name(r),
                ReleaseUpdate {
                    channel: Some("production".to_owned()),
                    rollout: Some(1.0),
                    released_at_ms: Some(start_ms + r as i64 * RELEASE_EVERY_MS),
                },
            )
            .expect("release");
        store
            .add_sessions(vec![(release_name(r), 2_000_000, 50_000)])
            .expect("sessions");
    }
    let load_secs = first_secs + started.elapsed().as_secs_f64();

    // Group ids spread over the size ranks: every 50th rank with crashes, biggest first.
    let stored: HashSet<u32> = specs.iter().map(|s| s.group).collect();
    let mut list = std::fs::File::create(out.join("groups.txt")).expect("groups.txt");
    for rank in (0..GROUPS).step_by(50) {
        if stored.contains(&(rank as u32)) {
            writeln!(list, "{}", groups[rank].id).unwrap();
        }
    }
    let disk: u64 = std::fs::read_dir(&data)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    let meta = format!(
        "crashes {n}\ngroups_seen {}\nreleases {RELEASES}\nresolved {resolved}\nignored {ignored}\n\
         generated_at_ms {now_ms}\nload_seconds {load_secs:.1}\ndisk_bytes {disk}\n\
         grouping_rules {rules}\nreport_timestamps received\n",
        stored.len()
    );
    std::fs::write(out.join("meta.txt"), &meta).expect("meta.txt");
    print!("{meta}");
    println!(
        "loaded {n} crashes in {load_secs:.1} s ({:.0}/s), {:.0} bytes on disk per crash",
        n as f64 / load_secs,
        disk as f64 / n as f64
    );
}

fn record(
    template: &CrashRecord,
    groups: &[GroupSpec],
    i: usize,
    s: &CrashSpec,
    start_ms: i64,
) -> NewCrash {
    let g = &groups[s.group as usize];
    let mut record = template.clone();
    record.identity = format!("triage-bench-{i}");
    record.filing.signature = g.signature.clone();
    record.filing.group_id = g.id.clone();
    record.filing.variant = format!("path-{}", s.variant);
    record.filing.title = g.title.clone();
    record.filing.culprit = Some(g.culprit.clone());
    record.group_id = g.id.clone();
    record.release = Some(release_name(s.release as u32));
    record.report.app.version = Some(format!("1.{}", s.release));
    record.report.app.build = Some(format!("{}", 100 + s.release as u32));
    let (os, version, _) = OS[s.os as usize];
    record.report.os.name = Some(os.to_owned());
    record.report.os.version = Some(version.to_owned());
    record.report.device_model = Some(MODELS[s.model as usize].0.to_owned());
    record.device_hash = Some(format!("{:064x}", s.device as u64 * 0x9E37_79B9 + 7));
    let received =
        time::OffsetDateTime::from_unix_timestamp_nanos((start_ms + s.at_ms) as i128 * 1_000_000)
            .unwrap();
    record.received_at = received
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    // The report's own time (the crash day leads its dedup key): a device sends a crash
    // when the app next runs, so the crash happened up to two hours before it arrived.
    let crashed = received - time::Duration::seconds((i as i64 * 7_919) % 7_200);
    record.report.timestamp = Some(
        crashed
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    record.encode().expect("encode")
}

async fn load(
    store: &Store,
    template: &Arc<CrashRecord>,
    groups: &Arc<Vec<GroupSpec>>,
    specs: &Arc<Vec<CrashSpec>>,
    range: std::ops::Range<usize>,
    start_ms: i64,
) {
    // Eight uploads of 256 crashes in flight (bulk loading, as store_bench does).
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(range.start));
    let end = range.end;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, template, groups, specs, next) = (
            store.clone(),
            template.clone(),
            groups.clone(),
            specs.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let from = next.fetch_add(256, std::sync::atomic::Ordering::SeqCst);
                if from >= end {
                    return;
                }
                let batch = tokio::task::spawn_blocking({
                    let (template, groups, specs) =
                        (template.clone(), groups.clone(), specs.clone());
                    move || {
                        (from..(from + 256).min(end))
                            .map(|i| record(&template, &groups, i, &specs[i], start_ms))
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
