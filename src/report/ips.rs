//! Apple's JSON crash report (`.ips`, `bug_type` 309, iOS 15+ / macOS 12+).
//!
//! The file is a one-line JSON header followed by a JSON body. Frames are written as
//! `imageIndex` into `usedImages` plus `imageOffset`; they become absolute addresses
//! here (`base + imageOffset`), so the rest of crashbox sees one address space for
//! every format. An older `.ips` whose body is legacy text goes to the `.crash` parser
//! (see `apple_crash::parse`), which reads the header too.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use super::json::{
    address, address_at, array, as_text, parse_seeded, parse_value, text, ValueBudget, ValueSeed,
};
use super::{
    apple, CrashReport, ExceptionInfo, Image, ParseError, ParseErrorKind, ParseLimits, RawFrame,
    ReportFormat, Termination, Thread,
};

const FORMAT: ReportFormat = ReportFormat::Ips;

/// Splits an `.ips` into its parsed header (a JSON object on the first line) and the
/// body text after it. `format` names the parser asking, for its errors.
pub fn split_header<'a>(
    text: &'a str,
    format: ReportFormat,
    limits: &ParseLimits,
) -> Result<(Value, &'a str), ParseError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let header = parse_value(first, format, limits)?;
    if !header.is_object() {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::Invalid,
            "the header line is not a JSON object",
        ));
    }
    Ok((header, rest))
}

pub fn parse(text: &str, limits: &ParseLimits) -> Result<CrashReport, ParseError> {
    let (header, body_text) = split_header(text, FORMAT, limits)?;
    if !body_text.trim_start().starts_with('{') {
        return Err(invalid("the body is not a JSON object"));
    }
    let budget = ValueBudget::new(limits.max_json_values);
    let body = parse_seeded(body_text, FORMAT, limits, &budget, BodySeed(budget.seed()))?;
    from_values(&header, &body)
}

/// An `.ips` body: threads and the exception backtrace in compact structs, the rest
/// (a few hundred small fields) as a `Value`. As `Value`s every frame was a BTreeMap
/// of about 800 bytes: a 10 MB report of 300k frames peaked at 285 MB of RSS.
struct Body {
    rest: Value,
    threads: Vec<IpsThread>,
    last_exception_backtrace: Option<Vec<IpsFrame>>,
}

impl std::ops::Deref for Body {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.rest
    }
}

#[derive(serde::Deserialize)]
struct IpsThread {
    #[serde(default)]
    frames: Vec<IpsFrame>,
    #[serde(default)]
    triggered: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    queue: Option<Value>,
}

/// One frame; fields other than these (symbolLocation, sourceFile…) are skipped
/// without being kept.
#[derive(serde::Deserialize)]
struct IpsFrame {
    #[serde(default, rename = "imageIndex")]
    image_index: Option<Value>,
    #[serde(default, rename = "imageOffset")]
    image_offset: Option<Value>,
    #[serde(default)]
    symbol: Option<Value>,
}

/// Reads a [`Body`]; the fields kept as `Value`s count against the report's budget.
struct BodySeed<'b>(ValueSeed<'b>);

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Body;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Body, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Body;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an .ips body object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Body, A::Error> {
        let mut rest = Map::new();
        let mut threads = Vec::new();
        let mut last_exception_backtrace = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "threads" => threads = map.next_value()?,
                "lastExceptionBacktrace" => last_exception_backtrace = Some(map.next_value()?),
                _ => {
                    let value = map.next_value_seed(self.0)?;
                    rest.insert(key, value);
                }
            }
        }
        Ok(Body {
            rest: Value::Object(rest),
            threads,
            last_exception_backtrace,
        })
    }
}

fn invalid(message: impl Into<String>) -> ParseError {
    ParseError::new(Some(FORMAT), ParseErrorKind::Invalid, message)
}

fn from_values(header: &Value, ips: &Body) -> Result<CrashReport, ParseError> {
    let body: &Value = ips;
    let mut report = CrashReport::new(FORMAT);
    report.incident_id = text(body, "incident").or_else(|| text(header, "incident_id"));
    report.timestamp = text(body, "captureTime")
        .or_else(|| text(header, "timestamp"))
        .and_then(|t| apple::timestamp(&t));

    let bundle = body.get("bundleInfo").unwrap_or(&Value::Null);
    report.app.bundle_id = text(bundle, "CFBundleIdentifier").or_else(|| text(header, "bundleID"));
    report.app.version =
        text(bundle, "CFBundleShortVersionString").or_else(|| text(header, "app_version"));
    report.app.build = text(bundle, "CFBundleVersion").or_else(|| text(header, "build_version"));
    report.app.name = text(body, "procName")
        .or_else(|| text(header, "name"))
        .or_else(|| text(header, "app_name"));

    let os_version = body.get("osVersion").unwrap_or(&Value::Null);
    report.os = match text(os_version, "train") {
        Some(train) => {
            let mut os = apple::os_info(&train);
            os.build = text(os_version, "build");
            os
        }
        None => apple::os_info(&text(header, "os_version").unwrap_or_default()),
    };
    report.device_model = text(body, "modelCode");
    // crashReporterKey first: the `.crash` rendering carries only that one, and the
    // same device must hash the same whichever format it sent.
    report.device_id = text(body, "crashReporterKey").or_else(|| {
        body.get("storeInfo")
            .and_then(|s| text(s, "deviceIdentifierForVendor"))
    });

    report.exception = exception(body);
    report.termination = body.get("termination").map(termination);

    let used_images = array(body, "usedImages");
    // Frames refer to images by their index in `usedImages`; images Apple could not
    // name (all-zero UUID at base 0) are not kept, but their index still counts.
    let mut image_bases = Vec::with_capacity(used_images.len());
    for (i, raw) in used_images.iter().enumerate() {
        let base = address_at(raw, "base")
            .ok_or_else(|| invalid(format!("usedImages[{i}] has no base address")))?;
        image_bases.push(base);
        let debug_id = text(raw, "uuid").and_then(|u| apple::debug_id(&u));
        let path = text(raw, "path");
        let name = text(raw, "name").or_else(|| {
            path.as_deref()
                .and_then(|p| p.rsplit('/').next())
                .map(str::to_owned)
        });
        let Some(name) = name else {
            continue;
        };
        if base == 0 && debug_id.is_none() {
            continue;
        }
        report.images.push(Image {
            name,
            path,
            debug_id,
            load_address: base,
            size: address_at(raw, "size").filter(|&s| s > 0),
            arch: text(raw, "arch"),
        });
    }
    let proc_path = text(body, "procPath");
    report.arch = proc_path
        .as_deref()
        .and_then(|p| {
            report
                .images
                .iter()
                .find(|i| i.path.as_deref().is_some_and(|ip| same_path(ip, p)))
        })
        .and_then(|i| i.arch.clone())
        .or_else(|| text(body, "cpuType").and_then(|c| apple::arch_of_code_type(&c)));

    let image_names = used_images_names(used_images);
    let faulting = body.get("faultingThread").and_then(Value::as_u64);
    for (position, raw) in ips.threads.iter().enumerate() {
        let crashed = raw.triggered.as_ref().and_then(Value::as_bool) == Some(true)
            || faulting == Some(position as u64);
        let frames = frames(&raw.frames, &image_bases, &image_names)
            .map_err(|e| invalid(format!("threads[{position}]: {e}")))?;
        report.threads.push(Thread {
            index: position,
            name: as_text(raw.name.as_ref()),
            queue: as_text(raw.queue.as_ref()),
            crashed,
            frames,
        });
    }
    report.crashed_thread = faulting
        .map(|f| f as usize)
        .filter(|&f| f < report.threads.len())
        .or_else(|| report.threads.iter().position(|t| t.crashed));
    if let Some(crashed) = report.crashed_thread {
        report.threads[crashed].crashed = true;
    }

    if let Some(backtrace) = &ips.last_exception_backtrace {
        let frames = frames(backtrace, &image_bases, &image_names)
            .map_err(|e| invalid(format!("lastExceptionBacktrace: {e}")))?;
        report.last_exception_backtrace = Some(frames);
    }
    Ok(report)
}

fn used_images_names(used_images: &[Value]) -> Vec<Option<String>> {
    used_images.iter().map(|i| text(i, "name")).collect()
}

/// `/private/var/…` and `/var/…` are the same directory on iOS.
fn same_path(a: &str, b: &str) -> bool {
    a.trim_start_matches("/private") == b.trim_start_matches("/private")
}

fn frames(
    raw_frames: &[IpsFrame],
    image_bases: &[u64],
    image_names: &[Option<String>],
) -> Result<Vec<RawFrame>, String> {
    let mut out = Vec::with_capacity(raw_frames.len());
    for (i, raw) in raw_frames.iter().enumerate() {
        let offset = raw
            .image_offset
            .as_ref()
            .and_then(address)
            .ok_or_else(|| format!("frame {i} has no imageOffset"))?;
        let image_index = raw
            .image_index
            .as_ref()
            .and_then(address)
            .ok_or_else(|| format!("frame {i} has no imageIndex"))?;
        let base = usize::try_from(image_index)
            .ok()
            .and_then(|index| image_bases.get(index))
            .ok_or_else(|| {
                format!(
                    "frame {i} has imageIndex {image_index}, but usedImages has {} entries",
                    image_bases.len()
                )
            })?;
        out.push(RawFrame {
            instruction_addr: base.wrapping_add(offset),
            symbol: as_text(raw.symbol.as_ref()),
            image_name: image_names.get(image_index as usize).cloned().flatten(),
        });
    }
    Ok(out)
}

fn exception(body: &Value) -> ExceptionInfo {
    let raw = body.get("exception").unwrap_or(&Value::Null);
    let mut info = ExceptionInfo {
        kind: text(raw, "type"),
        signal: text(raw, "signal"),
        codes: text(raw, "codes"),
        subtype: text(raw, "subtype"),
        name: None,
        reason: text(raw, "message"),
    };
    // `asi` (Application Specific Information) is where abort(), assertions and Swift
    // fatal errors leave their message: {"libsystem_c.dylib": ["abort() called"]}.
    if let Some(asi) = body.get("asi").and_then(Value::as_object) {
        let lines: Vec<String> = asi
            .values()
            .flat_map(|v| match v {
                Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str().map(str::to_owned))
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            })
            .collect();
        if !lines.is_empty() && info.reason.is_none() {
            info.reason = Some(lines.join("\n"));
        }
    }
    // An uncaught NSException names itself in `ktriageinfo` / `exceptionReason`.
    if let Some(reason) = body.get("exceptionReason") {
        info.name = text(reason, "name").or_else(|| text(reason, "className"));
        if let Some(composed) = text(reason, "composed_message") {
            info.reason = Some(composed);
        }
    }
    info
}

fn termination(raw: &Value) -> Termination {
    let code = raw.get("code").map(|c| match c {
        Value::Number(n) => match n.as_u64() {
            // Runningboard codes are read in hex (0xdead10cc); signals in decimal.
            Some(v) if v > 0xffff => format!("{v:#x}"),
            _ => n.to_string(),
        },
        other => other.as_str().unwrap_or_default().to_owned(),
    });
    Termination {
        namespace: text(raw, "namespace"),
        code,
        indicator: text(raw, "indicator"),
        reasons: array(raw, "reasons")
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        by_process: text(raw, "byProc"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(body: &str) -> String {
        format!("{{\"bug_type\":\"309\",\"incident_id\":\"X\"}}\n{body}")
    }

    #[test]
    fn frames_become_absolute_addresses() {
        let text = ips(
            r#"{"usedImages":[{"base":4096,"size":4096,"uuid":"11ce3f57-6264-3e8d-8a89-86894d83b974","name":"App","arch":"arm64"}],
            "faultingThread":0,"threads":[{"frames":[{"imageIndex":0,"imageOffset":16}]}]}"#,
        );
        let report = parse(&text, &ParseLimits::default()).unwrap();
        assert_eq!(report.threads[0].frames[0].instruction_addr, 4096 + 16);
        assert_eq!(report.crashed_thread, Some(0));
        assert!(report.threads[0].crashed);
    }

    #[test]
    fn an_image_index_out_of_range_is_a_clear_error() {
        let text = ips(
            r#"{"usedImages":[{"base":4096,"name":"App"}],"threads":[{"frames":[{"imageIndex":7,"imageOffset":16}]}]}"#,
        );
        let err = parse(&text, &ParseLimits::default()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::Invalid);
        let message = err.to_string();
        assert!(message.starts_with("Apple .ips"), "{message}");
        assert!(message.contains("imageIndex 7"), "{message}");
    }

    #[test]
    fn truncated_bodies_say_so() {
        let text = ips(r#"{"usedImages":[{"base":4096"#);
        let err = parse(&text, &ParseLimits::default()).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::Syntax);
        assert!(err.to_string().contains("truncated"), "{err}");
    }
}
