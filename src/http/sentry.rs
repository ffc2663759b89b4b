//! The Sentry-compatible routes (`../shared/protocols/sentry.md`):
//!
//! - sentry-cli: `GET|POST /api/0/organizations/{org}/chunk-upload/`,
//!   `POST /api/0/projects/{org}/{project}/files/difs/assemble/`, and the 2.x legacy
//!   `files/dsyms/unknown/`, `files/dsyms/`, `reprocessing/`, `files/dsyms/associate/`.
//!   `{org}` and `{project}` are labels: crashbox keys debug files by debug id alone.
//! - SDKs: `POST /api/{project_id}/envelope/` and `/api/{project_id}/store/`, with an
//!   ingest token as the DSN's public key; the project id is not checked.
//!
//! sentry-cli parses answers strictly (the protocol page lists what breaks it), so the
//! shapes here follow the real clients, not Sentry's documentation.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{authorize, body, ApiError};
use crate::app::sentry::{AssembleFile, EnvelopeIngestError, ReadEnvelope};
use crate::app::App;
use crate::auth::Scope;
use crate::sentry::envelope::Encoding;
use crate::sentry::is_sha1_hex;

/// Chunks per chunk-upload request the CLI is told to send at most.
const CHUNKS_PER_REQUEST: usize = 64;

/// Largest request the CLI is told to send, unless one chunk needs more (Sentry's).
const MAX_REQUEST_BYTES: u64 = 32 << 20;

/// Upload requests sentry-cli may run at once.
const CONCURRENCY: u32 = 4;

/// Longest `--wait` sentry-cli may poll for, in seconds.
const MAX_WAIT_SECS: u64 = 60;

/// Largest assemble request body: 40-byte checksums, thousands of chunks.
const MAX_ASSEMBLE_BYTES: u64 = 4 << 20;

/// Longest file name an assemble may give (it is kept in the index).
const MAX_NAME_LEN: usize = 1024;

fn max_request_bytes(app: &App) -> u64 {
    MAX_REQUEST_BYTES.max(app.config().sentry.chunk_size.saturating_mul(2))
}

/// `GET /api/0/organizations/{org}/chunk-upload/`: the upload options. The CLI fails on
/// any `Content-Type` but exactly `application/json`, which `Json` sends.
pub async fn chunk_options(
    State(app): State<App>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let sentry = &app.config().sentry;
    // Without `debug_files`, sentry-cli 2.x takes its legacy zip upload; 3.x ignores it.
    let accept: &[&str] = if sentry.accept_debug_files {
        &["debug_files"]
    } else {
        &[]
    };
    Ok(Json(json!({
        // The path the CLI called: relative, so it works behind any proxy.
        "url": uri.path(),
        "chunkSize": sentry.chunk_size,
        "chunksPerRequest": CHUNKS_PER_REQUEST,
        "maxRequestSize": max_request_bytes(&app),
        "maxFileSize": app.config().max_dsym_upload_bytes,
        "maxWait": MAX_WAIT_SECS,
        "concurrency": CONCURRENCY,
        "hashAlgorithm": "sha1",
        // Only gzip: 2.x switches to a `file_brotli` field when `brotli` is listed.
        "compression": ["gzip"],
        "accept": accept,
    })))
}

/// `POST /api/0/organizations/{org}/chunk-upload/`: multipart chunks, field `file_gzip`
/// (each part its own gzip stream) or `file`, each named by its SHA-1. Each is
/// verified and kept as it arrives, so a request holds one chunk in memory at a time.
pub async fn put_chunks(State(app): State<App>, request: Request) -> Result<Response, ApiError> {
    authorize(&app, request.headers(), Scope::Upload)?;
    let limit = max_request_bytes(&app);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!("Request too large: at most {limit} bytes"),
        ));
    }
    let chunk_size = app.config().sentry.chunk_size;
    // gzip of incompressible bytes is a little larger than the bytes.
    let max_part = chunk_size + chunk_size / 64 + 4096;
    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if super::limits::is_too_slow(&e) {
            ApiError::body_too_slow(e)
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let mut parts = 0;
    let mut received: u64 = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(invalid)? {
        let gzip = match field.name() {
            Some("file_gzip") => true,
            Some("file") => false,
            other => {
                return Err(ApiError::bad_request(
                    "invalid_multipart",
                    format!(
                        "unexpected field `{}`: chunks come as `file_gzip` or `file`",
                        other.unwrap_or("").chars().take(64).collect::<String>()
                    ),
                ))
            }
        };
        parts += 1;
        if parts > CHUNKS_PER_REQUEST {
            return Err(ApiError::bad_request(
                "too_many_chunks",
                format!("Too many chunks: at most {CHUNKS_PER_REQUEST} per request"),
            ));
        }
        let name = field.file_name().unwrap_or_default().to_owned();
        let mut bytes = Vec::new();
        while let Some(piece) = field.chunk().await.map_err(invalid)? {
            received += piece.len() as u64;
            if bytes.len() as u64 + piece.len() as u64 > max_part {
                return Err(ApiError::bad_request(
                    "chunk_too_large",
                    format!("Chunk size too large: a chunk is at most {chunk_size} bytes"),
                ));
            }
            if received > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    format!("Request too large: at most {limit} bytes"),
                ));
            }
            bytes.extend_from_slice(&piece);
        }
        app.put_chunk(name, bytes.into(), gzip).await?;
    }
    // sentry-cli ignores the body.
    Ok(StatusCode::OK.into_response())
}

/// One file of an assemble request, as sentry-cli sends it.
#[derive(Debug, Deserialize)]
struct AssembleRequestFile {
    name: String,
    #[serde(default)]
    debug_id: Option<String>,
    #[serde(default)]
    chunks: Vec<String>,
}

/// `POST /api/0/projects/{org}/{project}/files/difs/assemble/`: every requested checksum
/// is answered with `state`, `missingChunks` (always, even empty: the CLI requires it),
/// `detail`, and `dif` once `ok`. Checksums not asked about are never answered (fatal
/// for the CLI).
pub async fn assemble(
    State(app): State<App>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let bytes = body::read_limited(&headers, body, MAX_ASSEMBLE_BYTES).await?;
    let request: std::collections::BTreeMap<String, AssembleRequestFile> =
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("invalid_assemble", format!("not an assemble request: {e}"))
        })?;
    let max_chunks = app
        .config()
        .max_dsym_upload_bytes
        .div_ceil(app.config().sentry.chunk_size.max(1))
        + 1;
    let mut files = Vec::with_capacity(request.len());
    for (checksum, file) in request {
        if !is_sha1_hex(&checksum) || !file.chunks.iter().all(|c| is_sha1_hex(c)) {
            return Err(ApiError::bad_request(
                "invalid_checksum",
                "checksums and chunks are SHA-1s: 40 lowercase hex digits",
            ));
        }
        if file.chunks.len() as u64 > max_chunks {
            return Err(ApiError::bad_request(
                "too_many_chunks",
                format!("a file has at most {max_chunks} chunks"),
            ));
        }
        let name = file
            .name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or("")
            .to_owned();
        if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(ApiError::bad_request(
                "invalid_name",
                format!("a file name is 1 to {MAX_NAME_LEN} printable bytes"),
            ));
        }
        let debug_id = match file.debug_id {
            Some(id) => Some(
                id.parse::<symbolic::common::DebugId>()
                    .map_err(|_| ApiError::bad_request("invalid_debug_id", "not a debug id"))?
                    .to_string()
                    .to_ascii_lowercase(),
            ),
            None => None,
        };
        files.push(AssembleFile {
            checksum,
            name,
            debug_id,
            chunks: file.chunks,
        });
    }
    let answers = app.assemble(files).await?;
    let mut out = Map::new();
    for (checksum, answer) in answers {
        let mut entry = json!({
            "state": answer.state.as_str(),
            "missingChunks": answer.missing_chunks,
            "detail": answer.detail,
        });
        if let (Some(dif), Some(map)) = (answer.dif, entry.as_object_mut()) {
            map.insert("dif".into(), json!(dif));
        }
        out.insert(checksum, entry);
    }
    Ok(Json(Value::Object(out)))
}

/// `GET …/files/dsyms/unknown/?checksums=…&checksums=…` (2.x legacy): which files the
/// server lacks.
pub async fn legacy_unknown(
    State(app): State<App>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let checksums: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "checksums")
        .map(|(_, value)| value.to_ascii_lowercase())
        .filter(|value| is_sha1_hex(value))
        .take(10_000)
        .collect();
    let missing = app.sentry_missing_checksums(checksums).await?;
    Ok(Json(json!({ "missing": missing })))
}

/// `POST …/files/dsyms/` (2.x legacy): a zip of debug files in the multipart field
/// `file`; 201 with a JSON array of what was stored.
pub async fn legacy_upload(
    State(app): State<App>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    authorize(&app, &headers, Scope::Upload)?;
    let limit = app.config().max_dsym_upload_bytes;
    let spooled = body::spool(request, &app.new_upload_path(), limit).await?;
    app.metrics().dsym_upload_bytes.inc_by(spooled.bytes);
    let difs = app.sentry_legacy_upload(spooled.path).await?;
    Ok((StatusCode::CREATED, Json(json!(difs))).into_response())
}

/// Calls sentry-cli 2.x makes after a legacy upload (`reprocessing/`, ≤ 2.32) or before
/// (`files/dsyms/associate/`, ≤ 2.26). It reads 404 as "not supported" and goes on;
/// crashbox re-symbolicates waiting crashes by itself.
pub async fn legacy_not_supported() -> ApiError {
    ApiError::not_found("not needed: crashbox re-symbolicates waiting crashes by itself")
}

/// `POST /api/{project_id}/envelope/`: an SDK envelope.
pub async fn envelope(State(app): State<App>, request: Request) -> Response {
    sdk_intake(app, request, Kind::Envelope)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/{project_id}/store/`: one event as plain JSON (older SDKs).
pub async fn store(State(app): State<App>, request: Request) -> Response {
    sdk_intake(app, request, Kind::Store)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Envelope,
    Store,
}

/// Both SDK routes: rate limits, the DSN key from any of its places, the body, the
/// intake. The answer comes only after every crash in it is durable: the SDK drops the
/// envelope on any answer, 5xx included.
async fn sdk_intake(app: App, request: Request, kind: Kind) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (uri, headers) = (parts.uri, parts.headers);
    // `server::run` puts the connection's peer address on every request.
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Err(wait) = app.sentry_rate_address(peer) {
        return Ok(rate_limited(wait, "organization"));
    }
    let header_key = request_key(&headers, uri.query())?;
    if let Some(key) = &header_key {
        app.authorize(Some(key), Scope::Ingest)?;
        if let Err(wait) = app.sentry_rate_token(key) {
            return Ok(rate_limited(wait, "key"));
        }
    }
    let encoding = Encoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )
    .map_err(EnvelopeIngestError::from)?;
    let bytes = body::read_limited(&headers, body, app.config().sentry.max_envelope_bytes).await?;
    let read: ReadEnvelope = match kind {
        Kind::Envelope => app.read_envelope(bytes, encoding).await?,
        Kind::Store => app.read_store_event(bytes, encoding).await?,
    };
    match (&header_key, &read.dsn_key) {
        (Some(from_headers), Some(from_dsn)) if from_headers != from_dsn => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "conflicting_keys",
                "the DSN keys in the request and in the envelope header differ",
            ))
        }
        (Some(_), _) => {}
        (None, Some(key)) => {
            app.authorize(Some(key), Scope::Ingest)?;
            if let Err(wait) = app.sentry_rate_token(key) {
                return Ok(rate_limited(wait, "key"));
            }
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "no DSN key: send `X-Sentry-Auth: Sentry sentry_key=<ingest token>`",
            ))
        }
    }
    let outcome = app.ingest_envelope(read).await?;
    let body = match outcome.event_id {
        Some(id) => json!({ "id": id }),
        None => json!({}),
    };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// The DSN key a request carries in `X-Sentry-Auth`, `Authorization: Sentry …` or
/// `?sentry_key=`. Several must agree.
fn request_key(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, ApiError> {
    let mut keys: Vec<String> = Vec::new();
    for name in ["x-sentry-auth", "authorization"] {
        if let Some(key) = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| sentry_auth_key(v, name == "x-sentry-auth"))
        {
            keys.push(key);
        }
    }
    if let Some(key) = query.unwrap_or("").split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "sentry_key" && !v.is_empty()).then(|| v.to_owned())
    }) {
        keys.push(key);
    }
    keys.dedup();
    match keys.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(key.clone())),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "conflicting_keys",
            "the request names several different DSN keys",
        )),
    }
}

/// `sentry_key` from `Sentry sentry_version=7, sentry_client=…, sentry_key=…`. The
/// `Sentry ` prefix is required in `Authorization` (where `Bearer` lives too) and
/// optional in `X-Sentry-Auth`.
fn sentry_auth_key(value: &str, prefix_optional: bool) -> Option<String> {
    let value = value.trim();
    let pairs = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("sentry") => rest,
        _ if prefix_optional => value,
        _ => return None,
    };
    pairs
        .split(',')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == "sentry_key")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// 429 with `Retry-After` and the `X-Sentry-Rate-Limits` the SDKs obey (empty
/// categories: every kind of item waits).
fn rate_limited(wait: Duration, scope: &str) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let secs = secs.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("over the rate limit; retry in {secs} s"),
    )
    .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{secs}::{scope}")) {
        headers.insert("x-sentry-rate-limits", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_every_auth_form() {
        let key = |v: &str, optional| sentry_auth_key(v, optional);
        assert_eq!(
            key(
                "Sentry sentry_version=7,sentry_client=x/1,sentry_key=cbx_1",
                false
            )
            .as_deref(),
            Some("cbx_1")
        );
        assert_eq!(
            key("Sentry sentry_key = cbx_2 , sentry_version=7", false).as_deref(),
            Some("cbx_2")
        );
        assert_eq!(key("sentry_key=cbx_3", true).as_deref(), Some("cbx_3"));
        assert_eq!(key("Bearer cbx_4", false), None);

        let mut headers = HeaderMap::new();
        headers.insert("x-sentry-auth", "Sentry sentry_key=a".parse().unwrap());
        assert_eq!(
            request_key(&headers, Some("sentry_key=a"))
                .unwrap()
                .as_deref(),
            Some("a")
        );
        assert!(request_key(&headers, Some("sentry_key=b")).is_err());
        assert_eq!(request_key(&HeaderMap::new(), None).unwrap(), None);
    }
}
