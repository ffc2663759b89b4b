//! A group page's sample crash: its exception, and its threads as frames in blocks,
//! app frames shown and runs of system frames folded.

use super::view::When;
use super::TriageError;
use crate::app::App;
use crate::intake::CrashRecord;
use crate::symbolicate::{Frame, FrameStatus, SymbolicatedCrash, SymbolicatedThread};

/// Runs of at least this many system frames fold; shorter runs stay open.
const FOLD_AT: usize = 3;

pub struct FrameView {
    /// The frame's number as Apple's reports count them: inlined frames share the
    /// number of the frame they were inlined into.
    pub number: usize,
    pub function: String,
    pub location: Option<String>,
    pub image: String,
    pub address: String,
    pub in_app: bool,
    pub inlined: bool,
    /// Why the frame has no function name or no file:line, when it has none.
    pub note: Option<&'static str>,
}

/// Consecutive frames shown together; a folded block is a run of system frames.
pub struct FrameBlock {
    pub folded: bool,
    pub frames: Vec<FrameView>,
}

pub struct ThreadView {
    pub title: String,
    pub crashed: bool,
    pub frame_count: usize,
    pub blocks: Vec<FrameBlock>,
}

pub struct CrashView {
    pub id: String,
    pub download_url: String,
    pub received: When,
    pub release: Option<String>,
    pub os: Option<String>,
    pub device_model: Option<String>,
    /// `EXC_BAD_ACCESS (SIGSEGV)`
    pub exception: String,
    pub subtype: Option<String>,
    /// The language-level name and reason (`NSInvalidArgumentException: …`).
    pub reason: Option<String>,
    pub termination: Option<String>,
    /// The last exception backtrace when there is one, then the crashed thread (or
    /// the first one).
    pub main: Vec<ThreadView>,
    pub others: Vec<ThreadView>,
    /// The app's images frames needed whose dSYM nobody uploaded: (name, debug id).
    pub missing: Vec<(String, String)>,
}

fn note(frame: &Frame) -> Option<&'static str> {
    match frame.status {
        FrameStatus::Symbolicated if frame.file.is_none() => Some("no line info in the dSYM"),
        FrameStatus::Symbolicated => None,
        FrameStatus::MissingDebugFile if frame.in_app => Some("missing dSYM"),
        // Apple ships no dSYMs for its libraries; a report names their functions
        // only when the device symbolicated them.
        FrameStatus::MissingDebugFile => Some("system library, not symbolicated on the device"),
        FrameStatus::UnknownImage => Some("unknown image"),
        FrameStatus::OsSymbol => Some("name from the OS, no dSYM"),
        FrameStatus::Malformed => Some("address outside its image"),
    }
}

fn frame_views(frames: &[Frame]) -> Vec<FrameView> {
    let mut number = 0;
    frames
        .iter()
        .map(|f| {
            let view = FrameView {
                number,
                function: f
                    .function
                    .as_deref()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("0x{:x}", f.instruction_addr)),
                location: f.file.as_deref().map(|file| match f.line {
                    Some(line) if line > 0 => format!("{file}:{line}"),
                    _ => file.to_owned(),
                }),
                image: f.image.as_deref().unwrap_or("???").to_owned(),
                address: match (f.relative_addr, f.image.as_deref()) {
                    (Some(rel), Some(_)) => format!("0x{:x} (+0x{rel:x})", f.instruction_addr),
                    _ => format!("0x{:x}", f.instruction_addr),
                },
                in_app: f.in_app,
                inlined: f.inlined,
                note: note(f),
            };
            // An inlined frame and the frame it is inlined into are one address.
            if !f.inlined {
                number += 1;
            }
            view
        })
        .collect()
}

/// App frames and short system runs open; longer runs of system frames folded.
fn blocks(frames: Vec<FrameView>) -> Vec<FrameBlock> {
    let mut runs: Vec<(bool, Vec<FrameView>)> = Vec::new();
    for f in frames {
        match runs.last_mut() {
            Some((in_app, run)) if *in_app == f.in_app => run.push(f),
            _ => runs.push((f.in_app, vec![f])),
        }
    }
    runs.into_iter()
        .map(|(in_app, frames)| FrameBlock {
            folded: !in_app && frames.len() >= FOLD_AT,
            frames,
        })
        .collect()
}

fn thread_view(t: &SymbolicatedThread) -> ThreadView {
    let mut title = format!("Thread {}", t.index);
    if t.crashed {
        title.push_str(" crashed");
    }
    // As Xcode's reports name a thread: its name, then its dispatch queue.
    let named: Vec<&str> = [&t.name, &t.queue]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    if !named.is_empty() {
        title = format!("{title}: {}", named.join(" · "));
    }
    ThreadView {
        title,
        crashed: t.crashed,
        frame_count: t.frames.len(),
        blocks: blocks(frame_views(&t.frames)),
    }
}

impl CrashView {
    pub fn new(record: &CrashRecord, crash: &SymbolicatedCrash, now_ms: i64) -> Self {
        let report = &record.report;
        let e = &report.exception;
        let exception = match (&e.kind, &e.signal) {
            (Some(kind), Some(signal)) => format!("{kind} ({signal})"),
            (Some(kind), None) => kind.clone(),
            (None, Some(signal)) => signal.clone(),
            (None, None) => "Crash".to_owned(),
        };
        let reason = match (&e.name, &e.reason) {
            (Some(name), Some(reason)) if Some(name) != e.kind.as_ref() => {
                Some(format!("{name}: {reason}"))
            }
            (_, Some(reason)) => Some(reason.clone()),
            (Some(name), None) if Some(name) != e.kind.as_ref() => Some(name.clone()),
            _ => None,
        };
        let termination = report.termination.as_ref().map(|t| {
            let mut parts: Vec<String> = Vec::new();
            if let Some(ns) = &t.namespace {
                parts.push(match &t.code {
                    Some(code) => format!("{ns} {code}"),
                    None => ns.clone(),
                });
            }
            if let Some(indicator) = &t.indicator {
                parts.push(indicator.clone());
            }
            parts.extend(t.reasons.iter().cloned());
            parts.join(" · ")
        });
        let crashed = crash.threads.iter().position(|t| t.crashed).unwrap_or(0);
        let mut main = Vec::new();
        let mut others = Vec::new();
        // An uncaught exception's own backtrace says where it was thrown, which the
        // crashed thread (abort, under the runtime's handler) does not: it comes first,
        // as in Xcode's reports.
        if let Some(frames) = &crash.last_exception_backtrace {
            main.push(ThreadView {
                title: "Last exception backtrace".to_owned(),
                crashed: true,
                frame_count: frames.len(),
                blocks: blocks(frame_views(frames)),
            });
        }
        for (i, t) in crash.threads.iter().enumerate() {
            if i == crashed {
                main.push(thread_view(t));
            } else {
                others.push(thread_view(t));
            }
        }
        let os = [&report.os.name, &report.os.version]
            .iter()
            .filter_map(|p| p.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        CrashView {
            id: record.id.clone(),
            download_url: format!("/crashes/{}/apple", record.id),
            received: When::new(&record.received_at, now_ms),
            release: record.release.clone(),
            os: (!os.is_empty()).then_some(os),
            device_model: report.device_model.clone(),
            exception,
            subtype: e.subtype.clone(),
            reason,
            termination: termination.filter(|t| !t.is_empty()),
            main,
            others,
            // Only the app's own images: a dSYM the team can upload.
            missing: crash
                .missing_debug_ids()
                .filter(|i| i.in_app)
                .map(|i| (i.name.clone(), i.debug_id.clone().unwrap_or_default()))
                .collect(),
        }
    }
}

/// A stored crash as Apple's text report (the `.crash` a group page downloads).
pub fn crash_text(app: &App, id: &str) -> Result<Option<String>, TriageError> {
    Ok(app
        .crash_now(id)?
        .map(|(record, crash)| crate::render::apple_text(&record.report, &crash)))
}
