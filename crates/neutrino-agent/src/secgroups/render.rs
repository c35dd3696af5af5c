//! Pure rendering of the nftables objects enforcing security groups.
//!
//! Two tables, both ours alone:
//!
//! - `inet neutrino_sg`: bridged IP packets pass its `prerouting` hooks through
//!   `br_netfilter`, with the network's bridge `brq<network>` as input interface. The chain
//!   `zone` (priority raw, before conntrack) puts each network in its own conntrack zone
//!   through the map `zones` (bridge name → zone), so overlapping addresses on different
//!   networks never share conntrack entries (Neutron's iptables firewall does the same with
//!   `CT --zone`); the chain `prerouting` then copies conntrack's verdict into two bits of
//!   the packet mark. This kernel family is needed because bridge-family `ct` requires
//!   `nf_conntrack_bridge`, which kernels may lack (this one does). Zones are kept for as
//!   long as the network is on the host, also across agent restarts (read back from the
//!   map), so established connections survive.
//! - `bridge neutrino_sg`: the filtering, at the bridge `forward` hook where the tap devices
//!   are the input/output ports. Two base chains, `egress` then `ingress` (an `accept` in
//!   the first still leaves the packet to the second), dispatch through the verdict maps
//!   `from_port` / `to_port` on the tap name to per-port chains `e-<port id>` (from the
//!   instance: anti-spoofing, conntrack, then a jump to each of its groups' `ge-<group id>`,
//!   default deny) and `i-<port id>` (to the instance: the same with `gi-<group id>`). A
//!   group's rules live once in its chains, whatever the number of its ports, so a rule
//!   change rewrites one chain. Remote groups are named sets `g4-<group id>` /
//!   `g6-<group id>` and address groups `a4-<address group id>` / `a6-<...>`, so
//!   membership and address changes rewrite sets, never chains.
//!
//! Every object is rendered separately (its name and its body) so the reconciler can
//! replace only what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;

use crate::model::secgroups::{Direction, Remote, SgModel, SgPort, SgRule};
use crate::names;

/// The filtering table.
pub const BRIDGE_TABLE: &str = "bridge neutrino_sg";
/// The conntrack-to-mark table.
pub const INET_TABLE: &str = "inet neutrino_sg";
/// Mark bit: conntrack says established or related.
pub const MARK_EST: u32 = 0x4000_0000;
/// Mark bit: conntrack says invalid.
pub const MARK_INV: u32 = 0x2000_0000;
/// The map from bridge name to conntrack zone, in [`INET_TABLE`].
pub const ZONES_MAP: &str = "zones";

/// Kind of a rendered object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A named set (body: its declaration; elements separate).
    Set,
    /// A regular chain (body: its rules).
    Chain,
    /// A verdict map (elements only).
    Map,
}

/// One named object of our tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its table: [`BRIDGE_TABLE`], or [`INET_TABLE`] for the zones map.
    pub table: &'static str,
    /// Kind.
    pub kind: Kind,
    /// Declaration line(s) for sets and maps (`type ...; flags ...;`), empty for chains.
    pub decl: String,
    /// Rules (chains) or elements (sets, maps), one per line.
    pub lines: Vec<String>,
}

/// The desired content of our tables, by object name (names are unique across both).
pub type Rendered = BTreeMap<String, Object>;

fn proto_number(p: &str, v6: bool) -> Option<u8> {
    Some(match p {
        "icmp" | "1" if !v6 => 1,
        "icmp" | "ipv6-icmp" | "icmpv6" | "58" if v6 => 58,
        "ipv6-icmp" | "icmpv6" | "58" => 58,
        "1" => 1,
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "dccp" => 33,
        "udplite" => 136,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "igmp" => 2,
        "ipip" => 4,
        "ospf" => 89,
        "pgm" => 113,
        "vrrp" => 112,
        "encap" => 98,
        "rsvp" => 46,
        "egp" => 8,
        n => n.parse().ok()?,
    })
}

fn fam(v6: bool) -> (&'static str, &'static str) {
    if v6 { ("ip6", "g6") } else { ("ip", "g4") }
}

/// Set name of a remote group's addresses.
pub fn group_set(group: &str, v6: bool) -> String {
    format!("{}-{group}", fam(v6).1)
}

/// Set name of an address group's addresses (`remote_address_group_id`).
pub fn address_group_set(group: &str, v6: bool) -> String {
    format!("{}-{group}", if v6 { "a6" } else { "a4" })
}

/// Match expression of one rule, or None when this agent cannot express it (logged).
fn rule_match(r: &SgRule) -> Option<String> {
    let (l3, _) = fam(r.v6);
    let mut m = vec![format!("meta protocol {l3}")];
    let dir = if r.direction == Direction::Ingress {
        "saddr"
    } else {
        "daddr"
    };
    match &r.remote {
        Remote::Any => {}
        Remote::Prefix(p) => {
            if matches!(p, IpNet::V6(_)) != r.v6 {
                return None; // ethertype and prefix disagree: the API refuses these
            }
            m.push(format!("{l3} {dir} {p}"));
        }
        Remote::Group(g) => m.push(format!("{l3} {dir} @{}", group_set(g, r.v6))),
        Remote::AddressGroup(g) => {
            m.push(format!("{l3} {dir} @{}", address_group_set(g, r.v6)));
        }
    }
    if let Some(p) = &r.protocol {
        let Some(n) = proto_number(p, r.v6) else {
            tracing::warn!(rule = %r.id, protocol = %p, "unknown protocol; rule skipped");
            return None;
        };
        m.push(format!("meta l4proto {n}"));
        match n {
            6 | 17 | 33 | 132 | 136 => match (r.port_min, r.port_max) {
                (Some(a), Some(b)) if a != b => m.push(format!("th dport {a}-{b}")),
                (Some(a), _) => m.push(format!("th dport {a}")),
                _ => {}
            },
            1 | 58 => {
                let icmp = if n == 1 { "icmp" } else { "icmpv6" };
                if let Some(t) = r.port_min {
                    m.push(format!("{icmp} type {t}"));
                    if let Some(c) = r.port_max {
                        m.push(format!("{icmp} code {c}"));
                    }
                }
            }
            _ => {}
        }
    }
    Some(m.join(" "))
}

/// EUI-64 link-local address of a MAC (the source of IPv6 neighbour discovery).
fn link_local(mac: &str) -> Option<Ipv6Addr> {
    let b: Vec<u8> = mac
        .split(':')
        .map(|x| u8::from_str_radix(x, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if b.len() != 6 {
        return None;
    }
    let seg = |hi: u8, lo: u8| (u16::from(hi) << 8) | u16::from(lo);
    Some(Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        seg(b[0] ^ 0x02, b[1]),
        seg(b[2], 0xff),
        seg(0xfe, b[3]),
        seg(b[4], b[5]),
    ))
}

fn elems<T: ToString>(xs: impl IntoIterator<Item = T>) -> String {
    xs.into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Egress chain of a port: anti-spoofing first, then conntrack, then the egress rules.
/// Most elements matched with chained `!=` instead of an anonymous set: every anonymous set
/// is a kernel set object, and the kernel finds a table's sets by walking a list, so
/// thousands of them (a few per port) make loading and listing the table quadratic.
const MAX_INLINE: usize = 8;

/// `<what> not in xs` as a match expression.
fn not_in<T: ToString>(what: &str, xs: &BTreeSet<T>) -> String {
    if xs.len() <= MAX_INLINE {
        xs.iter()
            .map(|x| format!("{what} != {}", x.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    } else {
        format!(
            "{what} != {{ {} }}",
            elems(xs.iter().map(ToString::to_string))
        )
    }
}

/// One rule per ICMPv6 type (`<before> icmpv6 type T <verdict>`), no anonymous set.
fn per_icmpv6_type(before: &str, types: &[&str], verdict: &str) -> Vec<String> {
    types
        .iter()
        .map(|t| format!("{before} icmpv6 type {t} {verdict}"))
        .collect()
}

fn egress_chain(p: &SgPort, stateful: bool, jumps: &[String]) -> Vec<String> {
    let mut macs: BTreeSet<String> = BTreeSet::from([p.mac.clone()]);
    let mut v4: BTreeSet<IpNet> = BTreeSet::new();
    let mut v6: BTreeSet<IpNet> = BTreeSet::new();
    for ip in &p.fixed_ips {
        match ip {
            IpAddr::V4(_) => v4.insert(IpNet::from(*ip)),
            IpAddr::V6(_) => v6.insert(IpNet::from(*ip)),
        };
    }
    for (net, mac) in &p.allowed_pairs {
        macs.insert(mac.clone());
        match net {
            IpNet::V4(_) => v4.insert(*net),
            IpNet::V6(_) => v6.insert(*net),
        };
    }
    for m in &macs {
        if let Some(ll) = link_local(m) {
            v6.insert(IpNet::from(IpAddr::V6(ll)));
        }
    }
    let mut out = vec![
        format!("{} drop", not_in("ether saddr", &macs)),
        // DHCP client: allowed before it has an address.
        "meta protocol ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return".into(),
        // DHCP and DHCPv6 servers and router advertisements from an instance: dropped.
        "meta protocol ip udp sport 67 udp dport 68 drop".into(),
        "meta protocol ip6 udp sport 547 udp dport 546 drop".into(),
    ];
    out.extend(per_icmpv6_type(
        "meta protocol ip6",
        &["nd-router-advert", "nd-redirect"],
        "drop",
    ));
    // DHCPv6 client and duplicate address detection (from ::).
    out.extend(per_icmpv6_type(
        "meta protocol ip6 ip6 saddr ::",
        &[
            "nd-neighbor-solicit",
            "mld-listener-report",
            "mld2-listener-report",
        ],
        "return",
    ));
    out.push("meta protocol ip6 ip6 daddr ff02::1:2 udp sport 546 udp dport 547 return".into());
    if v4.is_empty() {
        out.push("meta protocol ip drop".into());
        out.push("meta protocol arp drop".into());
    } else {
        out.push(format!(
            "meta protocol arp {} drop",
            not_in("arp saddr ip", &v4)
        ));
        out.push(format!(
            "meta protocol arp {} drop",
            not_in("arp saddr ether", &macs)
        ));
        out.push(format!("meta protocol ip {} drop", not_in("ip saddr", &v4)));
    }
    out.push(format!(
        "meta protocol ip6 {} drop",
        not_in("ip6 saddr", &v6)
    ));
    // Neither ARP nor neighbour discovery is subject to security group rules.
    out.push("meta protocol != ip meta protocol != ip6 return".into());
    out.extend(per_icmpv6_type(
        "meta protocol ip6",
        &[
            "nd-router-solicit",
            "nd-neighbor-solicit",
            "nd-neighbor-advert",
            "mld-listener-report",
            "mld2-listener-report",
        ],
        "return",
    ));
    if stateful {
        out.push(format!("meta mark & {MARK_INV:#x} == {MARK_INV:#x} drop"));
        out.push(format!("meta mark & {MARK_EST:#x} == {MARK_EST:#x} return"));
    }
    out.extend(jumps.iter().cloned());
    out.push("drop".into());
    out
}

/// Ingress chain of a port: what Neutron always lets in, conntrack, the rules, drop.
fn ingress_chain(stateful: bool, jumps: &[String]) -> Vec<String> {
    let mut out = vec![
        "meta protocol != ip meta protocol != ip6 accept".to_string(),
        "meta protocol ip udp sport 67 udp dport 68 accept".into(),
        "meta protocol ip6 udp sport 547 udp dport 546 accept".into(),
    ];
    out.extend(per_icmpv6_type(
        "meta protocol ip6",
        &[
            "nd-router-advert",
            "nd-neighbor-solicit",
            "nd-neighbor-advert",
            "mld-listener-query",
        ],
        "accept",
    ));
    if stateful {
        out.push(format!("meta mark & {MARK_INV:#x} == {MARK_INV:#x} drop"));
        out.push(format!("meta mark & {MARK_EST:#x} == {MARK_EST:#x} accept"));
    }
    out.extend(jumps.iter().cloned());
    out.push("drop".into());
    out
}

/// Chain holding a group's rules of one direction.
pub fn group_chain(group: &str, d: Direction) -> String {
    match d {
        Direction::Ingress => format!("gi-{group}"),
        Direction::Egress => format!("ge-{group}"),
    }
}

/// Bridges of the networks on this host (the input interfaces the zones map matches).
pub fn bridges(m: &SgModel) -> BTreeSet<String> {
    m.networks.iter().map(|n| names::bridge(n)).collect()
}

/// Lowest conntrack zone given to a network (zone 0 is everything else's).
pub const FIRST_ZONE: u16 = 1;

/// Conntrack zones of `bridges`: the zone `prev` gives a bridge it keeps; a new bridge gets
/// the lowest free zone from [`FIRST_ZONE`] (in name order); bridges not in `bridges` lose
/// theirs. Pure.
pub fn assign_zones(
    bridges: &BTreeSet<String>,
    prev: &BTreeMap<String, u16>,
) -> BTreeMap<String, u16> {
    let mut out: BTreeMap<String, u16> = prev
        .iter()
        .filter(|(b, z)| bridges.contains(*b) && **z >= FIRST_ZONE)
        .map(|(b, z)| (b.clone(), *z))
        .collect();
    let mut used: BTreeSet<u16> = BTreeSet::new();
    // Two bridges claiming one zone (a hand-edited map): the first keeps it.
    out.retain(|_, z| used.insert(*z));
    let mut next = FIRST_ZONE;
    for b in bridges {
        if out.contains_key(b) {
            continue;
        }
        while used.contains(&next) && next < u16::MAX {
            next += 1;
        }
        if used.contains(&next) {
            tracing::error!(bridge = %b, "no conntrack zone left; the network shares zone 0");
            continue;
        }
        used.insert(next);
        out.insert(b.clone(), next);
    }
    out
}

/// Renders our tables' objects for `m`, with fresh zones (see [`render_zoned`]).
pub fn render(m: &SgModel) -> Rendered {
    render_zoned(m, &assign_zones(&bridges(m), &BTreeMap::new()))
}

/// Renders our tables' objects for `m`, networks in the conntrack zones `zones` gives their
/// bridges.
pub fn render_zoned(m: &SgModel, zones: &BTreeMap<String, u16>) -> Rendered {
    let mut out = Rendered::new();
    out.insert(
        ZONES_MAP.into(),
        Object {
            table: INET_TABLE,
            kind: Kind::Map,
            decl: "typeof iifname : ct zone;".into(),
            lines: zones
                .iter()
                .map(|(b, z)| format!("\"{b}\" : {z}"))
                .collect(),
        },
    );
    let mut from_port = Vec::new();
    let mut to_port = Vec::new();
    // (address group rather than security group, id, IPv6)
    let mut sets: BTreeSet<(bool, String, bool)> = BTreeSet::new();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for p in m.ports.iter().filter(|p| p.filtered()) {
        let mut seen = BTreeSet::new();
        let groups: Vec<_> = p
            .groups
            .iter()
            .filter(|g| seen.insert(g.as_str()))
            .filter_map(|g| m.groups.get(g))
            .collect();
        // Neutron refuses mixing stateful and stateless groups on a port; stateless wins
        // only when every group is stateless.
        let stateful = groups.is_empty() || groups.iter().any(|g| g.stateful);
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for g in &groups {
            used.insert(&g.id);
            ingress.push(format!("jump {}", group_chain(&g.id, Direction::Ingress)));
            egress.push(format!("jump {}", group_chain(&g.id, Direction::Egress)));
        }
        let tap = names::tap(&p.id);
        from_port.push(format!("\"{tap}\" : jump e-{}", p.id));
        to_port.push(format!("\"{tap}\" : jump i-{}", p.id));
        out.insert(
            format!("e-{}", p.id),
            Object {
                table: BRIDGE_TABLE,
                kind: Kind::Chain,
                decl: String::new(),
                lines: egress_chain(p, stateful, &egress),
            },
        );
        out.insert(
            format!("i-{}", p.id),
            Object {
                table: BRIDGE_TABLE,
                kind: Kind::Chain,
                decl: String::new(),
                lines: ingress_chain(stateful, &ingress),
            },
        );
    }
    for g in used.iter().filter_map(|g| m.groups.get(*g)) {
        let mut chains: [(Direction, Vec<String>); 2] = [
            (Direction::Ingress, Vec::new()),
            (Direction::Egress, Vec::new()),
        ];
        for r in &g.rules {
            let Some(x) = rule_match(r) else { continue };
            match &r.remote {
                Remote::Group(g) => {
                    sets.insert((false, g.clone(), r.v6));
                }
                Remote::AddressGroup(g) => {
                    sets.insert((true, g.clone(), r.v6));
                }
                Remote::Any | Remote::Prefix(_) => {}
            }
            let line = format!("{x} accept");
            let (_, lines) = chains
                .iter_mut()
                .find(|(d, _)| *d == r.direction)
                .expect("both directions");
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        for (d, lines) in chains {
            out.insert(
                group_chain(&g.id, d),
                Object {
                    table: BRIDGE_TABLE,
                    kind: Kind::Chain,
                    decl: String::new(),
                    lines,
                },
            );
        }
    }
    for (is_ag, g, v6) in sets {
        let (name, members) = if is_ag {
            (address_group_set(&g, v6), m.address_groups.get(&g))
        } else {
            (group_set(&g, v6), m.groups.get(&g).map(|g| &g.member_ips))
        };
        let lines = members
            .into_iter()
            .flatten()
            .filter(|n| matches!(n, IpNet::V6(_)) == v6)
            .map(ToString::to_string)
            .collect();
        let ty = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        out.insert(
            name,
            Object {
                table: BRIDGE_TABLE,
                kind: Kind::Set,
                decl: format!("type {ty}; flags interval; auto-merge;"),
                lines,
            },
        );
    }
    for (name, elements) in [("from_port", from_port), ("to_port", to_port)] {
        out.insert(
            name.into(),
            Object {
                table: BRIDGE_TABLE,
                kind: Kind::Map,
                decl: "type ifname : verdict;".into(),
                lines: elements,
            },
        );
    }
    out
}

fn kw(k: Kind) -> &'static str {
    match k {
        Kind::Set => "set",
        Kind::Chain => "chain",
        Kind::Map => "map",
    }
}

/// Declares `name` (empty set/map or chain with its rules) inside a table block.
fn declare(s: &mut String, name: &str, o: &Object, with_content: bool) {
    match o.kind {
        Kind::Chain => {
            let _ = writeln!(s, "  chain {name} {{");
            if with_content {
                for l in &o.lines {
                    let _ = writeln!(s, "    {l}");
                }
            }
            let _ = writeln!(s, "  }}");
        }
        Kind::Set | Kind::Map => {
            let _ = writeln!(s, "  {} {name} {{ {} }}", kw(o.kind), o.decl);
        }
    }
}

fn add_elements(s: &mut String, name: &str, o: &Object) {
    if !o.lines.is_empty() {
        let _ = writeln!(
            s,
            "add element {} {name} {{ {} }}",
            o.table,
            o.lines.join(", ")
        );
    }
}

const INET_CHAINS: &str = "  chain zone {
    type filter hook prerouting priority -300; policy accept;
    ct zone set iifname map @zones
  }
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    ct state established,related meta mark set meta mark | 0x40000000
    ct state invalid meta mark set meta mark | 0x20000000
  }
";

const FORWARD: &str = "  chain egress {
    type filter hook forward priority -200; policy accept;
    iifname vmap @from_port
  }
  chain ingress {
    type filter hook forward priority -199; policy accept;
    oifname vmap @to_port
  }
";

/// Script replacing both tables wholesale (start-up, after a failure, table missing).
pub fn full_script(r: &Rendered) -> String {
    let mut s = String::new();
    for t in [INET_TABLE, BRIDGE_TABLE] {
        let _ = writeln!(s, "add table {t}\ndelete table {t}");
    }
    for (table, fixed) in [(INET_TABLE, INET_CHAINS), (BRIDGE_TABLE, FORWARD)] {
        let _ = writeln!(s, "table {table} {{");
        let mine = || r.iter().filter(move |(_, o)| o.table == table);
        // Sets and maps first: chains refer to sets, maps to chains.
        for (n, o) in mine().filter(|(_, o)| o.kind == Kind::Set) {
            declare(&mut s, n, o, false);
        }
        // Chains empty first: they jump to each other in any name order.
        for (n, o) in mine().filter(|(_, o)| o.kind == Kind::Chain) {
            declare(&mut s, n, o, false);
        }
        for (n, o) in mine().filter(|(_, o)| o.kind == Kind::Map) {
            declare(&mut s, n, o, false);
        }
        s.push_str(fixed);
        s.push_str("}\n");
    }
    for (n, o) in r.iter().filter(|(_, o)| o.kind == Kind::Chain) {
        fill(&mut s, n, o);
    }
    for (n, o) in r.iter().filter(|(_, o)| o.kind != Kind::Chain) {
        add_elements(&mut s, n, o);
    }
    s
}

/// Adds a chain's rules (to the chain declared or flushed before).
fn fill(s: &mut String, name: &str, o: &Object) {
    if !o.lines.is_empty() {
        let _ = writeln!(s, "table {} {{", o.table);
        declare(s, name, o, true);
        s.push_str("}\n");
    }
}

/// Key of a map element line (`"key" : value`).
fn map_key(line: &str) -> &str {
    line.split(" : ").next().unwrap_or(line)
}

/// Script turning `old` (what the table holds) into `new`, touching only what differs;
/// None when nothing does.
pub fn delta_script(old: &Rendered, new: &Rendered) -> Option<String> {
    let mut s = String::new();
    let changed = |n: &String, o: &Object| old.get(n) != Some(o);
    // 1. new sets and changed set contents.
    for (n, o) in new
        .iter()
        .filter(|(n, o)| o.kind == Kind::Set && changed(n, o))
    {
        if old.contains_key(n) {
            let _ = writeln!(s, "flush set {} {n}", o.table);
        } else {
            let _ = writeln!(s, "table {} {{", o.table);
            declare(&mut s, n, o, false);
            s.push_str("}\n");
        }
        add_elements(&mut s, n, o);
    }
    // 2. new chains declared empty (they may jump to each other), then new and changed
    //    chains (flushed) filled.
    let chains: Vec<(&String, &Object)> = new
        .iter()
        .filter(|(n, o)| o.kind == Kind::Chain && changed(n, o))
        .collect();
    for (n, o) in chains.iter().filter(|(n, _)| !old.contains_key(*n)) {
        let _ = writeln!(s, "table {} {{", o.table);
        declare(&mut s, n, o, false);
        s.push_str("}\n");
    }
    for (n, o) in &chains {
        if old.contains_key(*n) {
            let _ = writeln!(s, "flush chain {} {n}", o.table);
        }
        fill(&mut s, n, o);
    }
    // 3. maps: only the elements that differ.
    for (n, o) in new
        .iter()
        .filter(|(n, o)| o.kind == Kind::Map && changed(n, o))
    {
        let had: &[String] = match old.get(n) {
            Some(x) => &x.lines,
            None => {
                let _ = writeln!(s, "table {} {{", o.table);
                declare(&mut s, n, o, false);
                s.push_str("}\n");
                &[]
            }
        };
        let want: BTreeSet<&String> = o.lines.iter().collect();
        let have: BTreeSet<&String> = had.iter().collect();
        let gone: Vec<&str> = had
            .iter()
            .filter(|l| !want.contains(l))
            .map(|l| map_key(l))
            .collect();
        if !gone.is_empty() {
            let _ = writeln!(
                s,
                "delete element {} {n} {{ {} }}",
                o.table,
                gone.join(", ")
            );
        }
        let added: Vec<&str> = o
            .lines
            .iter()
            .filter(|l| !have.contains(l))
            .map(String::as_str)
            .collect();
        if !added.is_empty() {
            let _ = writeln!(s, "add element {} {n} {{ {} }}", o.table, added.join(", "));
        }
    }
    // 4. chains nobody refers to any more (all flushed before any is deleted: they may
    //    jump to each other), then sets.
    let dead = |kind: Kind| {
        old.iter()
            .filter(move |(n, o)| o.kind == kind && !new.contains_key(*n))
    };
    for (n, o) in dead(Kind::Chain) {
        let _ = writeln!(s, "flush chain {} {n}", o.table);
    }
    for kind in [Kind::Chain, Kind::Set] {
        for (n, o) in dead(kind) {
            let _ = writeln!(s, "delete {} {} {n}", kw(kind), o.table);
        }
    }
    (!s.is_empty()).then_some(s)
}
