//! Port binding: ML2's agent-based mechanism drivers (`linuxbridge`, `openvswitch`).
//!
//! Owns the outcome of binding a port to its `binding:host_id`: `binding:vif_type`,
//! `binding:vif_details` and the status reset, decided as Neutron's `mech_agent`
//! (`SimpleAgentMechanismDriverBase`) does — a *live* agent of the driver's type on the host
//! must be able to reach one of the network's segments (a tunnel type it reports, or a
//! physical network in its mappings). Drivers are tried in `[ml2] mechanism_drivers` order;
//! the first that binds wins; none → `binding_failed`; no host → `unbound`.
//!
//! Also owns `port_hosts`, the binding history the sync protocol uses to route port changes
//! to hosts (see `docs/agent-protocol.md`): [`bind_port`] records a row whenever the host
//! changes, in the port's transaction.
//!
//! Called by `ports` (create, and updates of `binding:host_id`/`vnic_type`/`profile`) and by
//! the DHCP scheduler for the ports it creates. It must never do I/O besides SQL on the
//! caller's transaction, and never save the port: the caller does, once.

use serde_json::{Value, json};
use sqlx::AnyConnection;

use neutrino_core::ApiResult;
use neutrino_core::db::Obj;
use neutrino_wire::agent_type;

use crate::agents::{self, Agent};
use crate::{ApiState, ml2};

/// `binding:vif_type` of an unbound port.
pub const VIF_UNBOUND: &str = "unbound";
/// `binding:vif_type` when no driver could bind.
pub const VIF_BINDING_FAILED: &str = "binding_failed";

/// An agent-based mechanism driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MechDriver {
    /// `linuxbridge`: Linux bridge agent, `vif_type` `bridge`.
    LinuxBridge,
    /// `openvswitch`: Open vSwitch agent, `vif_type` `ovs`.
    OpenVswitch,
}

impl MechDriver {
    /// The driver configured under `name` in `[ml2] mechanism_drivers`, if it binds ports
    /// through agents (`l2population` and others do not bind).
    pub fn from_name(name: &str) -> Option<MechDriver> {
        match name {
            "linuxbridge" => Some(MechDriver::LinuxBridge),
            "openvswitch" => Some(MechDriver::OpenVswitch),
            _ => None,
        }
    }

    /// The agent type it binds through.
    pub fn agent_type(self) -> &'static str {
        match self {
            MechDriver::LinuxBridge => agent_type::LINUXBRIDGE,
            MechDriver::OpenVswitch => agent_type::OVS,
        }
    }

    /// `binding:vif_type` it sets (neutron-lib `VIF_TYPE_BRIDGE`, `VIF_TYPE_OVS`).
    pub fn vif_type(self) -> &'static str {
        match self {
            MechDriver::LinuxBridge => "bridge",
            MechDriver::OpenVswitch => "ovs",
        }
    }

    /// Whether an agent with `configurations` can bind `segment` (Neutron's
    /// `check_segment_for_agent`): the segment type must be a tunnel type the agent reports
    /// or local/flat/vlan, and a flat or VLAN segment's physical network must be in the
    /// agent's mappings.
    pub fn can_bind(self, configurations: &Obj, segment: &Obj) -> bool {
        let Some(ty) = segment.get("network_type").and_then(Value::as_str) else {
            return false;
        };
        let tunnels = str_list(configurations.get("tunnel_types"));
        if !matches!(ty, "local" | "flat" | "vlan") && !tunnels.iter().any(|t| t == ty) {
            return false;
        }
        if matches!(ty, "flat" | "vlan") {
            let Some(physnet) = segment.get("physical_network").and_then(Value::as_str) else {
                return false;
            };
            // Linux bridge maps physical networks to interfaces or to existing bridges;
            // Open vSwitch to bridges only.
            let keys: &[&str] = match self {
                MechDriver::LinuxBridge => &["interface_mappings", "bridge_mappings"],
                MechDriver::OpenVswitch => &["bridge_mappings"],
            };
            return keys.iter().any(|k| {
                configurations
                    .get(*k)
                    .and_then(Value::as_object)
                    .is_some_and(|m| m.contains_key(physnet))
            });
        }
        true
    }

    /// `binding:vif_details` for a port bound through an agent with `configurations`, as the
    /// Neutron driver builds them.
    pub fn vif_details(self, configurations: &Obj, port_filter: bool) -> Obj {
        let mut d = Obj::new();
        d.insert("port_filter".into(), json!(port_filter));
        d.insert("connectivity".into(), json!("l2"));
        if self == MechDriver::OpenVswitch {
            d.insert(
                "ovs_hybrid_plug".into(),
                configurations
                    .get("ovs_hybrid_plug")
                    .cloned()
                    .unwrap_or(Value::Null),
            );
            d.insert(
                "datapath_type".into(),
                configurations
                    .get("datapath_type")
                    .cloned()
                    .unwrap_or_else(|| json!("system")),
            );
            if let Some(b) = configurations.get("integration_bridge") {
                d.insert("bridge_name".into(), b.clone());
            }
        }
        d
    }
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The result of trying to bind: (`vif_type`, `vif_details`).
pub fn choose(
    drivers: &[MechDriver],
    host_agents: &[Agent],
    segments: &[Obj],
    vnic_type: &str,
    now_us: i64,
    cfg: &agents::AgentConfig,
) -> (String, Obj) {
    // Both agent drivers bind `normal` ports only here (SR-IOV, vDPA, smart-NIC need drivers
    // and host support neutrino does not have).
    if vnic_type == "normal" {
        for d in drivers {
            for a in host_agents {
                if a.agent_type != d.agent_type() || !a.is_alive(now_us, cfg) {
                    continue;
                }
                let conf = a.configurations();
                if segments.iter().any(|s| d.can_bind(&conf, s)) {
                    return (
                        d.vif_type().to_string(),
                        d.vif_details(&conf, cfg.enable_security_group),
                    );
                }
            }
        }
    }
    (VIF_BINDING_FAILED.to_string(), Obj::new())
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The host a port was last recorded on, if any.
pub async fn recorded_host(tx: &mut AnyConnection, port_id: &str) -> ApiResult<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT host FROM port_hosts WHERE port_id = $1 ORDER BY revision_number DESC LIMIT 1",
    )
    .bind(port_id)
    .fetch_optional(&mut *tx)
    .await?)
}

/// Binds (or unbinds) `port` to its `binding:host_id` through the mechanism drivers, setting
/// `binding:vif_type`, `binding:vif_details` and status; called inside the port's
/// transaction on create and whenever binding attributes change. The caller saves the port.
///
/// Status: a port whose host or vif type changes is `DOWN` until the host's agent reports it
/// wired (`POST /agent/v1/ports/{id}/status`), as in Neutron, where the L2 agent's
/// `update_device_up` makes it ACTIVE.
pub async fn bind_port(
    state: &ApiState,
    tx: &mut AnyConnection,
    net: &Obj,
    port: &mut Obj,
) -> ApiResult<()> {
    let port_id = str_of(port, "id").to_string();
    let network_id = match str_of(port, "network_id") {
        "" => str_of(net, "id").to_string(),
        n => n.to_string(),
    };
    let host = str_of(port, "binding:host_id").to_string();
    // The revision the caller's save will give the port (a new port is stored at 1).
    let next_rev = port
        .get("revision_number")
        .and_then(Value::as_i64)
        .map_or(1, |r| r + 1);
    let previous = recorded_host(tx, &port_id).await?;
    let moved = previous.as_deref() != Some(host.as_str());
    if moved {
        sqlx::query(
            "INSERT INTO port_hosts (port_id, revision_number, host, network_id) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (port_id, revision_number) DO UPDATE SET host = excluded.host",
        )
        .bind(&port_id)
        .bind(next_rev)
        .bind(&host)
        .bind(&network_id)
        .execute(&mut *tx)
        .await?;
    }

    let (vif_type, details) = if host.is_empty() {
        (VIF_UNBOUND.to_string(), Obj::new())
    } else {
        let cfg = agents::config(state);
        let drivers: Vec<MechDriver> = state
            .ml2
            .mechanism_drivers
            .iter()
            .filter_map(|n| MechDriver::from_name(n))
            .collect();
        let host_agents = agents::on_host(&mut *tx, &host).await?;
        let segments = ml2::network_segments(&mut *tx, &network_id).await?;
        let vnic = match str_of(port, "binding:vnic_type") {
            "" => "normal",
            v => v,
        };
        choose(
            &drivers,
            &host_agents,
            &segments,
            vnic,
            agents::now_us(),
            &cfg,
        )
    };
    let vif_changed = port.get("binding:vif_type").and_then(Value::as_str) != Some(&vif_type);
    if moved || vif_changed {
        port.insert("status".into(), json!("DOWN"));
    }
    port.insert("binding:vif_type".into(), json!(vif_type));
    port.insert("binding:vif_details".into(), Value::Object(details));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Obj {
        v.as_object().cloned().unwrap()
    }

    fn agent(ty: &str, conf: Value, heartbeat_at: i64) -> Agent {
        let mut body = Obj::new();
        body.insert("configurations".into(), conf);
        Agent {
            id: "a1".into(),
            agent_type: ty.into(),
            host: "h1".into(),
            availability_zone: None,
            admin_state_up: true,
            created_at: 0,
            started_at: 0,
            heartbeat_at,
            revision_number: 1,
            body,
        }
    }

    #[test]
    fn segment_checks_like_mech_agent() {
        let lb =
            obj(json!({"tunnel_types": ["vxlan"], "interface_mappings": {"physnet1": "eth1"}}));
        let vx = obj(json!({"network_type": "vxlan", "segmentation_id": 5}));
        let flat1 = obj(json!({"network_type": "flat", "physical_network": "physnet1"}));
        let flat2 = obj(json!({"network_type": "flat", "physical_network": "physnet2"}));
        let gre = obj(json!({"network_type": "gre", "segmentation_id": 5}));
        let local = obj(json!({"network_type": "local"}));
        let d = MechDriver::LinuxBridge;
        assert!(d.can_bind(&lb, &vx));
        assert!(d.can_bind(&lb, &flat1));
        assert!(!d.can_bind(&lb, &flat2));
        assert!(!d.can_bind(&lb, &gre));
        assert!(d.can_bind(&lb, &local));
        // OVS maps bridges only.
        assert!(!MechDriver::OpenVswitch.can_bind(&lb, &flat1));
        let ovs = obj(json!({"bridge_mappings": {"physnet1": "br-ex"}, "tunnel_types": []}));
        assert!(MechDriver::OpenVswitch.can_bind(&ovs, &flat1));
        assert!(!MechDriver::OpenVswitch.can_bind(&ovs, &vx));
    }

    #[test]
    fn choose_needs_a_live_agent_of_an_enabled_driver() {
        let cfg = agents::AgentConfig::default();
        let seg = vec![obj(json!({"network_type": "vxlan"}))];
        let now = 100_000_000;
        let live = agent(
            agent_type::LINUXBRIDGE,
            json!({"tunnel_types": ["vxlan"]}),
            now,
        );
        let drivers = [MechDriver::LinuxBridge];
        let (vif, details) = choose(
            &drivers,
            std::slice::from_ref(&live),
            &seg,
            "normal",
            now,
            &cfg,
        );
        assert_eq!(vif, "bridge");
        assert_eq!(
            Value::Object(details),
            json!({"port_filter": true, "connectivity": "l2"})
        );
        // Dead agent, other vnic type, driver not enabled: binding fails.
        let dead = agent(
            agent_type::LINUXBRIDGE,
            json!({"tunnel_types": ["vxlan"]}),
            0,
        );
        assert_eq!(
            choose(&drivers, &[dead], &seg, "normal", now, &cfg).0,
            VIF_BINDING_FAILED
        );
        assert_eq!(
            choose(
                &drivers,
                std::slice::from_ref(&live),
                &seg,
                "direct",
                now,
                &cfg
            )
            .0,
            VIF_BINDING_FAILED
        );
        assert_eq!(
            choose(
                &[MechDriver::OpenVswitch],
                &[live],
                &seg,
                "normal",
                now,
                &cfg
            )
            .0,
            VIF_BINDING_FAILED
        );
        let ovs = agent(
            agent_type::OVS,
            json!({"tunnel_types": ["vxlan"], "integration_bridge": "br-int"}),
            now,
        );
        let (vif, details) = choose(
            &[MechDriver::OpenVswitch],
            &[ovs],
            &seg,
            "normal",
            now,
            &cfg,
        );
        assert_eq!(vif, "ovs");
        assert_eq!(details["bridge_name"], json!("br-int"));
        assert_eq!(details["datapath_type"], json!("system"));
    }
}
