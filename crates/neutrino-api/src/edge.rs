//! The HTTP edge of the API port: what every request goes through before routing, and every
//! answer before it leaves.
//!
//! - Each request gets its `req-<uuid>` id (`X-Openstack-Request-Id` on the answer) and a
//!   tracing span that covers the whole handler, so every log line of a request, internal
//!   errors included, carries the id the client saw.
//! - The body is read whole before routing, bounded by `[oslo_middleware]
//!   max_request_body_size` (oslo.middleware's option and default, 114688 bytes), whether
//!   its length is declared or chunked; beyond it the answer is 413. Reading it first matters
//!   for keep-alive: an answer given without reading the body (401, 404, 405) leaves hyper
//!   to close the connection without telling the client, whose next request then fails.
//!   When the body is not read whole (413, broken body) the answer says `Connection: close`.
//!   The agent protocol (`/agent/v1`) allows at least [`AGENT_MIN_MAX_BODY`].
//! - Control characters are refused (400) in the URL path and the query before they reach a
//!   handler or the store (PostgreSQL cannot hold NUL in text at all), by the rules of
//!   [`neutrino_core::edge`]; bodies are checked where they are parsed, in
//!   [`common::parse_json`](crate::common::parse_json).
//! - Error answers the framework makes itself (405, 413, extractor rejections) get Neutron's
//!   `{"NeutronError": {...}}` body, with the webob exception name Neutron reports, keeping
//!   their headers (`Allow` on 405). The metadata service (`/metadata`) answers plain text like
//!   Nova's and is left alone.
//!
//! This module knows no resource: it must never consult the store, policy or identity.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use neutrino_core::config::{ConfigError, Ini};
use neutrino_core::edge::{self as core_edge, BodyError, UriProblem};
use neutrino_core::{ApiError, ApiResult};

use crate::RequestId;
use crate::common;

/// Options of this module, for the unknown-option check of the binary.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[("oslo_middleware", "max_request_body_size")];

/// oslo.middleware's default `max_request_body_size`.
pub const DEFAULT_MAX_BODY: usize = core_edge::DEFAULT_MAX_BODY;

/// Limits applied at the edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeConfig {
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// A malformed edge option.
#[derive(Debug, thiserror::Error)]
pub enum EdgeConfigError {
    /// The INI layer refused the value (not a number).
    #[error(transparent)]
    Ini(#[from] ConfigError),
    /// `max_request_body_size` is not a positive number of bytes.
    #[error("invalid value {0} for [oslo_middleware] max_request_body_size: must be at least 1")]
    MaxBody(i64),
}

impl EdgeConfig {
    /// Reads `[oslo_middleware] max_request_body_size` (bytes, at least 1).
    pub fn from_ini(ini: &Ini) -> Result<Self, EdgeConfigError> {
        let n = ini.int(
            "oslo_middleware",
            "max_request_body_size",
            i64::try_from(DEFAULT_MAX_BODY).unwrap_or(i64::MAX),
        )?;
        match usize::try_from(n) {
            Ok(max_body) if max_body > 0 => Ok(EdgeConfig { max_body }),
            _ => Err(EdgeConfigError::MaxBody(n)),
        }
    }
}

/// The edge middleware (outermost layer of [`crate::router`]).
pub(crate) async fn edge(State(cfg): State<EdgeConfig>, req: Request, next: Next) -> Response {
    let id = format!("req-{}", uuid::Uuid::new_v4());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %path);
    let started = std::time::Instant::now();
    let mut resp = handle(cfg, id.clone(), req, next).instrument(span).await;
    tracing::debug!(request_id = %id, %method, %path, status = resp.status().as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX), "request");
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-openstack-request-id", v);
    }
    resp
}

/// Smallest body limit of the agent protocol (`/agent/v1`). It is not Neutron's API: a DHCP
/// agent reports all the ports of its host ready in one request after a restart (about 40
/// bytes a port), which outgrows Neutron's API limit with a few thousand ports. 2 MiB is the
/// limit every route had before the edge enforced Neutron's.
pub const AGENT_MIN_MAX_BODY: usize = 2 * 1024 * 1024;

async fn handle(cfg: EdgeConfig, id: String, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let limit = if parts.uri.path().starts_with("/agent/") {
        cfg.max_body.max(AGENT_MIN_MAX_BODY)
    } else {
        cfg.max_body
    };
    let body = match core_edge::read_body(&parts.headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return body_error(e),
    };
    let plain_text_service = is_metadata_service(parts.uri.path());
    if let Err(e) = check_uri(&parts.uri) {
        return e.into_response();
    }
    parts.extensions.insert(RequestId(id));
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    if plain_text_service {
        resp
    } else {
        neutron_error_body(resp).await
    }
}

fn is_metadata_service(path: &str) -> bool {
    path == "/metadata" || path.starts_with("/metadata/")
}

/// The answer to a body not read whole.
fn body_error(e: BodyError) -> Response {
    let err = match e {
        BodyError::TooLarge => too_large(),
        BodyError::Broken(e) => {
            tracing::info!(error = %e, "request body could not be read");
            ApiError::bad_request("Body contains invalid data")
        }
    };
    // The rest of the body is still on the connection: it cannot carry another request.
    let mut resp = err.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// 413 as oslo.middleware's size limiter words it, in Neutron's body.
fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "HTTPRequestEntityTooLarge",
        "Request is too large.",
    )
}

/// Refuses control characters (and bytes that are not UTF-8) in the decoded path and query,
/// with Neutron's attribute-validation wording.
fn check_uri(uri: &axum::http::Uri) -> ApiResult<()> {
    match core_edge::check_uri(uri) {
        Ok(()) => Ok(()),
        Err(UriProblem::PathNotUtf8) => Err(ApiError::bad_request(
            "Invalid URL: the path is not valid UTF-8",
        )),
        Err(UriProblem::Path) => Err(common::control_characters("URL path")),
        Err(UriProblem::QueryKey) => Err(common::control_characters("query parameter")),
        Err(UriProblem::QueryValue(k)) => Err(common::control_characters(&k)),
    }
}

/// The webob exception Neutron reports for a status, and its message when nothing more
/// specific is known (webob's explanation; oslo.middleware's for 413).
fn webob(status: StatusCode) -> (&'static str, &'static str) {
    const CLIENT: &str = "The server could not comply with the request since\r\nit is either malformed or otherwise incorrect.\r\n";
    match status.as_u16() {
        400 => ("HTTPBadRequest", CLIENT),
        401 => (
            "HTTPUnauthorized",
            "The request you have made requires authentication.",
        ),
        403 => ("HTTPForbidden", "Access was denied to this resource."),
        404 => ("HTTPNotFound", "The resource could not be found."),
        // pecan.abort(405) carries no detail: str() of the exception is the explanation
        // webob's HTTPMethodNotAllowed inherits from HTTPClientError.
        405 => ("HTTPMethodNotAllowed", CLIENT),
        406 => ("HTTPNotAcceptable", CLIENT),
        408 => (
            "HTTPRequestTimeout",
            "The server has waited too long for the request to be sent by the client.",
        ),
        409 => (
            "HTTPConflict",
            "There was a conflict when trying to complete your request.",
        ),
        411 => ("HTTPLengthRequired", "Content-Length header required."),
        413 => ("HTTPRequestEntityTooLarge", "Request is too large."),
        414 => (
            "HTTPRequestURITooLong",
            "The request URI was too long for this server.",
        ),
        415 => (
            "HTTPUnsupportedMediaType",
            "The request media type is not supported by this server.",
        ),
        422 => (
            "HTTPUnprocessableEntity",
            "Unable to process the contained instructions",
        ),
        501 => (
            "HTTPNotImplemented",
            "The request method is not implemented by this server.",
        ),
        503 => (
            "HTTPServiceUnavailable",
            "The server is currently unavailable. Please try again at a later time.",
        ),
        s if s >= 500 => (
            "HTTPInternalServerError",
            "Request Failed: internal server error while processing your request.",
        ),
        _ => ("HTTPClientError", CLIENT),
    }
}

/// Gives an error answer without a JSON body Neutron's body for its status, keeping its
/// headers. The text of a 400 (axum's rejection message) becomes the message; for other
/// statuses webob's wording is used, since the text is the framework's, not Neutron's.
async fn neutron_error_body(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (kind, default_message) = webob(status);
    let message = if status == StatusCode::BAD_REQUEST && !text.is_empty() {
        text
    } else {
        default_message.to_string()
    };
    if status.is_server_error() {
        tracing::error!(status = status.as_u16(), "internal error outside a handler");
    }
    let new = ApiError::new(status, kind, message).into_response();
    let (new_parts, new_body) = new.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &new_parts.headers {
        parts.headers.insert(k.clone(), v.clone());
    }
    Response::from_parts(parts, new_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_checks() {
        let ok = |s: &str| check_uri(&s.parse().unwrap());
        ok("/v2.0/networks?name=a%20b&description=line%0Aline").unwrap();
        for bad in [
            "/v2.0/routers/%00",
            "/v2.0/routers/a%1Fb",
            "/v2.0/ports?device_id=%00",
            "/v2.0/ports?name=%07",
            "/v2.0/ports?%00=x",
            "/v2.0/routers/%FF",
        ] {
            let e = ok(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn max_body_option() {
        let ini = |s: &str| Ini::parse(s, "t").unwrap();
        assert_eq!(EdgeConfig::from_ini(&ini("")).unwrap().max_body, 114_688);
        let c = EdgeConfig::from_ini(&ini("[oslo_middleware]\nmax_request_body_size = 1000\n"));
        assert_eq!(c.unwrap().max_body, 1000);
        EdgeConfig::from_ini(&ini("[oslo_middleware]\nmax_request_body_size = 0\n")).unwrap_err();
        EdgeConfig::from_ini(&ini("[oslo_middleware]\nmax_request_body_size = x\n")).unwrap_err();
    }
}
