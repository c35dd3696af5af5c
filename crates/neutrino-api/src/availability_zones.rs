//! `/v2.0/availability_zones` and the network availability-zone attributes (Neutron's
//! `availability_zone` and `network_availability_zone` extensions).
//!
//! Zones are not stored: they are the `availability_zone` values DHCP agents (resource
//! `network`) and L3 agents (resource `router`) report, `available` when at least one agent
//! of the zone is admin-up (Neutron's `_list_availability_zones`). A network's
//! `availability_zones` are the zones of the DHCP agents hosting it; its
//! `availability_zone_hints` must name zones some DHCP agent reports
//! (`AvailabilityZoneNotFound`, 404) and steer the scheduler.
//!
//! Read-only over the agent tables; it must never write.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};

use neutrino_core::db::Obj;
use neutrino_core::list::ListQuery;
use neutrino_core::{ApiError, ApiResult, Context};
use neutrino_wire::agent_type;

use crate::{ApiState, agents, common};

/// Neutron's `AZ_HINTS_DB_LEN`: the hints, as JSON text, must fit 255 characters.
const AZ_HINTS_DB_LEN: usize = 255;

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new().route("/v2.0/availability_zones", get(list))
}

/// The zone table: `(name, resource)` → available, from the agents. Pure.
pub fn zones(all: &[agents::Agent]) -> BTreeMap<(String, String), bool> {
    let mut out = BTreeMap::new();
    for a in all {
        let Some(z) = a.availability_zone.as_ref().filter(|z| !z.is_empty()) else {
            continue;
        };
        let resource = match a.agent_type.as_str() {
            agent_type::DHCP => "network",
            agent_type::L3 => "router",
            _ => continue,
        };
        let up = out
            .entry((z.clone(), resource.to_string()))
            .or_insert(false);
        *up = *up || a.admin_state_up;
    }
    out
}

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let all = agents::list_all(st.db.reader()).await?;
    let items: Vec<Obj> = zones(&all)
        .into_iter()
        .map(|((name, resource), up)| {
            let mut o = Obj::new();
            o.insert("name".into(), json!(name));
            o.insert("resource".into(), json!(resource));
            o.insert(
                "state".into(),
                json!(if up { "available" } else { "unavailable" }),
            );
            o
        })
        .filter(|o| st.policy.check(&ctx, "get_availability_zone", o))
        .collect();
    let url = format!("{}/v2.0/availability_zones", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "availability_zones", &url)).into_response())
}

/// The zones of the DHCP agents hosting a network, sorted.
pub async fn of_network<'c, E>(ex: E, network_id: &str) -> ApiResult<Vec<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT a.availability_zone FROM network_dhcp_agents b \
         JOIN agents a ON a.id = b.agent_id \
         WHERE b.network_id = $1 AND a.availability_zone IS NOT NULL \
         ORDER BY a.availability_zone",
    )
    .bind(network_id)
    .fetch_all(ex)
    .await?)
}

/// The zones of every hosted network, in one query (for listings).
pub async fn by_network<'c, E>(ex: E) -> ApiResult<HashMap<String, Vec<String>>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT b.network_id, a.availability_zone FROM network_dhcp_agents b \
         JOIN agents a ON a.id = b.agent_id \
         WHERE a.availability_zone IS NOT NULL ORDER BY b.network_id, a.availability_zone",
    )
    .fetch_all(ex)
    .await?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (n, z) in rows {
        out.entry(n).or_default().push(z);
    }
    Ok(out)
}

fn invalid_hints(reason: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for availability_zone_hints. Reason: {reason}."
    ))
}

/// Checks `availability_zone_hints` of a new network (neutron-lib's
/// `availability_zone_hint_list` validator, then `validate_availability_zones` for
/// networks): a list of unique strings fitting the column, each the zone of some DHCP agent.
pub async fn validate_network_hints(tx: &mut sqlx::AnyConnection, hints: &Value) -> ApiResult<()> {
    validate_hints(tx, hints, agent_type::DHCP).await
}

/// Checks `availability_zone_hints` of a new resource (neutron-lib's
/// `availability_zone_hint_list`, then `validate_availability_zones`): unique strings
/// fitting the column as JSON, each the zone of some agent of `of_agent_type` (404
/// `AvailabilityZoneNotFound`). Networks and routers differ only in that agent type.
pub async fn validate_hints(
    tx: &mut sqlx::AnyConnection,
    hints: &Value,
    of_agent_type: &str,
) -> ApiResult<()> {
    let list = match hints {
        Value::Null => return Ok(()),
        Value::Array(a) => a,
        other => {
            return Err(invalid_hints(format!(
                "'{}' is not a list",
                crate::attrs::display(other)
            )));
        }
    };
    let mut seen: Vec<&str> = Vec::with_capacity(list.len());
    for v in list {
        let Some(s) = v.as_str() else {
            return Err(invalid_hints(format!(
                "'{}' is not a valid string",
                crate::attrs::display(v)
            )));
        };
        if seen.contains(&s) {
            return Err(invalid_hints(format!("Duplicate items in the list: '{s}'")));
        }
        seen.push(s);
    }
    if hints.to_string().len() > AZ_HINTS_DB_LEN {
        return Err(ApiError::invalid_input(
            "Too many availability_zone_hints specified",
        ));
    }
    if seen.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT availability_zone FROM agents \
         WHERE agent_type = $1 AND availability_zone IS NOT NULL",
    )
    .bind(of_agent_type)
    .fetch_all(&mut *tx)
    .await?;
    if let Some(missing) = seen.iter().find(|z| !known.iter().any(|k| k == *z)) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "AvailabilityZoneNotFound",
            format!("AvailabilityZone {missing} could not be found."),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(ty: &str, az: Option<&str>, up: bool) -> agents::Agent {
        agents::Agent {
            id: "x".into(),
            agent_type: ty.into(),
            host: "h".into(),
            availability_zone: az.map(str::to_string),
            admin_state_up: up,
            created_at: 0,
            started_at: 0,
            heartbeat_at: 0,
            revision_number: 1,
            body: Obj::new(),
        }
    }

    #[test]
    fn zones_from_dhcp_and_l3_agents() {
        let z = zones(&[
            agent(agent_type::DHCP, Some("az1"), false),
            agent(agent_type::DHCP, Some("az1"), true),
            agent(agent_type::DHCP, Some("az2"), false),
            agent(agent_type::L3, Some("az1"), true),
            agent(agent_type::LINUXBRIDGE, Some("az3"), true),
            agent(agent_type::DHCP, None, true),
        ]);
        assert_eq!(z.len(), 3);
        assert!(z[&("az1".to_string(), "network".to_string())]);
        assert!(!z[&("az2".to_string(), "network".to_string())]);
        assert!(z[&("az1".to_string(), "router".to_string())]);
    }
}
