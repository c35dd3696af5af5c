//! Typed views of the host state the server sends (parse at the edge).
//!
//! The wire carries Neutron API documents as JSON objects (`neutrino_wire::Doc`); this module
//! reads the attributes the reconcilers need into typed structs once per state fetch
//! ([`HostModel::from_state`]), so reconcilers never index JSON. A document missing an
//! attribute the agent needs is skipped with a warning rather than failing the whole host.
//! The parts only one reconciler reads have their own submodule ([`dhcp`], [`l3`],
//! [`secgroups`]); they live here, below the reconcilers, so the reconcilers depend on the
//! model and the model never on a reconciler. This module must never touch the host or the
//! network.

pub mod dhcp;
pub mod l3;
pub mod secgroups;

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_wire::{Doc, HostState};
use serde_json::Value;

fn s<'a>(d: &'a Doc, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The network type of the segment the host realises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// `vxlan` with its VNI.
    Vxlan(u32),
    /// `flat` on a physical network.
    Flat(String),
    /// `vlan` on a physical network.
    Vlan(String, u16),
    /// `local`: this host only.
    Local,
    /// A type this agent cannot realise (`gre`, `geneve`, ...).
    Other(String),
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Id.
    pub id: String,
    /// MTU (0: unknown).
    pub mtu: u32,
    /// Its segments, in the server's order.
    pub segments: Vec<Segment>,
    /// Its subnets.
    pub subnets: Vec<Subnet>,
}

/// A host route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub destination: IpNet,
    /// Next hop.
    pub nexthop: IpAddr,
}

/// A subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// Id.
    pub id: String,
    /// CIDR.
    pub cidr: IpNet,
    /// Gateway.
    pub gateway_ip: Option<IpAddr>,
    /// DHCP enabled.
    pub enable_dhcp: bool,
    /// DNS servers to hand out.
    pub dns_nameservers: Vec<String>,
    /// Host routes.
    pub host_routes: Vec<Route>,
    /// `ipv6_address_mode` (`slaac`, `dhcpv6-stateful`, `dhcpv6-stateless`).
    pub ipv6_address_mode: Option<String>,
    /// `ipv6_ra_mode`.
    pub ipv6_ra_mode: Option<String>,
}

/// An extra DHCP option of a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOpt {
    /// Name or number.
    pub name: String,
    /// Value.
    pub value: String,
    /// 4 or 6.
    pub ip_version: u8,
}

/// A port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Id.
    pub id: String,
    /// Network.
    pub network_id: String,
    /// MAC.
    pub mac: String,
    /// `device_owner`.
    pub device_owner: String,
    /// `status`.
    pub status: String,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// Fixed IPs: (subnet id, address).
    pub fixed_ips: Vec<(String, IpAddr)>,
    /// `extra_dhcp_opts`.
    pub extra_dhcp_opts: Vec<DhcpOpt>,
    /// `binding:host_id`.
    pub host: String,
}

/// A remote host's VTEP and its ports' addresses on one network (l2population).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHost {
    /// Host name.
    pub host: String,
    /// VTEP.
    pub vtep: IpAddr,
    /// (MAC, IPs) of its ports.
    pub ports: Vec<(String, Vec<IpAddr>)>,
}

/// A network this host's DHCP agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpNet {
    /// Network id.
    pub network_id: String,
    /// Our `network:dhcp` port, once the server created it.
    pub dhcp_port: Option<Port>,
    /// All ports of the network.
    pub ports: Vec<Port>,
}

/// Everything the reconcilers need, typed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostModel {
    /// The host.
    pub host: String,
    /// Change sequence the state reflects.
    pub seq: i64,
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Ports bound to this host.
    pub ports: Vec<Port>,
    /// DHCP networks by id.
    pub dhcp: BTreeMap<String, DhcpNet>,
    /// What the server says about DHCP (lease duration, domain), by DHCP network id.
    pub dhcp_server: BTreeMap<String, dhcp::ServerDhcp>,
    /// Remote VTEPs per network id.
    pub l2pop: BTreeMap<String, Vec<RemoteHost>>,
    /// Security groups of the bound ports (nftables firewall).
    pub secgroups: secgroups::SgModel,
    /// Routers this host's L3 agent hosts.
    pub routers: Vec<l3::Router>,
}

fn parse_segment(d: &Doc) -> Segment {
    let seg_id = d.get("segmentation_id").and_then(Value::as_u64);
    let phys = s(d, "physical_network").to_string();
    match s(d, "network_type") {
        "vxlan" => match seg_id.and_then(|v| u32::try_from(v).ok()) {
            Some(v) => Segment::Vxlan(v),
            None => Segment::Other("vxlan without a VNI".into()),
        },
        "flat" => Segment::Flat(phys),
        "vlan" => match seg_id.and_then(|v| u16::try_from(v).ok()) {
            Some(v) => Segment::Vlan(phys, v),
            None => Segment::Other("vlan without an id".into()),
        },
        "local" => Segment::Local,
        other => Segment::Other(other.to_string()),
    }
}

fn parse_subnet(d: &Doc) -> Option<Subnet> {
    let cidr: IpNet = s(d, "cidr").parse().ok()?;
    let opt = |k| Some(s(d, k).to_string()).filter(|v| !v.is_empty());
    Some(Subnet {
        id: s(d, "id").to_string(),
        cidr,
        gateway_ip: s(d, "gateway_ip").parse().ok(),
        enable_dhcp: d
            .get("enable_dhcp")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        dns_nameservers: d
            .get("dns_nameservers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        host_routes: d
            .get("host_routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| {
                Some(Route {
                    destination: r.get("destination")?.as_str()?.parse().ok()?,
                    nexthop: r.get("nexthop")?.as_str()?.parse().ok()?,
                })
            })
            .collect(),
        ipv6_address_mode: opt("ipv6_address_mode"),
        ipv6_ra_mode: opt("ipv6_ra_mode"),
    })
}

/// Reads a port document.
pub fn parse_port(d: &Doc) -> Option<Port> {
    let id = s(d, "id");
    if id.is_empty() {
        return None;
    }
    Some(Port {
        id: id.to_string(),
        network_id: s(d, "network_id").to_string(),
        mac: s(d, "mac_address").to_ascii_lowercase(),
        device_owner: s(d, "device_owner").to_string(),
        status: s(d, "status").to_string(),
        admin_state_up: d
            .get("admin_state_up")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        fixed_ips: d
            .get("fixed_ips")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| {
                Some((
                    f.get("subnet_id")?.as_str()?.to_string(),
                    f.get("ip_address")?.as_str()?.parse().ok()?,
                ))
            })
            .collect(),
        extra_dhcp_opts: d
            .get("extra_dhcp_opts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| {
                Some(DhcpOpt {
                    name: o.get("opt_name")?.as_str()?.to_string(),
                    value: o.get("opt_value")?.as_str()?.to_string(),
                    ip_version: o
                        .get("ip_version")
                        .and_then(Value::as_u64)
                        .and_then(|v| u8::try_from(v).ok())
                        .unwrap_or(4),
                })
            })
            .collect(),
        host: s(d, "binding:host_id").to_string(),
    })
}

impl HostModel {
    /// Reads the server's state.
    pub fn from_state(st: &HostState) -> Self {
        let mut networks = BTreeMap::new();
        for n in &st.networks {
            let id = s(&n.network, "id").to_string();
            if id.is_empty() {
                tracing::warn!("host state has a network without an id; ignored");
                continue;
            }
            let mtu = n
                .network
                .get("mtu")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0);
            let mut segments: Vec<Segment> = n.segments.iter().map(parse_segment).collect();
            if segments.is_empty() {
                // Networks without segment rows: the provider attributes say it.
                segments.push(parse_segment(&n.network));
            }
            let subnets = n.subnets.iter().filter_map(parse_subnet).collect();
            networks.insert(
                id.clone(),
                Network {
                    id,
                    mtu,
                    segments,
                    subnets,
                },
            );
        }
        let ports = st.ports.iter().filter_map(parse_port).collect();
        let dhcp = st
            .dhcp
            .iter()
            .map(|d| {
                let ports: Vec<Port> = d.ports.iter().filter_map(parse_port).collect();
                let dhcp_port = d
                    .dhcp_port_id
                    .as_ref()
                    .and_then(|id| ports.iter().find(|p| &p.id == id).cloned());
                (
                    d.network_id.clone(),
                    DhcpNet {
                        network_id: d.network_id.clone(),
                        dhcp_port,
                        ports,
                    },
                )
            })
            .collect();
        let l2pop = st
            .l2pop
            .iter()
            .map(|n| {
                let hosts = n
                    .hosts
                    .iter()
                    .filter_map(|h| {
                        let vtep = h.local_ip.as_deref()?.parse().ok()?;
                        Some(RemoteHost {
                            host: h.host.clone(),
                            vtep,
                            ports: h
                                .ports
                                .iter()
                                .map(|p| {
                                    (
                                        p.mac_address.to_ascii_lowercase(),
                                        p.ip_addresses
                                            .iter()
                                            .filter_map(|i| i.parse().ok())
                                            .collect(),
                                    )
                                })
                                .collect(),
                        })
                    })
                    .collect();
                (n.network_id.clone(), hosts)
            })
            .collect();
        HostModel {
            host: st.host.clone(),
            seq: st.seq,
            networks,
            ports,
            dhcp,
            dhcp_server: dhcp::server_settings(st),
            l2pop,
            secgroups: secgroups::SgModel::from_state(st),
            routers: l3::parse(&st.routers),
        }
    }
}
