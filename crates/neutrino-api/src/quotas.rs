//! `/v2.0/quotas`: per-project limits (quotas, quota_details extensions) and their lookup.
//!
//! Limits come from the `quotas` table when a project has an explicit value, else from
//! `[quotas] quota_<resource>` (Neutron's defaults). Enforcement happens in the create paths
//! through [`crate::common::check_quota`], inside the creating transaction. Only admins change
//! quotas; a project may read its own.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Map, Value, json};

use neutrino_core::{ApiError, ApiResult, Context};

use crate::{ApiState, common};

/// Routes of the quota API.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/quotas", get(list).post(post_refused))
        .route("/v2.0/quotas/project", get(my_project))
        .route("/v2.0/quotas/tenant", get(my_tenant))
        .route(
            "/v2.0/quotas/{project_id}",
            get(show).put(update).delete(reset),
        )
        .route("/v2.0/quotas/{project_id}/default", get(defaults))
        .route("/v2.0/quotas/{project_id}/details", get(details))
}

/// Tables whose rows count against each quota resource (resources of later services are
/// added with their tables).
const USAGE_TABLES: &[(&str, &str)] = &[
    ("network", "networks"),
    ("subnet", "subnets"),
    ("port", "ports"),
    ("subnetpool", "subnetpools"),
    ("rbac_policy", "rbac_policies"),
    ("security_group", "security_groups"),
    ("security_group_rule", "security_group_rules"),
    ("router", "routers"),
    ("floatingip", "floatingips"),
];

/// The effective limit of `resource` for `project_id` (-1 = unlimited).
pub async fn limit_for(
    state: &ApiState,
    conn: &mut sqlx::AnyConnection,
    project_id: &str,
    resource: &str,
) -> ApiResult<i64> {
    let explicit: Option<i64> =
        sqlx::query_scalar("SELECT hard_limit FROM quotas WHERE project_id = $1 AND resource = $2")
            .bind(project_id)
            .bind(resource)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(explicit.unwrap_or_else(|| default_limit(state, resource)))
}

fn default_limit(state: &ApiState, resource: &str) -> i64 {
    state
        .cfg
        .quotas
        .get(resource)
        .copied()
        .unwrap_or(-1)
        .max(-1)
}

async fn limits(state: &ApiState, project_id: &str) -> ApiResult<Map<String, Value>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT resource, hard_limit FROM quotas WHERE project_id = $1")
            .bind(project_id)
            .fetch_all(state.db.reader())
            .await?;
    let mut out = Map::new();
    for (res, _) in state.cfg.quotas.iter() {
        out.insert(res.clone(), json!(default_limit(state, res)));
    }
    for (res, lim) in rows {
        if out.contains_key(&res) {
            out.insert(res, json!(lim.max(-1)));
        }
    }
    Ok(out)
}

async fn usage(state: &ApiState, project_id: &str, resource: &str) -> ApiResult<i64> {
    match USAGE_TABLES.iter().find(|(r, _)| *r == resource) {
        Some((_, table)) => {
            let sql = format!("SELECT COUNT(*) FROM {table} WHERE project_id = $1");
            Ok(sqlx::query_scalar(&sql)
                .bind(project_id)
                .fetch_one(state.db.reader())
                .await?)
        }
        None => Ok(0),
    }
}

fn may_read(ctx: &Context, project_id: &str) -> ApiResult<()> {
    if ctx.is_admin() || ctx.owns(project_id) {
        Ok(())
    } else {
        Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "AdminRequired",
            "User does not have admin privileges: Only admin is authorized to access quotas for another project.",
        ))
    }
}

fn admin_only(ctx: &Context, action: &str) -> ApiResult<()> {
    if ctx.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden(&format!("rule:{action}")))
    }
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
) -> ApiResult<Response> {
    admin_only(&ctx, "get_quota")?;
    let projects: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT project_id FROM quotas ORDER BY project_id")
            .fetch_all(st.db.reader())
            .await?;
    let mut out = Vec::new();
    for p in projects {
        let mut m = limits(&st, &p).await?;
        m.insert("project_id".into(), json!(p));
        m.insert("tenant_id".into(), json!(p));
        out.push(Value::Object(m));
    }
    Ok(common::ok("quotas", Value::Array(out)))
}

async fn post_refused() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "NotImplemented",
        "POST requests are not supported on this resource.",
    )
}

async fn my_project(Extension(ctx): Extension<Context>) -> ApiResult<Response> {
    Ok(common::ok("project", json!({"project_id": ctx.project()})))
}

async fn my_tenant(Extension(ctx): Extension<Context>) -> ApiResult<Response> {
    Ok(common::ok("tenant", json!({"tenant_id": ctx.project()})))
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    may_read(&ctx, &project_id)?;
    Ok(common::ok(
        "quota",
        Value::Object(limits(&st, &project_id).await?),
    ))
}

async fn defaults(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    may_read(&ctx, &project_id)?;
    let m: Map<String, Value> = st
        .cfg
        .quotas
        .keys()
        .map(|r| (r.clone(), json!(default_limit(&st, r))))
        .collect();
    Ok(common::ok("quota", Value::Object(m)))
}

async fn details(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    may_read(&ctx, &project_id)?;
    let lim = limits(&st, &project_id).await?;
    let mut out = Map::new();
    for (res, l) in lim {
        let used = usage(&st, &project_id, &res).await?;
        out.insert(res, json!({"limit": l, "used": used, "reserved": 0}));
    }
    Ok(common::ok("quota", Value::Object(out)))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(project_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    admin_only(&ctx, "update_quota")?;
    let req = common::parse_update(&body, "quota")?;
    let mut force = false;
    let mut changes = Vec::new();
    let mut unknown = Vec::new();
    for (k, v) in req {
        match k.as_str() {
            "force" => force = crate::attrs::to_bool("force", &v)?,
            "check_limit" => {
                crate::attrs::to_bool("check_limit", &v)?;
            }
            _ if st.cfg.quotas.contains_key(&k) => {
                let n = match &v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => s.trim().parse::<i64>().ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Invalid input for {k}. Reason: '{}' is not an integer.",
                        crate::attrs::display(&v)
                    ))
                })?;
                if !(-1..=2_147_483_647).contains(&n) {
                    return Err(ApiError::bad_request(format!(
                        "Invalid input for {k}. Reason: '{n}' is too small - must be at least '-1'."
                    )));
                }
                changes.push((k, n));
            }
            _ => unknown.push(k),
        }
    }
    if !unknown.is_empty() {
        unknown.sort();
        return Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    if !force {
        for (res, n) in &changes {
            let used = usage(&st, &project_id, res).await?;
            if *n >= 0 && *n < used {
                return Err(ApiError::bad_request(format!(
                    "Quota limit {n} for {res} must be greater than or equal to already used {used}"
                )));
            }
        }
    }
    let mut tx = st.db.begin().await?;
    for (res, n) in &changes {
        sqlx::query("DELETE FROM quotas WHERE project_id = $1 AND resource = $2")
            .bind(&project_id)
            .bind(res)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO quotas (project_id, resource, hard_limit) VALUES ($1, $2, $3)")
            .bind(&project_id)
            .bind(res)
            .bind(*n)
            .execute(&mut *tx)
            .await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "quota",
        Value::Object(limits(&st, &project_id).await?),
    ))
}

async fn reset(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(project_id): Path<String>,
) -> ApiResult<Response> {
    admin_only(&ctx, "delete_quota")?;
    let mut tx = st.db.begin().await?;
    let n = sqlx::query("DELETE FROM quotas WHERE project_id = $1")
        .bind(&project_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    st.db.commit(tx).await?;
    if n == 0 {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "TenantQuotaNotFound",
            format!("Quota for project {project_id} could not be found."),
        ));
    }
    Ok(common::no_content())
}
