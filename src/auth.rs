//! API tokens and their scopes.
//!
//! A token is shown to its owner once and never stored: the data dir keeps only the
//! SHA-256 of it, as one small file per token under `tokens/`, named by that hash. Files,
//! not sled, because sled locks its database to one process and `crashbox token create`
//! must work while a server runs on the same data dir. A lookup hashes the presented
//! token, opens the file of that name and compares the stored hash in constant time.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

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
    /// Upload debug files and releases, and read what was uploaded (CI needs to check).
    Upload,
    /// Browse crashes, groups, releases and debug files.
    Read,
    /// Everything, including deletes and token management.
    Admin,
}

impl Scope {
    /// Whether a token of this scope may use a route that needs `need`.
    pub fn grants(self, need: Scope) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Upload => matches!(need, Scope::Upload | Scope::Read),
            other => other == need,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Upload => "upload",
            Scope::Read => "read",
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
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown scope `{other}` (expected ingest, upload, read or admin)"
            )),
        }
    }
}

/// Why a token could not be created or checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The tokens directory could not be read or written.
    #[error("token store at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What is stored for one token: never the token itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRecord {
    /// Hex SHA-256 of the token, compared in constant time on each request.
    hash: String,
    scope: Scope,
    created_at: String,
}

/// The tokens of one data dir.
#[derive(Debug, Clone)]
pub struct TokenStore {
    dir: PathBuf,
    /// Recently checked token hashes and their scopes: a device fleet sends the same
    /// ingest token thousands of times a second, and each check would otherwise read
    /// a file. Entries expire after [`TOKEN_CACHE_TTL`], so a token file removed by an
    /// operator stops working within that time.
    checked: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (Scope, std::time::Instant)>>,
    >,
}

/// How long a checked token is trusted without reading its file again.
pub const TOKEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// A freshly created token: the only moment its secret exists outside the client.
pub struct NewToken {
    pub token: String,
    pub scope: Scope,
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

    /// Creates a token of `scope` and stores its hash.
    pub fn create(&self, scope: Scope) -> Result<NewToken, AuthError> {
        let token = format!("cbx_{}", util::random_hex(24));
        let hash = hash_token(&token);
        let record = TokenRecord {
            hash: hash.clone(),
            scope,
            created_at: util::now_rfc3339(),
        };
        let path = self.dir.join(format!("{hash}.json"));
        let body = serde_json::to_vec(&record).expect("token record serializes");
        util::write_atomic(&path, &body, Some(0o600))
            .map_err(|source| AuthError::Io { path, source })?;
        Ok(NewToken { token, scope })
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

    /// The scope of `token`, or `None` when it is unknown.
    pub fn check(&self, token: &str) -> Option<Scope> {
        // Only characters a token can hold reach the file system.
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        let hash = hash_token(token);
        if let Ok(checked) = self.checked.lock() {
            if let Some((scope, at)) = checked.get(&hash) {
                if at.elapsed() < TOKEN_CACHE_TTL {
                    return Some(*scope);
                }
            }
        }
        let raw = fs::read(self.dir.join(format!("{hash}.json"))).ok()?;
        let record: TokenRecord = serde_json::from_slice(&raw).ok()?;
        let same: bool = record.hash.as_bytes().ct_eq(hash.as_bytes()).into();
        let scope = same.then_some(record.scope)?;
        if let Ok(mut checked) = self.checked.lock() {
            // Only known tokens are kept, so guessing cannot grow the map.
            checked.insert(hash, (scope, std::time::Instant::now()));
        }
        Some(scope)
    }
}

fn hash_token(token: &str) -> String {
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
        assert!(Scope::Upload.grants(Scope::Read));
        assert!(!Scope::Upload.grants(Scope::Ingest));
        assert!(!Scope::Ingest.grants(Scope::Read));
        assert!(!Scope::Read.grants(Scope::Upload));
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
