//! Identifiers out, before anything is written or logged.
//!
//! Devices send reports full of identifiers: crash reporter keys, vendor ids, incident
//! ids, container UUIDs and user names inside paths, and whatever an app put in an
//! exception message (emails, IPs, tokens). [`scrub`] runs on the parsed
//! [`CrashReport`], the only form crashbox keeps (raw bytes are never stored), and
//! leaves what symbolication and triage need: image UUIDs, load and frame addresses,
//! symbol names, app version and build, OS version, device model, exception type and
//! codes.
//!
//! Two identifiers are turned into keyed hashes rather than dropped: the incident id
//! (so a retried upload is recognised) and the device id (so affected devices can be
//! counted). Both use HMAC-SHA256 with a server secret, so a hash cannot be reversed
//! by hashing candidate ids without that secret.
//!
//! Every rule that fires is counted in a [`ScrubSummary`], which is stored with the
//! crash; the values themselves never are.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::report::CrashReport;

/// Which rules fired, and how often. Never the values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScrubSummary {
    pub rules: BTreeMap<String, u32>,
}

impl ScrubSummary {
    fn hit(&mut self, rule: &str, n: u32) {
        if n > 0 {
            *self.rules.entry(rule.to_owned()).or_default() += n;
        }
    }
}

/// What scrubbing keeps of the identifiers it removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scrubbed {
    /// Keyed hash of the report's incident id, for de-duplication.
    pub incident_hash: Option<String>,
    /// Keyed hash of the device identifier, for counting affected devices.
    pub device_hash: Option<String>,
    pub summary: ScrubSummary,
}

/// Removes identifiers from `report` in place. `secret` keys the hashes.
pub fn scrub(report: &mut CrashReport, secret: &[u8]) -> Scrubbed {
    let mut summary = ScrubSummary::default();
    let incident_hash = report.incident_id.take().map(|id| {
        summary.hit("incident_id", 1);
        keyed_hash(secret, "incident", &id.to_ascii_lowercase())
    });
    let device_hash = report.device_id.take().map(|id| {
        summary.hit("device_id", 1);
        keyed_hash(secret, "device", &id.to_ascii_lowercase())
    });

    for image in &mut report.images {
        if let Some(path) = &mut image.path {
            scrub_path(path, &mut summary);
        }
    }
    let e = &mut report.exception;
    for text in [&mut e.reason, &mut e.name, &mut e.subtype]
        .into_iter()
        .flatten()
    {
        scrub_text(text, &mut summary);
    }
    if let Some(t) = &mut report.termination {
        for reason in &mut t.reasons {
            scrub_text(reason, &mut summary);
        }
        for text in [&mut t.indicator, &mut t.by_process].into_iter().flatten() {
            scrub_text(text, &mut summary);
        }
    }
    for thread in &mut report.threads {
        for text in [&mut thread.name, &mut thread.queue].into_iter().flatten() {
            scrub_text(text, &mut summary);
        }
        for frame in &mut thread.frames {
            if let Some(symbol) = &mut frame.symbol {
                scrub_path(symbol, &mut summary);
            }
        }
    }
    Scrubbed {
        incident_hash,
        device_hash,
        summary,
    }
}

/// HMAC-SHA256 of `value` under `secret`, domain-separated by `purpose`.
pub fn keyed_hash(secret: &[u8], purpose: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(purpose.as_bytes());
    mac.update(b"\0");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

struct Rule {
    name: &'static str,
    pattern: Regex,
    replacement: &'static str,
}

fn rule(name: &'static str, pattern: &str, replacement: &'static str) -> Rule {
    Rule {
        name,
        pattern: Regex::new(pattern).expect("scrub patterns are valid"),
        replacement,
    }
}

/// Rules for paths: identifiers that sit in path components.
fn path_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        const UUID: &str = "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";
        vec![
            rule(
                "container_uuid",
                &format!(r"(/(?:private/)?var/(?:mobile/)?[Cc]ontainers/(?:Bundle|Data|Shared/AppGroup)/(?:Application/)?){UUID}"),
                "${1}<container>",
            ),
            rule("container_uuid", &format!(r"(/Containers/Data/Application/){UUID}"), "${1}<container>"),
            rule("user_name", r"(/(?:Users|home)/)[^/\s]+", "${1}<user>"),
        ]
    })
}

/// Rules for free text: exception messages, thread and queue names.
fn text_rules() -> &'static [Rule] {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(|| {
        vec![
            rule("url_credentials", r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", "${1}<credentials>@"),
            rule("bearer_token", r"(?i)\b(bearer|token|api[_-]?key|secret|password|passwd)(\s*[:=]?\s*)[A-Za-z0-9._~+/=-]{8,}", "${1}${2}<token>"),
            rule("email", r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b", "<email>"),
            rule("ipv6", r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?\b", "<ip>"),
            rule("ipv4", r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b", "<ip>"),
            rule("uuid", r"\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b", "<uuid>"),
            rule("credit_card", r"\b(?:\d[ -]?){12,18}\d\b", "<card>"),
            rule("phone", r"(?:\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}\b", "<phone>"),
            // Long hex or base64 runs are keys and tokens; addresses (0x + 16 digits)
            // stay, as they are what triage reads.
            rule("hex_secret", r"\b[0-9A-Fa-f]{32,}\b", "<secret>"),
            rule("base64_secret", r"\b[A-Za-z0-9+/_-]{40,}={0,2}", "<secret>"),
        ]
    })
}

fn apply(rules: &[Rule], text: &mut String, summary: &mut ScrubSummary) {
    for rule in rules {
        let count = rule.pattern.find_iter(text).count();
        if count > 0 {
            *text = rule
                .pattern
                .replace_all(text, rule.replacement)
                .into_owned();
            summary.hit(rule.name, count as u32);
        }
    }
}

/// Scrubs identifiers out of a path, keeping its shape.
pub fn scrub_path(path: &mut String, summary: &mut ScrubSummary) {
    apply(path_rules(), path, summary);
}

/// Scrubs identifiers out of free text. Paths inside the text are scrubbed too.
pub fn scrub_text(text: &mut String, summary: &mut ScrubSummary) {
    apply(path_rules(), text, summary);
    apply(text_rules(), text, summary);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, want: &str, rule: &str) {
        let mut text = input.to_owned();
        let mut summary = ScrubSummary::default();
        scrub_text(&mut text, &mut summary);
        assert_eq!(text, want, "{input}");
        assert!(summary.rules.contains_key(rule), "{input}: {summary:?}");
    }

    #[test]
    fn free_text_loses_its_identifiers() {
        check(
            "login failed for jane.doe@example.com",
            "login failed for <email>",
            "email",
        );
        check(
            "connect to 192.168.1.20:443 failed",
            "connect to <ip>:443 failed",
            "ipv4",
        );
        check(
            "peer fe80::1c2b:3dff:fe4e:5f60 gone",
            "peer <ip> gone",
            "ipv6",
        );
        check(
            "Authorization: Bearer abcdef0123456789xyz",
            "Authorization: Bearer <token>",
            "bearer_token",
        );
        check(
            "GET https://bob:hunter2@api.example.com/x",
            "GET https://<credentials>@api.example.com/x",
            "url_credentials",
        );
        check(
            "card 4111 1111 1111 1111 declined",
            "card <card> declined",
            "credit_card",
        );
        check("call +1 415-555-0132 now", "call <phone> now", "phone");
        check(
            "key 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "key <secret>",
            "hex_secret",
        );
        check(
            "file /Users/jane/Documents/x.txt",
            "file /Users/<user>/Documents/x.txt",
            "user_name",
        );
    }

    #[test]
    fn triage_data_survives() {
        let mut summary = ScrubSummary::default();
        for text in [
            "KERN_INVALID_ADDRESS at 0x0000800000000099",
            "-[__NSArrayM objectAtIndex:]: index 5 beyond bounds [0 .. 2]",
            "Segmentation fault: 11",
            "com.apple.main-thread",
        ] {
            let mut scrubbed = text.to_owned();
            scrub_text(&mut scrubbed, &mut summary);
            assert_eq!(scrubbed, text);
        }
        assert!(summary.rules.is_empty(), "{summary:?}");
    }

    #[test]
    fn container_uuids_become_one_placeholder() {
        let mut summary = ScrubSummary::default();
        let mut a = "/private/var/containers/Bundle/Application/9F4D42D9-D414-4DAA-A7DA-5F733BB3719D/SoloQuest.app/SoloQuest".to_owned();
        let mut b = "/private/var/containers/Bundle/Application/11111111-2222-3333-4444-555555555555/SoloQuest.app/SoloQuest".to_owned();
        scrub_path(&mut a, &mut summary);
        scrub_path(&mut b, &mut summary);
        assert_eq!(a, b);
        assert_eq!(
            a,
            "/private/var/containers/Bundle/Application/<container>/SoloQuest.app/SoloQuest"
        );
        let mut data = "/var/mobile/Containers/Data/Application/9F4D42D9-D414-4DAA-A7DA-5F733BB3719D/Documents".to_owned();
        scrub_path(&mut data, &mut summary);
        assert_eq!(
            data,
            "/var/mobile/Containers/Data/Application/<container>/Documents"
        );
        assert_eq!(summary.rules["container_uuid"], 3);
    }

    #[test]
    fn keyed_hashes_depend_on_the_secret() {
        assert_ne!(
            keyed_hash(b"a", "device", "x"),
            keyed_hash(b"b", "device", "x")
        );
        assert_eq!(
            keyed_hash(b"a", "device", "x"),
            keyed_hash(b"a", "device", "x")
        );
        assert_ne!(
            keyed_hash(b"a", "device", "x"),
            keyed_hash(b"a", "incident", "x")
        );
    }
}
