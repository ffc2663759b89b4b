//! Making names and reasons stable across builds and devices: function names lose
//! what a rebuild or an optimizer changes (addresses, argument lists, template and
//! generic arguments, closure/block/lambda numbers, `.cold` clones); exception reasons
//! lose what differs per crash (numbers, addresses, quoted strings).

use std::sync::LazyLock;

use regex::Regex;

/// Longest normalized name or reason kept: signatures are index keys and listing text.
const MAX_PART: usize = 512;

/// The stable form of a function name, as signatures show it.
///
/// `crashbox::accumulate<int>(cb_record const*, unsigned long, int)` →
/// `crashbox::accumulate`; `closure #2 in MyApp.Feed.load(page:)` →
/// `closure in MyApp.Feed.load`; `__41-[Feed load:]_block_invoke_2` →
/// `__41-[Feed load:]_block_invoke`; `tr_parse.cold.1` → `tr_parse`.
/// Objective-C method names (`-[Class selector:]`) are kept as they are.
pub fn function(name: &str) -> String {
    static OFFSET: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\s+\+\s*(0x[0-9a-fA-F]+|\d+)\s*$").unwrap());
    static IN_IMAGE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+\(in [^)]*\)$").unwrap());
    static CLONE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"\s*\[clone [^\]]*\]|\.(cold|part|isra|constprop|llvm)(\.\d+)*").unwrap()
    });
    static NUMBERING: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(closure|lambda) #\d+|(_block_invoke)_\d+|(\$_)\d+|\{(lambda)\([^)]*\)#\d+\}|'(lambda)\d*'").unwrap()
    });
    static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").unwrap());
    // Seen after the groups are gone: `generic specialization <Swift.Int> of f` is
    // `generic specialization of f` by then, whatever its arguments nested.
    static SWIFT_PREFIX: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"^((generic |function signature )?specialization of |specialized |partial apply for |merged |@objc |static )+",
        )
        .unwrap()
    });
    // A Swift result type (`-> ()`, `-> Swift.Int`); `operator->` has no space before.
    static ARROW: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\s+->\s*([\w.?!:\[\]]*)").unwrap());
    static QUALIFIER: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"(\s+(const|volatile|noexcept)|\s*&&?)+$").unwrap());

    let name = OFFSET.replace(name.trim(), "");
    let name = IN_IMAGE.replace(&name, "");
    let name = CLONE.replace_all(&name, "");
    let name = NUMBERING.replace_all(&name, |c: &regex::Captures| {
        // Whichever alternative matched, keep its word and drop the number.
        (1..=5)
            .find_map(|i| c.get(i))
            .map_or(String::new(), |m| match m.as_str() {
                "lambda" if c[0].starts_with('{') => "{lambda}".to_owned(),
                "lambda" if c[0].starts_with('\'') => "'lambda'".to_owned(),
                word => word.to_owned(),
            })
    });
    let name = strip_groups(&name);
    let name = SPACES.replace_all(name.trim(), " ");
    let name = SWIFT_PREFIX.replace(&name, "");
    // `closure -> in f` (the closure's type gone) keeps its `in`.
    let name = ARROW.replace_all(&name, |c: &regex::Captures| {
        if &c[1] == "in" { " in" } else { "" }.to_owned()
    });
    let name = QUALIFIER.replace(&name, "");
    let name = SPACES.replace_all(name.trim().trim_start_matches(':'), " ");
    cut(name.into_owned())
}

/// Drops balanced `(…)` and `<…>` groups (argument lists, template and generic
/// arguments), except inside an Objective-C method's brackets and in the name of a
/// C++ operator (`operator()`, `operator<<`). `->` is an arrow, never a closing `>`.
fn strip_groups(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest = &chars[i..];
        if depth == 0 && starts_with(rest, "operator") {
            // Copy the operator's own symbol, then carry on as usual.
            out.push_str("operator");
            i += "operator".len();
            if starts_with(&chars[i..], "()") || starts_with(&chars[i..], "[]") {
                out.extend(&chars[i..i + 2]);
                i += 2;
            } else {
                while i < chars.len() && "<>=!+-*/%^&|~,".contains(chars[i]) {
                    out.push(chars[i]);
                    i += 1;
                }
            }
            continue;
        }
        if starts_with(rest, "->") {
            if depth == 0 {
                out.push_str("->");
            }
            i += 2;
            continue;
        }
        // `-[Class selector:]`, `+[…]`, also after a block's `__41` prefix.
        if depth == 0 && c == '[' && out.ends_with(['-', '+']) {
            let close = rest
                .iter()
                .position(|&c| c == ']')
                .map_or(chars.len(), |p| i + p + 1);
            out.extend(&chars[i..close]);
            i = close;
            continue;
        }
        match c {
            '(' | '<' => depth += 1,
            ')' | '>' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        i += 1;
    }
    out
}

fn starts_with(chars: &[char], word: &str) -> bool {
    let mut rest = chars.iter();
    word.chars().all(|w| rest.next() == Some(&w))
}

/// An exception reason split into the Objective-C method it names, if it starts with
/// one (`*** -[__NSArrayM objectAtIndex:]: index 5 …`), and the rest with its
/// per-crash details replaced by placeholders: `index <n> beyond bounds [<n> .. <n>]`.
/// The runtime's `*** Terminating app due to uncaught exception 'X', reason: '…'`
/// wrapper (`.ips`'s composed message) is unwrapped first.
pub fn reason(text: &str) -> (Option<String>, String) {
    static METHOD: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^([-+]\[[^\]\s]+ [^\]]+\])\s*:?\s*").unwrap());
    static QUOTED: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(^|[\s(\[{:=,])('[^'\n]*'|"[^"\n]*"|‘[^’\n]*’|“[^”\n]*”)"#).unwrap()
    });
    static UUID: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        )
        .unwrap()
    });
    static HEX: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b0[xX][0-9a-fA-F]+\b").unwrap());
    static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\b\d+(\.\d+)?\b").unwrap());
    static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").unwrap());

    let inner = crate::report::uncaught_exception(text).map(|(_, reason)| reason);
    let text = inner.as_deref().unwrap_or(text).trim();
    let text = text.trim_start_matches('*').trim_start();
    let (method, rest) = match METHOD.captures(text) {
        Some(c) => (Some(c[1].to_owned()), &text[c[0].len()..]),
        None => (None, text),
    };
    let rest = QUOTED.replace_all(rest, "$1<str>");
    let rest = UUID.replace_all(&rest, "<uuid>");
    let rest = HEX.replace_all(&rest, "<addr>");
    let rest = NUMBER.replace_all(&rest, "<n>");
    let rest = SPACES.replace_all(rest.trim(), " ");
    (method.map(cut), cut(rest.into_owned()))
}

/// `text` cut to [`MAX_PART`] bytes on a character boundary.
fn cut(mut text: String) -> String {
    if text.len() > MAX_PART {
        let mut at = MAX_PART;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_names_lose_arguments_templates_and_qualifiers() {
        for (raw, normalized) in [
            (
                "crashbox::accumulate<int>(cb_record const*, unsigned long, int)",
                "crashbox::accumulate",
            ),
            (
                "crashbox::Pipeline<double>::drain()",
                "crashbox::Pipeline::drain",
            ),
            (
                "std::__1::vector<int, std::__1::allocator<int>>::at(unsigned long) const",
                "std::__1::vector::at",
            ),
            ("Foo::operator()(int) const", "Foo::operator()"),
            ("operator<<(std::ostream&, Foo const&)", "operator<<"),
            ("Foo::operator<(Foo const&) const", "Foo::operator<"),
            ("Foo::operator[](unsigned long)", "Foo::operator[]"),
            ("Foo::operator->() const", "Foo::operator->"),
            (
                "void foo<int>(int)::$_3::operator()() const",
                "void foo::$_::operator()",
            ),
            (
                "foo()::{lambda(int)#2}::operator()(int) const",
                "foo::{lambda}::operator()",
            ),
            (
                "foo()::'lambda0'(int)::operator()(int) const",
                "foo::'lambda'::operator()",
            ),
            ("tr_parse_header.cold.1", "tr_parse_header"),
            ("tr_parse_header.cold", "tr_parse_header"),
            ("parse(char const*) [clone .cold.2]", "parse"),
            ("helper.llvm.1234567", "helper"),
            ("cb_read_field + 12", "cb_read_field"),
            ("__pthread_kill + 0x8", "__pthread_kill"),
            ("main (in CrashboxFixture)", "main"),
            ("cb_process_record", "cb_process_record"),
        ] {
            assert_eq!(function(raw), normalized, "{raw}");
        }
    }

    #[test]
    fn swift_names_lose_generics_specializations_and_closure_numbers() {
        for (raw, normalized) in [
            ("MyApp.Feed.load(page:) -> ()", "MyApp.Feed.load"),
            ("MyApp.Box<A>.get() -> A", "MyApp.Box.get"),
            (
                "generic specialization <Swift.Int> of MyApp.Box<A>.get() -> A",
                "MyApp.Box.get",
            ),
            ("specialized MyApp.Box<A>.get() -> A", "MyApp.Box.get"),
            (
                "closure #1 (Swift.Int) -> () in MyApp.Feed.load(page:) -> ()",
                "closure in MyApp.Feed.load",
            ),
            (
                "closure #12 in MyApp.Feed.load(page:)",
                "closure in MyApp.Feed.load",
            ),
            (
                "implicit closure #2 in closure #1 in MyApp.Feed.load(page:)",
                "implicit closure in closure in MyApp.Feed.load",
            ),
            (
                "partial apply for closure #3 in MyApp.Feed.load(page:)",
                "closure in MyApp.Feed.load",
            ),
            (
                "@objc MyApp.ViewController.tap(_:)",
                "MyApp.ViewController.tap",
            ),
            (
                "(extension in MyApp):Swift.Array<A>.safe(at:)",
                "Swift.Array.safe",
            ),
        ] {
            assert_eq!(function(raw), normalized, "{raw}");
        }
    }

    #[test]
    fn objc_methods_and_blocks_keep_their_selectors() {
        for (raw, normalized) in [
            (
                "-[CBChallengeViewController loadChallenge:]",
                "-[CBChallengeViewController loadChallenge:]",
            ),
            (
                "+[NSException raise:format:]",
                "+[NSException raise:format:]",
            ),
            (
                "-[NSObject(NSObject) doesNotRecognizeSelector:]",
                "-[NSObject(NSObject) doesNotRecognizeSelector:]",
            ),
            (
                "__41-[Feed load:]_block_invoke_2",
                "__41-[Feed load:]_block_invoke",
            ),
            (
                "__41-[Feed load:]_block_invoke",
                "__41-[Feed load:]_block_invoke",
            ),
            ("__tr_fire_block_invoke_13", "__tr_fire_block_invoke"),
            ("-[Feed load:] + 88", "-[Feed load:]"),
        ] {
            assert_eq!(function(raw), normalized, "{raw}");
        }
    }

    #[test]
    fn reasons_get_placeholders_and_name_their_method() {
        for (raw, method, rest) in [
            (
                "*** -[__NSCFString characterAtIndex:]: index 5 beyond bounds [0 .. 2]",
                Some("-[__NSCFString characterAtIndex:]"),
                "index <n> beyond bounds [<n> .. <n>]",
            ),
            (
                "*** Terminating app due to uncaught exception 'NSRangeException', reason: '*** -[__NSCFString characterAtIndex:]: index 17 beyond bounds [0 .. 9]'",
                Some("-[__NSCFString characterAtIndex:]"),
                "index <n> beyond bounds [<n> .. <n>]",
            ),
            (
                "-[__NSCFNumber length]: unrecognized selector sent to instance 0x8c3b2a2000",
                Some("-[__NSCFNumber length]"),
                "unrecognized selector sent to instance <addr>",
            ),
            (
                "*** Collection <__NSArrayM: 0x600003a8c0e0> was mutated while being enumerated.",
                None,
                "Collection <__NSArrayM: <addr>> was mutated while being enumerated.",
            ),
            (
                "Could not load NIB in bundle: 'NSBundle </var/x/App.app> (loaded)' with name 'Feed'",
                None,
                "Could not load NIB in bundle: <str> with name <str>",
            ),
            (
                "Invalid update: invalid number of rows in section 0 (3 != -1); can't go on",
                None,
                "Invalid update: invalid number of rows in section <n> (<n> != -<n>); can't go on",
            ),
            (
                "key 4C4C44CB-5555-3144-A1D2-938BEB5CB6F2 missing",
                None,
                "key <uuid> missing",
            ),
            ("Transaction was already committed", None, "Transaction was already committed"),
        ] {
            let (m, r) = reason(raw);
            assert_eq!(m.as_deref(), method, "{raw}");
            assert_eq!(r, rest, "{raw}");
        }
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        let long = "é".repeat(600);
        let cut = function(&long);
        assert!(cut.len() <= MAX_PART && cut.chars().all(|c| c == 'é'));
    }
}
