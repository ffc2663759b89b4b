//! Grouping rules as data: which frames are never a crash site (`skip`, `keep`) and
//! which images are the app's own (`app`, `system`). The format is described in
//! `default.rules` and docs/grouping.md.

use std::collections::BTreeSet;
use std::path::Path;

use sha2::{Digest, Sha256};

/// The built-in rules; a user file extends them.
const DEFAULTS: &str = include_str!("default.rules");

/// Bumped whenever `sign` changes what it produces for the same input, so that the
/// fingerprint changes and stored crashes are signed again.
const ALGORITHM: &str = "crashbox-grouping 1";

/// Why a rules file was refused.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A line that does not parse.
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
}

impl RulesError {
    /// A stable machine-readable code, as the other library errors have.
    pub fn code(&self) -> &'static str {
        match self {
            RulesError::Syntax { .. } => "invalid_grouping_rules",
            RulesError::Read { .. } => "unreadable_grouping_rules",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Skip,
    Keep,
    App,
    System,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Matcher {
    Function,
    Image,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    action: Action,
    matcher: Matcher,
    pattern: String,
}

/// The effective grouping rules: the defaults plus whatever a user file added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Sorted and without repeats: order and comments mean nothing, so they do not
    /// change the fingerprint either.
    rules: BTreeSet<Rule>,
}

impl Rules {
    /// The built-in defaults alone.
    pub fn builtin() -> Rules {
        let mut rules = Rules {
            rules: BTreeSet::new(),
        };
        rules
            .add("<builtin>", DEFAULTS)
            .expect("the built-in grouping rules parse");
        rules
    }

    /// The defaults plus the lines of `text`.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        Self::parse_named("<rules>", text)
    }

    /// The defaults plus the lines of the file at `path`.
    pub fn load(path: &Path) -> Result<Rules, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse_named(&file, &text)
    }

    fn parse_named(file: &str, text: &str) -> Result<Rules, RulesError> {
        let mut rules = Rules::builtin();
        rules.add(file, text)?;
        Ok(rules)
    }

    fn add(&mut self, file: &str, text: &str) -> Result<(), RulesError> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rule = parse_line(line).map_err(|message| RulesError::Syntax {
                file: file.to_owned(),
                line: number + 1,
                message,
            })?;
            self.rules.insert(rule);
        }
        Ok(())
    }

    /// A stable hex hash of the effective rules (and of the signing algorithm's
    /// version): when it changes, stored crashes need signing again.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(ALGORITHM.as_bytes());
        hash.update(b"\n");
        for rule in &self.rules {
            hash.update(format!("{}\n", rule.canonical()).as_bytes());
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// Whether a frame with this normalized function name (if any) in this image (if
    /// known) is never a crash site.
    pub(super) fn skips(&self, function: Option<&str>, image: Option<&str>) -> bool {
        let hit = |action: Action| {
            self.rules.iter().any(|r| {
                r.action == action
                    && match r.matcher {
                        Matcher::Function => function.is_some_and(|f| glob(&r.pattern, f)),
                        Matcher::Image => image.is_some_and(|i| glob(&r.pattern, i)),
                    }
            })
        };
        hit(Action::Skip) && !hit(Action::Keep)
    }

    /// Whether frames of this image are the app's own, given what symbolication
    /// decided (`in_app`).
    pub(super) fn in_app(&self, image: Option<&str>, in_app: bool) -> bool {
        let Some(image) = image else {
            return in_app;
        };
        let hit = |action: Action| {
            self.rules.iter().any(|r| {
                r.action == action && r.matcher == Matcher::Image && glob(&r.pattern, image)
            })
        };
        if hit(Action::System) {
            false
        } else {
            in_app || hit(Action::App)
        }
    }
}

impl Rule {
    fn canonical(&self) -> String {
        let action = match self.action {
            Action::Skip => "skip",
            Action::Keep => "keep",
            Action::App => "app",
            Action::System => "system",
        };
        let matcher = match self.matcher {
            Matcher::Function => "function",
            Matcher::Image => "image",
        };
        format!("{action} {matcher}:{}", self.pattern)
    }
}

/// `skip function:MyLogger*` → a rule, or what is wrong with the line.
fn parse_line(line: &str) -> Result<Rule, String> {
    let (action, rest) = line
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("expected `<action> <matcher>:<pattern>`, found `{line}`"))?;
    let action = match action {
        "skip" => Action::Skip,
        "keep" => Action::Keep,
        "app" => Action::App,
        "system" => Action::System,
        other => {
            return Err(format!(
                "unknown action `{other}` (expected skip, keep, app or system)"
            ))
        }
    };
    let (matcher, pattern) = rest
        .trim_start()
        .split_once(':')
        .ok_or_else(|| "expected `function:<pattern>` or `image:<pattern>`".to_owned())?;
    let matcher = match matcher.trim() {
        "function" => Matcher::Function,
        "image" => Matcher::Image,
        other => {
            return Err(format!(
                "unknown matcher `{other}` (expected function or image)"
            ))
        }
    };
    if matches!(action, Action::App | Action::System) && matcher != Matcher::Image {
        return Err("`app` and `system` take `image:<pattern>`".to_owned());
    }
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err("empty pattern".to_owned());
    }
    Ok(Rule {
        action,
        matcher,
        pattern: pattern.to_owned(),
    })
}

/// Whole-string glob match: `*` is any run of characters, `?` exactly one; anything
/// else matches itself. Linear backtracking on the last `*`, no recursion.
fn glob(pattern: &str, text: &str) -> bool {
    // Bytes, not chars: no allocation per match (this runs for every rule and frame).
    // `?` then matches one byte; names are ASCII in practice.
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob("_dispatch_*", "_dispatch_call_block_and_release"));
        assert!(!glob("_dispatch_*", "dispatch_async"));
        assert!(glob("MyLogger*", "MyLogger"));
        assert!(glob(
            "-[NSAssertionHandler handleFailureIn*",
            "-[NSAssertionHandler handleFailureInFunction:file:lineNumber:description:]"
        ));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(glob("*kill", "__pthread_kill"));
        assert!(!glob("abort", "abort_message"));
        assert!(glob("a*b*c", "axxbyybzc"));
    }

    #[test]
    fn the_builtin_rules_parse_and_skip_the_runtime() {
        let rules = Rules::builtin();
        assert!(rules.skips(Some("objc_exception_throw"), Some("libobjc.A.dylib")));
        assert!(rules.skips(Some("_dispatch_client_callout"), None));
        assert!(rules.skips(None, Some("libsystem_kernel.dylib")));
        assert!(!rules.skips(Some("tr_parse_header"), Some("CrashboxTriage")));
        assert!(!rules.skips(Some("-[__NSCFString characterAtIndex:]"), None));
    }

    #[test]
    fn user_lines_extend_the_defaults() {
        let rules = Rules::parse(
            "# our helpers\n\nskip function:MyLogger*\n  app image:Vendored\nsystem image:ThirdPartySDK\nkeep function:abort\n",
        )
        .unwrap();
        assert!(rules.skips(Some("MyLoggerFail"), None));
        assert!(rules.skips(Some("objc_exception_throw"), None));
        assert!(!rules.skips(Some("abort"), None));
        assert!(rules.in_app(Some("Vendored"), false));
        assert!(!rules.in_app(Some("ThirdPartySDK"), true));
        assert!(rules.in_app(Some("App"), true));
        assert!(!Rules::builtin().skips(Some("MyLoggerFail"), None));
    }

    #[test]
    fn errors_name_the_line_and_what_is_wrong() {
        let cases = [
            (
                "skip function:a\nskipp function:b",
                2,
                "unknown action `skipp`",
            ),
            ("# c\n\nskip func:x", 3, "unknown matcher `func`"),
            ("skip function:", 1, "empty pattern"),
            ("skip", 1, "expected `<action> <matcher>:<pattern>`"),
            ("skip function_x", 1, "expected `function:<pattern>`"),
            (
                "app function:x",
                1,
                "`app` and `system` take `image:<pattern>`",
            ),
        ];
        for (text, line, message) in cases {
            let err = Rules::parse(text).unwrap_err();
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("<rules>:{line}: {message}")),
                "{text:?}: {shown}"
            );
            assert_eq!(err.code(), "invalid_grouping_rules");
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grouping.rules");
        std::fs::write(&path, "skip function:MyLogger*\nbogus\n").unwrap();
        let err = Rules::load(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: expected `<action> <matcher>:<pattern>`, found `bogus`",
                path.display()
            )
        );
        let missing = Rules::load(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.code(), "unreadable_grouping_rules");
        assert!(missing.to_string().contains("nope"), "{missing}");
        std::fs::write(&path, "skip function:MyLogger*\n").unwrap();
        assert_eq!(
            Rules::load(&path).unwrap(),
            Rules::parse("skip function:MyLogger*").unwrap()
        );
    }

    #[test]
    fn the_fingerprint_follows_the_effective_rules_only() {
        let builtin = Rules::builtin().fingerprint();
        assert_eq!(builtin.len(), 32);
        assert!(builtin.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(builtin, Rules::builtin().fingerprint());
        // Comments, blank lines, order and repeats change nothing.
        assert_eq!(
            builtin,
            Rules::parse("# nothing\n\n").unwrap().fingerprint()
        );
        assert_eq!(
            builtin,
            Rules::parse("skip function:abort").unwrap().fingerprint()
        );
        let a = Rules::parse("skip function:A*\nskip function:B*").unwrap();
        let b = Rules::parse("skip function:B*\n# x\nskip function:A*\nskip function:A*").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), builtin);
    }
}
