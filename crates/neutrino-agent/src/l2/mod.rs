//! L2 reconciler: Linux bridges, VXLAN (with l2population), flat and VLAN uplinks, and the
//! attachment of instance devices — what Neutron's `neutron-linuxbridge-agent` does.
//!
//! Owns, in the host's namespace: `brq<net>` bridges, `vxlan-<vni>` devices, the VXLAN
//! devices' remote FDB entries (`dst` set) and permanent neighbour entries, the master/up/MTU
//! of `tap<port>` devices of ports bound here, VLAN sub-interfaces it creates; and the ports'
//! ACTIVE/DOWN status reports. [`desired`] renders what should exist (pure); [`reconcile`]
//! observes and applies the difference.
//!
//! Never touches a device without our prefixes except to enslave a mapped physical
//! interface to its bridge; never deletes taps (they belong to the instance/hypervisor, or to
//! the DHCP reconciler); never flushes a bridge or an FDB to rebuild it.

pub mod desired;
pub mod reconcile;

pub use desired::{DesiredL2, L2Settings, render};
pub use reconcile::L2;
