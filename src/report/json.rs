//! JSON parsing shared by the JSON formats, safe against deep nesting.
//!
//! serde_json recurses once per nesting level, and so does dropping a `Value`. A
//! hostile report nested 100,000 deep would overflow the stack either way, so the depth
//! is measured first with a flat byte scan and refused past the limit; under the limit,
//! `serde_stacker` grows the stack on the heap while parsing, so legitimately deep
//! MetricKit call trees (two levels per frame) still parse.

use serde_json::Value;

use super::{ParseError, ParseErrorKind, ReportFormat};

/// Parses `text` as JSON for `format`, refusing nesting deeper than `max_depth`.
pub fn parse_value(
    text: &str,
    format: ReportFormat,
    max_depth: usize,
) -> Result<Value, ParseError> {
    let depth = nesting_depth(text.as_bytes());
    if depth > max_depth {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::TooLarge,
            format!("JSON nests {depth} levels deep, over the limit of {max_depth}"),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let de = serde_stacker::Deserializer::new(&mut de);
    let value =
        <Value as serde::Deserialize>::deserialize(de).map_err(|err| syntax_error(format, &err))?;
    Ok(value)
}

/// Parses `text` as `T` for `format`, with the same depth check as [`parse_value`]:
/// for the large parts of a report, which typed structs hold far more compactly than
/// a `Value` tree.
pub fn parse_typed<T: serde::de::DeserializeOwned>(
    text: &str,
    format: ReportFormat,
    max_depth: usize,
) -> Result<T, ParseError> {
    let depth = nesting_depth(text.as_bytes());
    if depth > max_depth {
        return Err(ParseError::new(
            Some(format),
            ParseErrorKind::TooLarge,
            format!("JSON nests {depth} levels deep, over the limit of {max_depth}"),
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let de = serde_stacker::Deserializer::new(&mut de);
    T::deserialize(de).map_err(|err| syntax_error(format, &err))
}

/// A value as text, as [`text`] reads `value[key]`.
pub fn as_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Turns a serde_json error into a [`ParseError`] that says where and what.
pub fn syntax_error(format: ReportFormat, err: &serde_json::Error) -> ParseError {
    let what = if err.is_eof() {
        "the JSON is truncated"
    } else {
        "the JSON is invalid"
    };
    ParseError::new(
        Some(format),
        ParseErrorKind::Syntax,
        format!(
            "{what} (line {}, column {}): {err}",
            err.line(),
            err.column()
        ),
    )
}

/// `value[key]` as text: strings as they are, numbers and booleans written out.
pub fn text(value: &Value, key: &str) -> Option<String> {
    match value.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An address or size: a JSON number, a `"0x…"` hex string or a decimal string.
pub fn address(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|i| i as u64))
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && *f < 1.8e19)
                    .map(|f| f as u64)
            }),
        Value::String(s) => parse_address(s),
        _ => None,
    }
}

/// `"0x1f"`, `"1F"` as hex when prefixed, else decimal.
pub fn parse_address(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `value[key]` as an address (see [`address`]).
pub fn address_at(value: &Value, key: &str) -> Option<u64> {
    address(value.get(key)?)
}

/// The array at `value[key]`, or an empty slice.
pub fn array<'a>(value: &'a Value, key: &str) -> &'a [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The deepest `[`/`{` nesting in `bytes`, ignoring brackets inside strings.
pub fn nesting_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":"[[[{"}]}"#), 3);
        assert_eq!(nesting_depth(br#"{"a":"\"[["}"#), 1);
    }

    #[test]
    fn deep_nesting_is_refused_and_moderate_nesting_parses() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let err = parse_value(&deep, ReportFormat::MetricKit, 2048).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
        let ok = "[".repeat(2000) + &"]".repeat(2000);
        assert!(parse_value(&ok, ReportFormat::MetricKit, 2048).is_ok());
    }

    #[test]
    fn truncated_json_says_so() {
        let err = parse_value("{\"a\": [1, 2", ReportFormat::SentryEvent, 64).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::Syntax);
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().starts_with("Sentry event"), "{err}");
    }
}
