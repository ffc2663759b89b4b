//! crashbox JSON: the small format for in-app reporters, documented in
//! `docs/crashbox-report.md` with a JSON Schema in `docs/crashbox-report.schema.json`.
//!
//! It takes raw return addresses and their images, as a signal handler or an uncaught
//! NSException handler writes them, and also the least an in-app reporter can send:
//! an exception's name and reason plus `Thread.callStackSymbols` strings with no image
//! list. From a line like `4  OutOfBox  0x0000000100f0a4c8 OutOfBox + 42184` (an
//! image with no symbols, so the offset is from the image's start) the image's load
//! address follows: `0x100f0a4c8 − 42184`. Such images have no UUID; symbolication
//! finds their debug file by name within the report's release.

use std::collections::BTreeMap;

use serde_json::Value;

use super::json::{address, address_at, array, parse_address, parse_value, text};
use super::{
    CrashReport, ExceptionInfo, Image, ParseError, ParseErrorKind, ParseLimits, RawFrame,
    ReportFormat, Thread,
};

const FORMAT: ReportFormat = ReportFormat::Crashbox;

/// The schema version this parser reads.
pub const VERSION: u64 = 1;

pub fn parse(text_in: &str, limits: &ParseLimits) -> Result<CrashReport, ParseError> {
    let doc = parse_value(text_in, FORMAT, limits)?;
    match doc.get("crashbox").and_then(Value::as_u64) {
        Some(VERSION) => {}
        Some(other) => {
            return Err(invalid(format!(
                "schema version {other} is not supported (this server reads version {VERSION})"
            )))
        }
        None => return Err(invalid("\"crashbox\" must be the schema version, 1")),
    }
    let mut report = CrashReport::new(FORMAT);
    report.incident_id = text(&doc, "incident_id");
    report.timestamp = text(&doc, "timestamp");
    report.device_model = text(&doc, "device_model");
    report.arch = text(&doc, "arch");
    report.device_id = text(&doc, "device_id");
    if let Some(app) = doc.get("app") {
        report.app.bundle_id = text(app, "bundle_id");
        report.app.name = text(app, "name");
        report.app.version = text(app, "version");
        report.app.build = text(app, "build");
    }
    if let Some(os) = doc.get("os") {
        report.os.name = text(os, "name");
        report.os.version = text(os, "version");
        report.os.build = text(os, "build");
    }
    if let Some(exc) = doc.get("exception") {
        report.exception = ExceptionInfo {
            kind: text(exc, "type").or_else(|| text(exc, "name")),
            signal: text(exc, "signal"),
            codes: text(exc, "codes"),
            subtype: text(exc, "subtype"),
            name: text(exc, "name"),
            reason: text(exc, "reason"),
        };
    }

    for (i, raw) in array(&doc, "images").iter().enumerate() {
        let name = text(raw, "name").ok_or_else(|| invalid(format!("images[{i}] has no name")))?;
        let load_address = address_at(raw, "load_address")
            .ok_or_else(|| invalid(format!("images[{i}] has no load_address")))?;
        report.images.push(Image {
            name,
            path: text(raw, "path"),
            debug_id: text(raw, "uuid").and_then(|u| super::apple::debug_id(&u)),
            load_address,
            size: address_at(raw, "size").filter(|&s| s > 0),
            arch: text(raw, "arch"),
        });
    }

    for (position, raw) in array(&doc, "threads").iter().enumerate() {
        let mut frames = Vec::new();
        for (j, frame) in array(raw, "frames").iter().enumerate() {
            frames.push(frame_of(frame).ok_or_else(|| {
                invalid(format!("threads[{position}].frames[{j}] has no address"))
            })?);
        }
        report.threads.push(Thread {
            index: raw
                .get("index")
                .and_then(Value::as_u64)
                .map_or(position, |i| i as usize),
            name: text(raw, "name"),
            queue: text(raw, "queue"),
            crashed: raw.get("crashed").and_then(Value::as_bool) == Some(true),
            frames,
        });
    }

    if let Some(lines) = doc.get("call_stack_symbols").and_then(Value::as_array) {
        let mut frames = Vec::with_capacity(lines.len());
        let mut derived: BTreeMap<String, u64> = BTreeMap::new();
        for (j, line) in lines.iter().enumerate() {
            let line = line
                .as_str()
                .ok_or_else(|| invalid(format!("call_stack_symbols[{j}] is not a string")))?;
            let parsed = call_stack_symbol(line).ok_or_else(|| {
                invalid(format!(
                    "call_stack_symbols[{j}] is not `N  Image  0xADDRESS symbol + offset`"
                ))
            })?;
            if let Some(load) = parsed.image_load_address {
                derived.entry(parsed.image.clone()).or_insert(load);
            }
            frames.push(RawFrame {
                instruction_addr: parsed.address,
                symbol: parsed.symbol,
                image_name: Some(parsed.image),
            });
        }
        for (name, load_address) in derived {
            if !report.images.iter().any(|i| i.name == name) {
                report.images.push(Image {
                    name,
                    load_address,
                    ..Image::default()
                });
            }
        }
        // callStackSymbols are the crashing thread's (or the exception's) stack.
        let crashed = report.threads.iter().position(|t| t.crashed);
        match crashed {
            Some(c) if report.threads[c].frames.is_empty() => report.threads[c].frames = frames,
            Some(_) => report.last_exception_backtrace = Some(frames),
            None => report.threads.insert(
                0,
                Thread {
                    index: 0,
                    crashed: true,
                    frames,
                    ..Thread::default()
                },
            ),
        }
    }
    report.crashed_thread = doc
        .get("crashed_thread")
        .and_then(Value::as_u64)
        .and_then(|c| report.threads.iter().position(|t| t.index as u64 == c))
        .or_else(|| report.threads.iter().position(|t| t.crashed));
    if let Some(c) = report.crashed_thread {
        report.threads[c].crashed = true;
    }
    if report.threads.iter().all(|t| t.frames.is_empty()) {
        return Err(invalid(
            "the report has no frames (threads or call_stack_symbols)",
        ));
    }
    Ok(report)
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(Some(FORMAT), ParseErrorKind::Invalid, message)
}

/// A frame: `"0x100f0a4c8"`, a number, or `{"address": …, "symbol": …, "image": …}`.
fn frame_of(raw: &Value) -> Option<RawFrame> {
    if let Some(addr) = address(raw) {
        return Some(RawFrame {
            instruction_addr: addr,
            ..RawFrame::default()
        });
    }
    Some(RawFrame {
        instruction_addr: address_at(raw, "address")?,
        symbol: text(raw, "symbol"),
        image_name: text(raw, "image"),
    })
}

struct CallStackSymbol {
    image: String,
    address: u64,
    symbol: Option<String>,
    image_load_address: Option<u64>,
}

/// `4   OutOfBox   0x0000000100f0a4c8 OutOfBox + 42184` or
/// `1   libobjc.A.dylib   0x000000018f1d5244 objc_exception_throw + 60`.
fn call_stack_symbol(line: &str) -> Option<CallStackSymbol> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    tokens.first()?.parse::<u32>().ok()?;
    let addr_at = tokens.iter().skip(1).position(|t| t.starts_with("0x"))? + 1;
    let image = tokens[1..addr_at].join(" ");
    if image.is_empty() {
        return None;
    }
    let address = parse_address(tokens[addr_at])?;
    let rest = tokens[addr_at + 1..].join(" ");
    let (symbol, offset) = match rest.rsplit_once(" + ") {
        Some((symbol, offset)) => (symbol.trim().to_owned(), offset.trim().parse::<u64>().ok()),
        None => (rest.trim().to_owned(), None),
    };
    // No symbol in the image: dladdr names the image itself, and the offset is from
    // the image's start.
    let names_image = symbol == image || symbol.starts_with("0x");
    Some(CallStackSymbol {
        image_load_address: offset
            .filter(|_| names_image)
            .and_then(|off| address.checked_sub(off)),
        symbol: (!names_image && !symbol.is_empty() && symbol != "???").then_some(symbol),
        image,
        address,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_stack_symbols_give_image_load_addresses() {
        let doc = r#"{"crashbox":1,"app":{"name":"OutOfBox","version":"1.0","build":"3"},
            "exception":{"name":"NSInvalidArgumentException","reason":"boom"},
            "call_stack_symbols":[
              "0   CoreFoundation                      0x000000018fe5e5e0 __exceptionPreprocess + 164",
              "4   OutOfBox                            0x0000000100f0a4c8 OutOfBox + 42184"]}"#;
        let report = parse(doc, &ParseLimits::default()).unwrap();
        let image = report.images.iter().find(|i| i.name == "OutOfBox").unwrap();
        assert_eq!(image.load_address, 0x100f0a4c8 - 42184);
        assert_eq!(image.debug_id, None);
        let frames = &report.threads[0].frames;
        assert_eq!(frames[0].symbol.as_deref(), Some("__exceptionPreprocess"));
        assert_eq!(frames[1].symbol, None);
        assert_eq!(report.crashed_thread, Some(0));
        assert_eq!(
            report.exception.kind.as_deref(),
            Some("NSInvalidArgumentException")
        );
    }

    #[test]
    fn raw_addresses_with_images() {
        let doc = r#"{"crashbox":1,"exception":{"type":"EXC_BAD_ACCESS","signal":"SIGSEGV"},
            "images":[{"name":"App","uuid":"54039061-A983-3323-A49D-837A894D667F","load_address":"0x100000000","size":65536}],
            "threads":[{"crashed":true,"frames":["0x100001000", 4294971392, {"address":"0x100003000"}]}]}"#;
        let report = parse(doc, &ParseLimits::default()).unwrap();
        assert_eq!(report.threads[0].frames.len(), 3);
        assert_eq!(report.threads[0].frames[1].instruction_addr, 0x100001000);
        assert_eq!(
            report.images[0].debug_id.as_deref(),
            Some("54039061-a983-3323-a49d-837a894d667f")
        );
    }

    #[test]
    fn wrong_versions_and_empty_reports_are_refused() {
        let err = parse(r#"{"crashbox":2}"#, &ParseLimits::default()).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
        let err = parse(r#"{"crashbox":1,"threads":[]}"#, &ParseLimits::default()).unwrap_err();
        assert!(err.to_string().starts_with("crashbox JSON"), "{err}");
    }

    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("../../docs/crashbox-report.md");
        let examples: Vec<&str> = doc
            .split("```json")
            .skip(1)
            .map(|block| block.split("```").next().unwrap())
            .collect();
        assert_eq!(examples.len(), 2);
        for example in examples {
            let report = parse(example, &ParseLimits::default()).unwrap();
            assert!(report.crashed_thread.is_some(), "{example}");
        }
    }
}
