//! Webhook handlers (scope `admin`): create, list, delete, and a webhook's deliveries.
//! The work runs on the blocking pool through `App::triage` (store reads and writes
//! block), with `webhooks` doing the checks.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::{authorize, body, ApiError};
use crate::app::App;
use crate::auth::Scope;
use crate::webhooks::{self, WebhookRequest};

/// Largest webhook request body.
const MAX_BODY: u64 = 16 * 1024;

/// `POST /api/v1/webhooks` `{"url","events","secret"?}`: 201 with the webhook (without
/// its secret).
pub async fn create(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Admin)?;
    let bytes = body::read_limited(&headers, body, MAX_BODY).await?;
    let request: WebhookRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?;
    let config = app.config().webhooks;
    let created = app
        .triage(move |store, now| webhooks::create(store, request, &config, now))
        .await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// `GET /api/v1/webhooks`.
pub async fn list(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Admin)?;
    Ok(Json(app.triage(|store, _| webhooks::list(store)).await?))
}

/// `DELETE /api/v1/webhooks/{id}`: 204.
pub async fn delete(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&app, &headers, Scope::Admin)?;
    app.triage(move |store, _| webhooks::delete(store, &id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/webhooks/{id}/deliveries`: the latest 200, newest first.
pub async fn deliveries(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Admin)?;
    Ok(Json(
        app.triage(move |store, _| webhooks::deliveries(store, &id))
            .await?,
    ))
}
