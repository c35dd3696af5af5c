//! `/v2.0/rbac-policies` (rbac-policies, rbac-subnetpool, rbac-address-scope,
//! rbac-address-group, rbac-security-groups): grants of one object to one project (or `*`) for one action, and the
//! rules that tie grants to the objects they share.
//!
//! Owns the `rbac_policies` table and the grant entries denormalised into each shared object's
//! document under the internal key [`ENTRIES`] (`"_rbac": [{"id", "action", "target"}]`).
//! Every grant change updates both in one transaction and saves the object, so its
//! `revision_number` moves as Neutron's `revises_on_change` makes it move, and visibility checks
//! ([`grants`], `networks::visible`, ...) stay synchronous and need no extra query. Keys that
//! start with `_` never reach clients (`common::with_tenant` strips them).
//!
//! Object types are a small registry ([`TYPES`]): the table, the allowed actions, the
//! not-found error, and which projects depend on the object (the "in use" check that refuses to
//! take access away from a project still using it). A new shareable type is one entry.
//!
//! Lock order, everywhere: the shared object's row, then policy rows. This module must never
//! change a grant without locking its object first, and never answer for an object the caller
//! cannot see with anything that reveals it exists.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::common;
use crate::{ApiState, address_groups, address_scopes, networks, security_groups, subnetpools};

/// Storage of RBAC policies. The body keeps `target_project`; the API calls it
/// `target_tenant`.
pub const KIND: Kind = Kind {
    resource: "rbac_policy",
    table: "rbac_policies",
    columns: &["object_type", "object_id", "action", "target_project"],
};

/// Lets the target use the object (ports on a network, subnets from a pool, ...).
pub const SHARED: &str = "access_as_shared";
/// Lets the target use a network as a router gateway (external-net).
pub const EXTERNAL: &str = "access_as_external";
/// The target meaning "every project".
pub const WILDCARD: &str = "*";
/// Internal document key holding an object's grants.
pub const ENTRIES: &str = "_rbac";

/// Attributes of an RBAC policy (neutron/extensions/rbac.py). Neutron has no `name`,
/// `description` or timestamps on these.
const ATTRS: &[Attr] = &[
    attr("object_type", true, false, Ty::Str(255), D::Required),
    attr("object_id", true, false, Ty::Uuid, D::Required),
    attr("action", true, false, Ty::Str(255), D::Required),
    attr("target_tenant", true, true, Ty::Str(255), D::Required),
    attr("project_id", true, false, Ty::Str(255), D::None),
    attr("tenant_id", true, false, Ty::Str(255), D::None),
];

/// Which projects depend on an object being shared with them.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// Networks: ports and subnets for `access_as_shared`, router gateways and floating IPs for
    /// `access_as_external`.
    Network,
    /// Owners of the rows this query returns (`$1` = the object id) depend on the object.
    Query(&'static str),
    /// Nothing can depend on the object yet.
    Nothing,
}

/// One shareable object type.
#[derive(Debug)]
pub struct ObjectType {
    /// The API name (`object_type`).
    pub name: &'static str,
    /// Where objects of this type are stored.
    pub kind: &'static Kind,
    /// Actions a policy on this type may grant.
    pub actions: &'static [&'static str],
    /// The type's not-found error (`NetworkNotFound`, ...).
    pub not_found: fn(&str) -> ApiError,
    /// Who depends on an object of this type.
    pub bound: Bound,
}

fn network_not_found(id: &str) -> ApiError {
    ApiError::not_found("Network", id)
}

/// The shareable object types (neutron/db/rbac_db_models.py). `qos_policy` and `bgpvpn` are
/// not served by this server, so policies for them are refused as Neutron refuses unknown
/// types.
pub const TYPES: &[ObjectType] = &[
    ObjectType {
        name: "network",
        kind: &networks::KIND,
        actions: &[SHARED, EXTERNAL],
        not_found: network_not_found,
        bound: Bound::Network,
    },
    ObjectType {
        name: "subnetpool",
        kind: &subnetpools::KIND,
        actions: &[SHARED],
        not_found: subnetpools::not_found,
        bound: Bound::Query("SELECT DISTINCT project_id FROM subnets WHERE subnetpool_id = $1"),
    },
    ObjectType {
        name: "address_scope",
        kind: &address_scopes::KIND,
        actions: &[SHARED],
        not_found: address_scopes::not_found,
        bound: Bound::Query(
            "SELECT DISTINCT project_id FROM subnetpools WHERE address_scope_id = $1",
        ),
    },
    ObjectType {
        name: "address_group",
        kind: &address_groups::KIND,
        actions: &[SHARED],
        not_found: address_groups::not_found,
        bound: address_groups::BOUND,
    },
    ObjectType {
        name: security_groups::RBAC_OBJECT_TYPE,
        kind: &security_groups::KIND,
        actions: &[SHARED],
        not_found: security_groups::not_found,
        bound: security_groups::BOUND,
    },
];

/// The registered type called `name`.
pub fn object_type(name: &str) -> Option<&'static ObjectType> {
    TYPES.iter().find(|t| t.name == name)
}

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/rbac-policies", get(list).post(create))
        .route(
            "/v2.0/rbac-policies/{id}",
            get(show).put(update).delete(delete),
        )
}

// ---------------------------------------------------------------------------------------------
// Grants in object documents.

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The `(policy id, action, target)` grants of an object.
pub fn entries(obj: &Obj) -> impl Iterator<Item = (&str, &str, &str)> {
    obj.get(ENTRIES)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|e| (str_of(e, "id"), str_of(e, "action"), str_of(e, "target")))
}

/// Whether the object has a grant of `action` to exactly `target`.
pub fn has_entry(obj: &Obj, action: &str, target: &str) -> bool {
    entries(obj).any(|(_, a, t)| a == action && t == target)
}

/// Whether `action` is granted to `project`, directly or through the wildcard.
pub fn grants(obj: &Obj, action: &str, project: &str) -> bool {
    entries(obj).any(|(_, a, t)| a == action && (t == WILDCARD || (!t.is_empty() && t == project)))
}

fn owned_by(ctx: &Context, obj: &Obj) -> bool {
    ctx.owns(str_of(obj, "project_id"))
}

/// Whether `ctx` may see `obj` at all: admins, the owner, and projects holding one of
/// `actions` (Neutron's RBAC query hook).
pub fn visible(ctx: &Context, obj: &Obj, actions: &[&str]) -> bool {
    ctx.is_admin() || owned_by(ctx, obj) || actions.iter().any(|a| grants(obj, a, ctx.project()))
}

/// The object as `ctx` sees it: `shared` is true when it is shared with the caller's project
/// or with everyone (Neutron computes it per caller). Used for rendering and as policy target.
pub fn caller_view(ctx: &Context, obj: &Obj) -> Obj {
    let mut out = obj.clone();
    out.insert(
        "shared".into(),
        Value::Bool(grants(obj, SHARED, ctx.project())),
    );
    out
}

/// Keeps the stored `shared` flag equal to "shared with everyone", the one meaning it has
/// without a caller (agents, the change log).
fn sync_shared(obj: &mut Obj) {
    let wildcard = has_entry(obj, SHARED, WILDCARD);
    obj.insert("shared".into(), Value::Bool(wildcard));
}

fn push_entry(obj: &mut Obj, policy: &Obj) {
    let entry = json!({
        "id": str_of(policy, "id"),
        "action": str_of(policy, "action"),
        "target": str_of(policy, "target_project"),
    });
    match obj.get_mut(ENTRIES) {
        Some(Value::Array(a)) => a.push(entry),
        _ => {
            obj.insert(ENTRIES.into(), Value::Array(vec![entry]));
        }
    }
    sync_shared(obj);
}

fn drop_entry(obj: &mut Obj, policy_id: &str) {
    if let Some(Value::Array(a)) = obj.get_mut(ENTRIES) {
        a.retain(|e| e.get("id").and_then(Value::as_str) != Some(policy_id));
    }
    sync_shared(obj);
}

// ---------------------------------------------------------------------------------------------
// Grant changes used by the object modules (network `shared`/`router:external`, pool and
// scope `shared`). The caller holds the object's row lock and saves the object afterwards.

fn duplicate() -> ApiError {
    ApiError::conflict(
        "DuplicateRbacPolicy",
        "An RBAC policy already exists with those values.",
    )
}

async fn insert_policy(tx: &mut sqlx::AnyConnection, policy: &mut Obj) -> ApiResult<()> {
    match db::insert_raw(&mut *tx, &KIND, policy).await {
        Ok(()) => db::log_create(tx, &KIND, policy).await,
        Err(e) if db::is_unique_violation(&e, None) => Err(duplicate()),
        Err(e) => Err(e.into()),
    }
}

/// Grants `action` on `obj` (of type `object_type`) to `target`, owned by the object's owner,
/// as Neutron does for `shared=True` and `router:external=True`. Adds the entry to `obj`.
pub async fn grant(
    tx: &mut sqlx::AnyConnection,
    object_type: &str,
    obj: &mut Obj,
    action: &str,
    target: &str,
) -> ApiResult<()> {
    if has_entry(obj, action, target) {
        return Err(duplicate());
    }
    let mut policy = Obj::new();
    policy.insert("id".into(), Value::String(db::new_id()));
    policy.insert("project_id".into(), json!(str_of(obj, "project_id")));
    policy.insert("object_type".into(), json!(object_type));
    policy.insert("object_id".into(), json!(str_of(obj, "id")));
    policy.insert("action".into(), json!(action));
    policy.insert("target_project".into(), json!(target));
    insert_policy(tx, &mut policy).await?;
    push_entry(obj, &policy);
    Ok(())
}

async fn policies_of(
    tx: &mut sqlx::AnyConnection,
    object_type: &str,
    object_id: &str,
) -> ApiResult<Vec<Obj>> {
    Ok(db::list(&mut *tx, &KIND, Some(("object_id", object_id)))
        .await?
        .into_iter()
        .filter(|p| str_of(p, "object_type") == object_type)
        .collect())
}

/// Removes the grants of `action` on `obj` (to `target`, or to anyone when None).
pub async fn revoke(
    tx: &mut sqlx::AnyConnection,
    object_type: &str,
    obj: &mut Obj,
    action: &str,
    target: Option<&str>,
) -> ApiResult<()> {
    let object_id = str_of(obj, "id").to_string();
    for p in policies_of(tx, object_type, &object_id).await? {
        if str_of(&p, "action") == action
            && target.is_none_or(|t| str_of(&p, "target_project") == t)
        {
            db::remove(&mut *tx, &KIND, &p).await?;
            drop_entry(obj, str_of(&p, "id"));
        }
    }
    Ok(())
}

/// Removes every grant on an object being deleted (Neutron's cascade).
pub async fn revoke_all(
    tx: &mut sqlx::AnyConnection,
    object_type: &str,
    object_id: &str,
) -> ApiResult<()> {
    for p in policies_of(tx, object_type, object_id).await? {
        db::remove(&mut *tx, &KIND, &p).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// "In use" checks: access may not be taken from a project that still depends on it.

fn policy_in_use(object_id: &str, details: &str) -> ApiError {
    ApiError::conflict(
        "RbacPolicyInUse",
        format!(
            "RBAC policy on object {object_id} cannot be removed because other objects depend on it.\nDetails: {details}"
        ),
    )
}

fn invalid_shared_setting(network: &str) -> ApiError {
    ApiError::conflict(
        "InvalidSharedSetting",
        format!(
            "Unable to reconfigure sharing settings for network {network}. Multiple projects are using it."
        ),
    )
}

/// Projects owning ports (unless `skip_network_owned`, ports whose device owner starts with
/// `network:`) or subnets on a network.
async fn network_users(
    tx: &mut sqlx::AnyConnection,
    net_id: &str,
    skip_network_owned: bool,
) -> ApiResult<BTreeSet<String>> {
    let ports: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT project_id, device_owner FROM ports WHERE network_id = $1")
            .bind(net_id)
            .fetch_all(&mut *tx)
            .await?;
    let subnets: Vec<String> =
        sqlx::query_scalar("SELECT project_id FROM subnets WHERE network_id = $1")
            .bind(net_id)
            .fetch_all(&mut *tx)
            .await?;
    Ok(ports
        .into_iter()
        .filter(|(_, owner)| {
            !(skip_network_owned && owner.as_deref().is_some_and(|o| o.starts_with("network:")))
        })
        .map(|(p, _)| p)
        .chain(subnets)
        .collect())
}

/// Projects using a network as an external network: the projects of the routers whose
/// gateway port is on it (Neutron's `_validate_ext_not_in_use_by_tenant`; the gateway ports
/// Neutron creates belong to no project), and the owners of any other port with a router
/// gateway or floating IP owner there (ports created so through the port API).
async fn gateway_users(tx: &mut sqlx::AnyConnection, net_id: &str) -> ApiResult<BTreeSet<String>> {
    let routers: Vec<String> = sqlx::query_scalar(
        "SELECT r.project_id FROM routers r \
         JOIN router_ports rp ON rp.router_id = r.id AND rp.port_type = 'network:router_gateway' \
         JOIN ports p ON p.id = rp.port_id WHERE p.network_id = $1",
    )
    .bind(net_id)
    .fetch_all(&mut *tx)
    .await?;
    let ports: Vec<String> = sqlx::query_scalar(
        "SELECT project_id FROM ports WHERE network_id = $1 \
         AND device_owner IN ('network:router_gateway', 'network:floatingip')",
    )
    .bind(net_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(routers.into_iter().chain(ports).collect())
}

/// Whether a network has router gateway ports (it may then not stop being external).
pub async fn has_gateway_ports(tx: &mut sqlx::AnyConnection, net_id: &str) -> ApiResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM ports WHERE network_id = $1 AND device_owner = 'network:router_gateway'",
    )
    .bind(net_id)
    .fetch_one(&mut *tx)
    .await?;
    Ok(n > 0)
}

/// 409 `ExternalNetworkInUse`.
pub fn external_in_use(net_id: &str) -> ApiError {
    ApiError::conflict(
        "ExternalNetworkInUse",
        format!(
            "External network {net_id} cannot be updated to be made non-external, since it has existing gateway ports."
        ),
    )
}

/// Refuses `shared=False` on a network while projects other than the owner, not covered by
/// their own grants, have ports (other than network-owned ones) or subnets on it (Neutron's
/// `_validate_shared_update`).
pub async fn check_unshare_network(tx: &mut sqlx::AnyConnection, net: &Obj) -> ApiResult<()> {
    let id = str_of(net, "id");
    let owner = str_of(net, "project_id");
    let users = network_users(tx, id, true).await?;
    let allowed =
        |p: &str| p == owner || (p != WILDCARD && has_entry(net, SHARED, p)) || p.is_empty();
    if users.iter().any(|p| !allowed(p)) {
        return Err(invalid_shared_setting(id));
    }
    Ok(())
}

/// Refuses to take `action` on `obj` away from `lost` (deleting the grant, or retargeting it
/// to `new_target`) while `lost` depends on it, as Neutron's BEFORE_DELETE/BEFORE_UPDATE
/// callbacks do. The owner never loses access to its own object, and retargeting to `*` takes
/// access from nobody.
async fn check_loss(
    tx: &mut sqlx::AnyConnection,
    ty: &ObjectType,
    obj: &Obj,
    action: &str,
    lost: &str,
    new_target: Option<&str>,
) -> ApiResult<()> {
    let owner = str_of(obj, "project_id");
    let id = str_of(obj, "id");
    if lost == owner || new_target == Some(WILDCARD) {
        return Ok(());
    }
    // Grants of the same action that remain (targets are unique per action).
    let others: Vec<&str> = entries(obj)
        .filter(|(_, a, t)| *a == action && *t != lost)
        .map(|(_, _, t)| t)
        .collect();
    if lost != WILDCARD && others.contains(&WILDCARD) {
        // Everyone keeps access through the wildcard.
        return Ok(());
    }
    let still_allowed =
        |p: &str| p == owner || p.is_empty() || others.contains(&p) || new_target == Some(p);
    let loses = |users: &BTreeSet<String>| {
        if lost == WILDCARD {
            users.iter().any(|p| !still_allowed(p))
        } else {
            users.contains(lost)
        }
    };
    match ty.bound {
        Bound::Network if action == EXTERNAL => {
            if lost == WILDCARD && obj.get("is_default") == Some(&Value::Bool(true)) {
                return Err(policy_in_use(
                    id,
                    "Default external networks must be shared to everyone.",
                ));
            }
            if loses(&gateway_users(tx, id).await?) {
                return Err(policy_in_use(
                    id,
                    "There are routers attached to this network that depend on this policy for access.",
                ));
            }
        }
        Bound::Network => {
            if loses(&network_users(tx, id, false).await?) {
                let inner = invalid_shared_setting(id);
                return Err(policy_in_use(id, &inner.message));
            }
        }
        Bound::Query(sql) => {
            let users: BTreeSet<String> = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            if loses(&users) {
                return Err(policy_in_use(id, &format!("project_id={lost}")));
            }
        }
        Bound::Nothing => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The API.

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "RbacPolicyNotFound",
        format!("RBAC policy of type unknown with ID {id} not found"),
    )
}

/// A failed precondition on the shared object: Neutron's callbacks fail and the plugin
/// answers 400 `InvalidInput` with their message.
fn callback_failure(e: &ApiError) -> ApiError {
    ApiError::invalid_input(e.message.trim_end_matches('.'))
}

fn render(p: &Obj) -> Obj {
    let mut out = Obj::new();
    for k in ["id", "project_id", "object_type", "object_id", "action"] {
        out.insert(k.into(), p.get(k).cloned().unwrap_or(Value::Null));
    }
    out.insert("tenant_id".into(), out["project_id"].clone());
    out.insert(
        "target_tenant".into(),
        p.get("target_project").cloned().unwrap_or(Value::Null),
    );
    out
}

/// The policy as `create_rbac_policy:target_tenant` and friends see it.
fn policy_target(p: &Obj) -> Obj {
    let mut t = render(p);
    t.insert(
        "target_project".into(),
        p.get("target_project").cloned().unwrap_or(Value::Null),
    );
    t
}

fn readable(st: &ApiState, ctx: &Context, p: &Obj) -> bool {
    (ctx.is_admin() || owned_by(ctx, p))
        && st.policy.check(ctx, "get_rbac_policy", &policy_target(p))
}

/// Neutron's `convert_valid_object_type`.
fn parse_object_type(v: &Value) -> ApiResult<&'static ObjectType> {
    let raw = v.as_str().unwrap_or_default();
    object_type(&raw.trim().to_lowercase())
        .ok_or_else(|| ApiError::invalid_input(format!("'{raw}' is not a valid RBAC object type")))
}

/// Neutron's `valid_target_project` validator: a project id (UUID-like) or `*`.
fn parse_target(v: &Value) -> ApiResult<String> {
    match v.as_str() {
        Some(t) if t == WILDCARD || attrs::is_uuid(t) => Ok(t.to_string()),
        _ => Err(ApiError::invalid_input(format!(
            "'{}' is not a valid target project ID; expected a UUID or '*'",
            attrs::display(v)
        ))),
    }
}

/// Neutron's `InvalidActionForType`, with the valid actions as a Python tuple.
fn check_action(ty: &ObjectType, action: &str) -> ApiResult<()> {
    if ty.actions.contains(&action) {
        return Ok(());
    }
    let list: Vec<String> = ty.actions.iter().map(|a| format!("'{a}'")).collect();
    let tuple = if list.len() == 1 {
        format!("({},)", list[0])
    } else {
        format!("({})", list.join(", "))
    };
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        "InvalidActionForType",
        format!(
            "Invalid action '{action}' for object type '{}'. Valid actions: {tuple}",
            ty.name
        ),
    ))
}

/// Locks the object a grant is about to change and checks the caller may manage its grants:
/// networks must be visible to the caller (else their not-found message), other objects must
/// exist; non-admins must own the object. All failures are Neutron's 400 `InvalidInput`.
async fn lock_object_to_manage(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    ty: &ObjectType,
    object_id: &str,
) -> ApiResult<Obj> {
    let obj = match db::get_for_update(tx, &st.db, ty.kind, object_id).await? {
        Some(o) if ty.name != "network" || networks::visible(ctx, &o) => o,
        _ => return Err(callback_failure(&(ty.not_found)(object_id))),
    };
    if !ctx.is_admin() && !owned_by(ctx, &obj) {
        let what = if ty.name == "network" {
            "networks"
        } else {
            "objects"
        };
        return Err(ApiError::invalid_input(format!(
            "Only admins can manipulate policies on {what} they do not own"
        )));
    }
    Ok(obj)
}

/// Type-specific preconditions of a new grant.
async fn check_new_grant(
    tx: &mut sqlx::AnyConnection,
    ty: &ObjectType,
    obj: &Obj,
    target: &str,
) -> ApiResult<()> {
    // A pool in an address scope may only be shared with projects that can use the scope
    // (neutron/objects/subnetpool.py validate_rbac_policy_create).
    if ty.name == "subnetpool"
        && let Some(scope_id) = obj.get("address_scope_id").and_then(Value::as_str)
    {
        let scope = db::get(&mut *tx, &address_scopes::KIND, scope_id).await?;
        let reachable = scope.is_some_and(|s| {
            has_entry(&s, SHARED, WILDCARD) || (target != WILDCARD && has_entry(&s, SHARED, target))
        });
        if !reachable {
            return Err(ApiError::invalid_input(format!(
                "Failed to create RBAC policy on object {} because target project doesn't have access to associated address scope",
                str_of(obj, "id")
            )));
        }
    }
    Ok(())
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "rbac_policy", "rbac_policies")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let requested = item.clone();
        let mut p = attrs::prepare_create(&[ATTRS], item)?;
        let ty = parse_object_type(p.get("object_type").unwrap_or(&Value::Null))?;
        let target = parse_target(p.get("target_tenant").unwrap_or(&Value::Null))?;
        p.remove("target_tenant");
        p.insert("object_type".into(), json!(ty.name));
        p.insert("target_project".into(), json!(target));
        common::owner_for_create(&ctx, &mut p)?;
        let t = policy_target(&p);
        common::enforce(&st, &ctx, "create_rbac_policy", &t)?;
        common::enforce_attrs(&st, &ctx, "create_rbac_policy", &requested, &t)?;
        p.insert("id".into(), Value::String(db::new_id()));
        prepared.push((ty, p));
    }
    let mut tx = st.db.begin().await?;
    for (ty, p) in &mut prepared {
        let project = str_of(p, "project_id").to_string();
        common::check_quota(&st, &mut tx, "rbac_policy", &KIND, &project, 1).await?;
        let object_id = str_of(p, "object_id").to_string();
        let mut obj = lock_object_to_manage(&st, &ctx, &mut tx, ty, &object_id).await?;
        let action = str_of(p, "action").to_string();
        let target = str_of(p, "target_project").to_string();
        check_action(ty, &action)?;
        if has_entry(&obj, &action, &target) {
            return Err(duplicate());
        }
        check_new_grant(&mut tx, ty, &obj, &target).await?;
        if ty.name == "network"
            && action == EXTERNAL
            && obj.get("router:external") != Some(&Value::Bool(true))
        {
            // Granting external access makes the network external (external_net_db's
            // _process_ext_policy_create), without a wildcard grant.
            obj.insert("router:external".into(), Value::Bool(true));
        }
        insert_policy(&mut tx, p).await?;
        push_entry(&mut obj, p);
        db::save(&mut tx, ty.kind, &mut obj).await?;
    }
    st.db.commit(tx).await?;
    let out: Vec<Value> = prepared
        .iter()
        .map(|(_, p)| Value::Object(render(p)))
        .collect();
    Ok(if req.bulk {
        common::created("rbac_policies", Value::Array(out))
    } else {
        common::created("rbac_policy", out.into_iter().next().unwrap_or_default())
    })
}

/// neutron-lib's attribute map of the RBAC policy (no sort keys: any sort_key is a 400, as in Neutron), as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[],
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
    let rows = if ctx.is_admin() {
        db::list(st.db.reader(), &KIND, None).await?
    } else {
        db::list(st.db.reader(), &KIND, Some(("project_id", ctx.project()))).await?
    };
    let items: Vec<Obj> = rows
        .iter()
        .filter(|p| readable(&st, &ctx, p))
        .map(render)
        .collect();
    let url = format!("{}/v2.0/rbac-policies", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "rbac_policies", &url)).into_response())
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
            "rbac_policy",
            Value::Object(query.trim(render(&p))),
        )),
        _ => Err(not_found(&id)),
    }
}

/// Loads a policy the caller can see for a change, locking its object first and then the
/// policy (the module's lock order). Returns the policy, its type and the object (None when
/// the object is gone).
async fn load_for_change(
    st: &ApiState,
    ctx: &Context,
    tx: &mut sqlx::AnyConnection,
    id: &str,
) -> ApiResult<(Obj, &'static ObjectType, Option<Obj>)> {
    let peek = match db::get(&mut *tx, &KIND, id).await? {
        Some(p) if readable(st, ctx, &p) => p,
        _ => return Err(not_found(id)),
    };
    let ty = object_type(str_of(&peek, "object_type"))
        .ok_or_else(|| ApiError::internal(format!("RBAC policy {id} of unknown type")))?;
    let obj = db::get_for_update(tx, &st.db, ty.kind, str_of(&peek, "object_id")).await?;
    let policy = db::get_for_update(tx, &st.db, &KIND, id)
        .await?
        .ok_or_else(|| not_found(id))?;
    Ok((policy, ty, obj))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let changes = attrs::prepare_update(&[ATTRS], common::parse_update(&body, "rbac_policy")?)?;
    let new_target = changes.get("target_tenant").map(parse_target).transpose()?;
    let mut tx = st.db.begin().await?;
    let (mut policy, ty, obj) = load_for_change(&st, &ctx, &mut tx, &id).await?;
    let old_target = str_of(&policy, "target_project").to_string();
    let new_target = new_target.unwrap_or_else(|| old_target.clone());
    let mut merged = policy.clone();
    merged.insert("target_project".into(), json!(new_target));
    let t = policy_target(&merged);
    common::enforce(&st, &ctx, "update_rbac_policy", &t)?;
    common::enforce_attrs(&st, &ctx, "update_rbac_policy", &changes, &t)?;
    if let Some(mut obj) = obj {
        if !ctx.is_admin() && !owned_by(&ctx, &obj) {
            let what = if ty.name == "network" {
                "networks"
            } else {
                "objects"
            };
            return Err(ApiError::invalid_input(format!(
                "Only admins can manipulate policies on {what} they do not own"
            )));
        }
        if new_target != old_target {
            let action = str_of(&policy, "action").to_string();
            if has_entry(&obj, &action, &new_target) {
                return Err(duplicate());
            }
            check_loss(&mut tx, ty, &obj, &action, &old_target, Some(&new_target)).await?;
            policy.insert("target_project".into(), json!(new_target));
            db::save(&mut tx, &KIND, &mut policy).await?;
            drop_entry(&mut obj, &id);
            push_entry(&mut obj, &policy);
            db::save(&mut tx, ty.kind, &mut obj).await?;
        }
    } else if new_target != old_target {
        policy.insert("target_project".into(), json!(new_target));
        db::save(&mut tx, &KIND, &mut policy).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok("rbac_policy", Value::Object(render(&policy))))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let mut tx = st.db.begin().await?;
    let (policy, ty, obj) = load_for_change(&st, &ctx, &mut tx, &id).await?;
    common::enforce(&st, &ctx, "delete_rbac_policy", &policy_target(&policy))?;
    if let Some(mut obj) = obj {
        let action = str_of(&policy, "action").to_string();
        let target = str_of(&policy, "target_project").to_string();
        check_loss(&mut tx, ty, &obj, &action, &target, None).await?;
        drop_entry(&mut obj, &id);
        if ty.name == "network"
            && action == EXTERNAL
            && !entries(&obj).any(|(_, a, _)| a == EXTERNAL)
        {
            // The last external grant gone, the network stops being external
            // (external_net_db's _process_ext_policy_delete), unless gateways sit on it.
            if has_gateway_ports(&mut tx, str_of(&obj, "id")).await? {
                return Err(external_in_use(str_of(&obj, "id")));
            }
            obj.insert("router:external".into(), Value::Bool(false));
        }
        db::save(&mut tx, ty.kind, &mut obj).await?;
    }
    db::remove(&mut tx, &KIND, &policy).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(v: Value) -> Obj {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn grants_and_per_caller_shared() {
        let net = o(json!({"id": "n", "project_id": "owner", "_rbac": [
            {"id": "1", "action": SHARED, "target": "a"},
            {"id": "2", "action": EXTERNAL, "target": "*"},
        ]}));
        assert!(grants(&net, SHARED, "a"));
        assert!(!grants(&net, SHARED, "b"));
        assert!(grants(&net, EXTERNAL, "b"));
        assert!(!grants(&net, SHARED, ""));
        let a = Context {
            project_id: Some("a".into()),
            roles: vec!["member".into()],
            ..Default::default()
        };
        assert_eq!(caller_view(&a, &net)["shared"], json!(true));
        let b = Context {
            project_id: Some("b".into()),
            roles: vec!["member".into()],
            ..Default::default()
        };
        assert_eq!(caller_view(&b, &net)["shared"], json!(false));
        assert!(visible(&b, &net, &[SHARED, EXTERNAL]));
        assert!(!visible(&b, &net, &[SHARED]));
    }

    #[test]
    fn entries_follow_grants() {
        let mut obj = o(json!({"id": "x", "project_id": "p"}));
        let p = o(json!({"id": "g", "action": SHARED, "target_project": "*"}));
        push_entry(&mut obj, &p);
        assert_eq!(obj["shared"], json!(true));
        drop_entry(&mut obj, "g");
        assert_eq!(obj["shared"], json!(false));
        assert_eq!(entries(&obj).count(), 0);
    }

    #[test]
    fn validators() {
        assert!(parse_target(&json!("*")).is_ok());
        assert!(parse_target(&json!("0123456789abcdef0123456789abcdef")).is_ok());
        let e = parse_target(&json!("bogus")).unwrap_err();
        assert_eq!(
            e.message,
            "Invalid input for operation: 'bogus' is not a valid target project ID; expected a UUID or '*'."
        );
        assert_eq!(
            parse_object_type(&json!(" Network ")).map(|t| t.name).ok(),
            Some("network")
        );
        let e = parse_object_type(&json!("qos_policy")).unwrap_err();
        assert_eq!(e.kind, "InvalidInput");
        let net = object_type("network").unwrap();
        let e = check_action(net, "bogus").unwrap_err();
        assert!(
            e.message
                .ends_with("Valid actions: ('access_as_shared', 'access_as_external')"),
            "{}",
            e.message
        );
        let e = check_action(object_type("subnetpool").unwrap(), "access_as_external").unwrap_err();
        assert!(
            e.message.ends_with("('access_as_shared',)"),
            "{}",
            e.message
        );
    }
}
