//! DHCP reconciler: one `qdhcp-<network>` namespace and one supervised dnsmasq per network
//! scheduled to this host's DHCP agent — what Neutron's `neutron-dhcp-agent` does with its
//! `Dnsmasq` driver.
//!
//! Owns: `qdhcp-*` namespaces recorded in our state directory (created before them), the
//! `tap<port>`↔`ns-<port>` veth of the network's `network:dhcp` port (MAC and addresses of
//! the port inside), the per-network directory `<state_path>/dhcp/<network>/` (dnsmasq's
//! `host`, `opts`, `addn_hosts`, `leases`, `pid`, `dnsmasq.log`), and the dnsmasq processes,
//! which run as the agent's user (so they read those files whatever the state directory's
//! mode). [`desired`] renders everything (pure, snapshot-tested); [`reconcile`] observes and
//! applies, and reports a network's ports dhcp-ready only once its dnsmasq logged reading
//! its files.
//!
//! dnsmasq re-reads its hosts and options files on SIGHUP, so a port change costs a file
//! write and a signal; only a change of its command line (a subnet added, the MTU changed)
//! restarts it. It is never restarted on agent restart (it is adopted from its pid file).
//! The host side of the veth is attached to the bridge by the L2 reconciler like any port.
//! Never touches a namespace we cannot show is ours.

pub mod desired;
pub mod reconcile;

pub use crate::model::dhcp::{ServerDhcp, server_settings};
pub use desired::{DhcpInstance, DhcpSettings, render};
pub use reconcile::Dhcp;
