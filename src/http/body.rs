//! Request bodies. A debug-file upload can be a gigabyte, so it is never held in memory:
//! chunks go straight to a file under the dsyms dir's `tmp/`, and the size limit is
//! enforced as they arrive (and up front, when `Content-Length` is honest about it).
//! Crash reports are small and bounded, and are read into memory under the same checks.

use std::path::{Path, PathBuf};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWriteExt, BufWriter};

use super::ApiError;

/// An upload body on disk.
pub struct Spooled {
    pub path: PathBuf,
    pub bytes: u64,
    /// The file name a multipart upload gave its `file` field.
    pub file_name: Option<String>,
    /// Form fields other than `file`, for parameters sent as multipart fields.
    pub release: Option<String>,
}

/// Refuses a body whose `Content-Length` is over `limit` before reading any of it.
fn check_declared_length(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit => Err(ApiError::body_too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads a small body (a crash report) into memory, at most `limit` bytes.
pub async fn read_limited(headers: &HeaderMap, body: Body, limit: u64) -> Result<Bytes, ApiError> {
    check_declared_length(headers, limit)?;
    axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            if super::limits::is_too_slow(&e) {
                ApiError::body_too_slow(e)
            } else {
                ApiError::body_too_large(limit)
            }
        })
}

/// Writes the body of `request` (raw or multipart field `file`) to `target`.
pub async fn spool(request: Request, target: &Path, limit: u64) -> Result<Spooled, ApiError> {
    check_declared_length(request.headers(), limit)?;
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        let bytes = write_stream(request.into_body().into_data_stream(), target, limit).await?;
        return Ok(Spooled {
            path: target.to_owned(),
            bytes,
            file_name: None,
            release: None,
        });
    }

    let mut multipart = Multipart::from_request(request, &())
        .await
        .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
    let mut spooled: Option<Spooled> = None;
    let result = read_fields(&mut multipart, target, limit, &mut spooled).await;
    if result.is_err() && spooled.is_some() {
        // The file field made it to disk before a later field was refused.
        let _ = tokio::fs::remove_file(target).await;
    }
    let release = result?;
    let mut spooled = spooled.ok_or_else(|| {
        ApiError::bad_request("invalid_multipart", "multipart upload has no `file` field")
    })?;
    spooled.release = release;
    Ok(spooled)
}

/// Largest multipart text field (`release`), in bytes: a release name is well under
/// 256 bytes, and the field is kept in memory and in the debug-file index.
pub const MAX_TEXT_FIELD_BYTES: usize = 1024;

/// Most bytes of fields crashbox does not use (unknown names, a second `file`), read
/// and dropped; past it the upload is refused rather than streamed for nothing.
pub const MAX_IGNORED_FIELD_BYTES: u64 = 64 << 10;

/// Most fields in one multipart upload.
pub const MAX_FIELDS: usize = 16;

/// Reads every field: `file` to `target`, `release` (bounded) into memory, the rest
/// dropped within [`MAX_IGNORED_FIELD_BYTES`]. Returns the release.
async fn read_fields(
    multipart: &mut Multipart,
    target: &Path,
    limit: u64,
    spooled: &mut Option<Spooled>,
) -> Result<Option<String>, ApiError> {
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if super::limits::is_too_slow(&e) {
            ApiError::body_too_slow(e)
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let mut release = None;
    let mut fields = 0;
    let mut ignored: u64 = 0;
    while let Some(mut field) = multipart.next_field().await.map_err(invalid)? {
        fields += 1;
        if fields > MAX_FIELDS {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_fields",
                format!("a multipart upload has at most {MAX_FIELDS} fields"),
            ));
        }
        match field.name() {
            Some("file") if spooled.is_none() => {
                let file_name = field.file_name().map(str::to_owned);
                let bytes = write_stream(field, target, limit).await?;
                *spooled = Some(Spooled {
                    path: target.to_owned(),
                    bytes,
                    file_name,
                    release: None,
                });
            }
            Some("release") => {
                // Chunk by chunk, so a 256 MiB field costs at most the cap in memory.
                let mut text = Vec::new();
                while let Some(chunk) = field.chunk().await.map_err(invalid)? {
                    if text.len() + chunk.len() > MAX_TEXT_FIELD_BYTES {
                        return Err(ApiError::new(
                            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                            "field_too_large",
                            format!(
                                "the multipart field `release` exceeds {MAX_TEXT_FIELD_BYTES} bytes"
                            ),
                        ));
                    }
                    text.extend_from_slice(&chunk);
                }
                let text = String::from_utf8(text).map_err(|_| {
                    ApiError::bad_request("invalid_release", "the `release` field is not UTF-8")
                })?;
                release = Some(text);
            }
            _ => {
                while let Some(chunk) = field.chunk().await.map_err(invalid)? {
                    ignored += chunk.len() as u64;
                    if ignored > MAX_IGNORED_FIELD_BYTES {
                        return Err(ApiError::new(
                            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                            "field_too_large",
                            format!(
                                "multipart fields other than `file` and `release` exceed {MAX_IGNORED_FIELD_BYTES} bytes"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(release)
}

async fn write_stream<S, E>(stream: S, target: &Path, limit: u64) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let result = write_stream_inner(stream, target, limit).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(target).await;
    }
    result
}

async fn write_stream_inner<S, E>(mut stream: S, target: &Path, limit: u64) -> Result<u64, ApiError>
where
    S: Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let file = tokio::fs::File::create(target)
        .await
        .map_err(ApiError::internal)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut written: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if super::limits::is_too_slow(&e) {
                ApiError::body_too_slow(e)
            } else {
                ApiError::bad_request("body_read_failed", format!("reading the body failed: {e}"))
            }
        })?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::body_too_large(limit));
        }
        out.write_all(&chunk).await.map_err(ApiError::internal)?;
    }
    out.flush().await.map_err(ApiError::internal)?;
    Ok(written)
}
