//! neutrino-agent: the host agent (`neutrino agent`) and `neutrino probe`.
//!
//! Owns what runs on a host: the configuration of the agent roles ([`config`]), the HTTP
//! client of the identity API, network API and agent sync protocol ([`client`]), the typed
//! view of the host state the server sends ([`model`]), the reconcile loop ([`agent`],
//! [`runner`]) and its reconcilers — L2 (Linux bridge, VXLAN, l2population: [`l2`]) and DHCP
//! (dnsmasq per network: [`dhcp`]); more (security groups with nftables, L3) slot in as
//! further [`runner::Reconciler`]s. The metadata proxy and its haproxies ([`metadata`]).
//! Also the probe tool ([`probe`], [`clouds`]).
//!
//! Every host operation goes through `neutrino-host`'s traits; this crate never spawns a
//! process or touches a device itself. It never decides what the cloud should be: that is
//! the server's state; the agent only makes the host match it and reports what it did.

pub mod agent;
pub mod client;
pub mod clouds;
pub mod config;
pub mod dhcp;
pub mod l2;
pub mod l3;
pub mod metadata;
pub mod model;
pub mod names;
pub mod probe;
pub mod runner;
pub mod secgroups;

pub use agent::{AgentError, run};
pub use config::AgentConfig;
