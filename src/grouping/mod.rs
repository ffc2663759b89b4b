//! Signatures: the stable text that names a crash site, so that the same bug groups
//! together across builds, report formats and call paths (docs/grouping.md).
//!
//! Pure: no storage, no HTTP, and no file IO but [`Rules::load`]. The caller hashes a
//! bundle id with [`Signature::text`] into a group id, stores [`Rules::fingerprint`],
//! and signs stored crashes again when it changes.
//!
//! The crash site is the exception (its class for a language exception, else its
//! kind) plus the first meaningful in-app frame of the exception backtrace (else of the
//! crashed thread): runtime and error-reporting frames are skipped by [`Rules`],
//! inlined frames count, names are normalized ([`normalize::function`]). An in-app
//! frame without its debug file yet is `image+0xOFFSET`; one whose debug file has no
//! function there (a linker stub) is skipped. Without any in-app frame, the reason,
//! with placeholders for what differs per crash, is part of the text, with the method
//! it names; the first named frame that is not skipped stands in the text only when
//! there is no language exception with a reason (every format carries the reason,
//! MetricKit names no frame).

mod normalize;
mod rules;

use std::sync::OnceLock;

use crate::report::{clean_text, CrashReport};
use crate::symbolicate::{Frame, FrameStatus, SymbolicatedCrash};

pub use rules::{Rules, RulesError};

/// Caller frames kept in a crash's variant.
const VARIANT_FRAMES: usize = 3;

/// What [`sign`] decided for one crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signature: stable text naming the crash site (what the group id hashes,
    /// with the bundle id). Never holds a file, line or address that a rebuild moves.
    pub text: String,
    /// Exception class or kind, for the title.
    pub exception: String,
    /// The crash-site function as shown (normalized), for title and culprit.
    pub function: Option<String>,
    /// The crash site's file and line, when the debug file has them (culprit).
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The caller chain below the crash site (normalized in-app frames, innermost
    /// first, joined by ` < `), `""` when there is none: which call path reached it.
    pub variant: String,
}

impl Signature {
    /// `<exception>: <function>`, or the exception alone.
    pub fn title(&self) -> String {
        match &self.function {
            Some(function) => format!("{}: {function}", self.exception),
            None => self.exception.clone(),
        }
    }

    /// `<function> (<file>:<line>)` when known; the function alone without a file.
    pub fn culprit(&self) -> Option<String> {
        let function = self.function.as_ref()?;
        Some(match (&self.file, self.line) {
            (Some(file), Some(line)) => format!("{function} ({file}:{line})"),
            (Some(file), None) => format!("{function} ({file})"),
            _ => function.clone(),
        })
    }
}

impl Rules {
    /// The built-in rules, parsed once per process.
    pub fn builtin_ref() -> &'static Rules {
        static BUILTIN: OnceLock<Rules> = OnceLock::new();
        BUILTIN.get_or_init(Rules::builtin)
    }
}

/// One frame that may name a crash site.
struct Site<'a> {
    /// The normalized function, or `image+0xOFFSET` without a debug file.
    label: String,
    in_app: bool,
    frame: &'a Frame,
}

/// Signs one symbolicated crash under `rules`.
pub fn sign(report: &CrashReport, crash: &SymbolicatedCrash, rules: &Rules) -> Signature {
    let (name, reason) = language_exception(report);
    let language = name.is_some();
    let mut exception = name
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
    // Frames are signed only as far as needed: up to the crash site and its variant's
    // frames (all of them only when no frame is in-app). Normalizing and matching
    // every frame of a 60-frame report cost ~1.3 ms; the crash site is usually near
    // the top.
    let mut sites: Vec<Site> = Vec::new();
    let mut found_in_app = false;
    let mut callers = 0;
    for frame in frames {
        let Some(site) = site(frame, rules) else {
            continue;
        };
        let in_app = site.in_app;
        sites.push(site);
        if in_app && found_in_app {
            callers += 1;
            if callers >= VARIANT_FRAMES {
                break;
            }
        }
        found_in_app |= in_app;
    }

    let mut signature = match sites.iter().position(|s| s.in_app) {
        Some(at) => {
            let site = &sites[at];
            let variant: Vec<&str> = sites[at + 1..]
                .iter()
                .filter(|s| s.in_app)
                .take(VARIANT_FRAMES)
                .map(|s| s.label.as_str())
                .collect();
            let symbolicated = site.frame.status == FrameStatus::Symbolicated;
            Signature {
                text: format!("{exception} | {}", site.label),
                exception: String::new(),
                function: Some(site.label.clone()),
                file: site
                    .frame
                    .file
                    .as_deref()
                    .filter(|_| symbolicated)
                    .map(str::to_owned),
                line: site.frame.line.filter(|_| symbolicated),
                variant: variant.join(" < "),
            }
        }
        None => {
            // System frames only. The reason says what went wrong; when it names the
            // method it is about, that method is the site. A language exception's
            // reason stands for the frames in the text: every format carries it, while
            // MetricKit names no frame at all. Other crashes name their first frame.
            let (method, rest) = match reason.as_deref() {
                Some(reason) => normalize::reason(reason),
                None => (None, String::new()),
            };
            let by_reason = language && !rest.is_empty();
            // Nothing named at all and no reason to go by (MetricKit before its dSYM,
            // where no image is known to be the app's): the first unnamed frame, as
            // image and offset, rather than the exception alone for every such crash.
            let frame = sites.first().map(|s| s.label.clone()).or_else(|| {
                (!by_reason)
                    .then(|| frames.iter().find_map(|f| unnamed(f, rules)))
                    .flatten()
            });
            let site = method
                .clone()
                .or_else(|| frame.clone().filter(|_| !by_reason));
            let text = [
                Some(exception.as_str()),
                site.as_deref(),
                Some(rest.as_str()),
            ]
            .into_iter()
            .flatten()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" | ");
            let function = method.or(frame);
            Signature {
                text,
                exception: String::new(),
                function,
                file: None,
                line: None,
                variant: String::new(),
            }
        }
    };
    // Report fields are cleaned at parse time; function names come from debug files,
    // which a client uploads too, and from records stored before that cleaning.
    clean_text(&mut exception);
    signature.exception = exception;
    for text in [&mut signature.text, &mut signature.variant]
        .into_iter()
        .chain(signature.function.as_mut())
        .chain(signature.file.as_mut())
    {
        clean_text(text);
    }
    signature
}

/// The language exception's class and reason. A `.crash` stored before its parser
/// read them from Application Specific Information still has them in its reason.
fn language_exception(report: &CrashReport) -> (Option<String>, Option<String>) {
    let exception = &report.exception;
    let reason = exception.reason.as_deref();
    match (
        &exception.name,
        reason.and_then(crate::report::uncaught_exception),
    ) {
        (Some(name), _) => (Some(name.clone()), reason.map(str::to_owned)),
        (None, Some((name, reason))) => (Some(name), Some(reason)),
        (None, None) => (None, reason.map(str::to_owned)),
    }
}

/// The frame as a possible crash site, or `None` when it cannot be one: skipped by the
/// rules, a system frame without a name, or an address the debug file has no function
/// for (a linker stub).
fn site<'a>(frame: &'a Frame, rules: &Rules) -> Option<Site<'a>> {
    let image = frame.image.as_deref();
    let in_app = rules.in_app(image, frame.in_app);
    let function = frame.function.as_deref().map(normalize::function);
    if rules.skips(function.as_deref(), image) {
        return None;
    }
    let label = match (function, frame.status) {
        (Some(function), _) if !function.is_empty() => function,
        // No debug file yet: the offset is stable within one build, and a late dSYM
        // signs the crash again with the function.
        (_, FrameStatus::MissingDebugFile) if in_app => unnamed(frame, rules)?,
        _ => return None,
    };
    Some(Site {
        label,
        in_app,
        frame,
    })
}

/// `image+0xOFFSET` for a frame without a name whose image is not skipped.
fn unnamed(frame: &Frame, rules: &Rules) -> Option<String> {
    let image = frame.image.as_deref()?;
    let offset = frame.relative_addr?;
    (frame.function.is_none() && !rules.skips(None, Some(image)))
        .then(|| format!("{image}+0x{offset:x}"))
}

#[cfg(test)]
mod tests;
