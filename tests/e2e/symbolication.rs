//! Symbolication checked against llvm-symbolizer, the ground truth for function, file,
//! line and inline chain: every symbolicated frame of every report that has debug
//! files must match `llvm-symbolizer --inlines` at the same adjusted address.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crashbox::debug_files::LocalDebugFiles;
use crashbox::report::{parse, ParseLimits};
use crashbox::symbolicate::{demangle, symbolicate, Frame, FrameStatus, SymbolicatedCrash};
use serde_json::Value;
use symbolic::common::Language;

use crate::support::{corpus, fixture};

/// One expected location in an inline chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    function: String,
    file: Option<String>,
    line: Option<u32>,
}

/// The object files in `dirs` by debug id, with their `__TEXT` vmaddr.
fn objects_by_debug_id(dirs: &[PathBuf]) -> HashMap<String, (PathBuf, u64)> {
    let mut out = HashMap::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        let Ok(archive) = symbolic::debuginfo::Archive::parse(&data) else {
            continue;
        };
        for object in archive.objects().flatten() {
            let id = object.debug_id().to_string().to_ascii_lowercase();
            // The dSYM is the ground truth when the stripped binary sits beside it.
            if object.has_debug_info() || !out.contains_key(&id) {
                out.insert(id, (path.clone(), object.load_address()));
            }
        }
    }
    out
}

/// What llvm-symbolizer says about `addr` in `object`, innermost first.
fn llvm_symbolizer(object: &Path, addrs: &[u64]) -> Vec<Vec<Location>> {
    let mut cmd = Command::new("llvm-symbolizer");
    cmd.args(["--inlines", "--no-demangle", "--output-style=JSON"])
        .arg(format!("--obj={}", object.display()));
    for addr in addrs {
        cmd.arg(format!("0x{addr:x}"));
    }
    let out = cmd
        .output()
        .expect("llvm-symbolizer is installed (scripts/test.sh installs it)");
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("llvm-symbolizer JSON");
    parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry["Symbol"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Location {
                    function: demangle(s["FunctionName"].as_str().unwrap(), Language::Unknown),
                    file: s["FileName"]
                        .as_str()
                        .filter(|f| !f.is_empty())
                        .map(str::to_owned),
                    line: s["Line"].as_u64().filter(|&l| l != 0).map(|l| l as u32),
                })
                .collect()
        })
        .collect()
}

/// Splits a thread's frames into the inline chains of its raw frames.
fn chains(frames: &[Frame]) -> Vec<&[Frame]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, frame) in frames.iter().enumerate() {
        if !frame.inlined {
            out.push(&frames[start..=i]);
            start = i + 1;
        }
    }
    out
}

/// Compares every symbolicated frame of `crash` with llvm-symbolizer; returns how many
/// chains were checked.
fn check_against_llvm(
    crash: &SymbolicatedCrash,
    objects: &HashMap<String, (PathBuf, u64)>,
) -> usize {
    let mut stacks: Vec<(&[Frame], bool)> = crash
        .threads
        .iter()
        .map(|t| (t.frames.as_slice(), true))
        .collect();
    if let Some(leb) = &crash.last_exception_backtrace {
        stacks.push((leb.as_slice(), false));
    }
    let mut checked = 0;
    for (frames, first_is_pc) in stacks {
        for (n, chain) in chains(frames).into_iter().enumerate() {
            let outer = chain.last().unwrap();
            if outer.status != FrameStatus::Symbolicated {
                continue;
            }
            let debug_id = outer.debug_id.as_deref().unwrap();
            let (object, vmaddr) = objects
                .get(debug_id)
                .unwrap_or_else(|| panic!("no object for {debug_id}"));
            let relative = outer.relative_addr.unwrap();
            let lookup = if first_is_pc && n == 0 {
                relative
            } else {
                relative - 1
            };
            let want = llvm_symbolizer(object, &[vmaddr + lookup]).remove(0);
            let got: Vec<Location> = chain
                .iter()
                .map(|f| Location {
                    function: f.function.as_deref().unwrap().to_owned(),
                    file: f.file.as_deref().map(str::to_owned),
                    line: f.line,
                })
                .collect();
            assert_eq!(
                got, want,
                "frame {n} at 0x{:x} ({debug_id})",
                outer.instruction_addr
            );
            checked += 1;
        }
    }
    checked
}

/// Parses and symbolicates `report` with the debug files in `dsyms`, checks every frame
/// against llvm-symbolizer, and returns the crash for further checks.
#[track_caller]
fn check(
    report: &Path,
    dsyms: &[PathBuf],
) -> (crashbox::report::CrashReport, SymbolicatedCrash, usize) {
    let bytes = std::fs::read(report).unwrap();
    let parsed = parse(&bytes, &ParseLimits::default()).unwrap().remove(0);
    let files = LocalDebugFiles::load(dsyms, None).unwrap();
    let crash = symbolicate(&parsed, &files);
    let checked = check_against_llvm(&crash, &objects_by_debug_id(dsyms));
    (parsed, crash, checked)
}

fn crashed_functions(crash: &SymbolicatedCrash) -> Vec<String> {
    crash
        .crashed_thread()
        .unwrap()
        .frames
        .iter()
        .map(|f| f.function.as_deref().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn crashprobe_events_match_llvm_symbolizer() {
    let dsyms = vec![corpus("xcode-dsyms")];
    let mut total = 0;
    for name in [
        "crashprobe_call_abort.json",
        "crashprobe_dereference_a_null_pointer.json",
        "crashprobe_swift.json",
    ] {
        let (_, crash, checked) = check(&corpus(&format!("sentry-events/{name}")), &dsyms);
        assert!(checked >= 2, "{name}: only {checked} frames symbolicated");
        // Every frame in an image whose dSYM is at hand must have been symbolicated
        // (and so compared above).
        for thread in &crash.threads {
            for frame in &thread.frames {
                let has_dsym = crash
                    .images
                    .iter()
                    .any(|i| i.debug_file_found && Some(i.name.as_str()) == frame.image.as_deref());
                if has_dsym {
                    assert_eq!(frame.status, FrameStatus::Symbolicated, "{name}: {frame:?}");
                }
            }
        }
        total += checked;
    }
    // The three events hold nine frames in CrashProbe's own two images.
    assert!(total >= 9, "only {total} frames checked");
}

#[test]
fn null_dereference_resolves_and_its_caller_uses_pc_minus_one() {
    let dsyms = vec![corpus("xcode-dsyms")];
    let (_, crash, _) = check(
        &corpus("sentry-events/crashprobe_dereference_a_null_pointer.json"),
        &dsyms,
    );
    let functions = crashed_functions(&crash);
    assert!(
        functions[..3].contains(&"-[CRLCrashNULL crash]".to_owned()),
        "{functions:?}"
    );
    assert!(
        functions[..6].contains(&"-[CRLDetailViewController doCrash]".to_owned()),
        "{functions:?}"
    );
}

#[test]
fn the_swift_crash_shows_a_demangled_swift_name() {
    let dsyms = vec![corpus("xcode-dsyms")];
    let (_, crash, _) = check(&corpus("sentry-events/crashprobe_swift.json"), &dsyms);
    let functions = crashed_functions(&crash);
    // Swift 3's mangling (`_TToFC11CrashLibiOS13CRLCrashSwift5crashfT_T_`).
    assert!(
        functions.contains(&"@objc CRLCrashSwift.crash()".to_owned()),
        "{functions:?}"
    );
    assert!(
        functions
            .iter()
            .all(|f| !f.starts_with("$s") && !f.starts_with("_T")),
        "{functions:?}"
    );
}

#[test]
fn the_icdab_assert_resolves_through_its_symbol_table() {
    let (_, crash, _) = check(
        &corpus("apple-crash/icdab_planets.crash"),
        &[corpus("binaries/icdab_planets")],
    );
    let functions = crashed_functions(&crash);
    assert_eq!(
        functions[4], "-[PlanetViewController viewDidLoad]",
        "{functions:?}"
    );
}

/// The fixture app's reports, from `fixtures/make_reports.py`: inlined C, C++
/// templates, Objective-C methods and a framework, built by clang and dsymutil.
#[test]
fn fixture_reports_match_llvm_symbolizer_and_their_expected_frames() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(fixture("out/reports/expected_frames.json")).unwrap(),
    )
    .unwrap();
    for (report, dsyms) in [
        ("fixture_v1.ips", "out/dSYMs.zip"),
        ("fixture_v1.crash", "out/dSYMs.zip"),
        ("fixture_v2.ips", "out/CrashboxFixture.xcarchive.zip"),
    ] {
        let dsym_dirs = vec![fixture(&format!(
            "out/{}",
            if dsyms.contains("xcarchive") {
                "v2"
            } else {
                "v1"
            }
        ))];
        let (parsed, crash, _) = check(&fixture(&format!("out/reports/{report}")), &dsym_dirs);
        // The zips the server takes symbolicate the same as the unpacked bundles.
        let from_zip = symbolicate(
            &parsed,
            &LocalDebugFiles::load(&[fixture(dsyms)], None).unwrap(),
        );
        assert_eq!(from_zip.threads, crash.threads, "{report}");

        let want = &expected[report];
        for (thread, want_thread) in crash
            .threads
            .iter()
            .zip(want["threads"].as_array().unwrap())
        {
            let chains = chains(&thread.frames);
            let want_frames = want_thread["frames"].as_array().unwrap();
            assert_eq!(chains.len(), want_frames.len(), "{report}");
            for (chain, want_frame) in chains.iter().zip(want_frames) {
                let locations = want_frame["locations"].as_array().unwrap();
                if locations.is_empty() {
                    assert_ne!(chain[0].status, FrameStatus::Symbolicated, "{report}");
                    continue;
                }
                let got: Vec<(Option<&str>, Option<u32>)> =
                    chain.iter().map(|f| (f.file.as_deref(), f.line)).collect();
                let want: Vec<(Option<&str>, Option<u32>)> = locations
                    .iter()
                    .map(|l| {
                        (
                            l["file"].as_str(),
                            l["line"].as_u64().filter(|&n| n != 0).map(|n| n as u32),
                        )
                    })
                    .collect();
                assert_eq!(got, want, "{report}: {chain:?}");
            }
        }
        let functions = crashed_functions(&crash);
        assert_eq!(
            &functions[..3],
            ["cb_read_field", "cb_checksum", "cb_process_record"],
            "{report}"
        );
        assert!(
            functions.contains(&"-[CBChallengeViewController loadChallenge:]".to_owned()),
            "{functions:?}"
        );
        assert!(
            functions
                .iter()
                .any(|f| f.starts_with("crashbox::accumulate<int>(")),
            "{functions:?}"
        );
        assert!(crash.crashed_thread().unwrap().frames[0].inlined);
    }
}
