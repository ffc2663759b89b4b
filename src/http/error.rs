//! The one place where errors become HTTP statuses. Every error body has the shape
//! `{"error":{"code","message"}}`, plus details where the error carries them.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::app::sentry::EnvelopeIngestError;
use crate::app::Denied;
use crate::debug_files::IngestError;
use crate::intake::IntakeError;
use crate::report::ParseErrorKind;
use crate::sentry::chunks::ChunkError;
use crate::sentry::envelope::EnvelopeError;
use crate::store::StoreError;
use crate::triage::TriageError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn body_too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body exceeds the limit of {limit} bytes"),
        )
    }

    /// A request body that fell below the minimum rate (`http::limits::MinRate`).
    pub fn body_too_slow(err: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            err.to_string(),
        )
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(map)) = (self.details, error.as_object_mut()) {
            if let Some(details) = details.as_object() {
                for (k, v) in details {
                    map.insert(k.clone(), v.clone());
                }
            }
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        // These are answered before the request body is read. hyper then drops the
        // connection, and a client that pools it would fail its next request on a
        // dead socket; saying so up front keeps keep-alive clients honest.
        if matches!(
            self.status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::PAYLOAD_TOO_LARGE
                | StatusCode::REQUEST_TIMEOUT
        ) {
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        let status = match denied {
            Denied::Missing | Denied::Unknown => StatusCode::UNAUTHORIZED,
            Denied::Scope { .. } => StatusCode::FORBIDDEN,
        };
        let code = match denied {
            Denied::Missing => "missing_token",
            Denied::Unknown => "invalid_token",
            Denied::Scope { .. } => "insufficient_scope",
        };
        ApiError::new(status, code, denied.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            // The write was not committed (the writer failed the batch or is gone): the
            // client must retry, not trust it.
            StoreError::Writer(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_durable",
                err.to_string(),
            ),
            err => ApiError::internal(err),
        }
    }
}

impl From<TriageError> for ApiError {
    fn from(err: TriageError) -> Self {
        let status = match err {
            TriageError::Store(store) => return store.into(),
            TriageError::NotFound(_) => StatusCode::NOT_FOUND,
            TriageError::Invalid(_) => StatusCode::BAD_REQUEST,
            TriageError::Render(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, err.code(), err.to_string())
    }
}

impl From<IntakeError> for ApiError {
    fn from(err: IntakeError) -> Self {
        match err {
            IntakeError::Store(err) => err.into(),
            IntakeError::Parse(ref parse) => {
                let status = match parse.kind {
                    ParseErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                    ParseErrorKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    _ => StatusCode::BAD_REQUEST,
                };
                let format = parse.format.map(|f| f.name());
                ApiError {
                    status,
                    code: err.code(),
                    message: err.to_string(),
                    details: Some(json!({ "format": format })),
                }
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(err: IngestError) -> Self {
        let status = match &err {
            IngestError::Empty
            | IngestError::UnsupportedFormat { .. }
            | IngestError::InvalidZip(_)
            | IngestError::UnsafePath { .. }
            | IngestError::Symlink { .. } => StatusCode::BAD_REQUEST,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Malformed(_) | IngestError::NoDebugFiles { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            IngestError::Io(_) | IngestError::Store(_) => return ApiError::internal(err),
        };
        let details = match &err {
            IngestError::NoDebugFiles { skipped, errors } => {
                Some(json!({"skipped": skipped, "errors": errors}))
            }
            _ => None,
        };
        ApiError {
            status,
            code: err.code(),
            message: err.to_string(),
            details,
        }
    }
}

impl From<ChunkError> for ApiError {
    fn from(err: ChunkError) -> Self {
        match err {
            ChunkError::Io(_) => ApiError::internal(err),
            // sentry-cli prints the message; Sentry answers these with 400.
            err => ApiError::bad_request(err.code(), err.to_string()),
        }
    }
}

impl From<EnvelopeError> for ApiError {
    fn from(err: EnvelopeError) -> Self {
        let status = match err {
            EnvelopeError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            EnvelopeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            EnvelopeError::Decompress(_) | EnvelopeError::Malformed(_) => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, err.code(), err.to_string())
    }
}

impl From<EnvelopeIngestError> for ApiError {
    fn from(err: EnvelopeIngestError) -> Self {
        match err {
            EnvelopeIngestError::Envelope(err) => err.into(),
            EnvelopeIngestError::Intake(err) => err.into(),
        }
    }
}
