//! Desired router namespaces, rendered purely from the routers and the host's networks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;

use neutrino_host::nat::Route;

use crate::model::HostModel;
use crate::model::l3::{Router, RouterPort};
use crate::names;

/// Prefix of router namespaces.
pub const ROUTER_NS_PREFIX: &str = "qrouter-";
/// Prefix of internal router devices.
pub const INTERNAL_PREFIX: &str = "qr-";
/// Prefix of gateway router devices.
pub const GATEWAY_PREFIX: &str = "qg-";
/// The nftables table we own in each router namespace.
pub const NAT_TABLE: &str = "neutrino-l3";

/// `qrouter-<router id>`.
pub fn router_ns(id: &str) -> String {
    format!("{ROUTER_NS_PREFIX}{id}")
}

fn short(id: &str) -> &str {
    id.get(..names::ID_CHARS).unwrap_or(id)
}

/// One router device: `qr-`/`qg-` inside, `tap` on the host's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Port id.
    pub port_id: String,
    /// Name inside the namespace.
    pub name: String,
    /// Host end.
    pub tap: String,
    /// Bridge of the host end.
    pub bridge: String,
    /// MAC.
    pub mac: String,
    /// MTU (0: leave it).
    pub mtu: u32,
    /// Addresses as `addr/prefix`.
    pub addrs: BTreeSet<String>,
}

/// A router as it should be on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRouter {
    /// Router id.
    pub id: String,
    /// Namespace.
    pub ns: String,
    /// Devices by name.
    pub devices: BTreeMap<String, Device>,
    /// Routes with a next hop.
    pub routes: BTreeSet<Route>,
    /// The nftables script (replaces our table atomically).
    pub nft: String,
    /// Floating IP → fixed IP configured, with the gateway device (for gratuitous ARP).
    pub fips: BTreeMap<IpAddr, IpAddr>,
    /// Floating IPs that only carry port forwardings (on the gateway device too).
    pub forwarded: BTreeSet<IpAddr>,
    /// Gateway device name.
    pub gateway_dev: Option<String>,
}

fn device(prefix: &str, p: &RouterPort, m: &HostModel) -> Device {
    Device {
        port_id: p.id.clone(),
        name: format!("{prefix}{}", short(&p.id)),
        tap: names::tap(&p.id),
        bridge: names::bridge(&p.network_id),
        mac: p.mac.clone(),
        mtu: m.networks.get(&p.network_id).map_or(0, |n| n.mtu),
        addrs: p
            .addrs
            .iter()
            .filter(|a| a.ip.is_ipv4())
            .map(|a| format!("{}/{}", a.ip, a.cidr.prefix_len()))
            .collect(),
    }
}

/// Our NAT table as one script that replaces it: `pre` rules in prerouting and output, `post`
/// in postrouting.
fn nat_table(pre: &str, post: &str) -> String {
    format!(
        "table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\ntable ip {NAT_TABLE} {{\n\
         \tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n{pre}\t}}\n\
         \tchain output {{\n\t\ttype nat hook output priority -100; policy accept;\n{pre}\t}}\n\
         \tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{post}\t}}\n}}\n"
    )
}

/// Renders one router. An admin-down router keeps its ports plugged (wired, so ACTIVE, as
/// ML2/OVN shows them) but has no addresses, routes or NAT: nothing reaches or crosses it.
pub fn render(r: &Router, m: &HostModel) -> Option<DesiredRouter> {
    if !r.admin_state_up {
        let devices = r
            .gateway
            .iter()
            .map(|g| device(GATEWAY_PREFIX, g, m))
            .chain(r.interfaces.iter().map(|p| device(INTERNAL_PREFIX, p, m)))
            .map(|mut d| {
                d.addrs.clear();
                (d.name.clone(), d)
            })
            .collect();
        return Some(DesiredRouter {
            id: r.id.clone(),
            ns: router_ns(&r.id),
            devices,
            routes: BTreeSet::new(),
            nft: nat_table("", ""),
            fips: BTreeMap::new(),
            forwarded: BTreeSet::new(),
            gateway_dev: None,
        });
    }
    let mut devices = BTreeMap::new();
    let mut routes = BTreeSet::new();
    let mut fips = BTreeMap::new();
    let mut forwarded = BTreeSet::new();
    let mut gateway_dev = None;
    let mut gw_ip = None;
    if let Some(g) = &r.gateway {
        let mut d = device(GATEWAY_PREFIX, g, m);
        for a in g.addrs.iter().filter(|a| a.ip.is_ipv4()) {
            gw_ip.get_or_insert(a.ip);
            if let Some(gw) = a.gateway {
                routes.insert(Route {
                    dst: "default".into(),
                    via: Some(gw.to_string()),
                });
            }
        }
        for f in &r.floating_ips {
            if let (IpAddr::V4(_), Some(fixed)) = (f.floating_ip, f.fixed_ip) {
                fips.insert(f.floating_ip, fixed);
                d.addrs.insert(format!("{}/32", f.floating_ip));
            }
        }
        for pf in r
            .port_forwardings
            .iter()
            .filter(|p| p.floating_ip.is_ipv4())
        {
            if !fips.contains_key(&pf.floating_ip) && forwarded.insert(pf.floating_ip) {
                d.addrs.insert(format!("{}/32", pf.floating_ip));
            }
        }
        gateway_dev = Some(d.name.clone());
        devices.insert(d.name.clone(), d);
    }
    let mut internal = Vec::new();
    for p in &r.interfaces {
        internal.extend(p.addrs.iter().filter(|a| a.ip.is_ipv4()).map(|a| a.cidr));
        let d = device(INTERNAL_PREFIX, p, m);
        devices.insert(d.name.clone(), d);
    }
    for x in r.routes.iter().filter(|x| x.nexthop.is_ipv4()) {
        routes.insert(Route {
            dst: x.destination.trunc().to_string(),
            via: Some(x.nexthop.to_string()),
        });
    }
    // The NAT table, replaced as a whole in one transaction.
    let mut pre = String::new();
    let mut post = String::new();
    if let Some(qg) = &gateway_dev {
        let _ = writeln!(post, "\t\toifname != \"{qg}\" ct status & dnat == 0 accept");
        for (fip, fixed) in &fips {
            let _ = writeln!(pre, "\t\tip daddr {fip} dnat to {fixed}");
            let _ = writeln!(post, "\t\tip saddr {fixed} snat to {fip}");
        }
        for pf in &r.port_forwardings {
            if let (IpAddr::V4(fip), IpAddr::V4(to)) = (pf.floating_ip, pf.internal_ip)
                && forwarded.contains(&pf.floating_ip)
            {
                let _ = writeln!(
                    pre,
                    "\t\tip daddr {fip} {} dport {} dnat to {to}:{}",
                    pf.protocol, pf.external_port, pf.internal_port
                );
            }
        }
        // Hairpin: an instance reaching another one's floating IP (or forwarding) from an
        // internal network. Translated to the router's address on the target's network so
        // that the reply comes back through the router and conntrack, not straight to the
        // sender, which expects the floating address.
        let _ = writeln!(
            post,
            "\t\tiifname != \"{qg}\" oifname != \"{qg}\" ct status & dnat != 0 masquerade"
        );
        if let (true, Some(gw)) = (r.enable_snat, gw_ip) {
            internal.sort();
            internal.dedup();
            for c in &internal {
                let _ = writeln!(post, "\t\toifname \"{qg}\" ip saddr {c} snat to {gw}");
            }
        }
    }
    let nft = nat_table(&pre, &post);
    Some(DesiredRouter {
        id: r.id.clone(),
        ns: router_ns(&r.id),
        devices,
        routes,
        nft,
        fips,
        forwarded,
        gateway_dev,
    })
}
