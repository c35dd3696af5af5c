//! `/v2.0/networks`: create, list, show, update, delete.
//!
//! Owns the network document and its rules: defaults, sharing, the external flag, port
//! security default, MTU, and deletion (refused while non-DHCP ports remain; DHCP ports and
//! subnets go with the network, in one transaction). Visibility: admins see all; others their
//! project's networks plus shared and external ones. Segments and provider attributes are
//! stored as given by admins; allocation from operator ranges belongs to ML2.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::ListQuery;
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, ports, subnets};

/// Storage of networks.
pub const KIND: Kind = Kind {
    resource: "network",
    table: "networks",
    columns: &[],
};

/// Network attributes beyond the standard ones.
pub const ATTRS: &[Attr] = &[
    attr("admin_state_up", true, true, Ty::Bool, D::Bool(true)),
    attr("shared", true, true, Ty::Bool, D::Bool(false)),
    attr("router:external", true, true, Ty::Bool, D::Bool(false)),
    attr("port_security_enabled", true, true, Ty::Bool, D::Bool(true)),
    attr("mtu", true, true, Ty::IntOrNull, D::None),
    attr(
        "provider:network_type",
        true,
        true,
        Ty::StrOrNull(255),
        D::None,
    ),
    attr(
        "provider:physical_network",
        true,
        true,
        Ty::StrOrNull(64),
        D::None,
    ),
    attr(
        "provider:segmentation_id",
        true,
        true,
        Ty::IntOrNull,
        D::None,
    ),
    attr("segments", true, true, Ty::List, D::None),
    attr(
        "availability_zone_hints",
        true,
        false,
        Ty::List,
        D::EmptyList,
    ),
    attr("is_default", true, true, Ty::Bool, D::Bool(false)),
    attr("dns_domain", true, true, Ty::Str(255), D::None),
    attr("qos_policy_id", true, true, Ty::UuidOrNull, D::None),
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/networks", get(list).post(create))
        .route("/v2.0/networks/{id}", get(show).put(update).delete(delete))
}

/// Whether `ctx` may see network `net` at all.
pub fn visible(ctx: &Context, net: &Obj) -> bool {
    ctx.is_admin()
        || net
            .get("project_id")
            .and_then(Value::as_str)
            .is_some_and(|p| ctx.owns(p))
        || net.get("shared") == Some(&Value::Bool(true))
        || net.get("router:external") == Some(&Value::Bool(true))
}

/// Loads a network the caller can see, or 404 `NetworkNotFound`.
pub async fn get_visible<'c, E>(ex: E, ctx: &Context, id: &str) -> ApiResult<Obj>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    match db::get(ex, &KIND, id).await? {
        Some(n) if visible(ctx, &n) => Ok(n),
        _ => Err(ApiError::not_found("Network", id)),
    }
}

/// The policy target for resources living on `net` (subnets, ports): adds `network:*` keys.
pub fn network_target(net: &Obj, obj: &Obj) -> Obj {
    let mut t = obj.clone();
    let owner = net.get("project_id").cloned().unwrap_or(Value::Null);
    t.insert("network:project_id".into(), owner.clone());
    t.insert("network:tenant_id".into(), owner);
    t.insert(
        "network:shared".into(),
        net.get("shared").cloned().unwrap_or(Value::Bool(false)),
    );
    t.insert(
        "network:router:external".into(),
        net.get("router:external")
            .cloned()
            .unwrap_or(Value::Bool(false)),
    );
    t
}

/// Renders a stored network for `ctx`: adds computed and standard attributes, hides what
/// policy hides.
pub fn render(state: &ApiState, ctx: &Context, net: &Obj, subnets: Vec<Value>) -> Obj {
    let mut out = with_tenant(net.clone());
    out.insert("subnets".into(), Value::Array(subnets));
    out.insert("status".into(), json!("ACTIVE"));
    out.entry("availability_zones").or_insert_with(|| json!([]));
    out.entry("ipv4_address_scope").or_insert(Value::Null);
    out.entry("ipv6_address_scope").or_insert(Value::Null);
    out.entry("l2_adjacency").or_insert(Value::Bool(true));
    out.entry("tags").or_insert_with(|| json!([]));
    common::strip_hidden(state, ctx, "network", net, &mut out);
    out
}

async fn subnet_ids<'c, E>(ex: E, net_id: &str) -> ApiResult<Vec<Value>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM subnets WHERE network_id = $1 ORDER BY id")
            .bind(net_id)
            .fetch_all(ex)
            .await?;
    Ok(ids.into_iter().map(Value::String).collect())
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "network", "networks")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[STANDARD, ATTRS], item)?;
        common::owner_for_create(&ctx, &mut obj)?;
        common::enforce(&st, &ctx, "create_network", &obj)?;
        let explicit: Obj = obj
            .iter()
            .filter(|(k, v)| {
                !(v.is_null()
                    || (*k == "shared" || *k == "router:external" || *k == "is_default")
                        && *v == &Value::Bool(false))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        common::enforce_attrs(&st, &ctx, "create_network", &explicit, &obj)?;
        obj.insert("id".into(), Value::String(db::new_id()));
        obj.insert("tags".into(), json!([]));
        prepared.push(obj);
    }
    let mut tx = st.db.begin().await?;
    for obj in &mut prepared {
        let project = obj["project_id"].as_str().unwrap_or_default().to_string();
        common::check_quota(&st, &mut tx, "network", &KIND, &project, 1).await?;
        crate::ml2::prepare_network(&st, &mut tx, obj).await?;
        db::create(&mut tx, &KIND, obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared
        .iter()
        .map(|n| Value::Object(render(&st, &ctx, n, vec![])))
        .collect();
    Ok(if req.bulk {
        common::created("networks", Value::Array(out))
    } else {
        common::created("network", out.into_iter().next().unwrap_or_default())
    })
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let nets = db::list(st.db.reader(), &KIND, None).await?;
    let pairs: Vec<(String, String)> =
        sqlx::query_as("SELECT network_id, id FROM subnets ORDER BY id")
            .fetch_all(st.db.reader())
            .await?;
    let mut by_net: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for (n, s) in pairs {
        by_net.entry(n).or_default().push(Value::String(s));
    }
    let items: Vec<Obj> = nets
        .iter()
        .filter(|n| visible(&ctx, n))
        .map(|n| {
            let id = n.get("id").and_then(Value::as_str).unwrap_or_default();
            render(&st, &ctx, n, by_net.remove(id).unwrap_or_default())
        })
        .collect();
    let url = format!("{}/v2.0/networks", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "networks", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let net = get_visible(st.db.reader(), &ctx, &id).await?;
    if !st.policy.check(&ctx, "get_network", &net) {
        return Err(ApiError::not_found("Network", &id));
    }
    let subnets = subnet_ids(st.db.reader(), &id).await?;
    let out = query.trim(render(&st, &ctx, &net, subnets));
    Ok(common::ok("network", Value::Object(out)))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let mut changes =
        attrs::prepare_update(&[STANDARD, ATTRS], common::parse_update(&body, "network")?)?;
    let mut tx = st.db.begin().await?;
    let mut net = match db::get_for_update(&mut tx, &st.db, &KIND, &id).await? {
        Some(n) if visible(&ctx, &n) => n,
        _ => return Err(ApiError::not_found("Network", &id)),
    };
    common::check_revision(expected, &net)?;
    common::enforce(&st, &ctx, "update_network", &net)?;
    common::enforce_attrs(&st, &ctx, "update_network", &changes, &net)?;
    // Provider attributes, segments and MTU are ML2's: it refuses what Neutron refuses, moves
    // a VLAN network to another ID, resolves `mtu`, and drops no-op provider keys.
    crate::ml2::update_network(&st, &mut tx, &net, &mut changes).await?;
    if changes.get("shared") == Some(&Value::Bool(false))
        && net.get("shared") == Some(&Value::Bool(true))
    {
        let owner = net
            .get("project_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM ports WHERE network_id = $1 AND project_id <> $2 \
             AND COALESCE(device_owner, '') <> 'network:dhcp'",
        )
        .bind(&id)
        .bind(owner)
        .fetch_one(&mut *tx)
        .await?;
        if others > 0 {
            return Err(ApiError::conflict(
                "InvalidSharedSetting",
                format!(
                    "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."
                ),
            ));
        }
    }
    let mut changed = false;
    for (k, v) in changes {
        if net.get(&k) != Some(&v) {
            net.insert(k, v);
            changed = true;
        }
    }
    if changed {
        db::save(&mut tx, &KIND, &mut net).await?;
    }
    let subnets = subnet_ids(&mut *tx, &id).await?;
    st.db.commit(tx).await?;
    Ok(common::ok(
        "network",
        Value::Object(render(&st, &ctx, &net, subnets)),
    ))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let expected = common::if_match(&headers)?;
    let mut tx = st.db.begin().await?;
    let net = match db::get_for_update(&mut tx, &st.db, &KIND, &id).await? {
        Some(n) if visible(&ctx, &n) => n,
        _ => return Err(ApiError::not_found("Network", &id)),
    };
    common::check_revision(expected, &net)?;
    common::enforce(&st, &ctx, "delete_network", &net)?;
    let ports = db::list(&mut *tx, &ports::KIND, Some(("network_id", &id))).await?;
    if ports
        .iter()
        .any(|p| p.get("device_owner").and_then(Value::as_str) != Some("network:dhcp"))
    {
        return Err(ApiError::conflict(
            "NetworkInUse",
            format!(
                "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
            ),
        ));
    }
    for p in &ports {
        db::remove(&mut tx, &ports::KIND, p).await?;
    }
    for s in db::list(&mut *tx, &subnets::KIND, Some(("network_id", &id))).await? {
        db::remove(&mut tx, &subnets::KIND, &s).await?;
        if let Some(sid) = s.get("id").and_then(Value::as_str) {
            st.ipam_hints.forget(sid);
        }
    }
    crate::ml2::release_network(&st, &mut tx, &net).await?;
    db::remove(&mut tx, &KIND, &net).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}
