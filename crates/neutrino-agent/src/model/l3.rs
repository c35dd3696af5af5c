//! Typed view of the routers in the host state (`neutrino_wire::RouterState`).

use std::net::IpAddr;

use ipnet::IpNet;
use neutrino_wire::{Doc, RouterState};
use serde_json::Value;

fn s<'a>(d: &'a Doc, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// One address of a router port, with its subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortAddr {
    /// Address.
    pub ip: IpAddr,
    /// Subnet CIDR.
    pub cidr: IpNet,
    /// Subnet gateway.
    pub gateway: Option<IpAddr>,
}

/// A router port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterPort {
    /// Port id.
    pub id: String,
    /// Network id.
    pub network_id: String,
    /// MAC.
    pub mac: String,
    /// Status the server knows.
    pub status: String,
    /// Addresses.
    pub addrs: Vec<PortAddr>,
}

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    /// Id.
    pub id: String,
    /// The floating address.
    pub floating_ip: IpAddr,
    /// The associated fixed address (None: not associated).
    pub fixed_ip: Option<IpAddr>,
    /// Status the server knows.
    pub status: String,
}

/// A floating IP port forwarding (`protocol` `floating_ip:external_port` →
/// `internal_ip:internal_port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwarding {
    /// Id.
    pub id: String,
    /// Floating IP id.
    pub floatingip_id: String,
    /// The floating address.
    pub floating_ip: IpAddr,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// External port.
    pub external_port: u16,
    /// Internal address.
    pub internal_ip: IpAddr,
    /// Internal port.
    pub internal_port: u16,
}

/// An extra route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraRoute {
    /// Destination.
    pub destination: IpNet,
    /// Next hop.
    pub nexthop: IpAddr,
}

/// A router this host hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    /// Id.
    pub id: String,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// `external_gateway_info.enable_snat`.
    pub enable_snat: bool,
    /// `routes`.
    pub routes: Vec<ExtraRoute>,
    /// The gateway port.
    pub gateway: Option<RouterPort>,
    /// Interface ports.
    pub interfaces: Vec<RouterPort>,
    /// Floating IPs.
    pub floating_ips: Vec<FloatingIp>,
    /// Port forwardings of its floating IPs.
    pub port_forwardings: Vec<PortForwarding>,
}

fn port(p: &neutrino_wire::RouterPortState) -> Option<RouterPort> {
    let id = s(&p.port, "id");
    if id.is_empty() {
        return None;
    }
    let addrs = p
        .port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let ip: IpAddr = f.get("ip_address")?.as_str()?.parse().ok()?;
            let sid = f.get("subnet_id")?.as_str()?;
            let sub = p.subnets.iter().find(|d| s(d, "id") == sid)?;
            Some(PortAddr {
                ip,
                cidr: s(sub, "cidr").parse().ok()?,
                gateway: s(sub, "gateway_ip").parse().ok(),
            })
        })
        .collect();
    Some(RouterPort {
        id: id.to_string(),
        network_id: s(&p.port, "network_id").to_string(),
        mac: s(&p.port, "mac_address").to_ascii_lowercase(),
        status: s(&p.port, "status").to_string(),
        addrs,
    })
}

/// Reads the routers of the host state (skipping documents without an id).
pub fn parse(routers: &[RouterState]) -> Vec<Router> {
    routers
        .iter()
        .filter_map(|r| {
            let d = &r.router;
            let id = s(d, "id");
            if id.is_empty() {
                tracing::warn!("host state has a router without an id; ignored");
                return None;
            }
            let gw_info = d.get("external_gateway_info");
            Some(Router {
                id: id.to_string(),
                admin_state_up: d
                    .get("admin_state_up")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                enable_snat: gw_info
                    .and_then(|g| g.get("enable_snat"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                routes: d
                    .get("routes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| {
                        Some(ExtraRoute {
                            destination: r.get("destination")?.as_str()?.parse().ok()?,
                            nexthop: r.get("nexthop")?.as_str()?.parse().ok()?,
                        })
                    })
                    .collect(),
                gateway: r.gateway.as_ref().and_then(port),
                interfaces: r.interfaces.iter().filter_map(port).collect(),
                floating_ips: r
                    .floating_ips
                    .iter()
                    .filter_map(|f| {
                        Some(FloatingIp {
                            id: s(f, "id").to_string(),
                            floating_ip: s(f, "floating_ip_address").parse().ok()?,
                            fixed_ip: s(f, "fixed_ip_address").parse().ok(),
                            status: s(f, "status").to_string(),
                        })
                    })
                    .collect(),
                port_forwardings: r
                    .port_forwardings
                    .iter()
                    .filter_map(|pf| forwarding(pf, &r.floating_ips))
                    .collect(),
            })
        })
        .collect()
}

fn forwarding(pf: &Doc, fips: &[Doc]) -> Option<PortForwarding> {
    let fip_id = s(pf, "floatingip_id");
    let fip = fips.iter().find(|f| s(f, "id") == fip_id)?;
    let port = |k: &str| {
        pf.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
            .filter(|n| *n > 0)
    };
    let protocol = s(pf, "protocol");
    if protocol != "tcp" && protocol != "udp" {
        return None;
    }
    Some(PortForwarding {
        id: s(pf, "id").to_string(),
        floatingip_id: fip_id.to_string(),
        floating_ip: s(fip, "floating_ip_address").parse().ok()?,
        protocol: protocol.to_string(),
        external_port: port("external_port")?,
        internal_ip: s(pf, "internal_ip_address").parse().ok()?,
        internal_port: port("internal_port")?,
    })
}
