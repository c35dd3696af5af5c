//! Identity administration: domains, projects, users, roles, role assignments, and the
//! read-only services, endpoints and regions.
//!
//! Writes require the admin role on any scope (Keystone's `admin_required`); a non-admin may
//! read its own user, its own project and its own domain, and change its own password.
//! Bodies are parsed field by field (Keystone accepts extra attributes on these entities and
//! stores them, so unknown keys are kept in `extra`, not rejected). Passwords are hashed
//! before they reach the store and are never rendered. After any change that can shrink what
//! a token grants (deletes, disables, role removal, password change) the token cache of this
//! process is cleared; other processes notice within the cache's re-check interval.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::api::{Caller, Params, list, parse_json};
use crate::error::IdentityError;
use crate::store::{self, Domain, Project, Role, Target, User};
use crate::token::implied;
use crate::{Identity, new_id, password};

type Obj = Map<String, Value>;
type Res = Result<Response, IdentityError>;

pub(crate) fn routes(r: Router<Identity>) -> Router<Identity> {
    r.route("/v3/domains", get(list_domains).post(create_domain))
        .route(
            "/v3/domains/{id}",
            get(get_domain).patch(update_domain).delete(delete_domain),
        )
        .route("/v3/projects", get(list_projects).post(create_project))
        .route(
            "/v3/projects/{id}",
            get(get_project)
                .patch(update_project)
                .delete(delete_project),
        )
        .route("/v3/users", get(list_users).post(create_user))
        .route(
            "/v3/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v3/users/{id}/projects", get(list_user_projects))
        .route("/v3/users/{id}/groups", get(empty_groups))
        .route(
            "/v3/users/{id}/password",
            axum::routing::post(change_password),
        )
        .route("/v3/groups", get(empty_groups))
        .route("/v3/roles", get(list_roles).post(create_role))
        .route(
            "/v3/roles/{id}",
            get(get_role).patch(update_role).delete(delete_role),
        )
        .route("/v3/projects/{p}/users/{u}/roles", get(list_project_grants))
        .route(
            "/v3/projects/{p}/users/{u}/roles/{r}",
            get(check_project_grant)
                .put(put_project_grant)
                .delete(delete_project_grant),
        )
        .route("/v3/domains/{d}/users/{u}/roles", get(list_domain_grants))
        .route(
            "/v3/domains/{d}/users/{u}/roles/{r}",
            get(check_domain_grant)
                .put(put_domain_grant)
                .delete(delete_domain_grant),
        )
        .route("/v3/system/users/{u}/roles", get(list_system_grants))
        .route(
            "/v3/system/users/{u}/roles/{r}",
            get(check_system_grant)
                .put(put_system_grant)
                .delete(delete_system_grant),
        )
        .route("/v3/role_assignments", get(role_assignments))
        .route("/v3/services", get(list_services))
        .route("/v3/services/{id}", get(get_service))
        .route("/v3/endpoints", get(list_endpoints))
        .route("/v3/endpoints/{id}", get(get_endpoint))
        .route("/v3/regions", get(list_regions))
        .route("/v3/regions/{id}", get(get_region))
}

// ---- body helpers ----

/// The object under `key` in a JSON body (`{"project": {...}}`).
fn entity(body: &Bytes, key: &str) -> Result<Obj, IdentityError> {
    let v: Value = parse_json(body)?;
    match v {
        Value::Object(mut m) => match m.remove(key) {
            Some(Value::Object(o)) => Ok(o),
            _ => Err(IdentityError::invalid(format!(
                "expecting an object '{key}'"
            ))),
        },
        _ => Err(IdentityError::invalid("expecting a JSON object")),
    }
}

fn take_str(m: &mut Obj, k: &str) -> Result<Option<String>, IdentityError> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(IdentityError::invalid(format!("'{k}' must be a string"))),
    }
}

fn take_bool(m: &mut Obj, k: &str) -> Result<Option<bool>, IdentityError> {
    match m.remove(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(IdentityError::invalid(format!("'{k}' must be a boolean"))),
    }
}

fn valid_name(name: Option<String>, required: bool) -> Result<Option<String>, IdentityError> {
    match name {
        None if required => Err(IdentityError::invalid("'name' is a required property")),
        Some(n) if n.trim().is_empty() || n.chars().count() > 255 => {
            Err(IdentityError::invalid("'name' must be 1 to 255 characters"))
        }
        other => Ok(other),
    }
}

/// Validates `tags` and keeps the remaining attributes as extras (Keystone stores them).
fn merge_extra(extra: &mut Obj, mut rest: Obj) -> Result<(), IdentityError> {
    if let Some(tags) = rest.get("tags") {
        let ok = tags
            .as_array()
            .is_some_and(|a| a.iter().all(|t| t.as_str().is_some_and(|s| !s.is_empty())));
        if !ok {
            return Err(IdentityError::invalid("'tags' must be a list of strings"));
        }
    }
    for k in ["id", "links", "is_domain", "parent_id", "domain_id"] {
        rest.remove(k);
    }
    for (k, v) in rest {
        if v.is_null() {
            extra.remove(&k);
        } else {
            extra.insert(k, v);
        }
    }
    Ok(())
}

fn conflict(kind: &'static str, name: &str) -> impl FnOnce(sqlx::Error) -> IdentityError {
    let name = name.to_string();
    move |e| {
        if neutrino_core::db::is_unique_violation(&e, None) {
            IdentityError::Conflict { kind, name }
        } else {
            IdentityError::Db(e)
        }
    }
}

fn link(idn: &Identity, path: &str) -> Value {
    json!({"self": format!("{}/v3/{path}", idn.cfg().identity_url)})
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn matches(filter: Option<&str>, value: &str) -> bool {
    filter.is_none_or(|f| f == value)
}

fn matches_bool(q: &Params, value: bool) -> bool {
    q.flag("enabled").is_none_or(|f| f == value)
}

// ---- rendering ----

pub(crate) fn render_domain(idn: &Identity, d: &Domain) -> Value {
    let mut o = d.extra.clone();
    o.insert("id".into(), json!(d.id));
    o.insert("name".into(), json!(d.name));
    o.insert("description".into(), json!(d.description));
    o.insert("enabled".into(), json!(d.enabled));
    o.entry("tags").or_insert_with(|| json!([]));
    o.entry("options").or_insert_with(|| json!({}));
    o.insert("links".into(), link(idn, &format!("domains/{}", d.id)));
    Value::Object(o)
}

pub(crate) fn render_project(idn: &Identity, p: &Project) -> Value {
    let mut o = p.extra.clone();
    o.insert("id".into(), json!(p.id));
    o.insert("name".into(), json!(p.name));
    o.insert("domain_id".into(), json!(p.domain_id));
    o.insert("description".into(), json!(p.description));
    o.insert("enabled".into(), json!(p.enabled));
    o.insert("is_domain".into(), json!(false));
    o.insert("parent_id".into(), json!(p.domain_id));
    o.entry("tags").or_insert_with(|| json!([]));
    o.entry("options").or_insert_with(|| json!({}));
    o.insert("links".into(), link(idn, &format!("projects/{}", p.id)));
    Value::Object(o)
}

fn render_user(idn: &Identity, u: &User) -> Value {
    let mut o = u.extra.clone();
    o.remove("password");
    o.insert("id".into(), json!(u.id));
    o.insert("name".into(), json!(u.name));
    o.insert("domain_id".into(), json!(u.domain_id));
    o.insert("enabled".into(), json!(u.enabled));
    o.insert("password_expires_at".into(), Value::Null);
    if let Some(p) = &u.default_project_id {
        o.insert("default_project_id".into(), json!(p));
    }
    o.entry("options").or_insert_with(|| json!({}));
    o.insert("links".into(), link(idn, &format!("users/{}", u.id)));
    Value::Object(o)
}

fn render_role(idn: &Identity, r: &Role) -> Value {
    let mut o = r.extra.clone();
    o.insert("id".into(), json!(r.id));
    o.insert("name".into(), json!(r.name));
    o.insert("domain_id".into(), Value::Null);
    if !r.description.is_empty() {
        o.insert("description".into(), json!(r.description));
    }
    o.entry("options").or_insert_with(|| json!({}));
    o.insert("links".into(), link(idn, &format!("roles/{}", r.id)));
    Value::Object(o)
}

// ---- lookups ----

async fn domain_or_404(idn: &Identity, id: &str) -> Result<Domain, IdentityError> {
    store::get_domain(idn.db().reader(), id)
        .await?
        .ok_or_else(|| IdentityError::not_found("domain", id))
}

async fn project_or_404(idn: &Identity, id: &str) -> Result<Project, IdentityError> {
    store::get_project(idn.db().reader(), id)
        .await?
        .ok_or_else(|| IdentityError::not_found("project", id))
}

async fn user_or_404(idn: &Identity, id: &str) -> Result<User, IdentityError> {
    store::get_user(idn.db().reader(), id)
        .await?
        .ok_or_else(|| IdentityError::not_found("user", id))
}

async fn role_or_404(idn: &Identity, id: &str) -> Result<Role, IdentityError> {
    store::get_role(idn.db().reader(), id)
        .await?
        .ok_or_else(|| IdentityError::not_found("role", id))
}

// ---- domains ----

async fn list_domains(State(idn): State<Identity>, caller: Caller, q: Params) -> Res {
    caller.require_admin("list_domains")?;
    let items = store::list_domains(idn.db().reader())
        .await?
        .iter()
        .filter(|d| matches(q.get("name"), &d.name) && matches_bool(&q, d.enabled))
        .map(|d| render_domain(&idn, d))
        .collect();
    Ok(list(&idn, "domains", "domains", items))
}

async fn get_domain(State(idn): State<Identity>, caller: Caller, Path(id): Path<String>) -> Res {
    // Existence first, then policy, as Keystone builds the policy target from the entity.
    let d = domain_or_404(&idn, &id).await?;
    if !caller.info.is_admin() && caller.info.acting_domain() != id {
        return Err(IdentityError::forbidden("get_domain"));
    }
    Ok(ok(json!({"domain": render_domain(&idn, &d)})))
}

async fn create_domain(State(idn): State<Identity>, caller: Caller, body: Bytes) -> Res {
    caller.require_admin("create_domain")?;
    let mut m = entity(&body, "domain")?;
    let name = valid_name(take_str(&mut m, "name")?, true)?.unwrap_or_default();
    let mut d = Domain {
        id: new_id(),
        name,
        description: take_str(&mut m, "description")?.unwrap_or_default(),
        enabled: take_bool(&mut m, "enabled")?.unwrap_or(true),
        extra: Obj::new(),
    };
    merge_extra(&mut d.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::insert_domain(&mut tx, &d, false)
        .await
        .map_err(conflict("domain", &d.name))?;
    idn.db().commit(tx).await?;
    Ok(created(json!({"domain": render_domain(&idn, &d)})))
}

async fn update_domain(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    caller.require_admin("update_domain")?;
    let mut m = entity(&body, "domain")?;
    let mut d = domain_or_404(&idn, &id).await?;
    if let Some(n) = valid_name(take_str(&mut m, "name")?, false)? {
        d.name = n;
    }
    if let Some(desc) = take_str(&mut m, "description")? {
        d.description = desc;
    }
    let disabling = take_bool(&mut m, "enabled")?.is_some_and(|e| {
        let was = d.enabled;
        d.enabled = e;
        was && !e
    });
    merge_extra(&mut d.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::update_domain(&mut tx, &d)
        .await
        .map_err(conflict("domain", &d.name))?;
    idn.db().commit(tx).await?;
    if disabling {
        idn.tokens().clear();
    }
    Ok(ok(json!({"domain": render_domain(&idn, &d)})))
}

async fn delete_domain(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("delete_domain")?;
    let d = domain_or_404(&idn, &id).await?;
    if d.enabled {
        return Err(IdentityError::ForbiddenAction(
            "Cannot delete a domain that is enabled, please disable it first.".into(),
        ));
    }
    let mut tx = idn.db().begin().await?;
    store::delete_domain(&mut tx, &id).await?;
    idn.db().commit(tx).await?;
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

// ---- projects ----

async fn list_projects(State(idn): State<Identity>, caller: Caller, q: Params) -> Res {
    caller.require_admin("list_projects")?;
    let items = store::list_projects(idn.db().reader())
        .await?
        .iter()
        .filter(|p| {
            matches(q.get("name"), &p.name)
                && matches(q.get("domain_id"), &p.domain_id)
                && matches(q.get("parent_id"), &p.domain_id)
                && matches_bool(&q, p.enabled)
                && q.flag("is_domain") != Some(true)
        })
        .map(|p| render_project(&idn, p))
        .collect();
    Ok(list(&idn, "projects", "projects", items))
}

async fn get_project(State(idn): State<Identity>, caller: Caller, Path(id): Path<String>) -> Res {
    let p = project_or_404(&idn, &id).await?;
    let own =
        matches!(&caller.info.scope, crate::token::Scope::Project { id: pid, .. } if *pid == id);
    if !own && !caller.info.is_admin() {
        return Err(IdentityError::forbidden("get_project"));
    }
    Ok(ok(json!({"project": render_project(&idn, &p)})))
}

async fn create_project(State(idn): State<Identity>, caller: Caller, body: Bytes) -> Res {
    caller.require_admin("create_project")?;
    let mut m = entity(&body, "project")?;
    let name = valid_name(take_str(&mut m, "name")?, true)?.unwrap_or_default();
    let domain_id =
        take_str(&mut m, "domain_id")?.unwrap_or_else(|| caller.info.acting_domain().to_string());
    domain_or_404(&idn, &domain_id).await?;
    if take_bool(&mut m, "is_domain")? == Some(true) {
        return Err(IdentityError::invalid(
            "projects acting as domains are not supported",
        ));
    }
    if let Some(parent) = take_str(&mut m, "parent_id")?
        && parent != domain_id
    {
        return Err(IdentityError::invalid(
            "'parent_id' must be the project's domain: project hierarchies are not supported",
        ));
    }
    let mut p = Project {
        id: new_id(),
        name,
        domain_id,
        description: take_str(&mut m, "description")?.unwrap_or_default(),
        enabled: take_bool(&mut m, "enabled")?.unwrap_or(true),
        extra: Obj::new(),
    };
    merge_extra(&mut p.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::insert_project(&mut tx, &p, false)
        .await
        .map_err(conflict("project", &p.name))?;
    idn.db().commit(tx).await?;
    Ok(created(json!({"project": render_project(&idn, &p)})))
}

async fn update_project(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    caller.require_admin("update_project")?;
    let mut m = entity(&body, "project")?;
    let mut p = project_or_404(&idn, &id).await?;
    if let Some(d) = take_str(&mut m, "domain_id")?
        && d != p.domain_id
    {
        return Err(IdentityError::invalid(
            "a project cannot move to another domain",
        ));
    }
    if let Some(n) = valid_name(take_str(&mut m, "name")?, false)? {
        p.name = n;
    }
    if let Some(desc) = take_str(&mut m, "description")? {
        p.description = desc;
    }
    let disabling = take_bool(&mut m, "enabled")?.is_some_and(|e| {
        let was = p.enabled;
        p.enabled = e;
        was && !e
    });
    merge_extra(&mut p.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::update_project(&mut tx, &p)
        .await
        .map_err(conflict("project", &p.name))?;
    idn.db().commit(tx).await?;
    if disabling {
        idn.tokens().clear();
    }
    Ok(ok(json!({"project": render_project(&idn, &p)})))
}

async fn delete_project(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("delete_project")?;
    let mut tx = idn.db().begin().await?;
    let found = store::delete_project(&mut tx, &id).await?;
    idn.db().commit(tx).await?;
    if !found {
        return Err(IdentityError::not_found("project", &id));
    }
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

// ---- users ----

async fn list_users(State(idn): State<Identity>, caller: Caller, q: Params) -> Res {
    caller.require_admin("list_users")?;
    let items = store::list_users(idn.db().reader())
        .await?
        .iter()
        .filter(|u| {
            matches(q.get("name"), &u.name)
                && matches(q.get("domain_id"), &u.domain_id)
                && matches_bool(&q, u.enabled)
        })
        .map(|u| render_user(&idn, u))
        .collect();
    Ok(list(&idn, "users", "users", items))
}

async fn get_user(State(idn): State<Identity>, caller: Caller, Path(id): Path<String>) -> Res {
    let u = user_or_404(&idn, &id).await?;
    if caller.info.user_id != id {
        caller.require_admin("get_user")?;
    }
    Ok(ok(json!({"user": render_user(&idn, &u)})))
}

/// A password field: a string (hashed here) or null (no password).
async fn take_password(m: &mut Obj) -> Result<Option<Option<String>>, IdentityError> {
    match m.remove("password") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(password::hash(&s).await?))),
        Some(_) => Err(IdentityError::invalid("'password' must be a string")),
    }
}

async fn create_user(State(idn): State<Identity>, caller: Caller, body: Bytes) -> Res {
    caller.require_admin("create_user")?;
    let mut m = entity(&body, "user")?;
    let name = valid_name(take_str(&mut m, "name")?, true)?.unwrap_or_default();
    let domain_id =
        take_str(&mut m, "domain_id")?.unwrap_or_else(|| caller.info.acting_domain().to_string());
    domain_or_404(&idn, &domain_id).await?;
    let mut u = User {
        id: new_id(),
        name,
        domain_id,
        enabled: take_bool(&mut m, "enabled")?.unwrap_or(true),
        password_hash: None,
        default_project_id: take_str(&mut m, "default_project_id")?,
        extra: Obj::new(),
    };
    u.password_hash = take_password(&mut m).await?.flatten();
    merge_extra(&mut u.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::insert_user(&mut tx, &u, false)
        .await
        .map_err(conflict("user", &u.name))?;
    idn.db().commit(tx).await?;
    Ok(created(json!({"user": render_user(&idn, &u)})))
}

async fn update_user(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    caller.require_admin("update_user")?;
    let mut m = entity(&body, "user")?;
    let mut u = user_or_404(&idn, &id).await?;
    if let Some(d) = take_str(&mut m, "domain_id")?
        && d != u.domain_id
    {
        return Err(IdentityError::invalid(
            "a user cannot move to another domain",
        ));
    }
    if let Some(n) = valid_name(take_str(&mut m, "name")?, false)? {
        u.name = n;
    }
    if m.contains_key("default_project_id") {
        u.default_project_id = take_str(&mut m, "default_project_id")?;
    }
    let mut shrink = take_bool(&mut m, "enabled")?.is_some_and(|e| {
        let was = u.enabled;
        u.enabled = e;
        was && !e
    });
    if let Some(p) = take_password(&mut m).await? {
        u.password_hash = p;
        shrink = true;
    }
    merge_extra(&mut u.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::update_user(&mut tx, &u)
        .await
        .map_err(conflict("user", &u.name))?;
    if shrink {
        store::revoke_user_tokens(&mut tx, &u.id).await?;
    }
    idn.db().commit(tx).await?;
    if shrink {
        idn.tokens().clear();
    }
    Ok(ok(json!({"user": render_user(&idn, &u)})))
}

async fn delete_user(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("delete_user")?;
    let mut tx = idn.db().begin().await?;
    let found = store::delete_user(&mut tx, &id).await?;
    idn.db().commit(tx).await?;
    if !found {
        return Err(IdentityError::not_found("user", &id));
    }
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

/// Enabled projects on which `user_id` has a role.
pub(crate) async fn user_projects(
    idn: &Identity,
    user_id: &str,
) -> Result<Vec<Value>, IdentityError> {
    let db = idn.db().reader();
    let mut out = Vec::new();
    for pid in store::targets_of(db, user_id, "project").await? {
        if let Some(p) = store::get_project(db, &pid).await?.filter(|p| p.enabled) {
            out.push(render_project(idn, &p));
        }
    }
    Ok(out)
}

async fn list_user_projects(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
) -> Res {
    if caller.info.user_id != id {
        caller.require_admin("list_user_projects")?;
    }
    user_or_404(&idn, &id).await?;
    let items = user_projects(&idn, &id).await?;
    Ok(list(
        &idn,
        "projects",
        &format!("users/{id}/projects"),
        items,
    ))
}

async fn empty_groups(State(idn): State<Identity>, _caller: Caller) -> Res {
    Ok(list(&idn, "groups", "groups", Vec::new()))
}

/// `POST /v3/users/{id}/password`: a user changes its own password.
async fn change_password(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<StatusCode, IdentityError> {
    if caller.info.user_id != id {
        return Err(IdentityError::forbidden("change_password"));
    }
    let mut m = entity(&body, "user")?;
    let original = take_str(&mut m, "original_password")?
        .ok_or_else(|| IdentityError::invalid("'original_password' is a required property"))?;
    let new = take_str(&mut m, "password")?
        .ok_or_else(|| IdentityError::invalid("'password' is a required property"))?;
    let mut u = user_or_404(&idn, &id).await?;
    let valid = match &u.password_hash {
        Some(phc) => idn.passwords().verify(&u.id, phc, &original).await?,
        None => false,
    };
    if !valid {
        return Err(IdentityError::unauthorized("wrong original password"));
    }
    u.password_hash = Some(password::hash(&new).await?);
    let mut tx = idn.db().begin().await?;
    store::update_user(&mut tx, &u).await?;
    store::revoke_user_tokens(&mut tx, &u.id).await?;
    idn.db().commit(tx).await?;
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

// ---- roles ----

async fn list_roles(State(idn): State<Identity>, caller: Caller, q: Params) -> Res {
    caller.require_admin("list_roles")?;
    let items = store::list_roles(idn.db().reader())
        .await?
        .iter()
        .filter(|r| matches(q.get("name"), &r.name))
        .map(|r| render_role(&idn, r))
        .collect();
    Ok(list(&idn, "roles", "roles", items))
}

async fn get_role(State(idn): State<Identity>, caller: Caller, Path(id): Path<String>) -> Res {
    caller.require_admin("get_role")?;
    let r = role_or_404(&idn, &id).await?;
    Ok(ok(json!({"role": render_role(&idn, &r)})))
}

async fn create_role(State(idn): State<Identity>, caller: Caller, body: Bytes) -> Res {
    caller.require_admin("create_role")?;
    let mut m = entity(&body, "role")?;
    let name = valid_name(take_str(&mut m, "name")?, true)?.unwrap_or_default();
    if take_str(&mut m, "domain_id")?.is_some() {
        return Err(IdentityError::invalid(
            "domain-specific roles are not supported",
        ));
    }
    let mut r = Role {
        id: new_id(),
        name,
        description: take_str(&mut m, "description")?.unwrap_or_default(),
        extra: Obj::new(),
    };
    merge_extra(&mut r.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::insert_role(&mut tx, &r, false)
        .await
        .map_err(conflict("role", &r.name))?;
    idn.db().commit(tx).await?;
    Ok(created(json!({"role": render_role(&idn, &r)})))
}

async fn update_role(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Res {
    caller.require_admin("update_role")?;
    let mut m = entity(&body, "role")?;
    let mut r = role_or_404(&idn, &id).await?;
    if let Some(n) = valid_name(take_str(&mut m, "name")?, false)? {
        r.name = n;
    }
    if let Some(d) = take_str(&mut m, "description")? {
        r.description = d;
    }
    merge_extra(&mut r.extra, m)?;
    let mut tx = idn.db().begin().await?;
    store::update_role(&mut tx, &r)
        .await
        .map_err(conflict("role", &r.name))?;
    idn.db().commit(tx).await?;
    // A renamed role changes what tokens carry.
    idn.tokens().clear();
    Ok(ok(json!({"role": render_role(&idn, &r)})))
}

async fn delete_role(
    State(idn): State<Identity>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("delete_role")?;
    let mut tx = idn.db().begin().await?;
    let found = store::delete_role(&mut tx, &id).await?;
    idn.db().commit(tx).await?;
    if !found {
        return Err(IdentityError::not_found("role", &id));
    }
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

// ---- grants ----

async fn grant_target(idn: &Identity, kind: &str, id: &str) -> Result<Target, IdentityError> {
    match kind {
        "project" => Ok(Target::Project(project_or_404(idn, id).await?.id)),
        "domain" => Ok(Target::Domain(domain_or_404(idn, id).await?.id)),
        _ => Ok(Target::System),
    }
}

async fn list_grants(idn: &Identity, caller: &Caller, target: Target, user: &str) -> Res {
    caller.require_admin("list_grants")?;
    user_or_404(idn, user).await?;
    let items = store::roles_on(idn.db().reader(), user, &target)
        .await?
        .iter()
        .map(|r| render_role(idn, r))
        .collect();
    let path = match &target {
        Target::System => format!("system/users/{user}/roles"),
        t => format!("{}s/{}/users/{user}/roles", t.kind(), t.id()),
    };
    Ok(list(idn, "roles", &path, items))
}

async fn put_grant(
    idn: &Identity,
    caller: &Caller,
    target: Target,
    user: &str,
    role: &str,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("create_grant")?;
    user_or_404(idn, user).await?;
    role_or_404(idn, role).await?;
    let mut tx = idn.db().begin().await?;
    store::grant(&mut tx, user, &target, role).await?;
    idn.db().commit(tx).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn check_grant(
    idn: &Identity,
    caller: &Caller,
    target: Target,
    user: &str,
    role: &str,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("check_grant")?;
    user_or_404(idn, user).await?;
    role_or_404(idn, role).await?;
    if store::has_grant(idn.db().reader(), user, &target, role).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(IdentityError::not_found("grant", role))
    }
}

async fn delete_grant(
    idn: &Identity,
    caller: &Caller,
    target: Target,
    user: &str,
    role: &str,
) -> Result<StatusCode, IdentityError> {
    caller.require_admin("revoke_grant")?;
    let mut tx = idn.db().begin().await?;
    let found = store::revoke_grant(&mut tx, user, &target, role).await?;
    idn.db().commit(tx).await?;
    if !found {
        return Err(IdentityError::not_found("grant", role));
    }
    idn.tokens().clear();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_project_grants(
    State(idn): State<Identity>,
    caller: Caller,
    Path((p, u)): Path<(String, String)>,
) -> Res {
    let t = grant_target(&idn, "project", &p).await?;
    list_grants(&idn, &caller, t, &u).await
}

async fn check_project_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    let t = grant_target(&idn, "project", &p).await?;
    check_grant(&idn, &caller, t, &u, &r).await
}

async fn put_project_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    let t = grant_target(&idn, "project", &p).await?;
    put_grant(&idn, &caller, t, &u, &r).await
}

async fn delete_project_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((p, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    delete_grant(&idn, &caller, Target::Project(p), &u, &r).await
}

async fn list_domain_grants(
    State(idn): State<Identity>,
    caller: Caller,
    Path((d, u)): Path<(String, String)>,
) -> Res {
    let t = grant_target(&idn, "domain", &d).await?;
    list_grants(&idn, &caller, t, &u).await
}

async fn check_domain_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((d, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    let t = grant_target(&idn, "domain", &d).await?;
    check_grant(&idn, &caller, t, &u, &r).await
}

async fn put_domain_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((d, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    let t = grant_target(&idn, "domain", &d).await?;
    put_grant(&idn, &caller, t, &u, &r).await
}

async fn delete_domain_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((d, u, r)): Path<(String, String, String)>,
) -> Result<StatusCode, IdentityError> {
    delete_grant(&idn, &caller, Target::Domain(d), &u, &r).await
}

async fn list_system_grants(
    State(idn): State<Identity>,
    caller: Caller,
    Path(u): Path<String>,
) -> Res {
    list_grants(&idn, &caller, Target::System, &u).await
}

async fn check_system_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((u, r)): Path<(String, String)>,
) -> Result<StatusCode, IdentityError> {
    check_grant(&idn, &caller, Target::System, &u, &r).await
}

async fn put_system_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((u, r)): Path<(String, String)>,
) -> Result<StatusCode, IdentityError> {
    put_grant(&idn, &caller, Target::System, &u, &r).await
}

async fn delete_system_grant(
    State(idn): State<Identity>,
    caller: Caller,
    Path((u, r)): Path<(String, String)>,
) -> Result<StatusCode, IdentityError> {
    delete_grant(&idn, &caller, Target::System, &u, &r).await
}

/// `GET /v3/role_assignments` with Keystone's filters, `effective` (adds implied roles) and
/// `include_names`.
async fn role_assignments(State(idn): State<Identity>, caller: Caller, q: Params) -> Res {
    caller.require_admin("list_role_assignments")?;
    if q.get("group.id").is_some() {
        return Ok(list(
            &idn,
            "role_assignments",
            "role_assignments",
            Vec::new(),
        ));
    }
    let db = idn.db().reader();
    let roles = store::list_roles(db).await?;
    let role_by_id = |id: &str| roles.iter().find(|r| r.id == id);
    let role_by_name = |n: &str| roles.iter().find(|r| r.name.eq_ignore_ascii_case(n));
    let effective = q.flag("effective").unwrap_or(false);
    let names = q.flag("include_names").unwrap_or(false);
    let want_system = q.get("scope.system").is_some();
    // (assignment, prior role id when implied)
    let mut rows: Vec<(store::Assignment, Option<String>)> = Vec::new();
    for a in store::list_assignments(db).await? {
        let scope_ok = match &a.target {
            Target::Project(p) => {
                !want_system
                    && matches(q.get("scope.project.id"), p)
                    && q.get("scope.domain.id").is_none()
            }
            Target::Domain(d) => {
                !want_system
                    && matches(q.get("scope.domain.id"), d)
                    && q.get("scope.project.id").is_none()
            }
            Target::System => {
                q.get("scope.project.id").is_none() && q.get("scope.domain.id").is_none()
            }
        };
        if !scope_ok || !matches(q.get("user.id"), &a.user_id) {
            continue;
        }
        if effective && let Some(prior) = role_by_id(&a.role_id) {
            for n in implied(&prior.name) {
                if let Some(r) = role_by_name(n) {
                    let mut imp = a.clone();
                    imp.role_id = r.id.clone();
                    rows.push((imp, Some(prior.id.clone())));
                }
            }
        }
        rows.push((a, None));
    }
    let mut seen = std::collections::HashSet::new();
    rows.retain(|(a, _)| {
        matches(q.get("role.id"), &a.role_id)
            && seen.insert((a.user_id.clone(), a.target.clone(), a.role_id.clone()))
    });
    let (users, projects, domains) = if names {
        (
            store::list_users(db).await?,
            store::list_projects(db).await?,
            store::list_domains(db).await?,
        )
    } else {
        Default::default()
    };
    let dom = |id: &str| -> Value {
        let name = domains.iter().find(|d| d.id == id).map(|d| d.name.clone());
        json!({"id": id, "name": name})
    };
    let base = &idn.cfg().identity_url;
    let mut items = Vec::new();
    for (a, prior) in rows {
        let mut role = json!({"id": a.role_id});
        let mut user = json!({"id": a.user_id});
        let mut scope = match &a.target {
            Target::Project(p) => json!({"project": {"id": p}}),
            Target::Domain(d) => json!({"domain": {"id": d}}),
            Target::System => json!({"system": {"all": true}}),
        };
        if names {
            if let Some(r) = role_by_id(&a.role_id) {
                role["name"] = json!(r.name);
            }
            if let Some(u) = users.iter().find(|u| u.id == a.user_id) {
                user["name"] = json!(u.name);
                user["domain"] = dom(&u.domain_id);
            }
            match &a.target {
                Target::Project(pid) => {
                    if let Some(p) = projects.iter().find(|p| &p.id == pid) {
                        scope["project"]["name"] = json!(p.name);
                        scope["project"]["domain"] = dom(&p.domain_id);
                    }
                }
                Target::Domain(did) => {
                    if let Some(d) = domains.iter().find(|d| &d.id == did) {
                        scope["domain"]["name"] = json!(d.name);
                    }
                }
                Target::System => {}
            }
        }
        let path = match &a.target {
            Target::System => format!("system/users/{}/roles", a.user_id),
            t => format!("{}s/{}/users/{}/roles", t.kind(), t.id(), a.user_id),
        };
        let mut links = json!({"assignment": format!("{base}/v3/{path}/{}", prior.as_deref().unwrap_or(&a.role_id))});
        if let Some(p) = &prior {
            links["prior_role"] = json!(format!("{base}/v3/roles/{p}"));
        }
        items.push(json!({"role": role, "user": user, "scope": scope, "links": links}));
    }
    Ok(list(&idn, "role_assignments", "role_assignments", items))
}

// ---- catalog entities (read-only) ----

fn find_by_id(items: Vec<Value>, id: &str) -> Option<Value> {
    items.into_iter().find(|v| v["id"] == id)
}

async fn list_services(State(idn): State<Identity>, _caller: Caller, q: Params) -> Res {
    let items = idn
        .catalog()
        .services()
        .into_iter()
        .filter(|s| q.get("type").is_none_or(|t| s["type"] == t))
        .collect();
    Ok(list(&idn, "services", "services", items))
}

async fn get_service(State(idn): State<Identity>, _caller: Caller, Path(id): Path<String>) -> Res {
    let s = find_by_id(idn.catalog().services(), &id)
        .ok_or_else(|| IdentityError::not_found("service", &id))?;
    Ok(ok(json!({ "service": s })))
}

async fn list_endpoints(State(idn): State<Identity>, _caller: Caller, q: Params) -> Res {
    let items = idn
        .catalog()
        .endpoints()
        .into_iter()
        .filter(|e| {
            q.get("interface").is_none_or(|i| e["interface"] == i)
                && q.get("service_id").is_none_or(|s| e["service_id"] == s)
                && q.get("region_id").is_none_or(|r| e["region_id"] == r)
        })
        .collect();
    Ok(list(&idn, "endpoints", "endpoints", items))
}

async fn get_endpoint(State(idn): State<Identity>, _caller: Caller, Path(id): Path<String>) -> Res {
    let e = find_by_id(idn.catalog().endpoints(), &id)
        .ok_or_else(|| IdentityError::not_found("endpoint", &id))?;
    Ok(ok(json!({ "endpoint": e })))
}

async fn list_regions(State(idn): State<Identity>, _caller: Caller) -> Res {
    Ok(list(&idn, "regions", "regions", idn.catalog().regions()))
}

async fn get_region(State(idn): State<Identity>, _caller: Caller, Path(id): Path<String>) -> Res {
    let r = find_by_id(idn.catalog().regions(), &id)
        .ok_or_else(|| IdentityError::not_found("region", &id))?;
    Ok(ok(json!({ "region": r })))
}
