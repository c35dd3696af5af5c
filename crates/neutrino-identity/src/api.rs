//! The Keystone HTTP surface: routing, version discovery, the `/v3/auth/*` endpoints, and the
//! extractors shared with the admin handlers ([`Caller`], [`Params`], [`parse_json`]).
//!
//! Every request body is read whole first (bounded, 413 beyond oslo.middleware's limit) and
//! parsed here, never trusted: malformed JSON or control characters (in the body, path or
//! query) are a Keystone-style 400, an absent or invalid `X-Auth-Token` a 401 carrying
//! `WWW-Authenticate`. Handlers stay short:
//! parse, authorize, call the token or store layer, render. This module must never echo a
//! token value or password back to a client or into a log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use neutrino_core::edge;

use crate::error::{IdentityError, error_body};
use crate::store::{self, Target, User};
use crate::token::{TokenInfo, digest, hex};
use crate::{Identity, admin};

/// The authenticated caller of an identity API request.
pub(crate) struct Caller {
    pub(crate) info: Arc<TokenInfo>,
}

impl Caller {
    /// Requires the admin role (on any scope, as Keystone's `admin_required`).
    pub(crate) fn require_admin(&self, action: &str) -> Result<(), IdentityError> {
        if self.info.is_admin() {
            Ok(())
        } else {
            Err(IdentityError::forbidden(action))
        }
    }
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

impl FromRequestParts<Identity> for Caller {
    type Rejection = IdentityError;

    async fn from_request_parts(
        parts: &mut Parts,
        idn: &Identity,
    ) -> Result<Self, Self::Rejection> {
        let token = header_str(&parts.headers, "x-auth-token")
            .ok_or_else(|| IdentityError::unauthorized("no X-Auth-Token"))?;
        let (info, _) = idn.lookup(token).await?;
        Ok(Caller { info })
    }
}

/// Query parameters (last value wins).
pub(crate) struct Params(pub(crate) HashMap<String, String>);

impl Params {
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean flag as Keystone reads it: present and not `0`/`false`/`no`.
    pub(crate) fn flag(&self, k: &str) -> Option<bool> {
        self.get(k).map(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "false" | "no" | "off"
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = IdentityError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| IdentityError::invalid(format!("query string: {e}")))
    }
}

/// Parses a JSON body into `T`, or a Keystone 400. Strings (keys included) holding NUL or a
/// C0 control other than tab and line breaks are refused (`neutrino_core::edge`): PostgreSQL
/// cannot store NUL, and a user name with control characters has no business in a log.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, IdentityError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| IdentityError::invalid(format!("request body: {e}")))?;
    check_strings(&v)?;
    serde_json::from_value(v).map_err(|e| IdentityError::invalid(format!("request body: {e}")))
}

fn check_strings(v: &Value) -> Result<(), IdentityError> {
    let refused = || IdentityError::invalid("NUL and control characters are not allowed");
    match v {
        Value::String(s) if !edge::is_text(s) => Err(refused()),
        Value::Array(items) => items.iter().try_for_each(check_strings),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            if edge::is_line(k) {
                check_strings(x)
            } else {
                Err(refused())
            }
        }),
        _ => Ok(()),
    }
}

/// Outermost layer of the identity port (see `neutrino_core::edge`): reads the body whole
/// within oslo.middleware's default limit before routing, so answers that need no body (a
/// 401 from [`Caller`]) leave a keep-alive connection usable, and refuses control characters
/// in the path and query before they reach the store.
async fn edge_layer(req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let body = match edge::read_body(&parts.headers, body, edge::DEFAULT_MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            let (status, message) = match e {
                edge::BodyError::TooLarge => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "Request is too large.")
                }
                edge::BodyError::Broken(_) => (
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read.",
                ),
            };
            let mut resp = (status, axum::Json(error_body(status, message))).into_response();
            // The rest of the body is still on the connection.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    if edge::check_uri(&parts.uri).is_err() {
        return IdentityError::invalid("NUL and control characters are not allowed in the URL")
            .into_response();
    }
    let resp = next.run(Request::from_parts(parts, Body::from(body))).await;
    keystone_error_body(resp)
}

/// Gives error answers the framework makes without a JSON body (405, extractor
/// rejections) Keystone's `{"error": {...}}`, keeping their headers (`Allow`).
fn keystone_error_body(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return resp;
    }
    let message = match status {
        // werkzeug's description, which Keystone (a Flask application) sends.
        StatusCode::METHOD_NOT_ALLOWED => "The method is not allowed for the requested URL.",
        StatusCode::NOT_FOUND => "The resource could not be found.",
        s if s.is_server_error() => {
            "An unexpected error prevented the server from fulfilling your request."
        }
        _ => {
            "The server could not comply with the request since it is either malformed or \
             otherwise incorrect. The client is assumed to be in error."
        }
    };
    let (mut parts, _) = resp.into_parts();
    let (new_parts, body) = (status, axum::Json(error_body(status, message)))
        .into_response()
        .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (k, v) in &new_parts.headers {
        parts.headers.insert(k.clone(), v.clone());
    }
    Response::from_parts(parts, body)
}

/// A list answer with Keystone's `links`.
pub(crate) fn list(idn: &Identity, key: &str, path: &str, items: Vec<Value>) -> Response {
    axum::Json(json!({
        key: items,
        "links": {
            "self": format!("{}/v3/{path}", idn.cfg().identity_url),
            "previous": null,
            "next": null,
        },
    }))
    .into_response()
}

impl Identity {
    /// The axum router serving the Keystone API (mount at `/` on the identity port).
    pub fn router(&self) -> Router {
        let r = Router::new()
            .route("/", get(versions))
            .route("/v3", get(version))
            .route("/v3/", get(version))
            .route(
                "/v3/auth/tokens",
                post(issue_token).get(check_token).delete(revoke_token),
            )
            .route("/v3/auth/catalog", get(auth_catalog))
            .route("/v3/auth/projects", get(auth_projects))
            .route("/v3/auth/domains", get(auth_domains))
            .route("/v3/auth/system", get(auth_system));
        admin::routes(r)
            .fallback(not_found)
            .layer(axum::middleware::map_response_with_state(
                self.clone(),
                www_authenticate,
            ))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .layer(axum::middleware::from_fn(edge_layer))
            .with_state(self.clone())
    }
}

async fn not_found() -> Response {
    let s = StatusCode::NOT_FOUND;
    (
        s,
        axum::Json(error_body(s, "The resource could not be found.")),
    )
        .into_response()
}

/// Keystone sends `WWW-Authenticate: Keystone uri="..."` with every 401.
async fn www_authenticate(State(idn): State<Identity>, mut resp: Response) -> Response {
    if resp.status() == StatusCode::UNAUTHORIZED {
        let v = format!("Keystone uri=\"{}\"", idn.cfg().identity_url);
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

fn v3_doc(idn: &Identity) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{}/v3/", idn.cfg().identity_url)}],
        "media-types": [{
            "base": "application/json",
            "type": "application/vnd.openstack.identity-v3+json",
        }],
    })
}

/// `GET /`: 300 Multiple Choices with the one version we serve.
async fn versions(State(idn): State<Identity>) -> Response {
    let mut resp = (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({"versions": {"values": [v3_doc(&idn)]}})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/v3/", idn.cfg().identity_url)) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `GET /v3`.
async fn version(State(idn): State<Identity>) -> Response {
    axum::Json(json!({ "version": v3_doc(&idn) })).into_response()
}

// ---- POST /v3/auth/tokens ----

#[derive(Deserialize)]
struct AuthBody {
    auth: AuthReq,
}

#[derive(Deserialize)]
struct AuthReq {
    identity: IdentityReq,
    #[serde(default)]
    scope: Option<Value>,
}

#[derive(Deserialize)]
struct IdentityReq {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordReq>,
    #[serde(default)]
    token: Option<TokenReq>,
}

#[derive(Deserialize)]
struct PasswordReq {
    user: UserReq,
}

#[derive(Deserialize)]
struct UserReq {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NameOrId>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct NameOrId {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct TokenReq {
    id: String,
}

#[derive(Deserialize)]
struct ScopeReq {
    #[serde(default)]
    project: Option<ProjectReq>,
    #[serde(default)]
    domain: Option<NameOrId>,
    #[serde(default)]
    system: Option<Value>,
}

#[derive(Deserialize)]
struct ProjectReq {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    domain: Option<NameOrId>,
}

fn expecting(what: &str, in_what: &str) -> IdentityError {
    IdentityError::BadRequest(format!(
        "Expecting to find {what} in {in_what}. The server could not comply with the request \
         since it is either malformed or otherwise incorrect. The client is assumed to be in \
         error."
    ))
}

/// Finds a domain by id or name; `None` when it does not exist.
async fn find_domain(idn: &Identity, d: &NameOrId) -> Result<Option<String>, IdentityError> {
    let db = idn.db().reader();
    let found = match (&d.id, &d.name) {
        (Some(id), _) => store::get_domain(db, id).await?,
        (None, Some(name)) => store::domain_by_name(db, name).await?,
        (None, None) => return Err(expecting("id or name", "domain")),
    };
    Ok(found.map(|d| d.id))
}

async fn find_auth_user(idn: &Identity, u: &UserReq) -> Result<User, IdentityError> {
    let db = idn.db().reader();
    let user = match (&u.id, &u.name) {
        (Some(id), _) => store::get_user(db, id).await?,
        (None, Some(name)) => {
            let d = u
                .domain
                .as_ref()
                .ok_or_else(|| expecting("domain", "user"))?;
            match find_domain(idn, d).await? {
                Some(did) => store::user_by_name(db, &did, name).await?,
                None => None,
            }
        }
        (None, None) => return Err(expecting("id or name", "user")),
    };
    user.ok_or_else(|| IdentityError::unauthorized("unknown user"))
}

async fn parse_scope(idn: &Identity, scope: ScopeReq) -> Result<Target, IdentityError> {
    let db = idn.db().reader();
    if let Some(p) = scope.project {
        return match (p.id, p.name) {
            (Some(id), _) => Ok(Target::Project(id)),
            (None, Some(name)) => {
                let d = p.domain.ok_or_else(|| expecting("domain", "project"))?;
                let did = find_domain(idn, &d)
                    .await?
                    .ok_or_else(|| IdentityError::unauthorized("unknown project domain"))?;
                let p = store::project_by_name(db, &did, &name)
                    .await?
                    .ok_or_else(|| IdentityError::unauthorized("unknown project"))?;
                Ok(Target::Project(p.id))
            }
            (None, None) => Err(expecting("id or name", "project")),
        };
    }
    if let Some(d) = scope.domain {
        let did = find_domain(idn, &d)
            .await?
            .ok_or_else(|| IdentityError::unauthorized("unknown domain"))?;
        return Ok(Target::Domain(did));
    }
    if let Some(s) = scope.system {
        if s.get("all").and_then(Value::as_bool) == Some(true) {
            return Ok(Target::System);
        }
        return Err(expecting("all", "system"));
    }
    Err(expecting("project, domain or system", "scope"))
}

/// `POST /v3/auth/tokens`: authenticate with a password or a token, for a scope.
async fn issue_token(
    State(idn): State<Identity>,
    q: Params,
    body: Bytes,
) -> Result<Response, IdentityError> {
    let req: AuthBody = parse_json(&body)?;
    let ident = req.auth.identity;
    let mut methods: Vec<String> = Vec::new();
    let (user_id, parent, default_project) = if ident.methods.iter().any(|m| m == "password") {
        let pw = ident
            .password
            .ok_or_else(|| expecting("password", "identity"))?;
        let user = find_auth_user(&idn, &pw.user).await?;
        let given = pw
            .user
            .password
            .ok_or_else(|| expecting("password", "user"))?;
        let ok = match &user.password_hash {
            Some(phc) => idn.passwords().verify(&user.id, phc, &given).await?,
            None => false,
        };
        if !ok {
            return Err(IdentityError::unauthorized(format!(
                "wrong password for user {}",
                user.id
            )));
        }
        methods.push("password".into());
        (user.id, None, user.default_project_id)
    } else if ident.methods.iter().any(|m| m == "token") {
        let t = ident.token.ok_or_else(|| expecting("token", "identity"))?;
        let (info, _) = idn.lookup(&t.id).await?;
        methods.extend(info.methods.iter().cloned());
        if !methods.iter().any(|m| m == "token") {
            methods.push("token".into());
        }
        (info.user_id.clone(), Some(info), None)
    } else {
        return Err(IdentityError::unauthorized(
            "no supported authentication method",
        ));
    };
    let scope = match req.auth.scope {
        Some(Value::String(s)) if s == "unscoped" => None,
        Some(Value::Null) => None,
        Some(v) => {
            let s: ScopeReq = serde_json::from_value(v)
                .map_err(|e| IdentityError::invalid(format!("scope: {e}")))?;
            Some(parse_scope(&idn, s).await?)
        }
        // No scope: Keystone scopes to the user's default project when it has a role there.
        None => match default_project {
            Some(pid) => {
                let t = Target::Project(pid);
                let usable = store::get_project(idn.db().reader(), t.id())
                    .await?
                    .is_some_and(|p| p.enabled)
                    && !idn.effective_roles(&user_id, &t).await?.is_empty();
                usable.then_some(t)
            }
            None => None,
        },
    };
    let parent_audit = parent.as_ref().and_then(|p| p.audit_ids.first().cloned());
    let (token, info) = idn
        .issue(
            &user_id,
            scope,
            methods,
            parent_audit.as_deref(),
            parent.map(|p| p.expires_at),
        )
        .await?;
    let catalog = (!q.0.contains_key("nocatalog")).then(|| idn.catalog().token_catalog());
    let mut resp = (StatusCode::CREATED, axum::Json(info.render(catalog))).into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

/// The subject token of `GET/HEAD/DELETE /v3/auth/tokens`; 404 when it is not valid.
async fn subject(
    idn: &Identity,
    caller: &Caller,
    headers: &HeaderMap,
    action: &str,
) -> Result<(String, Arc<TokenInfo>), IdentityError> {
    let token = header_str(headers, "x-subject-token")
        .ok_or_else(|| expecting("X-Subject-Token", "request headers"))?
        .to_string();
    let info = match idn.lookup(&token).await {
        Ok((info, _)) => info,
        Err(IdentityError::Unauthorized { .. }) => {
            return Err(IdentityError::not_found(
                "token",
                &hex(&digest(&token))[..8],
            ));
        }
        Err(e) => return Err(e),
    };
    let c = &caller.info;
    if !(c.is_admin() || c.has_role("service") || c.user_id == info.user_id) {
        return Err(IdentityError::forbidden(action));
    }
    Ok((token, info))
}

/// `GET /v3/auth/tokens` (and `HEAD`): validate the subject token.
async fn check_token(
    State(idn): State<Identity>,
    caller: Caller,
    q: Params,
    headers: HeaderMap,
) -> Result<Response, IdentityError> {
    let (token, info) = subject(&idn, &caller, &headers, "validate_token").await?;
    let catalog = (!q.0.contains_key("nocatalog")).then(|| idn.catalog().token_catalog());
    let mut resp = axum::Json(info.render(catalog)).into_response();
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

/// `DELETE /v3/auth/tokens`: revoke the subject token.
async fn revoke_token(
    State(idn): State<Identity>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<StatusCode, IdentityError> {
    let (token, _) = subject(&idn, &caller, &headers, "revoke_token").await?;
    idn.revoke(&token).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn auth_catalog(State(idn): State<Identity>, _caller: Caller) -> Response {
    axum::Json(json!({
        "catalog": idn.catalog().token_catalog(),
        "links": {"self": format!("{}/v3/auth/catalog", idn.cfg().identity_url),
                  "previous": null, "next": null},
    }))
    .into_response()
}

async fn auth_projects(
    State(idn): State<Identity>,
    caller: Caller,
) -> Result<Response, IdentityError> {
    let items = admin::user_projects(&idn, &caller.info.user_id).await?;
    Ok(list(&idn, "projects", "auth/projects", items))
}

async fn auth_domains(
    State(idn): State<Identity>,
    caller: Caller,
) -> Result<Response, IdentityError> {
    let db = idn.db().reader();
    let mut items = Vec::new();
    for id in store::targets_of(db, &caller.info.user_id, "domain").await? {
        if let Some(d) = store::get_domain(db, &id).await?.filter(|d| d.enabled) {
            items.push(admin::render_domain(&idn, &d));
        }
    }
    Ok(list(&idn, "domains", "auth/domains", items))
}

async fn auth_system(
    State(idn): State<Identity>,
    caller: Caller,
) -> Result<Response, IdentityError> {
    let db = idn.db().reader();
    let has = !store::targets_of(db, &caller.info.user_id, "system")
        .await?
        .is_empty();
    let items = if has {
        vec![json!({"all": true})]
    } else {
        vec![]
    };
    Ok(list(&idn, "system", "auth/system", items))
}
