//! The web UI over HTTP: sign-in and the session cookie, CSRF checks on every form,
//! the security headers of every page, and the embedded assets. Pages themselves are
//! built by `web` on the blocking pool.

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Form;

use crate::app::session::{csrf_matches, SignInRefused, Viewer, SESSION_DAYS};
use crate::app::App;
use crate::triage::TriageError;
use crate::web::{self, GroupAnswer, GroupsParams, StateForm};

/// The session cookie's name; the only cookie crashbox sets.
const COOKIE: &str = "crashbox_session";

/// No script but our own file, no inline script or style, nothing from elsewhere, no
/// framing, forms only to this server.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the headers every page carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        // Pages show crash data: never kept by a shared cache or the back-forward cache
        // of a browser someone else uses next.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    secured(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    secured(response)
}

/// An error page for someone signed in (or not), with the status it names.
fn error(viewer: Option<&Viewer>, err: TriageError) -> Response {
    let status = match &err {
        TriageError::NotFound(_) => StatusCode::NOT_FOUND,
        TriageError::Invalid(_) => StatusCode::BAD_REQUEST,
        TriageError::Store(_) | TriageError::Render(_) => {
            tracing::error!(error = %err, "web page failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let message = if status.is_server_error() {
        "The server could not build this page; the log says why.".to_owned()
    } else {
        err.to_string()
    };
    html(status, web::error_page(viewer, status.as_u16(), &message))
}

/// The session secret a request's cookie carries.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
}

/// The `Set-Cookie` of a new session, or of its end (`secret` empty).
fn set_cookie(app: &App, secret: &str) -> HeaderValue {
    let max_age = if secret.is_empty() {
        0
    } else {
        SESSION_DAYS * 86_400
    };
    let secure = if app
        .config()
        .public_url()
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
    {
        "; Secure"
    } else {
        ""
    };
    let cookie =
        format!("{COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&cookie).expect("a cookie of hex digits and fixed text")
}

/// Who is signed in, if anyone.
async fn viewer(app: &App, headers: &HeaderMap) -> Result<Option<Viewer>, Response> {
    let Some(secret) = session_cookie(headers).map(str::to_owned) else {
        return Ok(None);
    };
    app.blocking(move |app| app.viewer(&secret))
        .await
        .map_err(|e| error(None, TriageError::Store(e)))
}

/// Where an anonymous visitor of `path` goes: the sign-in form, then back.
fn to_login(path: &str) -> Response {
    see_other(&web::login_url(path))
}

/// The signed-in viewer, or the redirect to the sign-in form.
async fn signed_in(app: &App, headers: &HeaderMap, path: &str) -> Result<Viewer, Response> {
    match viewer(app, headers).await? {
        Some(viewer) => Ok(viewer),
        None => Err(to_login(path)),
    }
}

/// A page built on the blocking pool, as a response.
async fn page<F>(app: &App, viewer: Viewer, build: F) -> Response
where
    F: FnOnce(&App, &Viewer, i64) -> Result<String, TriageError> + Send + 'static,
{
    let v = viewer.clone();
    match app.page(move |app, now| build(app, &v, now)).await {
        Ok(body) => html(StatusCode::OK, body),
        Err(err) => error(Some(&viewer), err),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`.
pub async fn login_form(
    State(app): State<App>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let next = query.map(|Query(q)| q.next).unwrap_or_default();
    let next = web::safe_next(next.as_deref());
    if let Ok(Some(_)) = viewer(&app, &headers).await {
        return see_other(next);
    }
    match web::login_page(None, next) {
        Ok(body) => html(StatusCode::OK, body),
        Err(err) => error(None, err),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct LoginForm {
    token: String,
    next: String,
}

/// Whether a request came from another site: its browser says so (`Sec-Fetch-Site`), or
/// its `Origin` is not the host it was sent to. Tools that send neither (curl, scripts)
/// are not browsers acting for someone else.
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_none_or(|(_, authority)| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// `POST /login`: a `read`, `triage` or `admin` token opens a session.
pub async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    // Another site must not sign a browser in to a session of its choosing (login
    // CSRF): the victim's triage would then be recorded under the attacker's token.
    if cross_site(&headers) {
        return html(
            StatusCode::FORBIDDEN,
            web::error_page(None, 403, "Sign in from crashbox's own sign-in page."),
        );
    }
    let Ok(Form(form)) = form else {
        return login_refused("The sign-in form was not sent as a form.", "/");
    };
    let next = web::safe_next(Some(&form.next)).to_owned();
    let token = form.token;
    // Signing in again replaces the browser's session: end the old one on the server.
    if let Some(old) = session_cookie(&headers).map(str::to_owned) {
        if let Err(err) = app.blocking(move |app| app.sign_out(&old)).await {
            return error(None, TriageError::Store(err));
        }
    }
    match app.blocking(move |app| app.sign_in(&token)).await {
        Ok(Ok(secret)) => {
            let mut response = see_other(&next);
            response
                .headers_mut()
                .insert(header::SET_COOKIE, set_cookie(&app, &secret));
            response
        }
        Ok(Err(SignInRefused::Unknown)) => {
            login_refused("That token is unknown or was revoked.", &next)
        }
        Ok(Err(SignInRefused::Scope(scope))) => login_refused(
            &format!(
                "A `{scope}` token is for machines and cannot sign in: use a read, triage or admin token."
            ),
            &next,
        ),
        Err(err) => error(None, TriageError::Store(err)),
    }
}

fn login_refused(why: &str, next: &str) -> Response {
    match web::login_page(Some(why), next) {
        Ok(body) => html(StatusCode::UNAUTHORIZED, body),
        Err(err) => error(None, err),
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct CsrfForm {
    csrf: String,
}

/// `POST /logout`: ends the session and clears its cookie.
pub async fn logout(
    State(app): State<App>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let viewer = match viewer(&app, &headers).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    if let Some(viewer) = &viewer {
        let presented = form.map(|Form(f)| f.csrf).unwrap_or_default();
        if !csrf_matches(viewer, &presented) {
            return forbidden_form(viewer);
        }
        if let Some(secret) = session_cookie(&headers).map(str::to_owned) {
            if let Err(err) = app.blocking(move |app| app.sign_out(&secret)).await {
                return error(Some(viewer), TriageError::Store(err));
            }
        }
    }
    let mut response = see_other("/login");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, set_cookie(&app, ""));
    response
}

fn forbidden_form(viewer: &Viewer) -> Response {
    html(
        StatusCode::FORBIDDEN,
        web::error_page(
            Some(viewer),
            403,
            "This form is stale or did not come from this page (its CSRF token does not match your session). Reload the page and try again.",
        ),
    )
}

fn bad_query(viewer: &Viewer, rejection: QueryRejection) -> Response {
    error(Some(viewer), TriageError::Invalid(rejection.body_text()))
}

/// The path and query a request asked for: where a sign-in returns to.
fn asked_for(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |pq| pq.as_str())
}

/// `GET /`: the groups page.
pub async fn groups(
    State(app): State<App>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<GroupsParams>, QueryRejection>,
) -> Response {
    let viewer = match signed_in(&app, &headers, asked_for(&uri)).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let params = match query {
        Ok(Query(params)) => params,
        Err(rejection) => return bad_query(&viewer, rejection),
    };
    page(&app, viewer, move |app, viewer, now| {
        web::groups_page(app, viewer, &params, now)
    })
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct GroupQuery {
    crash: Option<String>,
}

/// `GET /groups/{id}`: a group with a sample crash.
pub async fn group(
    State(app): State<App>,
    Path(id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    query: Result<Query<GroupQuery>, QueryRejection>,
) -> Response {
    let viewer = match signed_in(&app, &headers, asked_for(&uri)).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let crash = match query {
        Ok(Query(q)) => q.crash.filter(|c| !c.trim().is_empty()),
        Err(rejection) => return bad_query(&viewer, rejection),
    };
    let v = viewer.clone();
    match app
        .page(move |app, now| web::group_page(app, &v, &id, crash.as_deref(), now))
        .await
    {
        Ok(GroupAnswer::Page(body)) => html(StatusCode::OK, body),
        Ok(GroupAnswer::Moved(to)) => see_other(&to),
        Err(err) => error(Some(&viewer), err),
    }
}

/// Checks a form's session, scope and CSRF token, runs `change` and returns to the
/// group's page.
async fn group_change<T, F>(
    app: App,
    headers: HeaderMap,
    id: String,
    form: Result<Form<T>, FormRejection>,
    csrf: fn(&T) -> &str,
    change: F,
) -> Response
where
    T: Send + 'static,
    F: FnOnce(&App, &Viewer, &str, &T, i64) -> Result<(), TriageError> + Send + 'static,
{
    let back = format!("/groups/{}", web::path_segment(&id));
    let viewer = match signed_in(&app, &headers, &back).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return error(Some(&viewer), TriageError::Invalid(rejection.body_text()));
        }
    };
    if !csrf_matches(&viewer, csrf(&form)) {
        return forbidden_form(&viewer);
    }
    if !viewer.can_triage() {
        return html(
            StatusCode::FORBIDDEN,
            web::error_page(
                Some(&viewer),
                403,
                "Changing a group needs a triage or admin token; this session's token is read-only.",
            ),
        );
    }
    let v = viewer.clone();
    match app
        .page(move |app, now| change(app, &v, &id, &form, now))
        .await
    {
        Ok(()) => see_other(&back),
        Err(err) => error(Some(&viewer), err),
    }
}

/// `POST /groups/{id}/state`: resolve, ignore or reopen.
pub async fn change_state(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<StateForm>, FormRejection>,
) -> Response {
    group_change(app, headers, id, form, |f| &f.csrf, web::change_state).await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct MergeForm {
    csrf: String,
    groups: String,
}

/// `POST /groups/{id}/merge`: the named groups into this one.
pub async fn merge(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<MergeForm>, FormRejection>,
) -> Response {
    group_change(
        app,
        headers,
        id,
        form,
        |f| &f.csrf,
        |app, viewer, id, f, now| web::merge(app, viewer, id, &f.groups, now),
    )
    .await
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct UnmergeForm {
    csrf: String,
    signature: String,
}

/// `POST /groups/{id}/unmerge`: one signature back to its own group.
pub async fn unmerge(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<UnmergeForm>, FormRejection>,
) -> Response {
    group_change(
        app,
        headers,
        id,
        form,
        |f| &f.csrf,
        |app, viewer, id, f, now| web::unmerge(app, viewer, id, &f.signature, now),
    )
    .await
}

/// `GET /crashes/{id}/apple`: a crash as an Apple `.crash` file, for the session.
pub async fn crash_file(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let asked = format!("/crashes/{}/apple", web::path_segment(&id));
    let viewer = match signed_in(&app, &headers, &asked).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let wanted = id.clone();
    match app.page(move |app, _| web::crash_text(app, &wanted)).await {
        Ok(Some(text)) => {
            let mut response = secured(
                ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
            );
            // The id is hex (it named a stored crash), so it is a safe file name.
            if let Ok(value) =
                HeaderValue::from_str(&format!("attachment; filename=\"{id}.crash\""))
            {
                response
                    .headers_mut()
                    .insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Ok(None) => error(
            Some(&viewer),
            TriageError::NotFound(format!("no crash {id}")),
        ),
        Err(err) => error(Some(&viewer), err),
    }
}

/// `GET /releases`.
pub async fn releases(State(app): State<App>, headers: HeaderMap) -> Response {
    match signed_in(&app, &headers, "/releases").await {
        Ok(viewer) => page(&app, viewer, web::releases_page).await,
        Err(response) => response,
    }
}

/// `GET /releases/{release}`.
pub async fn release(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/releases/{}", web::path_segment(&name));
    match signed_in(&app, &headers, &path).await {
        Ok(viewer) => {
            page(&app, viewer, move |app, viewer, now| {
                web::release_page(app, viewer, &name, now)
            })
            .await
        }
        Err(response) => response,
    }
}

/// `GET /debug-files`.
pub async fn debug_files(State(app): State<App>, headers: HeaderMap) -> Response {
    match signed_in(&app, &headers, "/debug-files").await {
        Ok(viewer) => page(&app, viewer, web::debug_files_page).await,
        Err(response) => response,
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let headers = response.headers_mut();
    // Assets hold no data and change only with the binary.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `GET /assets/app.css`.
pub async fn css() -> Response {
    asset("text/css; charset=utf-8", web::CSS)
}

/// `GET /assets/app.js`.
pub async fn js() -> Response {
    asset("text/javascript; charset=utf-8", web::JS)
}

/// `GET /assets/icon.svg`.
pub async fn icon() -> Response {
    asset("image/svg+xml", web::ICON)
}
