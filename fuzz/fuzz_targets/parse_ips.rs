#![no_main]
//! Fuzzes the Ips parser alone, skipping format detection.

use crashbox::report::{parse_as, ParseLimits, ReportFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_as(ReportFormat::Ips, data, &ParseLimits::default());
});
