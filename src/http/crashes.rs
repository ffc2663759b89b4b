//! Crash handlers: intake (`POST /api/v1/crashes`), reading one crash as JSON or Apple
//! text, deleting one.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{authorize, body, ApiError};
use crate::app::App;
use crate::auth::Scope;
use crate::intake::CrashRecord;
use crate::render::{apple_text, crash_json, CrashIds};
use crate::symbolicate::SymbolicatedCrash;

/// `POST /api/v1/crashes`: a raw report in any accepted format. 201 when at least one
/// crash is new, 200 when every crash in it was stored before (a retried upload).
pub async fn ingest(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Ingest)?;
    let bytes = body::read_limited(&headers, body, app.config().max_crash_bytes).await?;
    let inserted = app.ingest_crash(bytes).await?;
    let created = inserted.iter().any(|c| c.created);
    let crashes: Vec<_> = inserted
        .iter()
        .map(|c| json!({"id": c.id, "group_id": c.group_id, "signature": c.signature, "created": c.created}))
        .collect();
    let Some(first) = inserted.first() else {
        return Err(ApiError::internal(
            "intake stored no crash and reported no error",
        ));
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "id": first.id,
        "group_id": first.group_id,
        "signature": first.signature,
        "crashes": crashes,
    });
    Ok((status, Json(body)).into_response())
}

/// `GET /api/v1/crashes/{id}`: the crash, symbolicated with today's debug files.
pub async fn get(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (record, crash) = readable_crash(&app, &headers, id).await?;
    let ids = CrashIds {
        id: Some(record.id.clone()),
        group_id: Some(record.group_id.clone()),
    };
    let mut doc = crash_json(&record.report, &crash, &ids);
    if let Some(map) = doc.as_object_mut() {
        // The signature it is filed under (signed with the server's rules), not one
        // signed again here with the built-in rules.
        map.insert("signature".into(), json!(record.filing.signature));
        map.insert("received_at".into(), json!(record.received_at));
        map.insert("scrubbed".into(), json!(record.scrub.rules));
    }
    Ok(Json(doc))
}

/// `GET /api/v1/crashes/{id}/apple`: the same crash as Apple's text report.
pub async fn get_apple(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (record, crash) = readable_crash(&app, &headers, id).await?;
    let text = apple_text(&record.report, &crash);
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// `DELETE /api/v1/crashes/{id}` (admin): the crash and its share of every counter.
pub async fn delete(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers, Scope::Admin)?;
    if app.delete_crash(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no crash {id}")))
    }
}

/// A stored crash symbolicated for reading, or 404; needs scope `read`.
async fn readable_crash(
    app: &App,
    headers: &HeaderMap,
    id: String,
) -> Result<(CrashRecord, SymbolicatedCrash), ApiError> {
    authorize(app, headers, Scope::Read)?;
    app.crash(id.clone())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no crash {id}")))
}
