//! `/v2.0/network-ip-availabilities[/{network_id}]`: per-network and per-subnet address usage
//! (the network-ip-availability extension).
//!
//! Read-only: totals are the sizes of the subnets' allocation pools, usage is the number of
//! `ip_allocations` rows of each subnet (addresses outside the pools count as used, as in
//! Neutron). Policy `get_network_ip_availability` (admin only by default) decides who may
//! read; others get an empty list or 404. This module must never write.

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::{self, Obj};
use neutrino_core::list::{ListQuery, value_matches};
use neutrino_core::{ApiError, ApiResult, Context};

use crate::{ApiState, common, ipam, networks, subnets};

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/network-ip-availabilities", get(list))
        .route("/v2.0/network-ip-availabilities/{id}", get(show))
}

/// A count as JSON: exact up to u64, approximated beyond (huge IPv6 pools).
fn count(n: u128) -> Value {
    match u64::try_from(n) {
        Ok(v) => Value::from(v),
        Err(_) => Value::from(n as f64),
    }
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// Builds the availability documents of `nets`, keeping only subnets whose IP version is in
/// `versions` (when given); networks left without subnets by that filter are dropped.
async fn build(st: &ApiState, nets: Vec<Obj>, versions: Option<&[String]>) -> ApiResult<Vec<Obj>> {
    let used: Vec<(String, i64)> =
        sqlx::query_as("SELECT subnet_id, COUNT(*) FROM ip_allocations GROUP BY subnet_id")
            .fetch_all(st.db.reader())
            .await?;
    let used: HashMap<String, i64> = used.into_iter().collect();
    let mut by_net: HashMap<String, Vec<Obj>> = HashMap::new();
    for s in db::list(st.db.reader(), &subnets::KIND, None).await? {
        by_net
            .entry(str_of(&s, "network_id").to_string())
            .or_default()
            .push(s);
    }
    let mut out = Vec::with_capacity(nets.len());
    for net in nets {
        let id = str_of(&net, "id").to_string();
        let mut subs = Vec::new();
        let (mut total, mut in_use) = (0u128, 0u128);
        for s in by_net.remove(&id).unwrap_or_default() {
            let version = s.get("ip_version").cloned().unwrap_or(Value::Null);
            if let Some(vs) = versions
                && !vs.iter().any(|v| value_matches(&version, v))
            {
                continue;
            }
            let t = ipam::pool_size(&ipam::pools_of(&s));
            let u = used
                .get(str_of(&s, "id"))
                .copied()
                .and_then(|n| u128::try_from(n).ok())
                .unwrap_or(0);
            total = total.saturating_add(t);
            in_use += u;
            subs.push(json!({
                "subnet_id": s.get("id").cloned().unwrap_or(Value::Null),
                "subnet_name": s.get("name").cloned().unwrap_or(json!("")),
                "cidr": s.get("cidr").cloned().unwrap_or(Value::Null),
                "ip_version": version,
                "total_ips": count(t),
                "used_ips": count(u),
            }));
        }
        if versions.is_some() && subs.is_empty() {
            continue;
        }
        let project = net.get("project_id").cloned().unwrap_or(Value::Null);
        let mut doc = Obj::new();
        doc.insert("network_id".into(), Value::String(id));
        doc.insert(
            "network_name".into(),
            net.get("name").cloned().unwrap_or(json!("")),
        );
        doc.insert("project_id".into(), project.clone());
        doc.insert("tenant_id".into(), project);
        doc.insert("total_ips".into(), count(total));
        doc.insert("used_ips".into(), count(in_use));
        doc.insert("subnet_ip_availability".into(), Value::Array(subs));
        out.push(doc);
    }
    Ok(out)
}

fn allowed(st: &ApiState, ctx: &Context, net: &Obj) -> bool {
    st.policy.check(ctx, "get_network_ip_availability", net)
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    let versions = query.take_filter("ip_version");
    let nets: Vec<Obj> = db::list(st.db.reader(), &networks::KIND, None)
        .await?
        .into_iter()
        .filter(|n| allowed(&st, &ctx, n))
        .collect();
    let items = build(&st, nets, versions.as_deref()).await?;
    let url = format!(
        "{}/v2.0/network-ip-availabilities",
        common::base_url(&headers)
    );
    Ok(axum::Json(query.respond(items, "network_ip_availabilities", &url)).into_response())
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let net = db::get(st.db.reader(), &networks::KIND, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("Network", &id))?;
    if !allowed(&st, &ctx, &net) {
        return Err(common::hidden_not_found());
    }
    let item = build(&st, vec![net], None)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::not_found("Network", &id))?;
    Ok(common::ok(
        "network_ip_availability",
        Value::Object(query.trim(item)),
    ))
}
