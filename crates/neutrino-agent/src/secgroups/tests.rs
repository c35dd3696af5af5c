use std::sync::Arc;

use neutrino_host::nft::{FakeNft, Nft};
use neutrino_wire::{HostState, NetworkState, SecurityGroupState};
use serde_json::json;

use super::*;
use crate::model::HostModel;
use crate::runner::{Pass, Reconciler};

const P1: &str = "11111111-aaaa-4000-8000-000000000001";
const P2: &str = "22222222-aaaa-4000-8000-000000000002";
const G1: &str = "99999999-bbbb-4000-8000-000000000001";

fn doc(v: serde_json::Value) -> neutrino_wire::Doc {
    v.as_object().unwrap().clone()
}

fn state(rules: Vec<serde_json::Value>, members: &[&str], p2_security: bool) -> HostState {
    HostState {
        protocol: 1,
        host: "h1".into(),
        seq: 1,
        agents: vec![],
        ports: vec![
            doc(
                json!({"id": P1, "mac_address": "FA:16:3E:00:00:01", "device_owner": "compute:nova",
                "security_groups": [G1],
                "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.5"}],
                "allowed_address_pairs": [{"ip_address": "10.0.0.100"}]}),
            ),
            doc(
                json!({"id": P2, "mac_address": "fa:16:3e:00:00:02", "device_owner": "compute:nova",
                "security_groups": [], "port_security_enabled": p2_security,
                "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.6"}]}),
            ),
            doc(
                json!({"id": "dhcp0000-0000", "mac_address": "fa:16:3e:00:00:03",
                "device_owner": "network:dhcp", "security_groups": [G1],
                "fixed_ips": [{"subnet_id": "s", "ip_address": "10.0.0.2"}]}),
            ),
        ],
        networks: vec![],
        dhcp: vec![],
        security_groups: vec![SecurityGroupState {
            security_group: doc(json!({"id": G1, "stateful": true})),
            rules: rules.into_iter().map(doc).collect(),
            member_ports: vec![],
            member_ips: members.iter().map(|s| s.to_string()).collect(),
            address_groups: Default::default(),
        }],
        l2pop: vec![],
        routers: vec![],
    }
}

fn default_rules() -> Vec<serde_json::Value> {
    vec![
        json!({"id": "r1", "direction": "egress", "ethertype": "IPv4"}),
        json!({"id": "r2", "direction": "egress", "ethertype": "IPv6"}),
        json!({"id": "r3", "direction": "ingress", "ethertype": "IPv4", "remote_group_id": G1}),
        json!({"id": "r4", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
            "port_range_min": 8080, "port_range_max": 8080, "remote_ip_prefix": "192.0.2.0/24"}),
        json!({"id": "r5", "direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
            "port_range_min": 8, "port_range_max": 0}),
        json!({"id": "r6", "direction": "ingress", "ethertype": "IPv4", "protocol": "udp",
            "port_range_min": 1000, "port_range_max": 2000}),
    ]
}

fn model(st: &HostState) -> HostModel {
    HostModel::from_state(st)
}

#[test]
fn renders_expected_chains_and_sets() {
    let st = state(default_rules(), &["10.0.0.5", "10.0.0.7/32"], false);
    let r = render(&model(&st).secgroups);
    // Port security off (P2) and network-owned ports (DHCP) get nothing.
    let names: Vec<_> = r.keys().cloned().collect();
    assert_eq!(
        names,
        [
            format!("e-{P1}"),
            "from_port".into(),
            format!("g4-{G1}"),
            format!("ge-{G1}"),
            format!("gi-{G1}"),
            format!("i-{P1}"),
            "to_port".into(),
            "zones".into(),
        ]
    );
    assert_eq!(
        r[&format!("i-{P1}")].lines.join("\n"),
        format!(
            "meta protocol != ip meta protocol != ip6 accept
meta protocol ip udp sport 67 udp dport 68 accept
meta protocol ip6 udp sport 547 udp dport 546 accept
meta protocol ip6 icmpv6 type nd-router-advert accept
meta protocol ip6 icmpv6 type nd-neighbor-solicit accept
meta protocol ip6 icmpv6 type nd-neighbor-advert accept
meta protocol ip6 icmpv6 type mld-listener-query accept
meta mark & 0x20000000 == 0x20000000 drop
meta mark & 0x40000000 == 0x40000000 accept
jump gi-{G1}
drop"
        )
    );
    // The group's rules, once for all its ports.
    assert_eq!(
        r[&format!("gi-{G1}")].lines.join("\n"),
        format!(
            "meta protocol ip ip saddr @g4-{G1} accept
meta protocol ip ip saddr 192.0.2.0/24 meta l4proto 6 th dport 8080 accept
meta protocol ip meta l4proto 1 icmp type 8 icmp code 0 accept
meta protocol ip meta l4proto 17 th dport 1000-2000 accept"
        )
    );
    assert_eq!(
        r[&format!("ge-{G1}")].lines,
        ["meta protocol ip accept", "meta protocol ip6 accept"]
    );
    let e = r[&format!("e-{P1}")].lines.join("\n");
    assert!(
        e.starts_with("ether saddr != fa:16:3e:00:00:01 drop\n"),
        "{e}"
    );
    assert!(
        e.contains("meta protocol ip ip saddr != 10.0.0.5/32 ip saddr != 10.0.0.100/32 drop"),
        "{e}"
    );
    assert!(
        e.contains("meta protocol ip6 ip6 saddr != fe80::f816:3eff:fe00:1/128 drop"),
        "{e}"
    );
    assert!(
        e.contains("meta protocol ip udp sport 67 udp dport 68 drop"),
        "{e}"
    );
    assert!(e.ends_with(&format!("\njump ge-{G1}\ndrop")), "{e}");
    // No anonymous sets in port chains: each would be a kernel set object, and thousands
    // of them make the table slow to load and list.
    for (n, o) in r
        .iter()
        .filter(|(n, _)| n.starts_with("e-") || n.starts_with("i-"))
    {
        assert!(
            !o.lines.iter().any(|l| l.contains('{')),
            "{n}: {:?}",
            o.lines
        );
    }
    assert_eq!(r[&format!("g4-{G1}")].lines, ["10.0.0.5/32", "10.0.0.7/32"]);
    assert_eq!(
        r["from_port"].lines,
        [format!("\"tap11111111-aa\" : jump e-{P1}")]
    );
}

#[test]
fn stateless_groups_have_no_conntrack_rules() {
    let mut st = state(default_rules(), &[], false);
    st.security_groups[0].security_group = doc(json!({"id": G1, "stateful": false}));
    let r = render(&model(&st).secgroups);
    assert!(
        !r[&format!("i-{P1}")]
            .lines
            .iter()
            .any(|l| l.contains("meta mark"))
    );
}

#[test]
fn membership_change_touches_only_the_set() {
    let a = render(&model(&state(default_rules(), &["10.0.0.5"], false)).secgroups);
    let b = render(&model(&state(default_rules(), &["10.0.0.5", "10.0.0.9"], false)).secgroups);
    let d = delta_script(&a, &b).unwrap();
    assert_eq!(
        d,
        format!(
            "flush set bridge neutrino_sg g4-{G1}\n\
             add element bridge neutrino_sg g4-{G1} {{ 10.0.0.5/32, 10.0.0.9/32 }}\n"
        )
    );
    assert!(delta_script(&b, &b).is_none());
}

const AG: &str = "aaaaaaaa-cccc-4000-8000-000000000001";

/// The default rules plus `tcp 22 from address group AG` (IPv4 and IPv6), AG holding `addrs`.
fn ag_state(addrs: &[&str]) -> HostState {
    let mut rules = default_rules();
    for eth in ["IPv4", "IPv6"] {
        rules.push(
            json!({"id": format!("ag-{eth}"), "direction": "ingress", "ethertype": eth,
            "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_address_group_id": AG}),
        );
    }
    let mut st = state(rules, &[], false);
    st.security_groups[0]
        .address_groups
        .insert(AG.into(), addrs.iter().map(|s| s.to_string()).collect());
    st
}

#[test]
fn address_groups_are_sets_and_address_changes_touch_only_them() {
    let a = render(
        &model(&ag_state(&[
            "192.0.2.0/24",
            "2001:db8::5",
            "198.51.100.7/32",
        ]))
        .secgroups,
    );
    let chain = a[&format!("gi-{G1}")].lines.join("\n");
    assert!(
        chain.contains(&format!(
            "meta protocol ip ip saddr @a4-{AG} meta l4proto 6 th dport 22 accept"
        )),
        "{chain}"
    );
    assert!(
        chain.contains(&format!(
            "meta protocol ip6 ip6 saddr @a6-{AG} meta l4proto 6 th dport 22 accept"
        )),
        "{chain}"
    );
    assert_eq!(
        a[&format!("a4-{AG}")].lines,
        ["192.0.2.0/24", "198.51.100.7/32"]
    );
    assert_eq!(a[&format!("a6-{AG}")].lines, ["2001:db8::5/128"]);
    assert!(a[&format!("a4-{AG}")].decl.contains("ipv4_addr"));
    // An address removed: one set rewritten, no chain touched.
    let b = render(&model(&ag_state(&["192.0.2.0/24", "2001:db8::5"])).secgroups);
    assert_eq!(
        delta_script(&a, &b).unwrap(),
        format!(
            "flush set bridge neutrino_sg a4-{AG}\n\
             add element bridge neutrino_sg a4-{AG} {{ 192.0.2.0/24 }}\n"
        )
    );
    // The last address gone: the set stays, empty, so the rule matches nothing.
    let c = render(&model(&ag_state(&[])).secgroups);
    assert!(c[&format!("a4-{AG}")].lines.is_empty());
    assert_eq!(
        delta_script(&b, &c).unwrap(),
        format!("flush set bridge neutrino_sg a4-{AG}\nflush set bridge neutrino_sg a6-{AG}\n")
    );
    // No addresses from the server at all (an older server): an empty set, never "any".
    let mut st = ag_state(&[]);
    st.security_groups[0].address_groups.clear();
    let d = render(&model(&st).secgroups);
    assert!(d[&format!("a4-{AG}")].lines.is_empty());
    // The rules gone: the sets go too.
    let e = render(&model(&state(default_rules(), &[], false)).secgroups);
    let s = delta_script(&a, &e).unwrap();
    assert!(
        s.contains(&format!("delete set bridge neutrino_sg a4-{AG}\n")),
        "{s}"
    );
    assert!(
        s.contains(&format!("delete set bridge neutrino_sg a6-{AG}\n")),
        "{s}"
    );
}

const N1: &str = "aaaaaaaa-1111-4000-8000-000000000001";
const N2: &str = "bbbbbbbb-2222-4000-8000-000000000002";
const N3: &str = "cccccccc-3333-4000-8000-000000000003";

fn with_networks(mut st: HostState, nets: &[&str]) -> HostState {
    st.networks = nets
        .iter()
        .map(|n| NetworkState {
            network: doc(json!({"id": n})),
            segments: vec![],
            subnets: vec![],
        })
        .collect();
    st
}

fn zones(pairs: &[(&str, u16)]) -> std::collections::BTreeMap<String, u16> {
    pairs.iter().map(|(b, z)| (b.to_string(), *z)).collect()
}

#[test]
fn conntrack_zones_are_per_network_and_stable() {
    let set = |bs: &[&str]| bs.iter().map(|b| b.to_string()).collect();
    // Fresh: 1, 2, ... in bridge name order.
    assert_eq!(
        assign_zones(&set(&["brqb", "brqa"]), &zones(&[])),
        zones(&[("brqa", 1), ("brqb", 2)])
    );
    // Kept zones stay; a new bridge takes the lowest free one; gone bridges free theirs.
    assert_eq!(
        assign_zones(
            &set(&["brqa", "brqc", "brqd"]),
            &zones(&[("brqc", 2), ("brqx", 1)])
        ),
        zones(&[("brqa", 1), ("brqc", 2), ("brqd", 3)])
    );
    // A zone claimed twice (a hand-edited map) or zone 0: reassigned.
    assert_eq!(
        assign_zones(
            &set(&["brqa", "brqb", "brqc"]),
            &zones(&[("brqa", 1), ("brqb", 1), ("brqc", 0)])
        ),
        zones(&[("brqa", 1), ("brqb", 2), ("brqc", 3)])
    );
}

#[test]
fn zones_map_and_chain_render_and_only_the_map_follows_networks() {
    let st = with_networks(state(default_rules(), &[], false), &[N1, N2]);
    let a = render(&model(&st).secgroups);
    let z = &a["zones"];
    assert_eq!(z.table, "inet neutrino_sg");
    assert_eq!(
        z.lines,
        ["\"brqaaaaaaaa-11\" : 1", "\"brqbbbbbbbb-22\" : 2"]
    );
    let full = full_script(&a);
    assert!(
        full.contains(
            "  map zones { typeof iifname : ct zone; }\n  chain zone {\n    \
             type filter hook prerouting priority -300; policy accept;\n    \
             ct zone set iifname map @zones\n  }\n"
        ),
        "{full}"
    );
    assert!(
        full.contains(
            "add element inet neutrino_sg zones { \"brqaaaaaaaa-11\" : 1, \"brqbbbbbbbb-22\" : 2 }\n"
        ),
        "{full}"
    );
    // N1 leaves and N3 arrives: N2 keeps zone 2, N3 takes the free 1; nothing but the map.
    let st2 = with_networks(state(default_rules(), &[], false), &[N2, N3]);
    let zb = assign_zones(
        &bridges(&model(&st2).secgroups),
        &zones(&[("brqaaaaaaaa-11", 1), ("brqbbbbbbbb-22", 2)]),
    );
    let b = render_zoned(&model(&st2).secgroups, &zb);
    assert_eq!(
        delta_script(&a, &b).unwrap(),
        "delete element inet neutrino_sg zones { \"brqaaaaaaaa-11\" }\n\
         add element inet neutrino_sg zones { \"brqcccccccc-33\" : 1 }\n"
    );
}

#[test]
fn reconciler_keeps_the_zones_a_previous_run_gave() {
    let nft = Arc::new(FakeNft::default());
    // A previous run left our tables with N2 in zone 7.
    *nft.tables.lock().unwrap() = vec!["inet neutrino_sg".into(), "bridge neutrino_sg".into()];
    nft.listings.lock().unwrap().insert(
        "map inet neutrino_sg zones".into(),
        r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"map": {"family": "inet",
            "name": "zones", "table": "neutrino_sg", "type": "ifname", "map": "integer",
            "elem": [["brqbbbbbbbb-22", 7]]}}]}"#
            .into(),
    );
    let mut sg = SecGroups::new(nft.clone());
    let st = with_networks(state(default_rules(), &[], false), &[N1, N2]);
    let mut pass = Pass::default();
    sg.reconcile(&model(&st), &mut pass);
    pass.result().unwrap();
    let s = nft.scripts().pop().unwrap();
    assert!(
        s.contains("zones { \"brqaaaaaaaa-11\" : 1, \"brqbbbbbbbb-22\" : 7 }"),
        "{s}"
    );
    // Later networks keep counting from what is in use, without reading back again.
    nft.listings.lock().unwrap().clear();
    let st = with_networks(state(default_rules(), &[], false), &[N1, N2, N3]);
    let mut pass = Pass::default();
    sg.reconcile(&model(&st), &mut pass);
    pass.result().unwrap();
    let s = nft.scripts().pop().unwrap();
    assert!(s.contains("\"brqcccccccc-33\" : 2 }"), "{s}");
}

#[test]
fn rule_change_rewrites_the_group_chain_and_removal_cleans_up() {
    let a = render(&model(&state(default_rules(), &[], false)).secgroups);
    let mut rules = default_rules();
    rules.push(
        json!({"id": "r7", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 22, "port_range_max": 22}),
    );
    let b = render(&model(&state(rules, &[], false)).secgroups);
    let d = delta_script(&a, &b).unwrap();
    // One chain, the group's, whatever the number of its ports.
    assert!(
        d.starts_with(&format!("flush chain bridge neutrino_sg gi-{G1}\n")),
        "{d}"
    );
    assert_eq!(d.matches("flush chain").count(), 1, "{d}");
    assert!(d.contains("meta l4proto 6 th dport 22 accept"), "{d}");
    assert!(!d.contains("e-") && !d.contains(" i-"), "{d}");
    // Port security turned on for P2: its chains and map entries appear (the map gains an
    // element; it is not rewritten).
    let c = render(&model(&state(default_rules(), &[], true)).secgroups);
    let d = delta_script(&a, &c).unwrap();
    assert!(d.contains(&format!("chain e-{P2} {{")), "{d}");
    assert!(
        d.contains(&format!(
            "add element bridge neutrino_sg from_port {{ \"tap22222222-aa\" : jump e-{P2} }}\n"
        )),
        "{d}"
    );
    assert!(!d.contains("flush map"), "{d}");
    let d = delta_script(&c, &a).unwrap();
    assert!(
        d.ends_with(&format!(
            "delete element bridge neutrino_sg from_port {{ \"tap22222222-aa\" }}\n\
             delete element bridge neutrino_sg to_port {{ \"tap22222222-aa\" }}\n\
             flush chain bridge neutrino_sg e-{P2}\nflush chain bridge neutrino_sg i-{P2}\n\
             delete chain bridge neutrino_sg e-{P2}\ndelete chain bridge neutrino_sg i-{P2}\n"
        )),
        "{d}"
    );
}

#[test]
fn reconciler_applies_full_then_deltas_then_nothing() {
    let nft = Arc::new(FakeNft::default());
    let mut sg = SecGroups::new(nft.clone());
    let m = model(&state(default_rules(), &["10.0.0.5"], false));
    let mut pass = Pass::default();
    sg.reconcile(&m, &mut pass);
    pass.result().unwrap();
    assert!(nft.scripts()[0].starts_with("add table inet neutrino_sg\ndelete table inet"));
    assert_eq!(
        nft.tables().unwrap(),
        ["inet neutrino_sg", "bridge neutrino_sg"]
    );
    assert!(*nft.bridge_nf.lock().unwrap());
    let mut pass = Pass::default();
    let lists = *nft.lists.lock().unwrap();
    sg.reconcile(&m, &mut pass);
    assert_eq!(pass.changes, 0);
    assert_eq!(nft.scripts().len(), 1);
    // Tables just applied are not listed again to see whether they exist (each listing
    // costs tens of milliseconds on a busy host).
    assert_eq!(*nft.lists.lock().unwrap(), lists);
    // A failure makes the next apply a full one.
    let m2 = model(&state(default_rules(), &["10.0.0.5", "10.0.0.8"], false));
    *nft.fail_next.lock().unwrap() = Some("boom".into());
    let mut pass = Pass::default();
    sg.reconcile(&m2, &mut pass);
    assert!(pass.result().is_err());
    let mut pass = Pass::default();
    sg.reconcile(&m2, &mut pass);
    pass.result().unwrap();
    assert!(nft.scripts().last().unwrap().starts_with("add table"));
    // Disabled driver removes our tables.
    let mut off = SecGroupsDisabled::new(nft.clone());
    off.reconcile(&m2, &mut Pass::default());
    assert!(nft.tables().unwrap().is_empty());
}

/// Feeds the rendered scripts to the real `nft` in a scratch namespace when root.
#[test]
fn scripts_are_accepted_by_nft() {
    let root = neutrino_host::exec::run(&["id", "-u"]).is_ok_and(|u| u.trim() == "0");
    assert!(
        root,
        "scripts_are_accepted_by_nft needs root (a scratch network namespace); run as root"
    );
    assert!(
        neutrino_host::exec::run(&["nft", "--version"]).is_ok(),
        "nft not found: run scripts/setup"
    );
    let ns = format!("ntsgunit{}", std::process::id());
    let run = |args: &[&str], input: Option<&str>| {
        let mut argv = vec!["ip", "netns", "exec", ns.as_str()];
        argv.extend_from_slice(args);
        match input {
            Some(i) => neutrino_host::exec::run_stdin(&argv, i),
            None => neutrino_host::exec::run(&argv),
        }
    };
    neutrino_host::exec::run(&["ip", "netns", "add", &ns]).unwrap();
    let a = render(
        &model(&with_networks(
            state(default_rules(), &["10.0.0.5"], false),
            &[N1, N2],
        ))
        .secgroups,
    );
    let mut rules = default_rules();
    rules.push(
        json!({"id": "r8", "direction": "egress", "ethertype": "IPv6", "protocol": "ipv6-icmp",
        "port_range_min": 128, "remote_group_id": G1}),
    );
    let mut st_b = state(rules, &["10.0.0.5", "10.0.0.0/24", "2001:db8::1"], true);
    let mut ag = ag_state(&["192.0.2.0/24", "192.0.2.7", "2001:db8::/64"]);
    st_b.security_groups[0]
        .rules
        .append(&mut ag.security_groups[0].rules.split_off(default_rules().len()));
    st_b.security_groups[0].address_groups = ag.security_groups[0].address_groups.clone();
    let b = render(&model(&st_b).secgroups);
    let res = (|| {
        run(&["nft", "-f", "-"], Some(&full_script(&a)))?;
        run(&["nft", "-f", "-"], Some(&delta_script(&a, &b).unwrap()))?;
        run(&["nft", "-f", "-"], Some(&delta_script(&b, &a).unwrap()))?;
        let z = run(
            &["nft", "-j", "list", "map", "inet", "neutrino_sg", "zones"],
            None,
        )?;
        Ok::<_, neutrino_host::HostError>((run(&["nft", "list", "ruleset"], None)?, z))
    })();
    let _ = neutrino_host::exec::run(&["ip", "netns", "del", &ns]);
    let (out, z) = res.unwrap();
    assert_eq!(
        super::reconcile::parse_zones(&z),
        zones(&[("brqaaaaaaaa-11", 1), ("brqbbbbbbbb-22", 2)])
    );
    assert!(out.contains("ct zone set iifname map @zones"), "{out}");
    assert!(out.contains(&format!("chain i-{P1}")), "{out}");
    assert!(!out.contains(&format!("chain i-{P2}")), "{out}");
    assert!(!out.contains(&format!("a4-{AG}")), "{out}");
}
