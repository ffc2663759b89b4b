//! How a symbolicated crash is shown: the crash JSON of DESIGN.md's contract (CLI
//! `--format json` and the API) and Apple's text report (`--format apple`,
//! `/crashes/{id}/apple`). Both read the parsed [`crate::report::CrashReport`] and its
//! [`crate::symbolicate::SymbolicatedCrash`]; neither knows about HTTP. The signature
//! comes from [`crate::grouping`].

mod apple;
mod json;

pub use apple::apple_text;
pub use json::{crash_json, CrashIds};
