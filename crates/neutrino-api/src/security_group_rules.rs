//! `/v2.0/security-group-rules`: create (single and bulk), list, show, delete. Rules have no
//! update in Neutron.
//!
//! Owns rule validation and normalisation as Neutron does it (neutron/extensions/securitygroup.py
//! converters, `SecurityGroupDbMixin._validate_*`): protocol names and numbers, port ranges
//! (ports for TCP/UDP/SCTP/UDPLITE/DCCP, type/code for ICMP), the canonical forms (the whole
//! port range becomes no range, legacy ICMPv6 names become `ipv6-icmp`), the ethertype /
//! prefix / protocol consistency checks and the single-remote rule. Each rule is its own row;
//! duplicates are refused by a unique constraint on Neutron's rule key, never by a scan.
//! Every rule change bumps its group's revision (Neutron's `revises_on_change`) and is logged.
//!
//! Visibility follows Neutron's `sg_owner` policies: admins see every rule, others the rules of
//! groups their project owns. This module must never rewrite a group's other rules.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use neutrino_core::db::{self, Backend, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, address_groups, common, rbac, security_groups as groups};

/// Storage of security group rules.
pub const KIND: Kind = Kind {
    resource: "security_group_rule",
    table: "security_group_rules",
    columns: &[
        "security_group_id",
        "remote_group_id",
        "remote_address_group_id",
    ],
};

/// Rule attributes (securitygroup.py, security-groups-remote-address-group,
/// standard-attr-description). None is updatable: Neutron has no rule update.
const ATTRS: &[Attr] = &[
    attr("security_group_id", true, false, Ty::Str(36), D::Required),
    attr("remote_group_id", true, false, Ty::Any, D::Null),
    attr("direction", true, false, Ty::Any, D::Required),
    attr("protocol", true, false, Ty::Any, D::Null),
    attr("port_range_min", true, false, Ty::Any, D::Null),
    attr("port_range_max", true, false, Ty::Any, D::Null),
    attr("ethertype", true, false, Ty::Any, D::Str("IPv4")),
    attr("remote_ip_prefix", true, false, Ty::Any, D::Null),
    attr("remote_address_group_id", true, false, Ty::Any, D::Null),
    attr("description", true, false, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
];

/// Protocol names Neutron accepts (`IP_PROTOCOL_MAP`) with their numbers, in its order.
const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("hopopt", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ip", 0),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("icmpv6", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// Protocols whose rules may carry port ranges (`SG_PORT_PROTO_NUMS`).
const PORT_PROTOCOLS: &[u8] = &[33, 132, 6, 17, 136];

/// Protocols only meaningful with IPv6 (`_validate_ethertype_and_protocol`).
const IPV6_ONLY: &[&str] = &[
    "ipv6-encap",
    "ipv6-frag",
    "ipv6-icmp",
    "icmpv6",
    "ipv6-nonxt",
    "ipv6-opts",
    "ipv6-route",
    "41",
    "44",
    "58",
    "59",
    "60",
    "43",
];

/// Routes of this collection (merged by [`groups::routes`]).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/security-group-rules", get(list).post(create))
        .route("/v2.0/security-group-rules/{id}", get(show).delete(delete))
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn invalid(kind: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, kind, msg)
}

/// 404 `SecurityGroupRuleNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SecurityGroupRuleNotFound",
        format!("Security group rule {id} does not exist"),
    )
}

fn protocol_error(v: &Value) -> ApiError {
    let names: Vec<String> = PROTOCOLS.iter().map(|(n, _)| format!("'{n}'")).collect();
    invalid(
        "SecurityGroupRuleInvalidProtocol",
        format!(
            "Security group rule protocol {} not supported. Only protocol values (None, 'any', {}) and integer representations [0 to 255] are supported.",
            attrs::display(v),
            names.join(", ")
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Conversion and validation (pure).

/// `convert_protocol`: None/"any" → no protocol; numbers 0–255 kept as given (as text);
/// names lower-cased.
fn convert_protocol(v: &Value) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (0..=255).contains(&i) => Ok(Some(i.to_string())),
            _ => Err(protocol_error(v)),
        },
        Value::String(s) => {
            if s.is_empty() {
                return Ok(None);
            }
            if let Ok(i) = s.trim().parse::<i64>() {
                return if (0..=255).contains(&i) {
                    Ok(Some(s.clone()))
                } else {
                    Err(protocol_error(v))
                };
            }
            let lower = s.to_ascii_lowercase();
            if lower == "any" {
                Ok(None)
            } else if PROTOCOLS.iter().any(|(n, _)| *n == lower) {
                Ok(Some(lower))
            } else {
                Err(protocol_error(v))
            }
        }
        _ => Err(protocol_error(v)),
    }
}

/// The IP protocol number of a converted protocol.
fn protocol_number(p: &str) -> Option<i64> {
    PROTOCOLS
        .iter()
        .find(|(n, _)| *n == p)
        .map(|(_, num)| i64::from(*num))
        .or_else(|| p.trim().parse::<i64>().ok())
}

/// `convert_validate_port_value`: 0–65535 (as number or text), else
/// SecurityGroupInvalidPortValue.
fn convert_port(v: &Value) -> ApiResult<Option<i64>> {
    let n = match v {
        Value::Null => return Ok(None),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(p) if (0..=65535).contains(&p) => Ok(Some(p)),
        _ => Err(invalid(
            "SecurityGroupInvalidPortValue",
            format!("Invalid value for port {}", attrs::display(v)),
        )),
    }
}

fn convert_ethertype(v: &Value) -> ApiResult<&'static str> {
    match v.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("ipv4") => Ok("IPv4"),
        Some("ipv6") => Ok("IPv6"),
        _ => Err(invalid(
            "SecurityGroupRuleInvalidEtherType",
            format!(
                "Security group rule for ethertype '{}' not supported. Allowed values are ['IPv4', 'IPv6'].",
                attrs::display(v)
            ),
        )),
    }
}

/// A parsed `remote_ip_prefix`: the text Neutron stores (the address as given, with its
/// prefix length) and the network it denotes (`normalized_cidr`).
struct Prefix {
    text: String,
    normalized: String,
    v6: bool,
    any: bool,
}

fn mask_len_v4(mask: std::net::Ipv4Addr) -> Option<u8> {
    let m = u32::from(mask);
    let len = m.leading_ones();
    (m.checked_shl(len).unwrap_or(0) == 0).then_some(len as u8)
}

/// `convert_ip_prefix_to_cidr` (netaddr's `IPNetwork`): `a.b.c.d`, `a.b.c.d/len`,
/// `a.b.c.d/netmask`, IPv6 with or without length. Empty means none.
fn convert_prefix(v: &Value) -> ApiResult<Option<Prefix>> {
    let s = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.is_empty() => return Ok(None),
        Value::String(s) => s,
        other => {
            return Err(invalid(
                "InvalidCIDR",
                format!("Invalid CIDR {} given as IP prefix.", attrs::display(other)),
            ));
        }
    };
    let bad = || {
        invalid(
            "InvalidCIDR",
            format!("Invalid CIDR {s} given as IP prefix."),
        )
    };
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s.as_str(), None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        None => max,
        Some(l) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
            l.parse::<u8>().ok().filter(|n| *n <= max).ok_or_else(bad)?
        }
        Some(l) if addr.is_ipv4() => {
            let mask: std::net::Ipv4Addr = l.parse().map_err(|_| bad())?;
            mask_len_v4(mask).ok_or_else(bad)?
        }
        Some(_) => return Err(bad()),
    };
    let network = match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    };
    Ok(Some(Prefix {
        text: format!("{addr}/{len}"),
        normalized: format!("{network}/{len}"),
        v6: addr.is_ipv6(),
        any: len == 0,
    }))
}

/// A remote id as Neutron tests it (`if rule.get(key)`): empty strings count as unset.
fn remote_id(v: &Value) -> ApiResult<Option<String>> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(ApiError::invalid_input(format_args!(
            "'{}' is not a valid UUID",
            attrs::display(other)
        ))),
    }
}

/// A validated rule request: the document to store (without id and standard attributes)
/// and its duplicate key.
#[derive(Debug)]
pub(crate) struct NewRule {
    pub(crate) doc: Obj,
    pub(crate) key: String,
}

fn opt_json<T: Into<Value>>(v: Option<T>) -> Value {
    v.map(Into::into).unwrap_or(Value::Null)
}

/// Converts and validates one rule request (after the attribute map), in Neutron's order:
/// converters, then canonical forms, port range, prefix/ethertype, ethertype/protocol, and
/// the single-remote rule.
pub(crate) fn normalize(req: &Obj) -> ApiResult<NewRule> {
    let get = |k: &str| req.get(k).unwrap_or(&Value::Null);
    let sg_id = get("security_group_id").as_str().unwrap_or_default();
    let remote_group = remote_id(get("remote_group_id"))?;
    let direction = match get("direction").as_str() {
        Some(d @ ("ingress" | "egress")) => d,
        _ => {
            return Err(ApiError::bad_request(format!(
                "Invalid input for direction. Reason: {} is not in ['ingress', 'egress'].",
                attrs::display(get("direction"))
            )));
        }
    };
    let mut protocol = convert_protocol(get("protocol"))?;
    let mut min = convert_port(get("port_range_min"))?;
    let mut max = convert_port(get("port_range_max"))?;
    let ethertype = convert_ethertype(get("ethertype"))?;
    let prefix = convert_prefix(get("remote_ip_prefix"))?;
    let remote_ag = remote_id(get("remote_address_group_id"))?;

    // _make_canonical_ipv6_icmp_protocol: legacy IPv6 ICMP names and number 1 on IPv6.
    if ethertype == "IPv6" {
        match protocol.as_deref() {
            Some("icmp" | "icmpv6") => protocol = Some("ipv6-icmp".into()),
            Some("1") => protocol = Some("58".into()),
            _ => {}
        }
    }
    // _make_canonical_port_range: the whole range is no range.
    if min == Some(1) && max == Some(65535) {
        (min, max) = (None, None);
    }
    // _validate_port_range.
    if min.is_some() || max.is_some() {
        let Some(p) = protocol.as_deref() else {
            return Err(invalid(
                "SecurityGroupProtocolRequiredWithPorts",
                "Must also specify protocol if port range is given.",
            ));
        };
        let num = protocol_number(p).unwrap_or(-1);
        if PORT_PROTOCOLS.iter().any(|n| i64::from(*n) == num) {
            if min == Some(0) || max == Some(0) {
                return Err(invalid(
                    "SecurityGroupInvalidPortValue",
                    "Invalid value for port 0",
                ));
            }
            match (min, max) {
                (Some(a), Some(b)) if a <= b => {}
                _ => {
                    return Err(invalid(
                        "SecurityGroupInvalidPortRange",
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                    ));
                }
            }
        } else if num == 1 || num == 58 {
            for (v, field, attr) in [
                (min, "type", "port_range_min"),
                (max, "code", "port_range_max"),
            ] {
                if let Some(v) = v
                    && !(0..=255).contains(&v)
                {
                    return Err(invalid(
                        "SecurityGroupInvalidIcmpValue",
                        format!(
                            "Invalid value for ICMP {field} ({attr}) {v}. It must be 0 to 255."
                        ),
                    ));
                }
            }
            if min.is_none()
                && let Some(code) = max
            {
                return Err(invalid(
                    "SecurityGroupMissingIcmpType",
                    format!(
                        "ICMP code (port-range-max) {code} is provided but ICMP type (port-range-min) is missing."
                    ),
                ));
            }
        } else {
            return Err(invalid(
                "SecurityGroupInvalidProtocolForPort",
                format!(
                    "Ports cannot be specified for protocol {num}. Ports are only supported for DCCP, SCTP, TCP, UDP, UDPLITE."
                ),
            ));
        }
    }
    // _validate_ip_prefix.
    if let Some(p) = &prefix
        && (p.v6 != (ethertype == "IPv6"))
    {
        return Err(invalid(
            "SecurityGroupRuleParameterConflict",
            format!(
                "Conflicting value ethertype {ethertype} for CIDR {}",
                attrs::display(get("remote_ip_prefix"))
            ),
        ));
    }
    // _validate_ethertype_and_protocol.
    if let Some(p) = protocol.as_deref()
        && ethertype == "IPv4"
        && IPV6_ONLY.contains(&p)
    {
        return Err(invalid(
            "SecurityGroupEthertypeConflictWithProtocol",
            format!("Invalid ethertype {ethertype} for protocol {p}."),
        ));
    }
    // _validate_multiple_remote_entites.
    let remotes = usize::from(prefix.is_some())
        + usize::from(remote_group.is_some())
        + usize::from(remote_ag.is_some());
    if remotes > 1 {
        return Err(invalid(
            "SecurityGroupMultipleRemoteEntites",
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id may be provided.",
        ));
    }

    // Neutron's _rule_to_key: protocol by number, "any" prefixes and no prefix alike.
    let none = || "+".to_string();
    let key = [
        direction.to_string(),
        ethertype.to_string(),
        max.map(|v| v.to_string()).unwrap_or_else(none),
        min.map(|v| v.to_string()).unwrap_or_else(none),
        protocol
            .as_deref()
            .map(|p| {
                protocol_number(p)
                    .map(|n| n.to_string())
                    .unwrap_or(p.into())
            })
            .unwrap_or_else(none),
        remote_group.clone().unwrap_or_else(none),
        remote_ag.clone().unwrap_or_else(none),
        prefix
            .as_ref()
            .filter(|p| !p.any)
            .map(|p| p.text.clone())
            .unwrap_or_else(none),
    ]
    .join("_");

    let mut doc = Obj::new();
    doc.insert("security_group_id".into(), json!(sg_id));
    doc.insert("direction".into(), json!(direction));
    doc.insert("ethertype".into(), json!(ethertype));
    doc.insert("protocol".into(), opt_json(protocol));
    doc.insert("port_range_min".into(), opt_json(min));
    doc.insert("port_range_max".into(), opt_json(max));
    doc.insert(
        "remote_ip_prefix".into(),
        opt_json(prefix.as_ref().map(|p| p.text.clone())),
    );
    doc.insert(
        "normalized_cidr".into(),
        opt_json(prefix.as_ref().map(|p| p.normalized.clone())),
    );
    doc.insert("remote_group_id".into(), opt_json(remote_group));
    doc.insert("remote_address_group_id".into(), opt_json(remote_ag));
    doc.insert(
        "description".into(),
        req.get("description").cloned().unwrap_or(json!("")),
    );
    if let Some(p) = req.get("project_id") {
        doc.insert("project_id".into(), p.clone());
    }
    Ok(NewRule { doc, key })
}

// ---------------------------------------------------------------------------------------------
// Storage.

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Inserts a validated rule: fills id, owner, standard attributes and the default-group flag,
/// refuses a duplicate through the unique key (SecurityGroupRuleExists, naming the existing
/// rule), and logs the creation. Does not touch the group row.
async fn insert(
    tx: &mut AnyConnection,
    rule: NewRule,
    project: &str,
    default_group: bool,
) -> ApiResult<Obj> {
    let NewRule { mut doc, key } = rule;
    let ts = db::now();
    doc.insert("id".into(), json!(db::new_id()));
    doc.insert("project_id".into(), json!(project));
    doc.insert("tenant_id".into(), json!(project));
    doc.insert("belongs_to_default_sg".into(), json!(default_group));
    doc.insert("revision_number".into(), json!(1));
    doc.insert("created_at".into(), json!(ts));
    doc.insert("updated_at".into(), json!(ts));
    let sg_id = str_of(&doc, "security_group_id").to_string();
    let remote = doc
        .get("remote_group_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let res = sqlx::query(
        "INSERT INTO security_group_rules (id, project_id, revision_number, body, \
         security_group_id, remote_group_id, remote_address_group_id, rule_key) \
         VALUES ($1, $2, 1, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(str_of(&doc, "id"))
    .bind(project)
    .bind(Value::Object(doc.clone()).to_string())
    .bind(&sg_id)
    .bind(remote.as_deref())
    .bind(doc.get("remote_address_group_id").and_then(Value::as_str))
    .bind(&key)
    .execute(&mut *tx)
    .await
    .map_err(|e| {
        if db::is_fk_violation(&e) {
            // The group or the remote group was deleted meanwhile.
            groups::not_found(remote.as_deref().unwrap_or(&sg_id))
        } else {
            ApiError::from(e)
        }
    })?;
    if res.rows_affected() == 0 {
        let existing: Option<String> = sqlx::query_scalar(
            "SELECT id FROM security_group_rules WHERE security_group_id = $1 AND rule_key = $2",
        )
        .bind(&sg_id)
        .bind(&key)
        .fetch_optional(&mut *tx)
        .await?;
        return Err(ApiError::conflict(
            "SecurityGroupRuleExists",
            format!(
                "Security group rule already exists. Rule id is {}.",
                existing.unwrap_or_default()
            ),
        ));
    }
    db::log_create(tx, &KIND, &doc).await?;
    Ok(doc)
}

/// Creates the rules Neutron's default templates give a new group: egress IPv4 and IPv6 to
/// anywhere, and for a project's default group also ingress IPv4 and IPv6 from members of
/// the group itself. Returns the created rules.
pub(crate) async fn create_template(
    tx: &mut AnyConnection,
    sg: &Obj,
    default_group: bool,
) -> ApiResult<Vec<Obj>> {
    let sg_id = str_of(sg, "id");
    let project = str_of(sg, "project_id");
    let mut specs = Vec::new();
    if default_group {
        specs.push(("ingress", "IPv4", Some(sg_id)));
        specs.push(("ingress", "IPv6", Some(sg_id)));
    }
    specs.push(("egress", "IPv4", None));
    specs.push(("egress", "IPv6", None));
    let mut out = Vec::with_capacity(specs.len());
    for (direction, ethertype, remote) in specs {
        let mut req = Obj::new();
        req.insert("security_group_id".into(), json!(sg_id));
        req.insert("direction".into(), json!(direction));
        req.insert("ethertype".into(), json!(ethertype));
        req.insert("remote_group_id".into(), opt_json(remote));
        out.push(insert(tx, normalize(&req)?, project, default_group).await?);
    }
    Ok(out)
}

/// The stored bodies (wire form) of a group's rules, by one indexed query.
pub(crate) async fn raw_of_group(conn: &mut AnyConnection, sg_id: &str) -> ApiResult<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT body FROM security_group_rules WHERE security_group_id = $1 ORDER BY id",
    )
    .bind(sg_id)
    .fetch_all(&mut *conn)
    .await?)
}

/// The stored bodies of a group's rules joined with commas (a JSON array's contents), built
/// by the database in one row: a group of 10,000 rules costs one round trip and no per-row
/// decoding.
pub(crate) async fn joined_of_group(
    st: &ApiState,
    conn: &mut AnyConnection,
    sg_id: &str,
) -> ApiResult<String> {
    let sql = match st.db.backend() {
        Backend::Postgres => {
            "SELECT string_agg(body, ',' ORDER BY id) FROM security_group_rules \
             WHERE security_group_id = $1"
        }
        Backend::Sqlite => {
            "SELECT group_concat(body, ',') FROM (SELECT body FROM security_group_rules \
             WHERE security_group_id = $1 ORDER BY id)"
        }
    };
    let joined: Option<String> = sqlx::query_scalar(sql)
        .bind(sg_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(joined.unwrap_or_default())
}

/// Bumps a group's revision after a rule change (Neutron's `revises_on_change`). The row is
/// locked only now, with PostgreSQL's `FOR NO KEY UPDATE`, which does not wait for other
/// transactions' foreign-key share locks, so the serialised part is this update and the
/// commit. A group deleted meanwhile has taken the rule with it; nothing to bump.
async fn bump_group(st: &ApiState, tx: &mut AnyConnection, sg_id: &str) -> ApiResult<()> {
    let lock = match st.db.backend() {
        Backend::Postgres => " FOR NO KEY UPDATE",
        Backend::Sqlite => "",
    };
    let sql = format!("SELECT body FROM security_groups WHERE id = $1{lock}");
    let body: Option<String> = sqlx::query_scalar(&sql)
        .bind(sg_id)
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(body) = body {
        let mut sg: Obj = serde_json::from_str(&body)?;
        db::save(tx, &groups::KIND, &mut sg).await?;
    }
    Ok(())
}

async fn is_default_group(conn: &mut AnyConnection, sg_id: &str) -> ApiResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM default_security_group WHERE security_group_id = $1",
    )
    .bind(sg_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// The policy target of a rule: the rule plus its group's owner (`sg_owner`).
fn target(rule: &Obj, sg_project: &str) -> Obj {
    let mut t = rule.clone();
    t.insert("security_group:project_id".into(), json!(sg_project));
    t.insert("security_group:tenant_id".into(), json!(sg_project));
    t
}

/// Checks that a remote address group exists and is usable by `project` (Neutron's
/// `check_address_group` with the rule's project): its own, shared with it, or any for admins.
async fn check_address_group(
    conn: &mut AnyConnection,
    ctx: &Context,
    id: &str,
    project: &str,
) -> ApiResult<()> {
    let usable = match db::get(&mut *conn, &address_groups::KIND, id).await? {
        None => false,
        Some(ag) => {
            ctx.is_admin()
                || str_of(&ag, "project_id") == project
                || rbac::grants(&ag, rbac::SHARED, project)
        }
    };
    if usable {
        Ok(())
    } else {
        Err(address_groups::not_found(id))
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "security_group_rule", "security_group_rules")?;
    let mut new = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[ATTRS], item)?;
        common::owner_for_create(&ctx, &mut obj)?;
        new.push(normalize(&obj)?);
    }
    // Native bulk create: one group, one project, no duplicates within the request.
    let Some(first) = new.first() else {
        return Err(ApiError::bad_request("Resources required"));
    };
    let sg_id = str_of(&first.doc, "security_group_id").to_string();
    let project = str_of(&first.doc, "project_id").to_string();
    if new
        .iter()
        .any(|r| str_of(&r.doc, "security_group_id") != sg_id)
    {
        return Err(invalid(
            "SecurityGroupNotSingleGroupRules",
            "Only allowed to update rules for one security profile at a time",
        ));
    }
    if new.iter().any(|r| str_of(&r.doc, "project_id") != project) {
        return Err(invalid(
            "SecurityGroupRulesNotSingleProject",
            "Multiple project_ids in bulk security group rule create not allowed",
        ));
    }
    for (i, r) in new.iter().enumerate() {
        if new[..i].iter().any(|o| o.key == r.key) {
            return Err(ApiError::conflict(
                "DuplicateSecurityGroupRuleInPost",
                "Duplicate Security Group Rule in POST.",
            ));
        }
    }

    let mut tx = st.db.begin().await?;
    // The group is read without a lock: inserting rules only takes the foreign key's share
    // lock on it, so rules for one group are created concurrently (PostgreSQL); the revision
    // bump at the end is the only serialised step.
    let sg = match db::get(&mut *tx, &groups::KIND, &sg_id).await? {
        Some(sg) => sg,
        None => return Err(groups::not_found(&sg_id)),
    };
    let sg_project = str_of(&sg, "project_id").to_string();
    let (visible, _) = groups::visibility(&ctx, &sg);
    if !visible {
        return Err(groups::not_found(&sg_id));
    }
    for r in &new {
        common::enforce(
            &st,
            &ctx,
            "create_security_group_rule",
            &target(&r.doc, &sg_project),
        )?;
    }
    for r in &new {
        if let Some(remote) = r.doc.get("remote_group_id").and_then(Value::as_str)
            && remote != sg_id
        {
            let usable = match db::get(&mut *tx, &groups::KIND, remote).await? {
                None => false,
                Some(g) => {
                    ctx.is_admin()
                        || str_of(&g, "project_id") == project
                        || groups::shared_with(&g, &project)
                }
            };
            if !usable {
                return Err(groups::not_found(remote));
            }
        }
        if let Some(ag) = r.doc.get("remote_address_group_id").and_then(Value::as_str) {
            check_address_group(&mut tx, &ctx, ag, &project).await?;
        }
    }
    let n = i64::try_from(new.len()).unwrap_or(i64::MAX);
    common::check_quota(&st, &mut tx, "security_group_rule", &KIND, &project, n).await?;
    let default_group = is_default_group(&mut tx, &sg_id).await?;
    let mut out = Vec::with_capacity(new.len());
    for r in new {
        out.push(Value::Object(
            insert(&mut tx, r, &project, default_group).await?,
        ));
    }
    bump_group(&st, &mut tx, &sg_id).await?;
    st.db.commit(tx).await?;
    Ok(if req.bulk {
        common::created("security_group_rules", Value::Array(out))
    } else {
        common::created(
            "security_group_rule",
            out.into_iter().next().unwrap_or_default(),
        )
    })
}

/// neutron-lib's attribute map of the security group rule, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "security_group_id",
        "remote_group_id",
        "direction",
        "protocol",
        "port_range_min",
        "port_range_max",
        "ethertype",
        "remote_ip_prefix",
        "tenant_id",
    ],
    bools: &[],
    ints: &[],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    groups::ensure_default_for_list(&st, &ctx, &query).await?;
    let mut conn = st.db.reader().acquire().await?;
    let single_group = match query.filter("security_group_id") {
        Some([g]) => Some(g.clone()),
        _ => None,
    };
    // (group owner, body) of the candidate rules: admins every rule, others those of groups
    // their project owns (Neutron's get_security_group_rule: admin or sg_owner).
    let mut sql = String::from(
        "SELECT g.project_id, r.body FROM security_group_rules r \
         JOIN security_groups g ON g.id = r.security_group_id WHERE 1 = 1",
    );
    let mut binds = Vec::new();
    if !ctx.is_admin() {
        binds.push(ctx.project().to_string());
        sql.push_str(&format!(" AND g.project_id = ${}", binds.len()));
    }
    if let Some(g) = single_group {
        binds.push(g);
        sql.push_str(&format!(" AND r.security_group_id = ${}", binds.len()));
    }
    sql.push_str(" ORDER BY r.id");
    let mut q = sqlx::query(&sql);
    for b in &binds {
        q = q.bind(b);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut allowed: std::collections::HashMap<String, bool> = Default::default();
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let owner: String = r.try_get(0)?;
        let body: String = r.try_get(1)?;
        let rule: Obj = serde_json::from_str(&body)?;
        // The rule depends only on the group's owner: evaluate it once per owner.
        let ok = match allowed.get(&owner) {
            Some(ok) => *ok,
            None => {
                let ok = st
                    .policy
                    .check(&ctx, "get_security_group_rule", &target(&rule, &owner));
                allowed.insert(owner.clone(), ok);
                ok
            }
        };
        if ok {
            items.push(rule);
        }
    }
    let url = format!("{}/v2.0/security-group-rules", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "security_group_rules", &url)).into_response())
}

/// Loads a rule and its group's owner if the caller may read it; 404 otherwise.
async fn get_readable(
    st: &ApiState,
    conn: &mut AnyConnection,
    ctx: &Context,
    id: &str,
    lock: bool,
) -> ApiResult<(Obj, String)> {
    let rule = if lock {
        db::get_for_update(&mut *conn, &st.db, &KIND, id).await?
    } else {
        db::get(&mut *conn, &KIND, id).await?
    };
    let Some(rule) = rule else {
        return Err(not_found(id));
    };
    let owner: Option<String> =
        sqlx::query_scalar("SELECT project_id FROM security_groups WHERE id = $1")
            .bind(str_of(&rule, "security_group_id"))
            .fetch_optional(&mut *conn)
            .await?;
    let owner = owner.unwrap_or_default();
    if !st
        .policy
        .check(ctx, "get_security_group_rule", &target(&rule, &owner))
    {
        return Err(not_found(id));
    }
    Ok((rule, owner))
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let mut conn = st.db.reader().acquire().await?;
    let (rule, _) = get_readable(&st, &mut conn, &ctx, &id, false).await?;
    Ok(common::ok(
        "security_group_rule",
        Value::Object(query.trim(rule)),
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
    let (rule, owner) = get_readable(&st, &mut tx, &ctx, &id, true).await?;
    common::check_revision(expected, &rule)?;
    common::enforce(
        &st,
        &ctx,
        "delete_security_group_rule",
        &target(&rule, &owner),
    )?;
    let sg_id = str_of(&rule, "security_group_id").to_string();
    db::remove(&mut tx, &KIND, &rule).await?;
    bump_group(&st, &mut tx, &sg_id).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> ApiResult<NewRule> {
        let mut o = v.as_object().cloned().unwrap_or_default();
        o.entry("security_group_id").or_insert(json!("sg"));
        o.entry("ethertype").or_insert(json!("IPv4"));
        normalize(&o)
    }

    fn err(v: Value) -> (String, String) {
        let e = rule(v).unwrap_err();
        (e.kind.to_string(), e.message)
    }

    #[test]
    fn protocols_are_normalised_like_neutron() {
        let r = rule(json!({"direction": "ingress", "protocol": "TCP"})).unwrap();
        assert_eq!(r.doc["protocol"], json!("tcp"));
        let r = rule(json!({"direction": "ingress", "protocol": 17})).unwrap();
        assert_eq!(r.doc["protocol"], json!("17"));
        let r = rule(json!({"direction": "ingress", "protocol": "any"})).unwrap();
        assert_eq!(r.doc["protocol"], Value::Null);
        let r =
            rule(json!({"direction": "ingress", "protocol": "icmp", "ethertype": "ipv6"})).unwrap();
        assert_eq!(r.doc["protocol"], json!("ipv6-icmp"));
        assert_eq!(r.doc["ethertype"], json!("IPv6"));
        assert_eq!(
            err(json!({"direction": "ingress", "protocol": "bad_protocol_name"})).0,
            "SecurityGroupRuleInvalidProtocol"
        );
        assert_eq!(
            err(json!({"direction": "ingress", "protocol": 256})).0,
            "SecurityGroupRuleInvalidProtocol"
        );
        // Names and numbers are the same rule.
        let a = rule(json!({"direction": "ingress", "protocol": "tcp"})).unwrap();
        let b = rule(json!({"direction": "ingress", "protocol": "6"})).unwrap();
        assert_eq!(a.key, b.key);
    }

    #[test]
    fn port_ranges_follow_neutron() {
        for (min, max, msg) in [
            (json!(-16), json!(80), "Invalid value for port -16"),
            (
                json!(80),
                json!(79),
                "port_range_min must be <= port_range_max",
            ),
            (json!(80), json!(65536), "Invalid value for port 65536"),
            (
                Value::Null,
                json!(6),
                "port_range_min must be <= port_range_max",
            ),
            (json!(0), json!(6), "Invalid value for port 0"),
        ] {
            let (_, m) = err(json!({"direction": "ingress", "protocol": "tcp",
                "port_range_min": min, "port_range_max": max}));
            assert!(m.contains(msg), "{m}");
        }
        for (min, max, msg) in [
            (json!(1), json!(256), "Invalid value for ICMP code"),
            (json!(-1), json!(25), "Invalid value"),
            (
                Value::Null,
                json!(6),
                "ICMP type (port-range-min) is missing",
            ),
            (json!(300), json!(1), "Invalid value for ICMP type"),
        ] {
            let (_, m) = err(json!({"direction": "ingress", "protocol": "icmp",
                "port_range_min": min, "port_range_max": max}));
            assert!(m.contains(msg), "{m}");
        }
        let (k, _) = err(json!({"direction": "ingress", "port_range_min": 80}));
        assert_eq!(k, "SecurityGroupProtocolRequiredWithPorts");
        let (k, m) = err(json!({"direction": "ingress", "protocol": "gre", "port_range_min": 80}));
        assert_eq!(k, "SecurityGroupInvalidProtocolForPort");
        assert!(m.contains("protocol 47"), "{m}");
        let r = rule(json!({"direction": "ingress", "protocol": "tcp",
            "port_range_min": 1, "port_range_max": 65535}))
        .unwrap();
        assert_eq!(r.doc["port_range_min"], Value::Null);
        let r = rule(json!({"direction": "ingress", "protocol": "tcp",
            "port_range_min": "80", "port_range_max": 80}))
        .unwrap();
        assert_eq!(r.doc["port_range_min"], json!(80));
    }

    #[test]
    fn prefixes_ethertypes_and_remotes() {
        let r = rule(json!({"direction": "ingress", "remote_ip_prefix": "10.0.0.5/24"})).unwrap();
        assert_eq!(r.doc["remote_ip_prefix"], json!("10.0.0.5/24"));
        assert_eq!(r.doc["normalized_cidr"], json!("10.0.0.0/24"));
        let r = rule(json!({"direction": "ingress", "remote_ip_prefix": "10.0.0.5"})).unwrap();
        assert_eq!(r.doc["remote_ip_prefix"], json!("10.0.0.5/32"));
        let r = rule(json!({"direction": "ingress", "ethertype": "IPv6",
            "remote_ip_prefix": "2001:DB8::/32"}))
        .unwrap();
        assert_eq!(r.doc["remote_ip_prefix"], json!("2001:db8::/32"));
        for bad in ["192.168.1./24", "192.168.1.1/33", "bad_prefix", "256"] {
            assert_eq!(
                err(json!({"direction": "ingress", "remote_ip_prefix": bad})).0,
                "InvalidCIDR"
            );
        }
        let (k, m) = err(json!({"direction": "ingress", "ethertype": "IPv6",
            "remote_ip_prefix": "10.100.0.0/16"}));
        assert_eq!(k, "SecurityGroupRuleParameterConflict");
        assert!(m.contains("Conflicting value ethertype"), "{m}");
        let (k, _) = err(
            json!({"direction": "ingress", "remote_ip_prefix": "10.0.0.0/8",
            "remote_group_id": "x"}),
        );
        assert_eq!(k, "SecurityGroupMultipleRemoteEntites");
        let (k, _) = err(json!({"direction": "ingress", "ethertype": "bad_ethertype"}));
        assert_eq!(k, "SecurityGroupRuleInvalidEtherType");
        let (k, _) = err(json!({"direction": "ingress", "protocol": "ipv6-icmp"}));
        assert_eq!(k, "SecurityGroupEthertypeConflictWithProtocol");
        let (k, _) = err(json!({"direction": "sideways"}));
        assert_eq!(k, "HTTPBadRequest");
        // "Any" prefixes and no prefix are the same rule.
        let a = rule(json!({"direction": "egress", "remote_ip_prefix": "0.0.0.0/0"})).unwrap();
        let b = rule(json!({"direction": "egress"})).unwrap();
        assert_eq!(a.key, b.key);
    }
}
