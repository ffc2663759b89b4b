//! The HTTP layer: the router in one place, thin handlers, and the one error-to-status
//! map in [`error`]. Only this module knows about HTTP; handlers extract, call one
//! [`App`] method and answer.

mod body;
mod crashes;
mod dsyms;
mod error;
pub mod limits;
mod ops;
mod sentry;
mod triage;
mod ui;
mod webhooks;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::app::{App, Denied};
use crate::auth::Scope;

pub use error::ApiError;

/// Every route crashbox answers.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route(
            "/api/v1/dsyms",
            get(dsyms::list)
                .post(dsyms::upload)
                // Upload bodies are streamed to disk and bounded by our own limit.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/dsyms/{debug_id}", get(dsyms::get))
        .route(
            "/api/v1/crashes",
            post(crashes::ingest)
                // Bounded by `max_crash_bytes` in the handler, with a clear 413.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/crashes/{id}",
            get(crashes::get).delete(crashes::delete),
        )
        .route("/api/v1/crashes/{id}/apple", get(crashes::get_apple))
        .route("/api/v1/groups", get(triage::list_groups))
        .route(
            "/api/v1/groups/{id}",
            get(triage::get_group).patch(triage::patch_group),
        )
        .route("/api/v1/groups/{id}/merge", post(triage::merge))
        .route("/api/v1/groups/{id}/unmerge", post(triage::unmerge))
        .route("/api/v1/groups/{id}/crashes", get(triage::group_crashes))
        .route(
            "/api/v1/releases",
            get(triage::list_releases).post(triage::put_release),
        )
        .route("/api/v1/releases/{release}", get(triage::get_release))
        .route(
            "/api/v1/releases/{release}/sessions",
            post(triage::add_sessions),
        )
        .route(
            "/api/v1/webhooks",
            get(webhooks::list).post(webhooks::create),
        )
        .route("/api/v1/webhooks/{id}", delete(webhooks::delete))
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries),
        )
        // sentry-cli (CI) and Sentry SDKs (devices); `http::sentry` has the details.
        .route(
            "/api/0/organizations/{org}/chunk-upload/",
            get(sentry::chunk_options)
                .post(sentry::put_chunks)
                // Chunks are bounded one by one in the handler.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/0/projects/{org}/{project}/files/difs/assemble/",
            post(sentry::assemble),
        )
        .route(
            "/api/0/projects/{org}/{project}/files/dsyms/unknown/",
            get(sentry::legacy_unknown),
        )
        .route(
            "/api/0/projects/{org}/{project}/files/dsyms/",
            post(sentry::legacy_upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/0/projects/{org}/{project}/files/dsyms/associate/",
            post(sentry::legacy_not_supported),
        )
        .route(
            "/api/0/projects/{org}/{project}/reprocessing/",
            post(sentry::legacy_not_supported),
        )
        .route(
            "/api/{project_id}/envelope/",
            post(sentry::envelope).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/{project_id}/store/",
            post(sentry::store).layer(DefaultBodyLimit::disable()),
        )
        // The web UI (sessions, not bearer tokens; `http::ui`).
        .route("/", get(ui::groups))
        .route("/login", get(ui::login_form).post(ui::login))
        .route("/logout", post(ui::logout))
        .route("/groups/{id}", get(ui::group))
        .route("/groups/{id}/state", post(ui::change_state))
        .route("/groups/{id}/merge", post(ui::merge))
        .route("/groups/{id}/unmerge", post(ui::unmerge))
        .route("/crashes/{id}/apple", get(ui::crash_file))
        .route("/releases", get(ui::releases))
        .route("/releases/{release}", get(ui::release))
        .route("/debug-files", get(ui::debug_files))
        .route("/assets/app.css", get(ui::css))
        .route("/assets/app.js", get(ui::js))
        .route("/assets/icon.svg", get(ui::icon))
        .fallback(ops::not_found)
        .layer(middleware::from_fn_with_state(
            app.clone(),
            limits::min_body_rate,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .with_state(app)
}

/// Counts and logs each request by its route template, never by its raw path or query,
/// which could carry identifiers.
async fn observe(State(app): State<App>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status();
    app.metrics()
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), status.as_str()])
        .inc();
    app.metrics()
        .http_duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        method = %method,
        route = %route,
        status = status.as_u16(),
        elapsed_ms = elapsed.as_millis() as u64,
        "request"
    );
    response
}

/// Checks the bearer token against the scope a route needs.
pub(crate) fn authorize(app: &App, headers: &HeaderMap, need: Scope) -> Result<Scope, ApiError> {
    Ok(app.authorize(bearer(headers), need)?)
}

/// Checks the bearer token against a route that any of `needs` may use: the
/// debug-file list, which `read` browses and `upload` (CI) may check, while `upload`
/// reads nothing else.
pub(crate) fn authorize_any(
    app: &App,
    headers: &HeaderMap,
    needs: &[Scope],
) -> Result<Scope, ApiError> {
    let mut denied = None;
    for &need in needs {
        match app.authorize(bearer(headers), need) {
            Ok(scope) => return Ok(scope),
            // A missing or unknown token fails every scope alike.
            Err(err @ (Denied::Missing | Denied::Unknown)) => return Err(err.into()),
            Err(err) => denied = denied.or(Some(err)),
        }
    }
    Err(denied.unwrap_or(Denied::Missing).into())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
}
