//! Links, addresses, FDB and neighbour entries, and named network namespaces.
//!
//! [`Net`] is the facility the L2 and DHCP reconcilers and the probe use; [`IpNet`] is the
//! real implementation over iproute2 (`ip -j`, `bridge -j`), [`crate::fake::FakeNet`] the
//! in-memory one. Every operation takes the namespace it acts in (`None`: the caller's own,
//! i.e. the host's), and names must fit IFNAMSIZ.
//!
//! Creations of something that already exists and deletions of something already gone are
//! successes (idempotent, so a reconcile pass interrupted half-way can simply run again).
//! This module must never pick names or delete anything it was not given by name.

use serde::Deserialize;
use serde_json::Value;

use crate::HostError;
use crate::exec::{run, run_json};

/// A network interface as observed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// `bridge`, `vxlan`, `veth`, `vlan`, ... (None for physical devices).
    pub kind: Option<String>,
    /// The bridge it is enslaved to.
    pub master: Option<String>,
    /// Administratively up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// MAC address (lower case).
    pub mac: String,
    /// VXLAN parameters, for VXLAN devices.
    pub vxlan: Option<VxlanInfo>,
    /// For a veth: the namespace id (relative to the observing namespace) of its peer, when
    /// the peer lives in another namespace.
    pub peer_netnsid: Option<i32>,
}

/// A VXLAN device's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VxlanInfo {
    /// VNI.
    pub id: u32,
    /// Local (source) address.
    pub local: Option<String>,
    /// UDP destination port.
    pub port: u16,
    /// ARP/ND proxy (answers from the neighbour table).
    pub proxy: bool,
}

/// A VXLAN device to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// Device name (`vxlan-<vni>`).
    pub name: String,
    /// VNI.
    pub vni: u32,
    /// Local VTEP address.
    pub local: String,
    /// UDP destination port.
    pub dstport: u16,
    /// Answer ARP/ND from the neighbour table (l2population).
    pub proxy: bool,
    /// Multicast group for flooding (only without l2population).
    pub group: Option<String>,
    /// Underlay device (needed with a multicast group).
    pub dev: Option<String>,
}

/// One change of a link's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkChange {
    /// Set administratively up.
    Up,
    /// Set administratively down (a port with `admin_state_up` false).
    Down,
    /// Enslave to this bridge.
    Master(String),
    /// Set the MTU.
    Mtu(u32),
    /// Set the MAC address.
    Mac(String),
}

/// A bridge forwarding-database entry of a VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    /// MAC (`00:00:00:00:00:00` for the flooding entries).
    pub mac: String,
    /// Remote VTEP, for entries pointing over the tunnel.
    pub dst: Option<String>,
}

/// A neighbour (ARP/ND) entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neigh {
    /// IP address.
    pub ip: String,
    /// Link-layer address.
    pub mac: Option<String>,
    /// NUD permanent (ours are; learned ones are not).
    pub permanent: bool,
}

/// A named network namespace (`/run/netns/NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Its name.
    pub name: String,
    /// Its id as seen from the observing namespace: present when the two are linked (a veth
    /// between them), so an agent can tell its own namespaces from other hosts' on a machine
    /// where several test "hosts" share `/run/netns`.
    pub id: Option<i32>,
}

/// Network operations on the host. `ns`: the named namespace to act in, `None` for the
/// caller's own.
pub trait Net: Send + Sync {
    /// All links.
    fn links(&self, ns: Option<&str>) -> Result<Vec<Link>, HostError>;
    /// Creates a bridge (STP off, the kernel default), down.
    fn add_bridge(&self, ns: Option<&str>, name: &str) -> Result<(), HostError>;
    /// Creates a VXLAN device, down.
    fn add_vxlan(&self, ns: Option<&str>, spec: &VxlanSpec) -> Result<(), HostError>;
    /// Creates an 802.1q sub-interface `name` of `parent`.
    fn add_vlan(
        &self,
        ns: Option<&str>,
        parent: &str,
        name: &str,
        vid: u16,
    ) -> Result<(), HostError>;
    /// Creates a veth pair `name` (in `ns`) ↔ `peer` (in `peer_ns`).
    fn add_veth(
        &self,
        ns: Option<&str>,
        name: &str,
        peer: &str,
        peer_ns: Option<&str>,
    ) -> Result<(), HostError>;
    /// Applies settings to a link (one operation).
    fn set_link(
        &self,
        ns: Option<&str>,
        name: &str,
        changes: &[LinkChange],
    ) -> Result<(), HostError>;
    /// Deletes a link (a veth takes its peer along). Missing is success.
    fn del_link(&self, ns: Option<&str>, name: &str) -> Result<(), HostError>;
    /// Global-scope addresses of a device, as `addr/prefix`.
    fn addrs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<String>, HostError>;
    /// Adds `addr/prefix` to a device.
    fn add_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError>;
    /// Removes `addr/prefix` from a device.
    fn del_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError>;
    /// FDB entries of a device.
    fn fdb(&self, ns: Option<&str>, dev: &str) -> Result<Vec<FdbEntry>, HostError>;
    /// Adds an FDB entry towards `dst`; `append` keeps other destinations of the same MAC
    /// (flooding entries), otherwise it replaces them (unicast).
    fn add_fdb(
        &self,
        ns: Option<&str>,
        dev: &str,
        entry: &FdbEntry,
        append: bool,
    ) -> Result<(), HostError>;
    /// Removes an FDB entry.
    fn del_fdb(&self, ns: Option<&str>, dev: &str, entry: &FdbEntry) -> Result<(), HostError>;
    /// Neighbour entries of a device.
    fn neighs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<Neigh>, HostError>;
    /// Adds or replaces a permanent neighbour entry.
    fn replace_neigh(
        &self,
        ns: Option<&str>,
        dev: &str,
        ip: &str,
        mac: &str,
    ) -> Result<(), HostError>;
    /// Removes a neighbour entry.
    fn del_neigh(&self, ns: Option<&str>, dev: &str, ip: &str) -> Result<(), HostError>;
    /// Named namespaces, with their ids relative to `ns`.
    fn netns_list(&self, ns: Option<&str>) -> Result<Vec<Netns>, HostError>;
    /// Creates a named namespace (with `lo` up).
    fn add_netns(&self, name: &str) -> Result<(), HostError>;
    /// Deletes a named namespace. Missing is success.
    fn del_netns(&self, name: &str) -> Result<(), HostError>;
}

/// Checks an interface name against the kernel's rules before creating it.
pub fn check_ifname(name: &str) -> Result<(), HostError> {
    if name.is_empty()
        || name.len() > crate::IFNAMSIZ
        || name.contains(['/', ' ', ':'])
        || name.starts_with('-')
    {
        return Err(HostError::Invalid(format!(
            "invalid interface name {name:?} (1-15 characters, no '/', ':' or spaces)"
        )));
    }
    Ok(())
}

fn check_nsname(name: &str) -> Result<(), HostError> {
    if name.is_empty() || name.contains(['/', ' ']) || name.starts_with(['-', '.']) {
        return Err(HostError::Invalid(format!(
            "invalid namespace name {name:?}"
        )));
    }
    Ok(())
}

/// [`Net`] over iproute2.
#[derive(Debug, Clone, Default)]
pub struct IpNet;

fn cmd<'a>(prog: &'a str, ns: Option<&'a str>, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![prog];
    if let Some(ns) = ns {
        v.extend(["-n", ns]);
    }
    v.extend_from_slice(rest);
    v
}

fn ok_if_exists(r: Result<String, HostError>) -> Result<(), HostError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_exists() => Ok(()),
        Err(e) => Err(e),
    }
}

fn ok_if_missing(r: Result<String, HostError>) -> Result<(), HostError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_missing() => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize, Default)]
struct JLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    master: Option<String>,
    address: Option<String>,
    link_netnsid: Option<i32>,
    linkinfo: Option<JLinkInfo>,
}

#[derive(Deserialize, Default)]
struct JLinkInfo {
    info_kind: Option<String>,
    info_data: Option<Value>,
}

fn parse_link(j: JLink) -> Link {
    let kind = j.linkinfo.as_ref().and_then(|l| l.info_kind.clone());
    let vxlan = match (
        &kind,
        j.linkinfo.as_ref().and_then(|l| l.info_data.as_ref()),
    ) {
        (Some(k), Some(d)) if k == "vxlan" => Some(VxlanInfo {
            id: d
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(0),
            local: d.get("local").and_then(Value::as_str).map(str::to_string),
            port: d
                .get("port")
                .and_then(Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
                .unwrap_or(0),
            proxy: d.get("proxy").and_then(Value::as_bool).unwrap_or(false),
        }),
        _ => None,
    };
    Link {
        up: j.flags.iter().any(|f| f == "UP"),
        name: j.ifname,
        kind,
        master: j.master,
        mtu: j.mtu,
        mac: j.address.unwrap_or_default().to_ascii_lowercase(),
        vxlan,
        peer_netnsid: j.link_netnsid,
    }
}

#[derive(Deserialize)]
struct JAddrs {
    #[serde(default)]
    addr_info: Vec<JAddr>,
}

#[derive(Deserialize)]
struct JAddr {
    local: String,
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct JFdb {
    mac: String,
    dst: Option<String>,
}

#[derive(Deserialize)]
struct JNeigh {
    dst: String,
    lladdr: Option<String>,
    #[serde(default)]
    state: Vec<String>,
}

#[derive(Deserialize)]
struct JNetns {
    name: String,
    id: Option<i32>,
}

impl Net for IpNet {
    fn links(&self, ns: Option<&str>) -> Result<Vec<Link>, HostError> {
        let v: Vec<JLink> = run_json(&cmd("ip", ns, &["-j", "-d", "link", "show"]))?;
        Ok(v.into_iter().map(parse_link).collect())
    }

    fn add_bridge(&self, ns: Option<&str>, name: &str) -> Result<(), HostError> {
        check_ifname(name)?;
        ok_if_exists(run(&cmd(
            "ip",
            ns,
            &[
                "link",
                "add",
                name,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            ],
        )))
    }

    fn add_vxlan(&self, ns: Option<&str>, s: &VxlanSpec) -> Result<(), HostError> {
        check_ifname(&s.name)?;
        let vni = s.vni.to_string();
        let port = s.dstport.to_string();
        let mut args = vec![
            "link", "add", &s.name, "type", "vxlan", "id", &vni, "local", &s.local, "dstport",
            &port,
        ];
        if let Some(g) = &s.group {
            args.extend(["group", g]);
        }
        if let Some(d) = &s.dev {
            args.extend(["dev", d]);
        }
        if s.proxy {
            args.push("proxy");
        }
        ok_if_exists(run(&cmd("ip", ns, &args)))
    }

    fn add_vlan(
        &self,
        ns: Option<&str>,
        parent: &str,
        name: &str,
        vid: u16,
    ) -> Result<(), HostError> {
        check_ifname(name)?;
        let vid = vid.to_string();
        ok_if_exists(run(&cmd(
            "ip",
            ns,
            &[
                "link", "add", "link", parent, "name", name, "type", "vlan", "id", &vid,
            ],
        )))
    }

    fn add_veth(
        &self,
        ns: Option<&str>,
        name: &str,
        peer: &str,
        peer_ns: Option<&str>,
    ) -> Result<(), HostError> {
        check_ifname(name)?;
        check_ifname(peer)?;
        let mut args = vec!["link", "add", name, "type", "veth", "peer", "name", peer];
        if let Some(p) = peer_ns {
            check_nsname(p)?;
            args.extend(["netns", p]);
        }
        ok_if_exists(run(&cmd("ip", ns, &args)))
    }

    fn set_link(
        &self,
        ns: Option<&str>,
        name: &str,
        changes: &[LinkChange],
    ) -> Result<(), HostError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut owned: Vec<String> = vec!["link".into(), "set".into(), "dev".into(), name.into()];
        // Order matters: MTU and MAC before enslaving and before up.
        for c in changes {
            match c {
                LinkChange::Mtu(m) => owned.extend(["mtu".into(), m.to_string()]),
                LinkChange::Mac(m) => owned.extend(["address".into(), m.clone()]),
                _ => {}
            }
        }
        for c in changes {
            if let LinkChange::Master(b) = c {
                owned.extend(["master".into(), b.clone()]);
            }
        }
        if changes.contains(&LinkChange::Up) {
            owned.push("up".into());
        } else if changes.contains(&LinkChange::Down) {
            owned.push("down".into());
        }
        let args: Vec<&str> = owned.iter().map(String::as_str).collect();
        run(&cmd("ip", ns, &args)).map(|_| ())
    }

    fn del_link(&self, ns: Option<&str>, name: &str) -> Result<(), HostError> {
        ok_if_missing(run(&cmd("ip", ns, &["link", "del", "dev", name])))
    }

    fn addrs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<String>, HostError> {
        let v: Vec<JAddrs> = run_json(&cmd("ip", ns, &["-j", "addr", "show", "dev", dev]))?;
        Ok(v.into_iter()
            .flat_map(|a| a.addr_info)
            .filter(|a| a.scope == "global")
            .map(|a| format!("{}/{}", a.local, a.prefixlen))
            .collect())
    }

    fn add_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError> {
        ok_if_exists(run(&cmd("ip", ns, &["addr", "add", cidr, "dev", dev])))
    }

    fn del_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError> {
        ok_if_missing(run(&cmd("ip", ns, &["addr", "del", cidr, "dev", dev])))
    }

    fn fdb(&self, ns: Option<&str>, dev: &str) -> Result<Vec<FdbEntry>, HostError> {
        let v: Vec<JFdb> = run_json(&cmd("bridge", ns, &["-j", "fdb", "show", "dev", dev]))?;
        Ok(v.into_iter()
            .map(|e| FdbEntry {
                mac: e.mac.to_ascii_lowercase(),
                dst: e.dst,
            })
            .collect())
    }

    fn add_fdb(
        &self,
        ns: Option<&str>,
        dev: &str,
        e: &FdbEntry,
        append: bool,
    ) -> Result<(), HostError> {
        let verb = if append { "append" } else { "replace" };
        let mut args = vec!["fdb", verb, &e.mac, "dev", dev];
        if let Some(d) = &e.dst {
            args.extend(["dst", d]);
        }
        ok_if_exists(run(&cmd("bridge", ns, &args)))
    }

    fn del_fdb(&self, ns: Option<&str>, dev: &str, e: &FdbEntry) -> Result<(), HostError> {
        let mut args = vec!["fdb", "del", &e.mac, "dev", dev];
        if let Some(d) = &e.dst {
            args.extend(["dst", d]);
        }
        ok_if_missing(run(&cmd("bridge", ns, &args)))
    }

    fn neighs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<Neigh>, HostError> {
        let v: Vec<JNeigh> = run_json(&cmd("ip", ns, &["-j", "neigh", "show", "dev", dev]))?;
        Ok(v.into_iter()
            .map(|n| Neigh {
                ip: n.dst,
                mac: n.lladdr.map(|m| m.to_ascii_lowercase()),
                permanent: n.state.iter().any(|s| s == "PERMANENT"),
            })
            .collect())
    }

    fn replace_neigh(
        &self,
        ns: Option<&str>,
        dev: &str,
        ip: &str,
        mac: &str,
    ) -> Result<(), HostError> {
        run(&cmd(
            "ip",
            ns,
            &[
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ],
        ))
        .map(|_| ())
    }

    fn del_neigh(&self, ns: Option<&str>, dev: &str, ip: &str) -> Result<(), HostError> {
        ok_if_missing(run(&cmd("ip", ns, &["neigh", "del", ip, "dev", dev])))
    }

    fn netns_list(&self, ns: Option<&str>) -> Result<Vec<Netns>, HostError> {
        let v: Vec<JNetns> = run_json(&cmd("ip", ns, &["-j", "netns", "list"]))?;
        Ok(v.into_iter()
            .map(|n| Netns {
                name: n.name,
                id: n.id,
            })
            .collect())
    }

    fn add_netns(&self, name: &str) -> Result<(), HostError> {
        check_nsname(name)?;
        ok_if_exists(run(&["ip", "netns", "add", name]))?;
        run(&["ip", "-n", name, "link", "set", "lo", "up"]).map(|_| ())
    }

    fn del_netns(&self, name: &str) -> Result<(), HostError> {
        check_nsname(name)?;
        ok_if_missing(run(&["ip", "netns", "del", name]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vxlan_and_veth_links() {
        let j = r#"[{"ifindex":3,"ifname":"vxlan-77","flags":["BROADCAST","UP"],"mtu":1450,
            "master":"brqtest","address":"FA:B5:F6:61:C2:1B","linkinfo":{"info_kind":"vxlan",
            "info_data":{"id":77,"local":"198.18.250.2","port":8472,"proxy":true}}},
            {"ifindex":4,"ifname":"tapzz","flags":[],"mtu":1500,"address":"02:c5:a8:c6:1b:f5",
            "link_netnsid":0,"linkinfo":{"info_kind":"veth"}}]"#;
        let v: Vec<JLink> = serde_json::from_str(j).unwrap();
        let links: Vec<Link> = v.into_iter().map(parse_link).collect();
        assert_eq!(links[0].name, "vxlan-77");
        assert!(links[0].up);
        assert_eq!(links[0].mac, "fa:b5:f6:61:c2:1b");
        assert_eq!(
            links[0].vxlan,
            Some(VxlanInfo {
                id: 77,
                local: Some("198.18.250.2".into()),
                port: 8472,
                proxy: true
            })
        );
        assert_eq!(links[1].peer_netnsid, Some(0));
        assert_eq!(links[1].kind.as_deref(), Some("veth"));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("brq0123456789a").is_ok());
        assert!(check_ifname("brq0123456789abc").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_ifname("").is_err());
        assert!(check_nsname("qdhcp-x/../y").is_err());
    }
}
