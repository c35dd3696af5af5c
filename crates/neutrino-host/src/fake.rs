//! In-memory fakes of the host facilities, for unit tests of reconcilers and of the process
//! manager (fakes, not mocks: they keep state and behave like the host, including idempotent
//! creations and veth pairs dying together).
//!
//! [`FakeNet`] records every mutating operation ([`FakeNet::ops`]) so a test can assert that a
//! second reconcile pass changes nothing, and can be told to fail an operation
//! ([`FakeNet::fail_on`]). This module must never touch the real host.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use crate::HostError;
use crate::net::{
    FdbEntry, Link, LinkChange, Neigh, Net, Netns, VxlanInfo, VxlanSpec, check_ifname,
};
use crate::procs::{Procs, Signal};

type NsKey = Option<String>;

#[derive(Debug, Default)]
struct NsState {
    links: BTreeMap<String, Link>,
    addrs: BTreeMap<String, BTreeSet<String>>,
    fdb: BTreeMap<String, BTreeSet<FdbEntry>>,
    neigh: BTreeMap<String, BTreeMap<String, Neigh>>,
}

#[derive(Debug, Default)]
struct NetState {
    ns: BTreeMap<NsKey, NsState>,
    /// Named namespaces and whether the host namespace has an id for them.
    named: BTreeMap<String, Option<i32>>,
    /// veth pairs: (ns, name) ↔ (ns, name).
    peers: BTreeMap<(NsKey, String), (NsKey, String)>,
    ops: Vec<String>,
    fail_on: Option<String>,
    next_nsid: i32,
}

/// An in-memory [`Net`].
#[derive(Debug, Default)]
pub struct FakeNet {
    st: Mutex<NetState>,
}

fn key(ns: Option<&str>) -> NsKey {
    ns.map(str::to_string)
}

impl FakeNet {
    /// An empty host (no links at all).
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, NetState> {
        // A test that panicked while holding the lock has failed already; keep going.
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a plain device (a physical interface, an instance's tap) to a namespace.
    pub fn add_device(&self, ns: Option<&str>, name: &str, kind: Option<&str>) {
        let mut st = self.lock();
        st.ns.entry(key(ns)).or_default().links.insert(
            name.to_string(),
            Link {
                name: name.to_string(),
                kind: kind.map(str::to_string),
                mtu: 1500,
                mac: "02:00:00:00:00:01".into(),
                ..Link::default()
            },
        );
    }

    /// Removes a device as if it vanished (an instance stopped).
    pub fn remove_device(&self, ns: Option<&str>, name: &str) {
        let mut st = self.lock();
        remove_link(&mut st, &key(ns), name);
    }

    /// Mutating operations so far, as short strings (`add_bridge brqX`, ...).
    pub fn ops(&self) -> Vec<String> {
        self.lock().ops.clone()
    }

    /// Forgets the recorded operations.
    pub fn clear_ops(&self) {
        self.lock().ops.clear();
    }

    /// Makes the next operation whose description starts with `prefix` fail.
    pub fn fail_on(&self, prefix: &str) {
        self.lock().fail_on = Some(prefix.to_string());
    }

    /// A link, if present.
    pub fn link(&self, ns: Option<&str>, name: &str) -> Option<Link> {
        self.lock().ns.get(&key(ns))?.links.get(name).cloned()
    }

    /// Names of the named namespaces.
    pub fn netns_names(&self) -> Vec<String> {
        self.lock().named.keys().cloned().collect()
    }

    fn op(&self, desc: String) -> Result<MutexGuard<'_, NetState>, HostError> {
        let mut st = self.lock();
        if st
            .fail_on
            .as_ref()
            .is_some_and(|p| desc.starts_with(p.as_str()))
        {
            st.fail_on = None;
            return Err(HostError::Invalid(format!("injected failure: {desc}")));
        }
        st.ops.push(desc);
        Ok(st)
    }
}

fn remove_link(st: &mut NetState, ns: &NsKey, name: &str) {
    if let Some(n) = st.ns.get_mut(ns) {
        n.links.remove(name);
        n.addrs.remove(name);
        n.fdb.remove(name);
        n.neigh.remove(name);
        for l in n.links.values_mut() {
            if l.master.as_deref() == Some(name) {
                l.master = None;
            }
        }
    }
    if let Some((pns, pname)) = st.peers.remove(&(ns.clone(), name.to_string())) {
        st.peers.remove(&(pns.clone(), pname.clone()));
        if let Some(n) = st.ns.get_mut(&pns) {
            n.links.remove(&pname);
            n.addrs.remove(&pname);
        }
    }
}

fn new_link(name: &str, kind: &str) -> Link {
    Link {
        name: name.to_string(),
        kind: Some(kind.to_string()),
        mtu: 1500,
        mac: "02:00:00:00:00:02".into(),
        ..Link::default()
    }
}

fn check_ns(st: &NetState, ns: Option<&str>) -> Result<(), HostError> {
    match ns {
        Some(n) if !st.named.contains_key(n) => {
            Err(HostError::Invalid(format!("no such namespace {n}")))
        }
        _ => Ok(()),
    }
}

impl Net for FakeNet {
    fn links(&self, ns: Option<&str>) -> Result<Vec<Link>, HostError> {
        let st = self.lock();
        check_ns(&st, ns)?;
        Ok(st
            .ns
            .get(&key(ns))
            .map(|n| n.links.values().cloned().collect())
            .unwrap_or_default())
    }

    fn add_bridge(&self, ns: Option<&str>, name: &str) -> Result<(), HostError> {
        check_ifname(name)?;
        let mut st = self.op(format!("add_bridge {name}"))?;
        check_ns(&st, ns)?;
        st.ns
            .entry(key(ns))
            .or_default()
            .links
            .entry(name.to_string())
            .or_insert_with(|| new_link(name, "bridge"));
        Ok(())
    }

    fn add_vxlan(&self, ns: Option<&str>, s: &VxlanSpec) -> Result<(), HostError> {
        check_ifname(&s.name)?;
        let mut st = self.op(format!("add_vxlan {} {}", s.name, s.vni))?;
        check_ns(&st, ns)?;
        let mut l = new_link(&s.name, "vxlan");
        l.vxlan = Some(VxlanInfo {
            id: s.vni,
            local: Some(s.local.clone()),
            port: s.dstport,
            proxy: s.proxy,
        });
        st.ns
            .entry(key(ns))
            .or_default()
            .links
            .entry(s.name.clone())
            .or_insert(l);
        Ok(())
    }

    fn add_vlan(
        &self,
        _ns: Option<&str>,
        _parent: &str,
        name: &str,
        _vid: u16,
    ) -> Result<(), HostError> {
        check_ifname(name)?;
        Err(HostError::Invalid(
            "the fake host, like this kernel, has no 802.1q".into(),
        ))
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
        let mut st = self.op(format!("add_veth {name} {peer}"))?;
        check_ns(&st, ns)?;
        check_ns(&st, peer_ns)?;
        if st
            .ns
            .get(&key(ns))
            .is_some_and(|n| n.links.contains_key(name))
        {
            return Ok(());
        }
        let mut a = new_link(name, "veth");
        if peer_ns != ns
            && let Some(p) = peer_ns
        {
            let next = st.next_nsid;
            let id = *st
                .named
                .entry(p.to_string())
                .or_default()
                .get_or_insert(next);
            if id == next {
                st.next_nsid += 1;
            }
            a.peer_netnsid = Some(id);
        }
        st.ns
            .entry(key(ns))
            .or_default()
            .links
            .insert(name.into(), a);
        st.ns
            .entry(key(peer_ns))
            .or_default()
            .links
            .insert(peer.into(), new_link(peer, "veth"));
        st.peers
            .insert((key(ns), name.into()), (key(peer_ns), peer.into()));
        st.peers
            .insert((key(peer_ns), peer.into()), (key(ns), name.into()));
        Ok(())
    }

    fn set_link(
        &self,
        ns: Option<&str>,
        name: &str,
        changes: &[LinkChange],
    ) -> Result<(), HostError> {
        let mut st = self.op(format!("set_link {name} {changes:?}"))?;
        let n = st.ns.entry(key(ns)).or_default();
        if let Some(LinkChange::Master(b)) =
            changes.iter().find(|c| matches!(c, LinkChange::Master(_)))
            && !n.links.contains_key(b)
        {
            return Err(HostError::Invalid(format!("no such bridge {b}")));
        }
        let l = n
            .links
            .get_mut(name)
            .ok_or_else(|| HostError::Invalid(format!("no such device {name}")))?;
        for c in changes {
            match c {
                LinkChange::Up => l.up = true,
                LinkChange::Down => l.up = false,
                LinkChange::Master(b) => l.master = Some(b.clone()),
                LinkChange::Mtu(m) => l.mtu = *m,
                LinkChange::Mac(m) => l.mac = m.to_ascii_lowercase(),
            }
        }
        Ok(())
    }

    fn del_link(&self, ns: Option<&str>, name: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("del_link {name}"))?;
        remove_link(&mut st, &key(ns), name);
        Ok(())
    }

    fn addrs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<String>, HostError> {
        let st = self.lock();
        Ok(st
            .ns
            .get(&key(ns))
            .and_then(|n| n.addrs.get(dev))
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn add_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("add_addr {dev} {cidr}"))?;
        st.ns
            .entry(key(ns))
            .or_default()
            .addrs
            .entry(dev.into())
            .or_default()
            .insert(cidr.into());
        Ok(())
    }

    fn del_addr(&self, ns: Option<&str>, dev: &str, cidr: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("del_addr {dev} {cidr}"))?;
        if let Some(a) = st.ns.entry(key(ns)).or_default().addrs.get_mut(dev) {
            a.remove(cidr);
        }
        Ok(())
    }

    fn fdb(&self, ns: Option<&str>, dev: &str) -> Result<Vec<FdbEntry>, HostError> {
        let st = self.lock();
        Ok(st
            .ns
            .get(&key(ns))
            .and_then(|n| n.fdb.get(dev))
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default())
    }

    fn add_fdb(
        &self,
        ns: Option<&str>,
        dev: &str,
        e: &FdbEntry,
        append: bool,
    ) -> Result<(), HostError> {
        let mut st = self.op(format!("add_fdb {dev} {} {:?}", e.mac, e.dst))?;
        let set = st
            .ns
            .entry(key(ns))
            .or_default()
            .fdb
            .entry(dev.into())
            .or_default();
        if !append {
            set.retain(|x| x.mac != e.mac);
        }
        set.insert(e.clone());
        Ok(())
    }

    fn del_fdb(&self, ns: Option<&str>, dev: &str, e: &FdbEntry) -> Result<(), HostError> {
        let mut st = self.op(format!("del_fdb {dev} {} {:?}", e.mac, e.dst))?;
        if let Some(set) = st.ns.entry(key(ns)).or_default().fdb.get_mut(dev) {
            set.remove(e);
        }
        Ok(())
    }

    fn neighs(&self, ns: Option<&str>, dev: &str) -> Result<Vec<Neigh>, HostError> {
        let st = self.lock();
        Ok(st
            .ns
            .get(&key(ns))
            .and_then(|n| n.neigh.get(dev))
            .map(|a| a.values().cloned().collect())
            .unwrap_or_default())
    }

    fn replace_neigh(
        &self,
        ns: Option<&str>,
        dev: &str,
        ip: &str,
        mac: &str,
    ) -> Result<(), HostError> {
        let mut st = self.op(format!("replace_neigh {dev} {ip} {mac}"))?;
        st.ns
            .entry(key(ns))
            .or_default()
            .neigh
            .entry(dev.into())
            .or_default()
            .insert(
                ip.into(),
                Neigh {
                    ip: ip.into(),
                    mac: Some(mac.into()),
                    permanent: true,
                },
            );
        Ok(())
    }

    fn del_neigh(&self, ns: Option<&str>, dev: &str, ip: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("del_neigh {dev} {ip}"))?;
        if let Some(m) = st.ns.entry(key(ns)).or_default().neigh.get_mut(dev) {
            m.remove(ip);
        }
        Ok(())
    }

    fn netns_list(&self, ns: Option<&str>) -> Result<Vec<Netns>, HostError> {
        let st = self.lock();
        Ok(st
            .named
            .iter()
            .map(|(name, id)| Netns {
                name: name.clone(),
                id: if ns.is_none() { *id } else { None },
            })
            .collect())
    }

    fn add_netns(&self, name: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("add_netns {name}"))?;
        st.named.entry(name.into()).or_insert(None);
        let n = st.ns.entry(Some(name.into())).or_default();
        let mut lo = new_link("lo", "loopback");
        lo.up = true;
        n.links.insert("lo".into(), lo);
        Ok(())
    }

    fn del_netns(&self, name: &str) -> Result<(), HostError> {
        let mut st = self.op(format!("del_netns {name}"))?;
        let k = Some(name.to_string());
        let names: Vec<String> = st
            .ns
            .get(&k)
            .map(|n| n.links.keys().cloned().collect())
            .unwrap_or_default();
        for l in names {
            remove_link(&mut st, &k, &l);
        }
        st.ns.remove(&k);
        st.named.remove(name);
        Ok(())
    }
}

#[derive(Debug, Default)]
struct ProcState {
    next_pid: u32,
    procs: BTreeMap<u32, Vec<String>>,
    signals: Vec<Signal>,
    netns: BTreeMap<u32, Option<String>>,
    unreadable: BTreeSet<std::path::PathBuf>,
    fail_start: Option<String>,
    exit_after_start: bool,
}

/// Appends what dnsmasq logs when it (re)reads its files to its `--log-facility=` file:
/// `read FILE` or `cannot read FILE: ERROR` (`failed to load names from FILE: ERROR` for
/// `--addn-hosts`), as dnsmasq 2.90 words it.
fn dnsmasq_reads(argv: &[String], unreadable: &BTreeSet<std::path::PathBuf>) {
    use std::io::Write as _;
    if argv.first().map(|p| p.rsplit('/').next()) != Some(Some("dnsmasq")) {
        return;
    }
    let Some(log) = argv.iter().find_map(|a| a.strip_prefix("--log-facility=")) else {
        return;
    };
    let mut lines = String::new();
    for (opt, fail) in [
        ("--addn-hosts=", "failed to load names from"),
        ("--dhcp-hostsfile=", "cannot read"),
        ("--dhcp-optsfile=", "cannot read"),
    ] {
        for f in argv.iter().filter_map(|a| a.strip_prefix(opt)) {
            let denied = unreadable.contains(std::path::Path::new(f));
            match std::fs::read(f) {
                Ok(_) if !denied => lines.push_str(&format!("dnsmasq[1]: read {f}\n")),
                Ok(_) => lines.push_str(&format!("dnsmasq[1]: {fail} {f}: Permission denied\n")),
                Err(e) => lines.push_str(&format!("dnsmasq[1]: {fail} {f}: {e}\n")),
            }
        }
    }
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = file.write_all(lines.as_bytes());
    }
}

/// An in-memory [`Procs`]: started "daemons" write their `--pid-file=` like dnsmasq does
/// (or `-p`, like haproxy); a "dnsmasq" also logs reading its files, like the real one, on
/// start and on SIGHUP.
#[derive(Debug, Default)]
pub struct FakeProcs {
    st: Mutex<ProcState>,
}

impl FakeProcs {
    fn lock(&self) -> MutexGuard<'_, ProcState> {
        self.st
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every daemon dies (to test respawn).
    pub fn kill_all(&self) {
        self.lock().procs.clear();
    }

    /// Signals sent so far.
    pub fn signals(&self) -> Vec<Signal> {
        self.lock().signals.clone()
    }

    /// Command lines of the running processes.
    pub fn running(&self) -> Vec<Vec<String>> {
        self.lock().procs.values().cloned().collect()
    }

    /// Daemons cannot read `path` (as dnsmasq dropped to a user without access), or can
    /// again with `false`.
    pub fn unreadable(&self, path: &std::path::Path, yes: bool) {
        let mut st = self.lock();
        if yes {
            st.unreadable.insert(path.to_path_buf());
        } else {
            st.unreadable.remove(path);
        }
    }

    /// The next start fails with this message on stderr (once).
    pub fn fail_next_start(&self, stderr: &str) {
        self.lock().fail_start = Some(stderr.to_string());
    }

    /// The next daemon started exits right after it daemonised (pid file written, process
    /// gone), as one that cannot load its configuration.
    pub fn exit_after_next_start(&self) {
        self.lock().exit_after_start = true;
    }
}

impl Procs for FakeProcs {
    fn start(
        &self,
        netns: Option<&str>,
        argv: &[String],
        _log: Option<&std::path::Path>,
    ) -> Result<(), HostError> {
        let mut st = self.lock();
        if let Some(stderr) = st.fail_start.take() {
            return Err(HostError::Failed {
                cmd: argv.join(" "),
                status: "exit status: 2".into(),
                stderr,
            });
        }
        st.next_pid += 1;
        let pid = 100_000 + st.next_pid;
        // dnsmasq's `--pid-file=PATH`, haproxy's `-p PATH`.
        let dash_p = argv
            .windows(2)
            .find(|w| w[0] == "-p")
            .map(|w| w[1].as_str());
        if let Some(pf) = argv
            .iter()
            .find_map(|a| a.strip_prefix("--pid-file="))
            .or(dash_p)
        {
            crate::fs::write_atomic(std::path::Path::new(pf), &format!("{pid}\n"))?;
        }
        if std::mem::take(&mut st.exit_after_start) {
            return Ok(());
        }
        st.procs.insert(pid, argv.to_vec());
        st.netns.insert(pid, netns.map(str::to_string));
        dnsmasq_reads(argv, &st.unreadable);
        Ok(())
    }

    fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        self.lock().procs.get(&pid).cloned()
    }

    fn signal(&self, pid: u32, sig: Signal) -> Result<(), HostError> {
        let mut st = self.lock();
        st.signals.push(sig);
        if sig != Signal::Hup {
            st.procs.remove(&pid);
        } else if let Some(argv) = st.procs.get(&pid) {
            dnsmasq_reads(argv, &st.unreadable);
        }
        Ok(())
    }

    fn netns_pids(&self, netns: &str) -> Result<Vec<u32>, HostError> {
        let st = self.lock();
        Ok(st
            .netns
            .iter()
            .filter(|(pid, ns)| ns.as_deref() == Some(netns) && st.procs.contains_key(pid))
            .map(|(pid, _)| *pid)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_pairs_die_together_and_link_namespaces() {
        let net = FakeNet::new();
        net.add_netns("qdhcp-a").unwrap();
        net.add_veth(None, "tapa", "ns-a", Some("qdhcp-a")).unwrap();
        assert!(net.link(Some("qdhcp-a"), "ns-a").is_some());
        assert_eq!(net.netns_list(None).unwrap()[0].id, Some(0));
        net.del_netns("qdhcp-a").unwrap();
        assert!(net.link(None, "tapa").is_none());
    }

    #[test]
    fn injected_failures_happen_once() {
        let net = FakeNet::new();
        net.fail_on("add_bridge");
        assert!(net.add_bridge(None, "brq1").is_err());
        assert!(net.add_bridge(None, "brq1").is_ok());
    }
}
