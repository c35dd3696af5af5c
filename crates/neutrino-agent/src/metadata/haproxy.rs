//! Desired metadata haproxies: which namespaces get one, their configuration and command
//! line — rendered purely from the host model.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{METADATA_IP, METADATA_PORT, NETWORK_ID_HEADER, ROUTER_ID_HEADER};
use crate::config::MetadataConfig;
use crate::dhcp::DhcpSettings;
use crate::model::{HostModel, Port, Subnet};
use crate::names;

/// Owners of router ports: a subnet with one at its gateway is routed, not isolated.
const ROUTER_OWNERS: &[&str] = &[
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
];

/// Where the metadata haproxies run and where their files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataSettings {
    /// The proxy's settings (which namespaces, the socket haproxy forwards to).
    pub cfg: MetadataConfig,
    /// `<state_path>/metadata`.
    pub dir: PathBuf,
    /// The DHCP role's settings (to know which `qdhcp-` namespaces exist), when on.
    pub dhcp: Option<DhcpSettings>,
}

/// What a haproxy stamps on the requests it forwards.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Via {
    /// Requests through this router (`qrouter-` namespace).
    Router(String),
    /// Requests from this isolated network (`qdhcp-` namespace).
    Network(String),
}

/// One haproxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Haproxy {
    /// The namespace it runs in (also the name of its directory).
    pub netns: String,
    /// Router or network.
    pub via: Via,
    /// `<state_path>/metadata/<netns>`.
    pub dir: PathBuf,
    /// Its configuration file's content.
    pub config: String,
    /// Its command line (daemonises, writes `<dir>/pid`).
    pub argv: Vec<String>,
}

impl Haproxy {
    /// `<dir>/haproxy.cfg`.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }
    /// `<dir>/pid`.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("pid")
    }
    /// `<dir>/haproxy.log`: its start-up output and its log (`log fd@9`: the file is open as
    /// that descriptor in haproxy, which keeps it after daemonising; no syslog needed).
    pub fn log_file(&self) -> PathBuf {
        self.dir.join("haproxy.log")
    }
}

/// haproxy's configuration: listen on the metadata address, drop whatever identity the
/// instance claims, say where the request came from, forward to the proxy's socket.
pub fn config(via: &Via, socket: &Path) -> String {
    let (header, id) = match via {
        Via::Router(id) => (ROUTER_ID_HEADER, id),
        Via::Network(id) => (NETWORK_ID_HEADER, id),
    };
    let mut c = String::new();
    let _ = writeln!(
        c,
        "# Written by the neutrino agent (metadata proxy); do not edit."
    );
    c.push_str("global\n    maxconn 1024\n    daemon\n");
    let _ = writeln!(
        c,
        "    log fd@{} format iso daemon info\n",
        neutrino_host::procs::LOG_FD
    );
    c.push_str(
        "defaults\n    log global\n    option httplog\n    mode http\n    \
         option http-server-close\n    option forwardfor\n    \
         retries 3\n    timeout http-request 30s\n    timeout connect 30s\n    \
         timeout client 32s\n    timeout server 32s\n    timeout http-keep-alive 30s\n\n\
         listen listener\n",
    );
    let _ = writeln!(c, "    bind {METADATA_IP}:{METADATA_PORT}");
    // The instance controls every header it sends: only ours may reach the proxy.
    // `option forwardfor` appends the real client address after these rules.
    for h in [
        "X-Instance-ID",
        "X-Instance-ID-Signature",
        "X-Tenant-ID",
        "X-Forwarded-For",
    ] {
        let _ = writeln!(c, "    http-request del-header {h}");
    }
    let _ = writeln!(c, "    http-request del-header X-Neutron- -m beg");
    let _ = writeln!(c, "    http-request set-header {header} {id}");
    let _ = writeln!(c, "    server metadata {}", socket.display());
    c
}

fn haproxy(netns: String, via: Via, s: &MetadataSettings) -> Haproxy {
    let dir = s.dir.join(&netns);
    let config = config(&via, &s.cfg.socket);
    let argv = vec![
        "haproxy".to_string(),
        "-f".to_string(),
        dir.join("haproxy.cfg").display().to_string(),
        "-p".to_string(),
        dir.join("pid").display().to_string(),
    ];
    Haproxy {
        netns,
        via,
        dir,
        config,
        argv,
    }
}

/// An id we put into a configuration file and a path: a UUID-like token only.
fn plain(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Whether an IPv4 DHCP subnet has no router port at its gateway (Neutron's isolated
/// subnet): instances there reach metadata through the DHCP namespace.
fn isolated(subnet: &Subnet, ports: &[Port]) -> bool {
    subnet.enable_dhcp
        && subnet.cidr.addr().is_ipv4()
        && !ports.iter().any(|p| {
            ROUTER_OWNERS.contains(&p.device_owner.as_str())
                && p.fixed_ips.iter().any(|(sid, ip)| {
                    sid == &subnet.id
                        && (subnet.gateway_ip.is_none() || subnet.gateway_ip == Some(*ip))
                })
        })
}

/// Every haproxy this host should run, by namespace.
pub fn render(m: &HostModel, s: &MetadataSettings) -> BTreeMap<String, Haproxy> {
    let mut out = BTreeMap::new();
    if s.cfg.routers {
        for r in &m.routers {
            if r.admin_state_up && plain(&r.id) {
                let ns = crate::l3::desired::router_ns(&r.id);
                out.insert(ns.clone(), haproxy(ns, Via::Router(r.id.clone()), s));
            }
        }
    }
    if (s.cfg.isolated || s.cfg.force)
        && let Some(dhcp) = &s.dhcp
    {
        // Only networks whose DHCP namespace the DHCP reconciler builds.
        for id in crate::dhcp::render(m, dhcp).keys() {
            let (Some(net), Some(d)) = (m.networks.get(id), m.dhcp.get(id)) else {
                continue;
            };
            let wanted = s.cfg.force || net.subnets.iter().any(|sub| isolated(sub, &d.ports));
            if wanted && plain(id) {
                let ns = names::dhcp_ns(id);
                out.insert(ns.clone(), haproxy(ns, Via::Network(id.clone()), s));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_strips_identity_and_stamps_the_router() {
        let c = config(
            &Via::Router("r-1".into()),
            Path::new("/var/lib/neutrino/metadata_proxy"),
        );
        assert!(c.contains("    bind 169.254.169.254:80\n"), "{c}");
        for h in [
            "X-Instance-ID\n",
            "X-Instance-ID-Signature\n",
            "X-Tenant-ID\n",
            "X-Forwarded-For\n",
            "X-Neutron- -m beg\n",
        ] {
            assert!(
                c.contains(&format!("http-request del-header {h}")),
                "{h}: {c}"
            );
        }
        // The stamp comes after the deletion of whatever the instance sent.
        let del = c.find("del-header X-Neutron-").unwrap();
        let set = c.find("set-header X-Neutron-Router-ID r-1\n").unwrap();
        assert!(del < set);
        assert!(c.contains("server metadata /var/lib/neutrino/metadata_proxy\n"));
        assert!(c.contains("option forwardfor"));
        let c = config(&Via::Network("n-1".into()), Path::new("/s"));
        assert!(c.contains("set-header X-Neutron-Network-ID n-1\n"), "{c}");
    }

    #[test]
    fn only_plain_ids() {
        assert!(plain("7a1b2c3d-0000-4000-8000-000000000001"));
        assert!(!plain("a b"));
        assert!(!plain("a\nserver x"));
        assert!(!plain(""));
    }
}
