//! How a symbolicated crash is shown: the crash JSON of DESIGN.md's contract (CLI
//! `--format json` and the API) and Apple's text report (`--format apple`,
//! `/crashes/{id}/apple`). Both read the parsed [`CrashReport`] and its
//! [`SymbolicatedCrash`]; neither knows about HTTP.

mod apple;
mod json;

pub use apple::apple_text;
pub use json::{crash_json, CrashIds};

use crate::report::CrashReport;
use crate::symbolicate::{Frame, SymbolicatedCrash};

/// A first signature: the exception and the top frames that name the crash site. The
/// grouping work will refine it; it is stable for the same crash site today.
pub fn signature(report: &CrashReport, crash: &SymbolicatedCrash) -> String {
    let exception = report
        .exception
        .name
        .clone()
        .or_else(|| report.exception.kind.clone())
        .or_else(|| report.exception.signal.clone())
        .unwrap_or_else(|| "crash".to_owned());
    let frames: &[Frame] = crash
        .last_exception_backtrace
        .as_deref()
        .filter(|f| !f.is_empty())
        .or_else(|| crash.crashed_thread().map(|t| t.frames.as_slice()))
        .or_else(|| crash.threads.first().map(|t| t.frames.as_slice()))
        .unwrap_or(&[]);
    let in_app: Vec<&str> = frames
        .iter()
        .filter(|f| f.in_app)
        .filter_map(|f| f.function.as_deref())
        .take(3)
        .collect();
    let names = if in_app.is_empty() {
        frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .take(3)
            .collect()
    } else {
        in_app
    };
    if names.is_empty() {
        exception
    } else {
        format!("{exception} | {}", names.join(" | "))
    }
}
