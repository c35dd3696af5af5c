//! `/v2.0/floatingips/{id}/port_forwardings`: floating IP port forwardings (Neutron's
//! `floating-ip-port-forwarding` and `floating-ip-port-forwarding-description`; single ports,
//! no ranges).
//!
//! Owns the port forwarding document: traffic to (floating IP, protocol, external port) goes
//! to (internal port's fixed IPv4 address, internal port). A floating IP is either associated
//! with a port or carries port forwardings, never both; its `router_id` is set by its first
//! forwarding (the router connecting the internal subnet to the floating network) and cleared
//! with its last. Uniqueness (one forwarding per floating IP, protocol and external port; per
//! protocol, internal port, address and port number) is two database constraints; the
//! explicit collision checks before them only give Neutron's messages.
//!
//! A forwarding is visible exactly when its floating IP is (else 404); every verb is then
//! decided by the policy engine (`<verb>_floatingip_port_forwarding`, Neutron's rules on the
//! parent floating IP's project), so a reader of the project may look but never change.
//!
//! Every request is one transaction holding the floating IP's row lock. This module must never
//! talk to an agent: the router's hosts are notified through the change log.

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, common, floatingips, l3_scheduler, networks, ports, subnets};

/// Storage of port forwardings (ports mirrored as text for the unique constraints).
pub const KIND: Kind = Kind {
    resource: "port_forwarding",
    table: "port_forwardings",
    columns: &[
        "floatingip_id",
        "internal_port_id",
        "internal_ip_address",
        "protocol",
        "external_port",
        "internal_port",
    ],
};

/// Attributes (neutron-lib `floating_ip_port_forwarding` plus `description`). Nothing has a
/// default, so everything but the description is required on POST.
const ATTRS: &[Attr] = &[
    attr("external_port", true, true, Ty::Int, D::Required),
    attr("internal_port", true, true, Ty::Int, D::Required),
    attr("internal_ip_address", true, true, Ty::Any, D::Required),
    attr("protocol", true, true, Ty::Any, D::Required),
    attr("internal_port_id", true, true, Ty::Uuid, D::Required),
    attr("description", true, true, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
];

/// neutron-lib's `IPTABLES_PROTOCOL_MAP` keys, the accepted protocols.
const PROTOCOLS: &[&str] = &["dccp", "icmp", "ipv6-icmp", "sctp", "tcp", "udp"];

/// Filters Neutron refuses on this collection (`FIELDS_NOT_SUPPORT_FILTER`).
const NO_FILTER: &[&str] = &["internal_ip_address", "internal_port"];

/// Routes of this sub-collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v2.0/floatingips/{id}/port_forwardings",
            get(list).post(create),
        )
        .route(
            "/v2.0/floatingips/{id}/port_forwardings/{pf_id}",
            get(show).put(update).delete(delete),
        )
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "PortForwardingNotFound",
        format!("Port Forwarding {id} could not be found."),
    )
}

/// Neutron's `BadRequest(resource='port_forwarding', msg=...)`.
fn bad_pf(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "BadRequest",
        format!("Bad port_forwarding request: {msg}."),
    )
}

/// The fields a floating IP shows of its forwardings (expose-port-forwarding-in-fip).
pub fn summary(pf: &Obj) -> Value {
    let mut o = Obj::new();
    for k in [
        "id",
        "internal_ip_address",
        "protocol",
        "internal_port",
        "external_port",
        "internal_port_id",
    ] {
        o.insert(k.into(), pf.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(o)
}

/// The API document (no project, no timestamps: Neutron's port forwarding has neither).
fn render(pf: &Obj) -> Obj {
    let mut o = Obj::new();
    for k in [
        "id",
        "external_port",
        "internal_port",
        "internal_ip_address",
        "protocol",
        "internal_port_id",
        "description",
    ] {
        o.insert(k.into(), pf.get(k).cloned().unwrap_or(Value::Null));
    }
    o
}

/// Range, IP and protocol checks of the attributes present in `obj`.
fn validate(obj: &mut Obj) -> ApiResult<()> {
    for k in ["external_port", "internal_port"] {
        if let Some(n) = obj.get(k).and_then(Value::as_i64) {
            if n < 1 {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for {k}. Reason: '{n}' is too small - must be at least '1'."
                )));
            }
            if n > 65535 {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for {k}. Reason: '{n}' is too large - must be no larger than '65535'."
                )));
            }
        }
    }
    if let Some(v) = obj.get("internal_ip_address") {
        let Some(ip) = v.as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
            return Err(ApiError::bad_request(format!(
                "Invalid input for internal_ip_address. Reason: '{}' is not a valid IP address.",
                attrs::display(v)
            )));
        };
        obj.insert("internal_ip_address".into(), json!(ip.to_string()));
    }
    if let Some(v) = obj.get("protocol")
        && !v.as_str().is_some_and(|p| PROTOCOLS.contains(&p))
    {
        let valid: Vec<String> = PROTOCOLS.iter().map(|p| format!("'{p}'")).collect();
        return Err(ApiError::bad_request(format!(
            "Invalid input for protocol. Reason: '{}' is not in [{}].",
            attrs::display(v),
            valid.join(", ")
        )));
    }
    Ok(())
}

/// Loads the parent floating IP (visible to the caller, row-locked), else 404.
async fn parent(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    fip_id: &str,
) -> ApiResult<Obj> {
    floatingips::load_for_write(st, tx, ctx, fip_id).await
}

/// The policy target of a port forwarding of `fip`: Neutron's rules name the parent floating
/// IP's project as `ext_parent:project_id` (neutron/api/v2/base.py fills `ext_parent_*` for
/// sub-resources); a port forwarding has no project of its own.
fn policy_target(fip: &Obj) -> Obj {
    let project = fip.get("project_id").cloned().unwrap_or(Value::Null);
    let mut t = Obj::new();
    t.insert("project_id".into(), project.clone());
    t.insert("ext_parent:project_id".into(), project);
    t.insert("floatingip_id".into(), json!(str_of(fip, "id")));
    t
}

/// Neutron's `_find_a_router_for_fip_port_forwarding` (with `_check_router_match`): the
/// router connecting the internal address's subnet to the floating network; the floating IP
/// must not already be served by another router.
async fn find_router(
    st: &ApiState,
    tx: &mut AnyConnection,
    ctx: &Context,
    fip: &Obj,
    pf: &Obj,
) -> ApiResult<String> {
    let port_id = str_of(pf, "internal_port_id");
    let Some(port) = db::get(&mut *tx, &ports::KIND, port_id).await? else {
        return Err(ApiError::not_found("Port", port_id));
    };
    let net = db::get(&mut *tx, &networks::KIND, str_of(&port, "network_id"))
        .await?
        .unwrap_or_default();
    if !(ctx.is_admin()
        || ctx.owns(str_of(&port, "project_id"))
        || ctx.owns(str_of(&net, "project_id")))
        || !st
            .policy
            .check(ctx, "get_port", &networks::network_target(&net, &port))
    {
        return Err(ApiError::not_found("Port", port_id));
    }
    let v4 = floatingips::v4_fixed_ips(&port);
    if v4.is_empty() {
        return Err(bad_pf(format!(
            "Requested internal port {port_id} must allocate an IPv4 address at least"
        )));
    }
    let want = str_of(pf, "internal_ip_address");
    let Some((subnet_id, _)) = v4.iter().find(|(_, ip)| ip == want) else {
        let list: Vec<String> = v4
            .iter()
            .map(|(s, ip)| format!("{{'subnet_id': '{s}', 'ip_address': '{ip}'}}"))
            .collect();
        return Err(bad_pf(format!(
            "Requested internal IP address {want} is not suitable for internal neutron port {port_id}, as its fixed_ips are [{}]",
            list.join(", ")
        )));
    };
    let subnet = db::get(&mut *tx, &subnets::KIND, subnet_id)
        .await?
        .ok_or_else(|| subnets::not_found(subnet_id))?;
    let ext = str_of(fip, "floating_network_id");
    let router = match floatingips::router_for(tx, &port, &subnet, ext).await {
        Ok(r) => r,
        Err(e) if e.kind == "ExternalGatewayForFloatingIPNotFound" => {
            return Err(bad_pf(format!(
                "External network {ext} is not reachable from subnet {subnet_id}. Cannot set Port forwarding for port {port_id} with Floating IP {}",
                str_of(fip, "id")
            )));
        }
        Err(e) => return Err(e),
    };
    if let Some(current) = fip.get("router_id").and_then(Value::as_str)
        && current != router
    {
        return Err(bad_pf(format!(
            "The Floating IP {} had been set on router {current}, the internal Neutron port {port_id} can not reach it",
            str_of(fip, "id")
        )));
    }
    Ok(router)
}

/// Neutron's `_check_port_collisions` for single ports: the external port on the floating
/// IP and protocol, and the internal port on the internal port/address/protocol, are free.
async fn check_collisions(
    tx: &mut AnyConnection,
    pf: &Obj,
    self_id: Option<&str>,
) -> ApiResult<()> {
    let same_fip = db::list(
        &mut *tx,
        &KIND,
        Some(("floatingip_id", str_of(pf, "floatingip_id"))),
    )
    .await?;
    let same_port = db::list(
        &mut *tx,
        &KIND,
        Some(("internal_port_id", str_of(pf, "internal_port_id"))),
    )
    .await?;
    let port_of = |o: &Obj, k: &str| o.get(k).and_then(Value::as_i64).unwrap_or(0);
    let collide = |key: &str, existing: i64, port: i64| {
        bad_pf(format!(
            "There is a port collision with the {key}. The following ranges collide: {existing}:{existing} and {port}:{port}"
        ))
    };
    for o in &same_port {
        if Some(str_of(o, "id")) == self_id
            || str_of(o, "protocol") != str_of(pf, "protocol")
            || str_of(o, "internal_ip_address") != str_of(pf, "internal_ip_address")
        {
            continue;
        }
        if port_of(o, "internal_port") == port_of(pf, "internal_port") {
            return Err(collide(
                "internal_port_range",
                port_of(o, "internal_port"),
                port_of(pf, "internal_port"),
            ));
        }
    }
    for o in &same_fip {
        if Some(str_of(o, "id")) == self_id || str_of(o, "protocol") != str_of(pf, "protocol") {
            continue;
        }
        if port_of(o, "external_port") == port_of(pf, "external_port") {
            return Err(collide(
                "external_port_range",
                port_of(o, "external_port"),
                port_of(pf, "external_port"),
            ));
        }
    }
    Ok(())
}

fn duplicate(pf: &Obj) -> ApiError {
    bad_pf(format!(
        "A duplicate port forwarding entry with same attributes already exists, conflicting values are {{'floatingip_id': '{}', 'external_port': {}, 'protocol': '{}'}}",
        str_of(pf, "floatingip_id"),
        pf.get("external_port").cloned().unwrap_or(Value::Null),
        str_of(pf, "protocol")
    ))
}

fn is_duplicate(e: &sqlx::Error) -> bool {
    db::is_unique_violation(e, Some("port_forwardings"))
}

/// Sets the floating IP's router (first forwarding) or clears it (last one gone).
async fn set_fip_router(
    tx: &mut AnyConnection,
    fip: &mut Obj,
    router: Option<&str>,
) -> ApiResult<()> {
    let want = router.map_or(Value::Null, |r| json!(r));
    if fip.get("router_id") != Some(&want) {
        fip.insert("router_id".into(), want);
        db::save(tx, &floatingips::KIND, fip).await?;
    }
    Ok(())
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(fip_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let item = common::parse_update(&body, "port_forwarding")?;
    let mut pf = attrs::prepare_create(&[ATTRS], item)?;
    validate(&mut pf)?;
    let mut tx = st.db.begin().await?;
    let mut fip = parent(&st, &mut tx, &ctx, &fip_id).await?;
    let target = policy_target(&fip);
    common::enforce(&st, &ctx, "create_floatingip_port_forwarding", &target)?;
    if let Some(p) = pf.get("project_id").and_then(Value::as_str)
        && p != str_of(&fip, "project_id")
        && !ctx.is_admin()
    {
        return Err(common::hidden_not_found());
    }
    pf.insert("floatingip_id".into(), json!(fip_id));
    pf.insert("project_id".into(), json!(str_of(&fip, "project_id")));
    check_collisions(&mut tx, &pf, None).await?;
    // _check_port_has_binding_floating_ip: the internal port has no floating IP of its own.
    let internal = str_of(&pf, "internal_port_id").to_string();
    if let Some(other) = db::list(&mut *tx, &floatingips::KIND, Some(("port_id", &internal)))
        .await?
        .into_iter()
        .next()
    {
        return Err(ApiError::conflict(
            "PortHasBindingFloatingIP",
            format!(
                "Cannot create port forwarding to floating IP {} ({}) with port {internal} using fixed IP {}, as that port already has a binding floating IP.",
                str_of(&other, "floating_ip_address"),
                str_of(&other, "id"),
                str_of(&pf, "internal_ip_address")
            ),
        ));
    }
    if fip.get("port_id").is_some_and(|v| !v.is_null()) {
        return Err(ApiError::conflict(
            "FloatingIPPortAlreadyAssociated",
            format!(
                "Cannot associate floating IP {} ({fip_id}) with port {internal} using fixed IP {}, as that fixed IP already has a floating IP on external network {}.",
                str_of(&fip, "floating_ip_address"),
                str_of(&pf, "internal_ip_address"),
                str_of(&fip, "floating_network_id")
            ),
        ));
    }
    let router = find_router(&st, &mut tx, &ctx, &fip, &pf).await?;
    set_fip_router(&mut tx, &mut fip, Some(&router)).await?;
    pf.remove("tenant_id");
    pf.insert("id".into(), json!(db::new_id()));
    match db::insert_raw(&mut tx, &KIND, &mut pf).await {
        Ok(()) => {}
        Err(e) if is_duplicate(&e) => return Err(duplicate(&pf)),
        Err(e) => return Err(e.into()),
    }
    db::log_create(&mut tx, &KIND, &pf).await?;
    l3_scheduler::notify_router(&mut tx, &router).await?;
    st.db.commit(tx).await?;
    Ok(common::created(
        "port_forwarding",
        Value::Object(render(&pf)),
    ))
}

/// neutron-lib's attribute map of the port forwarding, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "external_port", "protocol", "internal_port_id"],
    bools: &[],
    ints: &["external_port", "internal_port"],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(fip_id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    if let Some((k, _)) = query
        .filters
        .iter()
        .find(|(k, _)| NO_FILTER.contains(&k.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PortForwardingNotSupportFilterField",
            format!("Port Forwarding filter {k} is not supported."),
        ));
    }
    let mut conn = st.db.reader().acquire().await?;
    match db::get(&mut *conn, &floatingips::KIND, &fip_id).await? {
        Some(f) if floatingips::visible(&st, &ctx, &f) => {
            common::enforce(
                &st,
                &ctx,
                "get_floatingip_port_forwarding",
                &policy_target(&f),
            )?;
        }
        _ => return Err(floatingips::not_found(&fip_id)),
    }
    let items: Vec<Obj> = db::list(&mut *conn, &KIND, Some(("floatingip_id", &fip_id)))
        .await?
        .iter()
        .map(render)
        .collect();
    drop(conn);
    let url = format!(
        "{}/v2.0/floatingips/{fip_id}/port_forwardings",
        common::base_url(&headers)
    );
    Ok(axum::Json(query.respond(items, "port_forwardings", &url)).into_response())
}

async fn load(
    st: &ApiState,
    conn: &mut AnyConnection,
    ctx: &Context,
    fip_id: &str,
    pf_id: &str,
) -> ApiResult<(Obj, Obj)> {
    let fip = match db::get(&mut *conn, &floatingips::KIND, fip_id).await? {
        Some(f) if floatingips::visible(st, ctx, &f) => f,
        _ => return Err(floatingips::not_found(fip_id)),
    };
    match db::get(&mut *conn, &KIND, pf_id).await? {
        Some(pf) if str_of(&pf, "floatingip_id") == fip_id => Ok((fip, pf)),
        _ => Err(not_found(pf_id)),
    }
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((fip_id, pf_id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let mut conn = st.db.reader().acquire().await?;
    let (fip, pf) = load(&st, &mut conn, &ctx, &fip_id, &pf_id).await?;
    common::enforce(
        &st,
        &ctx,
        "get_floatingip_port_forwarding",
        &policy_target(&fip),
    )?;
    Ok(common::ok(
        "port_forwarding",
        Value::Object(query.trim(render(&pf))),
    ))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((fip_id, pf_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let mut changes =
        attrs::prepare_update(&[ATTRS], common::parse_update(&body, "port_forwarding")?)?;
    validate(&mut changes)?;
    let mut tx = st.db.begin().await?;
    let fip = parent(&st, &mut tx, &ctx, &fip_id).await?;
    let mut pf = match db::get_for_update(&mut tx, &st.db, &KIND, &pf_id).await? {
        Some(pf) if str_of(&pf, "floatingip_id") == fip_id => pf,
        _ => return Err(not_found(&pf_id)),
    };
    // A port forwarding has standard attributes (its description), so Neutron's
    // revision-if-match holds for it as for any other resource.
    // Policy first, then If-Match: Neutron enforces policy in the API layer and checks the
    // revision inside the plugin's transaction.
    common::enforce(
        &st,
        &ctx,
        "update_floatingip_port_forwarding",
        &policy_target(&fip),
    )?;
    common::check_revision(expected, &pf)?;
    let old_port = str_of(&pf, "internal_port_id").to_string();
    for (k, v) in &changes {
        pf.insert(k.clone(), v.clone());
    }
    let new_port = str_of(&pf, "internal_port_id").to_string();
    if new_port != old_port
        && let Some(other) = db::list(&mut *tx, &floatingips::KIND, Some(("port_id", &new_port)))
            .await?
            .into_iter()
            .next()
    {
        return Err(ApiError::conflict(
            "PortHasBindingFloatingIP",
            format!(
                "Cannot create port forwarding to floating IP {} ({}) with port {new_port} using fixed IP {}, as that port already has a binding floating IP.",
                str_of(&other, "floating_ip_address"),
                str_of(&other, "id"),
                str_of(&pf, "internal_ip_address")
            ),
        ));
    }
    // The internal address must be one of the internal port's (Neutron's
    // _check_port_forwarding_update), and reachable through the floating IP's router.
    find_router(&st, &mut tx, &ctx, &fip, &pf).await?;
    check_collisions(&mut tx, &pf, Some(&pf_id)).await?;
    let res = sqlx::query(
        "UPDATE port_forwardings SET internal_port_id = $1, internal_ip_address = $2, \
         protocol = $3, external_port = $4, internal_port = $5 WHERE id = $6",
    )
    .bind(str_of(&pf, "internal_port_id").to_string())
    .bind(str_of(&pf, "internal_ip_address").to_string())
    .bind(str_of(&pf, "protocol").to_string())
    .bind(pf.get("external_port").map(Value::to_string))
    .bind(pf.get("internal_port").map(Value::to_string))
    .bind(&pf_id)
    .execute(&mut *tx)
    .await;
    match res {
        Ok(_) => {}
        Err(e) if is_duplicate(&e) => return Err(duplicate(&pf)),
        Err(e) => return Err(e.into()),
    }
    db::save(&mut tx, &KIND, &mut pf).await?;
    if let Some(r) = fip
        .get("router_id")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        l3_scheduler::notify_router(&mut tx, &r).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("port_forwarding", Value::Object(render(&pf))))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((fip_id, pf_id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let expected = common::if_match(&headers)?;
    let mut tx = st.db.begin().await?;
    let mut fip = parent(&st, &mut tx, &ctx, &fip_id).await?;
    let pf = match db::get_for_update(&mut tx, &st.db, &KIND, &pf_id).await? {
        Some(pf) if str_of(&pf, "floatingip_id") == fip_id => pf,
        _ => return Err(not_found(&pf_id)),
    };
    common::enforce(
        &st,
        &ctx,
        "delete_floatingip_port_forwarding",
        &policy_target(&fip),
    )?;
    common::check_revision(expected, &pf)?;
    db::remove(&mut tx, &KIND, &pf).await?;
    let router = fip
        .get("router_id")
        .and_then(Value::as_str)
        .map(str::to_string);
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM port_forwardings WHERE floatingip_id = $1")
            .bind(&fip_id)
            .fetch_one(&mut *tx)
            .await?;
    if left == 0 && fip.get("port_id").is_none_or(Value::is_null) {
        set_fip_router(&mut tx, &mut fip, None).await?;
    }
    if let Some(r) = router {
        l3_scheduler::notify_router(&mut tx, &r).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::no_content())
}
