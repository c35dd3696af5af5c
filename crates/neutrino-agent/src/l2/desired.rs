//! Desired L2 state, rendered purely from the host model and the agent's L2 settings.

use std::collections::{BTreeMap, BTreeSet};

use neutrino_host::{FdbEntry, VxlanSpec};

use crate::config::VxlanConfig;
use crate::model::{HostModel, Segment};
use crate::names;

/// The all-zero MAC of VXLAN flooding entries (BUM traffic goes to every such `dst`).
pub const FLOOD_MAC: &str = "00:00:00:00:00:00";

/// The agent's L2 settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct L2Settings {
    /// Physical network → interface.
    pub mappings: BTreeMap<String, String>,
    /// VXLAN, when enabled.
    pub vxlan: Option<VxlanConfig>,
}

/// What connects a bridge to the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplink {
    /// `local` network: the bridge alone.
    None,
    /// A VXLAN device.
    Vxlan(VxlanSpec),
    /// A mapped physical interface (flat).
    Physical(String),
    /// An 802.1q sub-interface of a mapped interface.
    Vlan {
        /// The mapped interface.
        parent: String,
        /// The sub-interface (`eth1.100`).
        name: String,
        /// VLAN id.
        vid: u16,
    },
    /// The network cannot be realised here (why).
    Unsupported(String),
}

/// One bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec {
    /// Network id.
    pub network_id: String,
    /// Network MTU (0: leave the kernel's).
    pub mtu: u32,
    /// Its uplink.
    pub uplink: Uplink,
    /// Remote FDB entries of the VXLAN device (l2population).
    pub fdb: BTreeSet<FdbEntry>,
    /// Permanent neighbour entries on the VXLAN device: IP → MAC.
    pub neigh: BTreeMap<String, String>,
}

/// An instance device to attach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// Port id.
    pub port_id: String,
    /// Bridge to attach to.
    pub bridge: String,
    /// MTU.
    pub mtu: u32,
    /// The port's status as the server knows it.
    pub status: String,
    /// `admin_state_up`: false keeps the device down and the port DOWN (Neutron's
    /// linuxbridge agent).
    pub admin_state_up: bool,
}

/// Everything L2 on this host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredL2 {
    /// Bridges by name.
    pub bridges: BTreeMap<String, BridgeSpec>,
    /// Taps by name.
    pub taps: BTreeMap<String, TapSpec>,
}

/// Device owners whose ports are not plugged as taps on a bridge by this agent (the L3
/// reconciler plugs router ports as `qr-`/`qg-` devices).
fn plugged_elsewhere(owner: &str) -> bool {
    owner.starts_with("network:router")
        || owner == "network:ha_router_replicated_interface"
        || owner == "network:floatingip"
}

fn uplink(seg: &Segment, s: &L2Settings) -> Option<Uplink> {
    match seg {
        Segment::Vxlan(vni) => s.vxlan.as_ref().map(|v| {
            Uplink::Vxlan(VxlanSpec {
                name: names::vxlan(*vni),
                vni: *vni,
                local: v.local_ip.to_string(),
                dstport: v.udp_dstport,
                proxy: v.arp_responder,
                group: v.group.clone(),
                dev: None,
            })
        }),
        Segment::Flat(p) => s.mappings.get(p).map(|i| Uplink::Physical(i.clone())),
        Segment::Vlan(p, vid) => s.mappings.get(p).map(|i| Uplink::Vlan {
            parent: i.clone(),
            name: names::vlan_subif(i, *vid),
            vid: *vid,
        }),
        Segment::Local => Some(Uplink::None),
        Segment::Other(_) => None,
    }
}

/// Renders the desired L2 state.
pub fn render(m: &HostModel, s: &L2Settings) -> DesiredL2 {
    let mut out = DesiredL2::default();
    for net in m.networks.values() {
        let up = net
            .segments
            .iter()
            .find_map(|seg| uplink(seg, s))
            .unwrap_or_else(|| {
                Uplink::Unsupported(format!(
                    "no segment this agent can realise ({:?}; mappings {:?}, vxlan {})",
                    net.segments,
                    s.mappings.keys().collect::<Vec<_>>(),
                    s.vxlan.is_some()
                ))
            });
        let mut fdb = BTreeSet::new();
        let mut neigh = BTreeMap::new();
        if let (Uplink::Vxlan(_), Some(v)) = (&up, &s.vxlan)
            && v.l2_population
        {
            for h in m.l2pop.get(&net.id).into_iter().flatten() {
                let dst = Some(h.vtep.to_string());
                fdb.insert(FdbEntry {
                    mac: FLOOD_MAC.into(),
                    dst: dst.clone(),
                });
                for (mac, ips) in &h.ports {
                    fdb.insert(FdbEntry {
                        mac: mac.clone(),
                        dst: dst.clone(),
                    });
                    if v.arp_responder {
                        for ip in ips {
                            neigh.insert(ip.to_string(), mac.clone());
                        }
                        // The proxy drops solicitations it has no entry for: the port's
                        // EUI-64 link-local address too, or IPv6 (DHCPv6, router
                        // discovery) across the tunnel breaks.
                        if let Some(ll) = eui64_link_local(mac) {
                            neigh.insert(ll.to_string(), mac.clone());
                        }
                    }
                }
            }
        }
        out.bridges.insert(
            names::bridge(&net.id),
            BridgeSpec {
                network_id: net.id.clone(),
                mtu: net.mtu,
                uplink: up,
                fdb,
                neigh,
            },
        );
    }
    for p in &m.ports {
        if plugged_elsewhere(&p.device_owner) {
            continue;
        }
        let Some(net) = m.networks.get(&p.network_id) else {
            continue;
        };
        out.taps.insert(
            names::tap(&p.id),
            TapSpec {
                port_id: p.id.clone(),
                bridge: names::bridge(&net.id),
                mtu: net.mtu,
                status: p.status.clone(),
                admin_state_up: p.admin_state_up,
            },
        );
    }
    out
}

/// `fe80::/64` + the EUI-64 interface id of `mac` (what Linux guests configure by default).
pub(crate) fn eui64_link_local(mac: &str) -> Option<std::net::Ipv6Addr> {
    let b: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let [a, b1, c, d, e, f] = <[u8; 6]>::try_from(b).ok()?;
    let word = |hi: u8, lo: u8| u16::from_be_bytes([hi, lo]);
    Some(std::net::Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        word(a ^ 0x02, b1),
        word(c, 0xff),
        word(0xfe, d),
        word(e, f),
    ))
}
