//! DHCP scheduling (Neutron's `dhcp_agent_scheduler` extension and its
//! `AZAwareWeightScheduler`), DHCP ports, and what DHCP failover does.
//!
//! Declares the [`DHCP`] binding (`network_dhcp_agents`: which DHCP agents serve which
//! network) for the shared scheduler in `scheduling`, and owns the `network:dhcp` ports of
//! those agents. A network with a DHCP-enabled subnet is scheduled to
//! `dhcp_agents_per_network` live, admin-up DHCP agents whose host can reach one of the
//! network's segments (an L2 agent there could bind it), within the network's
//! `availability_zone_hints` (or `default_availability_zones`), spreading over zones and
//! taking the least loaded agent first. The server — not the DHCP agent, as in Neutron —
//! creates each scheduled agent's DHCP port (`device_id` `dhcp<uuid5(host)>-<network>`,
//! bound to the agent's host) in the same transaction, so the agent only ever reconciles.
//!
//! Scheduling runs when a DHCP-enabled subnet appears or changes ([`network_changed`]),
//! when a DHCP agent registers, revives or restarts ([`agent_reported`]), on the admin API
//! (`scheduling_api`), and on failover (`scheduling::Binding::check_failover`, driven by
//! `periodic`): a DHCP agent silent for twice `agent_down_time` (Neutron's
//! `agent_dead_limit`) loses its networks to live agents; its DHCP port is kept as
//! `reserved_dhcp_port` and taken over, addresses and all, by the next agent scheduled there.
//!
//! Everything here runs inside the caller's transaction and does SQL only; it must never
//! contact an agent — hosts learn about scheduling from the change log.

use std::collections::HashSet;

use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::ApiResult;
use neutrino_core::db::{self, Obj};
use neutrino_wire::{AgentStatus, agent_type};

use crate::agents::{self, Agent, AgentConfig};
use crate::binding::MechDriver;
use crate::scheduling::Binding;
use crate::{ApiState, binding, ipam, ml2, networks, ports, subnets};

/// `device_owner` of DHCP ports.
pub const DHCP_OWNER: &str = "network:dhcp";
/// `device_id` of a DHCP port whose agent lost the network (neutron-lib
/// `DEVICE_ID_RESERVED_DHCP_PORT`): the next agent takes it over.
pub const RESERVED_DHCP_PORT: &str = "reserved_dhcp_port";

/// Networks on DHCP agents: spread over zones; a restarted agent gets two seconds per
/// network before failover counts it dead (Neutron's DHCP start-up grace).
pub static DHCP: Binding = Binding {
    agent_type: agent_type::DHCP,
    resource: &networks::KIND,
    table: "network_dhcp_agents",
    column: "network_id",
    indexed: false,
    spread_over_zones: true,
    grace_per_binding_us: 2_000_000,
    failover_enabled: |st| agents::config(st).allow_automatic_dhcp_failover,
    released: |_, tx, agent, network_id| Box::pin(reserve_port(tx, agent, network_id)),
    reschedule: |st, tx, network_id| Box::pin(rescheduled(st, tx, network_id)),
};

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
    let hosted = DHCP.agents_of(tx, network_id).await?;
    if cfg.network_auto_schedule && hosted.len() < cfg.dhcp_agents_per_network {
        schedule_network(st, tx, &net, &hosted, None).await?;
    }
    for a in DHCP.agents_of(tx, network_id).await? {
        ensure_dhcp_port(st, tx, &a, &net, &subnets).await?;
    }
    Ok(())
}

/// Binds `net`, hosted by `hosted`, to more DHCP agents (only `only`, when given) whose
/// host can reach the network. Returns whether anything was bound.
async fn schedule_network(
    st: &ApiState,
    tx: &mut AnyConnection,
    net: &Obj,
    hosted: &[Agent],
    only: Option<&Agent>,
) -> ApiResult<bool> {
    let cfg = agents::config(st);
    let segments = ml2::network_segments(&mut *tx, str_of(net, "id")).await?;
    let reachable = hosts_with_access(st, tx, &segments, agents::now_us(), &cfg).await?;
    let limit = cfg.dhcp_agents_per_network;
    DHCP.schedule(st, tx, net, hosted, only, limit, |a| {
        reachable.contains(&a.host)
    })
    .await
}

/// Schedules networks lacking DHCP agents to a DHCP agent that registered, revived or
/// restarted (Neutron's `auto_schedule_networks`), within the report's transaction. Called
/// by the agent API after `agents::report`.
pub async fn agent_reported(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    status: AgentStatus,
    start_flag: bool,
) -> ApiResult<()> {
    let cfg = agents::config(st);
    if agent.agent_type != agent_type::DHCP
        || !(status != AgentStatus::Alive || start_flag)
        || !agent.admin_state_up
        || !cfg.network_auto_schedule
        || !agent.is_alive(agents::now_us(), &cfg)
    {
        return Ok(());
    }
    let with_dhcp: HashSet<String> = db::list(&mut *tx, &subnets::KIND, None)
        .await?
        .iter()
        .filter(|s| enable_dhcp(s))
        .map(|s| str_of(s, "network_id").to_string())
        .collect();
    let mut nets = db::list(&mut *tx, &networks::KIND, None).await?;
    nets.retain(|n| with_dhcp.contains(str_of(n, "id")));
    let limit = cfg.dhcp_agents_per_network;
    for net in DHCP.lacking(st, tx, agent, &nets, |_| limit).await? {
        let net_id = str_of(net, "id");
        let hosted = DHCP.agents_of(tx, net_id).await?;
        if schedule_network(st, tx, net, &hosted, Some(agent)).await? {
            let subnets = dhcp_subnets(tx, net_id).await?;
            ensure_dhcp_port(st, tx, agent, net, &subnets).await?;
        }
    }
    Ok(())
}

/// `DHCP.released`: the DHCP port of the agent that lost `network_id` is kept with
/// `device_id` `reserved_dhcp_port` (Neutron's `remove_network_from_dhcp_agent`), so the
/// next agent scheduled there reuses the address.
async fn reserve_port(tx: &mut AnyConnection, agent: &Agent, network_id: &str) -> ApiResult<()> {
    let device_id = dhcp_device_id(&agent.host, network_id);
    for mut p in db::list(&mut *tx, &ports::KIND, Some(("device_id", &device_id))).await? {
        if str_of(&p, "network_id") != network_id {
            continue;
        }
        p.insert("device_id".into(), json!(RESERVED_DHCP_PORT));
        db::save(tx, &ports::KIND, &mut p).await?;
    }
    Ok(())
}

/// `DHCP.reschedule`: after failover, the network goes to other agents (when
/// `network_auto_schedule`), which take the reserved port over.
async fn rescheduled(st: &ApiState, tx: &mut AnyConnection, network_id: &str) -> ApiResult<()> {
    if agents::config(st).network_auto_schedule {
        network_changed(st, tx, network_id).await?;
    }
    Ok(())
}

/// The DHCP port of an agent given `net` by hand (`scheduling_api`), if the network has
/// DHCP-enabled subnets.
pub async fn agent_added(
    st: &ApiState,
    tx: &mut AnyConnection,
    agent: &Agent,
    net: &Obj,
) -> ApiResult<()> {
    let subnets = dhcp_subnets(tx, str_of(net, "id")).await?;
    if !subnets.is_empty() {
        ensure_dhcp_port(st, tx, agent, net, &subnets).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
