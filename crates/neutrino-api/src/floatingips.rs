//! `/v2.0/floatingips`: floating IPs (Neutron's `router` extension's second resource, plus
//! `fip-port-details` and `expose-port-forwarding-in-fip`).
//!
//! Owns the floating IP document and its port: an address on an external network, held by a
//! port of no project (`network:floatingip`, `device_id` the floating IP, status `N/A`, as
//! Neutron creates it), optionally associated with one fixed IPv4 address of a project port.
//! The router that serves it (`router_id`) is computed at association: the router with a
//! gateway on the floating network and an interface on the fixed IP's subnet, preferring the
//! one whose interface is the subnet's gateway (Neutron's `get_router_for_floatingip`).
//! A fixed IP has at most one floating IP per external network: a database constraint
//! (`FloatingIPPortAlreadyAssociated`), never a check-then-insert.
//!
//! Also owns what deleting a port means for L3 ([`port_deleted`], called by ports.rs): router
//! and floating IP ports cannot be deleted through the port API, and a deleted port's
//! floating IPs are disassociated and its port forwardings removed.
//!
//! Status is `DOWN` until the L3 agent hosting the router reports it (`/agent/v1`). Every
//! change notifies the routers concerned (`l3_scheduler::notify_router`) so their hosts
//! rebuild, and schedules them as Neutron's `notify_router_updated` does. This module must
//! never talk to an agent.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Source, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::common::{self, with_tenant};
use crate::routers::{self, FixedReq, PortSpec};
use crate::{ApiState, l3_scheduler, listing, networks, port_forwardings, ports, subnets};

/// Storage of floating IPs (`port_id` is Neutron's `fixed_port_id`).
pub const KIND: Kind = Kind {
    resource: "floatingip",
    table: "floatingips",
    columns: &[
        "floating_network_id",
        "port_id",
        "fixed_ip_address",
        "router_id",
    ],
};

/// Floating IP attributes (neutron-lib `l3` plus `description`; no `name`).
pub const ATTRS: &[Attr] = &[
    attr("description", true, true, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
    attr("floating_network_id", true, false, Ty::Uuid, D::Required),
    attr("floating_ip_address", true, false, Ty::Any, D::Null),
    attr("subnet_id", true, false, Ty::UuidOrNull, D::Null),
    attr("port_id", true, true, Ty::UuidOrNull, D::Null),
    attr("fixed_ip_address", true, true, Ty::Any, D::Null),
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/floatingips", get(list).post(create))
        .route(
            "/v2.0/floatingips/{id}",
            get(show).put(update).delete(delete),
        )
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

fn opt_str(o: &Obj, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_string)
}

/// 404 `FloatingIPNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "FloatingIPNotFound",
        format!("Floating IP {id} could not be found"),
    )
}

/// Neutron's `BadRequest(resource='floatingip', msg=...)`.
fn bad_fip(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Bad floatingip request: {msg}."),
    )
}

/// `type:ip_address_or_none`.
fn parse_ip_or_none(name: &str, v: Option<&Value>) -> ApiResult<Option<IpAddr>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_str()
            .and_then(|s| s.parse::<IpAddr>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid input for {name}. Reason: '{}' is not a valid IP address.",
                    attrs::display(v)
                ))
            }),
    }
}

/// Whether `ctx` may see the floating IP: admins and its project.
pub fn visible(st: &ApiState, ctx: &Context, fip: &Obj) -> bool {
    (ctx.is_admin() || ctx.owns(str_of(fip, "project_id")))
        && st.policy.check(ctx, "get_floatingip", fip)
}

/// Loads a floating IP for writing that the caller may see, else 404.
pub async fn load_for_write(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    id: &str,
) -> ApiResult<Obj> {
    match db::get_for_update(tx, &st.db, &KIND, id).await? {
        Some(f) if visible(st, ctx, &f) => Ok(f),
        _ => Err(not_found(id)),
    }
}

/// `port_details` (fip-port-details) of an associated port.
fn port_details(port: &Obj) -> Value {
    let mut d = Obj::new();
    for k in [
        "name",
        "network_id",
        "mac_address",
        "admin_state_up",
        "status",
        "device_id",
        "device_owner",
    ] {
        d.insert(k.into(), port.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(d)
}

/// Renders a floating IP: `port_details` from its port, `port_forwardings` (the
/// expose-port-forwarding-in-fip subset), attributes hidden by policy removed.
pub fn render(st: &ApiState, ctx: &Context, fip: &Obj, port: Option<&Obj>, pfs: &[Obj]) -> Obj {
    let mut out = with_tenant(fip.clone());
    out.insert(
        "port_details".into(),
        port.map(port_details).unwrap_or(Value::Null),
    );
    out.insert(
        "port_forwardings".into(),
        Value::Array(pfs.iter().map(port_forwardings::summary).collect()),
    );
    out.entry("tags").or_insert_with(|| json!([]));
    out.entry("description").or_insert_with(|| json!(""));
    common::strip_hidden(st, ctx, "floatingip", fip, &mut out);
    out
}

async fn render_one(
    st: &ApiState,
    ctx: &Context,
    conn: &mut AnyConnection,
    fip: &Obj,
) -> ApiResult<Obj> {
    let port = match opt_str(fip, "port_id") {
        Some(p) => db::get(&mut *conn, &ports::KIND, &p).await?,
        None => None,
    };
    let pfs = db::list(
        &mut *conn,
        &port_forwardings::KIND,
        Some(("floatingip_id", str_of(fip, "id"))),
    )
    .await?;
    Ok(render(st, ctx, fip, port.as_ref(), &pfs))
}

// ---------------------------------------------------------------------------------------------
// Association.

/// What a floating IP points at after a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Assoc {
    /// The associated port.
    pub port_id: Option<String>,
    /// Its fixed IP.
    pub fixed_ip: Option<String>,
    /// The router serving it.
    pub router_id: Option<String>,
}

/// The router connecting `subnet_id` (of a port on `net_id`) to `ext_net_id` (Neutron's
/// `get_router_for_floatingip`), preferring the one whose interface is the subnet's
/// gateway; else 404 `ExternalGatewayForFloatingIPNotFound`.
pub async fn router_for(
    tx: &mut AnyConnection,
    port: &Obj,
    subnet: &Obj,
    ext_net_id: &str,
) -> ApiResult<String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT rp.router_id, a.ip_address FROM router_ports rp \
         JOIN ports p ON p.id = rp.port_id \
         JOIN ip_allocations a ON a.port_id = p.id \
         WHERE p.network_id = $1 AND a.subnet_id = $2 \
         AND rp.port_type IN ('network:router_interface', \
             'network:ha_router_replicated_interface', 'network:router_interface_distributed') \
         AND EXISTS (SELECT 1 FROM router_ports g JOIN ports gp ON gp.id = g.port_id \
             WHERE g.router_id = rp.router_id AND g.port_type = 'network:router_gateway' \
             AND gp.network_id = $3) \
         ORDER BY rp.router_id",
    )
    .bind(str_of(port, "network_id"))
    .bind(str_of(subnet, "id"))
    .bind(ext_net_id)
    .fetch_all(&mut *tx)
    .await?;
    let gateway = str_of(subnet, "gateway_ip");
    if let Some((r, _)) = rows.iter().find(|(_, ip)| ip == gateway) {
        return Ok(r.clone());
    }
    rows.into_iter().next().map(|(r, _)| r).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ExternalGatewayForFloatingIPNotFound",
            format!(
                "External network {ext_net_id} is not reachable from subnet {}.  Therefore, cannot associate Port {} with a Floating IP.",
                str_of(subnet, "id"),
                str_of(port, "id")
            ),
        )
    })
}

/// The port's IPv4 fixed IPs `(subnet, address)`.
pub fn v4_fixed_ips(port: &Obj) -> Vec<(String, String)> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let ip = f.get("ip_address")?.as_str()?;
            let sid = f.get("subnet_id")?.as_str()?;
            ip.parse::<IpAddr>()
                .ok()
                .filter(IpAddr::is_ipv4)
                .map(|_| (sid.to_string(), ip.to_string()))
        })
        .collect()
}

/// Neutron's `_internal_fip_assoc_data` + `_get_router_for_floatingip` for `port_id`.
async fn assoc_data(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    fip: &Obj,
    port_id: &str,
    fixed_ip: Option<IpAddr>,
) -> ApiResult<Assoc> {
    let Some(port) = db::get(&mut *tx, &ports::KIND, port_id).await? else {
        return Err(ApiError::not_found("Port", port_id));
    };
    let net = db::get(&mut *tx, &networks::KIND, str_of(&port, "network_id"))
        .await?
        .unwrap_or_default();
    let port_visible = ctx.is_admin()
        || ctx.owns(str_of(&port, "project_id"))
        || ctx.owns(str_of(&net, "project_id"));
    if !port_visible
        || !st
            .policy
            .check(ctx, "get_port", &networks::network_target(&net, &port))
    {
        return Err(ApiError::not_found("Port", port_id));
    }
    if str_of(&port, "project_id") != str_of(fip, "project_id") && !ctx.is_admin() {
        return Err(bad_fip(format!(
            "Cannot process floating IP association with Port {port_id}, since that port is owned by a different project"
        )));
    }
    if str_of(&port, "device_owner") == "network:dhcp" {
        return Err(bad_fip(format!(
            "Port {port_id} is unable to be assigned a floating IP"
        )));
    }
    let v4 = v4_fixed_ips(&port);
    let (subnet_id, ip) = match fixed_ip {
        Some(ip) => {
            if !ip.is_ipv4() {
                return Err(bad_fip(format!(
                    "Cannot process floating IP association with {ip}, since that is not an IPv4 address"
                )));
            }
            let text = ip.to_string();
            match v4.iter().find(|(_, a)| *a == text) {
                Some((s, a)) => (s.clone(), a.clone()),
                None => {
                    return Err(bad_fip(format!(
                        "Port {port_id} does not have fixed ip {text}"
                    )));
                }
            }
        }
        None => match v4.as_slice() {
            [] => {
                return Err(bad_fip(format!(
                    "Cannot add floating IP to port {port_id} that has no fixed IPv4 addresses"
                )));
            }
            [(s, a)] => (s.clone(), a.clone()),
            _ => {
                return Err(bad_fip(format!(
                    "Port {port_id} has multiple fixed IPv4 addresses.  Must provide a specific IPv4 address when assigning a floating IP"
                )));
            }
        },
    };
    let subnet = db::get(&mut *tx, &subnets::KIND, &subnet_id)
        .await?
        .ok_or_else(|| subnets::not_found(&subnet_id))?;
    let router = router_for(tx, &port, &subnet, str_of(fip, "floating_network_id")).await?;
    Ok(Assoc {
        port_id: Some(port_id.to_string()),
        fixed_ip: Some(ip),
        router_id: Some(router),
    })
}

/// 409 `FipInUseByPortForwarding`.
fn in_use_by_pf(id: &str) -> ApiError {
    ApiError::conflict(
        "FipInUseByPortForwarding",
        format!("Floating IP {id} in use by Port Forwarding resources."),
    )
}

async fn has_port_forwardings(tx: &mut AnyConnection, fip_id: &str) -> ApiResult<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM port_forwardings WHERE floatingip_id = $1")
            .bind(fip_id)
            .fetch_one(&mut *tx)
            .await?;
    Ok(n > 0)
}

/// Neutron's `_check_and_get_fip_assoc`. `port_req`: None when the request has no
/// `port_id`, Some(None) for `port_id: null`.
async fn check_and_get_assoc(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    fip: &Obj,
    port_req: Option<Option<String>>,
    fixed_req: Option<IpAddr>,
) -> ApiResult<Assoc> {
    let current_port = opt_str(fip, "port_id");
    if fixed_req.is_some() && !matches!(port_req, Some(Some(_))) {
        return Err(bad_fip(
            "fixed_ip_address cannot be specified without a port_id",
        ));
    }
    let mut out = Assoc::default();
    match &port_req {
        Some(Some(pid)) => {
            // floating-ip-port-forwarding: a floating IP with forwardings cannot be
            // associated with a port.
            if has_port_forwardings(tx, str_of(fip, "id")).await? {
                return Err(in_use_by_pf(str_of(fip, "id")));
            }
            out = assoc_data(st, tx, ctx, fip, pid, fixed_req).await?;
            if current_port.as_deref() == Some(pid.as_str()) {
                return Ok(out);
            }
        }
        None => {
            if let Some(pid) = &current_port {
                out = assoc_data(st, tx, ctx, fip, pid, fixed_req).await?;
            }
        }
        Some(None) => {}
    }
    if out.port_id.is_none() && current_port.is_none() {
        // A floating IP bound through port forwardings keeps its router.
        out.router_id = opt_str(fip, "router_id");
    }
    Ok(out)
}

fn already_associated(fip: &Obj, a: &Assoc) -> ApiError {
    ApiError::conflict(
        "FloatingIPPortAlreadyAssociated",
        format!(
            "Cannot associate floating IP {} ({}) with port {} using fixed IP {}, as that fixed IP already has a floating IP on external network {}.",
            str_of(fip, "floating_ip_address"),
            str_of(fip, "id"),
            a.port_id.as_deref().unwrap_or("None"),
            a.fixed_ip.as_deref().unwrap_or("None"),
            str_of(fip, "floating_network_id"),
        ),
    )
}

fn is_assoc_conflict(e: &sqlx::Error) -> bool {
    db::is_unique_violation(e, Some("floatingips_fixed"))
        || db::is_unique_violation(e, Some("floatingips.floating_network_id"))
}

fn apply_assoc(fip: &mut Obj, a: &Assoc) {
    let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| json!(s));
    fip.insert("port_id".into(), opt(&a.port_id));
    fip.insert("fixed_ip_address".into(), opt(&a.fixed_ip));
    fip.insert("router_id".into(), opt(&a.router_id));
}

/// Saves a floating IP whose association may collide with another's. The constrained
/// columns are written first so the unique constraint decides (409
/// `FloatingIPPortAlreadyAssociated`), then the document.
async fn save_assoc(tx: &mut AnyConnection, fip: &mut Obj, a: &Assoc) -> ApiResult<()> {
    let res = sqlx::query(
        "UPDATE floatingips SET port_id = $1, fixed_ip_address = $2, router_id = $3 WHERE id = $4",
    )
    .bind(a.port_id.clone())
    .bind(a.fixed_ip.clone())
    .bind(a.router_id.clone())
    .bind(str_of(fip, "id").to_string())
    .execute(&mut *tx)
    .await;
    match res {
        Ok(_) => db::save(tx, &KIND, fip).await,
        Err(e) if is_assoc_conflict(&e) => Err(already_associated(fip, a)),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Create, list, show, update, delete.

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "floatingip", "floatingips")?;
    if req.bulk {
        // Neutron's floating IP resource has no native bulk support.
        return Err(ApiError::bad_request("Bulk operation not supported"));
    }
    let Some(item) = req.items.into_iter().next() else {
        return Err(ApiError::bad_request("Resources required"));
    };
    let given: Vec<String> = item.keys().cloned().collect();
    let mut obj = attrs::prepare_create(&[ATTRS], item)?;
    common::owner_for_create(&ctx, &mut obj)?;
    let floating_ip = parse_ip_or_none("floating_ip_address", obj.get("floating_ip_address"))?;
    let fixed_ip = parse_ip_or_none("fixed_ip_address", obj.get("fixed_ip_address"))?;
    common::enforce(&st, &ctx, "create_floatingip", &obj)?;
    let mut keys = Obj::new();
    for k in &given {
        if obj.get(k).is_some_and(|v| !v.is_null()) {
            keys.insert(k.clone(), Value::Null);
        }
    }
    common::enforce_attrs(&st, &ctx, "create_floatingip", &keys, &obj)?;
    let net_id = str_of(&obj, "floating_network_id").to_string();
    let subnet_id = opt_str(&obj, "subnet_id");
    let port_req = opt_str(&obj, "port_id");

    let mut tx = st.db.begin().await?;
    let net = networks::get_visible(&mut *tx, &ctx, &net_id).await?;
    if net.get("router:external") != Some(&Value::Bool(true)) {
        return Err(bad_fip(format!(
            "Network {net_id} is not a valid external network"
        )));
    }
    let has_v4: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM subnets WHERE network_id = $1 AND cidr NOT LIKE '%:%'",
    )
    .bind(&net_id)
    .fetch_one(&mut *tx)
    .await?;
    if has_v4 == 0 {
        return Err(bad_fip(format!(
            "Network {net_id} does not contain any IPv4 subnet"
        )));
    }
    let project = str_of(&obj, "project_id").to_string();
    common::check_quota(&st, &mut tx, "floatingip", &KIND, &project, 1).await?;

    let id = db::new_id();
    let fixed = if subnet_id.is_some() || floating_ip.is_some() {
        Some(vec![FixedReq {
            subnet_id: subnet_id.clone(),
            ip: floating_ip,
        }])
    } else {
        None
    };
    // The floating IP's own port: no project, never exposed to the project.
    let port = routers::create_port(
        &st,
        &mut tx,
        PortSpec {
            net: &net,
            project: String::new(),
            device_id: id.clone(),
            device_owner: routers::OWNER_FLOATINGIP,
            status: "N/A",
            host: String::new(),
            fixed,
        },
    )
    .await?;
    let Some((_, address)) = v4_fixed_ips(&port).into_iter().next() else {
        // neutron-lib's ExternalIpAddressExhausted (a BadRequest).
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ExternalIpAddressExhausted",
            format!("Unable to find any IP address on external network {net_id}."),
        ));
    };
    obj.remove("subnet_id");
    obj.insert("id".into(), json!(id));
    obj.insert("floating_ip_address".into(), json!(address));
    obj.insert("status".into(), json!("DOWN"));
    obj.insert("tags".into(), json!([]));
    obj.insert("router_id".into(), Value::Null);
    obj.insert("port_id".into(), Value::Null);
    obj.insert("fixed_ip_address".into(), Value::Null);
    let assoc =
        check_and_get_assoc(&st, &mut tx, &ctx, &obj, Some(port_req.clone()), fixed_ip).await?;
    apply_assoc(&mut obj, &assoc);
    match db::insert_raw(&mut tx, &KIND, &mut obj).await {
        Ok(()) => {}
        Err(e) if is_assoc_conflict(&e) => return Err(already_associated(&obj, &assoc)),
        Err(e) => return Err(e.into()),
    }
    db::log_create(&mut tx, &KIND, &obj).await?;
    if let Some(r) = &assoc.router_id {
        l3_scheduler::router_updated(&st, &mut tx, r).await?;
    }
    let out = render_one(&st, &ctx, &mut tx, &obj).await?;
    st.db.commit(tx).await?;
    Ok(common::created("floatingip", Value::Object(out)))
}

/// neutron-lib's attribute map of l3's floating IP, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "floating_ip_address",
        "floating_network_id",
        "router_id",
        "fixed_ip_address",
        "tenant_id",
        "status",
    ],
    bools: &[],
    ints: &[],
};

/// Floating IP attributes whose rendered value is the stored string (or null): SQL may
/// filter on them (the mirrored columns through their indexes).
const STORED_TEXT: &[&str] = &[
    "id",
    "project_id",
    "tenant_id",
    "floating_network_id",
    "port_id",
    "fixed_ip_address",
    "router_id",
    "floating_ip_address",
    "status",
    "description",
];

/// `SELECT body FROM <table> WHERE <column> IN (ids)`, in chunks.
async fn bodies_where_in(
    reader: &sqlx::AnyPool,
    table: &str,
    column: &str,
    ids: &[String],
) -> ApiResult<Vec<Obj>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT body FROM {table} WHERE {column} IN ({}) ORDER BY id",
            params.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        for r in q.fetch_all(reader).await? {
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(&r.try_get::<String, _>(0)?)
            {
                out.push(o);
            }
        }
    }
    Ok(out)
}

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
    if !ctx.is_admin() {
        match ctx.project_id.as_deref() {
            Some(p) => {
                let p = src.param(p);
                src.scope(format!("t.project_id = {p}"));
            }
            None => src.scope("1 = 0"),
        }
    }
    src.push_filters(
        &query,
        &listing::unhidden(&st, &ctx, "floatingip", STORED_TEXT),
    );
    src.push_tags(&query);
    let mut pager = query.pager(&st.db, src).await?;
    while let Some(batch) = pager.next_batch(&st.db).await? {
        // The ports and port forwardings of this batch only.
        let port_ids: Vec<String> = batch.iter().filter_map(|f| opt_str(f, "port_id")).collect();
        let port_by_id: HashMap<String, Obj> = bodies_where_in(reader, "ports", "id", &port_ids)
            .await?
            .into_iter()
            .map(|p| (str_of(&p, "id").to_string(), p))
            .collect();
        let fip_ids: Vec<String> = batch.iter().map(|f| str_of(f, "id").to_string()).collect();
        let mut pfs: HashMap<String, Vec<Obj>> = HashMap::new();
        for pf in bodies_where_in(reader, "port_forwardings", "floatingip_id", &fip_ids).await? {
            pfs.entry(str_of(&pf, "floatingip_id").to_string())
                .or_default()
                .push(pf);
        }
        for f in &batch {
            if !visible(&st, &ctx, f) {
                continue;
            }
            let port = opt_str(f, "port_id").and_then(|p| port_by_id.get(&p));
            let empty = Vec::new();
            let list = pfs.get(str_of(f, "id")).unwrap_or(&empty);
            pager.push(render(&st, &ctx, f, port, list));
        }
    }
    let url = format!("{}/v2.0/floatingips", common::base_url(&headers));
    Ok(axum::Json(pager.finish("floatingips", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let mut conn = st.db.reader().acquire().await?;
    let fip = match db::get(&mut *conn, &KIND, &id).await? {
        Some(f) if visible(&st, &ctx, &f) => f,
        _ => return Err(not_found(&id)),
    };
    let out = render_one(&st, &ctx, &mut conn, &fip).await?;
    Ok(common::ok("floatingip", Value::Object(query.trim(out))))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes = attrs::prepare_update(&[ATTRS], common::parse_update(&body, "floatingip")?)?;
    let fixed_ip = parse_ip_or_none("fixed_ip_address", changes.get("fixed_ip_address"))?;
    // An empty body disassociates, as `{"port_id": null}` does: Neutron keeps the current
    // association only when a non-empty body leaves `port_id` out (`if fip and 'port_id' not
    // in fip` in l3_db._check_and_get_fip_assoc), and clients rely on `{}` to detach.
    let port_req: Option<Option<String>> = if changes.is_empty() {
        Some(None)
    } else {
        changes
            .get("port_id")
            .map(|v| v.as_str().map(str::to_string))
    };
    let mut tx = st.db.begin().await?;
    let mut fip = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::check_revision(expected, &fip)?;
    common::enforce(&st, &ctx, "update_floatingip", &fip)?;
    common::enforce_attrs(&st, &ctx, "update_floatingip", &changes, &fip)?;
    let before = fip.clone();
    let old_router = opt_str(&fip, "router_id");
    let assoc = check_and_get_assoc(&st, &mut tx, &ctx, &fip, port_req, fixed_ip).await?;
    apply_assoc(&mut fip, &assoc);
    // A floating IP whose association changed is DOWN until the hosting L3 agent realises
    // it (and stays DOWN once disassociated), as Neutron reports it.
    if fip.get("port_id") != before.get("port_id")
        || fip.get("fixed_ip_address") != before.get("fixed_ip_address")
    {
        fip.insert("status".into(), json!("DOWN"));
    }
    if let Some(d) = changes.get("description") {
        fip.insert("description".into(), d.clone());
    }
    if fip != before {
        save_assoc(&mut tx, &mut fip, &assoc).await?;
    }
    // Neutron notifies both the old and the new router.
    let mut routers: Vec<String> = old_router.into_iter().collect();
    if let Some(r) = &assoc.router_id
        && !routers.contains(r)
    {
        routers.push(r.clone());
    }
    for r in &routers {
        l3_scheduler::notify_router(&mut tx, r).await?;
        l3_scheduler::router_updated(&st, &mut tx, r).await?;
    }
    let out = render_one(&st, &ctx, &mut tx, &fip).await?;
    st.db.commit(tx).await?;
    Ok(common::ok("floatingip", Value::Object(out)))
}

/// The floating IP's own port.
async fn floating_port(tx: &mut AnyConnection, fip_id: &str) -> ApiResult<Option<Obj>> {
    Ok(
        db::list(&mut *tx, &ports::KIND, Some(("device_id", fip_id)))
            .await?
            .into_iter()
            .find(|p| str_of(p, "device_owner") == routers::OWNER_FLOATINGIP),
    )
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
    let fip = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::check_revision(expected, &fip)?;
    common::enforce(&st, &ctx, "delete_floatingip", &fip)?;
    // The port forwarding plugin refuses to let a floating IP with forwardings go.
    if has_port_forwardings(&mut tx, &id).await? {
        return Err(in_use_by_pf(&id));
    }
    db::remove(&mut tx, &KIND, &fip).await?;
    if let Some(port) = floating_port(&mut tx, &id).await? {
        routers::delete_port(&mut tx, &port).await?;
    }
    if let Some(r) = opt_str(&fip, "router_id") {
        l3_scheduler::notify_router(&mut tx, &r).await?;
        l3_scheduler::router_updated(&st, &mut tx, &r).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

// ---------------------------------------------------------------------------------------------
// Network and port deletion.

/// Neutron's `delete_disassociated_floatingips`, run when an external network is deleted:
/// its floating IPs without a port go (with their ports), in the network's transaction, so
/// the network's deletion is not refused for their ports (associated ones still refuse it,
/// `NetworkInUse`). A floating IP with port forwardings is refused (409
/// `FipInUseByPortForwarding`), as deleting it directly would be.
pub async fn network_deleting(tx: &mut AnyConnection, network_id: &str) -> ApiResult<()> {
    for fip in db::list(&mut *tx, &KIND, Some(("floating_network_id", network_id))).await? {
        if fip.get("port_id").is_some_and(|v| !v.is_null()) {
            continue;
        }
        let id = str_of(&fip, "id").to_string();
        if has_port_forwardings(tx, &id).await? {
            return Err(in_use_by_pf(&id));
        }
        db::remove(tx, &KIND, &fip).await?;
        if let Some(port) = floating_port(tx, &id).await? {
            routers::delete_port(tx, &port).await?;
        }
        if let Some(r) = opt_str(&fip, "router_id") {
            l3_scheduler::notify_router(tx, &r).await?;
        }
    }
    Ok(())
}

/// Neutron's L3 side of deleting a port through the port API, in the port's transaction:
///
/// - `prevent_l3_port_deletion`: a router interface or gateway port of an existing router,
///   or the port of an existing floating IP, cannot be deleted directly (409
///   `ServicePortInUse`);
/// - `disassociate_floatingips`: floating IPs pointing at the port lose their association;
/// - the port forwarding plugin removes forwardings to the port (a floating IP left without
///   forwardings loses its router).
pub async fn port_deleted(st: &ApiState, tx: &mut AnyConnection, port: &Obj) -> ApiResult<()> {
    let port_id = str_of(port, "id").to_string();
    let owner = str_of(port, "device_owner");
    let device = str_of(port, "device_id");
    let protected = match owner {
        routers::OWNER_FLOATINGIP => db::get(&mut *tx, &KIND, device).await?.is_some(),
        routers::OWNER_INTERFACE | routers::OWNER_GATEWAY | routers::OWNER_HA_INTERFACE => {
            db::get(&mut *tx, &routers::KIND, device).await?.is_some()
        }
        _ => false,
    };
    if protected {
        return Err(ApiError::conflict(
            "ServicePortInUse",
            format!(
                "Port {port_id} cannot be deleted directly via the port API: has device owner {owner}."
            ),
        ));
    }
    let mut touched: Vec<String> = Vec::new();
    for mut fip in db::list(&mut *tx, &KIND, Some(("port_id", &port_id))).await? {
        if let Some(r) = opt_str(&fip, "router_id") {
            touched.push(r);
        }
        apply_assoc(&mut fip, &Assoc::default());
        db::save(tx, &KIND, &mut fip).await?;
    }
    remove_forwardings(st, tx, &port_id, |_| true, &mut touched).await?;
    touched.sort();
    touched.dedup();
    for r in touched {
        l3_scheduler::notify_router(tx, &r).await?;
    }
    Ok(())
}

/// Removes the port forwardings to `port_id` whose internal address `gone` selects; a
/// floating IP left without forwardings leaves its router. Routers touched go to `touched`.
async fn remove_forwardings(
    st: &ApiState,
    tx: &mut AnyConnection,
    port_id: &str,
    gone: impl Fn(&str) -> bool,
    touched: &mut Vec<String>,
) -> ApiResult<()> {
    for pf in db::list(
        &mut *tx,
        &port_forwardings::KIND,
        Some(("internal_port_id", port_id)),
    )
    .await?
    {
        if !gone(str_of(&pf, "internal_ip_address")) {
            continue;
        }
        let fip_id = str_of(&pf, "floatingip_id").to_string();
        if let Some(r) = db::get(&mut *tx, &KIND, &fip_id)
            .await?
            .and_then(|f| opt_str(&f, "router_id"))
        {
            touched.push(r);
        }
        db::remove(tx, &port_forwardings::KIND, &pf).await?;
        if !has_port_forwardings(tx, &fip_id).await?
            && let Some(mut fip) = db::get_for_update(tx, &st.db, &KIND, &fip_id).await?
        {
            fip.insert("router_id".into(), Value::Null);
            db::save(tx, &KIND, &mut fip).await?;
        }
    }
    Ok(())
}

/// A port's fixed IPs are being replaced by `new_ips` (Neutron's
/// `prevent_internal_ip_change_for_fip` and the port forwarding plugin's port-update
/// handler): the address a floating IP is associated with cannot go (400), and port
/// forwardings to addresses that go are deleted.
pub async fn port_fixed_ips_changing(
    st: &ApiState,
    tx: &mut AnyConnection,
    port: &Obj,
    new_ips: &[Value],
) -> ApiResult<()> {
    let port_id = str_of(port, "id");
    let keep: BTreeSet<&str> = new_ips
        .iter()
        .filter_map(|f| f.get("ip_address").and_then(Value::as_str))
        .collect();
    for fip in db::list(&mut *tx, &KIND, Some(("port_id", port_id))).await? {
        if let Some(fixed) = opt_str(&fip, "fixed_ip_address")
            && !keep.contains(fixed.as_str())
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "Bad port request: Cannot update the fixed_ips of the port {port_id}, because its original fixed_ip has been associated to a floating ip."
                ),
            ));
        }
    }
    let mut touched = Vec::new();
    remove_forwardings(st, tx, port_id, |ip| !keep.contains(ip), &mut touched).await?;
    touched.sort();
    touched.dedup();
    for r in touched {
        l3_scheduler::notify_router(tx, &r).await?;
    }
    Ok(())
}
