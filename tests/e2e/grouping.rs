//! Issue 16's bar on the triage corpus (fixtures/out/triage/, fixtures/README.md
//! "Triage corpus"): every bug is exactly one group, across builds, formats and call
//! paths, and no group holds two bugs (pairwise precision and recall 1.0). Grouped by
//! bundle id + signature text, as the group id is.

use std::collections::{BTreeMap, BTreeSet};

use crashbox::debug_files::LocalDebugFiles;
use crashbox::grouping::{self, Rules, Signature};
use crashbox::report::ParseLimits;
use crashbox::symbolicate::symbolicate;
use serde_json::Value;

use crate::support::fixture;

#[path = "../../examples/common/pairwise.rs"]
mod pairwise;

struct Signed {
    file: String,
    bug: String,
    path: String,
    group: String,
    signature: Signature,
}

fn sign_corpus(rules: &Rules) -> (Value, Vec<Signed>) {
    let dir = fixture("out/triage");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected_groups.json")).unwrap()).unwrap();
    let zips: Vec<_> = manifest["builds"]
        .as_object()
        .unwrap()
        .values()
        .map(|b| dir.join(b["dsyms"].as_str().unwrap()))
        .collect();
    let files = LocalDebugFiles::load(&zips, None).unwrap();
    let mut signed = Vec::new();
    for (file, truth) in manifest["reports"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let reports = crashbox::report::parse(&bytes, &ParseLimits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        for report in &reports {
            let crash = symbolicate(report, &files);
            let signature = grouping::sign(report, &crash, rules);
            let bundle = report.app.bundle_id.clone().unwrap_or_default();
            signed.push(Signed {
                file: file.clone(),
                bug: truth["bug"].as_str().unwrap().to_owned(),
                path: truth["path"].as_str().unwrap().to_owned(),
                group: format!("{bundle}\n{}", signature.text),
                signature,
            });
        }
    }
    (manifest, signed)
}

/// (groups per bug, pairwise precision, pairwise recall)
fn score(signed: &[Signed]) -> (BTreeMap<&str, BTreeSet<&str>>, f64, f64) {
    let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in signed {
        groups.entry(&s.bug).or_default().insert(&s.group);
    }
    let items: Vec<(&str, &str)> = signed
        .iter()
        .map(|s| (s.group.as_str(), s.bug.as_str()))
        .collect();
    let pairs = pairwise::Pairs::count(&items);
    (groups, pairs.precision(), pairs.recall())
}

#[test]
fn every_corpus_bug_is_exactly_one_group() {
    let (manifest, signed) = sign_corpus(Rules::builtin_ref());
    assert_eq!(signed.len(), manifest["reports"].as_object().unwrap().len());
    let (groups, precision, recall) = score(&signed);
    let shown: Vec<String> = signed
        .iter()
        .map(|s| format!("{} → {}", s.file, s.signature.text))
        .collect();
    for (bug, texts) in &groups {
        assert_eq!(texts.len(), 1, "{bug} is split: {texts:#?}\n{shown:#?}");
    }
    assert_eq!(groups.len(), manifest["bugs"].as_object().unwrap().len());
    assert_eq!((precision, recall), (1.0, 1.0), "{shown:#?}");

    // Each app bug's title names its crash site, and its culprit the site's file.
    for (bug, truth) in manifest["bugs"].as_object().unwrap() {
        let first = signed.iter().find(|s| &s.bug == bug).unwrap();
        let sig = &first.signature;
        assert_eq!(sig.exception, truth["exception"].as_str().unwrap(), "{bug}");
        if let Some(site) = truth["crash_site"]["v1"].as_object() {
            let function = site["function"].as_str().unwrap();
            assert_eq!(sig.function.as_deref(), Some(function), "{bug}");
            assert_eq!(sig.text, format!("{} | {function}", sig.exception), "{bug}");
        }
    }
}

#[test]
fn variants_tell_the_call_paths_of_one_bug_apart() {
    let (manifest, signed) = sign_corpus(Rules::builtin_ref());
    for (bug, truth) in manifest["bugs"].as_object().unwrap() {
        let mut by_path: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in signed.iter().filter(|s| &s.bug == bug) {
            by_path
                .entry(&s.path)
                .or_default()
                .insert(&s.signature.variant);
        }
        if truth["system_only"].as_bool().unwrap() {
            // No in-app frame, no in-app caller chain.
            let all: BTreeSet<&str> = by_path.values().flatten().copied().collect();
            assert_eq!(all, BTreeSet::from([""]), "{bug}");
            continue;
        }
        // One variant per path, whatever the build or format…
        for (path, variants) in &by_path {
            assert_eq!(variants.len(), 1, "{bug} via {path}: {variants:?}");
            let variant = variants.first().unwrap();
            assert!(variant.starts_with(path), "{bug} via {path}: {variant}");
        }
        // …and a different one for each path.
        let distinct: BTreeSet<&str> = by_path.values().flatten().copied().collect();
        assert_eq!(distinct.len(), by_path.len(), "{bug}: {by_path:?}");
    }
    let null_header: BTreeSet<&str> = signed
        .iter()
        .filter(|s| s.bug == "null_header")
        .map(|s| s.signature.variant.as_str())
        .collect();
    assert_eq!(null_header.len(), 3, "{null_header:?}");
}
