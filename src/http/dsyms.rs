//! `/api/v1/dsyms`: debug-file uploads and listings.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::{authorize, authorize_any, body, ApiError};
use crate::app::App;
use crate::auth::Scope;
use crate::debug_files::{DebugFile, FileError, IngestStatus, Skipped, UploadMeta};
use crate::store::DebugFileFilter;

#[derive(Debug, Deserialize)]
pub struct UploadParams {
    release: Option<String>,
    name: Option<String>,
}

/// A debug file as the API shows it.
#[derive(Debug, Serialize)]
pub struct DebugFileView {
    debug_id: String,
    arch: String,
    name: String,
    kind: crate::debug_files::DebugFileKind,
    has_debug_info: bool,
    has_symbols: bool,
    has_unwind_info: bool,
    has_sources: bool,
    code_id: Option<String>,
    object_kind: String,
    path: String,
    size: u64,
    sha256: String,
    symcache_size: u64,
    uploaded_at: String,
    releases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<IngestStatus>,
}

impl DebugFileView {
    fn new(file: DebugFile, status: Option<IngestStatus>) -> Self {
        DebugFileView {
            has_debug_info: file.features.debug_info,
            has_symbols: file.features.symbols,
            has_unwind_info: file.features.unwind,
            has_sources: file.features.sources,
            debug_id: file.debug_id,
            arch: file.arch,
            name: file.name,
            kind: file.kind,
            code_id: file.code_id,
            object_kind: file.object_kind,
            path: file.path,
            size: file.size,
            sha256: file.sha256,
            symcache_size: file.symcache_size,
            uploaded_at: file.uploaded_at,
            releases: file.releases,
            status,
        }
    }
}

#[derive(Debug, Serialize)]
struct UploadResponse {
    debug_files: Vec<DebugFileView>,
    skipped: Vec<Skipped>,
    errors: Vec<FileError>,
}

/// `POST /api/v1/dsyms`: a zip, or one Mach-O / ELF / Breakpad file, raw or as the
/// multipart field `file`.
pub async fn upload(
    State(app): State<App>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let limit = app.config().max_dsym_upload_bytes;
    let spooled = body::spool(request, &app.new_upload_path(), limit).await?;
    app.metrics().dsym_upload_bytes.inc_by(spooled.bytes);
    let meta = match upload_meta(params, &spooled) {
        Ok(meta) => meta,
        Err(err) => {
            // Ingest deletes the spooled body when done; refused before it, we do.
            let _ = tokio::fs::remove_file(&spooled.path).await;
            return Err(err);
        }
    };
    let report = app.ingest_debug_files(spooled.path, meta).await?;
    let created = report
        .debug_files
        .iter()
        .any(|f| f.status != IngestStatus::AlreadyPresent);
    let response = UploadResponse {
        debug_files: report
            .debug_files
            .into_iter()
            .map(|f| DebugFileView::new(f.file, Some(f.status)))
            .collect(),
        skipped: report.skipped,
        errors: report.errors,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

/// Longest file name an upload may give, in bytes: it is kept in the index.
const MAX_NAME_LEN: usize = 1024;

/// The release and name of an upload, from the query or the multipart fields, checked
/// before the index keeps them.
fn upload_meta(params: UploadParams, spooled: &body::Spooled) -> Result<UploadMeta, ApiError> {
    let release = match params.release.or_else(|| spooled.release.clone()) {
        Some(r) if !r.trim().is_empty() => Some(
            crate::release::validate(&r)
                .map_err(|m| ApiError::bad_request("invalid_release", m))?
                .to_owned(),
        ),
        _ => None,
    };
    let name = params.name.or_else(|| spooled.file_name.clone());
    if let Some(name) = &name {
        if name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_name",
                format!("a file name is at most {MAX_NAME_LEN} printable bytes"),
            ));
        }
    }
    Ok(UploadMeta { release, name })
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    release: Option<String>,
    name: Option<String>,
    missing: Option<bool>,
}

/// `GET /api/v1/dsyms`: every debug file, filtered by `release` or `name`.
pub async fn list(
    State(app): State<App>,
    Query(params): Query<ListParams>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize_any(&app, &headers, &[Scope::Read, Scope::Upload])?;
    if params.missing == Some(true) {
        let missing: Vec<_> = app
            .missing_debug_files()
            .await?
            .into_iter()
            .map(|m| {
                serde_json::json!({
                    "debug_id": m.debug_id,
                    "name": m.name,
                    "crash_count": m.crash_count,
                    "releases": m.releases,
                    "last_seen": m.last_seen,
                })
            })
            .collect();
        return Ok(Json(serde_json::json!({ "missing": missing })));
    }
    let filter = DebugFileFilter {
        release: params.release,
        name: params.name,
    };
    let debug_files = tokio::task::spawn_blocking(move || app.debug_files().list(&filter))
        .await
        .map_err(ApiError::internal)??;
    let views: Vec<_> = debug_files
        .into_iter()
        .map(|f| DebugFileView::new(f, None))
        .collect();
    Ok(Json(serde_json::json!({ "debug_files": views })))
}

/// `GET /api/v1/dsyms/{debug_id}`: every arch stored for one debug id.
pub async fn get(
    State(app): State<App>,
    Path(debug_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize_any(&app, &headers, &[Scope::Read, Scope::Upload])?;
    let parsed: symbolic::common::DebugId = debug_id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_debug_id",
            format!("`{debug_id}` is not a debug id"),
        )
    })?;
    let key = parsed.to_string().to_ascii_lowercase();
    let lookup = key.clone();
    let files = tokio::task::spawn_blocking(move || app.debug_files().get(&lookup))
        .await
        .map_err(ApiError::internal)??;
    if files.is_empty() {
        return Err(ApiError::not_found(format!(
            "no debug file with debug id {key}"
        )));
    }
    let views: Vec<_> = files
        .into_iter()
        .map(|f| DebugFileView::new(f, None))
        .collect();
    Ok(Json(
        serde_json::json!({ "debug_id": key, "debug_files": views }),
    ))
}
