//! Observe metadata haproxies, their files and addresses; apply the difference.
//!
//! Runs after the L3 and DHCP reconcilers, so a new router's or network's namespace exists
//! when its haproxy is wanted (a namespace not there yet is simply retried next pass). A
//! directory under `<state_path>/metadata/` is the record that a namespace's haproxy and
//! metadata address are ours: it is created before either, and removed last.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_host::procs::DaemonAction;
use neutrino_host::{Daemon, HostError, LinkChange, Net, ProcessManager, Procs, fs};

use super::METADATA_IP;
use super::haproxy::{Haproxy, MetadataSettings, render};
use crate::model::HostModel;
use crate::runner::{Pass, Reconciler};

const NAME: &str = "metadata";
const HAPROXY: &str = "haproxy";
/// The device that carries the metadata address in a namespace.
const LO: &str = "lo";

/// A haproxy verified in full this recently is only checked for being alive.
const VERIFY_EVERY: Duration = Duration::from_secs(60);
/// Expired verifications redone per pass.
const VERIFY_BUDGET: usize = 16;

/// The metadata haproxy reconciler.
pub struct MetadataProxies {
    net: Arc<dyn Net>,
    procs: Arc<dyn Procs>,
    settings: MetadataSettings,
    /// What each namespace was last verified to hold in full, and when.
    verified: HashMap<String, (Haproxy, Instant)>,
    verify_every: Duration,
}

fn addr() -> String {
    format!("{METADATA_IP}/32")
}

fn step(pass: &mut Pass, object: &str, r: Result<(), HostError>) -> bool {
    pass.step(NAME, object, r)
}

impl MetadataProxies {
    /// A reconciler acting through `net` and `procs`.
    pub fn new(net: Arc<dyn Net>, procs: Arc<dyn Procs>, settings: MetadataSettings) -> Self {
        MetadataProxies {
            net,
            procs,
            settings,
            verified: HashMap::new(),
            verify_every: VERIFY_EVERY,
        }
    }

    /// How long a full verification of a haproxy holds (tests use zero).
    pub fn verify_every(mut self, d: Duration) -> Self {
        self.verify_every = d;
        self
    }

    fn ensure(&self, h: &Haproxy, pass: &mut Pass) {
        let ns = Some(h.netns.as_str());
        // The directory first: it is the record that what follows is ours.
        if let Err(e) = fs::create_dir_all(&h.dir) {
            return pass.fail(NAME, &h.netns, e);
        }
        // haproxy binds the metadata address: it must be there (and `lo` up) first.
        match self.net.links(ns) {
            Ok(links) => {
                if !links.iter().any(|l| l.name == LO && l.up) {
                    step(pass, &h.netns, self.net.set_link(ns, LO, &[LinkChange::Up]));
                }
            }
            Err(e) => return pass.fail(NAME, &h.netns, e),
        }
        match self.net.addrs(ns, LO) {
            Ok(have) if have.contains(&addr()) => {}
            Ok(_) => {
                if !step(pass, &h.netns, self.net.add_addr(ns, LO, &addr())) {
                    return;
                }
            }
            Err(e) => return pass.fail(NAME, &h.netns, e),
        }
        let changed = match fs::write_if_changed(&h.config_file(), &h.config) {
            Ok(c) => c,
            Err(e) => return pass.fail(NAME, &h.netns, e),
        };
        let pm = ProcessManager::new(&*self.procs);
        // haproxy does not re-read its configuration on a signal: a changed file means a
        // restart.
        if changed && pm.running(HAPROXY, &h.pid_file()).is_some() {
            tracing::info!(netns = %h.netns, "haproxy configuration changed: restarting");
            step(pass, &h.netns, pm.stop(HAPROXY, &h.pid_file()));
        }
        let daemon = Daemon {
            netns: Some(h.netns.clone()),
            argv: h.argv.clone(),
            pid_file: h.pid_file(),
            log: Some(h.log_file()),
        };
        match pm.ensure(&daemon, false) {
            Ok(DaemonAction::Unchanged) => {}
            // haproxy exits non-zero on a configuration it cannot load; one that started
            // must still be there (its alerts are in its log).
            Ok(_) if pm.running(HAPROXY, &h.pid_file()).is_none() => pass.fail(
                NAME,
                &h.netns,
                HostError::Daemon {
                    program: HAPROXY.into(),
                    reason: "exited after start".into(),
                    log: h.log_file(),
                },
            ),
            Ok(a) => {
                pass.changes += 1;
                tracing::info!(netns = %h.netns, action = ?a, "metadata haproxy");
            }
            Err(e) => pass.fail(NAME, &h.netns, e),
        }
    }

    /// Stops a namespace's haproxy, removes its address and files; keeps going past
    /// failures (the directory stays until everything else is gone, so a failure is
    /// retried next pass).
    fn remove(&self, netns: &str, exists: bool, pass: &mut Pass) {
        tracing::info!(%netns, startup = pass.startup, "removing metadata haproxy");
        let dir = self.settings.dir.join(netns);
        let before = pass.failures.len();
        let pm = ProcessManager::new(&*self.procs);
        step(pass, netns, pm.stop(HAPROXY, &dir.join("pid")));
        if exists {
            // A haproxy of ours whose pid file was lost: its command line names our file.
            let ours = dir.join("haproxy.cfg").display().to_string();
            match self.procs.netns_pids(netns) {
                Ok(pids) => {
                    for pid in pids {
                        let is_ours = self.procs.cmdline(pid).is_some_and(|c| {
                            c.first()
                                .is_some_and(|p| p.rsplit('/').next() == Some(HAPROXY))
                                && c.iter().any(|a| a == &ours)
                        });
                        if is_ours {
                            step(pass, netns, pm.terminate(pid));
                        }
                    }
                }
                Err(e) => pass.fail(NAME, netns, e),
            }
            match self.net.addrs(Some(netns), LO) {
                Ok(have) if have.contains(&addr()) => {
                    step(pass, netns, self.net.del_addr(Some(netns), LO, &addr()));
                }
                Ok(_) => {}
                // The namespace went meanwhile: nothing left in it.
                Err(e) if e.is_missing() => {}
                Err(e) => pass.fail(NAME, netns, e),
            }
        }
        if pass.failures.len() == before {
            step(pass, netns, fs::remove_dir(&dir));
        }
    }
}

impl Reconciler for MetadataProxies {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass) {
        let want = render(desired, &self.settings);
        let namespaces: BTreeSet<String> = match self.net.netns_list(None) {
            Ok(l) => l.into_iter().map(|n| n.name).collect(),
            Err(e) => return pass.fail(NAME, "netns", e),
        };
        // A haproxy verified recently with the same desired state is only checked for being
        // alive (pid file and /proc, no command): on a host with hundreds of routers a pass
        // must not run two `ip` commands per router. The oldest expired verifications are
        // redone a few per pass, so drift (a removed address) is still repaired.
        let pm = ProcessManager::new(&*self.procs);
        let mut expired: Vec<(Instant, &String)> = Vec::new();
        let mut verify: Vec<&String> = Vec::new();
        for (ns, h) in &want {
            if !namespaces.contains(ns) {
                // Its router or DHCP server is not built yet (or failed): next pass.
                tracing::debug!(netns = %ns, "namespace not there yet: metadata haproxy waits");
                self.verified.remove(ns);
                continue;
            }
            match self.verified.get(ns) {
                Some((v, at)) if v == h && pm.running(HAPROXY, &h.pid_file()).is_some() => {
                    if at.elapsed() >= self.verify_every {
                        expired.push((*at, ns));
                    }
                }
                _ => verify.push(ns),
            }
        }
        expired.sort();
        verify.extend(expired.into_iter().take(VERIFY_BUDGET).map(|(_, ns)| ns));
        for ns in verify {
            let h = &want[ns];
            let before = pass.failures.len();
            self.ensure(h, pass);
            if pass.failures.len() == before {
                self.verified
                    .insert(ns.clone(), (h.clone(), Instant::now()));
            } else {
                self.verified.remove(ns);
            }
        }
        let owned = match fs::list_dir(&self.settings.dir) {
            Ok(d) => d,
            Err(e) => return pass.fail(NAME, self.settings.dir.display().to_string(), e),
        };
        for ns in owned {
            if ns.ends_with(".tmp") || want.contains_key(&ns) {
                continue;
            }
            self.verified.remove(&ns);
            self.remove(&ns, namespaces.contains(&ns), pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::config::{DhcpConfig, MetadataConfig};
    use crate::dhcp::DhcpSettings;
    use crate::model::l3::Router;
    use crate::model::{DhcpNet, Network, Port, Subnet};
    use crate::names;
    use neutrino_host::fake::{FakeNet, FakeProcs};

    const R: &str = "7a1b2c3d-0000-4000-8000-000000000001";
    const NET: &str = "11111111-2222-3333-4444-555555555555";
    const SUB: &str = "22222222-2222-3333-4444-555555555555";

    fn tmpdir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("neutrino-metadata-{tag}-{}", std::process::id()))
    }

    fn settings(dir: &std::path::Path, isolated: bool) -> MetadataSettings {
        MetadataSettings {
            cfg: MetadataConfig {
                shared_secret: "s".into(),
                nova: None,
                socket: dir.join("metadata_proxy"),
                routers: true,
                isolated,
                force: false,
            },
            dir: dir.join("metadata"),
            dhcp: Some(DhcpSettings::new(
                DhcpConfig {
                    domain: "openstacklocal".into(),
                    enable_isolated_metadata: isolated,
                    dns_servers: vec![],
                    config_file: None,
                    lease_duration: 86400,
                    lease_max: 1 << 24,
                },
                dir.join("dhcp"),
            )),
        }
    }

    fn port(id: &str, owner: &str, ip: &str) -> Port {
        Port {
            id: id.into(),
            network_id: NET.into(),
            mac: "fa:16:3e:00:00:02".into(),
            device_owner: owner.into(),
            status: "ACTIVE".into(),
            admin_state_up: true,
            fixed_ips: vec![(SUB.into(), ip.parse().unwrap())],
            extra_dhcp_opts: vec![],
            host: "h1".into(),
        }
    }

    fn router() -> Router {
        // Through the wire form: the router type grows with the L3 features.
        let st: neutrino_wire::RouterState = serde_json::from_value(
            serde_json::json!({"router": {"id": R, "admin_state_up": true}, "agent_id": "a"}),
        )
        .unwrap();
        crate::model::l3::parse(&[st]).remove(0)
    }

    /// A network with a DHCP port; `routed`: a router interface at the gateway.
    fn model(routed: bool) -> HostModel {
        let mut m = HostModel::default();
        m.networks.insert(
            NET.into(),
            Network {
                id: NET.into(),
                mtu: 1450,
                segments: vec![],
                subnets: vec![Subnet {
                    id: SUB.into(),
                    cidr: "10.0.0.0/24".parse().unwrap(),
                    gateway_ip: Some("10.0.0.1".parse().unwrap()),
                    enable_dhcp: true,
                    dns_nameservers: vec![],
                    host_routes: vec![],
                    ipv6_address_mode: None,
                    ipv6_ra_mode: None,
                }],
            },
        );
        let dhcp_port = port("dp", "network:dhcp", "10.0.0.2");
        let mut ports = vec![dhcp_port.clone(), port("vm", "compute:nova", "10.0.0.5")];
        if routed {
            ports.push(port("rp", "network:router_interface", "10.0.0.1"));
            m.routers.push(router());
        }
        m.dhcp.insert(
            NET.into(),
            DhcpNet {
                network_id: NET.into(),
                dhcp_port: Some(dhcp_port),
                ports,
            },
        );
        m
    }

    fn lo_addrs(net: &FakeNet, ns: &str) -> Vec<String> {
        net.addrs(Some(ns), LO).unwrap_or_default()
    }

    /// A pass over `m` that must not fail.
    fn clean_pass(r: &mut MetadataProxies, m: &HostModel) {
        let mut p = Pass::default();
        r.reconcile(m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
    }

    #[test]
    fn router_haproxy_lifecycle() {
        let dir = tmpdir("r");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), settings(&dir, false));
        let m = model(true);
        let ns = crate::l3::desired::router_ns(R);
        // The router's namespace is not built yet: nothing happens, nothing fails.
        clean_pass(&mut r, &m);
        assert!(procs.running().is_empty());
        // The L3 reconciler built it.
        net.add_netns(&ns).unwrap();
        net.add_device(Some(&ns), LO, None);
        clean_pass(&mut r, &m);
        assert_eq!(lo_addrs(&net, &ns), vec!["169.254.169.254/32"]);
        assert!(net.link(Some(&ns), LO).unwrap().up);
        let running = procs.running();
        assert_eq!(running.len(), 1);
        let cfg_file = dir.join("metadata").join(&ns).join("haproxy.cfg");
        assert_eq!(
            running[0][..3],
            ["haproxy", "-f", &cfg_file.display().to_string()]
        );
        let cfg = fs::read_to_string(&cfg_file).unwrap();
        assert!(cfg.contains(&format!("set-header X-Neutron-Router-ID {R}")));
        // Level-triggered: a second pass changes nothing.
        net.clear_ops();
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert_eq!(p.changes, 0);
        assert!(net.ops().is_empty(), "{:?}", net.ops());
        assert!(procs.signals().is_empty());
        // haproxy died: respawned.
        procs.kill_all();
        r.reconcile(&m, &mut Pass::default());
        assert_eq!(procs.running().len(), 1);
        // Someone removed the address: a recent verification is trusted (no command per
        // router and pass); once it expires, the address is back.
        net.del_addr(Some(&ns), LO, "169.254.169.254/32").unwrap();
        r.reconcile(&m, &mut Pass::default());
        assert!(lo_addrs(&net, &ns).is_empty());
        let mut r = r.verify_every(Duration::ZERO);
        r.reconcile(&m, &mut Pass::default());
        assert_eq!(lo_addrs(&net, &ns), vec!["169.254.169.254/32"]);
        // The router goes (its namespace stays until the L3 reconciler removes it): haproxy,
        // address and files go.
        clean_pass(&mut r, &model(false));
        assert!(procs.running().is_empty());
        assert!(lo_addrs(&net, &ns).is_empty());
        assert!(!dir.join("metadata").join(&ns).exists());
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_haproxy_that_exits_after_start_is_a_failure_naming_its_log() {
        let dir = tmpdir("x");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), settings(&dir, false));
        let m = model(true);
        let ns = crate::l3::desired::router_ns(R);
        net.add_netns(&ns).unwrap();
        net.add_device(Some(&ns), LO, None);
        procs.exit_after_next_start();
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
        let log = dir.join("metadata").join(&ns).join("haproxy.log");
        assert_eq!(
            p.failures[0].error.to_string(),
            format!("haproxy: exited after start (log: {})", log.display())
        );
        // Its configuration logs to that file through descriptor 9.
        let cfg = fs::read_to_string(&dir.join("metadata").join(&ns).join("haproxy.cfg")).unwrap();
        assert!(cfg.contains("log fd@9 "), "{cfg}");
        // Next pass: started again, and running.
        clean_pass(&mut r, &m);
        assert_eq!(procs.running().len(), 1);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn isolated_network_gets_a_haproxy_in_its_dhcp_namespace() {
        let dir = tmpdir("n");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let ns = names::dhcp_ns(NET);
        net.add_netns(&ns).unwrap();
        net.add_device(Some(&ns), LO, None);
        // Without enable_isolated_metadata: nothing.
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), settings(&dir, false));
        r.reconcile(&model(false), &mut Pass::default());
        assert!(procs.running().is_empty());
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), settings(&dir, true));
        clean_pass(&mut r, &model(false));
        assert_eq!(procs.running().len(), 1);
        assert_eq!(lo_addrs(&net, &ns), vec!["169.254.169.254/32"]);
        let cfg = fs::read_to_string(&dir.join("metadata").join(&ns).join("haproxy.cfg")).unwrap();
        assert!(cfg.contains(&format!("set-header X-Neutron-Network-ID {NET}")));
        // A router interface at the gateway: not isolated any more; the router's namespace
        // serves it (not built in this test) and the DHCP one stops.
        clean_pass(&mut r, &model(true));
        assert!(procs.running().is_empty());
        assert!(lo_addrs(&net, &ns).is_empty());
        // force_metadata: served even when routed.
        let mut s = settings(&dir, false);
        s.cfg.force = true;
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), s);
        r.reconcile(&model(true), &mut Pass::default());
        assert_eq!(procs.running().len(), 1);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn stale_haproxy_is_swept_and_strangers_are_left_alone() {
        let dir = tmpdir("s");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        // Ours from a previous run (its namespace already gone), and another agent's
        // namespace with the metadata address but no directory of ours.
        let stale = dir.join("metadata").join("qrouter-gone");
        fs::create_dir_all(&stale).unwrap();
        let argv: Vec<String> = [
            "haproxy",
            "-f",
            &stale.join("haproxy.cfg").display().to_string(),
            "-p",
            &stale.join("pid").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        procs.start(None, &argv, None).unwrap();
        net.add_netns("qrouter-other").unwrap();
        net.add_device(Some("qrouter-other"), LO, None);
        net.add_addr(Some("qrouter-other"), LO, "169.254.169.254/32")
            .unwrap();
        let mut s = settings(&dir, false);
        s.cfg.routers = false;
        let mut r = MetadataProxies::new(net.clone(), procs.clone(), s);
        let mut p = Pass {
            startup: true,
            ..Pass::default()
        };
        r.reconcile(&HostModel::default(), &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert!(procs.running().is_empty());
        assert!(!stale.exists());
        assert_eq!(lo_addrs(&net, "qrouter-other"), vec!["169.254.169.254/32"]);
        fs::remove_dir(&dir).unwrap();
    }
}
