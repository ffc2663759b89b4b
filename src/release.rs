//! Release names as clients send them: `bundle version (build)` (DESIGN.md's full
//! name, e.g. `com.outofbox.app 1.2.0 (42)`) or `version (build)`.
//!
//! A release name is stored in indexes and echoed in listings, so one sent by a
//! client is checked here before anything keeps it: bounded, printable, and of the
//! documented shape. A 256 MiB "release" once made every debug-file listing 335 MB.

/// Longest release name, in bytes. Real ones are well under 100.
pub const MAX_RELEASE_LEN: usize = 256;

/// Checks a client-sent release name and returns it trimmed, or says what is wrong.
pub fn validate(release: &str) -> Result<&str, String> {
    let release = release.trim();
    if release.len() > MAX_RELEASE_LEN {
        return Err(format!(
            "a release name is at most {MAX_RELEASE_LEN} bytes, this one is {}",
            release.len()
        ));
    }
    if release.chars().any(|c| c.is_control()) {
        return Err("a release name must not hold control characters".to_owned());
    }
    let shape = || {
        format!("`{release}` is not a release: expected `bundle version (build)` or `version (build)`, e.g. `com.example.app 1.2.0 (42)`")
    };
    let (head, build) = release
        .strip_suffix(')')
        .and_then(|r| r.rsplit_once(" ("))
        .ok_or_else(shape)?;
    let word =
        |w: &str| !w.is_empty() && !w.chars().any(|c| c.is_whitespace() || c == '(' || c == ')');
    let parts: Vec<&str> = head.split(' ').collect();
    if !word(build) || parts.is_empty() || parts.len() > 2 || !parts.iter().all(|p| word(p)) {
        return Err(shape());
    }
    Ok(release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_have_the_documented_shape() {
        for good in [
            "com.outofbox.app 1.2.0 (42)",
            "1.2.0 (42)",
            "  app 2.0 (7) ",
            "io.crashprobe 1.0 (1)",
        ] {
            assert_eq!(validate(good), Ok(good.trim()), "{good}");
        }
        for bad in [
            "",
            "r2",
            "1.2.0",
            "a b c (1)",
            "app 1.0 ()",
            "app 1.0 (1",
            "app  1.0 (1)",
            "app 1.0 (1) x",
            "app\u{0} 1.0 (1)",
            "app 1.0 (1\n)",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        let long = format!("{} 1.0 (1)", "a".repeat(MAX_RELEASE_LEN));
        assert!(validate(&long).unwrap_err().contains("at most"));
    }
}
