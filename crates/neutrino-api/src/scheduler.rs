//! DHCP scheduling (Neutron's `dhcp_agent_scheduler` extension and its
//! `AZAwareWeightScheduler`), DHCP ports, and automatic DHCP failover.
//!
//! Owns `network_dhcp_agents` (which DHCP agents serve which network) and the `network:dhcp`
//! ports of those agents. A network with a DHCP-enabled subnet is scheduled to
//! `dhcp_agents_per_network` live, admin-up DHCP agents whose host can reach one of the
//! network's segments (an L2 agent there could bind it), within the network's
//! `availability_zone_hints` (or `default_availability_zones`), spreading over zones and
//! taking the least loaded agent first. The server — not the DHCP agent, as in Neutron —
//! creates each scheduled agent's DHCP port (`device_id` `dhcp<uuid5(host)>-<network>`,
//! bound to the agent's host) in the same transaction, so the agent only ever reconciles.
//!
//! Scheduling runs when a DHCP-enabled subnet appears or changes ([`network_changed`]),
//! when a DHCP agent registers, revives or restarts ([`auto_schedule_agent`]), on the admin
//! API, and on failover ([`check_dhcp_failover`], driven by [`run_background`]): a DHCP agent
//! silent for twice `agent_down_time` (Neutron's `agent_dead_limit`) loses its networks to
//! live agents; its DHCP port is kept as `reserved_dhcp_port` and taken over, addresses and
//! all, by the next agent scheduled there.
//!
//! Everything here runs inside the caller's transaction and does SQL only; it must never
//! contact an agent — hosts learn about scheduling from the change log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

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
use neutrino_wire::agent_type;

use crate::agents::{self, Agent, AgentConfig};
use crate::binding::MechDriver;
use crate::{ApiState, binding, common, ipam, ml2, networks, ports, subnets};

/// `device_owner` of DHCP ports.
pub const DHCP_OWNER: &str = "network:dhcp";
/// `device_id` of a DHCP port whose agent lost the network (neutron-lib
/// `DEVICE_ID_RESERVED_DHCP_PORT`): the next agent takes it over.
pub const RESERVED_DHCP_PORT: &str = "reserved_dhcp_port";

/// `device_id` of the DHCP port of the agent on `host` for `network_id`, as Neutron's
/// `get_dhcp_agent_device_id`: `dhcp` + uuid5(NAMESPACE_DNS, short host name) + `-` + network.
pub fn dhcp_device_id(host: &str, network_id: &str) -> String {
    use sha1::{Digest, Sha1};
    let short = host.split('.').next().unwrap_or(host);
    let mut h = Sha1::new();
    h.update(uuid::Uuid::NAMESPACE_DNS.as_bytes());
    h.update(short.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let host_uuid = uuid::Builder::from_sha1_bytes(bytes).into_uuid();
    format!("dhcp{host_uuid}-{network_id}")
}

/// Ids of the networks an agent hosts.
pub async fn networks_of_agent<'c, E>(ex: E, agent_id: &str) -> ApiResult<Vec<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    Ok(sqlx::query_scalar(
        "SELECT network_id FROM network_dhcp_agents WHERE agent_id = $1 ORDER BY network_id",
    )
    .bind(agent_id)
    .fetch_all(ex)
    .await?)
}

/// The DHCP agents hosting a network.
pub async fn agents_of_network(tx: &mut AnyConnection, network_id: &str) -> ApiResult<Vec<Agent>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT agent_id FROM network_dhcp_agents WHERE network_id = $1 ORDER BY agent_id",
    )
    .bind(network_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(a) = agents::get_agent(&mut *tx, &id).await? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Networks hosted per agent (the scheduler's load: Neutron's default `dhcp_load_type` is
/// `networks`).
async fn loads(tx: &mut AnyConnection) -> ApiResult<HashMap<String, i64>> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT agent_id, COUNT(*) FROM network_dhcp_agents GROUP BY agent_id")
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

fn enable_dhcp(subnet: &Obj) -> bool {
    subnet.get("enable_dhcp") != Some(&Value::Bool(false))
}

async fn dhcp_subnets(tx: &mut AnyConnection, network_id: &str) -> ApiResult<Vec<Obj>> {
    let all = db::list(&mut *tx, &subnets::KIND, Some(("network_id", network_id))).await?;
    Ok(all.into_iter().filter(enable_dhcp).collect())
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// A network's or router's zone hints, else `default_availability_zones` (Neutron's
/// `get_az_hints`).
pub(crate) fn az_hints(net: &Obj, cfg: &AgentConfig) -> Vec<String> {
    let hints: Vec<String> = net
        .get("availability_zone_hints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if hints.is_empty() {
        cfg.default_availability_zones.clone()
    } else {
        hints
    }
}

/// Hosts that can reach one of `segments`: a live L2 agent of an enabled mechanism driver
/// there could bind it (Neutron's `filter_hosts_with_network_access`).
async fn hosts_with_access(
    st: &ApiState,
    tx: &mut AnyConnection,
    segments: &[Obj],
    now_us: i64,
    cfg: &AgentConfig,
) -> ApiResult<HashSet<String>> {
    let mut out = HashSet::new();
    for name in &st.ml2.mechanism_drivers {
        let Some(d) = MechDriver::from_name(name) else {
            continue;
        };
        for a in agents::of_type(&mut *tx, d.agent_type()).await? {
            if a.is_alive(now_us, cfg) {
                let conf = a.configurations();
                if segments.iter().any(|s| d.can_bind(&conf, s)) {
                    out.insert(a.host.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Picks `needed` agents among `hostable` (already filtered: live, admin up, in the hinted
/// zones, with network access, not hosting), as Neutron's `AZAwareWeightScheduler`: the
/// zone with the fewest agents for this network first (ties: the zone whose best agent is
/// least loaded), and within a zone the least loaded agent (ties: by host name, for
/// determinism). Pure.
pub fn select_agents<'a>(
    hostable: &[&'a Agent],
    hosted: &[Agent],
    load: &HashMap<String, i64>,
    needed: usize,
) -> Vec<&'a Agent> {
    let mut sorted: Vec<&Agent> = hostable.to_vec();
    sorted.sort_by(|a, b| {
        let la = load.get(&a.id).copied().unwrap_or(0);
        let lb = load.get(&b.id).copied().unwrap_or(0);
        la.cmp(&lb).then_with(|| a.host.cmp(&b.host))
    });
    // Zone order: first appearance in load order, so equal counts go to the lighter zone.
    let mut zones: Vec<String> = Vec::new();
    let mut by_zone: BTreeMap<String, Vec<&Agent>> = BTreeMap::new();
    for a in sorted {
        let z = a.availability_zone.clone().unwrap_or_default();
        if !zones.contains(&z) {
            zones.push(z.clone());
        }
        by_zone.entry(z).or_default().push(a);
    }
    let mut count: HashMap<String, usize> = zones.iter().map(|z| (z.clone(), 0)).collect();
    for a in hosted {
        let z = a.availability_zone.clone().unwrap_or_default();
        if let Some(c) = count.get_mut(&z) {
            *c += 1;
        }
    }
    let mut chosen = Vec::new();
    while chosen.len() < needed {
        let Some(zone) = zones
            .iter()
            .filter(|z| by_zone.get(*z).is_some_and(|v| !v.is_empty()))
            .min_by_key(|z| count.get(*z).copied().unwrap_or(0))
            .cloned()
        else {
            break;
        };
        if let Some(list) = by_zone.get_mut(&zone)
            && !list.is_empty()
        {
            chosen.push(list.remove(0));
            *count.entry(zone).or_insert(0) += 1;
        }
    }
    chosen
}

/// Schedules a network that gained or changed a DHCP-enabled subnet, and gives every DHCP
/// port of the network an address on each DHCP-enabled subnet. Called by `subnets` inside
/// the subnet's transaction.
pub async fn network_changed(
    st: &ApiState,
    tx: &mut AnyConnection,
    network_id: &str,
) -> ApiResult<()> {
    let subnets = dhcp_subnets(tx, network_id).await?;
    if subnets.is_empty() {
        return Ok(());
    }
    let Some(net) = db::get(&mut *tx, &networks::KIND, network_id).await? else {
        return Ok(());
    };
    let cfg = agents::config(st);
    let now = agents::now_us();
    let hosted = agents_of_network(tx, network_id).await?;
    if cfg.network_auto_schedule && hosted.len() < cfg.dhcp_agents_per_network {
        schedule_more(st, tx, &net, &hosted, &cfg, now).await?;
    }
    for a in agents_of_network(tx, network_id).await? {
        ensure_dhcp_port(st, tx, &a, &net, &subnets).await?;
    }
    Ok(())
}

async fn schedule_more(
    st: &ApiState,
    tx: &mut AnyConnection,
    net: &Obj,
    hosted: &[Agent],
    cfg: &AgentConfig,
    now: i64,
) -> ApiResult<usize> {
    let network_id = str_of(net, "id").to_string();
    let needed = cfg.dhcp_agents_per_network.saturating_sub(hosted.len());
    if needed == 0 {
        return Ok(0);
    }
    let hints = az_hints(net, cfg);
    let segments = ml2::network_segments(&mut *tx, &network_id).await?;
    let reachable = hosts_with_access(st, tx, &segments, now, cfg).await?;
    let hosted_ids: HashSet<&str> = hosted.iter().map(|a| a.id.as_str()).collect();
    let all = agents::of_type(&mut *tx, agent_type::DHCP).await?;
    let hostable: Vec<&Agent> = all
        .iter()
        .filter(|a| {
            a.admin_state_up
                && a.is_alive(now, cfg)
                && !hosted_ids.contains(a.id.as_str())
                && reachable.contains(&a.host)
                && (hints.is_empty()
                    || a.availability_zone
                        .as_ref()
                        .is_some_and(|z| hints.contains(z)))
        })
        .collect();
    let load = loads(tx).await?;
    let chosen: Vec<Agent> = select_agents(&hostable, hosted, &load, needed)
        .into_iter()
        .cloned()
        .collect();
    for a in &chosen {
        tracing::info!(network_id = %network_id, agent_id = %a.id, host = %a.host, "scheduling network to DHCP agent");
        bind_network(tx, a, &network_id).await?;
    }
    Ok(chosen.len())
}

/// Records that `agent` hosts `network_id` and tells its host (an `agent` change). False
/// when it already did.
async fn bind_network(tx: &mut AnyConnection, agent: &Agent, network_id: &str) -> ApiResult<bool> {
    let res = sqlx::query(
        "INSERT INTO network_dhcp_agents (network_id, agent_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (network_id, agent_id) DO NOTHING",
    )
    .bind(network_id)
    .bind(&agent.id)
    .bind(agents::now_us())
    .execute(&mut *tx)
    .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    agents::touch(tx, &agent.id).await?;
    Ok(true)
}

/// Removes `network_id` from `agent` (Neutron's `remove_network_from_dhcp_agent`): its DHCP
/// port is kept with `device_id` `reserved_dhcp_port`, so the next agent scheduled there
/// reuses the address. False when the agent did not host the network.
pub async fn unbind_network(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    network_id: &str,
) -> ApiResult<bool> {
    let res =
        sqlx::query("DELETE FROM network_dhcp_agents WHERE network_id = $1 AND agent_id = $2")
            .bind(network_id)
            .bind(&agent.id)
            .execute(&mut *tx)
            .await?;
    if res.rows_affected() == 0 {
        return Ok(false);
    }
    let device_id = dhcp_device_id(&agent.host, network_id);
    for mut p in db::list(&mut *tx, &ports::KIND, Some(("device_id", &device_id))).await? {
        if str_of(&p, "network_id") != network_id {
            continue;
        }
        p.insert("device_id".into(), json!(RESERVED_DHCP_PORT));
        db::save(tx, &ports::KIND, &mut p).await?;
    }
    let _ = st;
    agents::touch(tx, &agent.id).await?;
    Ok(true)
}

/// Schedules networks lacking DHCP agents to a DHCP agent that registered, revived or
/// restarted (Neutron's `auto_schedule_networks`), within the caller's transaction.
pub async fn auto_schedule_agent(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    now_us: i64,
) -> ApiResult<()> {
    let cfg = agents::config(st);
    if !cfg.network_auto_schedule || !agent.admin_state_up || !agent.is_alive(now_us, &cfg) {
        return Ok(());
    }
    let all_subnets = db::list(&mut *tx, &subnets::KIND, None).await?;
    let mut nets: Vec<String> = all_subnets
        .iter()
        .filter(|s| enable_dhcp(s))
        .map(|s| str_of(s, "network_id").to_string())
        .collect();
    nets.sort();
    nets.dedup();
    let hosted: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT network_id, COUNT(*) FROM network_dhcp_agents GROUP BY network_id",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mine: HashSet<String> = networks_of_agent(&mut *tx, &agent.id)
        .await?
        .into_iter()
        .collect();
    for net_id in nets {
        let n = hosted.get(&net_id).copied().unwrap_or(0);
        if mine.contains(&net_id)
            || usize::try_from(n).unwrap_or(usize::MAX) >= cfg.dhcp_agents_per_network
        {
            continue;
        }
        let Some(net) = db::get(&mut *tx, &networks::KIND, &net_id).await? else {
            continue;
        };
        let hints = az_hints(&net, &cfg);
        if !hints.is_empty()
            && !agent
                .availability_zone
                .as_ref()
                .is_some_and(|z| hints.contains(z))
        {
            continue;
        }
        let segments = ml2::network_segments(&mut *tx, &net_id).await?;
        if !hosts_with_access(st, tx, &segments, now_us, &cfg)
            .await?
            .contains(&agent.host)
        {
            continue;
        }
        if bind_network(tx, agent, &net_id).await? {
            let subnets = dhcp_subnets(tx, &net_id).await?;
            ensure_dhcp_port(st, tx, agent, &net, &subnets).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DHCP ports.

/// Makes sure `agent` has its DHCP port on `net` with an address on every DHCP subnet: the
/// existing one, else the network's reserved one (taken over), else a new one.
async fn ensure_dhcp_port(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    net: &Obj,
    subnets: &[Obj],
) -> ApiResult<()> {
    let network_id = str_of(net, "id").to_string();
    let device_id = dhcp_device_id(&agent.host, &network_id);
    let on_net = |p: &Obj| str_of(p, "network_id") == network_id;
    let mut port = db::list(&mut *tx, &ports::KIND, Some(("device_id", &device_id)))
        .await?
        .into_iter()
        .find(on_net);
    if port.is_none() {
        port = db::list(
            &mut *tx,
            &ports::KIND,
            Some(("device_id", RESERVED_DHCP_PORT)),
        )
        .await?
        .into_iter()
        .find(|p| on_net(p) && str_of(p, "device_owner") == DHCP_OWNER);
    }
    let Some(mut port) = port else {
        create_dhcp_port(st, tx, net, agent, &device_id, subnets).await?;
        return Ok(());
    };
    let mut changed = false;
    if str_of(&port, "device_id") != device_id {
        port.insert("device_id".into(), json!(device_id));
        changed = true;
    }
    if str_of(&port, "binding:host_id") != agent.host {
        port.insert("binding:host_id".into(), json!(agent.host));
        binding::bind_port(st, tx, net, &mut port).await?;
        changed = true;
    }
    let port_id = str_of(&port, "id").to_string();
    let mac = str_of(&port, "mac_address").to_string();
    let mut fixed = port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let have: HashSet<String> = fixed
        .iter()
        .filter_map(|f| f.get("subnet_id").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    for s in subnets {
        if have.contains(str_of(s, "id")) {
            continue;
        }
        fixed.push(allocate(st, tx, s, &network_id, &port_id, &mac).await?);
        changed = true;
    }
    if changed {
        port.insert("fixed_ips".into(), Value::Array(fixed));
        db::save(tx, &ports::KIND, &mut port).await?;
    }
    Ok(())
}

async fn allocate(
    st: &ApiState,
    tx: &mut AnyConnection,
    subnet: &Obj,
    network_id: &str,
    port_id: &str,
    mac: &str,
) -> ApiResult<Value> {
    let ip = if ipam::is_auto_address(subnet) {
        ipam::allocate_eui64(st, tx, subnet, network_id, port_id, mac).await?
    } else {
        ipam::allocate_any(st, tx, subnet, network_id, port_id).await?
    };
    Ok(json!({"subnet_id": str_of(subnet, "id"), "ip_address": ip}))
}

/// Creates the DHCP port of `agent` on `net` (Neutron's DHCP agent does this over RPC with
/// `create_dhcp_port`; here the server does it while scheduling). The port belongs to the
/// network's project, has no security groups (Neutron gives `network:*` ports none), is
/// bound to the agent's host, and gets an address on each DHCP subnet.
async fn create_dhcp_port(
    st: &ApiState,
    tx: &mut AnyConnection,
    net: &Obj,
    agent: &Agent,
    device_id: &str,
    subnets: &[Obj],
) -> ApiResult<Obj> {
    let network_id = str_of(net, "id").to_string();
    let project = str_of(net, "project_id").to_string();
    let id = db::new_id();
    let mut obj = Obj::new();
    for (k, v) in [
        ("id", json!(id)),
        ("name", json!("")),
        ("description", json!("")),
        ("network_id", json!(network_id)),
        ("project_id", json!(project)),
        ("tenant_id", json!(project)),
        ("admin_state_up", json!(true)),
        ("status", json!("DOWN")),
        ("device_id", json!(device_id)),
        ("device_owner", json!(DHCP_OWNER)),
        ("fixed_ips", json!([])),
        ("allowed_address_pairs", json!([])),
        ("extra_dhcp_opts", json!([])),
        ("security_groups", json!([])),
        (
            "port_security_enabled",
            net.get("port_security_enabled")
                .cloned()
                .unwrap_or(json!(true)),
        ),
        ("binding:host_id", json!(agent.host)),
        ("binding:profile", json!({})),
        ("binding:vnic_type", json!("normal")),
        ("binding:vif_type", json!(binding::VIF_UNBOUND)),
        ("binding:vif_details", json!({})),
        ("tags", json!([])),
    ] {
        obj.insert(k.into(), v);
    }
    binding::bind_port(st, tx, net, &mut obj).await?;
    // Same MAC generation and collision retry as any other port.
    ports::insert_port(st, tx, &mut obj, None, &network_id).await?;
    let mac = str_of(&obj, "mac_address").to_string();
    let mut fixed = Vec::with_capacity(subnets.len());
    for s in subnets {
        fixed.push(allocate(st, tx, s, &network_id, &id, &mac).await?);
    }
    obj.insert("fixed_ips".into(), Value::Array(fixed));
    sqlx::query("UPDATE ports SET body = $1 WHERE id = $2")
        .bind(Value::Object(obj.clone()).to_string())
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    db::log_create(tx, &ports::KIND, &obj).await?;
    Ok(obj)
}

// ---------------------------------------------------------------------------------------------
// Failover.

/// A DHCP agent is dead for failover after twice `agent_down_time` without a heartbeat
/// (Neutron's `agent_dead_limit_seconds`), and only if it is not still starting up: Neutron
/// gives a restarted agent `agent_dead_limit` plus two seconds per hosted network.
fn dead_for_failover(a: &Agent, hosted: i64, now_us: i64, cfg: &AgentConfig) -> bool {
    let limit = cfg.down_after_us().saturating_mul(2);
    let silent = now_us.saturating_sub(a.heartbeat_at) > limit;
    let starting_up = a
        .started_at
        .saturating_add(limit)
        .saturating_add(hosted.saturating_mul(2_000_000))
        > now_us;
    a.admin_state_up && silent && !starting_up
}

/// The `(network, agent)` bindings to move off dead DHCP agents at `now_us`: empty when no
/// live, admin-up DHCP agent exists to take them (Neutron skips rescheduling then). Pure.
pub fn failover_plan(
    dhcp_agents: &[Agent],
    bindings: &[(String, String)],
    now_us: i64,
    cfg: &AgentConfig,
) -> Vec<(String, String)> {
    let mut hosted: HashMap<&str, i64> = HashMap::new();
    for (_, a) in bindings {
        *hosted.entry(a.as_str()).or_insert(0) += 1;
    }
    let any_live = dhcp_agents
        .iter()
        .any(|a| a.admin_state_up && a.is_alive(now_us, cfg));
    if !any_live {
        return Vec::new();
    }
    let dead: HashSet<&str> = dhcp_agents
        .iter()
        .filter(|a| {
            dead_for_failover(
                a,
                hosted.get(a.id.as_str()).copied().unwrap_or(0),
                now_us,
                cfg,
            )
        })
        .map(|a| a.id.as_str())
        .collect();
    bindings
        .iter()
        .filter(|(_, a)| dead.contains(a.as_str()))
        .cloned()
        .collect()
}

/// Moves networks off dead DHCP agents (when `allow_automatic_dhcp_failover`), one
/// transaction per network; returns how many bindings were removed.
pub async fn check_dhcp_failover(st: &ApiState, now_us: i64) -> ApiResult<usize> {
    let cfg = agents::config(st);
    if !cfg.allow_automatic_dhcp_failover {
        return Ok(0);
    }
    let dhcp = agents::of_type(st.db.reader(), agent_type::DHCP).await?;
    let bindings: Vec<(String, String)> =
        sqlx::query_as("SELECT network_id, agent_id FROM network_dhcp_agents ORDER BY network_id")
            .fetch_all(st.db.reader())
            .await?;
    let plan = failover_plan(&dhcp, &bindings, now_us, &cfg);
    let mut moved = 0;
    for (network_id, agent_id) in plan {
        let Some(agent) = dhcp.iter().find(|a| a.id == agent_id) else {
            continue;
        };
        tracing::warn!(network_id = %network_id, agent_id = %agent_id, host = %agent.host,
            dead_time = cfg.agent_down_time * 2,
            "removing network from DHCP agent: no report within the dead time");
        let mut tx = st.db.begin().await?;
        if unbind_network(st, &mut tx, agent, &network_id).await? {
            moved += 1;
            if cfg.network_auto_schedule {
                network_changed(st, &mut tx, &network_id).await?;
            }
        }
        st.db.commit(tx).await?;
    }
    Ok(moved)
}

/// The server's periodic agent work, forever: DHCP failover every `agent_down_time / 2`
/// (after waiting the dead limit once at start, so agents that reported to a server that was
/// down get a chance to report again: Neutron's `wait_down_agents`), and an hourly trim of
/// the change log.
pub async fn run_background(st: ApiState) {
    let cfg = agents::config(&st);
    let interval =
        Duration::from_secs(u64::try_from((cfg.agent_down_time / 2).max(1)).unwrap_or(1));
    tokio::time::sleep(Duration::from_secs(
        u64::try_from(cfg.agent_down_time.saturating_mul(2)).unwrap_or(150),
    ))
    .await;
    let mut last_trim: Option<std::time::Instant> = None;
    loop {
        if let Err(e) = check_dhcp_failover(&st, agents::now_us()).await {
            tracing::error!(error = %e, "DHCP failover check failed");
        }
        if last_trim.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            match crate::agent_api::trim_change_log(&st, agents::now_us()).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "trimmed the change log"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "trimming the change log failed"),
            }
            last_trim = Some(std::time::Instant::now());
        }
        tokio::time::sleep(interval).await;
    }
}

// ---------------------------------------------------------------------------------------------
// API: /v2.0/agents/{id}/dhcp-networks and /v2.0/networks/{id}/dhcp-agents.

/// Routes of the `dhcp_agent_scheduler` extension.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route(
            "/v2.0/agents/{id}/dhcp-networks",
            get(list_networks).post(add_network),
        )
        .route(
            "/v2.0/agents/{id}/dhcp-networks/{network_id}",
            delete(remove_network),
        )
        .route("/v2.0/networks/{id}/dhcp-agents", get(list_agents))
}

fn invalid_dhcp_agent(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "InvalidDHCPAgent",
        format!("Agent {id} is not a valid DHCP Agent or has been disabled."),
    )
}

async fn list_networks(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    common::enforce(&st, &ctx, "get_dhcp-networks", &Obj::new())?;
    if agents::get_agent(st.db.reader(), &id).await?.is_none() {
        return Err(agents::not_found(&id));
    }
    let ids = networks_of_agent(st.db.reader(), &id).await?;
    let mut items = Vec::with_capacity(ids.len());
    for nid in ids {
        if let Some(net) = db::get(st.db.reader(), &networks::KIND, &nid).await? {
            let subnet_ids: Vec<Value> =
                sqlx::query_scalar("SELECT id FROM subnets WHERE network_id = $1 ORDER BY id")
                    .bind(&nid)
                    .fetch_all(st.db.reader())
                    .await?
                    .into_iter()
                    .map(Value::String)
                    .collect::<Vec<_>>();
            let mut net = net;
            let zones = crate::availability_zones::of_network(st.db.reader(), &nid).await?;
            net.insert("availability_zones".into(), json!(zones));
            items.push(networks::render(&st, &ctx, &net, subnet_ids, None));
        }
    }
    let url = format!(
        "{}/v2.0/agents/{id}/dhcp-networks",
        common::base_url(&headers)
    );
    Ok(axum::Json(query.respond(items, "networks", &url)).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNetwork {
    network_id: Value,
}

async fn add_network(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: AddNetwork = serde_json::from_value(common::parse_json(&body)?)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))?;
    let Some(network_id) = req.network_id.as_str().filter(|s| crate::attrs::is_uuid(s)) else {
        return Err(ApiError::bad_request(format!(
            "Invalid input for network_id. Reason: '{}' is not a valid UUID.",
            crate::attrs::display(&req.network_id)
        )));
    };
    common::enforce(&st, &ctx, "create_dhcp-network", &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let Some(net) = db::get_for_update(&mut tx, &st.db, &networks::KIND, network_id).await? else {
        return Err(ApiError::not_found("Network", network_id));
    };
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    if agent.agent_type != agent_type::DHCP || !agent.admin_state_up {
        return Err(invalid_dhcp_agent(&id));
    }
    // An explicit add is forced scheduling: it ignores dhcp_agents_per_network, zones and
    // liveness, as Neutron's `bind(..., force_scheduling=True)`.
    if !bind_network(&mut tx, &agent, network_id).await? {
        return Err(ApiError::conflict(
            "NetworkHostedByDHCPAgent",
            format!("The network {network_id} has been already hosted by the DHCP Agent {id}."),
        ));
    }
    let subnets = dhcp_subnets(&mut tx, network_id).await?;
    if !subnets.is_empty() {
        ensure_dhcp_port(&st, &mut tx, &agent, &net, &subnets).await?;
    }
    st.db.commit(tx).await?;
    Ok((StatusCode::CREATED, axum::Json(Value::Null)).into_response())
}

async fn remove_network(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path((id, network_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    common::enforce(&st, &ctx, "delete_dhcp-network", &Obj::new())?;
    let mut tx = st.db.begin().await?;
    let agent = agents::get_agent(&mut *tx, &id)
        .await?
        .ok_or_else(|| agents::not_found(&id))?;
    if !unbind_network(&st, &mut tx, &agent, &network_id).await? {
        return Err(ApiError::conflict(
            "NetworkNotHostedByDhcpAgent",
            format!("The network {network_id} is not hosted by the DHCP Agent {id}."),
        ));
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
    common::enforce(&st, &ctx, "get_dhcp-agents", &Obj::new())?;
    let mut conn = st.db.reader().acquire().await?;
    if db::get(&mut *conn, &networks::KIND, &id).await?.is_none() {
        return Err(ApiError::not_found("Network", &id));
    }
    let hosting = agents_of_network(&mut conn, &id).await?;
    drop(conn);
    let url = format!(
        "{}/v2.0/networks/{id}/dhcp-agents",
        common::base_url(&headers)
    );
    Ok(agents::respond_list(&st, &ctx, &hosting, &query, &url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, host: &str, az: &str, heartbeat_at: i64, started_at: i64) -> Agent {
        Agent {
            id: id.into(),
            agent_type: agent_type::DHCP.into(),
            host: host.into(),
            availability_zone: Some(az.into()),
            admin_state_up: true,
            created_at: 0,
            started_at,
            heartbeat_at,
            revision_number: 1,
            body: Obj::new(),
        }
    }

    #[test]
    fn device_id_is_neutrons() {
        // uuid5(NAMESPACE_DNS, "compute1"), as Python's uuid.uuid5 computes it.
        let id = dhcp_device_id("compute1.example.org", "net");
        assert_eq!(id, dhcp_device_id("compute1", "net"));
        assert!(id.starts_with("dhcp") && id.ends_with("-net"));
        let u = uuid::Uuid::parse_str(&id[4..40]).unwrap();
        assert_eq!(u.get_version_num(), 5);
        assert_eq!(id, "dhcpe0130025-5ee5-5094-8d98-24d0a68981b3-net");
    }

    #[test]
    fn az_aware_spread_least_loaded_first() {
        let a1 = agent("a1", "h1", "az1", 0, 0);
        let a2 = agent("a2", "h2", "az1", 0, 0);
        let b1 = agent("b1", "h3", "az2", 0, 0);
        let load: HashMap<String, i64> = [("a1".to_string(), 5), ("a2".to_string(), 1)].into();
        let hostable = [&a1, &a2, &b1];
        let picked: Vec<&str> = select_agents(&hostable, &[], &load, 2)
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        // One per zone; in az1 the lighter a2.
        assert_eq!(picked.len(), 2);
        assert!(
            picked.contains(&"b1") && picked.contains(&"a2"),
            "{picked:?}"
        );
        // az1 already hosts one: the next goes to az2.
        let hosted = [a1.clone()];
        let picked = select_agents(&[&a2, &b1], &hosted, &load, 1);
        assert_eq!(picked[0].id, "b1");
        // More than available: all of them.
        assert_eq!(select_agents(&hostable, &[], &load, 5).len(), 3);
    }

    #[test]
    fn failover_only_from_dead_agents_when_someone_is_alive() {
        let cfg = AgentConfig {
            agent_down_time: 10,
            ..Default::default()
        };
        let now = 1_000_000_000;
        let dead = agent("dead", "h1", "nova", now - 21_000_000, 0);
        let slow = agent("slow", "h2", "nova", now - 15_000_000, 0);
        let live = agent("live", "h3", "nova", now, 0);
        let bindings = vec![
            ("n1".to_string(), "dead".to_string()),
            ("n2".to_string(), "slow".to_string()),
            ("n3".to_string(), "live".to_string()),
        ];
        let plan = failover_plan(&[dead.clone(), slow.clone(), live], &bindings, now, &cfg);
        assert_eq!(plan, vec![("n1".to_string(), "dead".to_string())]);
        // Nobody alive: nothing moves.
        assert!(failover_plan(&[dead.clone(), slow], &bindings, now, &cfg).is_empty());
        // Recently restarted: still starting up.
        let restarted = agent("dead", "h1", "nova", now - 21_000_000, now - 5_000_000);
        let live = agent("live", "h3", "nova", now, 0);
        assert!(failover_plan(&[restarted, live], &bindings, now, &cfg).is_empty());
    }
}
