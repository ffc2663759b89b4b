//! The crash JSON of DESIGN.md's contract. Addresses are hex strings, because a 64-bit
//! address does not survive a JavaScript number.

use serde_json::{json, Map, Value};

use crate::report::CrashReport;
use crate::symbolicate::{release_of, Frame, ImageStatus, SymbolicatedCrash};

/// Ids a stored crash has; the offline CLI has none.
#[derive(Debug, Default, Clone)]
pub struct CrashIds {
    pub id: Option<String>,
    pub group_id: Option<String>,
}

fn hex(addr: u64) -> String {
    format!("0x{addr:x}")
}

/// Inserts `value` unless it is null, so optional fields are left out, not `null`.
fn put(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    let value = value.into();
    if !value.is_null() {
        map.insert(key.to_owned(), value);
    }
}

fn frame_json(frame: &Frame) -> Value {
    let mut map = Map::new();
    put(&mut map, "instruction_addr", hex(frame.instruction_addr));
    put(&mut map, "image", frame.image.as_deref());
    map.insert("debug_id".into(), json!(frame.debug_id));
    put(&mut map, "status", json!(frame.status));
    put(&mut map, "function", frame.function.as_deref());
    put(&mut map, "file", frame.file.as_deref());
    put(&mut map, "line", frame.line);
    put(&mut map, "relative_addr", frame.relative_addr.map(hex));
    if let (Some(start), Some(rel)) = (frame.function_addr, frame.relative_addr) {
        if rel >= start {
            put(&mut map, "function_offset", rel - start);
        }
    }
    map.insert("in_app".into(), json!(frame.in_app));
    map.insert("inlined".into(), json!(frame.inlined));
    Value::Object(map)
}

fn image_json(image: &ImageStatus) -> Value {
    let debug_file = if image.debug_file_found {
        "found"
    } else if image.referenced {
        "missing"
    } else {
        "not_needed"
    };
    json!({
        "name": image.name,
        "path": image.path,
        "debug_id": image.debug_id,
        "load_address": hex(image.load_address),
        "size": image.size,
        "arch": image.arch,
        "in_app": image.in_app,
        "debug_file": debug_file,
    })
}

/// The whole crash as the contract's JSON.
pub fn crash_json(report: &CrashReport, crash: &SymbolicatedCrash, ids: &CrashIds) -> Value {
    let mut map = Map::new();
    put(&mut map, "id", ids.id.clone());
    put(&mut map, "group_id", ids.group_id.clone());
    map.insert("format".into(), json!(report.format));
    map.insert("release".into(), json!(release_of(report)));
    map.insert("app".into(), json!(report.app));
    map.insert("os".into(), json!(report.os));
    map.insert("device_model".into(), json!(report.device_model));
    map.insert("arch".into(), json!(report.arch));
    map.insert("timestamp".into(), json!(report.timestamp));
    let e = &report.exception;
    let mut exception = Map::new();
    exception.insert("type".into(), json!(e.kind));
    exception.insert("signal".into(), json!(e.signal));
    put(&mut exception, "codes", e.codes.clone());
    put(&mut exception, "subtype", e.subtype.clone());
    put(&mut exception, "name", e.name.clone());
    put(&mut exception, "reason", e.reason.clone());
    map.insert("exception".into(), Value::Object(exception));
    put(
        &mut map,
        "termination",
        report.termination.as_ref().map(|t| json!(t)),
    );
    map.insert(
        "crashed_thread".into(),
        json!(crash.threads.iter().find(|t| t.crashed).map(|t| t.index)),
    );
    let signature = crate::grouping::sign(report, crash, crate::grouping::Rules::builtin_ref());
    map.insert("signature".into(), json!(signature.text));
    let threads: Vec<Value> = crash
        .threads
        .iter()
        .map(|t| {
            let mut thread = Map::new();
            thread.insert("index".into(), json!(t.index));
            put(&mut thread, "name", t.name.clone());
            put(&mut thread, "queue", t.queue.clone());
            thread.insert("crashed".into(), json!(t.crashed));
            thread.insert("frames".into(), t.frames.iter().map(frame_json).collect());
            Value::Object(thread)
        })
        .collect();
    map.insert("threads".into(), Value::Array(threads));
    put(
        &mut map,
        "last_exception_backtrace",
        crash
            .last_exception_backtrace
            .as_ref()
            .map(|frames| frames.iter().map(frame_json).collect::<Vec<_>>()),
    );
    map.insert(
        "images".into(),
        crash.images.iter().map(image_json).collect(),
    );
    if !report.notes.is_empty() {
        map.insert("notes".into(), json!(report.notes));
    }
    Value::Object(map)
}
