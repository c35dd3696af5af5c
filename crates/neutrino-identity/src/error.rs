//! The identity error type and its Keystone wire form.
//!
//! Owns [`IdentityError`] and its rendering as Keystone renders errors:
//! `{"error": {"code", "message", "title"}}` (Tempest reads `error.message` on 401/403).
//! 5xx answers log the cause and send a generic message: this module must never put SQL,
//! password hashes or token values into a response body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use neutrino_core::ApiError;

/// Everything that can go wrong in the identity service.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Malformed or invalid request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Authentication failed or the token is invalid (401). `reason` is logged, not sent.
    #[error("The request you have made requires authentication.")]
    Unauthorized {
        /// Why, for the log.
        reason: String,
    },
    /// The caller lacks the role for `action` (403).
    #[error("You are not authorized to perform the requested action: {action}.")]
    Forbidden {
        /// Keystone's policy name, e.g. `identity:create_project`.
        action: String,
    },
    /// A 403 with a free message (e.g. deleting an enabled domain).
    #[error("{0}")]
    ForbiddenAction(String),
    /// The entity does not exist (404).
    #[error("Could not find {kind}: {id}.")]
    NotFound {
        /// Entity kind: `project`, `user`, `token`, ...
        kind: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// Unique constraint violated (409).
    #[error(
        "Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}."
    )]
    Conflict {
        /// Entity kind.
        kind: &'static str,
        /// The duplicate name.
        name: String,
    },
    /// The store failed (500, or 503 when the pool is exhausted).
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    /// An error from the shared store layer.
    #[error("store error: {0}")]
    Store(#[from] ApiError),
    /// Password hashing failed (500).
    #[error("password hashing failed: {0}")]
    Hash(String),
    /// The external Keystone could not be reached or answered nonsense (503).
    #[error("external identity service: {0}")]
    Remote(String),
}

impl IdentityError {
    /// A 401 with a reason for the log.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        IdentityError::Unauthorized {
            reason: reason.into(),
        }
    }

    /// A 403 for policy `identity:<action>`.
    pub fn forbidden(action: &str) -> Self {
        IdentityError::Forbidden {
            action: format!("identity:{action}"),
        }
    }

    /// A 404 for `kind` `id`.
    pub fn not_found(kind: &'static str, id: &str) -> Self {
        IdentityError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    /// A 400 in Keystone's validation wording.
    pub fn invalid(what: impl std::fmt::Display) -> Self {
        IdentityError::BadRequest(format!(
            "Invalid input: {what}. The server could not comply with the request since it is \
             either malformed or otherwise incorrect. The client is assumed to be in error."
        ))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            IdentityError::BadRequest(_) => StatusCode::BAD_REQUEST,
            IdentityError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            IdentityError::Forbidden { .. } | IdentityError::ForbiddenAction(_) => {
                StatusCode::FORBIDDEN
            }
            IdentityError::NotFound { .. } => StatusCode::NOT_FOUND,
            IdentityError::Conflict { .. } => StatusCode::CONFLICT,
            IdentityError::Db(sqlx::Error::PoolTimedOut) | IdentityError::Remote(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IdentityError::Store(e) => e.status,
            IdentityError::Db(_) | IdentityError::Hash(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message sent to the client (generic for 5xx).
    fn public_message(&self) -> String {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "identity request failed");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                return "The service is temporarily unavailable, try again.".into();
            }
            return "An unexpected error prevented the server from fulfilling your request.".into();
        }
        match self {
            IdentityError::Unauthorized { reason } => {
                tracing::debug!(%reason, "authentication refused");
                self.to_string()
            }
            IdentityError::Store(e) => e.message.clone(),
            _ => self.to_string(),
        }
    }

    /// The error as the network API's [`ApiError`] (token validation failures become 401).
    pub fn into_api_error(self) -> ApiError {
        match self.status() {
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => {
                if let IdentityError::Unauthorized { reason } = &self {
                    tracing::debug!(%reason, "token refused");
                }
                ApiError::unauthorized()
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                tracing::warn!(error = %self, "token validation unavailable");
                ApiError::unavailable(
                    "ServiceUnavailable",
                    "The identity service is unavailable, try again.",
                )
            }
            _ => ApiError::internal(self),
        }
    }
}

/// Keystone's body for an error with `status` and `message`.
pub(crate) fn error_body(status: StatusCode, message: &str) -> serde_json::Value {
    serde_json::json!({"error": {
        "code": status.as_u16(),
        "message": message,
        "title": status.canonical_reason().unwrap_or("Error"),
    }})
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = error_body(status, &self.public_message());
        (status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystone_error_shape() {
        let e = IdentityError::not_found("project", "p1");
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let b = error_body(e.status(), &e.public_message());
        assert_eq!(b["error"]["code"], 404);
        assert_eq!(b["error"]["title"], "Not Found");
        assert_eq!(b["error"]["message"], "Could not find project: p1.");
    }

    #[test]
    fn server_errors_hide_details() {
        let e = IdentityError::Hash("secret detail".into());
        assert!(!e.public_message().contains("secret"));
    }
}
