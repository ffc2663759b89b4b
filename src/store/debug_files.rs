//! The debug-file index: one row per debug id and arch. The files themselves (original
//! and SymCache) live in the dsyms dir, owned by `debug_files`.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::StoreError;

/// One indexed debug file as the store keeps it; `debug_files` converts to its own type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebugFileRow {
    pub debug_id: String,
    pub arch: String,
    pub code_id: Option<String>,
    pub name: String,
    pub path: String,
    pub kind: String,
    pub object_kind: String,
    pub has_symbols: bool,
    pub has_debug_info: bool,
    pub has_unwind_info: bool,
    pub has_sources: bool,
    pub size: u64,
    pub sha256: String,
    pub symcache_size: u64,
    pub symcache_version: u32,
    pub uploaded_at: String,
    pub releases: Vec<String>,
}

/// Which debug files a listing wants.
#[derive(Debug, Default, Clone)]
pub struct DebugFileFilter {
    /// Only files uploaded with this release.
    pub release: Option<String>,
    /// Only files whose name contains this text (case-insensitive).
    pub name: Option<String>,
}

const COLUMNS: &str = "debug_id, arch, code_id, name, path, kind, object_kind, has_symbols,
    has_debug_info, has_unwind_info, has_sources, size, sha256, symcache_size,
    symcache_version, uploaded_at, releases";

fn from_row(row: &Row<'_>) -> rusqlite::Result<DebugFileRow> {
    let releases: String = row.get(16)?;
    Ok(DebugFileRow {
        debug_id: row.get(0)?,
        arch: row.get(1)?,
        code_id: row.get(2)?,
        name: row.get(3)?,
        path: row.get(4)?,
        kind: row.get(5)?,
        object_kind: row.get(6)?,
        has_symbols: row.get(7)?,
        has_debug_info: row.get(8)?,
        has_unwind_info: row.get(9)?,
        has_sources: row.get(10)?,
        size: row.get::<_, i64>(11)? as u64,
        sha256: row.get(12)?,
        symcache_size: row.get::<_, i64>(13)? as u64,
        symcache_version: row.get::<_, i64>(14)? as u32,
        uploaded_at: row.get(15)?,
        releases: serde_json::from_str(&releases).unwrap_or_default(),
    })
}

pub(super) fn get(
    conn: &Connection,
    debug_id: &str,
    arch: &str,
) -> Result<Option<DebugFileRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM debug_files WHERE debug_id = ?1 AND arch = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([debug_id, arch], from_row)
        .optional()?)
}

pub(super) fn by_id(conn: &Connection, debug_id: &str) -> Result<Vec<DebugFileRow>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM debug_files WHERE debug_id = ?1 ORDER BY arch");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map([debug_id], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn list(
    conn: &Connection,
    filter: &DebugFileFilter,
) -> Result<Vec<DebugFileRow>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM debug_files
         WHERE (?1 IS NULL OR EXISTS (SELECT 1 FROM json_each(releases) WHERE value = ?1))
           AND (?2 IS NULL OR instr(lower(name), lower(?2)) > 0)
         ORDER BY uploaded_at DESC, debug_id, arch"
    );
    let rows = conn
        .prepare_cached(&sql)?
        .query_map(params![filter.release, filter.name], from_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn put(conn: &Connection, files: &[DebugFileRow]) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT OR REPLACE INTO debug_files ({COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for f in files {
        let releases = serde_json::to_string(&f.releases).unwrap_or_else(|_| "[]".into());
        stmt.execute(params![
            f.debug_id,
            f.arch,
            f.code_id,
            f.name,
            f.path,
            f.kind,
            f.object_kind,
            f.has_symbols,
            f.has_debug_info,
            f.has_unwind_info,
            f.has_sources,
            f.size as i64,
            f.sha256,
            f.symcache_size as i64,
            i64::from(f.symcache_version),
            f.uploaded_at,
            releases,
        ])?;
        // A release is created on first sight: a crash, or debug files uploaded for it.
        for release in &f.releases {
            super::triage::ensure_release(conn, release)?;
        }
    }
    Ok(())
}
