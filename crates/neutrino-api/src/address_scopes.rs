//! `/v2.0/address-scopes` (address-scope extension): create, list, show, update, delete.
//!
//! Owns the address scope document: a name, an IP version and sharing. Subnet pools join a
//! scope through `address_scope_id` (checked by subnetpools.rs with [`get_visible`]); networks
//! show the scopes of their subnets' pools. Sharing is RBAC (`shared=True` is a wildcard
//! `access_as_shared` grant, see rbac.rs); a shared scope cannot be unshared, and a scope
//! that pools still reference cannot be deleted. Neutron's address scopes carry no standard
//! attributes (no description, timestamps, revision or tags), so none are rendered; this
//! module must never render stored keys beyond Neutron's.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::Value;

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, common, rbac};

/// Storage of address scopes.
pub const KIND: Kind = Kind {
    resource: "address_scope",
    table: "address_scopes",
    columns: &[],
};

/// Address scope attributes (neutron-lib api/definitions/address_scope.py).
const ATTRS: &[Attr] = &[
    attr("name", true, true, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
    attr("shared", true, true, Ty::Bool, D::Bool(false)),
    attr("ip_version", true, false, Ty::Int, D::Required),
];

/// The keys of a rendered scope, in Neutron's order.
const OUTPUT: &[&str] = &["id", "name", "project_id", "shared", "ip_version"];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/address-scopes", get(list).post(create))
        .route(
            "/v2.0/address-scopes/{id}",
            get(show).put(update).delete(delete),
        )
}

/// 404 `AddressScopeNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AddressScopeNotFound",
        format!("Address scope {id} could not be found."),
    )
}

/// Whether `ctx` may see `scope` (admin, owner, or shared with the caller's project).
pub fn visible(ctx: &Context, scope: &Obj) -> bool {
    rbac::visible(ctx, scope, &[rbac::SHARED])
}

fn readable(st: &ApiState, ctx: &Context, scope: &Obj) -> bool {
    visible(ctx, scope)
        && st
            .policy
            .check(ctx, "get_address_scope", &rbac::caller_view(ctx, scope))
}

/// Loads a scope the caller can see, or 404 `AddressScopeNotFound`.
pub async fn get_visible<'c, E>(ex: E, st: &ApiState, ctx: &Context, id: &str) -> ApiResult<Obj>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    match db::get(ex, &KIND, id).await? {
        Some(s) if readable(st, ctx, &s) => Ok(s),
        _ => Err(not_found(id)),
    }
}

/// Locks a scope the caller can see for a pool joining it (so the scope cannot be deleted
/// before the pool commits), or 404 `AddressScopeNotFound`.
pub async fn lock_visible(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
) -> ApiResult<Obj> {
    load_for_write(st, ctx, tx, id).await
}

/// The IP version of a stored scope.
pub fn ip_version(scope: &Obj) -> Option<i64> {
    scope.get("ip_version").and_then(Value::as_i64)
}

fn render(ctx: &Context, scope: &Obj) -> Obj {
    let view = rbac::caller_view(ctx, scope);
    let mut out = Obj::new();
    for k in OUTPUT {
        out.insert((*k).into(), view.get(*k).cloned().unwrap_or(Value::Null));
    }
    common::with_tenant(out)
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "address_scope", "address_scopes")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[ATTRS], item)?;
        let version = obj.get("ip_version").and_then(Value::as_i64);
        if !matches!(version, Some(4 | 6)) {
            return Err(ApiError::bad_request(format!(
                "Invalid input for ip_version. Reason: {} is not in [4, 6].",
                attrs::display(obj.get("ip_version").unwrap_or(&Value::Null))
            )));
        }
        common::owner_for_create(&ctx, &mut obj)?;
        common::enforce(&st, &ctx, "create_address_scope", &obj)?;
        // Attribute rules fire only for values that differ from the default.
        let explicit: Obj = obj
            .iter()
            .filter(|(k, v)| !(*k == "shared" && *v == &Value::Bool(false)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        common::enforce_attrs(&st, &ctx, "create_address_scope", &explicit, &obj)?;
        obj.insert("id".into(), Value::String(db::new_id()));
        prepared.push(obj);
    }
    let mut tx = st.db.begin().await?;
    for obj in &mut prepared {
        if obj.get("shared") == Some(&Value::Bool(true)) {
            rbac::grant(&mut tx, "address_scope", obj, rbac::SHARED, rbac::WILDCARD).await?;
        }
        db::create(&mut tx, &KIND, obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared
        .iter()
        .map(|s| Value::Object(render(&ctx, s)))
        .collect();
    Ok(if req.bulk {
        common::created("address_scopes", Value::Array(out))
    } else {
        common::created("address_scope", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's attribute map of the address scope, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "name", "tenant_id", "shared", "ip_version"],
    bools: &["shared"],
    ints: &["ip_version"],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let items: Vec<Obj> = db::list(st.db.reader(), &KIND, None)
        .await?
        .iter()
        .filter(|s| readable(&st, &ctx, s))
        .map(|s| render(&ctx, s))
        .collect();
    let url = format!("{}/v2.0/address-scopes", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "address_scopes", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let scope = get_visible(st.db.reader(), &st, &ctx, &id).await?;
    Ok(common::ok(
        "address_scope",
        Value::Object(query.trim(render(&ctx, &scope))),
    ))
}

async fn load_for_write(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
) -> ApiResult<Obj> {
    match db::get_for_update(tx, &st.db, &KIND, id).await? {
        Some(s) if readable(st, ctx, &s) => Ok(s),
        _ => Err(not_found(id)),
    }
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let mut changes =
        attrs::prepare_update(&[ATTRS], common::parse_update(&body, "address_scope")?)?;
    let mut tx = st.db.begin().await?;
    let mut scope = load_for_write(&st, &ctx, &mut tx, &id).await?;
    let view = rbac::caller_view(&ctx, &scope);
    common::enforce(&st, &ctx, "update_address_scope", &view)?;
    common::enforce_attrs(&st, &ctx, "update_address_scope", &changes, &view)?;
    let before = scope.clone();
    if let Some(shared) = changes.remove("shared") {
        let want = shared == Value::Bool(true);
        if !want && view.get("shared") == Some(&Value::Bool(true)) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "AddressScopeUpdateError",
                format!(
                    "Unable to update address scope {id} : Shared address scope can't be unshared."
                ),
            ));
        }
        if want && !rbac::has_entry(&scope, rbac::SHARED, rbac::WILDCARD) {
            rbac::grant(
                &mut tx,
                "address_scope",
                &mut scope,
                rbac::SHARED,
                rbac::WILDCARD,
            )
            .await?;
        }
    }
    for (k, v) in changes {
        scope.insert(k, v);
    }
    if scope != before {
        db::save(&mut tx, &KIND, &mut scope).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "address_scope",
        Value::Object(render(&ctx, &scope)),
    ))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let mut tx = st.db.begin().await?;
    let scope = load_for_write(&st, &ctx, &mut tx, &id).await?;
    common::enforce(
        &st,
        &ctx,
        "delete_address_scope",
        &rbac::caller_view(&ctx, &scope),
    )?;
    // Every pool counts, also those the caller cannot see (Neutron counts only the caller's;
    // the foreign key would refuse anyway). Pool changes lock the scope row first, so none can
    // join between this count and the delete.
    let pools: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM subnetpools WHERE address_scope_id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
    if pools > 0 {
        return Err(ApiError::conflict(
            "AddressScopeInUse",
            format!(
                "Unable to complete operation on address scope {id}. There are one or more subnet pools in use on the address scope."
            ),
        ));
    }
    rbac::revoke_all(&mut tx, "address_scope", &id).await?;
    db::remove(&mut tx, &KIND, &scope).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_only_neutron_keys() {
        let scope = json!({"id": "s", "name": "n", "project_id": "p", "ip_version": 4,
            "shared": true, "revision_number": 3, "created_at": "x",
            "_rbac": [{"id": "g", "action": rbac::SHARED, "target": "*"}]});
        let ctx = Context {
            project_id: Some("q".into()),
            roles: vec!["member".into()],
            ..Default::default()
        };
        let out = render(&ctx, scope.as_object().unwrap_or(&Obj::new()));
        let mut keys: Vec<&str> = out.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "id",
                "ip_version",
                "name",
                "project_id",
                "shared",
                "tenant_id"
            ]
        );
        assert_eq!(out["shared"], json!(true));
    }
}
