#![no_main]
//! Fuzzes the Crashbox parser alone, skipping format detection.

use crashbox::report::{parse_as, ParseLimits, ReportFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_as(ReportFormat::Crashbox, data, &ParseLimits::default());
});
