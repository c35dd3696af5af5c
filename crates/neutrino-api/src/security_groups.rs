//! `/v2.0/security-groups`: create (single and bulk), list, show, update, delete; each
//! project's default group; and the port hook that fills and checks `security_groups`.
//!
//! Owns the security group document (name, description, stateful, tags), the
//! `default_security_group` row that makes a project's default group unique, and the
//! `security_group_port_bindings` rows that say which ports use which groups. Rules live in
//! [`crate::security_group_rules`]; a group is rendered by joining its rules with one indexed
//! query, so adding a rule never rewrites the group's rule list.
//!
//! Neutron's semantics kept here: a project's `default` group (four rules) is created the first
//! time the project lists groups or rules, creates a group, or creates a port; it is exactly one
//! per project even under concurrency because creators claim the `default_security_group` row
//! with `ON CONFLICT DO NOTHING` and re-read when they lose. The default group cannot be renamed
//! (SecurityGroupCannotUpdateDefault) nor, by non-admins, deleted
//! (SecurityGroupCannotRemoveDefault); a group used by a port cannot be deleted, nor its
//! `stateful` flag changed (SecurityGroupInUse). `shared` is computed from RBAC grants of type
//! `security_group` for the caller's project.
//!
//! This module must never check-then-insert the default group, never let a non-admin create a
//! default group for another project (Neutron bug 1987410), and never talk to hosts: the change
//! log carries groups and rules to the agents.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use neutrino_core::db::{self, Kind, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::attrs::{self, Attr, Default as D, STANDARD, Ty, attr};
use crate::common::{self, with_tenant};
use crate::{ApiState, rbac, security_group_rules as rules};

/// Storage of security groups.
pub const KIND: Kind = Kind {
    resource: "security_group",
    table: "security_groups",
    columns: &[],
};

/// The RBAC `object_type` of security groups (rbac-security-groups).
pub const RBAC_OBJECT_TYPE: &str = "security_group";

/// Description Neutron gives every project's default group.
pub const DEFAULT_DESCRIPTION: &str = "Default security group";

/// Security group attributes beyond the standard ones (stateful-security-group).
pub const ATTRS: &[Attr] = &[attr("stateful", true, true, Ty::Bool, D::Bool(true))];

/// Routes of security groups and their rules.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/security-groups", get(list).post(create))
        .route(
            "/v2.0/security-groups/{id}",
            get(show).put(update).delete(delete),
        )
        .merge(rules::routes())
}

// ---------------------------------------------------------------------------------------------
// Errors (neutron/extensions/securitygroup.py).

/// 404 `SecurityGroupNotFound`.
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "SecurityGroupNotFound",
        format!("Security group {id} does not exist"),
    )
}

fn in_use(id: &str) -> ApiError {
    ApiError::conflict("SecurityGroupInUse", format!("Security Group {id} in use."))
}

/// Neutron's `name_not_default` validator: no second group called "default" (any case).
fn check_name(obj: &Obj) -> ApiResult<()> {
    match obj.get("name").and_then(Value::as_str) {
        Some(n) if n.eq_ignore_ascii_case("default") => Err(ApiError::conflict(
            "SecurityGroupDefaultAlreadyExists",
            "Default security group already exists.",
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Visibility and sharing (used by the RBAC and tag modules too).

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Whether an RBAC `access_as_shared` grant on group `sg` covers `project` (wildcard or that
/// project), as Neutron's `is_shared_with_project`. Grants are kept in the group's document by
/// [`rbac`].
pub fn shared_with(sg: &Obj, project: &str) -> bool {
    rbac::grants(sg, rbac::SHARED, project)
}

/// Who depends on a group being shared with them: the owners of ports using it (Neutron's
/// `get_bound_project_ids` for security groups), for the RBAC "in use" check.
pub const BOUND: rbac::Bound = rbac::Bound::Query(
    "SELECT DISTINCT p.project_id FROM security_group_port_bindings b \
     JOIN ports p ON p.id = b.port_id WHERE b.security_group_id = $1",
);

/// Ids of every group shared with `project` through RBAC (candidates for a listing; the
/// `rbac_policies` rows and the documents' grant entries change together).
pub async fn shared_ids(conn: &mut AnyConnection, project: &str) -> ApiResult<HashSet<String>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT object_id FROM rbac_policies WHERE object_type = $1 \
         AND action = 'access_as_shared' AND (target_project = '*' OR target_project = $2)",
    )
    .bind(RBAC_OBJECT_TYPE)
    .bind(project)
    .fetch_all(&mut *conn)
    .await?;
    Ok(ids.into_iter().collect())
}

/// Whether `ctx` may see group `sg` at all (admin, owner, or shared with its project), and
/// whether the group counts as shared for it.
pub fn visibility(ctx: &Context, sg: &Obj) -> (bool, bool) {
    let shared = shared_with(sg, ctx.project());
    (
        ctx.is_admin() || ctx.owns(str_of(sg, "project_id")) || shared,
        shared,
    )
}

/// Loads a group `ctx` may see (visibility and the `get_security_group` policy), with its
/// computed `shared` flag; 404 `SecurityGroupNotFound` otherwise.
pub async fn get_visible(
    st: &ApiState,
    conn: &mut AnyConnection,
    ctx: &Context,
    id: &str,
    lock: bool,
) -> ApiResult<(Obj, bool)> {
    let sg = if lock {
        db::get_for_update(&mut *conn, &st.db, &KIND, id).await?
    } else {
        db::get(&mut *conn, &KIND, id).await?
    };
    let Some(sg) = sg else {
        return Err(not_found(id));
    };
    let (visible, shared) = visibility(ctx, &sg);
    if !visible
        || !st
            .policy
            .check(ctx, "get_security_group", &target(&sg, shared))
    {
        return Err(not_found(id));
    }
    Ok((sg, shared))
}

/// The policy target of a group: the document plus the computed `shared`.
pub(crate) fn target(sg: &Obj, shared: bool) -> Obj {
    let mut t = sg.clone();
    t.insert("shared".into(), Value::Bool(shared));
    t
}

/// Number of ports bound to group `sg_id`.
pub async fn ports_using(conn: &mut AnyConnection, sg_id: &str) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM security_group_port_bindings WHERE security_group_id = $1",
    )
    .bind(sg_id)
    .fetch_one(&mut *conn)
    .await?)
}

/// Number of ports outside `owner` bound to group `sg_id` (what an RBAC grant removal would
/// strand: Neutron's RbacPolicyInUse check).
pub async fn ports_of_other_projects(
    conn: &mut AnyConnection,
    sg_id: &str,
    owner: &str,
) -> ApiResult<i64> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM security_group_port_bindings b JOIN ports p ON p.id = b.port_id \
         WHERE b.security_group_id = $1 AND p.project_id <> $2",
    )
    .bind(sg_id)
    .bind(owner)
    .fetch_one(&mut *conn)
    .await?)
}

// ---------------------------------------------------------------------------------------------
// The default group.

/// The id of `project`'s default group, if it has one.
pub async fn default_id(conn: &mut AnyConnection, project: &str) -> ApiResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT security_group_id FROM default_security_group WHERE project_id = $1",
    )
    .bind(project)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Neutron's `_ensure_default_security_group`, inside the caller's write transaction: returns
/// `project`'s default group, creating it (with its four rules) when missing. Returns None
/// when a non-admin asks for another project's group (Neutron bug 1987410) or there is no
/// project. Exactly one default group per project: the `default_security_group` row is
/// claimed first (`ON CONFLICT DO NOTHING`), and a loser re-reads the winner's id.
pub async fn ensure_default(
    tx: &mut AnyConnection,
    ctx: &Context,
    project: &str,
) -> ApiResult<Option<String>> {
    if project.is_empty() || (!ctx.owns(project) && !ctx.is_admin()) {
        return Ok(None);
    }
    if let Some(id) = default_id(tx, project).await? {
        return Ok(Some(id));
    }
    let id = db::new_id();
    let claimed = sqlx::query(
        "INSERT INTO default_security_group (project_id, security_group_id) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING",
    )
    .bind(project)
    .bind(&id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !claimed {
        // Another transaction created it first (PostgreSQL waited for it to commit).
        return match default_id(tx, project).await? {
            Some(winner) => Ok(Some(winner)),
            None => Err(ApiError::internal(
                "default security group row vanished after a conflict",
            )),
        };
    }
    let mut sg = new_group(&id, "default", DEFAULT_DESCRIPTION, project, true);
    db::create(tx, &KIND, &mut sg).await?;
    rules::create_template(tx, &sg, true).await?;
    Ok(Some(id))
}

fn new_group(id: &str, name: &str, description: &str, project: &str, stateful: bool) -> Obj {
    let mut sg = Obj::new();
    sg.insert("id".into(), json!(id));
    sg.insert("name".into(), json!(name));
    sg.insert("description".into(), json!(description));
    sg.insert("project_id".into(), json!(project));
    sg.insert("stateful".into(), json!(stateful));
    sg.insert("tags".into(), json!([]));
    sg
}

/// Ensures the default group of the project a list request is about exists (Neutron creates
/// it on `GET /security-groups` and `GET /security-group-rules`). Reads first, so the common
/// case takes no write lock.
pub(crate) async fn ensure_default_for_list(
    st: &ApiState,
    ctx: &Context,
    query: &ListQuery,
) -> ApiResult<()> {
    let project = query
        .filter("project_id")
        .or_else(|| query.filter("tenant_id"))
        .and_then(|v| v.first().cloned())
        .unwrap_or_else(|| ctx.project().to_string());
    if project.is_empty() || (!ctx.owns(&project) && !ctx.is_admin()) {
        return Ok(());
    }
    let mut conn = st.db.reader().acquire().await?;
    if default_id(&mut conn, &project).await?.is_some() {
        return Ok(());
    }
    drop(conn);
    let mut tx = st.db.begin().await?;
    ensure_default(&mut tx, ctx, &project).await?;
    st.db.commit(tx).await
}

// ---------------------------------------------------------------------------------------------
// The port hook.

/// Fills and checks a port's `security_groups` inside the port's transaction: the project's
/// default group when `given` is false and port security is on; otherwise every named group
/// must exist and be usable by the port's project. Maintains the port's binding rows.
///
/// As Neutron (`_ensure_default_security_group_on_port`, `_get_security_groups_on_port`):
/// ports owned by the network (`network:*` device owners: DHCP, router interfaces) get no
/// groups; a port without port security gets none unless it names some (ports.rs refuses
/// that combination before calling); groups that are not the port project's own must be
/// shared with it, unless the caller is an admin; stateful and stateless groups cannot be
/// mixed on one port.
pub async fn prepare_port(
    _state: &ApiState,
    tx: &mut sqlx::AnyConnection,
    ctx: &Context,
    port: &mut Obj,
    given: bool,
) -> ApiResult<()> {
    let project = str_of(port, "project_id").to_string();
    let port_id = str_of(port, "id").to_string();
    let trusted = str_of(port, "device_owner").starts_with("network:");
    let port_security = port.get("port_security_enabled") != Some(&Value::Bool(false));
    let wanted: Vec<String> = if trusted {
        Vec::new()
    } else if !given {
        if port_security {
            ensure_default(tx, ctx, &project)
                .await?
                .into_iter()
                .collect()
        } else {
            Vec::new()
        }
    } else {
        let mut ids: Vec<String> = Vec::new();
        for v in port
            .get("security_groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = v.as_str()
                && !ids.iter().any(|x| x == s)
            {
                ids.push(s.to_string());
            }
        }
        // Neutron also makes sure the project's default group exists on port updates.
        ensure_default(tx, ctx, &project).await?;
        check_port_groups(tx, ctx, &project, &ids).await?;
        ids
    };
    port.insert("security_groups".into(), json!(wanted));
    sqlx::query("DELETE FROM security_group_port_bindings WHERE port_id = $1")
        .bind(&port_id)
        .execute(&mut *tx)
        .await?;
    for sg in &wanted {
        sqlx::query(
            "INSERT INTO security_group_port_bindings (port_id, security_group_id) \
             VALUES ($1, $2)",
        )
        .bind(&port_id)
        .bind(sg)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            // The group was deleted by a transaction that committed meanwhile.
            if db::is_fk_violation(&e) {
                not_found(sg)
            } else {
                ApiError::from(e)
            }
        })?;
    }
    Ok(())
}

async fn check_port_groups(
    tx: &mut AnyConnection,
    ctx: &Context,
    project: &str,
    ids: &[String],
) -> ApiResult<()> {
    let mut missing = Vec::new();
    let mut stateful = (false, false);
    for id in ids {
        let Some(sg) = db::get(&mut *tx, &KIND, id).await? else {
            missing.push(id.as_str());
            continue;
        };
        let usable = ctx.is_admin()
            || project.is_empty()
            || str_of(&sg, "project_id") == project
            || shared_with(&sg, project);
        if !usable {
            missing.push(id.as_str());
            continue;
        }
        if sg.get("stateful") == Some(&Value::Bool(false)) {
            stateful.1 = true;
        } else {
            stateful.0 = true;
        }
    }
    if !missing.is_empty() {
        return Err(not_found(&missing.join(", ")));
    }
    if stateful.0 && stateful.1 {
        return Err(ApiError::conflict(
            "SecurityGroupConflict",
            "Error Cannot apply both stateful and stateless security groups on the same port at the same time while attempting the operation.",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Rendering.

/// Renders a stored group (without rules) for `ctx`.
fn render_base(st: &ApiState, ctx: &Context, sg: &Obj, shared: bool) -> Obj {
    let mut out = with_tenant(sg.clone());
    out.insert("shared".into(), Value::Bool(shared));
    out.entry("stateful").or_insert(Value::Bool(true));
    out.entry("tags").or_insert_with(|| json!([]));
    common::strip_hidden(st, ctx, "security_group", &target(sg, shared), &mut out);
    out
}

fn wants_rules(query: &ListQuery) -> bool {
    query.fields.is_empty() || query.fields.iter().any(|f| f == "security_group_rules")
}

async fn create(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    let req = common::parse_create(&body, "security_group", "security_groups")?;
    let mut prepared = Vec::with_capacity(req.items.len());
    for item in req.items {
        let mut obj = attrs::prepare_create(&[STANDARD, ATTRS], item)?;
        check_name(&obj)?;
        common::owner_for_create(&ctx, &mut obj)?;
        common::enforce(&st, &ctx, "create_security_group", &obj)?;
        let sg = new_group(
            &db::new_id(),
            str_of(&obj, "name"),
            str_of(&obj, "description"),
            str_of(&obj, "project_id"),
            obj.get("stateful") != Some(&Value::Bool(false)),
        );
        prepared.push(sg);
    }
    let mut tx = st.db.begin().await?;
    let mut out = Vec::with_capacity(prepared.len());
    for sg in &mut prepared {
        let project = str_of(sg, "project_id").to_string();
        // Neutron counts before its plugin creates the project's default group.
        common::check_quota(&st, &mut tx, "security_group", &KIND, &project, 1).await?;
        ensure_default(&mut tx, &ctx, &project).await?;
        db::create(&mut tx, &KIND, sg).await?;
        let created = rules::create_template(&mut tx, sg, false).await?;
        // The group's default rules count against the project's rule quota (Neutron's
        // `quota_limit_check(security_group_rule=<template rules>)` in create_security_group).
        // They are inserted already, so a delta of 0 asks "is the project over its limit
        // now?"; 409 `OverQuota` rolls the whole transaction back, group included.
        common::check_quota(
            &st,
            &mut tx,
            "security_group_rule",
            &rules::KIND,
            &project,
            0,
        )
        .await?;
        let mut doc = render_base(&st, &ctx, sg, false);
        doc.insert(
            "security_group_rules".into(),
            Value::Array(created.into_iter().map(Value::Object).collect()),
        );
        out.push(Value::Object(doc));
    }
    st.db.commit(tx).await?;
    Ok(if req.bulk {
        common::created("security_groups", Value::Array(out))
    } else {
        common::created("security_group", out.into_iter().next().unwrap_or_default())
    })
}

/// Rules of the listed groups, by group id: `Project(p)` loads the rules of `p`'s groups,
/// `All` every rule (admins).
enum RuleScope<'a> {
    All,
    Project(&'a str),
}

async fn rules_by_group(
    conn: &mut AnyConnection,
    scope: RuleScope<'_>,
) -> ApiResult<HashMap<String, Vec<Value>>> {
    let rows = match scope {
        RuleScope::All => {
            sqlx::query("SELECT security_group_id, body FROM security_group_rules ORDER BY id")
                .fetch_all(&mut *conn)
                .await?
        }
        RuleScope::Project(p) => {
            sqlx::query(
                "SELECT r.security_group_id, r.body FROM security_group_rules r \
                 JOIN security_groups g ON g.id = r.security_group_id \
                 WHERE g.project_id = $1 ORDER BY r.id",
            )
            .bind(p)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for r in rows {
        let sg: String = r.try_get(0)?;
        let body: String = r.try_get(1)?;
        out.entry(sg)
            .or_default()
            .push(serde_json::from_str(&body)?);
    }
    Ok(out)
}

/// neutron-lib's attribute map of the security group, as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &["id", "name", "tenant_id"],
    bools: &["stateful"],
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
    ensure_default_for_list(&st, &ctx, &query).await?;
    let mut conn = st.db.reader().acquire().await?;
    let shared = shared_ids(&mut conn, ctx.project()).await?;
    // Push a single project filter down to the indexed column.
    let project_filter = match query.filter("project_id").or(query.filter("tenant_id")) {
        Some([p]) => Some(p.clone()),
        _ => None,
    };
    let mut groups = if ctx.is_admin() {
        db::list(
            &mut *conn,
            &KIND,
            project_filter.as_deref().map(|p| ("project_id", p)),
        )
        .await?
    } else {
        let mut own = db::list(&mut *conn, &KIND, Some(("project_id", ctx.project()))).await?;
        for id in &shared {
            if let Some(sg) = db::get(&mut *conn, &KIND, id).await?
                && !ctx.owns(str_of(&sg, "project_id"))
            {
                own.push(sg);
            }
        }
        own
    };
    groups.retain(|sg| {
        let s = shared_with(sg, ctx.project());
        st.policy.check(&ctx, "get_security_group", &target(sg, s))
    });
    let mut by_group = HashMap::new();
    if wants_rules(&query) && !groups.is_empty() {
        by_group = if ctx.is_admin() {
            match &project_filter {
                Some(p) => rules_by_group(&mut conn, RuleScope::Project(p)).await?,
                None => rules_by_group(&mut conn, RuleScope::All).await?,
            }
        } else {
            rules_by_group(&mut conn, RuleScope::Project(ctx.project())).await?
        };
        for sg in &groups {
            let id = str_of(sg, "id");
            if !ctx.owns(str_of(sg, "project_id")) && !by_group.contains_key(id) {
                let raw = rules::raw_of_group(&mut conn, id).await?;
                let parsed = raw
                    .iter()
                    .map(|b| serde_json::from_str(b))
                    .collect::<Result<Vec<Value>, _>>()?;
                by_group.insert(id.to_string(), parsed);
            }
        }
    }
    let items: Vec<Obj> = groups
        .iter()
        .map(|sg| {
            let id = str_of(sg, "id");
            let mut doc = render_base(&st, &ctx, sg, shared_with(sg, ctx.project()));
            doc.insert(
                "security_group_rules".into(),
                Value::Array(by_group.remove(id).unwrap_or_default()),
            );
            doc
        })
        .collect();
    let url = format!("{}/v2.0/security-groups", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "security_groups", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let mut conn = st.db.reader().acquire().await?;
    let (sg, shared) = get_visible(&st, &mut conn, &ctx, &id, false).await?;
    let doc = render_base(&st, &ctx, &sg, shared);
    if !wants_rules(&query) {
        return Ok(common::ok("security_group", Value::Object(query.trim(doc))));
    }
    if !query.fields.is_empty() {
        let raw = rules::raw_of_group(&mut conn, &id).await?;
        let mut doc = doc;
        let parsed = raw
            .iter()
            .map(|b| serde_json::from_str(b))
            .collect::<Result<Vec<Value>, _>>()?;
        doc.insert("security_group_rules".into(), Value::Array(parsed));
        return Ok(common::ok("security_group", Value::Object(query.trim(doc))));
    }
    // Fast path: the stored rule bodies are their wire form, so a group of 10,000 rules is
    // answered by splicing the database's joined text into the group's JSON, parsing nothing.
    let joined = rules::joined_of_group(&st, &mut conn, &id).await?;
    let base = serde_json::to_string(&Value::Object(doc))?;
    let head = base.strip_suffix('}').unwrap_or(&base);
    let mut text = String::with_capacity(head.len() + joined.len() + 64);
    text.push_str("{\"security_group\":");
    text.push_str(head);
    text.push_str(if head.len() > 1 { "," } else { "" });
    text.push_str("\"security_group_rules\":[");
    text.push_str(&joined);
    text.push_str("]}}");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let expected = common::if_match(&headers)?;
    let changes = attrs::prepare_update(
        &[STANDARD, ATTRS],
        common::parse_update(&body, "security_group")?,
    )?;
    check_name(&changes)?;
    let mut tx = st.db.begin().await?;
    let (mut sg, shared) = get_visible(&st, &mut tx, &ctx, &id, true).await?;
    common::check_revision(expected, &sg)?;
    common::enforce(&st, &ctx, "update_security_group", &target(&sg, shared))?;
    common::enforce_attrs(
        &st,
        &ctx,
        "update_security_group",
        &changes,
        &target(&sg, shared),
    )?;
    // Neutron: a group used by ports cannot switch between stateful and stateless.
    if let Some(v) = changes.get("stateful")
        && sg.get("stateful").unwrap_or(&Value::Bool(true)) != v
        && ports_using(&mut tx, &id).await? > 0
    {
        return Err(in_use(&id));
    }
    if str_of(&sg, "name") == "default" && changes.contains_key("name") {
        return Err(ApiError::conflict(
            "SecurityGroupCannotUpdateDefault",
            "Updating default security group not allowed.",
        ));
    }
    let mut changed = false;
    for (k, v) in changes {
        if sg.get(&k) != Some(&v) {
            sg.insert(k, v);
            changed = true;
        }
    }
    if changed {
        db::save(&mut tx, &KIND, &mut sg).await?;
    }
    let raw = rules::raw_of_group(&mut tx, &id).await?;
    st.db.commit(tx).await?;
    let mut doc = render_base(&st, &ctx, &sg, shared);
    let parsed = raw
        .iter()
        .map(|b| serde_json::from_str(b))
        .collect::<Result<Vec<Value>, _>>()?;
    doc.insert("security_group_rules".into(), Value::Array(parsed));
    Ok(common::ok("security_group", Value::Object(doc)))
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
    let (sg, shared) = get_visible(&st, &mut tx, &ctx, &id, true).await?;
    common::check_revision(expected, &sg)?;
    common::enforce(&st, &ctx, "delete_security_group", &target(&sg, shared))?;
    if ports_using(&mut tx, &id).await? > 0 {
        return Err(in_use(&id));
    }
    // Neutron lets only admins remove a default group (Tempest's cleanup relies on it).
    if str_of(&sg, "name") == "default" && !ctx.is_admin() {
        return Err(ApiError::conflict(
            "SecurityGroupCannotRemoveDefault",
            "Insufficient rights for removing default security group.",
        ));
    }
    // Rules of other groups that name this one as remote go too (Neutron's cascade), logged
    // so agents drop them; this group's own rules and default row cascade with it.
    let referring = sqlx::query(
        "SELECT body, security_group_id FROM security_group_rules \
         WHERE remote_group_id = $1 AND security_group_id <> $1",
    )
    .bind(&id)
    .fetch_all(&mut *tx)
    .await?;
    for r in referring {
        let body: String = r.try_get(0)?;
        let rule: Obj = serde_json::from_str(&body)?;
        db::remove(&mut tx, &rules::KIND, &rule).await?;
    }
    rbac::revoke_all(&mut tx, RBAC_OBJECT_TYPE, &id).await?;
    db::remove(&mut tx, &KIND, &sg).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}
