//! `/v2.0/address-groups` (address-group extension): create, list, show, update, delete, and
//! the member actions `add_addresses` / `remove_addresses`.
//!
//! Owns the address group document: a name, a description and a set of CIDRs, stored
//! normalised (`10.0.0.5/24` becomes `10.0.0.0/24`, as Neutron's `_process_requested_addresses`
//! does) and sorted. Security group rules reference groups through `remote_address_group_id`;
//! the security group module checks references with [`visible`] and [`KIND`]. Sharing is RBAC
//! only (`shared` is neither settable nor rendered, as in Neutron). Every address change is
//! one transaction on the locked group row and bumps its revision. This module must never
//! program hosts: agents follow the change log.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Router};
use ipnet::IpNet;
use serde_json::{Value, json};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, common, rbac};

/// Storage of address groups.
pub const KIND: Kind = Kind {
    resource: "address_group",
    table: "address_groups",
    columns: &[],
};

/// Who depends on an address group being shared: the owners of security group rules that
/// reference it (Neutron's `get_bound_project_ids`).
pub const BOUND: rbac::Bound = rbac::Bound::Query(
    "SELECT DISTINCT project_id FROM security_group_rules WHERE remote_address_group_id = $1",
);

/// Address group attributes (neutron-lib api/definitions/address_group.py).
const ATTRS: &[Attr] = &[
    attr("name", true, true, Ty::Str(255), D::Str("")),
    attr("description", true, true, Ty::Str(1024), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
    attr("addresses", true, false, Ty::Any, D::None),
];

/// The keys of a rendered group.
const OUTPUT: &[&str] = &[
    "id",
    "name",
    "description",
    "project_id",
    "addresses",
    "created_at",
    "updated_at",
    "revision_number",
];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/address-groups", get(list).post(create))
        .route(
            "/v2.0/address-groups/{id}",
            get(show).put(update).delete(delete),
        )
        .route(
            "/v2.0/address-groups/{id}/add_addresses",
            put(add_addresses),
        )
        .route(
            "/v2.0/address-groups/{id}/remove_addresses",
            put(remove_addresses),
        )
}

/// 404 `AddressGroupNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "AddressGroupNotFound",
        format!("Address group {id} could not be found."),
    )
}

/// 409 `AddressGroupInUse`.
pub fn in_use(id: &str) -> ApiError {
    ApiError::conflict(
        "AddressGroupInUse",
        format!("Address group {id} is in use on one or more security group rules."),
    )
}

/// Whether `ctx` may see `group` (admin, owner, or shared with the caller's project); the
/// check security group rules use for `remote_address_group_id`.
pub fn visible(ctx: &Context, group: &Obj) -> bool {
    rbac::visible(ctx, group, &[rbac::SHARED])
}

/// Neutron's default address group rules, for as long as the policy file has none of its own
/// (the defaults in policy.rs do not carry them yet): readers of the project or anyone the
/// group is shared with may read, members of the project may write.
fn allowed(st: &ApiState, ctx: &Context, action: &str, group: &Obj) -> bool {
    let view = rbac::caller_view(ctx, group);
    if st.policy.has_rule(action) {
        return st.policy.check(ctx, action, &view);
    }
    let owner = ctx.owns(
        view.get("project_id")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    ctx.is_admin()
        || if action == "get_address_group" {
            (owner && ctx.is_reader()) || view.get("shared") == Some(&Value::Bool(true))
        } else {
            owner && ctx.is_member()
        }
}

fn readable(st: &ApiState, ctx: &Context, group: &Obj) -> bool {
    visible(ctx, group) && allowed(st, ctx, "get_address_group", group)
}

fn render(group: &Obj) -> Obj {
    let mut out = Obj::new();
    for k in OUTPUT {
        out.insert((*k).into(), group.get(*k).cloned().unwrap_or(Value::Null));
    }
    if !out["addresses"].is_array() {
        out.insert("addresses".into(), json!([]));
    }
    common::with_tenant(out)
}

fn bad_addresses(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for addresses. Reason: {reason}."))
}

/// Neutron's `type:subnet_list` for the `addresses` attribute: a list without duplicates of
/// CIDRs (with a prefix length; IPv4 written canonically). Returns the normalised set.
fn validate_subnet_list(v: &Value) -> ApiResult<Vec<IpNet>> {
    let items = match v {
        Value::Null => return Ok(vec![]),
        Value::Array(items) => items,
        other => {
            return Err(bad_addresses(format!(
                "'{}' is not a list",
                attrs::display(other)
            )));
        }
    };
    let mut dups: Vec<String> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let s = attrs::display(item);
        if items[..i].contains(item) && !dups.contains(&s) {
            dups.push(s);
        }
    }
    if !dups.is_empty() {
        return Err(bad_addresses(format!(
            "Duplicate items in the list: '{}'",
            dups.join(", ")
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().unwrap_or_default();
        let Some(net) = parse_address(s) else {
            return Err(bad_addresses(format!(
                "'{}' is not a valid IP subnet",
                attrs::display(item)
            )));
        };
        let canonical_v4 = matches!(net, IpNet::V4(_)) && net.to_string() != s;
        if !s.contains('/') || canonical_v4 {
            return Err(bad_addresses(format!(
                "'{s}' isn't a recognized IP subnet cidr, '{}' is recommended",
                net.trunc()
            )));
        }
        out.push(net.trunc());
    }
    Ok(out)
}

/// Parses an address as netaddr's `IPNetwork` does: a CIDR, or a bare address as a host
/// route.
fn parse_address(s: &str) -> Option<IpNet> {
    if s.contains('/') {
        s.parse::<IpNet>().ok()
    } else {
        s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
    }
}

/// The body of the member actions: `{"addresses": [...]}`, normalised and deduplicated.
fn action_body(body: &Bytes) -> ApiResult<Vec<String>> {
    let v = common::parse_json(body)?;
    let Some(list) = v.get("addresses") else {
        return Err(ApiError::bad_request(
            "Failed to parse request. Required attribute 'addresses' not specified",
        ));
    };
    let Value::Array(items) = list else {
        return Err(bad_addresses(format!(
            "'{}' is not a list",
            attrs::display(list)
        )));
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().unwrap_or_default();
        let net = parse_address(s).ok_or_else(|| {
            bad_addresses(format!(
                "'{}' is not a valid IP subnet",
                attrs::display(item)
            ))
        })?;
        let norm = net.trunc().to_string();
        if !out.contains(&norm) {
            out.push(norm);
        }
    }
    Ok(out)
}

fn addresses_of(group: &Obj) -> Vec<String> {
    group
        .get("addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set_addresses(group: &mut Obj, mut addrs: Vec<String>) {
    addrs.sort();
    group.insert("addresses".into(), json!(addrs));
}

/// A Python list repr of strings, as Neutron's messages print address lists.
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "address_group", "address_groups")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[ATTRS], item)?;
        let addrs = validate_subnet_list(obj.get("addresses").unwrap_or(&Value::Null))?;
        common::owner_for_create(&ctx, &mut obj)?;
        if !allowed(&st, &ctx, "create_address_group", &obj) {
            return Err(ApiError::forbidden("rule:create_address_group"));
        }
        let mut norm: Vec<String> = Vec::with_capacity(addrs.len());
        for a in addrs.iter().map(ToString::to_string) {
            if !norm.contains(&a) {
                norm.push(a);
            }
        }
        set_addresses(&mut obj, norm);
        obj.insert("id".into(), Value::String(db::new_id()));
        prepared.push(obj);
    }
    let mut tx = st.db.begin().await?;
    for obj in &mut prepared {
        db::create(&mut tx, &KIND, obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared.iter().map(|g| Value::Object(render(g))).collect();
    Ok(if req.bulk {
        common::created("address_groups", Value::Array(out))
    } else {
        common::created("address_group", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's attribute map of the address group, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "name", "description", "project_id"],
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
    let items: Vec<Obj> = db::list(st.db.reader(), &KIND, None)
        .await?
        .iter()
        .filter(|g| readable(&st, &ctx, g))
        .map(render)
        .collect();
    let url = format!("{}/v2.0/address-groups", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "address_groups", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    match db::get(st.db.reader(), &KIND, &id).await? {
        Some(g) if readable(&st, &ctx, &g) => Ok(common::ok(
            "address_group",
            Value::Object(query.trim(render(&g))),
        )),
        _ => Err(not_found(&id)),
    }
}

/// Loads a group for writing: locked, visible, and `action` allowed (403 when the caller
/// can see but not change it).
async fn load_for_write(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
    action: &str,
) -> ApiResult<Obj> {
    let group = match db::get_for_update(tx, &st.db, &KIND, id).await? {
        Some(g) if readable(st, ctx, &g) => g,
        _ => return Err(not_found(id)),
    };
    if !allowed(st, ctx, action, &group) {
        return Err(ApiError::forbidden(&format!("rule:{action}")));
    }
    Ok(group)
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes = attrs::prepare_update(&[ATTRS], common::parse_update(&body, "address_group")?)?;
    let mut tx = st.db.begin().await?;
    let mut group = match db::get_for_update(&mut tx, &st.db, &KIND, &id).await? {
        Some(g) if readable(&st, &ctx, &g) => g,
        _ => return Err(not_found(&id)),
    };
    if !allowed(&st, &ctx, "update_address_group", &group) {
        // Neutron loads the group for an update's policy check with only `id` and
        // `project_id` (neutron/api/v2/base.py `_update`: `shared` has a default, so it is
        // not fetched), then hides the object when `get_address_group` fails on that. A
        // project that sees the group only through RBAC therefore gets 404, not 403.
        let mut fetched = group.clone();
        fetched.remove("shared");
        return Err(if st.policy.check(&ctx, "get_address_group", &fetched) {
            ApiError::forbidden("rule:update_address_group")
        } else {
            common::hidden_not_found()
        });
    }
    common::check_revision(expected, &group)?;
    let before = group.clone();
    for (k, v) in changes {
        group.insert(k, v);
    }
    if group != before {
        db::save(&mut tx, &KIND, &mut group).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("address_group", Value::Object(render(&group))))
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
    let group = load_for_write(&st, &ctx, &mut tx, &id, "delete_address_group").await?;
    common::check_revision(expected, &group)?;
    // Writers of rules naming a group must lock the group row first (db::get_for_update), so
    // that no rule appears between this count and the delete.
    let rules: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM security_group_rules WHERE remote_address_group_id = $1",
    )
    .bind(&id)
    .fetch_one(&mut *tx)
    .await?;
    if rules > 0 {
        return Err(in_use(&id));
    }
    rbac::revoke_all(&mut tx, "address_group", &id).await?;
    db::remove(&mut tx, &KIND, &group).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

async fn add_addresses(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let add = action_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut group = load_for_write(&st, &ctx, &mut tx, &id, "add_addresses").await?;
    let mut current = addresses_of(&group);
    let present: Vec<String> = add
        .iter()
        .filter(|a| current.contains(a))
        .cloned()
        .collect();
    if !present.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "AddressesAlreadyExist",
            format!(
                "Addresses {} already exist in the address group {id}.",
                py_list(&present)
            ),
        ));
    }
    if !add.is_empty() {
        current.extend(add);
        set_addresses(&mut group, current);
        db::save(&mut tx, &KIND, &mut group).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("address_group", Value::Object(render(&group))))
}

async fn remove_addresses(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let remove = action_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut group = load_for_write(&st, &ctx, &mut tx, &id, "remove_addresses").await?;
    let current = addresses_of(&group);
    let missing: Vec<String> = remove
        .iter()
        .filter(|a| !current.contains(a))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "AddressesNotFound",
            format!(
                "Addresses {} not found in the address group {id}.",
                py_list(&missing)
            ),
        ));
    }
    if !remove.is_empty() {
        let left: Vec<String> = current
            .into_iter()
            .filter(|a| !remove.contains(a))
            .collect();
        set_addresses(&mut group, left);
        db::save(&mut tx, &KIND, &mut group).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("address_group", Value::Object(render(&group))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_list_rules() {
        let ok =
            validate_subnet_list(&json!(["10.0.0.5/24", "2001:db8::1/64"])).unwrap_or_default();
        let s: Vec<String> = ok.iter().map(ToString::to_string).collect();
        assert_eq!(s, ["10.0.0.0/24", "2001:db8::/64"]);
        let e = validate_subnet_list(&json!(["10.0.0.1"])).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for addresses. Reason: '10.0.0.1' isn't a recognized IP subnet cidr, '10.0.0.1/32' is recommended."
        );
        let e = validate_subnet_list(&json!(["x/1"])).unwrap_err();
        assert!(
            e.message.contains("'x/1' is not a valid IP subnet"),
            "{}",
            e.message
        );
        let e = validate_subnet_list(&json!(["10.0.0.0/8", "10.0.0.0/8"])).unwrap_err();
        assert!(
            e.message
                .contains("Duplicate items in the list: '10.0.0.0/8'")
        );
        assert!(
            validate_subnet_list(&Value::Null)
                .unwrap_or_default()
                .is_empty()
        );
    }

    #[test]
    fn action_bodies_normalise() {
        let b = Bytes::from(r#"{"addresses": ["10.1.2.3/16", "10.1.0.0/16", "192.0.2.1"]}"#);
        assert_eq!(
            action_body(&b).unwrap_or_default(),
            ["10.1.0.0/16", "192.0.2.1/32"]
        );
        assert_eq!(py_list(&["a".into(), "b".into()]), "['a', 'b']");
    }
}
