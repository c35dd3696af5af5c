//! The API error type and its wire form.
//!
//! Every failure a client can see is an [`ApiError`]: an HTTP status plus Neutron's
//! `{"NeutronError": {"type", "message", "detail"}}` body, where `type` is the name Neutron
//! gives the exception class (clients and Tempest match on it). 5xx answers log the full
//! cause and send a generic message; this module must never put internal details (SQL, paths)
//! into a 5xx body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

/// A client-visible error.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Neutron's exception name, e.g. `NetworkNotFound`.
    pub kind: Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// Extra detail (Neutron usually sends an empty string).
    pub detail: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.kind,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with an explicit status, type and message.
    pub fn new(
        status: StatusCode,
        kind: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind: kind.into(),
            message: message.into(),
            detail: String::new(),
        }
    }

    /// 400 `InvalidInput`: "Invalid input for operation: ...".
    pub fn invalid_input(msg: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            format!("Invalid input for operation: {msg}."),
        )
    }

    /// 400 `HTTPBadRequest` with a free message: what Neutron raises as
    /// `webob.exc.HTTPBadRequest` (malformed bodies, attribute validation in
    /// `prepare_request_body`, unknown filters and sort keys). Errors Neutron raises as a
    /// neutron-lib exception use that exception's type instead ([`ApiError::invalid_input`],
    /// [`ApiError::bad_request_for`], or [`ApiError::new`] with the class name).
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "HTTPBadRequest", msg)
    }

    /// 400 `BadRequest` (neutron-lib's generic exception): "Bad <resource> request: <msg>.",
    /// e.g. `limit` and `if-match` errors of neutron/api/api_common.py. The message is
    /// formatted as Neutron formats it, trailing period included.
    pub fn bad_request_for(resource: &str, msg: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("Bad {resource} request: {msg}."),
        )
    }

    /// 404 `<Resource>NotFound`, e.g. `NetworkNotFound`: "Network X could not be found.".
    pub fn not_found(resource_title: &str, id: &str) -> Self {
        let kind = format!("{}NotFound", resource_title.replace(' ', ""));
        Self::new(
            StatusCode::NOT_FOUND,
            kind,
            format!("{resource_title} {id} could not be found."),
        )
    }

    /// 409 with a type and message.
    pub fn conflict(kind: impl Into<Cow<'static, str>>, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, msg)
    }

    /// 403 `PolicyNotAuthorized`.
    pub fn forbidden(action: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
            format!("({action}) is disallowed by policy"),
        )
    }

    /// 401 for a missing or invalid token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "HTTPUnauthorized",
            "The request you have made requires authentication.",
        )
    }

    /// 412 when `If-Match: revision_number=N` is stale.
    pub fn precondition_failed(expected: i64, current: i64) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "RevisionNumberConstraintFailed",
            format!("Constrained to {expected}, but current revision is {current}"),
        )
    }

    /// 500 with a generic message; the cause is logged, not sent.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "HTTPInternalServerError",
            "Request Failed: internal server error while processing your request.",
        )
    }

    /// 503 when a resource pool is exhausted or the store is unavailable.
    pub fn unavailable(kind: impl Into<Cow<'static, str>>, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, msg)
    }

    /// Sets the detail text.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// The JSON body Neutron sends.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({"NeutronError": {
            "type": self.kind,
            "message": self.message,
            "detail": self.detail,
        }})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::PoolTimedOut = e {
            return ApiError::unavailable("ServiceUnavailable", "The database is busy, try again.");
        }
        ApiError::internal(format!("database error: {e}"))
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::internal(format!("json error: {e}"))
    }
}
