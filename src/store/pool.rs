//! Read-only connections, reused. In WAL mode a reader sees the last commit and never
//! waits for the writer, so reads need no coordination beyond one connection each.
//!
//! A dozen lines of our own rather than `r2d2_sqlite` or `deadpool-sqlite`: each pins a
//! rusqlite version of its own (one more lockstep upgrade for a `links` crate), and
//! neither timeouts nor health checks are needed for a local file.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Idle connections kept; more may be open at once, the extra ones are closed after use.
const KEEP_IDLE: usize = 8;

pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A borrowed connection; goes back to the pool when dropped.
pub(super) struct Reader<'a> {
    pool: &'a Readers,
    conn: Option<Connection>,
}

impl std::ops::Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < KEEP_IDLE {
                idle.push(conn);
            }
        }
    }
}

impl Readers {
    pub(super) fn new(path: PathBuf) -> Self {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn get(&self) -> Result<Reader<'_>, StoreError> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let conn = match reused {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        Ok(Reader {
            pool: self,
            conn: Some(conn),
        })
    }
}

/// A read-only connection with the store's settings.
pub(super) fn open_reader(path: &std::path::Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(super::BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
    // 8 MiB of page cache per reader: the group indexes and a page of crashes fit.
    conn.execute_batch("PRAGMA cache_size = -8192; PRAGMA query_only = ON;")?;
    Ok(conn)
}
