//! Observe the host's links and VXLAN forwarding state, and apply the difference to
//! [`DesiredL2`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_host::{FdbEntry, Link, LinkChange, Net};
use neutrino_wire::PortStatus;

use super::desired::{BridgeSpec, DesiredL2, FLOOD_MAC, L2Settings, Uplink, render};
use crate::model::HostModel;
use crate::names;
use crate::runner::{Pass, Reconciler};

const NAME: &str = "l2";

/// A status we reported is not reported again for this long unless it changes (the server's
/// answer reaches us through the change log; this only avoids duplicate reports meanwhile).
const REPORT_HOLD: Duration = Duration::from_secs(10);

/// The L2 reconciler.
pub struct L2 {
    net: Arc<dyn Net>,
    settings: L2Settings,
    reported: HashMap<String, (PortStatus, Instant)>,
}

impl L2 {
    /// A reconciler acting through `net`.
    pub fn new(net: Arc<dyn Net>, settings: L2Settings) -> Self {
        L2 {
            net,
            settings,
            reported: HashMap::new(),
        }
    }

    fn bridge(
        &self,
        name: &str,
        spec: &BridgeSpec,
        links: &BTreeMap<String, Link>,
        pass: &mut Pass,
    ) {
        let net = &*self.net;
        if let Uplink::Unsupported(why) = &spec.uplink {
            pass.fail(
                NAME,
                &spec.network_id,
                neutrino_host::HostError::Invalid(why.clone()),
            );
            return;
        }
        match links.get(name) {
            Some(l) if l.kind.as_deref() == Some("bridge") => {
                if !l.up {
                    step(pass, name, net.set_link(None, name, &[LinkChange::Up]));
                }
            }
            Some(_) => {
                pass.fail(
                    NAME,
                    name,
                    neutrino_host::HostError::Invalid(format!("{name} exists and is not a bridge")),
                );
                return;
            }
            None => {
                tracing::info!(bridge = name, network_id = %spec.network_id, "creating bridge");
                if !step(pass, name, net.add_bridge(None, name)) {
                    return;
                }
                step(pass, name, net.set_link(None, name, &[LinkChange::Up]));
            }
        }
        let mtu = spec.mtu;
        match &spec.uplink {
            Uplink::None | Uplink::Unsupported(_) => {}
            Uplink::Vxlan(v) => {
                let cur = links.get(&v.name);
                let right = cur.and_then(|l| l.vxlan.as_ref()).is_some_and(|x| {
                    x.id == v.vni
                        && x.local.as_deref() == Some(v.local.as_str())
                        && x.port == v.dstport
                        && x.proxy == v.proxy
                });
                let mut fresh = false;
                if !right {
                    if cur.is_some() {
                        tracing::info!(dev = %v.name, "VXLAN device has other parameters: recreating");
                        step(pass, &v.name, net.del_link(None, &v.name));
                    }
                    if !step(pass, &v.name, net.add_vxlan(None, v)) {
                        return;
                    }
                    fresh = true;
                }
                self.attach(
                    &v.name,
                    name,
                    mtu,
                    if fresh { None } else { cur },
                    true,
                    pass,
                );
                self.vxlan_entries(&v.name, spec, pass);
            }
            Uplink::Physical(iface) => match links.get(iface) {
                Some(l) => self.attach(iface, name, 0, Some(l), true, pass),
                None => pass.fail(
                    NAME,
                    iface,
                    neutrino_host::HostError::Invalid(format!(
                        "mapped interface {iface} does not exist"
                    )),
                ),
            },
            Uplink::Vlan {
                parent,
                name: sub,
                vid,
            } => {
                let cur = links.get(sub);
                if cur.is_none() && !step(pass, sub, net.add_vlan(None, parent, sub, *vid)) {
                    return;
                }
                self.attach(sub, name, 0, cur, true, pass);
            }
        }
    }

    /// Enslaves `dev` to `bridge`, with `mtu` (0: leave it), up (or down when `up` is false:
    /// a port disabled by its `admin_state_up`).
    fn attach(
        &self,
        dev: &str,
        bridge: &str,
        mtu: u32,
        cur: Option<&Link>,
        up: bool,
        pass: &mut Pass,
    ) {
        let mut ch = Vec::new();
        if mtu > 0 && cur.is_none_or(|l| l.mtu != mtu) {
            ch.push(LinkChange::Mtu(mtu));
        }
        if cur.is_none_or(|l| l.master.as_deref() != Some(bridge)) {
            ch.push(LinkChange::Master(bridge.to_string()));
        }
        if up && cur.is_none_or(|l| !l.up) {
            ch.push(LinkChange::Up);
        }
        if !up && cur.is_none_or(|l| l.up) {
            ch.push(LinkChange::Down);
        }
        if !ch.is_empty() {
            tracing::info!(dev, bridge, ?ch, "wiring device");
            step(pass, dev, self.net.set_link(None, dev, &ch));
        }
    }

    fn vxlan_entries(&self, dev: &str, spec: &BridgeSpec, pass: &mut Pass) {
        let net = &*self.net;
        match net.fdb(None, dev) {
            Ok(entries) => {
                let have: BTreeSet<FdbEntry> =
                    entries.into_iter().filter(|e| e.dst.is_some()).collect();
                for e in spec.fdb.difference(&have) {
                    step(pass, dev, net.add_fdb(None, dev, e, e.mac == FLOOD_MAC));
                }
                for e in have.difference(&spec.fdb) {
                    step(pass, dev, net.del_fdb(None, dev, e));
                }
            }
            Err(e) => pass.fail(NAME, dev, e),
        }
        match net.neighs(None, dev) {
            Ok(have) => {
                let have: BTreeMap<String, Option<String>> = have
                    .into_iter()
                    .filter(|n| n.permanent)
                    .map(|n| (n.ip, n.mac))
                    .collect();
                for (ip, mac) in &spec.neigh {
                    if have.get(ip).and_then(Option::as_deref) != Some(mac.as_str()) {
                        step(pass, dev, net.replace_neigh(None, dev, ip, mac));
                    }
                }
                for ip in have.keys().filter(|ip| !spec.neigh.contains_key(*ip)) {
                    step(pass, dev, net.del_neigh(None, dev, ip));
                }
            }
            Err(e) => pass.fail(NAME, dev, e),
        }
    }

    /// Reports `status` unless the server knows it already; `disabled`: the port is DOWN
    /// because its `admin_state_up` is false, whatever it was.
    fn report(
        &mut self,
        port_id: &str,
        known: &str,
        status: PortStatus,
        disabled: bool,
        pass: &mut Pass,
    ) {
        if known == status.as_str() {
            self.reported.remove(port_id);
            return;
        }
        // A port never wired stays DOWN/BUILD without a report; only ACTIVE (or disabled)
        // ones go DOWN.
        if status == PortStatus::Down && known != PortStatus::Active.as_str() && !disabled {
            return;
        }
        if let Some((s, at)) = self.reported.get(port_id)
            && *s == status
            && at.elapsed() < REPORT_HOLD
        {
            return;
        }
        self.reported
            .insert(port_id.to_string(), (status, Instant::now()));
        pass.port_status.push((port_id.to_string(), status));
    }
}

/// Applies one step; records a failure and returns false when it failed.
fn step(pass: &mut Pass, object: &str, r: Result<(), neutrino_host::HostError>) -> bool {
    pass.step(NAME, object, r)
}

impl Reconciler for L2 {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass) {
        let want: DesiredL2 = render(desired, &self.settings);
        let links: BTreeMap<String, Link> = match self.net.links(None) {
            Ok(l) => l.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(e) => {
                pass.fail(NAME, "links", e);
                return;
            }
        };
        for (name, spec) in &want.bridges {
            self.bridge(name, spec, &links, pass);
        }
        // Instance devices: wire the ones that exist, report their ports.
        let links = match self.net.links(None) {
            Ok(l) => l.into_iter().map(|l| (l.name.clone(), l)).collect(),
            Err(_) => links,
        };
        for (tap, t) in &want.taps {
            // Neutron's linuxbridge agent: a disabled port's device is set down and the port
            // reported DOWN; enabled again, up and ACTIVE.
            let status = match links.get(tap) {
                Some(l) if want.bridges.contains_key(&t.bridge) => {
                    self.attach(tap, &t.bridge, t.mtu, Some(l), t.admin_state_up, pass);
                    if t.admin_state_up {
                        PortStatus::Active
                    } else {
                        PortStatus::Down
                    }
                }
                _ => PortStatus::Down,
            };
            let disabled = !t.admin_state_up && links.contains_key(tap);
            self.report(&t.port_id, &t.status, status, disabled, pass);
        }
        let ours: BTreeSet<&str> = want.taps.values().map(|t| t.port_id.as_str()).collect();
        self.reported.retain(|p, _| ours.contains(p.as_str()));
        // Sweep: our bridges and VXLAN devices nobody wants any more.
        let wanted_vx: BTreeSet<String> = want
            .bridges
            .values()
            .filter_map(|b| match &b.uplink {
                Uplink::Vxlan(v) => Some(v.name.clone()),
                _ => None,
            })
            .collect();
        for (name, l) in &links {
            let stale = (name.starts_with(names::BRIDGE_PREFIX)
                && l.kind.as_deref() == Some("bridge")
                && !want.bridges.contains_key(name))
                || (name.starts_with(names::VXLAN_PREFIX)
                    && l.kind.as_deref() == Some("vxlan")
                    && !wanted_vx.contains(name));
            if stale {
                tracing::info!(dev = %name, startup = pass.startup, "removing stale device");
                step(pass, name, self.net.del_link(None, name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VxlanConfig;
    use crate::model::{Network, Port, RemoteHost, Segment};
    use neutrino_host::fake::FakeNet;

    const NET: &str = "11111111-2222-3333-4444-555555555555";
    const PORT: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    fn settings() -> L2Settings {
        L2Settings {
            mappings: [("physnet1".to_string(), "eth1".to_string())].into(),
            vxlan: Some(VxlanConfig {
                local_ip: "198.18.0.11".parse().unwrap(),
                l2_population: true,
                arp_responder: true,
                group: None,
                udp_dstport: 8472,
            }),
        }
    }

    fn model(remote_ports: usize) -> HostModel {
        let mut m = HostModel::default();
        m.networks.insert(
            NET.into(),
            Network {
                id: NET.into(),
                mtu: 1450,
                segments: vec![Segment::Vxlan(42)],
                subnets: vec![],
            },
        );
        m.ports.push(Port {
            id: PORT.into(),
            network_id: NET.into(),
            mac: "fa:16:3e:00:00:01".into(),
            device_owner: "compute:nova".into(),
            status: "DOWN".into(),
            admin_state_up: true,
            fixed_ips: vec![],
            extra_dhcp_opts: vec![],
            host: "h1".into(),
        });
        if remote_ports > 0 {
            m.l2pop.insert(
                NET.into(),
                vec![RemoteHost {
                    host: "h2".into(),
                    vtep: "198.18.0.12".parse().unwrap(),
                    ports: (0..remote_ports)
                        .map(|i| {
                            (
                                format!("fa:16:3e:00:01:{i:02x}"),
                                vec![format!("10.0.0.{}", 10 + i).parse().unwrap()],
                            )
                        })
                        .collect(),
                }],
            );
        }
        m
    }

    fn pass(l2: &mut L2, m: &HostModel) -> Pass {
        let mut p = Pass::default();
        l2.reconcile(m, &mut p);
        p
    }

    #[test]
    fn builds_bridge_vxlan_fdb_and_is_idempotent() {
        let net = Arc::new(FakeNet::new());
        let mut l2 = L2::new(net.clone(), settings());
        let m = model(2);
        let p = pass(&mut l2, &m);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        let br = names::bridge(NET);
        assert!(net.link(None, &br).unwrap().up);
        let vx = net.link(None, "vxlan-42").unwrap();
        assert_eq!(vx.master.as_deref(), Some(br.as_str()));
        assert_eq!(vx.mtu, 1450);
        let fdb = net.fdb(None, "vxlan-42").unwrap();
        assert_eq!(fdb.len(), 3, "{fdb:?}");
        assert!(fdb.iter().all(|e| e.dst.as_deref() == Some("198.18.0.12")));
        // With arp_responder: each remote port's address and its EUI-64 link-local address.
        let neighs = net.neighs(None, "vxlan-42").unwrap();
        assert_eq!(neighs.len(), 4, "{neighs:?}");
        assert!(
            neighs.iter().any(|n| n.ip == "fe80::f816:3eff:fe00:100"
                && n.mac.as_deref() == Some("fa:16:3e:00:01:00")),
            "{neighs:?}"
        );
        // No tap yet: nothing reported (the port is DOWN already).
        assert!(p.port_status.is_empty());
        // Second pass: nothing to do.
        net.clear_ops();
        let p = pass(&mut l2, &m);
        assert!(net.ops().is_empty(), "second pass changed {:?}", net.ops());
        assert_eq!(p.changes, 0);
    }

    #[test]
    fn attaches_taps_and_reports_status_once() {
        let net = Arc::new(FakeNet::new());
        let mut l2 = L2::new(net.clone(), settings());
        let mut m = model(0);
        pass(&mut l2, &m);
        let tap = names::tap(PORT);
        net.add_device(None, &tap, Some("veth"));
        let p = pass(&mut l2, &m);
        let t = net.link(None, &tap).unwrap();
        assert_eq!(t.master, Some(names::bridge(NET)));
        assert!(t.up);
        assert_eq!(t.mtu, 1450);
        assert_eq!(p.port_status, vec![(PORT.to_string(), PortStatus::Active)]);
        // Not repeated while the server has not answered yet.
        assert!(pass(&mut l2, &m).port_status.is_empty());
        // The server now says ACTIVE; the tap goes away: DOWN.
        m.ports[0].status = "ACTIVE".into();
        net.remove_device(None, &tap);
        let p = pass(&mut l2, &m);
        assert_eq!(p.port_status, vec![(PORT.to_string(), PortStatus::Down)]);
    }

    #[test]
    fn a_disabled_port_has_its_device_down_and_goes_down() {
        let net = Arc::new(FakeNet::new());
        let mut l2 = L2::new(net.clone(), settings());
        let mut m = model(0);
        let tap = names::tap(PORT);
        net.add_device(None, &tap, Some("veth"));
        pass(&mut l2, &m);
        m.ports[0].status = "ACTIVE".into();
        assert!(net.link(None, &tap).unwrap().up);
        // admin_state_up=false: the device goes down, the port DOWN.
        m.ports[0].admin_state_up = false;
        let p = pass(&mut l2, &m);
        assert!(!net.link(None, &tap).unwrap().up);
        assert_eq!(p.port_status, vec![(PORT.to_string(), PortStatus::Down)]);
        // A disabled port that was still BUILD goes DOWN too.
        m.ports[0].status = "BUILD".into();
        l2.reported.clear();
        let p = pass(&mut l2, &m);
        assert_eq!(p.port_status, vec![(PORT.to_string(), PortStatus::Down)]);
        // The server says DOWN: nothing more; enabled again: up and ACTIVE.
        m.ports[0].status = "DOWN".into();
        assert!(pass(&mut l2, &m).port_status.is_empty());
        m.ports[0].admin_state_up = true;
        let p = pass(&mut l2, &m);
        assert!(net.link(None, &tap).unwrap().up);
        assert_eq!(p.port_status, vec![(PORT.to_string(), PortStatus::Active)]);
    }

    #[test]
    fn removes_only_stale_entries_and_devices() {
        let net = Arc::new(FakeNet::new());
        let mut l2 = L2::new(net.clone(), settings());
        pass(&mut l2, &model(3));
        net.add_device(None, "eth0", None);
        net.add_device(None, "brqnotours", None); // not a bridge: not ours to judge
        net.clear_ops();
        pass(&mut l2, &model(1));
        let ops = net.ops();
        assert_eq!(
            ops.iter().filter(|o| o.starts_with("del_fdb")).count(),
            2,
            "{ops:?}"
        );
        assert_eq!(ops.iter().filter(|o| o.starts_with("del_neigh")).count(), 4);
        assert!(
            !ops.iter()
                .any(|o| o.starts_with("add_") || o.starts_with("set_link")),
            "{ops:?}"
        );
        // The network leaves the host: bridge and VXLAN device go, eth0 stays.
        net.clear_ops();
        pass(&mut l2, &HostModel::default());
        assert!(net.link(None, &names::bridge(NET)).is_none());
        assert!(net.link(None, "vxlan-42").is_none());
        assert!(net.link(None, "eth0").is_some());
        assert!(net.link(None, "brqnotours").is_some());
    }

    #[test]
    fn flat_uses_the_mapped_interface_and_vlan_fails_loudly_without_8021q() {
        let net = Arc::new(FakeNet::new());
        net.add_device(None, "eth1", None);
        let mut l2 = L2::new(net.clone(), settings());
        let mut m = model(0);
        m.networks.get_mut(NET).unwrap().segments = vec![Segment::Flat("physnet1".into())];
        let p = pass(&mut l2, &m);
        assert!(p.failures.is_empty());
        assert_eq!(
            net.link(None, "eth1").unwrap().master,
            Some(names::bridge(NET))
        );
        m.networks.get_mut(NET).unwrap().segments = vec![Segment::Vlan("physnet1".into(), 100)];
        let p = pass(&mut l2, &m);
        assert_eq!(p.failures.len(), 1);
        assert_eq!(p.failures[0].object, "eth1.100");
        m.networks.get_mut(NET).unwrap().segments = vec![Segment::Other("gre".into())];
        assert_eq!(pass(&mut l2, &m).failures.len(), 1);
    }
}
