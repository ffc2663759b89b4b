#![no_main]
//! Fuzzes format detection plus whichever parser it picks: what an upload meets.

use crashbox::report::{parse, ParseLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse(data, &ParseLimits::default());
});
