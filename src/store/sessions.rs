//! Web UI sign-in sessions (schema v6). The store keeps the SHA-256 of each session's
//! cookie secret and the hash of the token it was opened with; `app` derives both and
//! decides what a session may do.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;

/// Opens a session, and drops the sessions that ran out (sign-in is rare, so this is
/// where the table is kept small).
pub(super) fn create(
    conn: &Connection,
    id: &str,
    token: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), StoreError> {
    conn.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now_ms])?;
    conn.execute(
        "INSERT INTO sessions (id, token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, token, now_ms, expires_ms],
    )?;
    Ok(())
}

/// The token hash of a live session.
pub(super) fn token_of(
    conn: &Connection,
    id: &str,
    now_ms: i64,
) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT token FROM sessions WHERE id = ?1 AND expires_at > ?2")?
        .query_row(params![id, now_ms], |r| r.get(0))
        .optional()?)
}

/// Ends a session; false when there was none.
pub(super) fn delete(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    Ok(conn.execute("DELETE FROM sessions WHERE id = ?1", [id])? > 0)
}
