//! Web UI sign-in: a session opened with a `read`, `triage` or `admin` token.
//!
//! The cookie carries a random secret; the store keeps its SHA-256 and the hash of the
//! token it was opened with, so a stolen database opens no session and revoking the
//! token ends every session opened with it (checked on each page, like a bearer
//! token). The CSRF token of a session is an HMAC of its secret under the server's
//! secret: forms carry it, nothing stores it, and nobody without the cookie can make it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::App;
use crate::auth::{hash_token, Identity, Scope};
use crate::store::{unix_ms, StoreError};

/// How long a session lasts from sign-in.
pub const SESSION_DAYS: i64 = 14;

/// Bytes of randomness in a session secret.
const SECRET_BYTES: usize = 32;

/// Someone signed in to the web UI.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub identity: Identity,
    /// The token forms must carry for a change to be accepted.
    pub csrf: String,
}

impl Viewer {
    /// Whether this viewer may change groups (resolve, ignore, merge).
    pub fn can_triage(&self) -> bool {
        self.identity.scope.grants(Scope::Triage)
    }
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignInRefused {
    /// No such token, or revoked.
    Unknown,
    /// A token for machines (`ingest`, `upload`): it opens no session.
    Scope(Scope),
}

fn now_ms() -> i64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

fn session_id(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Only characters a session secret can hold (hex) are looked up.
fn well_formed(secret: &str) -> bool {
    secret.len() == SECRET_BYTES * 2 && secret.bytes().all(|b| b.is_ascii_hexdigit())
}

impl App {
    /// Opens a session for `token`; returns the cookie's secret. Blocking.
    pub fn sign_in(&self, token: &str) -> Result<Result<String, SignInRefused>, StoreError> {
        let Some(identity) = self.inner.tokens.identify(token.trim()) else {
            return Ok(Err(SignInRefused::Unknown));
        };
        if !identity.scope.grants(Scope::Read) {
            return Ok(Err(SignInRefused::Scope(identity.scope)));
        }
        let secret = crate::util::random_hex(SECRET_BYTES);
        let now = now_ms();
        self.inner.store.create_session(
            session_id(&secret),
            hash_token(token.trim()),
            now,
            now + SESSION_DAYS * 86_400_000,
        )?;
        Ok(Ok(secret))
    }

    /// Who a session cookie belongs to, when the session and its token still live.
    /// Blocking.
    pub fn viewer(&self, secret: &str) -> Result<Option<Viewer>, StoreError> {
        if !well_formed(secret) {
            return Ok(None);
        }
        let Some(token_hash) = self
            .inner
            .store
            .session_token(&session_id(secret), now_ms())?
        else {
            return Ok(None);
        };
        let Some(identity) = self.inner.tokens.identify_hash(&token_hash) else {
            return Ok(None);
        };
        if !identity.scope.grants(Scope::Read) {
            return Ok(None);
        }
        Ok(Some(Viewer {
            identity,
            csrf: self.csrf_token(secret),
        }))
    }

    /// Ends a session. Blocking.
    pub fn sign_out(&self, secret: &str) -> Result<(), StoreError> {
        if well_formed(secret) {
            self.inner.store.delete_session(session_id(secret))?;
        }
        Ok(())
    }

    /// The CSRF token of the session with this secret.
    fn csrf_token(&self, secret: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.inner.secret)
            .expect("HMAC takes a key of any length");
        mac.update(b"crashbox csrf v1\0");
        mac.update(secret.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

/// Whether a form's CSRF token is the viewer's, in constant time.
pub fn csrf_matches(viewer: &Viewer, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    viewer.csrf.len() == presented.len()
        && bool::from(viewer.csrf.as_bytes().ct_eq(presented.as_bytes()))
}
