//! JSON parsing shared by the JSON formats, safe against deep nesting.
//!
//! serde_json recurses once per nesting level, and so does dropping a `Value`. A
//! hostile report nested 100,000 deep would overflow the stack either way, so the depth
//! is measured first with a flat byte scan and refused past the limit; under the limit,
//! `serde_stacker` grows the stack on the heap while parsing, so legitimately deep
//! MetricKit call trees (two levels per frame) still parse.

use std::cell::Cell;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{ParseError, ParseErrorKind, ParseLimits, ReportFormat};

/// Parses `text` as JSON for `format`, refusing nesting deeper than
/// `limits.max_json_depth` and more than `limits.max_json_values` values.
pub fn parse_value(
    text: &str,
    format: ReportFormat,
    limits: &ParseLimits,
) -> Result<Value, ParseError> {
    let budget = ValueBudget::new(limits.max_json_values);
    parse_seeded(text, format, limits, &budget, budget.seed())
}

/// Parses `text` with `seed`, with the depth check of [`parse_value`]; `budget` is
/// the one the seed counts against, so running out reads as `TooLarge`.
pub fn parse_seeded<'de, S: DeserializeSeed<'de>>(
    text: &'de str,
    format: ReportFormat,
    limits: &ParseLimits,
    budget: &ValueBudget,
    seed: S,
) -> Result<S::Value, ParseError> {
    let max_depth = limits.max_json_depth;
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
    seed.deserialize(de).map_err(|err| {
        if budget.exceeded.get() {
            ParseError::new(
                Some(format),
                ParseErrorKind::TooLarge,
                format!("the report holds more than {} JSON values", budget.limit),
            )
        } else {
            syntax_error(format, &err)
        }
    })
}

/// How many JSON values (every scalar, array and object) one report may hold as
/// `serde_json::Value`s. A `Value` map costs about 600 bytes whatever it holds, so a
/// 10 MB report of tiny objects once took 266 MB; with the budget, one request's
/// `Value`s stay within a bound known in advance, whatever the report.
pub struct ValueBudget {
    limit: usize,
    left: Cell<usize>,
    exceeded: Cell<bool>,
}

impl ValueBudget {
    pub fn new(limit: usize) -> Self {
        ValueBudget {
            limit,
            left: Cell::new(limit),
            exceeded: Cell::new(false),
        }
    }

    /// A seed that builds a `Value` counting against this budget.
    pub fn seed(&self) -> ValueSeed<'_> {
        ValueSeed(self)
    }

    fn take<E: de::Error>(&self) -> Result<(), E> {
        match self.left.get() {
            0 => {
                self.exceeded.set(true);
                Err(E::custom("too many JSON values"))
            }
            left => {
                self.left.set(left - 1);
                Ok(())
            }
        }
    }
}

/// Builds a `serde_json::Value` as `Value`'s own `Deserialize` does, one unit of a
/// [`ValueBudget`] per value.
#[derive(Clone, Copy)]
pub struct ValueSeed<'b>(&'b ValueBudget);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.take()?;
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.0.take()?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.take()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
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
        let limits = ParseLimits::default();
        let err = parse_value(&deep, ReportFormat::MetricKit, &limits).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
        let ok = "[".repeat(2000) + &"]".repeat(2000);
        assert!(parse_value(&ok, ReportFormat::MetricKit, &limits).is_ok());
    }

    #[test]
    fn values_past_the_budget_are_too_large_and_the_same_json_parses_within_it() {
        let json = format!("[{}]", vec![r#"{"a":1}"#; 1000].join(","));
        let limits = |max_json_values| ParseLimits {
            max_json_values,
            ..ParseLimits::default()
        };
        let parsed = parse_value(&json, ReportFormat::SentryEvent, &limits(2001)).unwrap();
        assert_eq!(parsed, serde_json::from_str::<Value>(&json).unwrap());
        let err = parse_value(&json, ReportFormat::SentryEvent, &limits(2000)).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::TooLarge);
        assert!(err.message.contains("2000 JSON values"), "{err}");
        // A syntax error stays a syntax error.
        let err = parse_value("[1,", ReportFormat::SentryEvent, &limits(10)).unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::Syntax);
    }

    #[test]
    fn truncated_json_says_so() {
        let err = parse_value(
            "{\"a\": [1, 2",
            ReportFormat::SentryEvent,
            &ParseLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ParseErrorKind::Syntax);
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.to_string().starts_with("Sentry event"), "{err}");
    }
}
