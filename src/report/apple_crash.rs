//! Apple's legacy text crash report (`.crash`), and the older `.ips` that wraps one in
//! a JSON header line.
//!
//! `apple-crash-report-parser` reads the threads, frames and binary images. It skips,
//! and this module fills in:
//! - the Last Exception Backtrace (both the `(0x1 0x2 …)` and the frame-list form);
//! - `Triggered by Thread:` (iOS 15+) as well as `Crashed Thread:`;
//! - both orders of `Version:` (`1 (1.0)`, build first, before iOS 15; `1.0.0 (5)`,
//!   version first, since);
//! - queue names written as thread names (`Thread 0 name:  Dispatch queue: …`).
//!
//! The lines it is strict about and we read ourselves (incident id, dates) are kept
//! from it, so an odd value there does not sink a whole report.

use std::collections::BTreeMap;

use apple_crash_report_parser::AppleCrashReport;
use serde_json::Value;

use super::json::{parse_address, text};
use super::{
    apple, ips, CrashReport, ExceptionInfo, Image, ParseError, ParseErrorKind, ParseLimits,
    RawFrame, ReportFormat, Termination, Thread,
};

const FORMAT: ReportFormat = ReportFormat::AppleCrash;

/// Lines handed to the library parser are cut to this length: nothing legitimate is
/// longer, and its regexes would otherwise chew through a hostile megabyte line.
const MAX_LINE: usize = 8 * 1024;

pub fn parse(text: &str, limits: &ParseLimits) -> Result<CrashReport, ParseError> {
    // An older `.ips`: a JSON header line, then the text report.
    let (header, body) = if text.starts_with('{') {
        let (header, body) = ips::split_header(text, FORMAT, limits)?;
        (Some(header), body)
    } else {
        (None, text)
    };
    let scan = Scan::of(body);
    if scan.fields.is_empty() && scan.binary_images == 0 {
        return Err(ParseError::new(
            Some(FORMAT),
            ParseErrorKind::Invalid,
            "no report header (Incident Identifier, Process, Exception Type…) was found",
        ));
    }
    let filtered: String = body
        .lines()
        .filter(|line| !is_strict_line(line))
        .map(|line| {
            let cut = super::floor_char_boundary(line, MAX_LINE);
            &line[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n");
    let parsed: AppleCrashReport = filtered.parse().map_err(|err| {
        ParseError::new(
            Some(FORMAT),
            ParseErrorKind::Syntax,
            format!("the text report does not parse: {err}"),
        )
    })?;
    Ok(build(header.as_ref(), &scan, parsed))
}

/// Lines whose values the library refuses when they are unusual (a non-UUID incident
/// id, a date without a zone); we read them in [`Scan`].
fn is_strict_line(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("Incident Identifier:")
        || line.starts_with("Date/Time:")
        || line.starts_with("Report Version:")
}

/// What this module reads from the text itself.
#[derive(Default)]
struct Scan {
    /// `Key: value` lines of the header sections, first occurrence wins.
    fields: BTreeMap<String, String>,
    last_exception_backtrace: Option<Vec<RawFrame>>,
    binary_images: usize,
}

impl Scan {
    fn of(body: &str) -> Scan {
        let mut scan = Scan::default();
        let mut lines = body.lines().peekable();
        let mut in_images = false;
        while let Some(line) = lines.next() {
            let trimmed = line.trim();
            if trimmed.starts_with("Binary Images:") {
                in_images = true;
                continue;
            }
            if in_images {
                if trimmed.starts_with("0x") {
                    scan.binary_images += 1;
                }
                continue;
            }
            if trimmed.starts_with("Last Exception Backtrace:") {
                let mut frames = Vec::new();
                while let Some(next) = lines.peek() {
                    let next = next.trim();
                    if next.is_empty() {
                        if frames.is_empty() {
                            lines.next();
                            continue;
                        }
                        break;
                    }
                    if next.starts_with('(') {
                        // `(0x1a0e0f27c 0x19ffe99f8 …)`: bare return addresses.
                        frames.extend(
                            next.trim_matches(|c| c == '(' || c == ')')
                                .split_whitespace()
                                .filter_map(parse_address)
                                .map(|addr| RawFrame {
                                    instruction_addr: addr,
                                    ..RawFrame::default()
                                }),
                        );
                        lines.next();
                        break;
                    }
                    match frame_line(next) {
                        Some(frame) => frames.push(frame),
                        None => break,
                    }
                    lines.next();
                }
                scan.last_exception_backtrace = Some(frames);
                continue;
            }
            if line.starts_with(' ') || line.starts_with('\t') {
                continue;
            }
            if let Some((key, value)) = line.split_once(':') {
                let key = key.trim();
                if !key.is_empty() && key.len() < 40 && !key.starts_with("Thread ") {
                    scan.fields
                        .entry(key.to_owned())
                        .or_insert_with(|| value.trim().to_owned());
                }
            }
        }
        scan
    }

    fn field(&self, key: &str) -> Option<String> {
        self.fields.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

/// One frame line: `4   OutOfBox   \t0x0000000104a1c234 -[X y] + 42`, tabs or spaces.
fn frame_line(line: &str) -> Option<RawFrame> {
    let mut parts = line.split_whitespace();
    parts.next()?.parse::<u32>().ok()?;
    // The image name may contain spaces; the address is the first `0x…` after it.
    let rest: Vec<&str> = parts.collect();
    let addr_at = rest.iter().position(|p| p.starts_with("0x"))?;
    let image = rest[..addr_at].join(" ");
    let addr = parse_address(rest[addr_at])?;
    let symbol = symbol_of(&rest[addr_at + 1..].join(" "));
    Some(RawFrame {
        instruction_addr: addr,
        symbol,
        image_name: (!image.is_empty() && image != "???").then_some(image),
    })
}

/// The symbol part of a frame line without its ` + offset`; `None` when the report
/// only wrote `0x104544000 + 20720` (image base plus offset: no symbol at all).
fn symbol_of(text: &str) -> Option<String> {
    let text = text.trim();
    let name = match text.rsplit_once(" + ") {
        Some((name, offset)) if offset.trim().bytes().all(|b| b.is_ascii_digit()) => name,
        _ => text,
    };
    let name = name.trim();
    if name.is_empty() || name.starts_with("0x") || name == "???" {
        return None;
    }
    Some(name.to_owned())
}

fn build(header: Option<&Value>, scan: &Scan, parsed: AppleCrashReport) -> CrashReport {
    let mut report = CrashReport::new(FORMAT);
    let header_text = |key: &str| header.and_then(|h| text(h, key));
    report.incident_id = scan
        .field("Incident Identifier")
        .or_else(|| header_text("incident_id"));
    report.timestamp = scan
        .field("Date/Time")
        .or_else(|| header_text("timestamp"))
        .and_then(|t| apple::timestamp(&t));
    report.os = apple::os_info(
        &scan
            .field("OS Version")
            .or_else(|| header_text("os_version"))
            .unwrap_or_default(),
    );
    report.app.name = scan
        .field("Process")
        .map(|p| strip_pid(&p))
        .or_else(|| header_text("app_name"));
    report.app.bundle_id = scan.field("Identifier").or_else(|| header_text("bundleID"));
    let (version, build) = version_and_build(scan.field("Version").as_deref(), &report);
    report.app.version = header_text("app_version").or(version);
    report.app.build = header_text("build_version").or(build);
    report.device_model = scan.field("Hardware Model");
    report.device_id = scan
        .field("CrashReporter Key")
        .or_else(|| scan.field("Anonymous UUID"));

    report.exception = exception(scan, parsed.application_specific_information.as_deref());
    report.termination = termination(scan);

    for image in &parsed.binary_images {
        let debug_id = apple::debug_id(&image.uuid.simple().to_string());
        let base = image.addr.0;
        if base == 0 && debug_id.is_none() {
            continue;
        }
        report.images.push(Image {
            name: image.name.trim().trim_start_matches('+').to_owned(),
            path: Some(image.path.clone()).filter(|p| !p.is_empty() && p != "???"),
            debug_id,
            load_address: base,
            // The range is written with an inclusive end.
            size: image.size.checked_add(1).filter(|&s| s > 1),
            arch: Some(image.arch.clone()).filter(|a| a != "unknown-arch"),
        });
    }
    let path = scan.field("Path");
    report.arch = path
        .as_deref()
        .and_then(|p| {
            report.images.iter().find(|i| {
                i.path.as_deref().is_some_and(|ip| {
                    ip.trim_start_matches("/private") == p.trim_start_matches("/private")
                })
            })
        })
        .and_then(|i| i.arch.clone())
        .or_else(|| {
            scan.field("Code Type")
                .and_then(|c| apple::arch_of_code_type(&c))
        });

    let triggered = scan
        .field("Triggered by Thread")
        .or_else(|| scan.field("Crashed Thread"))
        .and_then(|t| t.split_whitespace().next()?.parse::<u64>().ok());
    for (position, thread) in parsed.threads.into_iter().enumerate() {
        let (name, queue) = thread_name(thread.name.as_deref(), thread.dispatch_queue);
        report.threads.push(Thread {
            index: usize::try_from(thread.id).unwrap_or(position),
            name,
            queue,
            crashed: thread.crashed || triggered == Some(thread.id),
            frames: thread
                .frames
                .into_iter()
                .map(|frame| RawFrame {
                    instruction_addr: frame.instruction_addr.0,
                    symbol: frame.symbol.as_deref().and_then(symbol_of),
                    image_name: frame.module,
                })
                .collect(),
        });
    }
    report.crashed_thread = report.threads.iter().position(|t| t.crashed);
    report.last_exception_backtrace = scan.last_exception_backtrace.clone();
    report
}

/// `SoloQuest [2415]` → `SoloQuest`.
fn strip_pid(process: &str) -> String {
    match process.rsplit_once(" [") {
        Some((name, _)) => name.trim().to_owned(),
        None => process.trim().to_owned(),
    }
}

fn version_and_build(line: Option<&str>, report: &CrashReport) -> (Option<String>, Option<String>) {
    let Some(line) = line else {
        return (None, None);
    };
    let Some((outer, inner)) = line.split_once('(') else {
        return (Some(line.trim().to_owned()), None);
    };
    let outer = outer.trim().to_owned();
    let inner = inner.trim().trim_end_matches(')').trim().to_owned();
    if apple::version_line_is_build_first(&report.os, &outer, &inner) {
        (Some(inner), Some(outer))
    } else {
        (Some(outer), Some(inner))
    }
}

/// The library takes `Thread 0 name:  Dispatch queue: X` (and macOS's
/// `Thread 0 Crashed:: Dispatch queue: X`) as a thread name; it is a queue.
fn thread_name(name: Option<&str>, queue: Option<String>) -> (Option<String>, Option<String>) {
    let name = name
        .map(|n| n.trim_start_matches(':').trim())
        .filter(|n| !n.is_empty());
    match name {
        Some(n) if n.starts_with("Dispatch queue:") => (
            None,
            queue.or_else(|| Some(n["Dispatch queue:".len()..].trim().to_owned())),
        ),
        Some(n) => (Some(n.to_owned()), queue),
        None => (None, queue),
    }
}

fn exception(scan: &Scan, asi: Option<&str>) -> ExceptionInfo {
    // `EXC_BAD_ACCESS (SIGSEGV)`
    let (kind, signal) = match scan.field("Exception Type") {
        Some(t) => match t.split_once('(') {
            Some((kind, signal)) => (
                Some(kind.trim().to_owned()),
                Some(signal.trim_end_matches(')').trim().to_owned()),
            ),
            None => (Some(t), None),
        },
        None => (None, None),
    };
    // An uncaught NSException leaves only EXC_CRASH (SIGABRT) in Exception Type; its
    // name and reason are in Application Specific Information, as the runtime wrote
    // them (`.ips` and MetricKit carry them as fields).
    let uncaught = asi.and_then(apple::uncaught_exception);
    ExceptionInfo {
        kind,
        signal,
        codes: scan.field("Exception Codes"),
        subtype: scan.field("Exception Subtype"),
        name: uncaught.as_ref().map(|(name, _)| name.clone()),
        reason: scan
            .field("Exception Reason")
            .or_else(|| uncaught.map(|(_, reason)| reason))
            .or_else(|| {
                asi.map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
            }),
    }
}

/// `Termination Reason: SIGNAL 11 Segmentation fault: 11` and
/// `Terminating Process: exc handler [2415]`.
fn termination(scan: &Scan) -> Option<Termination> {
    let reason = scan.field("Termination Reason");
    let by = scan.field("Terminating Process").map(|p| strip_pid(&p));
    if reason.is_none() && by.is_none() {
        return None;
    }
    let mut termination = Termination {
        by_process: by,
        ..Termination::default()
    };
    if let Some(reason) = reason {
        let mut parts = reason.splitn(3, ' ');
        let namespace = parts.next().map(str::to_owned);
        let code = parts.next().map(str::to_owned);
        let indicator = parts
            .next()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        // Older reports: `Namespace SIGNAL, Code 0xb`.
        if namespace.as_deref() == Some("Namespace") {
            let text = reason.trim_start_matches("Namespace").trim();
            let (ns, code) = text.split_once(", Code").unwrap_or((text, ""));
            termination.namespace = Some(ns.trim().to_owned());
            termination.code = Some(code.trim().to_owned()).filter(|c| !c.is_empty());
        } else {
            termination.namespace = namespace;
            termination.code = code;
            termination.indicator = indicator;
        }
    }
    Some(termination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lines_with_tabs_and_offsets() {
        let frame =
            frame_line("4   OutOfBox                      \t0x0000000104a1c234 -[X y:] + 42")
                .unwrap();
        assert_eq!(frame.instruction_addr, 0x104a1c234);
        assert_eq!(frame.symbol.as_deref(), Some("-[X y:]"));
        assert_eq!(frame.image_name.as_deref(), Some("OutOfBox"));
        let frame = frame_line("10  SoloQuest \t       0x102919620 0x102914000 + 22048").unwrap();
        assert_eq!(frame.symbol, None);
    }

    #[test]
    fn last_exception_backtrace_in_both_forms() {
        let text = "Incident Identifier: X\nException Type:  EXC_CRASH (SIGABRT)\n\nLast Exception Backtrace:\n0   CoreFoundation \t0x1a0e0f27c __exceptionPreprocess + 228\n1   App \t0x100004000 0x100000000 + 16384\n\nThread 0 Crashed:\n0   libsystem_kernel.dylib \t0x1a0a00000 __pthread_kill + 8\n";
        let report = parse(text, &ParseLimits::default()).unwrap();
        let leb = report.last_exception_backtrace.unwrap();
        assert_eq!(leb.len(), 2);
        assert_eq!(leb[1].instruction_addr, 0x100004000);
        assert_eq!(report.exception.signal.as_deref(), Some("SIGABRT"));
        assert_eq!(report.crashed_thread, Some(0));

        let text = "Incident Identifier: X\nLast Exception Backtrace:\n(0x1a0e0f27c 0x19ffe99f8)\n\nThread 0 Crashed:\n";
        let report = parse(text, &ParseLimits::default()).unwrap();
        assert_eq!(report.last_exception_backtrace.unwrap().len(), 2);
    }

    #[test]
    fn an_uncaught_exception_is_named_from_application_specific_information() {
        let text = "Incident Identifier: X\nException Type:  EXC_CRASH (SIGABRT)\n\nApplication Specific Information:\n*** Terminating app due to uncaught exception 'NSInternalInconsistencyException', reason: 'Can't commit: it's done'\n\nabort() called\n\nThread 0 Crashed:\n0   libsystem_kernel.dylib \t0x1a0a00000 __pthread_kill + 8\n";
        let report = parse(text, &ParseLimits::default()).unwrap();
        assert_eq!(report.exception.kind.as_deref(), Some("EXC_CRASH"));
        assert_eq!(
            report.exception.name.as_deref(),
            Some("NSInternalInconsistencyException")
        );
        assert_eq!(
            report.exception.reason.as_deref(),
            Some("Can't commit: it's done")
        );

        // Without one, the name stays empty and the whole text is the reason.
        let text = "Incident Identifier: X\nException Type:  EXC_CRASH (SIGABRT)\n\nApplication Specific Information:\nabort() called\n\nThread 0 Crashed:\n0   libsystem_kernel.dylib \t0x1a0a00000 __pthread_kill + 8\n";
        let report = parse(text, &ParseLimits::default()).unwrap();
        assert_eq!(report.exception.name, None);
        assert_eq!(report.exception.reason.as_deref(), Some("abort() called"));
    }

    #[test]
    fn triggered_by_thread_marks_the_crashed_thread() {
        let text = "Incident Identifier: X\nOS Version: iPhone OS 17.1 (21B74)\nVersion: 2.0 (7)\nTriggered by Thread:  1\n\nThread 0:\n0   A \t0x1000 f + 1\n\nThread 1 name:  Dispatch queue: q\nThread 1:\n0   A \t0x2000 g + 1\n";
        let report = parse(text, &ParseLimits::default()).unwrap();
        assert_eq!(report.crashed_thread, Some(1));
        assert_eq!(report.threads[1].queue.as_deref(), Some("q"));
        assert_eq!(report.app.version.as_deref(), Some("2.0"));
        assert_eq!(report.app.build.as_deref(), Some("7"));
    }

    #[test]
    fn text_that_is_no_report_is_refused() {
        let err = parse("hello\nworld", &ParseLimits::default()).unwrap_err();
        assert!(err.to_string().starts_with("Apple .crash"), "{err}");
    }
}
