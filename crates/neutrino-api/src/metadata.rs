//! `/v2.0/instance-metadata`: the data an operator attaches to an instance for the metadata
//! service (neutrino's own resource; with Nova, Nova keeps this data itself).
//!
//! Owns the instance data document — name, hostname, availability zone, public keys, user
//! data and key/value metadata — keyed by the instance id, which is the `device_id` of the
//! instance's ports (a Nova server id, or `probe-<name>` for probes). `PUT` creates or
//! replaces it; admins or the owning project may read, replace and delete it. When the
//! instance has ports, the document belongs to the ports' project, so no project can attach
//! data (user data runs as root in the guest) to another project's instance.
//!
//! This module must never serve the data to instances: metadata_service.rs does that, after
//! checking the proxy's signature, and re-checks that the document's project is the
//! instance's.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::ListQuery;
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, common, ports, quotas};

/// Storage of instance data documents (`id` is the instance id).
pub const KIND: Kind = Kind {
    resource: "instance_metadata",
    table: "instance_metadata",
    columns: &[],
};

/// Largest user data accepted, in bytes (Nova's limit on the encoded form).
pub const MAX_USER_DATA: usize = 65535;
/// Most `meta` items per instance (Nova's default `metadata_items` quota).
const MAX_META_ITEMS: usize = 128;
/// Longest `meta` key or value (Nova's limit).
const MAX_META_LEN: usize = 255;
/// Most public keys per instance.
const MAX_KEYS: usize = 100;
/// Longest public key text.
const MAX_KEY_LEN: usize = 16384;

/// Accepted attributes of the document.
const ATTRS: &[Attr] = &[
    attr("instance_id", true, false, Ty::Str(255), D::None),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
    attr("name", true, false, Ty::StrOrNull(255), D::Null),
    attr("hostname", true, false, Ty::StrOrNull(255), D::Null),
    attr(
        "availability_zone",
        true,
        false,
        Ty::StrOrNull(255),
        D::Null,
    ),
    attr("public_keys", true, false, Ty::Dict, D::EmptyDict),
    attr(
        "user_data",
        true,
        false,
        Ty::StrOrNull(MAX_USER_DATA),
        D::Null,
    ),
    attr("meta", true, false, Ty::Dict, D::EmptyDict),
];

/// The keys of a rendered document, in order.
const OUTPUT: &[&str] = &[
    "instance_id",
    "project_id",
    "name",
    "hostname",
    "availability_zone",
    "public_keys",
    "user_data",
    "meta",
    "created_at",
    "updated_at",
    "revision_number",
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/instance-metadata", get(list))
        .route(
            "/v2.0/instance-metadata/{id}",
            get(show).put(put).delete(delete),
        )
}

/// 404 `InstanceMetadataNotFound`.
fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InstanceMetadataNotFound",
        format!("Instance metadata {id} could not be found."),
    )
}

fn bad(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// An instance id is a path segment: non-empty, at most 255 characters, printable.
fn check_instance_id(id: &str) -> ApiResult<()> {
    if id.is_empty() || id.len() > 255 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(bad(
            "instance_id",
            format!("'{id}' is not a valid instance id"),
        ));
    }
    Ok(())
}

/// A host name as guests accept it: dot-separated labels of letters, digits and `-`, none
/// empty, starting or ending with `-`, or longer than 63 characters.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Checks what [`attrs::prepare_create`] leaves to the service: host name syntax and the
/// shapes of `public_keys` and `meta`.
fn validate(obj: &Obj) -> ApiResult<()> {
    if let Some(h) = obj.get("hostname").and_then(Value::as_str)
        && !valid_hostname(h)
    {
        return Err(bad("hostname", format!("'{h}' is not a valid hostname")));
    }
    if let Some(Value::Object(keys)) = obj.get("public_keys") {
        if keys.len() > MAX_KEYS {
            return Err(bad("public_keys", format!("more than {MAX_KEYS} keys")));
        }
        for (name, key) in keys {
            if name.is_empty() || name.len() > 255 || name.contains(['\n', '\r', '=', '/']) {
                return Err(bad(
                    "public_keys",
                    format!("'{name}' is not a valid key name"),
                ));
            }
            match key {
                Value::String(k) if !k.trim().is_empty() && k.len() <= MAX_KEY_LEN => {}
                other => {
                    return Err(bad(
                        "public_keys",
                        format!(
                            "the key of '{name}' must be a non-empty string, not '{}'",
                            attrs::display(other)
                        ),
                    ));
                }
            }
        }
    }
    if let Some(Value::Object(meta)) = obj.get("meta") {
        if meta.len() > MAX_META_ITEMS {
            return Err(bad("meta", format!("more than {MAX_META_ITEMS} items")));
        }
        for (k, v) in meta {
            if k.is_empty() || k.len() > MAX_META_LEN {
                return Err(bad(
                    "meta",
                    format!("keys must have 1 to {MAX_META_LEN} characters"),
                ));
            }
            match v {
                Value::String(s) if s.len() <= MAX_META_LEN => {}
                other => {
                    return Err(bad(
                        "meta",
                        format!(
                            "the value of '{k}' must be a string of at most {MAX_META_LEN} characters, not '{}'",
                            attrs::display(other)
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The ports of an instance: `device_id` = the instance id and a compute `device_owner`
/// (`compute:<zone>`, as Nova sets it; routers and DHCP ports also have device ids), ordered
/// by id.
pub async fn instance_ports<'c, E>(ex: E, instance_id: &str) -> ApiResult<Vec<Obj>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let mut found = db::list(ex, &ports::KIND, Some(("device_id", instance_id))).await?;
    found.retain(|p| {
        p.get("device_owner")
            .and_then(Value::as_str)
            .is_some_and(|o| o.starts_with("compute:"))
    });
    Ok(found)
}

/// The project of an instance's ports, if it has any.
fn ports_project(ports: &[Obj]) -> Option<String> {
    ports
        .iter()
        .find_map(|p| p.get("project_id").and_then(Value::as_str))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}

fn project_of(doc: &Obj) -> &str {
    doc.get("project_id").and_then(Value::as_str).unwrap_or("")
}

fn render(doc: &Obj) -> Obj {
    let mut out = Obj::new();
    for k in OUTPUT {
        let v = match *k {
            "instance_id" => doc.get("id"),
            _ => doc.get(*k),
        };
        out.insert((*k).into(), v.cloned().unwrap_or(Value::Null));
    }
    common::with_tenant(out)
}

fn readable(st: &ApiState, ctx: &Context, doc: &Obj) -> bool {
    st.policy.check(ctx, "get_instance_metadata", doc)
}

/// `PUT /v2.0/instance-metadata/{id}`: create (201) or replace (200) the document.
async fn put(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    check_instance_id(&id)?;
    let item = common::parse_update(&body, "instance_metadata")?;
    let mut obj = attrs::prepare_create(&[ATTRS], item)?;
    if let Some(given) = obj.remove("instance_id")
        && given.as_str() != Some(id.as_str())
    {
        return Err(bad(
            "instance_id",
            format!(
                "'{}' does not match the instance id in the URL",
                attrs::display(&given)
            ),
        ));
    }
    validate(&obj)?;
    let explicit = obj
        .remove("project_id")
        .and_then(|v| v.as_str().map(str::to_string));
    if let Some(p) = &explicit
        && !ctx.owns(p)
        && !ctx.is_admin()
    {
        return Err(ApiError::bad_request(
            "Specifying 'project_id' or 'tenant_id' other than the authenticated project in request requires admin privileges",
        ));
    }

    let mut tx = st.db.begin().await?;
    let existing = db::get_for_update(&mut tx, &st.db, &KIND, &id).await?;
    let instance_project = ports_project(&instance_ports(&mut *tx, &id).await?);
    // Another project's instance or document is not there for a non-admin.
    let current_owner = existing
        .as_ref()
        .map(|d| project_of(d).to_string())
        .or_else(|| instance_project.clone());
    if !ctx.is_admin() && current_owner.as_deref().is_some_and(|p| !ctx.owns(p)) {
        return Err(not_found(&id));
    }
    let owner = explicit
        .or(current_owner)
        .unwrap_or_else(|| ctx.project().to_string());
    if let Some(ip) = &instance_project
        && *ip != owner
    {
        return Err(bad(
            "project_id",
            format!("instance {id} belongs to project {ip}, not {owner}"),
        ));
    }
    obj.insert("id".into(), Value::String(id.clone()));
    obj.insert("project_id".into(), Value::String(owner));
    let created = match existing {
        Some(old) => {
            common::enforce(&st, &ctx, "update_instance_metadata", &old)?;
            common::enforce(&st, &ctx, "update_instance_metadata", &obj)?;
            for k in ["created_at", "revision_number"] {
                if let Some(v) = old.get(k) {
                    obj.insert(k.into(), v.clone());
                }
            }
            db::save(&mut tx, &KIND, &mut obj).await?;
            false
        }
        None => {
            common::enforce(&st, &ctx, "create_instance_metadata", &obj)?;
            // Every instance has a port, so a project never needs more documents than its
            // port quota allows ports; the bound keeps junk documents from growing forever.
            let owner = project_of(&obj).to_string();
            let limit = quotas::limit_for(&st, &mut tx, &owner, "port").await?;
            if limit >= 0 && db::count_by_project(&mut *tx, &KIND, &owner).await? >= limit {
                return Err(ApiError::conflict(
                    "OverQuota",
                    "Quota exceeded for resources: ['instance_metadata'].",
                ));
            }
            db::create(&mut tx, &KIND, &mut obj).await?;
            true
        }
    };
    st.db.commit(tx).await?;
    let out = Value::Object(render(&obj));
    Ok(if created {
        common::created("instance_metadata", out)
    } else {
        common::ok("instance_metadata", out)
    })
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let items: Vec<Obj> = db::list(st.db.reader(), &KIND, None)
        .await?
        .iter()
        .filter(|d| readable(&st, &ctx, d))
        .map(render)
        .collect();
    let url = format!("{}/v2.0/instance-metadata", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "instance_metadata", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    match db::get(st.db.reader(), &KIND, &id).await? {
        Some(d) if readable(&st, &ctx, &d) => Ok(common::ok(
            "instance_metadata",
            Value::Object(query.trim(render(&d))),
        )),
        _ => Err(not_found(&id)),
    }
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let mut tx = st.db.begin().await?;
    let doc = match db::get_for_update(&mut tx, &st.db, &KIND, &id).await? {
        Some(d) if readable(&st, &ctx, &d) => d,
        _ => return Err(not_found(&id)),
    };
    common::enforce(&st, &ctx, "delete_instance_metadata", &doc)?;
    db::remove(&mut tx, &KIND, &doc).await?;
    st.db.commit(tx).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["vm1", "web-1.example.org", "a"] {
            assert!(valid_hostname(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "under_score",
            "sp ace",
            &"x".repeat(64),
        ] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
