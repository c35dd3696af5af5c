//! Observe router namespaces and apply the difference to [`DesiredRouter`]s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_host::nat::RouterOs;
use neutrino_host::{HostError, Link, LinkChange, Net, fs};
use neutrino_wire::{FloatingIpStatus, PortStatus};

use super::desired::{
    DesiredRouter, GATEWAY_PREFIX, INTERNAL_PREFIX, NAT_TABLE, ROUTER_NS_PREFIX, render,
};
use crate::model::HostModel;
use crate::runner::{Pass, Reconciler};

const NAME: &str = "l3";
const FORWARD: &str = "net.ipv4.ip_forward";
/// A status we reported is not reported again for this long unless it changes.
const REPORT_HOLD: Duration = Duration::from_secs(10);
/// A router whose desired state has not changed is observed again after this long ...
const VERIFY_EVERY: Duration = Duration::from_secs(60);
/// ... but at most this many such routers per pass (oldest first), so that a host with
/// hundreds of routers does not spend seconds re-reading them on every change.
const VERIFY_BUDGET: usize = 16;

/// The L3 role's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Settings {
    /// `<state_path>/l3`: one directory per router namespace we own.
    pub dir: PathBuf,
}

/// The L3 reconciler.
pub struct L3 {
    net: Arc<dyn Net>,
    os: Arc<dyn RouterOs>,
    settings: L3Settings,
    /// Script last applied per namespace (re-applied when it differs or the table vanished).
    applied: HashMap<String, String>,
    /// Floating IPs configured per router (gratuitous ARP for new ones).
    fips: HashMap<String, BTreeMap<IpAddr, IpAddr>>,
    reported: HashMap<String, (String, Instant)>,
    /// What each namespace was last verified to hold in full, and when.
    verified: HashMap<String, (DesiredRouter, Instant)>,
}

fn step(pass: &mut Pass, object: &str, r: Result<(), HostError>) -> bool {
    pass.step(NAME, object, r)
}

impl L3 {
    /// A reconciler acting through `net` and `os`.
    pub fn new(net: Arc<dyn Net>, os: Arc<dyn RouterOs>, settings: L3Settings) -> Self {
        L3 {
            net,
            os,
            settings,
            applied: HashMap::new(),
            fips: HashMap::new(),
            reported: HashMap::new(),
            verified: HashMap::new(),
        }
    }

    fn hold(&mut self, id: &str, status: &str) -> bool {
        if let Some((s, at)) = self.reported.get(id)
            && s == status
            && at.elapsed() < REPORT_HOLD
        {
            return true;
        }
        self.reported
            .insert(id.to_string(), (status.to_string(), Instant::now()));
        false
    }

    /// Builds one router; true when everything of it is in place.
    fn router(
        &mut self,
        d: &DesiredRouter,
        host_links: &BTreeMap<String, Link>,
        have_ns: bool,
        pass: &mut Pass,
    ) -> bool {
        let net = self.net.clone();
        let os = self.os.clone();
        let ns = d.ns.as_str();
        let before = pass.failures.len();
        if !have_ns {
            // Ownership first: a namespace without our directory is never removed by us.
            if let Err(e) = fs::create_dir_all(&self.settings.dir.join(&d.id)) {
                pass.fail(NAME, &d.id, e);
                return false;
            }
            tracing::info!(router_id = %d.id, "creating router namespace");
            if !step(pass, ns, net.add_netns(ns)) {
                return false;
            }
            self.applied.remove(ns);
        }
        match os.sysctl_get(ns, FORWARD) {
            Ok(v) if v == "1" => {}
            _ => {
                step(pass, ns, os.sysctl_set(ns, FORWARD, "1"));
            }
        }
        let links: BTreeMap<String, Link> = match net.links(Some(ns)) {
            Ok(l) => l.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                pass.fail(NAME, ns, e);
                return false;
            }
        };
        for (name, dev) in &d.devices {
            let cur = links.get(name);
            if cur.is_none() {
                if host_links.contains_key(&dev.tap) {
                    step(pass, &dev.tap, net.del_link(None, &dev.tap));
                }
                tracing::info!(router_id = %d.id, dev = %name, "plugging router port");
                if !step(pass, name, net.add_veth(None, &dev.tap, name, Some(ns))) {
                    continue;
                }
            }
            let mut ch = Vec::new();
            if dev.mtu > 0 && cur.is_none_or(|l| l.mtu != dev.mtu) {
                ch.push(LinkChange::Mtu(dev.mtu));
            }
            if !dev.mac.is_empty() && cur.is_none_or(|l| l.mac != dev.mac) {
                ch.push(LinkChange::Mac(dev.mac.clone()));
            }
            if cur.is_none_or(|l| !l.up) {
                ch.push(LinkChange::Up);
            }
            if !ch.is_empty() {
                step(pass, name, net.set_link(Some(ns), name, &ch));
            }
            // Host end: on the network's bridge (the L2 reconciler built it), up.
            let tap = if cur.is_none() {
                None
            } else {
                host_links.get(&dev.tap)
            };
            if !host_links.contains_key(&dev.bridge) {
                pass.fail(
                    NAME,
                    &dev.tap,
                    HostError::Invalid(format!("bridge {} does not exist yet", dev.bridge)),
                );
            } else {
                let mut ch = Vec::new();
                if dev.mtu > 0 && tap.is_none_or(|l| l.mtu != dev.mtu) {
                    ch.push(LinkChange::Mtu(dev.mtu));
                }
                if tap.is_none_or(|l| l.master.as_deref() != Some(dev.bridge.as_str())) {
                    ch.push(LinkChange::Master(dev.bridge.clone()));
                }
                if tap.is_none_or(|l| !l.up) {
                    ch.push(LinkChange::Up);
                }
                if !ch.is_empty() {
                    step(pass, &dev.tap, net.set_link(None, &dev.tap, &ch));
                }
            }
            match net.addrs(Some(ns), name) {
                Ok(have) => {
                    let have: BTreeSet<String> = have.into_iter().collect();
                    for a in dev.addrs.difference(&have) {
                        step(pass, name, net.add_addr(Some(ns), name, a));
                    }
                    for a in have.difference(&dev.addrs) {
                        step(pass, name, net.del_addr(Some(ns), name, a));
                    }
                }
                Err(e) => pass.fail(NAME, name, e),
            }
        }
        for name in links.keys() {
            if (name.starts_with(INTERNAL_PREFIX) || name.starts_with(GATEWAY_PREFIX))
                && !d.devices.contains_key(name)
            {
                tracing::info!(router_id = %d.id, dev = %name, "unplugging router port");
                step(pass, name, net.del_link(Some(ns), name));
            }
        }
        match os.gw_routes(ns) {
            Ok(have) => {
                let have: BTreeSet<_> = have.into_iter().collect();
                for r in d.routes.difference(&have) {
                    step(pass, ns, os.replace_route(ns, r));
                }
                for r in have.difference(&d.routes) {
                    step(pass, ns, os.del_route(ns, r));
                }
            }
            Err(e) => pass.fail(NAME, ns, e),
        }
        let present = os.nft_has_table(ns, "ip", NAT_TABLE).unwrap_or(false);
        // The script last applied is also kept in the router's directory, so that a
        // restarted agent recognises a table that is already right and leaves it alone.
        let script = self.settings.dir.join(&d.id).join("nat.nft");
        if present
            && !self.applied.contains_key(ns)
            && let Ok(prev) = fs::read_to_string(&script)
        {
            self.applied.insert(ns.to_string(), prev);
        }
        if !present || self.applied.get(ns) != Some(&d.nft) {
            if step(pass, ns, os.nft_apply(ns, &d.nft)) {
                self.applied.insert(ns.to_string(), d.nft.clone());
                if let Err(e) = fs::write_atomic(&script, &d.nft) {
                    pass.fail(NAME, ns, e);
                }
            } else {
                self.applied.remove(ns);
                let _ = fs::remove_file(&script);
            }
        }
        // Gratuitous ARP for floating IPs that appeared (or moved to another fixed IP).
        let old = self.fips.get(&d.id).cloned().unwrap_or_default();
        if let Some(qg) = &d.gateway_dev {
            for (fip, fixed) in &d.fips {
                if old.get(fip) != Some(fixed) {
                    step(pass, qg, os.garp(ns, qg, &fip.to_string()));
                }
            }
            for fip in &d.forwarded {
                if !old.contains_key(fip) {
                    step(pass, qg, os.garp(ns, qg, &fip.to_string()));
                }
            }
        }
        let ok = pass.failures.len() == before;
        if ok {
            // Forwarded-only addresses are remembered as mapping to themselves.
            let mut seen = d.fips.clone();
            seen.extend(d.forwarded.iter().map(|f| (*f, *f)));
            self.fips.insert(d.id.clone(), seen);
        }
        ok
    }
}

/// The host ends of a router's devices exist, up, on their bridges (read from the host's
/// link list the pass already has: costs no command).
fn host_ends_ok(d: &DesiredRouter, host_links: &BTreeMap<String, Link>) -> bool {
    d.devices.values().all(|dev| {
        host_links
            .get(&dev.tap)
            .is_some_and(|l| l.up && l.master.as_deref() == Some(dev.bridge.as_str()))
    })
}

impl Reconciler for L3 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass) {
        let want: BTreeMap<String, (DesiredRouter, &super::Router)> = desired
            .routers
            .iter()
            .filter_map(|r| render(r, desired).map(|d| (d.ns.clone(), (d, r))))
            .collect();
        let namespaces: BTreeSet<String> = match self.net.netns_list(None) {
            Ok(v) => v.into_iter().map(|n| n.name).collect(),
            Err(e) => {
                pass.fail(NAME, "netns", e);
                return;
            }
        };
        let host_links: BTreeMap<String, Link> = match self.net.links(None) {
            Ok(l) => l.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                pass.fail(NAME, "links", e);
                return;
            }
        };
        // Routers whose desired state is what we last verified, whose namespace exists and
        // whose host ends look right need no observation, except the oldest few (periodic
        // drift repair). Everything else is observed and repaired now.
        let mut stale: Vec<(&String, Instant)> = Vec::new();
        let mut skip = BTreeSet::new();
        for (ns, (d, _)) in &want {
            if let Some((v, at)) = self.verified.get(ns)
                && v == d
                && namespaces.contains(ns)
                && host_ends_ok(d, &host_links)
            {
                if at.elapsed() < VERIFY_EVERY {
                    skip.insert(ns.clone());
                } else {
                    stale.push((ns, *at));
                }
            }
        }
        stale.sort_by_key(|(_, at)| *at);
        skip.extend(
            stale
                .iter()
                .skip(VERIFY_BUDGET)
                .map(|(ns, _)| (*ns).clone()),
        );
        let mut live = BTreeSet::new();
        for (ns, (d, r)) in &want {
            let ok = skip.contains(ns) || {
                let ok = self.router(d, &host_links, namespaces.contains(ns), pass);
                if ok {
                    self.verified
                        .insert(ns.clone(), (d.clone(), Instant::now()));
                } else {
                    self.verified.remove(ns);
                }
                ok
            };
            if !ok {
                continue;
            }
            for p in r.gateway.iter().chain(&r.interfaces) {
                live.insert(p.id.clone());
                if p.status != PortStatus::Active.as_str() && !self.hold(&p.id, "ACTIVE") {
                    pass.port_status.push((p.id.clone(), PortStatus::Active));
                }
            }
            for f in &r.floating_ips {
                live.insert(f.id.clone());
                let want = if d.fips.contains_key(&f.floating_ip)
                    || d.forwarded.contains(&f.floating_ip)
                {
                    FloatingIpStatus::Active
                } else {
                    FloatingIpStatus::Down
                };
                if f.status != want.as_str() && !self.hold(&f.id, want.as_str()) {
                    pass.floating_ip_status.push((f.id.clone(), want));
                }
            }
        }
        self.reported.retain(|id, _| live.contains(id));
        // Routers no longer ours here: their namespace (with its veths) and directory.
        let owned = match fs::list_dir(&self.settings.dir) {
            Ok(v) => v,
            Err(e) => {
                pass.fail(NAME, "state dir", e);
                return;
            }
        };
        for id in owned {
            let ns = format!("{ROUTER_NS_PREFIX}{id}");
            if want.contains_key(&ns) {
                continue;
            }
            tracing::info!(router_id = %id, startup = pass.startup, "removing router namespace");
            if namespaces.contains(&ns) && !step(pass, &ns, self.net.del_netns(&ns)) {
                continue;
            }
            self.applied.remove(&ns);
            self.verified.remove(&ns);
            self.fips.remove(&id);
            step(pass, &id, fs::remove_dir(&self.settings.dir.join(&id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::l3 as model;
    use crate::model::{Network, Segment};
    use neutrino_host::fake::FakeNet;
    use neutrino_host::nat::FakeRouterOs;
    use serde_json::json;

    const R: &str = "7a1b2c3d-0000-4000-8000-000000000001";
    const EXT: &str = "e0000000-0000-4000-8000-000000000000";
    const INT: &str = "10000000-0000-4000-8000-000000000000";

    fn state(fip_fixed: Option<&str>) -> Vec<neutrino_wire::RouterState> {
        let sub =
            |id: &str, cidr: &str, gw: &str| json!({"id": id, "cidr": cidr, "gateway_ip": gw});
        let port = |id: &str, net: &str, sid: &str, ip: &str| {
            json!({"id": id, "network_id": net, "mac_address": "FA:16:3E:00:00:01",
                   "status": "DOWN", "fixed_ips": [{"subnet_id": sid, "ip_address": ip}]})
        };
        let doc = |v: serde_json::Value| v.as_object().unwrap().clone();
        vec![neutrino_wire::RouterState {
            router: doc(json!({"id": R, "admin_state_up": true,
                "external_gateway_info": {"enable_snat": true},
                "routes": [{"destination": "192.0.2.0/24", "nexthop": "10.0.0.254"}]})),
            agent_id: "a".into(),
            gateway: Some(neutrino_wire::RouterPortState {
                port: doc(port("g0000000-0000", EXT, "se", "203.0.113.105")),
                subnets: vec![doc(sub("se", "203.0.113.0/24", "203.0.113.1"))],
            }),
            interfaces: vec![neutrino_wire::RouterPortState {
                port: doc(port("i0000000-0000", INT, "si", "10.0.0.1")),
                subnets: vec![doc(sub("si", "10.0.0.0/24", "10.0.0.1"))],
            }],
            floating_ips: vec![doc(
                json!({"id": "f1", "floating_ip_address": "203.0.113.150",
                "fixed_ip_address": fip_fixed, "status": "DOWN"}),
            )],
            port_forwardings: vec![],
        }]
    }

    /// A fake host with the two networks' bridges, and an L3 reconciler over it whose state
    /// directory is named after `tag`.
    fn host(tag: &str) -> (Arc<FakeNet>, Arc<FakeRouterOs>, std::path::PathBuf, L3) {
        let net = Arc::new(FakeNet::new());
        for n in [EXT, INT] {
            net.add_bridge(None, &crate::names::bridge(n)).unwrap();
        }
        let os = Arc::new(FakeRouterOs::default());
        let dir = std::env::temp_dir().join(format!("neutrino-l3-{tag}-{}", std::process::id()));
        let l3 = L3::new(net.clone(), os.clone(), L3Settings { dir: dir.clone() });
        (net, os, dir, l3)
    }

    fn model(fip_fixed: Option<&str>) -> HostModel {
        let mut m = HostModel::default();
        for (id, seg) in [
            (EXT, Segment::Flat("public".into())),
            (INT, Segment::Vxlan(5)),
        ] {
            m.networks.insert(
                id.into(),
                Network {
                    id: id.into(),
                    mtu: 1450,
                    segments: vec![seg],
                    subnets: vec![],
                },
            );
        }
        m.routers = model::parse(&state(fip_fixed));
        m
    }

    #[test]
    fn admin_down_router_keeps_its_ports_plugged_but_neither_addresses_nor_nat() {
        let mut st = state(Some("10.0.0.5"));
        st[0].router.insert("admin_state_up".into(), json!(false));
        let mut m = model(None);
        m.routers = model::parse(&st);
        let d = render(&m.routers[0], &m).expect("an admin-down router is rendered");
        assert_eq!(d.devices.len(), 2, "{d:?}");
        assert!(d.devices.values().all(|x| x.addrs.is_empty()), "{d:?}");
        assert!(d.routes.is_empty() && d.fips.is_empty() && d.gateway_dev.is_none());
        assert!(
            !d.nft.contains("snat") && !d.nft.contains("dnat"),
            "{}",
            d.nft
        );
        // Its ports are wired (ACTIVE, as Tempest's router tests wait for).
        let (net, _os, dir, mut l3) = host("down");
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        let tap = net.link(None, "tapi0000000-00").expect("host end");
        assert_eq!(tap.master, Some(crate::names::bridge(INT)));
        let ns = format!("qrouter-{R}");
        assert!(net.addrs(Some(&ns), "qr-i0000000-00").unwrap().is_empty());
        let mut ports: Vec<_> = p
            .port_status
            .iter()
            .map(|(id, s)| (id.as_str(), *s))
            .collect();
        ports.sort_by_key(|(id, _)| *id);
        assert_eq!(
            ports,
            vec![
                ("g0000000-0000", PortStatus::Active),
                ("i0000000-0000", PortStatus::Active)
            ]
        );
        // The floating IP (DOWN) is not made ACTIVE.
        assert!(
            p.floating_ip_status.is_empty(),
            "{:?}",
            p.floating_ip_status
        );
        let _ = fs::remove_dir(&dir);
    }

    #[test]
    fn builds_router_namespace_then_is_quiet_then_removes_it() {
        let (net, os, dir, mut l3) = host("build");
        let m = model(Some("10.0.0.5"));
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        let ns = format!("qrouter-{R}");
        let qg = net.link(Some(&ns), "qg-g0000000-00").expect("qg device");
        assert_eq!(qg.mac, "fa:16:3e:00:00:01");
        let tap = net.link(None, "tapi0000000-00").expect("host end");
        assert_eq!(tap.master, Some(crate::names::bridge(INT)));
        let addrs = net.addrs(Some(&ns), "qg-g0000000-00").unwrap();
        assert!(addrs.contains(&"203.0.113.150/32".to_string()), "{addrs:?}");
        {
            let s = os.state.lock().unwrap();
            let nft = &s.nft[&ns];
            assert!(
                nft.contains("ip daddr 203.0.113.150 dnat to 10.0.0.5"),
                "{nft}"
            );
            assert!(
                nft.contains("ip saddr 10.0.0.5 snat to 203.0.113.150"),
                "{nft}"
            );
            assert!(
                nft.contains("ip saddr 10.0.0.0/24 snat to 203.0.113.105"),
                "{nft}"
            );
            assert_eq!(s.routes[&ns].len(), 2);
            assert_eq!(s.sysctl[&(ns.clone(), FORWARD.to_string())], "1");
            assert_eq!(s.garps.len(), 1);
        }
        assert_eq!(p.port_status.len(), 2);
        assert_eq!(
            p.floating_ip_status,
            vec![("f1".to_string(), FloatingIpStatus::Active)]
        );
        // Second pass: nothing to do.
        let ops = os.state.lock().unwrap().ops;
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert_eq!(p.changes, 0);
        assert_eq!(os.state.lock().unwrap().ops, ops);
        // Drift on the host side (an interface's host end deleted): repaired at once, even
        // though the router's desired state did not change.
        net.del_link(None, "tapi0000000-00").unwrap();
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        let tap = net
            .link(None, "tapi0000000-00")
            .expect("host end re-plugged");
        assert_eq!(tap.master, Some(crate::names::bridge(INT)));
        // A restarted agent (a new reconciler over the same host and directory) finds
        // everything right: it writes nothing (the NAT table is not re-applied).
        let ops = os.state.lock().unwrap().ops;
        let mut again = L3::new(net.clone(), os.clone(), L3Settings { dir: dir.clone() });
        let mut p = Pass::default();
        again.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert_eq!(os.state.lock().unwrap().ops, ops);
        // Disassociate: FIP address and rules go, status DOWN.
        let m2 = model(None);
        let mut p = Pass::default();
        l3.reconcile(&m2, &mut p);
        let addrs = net.addrs(Some(&ns), "qg-g0000000-00").unwrap();
        assert!(
            !addrs.contains(&"203.0.113.150/32".to_string()),
            "{addrs:?}"
        );
        assert!(!os.state.lock().unwrap().nft[&ns].contains("dnat to"));
        // Router gone: namespace and directory removed.
        let mut p = Pass::default();
        l3.reconcile(&HostModel::default(), &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert!(net.netns_list(None).unwrap().iter().all(|n| n.name != ns));
        assert!(!dir.join(R).exists());
        let _ = fs::remove_dir(&dir);
    }

    #[test]
    fn port_forwardings_and_hairpin_render_into_the_nat_table() {
        let mut st = state(None);
        st[0].port_forwardings = vec![
            json!({"id": "pf1", "floatingip_id": "f1", "protocol": "tcp", "external_port": 2222,
                   "internal_port": 22, "internal_ip_address": "10.0.0.7"}),
            json!({"id": "pf2", "floatingip_id": "f1", "protocol": "udp", "external_port": 53,
                   "internal_port": 5353, "internal_ip_address": "10.0.0.8"}),
            // Not ours to render: unknown floating IP, bad port.
            json!({"id": "pf3", "floatingip_id": "nope", "protocol": "tcp", "external_port": 1,
                   "internal_port": 1, "internal_ip_address": "10.0.0.9"}),
            json!({"id": "pf4", "floatingip_id": "f1", "protocol": "tcp", "external_port": 0,
                   "internal_port": 1, "internal_ip_address": "10.0.0.9"}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let mut m = model(None);
        m.routers = model::parse(&st);
        assert_eq!(m.routers[0].port_forwardings.len(), 2);
        let d = render(&m.routers[0], &m).unwrap();
        let qg = "qg-g0000000-00";
        assert!(d.devices[qg].addrs.contains("203.0.113.150/32"), "{d:?}");
        assert!(d.fips.is_empty());
        assert!(
            d.nft
                .contains("ip daddr 203.0.113.150 tcp dport 2222 dnat to 10.0.0.7:22"),
            "{}",
            d.nft
        );
        assert!(
            d.nft
                .contains("ip daddr 203.0.113.150 udp dport 53 dnat to 10.0.0.8:5353"),
            "{}",
            d.nft
        );
        assert!(!d.nft.contains("10.0.0.9"), "{}", d.nft);
        assert!(
            d.nft.contains(&format!(
                "iifname != \"{qg}\" oifname != \"{qg}\" ct status & dnat != 0 masquerade"
            )),
            "{}",
            d.nft
        );
        // The floating IP is realised (ACTIVE) and announced once.
        let (_net, os, dir, mut l3) = host("pf");
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert_eq!(
            p.floating_ip_status,
            vec![("f1".to_string(), FloatingIpStatus::Active)]
        );
        let mut p = Pass::default();
        l3.reconcile(&m, &mut p);
        assert_eq!(p.changes, 0);
        assert_eq!(os.state.lock().unwrap().garps.len(), 1);
        let _ = fs::remove_dir(&dir);
    }
}
