//! Apple's text crash report, with symbolicated frames, as Xcode's Organizer shows it.

use std::fmt::Write;

use crate::report::CrashReport;
use crate::symbolicate::{Frame, FrameStatus, ImageStatus, SymbolicatedCrash};

/// Renders `crash` as an Apple `.crash` text report.
pub fn apple_text(report: &CrashReport, crash: &SymbolicatedCrash) -> String {
    let mut out = String::new();
    let app = &report.app;
    let field = |out: &mut String, name: &str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let _ = writeln!(out, "{:<20} {value}", format!("{name}:"));
        }
    };
    field(
        &mut out,
        "Incident Identifier",
        report.incident_id.as_deref(),
    );
    field(&mut out, "Hardware Model", report.device_model.as_deref());
    field(&mut out, "Process", app.name.as_deref());
    field(&mut out, "Identifier", app.bundle_id.as_deref());
    let version = match (&app.version, &app.build) {
        (Some(v), Some(b)) => Some(format!("{v} ({b})")),
        (Some(v), None) => Some(v.clone()),
        (None, Some(b)) => Some(format!("({b})")),
        (None, None) => None,
    };
    field(&mut out, "Version", version.as_deref());
    field(&mut out, "Code Type", report.arch.as_deref().map(code_type));
    let os = [&report.os.name, &report.os.version]
        .iter()
        .filter_map(|p| p.as_deref())
        .collect::<Vec<_>>()
        .join(" ");
    let os = match &report.os.build {
        Some(build) if !os.is_empty() => format!("{os} ({build})"),
        _ => os,
    };
    field(&mut out, "OS Version", Some(&os));
    field(
        &mut out,
        "Date/Time",
        report.timestamp.as_deref().map(apple_date).as_deref(),
    );
    out.push('\n');

    let e = &report.exception;
    let exception_type = match (&e.kind, &e.signal) {
        (Some(k), Some(s)) => Some(format!("{k} ({s})")),
        (Some(k), None) => Some(k.clone()),
        (None, Some(s)) => Some(s.clone()),
        (None, None) => None,
    };
    field(&mut out, "Exception Type", exception_type.as_deref());
    field(&mut out, "Exception Subtype", e.subtype.as_deref());
    field(&mut out, "Exception Codes", e.codes.as_deref());
    if let Some(t) = &report.termination {
        let reason = [&t.namespace, &t.code, &t.indicator]
            .iter()
            .filter_map(|p| p.as_deref())
            .collect::<Vec<_>>()
            .join(" ");
        field(&mut out, "Termination Reason", Some(&reason));
    }
    if let Some(thread) = crash.crashed_thread() {
        field(
            &mut out,
            "Triggered by Thread",
            Some(&thread.index.to_string()),
        );
    }
    let reason = match (&e.name, &e.reason) {
        (Some(n), Some(r)) => Some(format!(
            "*** Terminating app due to uncaught exception '{n}', reason: '{r}'"
        )),
        (None, Some(r)) => Some(r.clone()),
        _ => None,
    };
    if let Some(reason) = reason {
        let _ = writeln!(out, "\nApplication Specific Information:\n{reason}");
    }

    if let Some(frames) = &crash.last_exception_backtrace {
        out.push_str("\nLast Exception Backtrace:\n");
        write_frames(&mut out, frames);
    }
    for thread in &crash.threads {
        out.push('\n');
        if let Some(name) = thread.name.as_deref().or(thread.queue.as_deref()) {
            let label = if thread.name.is_some() {
                name.to_owned()
            } else {
                format!("Dispatch queue: {name}")
            };
            let _ = writeln!(out, "Thread {} name:  {label}", thread.index);
        }
        let crashed = if thread.crashed { " Crashed" } else { "" };
        let _ = writeln!(out, "Thread {}{crashed}:", thread.index);
        write_frames(&mut out, &thread.frames);
    }

    out.push_str("\nBinary Images:\n");
    let mut images: Vec<&ImageStatus> = crash.images.iter().collect();
    images.sort_by_key(|i| i.load_address);
    for image in images {
        let end = image
            .size
            .map(|s| image.load_address.saturating_add(s).saturating_sub(1))
            .unwrap_or(image.load_address);
        let uuid = image.debug_id.as_deref().unwrap_or("").replace('-', "");
        let _ = writeln!(
            out,
            "{:>18} - {:>18} {} {}  <{uuid}> {}",
            format!("0x{:x}", image.load_address),
            format!("0x{end:x}"),
            image.name,
            image.arch.as_deref().unwrap_or("arm64"),
            image.path.as_deref().unwrap_or(&image.name),
        );
    }
    without_control_chars(out)
}

/// The report's own line breaks and tabs stay; any other control character (from a
/// debug file's symbol names, or a record stored before parse-time cleaning) becomes
/// U+FFFD, so a terminal or a log viewer shows the text as it is.
fn without_control_chars(text: String) -> String {
    if !text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return text;
    }
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

fn code_type(arch: &str) -> &str {
    match arch {
        "arm64" | "arm64e" => "ARM-64",
        "x86_64" => "X86-64",
        other => other,
    }
}

/// One line per frame; inlined frames share the number of the frame they sit in.
fn write_frames(out: &mut String, frames: &[Frame]) {
    let mut number = 0;
    for frame in frames {
        let image = frame.image.as_deref().unwrap_or("???");
        let location = match frame.status {
            FrameStatus::Symbolicated => {
                let function = frame.function.as_deref().unwrap_or("???");
                match (&frame.file, frame.line) {
                    (Some(file), Some(line)) => {
                        let file = file.rsplit('/').next().unwrap_or(file);
                        format!("{function} ({file}:{line})")
                    }
                    _ => match (frame.function_addr, frame.relative_addr) {
                        (Some(start), Some(rel)) if rel >= start => {
                            format!("{function} + {}", rel - start)
                        }
                        _ => function.to_owned(),
                    },
                }
            }
            FrameStatus::OsSymbol => frame.function.as_deref().unwrap_or_default().to_owned(),
            _ => match frame.relative_addr {
                Some(rel) => format!("0x{:x} + {rel}", frame.instruction_addr - rel),
                None => format!("0x{:x}", frame.instruction_addr),
            },
        };
        let inlined = if frame.inlined { " [inlined]" } else { "" };
        let _ = writeln!(
            out,
            "{number:<4}{image:<30}\t0x{:016x} {location}{inlined}",
            frame.instruction_addr
        );
        if !frame.inlined {
            number += 1;
        }
    }
}

/// `2026-03-17T22:50:41.6409-07:00` → `2026-03-17 22:50:41.6409 -0700`, as Apple writes
/// dates; anything else is printed as it is.
fn apple_date(rfc3339: &str) -> String {
    let Some((date, time)) = rfc3339.split_once('T') else {
        return rfc3339.to_owned();
    };
    if let Some(time) = time.strip_suffix('Z') {
        return format!("{date} {time} +0000");
    }
    match time.rfind(['+', '-']) {
        Some(at) if time.len() - at == 6 => {
            let (clock, zone) = time.split_at(at);
            format!("{date} {clock} {}", zone.replace(':', ""))
        }
        _ => format!("{date} {time}"),
    }
}

#[cfg(test)]
mod date_tests {
    #[test]
    fn dates_print_the_apple_way() {
        assert_eq!(
            super::apple_date("2026-03-17T22:50:41.6409-07:00"),
            "2026-03-17 22:50:41.6409 -0700"
        );
        assert_eq!(
            super::apple_date("2017-01-26T10:51:10"),
            "2017-01-26 10:51:10"
        );
    }
}
