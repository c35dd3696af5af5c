//! Typed view of the security-group part of the host state.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_wire::{Doc, HostState};
use serde_json::Value;

fn s<'a>(d: &'a Doc, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn net_of(a: &str) -> Option<IpNet> {
    a.parse::<IpNet>()
        .ok()
        .or_else(|| a.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Traffic direction of a rule, seen from the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// To the port.
    Ingress,
    /// From the port.
    Egress,
}

/// What the other end of a rule must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// Anything.
    Any,
    /// An address prefix (`remote_ip_prefix`).
    Prefix(IpNet),
    /// The addresses of a group's members (`remote_group_id`).
    Group(String),
    /// The addresses of an address group (`remote_address_group_id`).
    AddressGroup(String),
}

/// A security group rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgRule {
    /// Rule id.
    pub id: String,
    /// Direction.
    pub direction: Direction,
    /// IPv6 (`ethertype` IPv6) rather than IPv4.
    pub v6: bool,
    /// Protocol name or number, None for any.
    pub protocol: Option<String>,
    /// `port_range_min` (ICMP type).
    pub port_min: Option<u32>,
    /// `port_range_max` (ICMP code).
    pub port_max: Option<u32>,
    /// Other end.
    pub remote: Remote,
}

/// A security group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgGroup {
    /// Id.
    pub id: String,
    /// `stateful` (default true).
    pub stateful: bool,
    /// Rules.
    pub rules: Vec<SgRule>,
    /// Addresses of its members (fixed IPs and allowed address pairs).
    pub member_ips: Vec<IpNet>,
}

/// A port bound to this host, as far as filtering is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgPort {
    /// Id.
    pub id: String,
    /// MAC (lower case).
    pub mac: String,
    /// `device_owner`.
    pub device_owner: String,
    /// `port_security_enabled` (default true).
    pub port_security: bool,
    /// Its groups.
    pub groups: Vec<String>,
    /// Fixed IPs.
    pub fixed_ips: Vec<IpAddr>,
    /// Allowed address pairs: (address or prefix, MAC).
    pub allowed_pairs: Vec<(IpNet, String)>,
}

impl SgPort {
    /// Ports the firewall filters: port security on and not a network-owned port (DHCP,
    /// router), which Neutron's agents trust.
    pub fn filtered(&self) -> bool {
        self.port_security && !self.device_owner.starts_with("network:")
    }
}

/// Everything the security-group reconciler needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SgModel {
    /// Ports bound to this host.
    pub ports: Vec<SgPort>,
    /// Groups by id.
    pub groups: BTreeMap<String, SgGroup>,
    /// Addresses of the address groups the rules name, by address group id (absent: the
    /// server sent none, and the rule matches nothing).
    pub address_groups: BTreeMap<String, Vec<IpNet>>,
    /// Ids of the networks on this host (each has its bridge and its conntrack zone).
    pub networks: Vec<String>,
}

fn parse_rule(d: &Doc) -> Option<SgRule> {
    let direction = match s(d, "direction") {
        "ingress" => Direction::Ingress,
        "egress" => Direction::Egress,
        _ => return None,
    };
    let v6 = s(d, "ethertype").eq_ignore_ascii_case("ipv6");
    let protocol = match d.get("protocol") {
        Some(Value::String(p)) if !p.is_empty() && p != "any" => Some(p.to_ascii_lowercase()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let num = |k| {
        d.get(k)
            .and_then(Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
    };
    let remote = if !s(d, "remote_group_id").is_empty() {
        Remote::Group(s(d, "remote_group_id").to_string())
    } else if !s(d, "remote_address_group_id").is_empty() {
        Remote::AddressGroup(s(d, "remote_address_group_id").to_string())
    } else if let Some(p) = net_of(s(d, "remote_ip_prefix")) {
        if p.prefix_len() == 0 {
            Remote::Any
        } else {
            Remote::Prefix(p.trunc())
        }
    } else {
        Remote::Any
    };
    Some(SgRule {
        id: s(d, "id").to_string(),
        direction,
        v6,
        protocol,
        port_min: num("port_range_min"),
        port_max: num("port_range_max"),
        remote,
    })
}

fn strings(d: &Doc, k: &str) -> Vec<String> {
    d.get(k)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// Reads a port document.
pub fn parse_port(d: &Doc) -> Option<SgPort> {
    let id = s(d, "id");
    if id.is_empty() {
        return None;
    }
    let mac = s(d, "mac_address").to_ascii_lowercase();
    Some(SgPort {
        id: id.to_string(),
        mac: mac.clone(),
        device_owner: s(d, "device_owner").to_string(),
        port_security: d
            .get("port_security_enabled")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        groups: strings(d, "security_groups"),
        fixed_ips: d
            .get("fixed_ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("ip_address")?.as_str()?.parse().ok())
            .collect(),
        allowed_pairs: d
            .get("allowed_address_pairs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let ip = net_of(p.get("ip_address")?.as_str()?)?.trunc();
                let m = p
                    .get("mac_address")
                    .and_then(Value::as_str)
                    .filter(|m| !m.is_empty())
                    .map_or_else(|| mac.clone(), str::to_ascii_lowercase);
                Some((ip, m))
            })
            .collect(),
    })
}

impl SgModel {
    /// Reads the server's state.
    pub fn from_state(st: &HostState) -> Self {
        let ports = st.ports.iter().filter_map(parse_port).collect();
        let mut address_groups: BTreeMap<String, Vec<IpNet>> = BTreeMap::new();
        for (id, addrs) in st.security_groups.iter().flat_map(|g| &g.address_groups) {
            let mut nets: Vec<IpNet> = addrs
                .iter()
                .filter_map(|a| net_of(a))
                .map(|n| n.trunc())
                .collect();
            nets.sort();
            nets.dedup();
            address_groups.insert(id.clone(), nets);
        }
        let groups = st
            .security_groups
            .iter()
            .filter_map(|g| {
                let id = s(&g.security_group, "id").to_string();
                if id.is_empty() {
                    return None;
                }
                let mut member_ips: Vec<IpNet> = g
                    .member_ips
                    .iter()
                    .filter_map(|a| net_of(a))
                    .map(|n| n.trunc())
                    .collect();
                member_ips.sort();
                member_ips.dedup();
                Some((
                    id.clone(),
                    SgGroup {
                        id,
                        stateful: g
                            .security_group
                            .get("stateful")
                            .and_then(Value::as_bool)
                            .unwrap_or(true),
                        rules: g.rules.iter().filter_map(parse_rule).collect(),
                        member_ips,
                    },
                ))
            })
            .collect();
        let networks = st
            .networks
            .iter()
            .map(|n| s(&n.network, "id").to_string())
            .filter(|id| !id.is_empty())
            .collect();
        SgModel {
            ports,
            groups,
            address_groups,
            networks,
        }
    }
}
