//! Metadata for instances: what Neutron's `neutron-metadata-agent` and the L3/DHCP agents'
//! metadata driver do.
//!
//! An instance asks `http://169.254.169.254/...`. The request reaches a haproxy inside the
//! router's `qrouter-` namespace (its default gateway) or, on an isolated network, inside
//! the `qdhcp-` namespace (option 121 routes the address to the DHCP port). haproxy strips
//! any identity headers the instance sent, stamps `X-Neutron-Router-ID` or
//! `X-Neutron-Network-ID` and `X-Forwarded-For`, and forwards to this agent's unix socket.
//! The [`proxy`] there asks the server which instance owns that address on that router or
//! network, signs the instance id with the shared secret and forwards the request to the
//! metadata service (neutrino's own `/metadata`, or Nova's), relaying its answer.
//!
//! Owns: the proxy's socket and HTTP server ([`proxy`]); per namespace, one supervised
//! haproxy, its configuration and log (`haproxy.log`, written through descriptor 9) under
//! `<state_path>/metadata/<namespace>/` and the address
//! `169.254.169.254/32` on the namespace's `lo` ([`reconcile`], rendered by [`haproxy`]).
//! Never creates or deletes a namespace (the L3 and DHCP reconcilers own them) and never
//! touches a haproxy or an address it has no directory for.

pub mod haproxy;
pub mod proxy;
pub mod reconcile;

pub use haproxy::MetadataSettings;
pub use reconcile::MetadataProxies;

/// The metadata service's address inside the namespaces.
pub const METADATA_IP: &str = "169.254.169.254";
/// The port haproxy listens on.
pub const METADATA_PORT: u16 = 80;
/// `X-Neutron-Router-ID`: the router a request came through.
pub const ROUTER_ID_HEADER: &str = "X-Neutron-Router-ID";
/// `X-Neutron-Network-ID`: the (isolated) network a request came from.
pub const NETWORK_ID_HEADER: &str = "X-Neutron-Network-ID";
