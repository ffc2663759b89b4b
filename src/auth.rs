//! API tokens and their scopes.
//!
//! A token is shown to its owner once and never stored: the data dir keeps only the
//! SHA-256 of it, as one small file per token under `tokens/`, named by that hash. Files
//! (DESIGN.md allows either), so that `crashbox token create|list|revoke` work from
//! another process while a server runs on the same data dir, with no database handle. A lookup hashes the presented
//! token, opens the file of that name and compares the stored hash in constant time.
//! Checked tokens are cached, but a cached token counts only while its file exists (one
//! `stat` per request), so `crashbox token revoke` in another process takes effect on
//! the server's very next request.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::util;

/// What a token may do. Routes name the scope they need; [`Scope::grants`] decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send crash reports only. Safe to embed in an app.
    Ingest,
    /// Upload debug files, releases and sessions. Reads only the debug-file list (CI
    /// checks what it uploaded), never crashes: a leaked CI secret must not read them.
    /// The debug-file routes accept it beside `read` (see `http::authorize_any`).
    Upload,
    /// Browse crashes, groups, releases and debug files.
    Read,
    /// `read`, plus changing groups (state, merge, unmerge).
    Triage,
    /// Everything, including deletes, webhooks and token management.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may use a route that needs `need`. Only `admin`
    /// and `triage` imply another scope; DESIGN.md's scope list is the source.
    pub fn grants(self, need: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Triage => matches!(need, Scope::Triage | Scope::Read),
            other => other == need,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Upload => "upload",
            Scope::Read => "read",
            Scope::Triage => "triage",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingest" => Ok(Scope::Ingest),
            "upload" => Ok(Scope::Upload),
            "read" => Ok(Scope::Read),
            "triage" => Ok(Scope::Triage),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}` (expected ingest, upload, read, triage or admin)"
            )),
        }
    }
}

/// Why a token could not be created, listed, revoked or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens directory could not be read or written.
    #[error("token store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A token name that is empty, too long, not printable, or already taken.
    #[error("invalid token name: {0}")]
    InvalidName(String),
    /// `revoke` named no token, or more than one.
    #[error("{0}")]
    NoSuchToken(String),
}

/// What is stored for one token: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    /// Hex SHA-256 of the token, compared in constant time on each request.
    hash: String,
    scope: Scope,
    created_at: String,
    /// Who the token is for; activity entries name it (else the scope). Records from
    /// before names existed read as unnamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

/// A token as `token list` shows it: nothing that would let anyone use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// The first [`SHORT_ID_LEN`] hex digits of the token's hash: names it for
    /// `revoke` without revealing it (the hash is one-way, and this is a prefix).
    pub id: String,
    pub name: Option<String>,
    pub scope: Scope,
    pub created_at: String,
}

/// Who a request's token is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub scope: Scope,
    pub name: Option<String>,
}

impl Identity {
    /// The actor group activity names (DESIGN.md): the token's name, else its scope.
    pub fn actor(&self) -> &str {
        self.name.as_deref().unwrap_or(self.scope.as_str())
    }
}

/// Hex digits of the hash that name a token in `list` and `revoke`.
pub const SHORT_ID_LEN: usize = 8;

/// Longest token name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Unknown token hashes remembered at most; past it the set starts over, so guessing
/// cannot grow memory.
const NEGATIVE_CACHE_LEN: usize = 4096;

/// What a check found, cached per token hash.
#[derive(Debug, Default)]
struct Checked {
    /// Known tokens. An entry is trusted only while its file still exists: every hit
    /// costs one `stat` of it, so a token revoked by another process (the CLI) fails
    /// on the very next request, without re-reading and parsing the file each time.
    known: HashMap<String, Identity>,
    /// Hashes with no token file. Safe to remember for good: a token is random and
    /// shown only when created, so nobody presents it before its file exists, and a
    /// removed token is never re-created. This is what an app still shipping a revoked
    /// ingest token hits on every upload: no file open for it.
    unknown: HashSet<String>,
}

/// The tokens of one data dir.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    checked: Arc<Mutex<Checked>>,
}

/// A freshly created token: the only moment its secret exists outside the client.
pub struct NewToken {
    pub token: String,
    pub scope: Scope,
    pub info: TokenInfo,
}

impl TokenStore {
    /// Opens (and creates) `DATA_DIR/tokens`.
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        let dir = data_dir.join("tokens");
        fs::create_dir_all(&dir).map_err(|source| AuthError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(TokenStore {
            dir,
            checked: Default::default(),
        })
    }

    /// Creates an unnamed token of `scope` and stores its hash.
    pub fn create(&self, scope: Scope) -> Result<NewToken, AuthError> {
        self.create_named(scope, None)
    }

    /// Creates a token of `scope`, named `name` when given (printable, at most
    /// [`MAX_NAME_LEN`] bytes, not used by another token), and stores its hash.
    pub fn create_named(&self, scope: Scope, name: Option<&str>) -> Result<NewToken, AuthError> {
        if let Some(name) = name {
            check_name(name)?;
            if self.list()?.iter().any(|t| t.name.as_deref() == Some(name)) {
                return Err(AuthError::InvalidName(format!(
                    "a token named `{name}` exists already"
                )));
            }
        }
        let token = format!("cbx_{}", util::random_hex(24));
        let hash = hash_token(&token);
        let record = TokenRecord {
            hash: hash.clone(),
            scope,
            created_at: util::now_rfc3339(),
            name: name.map(str::to_owned),
        };
        let path = self.path_of(&hash);
        let body = serde_json::to_vec(&record).expect("token record serializes");
        util::write_atomic(&path, &body, Some(0o600))
            .map_err(|source| AuthError::Io { path, source })?;
        Ok(NewToken {
            token,
            scope,
            info: record.info(),
        })
    }

    /// Every token, oldest first, without secrets.
    pub fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        let mut out: Vec<TokenInfo> = self.records()?.into_iter().map(|r| r.info()).collect();
        out.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        Ok(out)
    }

    /// Deletes the one token whose short id or name is `which`. Refuses when none or
    /// several match, so a revoke never removes more than the operator meant. The
    /// server notices at once: its cache trusts a token only while its file exists.
    pub fn revoke(&self, which: &str) -> Result<TokenInfo, AuthError> {
        let which = which.trim();
        let matches: Vec<TokenRecord> = self
            .records()?
            .into_iter()
            .filter(|r| {
                r.name.as_deref() == Some(which)
                    || (which.len() >= SHORT_ID_LEN
                        && r.hash.starts_with(&which.to_ascii_lowercase()))
            })
            .collect();
        let record = match matches.as_slice() {
            [one] => one,
            [] => return Err(AuthError::NoSuchToken(format!("no token `{which}`"))),
            _ => {
                return Err(AuthError::NoSuchToken(format!(
                    "`{which}` names {} tokens; use a longer id",
                    matches.len()
                )))
            }
        };
        let path = self.path_of(&record.hash);
        fs::remove_file(&path).map_err(|source| AuthError::Io { path, source })?;
        if let Ok(mut checked) = self.checked.lock() {
            checked.known.remove(&record.hash);
        }
        Ok(record.info())
    }

    /// Whether any token exists yet; the server creates an admin token when none does.
    pub fn is_empty(&self) -> Result<bool, AuthError> {
        let mut entries = fs::read_dir(&self.dir).map_err(|source| AuthError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(!entries.any(|e| {
            e.map(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .unwrap_or(false)
        }))
    }

    /// The scope of `token`, or `None` when it is unknown or revoked.
    pub fn check(&self, token: &str) -> Option<Scope> {
        self.identify(token).map(|identity| identity.scope)
    }

    /// Who `token` is: its scope and name, or `None` when it is unknown or revoked.
    pub fn identify(&self, token: &str) -> Option<Identity> {
        // Only characters a token can hold reach the file system.
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        self.identify_hash(&hash_token(token))
    }

    /// Who the token with this hash is (as [`hash_token`] makes it): a web session
    /// keeps the hash, never the token, and is checked against the token on each page,
    /// so revoking the token ends the session too.
    pub fn identify_hash(&self, hash: &str) -> Option<Identity> {
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let hash = hash.to_ascii_lowercase();
        let path = self.path_of(&hash);
        let cached = self.checked.lock().ok().and_then(|checked| {
            if checked.unknown.contains(&hash) {
                return Some(None);
            }
            checked
                .known
                .get(&hash)
                .map(|identity| Some(identity.clone()))
        });
        match cached {
            Some(None) => return None,
            Some(Some(identity)) => {
                if fs::symlink_metadata(&path).is_ok() {
                    return Some(identity);
                }
                self.forget(&hash);
                return None;
            }
            None => {}
        }
        let Some(identity) = read_record(&path).and_then(|record| {
            let same: bool = record.hash.as_bytes().ct_eq(hash.as_bytes()).into();
            same.then_some(Identity {
                scope: record.scope,
                name: record.name,
            })
        }) else {
            self.forget(&hash);
            return None;
        };
        if let Ok(mut checked) = self.checked.lock() {
            // Only known tokens are kept here, so guessing cannot grow the map.
            checked.known.insert(hash, identity.clone());
        }
        Some(identity)
    }

    /// Remembers `hash` as unknown (see [`Checked::unknown`]).
    fn forget(&self, hash: &str) {
        if let Ok(mut checked) = self.checked.lock() {
            checked.known.remove(hash);
            if checked.unknown.len() >= NEGATIVE_CACHE_LEN {
                checked.unknown.clear();
            }
            checked.unknown.insert(hash.to_owned());
        }
    }

    fn path_of(&self, hash: &str) -> PathBuf {
        self.dir.join(format!("{hash}.json"))
    }

    /// Every readable token record; unreadable files are skipped (a half-written
    /// one is never there: records are written atomically).
    fn records(&self) -> Result<Vec<TokenRecord>, AuthError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| AuthError::Io {
            path: self.dir.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| read_record(&e.path()))
            .collect())
    }
}

impl TokenRecord {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.hash.chars().take(SHORT_ID_LEN).collect(),
            name: self.name.clone(),
            scope: self.scope,
            created_at: self.created_at.clone(),
        }
    }
}

fn read_record(path: &Path) -> Option<TokenRecord> {
    let raw = fs::read(path).ok()?;
    serde_json::from_slice(&raw).ok()
}

/// A name is shown in listings and activity: printable, one line, bounded.
fn check_name(name: &str) -> Result<(), AuthError> {
    if name.trim().is_empty() || name.trim() != name {
        return Err(AuthError::InvalidName(
            "a name must not be empty or start or end with spaces".to_owned(),
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(AuthError::InvalidName(format!(
            "a name is at most {MAX_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AuthError::InvalidName(
            "a name must not hold control characters".to_owned(),
        ));
    }
    Ok(())
}

/// The hex SHA-256 a token is stored (and named) by.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_token_checks_with_its_scope_and_is_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        assert!(store.is_empty().unwrap());
        let new = store.create(Scope::Upload).unwrap();
        assert_eq!(store.check(&new.token), Some(Scope::Upload));
        assert_eq!(store.check("cbx_nope"), None);
        assert_eq!(store.check("../../etc/passwd"), None);
        assert!(!store.is_empty().unwrap());
        for entry in fs::read_dir(dir.path().join("tokens")).unwrap() {
            let body = fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(!body.contains(&new.token));
        }
    }

    #[test]
    fn scopes_grant_what_the_contract_says() {
        assert!(Scope::Admin.grants(Scope::Ingest));
        assert!(Scope::Admin.grants(Scope::Triage));
        assert!(Scope::Triage.grants(Scope::Read));
        assert!(!Scope::Triage.grants(Scope::Admin));
        assert!(!Scope::Read.grants(Scope::Triage));
        // A leaked CI secret must not read crashes.
        assert!(!Scope::Upload.grants(Scope::Read));
        assert!(!Scope::Upload.grants(Scope::Ingest));
        assert!(!Scope::Ingest.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Upload));
    }

    #[test]
    fn scopes_parse_including_triage() {
        for scope in [
            Scope::Ingest,
            Scope::Upload,
            Scope::Read,
            Scope::Triage,
            Scope::Admin,
        ] {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
        assert!("root".parse::<Scope>().is_err());
    }

    #[test]
    fn revoked_tokens_fail_at_once_even_when_cached() {
        let dir = tempfile::tempdir().unwrap();
        let server = TokenStore::open(dir.path()).unwrap();
        let cli = TokenStore::open(dir.path()).unwrap();
        let new = cli.create_named(Scope::Ingest, Some("ios app")).unwrap();
        assert_eq!(server.identify(&new.token).unwrap().actor(), "ios app");
        assert_eq!(server.check(&new.token), Some(Scope::Ingest));
        assert_eq!(server.check(&new.token), Some(Scope::Ingest));
        // Another process (a second store on the same dir) revokes it.
        assert_eq!(cli.revoke("ios app").unwrap().id, new.info.id);
        assert_eq!(server.check(&new.token), None);
        assert_eq!(server.check(&new.token), None);
        assert!(cli.list().unwrap().is_empty());
    }

    #[test]
    fn list_shows_names_and_short_ids_and_revoke_needs_one_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        let a = store.create_named(Scope::Upload, Some("ci")).unwrap();
        let b = store.create(Scope::Read).unwrap();
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&a.info) && listed.contains(&b.info));
        assert_eq!(a.info.id.len(), SHORT_ID_LEN);
        assert!(!a.token.contains(&a.info.id));
        assert!(store.create_named(Scope::Read, Some("ci")).is_err());
        assert!(store.create_named(Scope::Read, Some("a\0b")).is_err());
        assert!(store
            .create_named(Scope::Read, Some(&"x".repeat(65)))
            .is_err());
        assert!(matches!(
            store.revoke("nobody"),
            Err(AuthError::NoSuchToken(_))
        ));
        // A prefix shorter than a short id names nothing, even when it matches.
        assert!(store.revoke(&b.info.id[..4]).is_err());
        assert_eq!(store.revoke(&b.info.id).unwrap(), b.info);
        assert_eq!(store.check(&b.token), None);
        assert_eq!(store.check(&a.token), Some(Scope::Upload));
        let unnamed = store.create(Scope::Triage).unwrap();
        assert_eq!(store.identify(&unnamed.token).unwrap().actor(), "triage");
    }

    #[test]
    fn unknown_tokens_are_remembered_without_bound_on_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        for i in 0..(NEGATIVE_CACHE_LEN + 10) {
            assert_eq!(store.check(&format!("cbx_guess{i}")), None);
        }
        assert!(store.checked.lock().unwrap().unknown.len() <= NEGATIVE_CACHE_LEN);
    }

    #[cfg(unix)]
    #[test]
    fn token_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(dir.path()).unwrap();
        store.create(Scope::Admin).unwrap();
        for entry in fs::read_dir(dir.path().join("tokens")).unwrap() {
            let mode = entry.unwrap().metadata().unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
