//! The admin API of agent scheduling, one set of handlers for both kinds: Neutron's
//! `dhcp_agent_scheduler` (`/v2.0/agents/{id}/dhcp-networks`, add and remove under it, and
//! `/v2.0/networks/{id}/dhcp-agents`) and `l3_agent_scheduler` (`/v2.0/agents/{id}/l3-routers`
//! and `/v2.0/routers/{id}/l3-agents`).
//!
//! Each kind is an [`Api`]: its paths, policy actions, rendering of a hosted resource, and
//! the checks Neutron makes before a manual add or remove (an agent of the right type and
//! mode; a legacy router hosted elsewhere is a conflict). A manual add is forced scheduling:
//! it ignores the wanted number of agents, zones and liveness. Handlers parse, check policy,
//! and call the schedulers (`scheduler`, `l3_scheduler`, `scheduling`) in one transaction;
//! this module owns no data and must never write bindings or ports itself.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::db::{self, Obj, str_of};
use neutrino_core::list::ListQuery;
use neutrino_core::{ApiError, ApiResult, Context};
use neutrino_wire::agent_type;

use crate::agents::{self, Agent};
use crate::l3_scheduler::{self, L3};
use crate::scheduler::{self, DHCP};
use crate::scheduling::{Binding, Step};
use crate::{ApiState, attrs, availability_zones, common, networks, routers};

/// The scheduling API of one kind.
struct Api {
    binding: &'static Binding,
    /// `/v2.0/agents/{id}/<hosted>`: the resources an agent hosts.
    hosted: &'static str,
    /// `/v2.0/<collection>/{id}/<hosting>`: the agents hosting a resource.
    collection: &'static str,
    hosting: &'static str,
    /// Policy actions: list hosted, add, remove, list hosting.
    policy: [&'static str; 4],
    /// 404 for a resource that does not exist.
    not_found: fn(&str) -> ApiError,
    /// A hosted resource as its own collection shows it.
    render: for<'a> fn(&'a ApiState, &'a Context, &'a mut AnyConnection, Obj) -> Step<'a, Obj>,
    /// Neutron's checks, the binding and what follows it, for a manual add.
    add: for<'a> fn(&'a ApiState, &'a mut AnyConnection, &'a Agent, &'a Obj) -> Step<'a>,
    /// Neutron's checks and the unbinding, for a manual remove.
    remove: for<'a> fn(&'a ApiState, &'a mut AnyConnection, &'a Agent, &'a str) -> Step<'a>,
}

static DHCP_API: Api = Api {
    binding: &DHCP,
    hosted: "dhcp-networks",
    collection: "networks",
    hosting: "dhcp-agents",
    policy: [
        "get_dhcp-networks",
        "create_dhcp-network",
        "delete_dhcp-network",
        "get_dhcp-agents",
    ],
    not_found: |id| ApiError::not_found("Network", id),
    render: |st, ctx, conn, net| Box::pin(render_network(st, ctx, conn, net)),
    add: |st, tx, agent, net| Box::pin(add_network(st, tx, agent, net)),
    remove: |st, tx, agent, id| Box::pin(remove_network(st, tx, agent, id)),
};

static L3_API: Api = Api {
    binding: &L3,
    hosted: "l3-routers",
    collection: "routers",
    hosting: "l3-agents",
    policy: [
        "get_l3-routers",
        "create_l3-router",
        "delete_l3-router",
        "get_l3-agents",
    ],
    not_found: routers::not_found,
    render: |st, ctx, conn, router| Box::pin(render_router(st, ctx, conn, router)),
    add: |st, tx, agent, router| Box::pin(add_router(st, tx, agent, router)),
    remove: |st, tx, agent, id| Box::pin(remove_router(st, tx, agent, id)),
};

/// Routes of the `dhcp_agent_scheduler` and `l3_agent_scheduler` extensions.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .merge(routes_of(&DHCP_API))
        .merge(routes_of(&L3_API))
}

fn routes_of(a: &'static Api) -> Router<ApiState> {
    Router::new()
        .route(
            &format!("/v2.0/agents/{{id}}/{}", a.hosted),
            get(move |st, ctx, id, headers, q| list_hosted(a, st, ctx, id, headers, q))
                .post(move |st, ctx, id, body| add(a, st, ctx, id, body)),
        )
        .route(
            &format!("/v2.0/agents/{{id}}/{}/{{resource_id}}", a.hosted),
            delete(move |st, ctx, ids, body| remove(a, st, ctx, ids, body)),
        )
        .route(
            &format!("/v2.0/{}/{{id}}/{}", a.collection, a.hosting),
            get(move |st, ctx, id, headers, q| list_hosting(a, st, ctx, id, headers, q)),
        )
}

async fn list_hosted(
    a: &'static Api,
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    common::enforce(&st, &ctx, a.policy[0], &Obj::new())?;
    let mut conn = st.db.reader().acquire().await?;
    if agents::get_agent(&mut *conn, &id).await?.is_none() {
        return Err(agents::not_found(&id));
    }
    let ids = a.binding.hosted_by(&mut *conn, &id).await?;
    let mut items = Vec::with_capacity(ids.len());
    for rid in ids {
        if let Some(r) = db::get(&mut *conn, a.binding.resource, &rid).await? {
            items.push((a.render)(&st, &ctx, &mut conn, r).await?);
        }
    }
    drop(conn);
    let base = common::base_url(&headers);
    let url = format!("{base}/v2.0/agents/{id}/{}", a.hosted);
    Ok(Json(query.respond(items, a.collection, &url)).into_response())
}

async fn add(
    a: &'static Api,
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let resource_id = requested_id(&body, a.binding.column)?;
    common::enforce(&st, &ctx, a.policy[1], &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let Some(resource) =
        db::get_for_update(&mut tx, &st.db, a.binding.resource, &resource_id).await?
    else {
        return Err((a.not_found)(&resource_id));
    };
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    (a.add)(&st, &mut tx, &agent, &resource).await?;
    st.db.commit(tx).await?;
    Ok((StatusCode::CREATED, Json(Value::Null)).into_response())
}

/// The id an add request names: `{"<key>": "<uuid>"}` and nothing else.
fn requested_id(body: &Bytes, key: &str) -> ApiResult<String> {
    let bad = |m: String| ApiError::bad_request(format!("Invalid request body: {m}"));
    let Value::Object(req) = common::parse_json(body)? else {
        return Err(bad(format!("expected a map with `{key}`")));
    };
    if let Some(k) = req.keys().find(|k| *k != key) {
        return Err(bad(format!("unknown field `{k}`, expected `{key}`")));
    }
    let Some(v) = req.get(key) else {
        return Err(bad(format!("missing field `{key}`")));
    };
    match v.as_str().filter(|s| attrs::is_uuid(s)) {
        Some(id) => Ok(id.to_string()),
        None => Err(ApiError::bad_request(format!(
            "Invalid input for {key}. Reason: '{}' is not a valid UUID.",
            attrs::display(v)
        ))),
    }
}

async fn remove(
    a: &'static Api,
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((id, resource_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    common::enforce(&st, &ctx, a.policy[2], &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    (a.remove)(&st, &mut tx, &agent, &resource_id).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

async fn list_hosting(
    a: &'static Api,
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    common::enforce(&st, &ctx, a.policy[3], &Obj::new())?;
    let mut conn = st.db.reader().acquire().await?;
    if db::get(&mut *conn, a.binding.resource, &id)
        .await?
        .is_none()
    {
        return Err((a.not_found)(&id));
    }
    let hosting = a.binding.agents_of(&mut conn, &id).await?;
    drop(conn);
    let base = common::base_url(&headers);
    let url = format!("{base}/v2.0/{}/{id}/{}", a.collection, a.hosting);
    Ok(agents::respond_list(&st, &ctx, &hosting, &query, &url))
}

// ---------------------------------------------------------------------------------------------
// DHCP.

async fn render_network(
    st: &ApiState,
    ctx: &Context,
    conn: &mut AnyConnection,
    mut net: Obj,
) -> ApiResult<Obj> {
    let id = str_of(&net, "id").to_string();
    let subnet_ids: Vec<String> =
        sqlx::query_scalar("SELECT id FROM subnets WHERE network_id = $1 ORDER BY id")
            .bind(&id)
            .fetch_all(&mut *conn)
            .await?;
    let zones = availability_zones::of_network(&mut *conn, &id).await?;
    net.insert("availability_zones".into(), json!(zones));
    let subnets = subnet_ids.into_iter().map(Value::String).collect();
    Ok(networks::render(st, ctx, &net, subnets, None))
}

fn invalid_dhcp_agent(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidDHCPAgent",
        format!("Agent {id} is not a valid DHCP Agent or has been disabled."),
    )
}

async fn add_network(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    net: &Obj,
) -> ApiResult<()> {
    if agent.agent_type != agent_type::DHCP || !agent.admin_state_up {
        return Err(invalid_dhcp_agent(&agent.id));
    }
    let network_id = str_of(net, "id");
    if !DHCP.bind(tx, network_id, agent, None).await? {
        return Err(ApiError::conflict(
            "NetworkHostedByDHCPAgent",
            format!(
                "The network {network_id} has been already hosted by the DHCP Agent {}.",
                agent.id
            ),
        ));
    }
    scheduler::agent_added(st, tx, agent, net).await
}

async fn remove_network(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    network_id: &str,
) -> ApiResult<()> {
    if !DHCP.unbind(st, tx, agent, network_id).await? {
        return Err(ApiError::conflict(
            "NetworkNotHostedByDhcpAgent",
            format!(
                "The network {network_id} is not hosted by the DHCP Agent {}.",
                agent.id
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// L3.

async fn render_router(
    st: &ApiState,
    ctx: &Context,
    conn: &mut AnyConnection,
    router: Obj,
) -> ApiResult<Obj> {
    let zones = l3_scheduler::zones_of_router(&mut *conn, str_of(&router, "id")).await?;
    Ok(routers::render(st, ctx, &router, zones))
}

fn invalid_l3_agent(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidL3Agent",
        format!("Agent {id} is not a L3 Agent or has been disabled"),
    )
}

fn in_dvr_mode(agent: &Agent) -> bool {
    matches!(
        l3_scheduler::agent_mode(agent).as_str(),
        "dvr" | "dvr_no_external"
    )
}

/// Neutron's `validate_agent_router_combination` and `check_agent_router_scheduling_needed`:
/// already there is nothing to do; on another agent is a conflict, unless HA. Manual
/// scheduling may exceed `max_l3_agents_per_router`.
async fn add_router(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    router: &Obj,
) -> ApiResult<()> {
    let (id, router_id) = (&agent.id, str_of(router, "id"));
    if agent.agent_type != agent_type::L3 {
        return Err(invalid_l3_agent(id));
    }
    if in_dvr_mode(agent) {
        return Err(ApiError::conflict(
            "DVRL3CannotAssignToDvrAgent",
            "Not allowed to manually assign a router to an agent in 'dvr' mode.",
        ));
    }
    if !agent.admin_state_up || !l3_scheduler::can_host(agent, router, true) {
        return Err(invalid_l3_agent(id));
    }
    let hosting = L3.agents_of(tx, router_id).await?;
    if hosting.iter().any(|a| a.id == agent.id) {
        return Ok(());
    }
    if let Some(other) = hosting.first()
        && router.get("ha") != Some(&Value::Bool(true))
    {
        return Err(ApiError::conflict(
            "RouterHostedByL3Agent",
            format!(
                "The router {router_id} has been already hosted by the L3 Agent {}.",
                other.id
            ),
        ));
    }
    let used = L3.indexes(tx, router_id).await?;
    let index = (1..).find(|i| !used.contains(i)).unwrap_or(1);
    if !L3.bind(tx, router_id, agent, Some(index)).await? {
        return Err(ApiError::conflict(
            "RouterSchedulingFailed",
            format!("Failed scheduling router {router_id} to the L3 Agent {id}."),
        ));
    }
    l3_scheduler::bind_router_ports(st, tx, router_id).await
}

/// Neutron removes the binding if there is one, then fails only if the router is gone.
async fn remove_router(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    router_id: &str,
) -> ApiResult<()> {
    if in_dvr_mode(agent) {
        return Err(ApiError::conflict(
            "DVRL3CannotRemoveFromDvrAgent",
            "Not allowed to manually remove a router from an agent in 'dvr' mode.",
        ));
    }
    L3.unbind(st, tx, agent, router_id).await?;
    if db::get(&mut *tx, &routers::KIND, router_id)
        .await?
        .is_none()
    {
        return Err(routers::not_found(router_id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str, key: &str) -> Result<String, String> {
        requested_id(&Bytes::from(body.to_string()), key).map_err(|e| e.to_string())
    }

    #[test]
    fn add_requests_name_one_uuid() {
        let id = "0b3b5d8e-6f0a-4b8e-9d0c-2f6c1f3b8a11";
        let body = format!(r#"{{"router_id": "{id}"}}"#);
        assert_eq!(parse(&body, "router_id"), Ok(id.to_string()));
        let wrong_key = parse(&body, "network_id").unwrap_err();
        assert!(
            wrong_key.contains("unknown field `router_id`"),
            "{wrong_key}"
        );
        let missing = parse("{}", "network_id").unwrap_err();
        assert!(missing.contains("missing field `network_id`"), "{missing}");
        let not_uuid = parse(r#"{"network_id": 7}"#, "network_id").unwrap_err();
        assert!(not_uuid.contains("'7' is not a valid UUID"), "{not_uuid}");
        assert!(parse("[]", "network_id").is_err());
    }
}
