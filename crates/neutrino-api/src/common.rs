//! Plumbing shared by every resource handler: request bodies, `If-Match`, responses, the
//! standard attributes on output, ownership rules, quota checks and policy-driven attribute
//! visibility. Resource modules call these instead of re-implementing Neutron's conventions.
//!
//! Nothing here knows a particular resource's semantics.

use axum::Json;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::ApiState;

/// `scheme://host[:port]` of the request, for links.
pub fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{proto}://{host}")
}

/// A parsed create body: one resource or a bulk list.
#[derive(Debug)]
pub struct CreateBody {
    /// The resources requested.
    pub items: Vec<Obj>,
    /// Whether the request used the bulk (plural) form.
    pub bulk: bool,
}

/// Parses `{"<singular>": {...}}` or `{"<plural>": [{...}, ...]}` with Neutron's messages.
pub fn parse_create(body: &Bytes, singular: &str, plural: &str) -> ApiResult<CreateBody> {
    let v = parse_json(body)?;
    let Value::Object(mut m) = v else {
        return Err(ApiError::bad_request("Body contains invalid data"));
    };
    if let Some(list) = m.remove(plural) {
        let Value::Array(list) = list else {
            return Err(ApiError::bad_request(format!(
                "Object '{plural}' contains invalid data"
            )));
        };
        if list.is_empty() {
            return Err(ApiError::bad_request("Resources required"));
        }
        let mut items = Vec::with_capacity(list.len());
        for item in list {
            let obj = match item {
                Value::Object(mut o) => match o.remove(singular) {
                    Some(Value::Object(inner)) if o.is_empty() => inner,
                    Some(_) => {
                        return Err(ApiError::bad_request(format!(
                            "Object '{singular}' contains invalid data"
                        )));
                    }
                    None => o,
                },
                _ => return Err(ApiError::bad_request("Body contains invalid data")),
            };
            items.push(obj);
        }
        return Ok(CreateBody { items, bulk: true });
    }
    match m.remove(singular) {
        Some(Value::Object(o)) => Ok(CreateBody {
            items: vec![o],
            bulk: false,
        }),
        Some(_) => Err(ApiError::bad_request(format!(
            "Object '{singular}' contains invalid data"
        ))),
        None => Err(ApiError::bad_request(format!(
            "Unable to find '{singular}' in request body"
        ))),
    }
}

/// Parses `{"<singular>": {...}}` for an update.
pub fn parse_update(body: &Bytes, singular: &str) -> ApiResult<Obj> {
    let v = parse_json(body)?;
    let Value::Object(mut m) = v else {
        return Err(ApiError::bad_request("Body contains invalid data"));
    };
    match m.remove(singular) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(ApiError::bad_request(format!(
            "Object '{singular}' contains invalid data"
        ))),
        None => Err(ApiError::bad_request(format!(
            "Unable to find '{singular}' in request body"
        ))),
    }
}

/// Parses JSON text into a value, 400 when it is not JSON or when a string in it (at any
/// depth, keys included) holds a character [`check_text`] refuses. Every request body of
/// the API port is parsed here, so no NUL reaches the store (PostgreSQL cannot hold it).
pub fn parse_json(body: &Bytes) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Resource body required"));
    }
    let v = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))?;
    check_strings(&v, "body")?;
    Ok(v)
}

/// Applies [`check_text`] to every string of `v`, and [`check_line`] to every key, naming
/// the nearest key in the message.
fn check_strings(v: &Value, key: &str) -> ApiResult<()> {
    match v {
        Value::String(s) => check_text(key, s),
        Value::Array(items) => items.iter().try_for_each(|x| check_strings(x, key)),
        Value::Object(m) => m.iter().try_for_each(|(k, x)| {
            check_line("attribute name", k)?;
            check_strings(x, k)
        }),
        _ => Ok(()),
    }
}

// Control characters: the rules and why are in `neutrino_core::edge`.

/// Refuses a one-line string holding a control character (400, naming `what`).
pub fn check_line(what: &str, s: &str) -> ApiResult<()> {
    if !neutrino_core::edge::is_line(s) {
        Err(control_characters(what))
    } else {
        Ok(())
    }
}

/// Refuses free text holding NUL or a C0 control other than tab, LF and CR (400).
pub fn check_text(what: &str, s: &str) -> ApiResult<()> {
    if !neutrino_core::edge::is_text(s) {
        Err(control_characters(what))
    } else {
        Ok(())
    }
}

/// 400 for a string holding a refused character, naming the attribute (or URL part).
pub(crate) fn control_characters(what: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for {what}. Reason: NUL and control characters are not allowed."
    ))
}

/// Reads `If-Match: revision_number=N`. Malformed values are Neutron's `BadRequest`
/// ("Bad if-match request: ...", neutron/api/api_common.py).
pub fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    let vals: Vec<_> = headers.get_all("if-match").iter().collect();
    let mut found = None;
    for v in vals {
        let s = v.to_str().unwrap_or("");
        for part in s.split(',') {
            let part = part.trim().trim_matches('"');
            if let Some(n) = part.strip_prefix("revision_number=") {
                if found.is_some() {
                    return Err(ApiError::bad_request_for(
                        "if-match",
                        "Multiple revision_number etags are not supported.",
                    ));
                }
                found = Some(n.parse::<i64>().map_err(|_| {
                    ApiError::bad_request_for(
                        "if-match",
                        "Revision number etag must be in the format of revision_number=<int>",
                    )
                })?);
            }
            // Other entity tags (`*`, `"abc"`) constrain nothing here, as in Neutron.
        }
    }
    Ok(found)
}

/// Checks an `If-Match` constraint against a stored document.
pub fn check_revision(expected: Option<i64>, obj: &Obj) -> ApiResult<()> {
    let current = obj
        .get("revision_number")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match expected {
        Some(e) if e != current => Err(ApiError::precondition_failed(e, current)),
        _ => Ok(()),
    }
}

/// 201 with `{"<key>": value}`.
pub fn created(key: &str, v: Value) -> Response {
    (StatusCode::CREATED, Json(wrap(key, v))).into_response()
}

/// 200 with `{"<key>": value}`.
pub fn ok(key: &str, v: Value) -> Response {
    (StatusCode::OK, Json(wrap(key, v))).into_response()
}

/// 204 with no body.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `{"key": v}`.
pub fn wrap(key: &str, v: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), v);
    Value::Object(m)
}

/// Prepares a stored document for output: drops internal keys (those starting with `_`, such
/// as the RBAC grants of rbac.rs) and adds `tenant_id` next to `project_id` (Neutron sends
/// both). Every render path calls this, so internal keys never reach clients, filters or
/// `fields=`.
pub fn with_tenant(mut obj: Obj) -> Obj {
    obj.retain(|k, _| !k.starts_with('_'));
    if let Some(p) = obj.get("project_id").cloned() {
        obj.insert("tenant_id".into(), p);
    }
    obj
}

/// Resolves the owner of a new resource: the caller's project, or another project only for
/// admins (Neutron's message otherwise).
pub fn owner_for_create(ctx: &Context, obj: &mut Obj) -> ApiResult<()> {
    match obj.get("project_id").and_then(Value::as_str) {
        Some(p) if !ctx.owns(p) && !ctx.is_admin() => Err(ApiError::bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges",
        )),
        Some(_) => Ok(()),
        None => {
            obj.insert(
                "project_id".into(),
                Value::String(ctx.project().to_string()),
            );
            Ok(())
        }
    }
}

/// Enforces `action` on `target`, answering 403 `PolicyNotAuthorized`.
pub fn enforce(state: &ApiState, ctx: &Context, action: &str, target: &Obj) -> ApiResult<()> {
    if state.policy.check(ctx, action, target) {
        Ok(())
    } else {
        Err(ApiError::forbidden(&format!("rule:{action}")))
    }
}

/// Enforces attribute-level rules `<action>:<attr>` for each attribute present in `request`
/// that has an explicit rule (e.g. `create_network:shared`).
pub fn enforce_attrs(
    state: &ApiState,
    ctx: &Context,
    action: &str,
    request: &Obj,
    target: &Obj,
) -> ApiResult<()> {
    for k in request.keys() {
        let rule = format!("{action}:{k}");
        if state.policy.has_rule(&rule) && !state.policy.check(ctx, &rule, target) {
            return Err(ApiError::forbidden(&format!("rule:{rule}")));
        }
    }
    Ok(())
}

/// Removes attributes the caller may not see (`get_<resource>:<attr>` rules).
pub fn strip_hidden(state: &ApiState, ctx: &Context, resource: &str, target: &Obj, out: &mut Obj) {
    if ctx.is_admin() {
        return;
    }
    let keys: Vec<String> = out.keys().cloned().collect();
    for k in keys {
        let rule = format!("get_{resource}:{k}");
        if state.policy.has_rule(&rule) && !state.policy.check(ctx, &rule, target) {
            out.remove(&k);
        }
    }
}

/// 404 for a resource the caller cannot see, as Neutron answers (no existence leak).
pub fn hidden_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "HTTPNotFound",
        "The resource could not be found.",
    )
}

/// Checks the project's quota for `n` more resources of `kind` (`resource` is the quota name).
pub async fn check_quota(
    state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    resource: &str,
    kind: &Kind,
    project_id: &str,
    n: i64,
) -> ApiResult<()> {
    let limit = crate::quotas::limit_for(state, &mut *tx, project_id, resource).await?;
    if limit < 0 {
        return Ok(());
    }
    let used = db::count_by_project(&mut *tx, kind, project_id).await?;
    if used + n > limit {
        return Err(ApiError::conflict(
            "OverQuota",
            format!("Quota exceeded for resources: ['{resource}']."),
        ));
    }
    Ok(())
}

/// Body of a request that must not have one (DELETE).
pub fn reject_body(body: &Bytes) -> ApiResult<()> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "Request body is not supported in DELETE.",
        ))
    }
}
