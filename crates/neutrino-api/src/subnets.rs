//! `/v2.0/subnets`: create (incl. bulk and allocation from subnet pools), list, show, update,
//! delete.
//!
//! Owns the subnet document and Neutron's rules for it: CIDR normalisation, the default
//! gateway (first host for IPv4, the subnet-router anycast address for IPv6), default and
//! explicit allocation pools, DNS servers and host routes (with the configured limits), the
//! IPv6 RA/address modes, no overlapping CIDRs on one network (or anywhere when
//! `allow_overlapping_ips` is off), subnets carved from pools (`subnet_allocation`,
//! `default-subnetpools`), and deletion (refused while user ports hold addresses on it; the
//! addresses of DHCP ports go with it). A subnet is visible exactly when its network is and
//! policy allows `get_subnet`. Every write is one transaction that locks the network row
//! (and the pool row when carving), so overlap checks hold with several servers on
//! PostgreSQL. Address allocation for ports lives in ipam.rs; this module must never hand out
//! port addresses.

use std::collections::HashMap;
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use ipnet::IpNet;
use serde_json::{Value, json};

use neutrino_core::db::{self, Backend, Kind, Obj};
use neutrino_core::list::{ListQuery, Source, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::ipam::{self, Range};
use crate::{ApiState, listing, networks, ports, rbac, subnetpools};

/// Storage of subnets.
pub const KIND: Kind = Kind {
    resource: "subnet",
    table: "subnets",
    columns: &["network_id", "subnetpool_id", "cidr"],
};

/// Subnet attributes beyond the standard ones (neutron-lib's subnet definition plus the
/// default-subnetpools, segment and subnet-service-types extensions).
pub const ATTRS: &[Attr] = &[
    attr("network_id", true, false, Ty::Uuid, D::Required),
    attr("ip_version", true, false, Ty::Int, D::Required),
    attr("cidr", true, false, Ty::Any, D::None),
    attr("prefixlen", true, false, Ty::IntOrNull, D::None),
    attr("subnetpool_id", true, false, Ty::Any, D::None),
    attr(
        "use_default_subnetpool",
        true,
        false,
        Ty::Bool,
        D::Bool(false),
    ),
    attr("gateway_ip", true, true, Ty::Any, D::None),
    attr("allocation_pools", true, true, Ty::Any, D::None),
    attr("dns_nameservers", true, true, Ty::Any, D::None),
    attr("host_routes", true, true, Ty::Any, D::None),
    attr("enable_dhcp", true, true, Ty::Bool, D::Bool(true)),
    attr("ipv6_ra_mode", true, false, Ty::Any, D::None),
    attr("ipv6_address_mode", true, false, Ty::Any, D::None),
    attr("service_types", true, true, Ty::List, D::None),
    attr("segment_id", true, false, Ty::UuidOrNull, D::None),
];

const IPV6_MODES: [&str; 3] = ["dhcpv6-stateful", "dhcpv6-stateless", "slaac"];

/// Owners whose addresses on a subnet are removed with it (`AUTO_DELETE_PORT_OWNERS`).
const AUTO_DELETE_OWNERS: [&str; 3] = [
    "network:dhcp",
    "network:distributed",
    "network:floatingip_agent_gateway",
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/subnets", get(list).post(create))
        .route("/v2.0/subnets/{id}", get(show).put(update).delete(delete))
}

// ---------------------------------------------------------------------------------------------
// Errors with Neutron's types and messages.

fn bad_value(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

/// `BadRequest(resource='subnets')`.
fn bad_subnets(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Bad subnets request: {msg}."),
    )
}

fn typed(status: StatusCode, kind: &'static str, msg: String) -> ApiError {
    ApiError::new(status, kind, msg)
}

/// 404 `SubnetNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found("Subnet", id)
}

fn version_mismatch(name: &str, addr: &str, version: i64) -> ApiError {
    ApiError::invalid_input(format!(
        "{name} '{addr}' does not match the ip_version '{version}'"
    ))
}

fn range_text(r: &Range, v6: bool) -> String {
    format!(
        "{}-{}",
        ipam::ip_text(r.first, v6),
        ipam::ip_text(r.last, v6)
    )
}

/// Python's repr of a flat JSON object, as Neutron quotes dicts in messages.
fn py_repr(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("'{k}': {}", py_repr(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::String(s) => format!("'{s}'"),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        Value::Number(n) => n.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Attribute validation (pure).

fn str_of<'a>(o: &'a Obj, k: &str) -> Option<&'a str> {
    o.get(k).and_then(Value::as_str)
}

/// Validates `cidr` (neutron-lib `type:subnet_or_none`) and normalises host bits away, as
/// `create_subnet` does ("turn the CIDR into a proper subnet").
fn parse_cidr_attr(v: &Value) -> ApiResult<IpNet> {
    let s = v.as_str().unwrap_or_default();
    if let Some(n) = ipam::parse_cidr(s) {
        return Ok(n.trunc());
    }
    if let Some(ip) = ipam::parse_ip(s) {
        let len = if ip.is_ipv6() { 128 } else { 32 };
        return Err(bad_value(
            "cidr",
            format!("'{s}' isn't a recognized IP subnet cidr, '{ip}/{len}' is recommended"),
        ));
    }
    Err(bad_value(
        "cidr",
        format!("'{}' is not a valid IP subnet", attrs::display(v)),
    ))
}

fn parse_ip_attr(attr: &str, v: &Value) -> ApiResult<IpAddr> {
    v.as_str().and_then(ipam::parse_ip).ok_or_else(|| {
        bad_value(
            attr,
            format!("'{}' is not a valid IP address", attrs::display(v)),
        )
    })
}

/// `gateway_ip`: null means no gateway.
fn parse_gateway(v: &Value) -> ApiResult<Option<IpAddr>> {
    if v.is_null() {
        return Ok(None);
    }
    parse_ip_attr("gateway_ip", v).map(Some)
}

fn verify_keys(attr: &str, item: &Value, expected: &[&str]) -> ApiResult<()> {
    let Value::Object(m) = item else {
        return Err(bad_value(
            attr,
            format!(
                "Invalid input. '{}' must be a dictionary with keys: {}",
                attrs::display(item),
                py_repr(&json!(expected))
            ),
        ));
    };
    let mut have: Vec<&str> = m.keys().map(String::as_str).collect();
    have.sort_unstable();
    let mut want = expected.to_vec();
    want.sort_unstable();
    if have != want {
        return Err(bad_value(
            attr,
            format!(
                "Validation of dictionary's keys failed. Expected keys: {} Provided keys: {}",
                py_repr(&json!(want)),
                py_repr(&json!(have))
            ),
        ));
    }
    Ok(())
}

/// `allocation_pools` (neutron-lib `type:ip_pools` then `pools_to_ip_range`): `None` when
/// not given or null.
fn parse_pools(v: Option<&Value>) -> ApiResult<Option<Vec<Range>>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let Value::Array(items) = v else {
        return Err(bad_value(
            "allocation_pools",
            format!("Invalid data format for IP pool: '{}'", attrs::display(v)),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    let mut family: Option<bool> = None;
    for item in items {
        verify_keys("allocation_pools", item, &["start", "end"])?;
        let s = parse_ip_attr("allocation_pools", &item["start"])?;
        let e = parse_ip_attr("allocation_pools", &item["end"])?;
        // netaddr.IPRange refuses reversed or mixed-family bounds; so does a mixed list.
        if s.is_ipv6() != e.is_ipv6()
            || ipam::to_u128(s) > ipam::to_u128(e)
            || family.is_some_and(|f| f != s.is_ipv6())
        {
            return Err(typed(
                StatusCode::BAD_REQUEST,
                "InvalidAllocationPool",
                format!(
                    "The allocation pool {{'start': '{}', 'end': '{}'}} is not valid.",
                    attrs::display(&item["start"]),
                    attrs::display(&item["end"])
                ),
            ));
        }
        family = Some(s.is_ipv6());
        out.push(Range {
            first: ipam::to_u128(s),
            last: ipam::to_u128(e),
        });
    }
    Ok(Some(out))
}

/// Neutron's `_validate_allocation_pools` plus `validate_gw_out_of_pools`.
fn check_pools(
    pools: &[Range],
    pool_v6: Option<bool>,
    net: &IpNet,
    gateway: Option<IpAddr>,
) -> ApiResult<()> {
    let v6 = matches!(net, IpNet::V6(_));
    let r = ipam::net_range(net);
    let (lo, hi) = (
        r.first.saturating_add(1),
        if v6 { r.last } else { r.last.saturating_sub(1) },
    );
    for p in pools {
        if pool_v6.is_some_and(|pv| pv != v6) {
            return Err(typed(
                StatusCode::BAD_REQUEST,
                "InvalidAllocationPool",
                format!("The allocation pool {} is not valid.", range_text(p, !v6)),
            ));
        }
        if p.first < lo || p.last > hi {
            return Err(typed(
                StatusCode::BAD_REQUEST,
                "OutOfBoundsAllocationPool",
                format!(
                    "The allocation pool {} spans beyond the subnet cidr {net}.",
                    range_text(p, v6)
                ),
            ));
        }
    }
    for (i, a) in pools.iter().enumerate() {
        for b in &pools[i + 1..] {
            if a.first <= b.last && b.first <= a.last {
                return Err(typed(
                    StatusCode::CONFLICT,
                    "OverlappingAllocationPools",
                    format!(
                        "Found overlapping allocation pools: {} {} for subnet {net}.",
                        range_text(a, v6),
                        range_text(b, v6)
                    ),
                ));
            }
        }
    }
    if let Some(g) = gateway {
        check_gateway_outside(pools, g, v6)?;
    }
    Ok(())
}

fn check_gateway_outside(pools: &[Range], g: IpAddr, v6: bool) -> ApiResult<()> {
    let a = ipam::to_u128(g);
    if g.is_ipv6() != v6 {
        return Ok(());
    }
    match pools.iter().find(|p| p.contains(a)) {
        Some(p) => Err(typed(
            StatusCode::CONFLICT,
            "GatewayConflictWithAllocationPools",
            format!(
                "Gateway ip {g} conflicts with allocation pool {}.",
                range_text(p, v6)
            ),
        )),
        None => Ok(()),
    }
}

/// `dns_nameservers` (neutron-lib `type:nameservers`); null means none.
fn parse_dns(v: Option<&Value>) -> ApiResult<Option<Vec<IpAddr>>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(Some(vec![]));
    }
    let Value::Array(items) = v else {
        return Err(bad_value(
            "dns_nameservers",
            format!(
                "Invalid data format for nameserver: '{}'",
                attrs::display(v)
            ),
        ));
    };
    let mut out: Vec<IpAddr> = Vec::with_capacity(items.len());
    let mut seen: Vec<&str> = Vec::new();
    for item in items {
        let text = attrs::display(item);
        let Some(ip) = item.as_str().and_then(ipam::parse_ip) else {
            return Err(bad_value(
                "dns_nameservers",
                format!("'{text}' is not a valid nameserver. '{text}' is not a valid IP address"),
            ));
        };
        let s = item.as_str().unwrap_or_default();
        if seen.contains(&s) {
            return Err(bad_value(
                "dns_nameservers",
                format!("Duplicate nameserver '{s}'"),
            ));
        }
        seen.push(s);
        out.push(ip);
    }
    Ok(Some(out))
}

/// `host_routes` (neutron-lib `type:hostroutes`); null means none.
fn parse_routes(v: Option<&Value>) -> ApiResult<Option<Vec<(IpNet, IpAddr)>>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_null() {
        return Ok(Some(vec![]));
    }
    let Value::Array(items) = v else {
        return Err(bad_value(
            "host_routes",
            format!("Invalid data format for hostroute: '{}'", attrs::display(v)),
        ));
    };
    let mut out: Vec<(IpNet, IpAddr)> = Vec::with_capacity(items.len());
    let mut seen: Vec<&Value> = Vec::new();
    for item in items {
        verify_keys("host_routes", item, &["destination", "nexthop"])?;
        let dest = item["destination"]
            .as_str()
            .and_then(ipam::parse_cidr)
            .ok_or_else(|| {
                bad_value(
                    "host_routes",
                    format!(
                        "'{}' is not a valid IP subnet",
                        attrs::display(&item["destination"])
                    ),
                )
            })?;
        let hop = parse_ip_attr("host_routes", &item["nexthop"])?;
        if seen.contains(&item) {
            // Python's dict repr in request order; serde's map is sorted, which for these
            // two keys is the same order.
            return Err(bad_value(
                "host_routes",
                format!("Duplicate hostroute '{}'", py_repr(item)),
            ));
        }
        seen.push(item);
        out.push((dest, hop));
    }
    Ok(Some(out))
}

fn parse_mode(o: &Obj, k: &str) -> ApiResult<Option<String>> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if IPV6_MODES.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(v) => Err(bad_value(
            k,
            format!(
                "{} is not in {}",
                attrs::display(v),
                py_repr(&json!(IPV6_MODES))
            ),
        )),
    }
}

fn parse_service_types(v: Option<&Value>) -> ApiResult<Option<Vec<Value>>> {
    let Some(v) = v else { return Ok(None) };
    let Value::Array(items) = v else {
        return Err(bad_value(
            "service_types",
            format!("'{}' is not a list", attrs::display(v)),
        ));
    };
    for i in items {
        match i.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 255 => {}
            _ => {
                return Err(bad_value(
                    "service_types",
                    format!("'{}' is not a valid device owner", attrs::display(i)),
                ));
            }
        }
    }
    Ok(Some(items.clone()))
}

/// Neutron's `_validate_subnet` for everything that depends on the CIDR: DHCP-incompatible
/// prefixes, the gateway, DNS servers, host routes and the IPv6 modes.
#[allow(clippy::too_many_arguments)]
fn check_subnet_spec(
    cfg: &neutrino_core::config::Config,
    subnet_id: &str,
    net: &IpNet,
    version: i64,
    gateway: Option<IpAddr>,
    dns: Option<&[IpAddr]>,
    routes: Option<&[(IpNet, IpAddr)]>,
    enable_dhcp_check: bool,
    modes: (Option<&str>, Option<&str>),
    enable_dhcp: bool,
) -> ApiResult<()> {
    let v6 = version == 6;
    if matches!(net, IpNet::V6(_)) != v6 {
        return Err(version_mismatch("cidr", &net.to_string(), version));
    }
    if enable_dhcp_check {
        let len = net.prefix_len();
        if (!v6 && len > 30) || (v6 && len > 126) {
            return Err(ApiError::invalid_input(
                "Subnet has a prefix length that is incompatible with DHCP service enabled",
            ));
        }
        let addr = net.network();
        if addr.is_multicast() {
            return Err(ApiError::invalid_input(
                "Multicast IP subnet is not supported if enable_dhcp is True",
            ));
        }
        if addr.is_loopback() || net.contains(&IpAddr::from([127, 0, 0, 1])) {
            return Err(ApiError::invalid_input(
                "Loopback IP subnet is not supported if enable_dhcp is True",
            ));
        }
        if addr == IpAddr::from([0, 0, 0, 0]) {
            return Err(ApiError::invalid_input(
                "First IP '0.0.0.0' of network is not supported if enable_dhcp is True.",
            ));
        }
    }
    if let Some(g) = gateway {
        if g.is_ipv6() != v6 {
            return Err(version_mismatch("gateway_ip", &g.to_string(), version));
        }
        // An IPv4 gateway may not be the network or broadcast address of its subnet; outside
        // the CIDR it is allowed (on-link gateway).
        let r = ipam::net_range(net);
        let a = ipam::to_u128(g);
        if !v6 && net.contains(&g) && (a == r.first || a == r.last) {
            return Err(ApiError::invalid_input("Gateway is not valid on subnet"));
        }
    }
    if let Some(dns) = dns {
        if dns.len() > cfg.max_dns_nameservers {
            return Err(typed(
                StatusCode::BAD_REQUEST,
                "DNSNameServersExhausted",
                format!(
                    "Unable to complete operation for {subnet_id}. The number of DNS nameservers exceeds the limit {}.",
                    cfg.max_dns_nameservers
                ),
            ));
        }
        for d in dns {
            if d.is_ipv6() != v6 {
                return Err(version_mismatch("dns_nameserver", &d.to_string(), version));
            }
        }
    }
    if let Some(routes) = routes {
        if routes.len() > cfg.max_subnet_host_routes {
            return Err(typed(
                StatusCode::BAD_REQUEST,
                "HostRoutesExhausted",
                format!(
                    "Unable to complete operation for {subnet_id}. The number of host routes exceeds the limit {}.",
                    cfg.max_subnet_host_routes
                ),
            ));
        }
        for (dest, hop) in routes {
            if hop.is_ipv6() != v6 {
                return Err(version_mismatch("nexthop", &hop.to_string(), version));
            }
            if matches!(dest, IpNet::V6(_)) != v6 {
                return Err(version_mismatch("destination", &dest.to_string(), version));
            }
        }
    }
    let (ra, addr) = modes;
    if !v6 {
        if ra.is_some() {
            return Err(ApiError::invalid_input(
                "ipv6_ra_mode is not valid when ip_version is 4",
            ));
        }
        if addr.is_some() {
            return Err(ApiError::invalid_input(
                "ipv6_address_mode is not valid when ip_version is 4",
            ));
        }
    } else if ra.is_some() || addr.is_some() {
        if !enable_dhcp {
            return Err(ApiError::invalid_input(
                "ipv6_ra_mode or ipv6_address_mode cannot be set when enable_dhcp is set to False",
            ));
        }
        if let (Some(r), Some(a)) = (ra, addr)
            && r != a
        {
            return Err(ApiError::invalid_input(format!(
                "ipv6_ra_mode set to '{r}' with ipv6_address_mode set to '{a}' is not valid. If both attributes are set, they must be the same value"
            )));
        }
        let auto = [ra, addr]
            .iter()
            .any(|m| matches!(m, Some("slaac" | "dhcpv6-stateless")));
        if auto && net.prefix_len() != 64 {
            return Err(ApiError::invalid_input(format!(
                "Invalid CIDR {net} for IPv6 address mode. OpenStack uses the EUI-64 address format, which requires the prefix to be /64"
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Visibility and rendering.

/// Whether `ctx` may see `subnet` living on `net`.
pub fn visible(st: &ApiState, ctx: &Context, net: &Obj, subnet: &Obj) -> bool {
    networks::visible(ctx, net)
        && st
            .policy
            .check(ctx, "get_subnet", &networks::network_target(net, subnet))
}

/// Renders a stored subnet for `ctx`.
pub fn render(st: &ApiState, ctx: &Context, net: &Obj, subnet: &Obj) -> Obj {
    let mut out = with_tenant(subnet.clone());
    out.entry("description").or_insert_with(|| json!(""));
    out.entry("tags").or_insert_with(|| json!([]));
    out.entry("service_types").or_insert_with(|| json!([]));
    out.entry("segment_id").or_insert(Value::Null);
    out.entry("subnetpool_id").or_insert(Value::Null);
    out.entry("ipv6_ra_mode").or_insert(Value::Null);
    out.entry("ipv6_address_mode").or_insert(Value::Null);
    // subnet-external-network: whether the subnet's network is external (read-only).
    out.insert(
        "router:external".into(),
        net.get("router:external")
            .cloned()
            .unwrap_or(Value::Bool(false)),
    );
    let target = networks::network_target(net, subnet);
    common::strip_hidden(st, ctx, "subnet", &target, &mut out);
    out
}

fn net_of(subnet: &Obj) -> ApiResult<IpNet> {
    str_of(subnet, "cidr")
        .and_then(ipam::parse_cidr)
        .ok_or_else(|| ApiError::internal("stored subnet has no valid cidr"))
}

// ---------------------------------------------------------------------------------------------
// Create.

/// A create request after attribute validation, before anything is read from the store.
struct Request {
    obj: Obj,
    cidr: Option<IpNet>,
    prefixlen: Option<i64>,
    pool_id: Option<String>,
    use_default: bool,
    gateway: Option<Option<IpAddr>>,
    pools: Option<Vec<Range>>,
    pools_v6: Option<bool>,
    dns: Vec<IpAddr>,
    routes: Vec<(IpNet, IpAddr)>,
    ra: Option<String>,
    addr: Option<String>,
    version: i64,
}

fn prepare(ctx: &Context, item: Obj) -> ApiResult<Request> {
    let mut obj = attrs::prepare_create(&[STANDARD, ATTRS], item)?;
    common::owner_for_create(ctx, &mut obj)?;
    let version = obj.get("ip_version").and_then(Value::as_i64).unwrap_or(0);
    if version != 4 && version != 6 {
        return Err(bad_value(
            "ip_version",
            format!("{version} is not in [4, 6]"),
        ));
    }
    let cidr = match obj.get("cidr") {
        Some(v) if !v.is_null() => Some(parse_cidr_attr(v)?),
        _ => None,
    };
    let prefixlen = obj.get("prefixlen").and_then(Value::as_i64);
    if let Some(p) = prefixlen
        && p < 0
    {
        return Err(bad_value(
            "prefixlen",
            format!("'{p}' should be non-negative"),
        ));
    }
    if cidr.is_some() && prefixlen.is_some() {
        return Err(bad_subnets(
            "cidr and prefixlen must not be supplied together",
        ));
    }
    let pool_id = match obj.get("subnetpool_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if attrs::is_uuid(s) => Some(s.clone()),
        Some(Value::String(s)) if s == "prefix_delegation" => {
            return Err(bad_subnets("IPv6 prefix delegation is not supported"));
        }
        Some(v) => {
            return Err(bad_value(
                "subnetpool_id",
                format!("'{}' is not a valid UUID", attrs::display(v)),
            ));
        }
    };
    let use_default = obj.get("use_default_subnetpool") == Some(&Value::Bool(true));
    if use_default && pool_id.is_some() {
        return Err(bad_subnets(
            "subnetpool_id and use_default_subnetpool cannot both be specified",
        ));
    }
    if let Some(n) = &cidr
        && matches!(n, IpNet::V6(_)) != (version == 6)
    {
        return Err(version_mismatch("cidr", &n.to_string(), version));
    }
    let gateway = match obj.get("gateway_ip") {
        None => None,
        Some(v) => Some(parse_gateway(v)?),
    };
    let pools = parse_pools(obj.get("allocation_pools"))?;
    let pools_v6 = obj
        .get("allocation_pools")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|p| p["start"].as_str())
        .and_then(ipam::parse_ip)
        .map(|a| a.is_ipv6());
    let dns = parse_dns(obj.get("dns_nameservers"))?.unwrap_or_default();
    let routes = parse_routes(obj.get("host_routes"))?.unwrap_or_default();
    let ra = parse_mode(&obj, "ipv6_ra_mode")?;
    let addr = parse_mode(&obj, "ipv6_address_mode")?;
    parse_service_types(obj.get("service_types"))?;
    Ok(Request {
        obj,
        cidr,
        prefixlen,
        pool_id,
        use_default,
        gateway,
        pools,
        pools_v6,
        dns,
        routes,
        ra,
        addr,
        version,
    })
}

fn pool_quota_exceeded() -> ApiError {
    ApiError::conflict(
        "SubnetPoolQuotaExceeded",
        "Per-project subnet pool prefix quota exceeded.",
    )
}

/// Neutron's per-pool quota (`_check_subnetpool_tenant_quota`): units are /32 (IPv4) or /64
/// (IPv6) blocks, counted over the pool owner's subnets in the pool, as Neutron's code does.
async fn check_pool_quota(
    tx: &mut sqlx::AnyConnection,
    pool: &Obj,
    prefixlen: u8,
) -> ApiResult<()> {
    let Some(quota) = subnetpools::int_field(pool, "default_quota") else {
        return Ok(());
    };
    let unit: i32 = if subnetpools::int_field(pool, "ip_version") == Some(6) {
        64
    } else {
        32
    };
    let owner = str_of(pool, "project_id").unwrap_or_default();
    let id = str_of(pool, "id").unwrap_or_default();
    let cidrs: Vec<String> =
        sqlx::query_scalar("SELECT cidr FROM subnets WHERE subnetpool_id = $1 AND project_id = $2")
            .bind(id)
            .bind(owner)
            .fetch_all(&mut *tx)
            .await?;
    let units = |len: u8| 2f64.powi(unit - i32::from(len));
    let used: f64 = cidrs
        .iter()
        .filter_map(|c| ipam::parse_cidr(c))
        .map(|n| units(n.prefix_len()))
        .sum();
    if used + units(prefixlen) > quota as f64 {
        return Err(pool_quota_exceeded());
    }
    Ok(())
}

fn check_prefix_bounds(pool: &Obj, len: i64) -> ApiResult<()> {
    let min = subnetpools::int_field(pool, "min_prefixlen").unwrap_or(0);
    let max = subnetpools::int_field(pool, "max_prefixlen").unwrap_or(128);
    if len > max {
        return Err(typed(
            StatusCode::BAD_REQUEST,
            "MaxPrefixSubnetAllocationError",
            format!(
                "Unable to allocate subnet with prefix length {len}, maximum allowed prefix is {max}."
            ),
        ));
    }
    if len < min {
        return Err(typed(
            StatusCode::BAD_REQUEST,
            "MinPrefixSubnetAllocationError",
            format!(
                "Unable to allocate subnet with prefix length {len}, minimum allowed prefix is {min}."
            ),
        ));
    }
    Ok(())
}

/// Neutron's `SubnetAllocationError` ("Failed to allocate subnet: ..."), keeping its type and
/// message but not its status. Neutron raises it as a plain NeutronException
/// (neutron/ipam/subnet_alloc.py), which its API maps to 500; we promise no 5xx on a request
/// the client can fix, so, as a deliberate difference:
/// - a requested CIDR the pool cannot give (outside its prefixes, or overlapping an allocated
///   subnet) is the client's input: 400;
/// - a pool with no room left for the prefix length asked is the state of the pool, as an
///   exhausted subnet is for a port (`IpAddressGenerationFailure`): 409.
fn allocation_error(status: StatusCode, reason: &str) -> ApiError {
    ApiError::new(
        status,
        "SubnetAllocationError",
        format!("Failed to allocate subnet: {reason}."),
    )
}

/// Resolves the pool (if any) and the CIDR of a new subnet; returns (cidr, pool, carved),
/// where `carved` marks an any-subnet allocation (gateway = first host, generated pools).
async fn resolve_cidr(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    req: &Request,
) -> ApiResult<(IpNet, Option<Obj>, bool)> {
    let pool = if req.use_default {
        match subnetpools::default_pool(tx, ctx, req.version).await? {
            // Re-read with a row lock: carving must be serialised per pool.
            Some(p) => {
                let id = str_of(&p, "id").unwrap_or_default().to_string();
                db::get_for_update(tx, &st.db, &subnetpools::KIND, &id).await?
            }
            None => {
                return Err(bad_subnets(format!(
                    "No default subnetpool found for IPv{}",
                    req.version
                )));
            }
        }
    } else if let Some(id) = &req.pool_id {
        match db::get_for_update(tx, &st.db, &subnetpools::KIND, id).await? {
            Some(p) if subnetpools::visible(ctx, &p) => Some(p),
            _ => return Err(subnetpools::not_found(id)),
        }
    } else {
        None
    };
    let Some(pool) = pool else {
        return match req.cidr {
            Some(c) => Ok((c, None, false)),
            None => Err(bad_subnets(
                "a subnetpool must be specified in the absence of a cidr",
            )),
        };
    };
    let pool_version = subnetpools::int_field(&pool, "ip_version").unwrap_or(0);
    if pool_version != req.version {
        return Err(bad_subnets(format!(
            "Cannot allocate IPv{} subnet from IPv{pool_version} subnet pool",
            req.version
        )));
    }
    let pool_id = str_of(&pool, "id").unwrap_or_default().to_string();
    let prefixes = subnetpools::prefixes_of(&pool);
    let allocated = subnetpools::allocated_cidrs(tx, &pool_id).await?;
    // Neutron turns "no cidr but a gateway" into a specific request around the gateway.
    let specific = match (req.cidr, req.gateway) {
        (Some(c), _) => Some(c),
        (None, Some(Some(g))) => {
            let len = req
                .prefixlen
                .or_else(|| subnetpools::int_field(&pool, "default_prefixlen"))
                .unwrap_or(0);
            let len = u8::try_from(len).unwrap_or(u8::MAX);
            Some(
                IpNet::new(g, len)
                    .map_err(|_| bad_value("prefixlen", format!("'{len}' is too large")))?
                    .trunc(),
            )
        }
        _ => None,
    };
    match specific {
        Some(c) => {
            check_prefix_bounds(&pool, i64::from(c.prefix_len()))?;
            check_pool_quota(tx, &pool, c.prefix_len()).await?;
            if !ipam::fits(&prefixes, &allocated, &c) {
                return Err(allocation_error(
                    StatusCode::BAD_REQUEST,
                    "Cannot allocate requested subnet from the available set of prefixes",
                ));
            }
            Ok((c, Some(pool), false))
        }
        None => {
            if req.pools.is_some() {
                // Neutron's message ends with a period inside the template's own.
                return Err(bad_subnets(
                    "allocation_pools allowed only for specific subnet requests.",
                ));
            }
            let len = req
                .prefixlen
                .or_else(|| subnetpools::int_field(&pool, "default_prefixlen"))
                .unwrap_or(0);
            check_prefix_bounds(&pool, len)?;
            let len = u8::try_from(len).unwrap_or(u8::MAX);
            check_pool_quota(tx, &pool, len).await?;
            match ipam::carve(&prefixes, &allocated, len) {
                Some(c) => Ok((c, Some(pool), true)),
                None => Err(allocation_error(
                    StatusCode::CONFLICT,
                    &format!("Insufficient prefix space to allocate subnet size /{len}"),
                )),
            }
        }
    }
}

/// Refuses a CIDR overlapping another subnet of the network (of any network when
/// `allow_overlapping_ips` is off), with Neutron's message (Tempest matches it).
async fn check_overlap(
    st: &ApiState,
    tx: &mut sqlx::AnyConnection,
    network_id: &str,
    net: &IpNet,
    exclude: Option<&str>,
) -> ApiResult<()> {
    if net.prefix_len() == 0 {
        return Err(ApiError::invalid_input(
            "0 is not allowed as CIDR prefix length",
        ));
    }
    let rows: Vec<(String, String)> = if st.cfg.allow_overlapping_ips {
        sqlx::query_as("SELECT id, cidr FROM subnets WHERE network_id = $1")
            .bind(network_id)
            .fetch_all(&mut *tx)
            .await?
    } else {
        // Without overlapping IPs the check spans networks, so serialise it across servers.
        if st.db.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(7426110532002)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query_as("SELECT id, cidr FROM subnets")
            .fetch_all(&mut *tx)
            .await?
    };
    let clash = rows.iter().any(|(id, c)| {
        Some(id.as_str()) != exclude && ipam::parse_cidr(c).is_some_and(|o| ipam::overlaps(&o, net))
    });
    if clash {
        return Err(ApiError::invalid_input(format!(
            "Requested subnet with cidr: {net} for network: {network_id} overlaps with another subnet"
        )));
    }
    Ok(())
}

/// Subnets of one IP version on a network must come from the same pool (no address scopes
/// here), as Neutron's `_validate_network_subnetpools`.
async fn check_pool_affinity(
    tx: &mut sqlx::AnyConnection,
    network_id: &str,
    version: i64,
    pool_id: Option<&str>,
) -> ApiResult<()> {
    let others = db::list(&mut *tx, &KIND, Some(("network_id", network_id))).await?;
    let bad = others.iter().any(|s| {
        s.get("ip_version").and_then(Value::as_i64) == Some(version)
            && str_of(s, "subnetpool_id") != pool_id
    });
    if bad {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NetworkSubnetPoolAffinityError",
            "Subnets hosted on the same network must be allocated from the same subnet pool.",
        ));
    }
    Ok(())
}

/// The segment a new subnet names must exist and belong to the subnet's network, and a
/// network's subnets are either all on segments or none is, as Neutron's `_save_subnet` and
/// `_validate_segment` (neutron/db/ipam_backend_mixin.py): 404 `SegmentNotFound`, 400
/// `NetworkIdsDontMatch`, 400 `SubnetsNotAllAssociatedWithSegments`.
async fn check_segment(
    tx: &mut sqlx::AnyConnection,
    network_id: &str,
    segment_id: Option<&str>,
) -> ApiResult<()> {
    if let Some(seg_id) = segment_id {
        let Some(seg) = db::get(&mut *tx, &crate::ml2::KIND, seg_id).await? else {
            return Err(ApiError::not_found("Segment", seg_id));
        };
        if str_of(&seg, "network_id") != Some(network_id) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "NetworkIdsDontMatch",
                format!(
                    "The subnet's network id, '{network_id}', doesn't match the network_id of segment '{seg_id}'"
                ),
            ));
        }
    }
    let others = db::list(&mut *tx, &KIND, Some(("network_id", network_id))).await?;
    if others
        .iter()
        .any(|s| str_of(s, "segment_id").is_some() != segment_id.is_some())
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SubnetsNotAllAssociatedWithSegments",
            format!(
                "All of the subnets on network '{network_id}' must either all be associated with segments or all not associated with any segment."
            ),
        ));
    }
    Ok(())
}

/// A subnet needs its network's MTU to reach its protocol's minimum (68 for IPv4, 1280 for
/// IPv6): 409 `NetworkMTUSubnetConflict` otherwise, as Neutron's
/// `_validate_subnet_network_mtu` (neutron/db/db_base_plugin_v2.py). A network without an
/// MTU is not checked. ML2's network update holds the converse rule.
fn check_network_mtu(net: &Obj, version: i64) -> ApiResult<()> {
    const IPV4_MIN_MTU: i64 = 68;
    const IPV6_MIN_MTU: i64 = 1280;
    let mtu = net.get("mtu").and_then(Value::as_i64).unwrap_or(0);
    let need = match mtu {
        0 => return Ok(()),
        m if m < IPV4_MIN_MTU => IPV4_MIN_MTU,
        m if version == 6 && m < IPV6_MIN_MTU => IPV6_MIN_MTU,
        _ => return Ok(()),
    };
    Err(ApiError::conflict(
        "NetworkMTUSubnetConflict",
        format!(
            "MTU of {} is not valid, subnet requires a minimum of {need}",
            str_of(net, "id").unwrap_or_default()
        ),
    ))
}

/// Creates one subnet inside `tx`; returns the stored document and its network.
async fn create_one(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    req: Request,
) -> ApiResult<(Obj, Obj)> {
    let network_id = str_of(&req.obj, "network_id")
        .unwrap_or_default()
        .to_string();
    // The network row lock serialises subnet creation per network, so the overlap check below
    // holds with several servers.
    let mut net = match db::get_for_update(tx, &st.db, &networks::KIND, &network_id).await? {
        Some(n) if networks::visible(ctx, &n) => n,
        _ => return Err(ApiError::not_found("Network", &network_id)),
    };
    let target = networks::network_target(&net, &req.obj);
    common::enforce(st, ctx, "create_subnet", &target)?;
    let explicit: Obj = req
        .obj
        .iter()
        .filter(|(k, v)| match k.as_str() {
            "segment_id" => !v.is_null(),
            "service_types" => v.as_array().is_some_and(|a| !a.is_empty()),
            _ => false,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    common::enforce_attrs(st, ctx, "create_subnet", &explicit, &target)?;

    let (cidr, pool, carved) = resolve_cidr(st, ctx, tx, &req).await?;
    let v6 = req.version == 6;
    let enable_dhcp = req.obj.get("enable_dhcp") != Some(&Value::Bool(false));
    // Default gateway: the first host, except the subnet-router anycast (network) address for
    // IPv6 CIDRs given by the user (`_gateway_ip_str`); carved subnets always use first host.
    let gateway = match req.gateway {
        Some(g) => g,
        None if v6 && !carved => Some(cidr.network()),
        None => Some(ipam::from_u128(ipam::net_range(&cidr).first + 1, v6)),
    };
    check_subnet_spec(
        &st.cfg,
        "new subnet",
        &cidr,
        req.version,
        gateway,
        Some(&req.dns),
        Some(&req.routes),
        enable_dhcp,
        (req.ra.as_deref(), req.addr.as_deref()),
        enable_dhcp,
    )?;
    check_network_mtu(&net, req.version)?;
    let pools = match &req.pools {
        Some(p) => {
            let mut p = p.clone();
            p.sort();
            check_pools(&p, req.pools_v6, &cidr, gateway)?;
            p
        }
        None => ipam::default_pools(&cidr, gateway),
    };
    check_overlap(st, tx, &network_id, &cidr, None).await?;
    let pool_id = pool
        .as_ref()
        .and_then(|p| str_of(p, "id"))
        .map(str::to_string);
    check_pool_affinity(tx, &network_id, req.version, pool_id.as_deref()).await?;
    check_segment(tx, &network_id, str_of(&req.obj, "segment_id")).await?;
    let project = str_of(&req.obj, "project_id")
        .unwrap_or_default()
        .to_string();
    common::check_quota(st, tx, "subnet", &KIND, &project, 1).await?;

    let mut obj = req.obj;
    obj.remove("prefixlen");
    obj.remove("use_default_subnetpool");
    obj.insert("id".into(), Value::String(db::new_id()));
    obj.insert("cidr".into(), Value::String(cidr.to_string()));
    obj.insert("ip_version".into(), json!(req.version));
    obj.insert(
        "gateway_ip".into(),
        gateway
            .map(|g| Value::String(g.to_string()))
            .unwrap_or(Value::Null),
    );
    obj.insert("allocation_pools".into(), ipam::pools_json(&pools, v6));
    obj.insert(
        "dns_nameservers".into(),
        Value::Array(
            req.dns
                .iter()
                .map(|d| Value::String(d.to_string()))
                .collect(),
        ),
    );
    obj.insert(
        "host_routes".into(),
        Value::Array(
            req.routes
                .iter()
                .map(|(d, h)| json!({"destination": d.to_string(), "nexthop": h.to_string()}))
                .collect(),
        ),
    );
    obj.insert(
        "ipv6_ra_mode".into(),
        req.ra.map(Value::String).unwrap_or(Value::Null),
    );
    obj.insert(
        "ipv6_address_mode".into(),
        req.addr.map(Value::String).unwrap_or(Value::Null),
    );
    obj.insert(
        "subnetpool_id".into(),
        pool_id.map(Value::String).unwrap_or(Value::Null),
    );
    obj.entry("segment_id").or_insert(Value::Null);
    obj.entry("service_types").or_insert_with(|| json!([]));
    obj.insert("tags".into(), json!([]));
    db::create(tx, &KIND, &mut obj).await?;
    // A subnet is part of its network (`subnets`), so the network's revision moves too, as
    // Neutron's revises_on_change does.
    db::save(tx, &networks::KIND, &mut net).await?;
    crate::scheduler::network_changed(st, tx, &network_id).await?;
    Ok((obj, net))
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "subnet", "subnets")?;
    let bulk = req.bulk;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        prepared.push(prepare(&ctx, item)?);
    }
    let mut tx = st.db.begin().await?;
    let mut out = Vec::with_capacity(prepared.len());
    for r in prepared {
        let (subnet, net) = create_one(&st, &ctx, &mut tx, r).await?;
        out.push(Value::Object(render(&st, &ctx, &net, &subnet)));
    }
    st.db.commit(tx).await?;
    Ok(if bulk {
        common::created("subnets", Value::Array(out))
    } else {
        common::created("subnet", out.into_iter().next().unwrap_or_default())
    })
}

// ---------------------------------------------------------------------------------------------
// Read.

/// neutron-lib's subnet attribute map, as far as listing goes.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "name",
        "ip_version",
        "network_id",
        "subnetpool_id",
        "cidr",
        "gateway_ip",
        "tenant_id",
        "enable_dhcp",
        "ipv6_ra_mode",
        "ipv6_address_mode",
    ],
    bools: &["enable_dhcp", "shared"],
    ints: &["ip_version"],
};

/// Subnet attributes whose rendered value is the stored string (or null): SQL may filter on
/// them.
const STORED_TEXT: &[&str] = &[
    "id",
    "network_id",
    "project_id",
    "tenant_id",
    "name",
    "description",
    "cidr",
    "gateway_ip",
    "subnetpool_id",
    "ipv6_ra_mode",
    "ipv6_address_mode",
];

/// `cidr` filters as Neutron converts them: the network of the given CIDR, so
/// `10.0.0.7/24` finds `10.0.0.0/24`; not a CIDR is a 400.
fn canonical_cidr(v: &str) -> ApiResult<String> {
    let net = v
        .parse::<IpNet>()
        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| ApiError::invalid_input(format!("{v} is not in a CIDR format")))?;
    Ok(net.trunc().to_string())
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    for (k, vals) in &mut query.filters {
        if k == "cidr" {
            for v in vals.iter_mut() {
                *v = canonical_cidr(v)?;
            }
        } else if k == "gateway_ip" {
            for v in vals.iter_mut() {
                if let Ok(ip) = v.parse::<IpAddr>() {
                    *v = ip.to_string();
                }
            }
        }
    }
    // `shared` is not a subnet attribute on the wire (neutron-lib: not visible) but filters
    // on whether the subnet's network is shared with the caller, as `shared` of the network
    // says to that caller (Neutron's Subnet object loads it from the network's RBAC entries).
    let shared: Option<Vec<bool>> = query
        .take_filter("shared")
        .map(|v| v.iter().map(|s| s == "true").collect());
    let reader = st.db.reader();
    let mut src = Source::new(&st.db, &KIND);
    listing::on_visible_networks(&mut src, &ctx, &[rbac::SHARED, rbac::EXTERNAL]);
    src.push_filters(&query, &listing::unhidden(&st, &ctx, "subnet", STORED_TEXT));
    src.push_tags(&query);
    let mut nets: HashMap<String, Obj> = HashMap::new();
    let mut pager = query.pager(&st.db, src).await?;
    while let Some(batch) = pager.next_batch(&st.db).await? {
        for s in &batch {
            let net_id = str_of(s, "network_id").unwrap_or_default();
            if !nets.contains_key(net_id)
                && let Some(n) = db::get(reader, &networks::KIND, net_id).await?
            {
                nets.insert(net_id.to_string(), n);
            }
            let Some(net) = nets.get(net_id) else {
                continue;
            };
            if let Some(want) = &shared {
                let is = rbac::grants(net, rbac::SHARED, ctx.project());
                if !want.contains(&is) {
                    continue;
                }
            }
            if visible(&st, &ctx, net, s) {
                pager.push(render(&st, &ctx, net, s));
            }
        }
    }
    let url = format!("{}/v2.0/subnets", common::base_url(&headers));
    Ok(axum::Json(pager.finish("subnets", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let subnet = db::get(st.db.reader(), &KIND, &id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let net_id = str_of(&subnet, "network_id").unwrap_or_default();
    let net = db::get(st.db.reader(), &networks::KIND, net_id)
        .await?
        .ok_or_else(|| not_found(&id))?;
    if !visible(&st, &ctx, &net, &subnet) {
        return Err(not_found(&id));
    }
    Ok(common::ok(
        "subnet",
        Value::Object(query.trim(render(&st, &ctx, &net, &subnet))),
    ))
}

/// Loads a subnet and its network for writing, or 404. The subnet row is locked; with
/// `lock_network` the network row is locked first. That order (network, then subnet) is the
/// one subnet creation and port creation (through its foreign keys) follow, so it cannot
/// deadlock with them on PostgreSQL.
async fn load_for_write(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
    lock_network: bool,
) -> ApiResult<(Obj, Obj)> {
    let net = if lock_network {
        let peek = db::get(&mut *tx, &KIND, id)
            .await?
            .ok_or_else(|| not_found(id))?;
        let net_id = str_of(&peek, "network_id").unwrap_or_default();
        db::get_for_update(tx, &st.db, &networks::KIND, net_id).await?
    } else {
        None
    };
    let subnet = db::get_for_update(tx, &st.db, &KIND, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let net_id = str_of(&subnet, "network_id").unwrap_or_default();
    let net = match net {
        Some(n) => n,
        None => db::get(&mut *tx, &networks::KIND, net_id)
            .await?
            .ok_or_else(|| not_found(id))?,
    };
    if !visible(st, ctx, &net, &subnet) {
        return Err(not_found(id));
    }
    Ok((subnet, net))
}

// ---------------------------------------------------------------------------------------------
// Update.

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes =
        attrs::prepare_update(&[STANDARD, ATTRS], common::parse_update(&body, "subnet")?)?;
    let gateway_change = match changes.get("gateway_ip") {
        Some(v) => Some(parse_gateway(v)?),
        None => None,
    };
    let new_pools = parse_pools(changes.get("allocation_pools"))?;
    let pools_v6 = changes
        .get("allocation_pools")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|p| p["start"].as_str())
        .and_then(ipam::parse_ip)
        .map(|a| a.is_ipv6());
    let dns = parse_dns(changes.get("dns_nameservers"))?;
    let routes = parse_routes(changes.get("host_routes"))?;
    parse_service_types(changes.get("service_types"))?;

    let mut tx = st.db.begin().await?;
    let (mut subnet, net) = load_for_write(&st, &ctx, &mut tx, &id, false).await?;
    common::check_revision(expected, &subnet)?;
    let target = networks::network_target(&net, &subnet);
    common::enforce(&st, &ctx, "update_subnet", &target)?;
    common::enforce_attrs(&st, &ctx, "update_subnet", &changes, &target)?;

    let cidr = net_of(&subnet)?;
    let version = subnet
        .get("ip_version")
        .and_then(Value::as_i64)
        .unwrap_or(4);
    let v6 = version == 6;
    let old_gateway = str_of(&subnet, "gateway_ip").and_then(ipam::parse_ip);
    let gateway = gateway_change.unwrap_or(old_gateway);
    let was_dhcp = subnet.get("enable_dhcp") != Some(&Value::Bool(false));
    let dhcp = match changes.get("enable_dhcp") {
        Some(v) => v != &Value::Bool(false),
        None => was_dhcp,
    };
    let ra = str_of(&subnet, "ipv6_ra_mode");
    let addr_mode = str_of(&subnet, "ipv6_address_mode");
    if v6 && !dhcp && (ra.is_some() || addr_mode.is_some()) {
        return Err(ApiError::invalid_input(
            "Cannot disable enable_dhcp with ipv6 attributes set",
        ));
    }
    check_subnet_spec(
        &st.cfg,
        &id,
        &cidr,
        version,
        gateway_change.flatten(),
        dns.as_deref(),
        routes.as_deref(),
        dhcp && !was_dhcp,
        (None, None),
        dhcp,
    )?;
    if gateway_change.is_some()
        && gateway != old_gateway
        && let Some(current) = old_gateway
    {
        // The gateway a router interface holds can be neither moved nor removed, as Neutron's
        // `_validate_subnet` (neutron/db/db_base_plugin_v2.py): 409 `GatewayIpInUse` naming
        // the router's port, before the pools are looked at. Any other port may hold the new
        // address.
        let holder: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT a.port_id, p.device_owner FROM ip_allocations a \
             JOIN ports p ON p.id = a.port_id WHERE a.subnet_id = $1 AND a.ip_address = $2",
        )
        .bind(&id)
        .bind(current.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some((port_id, owner)) = holder
            && ipam::is_router_owner(owner.as_deref().unwrap_or_default())
        {
            return Err(ApiError::conflict(
                "GatewayIpInUse",
                format!(
                    "Current gateway ip {current} already in use by port {port_id}. Unable to update."
                ),
            ));
        }
    }

    let pools = match &new_pools {
        Some(p) => {
            let mut p = p.clone();
            p.sort();
            check_pools(&p, pools_v6, &cidr, None)?;
            p
        }
        None => ipam::pools_of(&subnet),
    };
    if (gateway != old_gateway || new_pools.is_some())
        && let Some(g) = gateway
    {
        check_gateway_outside(&pools, g, v6)?;
    }
    let mut changed = false;
    let mut set = |k: &str, v: Value, subnet: &mut Obj| {
        if subnet.get(k) != Some(&v) {
            subnet.insert(k.to_string(), v);
            changed = true;
        }
    };
    for k in ["name", "description", "enable_dhcp", "service_types"] {
        if let Some(v) = changes.get(k) {
            set(k, v.clone(), &mut subnet);
        }
    }
    if gateway_change.is_some() {
        set(
            "gateway_ip",
            gateway
                .map(|g| Value::String(g.to_string()))
                .unwrap_or(Value::Null),
            &mut subnet,
        );
    }
    if new_pools.is_some() {
        set(
            "allocation_pools",
            ipam::pools_json(&pools, v6),
            &mut subnet,
        );
    }
    if let Some(d) = dns {
        set(
            "dns_nameservers",
            Value::Array(d.iter().map(|d| Value::String(d.to_string())).collect()),
            &mut subnet,
        );
    }
    if let Some(r) = routes {
        set(
            "host_routes",
            Value::Array(
                r.iter()
                    .map(|(d, h)| json!({"destination": d.to_string(), "nexthop": h.to_string()}))
                    .collect(),
            ),
            &mut subnet,
        );
    }
    if changed {
        db::save(&mut tx, &KIND, &mut subnet).await?;
        crate::scheduler::network_changed(
            &st,
            &mut tx,
            str_of(&subnet, "network_id").unwrap_or_default(),
        )
        .await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "subnet",
        Value::Object(render(&st, &ctx, &net, &subnet)),
    ))
}

// ---------------------------------------------------------------------------------------------
// Delete.

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
    // The row locks (FOR UPDATE) conflict with the key-share locks that a concurrent port or
    // address insert takes through its foreign keys, so no allocation can slip in between the
    // check below and the delete.
    let (subnet, mut net) = load_for_write(&st, &ctx, &mut tx, &id, true).await?;
    common::check_revision(expected, &subnet)?;
    common::enforce(
        &st,
        &ctx,
        "delete_subnet",
        &networks::network_target(&net, &subnet),
    )?;
    let allocs: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT a.port_id, a.ip_address, p.device_owner FROM ip_allocations a \
         JOIN ports p ON p.id = a.port_id WHERE a.subnet_id = $1",
    )
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    // Neutron: router interfaces always block; other user ports block unless the subnet is
    // auto-addressed (their EUI-64 addresses simply go away).
    let auto = ipam::is_auto_address(&subnet);
    let blocking = allocs.iter().any(|(_, _, owner)| {
        let owner = owner.as_deref().unwrap_or_default();
        owner == "network:router_interface"
            || owner == "network:router_interface_distributed"
            || owner == "network:ha_router_replicated_interface"
            || (!auto && !AUTO_DELETE_OWNERS.contains(&owner))
    });
    if blocking {
        return Err(ApiError::conflict(
            "SubnetInUse",
            format!(
                "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
            ),
        ));
    }
    let mut port_ids: Vec<&str> = allocs.iter().map(|(p, _, _)| p.as_str()).collect();
    port_ids.sort_unstable();
    port_ids.dedup();
    for pid in port_ids {
        if let Some(mut port) = db::get_for_update(&mut tx, &st.db, &ports::KIND, pid).await? {
            if let Some(Value::Array(ips)) = port.get_mut("fixed_ips") {
                ips.retain(|ip| ip.get("subnet_id").and_then(Value::as_str) != Some(id.as_str()));
            }
            db::save(&mut tx, &ports::KIND, &mut port).await?;
        }
    }
    sqlx::query("DELETE FROM ip_allocations WHERE subnet_id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    db::remove(&mut tx, &KIND, &subnet).await?;
    db::save(&mut tx, &networks::KIND, &mut net).await?;
    st.db.commit(tx).await?;
    st.ipam_hints.forget(&id);
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutrino_core::config::Config;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_normalised_and_validated() {
        assert_eq!(
            parse_cidr_attr(&json!("10.0.0.1/24")).unwrap().to_string(),
            "10.0.0.0/24"
        );
        let e = parse_cidr_attr(&json!("10.0.0.0")).unwrap_err();
        assert!(
            e.message
                .contains("isn't a recognized IP subnet cidr, '10.0.0.0/32' is recommended"),
            "{}",
            e.message
        );
        let e = parse_cidr_attr(&json!("bogus")).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for cidr. Reason: 'bogus' is not a valid IP subnet."
        );
    }

    #[test]
    fn pools_errors() {
        let n: IpNet = "10.0.0.0/24".parse().unwrap();
        let p = parse_pools(Some(&json!([{"start": "10.0.0.9", "end": "10.0.0.2"}]))).unwrap_err();
        assert_eq!(p.kind, "InvalidAllocationPool");
        assert_eq!(
            p.message,
            "The allocation pool {'start': '10.0.0.9', 'end': '10.0.0.2'} is not valid."
        );
        let pools = parse_pools(Some(&json!([
            {"start": "10.0.0.2", "end": "10.0.0.49"}, {"start": "10.0.0.40", "end": "10.0.0.60"}
        ])))
        .unwrap()
        .unwrap();
        let e = check_pools(&pools, Some(false), &n, None).unwrap_err();
        assert_eq!(
            e.message,
            "Found overlapping allocation pools: 10.0.0.2-10.0.0.49 10.0.0.40-10.0.0.60 for subnet 10.0.0.0/24."
        );
        let pools = parse_pools(Some(&json!([{"start": "10.0.0.0", "end": "10.0.0.9"}])))
            .unwrap()
            .unwrap();
        assert_eq!(
            check_pools(&pools, Some(false), &n, None).unwrap_err().kind,
            "OutOfBoundsAllocationPool"
        );
        let pools = parse_pools(Some(&json!([{"start": "10.0.0.1", "end": "10.0.0.9"}])))
            .unwrap()
            .unwrap();
        let e = check_pools(&pools, Some(false), &n, Some(ip("10.0.0.5"))).unwrap_err();
        assert_eq!(
            e.message,
            "Gateway ip 10.0.0.5 conflicts with allocation pool 10.0.0.1-10.0.0.9."
        );
        assert_eq!(e.status, 409);
        let e = parse_pools(Some(&json!([{"start": "10.0.0.1"}]))).unwrap_err();
        assert!(e.message.contains("Expected keys"), "{}", e.message);
    }

    #[test]
    fn dns_and_routes() {
        let e = parse_dns(Some(&json!(["8.8.8.8", "8.8.8.8"]))).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for dns_nameservers. Reason: Duplicate nameserver '8.8.8.8'."
        );
        assert!(parse_dns(Some(&json!(["x"]))).is_err());
        let r = parse_routes(Some(
            &json!([{"destination": "10.1.0.0/16", "nexthop": "10.0.0.1"}]),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(r.len(), 1);
        let e = parse_routes(Some(&json!([
            {"destination": "10.1.0.0/16", "nexthop": "10.0.0.1"},
            {"destination": "10.1.0.0/16", "nexthop": "10.0.0.1"}
        ])))
        .unwrap_err();
        assert!(
            e.message.contains(
                "Duplicate hostroute '{'destination': '10.1.0.0/16', 'nexthop': '10.0.0.1'}'"
            ),
            "{}",
            e.message
        );
    }

    #[test]
    fn spec_rules() {
        let cfg = Config::default();
        let n4: IpNet = "10.0.0.0/24".parse().unwrap();
        let n6: IpNet = "2001:db8::/64".parse().unwrap();
        let ok = |net: &IpNet, v, g, modes, dhcp| {
            check_subnet_spec(&cfg, "new subnet", net, v, g, None, None, dhcp, modes, dhcp)
        };
        assert!(ok(&n4, 4, Some(ip("10.0.0.1")), (None, None), true).is_ok());
        assert_eq!(
            ok(&n4, 4, Some(ip("10.0.0.255")), (None, None), true)
                .unwrap_err()
                .message,
            "Invalid input for operation: Gateway is not valid on subnet."
        );
        assert!(ok(&n4, 4, Some(ip("192.168.0.1")), (None, None), true).is_ok());
        assert!(
            ok(&n4, 4, None, (Some("slaac"), None), true)
                .unwrap_err()
                .message
                .contains("ipv6_ra_mode is not valid when ip_version is 4")
        );
        assert!(ok(&n6, 6, None, (Some("slaac"), Some("slaac")), true).is_ok());
        let e = ok(&n6, 6, None, (Some("slaac"), Some("dhcpv6-stateful")), true).unwrap_err();
        assert!(
            e.message
                .contains("If both attributes are set, they must be the same value"),
            "{}",
            e.message
        );
        assert!(ok(&n6, 6, None, (None, Some("slaac")), false).is_err());
        let n6_80: IpNet = "2001:db8::/80".parse().unwrap();
        assert!(
            ok(&n6_80, 6, None, (None, Some("slaac")), true)
                .unwrap_err()
                .message
                .contains("EUI-64")
        );
        assert!(ok(&n6_80, 6, None, (None, Some("dhcpv6-stateful")), true).is_ok());
        let n32: IpNet = "10.0.0.1/32".parse().unwrap();
        assert!(
            ok(&n32, 4, None, (None, None), true)
                .unwrap_err()
                .message
                .contains("incompatible with DHCP")
        );
        assert!(ok(&n32, 4, None, (None, None), false).is_ok());
        let dns: Vec<IpAddr> = (1..=6).map(|i| ip(&format!("8.8.8.{i}"))).collect();
        let e = check_subnet_spec(
            &cfg,
            "new subnet",
            &n4,
            4,
            None,
            Some(&dns),
            None,
            false,
            (None, None),
            true,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "Unable to complete operation for new subnet. The number of DNS nameservers exceeds the limit 5."
        );
    }
}
