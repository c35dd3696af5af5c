//! L3 reconciler: legacy routers in `qrouter-<id>` namespaces — what Neutron's
//! `neutron-l3-agent` (agent_mode legacy, Linux bridge interface driver) does.
//!
//! Owns, per router scheduled to this host: the namespace (recorded by a directory
//! `<state_path>/l3/<router>/` created before it, so only our namespaces are ever removed),
//! `qr-`/`qg-` devices (veth peers of `tap<port>` host ends enslaved to the networks'
//! `brq` bridges), their addresses (fixed IPs; floating IPs as /32 on `qg-`), the default
//! route via the external subnet's gateway and the router's extra routes,
//! `net.ipv4.ip_forward=1`, and one nftables table `ip neutrino-l3` (SNAT to the gateway
//! address, per floating IP DNAT+SNAT, no NAT between the router's own subnets) replaced
//! atomically by one `nft -f` transaction; gratuitous ARP when a floating IP appears; the
//! router ports' ACTIVE reports and floating IPs' ACTIVE/DOWN reports. Deleting a router
//! deletes its namespace (the veths go with it).
//!
//! [`crate::model::l3`] reads the server's router documents, [`desired`] renders (pure), [`reconcile`]
//! observes and applies the difference. IPv4 only in this slice.

pub mod desired;
pub mod reconcile;

pub use crate::model::l3::Router;
pub use desired::{DesiredRouter, render};
pub use reconcile::{L3, L3Settings};
