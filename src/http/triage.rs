//! Triage handlers: groups (list, read, change, merge, unmerge, their crashes) and
//! releases (list, read, create, sessions). Each checks the scope, parses the request
//! and hands it to `triage` on the blocking pool through `App::triage`.

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{authorize, authorize_any, bearer, body, ApiError};
use crate::app::App;
use crate::auth::Scope;
use crate::triage::{
    self, GroupPatch, GroupsQuery, MergeRequest, PageQuery, ReleaseRequest, SessionsRequest,
    UnmergeRequest,
};

/// Largest JSON body a triage request takes.
const MAX_BODY: u64 = 64 * 1024;

/// A query string as `T`, or a 400 that says what is wrong.
fn query<T>(parsed: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    parsed
        .map(|Query(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// A JSON body as `T`, or a 400 that says what is wrong.
async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let bytes = body::read_limited(headers, body, MAX_BODY).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))
}

/// The actor a change is recorded under: the token's name, else its scope.
fn actor(app: &App, headers: &HeaderMap, need: Scope) -> Result<String, ApiError> {
    Ok(app.identify(bearer(headers), need)?.actor().to_owned())
}

/// `GET /api/v1/groups`.
pub async fn list_groups(
    State(app): State<App>,
    raw: Result<Query<GroupsQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let q = query(raw)?;
    Ok(Json(
        app.triage(move |store, now| triage::list_groups(store, &q, now))
            .await?,
    ))
}

/// `GET /api/v1/groups/{id}`.
pub async fn get_group(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    Ok(Json(
        app.triage(move |store, now| triage::group(store, &id, now))
            .await?,
    ))
}

/// `PATCH /api/v1/groups/{id}` (scope `triage`).
pub async fn patch_group(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(&app, &headers, Scope::Triage)?;
    let patch: GroupPatch = json_body(&headers, body).await?;
    Ok(Json(
        app.triage(move |store, now| triage::patch_group(store, &id, &patch, &actor, now))
            .await?,
    ))
}

/// `POST /api/v1/groups/{id}/merge` (scope `triage`).
pub async fn merge(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(&app, &headers, Scope::Triage)?;
    let request: MergeRequest = json_body(&headers, body).await?;
    Ok(Json(
        app.triage(move |store, now| triage::merge(store, &id, &request, &actor, now))
            .await?,
    ))
}

/// `POST /api/v1/groups/{id}/unmerge` (scope `triage`).
pub async fn unmerge(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let actor = actor(&app, &headers, Scope::Triage)?;
    let request: UnmergeRequest = json_body(&headers, body).await?;
    Ok(Json(
        app.triage(move |store, now| triage::unmerge(store, &id, &request, &actor, now))
            .await?,
    ))
}

/// `GET /api/v1/groups/{id}/crashes`, newest first.
pub async fn group_crashes(
    State(app): State<App>,
    Path(id): Path<String>,
    raw: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    let q = query(raw)?;
    Ok(Json(
        app.triage(move |store, _| triage::group_crashes(store, &id, &q))
            .await?,
    ))
}

/// `GET /api/v1/releases`.
pub async fn list_releases(
    State(app): State<App>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    Ok(Json(
        app.triage(|store, _| triage::list_releases(store)).await?,
    ))
}

/// `GET /api/v1/releases/{release}`: a full name or `version (build)`.
pub async fn get_release(
    State(app): State<App>,
    Path(release): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Read)?;
    Ok(Json(
        app.triage(move |store, now| triage::release(store, &release, now))
            .await?,
    ))
}

/// `POST /api/v1/releases` (scope `upload`): creates a release or sets its channel,
/// rollout and release date.
pub async fn put_release(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let request: ReleaseRequest = json_body(&headers, body).await?;
    let release = app
        .triage(move |store, _| triage::put_release(store, &request))
        .await?;
    Ok((StatusCode::OK, Json(release)).into_response())
}

/// `POST /api/v1/releases/{release}/sessions` (scope `upload` or `ingest`).
pub async fn add_sessions(
    State(app): State<App>,
    Path(release): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize_any(&app, &headers, &[Scope::Upload, Scope::Ingest])?;
    let request: SessionsRequest = json_body(&headers, body).await?;
    Ok(Json(
        app.triage(move |store, _| triage::add_sessions(store, &release, &request))
            .await?,
    ))
}
