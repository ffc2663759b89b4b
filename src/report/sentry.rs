//! Sentry event JSON, as sentry-cocoa and KSCrash-based SDKs send it.
//!
//! Images come from `debug_meta.images`; stacks from `threads` and `exception`. Sentry
//! writes frames outermost first, the reverse of every Apple format, so they are
//! reversed here. The exception's stack trace is the crashing thread's; it stands in
//! for that thread when the thread itself carries no stack.

use serde_json::Value;

use super::json::{address, address_at, array, parse_value, text};
use super::metrickit::{mach_exception_name, signal_name};
use super::{
    apple, CrashReport, ExceptionInfo, Image, ParseError, ParseErrorKind, ParseLimits, RawFrame,
    ReportFormat, Thread,
};

const FORMAT: ReportFormat = ReportFormat::SentryEvent;

pub fn parse(text_in: &str, limits: &ParseLimits) -> Result<CrashReport, ParseError> {
    let event = parse_value(text_in, FORMAT, limits)?;
    if !event.is_object() {
        return Err(invalid("the event is not a JSON object"));
    }
    let mut report = CrashReport::new(FORMAT);
    report.incident_id = text(&event, "event_id");
    report.timestamp = event.get("timestamp").and_then(|t| match t {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    });

    let contexts = event.get("contexts").unwrap_or(&Value::Null);
    let os = contexts.get("os").unwrap_or(&Value::Null);
    report.os.name = text(os, "name");
    report.os.version = text(os, "version");
    report.os.build = text(os, "build");
    let device = contexts.get("device").unwrap_or(&Value::Null);
    report.device_model = text(device, "model");
    report.arch = text(device, "arch");
    report.device_id = text(device, "id").or_else(|| event.get("user").and_then(|u| text(u, "id")));

    let app = contexts.get("app").unwrap_or(&Value::Null);
    report.app.bundle_id = text(app, "app_identifier");
    report.app.name = text(app, "app_name").or_else(|| text(app, "app_display_name"));
    report.app.version = text(app, "app_version");
    report.app.build = text(app, "app_build").or_else(|| text(&event, "dist"));
    if let Some(release) = text(&event, "release") {
        // `com.example.app@1.2.0+42`
        let (package, rest) = release.split_once('@').unwrap_or(("", release.as_str()));
        let (version, build) = match rest.split_once('+') {
            Some((v, b)) => (v, Some(b)),
            None => (rest, None),
        };
        if report.app.bundle_id.is_none() && !package.is_empty() {
            report.app.bundle_id = Some(package.to_owned());
        }
        report.app.version.get_or_insert_with(|| version.to_owned());
        if report.app.build.is_none() {
            report.app.build = build.map(str::to_owned);
        }
    }

    for (i, raw) in array(event.get("debug_meta").unwrap_or(&Value::Null), "images")
        .iter()
        .enumerate()
    {
        let Some(load_address) = address_at(raw, "image_addr") else {
            return Err(invalid(format!("debug_meta.images[{i}] has no image_addr")));
        };
        let path = text(raw, "code_file").or_else(|| text(raw, "name"));
        let name = path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{load_address:#x}"));
        report.images.push(Image {
            name,
            path,
            debug_id: text(raw, "uuid")
                .or_else(|| text(raw, "debug_id"))
                .and_then(|u| apple::debug_id(&u)),
            load_address,
            size: address_at(raw, "image_size").filter(|&s| s > 0),
            arch: text(raw, "arch").or_else(|| {
                raw.get("cpu_type")
                    .and_then(Value::as_u64)
                    .and_then(arch_of_cpu_type)
            }),
        });
    }

    let exceptions = array(event.get("exception").unwrap_or(&Value::Null), "values");
    // The last exception is the one that was thrown last: the crash.
    let exception = exceptions.last();
    if let Some(exc) = exception {
        report.exception = exception_info(exc);
    }
    let exception_thread = exception.and_then(|e| e.get("thread_id")).and_then(address);

    // `{"values": [...]}`, or a bare array from older SDKs.
    let threads: &[Value] = match event.get("threads") {
        Some(Value::Array(items)) => items,
        Some(threads) => array(threads, "values"),
        None => &[],
    };
    for (position, raw) in threads.iter().enumerate() {
        let id = raw.get("id").or_else(|| raw.get("uuid")).and_then(address);
        let crashed = raw.get("crashed").and_then(Value::as_bool) == Some(true)
            || (exception_thread.is_some() && id == exception_thread);
        let mut frames = stack(raw.get("stacktrace"), &report.images);
        if frames.is_empty() && crashed {
            frames = stack(exception.and_then(|e| e.get("stacktrace")), &report.images);
        }
        report.threads.push(Thread {
            index: id.and_then(|i| usize::try_from(i).ok()).unwrap_or(position),
            name: text(raw, "name"),
            queue: None,
            crashed,
            frames,
        });
    }
    if report.threads.is_empty() {
        if let Some(exc) = exception {
            report.threads.push(Thread {
                index: exception_thread
                    .and_then(|i| usize::try_from(i).ok())
                    .unwrap_or(0),
                crashed: true,
                frames: stack(exc.get("stacktrace"), &report.images),
                ..Thread::default()
            });
        }
    }
    report.crashed_thread = report.threads.iter().position(|t| t.crashed);
    // A language exception's own stack trace is where it was raised; the crashed
    // thread is only the abort that followed (as Apple's Last Exception Backtrace).
    if report.exception.name.is_some() {
        let raised = stack(exception.and_then(|e| e.get("stacktrace")), &report.images);
        if !raised.is_empty() {
            report.last_exception_backtrace = Some(raised);
        }
    }
    if report.threads.iter().all(|t| t.frames.is_empty()) {
        return Err(invalid(
            "the event has no stack trace in threads or exception",
        ));
    }
    Ok(report)
}

/// What the envelope endpoint needs to know about an event before the intake sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHead {
    /// The payload's own `event_id`, if it has one.
    pub event_id: Option<String>,
    /// A crash: level `fatal`, or an exception whose mechanism says `handled: false`.
    /// DESIGN.md stores only these; handled errors and messages are counted.
    pub crash: bool,
}

/// Reads an event's id and whether it is a crash, with the same depth and value bounds
/// as parsing it.
pub fn head(text_in: &str, limits: &ParseLimits) -> Result<EventHead, ParseError> {
    let event = parse_value(text_in, FORMAT, limits)?;
    if !event.is_object() {
        return Err(invalid("the event is not a JSON object"));
    }
    let fatal = text(&event, "level").is_some_and(|l| l.eq_ignore_ascii_case("fatal"));
    let unhandled = array(event.get("exception").unwrap_or(&Value::Null), "values")
        .iter()
        .any(|e| e.pointer("/mechanism/handled") == Some(&Value::Bool(false)));
    Ok(EventHead {
        event_id: text(&event, "event_id"),
        crash: fatal || unhandled,
    })
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(Some(FORMAT), ParseErrorKind::Invalid, message)
}

/// A Sentry stack trace, innermost first.
fn stack(stacktrace: Option<&Value>, images: &[Image]) -> Vec<RawFrame> {
    let Some(stacktrace) = stacktrace else {
        return Vec::new();
    };
    let mut frames: Vec<RawFrame> = array(stacktrace, "frames")
        .iter()
        .filter_map(|raw| {
            let addr = address_at(raw, "instruction_addr")?;
            let image_addr = address_at(raw, "image_addr");
            let symbol = text(raw, "function")
                .or_else(|| text(raw, "symbol"))
                .filter(|f| f != "<redacted>" && f != "<unknown>");
            let image_name = text(raw, "package")
                .and_then(|p| p.rsplit('/').next().map(str::to_owned))
                .or_else(|| {
                    image_addr
                        .and_then(|a| images.iter().find(|i| i.load_address == a))
                        .map(|i| i.name.clone())
                });
            Some(RawFrame {
                instruction_addr: addr,
                symbol,
                image_name,
            })
        })
        .collect();
    frames.reverse();
    frames
}

fn exception_info(exc: &Value) -> ExceptionInfo {
    let mechanism = exc.get("mechanism").unwrap_or(&Value::Null);
    let mach = mechanism
        .get("mach_exception")
        .or_else(|| mechanism.get("meta").and_then(|m| m.get("mach_exception")));
    let posix = mechanism
        .get("posix_signal")
        .or_else(|| mechanism.get("meta").and_then(|m| m.get("signal")));
    let kind = mach.and_then(|m| {
        text(m, "exception_name").or_else(|| {
            m.get("exception")
                .and_then(Value::as_u64)
                .and_then(mach_exception_name)
                .map(str::to_owned)
        })
    });
    let signal = posix.and_then(|p| {
        text(p, "name").or_else(|| {
            p.get("signal")
                .or_else(|| p.get("number"))
                .and_then(Value::as_u64)
                .and_then(signal_name)
                .map(str::to_owned)
        })
    });
    let ty = text(exc, "type");
    let value = text(exc, "value");
    // A language exception (NSException, Swift error) has a type that is no Mach or
    // POSIX name; a plain signal crash repeats the Mach name as its type.
    let language_level = ty
        .as_deref()
        .is_some_and(|t| !t.starts_with("EXC_") && !t.starts_with("SIG"));
    ExceptionInfo {
        kind: kind.clone().or_else(|| ty.clone()),
        signal,
        codes: mach.map(|m| {
            format!(
                "{:#018x}, {:#018x}",
                m.get("code").and_then(Value::as_u64).unwrap_or(0),
                m.get("subcode").and_then(Value::as_u64).unwrap_or(0)
            )
        }),
        subtype: text(mechanism, "relevant_address")
            .map(|addr| format!("KERN_INVALID_ADDRESS at {addr}"))
            .filter(|_| kind.as_deref() == Some("EXC_BAD_ACCESS")),
        name: ty.filter(|_| language_level),
        reason: value,
    }
}

/// Mach-O `cpu_type` numbers of the architectures Apple ships.
fn arch_of_cpu_type(cpu_type: u64) -> Option<String> {
    Some(
        match cpu_type {
            0x0100_000c => "arm64",
            0x0200_000c => "arm64_32",
            12 => "armv7",
            0x0100_0007 => "x86_64",
            7 => "x86",
            _ => return None,
        }
        .to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_reversed_to_innermost_first() {
        let event = r#"{"event_id":"e1","debug_meta":{"images":[{"name":"/a/App.app/App","image_addr":"0x1000","image_size":4096,"uuid":"54039061-A983-3323-A49D-837A894D667F","cpu_type":16777228}]},
            "exception":{"values":[{"type":"NSInvalidArgumentException","value":"boom","thread_id":0,"mechanism":{"type":"nsexception"}}]},
            "threads":{"values":[{"id":0,"crashed":true,"stacktrace":{"frames":[{"instruction_addr":"0x1100"},{"instruction_addr":"0x1200"}]}}]}}"#;
        let report = parse(event, &ParseLimits::default()).unwrap();
        assert_eq!(report.threads[0].frames[0].instruction_addr, 0x1200);
        assert_eq!(report.images[0].arch.as_deref(), Some("arm64"));
        assert_eq!(
            report.exception.name.as_deref(),
            Some("NSInvalidArgumentException")
        );
        assert_eq!(report.crashed_thread, Some(0));
        // The thread has its own frames, so the exception's are not needed for it.
        assert_eq!(report.last_exception_backtrace, None);
    }

    #[test]
    fn a_language_exceptions_stack_trace_is_its_backtrace() {
        let event = r#"{"event_id":"e1","debug_meta":{"images":[{"name":"/a/App.app/App","image_addr":"0x1000","image_size":4096}]},
            "exception":{"values":[{"type":"NSInternalInconsistencyException","value":"boom","thread_id":0,"mechanism":{"type":"nsexception"},
              "stacktrace":{"frames":[{"instruction_addr":"0x1300"},{"instruction_addr":"0x1400"}]}}]},
            "threads":{"values":[{"id":0,"crashed":true,"stacktrace":{"frames":[{"instruction_addr":"0x1100"},{"instruction_addr":"0x1200"}]}}]}}"#;
        let report = parse(event, &ParseLimits::default()).unwrap();
        let raised: Vec<u64> = report
            .last_exception_backtrace
            .unwrap()
            .iter()
            .map(|f| f.instruction_addr)
            .collect();
        assert_eq!(raised, [0x1400, 0x1300]);
        assert_eq!(report.threads[0].frames[0].instruction_addr, 0x1200);

        // A signal's stack trace is the crashed thread's, pc first: not a backtrace.
        let event = event.replace(
            r#""type":"NSInternalInconsistencyException""#,
            r#""type":"EXC_BAD_ACCESS""#,
        );
        let report = parse(&event, &ParseLimits::default()).unwrap();
        assert_eq!(report.last_exception_backtrace, None);
    }

    #[test]
    fn crashes_are_fatal_or_unhandled() {
        let limits = ParseLimits::default();
        for (event, crash) in [
            (r#"{"level":"fatal"}"#, true),
            (
                r#"{"exception":{"values":[{"mechanism":{"handled":false}}]}}"#,
                true,
            ),
            (
                r#"{"level":"error","exception":{"values":[{"mechanism":{"handled":true}}]}}"#,
                false,
            ),
            (r#"{"message":"hello","level":"info"}"#, false),
        ] {
            assert_eq!(head(event, &limits).unwrap().crash, crash, "{event}");
        }
        assert!(head("[1]", &limits).is_err());
        let deep = "[".repeat(5000);
        assert!(head(&deep, &limits).is_err());
    }

    #[test]
    fn an_event_without_stacks_is_refused() {
        let err = parse(
            r#"{"event_id":"x","exception":{"values":[]}}"#,
            &ParseLimits::default(),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("Sentry event"), "{err}");
    }
}
