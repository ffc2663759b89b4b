//! Conventions shared by Apple's report formats (`.ips`, `.crash`, MetricKit): how
//! they write OS versions, CPU types, UUIDs and times. Both `.ips` and its `.crash`
//! rendering go through these, which is what makes the two parse to the same crash.

use super::OsInfo;

/// `iPhone OS 26.3.1 (23D8133)` → name `iPhone OS`, version `26.3.1`, build `23D8133`.
/// Also takes the train alone (`iPhone OS 26.3.1`) and macOS's
/// `macOS 14.1 (23B74)` / `Mac OS X 10.15.7 (19H2)`.
pub fn os_info(text: &str) -> OsInfo {
    let text = text.trim();
    let (head, build) = match text.rsplit_once('(') {
        Some((head, rest)) if rest.ends_with(')') => (
            head.trim(),
            Some(rest.trim_end_matches(')').trim().to_owned()).filter(|b| !b.is_empty()),
        ),
        _ => (text, None),
    };
    let (name, version) = match head.rsplit_once(' ') {
        Some((name, version)) if version.starts_with(|c: char| c.is_ascii_digit()) => {
            (Some(name.trim().to_owned()), Some(version.to_owned()))
        }
        _ if head.starts_with(|c: char| c.is_ascii_digit()) => (None, Some(head.to_owned())),
        _ => (Some(head.to_owned()).filter(|n| !n.is_empty()), None),
    };
    OsInfo {
        name,
        version,
        build,
    }
}

/// The uncaught NSException in the runtime's last words, as Apple's "Application
/// Specific Information" (and `.ips`'s `composed_message`) write it:
/// `*** Terminating app due to uncaught exception 'NSRangeException', reason: '…'` →
/// (`NSRangeException`, `…`). The reason ends at the first `'` that ends a line, so
/// quotes inside it and lines after it (`abort() called`) are handled.
pub fn uncaught_exception(text: &str) -> Option<(String, String)> {
    const MARK: &str = "Terminating app due to uncaught exception '";
    let rest = &text[text.find(MARK)? + MARK.len()..];
    let (name, rest) = rest.split_once("', reason: '")?;
    if name.is_empty() || name.contains(['\n', '\'']) {
        return None;
    }
    let end = rest
        .match_indices('\'')
        .map(|(i, _)| i)
        .find(|&i| matches!(rest[i + 1..].chars().next(), None | Some('\n' | '\r')))
        .unwrap_or(rest.len());
    Some((name.to_owned(), rest[..end].to_owned()))
}

/// Apple's CPU type names (`ARM-64`, `X86-64 (Native)`) as arch names (`arm64`).
pub fn arch_of_code_type(code_type: &str) -> Option<String> {
    let head = code_type.split('(').next().unwrap_or("").trim();
    let arch = match head.to_ascii_uppercase().as_str() {
        "ARM-64" | "ARM64" => "arm64",
        "ARM64E" => "arm64e",
        "ARM-64_32" | "ARM64_32" => "arm64_32",
        "ARM" => "armv7",
        "X86-64" | "X86_64" => "x86_64",
        "X86" | "I386" => "x86",
        "" => return None,
        _ => return Some(head.to_ascii_lowercase()),
    };
    Some(arch.to_owned())
}

/// A UUID in any of Apple's spellings (`11ce3f57…` without dashes, upper case) as
/// lowercase and hyphenated; `None` for the all-zero UUID Apple writes for unknown
/// images, and for anything that is not a UUID.
pub fn debug_id(text: &str) -> Option<String> {
    let hex: String = text
        .trim()
        .trim_matches(|c| c == '<' || c == '>')
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    if hex.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// `2026-03-17 22:50:41.6409 -0700` → `2026-03-17T22:50:41.6409-07:00`. Returns the
/// text unchanged when it is not in Apple's shape, so nothing is lost.
pub fn timestamp(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut parts = text.split_whitespace();
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return Some(text.to_owned());
    };
    let zone = parts.next();
    let shaped = date.len() == 10
        && date.as_bytes()[4] == b'-'
        && time.len() >= 8
        && time.as_bytes()[2] == b':';
    if !shaped {
        return Some(text.to_owned());
    }
    let zone = match zone {
        Some(z) if z.len() == 5 && z.is_ascii() && (z.starts_with('+') || z.starts_with('-')) => {
            format!("{}:{}", &z[..3], &z[3..])
        }
        Some("Z") | Some("UTC") | Some("GMT") => "Z".to_owned(),
        Some(_) | None => String::new(),
    };
    Some(format!("{date}T{time}{zone}"))
}

/// Whether a `Version: A (B)` line is `build (version)`: the order iOS 13-era and
/// older reports used, before iOS 15 switched to `version (build)`. Decided from the
/// OS, falling back to the shape of the two numbers.
pub fn version_line_is_build_first(os: &OsInfo, outer: &str, inner: &str) -> bool {
    let major = os
        .version
        .as_deref()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    let name = os.name.as_deref().unwrap_or("");
    if let Some(major) = major {
        let is_mac = name.contains("Mac") || name.contains("macOS");
        return if is_mac {
            // macOS 12 moved to the new order with iOS 15; 10.x is old.
            major < 12
        } else {
            major < 15
        };
    }
    // `1 (1.0)`: a bare build number outside, a dotted version inside.
    !outer.contains('.') && inner.contains('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_versions_split_into_name_version_build() {
        let os = os_info("iPhone OS 26.3.1 (23D8133)");
        assert_eq!(os.name.as_deref(), Some("iPhone OS"));
        assert_eq!(os.version.as_deref(), Some("26.3.1"));
        assert_eq!(os.build.as_deref(), Some("23D8133"));
        let os = os_info("iPhone OS 17.1");
        assert_eq!(
            (os.name.as_deref(), os.version.as_deref(), os.build),
            (Some("iPhone OS"), Some("17.1"), None)
        );
    }

    #[test]
    fn uuids_and_times_are_normalised() {
        assert_eq!(
            debug_id("<11ce3f5762643e8d8a8986894d83b974>").as_deref(),
            Some("11ce3f57-6264-3e8d-8a89-86894d83b974")
        );
        assert_eq!(debug_id("00000000-0000-0000-0000-000000000000"), None);
        assert_eq!(
            timestamp("2026-03-17 22:50:41.6409 -0700").as_deref(),
            Some("2026-03-17T22:50:41.6409-07:00")
        );
        assert_eq!(
            arch_of_code_type("ARM-64 (Native)").as_deref(),
            Some("arm64")
        );
    }

    #[test]
    fn version_order_follows_the_os() {
        let ios13 = os_info("iPhone OS 13.5 (17F75)");
        let ios26 = os_info("iPhone OS 26.3.1 (23D8133)");
        assert!(version_line_is_build_first(&ios13, "1", "1.0"));
        assert!(!version_line_is_build_first(&ios26, "1.0.0", "5"));
        assert!(version_line_is_build_first(&OsInfo::default(), "7", "2.1"));
    }
}
