//! Sentry compatibility: the pieces of two Sentry protocols that need no HTTP, so that
//! a team already running `sentry-cli debug-files upload` in CI and `sentry-cocoa` in its
//! app can point both at crashbox by changing a URL, a token and a DSN.
//!
//! **CI: chunked upload and assemble** (`sentry-cli` 2.x and 3.x). The CLI splits each
//! debug file into chunks named by their SHA-1, asks the server which chunks it lacks,
//! uploads those, then asks it to assemble the file from its chunk list and polls until
//! the file is `ok`. Here:
//! - [`chunks::ChunkStore`] keeps verified chunks as files under `DSYMS_DIR/chunks/`
//!   (debug-file bytes stay files, as DESIGN.md's storage section says), concatenates
//!   them into an upload file while checking the whole file's SHA-1, and sweeps chunks
//!   no assemble claims once they are older than the configured expiry.
//! - The assemble state is rows in the store (`store::SentryFileRow`): written before
//!   the work starts, so a restart resumes it; kept once `ok`, so the same file again
//!   answers `ok` at once.
//! - An assembled file goes through exactly the ingestion `POST /api/v1/dsyms` uses
//!   (`App::ingest_debug_files`): index, SymCache, dedup, re-symbolication.
//!   `app::sentry` runs it in the background.
//!
//! **Devices: envelopes** (`sentry-cocoa`, any Sentry SDK). [`envelope`] reads the
//! framing from a compressed body as a stream, keeping only event and session items
//! (attachments are skipped without being held in memory). Crash events then go through
//! the intake exactly like `POST /api/v1/crashes`: parsed, scrubbed, stored durably
//! before the answer, de-duplicated by `event_id`. [`rate::RateLimiter`] bounds
//! envelopes per token and per source address.

pub mod chunks;
pub mod envelope;
pub mod rate;

use serde::{Deserialize, Serialize};

use crate::debug_files::DebugFile;

/// Whether `text` is a SHA-1 as sentry-cli writes it: 40 lowercase hex digits.
pub fn is_sha1_hex(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The project id in every DSN crashbox prints; the server does not check it.
pub const DSN_PROJECT_ID: u32 = 1;

/// The DSN an app passes to `SentrySDK.start` to send to the server at `public_url`
/// with the ingest token `key`: `scheme://key@host[:port][/prefix]/1`. `None` when
/// `public_url` is no `http://` or `https://` URL.
pub fn dsn(public_url: &str, key: &str) -> Option<String> {
    let (scheme, rest) = public_url.split_once("://")?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('@') {
        return None;
    }
    let rest = rest.trim_end_matches('/');
    Some(format!("{scheme}://{key}@{rest}/{DSN_PROJECT_ID}"))
}

/// Whether `head` (a file's first bytes) is one of the companion files sentry-cli
/// uploads beside debug files: the UUID-mapping property lists inside a dSYM
/// (`Contents/Resources/<UUID>.plist`) and BCSymbolMaps. crashbox needs neither (it
/// reads no bitcode builds); they are acknowledged, not stored, so that the CLI counts
/// them as on the server.
pub fn is_companion_file(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    let text = head.trim_ascii_start();
    text.starts_with(b"<?xml")
        || text.starts_with(b"<!DOCTYPE plist")
        || text.starts_with(b"<plist")
        || head.starts_with(b"bplist")
        || head.starts_with(b"BCSymbolMap Version:")
}

/// What sentry-cli is told about a stored file (`dif` in an assemble answer, items of
/// the legacy upload's answer). The CLI requires `objectName`, `cpuName` and `sha1`,
/// reads `debugId` (else `uuid`), and fails on a `data.type` other than `exe`, `lib` or
/// `dbg`, so `data` carries only the features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dif {
    pub id: String,
    pub uuid: String,
    pub debug_id: String,
    pub object_name: String,
    pub cpu_name: String,
    pub sha1: String,
    pub symbol_type: String,
    pub size: u64,
    pub data: DifData,
}

/// The `data` of a [`Dif`]: Sentry's feature words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifData {
    pub features: Vec<String>,
}

impl Dif {
    /// The answer for a companion file ([`is_companion_file`]), acknowledged unstored.
    pub fn companion(name: &str, debug_id: Option<&str>, sha1: &str, size: u64) -> Self {
        let debug_id = debug_id.unwrap_or("00000000-0000-0000-0000-000000000000");
        Dif {
            id: sha1.to_owned(),
            uuid: debug_id.to_owned(),
            debug_id: debug_id.to_owned(),
            object_name: name.to_owned(),
            cpu_name: "any".to_owned(),
            sha1: sha1.to_owned(),
            symbol_type: "uuidmap".to_owned(),
            size,
            data: DifData {
                features: Vec::new(),
            },
        }
    }

    /// The answer for `file`, which the upload with SHA-1 `sha1` stored (or found).
    pub fn new(file: &DebugFile, sha1: &str) -> Self {
        let features = [
            (file.features.symbols, "symtab"),
            (file.features.debug_info, "debug"),
            (file.features.unwind, "unwind"),
            (file.features.sources, "sources"),
        ]
        .iter()
        .filter(|(has, _)| *has)
        .map(|(_, name)| (*name).to_owned())
        .collect();
        Dif {
            id: sha1.to_owned(),
            uuid: file.debug_id.clone(),
            debug_id: file.debug_id.clone(),
            object_name: file.name.clone(),
            cpu_name: file.arch.clone(),
            sha1: sha1.to_owned(),
            symbol_type: match file.kind {
                crate::debug_files::DebugFileKind::Elf => "elf",
                crate::debug_files::DebugFileKind::Breakpad => "breakpad",
                _ => "macho",
            }
            .to_owned(),
            size: file.size,
            data: DifData { features },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_names_are_40_lowercase_hex_digits() {
        assert!(is_sha1_hex("6e217f035ed538d4d6c14129baad5cb52e680e74"));
        assert!(!is_sha1_hex("6E217F035ED538D4D6C14129BAAD5CB52E680E74"));
        assert!(!is_sha1_hex("../../etc/passwd"));
        assert!(!is_sha1_hex("6e217f035ed538d4d6c14129baad5cb52e680e7"));
    }

    #[test]
    fn companion_files_are_plists_and_symbol_maps() {
        assert!(is_companion_file(b"<?xml version=\"1.0\"?>\n<plist>"));
        assert!(is_companion_file(b"bplist00\x01"));
        assert!(is_companion_file(b"BCSymbolMap Version: 2.0\n"));
        assert!(!is_companion_file(b"\xcf\xfa\xed\xfe"));
        assert!(!is_companion_file(b"MODULE mac arm64 ABC App"));
    }

    #[test]
    fn dsns_put_the_key_before_the_host_and_the_project_last() {
        assert_eq!(
            dsn("http://127.0.0.1:8080", "cbx_1").as_deref(),
            Some("http://cbx_1@127.0.0.1:8080/1")
        );
        assert_eq!(
            dsn("https://crash.example.com/box/", "k").as_deref(),
            Some("https://k@crash.example.com/box/1")
        );
        assert_eq!(dsn("ftp://x", "k"), None);
        assert_eq!(dsn("crash.example.com", "k"), None);
    }
}
