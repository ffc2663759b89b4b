//! How well grouping (`crashbox::grouping`) sorts the triage corpus (fixtures/out/triage/, see
//! fixtures/README.md "Triage corpus"): every report is symbolicated with the corpus
//! dSYMs, signed and grouped as intake does, then compared with the ground truth in
//! `expected_groups.json`. Prints the groups per bug, the groups that mix bugs, and
//! pairwise precision and recall (pairs of reports in the same predicted group vs
//! pairs of reports of the same true bug). Issue 16's target: one group per bug,
//! precision and recall 1.0.
//!
//! `cargo run --example grouping_quality [-- CORPUS_DIR] [--verbose]`

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crashbox::debug_files::LocalDebugFiles;
use crashbox::report::ParseLimits;

#[path = "common/pairwise.rs"]
mod pairwise;

struct Row {
    file: String,
    bug: String,
    build: String,
    path: String,
    format: String,
    group: String,
    signature: String,
    variant: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let verbose = args.iter().any(|a| a == "--verbose");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/out/triage"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("expected_groups.json")).expect("expected_groups.json"),
    )
    .expect("expected_groups.json is JSON");
    let zips: Vec<PathBuf> = manifest["builds"]
        .as_object()
        .expect("builds")
        .values()
        .map(|b| dir.join(b["dsyms"].as_str().expect("dsyms")))
        .collect();
    let files = LocalDebugFiles::load(&zips, None).expect("dSYMs");
    for w in &files.warnings {
        eprintln!("warning: {w}");
    }
    let limits = ParseLimits::default();

    let mut rows = Vec::new();
    for (file, truth) in manifest["reports"].as_object().expect("reports") {
        let bytes = std::fs::read(dir.join(file)).expect("report");
        let reports = match crashbox::report::parse(&bytes, &limits) {
            Ok(r) => r,
            Err(e) => {
                println!("PARSE ERROR {file}: {e}");
                continue;
            }
        };
        for report in &reports {
            let analysis =
                crashbox::intake::analyze(report, &files, crashbox::grouping::Rules::builtin_ref());
            assert_eq!(
                analysis.group_id,
                crashbox::intake::group_id(
                    report.app.bundle_id.as_deref().unwrap_or(""),
                    &analysis.signature
                )
            );
            // The variant (the call path) is not part of the filing; sign again for it.
            let crash = crashbox::symbolicate::symbolicate(report, &files);
            let signed =
                crashbox::grouping::sign(report, &crash, crashbox::grouping::Rules::builtin_ref());
            assert_eq!(signed.text, analysis.signature);
            if !analysis.missing.is_empty() {
                eprintln!(
                    "warning: {file}: missing debug files {:?}",
                    analysis.missing
                );
            }
            let s = |k: &str| truth[k].as_str().unwrap_or("").to_owned();
            rows.push(Row {
                file: file.clone(),
                bug: s("bug"),
                build: s("build"),
                path: s("path"),
                format: s("format"),
                group: analysis.group_id,
                signature: analysis.signature,
                variant: signed.variant,
            });
        }
    }

    if verbose {
        for r in &rows {
            println!(
                "{:<62} {:<7} {} {}  [variant: {}]",
                r.file.trim_start_matches("reports/"),
                r.format,
                &r.group[..8],
                r.signature,
                r.variant
            );
        }
        println!();
    }

    // Groups per bug.
    let mut by_bug: BTreeMap<&str, BTreeMap<&str, Vec<&Row>>> = BTreeMap::new();
    for r in &rows {
        by_bug
            .entry(&r.bug)
            .or_default()
            .entry(&r.group)
            .or_default()
            .push(r);
    }
    let mut group_bugs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &rows {
        group_bugs.entry(&r.group).or_default().insert(&r.bug);
    }
    println!(
        "{} reports, {} bugs, {} groups",
        rows.len(),
        by_bug.len(),
        group_bugs.len()
    );
    println!();
    for (bug, groups) in &by_bug {
        let n: usize = groups.values().map(Vec::len).sum();
        println!("{bug}: {n} reports in {} groups", groups.len());
        for (group, members) in groups {
            let formats: BTreeSet<&str> = members.iter().map(|r| r.format.as_str()).collect();
            let builds: BTreeSet<&str> = members.iter().map(|r| r.build.as_str()).collect();
            let paths: BTreeSet<&str> = members.iter().map(|r| r.path.as_str()).collect();
            let shared = if group_bugs[group].len() > 1 {
                "  [MIXED]"
            } else {
                ""
            };
            println!(
                "  {} {:>3}  builds {:?} formats {:?} paths {:?}{shared}",
                &group[..8],
                members.len(),
                builds,
                formats,
                paths
            );
            let variants: BTreeSet<&str> = members.iter().map(|r| r.variant.as_str()).collect();
            println!("               {}", members[0].signature);
            println!(
                "               reached from {} call path(s): {:?}",
                variants.len(),
                variants
            );
        }
    }
    println!();
    for (group, bugs) in &group_bugs {
        if bugs.len() > 1 {
            println!("group {} mixes bugs {:?}", &group[..8], bugs);
        }
    }

    // Pairwise precision and recall.
    let items: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.group.as_str(), r.bug.as_str()))
        .collect();
    let pairs = pairwise::Pairs::count(&items);
    println!(
        "pairs: {} same group and same bug, {} same group but different bugs, {} same bug but split",
        pairs.together, pairs.mixed, pairs.split
    );
    println!(
        "pairwise precision {:.4}  recall {:.4}",
        pairs.precision(),
        pairs.recall()
    );
}
