//! SQL access to the identity tables (`identity_*`, see migrations `2_identity.sql`).
//!
//! Owns row mapping for domains, projects, users, roles, role assignments and token records.
//! Statements are portable between SQLite and PostgreSQL (`$N` placeholders, TEXT ids,
//! BIGINT booleans and times). Uniqueness (names per domain, assignments) is enforced by the
//! schema, never by check-then-insert. This module never decides policy and never sees a
//! token or a password in clear: only hashes.

use serde_json::{Map, Value};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Executor, Row};

/// Free-form JSON attributes kept beside the fixed columns.
pub(crate) type Extra = Map<String, Value>;

fn parse_extra(s: &str) -> Extra {
    match serde_json::from_str::<Value>(s) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

fn extra_text(e: &Extra) -> String {
    Value::Object(e.clone()).to_string()
}

/// A domain row.
#[derive(Debug, Clone)]
pub(crate) struct Domain {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) enabled: bool,
    pub(crate) extra: Extra,
}

/// A project row.
#[derive(Debug, Clone)]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) domain_id: String,
    pub(crate) description: String,
    pub(crate) enabled: bool,
    pub(crate) extra: Extra,
}

/// A user row.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) domain_id: String,
    pub(crate) enabled: bool,
    pub(crate) password_hash: Option<String>,
    pub(crate) default_project_id: Option<String>,
    pub(crate) extra: Extra,
}

/// A role row.
#[derive(Debug, Clone)]
pub(crate) struct Role {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) extra: Extra,
}

/// What a role assignment (or a token) is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// A project id.
    Project(String),
    /// A domain id.
    Domain(String),
    /// The whole deployment (`system: all`).
    System,
}

impl Target {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Target::Project(_) => "project",
            Target::Domain(_) => "domain",
            Target::System => "system",
        }
    }

    pub(crate) fn id(&self) -> &str {
        match self {
            Target::Project(id) | Target::Domain(id) => id,
            Target::System => "all",
        }
    }

    pub(crate) fn from_parts(kind: &str, id: String) -> Option<Target> {
        match kind {
            "project" => Some(Target::Project(id)),
            "domain" => Some(Target::Domain(id)),
            "system" => Some(Target::System),
            _ => None,
        }
    }
}

/// A role assignment row.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    pub(crate) user_id: String,
    pub(crate) target: Target,
    pub(crate) role_id: String,
}

/// A token row (keyed by the token's sha256).
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub(crate) user_id: String,
    /// None: unscoped.
    pub(crate) scope: Option<Target>,
    pub(crate) methods: Vec<String>,
    pub(crate) audit_ids: Vec<String>,
    /// Unix microseconds.
    pub(crate) issued_at: i64,
    /// Unix microseconds.
    pub(crate) expires_at: i64,
    pub(crate) revoked: bool,
}

fn b(v: bool) -> i64 {
    i64::from(v)
}

const DOMAIN: &str = "SELECT id, name, description, enabled, extra FROM identity_domains";
const PROJECT: &str =
    "SELECT id, name, domain_id, description, enabled, extra FROM identity_projects";
const USER: &str = "SELECT id, name, domain_id, enabled, password_hash, default_project_id, extra \
                    FROM identity_users";
const ROLE: &str = "SELECT id, name, description, extra FROM identity_roles";

fn domain(r: &AnyRow) -> Result<Domain, sqlx::Error> {
    Ok(Domain {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        enabled: r.try_get::<i64, _>(3)? != 0,
        extra: parse_extra(&r.try_get::<String, _>(4)?),
    })
}

fn project(r: &AnyRow) -> Result<Project, sqlx::Error> {
    Ok(Project {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        domain_id: r.try_get(2)?,
        description: r.try_get(3)?,
        enabled: r.try_get::<i64, _>(4)? != 0,
        extra: parse_extra(&r.try_get::<String, _>(5)?),
    })
}

fn user(r: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        domain_id: r.try_get(2)?,
        enabled: r.try_get::<i64, _>(3)? != 0,
        password_hash: r.try_get(4)?,
        default_project_id: r.try_get(5)?,
        extra: parse_extra(&r.try_get::<String, _>(6)?),
    })
}

fn role(r: &AnyRow) -> Result<Role, sqlx::Error> {
    Ok(Role {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        description: r.try_get(2)?,
        extra: parse_extra(&r.try_get::<String, _>(3)?),
    })
}

async fn one<'c, E, T>(
    ex: E,
    sql: &str,
    arg: &str,
    map: fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Option<T>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    match sqlx::query(sql).bind(arg).fetch_optional(ex).await? {
        Some(r) => Ok(Some(map(&r)?)),
        None => Ok(None),
    }
}

async fn all<'c, E, T>(
    ex: E,
    sql: &str,
    map: fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(sql)
        .fetch_all(ex)
        .await?
        .iter()
        .map(map)
        .collect()
}

// ---- domains ----

pub(crate) async fn get_domain<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<Domain>, sqlx::Error> {
    one(ex, &format!("{DOMAIN} WHERE id = $1"), id, domain).await
}

pub(crate) async fn domain_by_name<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    name: &str,
) -> Result<Option<Domain>, sqlx::Error> {
    one(ex, &format!("{DOMAIN} WHERE name = $1"), name, domain).await
}

pub(crate) async fn list_domains<'c, E: Executor<'c, Database = Any>>(
    ex: E,
) -> Result<Vec<Domain>, sqlx::Error> {
    all(ex, &format!("{DOMAIN} ORDER BY id"), domain).await
}

/// Inserts a domain; returns false if one with that id or name exists.
pub(crate) async fn insert_domain(
    c: &mut AnyConnection,
    d: &Domain,
    ignore_conflict: bool,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO identity_domains (id, name, description, enabled, extra) \
         VALUES ($1, $2, $3, $4, $5){}",
        if ignore_conflict {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    let r = sqlx::query(&sql)
        .bind(&d.id)
        .bind(&d.name)
        .bind(&d.description)
        .bind(b(d.enabled))
        .bind(extra_text(&d.extra))
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(crate) async fn update_domain(c: &mut AnyConnection, d: &Domain) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_domains SET name = $1, description = $2, enabled = $3, extra = $4 \
         WHERE id = $5",
    )
    .bind(&d.name)
    .bind(&d.description)
    .bind(b(d.enabled))
    .bind(extra_text(&d.extra))
    .bind(&d.id)
    .execute(c)
    .await?;
    Ok(())
}

/// Deletes a domain with everything in it (projects, users, their assignments and tokens).
pub(crate) async fn delete_domain(c: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    let stmts = [
        "DELETE FROM identity_assignments WHERE target_type = 'domain' AND target_id = $1",
        "DELETE FROM identity_assignments WHERE target_type = 'project' AND target_id IN \
         (SELECT id FROM identity_projects WHERE domain_id = $1)",
        "DELETE FROM identity_assignments WHERE actor_id IN \
         (SELECT id FROM identity_users WHERE domain_id = $1)",
        "UPDATE identity_tokens SET revoked = 1 WHERE user_id IN \
         (SELECT id FROM identity_users WHERE domain_id = $1)",
        "DELETE FROM identity_users WHERE domain_id = $1",
        "DELETE FROM identity_projects WHERE domain_id = $1",
    ];
    for s in stmts {
        sqlx::query(s).bind(id).execute(&mut *c).await?;
    }
    let r = sqlx::query("DELETE FROM identity_domains WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

// ---- projects ----

pub(crate) async fn get_project<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<Project>, sqlx::Error> {
    one(ex, &format!("{PROJECT} WHERE id = $1"), id, project).await
}

pub(crate) async fn project_by_name<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    domain_id: &str,
    name: &str,
) -> Result<Option<Project>, sqlx::Error> {
    let sql = format!("{PROJECT} WHERE domain_id = $1 AND name = $2");
    match sqlx::query(&sql)
        .bind(domain_id)
        .bind(name)
        .fetch_optional(ex)
        .await?
    {
        Some(r) => Ok(Some(project(&r)?)),
        None => Ok(None),
    }
}

pub(crate) async fn list_projects<'c, E: Executor<'c, Database = Any>>(
    ex: E,
) -> Result<Vec<Project>, sqlx::Error> {
    all(ex, &format!("{PROJECT} ORDER BY id"), project).await
}

pub(crate) async fn insert_project(
    c: &mut AnyConnection,
    p: &Project,
    ignore_conflict: bool,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO identity_projects (id, name, domain_id, description, enabled, extra) \
         VALUES ($1, $2, $3, $4, $5, $6){}",
        if ignore_conflict {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    let r = sqlx::query(&sql)
        .bind(&p.id)
        .bind(&p.name)
        .bind(&p.domain_id)
        .bind(&p.description)
        .bind(b(p.enabled))
        .bind(extra_text(&p.extra))
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(crate) async fn update_project(c: &mut AnyConnection, p: &Project) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_projects SET name = $1, description = $2, enabled = $3, extra = $4 \
         WHERE id = $5",
    )
    .bind(&p.name)
    .bind(&p.description)
    .bind(b(p.enabled))
    .bind(extra_text(&p.extra))
    .bind(&p.id)
    .execute(c)
    .await?;
    Ok(())
}

/// Deletes a project, its role assignments, and revokes tokens scoped to it.
pub(crate) async fn delete_project(c: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query(
        "DELETE FROM identity_assignments WHERE target_type = 'project' AND target_id = $1",
    )
    .bind(id)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "UPDATE identity_tokens SET revoked = 1 WHERE scope_type = 'project' AND scope_id = $1",
    )
    .bind(id)
    .execute(&mut *c)
    .await?;
    let r = sqlx::query("DELETE FROM identity_projects WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

// ---- users ----

pub(crate) async fn get_user<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<User>, sqlx::Error> {
    one(ex, &format!("{USER} WHERE id = $1"), id, user).await
}

pub(crate) async fn user_by_name<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    domain_id: &str,
    name: &str,
) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("{USER} WHERE domain_id = $1 AND name = $2");
    match sqlx::query(&sql)
        .bind(domain_id)
        .bind(name)
        .fetch_optional(ex)
        .await?
    {
        Some(r) => Ok(Some(user(&r)?)),
        None => Ok(None),
    }
}

pub(crate) async fn list_users<'c, E: Executor<'c, Database = Any>>(
    ex: E,
) -> Result<Vec<User>, sqlx::Error> {
    all(ex, &format!("{USER} ORDER BY id"), user).await
}

pub(crate) async fn insert_user(
    c: &mut AnyConnection,
    u: &User,
    ignore_conflict: bool,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO identity_users \
         (id, name, domain_id, enabled, password_hash, default_project_id, extra) \
         VALUES ($1, $2, $3, $4, $5, $6, $7){}",
        if ignore_conflict {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    let r = sqlx::query(&sql)
        .bind(&u.id)
        .bind(&u.name)
        .bind(&u.domain_id)
        .bind(b(u.enabled))
        .bind(u.password_hash.clone())
        .bind(u.default_project_id.clone())
        .bind(extra_text(&u.extra))
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub(crate) async fn update_user(c: &mut AnyConnection, u: &User) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_users SET name = $1, enabled = $2, password_hash = $3, \
         default_project_id = $4, extra = $5 WHERE id = $6",
    )
    .bind(&u.name)
    .bind(b(u.enabled))
    .bind(u.password_hash.clone())
    .bind(u.default_project_id.clone())
    .bind(extra_text(&u.extra))
    .bind(&u.id)
    .execute(c)
    .await?;
    Ok(())
}

/// Deletes a user, its role assignments, and revokes its tokens.
pub(crate) async fn delete_user(c: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM identity_assignments WHERE actor_id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    revoke_user_tokens(&mut *c, id).await?;
    let r = sqlx::query("DELETE FROM identity_users WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

// ---- roles ----

pub(crate) async fn get_role<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    id: &str,
) -> Result<Option<Role>, sqlx::Error> {
    one(ex, &format!("{ROLE} WHERE id = $1"), id, role).await
}

pub(crate) async fn role_by_name<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    name: &str,
) -> Result<Option<Role>, sqlx::Error> {
    one(ex, &format!("{ROLE} WHERE name = $1"), name, role).await
}

pub(crate) async fn list_roles<'c, E: Executor<'c, Database = Any>>(
    ex: E,
) -> Result<Vec<Role>, sqlx::Error> {
    all(ex, &format!("{ROLE} ORDER BY id"), role).await
}

pub(crate) async fn insert_role(
    c: &mut AnyConnection,
    r: &Role,
    ignore_conflict: bool,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO identity_roles (id, name, description, extra) VALUES ($1, $2, $3, $4){}",
        if ignore_conflict {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        }
    );
    let res = sqlx::query(&sql)
        .bind(&r.id)
        .bind(&r.name)
        .bind(&r.description)
        .bind(extra_text(&r.extra))
        .execute(c)
        .await?;
    Ok(res.rows_affected() == 1)
}

pub(crate) async fn update_role(c: &mut AnyConnection, r: &Role) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE identity_roles SET name = $1, description = $2, extra = $3 WHERE id = $4")
        .bind(&r.name)
        .bind(&r.description)
        .bind(extra_text(&r.extra))
        .bind(&r.id)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn delete_role(c: &mut AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM identity_assignments WHERE role_id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    let r = sqlx::query("DELETE FROM identity_roles WHERE id = $1")
        .bind(id)
        .execute(&mut *c)
        .await?;
    Ok(r.rows_affected() == 1)
}

// ---- assignments ----

fn assignment(r: &AnyRow) -> Result<Option<Assignment>, sqlx::Error> {
    let kind: String = r.try_get(1)?;
    let Some(target) = Target::from_parts(&kind, r.try_get(2)?) else {
        return Ok(None);
    };
    Ok(Some(Assignment {
        user_id: r.try_get(0)?,
        target,
        role_id: r.try_get(3)?,
    }))
}

const ASSIGNMENT: &str =
    "SELECT actor_id, target_type, target_id, role_id FROM identity_assignments";

pub(crate) async fn list_assignments<'c, E: Executor<'c, Database = Any>>(
    ex: E,
) -> Result<Vec<Assignment>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "{ASSIGNMENT} ORDER BY actor_id, target_id, role_id"
    ))
    .fetch_all(ex)
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        out.extend(assignment(r)?);
    }
    Ok(out)
}

/// Direct roles of a user on a target.
pub(crate) async fn roles_on<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    user_id: &str,
    target: &Target,
) -> Result<Vec<Role>, sqlx::Error> {
    let sql = "SELECT r.id, r.name, r.description, r.extra FROM identity_assignments a \
               JOIN identity_roles r ON r.id = a.role_id \
               WHERE a.actor_id = $1 AND a.target_type = $2 AND a.target_id = $3 ORDER BY r.name";
    let rows = sqlx::query(sql)
        .bind(user_id)
        .bind(target.kind())
        .bind(target.id())
        .fetch_all(ex)
        .await?;
    rows.iter().map(role).collect()
}

/// Targets of a kind on which a user has any role.
pub(crate) async fn targets_of<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    user_id: &str,
    kind: &str,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT target_id FROM identity_assignments \
         WHERE actor_id = $1 AND target_type = $2 ORDER BY target_id",
    )
    .bind(user_id)
    .bind(kind)
    .fetch_all(ex)
    .await
}

pub(crate) async fn grant(
    c: &mut AnyConnection,
    user_id: &str,
    target: &Target,
    role_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_assignments (actor_id, target_type, target_id, role_id) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(target.kind())
    .bind(target.id())
    .bind(role_id)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn has_grant<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    user_id: &str,
    target: &Target,
    role_id: &str,
) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM identity_assignments \
         WHERE actor_id = $1 AND target_type = $2 AND target_id = $3 AND role_id = $4",
    )
    .bind(user_id)
    .bind(target.kind())
    .bind(target.id())
    .bind(role_id)
    .fetch_one(ex)
    .await?;
    Ok(n > 0)
}

pub(crate) async fn revoke_grant(
    c: &mut AnyConnection,
    user_id: &str,
    target: &Target,
    role_id: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query(
        "DELETE FROM identity_assignments \
         WHERE actor_id = $1 AND target_type = $2 AND target_id = $3 AND role_id = $4",
    )
    .bind(user_id)
    .bind(target.kind())
    .bind(target.id())
    .bind(role_id)
    .execute(c)
    .await?;
    Ok(r.rows_affected() > 0)
}

// ---- tokens ----

pub(crate) async fn insert_token(
    c: &mut AnyConnection,
    hash: &str,
    t: &TokenRow,
) -> Result<(), sqlx::Error> {
    let (kind, id) = match &t.scope {
        Some(s) => (s.kind(), s.id().to_string()),
        None => ("unscoped", String::new()),
    };
    sqlx::query(
        "INSERT INTO identity_tokens (token_hash, user_id, scope_type, scope_id, methods, \
         audit_ids, issued_at, expires_at, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0)",
    )
    .bind(hash)
    .bind(&t.user_id)
    .bind(kind)
    .bind(id)
    .bind(t.methods.join(","))
    .bind(t.audit_ids.join(","))
    .bind(t.issued_at)
    .bind(t.expires_at)
    .execute(c)
    .await?;
    Ok(())
}

pub(crate) async fn get_token<'c, E: Executor<'c, Database = Any>>(
    ex: E,
    hash: &str,
) -> Result<Option<TokenRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_id, scope_type, scope_id, methods, audit_ids, issued_at, expires_at, revoked \
         FROM identity_tokens WHERE token_hash = $1",
    )
    .bind(hash)
    .fetch_optional(ex)
    .await?;
    let Some(r) = row else { return Ok(None) };
    let split = |s: String| -> Vec<String> {
        s.split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let kind: String = r.try_get(1)?;
    Ok(Some(TokenRow {
        user_id: r.try_get(0)?,
        scope: Target::from_parts(&kind, r.try_get(2)?),
        methods: split(r.try_get(3)?),
        audit_ids: split(r.try_get(4)?),
        issued_at: r.try_get(5)?,
        expires_at: r.try_get(6)?,
        revoked: r.try_get::<i64, _>(7)? != 0,
    }))
}

pub(crate) async fn revoke_token(c: &mut AnyConnection, hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE identity_tokens SET revoked = 1 WHERE token_hash = $1")
        .bind(hash)
        .execute(c)
        .await?;
    Ok(())
}

pub(crate) async fn revoke_user_tokens(
    c: &mut AnyConnection,
    user_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE identity_tokens SET revoked = 1 WHERE user_id = $1")
        .bind(user_id)
        .execute(c)
        .await?;
    Ok(())
}

/// Forgets token records that expired before `before` (unix microseconds).
pub(crate) async fn purge_tokens(c: &mut AnyConnection, before: i64) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM identity_tokens WHERE expires_at < $1")
        .bind(before)
        .execute(c)
        .await?;
    Ok(r.rows_affected())
}
