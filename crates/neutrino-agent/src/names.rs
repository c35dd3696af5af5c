//! Names of the objects the agent creates on the host, as Neutron names them (operators'
//! habits and tooling carry over): `brq` + 11 characters of the network id, `tap`/`ns-` + 11
//! characters of the port id, `vxlan-<vni>`, namespaces `qdhcp-<network id>`.
//!
//! Every name fits IFNAMSIZ (15). The prefixes are how the agent recognises its own objects:
//! it must never touch a device or namespace without one of them.

/// Prefix of per-network bridges.
pub const BRIDGE_PREFIX: &str = "brq";
/// Prefix of VXLAN devices.
pub const VXLAN_PREFIX: &str = "vxlan-";
/// Prefix of instance-side devices on the host.
pub const TAP_PREFIX: &str = "tap";
/// Prefix of the DHCP port's device inside its namespace.
pub const NS_DEV_PREFIX: &str = "ns-";
/// Prefix of DHCP namespaces.
pub const DHCP_NS_PREFIX: &str = "qdhcp-";
/// Characters of an id kept in device names (Neutron's `RESOURCE_ID_LENGTH`).
pub const ID_CHARS: usize = 11;

fn short(id: &str) -> &str {
    id.get(..ID_CHARS).unwrap_or(id)
}

/// `brq` + 11 characters of the network id.
pub fn bridge(network_id: &str) -> String {
    format!("{BRIDGE_PREFIX}{}", short(network_id))
}

/// `tap` + 11 characters of the port id.
pub fn tap(port_id: &str) -> String {
    format!("{TAP_PREFIX}{}", short(port_id))
}

/// `ns-` + 11 characters of the port id.
pub fn ns_dev(port_id: &str) -> String {
    format!("{NS_DEV_PREFIX}{}", short(port_id))
}

/// `vxlan-<vni>`.
pub fn vxlan(vni: u32) -> String {
    format!("{VXLAN_PREFIX}{vni}")
}

/// `qdhcp-<network id>`.
pub fn dhcp_ns(network_id: &str) -> String {
    format!("{DHCP_NS_PREFIX}{network_id}")
}

/// Neutron LB's VLAN sub-interface name: `<interface>.<vid>`, the interface part shortened
/// so the whole fits 15 characters.
pub fn vlan_subif(iface: &str, vid: u16) -> String {
    let suffix = format!(".{vid}");
    let keep = crate::names::IFNAMSIZ.saturating_sub(suffix.len());
    format!(
        "{}{suffix}",
        iface.get(..keep.min(iface.len())).unwrap_or(iface)
    )
}

const IFNAMSIZ: usize = neutrino_host::IFNAMSIZ;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz() {
        let id = "3f2a9c4e-1b2d-4c5e-9f00-aabbccddeeff";
        assert_eq!(bridge(id), "brq3f2a9c4e-1b");
        assert_eq!(tap(id), "tap3f2a9c4e-1b");
        assert_eq!(ns_dev(id), "ns-3f2a9c4e-1b");
        assert_eq!(vxlan(16_777_215), "vxlan-16777215");
        for n in [
            bridge(id),
            tap(id),
            ns_dev(id),
            vxlan(16_777_215),
            vlan_subif("enp0s31f6long", 4094),
        ] {
            assert!(n.len() <= 15, "{n}");
        }
        assert_eq!(vlan_subif("eth1", 100), "eth1.100");
        assert_eq!(dhcp_ns(id), format!("qdhcp-{id}"));
    }
}
