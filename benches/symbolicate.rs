//! Symbolication speed on LargeApp's dSYM (benches/gen-large-dsym.sh), three ways in
//! one run, over the same N = 2000 addresses inside functions:
//!
//! - `bare_lookup`: the baseline. `LoadedSymCache::open`, then for each address
//!   `symcache().lookup(addr)`, collecting the whole inline chain (raw function name,
//!   file, line) without demangling or building strings.
//! - `crashbox`: `crashbox::symbolicate::symbolicate` on a `CrashReport` with one image
//!   and threads of 60 frames, through a `DebugFileSource` that hands out the same
//!   `Arc<LoadedSymCache>` (warm: demangled names are cached per function).
//! - `llvm_symbolizer`: one `llvm-symbolizer --inlines --obj=<DWARF>` process, one
//!   address written to its stdin at a time, its answer read back to the empty line
//!   that ends it (per-address round trips over a pipe, warm: every address was asked
//!   once before timing).
//! - `bare_owned_strings` (diagnostic, no target): the baseline plus an owned `String`
//!   for each function name and full file path, the least any owned output costs.
//! - `shared_strings_sketch` (diagnostic, no target): crashbox's frame building redone
//!   with shared strings (cached demangled `Arc<str>`, `Arc<str>` image and debug id),
//!   file paths still built per frame: what the fix suggested in benches/README.md
//!   could reach.
//!
//! Each iteration symbolicates all N addresses; lookups are the ones crashbox makes
//! (the first frame of a thread exact, the others at `pc - 1`). After criterion's
//! output, the bench prints per-address times and the ratios crashbox/bare and
//! llvm-symbolizer/crashbox from criterion's estimates of this run (medians and
//! means; the targets are judged on medians, which other load on the machine skews
//! less).
//!
//! ```sh
//! bash benches/gen-large-dsym.sh       # once: the dSYM (cached)
//! cargo bench --bench symbolicate
//! ```
//!
//! The SymCache is built once with crashbox's converter and cached next to the dSYM
//! (`LargeApp.symcache`). Under `cargo test` (no `--bench`), the bench runs once with
//! 60 addresses if that cache exists, and otherwise skips.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crashbox::report::{CrashReport, Image, RawFrame, ReportFormat, Thread};
use crashbox::symbolicate::{symbolicate, DebugFileSource, LoadedSymCache};

/// The allocator of the `crashbox` binary (src/main.rs), so that crashbox's frame
/// building costs here what it costs in the server and the CLI.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const FRAMES: usize = 2000;
const FRAMES_PER_THREAD: usize = 60;
/// Where the image sits in the simulated crashed process (an ASLR slide).
const LOAD_ADDRESS: u64 = 0x1_0400_0000;
const GROUP: &str = "symbolicate_2000_frames";

static RAN_BARE: AtomicBool = AtomicBool::new(false);
static RAN_OURS: AtomicBool = AtomicBool::new(false);
static RAN_LLVM: AtomicBool = AtomicBool::new(false);

fn bench_dir() -> PathBuf {
    std::env::var_os("CRASHBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(".cache/crashbox-bench")
        })
}

/// The DWARF file's debug id (lowercase, hyphenated) and its image base (`__TEXT` vmaddr).
fn identify(dwarf: &Path) -> (String, u64) {
    let view = symbolic::common::ByteView::open(dwarf).expect("open the DWARF file");
    let archive = symbolic::debuginfo::Archive::parse(&view).expect("parse the DWARF file");
    let object = archive
        .object_by_index(0)
        .expect("object 0")
        .expect("object 0");
    (
        object.debug_id().to_string().to_ascii_lowercase(),
        object.load_address(),
    )
}

/// `LargeApp.symcache`, next to the `.dSYM` bundle.
fn symcache_path(dwarf: &Path) -> PathBuf {
    dwarf
        .ancestors()
        .find(|p| p.extension().is_some_and(|e| e == "dSYM"))
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("LargeApp.symcache")
}

/// The cached SymCache of `dwarf`, rebuilt when missing or from another build.
fn symcache_for(dwarf: &Path, debug_id: &str, build: bool) -> Option<LoadedSymCache> {
    let path = symcache_path(dwarf);
    if let Ok(cache) = LoadedSymCache::open(&path) {
        if cache.symcache().debug_id().to_string().to_ascii_lowercase() == debug_id {
            return Some(cache);
        }
    }
    if !build {
        return None;
    }
    eprintln!("symbolicate bench: building {} (once)", path.display());
    let bytes = crashbox::debug_files::symcache_bytes(dwarf, 0).expect("build the SymCache");
    let tmp = path.with_extension("symcache.tmp");
    std::fs::write(&tmp, &bytes).expect("write the SymCache");
    std::fs::rename(&tmp, &path).expect("write the SymCache");
    Some(LoadedSymCache::open(&path).expect("open the SymCache"))
}

/// `n` image-relative addresses inside functions, 4-byte aligned (arm64), seeded.
/// Function ranges run from one entry pc to the next; each address is at least 4
/// bytes into its function so that `pc - 1` stays inside it.
fn pick_addresses(cache: &LoadedSymCache, n: usize) -> Vec<u64> {
    let mut entries: Vec<u32> = cache
        .symcache()
        .functions()
        .map(|f| f.entry_pc())
        .filter(|&pc| pc != u32::MAX)
        .collect();
    entries.sort_unstable();
    entries.dedup();
    let ranges: Vec<(u64, u64)> = entries
        .windows(2)
        .map(|w| (u64::from(w[0]), u64::from(w[1])))
        .filter(|(start, end)| end - start >= 8)
        .collect();
    assert!(!ranges.is_empty(), "no functions in the SymCache");
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let (start, end) = ranges[rng.gen_range(0..ranges.len())];
        let addr = start + 4 * rng.gen_range(1..(end - start) / 4);
        if cache.symcache().lookup(addr).next().is_some() {
            out.push(addr);
        }
    }
    out
}

/// The lookup address crashbox uses for frame `i` of the flat list: exact for the
/// first frame of each thread, `pc - 1` for the return addresses below it.
fn lookup_address(relative: u64, i: usize) -> u64 {
    if i.is_multiple_of(FRAMES_PER_THREAD) {
        relative
    } else {
        relative - 1
    }
}

fn report_for(debug_id: &str, relative: &[u64], image_size: u64) -> CrashReport {
    let mut report = CrashReport::new(ReportFormat::Crashbox);
    report.app.name = Some("LargeApp".into());
    report.app.bundle_id = Some("com.crashbox.large".into());
    report.arch = Some("arm64".into());
    report.images.push(Image {
        name: "LargeApp".into(),
        path: Some(
            "/private/var/containers/Bundle/Application/5D0E3F6A-2B7C-4E19-9A41-6F3C2D8B7E10/LargeApp.app/LargeApp"
                .into(),
        ),
        debug_id: Some(debug_id.to_owned()),
        load_address: LOAD_ADDRESS,
        size: Some(image_size),
        arch: Some("arm64".into()),
    });
    for (index, chunk) in relative.chunks(FRAMES_PER_THREAD).enumerate() {
        report.threads.push(Thread {
            index,
            name: None,
            queue: (index == 0).then(|| "com.apple.main-thread".into()),
            crashed: index == 0,
            frames: chunk
                .iter()
                .map(|&rel| RawFrame {
                    instruction_addr: LOAD_ADDRESS + rel,
                    ..RawFrame::default()
                })
                .collect(),
        });
    }
    report.crashed_thread = Some(0);
    report
}

/// The frame of `shared_strings_sketch`: crashbox's `Frame` with shared strings.
#[allow(dead_code)]
struct SketchFrame {
    instruction_addr: u64,
    image: Arc<str>,
    debug_id: Arc<str>,
    function: Arc<str>,
    file: Option<String>,
    line: Option<u32>,
    function_addr: u64,
    inlined: bool,
}

/// The one debug file of the bench, as the server's and the CLI's sources hand it out.
struct OneDebugFile {
    debug_id: String,
    cache: Arc<LoadedSymCache>,
}

impl DebugFileSource for OneDebugFile {
    fn by_debug_id(&self, debug_id: &str, _arch: Option<&str>) -> Option<Arc<LoadedSymCache>> {
        (debug_id.eq_ignore_ascii_case(&self.debug_id)).then(|| self.cache.clone())
    }

    fn by_name(
        &self,
        _name: &str,
        _release: Option<&str>,
    ) -> Option<(String, Arc<LoadedSymCache>)> {
        None
    }
}

/// A long-running `llvm-symbolizer --inlines`, asked one address at a time.
struct Symbolizer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    line: String,
}

impl Symbolizer {
    fn spawn(dwarf: &Path) -> std::io::Result<Self> {
        let program =
            std::env::var_os("LLVM_SYMBOLIZER").unwrap_or_else(|| "llvm-symbolizer".into());
        let mut child = Command::new(program)
            .arg("--inlines")
            .arg(format!("--obj={}", dwarf.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Symbolizer {
            child,
            stdin,
            stdout,
            line: String::new(),
        })
    }

    /// Symbolicates `vmaddrs` pipelined: all questions written, then all answers read.
    /// This is llvm-symbolizer's own cost per address, without one pipe round trip
    /// (two process wake-ups) per address. The questions fit in the pipe's buffer, so
    /// writing them all first cannot deadlock.
    fn ask_all(&mut self, vmaddrs: &[u64]) -> usize {
        let mut questions = String::with_capacity(vmaddrs.len() * 20);
        for addr in vmaddrs {
            questions.push_str(&format!("0x{addr:x}\n"));
        }
        assert!(
            questions.len() < 60_000,
            "questions must fit the pipe buffer"
        );
        self.stdin
            .write_all(questions.as_bytes())
            .expect("write to llvm-symbolizer");
        self.stdin.flush().expect("write to llvm-symbolizer");
        vmaddrs.iter().map(|_| self.read_answer(None)).sum()
    }

    /// Symbolicates one address; returns the number of answer lines (2 per frame).
    fn ask(&mut self, vmaddr: u64, keep: Option<&mut Vec<String>>) -> usize {
        writeln!(self.stdin, "0x{vmaddr:x}").expect("write to llvm-symbolizer");
        self.stdin.flush().expect("write to llvm-symbolizer");
        self.read_answer(keep)
    }

    /// Reads one answer, up to its empty line; returns its line count (2 per frame).
    fn read_answer(&mut self, mut keep: Option<&mut Vec<String>>) -> usize {
        let mut lines = 0;
        loop {
            self.line.clear();
            let n = self
                .stdout
                .read_line(&mut self.line)
                .expect("read from llvm-symbolizer");
            if n == 0 || self.line == "\n" {
                return lines;
            }
            if let Some(keep) = keep.as_deref_mut() {
                keep.push(self.line.trim_end().to_owned());
            }
            lines += 1;
        }
    }
}

impl Drop for Symbolizer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let dwarf = bench_dir().join("large/LargeApp.app.dSYM/Contents/Resources/DWARF/LargeApp");
    if !dwarf.is_file() {
        eprintln!(
            "symbolicate bench: skipped: {} is missing; run `bash benches/gen-large-dsym.sh` first",
            dwarf.display()
        );
        return;
    }
    let (debug_id, image_base) = identify(&dwarf);
    let Some(cache) = symcache_for(&dwarf, &debug_id, bench_mode) else {
        eprintln!("symbolicate bench: skipped under `cargo test`: run `cargo bench --bench symbolicate` once to build the SymCache");
        return;
    };
    let n = if bench_mode {
        FRAMES
    } else {
        FRAMES_PER_THREAD
    };
    let relative = pick_addresses(&cache, n);
    let lookups: Vec<u64> = relative
        .iter()
        .enumerate()
        .map(|(i, &rel)| lookup_address(rel, i))
        .collect();
    let image_size = relative.iter().max().copied().unwrap_or(0) + 0x10_0000;
    let report = report_for(&debug_id, &relative, image_size);
    let cache = Arc::new(cache);
    let source = OneDebugFile {
        debug_id: debug_id.clone(),
        cache: cache.clone(),
    };
    // The symcache opened by the baseline is its own mapping of the same file.
    let bare = LoadedSymCache::open(&symcache_path(&dwarf)).expect("open the SymCache");

    let mut symbolizer = Symbolizer::spawn(&dwarf).expect("spawn llvm-symbolizer (LLVM 14)");
    let frames_out = check_agreement(&report, &source, &lookups, image_base, &mut symbolizer);

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(3))
        .measurement_time(Duration::from_secs(10))
        .configure_from_args();
    {
        let mut group = c.benchmark_group(GROUP);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function("bare_lookup", |b| {
            RAN_BARE.store(true, Ordering::Relaxed);
            b.iter(|| {
                let symcache = bare.symcache();
                let mut frames = Vec::with_capacity(lookups.len() * 2);
                for &addr in &lookups {
                    for location in symcache.lookup(addr) {
                        frames.push((location.function().name(), location.file(), location.line()));
                    }
                }
                black_box(frames)
            })
        });
        // Diagnostic, not a target: the baseline plus what any owned output costs
        // (function name and full file path as `String`s), to split crashbox's
        // overhead into string building and the rest.
        group.bench_function("bare_owned_strings", |b| {
            b.iter(|| {
                let symcache = bare.symcache();
                let mut frames = Vec::with_capacity(lookups.len() * 2);
                for &addr in &lookups {
                    for location in symcache.lookup(addr) {
                        frames.push((
                            location.function().name().to_owned(),
                            location.file().map(|f| f.full_path()),
                            location.line(),
                        ));
                    }
                }
                black_box(frames)
            })
        });
        // Diagnostic, not a target: a sketch of crashbox's frame building with shared
        // strings (the cached demangled `Arc<str>`, and `Arc<str>` image and debug id
        // per image instead of a `String` clone per frame), file paths still built per
        // frame as symbolic's `File::full_path` must. What the suggested fix could reach.
        let image_name: Arc<str> = Arc::from("LargeApp");
        let image_id: Arc<str> = Arc::from(debug_id.as_str());
        group.bench_function("shared_strings_sketch", |b| {
            b.iter(|| {
                let symcache = cache.symcache();
                let mut frames: Vec<SketchFrame> = Vec::with_capacity(lookups.len() * 2);
                for (i, &addr) in lookups.iter().enumerate() {
                    let start = frames.len();
                    for location in symcache.lookup(addr) {
                        let function = location.function();
                        let line = location.line();
                        frames.push(SketchFrame {
                            instruction_addr: LOAD_ADDRESS + relative[i],
                            image: image_name.clone(),
                            debug_id: image_id.clone(),
                            function: cache.demangle(function.name(), function.language()),
                            file: location.file().map(|f| f.full_path()),
                            line: (line != 0).then_some(line),
                            function_addr: u64::from(function.entry_pc()),
                            inlined: true,
                        });
                    }
                    if let Some(outer) = frames[start..].last_mut() {
                        outer.inlined = false;
                    }
                }
                black_box(frames)
            })
        });
        group.bench_function("crashbox", |b| {
            RAN_OURS.store(true, Ordering::Relaxed);
            b.iter(|| black_box(symbolicate(black_box(&report), &source)))
        });
        group.bench_function("llvm_symbolizer", |b| {
            RAN_LLVM.store(true, Ordering::Relaxed);
            b.iter(|| {
                let mut lines = 0;
                for &addr in &lookups {
                    lines += symbolizer.ask(image_base + addr, None);
                }
                black_box(lines)
            })
        });
        let vmaddrs: Vec<u64> = lookups.iter().map(|&a| image_base + a).collect();
        group.bench_function("llvm_symbolizer_pipelined", |b| {
            b.iter(|| black_box(symbolizer.ask_all(&vmaddrs)))
        });
        group.finish();
    }
    c.final_summary();
    drop(symbolizer);
    if bench_mode {
        print_ratios(n, frames_out);
    }
}

/// Warms llvm-symbolizer (every address once) and checks that it and crashbox name
/// the same outermost function and line for each address, so the three ways do the
/// same work. Returns the number of frames crashbox puts out (inlined ones included).
fn check_agreement(
    report: &CrashReport,
    source: &OneDebugFile,
    lookups: &[u64],
    image_base: u64,
    symbolizer: &mut Symbolizer,
) -> usize {
    let crash = symbolicate(report, source);
    let ours: Vec<_> = crash.threads.iter().flat_map(|t| t.frames.iter()).collect();
    let mut outer = ours.iter().filter(|f| !f.inlined);
    let (mut same, mut frames_llvm) = (0, 0);
    for &addr in lookups {
        let mut answer = Vec::new();
        symbolizer.ask(image_base + addr, Some(&mut answer));
        frames_llvm += answer.len() / 2;
        let Some(frame) = outer.next() else { break };
        let (Some(function), Some(location)) =
            (answer.get(answer.len().saturating_sub(2)), answer.last())
        else {
            continue;
        };
        // llvm-symbolizer prints line 0 where crashbox leaves the line out, and the
        // return type of template functions, which crashbox (like Xcode) drops.
        let line = location
            .rsplit(':')
            .nth(1)
            .and_then(|l| l.parse::<u32>().ok())
            .filter(|&l| l != 0);
        let same_name = frame
            .function
            .as_deref()
            .is_some_and(|ours| function == ours || function.ends_with(&format!(" {ours}")));
        if same_name && frame.line == line {
            same += 1;
        } else if std::env::var_os("SYMBOLICATE_BENCH_DEBUG").is_some() {
            eprintln!(
                "  0x{addr:x}: crashbox {:?}:{:?} | llvm-symbolizer {function} {location}",
                frame.function, frame.line
            );
        }
    }
    eprintln!(
        "symbolicate bench: {} addresses, {} frames with inlines from crashbox, {frames_llvm} from llvm-symbolizer; \
         outermost function and line agree for {same}/{} (modulo line 0 and template return types)",
        lookups.len(),
        ours.len(),
        lookups.len()
    );
    // Timing answers that disagree with the ground truth would measure the wrong thing.
    assert!(
        same * 100 >= lookups.len() * 99,
        "crashbox and llvm-symbolizer agree on only {same}/{} addresses",
        lookups.len()
    );
    ours.len()
}

fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/criterion")
}

/// Time per iteration (ns) of one benchmark of this run, from criterion's files:
/// `stat` is `mean` (criterion's headline) or `median` (robust to the outliers that
/// other work on the machine causes).
fn estimate(function: &str, stat: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(GROUP)
        .join(function)
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json[stat]["point_estimate"].as_f64()
}

fn print_ratios(n: usize, frames_out: usize) {
    let ran = [&RAN_BARE, &RAN_OURS, &RAN_LLVM]
        .iter()
        .all(|r| r.load(Ordering::Relaxed));
    if !ran {
        println!("(ratios need all three benchmarks in one run; a filter skipped some)");
        return;
    }
    let all = |stat: &str| {
        Some((
            estimate("bare_lookup", stat)?,
            estimate("bare_owned_strings", stat),
            estimate("shared_strings_sketch", stat),
            estimate("crashbox", stat)?,
            estimate("llvm_symbolizer", stat)?,
        ))
    };
    let (Some(mean), Some(median)) = (all("mean"), all("median")) else {
        println!(
            "(criterion's estimates not found under {})",
            criterion_dir().display()
        );
        return;
    };
    let per = |ns: f64| ns / n as f64 / 1e3;
    println!();
    println!(
        "per address ({n} addresses per iteration = {n} input frames, {frames_out} output frames with inlines), µs:"
    );
    println!("                           mean    median");
    let row = |name: &str, a: f64, b: f64| println!("  {name:<21} {:>8.3} {:>8.3}", per(a), per(b));
    row("bare_lookup", mean.0, median.0);
    if let (Some(a), Some(b)) = (mean.1, median.1) {
        row("bare_owned_strings", a, b);
    }
    if let (Some(a), Some(b)) = (mean.2, median.2) {
        row("shared_strings_sketch", a, b);
    }
    row("crashbox", mean.3, median.3);
    row("llvm_symbolizer", mean.4, median.4);
    let pipelined = (
        estimate("llvm_symbolizer_pipelined", "mean"),
        estimate("llvm_symbolizer_pipelined", "median"),
    );
    if let (Some(a), Some(b)) = pipelined {
        row("llvm_symbolizer_pipelined", a, b);
        println!(
            "crashbox vs llvm-symbolizer pipelined (its compute alone, no round trip per address): {:.1}x faster by medians (target >= 20x: {})",
            b / median.3,
            if b / median.3 >= 20.0 { "met" } else { "MISSED" }
        );
    }
    let (vs_llvm, vs_llvm_mean) = (median.4 / median.3, mean.4 / mean.3);
    let (vs_bare, vs_bare_mean) = (median.3 / median.0, mean.3 / mean.0);
    if let Some(owned) = median.1 {
        println!(
            "diagnostic: bare_owned_strings / bare = {:.2} (median)",
            owned / median.0
        );
    }
    if let Some(sketch) = median.2 {
        println!(
            "diagnostic: shared_strings_sketch / bare = {:.2}, llvm-symbolizer / sketch = {:.1}x (medians)",
            sketch / median.0,
            median.4 / sketch
        );
    }
    println!(
        "crashbox vs llvm-symbolizer: {vs_llvm:.1}x faster by medians ({vs_llvm_mean:.1}x by means) (target >= 20x: {})",
        if vs_llvm >= 20.0 { "met" } else { "MISSED" }
    );
    println!(
        "crashbox vs bare lookup:     {vs_bare:.2}x the time by medians ({vs_bare_mean:.2}x by means) (target <= 2x: {})",
        if vs_bare <= 2.0 { "met" } else { "MISSED" }
    );
}
