//! `/v2.0/routers`: routers (Neutron's `router`, `ext-gw-mode`, `extraroute`,
//! `extraroute-atomic`, `l3-ha` and `router_availability_zone` extensions), their gateway and
//! interfaces.
//!
//! Owns the router document and `router_ports` (Neutron's `routerports`: which ports are a
//! router's). A router's gateway is a port on an external network (`network:router_gateway`,
//! `device_id` the router, no project, as Neutron creates it) whose addresses come from the
//! external subnets or `external_fixed_ips`; its interfaces are ports on project subnets
//! (`network:router_interface`, the router's project), created with the subnet's
//! `gateway_ip` or taken over from an existing unattached port. Extra routes live in the
//! router document (`routes`) and their nexthops must sit on the router's subnets.
//!
//! Every request is one transaction. The router's row is locked first (`FOR UPDATE` on
//! PostgreSQL, the single writer on SQLite), so the checks over its ports (one interface per
//! subnet, no overlapping subnets, routes reachable) cannot race with another change of the
//! same router; addresses are unique through the `ip_allocations` key as for any port.
//! After a change the router is (re)scheduled to L3 agents (`l3_scheduler`), as Neutron's
//! `routers_updated` notification does. This module must never talk to an agent, and never
//! let a router port be deleted through the port API (see `floatingips::port_deleted`).

use std::collections::HashSet;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Source, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, binding, ipam, l3_scheduler, listing, networks, ports, rbac, subnets};

/// Storage of routers.
pub const KIND: Kind = Kind {
    resource: "router",
    table: "routers",
    columns: &[],
};

/// `device_owner` of router interfaces.
pub const OWNER_INTERFACE: &str = "network:router_interface";
/// `device_owner` of router gateways.
pub const OWNER_GATEWAY: &str = "network:router_gateway";
/// `device_owner` of floating IP ports.
pub const OWNER_FLOATINGIP: &str = "network:floatingip";
/// `device_owner` of HA routers' replicated interfaces (neutron-lib).
pub const OWNER_HA_INTERFACE: &str = "network:ha_router_replicated_interface";

/// Router attributes beyond the standard ones. `routes` is PUT-only (extraroute), the zone
/// hints POST-only (router_availability_zone); `distributed` and `ha` default from
/// `router_distributed` / `l3_ha`.
pub const ATTRS: &[Attr] = &[
    attr("admin_state_up", true, true, Ty::Bool, D::Bool(true)),
    attr("external_gateway_info", true, true, Ty::Any, D::Null),
    attr("routes", false, true, Ty::Any, D::None),
    attr("distributed", true, true, Ty::Bool, D::None),
    attr("ha", true, true, Ty::Bool, D::None),
    attr(
        "availability_zone_hints",
        true,
        false,
        Ty::List,
        D::EmptyList,
    ),
];

/// Routes of this collection and its actions.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/routers", get(list).post(create))
        .route("/v2.0/routers/{id}", get(show).put(update).delete(delete))
        .route(
            "/v2.0/routers/{id}/add_router_interface",
            put(add_interface),
        )
        .route(
            "/v2.0/routers/{id}/remove_router_interface",
            put(remove_interface),
        )
        .route("/v2.0/routers/{id}/add_extraroutes", put(add_extraroutes))
        .route(
            "/v2.0/routers/{id}/remove_extraroutes",
            put(remove_extraroutes),
        )
}

// ---------------------------------------------------------------------------------------------
// Errors and small helpers.

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// 404 `RouterNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RouterNotFound",
        format!("Router {id} could not be found"),
    )
}

/// Neutron's `BadRequest(resource='router', msg=...)`.
fn bad_router(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Bad router request: {msg}."),
    )
}

fn bad_value(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

fn ip_of(v: &str) -> Option<IpAddr> {
    v.parse().ok()
}

/// Whether `ctx` may see a router at all (routers are never shared): admins and the owner.
pub fn visible(ctx: &Context, router: &Obj) -> bool {
    ctx.is_admin() || ctx.owns(str_of(router, "project_id"))
}

/// Loads a router the caller may see (`get_router`), or 404 `RouterNotFound`.
pub async fn get_visible<'c, E>(st: &ApiState, ex: E, ctx: &Context, id: &str) -> ApiResult<Obj>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    match db::get(ex, &KIND, id).await? {
        Some(r) if visible(ctx, &r) && st.policy.check(ctx, "get_router", &r) => Ok(r),
        _ => Err(not_found(id)),
    }
}

async fn load_for_write(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    id: &str,
) -> ApiResult<Obj> {
    match db::get_for_update(tx, &st.db, &KIND, id).await? {
        Some(r) if visible(ctx, &r) && st.policy.check(ctx, "get_router", &r) => Ok(r),
        _ => Err(not_found(id)),
    }
}

/// Renders a stored router for `ctx` (`availability_zones` from the hosting agents, tenant
/// id, attributes hidden by policy removed).
pub fn render(st: &ApiState, ctx: &Context, router: &Obj, zones: Vec<String>) -> Obj {
    let mut out = with_tenant(router.clone());
    out.insert("availability_zones".into(), json!(zones));
    out.entry("status").or_insert_with(|| json!("ACTIVE"));
    out.entry("routes").or_insert_with(|| json!([]));
    out.entry("tags").or_insert_with(|| json!([]));
    out.entry("flavor_id").or_insert(Value::Null);
    common::strip_hidden(st, ctx, "router", router, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// Router ports.

/// A router's ports: `(port_type, port)`, gateway first.
pub async fn router_ports(
    tx: &mut AnyConnection,
    router_id: &str,
) -> ApiResult<Vec<(String, Obj)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT rp.port_type, p.body FROM router_ports rp JOIN ports p ON p.id = rp.port_id \
         WHERE rp.router_id = $1 ORDER BY rp.port_type DESC, p.id",
    )
    .bind(router_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for (ty, body) in rows {
        if let Value::Object(p) = serde_json::from_str::<Value>(&body)? {
            out.push((ty, p));
        }
    }
    Ok(out)
}

/// The router's gateway port, if any.
pub async fn gateway_port(tx: &mut AnyConnection, router_id: &str) -> ApiResult<Option<Obj>> {
    Ok(router_ports(tx, router_id)
        .await?
        .into_iter()
        .find(|(t, _)| t == OWNER_GATEWAY)
        .map(|(_, p)| p))
}

fn fixed_ips(port: &Obj) -> Vec<(String, String)> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            Some((
                f.get("subnet_id")?.as_str()?.to_string(),
                f.get("ip_address")?.as_str()?.to_string(),
            ))
        })
        .collect()
}

async fn subnets_of_network(tx: &mut AnyConnection, net_id: &str) -> ApiResult<Vec<Obj>> {
    let mut list = db::list(&mut *tx, &subnets::KIND, Some(("network_id", net_id))).await?;
    list.sort_by(|a, b| {
        (str_of(a, "created_at"), str_of(a, "id")).cmp(&(str_of(b, "created_at"), str_of(b, "id")))
    });
    Ok(list)
}

fn ip_version(subnet: &Obj) -> i64 {
    subnet
        .get("ip_version")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| {
            if str_of(subnet, "cidr").contains(':') {
                6
            } else {
                4
            }
        })
}

/// One requested address: subnet and/or IP.
#[derive(Debug, Clone, Default)]
pub struct FixedReq {
    /// Subnet asked for.
    pub subnet_id: Option<String>,
    /// Address asked for.
    pub ip: Option<IpAddr>,
}

/// neutron-lib's `type:fixed_ips` validator for `external_fixed_ips` (as ports.rs does for
/// `fixed_ips`).
fn parse_fixed_ips(attr_name: &str, v: &Value) -> ApiResult<Vec<FixedReq>> {
    let fmt_err = |d: &Value| {
        bad_value(
            attr_name,
            format!("Invalid data format for fixed IP: '{}'", attrs::display(d)),
        )
    };
    let Value::Array(list) = v else {
        return Err(fmt_err(v));
    };
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(m) = item else {
            return Err(fmt_err(item));
        };
        let ip = match m.get("ip_address") {
            Some(a) => {
                let ip = a.as_str().and_then(ip_of).ok_or_else(|| {
                    bad_value(
                        attr_name,
                        format!("'{}' is not a valid IP address", attrs::display(a)),
                    )
                })?;
                if !seen.insert(ip) {
                    return Err(bad_value(
                        attr_name,
                        format!("Duplicate IP address '{}'", attrs::display(a)),
                    ));
                }
                Some(ip)
            }
            None => None,
        };
        let subnet_id = match m.get("subnet_id") {
            Some(Value::String(s)) if attrs::is_uuid(s) => Some(s.clone()),
            Some(other) => {
                return Err(bad_value(
                    attr_name,
                    format!("'{}' is not a valid UUID", attrs::display(other)),
                ));
            }
            None => None,
        };
        out.push(FixedReq { subnet_id, ip });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Ports the L3 service creates (gateway, interface, floating IP).

/// What to create.
pub struct PortSpec<'a> {
    /// The network.
    pub net: &'a Obj,
    /// Owner project ('' for gateway and floating IP ports, as Neutron).
    pub project: String,
    /// `device_id`.
    pub device_id: String,
    /// `device_owner`.
    pub device_owner: &'static str,
    /// Initial status (`DOWN`; `N/A` for floating IP ports).
    pub status: &'static str,
    /// `binding:host_id` ('' unbound).
    pub host: String,
    /// Requested addresses; None: Neutron's default (one IPv4, one stateful IPv6, the
    /// automatic IPv6 addresses).
    pub fixed: Option<Vec<FixedReq>>,
}

fn subnet_has_ip(subnet: &Obj, ip: IpAddr, owner: &str) -> bool {
    ipam::parse_cidr(str_of(subnet, "cidr")).is_some_and(|n| ipam::check_subnet_ip(&n, ip, owner))
}

/// Allocates the addresses of a new port already inserted, returning its `fixed_ips`.
async fn allocate(
    st: &ApiState,
    tx: &mut AnyConnection,
    spec: &PortSpec<'_>,
    port_id: &str,
    mac: &str,
) -> ApiResult<Vec<Value>> {
    let net_id = str_of(spec.net, "id").to_string();
    let subnets = subnets_of_network(tx, &net_id).await?;
    let owner = spec.device_owner;
    let router_intf = ipam::is_router_owner(owner) && owner != OWNER_GATEWAY;
    let mut out = Vec::new();
    let entry = |s: &Obj, ip: String| json!({"subnet_id": str_of(s, "id"), "ip_address": ip});
    match &spec.fixed {
        Some(reqs) => {
            for r in reqs {
                let subnet = match (&r.subnet_id, r.ip) {
                    (Some(sid), _) => match subnets.iter().find(|s| str_of(s, "id") == sid) {
                        Some(s) => s.clone(),
                        None => {
                            return match db::get(&mut *tx, &subnets::KIND, sid).await? {
                                Some(_) => Err(ApiError::invalid_input(format!(
                                    "Failed to create port on network {net_id}, because fixed_ips included invalid subnet {sid}"
                                ))),
                                None => Err(ApiError::not_found("Subnet", sid)),
                            };
                        }
                    },
                    (None, Some(ip)) => subnets
                        .iter()
                        .find(|s| subnet_has_ip(s, ip, owner))
                        .cloned()
                        .ok_or_else(|| {
                            ApiError::new(
                                StatusCode::BAD_REQUEST,
                                "InvalidIpForNetwork",
                                format!(
                                    "IP address {ip} is not a valid IP for any of the subnets on the specified network."
                                ),
                            )
                        })?,
                    (None, None) => {
                        return Err(ApiError::invalid_input(
                            "IP allocation requires subnet_id or ip_address",
                        ));
                    }
                };
                let ip = match r.ip {
                    Some(ip) => {
                        if !subnet_has_ip(&subnet, ip, owner) {
                            return Err(ipam::invalid_ip_for_subnet(&ip.to_string()));
                        }
                        ipam::allocate_specific(st, tx, &subnet, &net_id, port_id, &ip.to_string())
                            .await?
                    }
                    None if ipam::is_auto_address(&subnet) && !router_intf => {
                        ipam::allocate_eui64(st, tx, &subnet, &net_id, port_id, mac).await?
                    }
                    None => ipam::allocate_any(st, tx, &subnet, &net_id, port_id).await?,
                };
                out.push(entry(&subnet, ip));
            }
        }
        None => {
            // One address from the first IPv4 subnet with room, one from the first stateful
            // IPv6 subnet with room, and the automatic addresses (not for router interfaces).
            for v6 in [false, true] {
                let group: Vec<&Obj> = subnets
                    .iter()
                    .filter(|s| (ip_version(s) == 6) == v6 && !(v6 && ipam::is_auto_address(s)))
                    .collect();
                if group.is_empty() {
                    continue;
                }
                let mut got = None;
                for s in &group {
                    match ipam::allocate_any(st, tx, s, &net_id, port_id).await {
                        Ok(ip) => {
                            got = Some(entry(s, ip));
                            break;
                        }
                        Err(e) if e.kind == "IpAddressGenerationFailure" => {}
                        Err(e) => return Err(e),
                    }
                }
                out.push(got.ok_or_else(|| {
                    ApiError::conflict(
                        "IpAddressGenerationFailure",
                        format!("No more IP addresses available on network {net_id}."),
                    )
                })?);
            }
            if !router_intf {
                for s in subnets
                    .iter()
                    .filter(|s| ip_version(s) == 6 && ipam::is_auto_address(s))
                {
                    let ip = ipam::allocate_eui64(st, tx, s, &net_id, port_id, mac).await?;
                    out.push(entry(s, ip));
                }
            }
        }
    }
    Ok(out)
}

/// Creates a port for the L3 service inside `tx` (Neutron creates these through the core
/// plugin with an elevated context: no quota, no security groups for `network:*` owners),
/// bound to `spec.host` when given. Logged as a port creation.
pub async fn create_port(
    st: &ApiState,
    tx: &mut AnyConnection,
    spec: PortSpec<'_>,
) -> ApiResult<Obj> {
    let network_id = str_of(spec.net, "id").to_string();
    let id = db::new_id();
    let mut obj = Obj::new();
    for (k, v) in [
        ("id", json!(id)),
        ("name", json!("")),
        ("description", json!("")),
        ("network_id", json!(network_id)),
        ("project_id", json!(spec.project)),
        ("tenant_id", json!(spec.project)),
        ("admin_state_up", json!(true)),
        ("status", json!(spec.status)),
        ("device_id", json!(spec.device_id)),
        ("device_owner", json!(spec.device_owner)),
        ("fixed_ips", json!([])),
        ("allowed_address_pairs", json!([])),
        ("extra_dhcp_opts", json!([])),
        ("security_groups", json!([])),
        (
            "port_security_enabled",
            spec.net
                .get("port_security_enabled")
                .cloned()
                .unwrap_or(json!(true)),
        ),
        ("binding:host_id", json!(spec.host)),
        ("binding:profile", json!({})),
        ("binding:vnic_type", json!("normal")),
        ("binding:vif_type", json!(binding::VIF_UNBOUND)),
        ("binding:vif_details", json!({})),
        ("tags", json!([])),
    ] {
        obj.insert(k.into(), v);
    }
    binding::bind_port(st, tx, spec.net, &mut obj).await?;
    if spec.status != "DOWN" {
        obj.insert("status".into(), json!(spec.status));
    }
    // Same MAC generation and collision retry as any other port.
    ports::insert_port(st, tx, &mut obj, None, &network_id).await?;
    let mac = str_of(&obj, "mac_address").to_string();
    let fixed = allocate(st, tx, &spec, &id, &mac).await?;
    obj.insert("fixed_ips".into(), Value::Array(fixed));
    sqlx::query("UPDATE ports SET body = $1 WHERE id = $2")
        .bind(Value::Object(obj.clone()).to_string())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    db::log_create(tx, &ports::KIND, &obj).await?;
    Ok(obj)
}

/// Deletes a port of the L3 service (its addresses and router row go with it).
pub async fn delete_port(tx: &mut AnyConnection, port: &Obj) -> ApiResult<()> {
    ipam::release_port(tx, str_of(port, "id")).await?;
    db::remove(tx, &ports::KIND, port).await
}

async fn add_router_port(
    tx: &mut AnyConnection,
    router_id: &str,
    port_id: &str,
    port_type: &str,
) -> ApiResult<()> {
    let res = sqlx::query(
        "INSERT INTO router_ports (port_id, router_id, port_type) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(port_id)
    .bind(router_id)
    .bind(port_type)
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Err(ApiError::conflict(
            "PortInUse",
            format!("Port {port_id} is already a router port."),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation shared by gateway, interfaces and routes.

fn overlaps(a: &Obj, b: &Obj) -> bool {
    match (
        ipam::parse_cidr(str_of(a, "cidr")),
        ipam::parse_cidr(str_of(b, "cidr")),
    ) {
        (Some(x), Some(y)) => ipam::overlaps(&x, &y),
        _ => false,
    }
}

/// Neutron's `_check_for_dup_router_subnets`: a router has at most one port per subnet, and
/// its subnets (all subnets of the gateway's network) must not overlap new ones.
async fn check_dup_subnets(
    tx: &mut AnyConnection,
    router_id: &str,
    new_subnets: &[Obj],
    ignore_port: Option<&str>,
) -> ApiResult<()> {
    let new_ids: HashSet<&str> = new_subnets.iter().map(|s| str_of(s, "id")).collect();
    let mut router_subnets: Vec<String> = Vec::new();
    for (ty, p) in router_ports(tx, router_id).await? {
        if Some(str_of(&p, "id")) == ignore_port {
            continue;
        }
        for (sid, _) in fixed_ips(&p) {
            if new_ids.contains(sid.as_str()) {
                return Err(bad_router(format!(
                    "Router already has a port on subnet {sid}"
                )));
            }
            if ty == OWNER_GATEWAY {
                for s in subnets_of_network(tx, str_of(&p, "network_id")).await? {
                    router_subnets.push(str_of(&s, "id").to_string());
                }
            } else {
                router_subnets.push(sid);
            }
        }
    }
    router_subnets.sort();
    router_subnets.dedup();
    for sid in router_subnets {
        let Some(sub) = db::get(&mut *tx, &subnets::KIND, &sid).await? else {
            continue;
        };
        for s in new_subnets {
            if overlaps(&sub, s) {
                return Err(bad_router(format!(
                    "Cidr {} of subnet {} overlaps with cidr {} of subnet {}",
                    str_of(s, "cidr"),
                    str_of(s, "id"),
                    str_of(&sub, "cidr"),
                    sid
                )));
            }
        }
    }
    Ok(())
}

/// Neutron's `_validate_subnet_address_mode`.
fn check_address_mode(subnet: &Obj) -> ApiResult<()> {
    if ip_version(subnet) == 6
        && subnet.get("ipv6_ra_mode").is_none_or(Value::is_null)
        && subnet
            .get("ipv6_address_mode")
            .is_some_and(|v| !v.is_null())
    {
        return Err(bad_router(format!(
            "IPv6 subnet {} configured to receive RAs from an external router cannot be added to Neutron Router.",
            str_of(subnet, "id")
        )));
    }
    Ok(())
}

/// One extra route.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Route {
    destination: String,
    nexthop: String,
}

impl Route {
    fn to_json(&self) -> Value {
        json!({"destination": self.destination, "nexthop": self.nexthop})
    }
}

/// The routes as Python prints the list in Neutron's `InvalidRoutes` message.
fn python_routes(routes: &[Route]) -> String {
    let items: Vec<String> = routes
        .iter()
        .map(|r| {
            format!(
                "{{'destination': '{}', 'nexthop': '{}'}}",
                r.destination, r.nexthop
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// neutron-lib's `type:hostroutes` validator (with `convert_none_to_empty_list`).
fn parse_routes(v: &Value) -> ApiResult<Vec<Route>> {
    let err = |reason: String| bad_value("routes", reason);
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(a) => a,
        other => {
            return Err(err(format!(
                "Invalid data format for hostroute: '{}'",
                attrs::display(other)
            )));
        }
    };
    let mut out: Vec<Route> = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(m) = item else {
            return Err(err(format!(
                "Invalid input. '{}' must be a dictionary with keys: ['destination', 'nexthop']",
                attrs::display(item)
            )));
        };
        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
        keys.sort_unstable();
        if keys != ["destination", "nexthop"] {
            return Err(err(format!(
                "Validation of dictionary's keys failed. Expected keys: {{'destination', 'nexthop'}} Provided keys: {{{}}}",
                keys.iter()
                    .map(|k| format!("'{k}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let dest_v = &m["destination"];
        let dest = dest_v.as_str().unwrap_or_default();
        let net = dest
            .parse::<ipnet::IpNet>()
            .ok()
            .filter(|_| dest.contains('/'));
        let Some(net) = net else {
            return Err(err(format!(
                "'{}' is not a valid IP subnet",
                attrs::display(dest_v)
            )));
        };
        if net.addr().is_ipv4() && net.to_string() != dest {
            return Err(err(format!(
                "'{dest}' isn't a recommended CIDR, use '{}' instead",
                net.trunc()
            )));
        }
        let hop_v = &m["nexthop"];
        let Some(hop) = hop_v.as_str().and_then(ip_of) else {
            return Err(err(format!(
                "'{}' is not a valid IP address",
                attrs::display(hop_v)
            )));
        };
        let r = Route {
            destination: net.to_string(),
            nexthop: hop.to_string(),
        };
        if out.contains(&r) {
            return Err(err(format!(
                "Duplicate hostroute '{{'destination': '{}', 'nexthop': '{}'}}'",
                r.destination, r.nexthop
            )));
        }
        out.push(r);
    }
    Ok(out)
}

fn stored_routes(router: &Obj) -> Vec<Route> {
    router
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some(Route {
                destination: r.get("destination")?.as_str()?.to_string(),
                nexthop: r.get("nexthop")?.as_str()?.to_string(),
            })
        })
        .collect()
}

/// Neutron's `_validate_routes`: every nexthop on one of `cidrs` and none of `ips`.
fn validate_routes(routes: &[Route], cidrs: &[ipnet::IpNet], ips: &[IpAddr]) -> ApiResult<()> {
    for r in routes {
        let Some(hop) = ip_of(&r.nexthop) else {
            continue;
        };
        let invalid = |reason: &str| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidRoutes",
                format!(
                    "Invalid input for operation: Invalid format for routes: {}, {reason}.",
                    python_routes(routes)
                ),
            )
        };
        if !cidrs.iter().any(|c| c.contains(&hop)) {
            return Err(invalid("the nexthop is not connected with router"));
        }
        if ips.contains(&hop) {
            return Err(invalid("the nexthop is used by router"));
        }
    }
    Ok(())
}

/// CIDRs and addresses of a router's ports (skipping `skip_port`), for route validation.
async fn port_cidrs(
    tx: &mut AnyConnection,
    router_id: &str,
    skip_port: Option<&str>,
) -> ApiResult<(Vec<ipnet::IpNet>, Vec<IpAddr>)> {
    let mut cidrs = Vec::new();
    let mut ips = Vec::new();
    for (_, p) in router_ports(tx, router_id).await? {
        if Some(str_of(&p, "id")) == skip_port {
            continue;
        }
        for (sid, ip) in fixed_ips(&p) {
            if let Some(s) = db::get(&mut *tx, &subnets::KIND, &sid).await?
                && let Some(c) = ipam::parse_cidr(str_of(&s, "cidr"))
            {
                cidrs.push(c);
            }
            if let Some(ip) = ip_of(&ip) {
                ips.push(ip);
            }
        }
    }
    Ok((cidrs, ips))
}

/// Applies a new set of routes to `router` (validated against its ports, within the
/// `router_route` quota). Returns whether they changed.
async fn set_routes(
    st: &ApiState,
    tx: &mut AnyConnection,
    router: &mut Obj,
    routes: Vec<Route>,
) -> ApiResult<bool> {
    let id = str_of(router, "id").to_string();
    let (cidrs, ips) = port_cidrs(tx, &id, None).await?;
    validate_routes(&routes, &cidrs, &ips)?;
    let limit = l3_scheduler::config(st).max_routes;
    if limit >= 0 && i64::try_from(routes.len()).unwrap_or(i64::MAX) > limit {
        return Err(ApiError::conflict(
            "OverQuota",
            "Quota exceeded for resources: ['router_route'].",
        ));
    }
    let v = Value::Array(routes.iter().map(Route::to_json).collect());
    if router.get("routes") == Some(&v) {
        return Ok(false);
    }
    router.insert("routes".into(), v);
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Gateway.

/// A parsed `external_gateway_info`.
#[derive(Debug, Clone)]
struct GwReq {
    network_id: String,
    enable_snat: Option<bool>,
    fixed: Vec<FixedReq>,
    fixed_given: bool,
}

/// neutron-lib's `type:dict_or_nodata` for `external_gateway_info` (ext-gw-mode adds
/// `enable_snat`): null or `{}` means no gateway.
fn parse_gw(v: &Value) -> ApiResult<Option<GwReq>> {
    const A: &str = "external_gateway_info";
    let m = match v {
        Value::Null => return Ok(None),
        Value::Object(m) if m.is_empty() => return Ok(None),
        Value::Object(m) => m,
        other => {
            return Err(bad_value(
                A,
                format!("'{}' is not a dictionary", attrs::display(other)),
            ));
        }
    };
    let unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| !matches!(*k, "network_id" | "enable_snat" | "external_fixed_ips"))
        .collect();
    if !unknown.is_empty() || !m.contains_key("network_id") {
        let mut provided: Vec<String> = m.keys().map(|k| format!("'{k}'")).collect();
        provided.sort();
        return Err(bad_value(
            A,
            format!(
                "Validation of dictionary's keys failed. Expected keys: {{'network_id'}} Provided keys: {{{}}}",
                provided.join(", ")
            ),
        ));
    }
    let net = &m["network_id"];
    let Some(network_id) = net.as_str().filter(|s| attrs::is_uuid(s)) else {
        return Err(bad_value(
            A,
            format!("'{}' is not a valid UUID", attrs::display(net)),
        ));
    };
    let enable_snat = match m.get("enable_snat") {
        None => None,
        Some(v) => Some(attrs::to_bool(A, v)?),
    };
    let (fixed, fixed_given) = match m.get("external_fixed_ips") {
        None | Some(Value::Null) => (Vec::new(), false),
        Some(v) => (parse_fixed_ips(A, v)?, true),
    };
    Ok(Some(GwReq {
        network_id: network_id.to_string(),
        enable_snat,
        fixed,
        fixed_given,
    }))
}

/// The attribute-policy keys of a request touching `external_gateway_info`.
fn gw_policy_keys(v: &Value) -> Obj {
    let mut keys = Obj::new();
    keys.insert("external_gateway_info".into(), Value::Null);
    if let Value::Object(m) = v {
        for k in m.keys() {
            keys.insert(format!("external_gateway_info:{k}"), Value::Null);
        }
    }
    keys
}

/// The floating IPs a router serves (Neutron's `router_gw_port_has_floating_ips`).
async fn has_floating_ips(tx: &mut AnyConnection, router_id: &str) -> ApiResult<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM floatingips WHERE router_id = $1")
        .bind(router_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(n > 0)
}

/// Removes the gateway port (refused while floating IPs use the router: 409
/// `RouterExternalGatewayInUseByFloatingIp`).
async fn delete_gateway(tx: &mut AnyConnection, router: &mut Obj) -> ApiResult<bool> {
    let id = str_of(router, "id").to_string();
    let Some(gw) = gateway_port(tx, &id).await? else {
        router.insert("external_gateway_info".into(), Value::Null);
        return Ok(false);
    };
    if has_floating_ips(tx, &id).await? {
        return Err(ApiError::conflict(
            "RouterExternalGatewayInUseByFloatingIp",
            format!(
                "Gateway cannot be updated for router {id}, since a gateway to external network {} is required by one or more floating IPs.",
                str_of(&gw, "network_id")
            ),
        ));
    }
    delete_port(tx, &gw).await?;
    router.insert("external_gateway_info".into(), Value::Null);
    Ok(true)
}

fn gw_info(network_id: &str, enable_snat: bool, port: &Obj) -> Value {
    let ips: Vec<Value> = fixed_ips(port)
        .into_iter()
        .map(|(s, ip)| json!({"subnet_id": s, "ip_address": ip}))
        .collect();
    json!({"network_id": network_id, "enable_snat": enable_snat, "external_fixed_ips": ips})
}

/// Neutron's `_update_router_gw_info` (with ext-gw-mode): sets, changes or clears the
/// gateway of `router` (already locked). `enable_snat` is reset to the request's value or
/// `enable_snat_by_default` whenever gateway info is given.
async fn update_gateway(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    router: &mut Obj,
    req: Option<GwReq>,
) -> ApiResult<()> {
    let router_id = str_of(router, "id").to_string();
    let current = gateway_port(tx, &router_id).await?;
    let Some(req) = req else {
        // _validate_gw_info without a network: the routes must stay reachable through the
        // other ports.
        let routes = stored_routes(router);
        if !routes.is_empty() {
            let skip = current.as_ref().map(|p| str_of(p, "id").to_string());
            let (cidrs, ips) = port_cidrs(tx, &router_id, skip.as_deref()).await?;
            validate_routes(&routes, &cidrs, &ips)?;
        }
        delete_gateway(tx, router).await?;
        return Ok(());
    };
    let enable_snat = req
        .enable_snat
        .unwrap_or(l3_scheduler::config(st).enable_snat_by_default);
    // _validate_gw_info: the network must be visible and external.
    let net = networks::get_visible(&mut *tx, ctx, &req.network_id).await?;
    if net.get("router:external") != Some(&Value::Bool(true)) {
        return Err(bad_router(format!(
            "Network {} is not an external network",
            req.network_id
        )));
    }
    let gw_subnets = subnets_of_network(tx, &req.network_id).await?;
    for f in &req.fixed {
        if let Some(ip) = f.ip
            && gw_subnets
                .iter()
                .any(|s| str_of(s, "gateway_ip").parse::<IpAddr>().ok() == Some(ip))
        {
            return Err(bad_router(format!(
                "External IP {ip} is the same as the gateway IP"
            )));
        }
    }
    // Routes must stay reachable through the other ports and the new gateway subnets.
    let routes = stored_routes(router);
    if !routes.is_empty() {
        let skip = current.as_ref().map(|p| str_of(p, "id").to_string());
        let (mut cidrs, ips) = port_cidrs(tx, &router_id, skip.as_deref()).await?;
        cidrs.extend(
            gw_subnets
                .iter()
                .filter_map(|s| ipam::parse_cidr(str_of(s, "cidr"))),
        );
        validate_routes(&routes, &cidrs, &ips)?;
    }
    let same_network = current
        .as_ref()
        .is_some_and(|p| str_of(p, "network_id") == req.network_id);
    let ip_change = req.fixed_given
        && current
            .as_ref()
            .is_none_or(|p| fixed_changed(p, &req.fixed));
    if let (Some(mut port), true) = (current.clone(), same_network) {
        if ip_change {
            replace_fixed_ips(st, tx, &mut port, &req.fixed).await?;
        }
        router.insert(
            "external_gateway_info".into(),
            gw_info(&req.network_id, enable_snat, &port),
        );
        return Ok(());
    }
    delete_gateway(tx, router).await?;
    check_dup_subnets(tx, &router_id, &gw_subnets, None).await?;
    let host = l3_scheduler::port_host(tx, &router_id).await?;
    let port = create_port(
        st,
        tx,
        PortSpec {
            net: &net,
            project: String::new(),
            device_id: router_id.clone(),
            device_owner: OWNER_GATEWAY,
            status: "DOWN",
            host,
            fixed: if req.fixed_given {
                Some(req.fixed.clone())
            } else {
                None
            },
        },
    )
    .await?;
    add_router_port(tx, &router_id, str_of(&port, "id"), OWNER_GATEWAY).await?;
    router.insert(
        "external_gateway_info".into(),
        gw_info(&req.network_id, enable_snat, &port),
    );
    Ok(())
}

/// Neutron's `_check_for_external_ip_change`.
fn fixed_changed(port: &Obj, reqs: &[FixedReq]) -> bool {
    let have = fixed_ips(port);
    let have_subnets: HashSet<&str> = have.iter().map(|(s, _)| s.as_str()).collect();
    let want_subnets: HashSet<&str> = reqs.iter().filter_map(|r| r.subnet_id.as_deref()).collect();
    if have_subnets != want_subnets {
        return true;
    }
    let have_ips: HashSet<String> = have.iter().map(|(_, ip)| ip.clone()).collect();
    let want_ips: HashSet<String> = reqs
        .iter()
        .filter_map(|r| r.ip)
        .map(|ip| ip.to_string())
        .collect();
    have_ips != want_ips
}

/// Gives the gateway port exactly the requested addresses (kept when already held).
async fn replace_fixed_ips(
    st: &ApiState,
    tx: &mut AnyConnection,
    port: &mut Obj,
    reqs: &[FixedReq],
) -> ApiResult<()> {
    let net_id = str_of(port, "network_id").to_string();
    let port_id = str_of(port, "id").to_string();
    let subnets = subnets_of_network(tx, &net_id).await?;
    let mut keep: Vec<Value> = Vec::new();
    let mut remaining = fixed_ips(port);
    let mut to_add: Vec<FixedReq> = Vec::new();
    for r in reqs {
        let pos = remaining
            .iter()
            .position(|(s, ip)| match (r.ip, &r.subnet_id) {
                (Some(want), _) => ip_of(ip) == Some(want),
                (None, Some(sid)) => s == sid,
                (None, None) => false,
            });
        match pos {
            Some(i) => {
                let (s, ip) = remaining.remove(i);
                keep.push(json!({"subnet_id": s, "ip_address": ip}));
            }
            None => to_add.push(r.clone()),
        }
    }
    for (_, ip) in &remaining {
        ipam::release_ip(tx, &net_id, ip).await?;
    }
    for r in to_add {
        let subnet = match (&r.subnet_id, r.ip) {
            (Some(sid), _) => subnets.iter().find(|s| str_of(s, "id") == sid).cloned(),
            (None, Some(ip)) => subnets.iter().find(|s| subnet_has_ip(s, ip, "")).cloned(),
            (None, None) => None,
        }
        .ok_or_else(|| ApiError::invalid_input("IP allocation requires subnet_id or ip_address"))?;
        let ip = match r.ip {
            Some(ip) => {
                ipam::allocate_specific(st, tx, &subnet, &net_id, &port_id, &ip.to_string()).await?
            }
            None => ipam::allocate_any(st, tx, &subnet, &net_id, &port_id).await?,
        };
        keep.push(json!({"subnet_id": str_of(&subnet, "id"), "ip_address": ip}));
    }
    port.insert("fixed_ips".into(), Value::Array(keep));
    db::save(tx, &ports::KIND, port).await
}

// ---------------------------------------------------------------------------------------------
// Create, list, show, update, delete.

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "router", "routers")?;
    let l3 = l3_scheduler::config(&st);
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let given: Vec<String> = item.keys().cloned().collect();
        let mut obj = attrs::prepare_create(&[STANDARD, ATTRS], item)?;
        common::owner_for_create(&ctx, &mut obj)?;
        let gw = parse_gw(obj.get("external_gateway_info").unwrap_or(&Value::Null))?;
        common::enforce(&st, &ctx, "create_router", &obj)?;
        // Attribute rules apply to what the client set explicitly (Neutron's
        // `_is_attribute_explicitly_set`).
        let mut keys = Obj::new();
        for k in &given {
            match k.as_str() {
                "ha" | "distributed" => {
                    keys.insert(k.clone(), Value::Null);
                }
                "external_gateway_info" if gw.is_some() => {
                    keys.extend(gw_policy_keys(&obj["external_gateway_info"]));
                }
                _ => {}
            }
        }
        common::enforce_attrs(&st, &ctx, "create_router", &keys, &obj)?;
        if obj.get("distributed").is_none_or(Value::is_null) {
            obj.insert("distributed".into(), json!(l3.router_distributed));
        }
        if obj.get("distributed") == Some(&Value::Bool(true)) {
            return Err(bad_router(
                "distributed routers are not supported by this deployment",
            ));
        }
        if obj.get("ha").is_none_or(Value::is_null) {
            obj.insert("ha".into(), json!(l3.l3_ha));
        }
        obj.insert("id".into(), json!(db::new_id()));
        obj.insert("status".into(), json!("ACTIVE"));
        obj.insert("external_gateway_info".into(), Value::Null);
        obj.insert("routes".into(), json!([]));
        obj.insert("flavor_id".into(), Value::Null);
        obj.insert("tags".into(), json!([]));
        prepared.push((obj, gw));
    }
    let mut tx = st.db.begin().await?;
    let mut out = Vec::with_capacity(prepared.len());
    for (mut obj, gw) in prepared {
        let project = str_of(&obj, "project_id").to_string();
        common::check_quota(&st, &mut tx, "router", &KIND, &project, 1).await?;
        let hints = obj
            .get("availability_zone_hints")
            .cloned()
            .unwrap_or(Value::Null);
        l3_scheduler::validate_hints(&mut tx, &hints).await?;
        db::insert_raw(&mut tx, &KIND, &mut obj)
            .await
            .map_err(ApiError::from)?;
        let has_gw = gw.is_some();
        if has_gw {
            update_gateway(&st, &mut tx, &ctx, &mut obj, gw).await?;
            sqlx::query("UPDATE routers SET body = $1 WHERE id = $2")
                .bind(Value::Object(obj.clone()).to_string())
                .bind(str_of(&obj, "id"))
                .execute(&mut *tx)
                .await?;
        }
        db::log_create(&mut tx, &KIND, &obj).await?;
        // Neutron notifies (and so schedules) a new router only when it has a gateway.
        if has_gw {
            l3_scheduler::schedule_router(&st, &mut tx, &obj, None).await?;
        }
        let zones = l3_scheduler::zones_of_router(&mut *tx, str_of(&obj, "id")).await?;
        out.push(Value::Object(render(&st, &ctx, &obj, zones)));
    }
    st.db.commit(tx).await?;
    Ok(if req.bulk {
        common::created("routers", Value::Array(out))
    } else {
        common::created("router", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's attribute map of l3's router, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "name", "admin_state_up", "status", "tenant_id"],
    bools: &["admin_state_up", "distributed", "ha"],
    ints: &[],
};

/// Router attributes whose rendered value is the stored string (or null, or absent and
/// filled in): SQL may filter on them.
const STORED_TEXT: &[&str] = &[
    "id",
    "project_id",
    "tenant_id",
    "name",
    "description",
    "status",
];

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
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
    src.push_filters(&query, &listing::unhidden(&st, &ctx, "router", STORED_TEXT));
    src.push_tags(&query);
    // `status` is filled in when absent: sorted in memory.
    src.computed(&["status"]);
    let zones = l3_scheduler::zones_by_router(st.db.reader()).await?;
    let mut pager = query.pager(&st.db, src).await?;
    while let Some(batch) = pager.next_batch(&st.db).await? {
        for r in &batch {
            if visible(&ctx, r) && st.policy.check(&ctx, "get_router", r) {
                let z = zones.get(str_of(r, "id")).cloned().unwrap_or_default();
                pager.push(render(&st, &ctx, r, z));
            }
        }
    }
    let url = format!("{}/v2.0/routers", common::base_url(&headers));
    Ok(axum::Json(pager.finish("routers", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let r = get_visible(&st, st.db.reader(), &ctx, &id).await?;
    let zones = l3_scheduler::zones_of_router(st.db.reader(), &id).await?;
    Ok(common::ok(
        "router",
        Value::Object(query.trim(render(&st, &ctx, &r, zones))),
    ))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes =
        attrs::prepare_update(&[STANDARD, ATTRS], common::parse_update(&body, "router")?)?;
    let gw = match changes.get("external_gateway_info") {
        Some(v) => Some(parse_gw(v)?),
        None => None,
    };
    let routes = match changes.get("routes") {
        Some(v) => Some(parse_routes(v)?),
        None => None,
    };
    let mut tx = st.db.begin().await?;
    let mut router = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::check_revision(expected, &router)?;
    common::enforce(&st, &ctx, "update_router", &router)?;
    let mut keys = Obj::new();
    for k in changes.keys() {
        if k == "external_gateway_info" {
            keys.extend(gw_policy_keys(&changes[k]));
        } else {
            keys.insert(k.clone(), Value::Null);
        }
    }
    common::enforce_attrs(&st, &ctx, "update_router", &keys, &router)?;
    let before = router.clone();
    if changes.get("distributed") == Some(&Value::Bool(true)) {
        return Err(bad_router(
            "distributed routers are not supported by this deployment",
        ));
    }
    if let Some(ha) = changes.get("ha")
        && router.get("ha") != Some(ha)
        && router.get("admin_state_up") != Some(&Value::Bool(false))
    {
        // l3_hamode_db's _validate_router_migration.
        return Err(bad_router(
            "Cannot change HA attribute of active routers. Please set router admin_state_up to False prior to upgrade",
        ));
    }
    if let Some(routes) = routes {
        set_routes(&st, &mut tx, &mut router, routes).await?;
    }
    if let Some(gw) = gw {
        update_gateway(&st, &mut tx, &ctx, &mut router, gw).await?;
    }
    for (k, v) in &changes {
        if matches!(k.as_str(), "external_gateway_info" | "routes") {
            continue;
        }
        router.insert(k.clone(), v.clone());
    }
    if router != before {
        db::save(&mut tx, &KIND, &mut router).await?;
    }
    // Neutron notifies the router's agents (and schedules it) on every update.
    l3_scheduler::schedule_router(&st, &mut tx, &router, None).await?;
    let zones = l3_scheduler::zones_of_router(&mut *tx, &id).await?;
    st.db.commit(tx).await?;
    Ok(common::ok(
        "router",
        Value::Object(render(&st, &ctx, &router, zones)),
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
    let mut router = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::check_revision(expected, &router)?;
    common::enforce(&st, &ctx, "delete_router", &router)?;
    // _ensure_router_not_in_use: interfaces must be removed first.
    let attached: Vec<String> = router_ports(&mut tx, &id)
        .await?
        .into_iter()
        .filter(|(t, _)| t != OWNER_GATEWAY)
        .map(|(_, p)| str_of(&p, "id").to_string())
        .collect();
    if !attached.is_empty() {
        return Err(ApiError::conflict(
            "RouterInUse",
            format!(
                "Router {id} has ports still attached: {}",
                attached.join(", ")
            ),
        ));
    }
    delete_gateway(&mut tx, &mut router).await?;
    l3_scheduler::unbind_all(&mut tx, &id).await?;
    db::remove(&mut tx, &KIND, &router).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

// ---------------------------------------------------------------------------------------------
// Interfaces.

/// Neutron's `_validate_interface_info`: exactly one of `subnet_id` / `port_id` (both are
/// allowed for removal), each a UUID.
fn parse_interface(body: &Bytes, for_removal: bool) -> ApiResult<(Option<String>, Option<String>)> {
    let v = common::parse_json(body)?;
    let m = match v {
        Value::Object(m) => m,
        _ => return Err(bad_router("Either subnet_id or port_id must be specified")),
    };
    let port = m.get("port_id");
    let subnet = m.get("subnet_id");
    if port.is_none() && subnet.is_none() {
        return Err(bad_router("Either subnet_id or port_id must be specified"));
    }
    let uuid = |v: Option<&Value>| -> ApiResult<Option<String>> {
        match v {
            None => Ok(None),
            Some(Value::String(s)) if attrs::is_uuid(s) => Ok(Some(s.clone())),
            Some(other) => Err(bad_router(format!(
                "'{}' is not a valid UUID",
                attrs::display(other)
            ))),
        }
    };
    let (port, subnet) = (uuid(port)?, uuid(subnet)?);
    if !for_removal && port.is_some() && subnet.is_some() {
        return Err(bad_router("Cannot specify both subnet-id and port-id"));
    }
    Ok((port, subnet))
}

fn interface_info(router_id: &str, port: &Obj, subnet_ids: &[String], last: bool) -> Value {
    let project = str_of(port, "project_id");
    let subnet_id = if last {
        subnet_ids.last()
    } else {
        subnet_ids.first()
    };
    json!({
        "id": router_id,
        "tenant_id": project,
        "project_id": project,
        "port_id": str_of(port, "id"),
        "network_id": str_of(port, "network_id"),
        "subnet_id": subnet_id,
        "subnet_ids": subnet_ids,
    })
}

/// Loads a subnet the caller may see (and its network), else 404 `SubnetNotFound`.
async fn visible_subnet(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    id: &str,
) -> ApiResult<(Obj, Obj)> {
    let Some(subnet) = db::get(&mut *tx, &subnets::KIND, id).await? else {
        return Err(subnets::not_found(id));
    };
    let net = db::get(&mut *tx, &networks::KIND, str_of(&subnet, "network_id"))
        .await?
        .unwrap_or_default();
    if !ctx.is_admin() && !subnets::visible(st, ctx, &net, &subnet) {
        return Err(subnets::not_found(id));
    }
    Ok((subnet, net))
}

/// Loads a port the caller may see (its project, or its network's owner), else 404.
async fn visible_port(tx: &mut AnyConnection, ctx: &Context, id: &str) -> ApiResult<(Obj, Obj)> {
    let Some(port) = db::get(&mut *tx, &ports::KIND, id).await? else {
        return Err(ApiError::not_found("Port", id));
    };
    let net = db::get(&mut *tx, &networks::KIND, str_of(&port, "network_id"))
        .await?
        .unwrap_or_default();
    if !(ctx.is_admin()
        || ctx.owns(str_of(&port, "project_id"))
        || ctx.owns(str_of(&net, "project_id")))
    {
        return Err(ApiError::not_found("Port", id));
    }
    Ok((port, net))
}

fn has_v6(port: &Obj) -> bool {
    fixed_ips(port)
        .iter()
        .any(|(_, ip)| ip_of(ip).is_some_and(|i| i.is_ipv6()))
}

/// Neutron's `_validate_one_router_ipv6_port_per_network`.
async fn check_one_v6_port(tx: &mut AnyConnection, router_id: &str, port: &Obj) -> ApiResult<()> {
    if !has_v6(port) {
        return Ok(());
    }
    for (_, p) in router_ports(tx, router_id).await? {
        if str_of(&p, "id") != str_of(port, "id")
            && str_of(&p, "network_id") == str_of(port, "network_id")
            && has_v6(&p)
        {
            return Err(bad_router(format!(
                "Router already contains IPv6 port {} belonging to network id {}. Only one IPv6 port from the same network subnet can be connected to a router.",
                str_of(&p, "id"),
                str_of(&p, "network_id")
            )));
        }
    }
    Ok(())
}

async fn add_interface(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (port_id, subnet_id) = parse_interface(&body, false)?;
    let mut tx = st.db.begin().await?;
    let mut router = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::enforce(&st, &ctx, "add_router_interface", &router)?;
    let host = l3_scheduler::port_host(&mut tx, &id).await?;
    let (port, subnet_ids) = match (port_id, subnet_id) {
        (Some(pid), _) => {
            let (mut port, net) = visible_port(&mut tx, &ctx, &pid).await?;
            // _check_router_port: unattached, with an address.
            if !str_of(&port, "device_id").is_empty() {
                return Err(ApiError::conflict(
                    "PortInUse",
                    format!(
                        "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                        str_of(&port, "network_id"),
                        str_of(&port, "device_id")
                    ),
                ));
            }
            let ips = fixed_ips(&port);
            if ips.is_empty() {
                return Err(bad_router("Router port must have at least one fixed IP"));
            }
            let mut subs = Vec::new();
            for (sid, _) in &ips {
                if let Some(s) = db::get(&mut *tx, &subnets::KIND, sid).await?
                    && !subs.iter().any(|x: &Obj| str_of(x, "id") == sid)
                {
                    check_address_mode(&s)?;
                    subs.push(s);
                }
            }
            check_one_v6_port(&mut tx, &id, &port).await?;
            check_dup_subnets(&mut tx, &id, &subs, Some(&pid)).await?;
            if subs.iter().filter(|s| ip_version(s) == 4).count() > 1 {
                return Err(bad_router(
                    "Cannot have multiple IPv4 subnets on router port",
                ));
            }
            // _validate_port_in_range_or_admin.
            if !ctx.is_admin() {
                for (sid, ip) in &ips {
                    let Some(s) = subs.iter().find(|s| str_of(s, "id") == sid) else {
                        continue;
                    };
                    let in_pool = ip_of(ip).is_some_and(|a| {
                        let a = ipam::to_u128(a);
                        ipam::pools_of(s).iter().any(|r| r.contains(a))
                    });
                    if !in_pool && !ctx.owns(str_of(s, "project_id")) {
                        return Err(bad_router(format!(
                            "Cannot add interface to router because specified port {pid} has an IP address out of the allocation pool of subnet {sid}, which is not owned by the project making the request"
                        )));
                    }
                }
            }
            port.insert("device_id".into(), json!(id));
            port.insert("device_owner".into(), json!(OWNER_INTERFACE));
            if str_of(&port, "binding:host_id") != host {
                port.insert("binding:host_id".into(), json!(host));
                binding::bind_port(&st, &mut tx, &net, &mut port).await?;
            }
            db::save(&mut tx, &ports::KIND, &mut port).await?;
            add_router_port(&mut tx, &id, &pid, OWNER_INTERFACE).await?;
            let ids: Vec<String> = subs.iter().map(|s| str_of(s, "id").to_string()).collect();
            (port, ids)
        }
        (None, Some(sid)) => {
            let (subnet, net) = visible_subnet(&st, &mut tx, &ctx, &sid).await?;
            let Some(gateway) = subnet
                .get("gateway_ip")
                .and_then(Value::as_str)
                .and_then(ip_of)
            else {
                return Err(bad_router(
                    "Subnet for router interface must have a gateway IP",
                ));
            };
            // A subnet of another project only through an RBAC grant to the caller's
            // project (LP-1975603), not a global share (LP-1757482).
            if !ctx.is_admin()
                && !ctx.owns(str_of(&subnet, "project_id"))
                && !rbac::has_entry(&net, rbac::SHARED, ctx.project())
            {
                return Err(bad_router(format!(
                    "Cannot add interface to router because subnet {sid} is not owned by project making the request"
                )));
            }
            check_address_mode(&subnet)?;
            check_dup_subnets(&mut tx, &id, std::slice::from_ref(&subnet), None).await?;
            let fixed = FixedReq {
                subnet_id: Some(sid.clone()),
                ip: Some(gateway),
            };
            // IPv6: a new prefix goes onto the router's existing IPv6 port on the network.
            let existing_v6 = if ip_version(&subnet) == 6 {
                router_ports(&mut tx, &id)
                    .await?
                    .into_iter()
                    .find(|(t, p)| {
                        t == OWNER_INTERFACE
                            && str_of(p, "network_id") == str_of(&subnet, "network_id")
                            && has_v6(p)
                    })
                    .map(|(_, p)| p)
            } else {
                None
            };
            match existing_v6 {
                Some(mut p) => {
                    let ip = ipam::allocate_specific(
                        &st,
                        &mut tx,
                        &subnet,
                        str_of(&net, "id"),
                        str_of(&p, "id"),
                        &gateway.to_string(),
                    )
                    .await?;
                    let mut list = p
                        .get("fixed_ips")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    list.push(json!({"subnet_id": sid, "ip_address": ip}));
                    p.insert("fixed_ips".into(), Value::Array(list));
                    db::save(&mut tx, &ports::KIND, &mut p).await?;
                    (p, vec![sid.clone()])
                }
                None => {
                    let port = create_port(
                        &st,
                        &mut tx,
                        PortSpec {
                            net: &net,
                            project: str_of(&router, "project_id").to_string(),
                            device_id: id.clone(),
                            device_owner: OWNER_INTERFACE,
                            status: "DOWN",
                            host: host.clone(),
                            fixed: Some(vec![fixed]),
                        },
                    )
                    .await?;
                    add_router_port(&mut tx, &id, str_of(&port, "id"), OWNER_INTERFACE).await?;
                    (port, vec![sid.clone()])
                }
            }
        }
        (None, None) => return Err(bad_router("Either subnet_id or port_id must be specified")),
    };
    // A new interface revises the router (Neutron's RouterPort revises_on_change), which
    // tells its hosts; then the router is scheduled as on any router notification.
    db::save(&mut tx, &KIND, &mut router).await?;
    l3_scheduler::schedule_router(&st, &mut tx, &router, None).await?;
    st.db.commit(tx).await?;
    Ok(axum::Json(interface_info(&id, &port, &subnet_ids, true)).into_response())
}

/// Refuses to remove the router's interface on `subnet` while floating IPs or port
/// forwardings reach their ports through it (409 `RouterInterfaceInUseByFloatingIP`) or
/// extra routes use it as nexthop (409 `RouterInterfaceInUseByRoute`).
async fn check_interface_not_in_use(
    tx: &mut AnyConnection,
    router: &Obj,
    subnet: &Obj,
) -> ApiResult<()> {
    let router_id = str_of(router, "id");
    let sid = str_of(subnet, "id");
    let Some(cidr) = ipam::parse_cidr(str_of(subnet, "cidr")) else {
        return Ok(());
    };
    let subnet_ports: HashSet<String> =
        sqlx::query_scalar::<_, String>("SELECT port_id FROM ip_allocations WHERE subnet_id = $1")
            .bind(sid)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    let in_use = ApiError::conflict(
        "RouterInterfaceInUseByFloatingIP",
        format!(
            "Router interface for subnet {sid} on router {router_id} cannot be deleted, as it is required by one or more floating IPs."
        ),
    );
    let fips: Vec<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT port_id, fixed_ip_address, id FROM floatingips WHERE router_id = $1",
    )
    .bind(router_id)
    .fetch_all(&mut *tx)
    .await?;
    for (port, ip, _) in &fips {
        if let (Some(port), Some(ip)) = (port, ip)
            && ip_of(ip).is_some_and(|a| cidr.contains(&a))
            && subnet_ports.contains(port)
        {
            return Err(in_use);
        }
    }
    for (_, _, fip_id) in &fips {
        let pfs: Vec<(String, String)> = sqlx::query_as(
            "SELECT internal_port_id, internal_ip_address FROM port_forwardings WHERE floatingip_id = $1",
        )
        .bind(fip_id)
        .fetch_all(&mut *tx)
        .await?;
        for (port, ip) in pfs {
            if ip_of(&ip).is_some_and(|a| cidr.contains(&a)) && subnet_ports.contains(&port) {
                return Err(in_use);
            }
        }
    }
    for r in stored_routes(router) {
        if ip_of(&r.nexthop).is_some_and(|a| cidr.contains(&a)) {
            return Err(ApiError::conflict(
                "RouterInterfaceInUseByRoute",
                format!(
                    "Router interface for subnet {sid} on router {router_id} cannot be deleted, as it is required by one or more routes."
                ),
            ));
        }
    }
    Ok(())
}

async fn remove_interface(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let (port_id, subnet_id) = parse_interface(&body, true)?;
    let mut tx = st.db.begin().await?;
    let mut router = load_for_write(&st, &mut tx, &ctx, &id).await?;
    common::enforce(&st, &ctx, "remove_router_interface", &router)?;
    let interfaces: Vec<Obj> = router_ports(&mut tx, &id)
        .await?
        .into_iter()
        .filter(|(t, _)| t == OWNER_INTERFACE)
        .map(|(_, p)| p)
        .collect();
    let (port, subnet_ids) = if let Some(pid) = port_id {
        let Some(port) = interfaces.iter().find(|p| str_of(p, "id") == pid).cloned() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "RouterInterfaceNotFound",
                format!("Router {id} does not have an interface with id {pid}"),
            ));
        };
        let port_subnets: Vec<String> = fixed_ips(&port).into_iter().map(|(s, _)| s).collect();
        if let Some(sid) = &subnet_id
            && !port_subnets.contains(sid)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "SubnetMismatchForPort",
                format!("Subnet on port {pid} does not match the requested subnet {sid}."),
            ));
        }
        let mut ids = Vec::new();
        for sid in &port_subnets {
            if let Some(s) = db::get(&mut *tx, &subnets::KIND, sid).await? {
                check_interface_not_in_use(&mut tx, &router, &s).await?;
            }
            if !ids.contains(sid) {
                ids.push(sid.clone());
            }
        }
        delete_port(&mut tx, &port).await?;
        (port, ids)
    } else if let Some(sid) = subnet_id {
        let (subnet, _) = visible_subnet(&st, &mut tx, &ctx, &sid).await?;
        let on_net: Vec<&Obj> = interfaces
            .iter()
            .filter(|p| str_of(p, "network_id") == str_of(&subnet, "network_id"))
            .collect();
        if !on_net.is_empty() {
            check_interface_not_in_use(&mut tx, &router, &subnet).await?;
        }
        let mut done = None;
        for p in on_net {
            let ips = fixed_ips(p);
            if !ips.iter().any(|(s, _)| *s == sid) {
                continue;
            }
            if ips.len() > 1 {
                // A multi-prefix IPv6 port loses just this prefix.
                let mut port = p.clone();
                let mut keep = Vec::new();
                for (s, ip) in ips {
                    if s == sid {
                        ipam::release_ip(&mut tx, str_of(&port, "network_id"), &ip).await?;
                    } else {
                        keep.push(json!({"subnet_id": s, "ip_address": ip}));
                    }
                }
                port.insert("fixed_ips".into(), Value::Array(keep));
                db::save(&mut tx, &ports::KIND, &mut port).await?;
                done = Some(port);
            } else {
                delete_port(&mut tx, p).await?;
                done = Some(p.clone());
            }
            break;
        }
        let Some(port) = done else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "RouterInterfaceNotFoundForSubnet",
                format!("Router {id} has no interface on subnet {sid}"),
            ));
        };
        (port, vec![sid])
    } else {
        return Err(bad_router("Either subnet_id or port_id must be specified"));
    };
    db::save(&mut tx, &KIND, &mut router).await?;
    l3_scheduler::schedule_router(&st, &mut tx, &router, None).await?;
    st.db.commit(tx).await?;
    Ok(axum::Json(interface_info(&id, &port, &subnet_ids, false)).into_response())
}

// ---------------------------------------------------------------------------------------------
// extraroute-atomic.

fn parse_route_body(body: &Bytes) -> ApiResult<Vec<Route>> {
    let m = common::parse_update(body, "router")?;
    let mut unknown: Vec<&str> = m
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "routes")
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    let Some(v) = m.get("routes") else {
        return Err(ApiError::bad_request(
            "Failed to parse request. Required attribute 'routes' not specified",
        ));
    };
    parse_routes(v)
}

async fn edit_routes(
    st: ApiState,
    ctx: Context,
    id: String,
    body: Bytes,
    add: bool,
) -> ApiResult<Response> {
    let req = parse_route_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut router = load_for_write(&st, &mut tx, &ctx, &id).await?;
    let action = if add {
        "add_extraroutes"
    } else {
        "remove_extraroutes"
    };
    common::enforce(&st, &ctx, action, &router)?;
    let old = stored_routes(&router);
    // Neutron's _add_extra_routes / _remove_extra_routes: set semantics per
    // (destination, nexthop); removing a missing route is not an error.
    let new: Vec<Route> = if add {
        let mut out = old.clone();
        for r in req {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    } else {
        old.into_iter().filter(|r| !req.contains(r)).collect()
    };
    if set_routes(&st, &mut tx, &mut router, new).await? {
        db::save(&mut tx, &KIND, &mut router).await?;
    }
    l3_scheduler::schedule_router(&st, &mut tx, &router, None).await?;
    let zones = l3_scheduler::zones_of_router(&mut *tx, &id).await?;
    st.db.commit(tx).await?;
    Ok(common::ok(
        "router",
        Value::Object(render(&st, &ctx, &router, zones)),
    ))
}

async fn add_extraroutes(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    edit_routes(st, ctx, id, body, true).await
}

async fn remove_extraroutes(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    edit_routes(st, ctx, id, body, false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_validation_like_hostroutes() {
        let r =
            parse_routes(&json!([{"destination": "10.0.0.0/24", "nexthop": "10.1.0.5"}])).unwrap();
        assert_eq!(r.len(), 1);
        assert!(parse_routes(&Value::Null).unwrap().is_empty());
        for bad in [
            json!([{"destination": "10.0.0.0", "nexthop": "10.1.0.5"}]),
            json!([{"destination": "10.0.0.0/24", "nexthop": "x"}]),
            json!([{"destination": "10.0.0.0/24"}]),
            json!([{"destination": "10.0.0.0/24", "nexthop": "10.1.0.5"},
                   {"destination": "10.0.0.0/24", "nexthop": "10.1.0.5"}]),
            json!("x"),
        ] {
            assert!(parse_routes(&bad).is_err(), "{bad}");
        }
        let cidrs = vec!["10.1.0.0/24".parse().unwrap()];
        let ips = vec!["10.1.0.1".parse().unwrap()];
        assert!(validate_routes(&r, &cidrs, &ips).is_ok());
        let e = validate_routes(&r, &[], &ips).unwrap_err();
        assert_eq!(e.kind, "InvalidRoutes");
        assert!(e.message.contains("not connected"), "{}", e.message);
        let used =
            parse_routes(&json!([{"destination": "10.0.0.0/24", "nexthop": "10.1.0.1"}])).unwrap();
        assert!(validate_routes(&used, &cidrs, &ips).is_err());
    }

    #[test]
    fn gateway_info_parsing() {
        assert!(parse_gw(&Value::Null).unwrap().is_none());
        assert!(parse_gw(&json!({})).unwrap().is_none());
        let id = uuid::Uuid::new_v4().to_string();
        let g = parse_gw(&json!({"network_id": id, "enable_snat": "false"}))
            .unwrap()
            .unwrap();
        assert_eq!(g.enable_snat, Some(false));
        assert!(parse_gw(&json!({"network_id": "x"})).is_err());
        assert!(parse_gw(&json!({"enable_snat": true})).is_err());
        assert!(parse_gw(&json!({"network_id": id, "bogus": 1})).is_err());
        assert!(parse_gw(&json!("x")).is_err());
    }

    #[test]
    fn python_repr_of_routes() {
        let r = vec![Route {
            destination: "10.0.0.0/24".into(),
            nexthop: "1.2.3.4".into(),
        }];
        assert_eq!(
            python_routes(&r),
            "[{'destination': '10.0.0.0/24', 'nexthop': '1.2.3.4'}]"
        );
    }
}
