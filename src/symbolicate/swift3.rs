//! Swift 3's mangling (`_T…` without the `0` of Swift 4, before `$s`), which
//! `symbolic-demangle` no longer reads but apps built with Xcode 8 still carry, like the
//! corpus's CrashProbe (`_TToFC11CrashLibiOS13CRLCrashSwift5crashfT_T_`).
//!
//! Only what a crash report shows is produced, in the shape the newer manglings
//! demangle to with parameters and no types or module: `@objc CRLCrashSwift.crash()`,
//! `CRLCrashSwift.title.getter`, `closure #1 in static SwiftHelper.sendEvents(from:)`.
//! Anything outside that subset returns `None`, and the caller keeps the raw name.

/// Demangles a Swift 3 symbol (`_T…` or `__T…`).
pub fn demangle(raw: &str) -> Option<String> {
    // Mach-O symbol tables add a leading underscore (`__T…`); DWARF names do not.
    let raw = if raw.starts_with("__T") {
        &raw[1..]
    } else {
        raw
    };
    let mut rest = raw.strip_prefix("_T")?;
    if rest.starts_with('0') {
        // Swift 4 (`_T0`) is the demangler's business, not ours.
        return None;
    }
    let mut prefix = String::new();
    loop {
        if let Some(r) = rest.strip_prefix("To") {
            prefix.push_str("@objc ");
            rest = r;
        } else if let Some(r) = rest.strip_prefix("PA__T") {
            prefix.push_str("partial apply for ");
            rest = r;
        } else if rest.starts_with("TS") {
            // Specializations: `TTSf4gs_n___TF…`; the specialized entity follows `__T`.
            let at = rest.find("__T")?;
            prefix.push_str("specialized ");
            rest = &rest[at + 3..];
        } else {
            break;
        }
    }
    let mut parser = Parser {
        s: rest.as_bytes(),
        pos: 0,
    };
    let entity = parser.entity()?;
    Some(format!("{prefix}{entity}"))
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn number(&mut self) -> Option<usize> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        std::str::from_utf8(&self.s[start..self.pos])
            .ok()?
            .parse()
            .ok()
    }

    fn identifier(&mut self) -> Option<String> {
        if self.eat(b'o') {
            // Operator names: `oi`/`op`/`oP` then a length-prefixed operator code.
            self.next()?;
        }
        let len = self.number()?;
        let end = self.pos.checked_add(len)?;
        let bytes = self.s.get(self.pos..end)?;
        self.pos = end;
        String::from_utf8(bytes.to_vec()).ok()
    }

    /// A module, or a nominal type or function that contains the entity. Returns the
    /// printable path (modules are not printed, as with the newer manglings).
    fn context(&mut self) -> Option<String> {
        match self.peek()? {
            b's' => {
                self.pos += 1;
                Some(String::new())
            }
            b'S' => {
                self.pos += 1;
                match self.next()? {
                    b's' | b'o' | b'C' => Some(String::new()),
                    _ => None,
                }
            }
            b'C' | b'V' | b'O' | b'P' => {
                self.pos += 1;
                let outer = self.context()?;
                let name = self.identifier()?;
                Some(join(&outer, &name))
            }
            b'F' | b'Z' => self.entity(),
            b'0'..=b'9' => {
                self.identifier()?;
                Some(String::new())
            }
            _ => None,
        }
    }

    /// `[Z] F context entity-name`
    fn entity(&mut self) -> Option<String> {
        let is_static = self.eat(b'Z');
        if !self.eat(b'F') {
            return None;
        }
        let context = self.context()?;
        let static_prefix = if is_static { "static " } else { "" };
        let name = match self.peek()? {
            b'c' | b'C' => {
                self.pos += 1;
                let params = self.params();
                format!("{}{}", join(&context, "init"), params.unwrap_or_default())
            }
            b'D' => {
                self.pos += 1;
                join(&context, "__deallocating_deinit")
            }
            b'd' => {
                self.pos += 1;
                join(&context, "deinit")
            }
            accessor @ (b'g' | b's' | b'm' | b'w' | b'W') => {
                self.pos += 1;
                let property = self.identifier()?;
                let kind = match accessor {
                    b'g' => "getter",
                    b's' => "setter",
                    b'm' => "materializeForSet",
                    b'w' => "willset",
                    _ => "didset",
                };
                format!("{}.{kind}", join(&context, &property))
            }
            b'U' | b'u' => {
                // A closure in `context`: `U_` is the first, `U0_` the second…
                self.pos += 1;
                let index = if self.eat(b'_') {
                    1
                } else {
                    let n = self.number()?;
                    if !self.eat(b'_') {
                        return None;
                    }
                    n + 2
                };
                return Some(format!("closure #{index} in {context}"));
            }
            _ => {
                let name = self.identifier()?;
                let params = self.params();
                format!("{}{}", join(&context, &name), params.unwrap_or_default())
            }
        };
        Some(format!("{static_prefix}{name}"))
    }

    /// The argument labels of a function type: `fT4fromCSo16UIViewController_T_` →
    /// `(from:)`, `fT_T_` → `()`, `fSiT_` → `(_:)`.
    fn params(&mut self) -> Option<String> {
        if !(self.eat(b'f') || self.eat(b'F')) {
            return None;
        }
        let labels = if self.eat(b'T') {
            let mut labels = Vec::new();
            while !self.eat(b'_') {
                let label = if self.peek()?.is_ascii_digit() {
                    self.identifier()?
                } else {
                    "_".to_owned()
                };
                self.skip_type()?;
                labels.push(label);
            }
            labels
        } else {
            self.skip_type()?;
            vec!["_".to_owned()]
        };
        self.skip_type()?;
        Some(format!(
            "({})",
            labels.iter().map(|l| format!("{l}:")).collect::<String>()
        ))
    }

    fn skip_type(&mut self) -> Option<()> {
        match self.next()? {
            b'T' => {
                while !self.eat(b'_') {
                    if self.peek()?.is_ascii_digit() {
                        self.identifier()?;
                    }
                    self.skip_type()?;
                }
            }
            b'S' => match self.next()? {
                b'_' => {}
                b'0'..=b'9' => {
                    self.pos -= 1;
                    self.number()?;
                    if !self.eat(b'_') {
                        return None;
                    }
                }
                b'a' | b'b' | b'c' | b'd' | b'f' | b'i' | b'P' | b'p' | b'q' | b'Q' | b'S'
                | b'u' | b'V' | b'v' => {}
                _ => return None,
            },
            b'C' | b'V' | b'O' => {
                self.context()?;
                self.identifier()?;
            }
            b'P' => {
                // Protocol composition `P…_` (`P_` is Any).
                while !self.eat(b'_') {
                    self.context()?;
                    self.identifier()?;
                }
            }
            b'G' => {
                self.skip_type()?;
                while !self.eat(b'_') {
                    self.skip_type()?;
                }
            }
            b'F' | b'f' => {
                self.skip_type()?;
                self.skip_type()?;
            }
            b'R' | b'M' => self.skip_type()?,
            b'x' => {}
            b'q' => {
                if !self.eat(b'_') {
                    self.number()?;
                    if !self.eat(b'_') {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        Some(())
    }
}

fn join(context: &str, name: &str) -> String {
    if context.is_empty() {
        name.to_owned()
    } else {
        format!("{context}.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::demangle;

    #[test]
    fn the_corpus_swift3_names() {
        for (raw, want) in [
            (
                "_TToFC11CrashLibiOS13CRLCrashSwift5crashfT_T_",
                "@objc CRLCrashSwift.crash()",
            ),
            (
                "__TFC11CrashLibiOS13CRLCrashSwift5crashfT_T_",
                "CRLCrashSwift.crash()",
            ),
            ("__TFC11CrashLibiOS13CRLCrashSwiftD", "CRLCrashSwift.__deallocating_deinit"),
            ("__TFC11CrashLibiOS13CRLCrashSwiftcfT_S0_", "CRLCrashSwift.init()"),
            ("__TFC11CrashLibiOS13CRLCrashSwiftg5titleSS", "CRLCrashSwift.title.getter"),
            (
                "__TToZFC13CrashProbeiOS11SwiftHelper10sendEventsfT4fromCSo16UIViewController_T_",
                "@objc static SwiftHelper.sendEvents(from:)",
            ),
            (
                "__TFZFC13CrashProbeiOS11SwiftHelper10sendEventsFT4fromCSo16UIViewController_T_U_FRC11SentrySwift5EventT_",
                "closure #1 in static SwiftHelper.sendEvents(from:)",
            ),
            (
                "__TFVs11_StringCore15reserveCapacityfSiT_",
                "_StringCore.reserveCapacity(_:)",
            ),
        ] {
            assert_eq!(demangle(raw).as_deref(), Some(want), "{raw}");
        }
        assert_eq!(demangle("_TouchTrackerInstall"), None);
        assert_eq!(demangle("_T0"), None);
        assert_eq!(demangle("__TMC11CrashLibiOS13CRLCrashSwift"), None);
    }
}
