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
    // An in-app frame with no debug file yet is named by image and offset: stable for
    // one build, and replaced by the function once the dSYM arrives.
    let in_app: Vec<String> = frames
        .iter()
        .filter(|f| f.in_app)
        .filter_map(|f| match (&f.function, &f.image, f.relative_addr) {
            (Some(function), _, _) => Some(function.to_string()),
            (None, Some(image), Some(rel)) => Some(format!("{image}+0x{rel:x}")),
            _ => None,
        })
        .take(3)
        .collect();
    let names: Vec<String> = if in_app.is_empty() {
        frames
            .iter()
            .filter_map(|f| f.function.as_deref().map(str::to_owned))
            .take(3)
            .collect()
    } else {
        in_app
    };
    let mut signature = if names.is_empty() {
        exception
    } else {
        format!("{exception} | {}", names.join(" | "))
    };
    // Report fields are cleaned at parse time; function names come from debug files,
    // which a client uploads too, and from records stored before that cleaning.
    crate::report::clean_text(&mut signature);
    signature
}
