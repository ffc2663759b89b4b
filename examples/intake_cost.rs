//! The in-process cost of intake without HTTP or storage: parse, scrub, symbolicate and
//! sign the same reports the load test sends. The baseline for `benches/load/run.sh`.
//!
//! `cargo run --release --example intake_cost -- REPORT_TEMPLATE DSYMS N`

use std::path::PathBuf;
use std::time::Instant;

use crashbox::debug_files::LocalDebugFiles;
use crashbox::report::ParseLimits;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, template, dsyms, n] = args.as_slice() else {
        eprintln!("usage: intake_cost REPORT_TEMPLATE DSYMS N");
        std::process::exit(2);
    };
    let template = std::fs::read_to_string(template).expect("template");
    let n: usize = n.parse().expect("N");
    let files = LocalDebugFiles::load(&[PathBuf::from(dsyms)], None).expect("dsyms");
    let reports: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            template
                .replace(
                    "INCIDENT_PLACEHOLDER",
                    &format!("00000000-0000-4000-8000-{i:012X}"),
                )
                .into_bytes()
        })
        .collect();
    let limits = ParseLimits::default();
    let secret = [7u8; 32];
    let now = time::OffsetDateTime::now_utc();
    // Warm the SymCache and the demangle table, as a running server has them.
    for report in reports.iter().take(100) {
        crashbox::intake::prepare(report, &limits, &secret, &files, now).unwrap();
    }
    let started = Instant::now();
    for report in &reports {
        crashbox::report::parse(report, &limits).unwrap();
    }
    let parse = started.elapsed().as_secs_f64() / n as f64;
    let started = Instant::now();
    let mut frames = 0usize;
    for report in &reports {
        let records = crashbox::intake::prepare(report, &limits, &secret, &files, now).unwrap();
        frames += records[0].report.threads[0].frames.len();
    }
    let prepare = started.elapsed().as_secs_f64() / n as f64;
    // What the store's record encoding (JSON + compression) adds per crash.
    let record = crashbox::intake::prepare(&reports[0], &limits, &secret, &files, now)
        .unwrap()
        .remove(0);
    let records = vec![record; n];
    let started = Instant::now();
    let mut encoded_bytes = 0;
    for record in records {
        let encoded = record.encode().unwrap();
        encoded_bytes = encoded.record_len();
    }
    let encode = started.elapsed().as_secs_f64() / n as f64;
    println!("reports: {n}, frames in crashed thread: {}", frames / n);
    println!(
        "parse only:                         {:.1} µs/report",
        parse * 1e6
    );
    println!(
        "parse+scrub+symbolicate+signature:  {:.1} µs/report",
        prepare * 1e6
    );
    println!(
        "record encoding (store, not above): {:.1} µs/report, {encoded_bytes} bytes stored",
        encode * 1e6
    );
}
