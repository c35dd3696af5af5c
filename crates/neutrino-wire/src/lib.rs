//! neutrino-wire: the contract between the neutrino server and its host agents.
//!
//! Owns the JSON shapes exchanged under `/agent/v1` (see `docs/agent-protocol.md`): the
//! agent's heartbeat [`AgentReport`], the per-host desired state [`HostState`], the
//! long-poll answer [`ChangeBatch`] of [`Change`] records, and the [`PortStatusReport`].
//! Both sides depend on this crate, so a field renamed here is renamed everywhere.
//!
//! Neutron API documents (ports, networks, subnets, segments, security groups) travel as
//! the [`Doc`] JSON objects the v2.0 API shows (`binding:host_id`, `fixed_ips`, ...): the
//! agent reads the attributes it needs, and a new API attribute needs no contract change.
//! The envelope around them, which is ours, is typed.
//!
//! This crate holds types only: serde, no I/O, no tokio, no HTTP. Adding an optional field
//! (`#[serde(default)]`) is compatible both ways; removing or retyping one needs a new
//! protocol version ([`PROTOCOL_VERSION`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A Neutron API document (a port, network, subnet, ...), as the v2.0 API renders it.
pub type Doc = serde_json::Map<String, serde_json::Value>;

/// Version of this contract, sent by the server in [`HostState::protocol`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Path prefix of the agent API on the network API port.
pub const PREFIX: &str = "/agent/v1";

/// Longest long-poll the server honours (seconds); larger `timeout` values are clamped.
pub const MAX_POLL_SECONDS: u64 = 60;

/// Neutron's agent type names (neutron-lib `constants.AGENT_TYPE_*`).
pub mod agent_type {
    /// `neutron-dhcp-agent`.
    pub const DHCP: &str = "DHCP agent";
    /// `neutron-l3-agent`.
    pub const L3: &str = "L3 agent";
    /// `neutron-linuxbridge-agent`.
    pub const LINUXBRIDGE: &str = "Linux bridge agent";
    /// `neutron-openvswitch-agent`.
    pub const OVS: &str = "Open vSwitch agent";
    /// `neutron-metadata-agent`.
    pub const METADATA: &str = "Metadata agent";
}

/// `POST /agent/v1/report`: a heartbeat (Neutron's `report_state`). The server creates the
/// agent on its first report and updates it afterwards; `(agent_type, host)` identifies it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentReport {
    /// Host name the agent serves (`--host`, Neutron's `[DEFAULT] host`).
    pub host: String,
    /// One of [`agent_type`] (or any other Neutron agent type name).
    pub agent_type: String,
    /// Executable name shown by `openstack network agent list` (`neutron-dhcp-agent`, ...).
    pub binary: String,
    /// Neutron's RPC topic (`dhcp_agent`, `l3_agent`, `N/A`); informational here.
    #[serde(default = "na")]
    pub topic: String,
    /// `[agent] availability_zone` of DHCP and L3 agents; `None` for the others.
    #[serde(default)]
    pub availability_zone: Option<String>,
    /// The agent's configuration as Neutron agents report it. Keys the server reads:
    /// `tunnel_types`, `tunneling_ip`, `interface_mappings`, `bridge_mappings` (L2 agents),
    /// `integration_bridge`, `ovs_hybrid_plug`, `datapath_type` (Open vSwitch agent).
    /// neutrino agents also report `errors`: the failures of their last reconcile pass
    /// (`"<reconciler> <object>: <reason>"`, empty when it succeeded), shown to operators by
    /// `openstack network agent show`, never read by the server.
    #[serde(default)]
    pub configurations: Doc,
    /// True on the first report after the agent process started (sets `started_at`).
    #[serde(default)]
    pub start_flag: bool,
    /// Versions of the objects the agent understands (shown as `resource_versions`).
    #[serde(default)]
    pub resource_versions: Option<BTreeMap<String, String>>,
}

fn na() -> String {
    "N/A".to_string()
}

/// How the server saw a report (Neutron's `agent_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// First report of this `(agent_type, host)`.
    New,
    /// The agent was alive.
    Alive,
    /// The agent had been considered down (no report within `agent_down_time`).
    Revived,
}

/// Answer to a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportReply {
    /// The agent as `GET /v2.0/agents/{id}` shows it.
    pub agent: Doc,
    /// How the server saw this report.
    pub status: AgentStatus,
    /// Seconds between heartbeats the server expects (a third of `agent_down_time`, as
    /// Neutron's `report_interval` default 30 s is to its 75 s).
    pub report_interval: u64,
}

/// `GET /agent/v1/hosts/{host}/state`: everything the host must realise, as of `seq`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostState {
    /// [`PROTOCOL_VERSION`] of the server.
    pub protocol: u32,
    /// The host.
    pub host: String,
    /// Highest change sequence this state reflects: resume `changes` from here. The state
    /// may already include some later changes; re-applying them is harmless.
    pub seq: i64,
    /// The agents registered on this host (as `/v2.0/agents` shows them).
    pub agents: Vec<Doc>,
    /// Ports bound to this host (`binding:host_id`), including DHCP ports of this host.
    pub ports: Vec<Doc>,
    /// Networks this host takes part in (bound ports or DHCP), with segments and subnets.
    pub networks: Vec<NetworkState>,
    /// Networks the host's DHCP agent serves.
    pub dhcp: Vec<DhcpNetwork>,
    /// Security groups of the bound ports and the groups their rules reference.
    pub security_groups: Vec<SecurityGroupState>,
    /// For each network in [`HostState::networks`]: the other hosts' tunnel endpoints and
    /// their ports' addresses (Neutron's l2population fdb entries).
    pub l2pop: Vec<L2PopNetwork>,
    /// Routers scheduled to this host's L3 agent, with everything needed to build them
    /// (Neutron's `sync_routers` answer). Empty on hosts without an L3 agent.
    #[serde(default)]
    pub routers: Vec<RouterState>,
}

/// A router the host's L3 agent hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterState {
    /// The router document (`external_gateway_info`, `routes`, `admin_state_up`, `ha`, ...).
    pub router: Doc,
    /// The L3 agent (on this host) it is scheduled to.
    pub agent_id: String,
    /// The gateway port (`network:router_gateway`) and its subnets, when a gateway is set.
    #[serde(default)]
    pub gateway: Option<RouterPortState>,
    /// The interface ports (`network:router_interface`) and their subnets.
    #[serde(default)]
    pub interfaces: Vec<RouterPortState>,
    /// Floating IPs served by the router (`router_id` = this router), associated or held by
    /// port forwardings.
    #[serde(default)]
    pub floating_ips: Vec<Doc>,
    /// Port forwardings of those floating IPs (`floatingip_id`, `protocol`, `external_port`,
    /// `internal_ip_address`, `internal_port`, ...).
    #[serde(default)]
    pub port_forwardings: Vec<Doc>,
}

/// One port of a router with the subnets of its fixed IPs (CIDR, gateway for the default
/// route of the gateway port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterPortState {
    /// The port document.
    pub port: Doc,
    /// The subnets of its fixed IPs; for the gateway port, every subnet of the external
    /// network.
    pub subnets: Vec<Doc>,
}

/// `POST /agent/v1/floatingips/{id}/status`: the L3 agent hosting the floating IP's router
/// configured (ACTIVE) or removed (DOWN) it, or failed to (ERROR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIpStatusReport {
    /// The reporting host; its L3 agent must host the floating IP's router.
    pub host: String,
    /// New status (`ACTIVE`, `DOWN` or `ERROR`).
    pub status: FloatingIpStatus,
}

/// Floating IP status an L3 agent may report (neutron-lib `FLOATINGIP_STATUS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FloatingIpStatus {
    /// Configured on the router.
    #[serde(rename = "ACTIVE")]
    Active,
    /// Not configured.
    #[serde(rename = "DOWN")]
    Down,
    /// Configuring it failed.
    #[serde(rename = "ERROR")]
    Error,
}

impl FloatingIpStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FloatingIpStatus::Active => "ACTIVE",
            FloatingIpStatus::Down => "DOWN",
            FloatingIpStatus::Error => "ERROR",
        }
    }
}

/// A network and what lives on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkState {
    /// The network document.
    pub network: Doc,
    /// Its ML2 segments (`network_type`, `physical_network`, `segmentation_id`, `id`).
    pub segments: Vec<Doc>,
    /// Its subnets.
    pub subnets: Vec<Doc>,
}

/// A network served by this host's DHCP agent: every port on it, for dnsmasq's hosts file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DhcpNetwork {
    /// The network.
    pub network_id: String,
    /// The DHCP agent (on this host) scheduled to it.
    pub agent_id: String,
    /// This agent's `network:dhcp` port on the network, once the server has created it.
    pub dhcp_port_id: Option<String>,
    /// All ports of the network, with the fields a DHCP server needs: `id`, `network_id`,
    /// `mac_address`, `device_owner`, `status`, `admin_state_up`, `fixed_ips`,
    /// `extra_dhcp_opts`, `binding:host_id`.
    pub ports: Vec<Doc>,
    /// The server's `[DEFAULT] dhcp_lease_duration` (seconds, -1: infinite); None from
    /// servers that do not send it (the agent's own option applies then).
    #[serde(default)]
    pub dhcp_lease_duration: Option<i64>,
    /// The server's `[DEFAULT] dns_domain`, the domain of instance host names; None as
    /// above.
    #[serde(default)]
    pub dns_domain: Option<String>,
}

/// A security group with its rules and, for remote-group rules, the members' addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupState {
    /// The group document.
    pub security_group: Doc,
    /// Its rules.
    pub rules: Vec<Doc>,
    /// Ids of the ports in the group (anywhere), whose addresses remote-group rules match.
    pub member_ports: Vec<String>,
    /// Fixed IPs and allowed address pairs of those ports.
    pub member_ips: Vec<String>,
    /// The address groups its rules name (`remote_address_group_id`): group id → the
    /// group's `addresses` (CIDRs). A change of their addresses reaches the hosts as an
    /// `address_group` change.
    #[serde(default)]
    pub address_groups: BTreeMap<String, Vec<String>>,
}

/// l2population data for one network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2PopNetwork {
    /// The network.
    pub network_id: String,
    /// Other hosts with bound ports on it.
    pub hosts: Vec<L2PopHost>,
}

/// One remote host on a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2PopHost {
    /// Host name.
    pub host: String,
    /// VTEP address: its L2 agent's reported `tunneling_ip` (None when it reports none).
    pub local_ip: Option<String>,
    /// Its ports on the network.
    pub ports: Vec<L2PopPort>,
}

/// A remote port's forwarding entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct L2PopPort {
    /// Port id.
    pub port_id: String,
    /// MAC address.
    pub mac_address: String,
    /// Its fixed IP addresses.
    pub ip_addresses: Vec<String>,
    /// `device_owner` (agents treat `network:router_*` ports specially).
    pub device_owner: String,
}

/// `GET /agent/v1/hosts/{host}/changes?since=SEQ&timeout=S` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// Resume from here next time (every change up to `seq` was considered, relevant or
    /// not). Never lower than the `since` asked for.
    pub seq: i64,
    /// The changes with sequence in `(since, seq]` that concern the host, oldest first.
    pub changes: Vec<Change>,
}

/// One change of the store's change log that concerns the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Position in the change log.
    pub seq: i64,
    /// Singular resource name (`port`, `network`, `subnet`, `segment`, `security_group`,
    /// `security_group_rule`, `address_group`, `agent`, `router`, `floatingip`,
    /// `port_forwarding`).
    pub resource: String,
    /// Resource id.
    pub id: String,
    /// `create`, `update` or `delete`.
    pub op: String,
    /// The resource's current document, or None when it no longer exists. It is the
    /// *current* one, so several changes of one object carry the same document: agents
    /// reconcile to it, they do not replay history.
    pub object: Option<Doc>,
}

/// `POST /agent/v1/ports/{id}/status`: the host wired (ACTIVE) or unwired (DOWN) a port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortStatusReport {
    /// The reporting host; must be the port's `binding:host_id`.
    pub host: String,
    /// New status.
    pub status: PortStatus,
}

/// `POST /agent/v1/dhcp-ready`: a DHCP agent has loaded these ports' host entries into its
/// DHCP server (Neutron's `dhcp_ready_on_ports`): their DHCP provisioning block is lifted, and
/// a port its L2 agent already reported up goes ACTIVE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpReadyReport {
    /// The reporting host.
    pub host: String,
    /// Port ids.
    pub port_ids: Vec<String>,
}

/// Port status an agent may report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortStatus {
    /// Wired on the host.
    #[serde(rename = "ACTIVE")]
    Active,
    /// Not (or no longer) wired.
    #[serde(rename = "DOWN")]
    Down,
}

impl PortStatus {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PortStatus::Active => "ACTIVE",
            PortStatus::Down => "DOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_defaults_and_unknown_fields() {
        let r: AgentReport = serde_json::from_str(
            r#"{"host":"h1","agent_type":"DHCP agent","binary":"neutron-dhcp-agent"}"#,
        )
        .unwrap();
        assert_eq!(r.topic, "N/A");
        assert!(!r.start_flag);
        assert!(r.availability_zone.is_none());
        assert!(
            serde_json::from_str::<AgentReport>(
                r#"{"host":"h1","agent_type":"x","binary":"y","bogus":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn port_status_spelling() {
        let s: PortStatusReport =
            serde_json::from_str(r#"{"host":"h1","status":"ACTIVE"}"#).unwrap();
        assert_eq!(s.status, PortStatus::Active);
        assert!(
            serde_json::from_str::<PortStatusReport>(r#"{"host":"h1","status":"UP"}"#).is_err()
        );
        assert_eq!(
            serde_json::to_string(&AgentStatus::Revived).unwrap(),
            "\"revived\""
        );
    }
}
