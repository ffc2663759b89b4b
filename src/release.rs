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

/// A Sentry release (`com.example.app@1.2.0+42`, as sentry-cocoa names one) as
/// crashbox names it (`com.example.app 1.2.0 (42)`); `None` when it is not of that
/// shape or not a valid release name.
pub fn from_sentry(release: &str) -> Option<String> {
    let (package, rest) = release.trim().split_once('@')?;
    let name = match rest.split_once('+') {
        Some((version, build)) => format!("{package} {version} ({build})"),
        None => format!("{package} {rest}"),
    };
    // `validate` wants a build; a release without one is still a name we keep.
    match validate(&name) {
        Ok(valid) => Some(valid.to_owned()),
        Err(_) if !rest.contains('+') && parse(&name).is_some_and(|r| r.app.is_some()) => {
            (name.len() <= MAX_RELEASE_LEN && !name.chars().any(char::is_control)).then_some(name)
        }
        Err(_) => None,
    }
}

/// A release name in its parts: `bundle version (build)`, `version (build)`, or a bare
/// `bundle version` / `version` as a report without a build number gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseName<'a> {
    pub app: Option<&'a str>,
    pub version: &'a str,
    pub build: Option<&'a str>,
}

/// Splits a release name into app, version and build; `None` when it has no version.
pub fn parse(name: &str) -> Option<ReleaseName<'_>> {
    let name = name.trim();
    let (head, build) = match name.strip_suffix(')').and_then(|r| r.rsplit_once(" (")) {
        Some((head, build)) => (head, Some(build)),
        None => (name, None),
    };
    let mut words = head.split(' ').filter(|w| !w.is_empty());
    let first = words.next()?;
    match (words.next(), words.next()) {
        (None, _) => Some(ReleaseName {
            app: None,
            version: first,
            build,
        }),
        (Some(version), None) => Some(ReleaseName {
            app: Some(first),
            version,
            build,
        }),
        _ => None,
    }
}

/// A text key whose byte order is DESIGN.md's release order: `version` as
/// dot-separated parts, numeric parts as numbers, a missing part as 0, non-numeric
/// parts as strings after numeric ones; then `build` the same way. Stored beside each
/// release so SQL can order and compare releases.
///
/// Each part is `N`, two digits of length and the number without leading zeros, or
/// `S` and the text (`N` < `S`: numbers first); parts are joined by `\u{2}` and
/// trailing zero parts dropped (so `1.2` = `1.2.0`); version and build are joined by
/// `\u{1}`. Both separators sort below every character a release name may hold
/// (`validate` refuses control characters), so a shorter part or version ends first:
/// `1.x.1` < `1.x-y` because `x` < `x-y`.
pub fn sort_key(version: &str, build: Option<&str>) -> String {
    let mut key = dotted_key(version);
    key.push('\u{1}');
    key.push_str(&dotted_key(build.unwrap_or("")));
    key
}

/// What a release row keeps of its name: app ("" when none), version, build and order
/// key; all but the app `None` for a name that does not parse.
pub fn columns(name: &str) -> (&str, Option<&str>, Option<&str>, Option<String>) {
    match parse(name) {
        Some(r) => (
            r.app.unwrap_or(""),
            Some(r.version),
            r.build,
            Some(sort_key(r.version, r.build)),
        ),
        None => ("", None, None, None),
    }
}

/// [`sort_key`] of a full release name; `None` when it does not parse.
pub fn sort_key_of(name: &str) -> Option<String> {
    parse(name).map(|r| sort_key(r.version, r.build))
}

fn dotted_key(text: &str) -> String {
    let mut parts: Vec<String> = text
        .split('.')
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                let digits = part.trim_start_matches('0');
                // 99 digits is far past any real version; longer ones compare by prefix.
                let digits = &digits[..digits.len().min(99)];
                format!("N{:02}{digits}", digits.len())
            } else {
                format!("S{part}")
            }
        })
        .collect();
    while parts.last().is_some_and(|p| p == "N00" || p == "S") {
        parts.pop();
    }
    parts.join("\u{2}")
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

    #[test]
    fn releases_order_by_version_then_build() {
        let ordered = [
            ("0.9", Some("100")),
            ("1", Some("1")),
            ("1.0.0", Some("2")),
            ("1.2", Some("1")),
            ("1.2.0", Some("9")),
            ("1.2.0", Some("10")),
            ("1.2.1", None),
            ("1.2.1", Some("1")),
            ("1.2.a", Some("1")),
            ("1.10", Some("1")),
            ("2.0-beta", Some("1")),
            ("10.0", Some("0")),
        ];
        for pair in ordered.windows(2) {
            let (a, b) = (
                sort_key(pair[0].0, pair[0].1),
                sort_key(pair[1].0, pair[1].1),
            );
            assert!(a < b, "{:?} < {:?}: {a:?} vs {b:?}", pair[0], pair[1]);
        }
        assert_eq!(sort_key("1.2", Some("3")), sort_key("1.2.0", Some("3.0")));
        // Text parts compare whole, whatever characters they hold.
        assert!(sort_key("1.x.1", Some("1")) < sort_key("1.x-y", Some("1")));
        assert!(sort_key("2.0-rc.1", None) < sort_key("2.0-rc-2", None));
    }

    #[test]
    fn sentry_releases_become_crashbox_names() {
        assert_eq!(
            from_sentry("com.example.app@1.2.0+42").as_deref(),
            Some("com.example.app 1.2.0 (42)")
        );
        assert_eq!(
            from_sentry("com.example.app@1.2.0").as_deref(),
            Some("com.example.app 1.2.0")
        );
        assert_eq!(from_sentry("1.2.0"), None);
        assert_eq!(from_sentry("a b@1+2"), None);
    }

    #[test]
    fn release_names_split_into_app_version_build() {
        let r = parse("com.outofbox.app 1.2.0 (42)").unwrap();
        assert_eq!(
            (r.app, r.version, r.build),
            (Some("com.outofbox.app"), "1.2.0", Some("42"))
        );
        let r = parse("1.2.0 (42)").unwrap();
        assert_eq!((r.app, r.version, r.build), (None, "1.2.0", Some("42")));
        let r = parse("app 2.0").unwrap();
        assert_eq!((r.app, r.version, r.build), (Some("app"), "2.0", None));
        assert!(parse("").is_none());
        assert!(parse("a b c (1)").is_none());
    }
}
