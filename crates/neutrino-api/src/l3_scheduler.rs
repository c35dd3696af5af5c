//! L3 agent scheduling (Neutron's `l3_agent_scheduler`, `router_availability_zone` and the
//! scheduling half of `l3-ha`): the L3 options, which L3 agents may host a router, and where
//! router ports are bound.
//!
//! Declares the [`L3`] binding (`router_l3_agents`, Neutron's `routerl3agentbindings`) for
//! the shared scheduler in `scheduling`, and owns where router ports are bound: a router's
//! gateway and interface ports are bound (`binding:host_id`) to the host of the agent
//! hosting it, as Neutron's L3 RPC does when the agent syncs, so the host's L2 agent wires
//! them and reports them ACTIVE, and the sync protocol's binding history routes their
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
//! (`router_auto_schedule`), on the admin API (`scheduling_api`), and on failover from dead
//! agents (`allow_automatic_l3agent_failover`, default false; checked by `periodic` and on
//! live L3 agents' heartbeats).
//!
//! Everything here runs in the caller's transaction and does SQL only; it must never contact
//! an agent: hosts learn about (un)scheduling from `agent` changes (the agent's revision is
//! bumped) and from router changes.

use std::collections::HashMap;

use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::ApiResult;
use neutrino_core::db::{self, Obj};
use neutrino_wire::{AgentStatus, agent_type};

use crate::agents::{self, Agent};
use crate::scheduling::Binding;
use crate::{ApiState, binding, networks, ports, routers};

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

/// Routers on L3 agents: least loaded first, at a binding index; no start-up grace.
pub static L3: Binding = Binding {
    agent_type: agent_type::L3,
    resource: &routers::KIND,
    table: "router_l3_agents",
    column: "router_id",
    indexed: true,
    spread_over_zones: false,
    grace_per_binding_us: 0,
    failover_enabled: |st| config(st).allow_automatic_l3agent_failover,
    released: |st, tx, _, router_id| Box::pin(bind_router_ports(st, tx, router_id)),
    reschedule: |st, tx, router_id| Box::pin(router_updated(st, tx, router_id)),
};

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `agent_mode` of an L3 agent (`legacy` unless reported).
pub(crate) fn agent_mode(a: &Agent) -> String {
    a.configurations()
        .get("agent_mode")
        .and_then(Value::as_str)
        .unwrap_or("legacy")
        .to_string()
}

// ---------------------------------------------------------------------------------------------
// Where the routers are, and their ports.

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
    let host = port_host(tx, router_id).await?;
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
    Ok(L3
        .agents_of(tx, router_id)
        .await?
        .into_iter()
        .next()
        .map(|a| a.host)
        .unwrap_or_default())
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

/// How many L3 agents a router wants: one, or `max_l3_agents_per_router` for an HA router
/// (0: every candidate).
fn wanted(router: &Obj, max_ha: usize) -> usize {
    match (router.get("ha") == Some(&Value::Bool(true)), max_ha) {
        (false, _) => 1,
        (true, 0) => usize::MAX,
        (true, n) => n,
    }
}

/// Schedules a router that needs agents (Neutron's `schedule_router`): a legacy router
/// without an agent gets one, an HA router up to `max_l3_agents_per_router`. A legacy router
/// keeps its agent, even an admin-down one: Neutron's `bind_router` finds binding index 1
/// taken and does nothing. Only `only` (when given) is considered: the agent that just
/// registered, for auto-scheduling. Returns whether anything was bound.
pub async fn schedule_router(
    st: &ApiState,
    tx: &mut AnyConnection,
    router: &Obj,
    only: Option<&Agent>,
) -> ApiResult<bool> {
    let router_id = str_of(router, "id");
    let hosting = L3.agents_of(tx, router_id).await?;
    let limit = wanted(router, config(st).max_l3_agents_per_router);
    let accept = |a: &Agent| can_host(a, router, false);
    let any = L3
        .schedule(st, tx, router, &hosting, only, limit, accept)
        .await?;
    if any {
        bind_router_ports(st, tx, router_id).await?;
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
    let l3 = config(st);
    if agent.agent_type != agent_type::L3
        || !(status != AgentStatus::Alive || start_flag)
        || !agent.admin_state_up
        || !l3.router_auto_schedule
    {
        return Ok(());
    }
    let all = db::list(&mut *tx, &routers::KIND, None).await?;
    let limit = |r: &Obj| wanted(r, l3.max_l3_agents_per_router);
    for r in L3.lacking(st, tx, agent, &all, limit).await? {
        schedule_router(st, tx, r, Some(agent)).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Availability zone hints.

/// Checks a new router's `availability_zone_hints`: as a network's, against the zones of
/// the L3 agents.
pub async fn validate_hints(tx: &mut AnyConnection, hints: &Value) -> ApiResult<()> {
    crate::availability_zones::validate_hints(tx, hints, agent_type::L3).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(conf: Value) -> Agent {
        let mut body = Obj::new();
        body.insert("configurations".into(), conf);
        Agent {
            id: "a".into(),
            agent_type: agent_type::L3.into(),
            host: "h".into(),
            availability_zone: Some("nova".into()),
            admin_state_up: true,
            created_at: 0,
            started_at: 0,
            heartbeat_at: 0,
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
        let gw = obj(json!({"id": "r1", "external_gateway_info": {"network_id": "n"}}));
        let dist = obj(json!({"id": "r1", "distributed": true}));
        let picky = json!({"handle_internal_only_routers": false});
        for (conf, router, ok) in [
            (json!({}), &r, true),
            (json!({"agent_mode": "dvr"}), &r, false),
            (json!({"agent_mode": "dvr_snat"}), &r, true),
            (json!({"router_id": "other"}), &r, false),
            // Internal-only routers only where handled.
            (picky.clone(), &r, false),
            (picky, &gw, true),
            (json!({}), &dist, false),
        ] {
            assert_eq!(can_host(&agent(conf.clone()), router, false), ok, "{conf}");
        }
        let mut down = agent(json!({}));
        down.admin_state_up = false;
        assert!(!can_host(&down, &r, false));
        assert!(can_host(&down, &r, true));
    }

    #[test]
    fn legacy_routers_want_one_agent_ha_routers_several() {
        let legacy = obj(json!({"id": "r1"}));
        let ha = obj(json!({"id": "r1", "ha": true}));
        assert_eq!(wanted(&legacy, 3), 1);
        assert_eq!(wanted(&ha, 3), 3);
        // max_l3_agents_per_router = 0: every candidate.
        assert_eq!(wanted(&ha, 0), usize::MAX);
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
