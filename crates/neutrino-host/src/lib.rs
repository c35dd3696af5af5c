//! neutrino-host: the only crate of neutrino that touches the operating system.
//!
//! Owns every interaction with the Linux host the agent and `neutrino probe` need: links
//! (bridges, VXLAN, veth, VLAN sub-interfaces), addresses, bridge FDB and neighbour entries,
//! named network namespaces ([`net`]), supervised daemons such as dnsmasq ([`procs`]), and
//! atomic file writes ([`fs`]). Each facility is a trait with one real implementation and an
//! in-memory fake ([`fake`]) that unit tests of the reconcilers use instead of a host.
//!
//! The real implementations drive iproute2 (`ip`, `bridge`) with argument vectors (never a
//! shell), reading its JSON output (`-j`); see `docs/decisions/0003-host-access-via-iproute2.md`
//! for why not netlink sockets yet. Namespaced operations use `ip -n NS` / `ip netns exec`,
//! so no thread of this process ever calls `setns`.
//!
//! This crate must never decide *what* to build: it offers operations and observations;
//! policy (names, desired state, what to delete) lives in `neutrino-agent`. It must never
//! touch an object it was not asked to by name.

pub mod exec;
pub mod fake;
pub mod fs;
pub mod monitor;
pub mod nat;
pub mod net;
pub mod nft;
pub mod procs;

pub use exec::HostError;
pub use net::{FdbEntry, IpNet, Link, LinkChange, Neigh, Net, Netns, VxlanInfo, VxlanSpec};
pub use procs::{Daemon, ProcessManager, Procs, RealProcs, Signal};

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const IFNAMSIZ: usize = 15;

/// A list of errors from an operation that keeps going past failures (teardown).
#[derive(Debug, thiserror::Error)]
#[error("{} error(s): {}", .0.len(), join(.0))]
pub struct HostErrorList(pub Vec<HostError>);

fn join(errs: &[HostError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
