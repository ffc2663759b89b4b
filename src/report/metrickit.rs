//! MetricKit `MXDiagnosticPayload` JSON: one payload, many crash diagnostics, each its
//! own crash.
//!
//! A diagnostic's `callStackTree` holds one call stack per thread; each frame node
//! nests its caller under `subFrames`, so a deep stack is a deep tree. The tree is
//! walked with a loop, never recursion.
//!
//! Frame nodes carry the absolute `address` and `offsetIntoBinaryTextSegment`. On iOS
//! 14 and 15 the latter holds the image's load address rather than an offset
//! (Apple's bug); from iOS 16 it is the offset. Which one a payload has is read from
//! the frames themselves: across several frames of one binary, a load address stays
//! the same while offsets change. With a single frame, the OS version decides.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{address_at, array, parse_value, text};
use super::{
    apple, CrashReport, ExceptionInfo, Image, ParseError, ParseErrorKind, ParseLimits, RawFrame,
    ReportFormat, Termination, Thread,
};

const FORMAT: ReportFormat = ReportFormat::MetricKit;

pub fn parse(input: &str, limits: &ParseLimits) -> Result<Vec<CrashReport>, ParseError> {
    let root = parse_value(input, FORMAT, limits)?;
    // A payload, an array of payloads (as apps often batch them), or a bare diagnostic.
    let payloads: Vec<&Value> = match &root {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    // Counted before any is parsed: 10 MiB of minimal diagnostics once made 139,809
    // crashes from one request. `report::finish` enforces the same cap for every format.
    let count: usize = payloads
        .iter()
        .map(|p| {
            if p.get("callStackTree").is_some() {
                1
            } else {
                array(p, "crashDiagnostics").len()
            }
        })
        .sum();
    if count > limits.max_reports {
        return Err(ParseError::new(
            Some(FORMAT),
            ParseErrorKind::TooLarge,
            format!(
                "the payload holds {count} crash diagnostics, over the limit of {} per upload",
                limits.max_reports
            ),
        ));
    }
    let mut reports = Vec::new();
    for payload in payloads {
        if payload.get("callStackTree").is_some() {
            reports.push(diagnostic(payload, None, limits)?);
            continue;
        }
        let window_end = text(payload, "timeStampEnd");
        for (i, diag) in array(payload, "crashDiagnostics").iter().enumerate() {
            let report = diagnostic(diag, window_end.as_deref(), limits).map_err(|mut err| {
                err.message = format!("crashDiagnostics[{i}]: {}", err.message);
                err
            })?;
            reports.push(report);
        }
    }
    if reports.is_empty() {
        return Err(ParseError::new(
            Some(FORMAT),
            ParseErrorKind::Invalid,
            "the payload holds no crash diagnostics",
        ));
    }
    Ok(reports)
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(Some(FORMAT), ParseErrorKind::Invalid, message)
}

/// A frame as MetricKit writes it, before images are worked out.
struct Node {
    uuid: Option<String>,
    name: Option<String>,
    address: u64,
    offset: Option<u64>,
}

fn diagnostic(
    diag: &Value,
    window_end: Option<&str>,
    limits: &ParseLimits,
) -> Result<CrashReport, ParseError> {
    let mut report = CrashReport::new(FORMAT);
    let meta = diag.get("diagnosticMetaData").unwrap_or(&Value::Null);
    report.timestamp = window_end.and_then(apple::timestamp);
    report.app.version = text(meta, "appVersion");
    report.app.build = text(meta, "appBuildVersion");
    report.app.bundle_id = text(meta, "bundleIdentifier");
    report.os = apple::os_info(&text(meta, "osVersion").unwrap_or_default());
    report.device_model = text(meta, "deviceType");
    report.arch = text(meta, "platformArchitecture");
    report.exception = exception(meta);
    report.termination = text(meta, "terminationReason").map(|reason| {
        // `Namespace SIGNAL, Code 0xb`
        let body = reason.trim_start_matches("Namespace").trim();
        let (namespace, code) = body.split_once(", Code").unwrap_or((body, ""));
        Termination {
            namespace: Some(namespace.trim().to_owned()),
            code: Some(code.trim().to_owned()).filter(|c| !c.is_empty()),
            ..Termination::default()
        }
    });

    let tree = diag
        .get("callStackTree")
        .ok_or_else(|| invalid("a diagnostic has no callStackTree"))?;
    let mut stacks: Vec<(bool, Vec<Node>)> = Vec::new();
    let mut branches = 0usize;
    for (i, stack) in array(tree, "callStacks").iter().enumerate() {
        let attributed = stack.get("threadAttributed").and_then(Value::as_bool) == Some(true);
        let roots = array(stack, "callStackRootFrames");
        let mut nodes = Vec::new();
        // The root is the innermost frame; each `subFrames[0]` is its caller.
        let mut next = roots.first();
        branches += roots.len().saturating_sub(1);
        while let Some(node) = next {
            if nodes.len() >= limits.max_frames {
                report.notes.push(format!(
                    "callStacks[{i}]: kept the innermost {} frames",
                    limits.max_frames
                ));
                break;
            }
            let address = address_at(node, "address")
                .ok_or_else(|| invalid(format!("callStacks[{i}]: a frame has no address")))?;
            nodes.push(Node {
                uuid: text(node, "binaryUUID").and_then(|u| apple::debug_id(&u)),
                name: text(node, "binaryName"),
                address,
                offset: address_at(node, "offsetIntoBinaryTextSegment"),
            });
            let subs = array(node, "subFrames");
            branches += subs.len().saturating_sub(1);
            next = subs.first();
        }
        stacks.push((attributed, nodes));
    }
    if branches > 0 {
        report.notes.push(format!(
            "the call tree branches {branches} times; the first branch is kept"
        ));
    }

    let quirk_by_os = load_address_quirk_by_os(&report);
    let images = images(stacks.iter().flat_map(|(_, nodes)| nodes), quirk_by_os);
    for (position, (attributed, nodes)) in stacks.into_iter().enumerate() {
        report.threads.push(Thread {
            index: position,
            crashed: attributed,
            frames: nodes
                .into_iter()
                .map(|n| RawFrame {
                    instruction_addr: n.address,
                    symbol: None,
                    image_name: n.name,
                })
                .collect(),
            ..Thread::default()
        });
    }
    report.images = images;
    report.crashed_thread = report.threads.iter().position(|t| t.crashed);
    Ok(report)
}

/// iOS/iPadOS before 16 and macOS before 13 wrote the load address into
/// `offsetIntoBinaryTextSegment`.
fn load_address_quirk_by_os(report: &CrashReport) -> bool {
    let major = report
        .os
        .version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    let is_mac = report
        .os
        .name
        .as_deref()
        .is_some_and(|n| n.contains("mac") || n.contains("Mac"));
    match major {
        Some(major) if is_mac => major < 13,
        Some(major) => major < 16,
        None => false,
    }
}

/// One image per binary UUID, with its load address worked out from its frames.
fn images<'a>(nodes: impl Iterator<Item = &'a Node>, quirk_by_os: bool) -> Vec<Image> {
    struct Seen<'a> {
        name: Option<&'a str>,
        frames: Vec<(u64, u64)>,
    }
    let mut by_uuid: BTreeMap<&str, Seen> = BTreeMap::new();
    for node in nodes {
        let (Some(uuid), Some(offset)) = (node.uuid.as_deref(), node.offset) else {
            continue;
        };
        let seen = by_uuid.entry(uuid).or_insert(Seen {
            name: node.name.as_deref(),
            frames: Vec::new(),
        });
        seen.frames.push((node.address, offset));
    }
    let mut images = Vec::with_capacity(by_uuid.len());
    for (uuid, seen) in by_uuid {
        let (first_addr, first_off) = seen.frames[0];
        let distinct_addresses = seen.frames.iter().any(|(a, _)| *a != first_addr);
        let offsets_constant = seen.frames.iter().all(|(_, o)| *o == first_off);
        let quirk = if distinct_addresses {
            offsets_constant
        } else {
            quirk_by_os
        };
        let load_address = if quirk && first_off <= first_addr {
            first_off
        } else {
            first_addr.saturating_sub(first_off)
        };
        images.push(Image {
            name: seen.name.unwrap_or(uuid).to_owned(),
            path: None,
            debug_id: Some(uuid.to_owned()),
            load_address,
            size: None,
            arch: None,
        });
    }
    images
}

fn exception(meta: &Value) -> ExceptionInfo {
    let kind = meta
        .get("exceptionType")
        .and_then(Value::as_u64)
        .map(|t| mach_exception_name(t).map_or_else(|| t.to_string(), str::to_owned));
    let signal = meta
        .get("signal")
        .and_then(Value::as_u64)
        .map(|s| signal_name(s).map_or_else(|| s.to_string(), str::to_owned));
    let reason = meta.get("exceptionReason");
    ExceptionInfo {
        kind,
        signal,
        codes: text(meta, "exceptionCode"),
        subtype: None,
        name: reason.and_then(|r| text(r, "exceptionName").or_else(|| text(r, "className"))),
        reason: reason.and_then(|r| text(r, "composedMessage")),
    }
}

/// `<mach/exception_types.h>`
pub fn mach_exception_name(code: u64) -> Option<&'static str> {
    Some(match code {
        1 => "EXC_BAD_ACCESS",
        2 => "EXC_BAD_INSTRUCTION",
        3 => "EXC_ARITHMETIC",
        4 => "EXC_EMULATION",
        5 => "EXC_SOFTWARE",
        6 => "EXC_BREAKPOINT",
        7 => "EXC_SYSCALL",
        8 => "EXC_MACH_SYSCALL",
        9 => "EXC_RPC_ALERT",
        10 => "EXC_CRASH",
        11 => "EXC_RESOURCE",
        12 => "EXC_GUARD",
        13 => "EXC_CORPSE_NOTIFY",
        _ => return None,
    })
}

/// Darwin signal numbers.
pub fn signal_name(signal: u64) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGEMT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGBUS",
        11 => "SIGSEGV",
        12 => "SIGSYS",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(address: u64, offset: u64, sub: &str) -> String {
        format!(
            r#"{{"binaryUUID":"7C9A24C6-CB84-3053-8481-DA167DA8FB9C","binaryName":"App","address":{address},"offsetIntoBinaryTextSegment":{offset},"subFrames":[{sub}]}}"#
        )
    }

    fn payload(os: &str, tree: &str) -> String {
        format!(
            r#"{{"crashDiagnostics":[{{"diagnosticMetaData":{{"osVersion":"{os}","signal":11,"exceptionType":1}},"callStackTree":{{"callStackPerThread":true,"callStacks":[{{"threadAttributed":true,"callStackRootFrames":[{tree}]}}]}}}}]}}"#
        )
    }

    #[test]
    fn ios14_offsets_are_load_addresses() {
        let tree = node(
            0x1000_0100,
            0x1000_0000,
            &node(0x1000_0200, 0x1000_0000, ""),
        );
        let reports = parse(
            &payload("iPhone OS 14.0.1 (18A393)", &tree),
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(reports[0].images[0].load_address, 0x1000_0000);
        assert_eq!(reports[0].threads[0].frames.len(), 2);
        assert_eq!(reports[0].exception.signal.as_deref(), Some("SIGSEGV"));
    }

    #[test]
    fn ios16_offsets_are_offsets() {
        let tree = node(0x1000_0100, 0x100, &node(0x1000_0200, 0x200, ""));
        let reports = parse(
            &payload("iPhone OS 16.1 (20B82)", &tree),
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(reports[0].images[0].load_address, 0x1000_0000);
    }

    #[test]
    fn deep_trees_are_capped_without_recursion() {
        let mut tree = String::new();
        for i in 0..900 {
            tree = node(0x1000_0000 + i, 0x1000_0000, &tree);
        }
        let reports = parse(
            &payload("iPhone OS 14.0 (18A373)", &tree),
            &ParseLimits::default(),
        )
        .unwrap();
        assert_eq!(reports[0].threads[0].frames.len(), 512);
        assert!(!reports[0].notes.is_empty());

        let deep = "{\"crashDiagnostics\":[".to_owned() + &"{\"subFrames\":[".repeat(100_000);
        let err = parse(&deep, &ParseLimits::default()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
        assert!(err.to_string().starts_with("MetricKit"), "{err}");
    }
}
