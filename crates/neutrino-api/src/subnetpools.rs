//! `/v2.0/subnetpools`: create, list, show, update, delete, and the subnetpool-prefix-ops
//! member actions `add_prefixes` / `remove_prefixes`.
//!
//! Owns the subnet pool document and its rules, as Neutron's `SubnetPoolReader`: the IP
//! version comes from the prefixes (never mixed), prefixes are stored compacted (merged
//! CIDRs), prefix-length bounds default to 8/32 (IPv4) or 64/128 (IPv6) with the default
//! length equal to the minimum, prefixes may only grow on update, at most one default pool
//! exists per IP version, and a pool with subnets cannot be deleted. A pool may join an
//! address scope of its IP version that the caller can see, if its prefixes overlap no other
//! pool of the scope and no network would end up with subnets in two scopes.
//!
//! Sharing is RBAC (rbac.rs): `shared=True` is an `access_as_shared` grant to `*`.
//! Visibility: admins, the owner project, and projects the pool is shared with; `shared` is
//! rendered per caller. Carving subnets out of a pool is done by subnets.rs with the pure
//! functions of ipam.rs; this module must never allocate subnets.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Router};
use ipnet::IpNet;
use serde_json::{Value, json};

use neutrino_core::db::{self, Backend, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, address_scopes, ipam, rbac};

/// Storage of subnet pools.
pub const KIND: Kind = Kind {
    resource: "subnetpool",
    table: "subnetpools",
    columns: &["address_scope_id"],
};

/// Subnet pool attributes (the name is required for pools, unlike other resources).
pub const ATTRS: &[Attr] = &[
    attr("name", true, true, Ty::Str(255), D::Required),
    attr("description", true, true, Ty::Str(255), D::Str("")),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
    attr("prefixes", true, true, Ty::List, D::Required),
    attr("default_quota", true, true, Ty::IntOrNull, D::Null),
    attr("default_prefixlen", true, true, Ty::IntOrNull, D::None),
    attr("min_prefixlen", true, true, Ty::IntOrNull, D::None),
    attr("max_prefixlen", true, true, Ty::IntOrNull, D::None),
    attr("is_default", true, true, Ty::Bool, D::Bool(false)),
    attr("shared", true, false, Ty::Bool, D::Bool(false)),
    attr("address_scope_id", true, true, Ty::UuidOrNull, D::Null),
];

const PREFIXLENS: [&str; 3] = ["default_prefixlen", "min_prefixlen", "max_prefixlen"];

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/subnetpools", get(list).post(create))
        .route(
            "/v2.0/subnetpools/{id}",
            get(show).put(update).delete(delete),
        )
        .route("/v2.0/subnetpools/{id}/add_prefixes", put(add_prefixes))
        .route(
            "/v2.0/subnetpools/{id}/remove_prefixes",
            put(remove_prefixes),
        )
}

/// 404 `SubnetPoolNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SubnetPoolNotFound",
        format!("Subnet pool {id} could not be found."),
    )
}

fn bad_value(attr: &str, reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("Invalid input for {attr}. Reason: {reason}."))
}

fn illegal_bounds(kind: &str, len: i64, base_kind: &str, base: i64) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "IllegalSubnetPoolPrefixBounds",
        format!("Illegal prefix bounds: {kind}={len}, {base_kind}={base}."),
    )
}

fn illegal_prefix_update(msg: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "IllegalSubnetPoolPrefixUpdate",
        format!("Illegal update to prefixes: {msg}."),
    )
}

/// Whether `ctx` may see `pool` at all (admin, owner, or shared with the caller's project).
pub fn visible(ctx: &Context, pool: &Obj) -> bool {
    rbac::visible(ctx, pool, &[rbac::SHARED])
}

fn readable(st: &ApiState, ctx: &Context, pool: &Obj) -> bool {
    visible(ctx, pool)
        && st
            .policy
            .check(ctx, "get_subnetpool", &rbac::caller_view(ctx, pool))
}

/// An integer attribute of a stored pool (stored as numbers; strings tolerated).
pub fn int_field(pool: &Obj, key: &str) -> Option<i64> {
    match pool.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// The stored prefixes of a pool.
pub fn prefixes_of(pool: &Obj) -> Vec<IpNet> {
    pool.get("prefixes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(ipam::parse_cidr)
                .map(|n| n.trunc())
                .collect()
        })
        .unwrap_or_default()
}

/// The subnet CIDRs carved out of pool `id`.
pub async fn allocated_cidrs(tx: &mut sqlx::AnyConnection, id: &str) -> ApiResult<Vec<IpNet>> {
    let rows: Vec<String> = sqlx::query_scalar("SELECT cidr FROM subnets WHERE subnetpool_id = $1")
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
    Ok(rows.iter().filter_map(|c| ipam::parse_cidr(c)).collect())
}

/// Parses a list of CIDRs given for `attr` (Neutron's `type:subnet_list`).
fn parse_prefix_list(attr: &str, v: &Value) -> ApiResult<Vec<IpNet>> {
    let Value::Array(items) = v else {
        return Err(bad_value(
            attr,
            format!("'{}' is not a list", attrs::display(v)),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = item.as_str().unwrap_or_default();
        match ipam::parse_cidr(s) {
            Some(n) => out.push(n.trunc()),
            None => {
                return Err(bad_value(
                    attr,
                    format!("'{}' is not a valid IP subnet", attrs::display(item)),
                ));
            }
        }
    }
    Ok(out)
}

/// Applies Neutron's `SubnetPoolReader` to a complete pool document: derives `ip_version`,
/// compacts `prefixes`, fills and checks the prefix-length bounds.
fn read_pool(pool: &mut Obj) -> ApiResult<()> {
    if let Some(name) = pool.get("name").and_then(Value::as_str)
        && name.trim().is_empty()
    {
        return Err(bad_value(
            "name",
            format!("'{name}' Blank strings are not permitted"),
        ));
    }
    let prefixes = parse_prefix_list("prefixes", pool.get("prefixes").unwrap_or(&Value::Null))?;
    let Some(first) = prefixes.first() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "EmptySubnetPoolPrefixList",
            "Empty subnet pool prefix list.",
        ));
    };
    let v6 = matches!(first, IpNet::V6(_));
    if prefixes.iter().any(|p| matches!(p, IpNet::V6(_)) != v6) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "PrefixVersionMismatch",
            "Cannot mix IPv4 and IPv6 prefixes in a subnet pool.",
        ));
    }
    let compact: Vec<Value> = ipam::compact_cidrs(&prefixes)
        .iter()
        .map(|n| Value::String(n.to_string()))
        .collect();
    pool.insert("prefixes".into(), Value::Array(compact));
    pool.insert("ip_version".into(), json!(if v6 { 6 } else { 4 }));
    for k in PREFIXLENS.iter().chain(std::iter::once(&"default_quota")) {
        if let Some(n) = int_field(pool, k)
            && n < 0
        {
            return Err(bad_value(k, format!("'{n}' should be non-negative")));
        }
    }
    let version_max: i64 = if v6 { 128 } else { 32 };
    let min = int_field(pool, "min_prefixlen").unwrap_or(if v6 { 64 } else { 8 });
    let max = int_field(pool, "max_prefixlen").unwrap_or(version_max);
    let default = int_field(pool, "default_prefixlen").unwrap_or(min);
    if min > max {
        return Err(illegal_bounds("min_prefixlen", min, "max_prefixlen", max));
    }
    if max > version_max {
        return Err(illegal_bounds(
            "max_prefixlen",
            max,
            "ip_version_max",
            version_max,
        ));
    }
    if default < min {
        return Err(illegal_bounds(
            "default_prefixlen",
            default,
            "min_prefixlen",
            min,
        ));
    }
    if default > max {
        return Err(illegal_bounds(
            "default_prefixlen",
            default,
            "max_prefixlen",
            max,
        ));
    }
    pool.insert("min_prefixlen".into(), json!(min));
    pool.insert("max_prefixlen".into(), json!(max));
    pool.insert("default_prefixlen".into(), json!(default));
    let quota = int_field(pool, "default_quota");
    pool.insert(
        "default_quota".into(),
        quota.map(Value::from).unwrap_or(Value::Null),
    );
    Ok(())
}

/// Neutron's `_validate_address_scope_id` for a pool (complete document, prefixes compacted)
/// joining or staying in its `address_scope_id`: the scope is visible (else 404
/// `AddressScopeNotFound`) and locked, has the pool's IP version, no other pool of the scope
/// overlaps the pool's prefixes, and no network hosting the pool's subnets has subnets of the
/// same IP version from elsewhere (they would end up in two scopes).
async fn check_address_scope(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    pool: &Obj,
) -> ApiResult<()> {
    let Some(scope_id) = pool.get("address_scope_id").and_then(Value::as_str) else {
        return Ok(());
    };
    let pool_id = pool.get("id").and_then(Value::as_str).unwrap_or_default();
    let scope = address_scopes::lock_visible(st, ctx, tx, scope_id).await?;
    let version = int_field(pool, "ip_version");
    if let Some(scope_version) = address_scopes::ip_version(&scope)
        && Some(scope_version) != version
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "IllegalSubnetPoolIpVersionAssociationToAddressScope",
            format!(
                "Illegal subnetpool association: subnetpool {pool_id} cannot associate with address scope {scope_id} because subnetpool ip_version is not {scope_version}."
            ),
        ));
    }
    // Subnets of this pool and other subnets of the same IP version on their networks.
    let strangers: Vec<String> = sqlx::query_scalar(
        "SELECT cidr FROM subnets WHERE network_id IN \
         (SELECT network_id FROM subnets WHERE subnetpool_id = $1) \
         AND (subnetpool_id IS NULL OR subnetpool_id <> $1)",
    )
    .bind(pool_id)
    .fetch_all(&mut *tx)
    .await?;
    let v6 = version == Some(6);
    if strangers.iter().any(|c| c.contains(':') == v6) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "NetworkAddressScopeAffinityError",
            "Subnets of the same address family hosted on the same network must all participate in the same address scope.",
        ));
    }
    let mine = prefixes_of(pool);
    let others = db::list(&mut *tx, &KIND, Some(("address_scope_id", scope_id))).await?;
    let conflict = others
        .iter()
        .filter(|o| o.get("id").and_then(Value::as_str) != Some(pool_id))
        .flat_map(prefixes_of)
        .any(|theirs| mine.iter().any(|m| ipam::overlaps(m, &theirs)));
    if conflict {
        return Err(ApiError::conflict(
            "AddressScopePrefixConflict",
            "Failed to associate address scope: subnetpools within an address scope must have unique prefixes.",
        ));
    }
    Ok(())
}

/// A pool in a scope owned by another project cannot be changed by non-admins (Neutron's
/// `_check_subnetpool_update_allowed`).
async fn check_update_allowed(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    pool: &Obj,
) -> ApiResult<()> {
    let Some(scope_id) = pool.get("address_scope_id").and_then(Value::as_str) else {
        return Ok(());
    };
    if ctx.is_admin() {
        return Ok(());
    }
    let scope = address_scopes::get_visible(&mut *tx, st, ctx, scope_id).await?;
    let owner = scope
        .get("project_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !ctx.owns(owner) {
        let pool_id = pool.get("id").and_then(Value::as_str).unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "IllegalSubnetPoolUpdate",
            format!(
                "Illegal subnetpool update : subnetpool {pool_id} cannot be updated when associated with shared address scope {scope_id}."
            ),
        ));
    }
    Ok(())
}

/// Serialises changes of `is_default` across servers sharing a PostgreSQL store (SQLite
/// serialises writers already), so two concurrent requests cannot both create a default.
async fn lock_defaults(st: &ApiState, tx: &mut sqlx::AnyConnection) -> ApiResult<()> {
    if st.db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(7426110532001)")
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// The default pool of `ip_version` that `ctx` can see (Neutron's `get_default_subnetpool`).
pub async fn default_pool(
    tx: &mut sqlx::AnyConnection,
    ctx: &Context,
    ip_version: i64,
) -> ApiResult<Option<Obj>> {
    Ok(db::list(&mut *tx, &KIND, None)
        .await?
        .into_iter()
        .find(|p| {
            p.get("is_default") == Some(&Value::Bool(true))
                && int_field(p, "ip_version") == Some(ip_version)
                && visible(ctx, p)
        }))
}

async fn check_default_unique(
    st: &ApiState,
    tx: &mut sqlx::AnyConnection,
    pool: &Obj,
) -> ApiResult<()> {
    if pool.get("is_default") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    lock_defaults(st, tx).await?;
    let version = int_field(pool, "ip_version");
    let id = pool.get("id");
    let exists = db::list(&mut *tx, &KIND, None).await?.iter().any(|p| {
        p.get("id") != id
            && p.get("is_default") == Some(&Value::Bool(true))
            && int_field(p, "ip_version") == version
    });
    if exists {
        return Err(ApiError::invalid_input(
            "A default subnetpool for this IP family has already been set. Only one default may exist per IP family",
        ));
    }
    Ok(())
}

/// Renders a stored pool. Neutron renders the prefix lengths as strings on GET and POST, but
/// as the stored integers on PUT (`as_ints`), a quirk clients tolerate either way.
pub fn render(st: &ApiState, ctx: &Context, pool: &Obj, as_ints: bool) -> Obj {
    let view = rbac::caller_view(ctx, pool);
    let mut out = with_tenant(view.clone());
    if !as_ints {
        for k in PREFIXLENS {
            if let Some(n) = int_field(pool, k) {
                out.insert(k.into(), Value::String(n.to_string()));
            }
        }
    }
    out.entry("tags").or_insert_with(|| json!([]));
    out.entry("address_scope_id").or_insert(Value::Null);
    out.entry("default_quota").or_insert(Value::Null);
    common::strip_hidden(st, ctx, "subnetpool", &view, &mut out);
    out
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "subnetpool", "subnetpools")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[ATTRS], item)?;
        common::owner_for_create(&ctx, &mut obj)?;
        common::enforce(&st, &ctx, "create_subnetpool", &obj)?;
        // Attribute rules fire only for values that differ from the default.
        let explicit: Obj = obj
            .iter()
            .filter(|(k, v)| {
                !(v.is_null()
                    || (*k == "shared" || *k == "is_default") && *v == &Value::Bool(false))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        common::enforce_attrs(&st, &ctx, "create_subnetpool", &explicit, &obj)?;
        read_pool(&mut obj)?;
        obj.insert("id".into(), Value::String(db::new_id()));
        obj.insert("tags".into(), json!([]));
        prepared.push(obj);
    }
    let mut tx = st.db.begin().await?;
    for obj in &mut prepared {
        check_default_unique(&st, &mut tx, obj).await?;
        check_address_scope(&st, &ctx, &mut tx, obj).await?;
        let project = obj["project_id"].as_str().unwrap_or_default().to_string();
        common::check_quota(&st, &mut tx, "subnetpool", &KIND, &project, 1).await?;
        if obj.get("shared") == Some(&Value::Bool(true)) {
            rbac::grant(&mut tx, "subnetpool", obj, rbac::SHARED, rbac::WILDCARD).await?;
        }
        db::create(&mut tx, &KIND, obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared
        .iter()
        .map(|p| Value::Object(render(&st, &ctx, p, false)))
        .collect();
    Ok(if req.bulk {
        common::created("subnetpools", Value::Array(out))
    } else {
        common::created("subnetpool", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's attribute map of the subnet pool, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[
        "id",
        "name",
        "tenant_id",
        "default_quota",
        "ip_version",
        "default_prefixlen",
        "min_prefixlen",
        "max_prefixlen",
        "is_default",
        "shared",
    ],
    bools: &["is_default", "shared"],
    ints: &[
        "default_quota",
        "default_prefixlen",
        "min_prefixlen",
        "max_prefixlen",
    ],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let pools = db::list(st.db.reader(), &KIND, None).await?;
    // Filters compare with the rendered form, where prefix lengths are strings and numbers
    // compare by their text anyway.
    let items: Vec<Obj> = pools
        .iter()
        .filter(|p| readable(&st, &ctx, p))
        .map(|p| render(&st, &ctx, p, false))
        .collect();
    let url = format!("{}/v2.0/subnetpools", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "subnetpools", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    match db::get(st.db.reader(), &KIND, &id).await? {
        Some(p) if readable(&st, &ctx, &p) => Ok(common::ok(
            "subnetpool",
            Value::Object(query.trim(render(&st, &ctx, &p, false))),
        )),
        _ => Err(not_found(&id)),
    }
}

/// Loads a pool for writing: locked, visible, revision-checked.
async fn load_for_write(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
    expected: Option<i64>,
) -> ApiResult<Obj> {
    let pool = match db::get_for_update(tx, &st.db, &KIND, id).await? {
        Some(p) if readable(st, ctx, &p) => p,
        _ => return Err(not_found(id)),
    };
    common::check_revision(expected, &pool)?;
    Ok(pool)
}

/// Replaces a pool's prefixes by `new` (which must cover the old ones: prefixes only grow).
fn grow_prefixes(pool: &mut Obj, new: &[IpNet]) -> ApiResult<()> {
    let old = prefixes_of(pool);
    let new_ranges = ipam::merge_ranges(new.iter().map(ipam::net_range).collect());
    let old_ranges: Vec<ipam::Range> = old.iter().map(ipam::net_range).collect();
    if !ipam::subtract_ranges(&old_ranges, &new_ranges).is_empty() {
        return Err(illegal_prefix_update(
            "Existing prefixes must be a subset of the new prefixes",
        ));
    }
    pool.insert(
        "prefixes".into(),
        Value::Array(new.iter().map(|n| Value::String(n.to_string())).collect()),
    );
    Ok(())
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes = attrs::prepare_update(&[ATTRS], common::parse_update(&body, "subnetpool")?)?;
    let mut tx = st.db.begin().await?;
    let mut pool = load_for_write(&st, &ctx, &mut tx, &id, expected).await?;
    let view = rbac::caller_view(&ctx, &pool);
    common::enforce(&st, &ctx, "update_subnetpool", &view)?;
    common::enforce_attrs(&st, &ctx, "update_subnetpool", &changes, &view)?;
    check_update_allowed(&st, &ctx, &mut tx, &pool).await?;
    let was_default = pool.get("is_default") == Some(&Value::Bool(true));
    let mut updated = pool.clone();
    for (k, v) in changes {
        if k == "prefixes" {
            let new = parse_prefix_list("prefixes", &v)?;
            grow_prefixes(&mut updated, &new)?;
        } else if PREFIXLENS.contains(&k.as_str()) && v.is_null() {
            // Not specified: keep the current bound.
        } else {
            updated.insert(k, v);
        }
    }
    read_pool(&mut updated)?;
    if pool.get("address_scope_id") != updated.get("address_scope_id")
        || pool.get("prefixes") != updated.get("prefixes")
    {
        check_address_scope(&st, &ctx, &mut tx, &updated).await?;
    }
    if !was_default {
        check_default_unique(&st, &mut tx, &updated).await?;
    }
    if updated != pool {
        pool = updated;
        db::save(&mut tx, &KIND, &mut pool).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "subnetpool",
        Value::Object(render(&st, &ctx, &pool, true)),
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
    let pool = load_for_write(&st, &ctx, &mut tx, &id, expected).await?;
    common::enforce(
        &st,
        &ctx,
        "delete_subnetpool",
        &rbac::caller_view(&ctx, &pool),
    )?;
    // The pool row is locked, and subnet creation locks it before carving, so no subnet can
    // appear between this count and the delete.
    let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subnets WHERE subnetpool_id = $1")
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
    if used > 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "SubnetPoolDeleteError",
            "Unable to delete subnet pool: Subnet pool has existing allocations.",
        ));
    }
    rbac::revoke_all(&mut tx, "subnetpool", &id).await?;
    db::remove(&mut tx, &KIND, &pool).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

/// Body of the prefix operations: `{"prefixes": [...]}`.
fn prefix_ops_body(body: &Bytes) -> ApiResult<Vec<IpNet>> {
    let v = common::parse_json(body)?;
    match v.get("prefixes") {
        Some(p) => parse_prefix_list("prefixes", p),
        None => Err(ApiError::bad_request(
            "Failed to parse request. Required attribute 'prefixes' not specified",
        )),
    }
}

async fn add_prefixes(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let add = prefix_ops_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut pool = load_for_write(&st, &ctx, &mut tx, &id, None).await?;
    common::enforce(&st, &ctx, "add_prefixes", &rbac::caller_view(&ctx, &pool))?;
    if !add.is_empty() {
        check_update_allowed(&st, &ctx, &mut tx, &pool).await?;
        let mut all = prefixes_of(&pool);
        all.extend(add);
        let mut updated = pool.clone();
        grow_prefixes(&mut updated, &all)?;
        read_pool(&mut updated)?;
        if updated != pool {
            check_address_scope(&st, &ctx, &mut tx, &updated).await?;
            pool = updated;
            db::save(&mut tx, &KIND, &mut pool).await?;
        }
    }
    st.db.commit(tx).await?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({"prefixes": pool.get("prefixes").cloned().unwrap_or(json!([]))})),
    )
        .into_response())
}

async fn remove_prefixes(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let remove = prefix_ops_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut pool = load_for_write(&st, &ctx, &mut tx, &id, None).await?;
    common::enforce(
        &st,
        &ctx,
        "remove_prefixes",
        &rbac::caller_view(&ctx, &pool),
    )?;
    let current = prefixes_of(&pool);
    let overlapping = |nets: &[IpNet]| {
        nets.iter()
            .any(|n| remove.iter().any(|r| ipam::overlaps(n, r)))
    };
    if overlapping(&current) {
        if overlapping(&allocated_cidrs(&mut tx, &id).await?) {
            return Err(illegal_prefix_update(
                "One or more the prefixes to be removed is in use by a subnet.",
            ));
        }
        let v6 = matches!(current.first(), Some(IpNet::V6(_)));
        let cur: Vec<ipam::Range> =
            ipam::merge_ranges(current.iter().map(ipam::net_range).collect());
        let rm: Vec<ipam::Range> = remove.iter().map(ipam::net_range).collect();
        let left: Vec<Value> = ipam::subtract_ranges(&cur, &rm)
            .into_iter()
            .flat_map(|r| ipam::range_to_cidrs(r, v6))
            .map(|n| Value::String(n.to_string()))
            .collect();
        pool.insert("prefixes".into(), Value::Array(left));
        db::save(&mut tx, &KIND, &mut pool).await?;
    }
    st.db.commit(tx).await?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({"prefixes": pool.get("prefixes").cloned().unwrap_or(json!([]))})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: Value) -> Obj {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn reader_defaults_and_compaction() {
        let mut p = o(json!({"name": "p", "prefixes": ["172.31.0.0/16"]}));
        read_pool(&mut p).unwrap();
        assert_eq!(p["ip_version"], json!(4));
        assert_eq!(p["min_prefixlen"], json!(8));
        assert_eq!(p["max_prefixlen"], json!(32));
        assert_eq!(p["default_prefixlen"], json!(8));
        let mut p =
            o(json!({"name": "p", "prefixes": ["10.0.0.0/25", "10.0.0.128/25", "10.0.1.7/24"]}));
        read_pool(&mut p).unwrap();
        assert_eq!(p["prefixes"], json!(["10.0.0.0/23"]));
        let mut p = o(json!({"name": "p", "prefixes": ["2001:db8::/48"], "min_prefixlen": 56}));
        read_pool(&mut p).unwrap();
        assert_eq!(
            (p["ip_version"].clone(), p["default_prefixlen"].clone()),
            (json!(6), json!(56))
        );
    }

    #[test]
    fn reader_errors() {
        let e = read_pool(&mut o(json!({"name": "p", "prefixes": []}))).unwrap_err();
        assert_eq!(e.kind, "EmptySubnetPoolPrefixList");
        let e = read_pool(&mut o(
            json!({"name": "p", "prefixes": ["10.0.0.0/8", "2001::/64"]}),
        ))
        .unwrap_err();
        assert_eq!(e.kind, "PrefixVersionMismatch");
        let e = read_pool(&mut o(json!({"name": "p", "prefixes": ["10.0.0.0/8"], "min_prefixlen": 30, "max_prefixlen": 24}))).unwrap_err();
        assert_eq!(
            e.message,
            "Illegal prefix bounds: min_prefixlen=30, max_prefixlen=24."
        );
        let e = read_pool(&mut o(
            json!({"name": "p", "prefixes": ["10.0.0.0/8"], "max_prefixlen": 33}),
        ))
        .unwrap_err();
        assert_eq!(
            e.message,
            "Illegal prefix bounds: max_prefixlen=33, ip_version_max=32."
        );
        let e = read_pool(&mut o(
            json!({"name": "p", "prefixes": ["10.0.0.0/8"], "default_prefixlen": 4}),
        ))
        .unwrap_err();
        assert_eq!(e.kind, "IllegalSubnetPoolPrefixBounds");
        let e = read_pool(&mut o(json!({"name": "p", "prefixes": ["bogus"]}))).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for prefixes. Reason: 'bogus' is not a valid IP subnet."
        );
        let e = read_pool(&mut o(
            json!({"name": "p", "prefixes": ["10.0.0.0/8"], "default_quota": -1}),
        ))
        .unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn prefixes_only_grow() {
        let mut p = o(json!({"prefixes": ["10.0.0.0/16"]}));
        let e = grow_prefixes(&mut p, &["10.0.0.0/24".parse().unwrap()]).unwrap_err();
        assert_eq!(e.kind, "IllegalSubnetPoolPrefixUpdate");
        grow_prefixes(&mut p, &["10.0.0.0/8".parse().unwrap()]).unwrap();
    }
}
