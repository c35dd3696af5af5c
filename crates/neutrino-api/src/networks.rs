//! `/v2.0/networks`: create, list, show, update, delete.
//!
//! Owns the network document and its rules: defaults, sharing, the external flag, port
//! security default, MTU, and deletion (refused while non-DHCP ports remain; DHCP ports,
//! subnets and RBAC grants go with the network, in one transaction). Segments and provider
//! attributes are stored as given by admins; allocation from operator ranges belongs to ML2.
//!
//! Sharing is RBAC (rbac.rs): `shared=True` is an `access_as_shared` grant to `*`,
//! `router:external=True` an `access_as_external` grant to `*` (plus the stored external
//! flag, which per-project external grants also set). Visibility: admins, the owner, and
//! projects holding a shared or external grant (or the wildcard). `shared` is rendered per
//! caller, as Neutron computes it; the stored `shared` means "shared with everyone".
//! `ipv4_address_scope`/`ipv6_address_scope` come from the scopes of the subnets' pools.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Source, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, listing, ports, rbac, subnets};

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
    // No `dns_domain` (dns-integration) nor `qos_policy_id` (qos): we announce neither
    // extension, so Neutron's attribute map has neither and refuses them as unrecognized.
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/networks", get(list).post(create))
        .route("/v2.0/networks/{id}", get(show).put(update).delete(delete))
}

/// Whether `ctx` may see network `net` at all: admins, the owner, and projects the network is
/// shared with or made external for (Neutron's RBAC query hook for networks).
pub fn visible(ctx: &Context, net: &Obj) -> bool {
    rbac::visible(ctx, net, &[rbac::SHARED, rbac::EXTERNAL])
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
///
/// `network:shared` follows Neutron's `field:networks:shared` check. A port has no `shared`
/// of its own, so Neutron looks at the network as the port's project sees it: shared with that
/// project or with everyone. A subnet has its own `shared`, computed for the caller; callers
/// only reach a subnet's policy after [`visible`], and given that, "shared with the caller"
/// and "shared with anyone" decide the subnet rules (`get_subnet`: owner, shared, external
/// or network owner) identically, so subnets (documents with `cidr` or `ip_version`) use
/// the latter.
pub fn network_target(net: &Obj, obj: &Obj) -> Obj {
    let mut t = obj.clone();
    let owner = net.get("project_id").cloned().unwrap_or(Value::Null);
    t.insert("network:project_id".into(), owner.clone());
    t.insert("network:tenant_id".into(), owner);
    let shared = if obj.contains_key("cidr") || obj.contains_key("ip_version") {
        rbac::entries(net).any(|(_, action, _)| action == rbac::SHARED)
    } else {
        let project = obj
            .get("project_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        rbac::grants(net, rbac::SHARED, project)
    };
    t.insert("network:shared".into(), Value::Bool(shared));
    t.insert(
        "network:router:external".into(),
        net.get("router:external")
            .cloned()
            .unwrap_or(Value::Bool(false)),
    );
    t
}

/// Renders a stored network for `ctx`: adds computed and standard attributes (`shared` as the
/// caller sees it, the address scopes of its subnets' pools), hides what policy hides.
pub fn render(
    state: &ApiState,
    ctx: &Context,
    net: &Obj,
    subnets: Vec<Value>,
    scopes: Option<&Scopes>,
) -> Obj {
    let view = rbac::caller_view(ctx, net);
    let mut out = with_tenant(view.clone());
    out.insert("subnets".into(), Value::Array(subnets));
    out.insert("status".into(), json!("ACTIVE"));
    out.entry("availability_zones").or_insert_with(|| json!([]));
    let [v4, v6] = scopes.cloned().unwrap_or_default();
    out.insert(
        "ipv4_address_scope".into(),
        v4.map_or(Value::Null, Value::String),
    );
    out.insert(
        "ipv6_address_scope".into(),
        v6.map_or(Value::Null, Value::String),
    );
    out.entry("l2_adjacency").or_insert(Value::Bool(true));
    out.entry("tags").or_insert_with(|| json!([]));
    common::strip_hidden(state, ctx, "network", &view, &mut out);
    out
}

/// The IPv4 and IPv6 address scopes of a network.
pub type Scopes = [Option<String>; 2];

/// The address scopes of networks (all, or `net_id`'s), from the pools their subnets were
/// allocated from (Neutron's `_extend_network_dict_address_scope`): one query per request.
async fn address_scopes<'c, E>(
    ex: E,
    net_id: Option<&str>,
) -> ApiResult<std::collections::HashMap<String, Scopes>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let base = "SELECT s.network_id, s.cidr, p.address_scope_id FROM subnets s \
                JOIN subnetpools p ON p.id = s.subnetpool_id \
                WHERE p.address_scope_id IS NOT NULL";
    let rows: Vec<(String, String, String)> = match net_id {
        Some(id) => {
            sqlx::query_as(&format!("{base} AND s.network_id = $1"))
                .bind(id)
                .fetch_all(ex)
                .await?
        }
        None => sqlx::query_as(base).fetch_all(ex).await?,
    };
    let mut out: std::collections::HashMap<String, Scopes> = Default::default();
    for (net, cidr, scope) in rows {
        let slot = usize::from(cidr.contains(':'));
        out.entry(net).or_default()[slot] = Some(scope);
    }
    Ok(out)
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
        // Neutron creates the wildcard grants in the network's transaction.
        if obj.get("shared") == Some(&Value::Bool(true)) {
            rbac::grant(&mut tx, "network", obj, rbac::SHARED, rbac::WILDCARD).await?;
        }
        if obj.get("router:external") == Some(&Value::Bool(true)) {
            rbac::grant(&mut tx, "network", obj, rbac::EXTERNAL, rbac::WILDCARD).await?;
        }
        let hints = obj
            .get("availability_zone_hints")
            .cloned()
            .unwrap_or(Value::Null);
        crate::availability_zones::validate_network_hints(&mut tx, &hints).await?;
        db::create(&mut tx, &KIND, obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared
        .iter()
        .map(|n| Value::Object(render(&st, &ctx, n, vec![], None)))
        .collect();
    Ok(if req.bulk {
        common::created("networks", Value::Array(out))
    } else {
        common::created("network", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's network attribute map (with the provider, external-net, mtu and
/// port-security extensions), as far as listing goes.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "name", "admin_state_up", "status", "tenant_id", "mtu"],
    bools: &[
        "admin_state_up",
        "shared",
        "router:external",
        "port_security_enabled",
    ],
    ints: &["mtu", "provider:segmentation_id"],
};

/// Network attributes whose rendered value is the stored string: SQL may filter on them.
const STORED_TEXT: &[&str] = &["id", "project_id", "tenant_id", "name", "description"];

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let reader = st.db.reader();
    let mut src = Source::new(&st.db, &KIND);
    listing::rbac_scope(&mut src, &ctx, "network", &[rbac::SHARED, rbac::EXTERNAL]);
    src.push_filters(
        &query,
        &listing::unhidden(&st, &ctx, "network", STORED_TEXT),
    );
    src.push_tags(&query);
    // Rendered per caller (`shared`) or constant (`status`): sorted in memory.
    src.computed(&["shared", "status"]);
    let scopes = address_scopes(reader, None).await?;
    let zones = crate::availability_zones::by_network(reader).await?;
    let mut pager = query.pager(&st.db, src).await?;
    while let Some(batch) = pager.next_batch(&st.db).await? {
        let ids: Vec<&str> = batch
            .iter()
            .filter_map(|n| n.get("id").and_then(Value::as_str))
            .collect();
        let mut by_net = subnets_of(reader, &ids).await?;
        for n in &batch {
            if !visible(&ctx, n) {
                continue;
            }
            let id = n.get("id").and_then(Value::as_str).unwrap_or_default();
            let subnets = by_net.remove(id).unwrap_or_default();
            let mut out = render(&st, &ctx, n, subnets, scopes.get(id));
            let z = zones.get(id).cloned().unwrap_or_default();
            out.insert("availability_zones".into(), json!(z));
            pager.push(out);
        }
    }
    let url = format!("{}/v2.0/networks", common::base_url(&headers));
    Ok(axum::Json(pager.finish("networks", &url)).into_response())
}

/// The subnet ids of networks `ids`, in id order.
async fn subnets_of(
    reader: &sqlx::AnyPool,
    ids: &[&str],
) -> ApiResult<std::collections::HashMap<String, Vec<Value>>> {
    let mut by_net: std::collections::HashMap<String, Vec<Value>> = Default::default();
    for chunk in ids.chunks(500) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT network_id, id FROM subnets WHERE network_id IN ({}) ORDER BY id",
            params.join(", ")
        );
        let mut q = sqlx::query_as::<_, (String, String)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for (n, s) in q.fetch_all(reader).await? {
            by_net.entry(n).or_default().push(Value::String(s));
        }
    }
    Ok(by_net)
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let net = get_visible(st.db.reader(), &ctx, &id).await?;
    if !st
        .policy
        .check(&ctx, "get_network", &rbac::caller_view(&ctx, &net))
    {
        return Err(ApiError::not_found("Network", &id));
    }
    let subnets = subnet_ids(st.db.reader(), &id).await?;
    let scopes = address_scopes(st.db.reader(), Some(&id)).await?;
    let mut out = render(&st, &ctx, &net, subnets, scopes.get(&id));
    let zones = crate::availability_zones::of_network(st.db.reader(), &id).await?;
    out.insert("availability_zones".into(), json!(zones));
    Ok(common::ok("network", Value::Object(query.trim(out))))
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
    let view = rbac::caller_view(&ctx, &net);
    common::enforce(&st, &ctx, "update_network", &view)?;
    common::enforce_attrs(&st, &ctx, "update_network", &changes, &view)?;
    // Provider attributes, segments and MTU are ML2's: it refuses what Neutron refuses, moves
    // a VLAN network to another ID, resolves `mtu`, and drops no-op provider keys.
    crate::ml2::update_network(&st, &mut tx, &net, &mut changes).await?;
    let mut changed = update_grants(&mut tx, &mut net, &mut changes).await?;
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
    let scopes = address_scopes(&mut *tx, Some(&id)).await?;
    let zones = crate::availability_zones::of_network(&mut *tx, &id).await?;
    st.db.commit(tx).await?;
    let mut out = render(&st, &ctx, &net, subnets, scopes.get(&id));
    out.insert("availability_zones".into(), json!(zones));
    Ok(common::ok("network", Value::Object(out)))
}

/// Applies `shared` and `router:external` from an update as RBAC grants (Neutron's
/// `update_network` and `_process_l3_update`), removing them from `changes`. Returns whether
/// the network changed.
async fn update_grants(
    tx: &mut sqlx::AnyConnection,
    net: &mut Obj,
    changes: &mut Obj,
) -> ApiResult<bool> {
    let mut changed = false;
    if let Some(shared) = changes.remove("shared") {
        let want = shared == Value::Bool(true);
        let has = rbac::has_entry(net, rbac::SHARED, rbac::WILDCARD);
        if want && !has {
            rbac::grant(tx, "network", net, rbac::SHARED, rbac::WILDCARD).await?;
            changed = true;
        } else if !want && has {
            rbac::check_unshare_network(tx, net).await?;
            rbac::revoke(tx, "network", net, rbac::SHARED, Some(rbac::WILDCARD)).await?;
            changed = true;
        }
    }
    if let Some(external) = changes.remove("router:external") {
        let want = external == Value::Bool(true);
        let is = net.get("router:external") == Some(&Value::Bool(true));
        if want && !is {
            rbac::grant(tx, "network", net, rbac::EXTERNAL, rbac::WILDCARD).await?;
            net.insert("router:external".into(), Value::Bool(true));
            changed = true;
        } else if !want && is {
            let id = net
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if rbac::has_gateway_ports(tx, &id).await? {
                return Err(rbac::external_in_use(&id));
            }
            // Every external grant goes, also the per-project ones.
            rbac::revoke(tx, "network", net, rbac::EXTERNAL, None).await?;
            net.insert("router:external".into(), Value::Bool(false));
            changed = true;
        }
    }
    Ok(changed)
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
    // Floating IPs allocated from this (external) network go with it, as in Neutron.
    crate::floatingips::network_deleting(&mut tx, &id).await?;
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
    rbac::revoke_all(&mut tx, "network", &id).await?;
    db::remove(&mut tx, &KIND, &net).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}
