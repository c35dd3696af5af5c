//! Observe DHCP namespaces, devices, files and dnsmasq processes; apply the difference.
//!
//! A network's DHCP server counts as loaded (its ports reported dhcp-ready) only once its
//! dnsmasq said, in its log, that it read every one of its files after the last start or
//! SIGHUP; a dnsmasq that could not, or exited, is a failure of the pass naming the reason,
//! and is signalled and checked again on the next pass until it succeeds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use neutrino_host::procs::{DaemonAction, LogWatch};
use neutrino_host::{Daemon, HostError, LinkChange, Net, ProcessManager, Procs, fs};

use super::desired::{DhcpInstance, DhcpSettings, render};
use crate::model::HostModel;
use crate::names;
use crate::runner::{Pass, Reconciler};

const NAME: &str = "dhcp";
const DNSMASQ: &str = "dnsmasq";
/// How long dnsmasq has to log that it read its files after a start or SIGHUP (it does so
/// within milliseconds; this bounds a stuck one).
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The DHCP reconciler.
pub struct Dhcp {
    net: Arc<dyn Net>,
    procs: Arc<dyn Procs>,
    settings: DhcpSettings,
    /// Networks whose dnsmasq was seen reading its current files.
    loaded: BTreeSet<String>,
}

/// What dnsmasq logged (`text`) about reading `files`: `Some(Ok)` once it read each of them,
/// `Some(Err(reasons))` once it said something about each and could not read some, `None`
/// while it has not said (with `so_far`: the failures logged so far, if any). dnsmasq 2.90
/// logs `read FILE` (`read FILE - N names` for `--addn-hosts`), `cannot read FILE: ERROR`
/// and `failed to load names from FILE: ERROR`.
fn judge_load(text: &str, files: &[&Path], so_far: bool) -> Option<Result<(), String>> {
    let mut read = vec![false; files.len()];
    let mut failed: Vec<Option<String>> = vec![None; files.len()];
    for line in text.lines() {
        for (i, f) in files.iter().enumerate() {
            let f = f.display().to_string();
            let ends_at = |pat: &str| {
                line.find(pat).is_some_and(|at| {
                    matches!(
                        line[at + pat.len()..].chars().next(),
                        None | Some(' ' | ':')
                    )
                })
            };
            if ends_at(&format!("cannot read {f}"))
                || ends_at(&format!("failed to load names from {f}"))
            {
                let reason = line.split_once("]: ").map_or(line, |(_, m)| m);
                failed[i] = Some(reason.trim().to_string());
            } else if ends_at(&format!(": read {f}")) {
                read[i] = true;
            }
        }
    }
    let reasons: Vec<String> = failed.iter().flatten().cloned().collect();
    let all_said = read.iter().zip(&failed).all(|(r, f)| *r || f.is_some());
    if reasons.is_empty() {
        all_said.then_some(Ok(()))
    } else if all_said || so_far {
        Some(Err(reasons.join("; ")))
    } else {
        None
    }
}

fn step(pass: &mut Pass, object: &str, r: Result<(), HostError>) -> bool {
    pass.step(NAME, object, r)
}

impl Dhcp {
    /// A reconciler acting through `net` and `procs`.
    pub fn new(net: Arc<dyn Net>, procs: Arc<dyn Procs>, settings: DhcpSettings) -> Self {
        Dhcp {
            net,
            procs,
            settings,
            loaded: BTreeSet::new(),
        }
    }

    /// Waits until dnsmasq logged (after `watch` began) that it read its files; a failure
    /// names what it could not read, or that it exited.
    fn verify_loaded(&self, d: &DhcpInstance, watch: &LogWatch) -> Result<(), HostError> {
        let files = [
            d.dir.join("addn_hosts"),
            d.dir.join("host"),
            d.dir.join("opts"),
        ];
        let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
        let pm = ProcessManager::new(&*self.procs);
        let alive = || pm.running(DNSMASQ, &d.dir.join("pid")).is_some();
        let fail = |reason: String| HostError::Daemon {
            program: DNSMASQ.into(),
            reason,
            log: d.log.clone(),
        };
        let verdict = watch
            .wait(LOAD_TIMEOUT, |t| judge_load(t, &files, false))
            .or_else(|| judge_load(&watch.since(), &files, true));
        match verdict {
            Some(Ok(())) if alive() => Ok(()),
            Some(Err(reason)) => Err(fail(reason)),
            _ if !alive() => Err(fail("exited after start or reload".into())),
            _ => Err(fail(format!(
                "did not log reading its files within {}s",
                LOAD_TIMEOUT.as_secs()
            ))),
        }
    }

    fn ensure(&mut self, d: &DhcpInstance, have_ns: bool, pass: &mut Pass) {
        let net = &*self.net;
        let ns = Some(d.netns.as_str());
        // The directory first: it is the record that this namespace is ours (the sweep
        // only ever removes namespaces with a directory in our state path).
        if let Err(e) = fs::create_dir_all(&d.dir) {
            return pass.fail(NAME, &d.network_id, e);
        }
        if !have_ns {
            tracing::info!(network_id = %d.network_id, netns = %d.netns, "creating DHCP namespace");
            if !step(pass, &d.netns, net.add_netns(&d.netns)) {
                return;
            }
        }
        let links = match net.links(ns) {
            Ok(l) => l,
            Err(e) if have_ns => {
                // A name without a namespace behind it (a stale /run/netns entry, e.g. from
                // a process whose mount tree was private): recreate it.
                tracing::warn!(netns = %d.netns, error = %e, "unusable DHCP namespace: recreating");
                if !step(pass, &d.netns, net.del_netns(&d.netns))
                    || !step(pass, &d.netns, net.add_netns(&d.netns))
                {
                    return;
                }
                match net.links(ns) {
                    Ok(l) => l,
                    Err(e) => return pass.fail(NAME, &d.netns, e),
                }
            }
            Err(e) => return pass.fail(NAME, &d.netns, e),
        };
        let dev = links.iter().find(|l| l.name == d.ns_dev);
        if dev.is_none() {
            // A host-side half left from an interrupted creation would block the pair.
            let host_half = net
                .links(None)
                .map(|l| l.iter().any(|x| x.name == d.tap))
                .unwrap_or(false);
            if host_half {
                step(pass, &d.tap, net.del_link(None, &d.tap));
            }
            if !step(pass, &d.ns_dev, net.add_veth(None, &d.tap, &d.ns_dev, ns)) {
                return;
            }
        }
        let mut ch = Vec::new();
        if dev.is_none_or(|l| l.mac != d.mac) {
            ch.push(LinkChange::Mac(d.mac.clone()));
        }
        if d.mtu > 0 && dev.is_none_or(|l| l.mtu != d.mtu) {
            ch.push(LinkChange::Mtu(d.mtu));
        }
        if dev.is_none_or(|l| !l.up) {
            ch.push(LinkChange::Up);
        }
        if !ch.is_empty() {
            step(pass, &d.ns_dev, net.set_link(ns, &d.ns_dev, &ch));
        }
        match net.addrs(ns, &d.ns_dev) {
            Ok(have) => {
                let have: BTreeSet<String> = have.into_iter().collect();
                let want: BTreeSet<String> = d.addrs.iter().cloned().collect();
                for a in want.difference(&have) {
                    step(pass, &d.ns_dev, net.add_addr(ns, &d.ns_dev, a));
                }
                for a in have.difference(&want) {
                    step(pass, &d.ns_dev, net.del_addr(ns, &d.ns_dev, a));
                }
            }
            Err(e) => pass.fail(NAME, &d.ns_dev, e),
        }
        let mut changed = false;
        for (file, content) in [
            ("host", &d.files.host),
            ("addn_hosts", &d.files.addn_hosts),
            ("opts", &d.files.opts),
        ] {
            match fs::write_if_changed(&d.dir.join(file), content) {
                Ok(c) => changed |= c,
                Err(e) => pass.fail(NAME, &d.network_id, e),
            }
        }
        let daemon = Daemon {
            netns: Some(d.netns.clone()),
            argv: d.argv.clone(),
            pid_file: d.dir.join("pid"),
            log: Some(d.log.clone()),
        };
        // Not yet seen loading its files (agent start, or it failed before): signal it again.
        let reload = changed || !self.loaded.contains(&d.network_id);
        let watch = LogWatch::at_end(&d.log);
        let action = ProcessManager::new(&*self.procs).ensure(&daemon, reload);
        match action {
            Ok(DaemonAction::Unchanged) => return,
            Ok(a) => {
                pass.changes += 1;
                tracing::info!(network_id = %d.network_id, action = ?a, "dnsmasq");
            }
            Err(e) => {
                self.loaded.remove(&d.network_id);
                return pass.fail(NAME, &d.network_id, e);
            }
        }
        match self.verify_loaded(d, &watch) {
            Ok(()) => {
                self.loaded.insert(d.network_id.clone());
            }
            Err(e) => {
                self.loaded.remove(&d.network_id);
                pass.fail(NAME, &d.network_id, e);
            }
        }
    }

    /// Tears down one network's DHCP server, keeping going past failures.
    fn remove(&mut self, network_id: &str, pass: &mut Pass) {
        tracing::info!(%network_id, startup = pass.startup, "removing DHCP server");
        self.loaded.remove(network_id);
        let dir = self.settings.dir.join(network_id);
        let netns = names::dhcp_ns(network_id);
        let pm = ProcessManager::new(&*self.procs);
        step(pass, network_id, pm.stop(DNSMASQ, &dir.join("pid")));
        // Any other dnsmasq left in the namespace (pid file lost) goes too.
        match self.procs.netns_pids(&netns) {
            Ok(pids) => {
                for pid in pids {
                    let is_dnsmasq = self
                        .procs
                        .cmdline(pid)
                        .and_then(|c| c.first().cloned())
                        .is_some_and(|p| p.rsplit('/').next() == Some(DNSMASQ));
                    if is_dnsmasq {
                        step(pass, &netns, pm.terminate(pid));
                    }
                }
            }
            Err(e) => pass.fail(NAME, &netns, e),
        }
        step(pass, &netns, self.net.del_netns(&netns));
        step(pass, network_id, fs::remove_dir(&dir));
    }
}

impl Reconciler for Dhcp {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reconcile(&mut self, desired: &HostModel, pass: &mut Pass) {
        let want = render(desired, &self.settings);
        let netns: BTreeMap<String, bool> = match self.net.netns_list(None) {
            Ok(l) => l.into_iter().map(|n| (n.name, n.id.is_some())).collect(),
            Err(e) => return pass.fail(NAME, "netns", e),
        };
        for d in want.values() {
            let before = pass.failures.len();
            self.ensure(d, netns.contains_key(&d.netns), pass);
            if pass.failures.len() == before {
                // dnsmasq holds (or was just signalled to reload) these entries.
                pass.dhcp_ready.extend(d.ready.iter().cloned());
            }
        }
        // Sweep what is ours and unwanted: networks with a directory in our state path.
        // Another agent's `qdhcp-` namespaces on the same machine (test hosts, a second
        // all-in-one) have no directory here and are never touched.
        let dirs: BTreeSet<String> = match fs::list_dir(&self.settings.dir) {
            Ok(d) => d.into_iter().filter(|n| !n.ends_with(".tmp")).collect(),
            Err(e) => {
                pass.fail(NAME, self.settings.dir.display().to_string(), e);
                BTreeSet::new()
            }
        };
        let stale: BTreeSet<String> = dirs
            .iter()
            .filter(|n| !want.contains_key(*n))
            .cloned()
            .collect();
        if pass.startup {
            for (name, linked) in &netns {
                if let Some(id) = name.strip_prefix(names::DHCP_NS_PREFIX)
                    && *linked
                    && !want.contains_key(id)
                    && !dirs.contains(id)
                {
                    tracing::warn!(netns = %name, "DHCP namespace linked to this host but not recorded as ours: left alone");
                }
            }
        }
        for id in stale {
            self.remove(&id, pass);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::desired::tests::{DPORT, NET, model, settings};
    use neutrino_host::fake::{FakeNet, FakeProcs};
    use neutrino_host::procs::Signal;

    fn tmpdir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("neutrino-dhcp-{tag}-{}", std::process::id()))
    }

    #[test]
    fn builds_namespace_port_and_dnsmasq_then_reloads_only_on_change() {
        let dir = tmpdir("a");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let mut r = Dhcp::new(net.clone(), procs.clone(), settings(&dir));
        let mut m = model();
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        let ns = names::dhcp_ns(NET);
        let dev = net.link(Some(&ns), &names::ns_dev(DPORT)).unwrap();
        assert_eq!(dev.mac, "fa:16:3e:00:00:02");
        assert!(dev.up);
        assert_eq!(dev.mtu, 1450);
        assert_eq!(
            net.addrs(Some(&ns), &dev.name).unwrap(),
            vec!["10.0.0.2/24"]
        );
        assert!(net.link(None, &names::tap(DPORT)).is_some());
        assert_eq!(procs.running().len(), 1);
        assert!(
            fs::read_to_string(&dir.join(NET).join("host"))
                .unwrap()
                .contains("10.0.0.5")
        );
        // The instance's entry is loaded: it is reported dhcp-ready (not the DHCP port).
        assert_eq!(
            p.dhcp_ready,
            vec![(
                "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".to_string(),
                "fa:16:3e:00:00:05 10.0.0.5".to_string()
            )]
        );
        // Nothing changed: no host operation, no signal.
        net.clear_ops();
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert!(net.ops().is_empty(), "{:?}", net.ops());
        assert!(procs.signals().is_empty());
        // A port's extra option changed: files rewritten, SIGHUP, no restart.
        m.dhcp.get_mut(NET).unwrap().ports[1].extra_dhcp_opts[0].value = "10.0.0.8".into();
        r.reconcile(&m, &mut Pass::default());
        assert_eq!(procs.signals(), vec![Signal::Hup]);
        // dnsmasq died: respawned.
        procs.kill_all();
        r.reconcile(&m, &mut Pass::default());
        assert_eq!(procs.running().len(), 1);
        // The network leaves the host: everything goes.
        let mut p = Pass::default();
        r.reconcile(&HostModel::default(), &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert!(net.netns_names().is_empty());
        assert!(net.link(None, &names::tap(DPORT)).is_none());
        assert!(procs.running().is_empty());
        assert!(!dir.join(NET).exists());
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn judges_what_dnsmasq_logged_about_its_files() {
        let files = [Path::new("/s/n/addn_hosts"), Path::new("/s/n/host")];
        // As dnsmasq 2.90 logs it, to its --log-facility file.
        let ok = "Dec  8 00:09:46 dnsmasq[13364]: read /s/n/addn_hosts - 0 names\n\
                  Dec  8 00:09:46 dnsmasq-dhcp[13364]: read /s/n/host\n";
        assert_eq!(judge_load(ok, &files, false), Some(Ok(())));
        assert_eq!(judge_load(&ok[..60], &files, false), None);
        let denied = "Dec  8 00:09:43 dnsmasq[13154]: read /s/n/addn_hosts - 0 names\n\
                      Dec  8 00:09:43 dnsmasq[13154]: cannot read /s/n/host: Permission denied\n";
        assert_eq!(
            judge_load(denied, &files, false),
            Some(Err("cannot read /s/n/host: Permission denied".into()))
        );
        // Every file it could not read is named, once it said something about each.
        let names = "dnsmasq[1]: failed to load names from /s/n/addn_hosts: Permission denied\n";
        assert_eq!(judge_load(names, &files, false), None);
        assert_eq!(
            judge_load(names, &files, true),
            Some(Err(
                "failed to load names from /s/n/addn_hosts: Permission denied".into()
            ))
        );
        let both = format!("{names}dnsmasq[1]: cannot read /s/n/host: Permission denied\n");
        assert_eq!(
            judge_load(&both, &files, false),
            Some(Err(
                "failed to load names from /s/n/addn_hosts: Permission denied; \
                 cannot read /s/n/host: Permission denied"
                    .into()
            ))
        );
        // Another file whose name starts with ours is not ours.
        let other = "dnsmasq[1]: read /s/n/addn_hosts - 1 names\ndnsmasq[1]: read /s/n/hostx\n";
        assert_eq!(judge_load(other, &files, false), None);
    }

    #[test]
    fn a_dnsmasq_that_cannot_read_its_files_is_a_failure_and_nothing_is_ready() {
        let dir = tmpdir("c");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let mut r = Dhcp::new(net.clone(), procs.clone(), settings(&dir));
        let m = model();
        let host = dir.join(NET).join("host");
        // dnsmasq runs as a user that cannot read its hosts file (the state directory in
        // /root and dnsmasq dropped to nobody).
        procs.unreadable(&host, true);
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert!(p.dhcp_ready.is_empty(), "{:?}", p.dhcp_ready);
        assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
        let msg = p.failures[0].error.to_string();
        assert!(
            msg.contains(&format!(
                "cannot read {}: Permission denied",
                host.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("dnsmasq.log"), "{msg}");
        // Nothing changed on the host, but it is not loaded: signalled and checked again.
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert_eq!(p.failures.len(), 1, "{:?}", p.failures);
        assert_eq!(procs.signals(), vec![Signal::Hup]);
        // Readable again: the next pass sees it load, reports the port, then stays quiet.
        procs.unreadable(&host, false);
        let mut p = Pass::default();
        r.reconcile(&m, &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert_eq!(p.dhcp_ready.len(), 1);
        r.reconcile(&m, &mut Pass::default());
        assert_eq!(procs.signals(), vec![Signal::Hup, Signal::Hup]);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_dnsmasq_that_cannot_start_is_a_failure() {
        let dir = tmpdir("d");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        let mut r = Dhcp::new(net.clone(), procs.clone(), settings(&dir));
        procs.fail_next_start("dnsmasq: bad option at line 1 of /etc/x.conf");
        let mut p = Pass::default();
        r.reconcile(&model(), &mut p);
        assert!(p.dhcp_ready.is_empty());
        // The reason, not the command line (that is in the log named here).
        assert_eq!(
            p.failures[0].error.to_string(),
            format!(
                "dnsmasq: failed to start (exit status: 2): dnsmasq: bad option at line 1 of \
                 /etc/x.conf (log: {})",
                dir.join(NET).join("dnsmasq.log").display()
            )
        );
        let mut p = Pass::default();
        r.reconcile(&model(), &mut p);
        assert!(p.failures.is_empty(), "{:?}", p.failures);
        assert_eq!(p.dhcp_ready.len(), 1);
        fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn leaves_other_hosts_namespaces_alone() {
        let dir = tmpdir("b");
        let net = Arc::new(FakeNet::new());
        let procs = Arc::new(FakeProcs::default());
        // Another agent's DHCP namespaces on the same machine: no directory of ours, whether
        // linked to our namespace or not.
        net.add_netns("qdhcp-other").unwrap();
        net.add_netns("qdhcp-linked").unwrap();
        net.add_veth(None, "tapx", "ns-x", Some("qdhcp-linked"))
            .unwrap();
        let mut r = Dhcp::new(net.clone(), procs, settings(&dir));
        let mut p = Pass {
            startup: true,
            ..Pass::default()
        };
        r.reconcile(&HostModel::default(), &mut p);
        assert_eq!(
            net.netns_names(),
            vec!["qdhcp-linked".to_string(), "qdhcp-other".to_string()]
        );
        fs::remove_dir(&dir).unwrap();
    }
}
