//! L3 agent scheduling (Neutron's `l3_agent_scheduler`, `router_availability_zone` and the
//! scheduling half of `l3-ha`): which L3 agents host which routers, and the APIs
//! `/v2.0/routers/{id}/l3-agents` and `/v2.0/agents/{id}/l3-routers`.
//!
//! Owns `router_l3_agents` (Neutron's `routerl3agentbindings`) and where router ports are
//! bound: a router's gateway and interface ports are bound (`binding:host_id`) to the host of
//! the agent hosting it, as Neutron's L3 RPC does when the agent syncs, so the host's L2 agent
//! wires them and reports them ACTIVE, and the sync protocol's binding history routes their
//! changes to that host.
//!
//! Scheduling follows Neutron's `AZLeastRoutersScheduler`: candidates are live, admin-up L3
//! agents in a mode that can host the router (`legacy` or `dvr_snat`), honouring their
//! `router_id` and `handle_internal_only_routers` configuration and the router's
//! `availability_zone_hints` (or `default_availability_zones`); the one hosting the fewest
//! routers wins. A legacy router gets one agent (binding index 1, unique per router, so two
//! servers racing cannot double-schedule it); an HA router up to `max_l3_agents_per_router`.
//! As in Neutron, scheduling happens whenever the router is "updated" (created with a
//! gateway, updated, an interface or floating IP added or removed: `routers_updated` with
//! `schedule_routers=True`), when an L3 agent registers, revives or restarts
//! (`router_auto_schedule`), on the admin API, and on failover from dead agents
//! (`allow_automatic_l3agent_failover`, default false).
//!
//! Everything here runs in the caller's transaction and does SQL only; it must never contact
//! an agent: hosts learn about (un)scheduling from `agent` changes (the agent's revision is
//! bumped) and from router changes.

use std::collections::{HashMap, HashSet};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::db::{self, Obj};
use neutrino_core::list::ListQuery;
use neutrino_core::{ApiError, ApiResult, Context};
use neutrino_wire::{AgentStatus, agent_type};

use crate::agents::{self, Agent, AgentConfig};
use crate::{ApiState, binding, common, networks, ports, routers};

/// Options read by the L3 modules: (section, key), for the unknown option report.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("DEFAULT", "router_auto_schedule"),
    ("DEFAULT", "allow_automatic_l3agent_failover"),
    ("DEFAULT", "router_scheduler_driver"),
    ("DEFAULT", "max_l3_agents_per_router"),
    ("DEFAULT", "l3_ha"),
    ("DEFAULT", "router_distributed"),
    ("DEFAULT", "enable_snat_by_default"),
    ("quotas", "quota_router_route"),
];

/// L3 options with Neutron's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct L3Config {
    /// `[DEFAULT] router_auto_schedule` (true): give unscheduled routers to an L3 agent that
    /// registers, revives or restarts.
    pub router_auto_schedule: bool,
    /// `[DEFAULT] allow_automatic_l3agent_failover` (false): move routers off L3 agents dead
    /// for twice `agent_down_time`.
    pub allow_automatic_l3agent_failover: bool,
    /// `[DEFAULT] max_l3_agents_per_router` (3; 0 = every candidate): agents of an HA router.
    pub max_l3_agents_per_router: usize,
    /// `[DEFAULT] l3_ha` (false): default of a new router's `ha`.
    pub l3_ha: bool,
    /// `[DEFAULT] router_distributed` (false): default of a new router's `distributed`.
    pub router_distributed: bool,
    /// `[DEFAULT] enable_snat_by_default` (true): `enable_snat` when a gateway is set without it.
    pub enable_snat_by_default: bool,
    /// `[quotas] quota_router_route` (30; -1 unlimited): extra routes per router.
    pub max_routes: i64,
}

impl Default for L3Config {
    fn default() -> Self {
        L3Config {
            router_auto_schedule: true,
            allow_automatic_l3agent_failover: false,
            max_l3_agents_per_router: 3,
            l3_ha: false,
            router_distributed: false,
            enable_snat_by_default: true,
            max_routes: 30,
        }
    }
}

impl L3Config {
    /// Reads the options; a malformed value falls back to Neutron's default (logged).
    pub fn from_ini(ini: &neutrino_core::config::Ini) -> L3Config {
        let d = L3Config::default();
        let b = |k: &str, def: bool| {
            ini.boolean("DEFAULT", k, def).unwrap_or_else(|e| {
                tracing::error!(error = %e, option = k, "invalid L3 option; using the default");
                def
            })
        };
        let max_agents = ini
            .int("DEFAULT", "max_l3_agents_per_router", 3)
            .ok()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(d.max_l3_agents_per_router);
        L3Config {
            router_auto_schedule: b("router_auto_schedule", d.router_auto_schedule),
            allow_automatic_l3agent_failover: b(
                "allow_automatic_l3agent_failover",
                d.allow_automatic_l3agent_failover,
            ),
            max_l3_agents_per_router: max_agents,
            l3_ha: b("l3_ha", d.l3_ha),
            router_distributed: b("router_distributed", d.router_distributed),
            enable_snat_by_default: b("enable_snat_by_default", d.enable_snat_by_default),
            max_routes: ini
                .int("quotas", "quota_router_route", d.max_routes)
                .unwrap_or(d.max_routes),
        }
    }
}

/// The L3 options of a running server.
pub fn config(st: &ApiState) -> L3Config {
    L3Config::from_ini(&st.cfg.ini)
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `agent_mode` of an L3 agent (`legacy` unless reported).
fn agent_mode(a: &Agent) -> String {
    a.configurations()
        .get("agent_mode")
        .and_then(Value::as_str)
        .unwrap_or("legacy")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Bindings.

/// The L3 agents hosting a router, by binding index.
pub async fn agents_of_router(conn: &mut AnyConnection, router_id: &str) -> ApiResult<Vec<Agent>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT agent_id FROM router_l3_agents WHERE router_id = $1 ORDER BY binding_index",
    )
    .bind(router_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(a) = agents::get_agent(&mut *conn, &id).await? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Ids of the routers an agent hosts.
pub async fn routers_of_agent<'c, E>(ex: E, agent_id: &str) -> ApiResult<Vec<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT router_id FROM router_l3_agents WHERE agent_id = $1 ORDER BY router_id",
    )
    .bind(agent_id)
    .fetch_all(ex)
    .await?)
}

/// `(router id, agent id)` of every router hosted by an agent on `host`.
pub async fn routers_on_host(
    conn: &mut AnyConnection,
    host: &str,
) -> ApiResult<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT b.router_id, b.agent_id FROM router_l3_agents b \
         JOIN agents a ON a.id = b.agent_id WHERE a.host = $1 ORDER BY b.router_id",
    )
    .bind(host)
    .fetch_all(&mut *conn)
    .await?)
}

/// The zones of the agents hosting a router (the router's `availability_zones`), sorted.
pub async fn zones_of_router<'c, E>(ex: E, router_id: &str) -> ApiResult<Vec<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT a.availability_zone FROM router_l3_agents b \
         JOIN agents a ON a.id = b.agent_id \
         WHERE b.router_id = $1 AND a.availability_zone IS NOT NULL \
         ORDER BY a.availability_zone",
    )
    .bind(router_id)
    .fetch_all(ex)
    .await?)
}

/// The zones of every hosted router, in one query (for listings).
pub async fn zones_by_router<'c, E>(ex: E) -> ApiResult<HashMap<String, Vec<String>>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT b.router_id, a.availability_zone FROM router_l3_agents b \
         JOIN agents a ON a.id = b.agent_id \
         WHERE a.availability_zone IS NOT NULL ORDER BY b.router_id, a.availability_zone",
    )
    .fetch_all(ex)
    .await?;
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (r, z) in rows {
        out.entry(r).or_default().push(z);
    }
    Ok(out)
}

/// Routers hosted per agent (the LeastRouters scheduler's load).
async fn loads(conn: &mut AnyConnection) -> ApiResult<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT agent_id, COUNT(*) FROM router_l3_agents GROUP BY agent_id")
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// Logs a `router` change without a new revision (Neutron's `notify_router_updated`): what
/// the router's hosts build from it changed (a floating IP, a port forwarding), not the
/// router document itself.
pub async fn notify_router(tx: &mut AnyConnection, router_id: &str) -> ApiResult<()> {
    let row: Option<(i64, String)> =
        sqlx::query_as("SELECT revision_number, project_id FROM routers WHERE id = $1")
            .bind(router_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((rev, project)) = row else {
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO changes (resource, resource_id, op, revision_number, project_id, created_at) \
         VALUES ('router', $1, 'update', $2, $3, $4)",
    )
    .bind(router_id)
    .bind(rev)
    .bind(project)
    .bind(db::now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Binds the router's gateway and interface ports to the host of the agent holding binding
/// index 1 (none: unbound), saving the ports that move. Neutron's L3 RPC sets the host on a
/// router's ports when the hosting agent syncs; the server does it when scheduling here.
pub async fn bind_router_ports(
    st: &ApiState,
    tx: &mut AnyConnection,
    router_id: &str,
) -> ApiResult<()> {
    let host = agents_of_router(tx, router_id)
        .await?
        .into_iter()
        .next()
        .map(|a| a.host)
        .unwrap_or_default();
    let port_ids: Vec<String> = sqlx::query_scalar(
        "SELECT port_id FROM router_ports WHERE router_id = $1 ORDER BY port_id",
    )
    .bind(router_id)
    .fetch_all(&mut *tx)
    .await?;
    for pid in port_ids {
        let Some(mut port) = db::get_for_update(tx, &st.db, &ports::KIND, &pid).await? else {
            continue;
        };
        if str_of(&port, "binding:host_id") == host {
            continue;
        }
        let net = db::get(&mut *tx, &networks::KIND, str_of(&port, "network_id"))
            .await?
            .unwrap_or_default();
        port.insert("binding:host_id".into(), json!(host));
        binding::bind_port(st, tx, &net, &mut port).await?;
        db::save(tx, &ports::KIND, &mut port).await?;
    }
    Ok(())
}

/// The host a new port of `router_id` should be bound to ('' when unscheduled).
pub async fn port_host(tx: &mut AnyConnection, router_id: &str) -> ApiResult<String> {
    Ok(agents_of_router(tx, router_id)
        .await?
        .into_iter()
        .next()
        .map(|a| a.host)
        .unwrap_or_default())
}

/// Records `agent` as hosting `router_id` at `index` and tells its host (an `agent` change).
/// False when the agent already hosts it or the index is taken (a concurrent scheduler won).
async fn bind(
    tx: &mut AnyConnection,
    router_id: &str,
    agent: &Agent,
    index: i64,
) -> ApiResult<bool> {
    let res = sqlx::query(
        "INSERT INTO router_l3_agents (router_id, agent_id, binding_index, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(router_id)
    .bind(&agent.id)
    .bind(index)
    .bind(agents::now_us())
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    tracing::info!(router_id, agent_id = %agent.id, host = %agent.host, "scheduling router to L3 agent");
    agents::touch(tx, &agent.id).await?;
    Ok(true)
}

/// Removes `router_id` from `agent` and tells its host; the router's ports follow the
/// remaining agent (or become unbound). False when the agent did not host it.
pub async fn unbind(
    st: &ApiState,
    tx: &mut AnyConnection,
    router_id: &str,
    agent: &Agent,
) -> ApiResult<bool> {
    let res = sqlx::query("DELETE FROM router_l3_agents WHERE router_id = $1 AND agent_id = $2")
        .bind(router_id)
        .bind(&agent.id)
        .execute(&mut *tx)
        .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    agents::touch(tx, &agent.id).await?;
    bind_router_ports(st, tx, router_id).await?;
    Ok(true)
}

/// Removes every binding of a router being deleted, telling the hosts.
pub async fn unbind_all(tx: &mut AnyConnection, router_id: &str) -> ApiResult<()> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT agent_id FROM router_l3_agents WHERE router_id = $1")
            .bind(router_id)
            .fetch_all(&mut *tx)
            .await?;
    sqlx::query("DELETE FROM router_l3_agents WHERE router_id = $1")
        .bind(router_id)
        .execute(&mut *tx)
        .await?;
    for id in ids {
        agents::touch(tx, &id).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Candidates and scheduling.

/// Whether `agent` could host `router` by its configuration (Neutron's
/// `get_l3_agent_candidates`): not in `dvr`/`dvr_no_external` mode, a distributed router
/// not on a legacy agent, the agent's `router_id` (if set) naming this router, and
/// internal-only routers only where `handle_internal_only_routers` (default true). Pure.
pub fn can_host(agent: &Agent, router: &Obj, ignore_admin_state: bool) -> bool {
    if agent.agent_type != agent_type::L3 || (!ignore_admin_state && !agent.admin_state_up) {
        return false;
    }
    let mode = agent_mode(agent);
    let distributed = router.get("distributed") == Some(&Value::Bool(true));
    if mode == "dvr" || mode == "dvr_no_external" || (mode == "legacy" && distributed) {
        return false;
    }
    let conf = agent.configurations();
    if let Some(id) = conf.get("router_id").and_then(Value::as_str)
        && !id.is_empty()
        && id != str_of(router, "id")
    {
        return false;
    }
    let internal_only = router
        .get("external_gateway_info")
        .and_then(|g| g.get("network_id"))
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    let handle_internal = conf
        .get("handle_internal_only_routers")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    !internal_only || handle_internal
}

/// Picks agents for a router among `candidates` (already filtered), least loaded first (ties
/// by host name), `needed` of them. Pure.
pub fn least_loaded<'a>(
    candidates: &[&'a Agent],
    load: &HashMap<String, i64>,
    needed: usize,
) -> Vec<&'a Agent> {
    let mut sorted: Vec<&Agent> = candidates.to_vec();
    sorted.sort_by(|a, b| {
        let la = load.get(&a.id).copied().unwrap_or(0);
        let lb = load.get(&b.id).copied().unwrap_or(0);
        la.cmp(&lb).then_with(|| a.host.cmp(&b.host))
    });
    sorted.truncate(needed);
    sorted
}

/// Schedules a router that needs agents (Neutron's `schedule_router`): a legacy router
/// without an admin-up agent gets one, an HA router up to `max_l3_agents_per_router`. Only
/// `only` (when given) is considered: the agent that just registered, for auto-scheduling.
/// Returns whether anything was bound.
pub async fn schedule_router(
    st: &ApiState,
    tx: &mut AnyConnection,
    router: &Obj,
    only: Option<&Agent>,
) -> ApiResult<bool> {
    let router_id = str_of(router, "id").to_string();
    let cfg = agents::config(st);
    let l3 = config(st);
    let now = agents::now_us();
    let ha = router.get("ha") == Some(&Value::Bool(true));
    let hosting = agents_of_router(tx, &router_id).await?;
    // A legacy router keeps its agent, even an admin-down one: Neutron's bind_router finds
    // binding index 1 taken and does nothing.
    if !ha && !hosting.is_empty() {
        return Ok(false);
    }
    let hints = crate::scheduler::az_hints(router, &cfg);
    let hosted_ids: HashSet<&str> = hosting.iter().map(|a| a.id.as_str()).collect();
    let all = match only {
        Some(a) => vec![a.clone()],
        None => agents::of_type(&mut *tx, agent_type::L3).await?,
    };
    let candidates: Vec<&Agent> = all
        .iter()
        .filter(|a| {
            a.is_alive(now, &cfg)
                && can_host(a, router, false)
                && !hosted_ids.contains(a.id.as_str())
                && (hints.is_empty()
                    || a.availability_zone
                        .as_ref()
                        .is_some_and(|z| hints.contains(z)))
        })
        .collect();
    if candidates.is_empty() {
        if only.is_none() {
            tracing::debug!(router_id = %router_id, "no L3 agent can host the router");
        }
        return Ok(false);
    }
    let load = loads(tx).await?;
    let mut used: Vec<i64> = sqlx::query_scalar(
        "SELECT binding_index FROM router_l3_agents WHERE router_id = $1 ORDER BY binding_index",
    )
    .bind(&router_id)
    .fetch_all(&mut *tx)
    .await?;
    let (needed, max_index) = if ha {
        let max = match l3.max_l3_agents_per_router {
            0 => candidates.len() + hosting.len(),
            n => n,
        };
        (max.saturating_sub(hosting.len()), max)
    } else {
        (1, 1)
    };
    let chosen: Vec<Agent> = least_loaded(&candidates, &load, needed)
        .into_iter()
        .cloned()
        .collect();
    let mut any = false;
    for a in &chosen {
        let Some(index) =
            (1..=i64::try_from(max_index).unwrap_or(i64::MAX)).find(|i| !used.contains(i))
        else {
            break;
        };
        if bind(tx, &router_id, a, index).await? {
            used.push(index);
            any = true;
        }
    }
    if any {
        bind_router_ports(st, tx, &router_id).await?;
    }
    Ok(any)
}

/// Schedules the router with id `router_id` if it exists (the "router updated" hook).
pub async fn router_updated(
    st: &ApiState,
    tx: &mut AnyConnection,
    router_id: &str,
) -> ApiResult<()> {
    if let Some(r) = db::get(&mut *tx, &routers::KIND, router_id).await? {
        schedule_router(st, tx, &r, None).await?;
    }
    Ok(())
}

/// Gives the routers lacking agents to an L3 agent that registered, revived or restarted
/// (Neutron's `auto_schedule_routers` on the agent's sync), within the report's transaction.
/// Called by the agent API after `agents::report`.
pub async fn agent_reported(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    status: AgentStatus,
    start_flag: bool,
) -> ApiResult<()> {
    if agent.agent_type != agent_type::L3
        || !(status != AgentStatus::Alive || start_flag)
        || !agent.admin_state_up
        || !config(st).router_auto_schedule
    {
        return Ok(());
    }
    let all = db::list(&mut *tx, &routers::KIND, None).await?;
    let counts: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT router_id, COUNT(*) FROM router_l3_agents GROUP BY router_id",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let max_ha = i64::try_from(config(st).max_l3_agents_per_router).unwrap_or(i64::MAX);
    for r in all {
        let n = counts.get(str_of(&r, "id")).copied().unwrap_or(0);
        let ha = r.get("ha") == Some(&Value::Bool(true));
        let under = if ha { max_ha == 0 || n < max_ha } else { n < 1 };
        if under {
            schedule_router(st, tx, &r, Some(agent)).await?;
        }
    }
    Ok(())
}

/// A router binding is moved off an agent that is admin-up, silent for twice
/// `agent_down_time` (Neutron's `agent_dead_limit`) and not starting up. Pure.
fn dead_for_failover(a: &Agent, now_us: i64, cfg: &AgentConfig) -> bool {
    let limit = cfg.down_after_us().saturating_mul(2);
    a.admin_state_up
        && now_us.saturating_sub(a.heartbeat_at) > limit
        && a.started_at.saturating_add(limit) <= now_us
}

/// The `(router, agent)` bindings to move off dead L3 agents: none when no live, admin-up L3
/// agent exists to take them (Neutron skips rescheduling then). Pure.
pub fn failover_plan(
    l3_agents: &[Agent],
    bindings: &[(String, String)],
    now_us: i64,
    cfg: &AgentConfig,
) -> Vec<(String, String)> {
    if !l3_agents
        .iter()
        .any(|a| a.admin_state_up && a.is_alive(now_us, cfg))
    {
        return Vec::new();
    }
    let dead: HashSet<&str> = l3_agents
        .iter()
        .filter(|a| dead_for_failover(a, now_us, cfg))
        .map(|a| a.id.as_str())
        .collect();
    bindings
        .iter()
        .filter(|(_, a)| dead.contains(a.as_str()))
        .cloned()
        .collect()
}

/// Moves routers off dead L3 agents when `allow_automatic_l3agent_failover` (Neutron's
/// `reschedule_routers_from_down_agents`), one transaction per router; returns how many
/// bindings moved. Driven by L3 agents' heartbeats (a live L3 agent is needed to take the
/// routers over anyway, and reports every `report_interval`).
pub async fn check_l3_failover(st: &ApiState, now_us: i64) -> ApiResult<usize> {
    if !config(st).allow_automatic_l3agent_failover {
        return Ok(0);
    }
    let cfg = agents::config(st);
    let l3 = agents::of_type(st.db.reader(), agent_type::L3).await?;
    let bindings: Vec<(String, String)> =
        sqlx::query_as("SELECT router_id, agent_id FROM router_l3_agents ORDER BY router_id")
            .fetch_all(st.db.reader())
            .await?;
    let plan = failover_plan(&l3, &bindings, now_us, &cfg);
    let mut moved = 0;
    for (router_id, agent_id) in plan {
        let Some(agent) = l3.iter().find(|a| a.id == agent_id) else {
            continue;
        };
        tracing::warn!(router_id = %router_id, agent_id = %agent_id, host = %agent.host,
            "rescheduling router from dead L3 agent");
        let mut tx = st.db.begin().await?;
        if unbind(st, &mut tx, &router_id, agent).await? {
            moved += 1;
            router_updated(st, &mut tx, &router_id).await?;
        }
        st.db.commit(tx).await?;
    }
    Ok(moved)
}

// ---------------------------------------------------------------------------------------------
// Availability zone hints.

/// Checks a new router's `availability_zone_hints`: as a network's, against the zones of
/// the L3 agents.
pub async fn validate_hints(tx: &mut AnyConnection, hints: &Value) -> ApiResult<()> {
    crate::availability_zones::validate_hints(tx, hints, agent_type::L3).await
}

// ---------------------------------------------------------------------------------------------
// API: /v2.0/routers/{id}/l3-agents and /v2.0/agents/{id}/l3-routers.

/// Routes of the `l3_agent_scheduler` extension.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v2.0/agents/{id}/l3-routers",
            get(list_routers).post(add_router),
        )
        .route(
            "/v2.0/agents/{id}/l3-routers/{router_id}",
            delete(remove_router),
        )
        .route("/v2.0/routers/{id}/l3-agents", get(list_agents))
}

fn invalid_l3_agent(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidL3Agent",
        format!("Agent {id} is not a L3 Agent or has been disabled"),
    )
}

async fn list_routers(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    common::enforce(&st, &ctx, "get_l3-routers", &Obj::new())?;
    if agents::get_agent(st.db.reader(), &id).await?.is_none() {
        return Err(agents::not_found(&id));
    }
    let ids = routers_of_agent(st.db.reader(), &id).await?;
    let mut conn = st.db.reader().acquire().await?;
    let mut items = Vec::with_capacity(ids.len());
    for rid in ids {
        if let Some(r) = db::get(&mut *conn, &routers::KIND, &rid).await? {
            let zones = zones_of_router(&mut *conn, &rid).await?;
            items.push(routers::render(&st, &ctx, &r, zones));
        }
    }
    drop(conn);
    let url = format!("{}/v2.0/agents/{id}/l3-routers", common::base_url(&headers));
    Ok(axum::Json(query.respond(items, "routers", &url)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRouter {
    router_id: Value,
}

async fn add_router(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AddRouter = serde_json::from_value(common::parse_json(&body)?)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
    let Some(router_id) = req.router_id.as_str().filter(|s| crate::attrs::is_uuid(s)) else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for router_id. Reason: '{}' is not a valid UUID.",
            crate::attrs::display(&req.router_id)
        )));
    };
    common::enforce(&st, &ctx, "create_l3-router", &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let Some(router) = db::get_for_update(&mut tx, &st.db, &routers::KIND, router_id).await? else {
        return Err(routers::not_found(router_id));
    };
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    // Neutron's validate_agent_router_combination.
    if agent.agent_type != agent_type::L3 {
        return Err(invalid_l3_agent(&id));
    }
    let mode = agent_mode(&agent);
    if mode == "dvr" || mode == "dvr_no_external" {
        return Err(ApiError::conflict(
            "DVRL3CannotAssignToDvrAgent",
            "Not allowed to manually assign a router to an agent in 'dvr' mode.",
        ));
    }
    if !agent.admin_state_up || !can_host(&agent, &router, true) {
        return Err(invalid_l3_agent(&id));
    }
    // Neutron's check_agent_router_scheduling_needed: already there → nothing to do; on
    // another agent → conflict, unless HA.
    let hosting = agents_of_router(&mut tx, router_id).await?;
    if hosting.iter().any(|a| a.id == agent.id) {
        st.db.commit(tx).await?;
        return Ok((StatusCode::CREATED, axum::Json(Value::Null)).into_response());
    }
    let ha = router.get("ha") == Some(&Value::Bool(true));
    if let Some(other) = hosting.first()
        && !ha
    {
        return Err(ApiError::conflict(
            "RouterHostedByL3Agent",
            format!(
                "The router {router_id} has been already hosted by the L3 Agent {}.",
                other.id
            ),
        ));
    }
    // Manual scheduling may exceed max_l3_agents_per_router (force_scheduling).
    let used: Vec<i64> =
        sqlx::query_scalar("SELECT binding_index FROM router_l3_agents WHERE router_id = $1")
            .bind(router_id)
            .fetch_all(&mut *tx)
            .await?;
    let index = (1..).find(|i| !used.contains(i)).unwrap_or(1);
    if !bind(&mut tx, router_id, &agent, index).await? {
        return Err(ApiError::conflict(
            "RouterSchedulingFailed",
            format!("Failed scheduling router {router_id} to the L3 Agent {id}."),
        ));
    }
    bind_router_ports(&st, &mut tx, router_id).await?;
    st.db.commit(tx).await?;
    Ok((StatusCode::CREATED, axum::Json(Value::Null)).into_response())
}

async fn remove_router(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((id, router_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    common::enforce(&st, &ctx, "delete_l3-router", &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    let mode = agent_mode(&agent);
    if mode == "dvr" || mode == "dvr_no_external" {
        return Err(ApiError::conflict(
            "DVRL3CannotRemoveFromDvrAgent",
            "Not allowed to manually remove a router from an agent in 'dvr' mode.",
        ));
    }
    // Neutron removes the binding if there is one, then fails only if the router is gone.
    unbind(&st, &mut tx, &router_id, &agent).await?;
    if db::get(&mut *tx, &routers::KIND, &router_id)
        .await?
        .is_none()
    {
        return Err(routers::not_found(&router_id));
    }
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

async fn list_agents(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    common::enforce(&st, &ctx, "get_l3-agents", &Obj::new())?;
    let mut conn = st.db.reader().acquire().await?;
    if db::get(&mut *conn, &routers::KIND, &id).await?.is_none() {
        return Err(routers::not_found(&id));
    }
    let hosting = agents_of_router(&mut conn, &id).await?;
    drop(conn);
    let url = format!("{}/v2.0/routers/{id}/l3-agents", common::base_url(&headers));
    Ok(agents::respond_list(&st, &ctx, &hosting, &query, &url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, host: &str, conf: Value, heartbeat_at: i64) -> Agent {
        let mut body = Obj::new();
        body.insert("configurations".into(), conf);
        Agent {
            id: id.into(),
            agent_type: agent_type::L3.into(),
            host: host.into(),
            availability_zone: Some("nova".into()),
            admin_state_up: true,
            created_at: 0,
            started_at: 0,
            heartbeat_at,
            revision_number: 1,
            body,
        }
    }

    fn obj(v: Value) -> Obj {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn candidates_follow_agent_configuration() {
        let r = obj(json!({"id": "r1", "external_gateway_info": null}));
        assert!(can_host(&agent("a", "h", json!({}), 0), &r, false));
        assert!(!can_host(
            &agent("a", "h", json!({"agent_mode": "dvr"}), 0),
            &r,
            false
        ));
        assert!(can_host(
            &agent("a", "h", json!({"agent_mode": "dvr_snat"}), 0),
            &r,
            false
        ));
        assert!(!can_host(
            &agent("a", "h", json!({"router_id": "other"}), 0),
            &r,
            false
        ));
        // Internal-only routers only where handled.
        let picky = agent("a", "h", json!({"handle_internal_only_routers": false}), 0);
        assert!(!can_host(&picky, &r, false));
        let gw = obj(json!({"id": "r1", "external_gateway_info": {"network_id": "n"}}));
        assert!(can_host(&picky, &gw, false));
        let dist = obj(json!({"id": "r1", "distributed": true}));
        assert!(!can_host(&agent("a", "h", json!({}), 0), &dist, false));
        let mut down = agent("a", "h", json!({}), 0);
        down.admin_state_up = false;
        assert!(!can_host(&down, &r, false));
        assert!(can_host(&down, &r, true));
    }

    #[test]
    fn least_routers_first() {
        let a = agent("a", "h1", json!({}), 0);
        let b = agent("b", "h2", json!({}), 0);
        let load: HashMap<String, i64> = [("a".to_string(), 3), ("b".to_string(), 1)].into();
        let got = least_loaded(&[&a, &b], &load, 1);
        assert_eq!(got[0].id, "b");
        assert_eq!(least_loaded(&[&a, &b], &load, 5).len(), 2);
    }

    #[test]
    fn failover_needs_a_live_agent() {
        let cfg = AgentConfig {
            agent_down_time: 10,
            ..Default::default()
        };
        let now = 1_000_000_000;
        let dead = agent("dead", "h1", json!({}), now - 21_000_000);
        let live = agent("live", "h2", json!({}), now);
        let b = vec![
            ("r1".to_string(), "dead".to_string()),
            ("r2".to_string(), "live".to_string()),
        ];
        assert_eq!(
            failover_plan(&[dead.clone(), live], &b, now, &cfg),
            vec![("r1".to_string(), "dead".to_string())]
        );
        assert!(failover_plan(&[dead], &b, now, &cfg).is_empty());
    }

    #[test]
    fn config_defaults() {
        let ini = neutrino_core::config::Ini::parse("", "t").unwrap();
        assert_eq!(L3Config::from_ini(&ini), L3Config::default());
        let ini = neutrino_core::config::Ini::parse(
            "[DEFAULT]\nallow_automatic_l3agent_failover = true\nl3_ha = True\n",
            "t",
        )
        .unwrap();
        let c = L3Config::from_ini(&ini);
        assert!(c.allow_automatic_l3agent_failover && c.l3_ha);
    }
}
