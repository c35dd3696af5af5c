//! `/v2.0/ports`: create (single and bulk), list, show, update, delete.
//!
//! Owns the port document and its rules: MAC generation and per-network MAC uniqueness,
//! fixed IP requests (validated against the network's subnets, allocated through [`ipam`]),
//! port security with its consequences for security groups and allowed address pairs, extra
//! DHCP options, and the `binding:*` attributes (stored as requested; binding to a host is
//! not done here). Visibility: admins see all ports; others their project's ports plus the
//! ports on networks their project owns (Neutron's `admin_or_network_owner`); everything
//! else is `PortNotFound`.
//!
//! Every request is one store transaction: a bulk create, a port with its addresses, an
//! update that swaps addresses — all or nothing. Uniqueness (MAC per network, address per
//! network) comes from database constraints, never from check-then-insert. This module must
//! never talk to hosts or agents, and never choose addresses itself: that is [`ipam`]'s job.
//!
//! The stored document is the wire form (including `fixed_ips`, `tenant_id` and `tags`), so
//! listing needs one query and no per-port lookups, and an admin's plain listing is served
//! from the stored text as it is; the `ip_allocations` rows exist for the constraints.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::db::{self, Backend, Kind, Obj};
use neutrino_core::list::{ListQuery, Source, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, ipam, networks, subnets};

/// Storage of ports.
pub const KIND: Kind = Kind {
    resource: "port",
    table: "ports",
    columns: &["network_id", "mac_address", "device_id", "device_owner"],
};

/// Port attributes beyond the standard ones (neutron-lib's port definition plus the
/// port-security, allowed-address-pairs, extra_dhcp_opt, security-group, binding and
/// tag-ports-during-bulk-creation extensions). Types that need more than [`Ty`] offers are
/// `Any` here and checked by this module.
pub const ATTRS: &[Attr] = &[
    attr("network_id", true, false, Ty::Uuid, D::Required),
    attr("admin_state_up", true, true, Ty::Bool, D::Bool(true)),
    attr("mac_address", true, true, Ty::Any, D::None),
    attr("fixed_ips", true, true, Ty::Any, D::None),
    attr("device_id", true, true, Ty::Str(255), D::Str("")),
    attr("device_owner", true, true, Ty::Str(255), D::Str("")),
    attr("port_security_enabled", true, true, Ty::Bool, D::None),
    attr("allowed_address_pairs", true, true, Ty::Any, D::None),
    attr("extra_dhcp_opts", true, true, Ty::Any, D::None),
    attr("security_groups", true, true, Ty::Any, D::None),
    attr("binding:host_id", true, true, Ty::StrOrNull(255), D::None),
    attr("binding:profile", true, true, Ty::Any, D::None),
    attr("binding:vnic_type", true, true, Ty::Any, D::Str("normal")),
    attr("binding:vif_type", false, false, Ty::Any, D::None),
    attr("binding:vif_details", false, false, Ty::Any, D::None),
    attr("tags", true, false, Ty::List, D::None),
];

/// Keys a port document can carry on output, for per-request visibility rules.
const OUTPUT_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "network_id",
    "project_id",
    "tenant_id",
    "mac_address",
    "admin_state_up",
    "status",
    "device_id",
    "device_owner",
    "fixed_ips",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "port_security_enabled",
    "security_groups",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "binding:vif_type",
    "binding:vif_details",
    "tags",
    "created_at",
    "updated_at",
    "revision_number",
];

/// neutron-lib `VNIC_TYPES`.
const VNIC_TYPES: &[&str] = &[
    "normal",
    "direct",
    "macvtap",
    "baremetal",
    "direct-physical",
    "virtio-forwarder",
    "smart-nic",
    "vdpa",
    "accelerator-direct",
    "accelerator-direct-physical",
    "remote-managed",
];

/// neutron-lib `ROUTER_INTERFACE_OWNERS`.
const ROUTER_INTERFACE_OWNERS: &[&str] = &[
    "network:router_interface",
    "network:ha_router_replicated_interface",
    "network:router_interface_distributed",
];
/// neutron-lib adds the centralized SNAT port to get `ROUTER_INTERFACE_OWNERS_SNAT`.
const ROUTER_SNAT_OWNER: &str = "network:router_centralized_snat";

/// Extra DHCP options that may carry an empty value (neutron's `VALID_BLANK_EXTRA_DHCP_OPTS`).
const BLANK_DHCP_OPTS: &[&str] = &["router", "classless-static-route"];

/// Neutron's `mac_generation_retries` default.
const MAC_GENERATION_RETRIES: usize = 16;

/// Attributes the binding sets; a change in any of them must be saved.
const BINDING_RESULT: [&str; 3] = ["binding:vif_type", "binding:vif_details", "status"];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/ports", get(list).post(create))
        .route("/v2.0/ports/{id}", get(show).put(update).delete(delete))
}

// ---------------------------------------------------------------------------------------------
// Small helpers: errors, documents, ownership.

fn bad_value(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

fn port_not_found(id: &str) -> ApiError {
    ApiError::not_found("Port", id)
}

fn mac_in_use(net_id: &str, mac: &str) -> ApiError {
    ApiError::conflict(
        "MacAddressInUse",
        format!(
            "Unable to complete operation for network {net_id}. The mac address {mac} is in use."
        ),
    )
}

fn network_exhausted(net_id: &str) -> ApiError {
    ApiError::conflict(
        "IpAddressGenerationFailure",
        format!("No more IP addresses available on network {net_id}."),
    )
}

fn str_of<'a>(obj: &'a Obj, key: &str) -> &'a str {
    obj.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn is_router_interface(owner: &str) -> bool {
    ROUTER_INTERFACE_OWNERS.contains(&owner)
}

fn is_router_interface_snat(owner: &str) -> bool {
    is_router_interface(owner) || owner == ROUTER_SNAT_OWNER
}

/// Whether `ctx` may see port `port` living on network `net` (before policy): admins, the
/// port's project, and the network's owner (Neutron's `admin_or_network_owner` query hook).
fn visible(ctx: &Context, port: &Obj, net: Option<&Obj>) -> bool {
    ctx.is_admin()
        || ctx.owns(str_of(port, "project_id"))
        || net.is_some_and(|n| ctx.owns(str_of(n, "project_id")))
}

/// The port as clients see it (before policy-driven hiding). Documents are stored in this
/// form already (`tenant_id` and `tags` included, see [`create_one`]); this only fills them in
/// for documents written otherwise.
fn render(port: Obj) -> Obj {
    let mut out = with_tenant(port);
    out.entry("tags").or_insert_with(|| json!([]));
    out
}

/// The `get_port:<attr>` rules that exist, resolved once per request (listing thousands of
/// ports must not format and look up a rule name per attribute per port).
struct Hidden {
    rules: Vec<(&'static str, String)>,
}

impl Hidden {
    fn new(st: &ApiState, ctx: &Context) -> Hidden {
        let rules = if ctx.is_admin() {
            Vec::new()
        } else {
            OUTPUT_KEYS
                .iter()
                .map(|k| (*k, format!("get_port:{k}")))
                .filter(|(_, r)| st.policy.has_rule(r))
                .collect()
        };
        Hidden { rules }
    }

    /// Whether policy may hide attribute `key` from this caller.
    fn may_hide(&self, key: &str) -> bool {
        self.rules.iter().any(|(k, _)| *k == key)
    }

    fn strip(&self, st: &ApiState, ctx: &Context, target: &Obj, out: &mut Obj) {
        for (k, rule) in &self.rules {
            if out.contains_key(*k) && !st.policy.check(ctx, rule, target) {
                out.remove(*k);
            }
        }
    }
}

/// Renders one port for `ctx` with hidden attributes removed (as `common::strip_hidden`).
fn render_for(st: &ApiState, ctx: &Context, net: &Obj, port: &Obj) -> Obj {
    let mut out = render(port.clone());
    let target = networks::network_target(net, port);
    common::strip_hidden(st, ctx, "port", &target, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// MAC addresses.

/// Parses a MAC in the notations `netaddr` accepts for ports (`aa:bb:..`, `aa-bb-..`,
/// `aabb.ccdd.eeff`, `aabbccddeeff`).
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let hex_groups = |parts: Vec<&str>, width: usize| -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        for p in parts {
            if p.is_empty() || p.len() > width || !p.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            let v = u32::from_str_radix(p, 16).ok()?;
            if width == 4 {
                bytes.push((v >> 8) as u8);
                bytes.push((v & 0xff) as u8);
            } else {
                bytes.push(v as u8);
            }
        }
        Some(bytes)
    };
    let bytes = if s.contains(':') || s.contains('-') {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return None;
        }
        hex_groups(parts, 2)?
    } else if s.contains('.') {
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() != 3 || parts.iter().any(|p| p.len() != 4) {
            return None;
        }
        hex_groups(parts, 4)?
    } else if s.len() == 12 {
        let parts: Vec<&str> = (0..6).filter_map(|i| s.get(2 * i..2 * i + 2)).collect();
        hex_groups(parts, 2)?
    } else {
        return None;
    };
    if bytes.len() != 6 {
        return None;
    }
    out.copy_from_slice(&bytes);
    Some(out)
}

fn format_mac(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Validates and sanitises a requested MAC (lower-case colon form). Neutron refuses the
/// all-zero and broadcast addresses; a port MAC must also be unicast.
fn sanitize_mac(attr: &str, v: &Value) -> ApiResult<String> {
    let invalid = || {
        bad_value(
            attr,
            format!("'{}' is not a valid MAC address", attrs::display(v)),
        )
    };
    let Some(s) = v.as_str() else {
        return Err(invalid());
    };
    match parse_mac(s) {
        Some(m) if m != [0; 6] && m != [0xff; 6] && m[0] & 1 == 0 => Ok(format_mac(m)),
        _ => Err(invalid()),
    }
}

/// A random MAC as Neutron's `get_random_mac(base_mac)`: the first three octets of
/// `base_mac` are kept, the fourth too unless it is zero, the rest are random.
fn generate_mac(base_mac: &str) -> String {
    let base = neutrino_core::config::parse_mac(base_mac).unwrap_or([0xfa, 0x16, 0x3e, 0, 0, 0]);
    let mut m: [u8; 6] = [
        base[0],
        base[1],
        base[2],
        rand::random(),
        rand::random(),
        rand::random(),
    ];
    if base[3] != 0 {
        m[3] = base[3];
    }
    format_mac(m)
}

fn is_mac_conflict(e: &sqlx::Error) -> bool {
    // SQLite names the columns ("ports.network_id, ports.mac_address"), PostgreSQL the
    // constraint ("ports_network_mac").
    db::is_unique_violation(e, Some("ports_network_mac"))
        || db::is_unique_violation(e, Some("mac_address"))
}

// ---------------------------------------------------------------------------------------------
// Savepoints: PostgreSQL aborts the whole transaction on a failed statement, so statements
// that may fail and be retried (generated MAC collision, trying the next subnet) run inside a
// savepoint there. SQLite only rolls back the failed statement, so nothing is needed.

async fn savepoint(st: &ApiState, tx: &mut AnyConnection, sql: &str) -> ApiResult<()> {
    if st.db.backend() == Backend::Postgres {
        sqlx::query(sql).execute(&mut *tx).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Request validation (pure).

/// One requested fixed IP: `{subnet_id?, ip_address?}`.
#[derive(Debug, Clone)]
struct FixedReq {
    subnet_id: Option<String>,
    ip: Option<IpAddr>,
}

fn parse_ip(attr: &str, v: &Value) -> ApiResult<IpAddr> {
    v.as_str()
        .and_then(|s| s.parse::<IpAddr>().ok())
        .ok_or_else(|| {
            bad_value(
                attr,
                format!("'{}' is not a valid IP address", attrs::display(v)),
            )
        })
}

/// neutron-lib's `validate_fixed_ips`.
fn parse_fixed_ips(v: &Value) -> ApiResult<Vec<FixedReq>> {
    let fmt_err = |d: &Value| {
        bad_value(
            "fixed_ips",
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
                let ip = parse_ip("fixed_ips", a)?;
                if !seen.insert(ip) {
                    return Err(bad_value(
                        "fixed_ips",
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
                    "fixed_ips",
                    format!("'{}' is not a valid UUID", attrs::display(other)),
                ));
            }
            None => None,
        };
        out.push(FixedReq { subnet_id, ip });
    }
    Ok(out)
}

/// neutron-lib's `_validate_allowed_address_pairs` (MACs are filled in later from the port).
fn parse_address_pairs(st: &ApiState, v: &Value) -> ApiResult<Vec<(String, Option<String>)>> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(l) => l,
        _ => {
            return Err(ApiError::bad_request(
                "Allowed address pairs must be a list.",
            ));
        }
    };
    let max = st.cfg.max_allowed_address_pair;
    if list.len() > max {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "AllowedAddressPairExhausted",
            format!("The number of allowed address pair exceeds the maximum {max}."),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(list.len());
    for pair in list {
        let Value::Object(m) = pair else {
            return Err(bad_value(
                "allowed_address_pairs",
                format!("'{}' is not a dictionary", attrs::display(pair)),
            ));
        };
        let mac = match m.get("mac_address") {
            Some(v) => Some(sanitize_mac("allowed_address_pairs", v).map_err(|_| {
                ApiError::bad_request(format!(
                    "'{}' is not a valid MAC address",
                    attrs::display(v)
                ))
            })?),
            None => None,
        };
        let Some(ipv) = m.get("ip_address") else {
            return Err(ApiError::invalid_input(
                "AllowedAddressPair must contain ip_address",
            ));
        };
        let ip_text = attrs::display(ipv);
        if !seen.insert((mac.clone(), ip_text.clone())) {
            // An InvalidInput subclass in Neutron: its own type, InvalidInput's message form.
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "DuplicateAddressPairInRequest",
                format!(
                    "Invalid input for operation: Request contains duplicate address pair: mac_address {} ip_address {ip_text}.",
                    mac.as_deref().unwrap_or("None")
                ),
            ));
        }
        let mut unknown: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "mac_address" && *k != "ip_address")
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(ApiError::bad_request(format!(
                "Unrecognized attribute(s) '{}'",
                unknown.join(", ")
            )));
        }
        let Some(s) = ipv.as_str() else {
            return Err(ApiError::bad_request(format!(
                "'{ip_text}' is not a valid IP address"
            )));
        };
        // An address pair may name a whole CIDR (e.g. a VRRP range).
        let ok = if s.contains('/') {
            s.parse::<ipnet::IpNet>().is_ok()
        } else {
            s.parse::<IpAddr>().is_ok()
        };
        if !ok {
            return Err(ApiError::bad_request(if s.contains('/') {
                format!("'{s}' is not a valid IP subnet")
            } else {
                format!("'{s}' is not a valid IP address")
            }));
        }
        out.push((s.to_string(), mac));
    }
    Ok(out)
}

fn pairs_to_json(pairs: &[(String, Option<String>)], port_mac: &str) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(ip, mac)| {
                json!({"ip_address": ip, "mac_address": mac.as_deref().unwrap_or(port_mac)})
            })
            .collect(),
    )
}

/// One requested DHCP option; `value: None` deletes it on update.
#[derive(Debug, Clone)]
struct DhcpOpt {
    name: String,
    value: Option<String>,
    ip_version: i64,
}

/// `type:list_of_any_key_specs_or_none` for extra_dhcp_opts.
fn parse_dhcp_opts(v: &Value) -> ApiResult<Vec<DhcpOpt>> {
    const A: &str = "extra_dhcp_opts";
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(l) => l,
        other => {
            return Err(bad_value(
                A,
                format!("'{}' is not a list", attrs::display(other)),
            ));
        }
    };
    let mut out = Vec::with_capacity(list.len());
    for item in list {
        let Value::Object(m) = item else {
            return Err(bad_value(
                A,
                format!("'{}' is not a dictionary", attrs::display(item)),
            ));
        };
        let mut unknown: Vec<&str> = m
            .keys()
            .map(String::as_str)
            .filter(|k| !matches!(*k, "opt_name" | "opt_value" | "ip_version"))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            return Err(bad_value(
                A,
                format!("Unrecognized attribute(s) '{}'", unknown.join(", ")),
            ));
        }
        let name = match m.get("opt_name") {
            Some(Value::String(s)) if s.trim().is_empty() => {
                return Err(bad_value(
                    A,
                    format!("'{s}' Blank strings are not permitted"),
                ));
            }
            Some(Value::String(s)) if s.chars().count() > 64 => {
                return Err(bad_value(A, format!("'{s}' exceeds maximum length of 64")));
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(bad_value(
                    A,
                    format!("'{}' is not a valid string", attrs::display(other)),
                ));
            }
            None => return Err(bad_value(A, "Expected opt_name")),
        };
        let value = match m.get("opt_value") {
            None => return Err(bad_value(A, "Expected opt_value")),
            Some(Value::Null) => None,
            Some(Value::String(s)) if s.chars().count() > 255 => {
                return Err(bad_value(A, format!("'{s}' exceeds maximum length of 255")));
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(bad_value(
                    A,
                    format!("'{}' is not a valid string", attrs::display(other)),
                ));
            }
        };
        let ip_version = match m.get("ip_version") {
            None | Some(Value::Null) => 4,
            Some(v) => match v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(n @ (4 | 6)) => n,
                _ => {
                    return Err(bad_value(
                        A,
                        format!("{} is not in [4, 6]", attrs::display(v)),
                    ));
                }
            },
        };
        out.push(DhcpOpt {
            name,
            value,
            ip_version,
        });
    }
    Ok(out)
}

/// Whether an option may be stored: a value is required, blank only for a few options.
fn dhcp_value_ok(o: &DhcpOpt) -> bool {
    match &o.value {
        None => false,
        Some(v) => !v.is_empty() || BLANK_DHCP_OPTS.contains(&o.name.as_str()),
    }
}

fn dhcp_to_json(o: &DhcpOpt) -> Value {
    json!({"opt_name": o.name, "opt_value": o.value, "ip_version": o.ip_version})
}

/// Options on create: invalid (empty) values are dropped, as Neutron does.
fn dhcp_create(opts: &[DhcpOpt]) -> Value {
    Value::Array(
        opts.iter()
            .filter(|o| dhcp_value_ok(o))
            .map(dhcp_to_json)
            .collect(),
    )
}

/// Neutron's update semantics: options are merged by (name, ip_version); a null value
/// deletes one; the list is never replaced wholesale.
fn dhcp_merge(current: &Value, opts: &[DhcpOpt]) -> Value {
    let mut out: Vec<Value> = current.as_array().cloned().unwrap_or_default();
    for o in opts {
        let pos = out.iter().position(|e| {
            e.get("opt_name").and_then(Value::as_str) == Some(o.name.as_str())
                && e.get("ip_version").and_then(Value::as_i64).unwrap_or(4) == o.ip_version
        });
        match (pos, &o.value) {
            (Some(i), None) => {
                out.remove(i);
            }
            (Some(i), Some(_)) if dhcp_value_ok(o) => out[i] = dhcp_to_json(o),
            (None, Some(_)) if dhcp_value_ok(o) => out.push(dhcp_to_json(o)),
            _ => {}
        }
    }
    Value::Array(out)
}

/// `type:uuid_list` with duplicates folded (Neutron stores a set of bindings).
fn parse_security_groups(v: &Value) -> ApiResult<Vec<Value>> {
    let list = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(l) => l,
        other => {
            return Err(bad_value(
                "security_groups",
                format!("'{}' is not a list", attrs::display(other)),
            ));
        }
    };
    // Neutron's `type:uuid_list` refuses duplicates before it looks at the items, on create
    // and update alike (neutron_lib/api/validators: _validate_list_of_items).
    let mut dups: Vec<&Value> = Vec::new();
    for (i, id) in list.iter().enumerate() {
        if list[..i].contains(id) && !dups.contains(&id) {
            dups.push(id);
        }
    }
    if !dups.is_empty() {
        let names: Vec<String> = dups.iter().map(|d| attrs::display(d)).collect();
        return Err(bad_value(
            "security_groups",
            format!("Duplicate items in the list: '{}'", names.join(", ")),
        ));
    }
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for id in list {
        match id {
            Value::String(s) if attrs::is_uuid(s) => out.push(id.clone()),
            other => {
                return Err(bad_value(
                    "security_groups",
                    format!("'{}' is not a valid UUID", attrs::display(other)),
                ));
            }
        }
    }
    Ok(out)
}

fn parse_vnic_type(v: &Value) -> ApiResult<Value> {
    match v.as_str() {
        Some(s) if VNIC_TYPES.contains(&s) => Ok(v.clone()),
        _ => {
            let valid: Vec<String> = VNIC_TYPES.iter().map(|t| format!("'{t}'")).collect();
            Err(bad_value(
                "binding:vnic_type",
                format!("{} is not in [{}]", attrs::display(v), valid.join(", ")),
            ))
        }
    }
}

fn parse_profile(v: &Value) -> ApiResult<Value> {
    match v {
        Value::Null => Ok(json!({})),
        Value::Object(_) => Ok(v.clone()),
        other => Err(bad_value(
            "binding:profile",
            format!("'{}' is not a dictionary", attrs::display(other)),
        )),
    }
}

/// `type:list_of_unique_strings` (max 255 each, at most 50 tags).
fn parse_tags(v: &Value) -> ApiResult<Value> {
    let Value::Array(list) = v else {
        return Err(bad_value(
            "tags",
            format!("'{}' is not a list", attrs::display(v)),
        ));
    };
    if list.len() > 50 {
        return Err(ApiError::bad_request(
            "The number of tags exceed the per-resource limit of 50",
        ));
    }
    let mut seen = HashSet::new();
    for t in list {
        match t.as_str() {
            Some(s) if !s.is_empty() && s.chars().count() <= 255 => {
                if !seen.insert(s) {
                    return Err(bad_value(
                        "tags",
                        format!("Duplicate items in the list: '{s}'"),
                    ));
                }
            }
            _ => {
                return Err(bad_value(
                    "tags",
                    format!("'{}' is not a valid tag", attrs::display(t)),
                ));
            }
        }
    }
    Ok(v.clone())
}

/// Keys for attribute-level policy: the attributes given, plus Neutron's sub-attribute rules
/// for list-of-dict attributes (`fixed_ips:ip_address`, `allowed_address_pairs:mac_address`).
fn policy_keys(given: &Obj) -> Obj {
    let mut keys = Obj::new();
    for (k, v) in given {
        keys.insert(k.clone(), Value::Null);
        if k == "fixed_ips" || k == "allowed_address_pairs" {
            for item in v.as_array().into_iter().flatten() {
                for sub in item.as_object().into_iter().flat_map(|m| m.keys()) {
                    keys.insert(format!("{k}:{sub}"), Value::Null);
                }
            }
        }
    }
    keys
}

// ---------------------------------------------------------------------------------------------
// Subnets and IP requests.

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

/// Neutron's `ipam_utils.check_subnet_ip` on a stored subnet.
fn subnet_has_ip(subnet: &Obj, ip: IpAddr, owner: &str) -> bool {
    ipam::parse_cidr(str_of(subnet, "cidr"))
        .is_some_and(|net| ipam::check_subnet_ip(&net, ip, owner))
}

/// Subnets of a network in creation order (Neutron tries them in that order).
async fn network_subnets(tx: &mut AnyConnection, net_id: &str) -> ApiResult<Vec<Obj>> {
    let mut list = db::list(&mut *tx, &subnets::KIND, Some(("network_id", net_id))).await?;
    list.sort_by(|a, b| {
        (str_of(a, "created_at"), str_of(a, "id")).cmp(&(str_of(b, "created_at"), str_of(b, "id")))
    });
    Ok(list)
}

/// What to allocate for a port.
#[derive(Debug)]
enum IpReq {
    /// One address from the first of these subnets that has room.
    Any(Vec<Obj>),
    /// This address of this subnet.
    Specific(Obj, IpAddr),
    /// The EUI-64 address of the port's MAC on this SLAAC / DHCPv6-stateless subnet.
    Eui64(Obj),
}

/// Neutron's `_get_subnet_for_fixed_ip`.
async fn subnet_for_fixed(
    tx: &mut AnyConnection,
    req: &FixedReq,
    subnets: &[Obj],
    owner: &str,
) -> ApiResult<Obj> {
    if subnets.is_empty() {
        return Err(ApiError::invalid_input(
            "IP allocation requires subnets for network",
        ));
    }
    if let Some(sid) = &req.subnet_id {
        let Some(subnet) = subnets.iter().find(|s| str_of(s, "id") == sid) else {
            // Neutron names the network the subnet really belongs to (or 404s when the
            // subnet does not exist at all).
            return match db::get(&mut *tx, &subnets::KIND, sid).await? {
                Some(other) => Err(ApiError::invalid_input(format!(
                    "Failed to create port on network {}, because fixed_ips included invalid subnet {sid}",
                    str_of(&other, "network_id")
                ))),
                None => Err(ApiError::not_found("Subnet", sid)),
            };
        };
        if let Some(ip) = req.ip
            && !subnet_has_ip(subnet, ip, owner)
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidIpForSubnet",
                format!("IP address {ip} is not a valid IP for the specified subnet."),
            ));
        }
        return Ok(subnet.clone());
    }
    let Some(ip) = req.ip else {
        return Err(ApiError::invalid_input(
            "IP allocation requires subnet_id or ip_address",
        ));
    };
    subnets
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
        })
}

/// Neutron's `_test_fixed_ips_for_port`: explicit requests become allocations. A request for
/// just an auto-address subnet is dropped here because every auto-address subnet is added
/// anyway (see [`auto_address_reqs`]); a specific address on one is refused.
async fn explicit_reqs(
    tx: &mut AnyConnection,
    reqs: &[FixedReq],
    subnets: &[Obj],
    owner: &str,
) -> ApiResult<Vec<IpReq>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        let subnet = subnet_for_fixed(tx, r, subnets, owner).await?;
        let auto = ipam::is_auto_address(&subnet);
        match r.ip {
            Some(ip) => {
                if auto && !is_router_interface(owner) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "AllocationOnAutoAddressSubnet",
                        format!(
                            "IPv6 address {ip} cannot be directly assigned to a port on subnet {} as the subnet is configured for automatic addresses",
                            str_of(&subnet, "id")
                        ),
                    ));
                }
                out.push(IpReq::Specific(subnet, ip));
            }
            None => {
                if is_router_interface_snat(owner) || !auto {
                    out.push(IpReq::Any(vec![subnet]));
                }
            }
        }
    }
    Ok(out)
}

/// Neutron's `_get_auto_address_ips`: every SLAAC / DHCPv6-stateless subnet gives a
/// non-router port its EUI-64 address, whether or not fixed_ips were requested. Neutron does
/// this even for `fixed_ips: []` (the auto-address scan runs after the explicit list), so an
/// empty list means "no IPv4 / stateful IPv6 address", not "no address at all".
fn auto_address_reqs(subnets: &[Obj], owner: &str) -> Vec<IpReq> {
    if is_router_interface_snat(owner) {
        return Vec::new();
    }
    subnets
        .iter()
        .filter(|s| ip_version(s) == 6 && ipam::is_auto_address(s))
        .map(|s| IpReq::Eui64(s.clone()))
        .collect()
}

/// Without `fixed_ips`: one address from the IPv4 subnets (first with room), one from the
/// stateful IPv6 subnets, plus the auto addresses.
fn default_reqs(subnets: &[Obj], owner: &str) -> Vec<IpReq> {
    let v4: Vec<Obj> = subnets
        .iter()
        .filter(|s| ip_version(s) == 4)
        .cloned()
        .collect();
    let v6: Vec<Obj> = subnets
        .iter()
        .filter(|s| ip_version(s) == 6 && !ipam::is_auto_address(s))
        .cloned()
        .collect();
    let mut out = Vec::new();
    if !v4.is_empty() {
        out.push(IpReq::Any(v4));
    }
    if !v6.is_empty() {
        out.push(IpReq::Any(v6));
    }
    out.extend(auto_address_reqs(subnets, owner));
    out
}

fn is_generation_failure(e: &ApiError) -> bool {
    e.status == StatusCode::CONFLICT && e.kind == "IpAddressGenerationFailure"
}

/// Performs the allocations for a port (already inserted), returning its `fixed_ips`.
async fn allocate(
    st: &ApiState,
    tx: &mut AnyConnection,
    net_id: &str,
    port_id: &str,
    mac: &str,
    reqs: &[IpReq],
) -> ApiResult<Vec<Value>> {
    let mut out = Vec::with_capacity(reqs.len());
    for r in reqs {
        let (subnet_id, ip) = match r {
            IpReq::Specific(s, ip) => {
                let ip =
                    ipam::allocate_specific(st, tx, s, net_id, port_id, &ip.to_string()).await?;
                (str_of(s, "id").to_string(), ip)
            }
            IpReq::Eui64(s) => {
                let ip = ipam::allocate_eui64(st, tx, s, net_id, port_id, mac).await?;
                (str_of(s, "id").to_string(), ip)
            }
            IpReq::Any(group) => {
                let mut got = None;
                for s in group {
                    // Full: try the next subnet of the group, as Neutron's subnet group.
                    // (ipam never leaves a failed statement behind, so no savepoint.)
                    match ipam::allocate_any(st, tx, s, net_id, port_id).await {
                        Ok(ip) => {
                            got = Some((str_of(s, "id").to_string(), ip));
                            break;
                        }
                        Err(e) if is_generation_failure(&e) => {}
                        Err(e) => return Err(e),
                    }
                }
                // Neutron turns "all subnets of the group are full" into the network-level
                // IpAddressGenerationFailure.
                got.ok_or_else(|| network_exhausted(net_id))?
            }
        };
        out.push(json!({"subnet_id": subnet_id, "ip_address": ip}));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Port security.

fn sg_error() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "PortSecurityAndIPRequiredForSecurityGroups",
        "Port security must be enabled and port must have an IP address in order to use security groups.",
    )
}

fn pairs_error() -> ApiError {
    ApiError::conflict(
        "AddressPairAndPortSecurityRequired",
        "Port Security must be enabled in order to have allowed address pairs on a port.",
    )
}

fn non_empty(v: Option<&Value>) -> bool {
    v.and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Create.

/// A validated create request, before it touches the store.
struct NewPort {
    obj: Obj,
    /// Keys the client gave explicitly (for attribute policies).
    given: Obj,
    fixed: Option<Vec<FixedReq>>,
    pairs: Vec<(String, Option<String>)>,
    explicit_mac: Option<String>,
}

fn prepare_new(st: &ApiState, ctx: &Context, item: Obj) -> ApiResult<NewPort> {
    let requested: Vec<String> = item.keys().cloned().collect();
    let mut obj = attrs::prepare_create(&[STANDARD, ATTRS], item)?;
    common::owner_for_create(ctx, &mut obj)?;
    let explicit_mac = match obj.remove("mac_address") {
        None | Some(Value::Null) => None,
        Some(v) => Some(sanitize_mac("mac_address", &v)?),
    };
    let fixed = match obj.remove("fixed_ips") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_fixed_ips(&v)?),
    };
    let pairs = match obj.get("allowed_address_pairs") {
        Some(v) => parse_address_pairs(st, v)?,
        None => Vec::new(),
    };
    let dhcp = match obj.get("extra_dhcp_opts") {
        Some(v) => parse_dhcp_opts(v)?,
        None => Vec::new(),
    };
    obj.insert("extra_dhcp_opts".into(), dhcp_create(&dhcp));
    let sgs = match obj.get("security_groups") {
        Some(v) => parse_security_groups(v)?,
        None => Vec::new(),
    };
    obj.insert("security_groups".into(), Value::Array(sgs));
    if let Some(v) = obj.get("binding:vnic_type") {
        parse_vnic_type(v)?;
    }
    let profile = match obj.get("binding:profile") {
        Some(v) => parse_profile(v)?,
        None => json!({}),
    };
    obj.insert("binding:profile".into(), profile);
    if obj.get("binding:host_id").is_none_or(Value::is_null) {
        obj.insert("binding:host_id".into(), json!(""));
    }
    match obj.get("tags") {
        Some(v) => {
            parse_tags(v)?;
        }
        None => {
            obj.insert("tags".into(), json!([]));
        }
    }
    // Explicitly set = present in the request and different from the default, as Neutron's
    // `_is_attribute_explicitly_set`; only those get `create_port:<attr>` checks.
    let mut given = Obj::new();
    for k in &requested {
        let Some(v) = obj.get(k) else { continue };
        let default = ATTRS
            .iter()
            .chain(STANDARD)
            .find(|a| a.name == k)
            .map(|a| a.default);
        let is_default = match default {
            Some(D::Str(s)) => v.as_str() == Some(s),
            Some(D::Bool(b)) => v.as_bool() == Some(b),
            _ => false,
        };
        if !v.is_null() && !is_default && k != "project_id" && k != "tenant_id" {
            given.insert(k.clone(), v.clone());
        }
    }
    if explicit_mac.is_some() {
        given.insert("mac_address".into(), Value::Null);
    }
    if let Some(f) = &fixed {
        // fixed_ips was taken out of `obj` above; its sub-attributes matter for policy.
        let entries: Vec<Value> = f
            .iter()
            .map(|r| {
                let mut m = Obj::new();
                if r.subnet_id.is_some() {
                    m.insert("subnet_id".into(), Value::Null);
                }
                if r.ip.is_some() {
                    m.insert("ip_address".into(), Value::Null);
                }
                Value::Object(m)
            })
            .collect();
        given.insert("fixed_ips".into(), Value::Array(entries));
    }
    Ok(NewPort {
        obj,
        given,
        fixed,
        pairs,
        explicit_mac,
    })
}

/// Inserts the port row, generating MACs until one is free on the network (Neutron retries
/// `mac_generation_retries` times, then answers 503). Also used for the ports the server
/// creates itself (DHCP, router interfaces and gateways, floating IPs).
pub(crate) async fn insert_port(
    st: &ApiState,
    tx: &mut AnyConnection,
    obj: &mut Obj,
    explicit_mac: Option<&str>,
    net_id: &str,
) -> ApiResult<()> {
    if let Some(mac) = explicit_mac {
        obj.insert("mac_address".into(), json!(mac));
        return match db::insert_raw(tx, &KIND, obj).await {
            Ok(()) => Ok(()),
            Err(e) if is_mac_conflict(&e) => Err(mac_in_use(net_id, mac)),
            Err(e) => Err(e.into()),
        };
    }
    for _ in 0..MAC_GENERATION_RETRIES {
        obj.insert("mac_address".into(), json!(generate_mac(&st.cfg.base_mac)));
        savepoint(st, tx, "SAVEPOINT port_mac").await?;
        match db::insert_raw(tx, &KIND, obj).await {
            Ok(()) => {
                savepoint(st, tx, "RELEASE SAVEPOINT port_mac").await?;
                return Ok(());
            }
            Err(e) if is_mac_conflict(&e) => {
                savepoint(st, tx, "ROLLBACK TO SAVEPOINT port_mac").await?;
                savepoint(st, tx, "RELEASE SAVEPOINT port_mac").await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable(
        "NetworkMacAddressGenerationFailure",
        format!("Unable to generate unique mac on network {net_id}."),
    ))
}

/// Creates one port inside `tx`, returning the stored document and its network.
async fn create_one(
    st: &ApiState,
    ctx: &Context,
    tx: &mut AnyConnection,
    new: NewPort,
    subnet_cache: &mut HashMap<String, Vec<Obj>>,
) -> ApiResult<(Obj, Obj)> {
    let NewPort {
        mut obj,
        given,
        fixed,
        pairs,
        explicit_mac,
    } = new;
    let net_id = str_of(&obj, "network_id").to_string();
    let net = networks::get_visible(&mut *tx, ctx, &net_id).await?;

    // Port security defaults to the network's setting (port-security extension).
    let net_ps = net
        .get("port_security_enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let ps = match obj.get("port_security_enabled").and_then(Value::as_bool) {
        Some(b) => b,
        None => {
            obj.insert("port_security_enabled".into(), Value::Bool(net_ps));
            net_ps
        }
    };

    let target = networks::network_target(&net, &obj);
    common::enforce(st, ctx, "create_port", &target)?;
    common::enforce_attrs(st, ctx, "create_port", &policy_keys(&given), &target)?;

    if !ps && non_empty(obj.get("security_groups")) {
        return Err(sg_error());
    }
    if !ps && !pairs.is_empty() {
        return Err(pairs_error());
    }

    let owner = str_of(&obj, "device_owner").to_string();
    if !subnet_cache.contains_key(&net_id) {
        let list = network_subnets(tx, &net_id).await?;
        subnet_cache.insert(net_id.clone(), list);
    }
    let subnets = subnet_cache
        .get(&net_id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let reqs = match &fixed {
        None => default_reqs(subnets, &owner),
        Some(f) => {
            let mut r = explicit_reqs(tx, f, subnets, &owner).await?;
            r.extend(auto_address_reqs(subnets, &owner));
            r
        }
    };

    let project = str_of(&obj, "project_id").to_string();
    common::check_quota(st, tx, "port", &KIND, &project, 1).await?;

    let id = db::new_id();
    obj.insert("id".into(), Value::String(id.clone()));
    // Store the wire form, so listing can serve stored documents as they are.
    obj.insert("tenant_id".into(), json!(project));
    obj.insert("status".into(), json!("DOWN"));
    obj.insert("binding:vif_type".into(), json!("unbound"));
    obj.insert("binding:vif_details".into(), json!({}));
    obj.insert("fixed_ips".into(), json!([]));
    obj.insert("allowed_address_pairs".into(), json!([]));
    // Security groups: the project's default group unless told otherwise; named groups
    // must exist and be usable by the port's project.
    crate::security_groups::prepare_port(
        st,
        tx,
        ctx,
        &mut obj,
        given.contains_key("security_groups"),
    )
    .await?;
    // Binding to a host (vif_type/vif_details) when binding:host_id is set.
    crate::binding::bind_port(st, tx, &net, &mut obj).await?;
    insert_port(st, tx, &mut obj, explicit_mac.as_deref(), &net_id).await?;

    // Addresses reference the port row, so they come second; the final document (with its
    // fixed IPs and address-pair MACs) then replaces the body, still at revision 1.
    let mac = str_of(&obj, "mac_address").to_string();
    let fixed_ips = allocate(st, tx, &net_id, &id, &mac, &reqs).await?;
    obj.insert("fixed_ips".into(), Value::Array(fixed_ips));
    obj.insert("allowed_address_pairs".into(), pairs_to_json(&pairs, &mac));
    sqlx::query("UPDATE ports SET body = $1 WHERE id = $2")
        .bind(Value::Object(obj.clone()).to_string())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    db::log_create(tx, &KIND, &obj).await?;
    crate::provisioning::setup_dhcp_block(tx, &obj).await?;
    Ok((obj, net))
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "port", "ports")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        prepared.push(prepare_new(&st, &ctx, item)?);
    }
    // One transaction for the whole request: a bulk create is all or nothing.
    let mut tx = st.db.begin().await?;
    let mut cache = HashMap::new();
    let mut created = Vec::with_capacity(prepared.len());
    for new in prepared {
        created.push(create_one(&st, &ctx, &mut tx, new, &mut cache).await?);
    }
    st.db.commit(tx).await?;
    let mut out: Vec<Value> = created
        .iter()
        .map(|(p, n)| Value::Object(render_for(&st, &ctx, n, p)))
        .collect();
    Ok(if req.bulk {
        common::created("ports", Value::Array(out))
    } else {
        common::created("port", out.pop().unwrap_or_default())
    })
}

// ---------------------------------------------------------------------------------------------
// List and show.

/// `fixed_ips=ip_address=X` / `subnet_id=Y` / `ip_address_substr=Z` (each repeatable; a port
/// matches when it has an address matching each kind of criterion given).
#[derive(Default)]
struct FixedFilter {
    ips: Vec<String>,
    subnets: Vec<String>,
    substrs: Vec<String>,
}

impl FixedFilter {
    fn parse(values: &[String]) -> ApiResult<FixedFilter> {
        let mut f = FixedFilter::default();
        // neutron-lib's convert_kvp_list_to_dict: a bare `fixed_ips` flag is no filter.
        if values == ["True"] {
            return Ok(f);
        }
        for v in values {
            let Some((k, val)) = v
                .split_once('=')
                .map(|(k, val)| (k.trim(), val.trim()))
                .filter(|(k, _)| !k.is_empty())
            else {
                return Err(ApiError::invalid_input(format!(
                    "'{v}' is not of the form <key>=[value]"
                )));
            };
            match k {
                // Compare canonical forms so `2001:DB8::1` finds `2001:db8::1`.
                "ip_address" => f.ips.push(
                    val.parse::<IpAddr>()
                        .map(|ip| ip.to_string())
                        .unwrap_or_else(|_| val.to_string()),
                ),
                "subnet_id" => f.subnets.push(val.to_string()),
                "ip_address_substr" => f.substrs.push(val.to_string()),
                _ => {}
            }
        }
        Ok(f)
    }

    fn matches(&self, port: &Obj) -> bool {
        let fixed = port.get("fixed_ips").and_then(Value::as_array);
        let entries = || fixed.into_iter().flatten().filter_map(Value::as_object);
        let has = |key: &str, want: &[String]| {
            want.is_empty()
                || entries().any(|e| {
                    e.get(key)
                        .and_then(Value::as_str)
                        .is_some_and(|v| want.iter().any(|w| w == v))
                })
        };
        has("ip_address", &self.ips)
            && has("subnet_id", &self.subnets)
            && (self.substrs.is_empty()
                || entries().any(|e| {
                    let ip = e
                        .get("ip_address")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    self.substrs.iter().any(|s| ip.contains(s.as_str()))
                }))
    }
}

fn sanitize_mac_filter(v: &str) -> String {
    parse_mac(v)
        .map(format_mac)
        .unwrap_or_else(|| v.to_ascii_lowercase())
}

/// Whether a listing needs nothing but the stored documents in id order: no filters beyond
/// the one pushed down to SQL, no tags, fields, sorting or paging.
fn plain_listing(query: &ListQuery, pushed: Option<&(&str, String)>) -> bool {
    let filters_ok = match pushed {
        None => query.filters.is_empty(),
        Some((col, _)) => query.filters.len() == 1 && query.filters[0].0 == *col,
    };
    filters_ok
        && query.fields.is_empty()
        && query.sort.is_empty()
        && query.limit.is_none()
        && query.marker.is_none()
        && query.tags.is_empty()
        && query.tags_any.is_empty()
        && query.not_tags.is_empty()
        && query.not_tags_any.is_empty()
}

/// Serves an admin's plain listing by concatenating stored documents, which are the wire form
/// (an admin sees every attribute), without parsing and re-serialising thousands of ports.
/// Returns None, to take the general path, if any document is not in wire form. The JSON
/// text was written by serde_json, so `"tenant_id":` can only match a key: inside a string
/// value the quotes would be escaped.
async fn list_stored(st: &ApiState, filter: Option<(&str, &str)>) -> ApiResult<Option<Response>> {
    let rows: Vec<String> = match filter {
        Some((col, v)) => {
            // `col` is one of the fixed names chosen by the caller, never client text.
            let sql = format!("SELECT body FROM ports WHERE {col} = $1 ORDER BY id");
            sqlx::query_scalar(&sql)
                .bind(v)
                .fetch_all(st.db.reader())
                .await?
        }
        None => {
            sqlx::query_scalar("SELECT body FROM ports ORDER BY id")
                .fetch_all(st.db.reader())
                .await?
        }
    };
    let mut out = String::with_capacity(rows.iter().map(|r| r.len() + 1).sum::<usize>() + 16);
    out.push_str("{\"ports\":[");
    for (i, r) in rows.iter().enumerate() {
        if !(r.starts_with('{') && r.contains("\"tenant_id\":") && r.contains("\"tags\":")) {
            return Ok(None);
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(r);
    }
    out.push_str("]}");
    Ok(Some(
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            out,
        )
            .into_response(),
    ))
}

/// neutron-lib's port attribute map, as far as listing goes: the sort keys, and the filters
/// whose values convert (`admin_state_up=maybe` is a 400).
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "name",
        "network_id",
        "admin_state_up",
        "mac_address",
        "device_id",
        "device_owner",
        "tenant_id",
        "status",
    ],
    bools: &["admin_state_up", "port_security_enabled"],
    ints: &[],
};

/// Port attributes whose rendered value is the stored string (or null): filters on them can
/// be answered by SQL, when policy does not hide them from the caller.
const STORED_TEXT: &[&str] = &[
    "id",
    "network_id",
    "device_id",
    "device_owner",
    "project_id",
    "tenant_id",
    "name",
    "description",
    "status",
    "binding:host_id",
    "binding:vnic_type",
];

/// Whether SQL answers every filter of `query` exactly (beyond fixed IPs and MACs, which it
/// always does): only mirrored columns compared with non-null values, no `fields`, no
/// negative tag filters. Then nothing is left to match in memory.
fn answered_by_sql(query: &ListQuery) -> bool {
    const EXACT: &[&str] = &[
        "id",
        "network_id",
        "device_id",
        "device_owner",
        "project_id",
        "tenant_id",
    ];
    query.fields.is_empty()
        && query.not_tags.is_empty()
        && query.not_tags_any.is_empty()
        && query.filters.iter().all(|(k, vals)| {
            EXACT.contains(&k.as_str())
                && vals
                    .iter()
                    .all(|v| !(v.is_empty() || v == "None" || v == "null"))
        })
}

/// Narrows `src` to the ports matching the fixed-IP filter, through `ip_allocations`
/// (indexed by address and by subnet). The in-memory check still decides.
fn push_fixed(src: &mut Source, f: &FixedFilter) {
    if !f.ips.is_empty() {
        let ps: Vec<String> = f.ips.iter().map(|v| src.param(v)).collect();
        src.cond(format!(
            "t.id IN (SELECT a.port_id FROM ip_allocations a WHERE a.ip_address IN ({}))",
            ps.join(", ")
        ));
    }
    if !f.subnets.is_empty() {
        let ps: Vec<String> = f.subnets.iter().map(|v| src.param(v)).collect();
        src.cond(format!(
            "t.id IN (SELECT a.port_id FROM ip_allocations a WHERE a.subnet_id IN ({}))",
            ps.join(", ")
        ));
    }
    if !f.substrs.is_empty() {
        let func = match src.backend() {
            Backend::Sqlite => "instr",
            Backend::Postgres => "strpos",
        };
        let ps: Vec<String> = f
            .substrs
            .iter()
            .map(|v| format!("{func}(a.ip_address, {}) > 0", src.param(v)))
            .collect();
        src.cond(format!(
            "EXISTS (SELECT 1 FROM ip_allocations a WHERE a.port_id = t.id AND ({}))",
            ps.join(" OR ")
        ));
    }
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let fixed = match query.take_filter("fixed_ips") {
        Some(v) => Some(FixedFilter::parse(&v)?),
        None => None,
    };
    // MACs compare case-insensitively after sanitising, as Neutron.
    let macs: Option<Vec<String>> = query
        .take_filter("mac_address")
        .map(|v| v.iter().map(|m| sanitize_mac_filter(m)).collect());
    // `security_groups` (match any) and every other attribute are matched by ListQuery.

    // Push a single-valued network_id / device_id filter down to the indexed column.
    let single = |key: &str| match query.filter(key) {
        Some([v]) => Some(v.clone()),
        _ => None,
    };
    let pushed = single("network_id")
        .map(|v| ("network_id", v))
        .or_else(|| single("device_id").map(|v| ("device_id", v)));
    if ctx.is_admin() && fixed.is_none() && macs.is_none() && plain_listing(&query, pushed.as_ref())
    {
        let filter = pushed.as_ref().map(|(c, v)| (*c, v.as_str()));
        if let Some(resp) = list_stored(&st, filter).await? {
            return Ok(resp);
        }
    }

    let hidden = Hidden::new(&st, &ctx);
    let admin = ctx.is_admin();
    let mut src = Source::new(&st.db, &KIND);
    // Non-admins see their ports and those on their networks (`visible`).
    if !admin {
        match ctx.project_id.as_deref() {
            Some(p) => {
                let (a, b) = (src.param(p), src.param(p));
                src.scope(format!(
                    "(t.project_id = {a} OR t.network_id IN \
                     (SELECT n.id FROM networks n WHERE n.project_id = {b}))"
                ));
            }
            None => src.scope("1 = 0"),
        }
    }
    let pushable: Vec<&str> = STORED_TEXT
        .iter()
        .copied()
        .filter(|k| !hidden.may_hide(k))
        .collect();
    src.push_filters(&query, &pushable);
    src.push_tags(&query);
    if let Some(m) = &macs {
        src.column_in("mac_address", m);
    }
    if let Some(f) = &fixed {
        push_fixed(&mut src, f);
    }

    let url = format!("{}/v2.0/ports", common::base_url(&headers));
    let mut pager = query.pager(&st.db, src).await?;
    if admin && pager.in_sql() && answered_by_sql(&query) {
        // Every filter was answered exactly by SQL: an admin's page is the stored documents
        // as they are (the wire form, see `list_stored`), with no parsing nor re-serialising.
        while let Some(rows) = pager.next_raw(&st.db).await? {
            for (id, body) in rows {
                if body.starts_with('{')
                    && body.contains("\"tenant_id\":")
                    && body.contains("\"tags\":")
                {
                    pager.push_raw(id, body);
                } else {
                    let doc: Obj = serde_json::from_str(&body)?;
                    pager.push_raw(id, Value::Object(render(doc)).to_string());
                }
            }
        }
        return Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            pager.finish_raw("ports", &url),
        )
            .into_response());
    }
    let reader = st.db.reader();
    let mut nets: HashMap<String, Obj> = HashMap::new();
    let empty = Obj::new();
    while let Some(batch) = pager.next_batch(&st.db).await? {
        if !admin {
            // The networks of this batch, for visibility and the policy target.
            let missing: HashSet<&str> = batch
                .iter()
                .map(|p| str_of(p, "network_id"))
                .filter(|n| !nets.contains_key(*n))
                .collect();
            for id in missing {
                if let Some(n) = db::get(reader, &networks::KIND, id).await? {
                    nets.insert(id.to_string(), n);
                }
            }
        }
        for p in batch {
            if fixed.as_ref().is_some_and(|f| !f.matches(&p)) {
                continue;
            }
            if let Some(m) = &macs {
                let have = str_of(&p, "mac_address").to_ascii_lowercase();
                if !m.contains(&have) {
                    continue;
                }
            }
            if admin {
                pager.push(render(p));
                continue;
            }
            let net = nets.get(str_of(&p, "network_id"));
            if !visible(&ctx, &p, net) {
                continue;
            }
            let target = networks::network_target(net.unwrap_or(&empty), &p);
            if !st.policy.check(&ctx, "get_port", &target) {
                continue;
            }
            let mut out = render(p);
            hidden.strip(&st, &ctx, &target, &mut out);
            pager.push(out);
        }
    }
    Ok(axum::Json(pager.finish("ports", &url)).into_response())
}

/// Loads a port and its network if the caller may see both, else 404 `PortNotFound`.
async fn load_visible<'c, E>(ex: E, st: &ApiState, ctx: &Context, id: &str) -> ApiResult<(Obj, Obj)>
where
    E: sqlx::Executor<'c, Database = sqlx::Any> + Copy,
{
    let port = db::get(ex, &KIND, id)
        .await?
        .ok_or_else(|| port_not_found(id))?;
    let net = db::get(ex, &networks::KIND, str_of(&port, "network_id"))
        .await?
        .unwrap_or_default();
    if !visible(ctx, &port, Some(&net))
        || !st
            .policy
            .check(ctx, "get_port", &networks::network_target(&net, &port))
    {
        return Err(port_not_found(id));
    }
    Ok((port, net))
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let (port, net) = load_visible(st.db.reader(), &st, &ctx, &id).await?;
    let out = query.trim(render_for(&st, &ctx, &net, &port));
    Ok(common::ok("port", Value::Object(out)))
}

/// Loads a port for writing (row-locked where the engine can) with the same visibility as a
/// read: invisible → 404, visible → the caller's action is then checked (403).
async fn load_for_write(
    st: &ApiState,
    ctx: &Context,
    tx: &mut AnyConnection,
    id: &str,
) -> ApiResult<(Obj, Obj)> {
    let port = db::get_for_update(tx, &st.db, &KIND, id)
        .await?
        .ok_or_else(|| port_not_found(id))?;
    let net = db::get(&mut *tx, &networks::KIND, str_of(&port, "network_id"))
        .await?
        .unwrap_or_default();
    if !visible(ctx, &port, Some(&net))
        || !st
            .policy
            .check(ctx, "get_port", &networks::network_target(&net, &port))
    {
        return Err(port_not_found(id));
    }
    Ok((port, net))
}

// ---------------------------------------------------------------------------------------------
// Update.

fn current_fixed(port: &Obj) -> Vec<(String, IpAddr, String)> {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let sid = e.get("subnet_id")?.as_str()?.to_string();
            let text = e.get("ip_address")?.as_str()?.to_string();
            let ip = text.parse().ok()?;
            Some((sid, ip, text))
        })
        .collect()
}

/// Neutron's `_get_changed_ips_for_port`: requested addresses already held are kept, a
/// subnet-only request reuses an address the port already has on that subnet, new ones are
/// allocated, and the rest is released — except auto (SLAAC) addresses, which stay.
async fn update_fixed_ips(
    st: &ApiState,
    tx: &mut AnyConnection,
    port: &Obj,
    reqs: &[FixedReq],
) -> ApiResult<Vec<Value>> {
    let net_id = str_of(port, "network_id").to_string();
    let port_id = str_of(port, "id").to_string();
    let owner = str_of(port, "device_owner").to_string();
    let mac = str_of(port, "mac_address").to_string();
    let subnets = network_subnets(tx, &net_id).await?;
    let wanted = explicit_reqs(tx, reqs, &subnets, &owner).await?;

    let mut remaining = current_fixed(port);
    let mut keep: Vec<(String, IpAddr, String)> = Vec::new();
    let mut add: Vec<IpReq> = Vec::new();
    let mut any_reqs = Vec::new();
    for w in wanted {
        match w {
            IpReq::Specific(s, ip) => match remaining.iter().position(|(_, have, _)| *have == ip) {
                Some(i) => keep.push(remaining.remove(i)),
                None => add.push(IpReq::Specific(s, ip)),
            },
            other => any_reqs.push(other),
        }
    }
    for w in any_reqs {
        if let IpReq::Any(group) = &w {
            let sid = group.first().map(|s| str_of(s, "id")).unwrap_or_default();
            if let Some(i) = remaining.iter().rposition(|(s, _, _)| s == sid) {
                keep.push(remaining.remove(i));
                continue;
            }
        }
        add.push(w);
    }
    let auto: HashSet<&str> = subnets
        .iter()
        .filter(|s| ipam::is_auto_address(s) && !is_router_interface_snat(&owner))
        .map(|s| str_of(s, "id"))
        .collect();
    for (sid, ip, text) in remaining {
        if auto.contains(sid.as_str()) {
            keep.push((sid, ip, text));
        } else {
            ipam::release_ip(tx, &net_id, &text).await?;
        }
    }
    // Keep the port's original order for addresses it keeps; new ones go last.
    let order = current_fixed(port);
    keep.sort_by_key(|(_, ip, _)| order.iter().position(|(_, o, _)| o == ip));
    let mut out: Vec<Value> = keep
        .into_iter()
        .map(|(sid, _, text)| json!({"subnet_id": sid, "ip_address": text}))
        .collect();
    out.extend(allocate(st, tx, &net_id, &port_id, &mac, &add).await?);
    Ok(out)
}

/// After a MAC change, EUI-64 addresses are derived again from the new MAC.
async fn renew_eui64(
    st: &ApiState,
    tx: &mut AnyConnection,
    port: &Obj,
    fixed: Vec<Value>,
) -> ApiResult<Vec<Value>> {
    let net_id = str_of(port, "network_id").to_string();
    let owner = str_of(port, "device_owner");
    let subnets = network_subnets(tx, &net_id).await?;
    let mut out = Vec::with_capacity(fixed.len());
    for e in fixed {
        let sid = e
            .get("subnet_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match subnets.iter().find(|s| str_of(s, "id") == sid) {
            Some(s) if ipam::is_auto_address(s) && !is_router_interface_snat(owner) => {
                let old = e
                    .get("ip_address")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                ipam::release_ip(tx, &net_id, old).await?;
                let ip = ipam::allocate_eui64(
                    st,
                    tx,
                    s,
                    &net_id,
                    str_of(port, "id"),
                    str_of(port, "mac_address"),
                )
                .await?;
                out.push(json!({"subnet_id": sid, "ip_address": ip}));
            }
            _ => out.push(e),
        }
    }
    Ok(out)
}

/// Sets the port's MAC column first so the unique constraint decides (MacAddressInUse), and
/// regenerates on request (`mac_address: null`, port-mac-address-regenerate).
async fn change_mac(
    st: &ApiState,
    tx: &mut AnyConnection,
    port: &Obj,
    requested: Option<&str>,
) -> ApiResult<String> {
    let net_id = str_of(port, "network_id");
    let id = str_of(port, "id");
    let set = |mac: String| {
        sqlx::query("UPDATE ports SET mac_address = $1 WHERE id = $2")
            .bind(mac)
            .bind(id.to_string())
    };
    if let Some(mac) = requested {
        return match set(mac.to_string()).execute(&mut *tx).await {
            Ok(_) => Ok(mac.to_string()),
            Err(e) if is_mac_conflict(&e) => Err(mac_in_use(net_id, mac)),
            Err(e) => Err(e.into()),
        };
    }
    for _ in 0..MAC_GENERATION_RETRIES {
        let mac = generate_mac(&st.cfg.base_mac);
        savepoint(st, tx, "SAVEPOINT port_mac").await?;
        match set(mac.clone()).execute(&mut *tx).await {
            Ok(_) => {
                savepoint(st, tx, "RELEASE SAVEPOINT port_mac").await?;
                return Ok(mac);
            }
            Err(e) if is_mac_conflict(&e) => {
                savepoint(st, tx, "ROLLBACK TO SAVEPOINT port_mac").await?;
                savepoint(st, tx, "RELEASE SAVEPOINT port_mac").await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::unavailable(
        "NetworkMacAddressGenerationFailure",
        format!("Unable to generate unique mac on network {net_id}."),
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
    let mut changes =
        attrs::prepare_update(&[STANDARD, ATTRS], common::parse_update(&body, "port")?)?;

    // Validate everything that needs no store access before opening the transaction.
    let mac_req: Option<Option<String>> = match changes.get("mac_address") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(v) => Some(Some(sanitize_mac("mac_address", v)?)),
    };
    let fixed_req = match changes.get("fixed_ips") {
        None => None,
        Some(Value::Null) => Some(Vec::new()),
        Some(v) => Some(parse_fixed_ips(v)?),
    };
    let pairs_req = match changes.get("allowed_address_pairs") {
        None => None,
        Some(v) => Some(parse_address_pairs(&st, v)?),
    };
    let dhcp_req = match changes.get("extra_dhcp_opts") {
        None => None,
        Some(v) => Some(parse_dhcp_opts(v)?),
    };
    if let Some(v) = changes.get("security_groups") {
        let sgs = parse_security_groups(v)?;
        changes.insert("security_groups".into(), Value::Array(sgs));
    }
    if let Some(v) = changes.get("binding:vnic_type") {
        parse_vnic_type(v)?;
    }
    if let Some(v) = changes.get("binding:profile") {
        let p = parse_profile(v)?;
        changes.insert("binding:profile".into(), p);
    }
    if changes.get("binding:host_id").is_some_and(Value::is_null) {
        changes.insert("binding:host_id".into(), json!(""));
    }

    let mut tx = st.db.begin().await?;
    let (mut port, net) = load_for_write(&st, &ctx, &mut tx, &id).await?;
    common::check_revision(expected, &port)?;
    common::enforce(
        &st,
        &ctx,
        "update_port",
        &networks::network_target(&net, &port),
    )?;
    let mut merged = port.clone();
    for (k, v) in &changes {
        if !matches!(
            k.as_str(),
            "mac_address" | "fixed_ips" | "allowed_address_pairs" | "extra_dhcp_opts"
        ) {
            merged.insert(k.clone(), v.clone());
        }
    }
    let target = networks::network_target(&net, &merged);
    common::enforce_attrs(&st, &ctx, "update_port", &policy_keys(&changes), &target)?;

    // Port security: the resulting port must not have security groups or address pairs
    // while port security is off.
    let ps = merged
        .get("port_security_enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    if !ps {
        if non_empty(changes.get("security_groups")) {
            return Err(sg_error());
        }
        if non_empty(merged.get("security_groups")) {
            return Err(ApiError::conflict(
                "PortSecurityPortHasSecurityGroup",
                "Port has security group associated. Cannot disable port security or IP address until security group is removed.",
            ));
        }
        let pairs_after = match &pairs_req {
            Some(p) => !p.is_empty(),
            None => non_empty(port.get("allowed_address_pairs")),
        };
        if pairs_after {
            return Err(pairs_error());
        }
    }

    let mut changed = false;
    for (k, v) in &changes {
        if matches!(
            k.as_str(),
            "mac_address" | "fixed_ips" | "allowed_address_pairs" | "extra_dhcp_opts"
        ) {
            continue;
        }
        if port.get(k) != Some(v) {
            port.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let mut mac_changed = false;
    if let Some(req) = &mac_req
        && req.as_deref() != Some(str_of(&port, "mac_address"))
    {
        // Neutron refuses MAC changes on bound ports (PortBound).
        let vif = str_of(&port, "binding:vif_type");
        if !matches!(vif, "unbound" | "binding_failed" | "") {
            return Err(ApiError::conflict(
                "PortBound",
                format!(
                    "Unable to complete operation on port {id}, port is already bound, port type: {vif}, old_mac {}, new_mac {}.",
                    str_of(&port, "mac_address"),
                    req.as_deref().unwrap_or("None")
                ),
            ));
        }
        let mac = change_mac(&st, &mut tx, &port, req.as_deref()).await?;
        port.insert("mac_address".into(), json!(mac));
        mac_changed = true;
        changed = true;
    }
    let mut addresses_changed = mac_changed;
    if let Some(reqs) = &fixed_req {
        let new = update_fixed_ips(&st, &mut tx, &port, reqs).await?;
        if port.get("fixed_ips") != Some(&Value::Array(new.clone())) {
            crate::floatingips::port_fixed_ips_changing(&st, &mut tx, &port, &new).await?;
            port.insert("fixed_ips".into(), Value::Array(new));
            changed = true;
            addresses_changed = true;
        }
    }
    if mac_changed {
        let fixed = port
            .get("fixed_ips")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let renewed = renew_eui64(&st, &mut tx, &port, fixed).await?;
        port.insert("fixed_ips".into(), Value::Array(renewed));
    }
    if let Some(pairs) = &pairs_req {
        let v = pairs_to_json(pairs, str_of(&port, "mac_address"));
        if port.get("allowed_address_pairs") != Some(&v) {
            port.insert("allowed_address_pairs".into(), v);
            changed = true;
        }
    }
    if let Some(opts) = &dhcp_req {
        let v = dhcp_merge(port.get("extra_dhcp_opts").unwrap_or(&Value::Null), opts);
        if port.get("extra_dhcp_opts") != Some(&v) {
            port.insert("extra_dhcp_opts".into(), v);
            changed = true;
        }
    }
    if changes.contains_key("security_groups") {
        crate::security_groups::prepare_port(&st, &mut tx, &ctx, &mut port, true).await?;
    }
    if changes.contains_key("binding:host_id")
        || changes.contains_key("binding:vnic_type")
        || changes.contains_key("binding:profile")
    {
        // Re-sending the same host is how Nova retries a failed binding, so the binding
        // result must be saved even when no attribute in the request changed.
        let before: Vec<Option<Value>> = BINDING_RESULT
            .iter()
            .map(|k| port.get(*k).cloned())
            .collect();
        let old_host = str_of(&port, "binding:host_id").to_string();
        crate::binding::bind_port(&st, &mut tx, &net, &mut port).await?;
        if BINDING_RESULT
            .iter()
            .zip(&before)
            .any(|(k, b)| port.get(*k) != b.as_ref())
        {
            changed = true;
        }
        if str_of(&port, "binding:host_id") != old_host {
            crate::provisioning::l2_down(&mut tx, &id).await?;
        }
    }
    if changed {
        db::save(&mut tx, &KIND, &mut port).await?;
    }
    if addresses_changed {
        // The DHCP agents must load the new entry before it counts as provisioned.
        crate::provisioning::setup_dhcp_block(&mut tx, &port).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "port",
        Value::Object(render_for(&st, &ctx, &net, &port)),
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
    let (port, net) = load_for_write(&st, &ctx, &mut tx, &id).await?;
    common::check_revision(expected, &port)?;
    common::enforce(
        &st,
        &ctx,
        "delete_port",
        &networks::network_target(&net, &port),
    )?;
    // L3: router and floating IP ports are refused, floating IPs disassociated.
    crate::floatingips::port_deleted(&st, &mut tx, &port).await?;
    // Addresses go with the port in the same transaction (the foreign key cascades too).
    ipam::release_port(&mut tx, &id).await?;
    db::remove(&mut tx, &KIND, &port).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing_and_validation() {
        assert_eq!(
            parse_mac("FA:16:3E:01:02:03").map(format_mac).as_deref(),
            Some("fa:16:3e:01:02:03")
        );
        assert_eq!(
            parse_mac("fa-16-3e-01-02-03").map(format_mac).as_deref(),
            Some("fa:16:3e:01:02:03")
        );
        assert_eq!(
            parse_mac("fa16.3e01.0203").map(format_mac).as_deref(),
            Some("fa:16:3e:01:02:03")
        );
        assert_eq!(
            parse_mac("fa163e010203").map(format_mac).as_deref(),
            Some("fa:16:3e:01:02:03")
        );
        for bad in [
            "",
            "fa:16:3e:01:02",
            "zz:16:3e:01:02:03",
            "fa:16:3e:01:02:03:04",
            "fa:16:3e:001:02:03",
        ] {
            assert!(parse_mac(bad).is_none(), "{bad}");
        }
        for bad in [
            "00:00:00:00:00:00",
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
        ] {
            assert!(sanitize_mac("mac_address", &json!(bad)).is_err(), "{bad}");
        }
        assert!(sanitize_mac("mac_address", &json!(5)).is_err());
    }

    #[test]
    fn generated_macs_keep_the_base_prefix() {
        for _ in 0..100 {
            let m = generate_mac("fa:16:3e:00:00:00");
            assert!(m.starts_with("fa:16:3e:"), "{m}");
            assert!(parse_mac(&m).is_some());
        }
        assert!(generate_mac("fa:16:3e:4f:00:00").starts_with("fa:16:3e:4f:"));
    }

    #[test]
    fn fixed_ips_validation() {
        let sid = uuid::Uuid::new_v4().to_string();
        let r = parse_fixed_ips(&json!([{"subnet_id": sid}, {"ip_address": "10.0.0.5"}])).unwrap();
        assert_eq!(r.len(), 2);
        let e = parse_fixed_ips(&json!([{"ip_address": "10.0.0.5"}, {"ip_address": "10.0.0.5"}]))
            .unwrap_err();
        assert!(
            e.message.contains("Duplicate IP address '10.0.0.5'"),
            "{}",
            e.message
        );
        let e = parse_fixed_ips(&json!([{"ip_address": "10.0.0.300"}])).unwrap_err();
        assert!(
            e.message.contains("is not a valid IP address"),
            "{}",
            e.message
        );
        let e = parse_fixed_ips(&json!(["x"])).unwrap_err();
        assert!(
            e.message.contains("Invalid data format for fixed IP"),
            "{}",
            e.message
        );
        let e = parse_fixed_ips(&json!([{"subnet_id": "nope"}])).unwrap_err();
        assert!(e.message.contains("is not a valid UUID"), "{}", e.message);
    }

    #[test]
    fn subnet_ip_checks() {
        let v4 = json!({"cidr": "10.0.0.0/24", "ip_version": 4});
        let v4 = v4.as_object().unwrap();
        assert!(subnet_has_ip(v4, "10.0.0.5".parse().unwrap(), ""));
        assert!(!subnet_has_ip(v4, "10.0.0.0".parse().unwrap(), ""));
        assert!(!subnet_has_ip(v4, "10.0.0.255".parse().unwrap(), ""));
        assert!(!subnet_has_ip(v4, "10.0.1.5".parse().unwrap(), ""));
        let v6 = json!({"cidr": "2001:db8::/64", "ip_version": 6});
        let v6 = v6.as_object().unwrap();
        assert!(!subnet_has_ip(
            v6,
            "2001:db8::".parse().unwrap(),
            "compute:nova"
        ));
        assert!(subnet_has_ip(
            v6,
            "2001:db8::".parse().unwrap(),
            "network:router_interface"
        ));
    }

    #[test]
    fn dhcp_opts_merge_like_neutron() {
        let cur = json!([{"opt_name": "a", "opt_value": "1", "ip_version": 4}, {"opt_name": "b", "opt_value": "2", "ip_version": 4}]);
        let req = parse_dhcp_opts(&json!([{"opt_name": "a", "opt_value": null}, {"opt_name": "b", "opt_value": "3"}, {"opt_name": "c", "opt_value": "4", "ip_version": 6}])).unwrap();
        let out = dhcp_merge(&cur, &req);
        assert_eq!(
            out,
            json!([{"opt_name": "b", "opt_value": "3", "ip_version": 4}, {"opt_name": "c", "opt_value": "4", "ip_version": 6}])
        );
        assert!(
            parse_dhcp_opts(&json!([{"opt_name": "a", "opt_value": "1", "ip_version": 5}]))
                .is_err()
        );
        assert!(parse_dhcp_opts(&json!([{"opt_value": "1"}])).is_err());
    }

    #[test]
    fn fixed_filter_parsing() {
        assert!(FixedFilter::parse(&["ip_address".into()]).is_err());
        let f = FixedFilter::parse(&[
            "ip_address=10.0.0.5".into(),
            "ip_address_substr=0.0.7".into(),
        ])
        .unwrap();
        let p = json!({"fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}]});
        assert!(!f.matches(p.as_object().unwrap()));
        let f = FixedFilter::parse(&["ip_address=10.0.0.5".into()]).unwrap();
        assert!(f.matches(p.as_object().unwrap()));
    }
}
