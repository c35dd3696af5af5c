//! Security groups enforced with nftables (the Linux bridge agent's `firewall_driver =
//! nftables`).
//!
//! [`SgModel`] reads what enforcement needs from the host state (ports with their groups,
//! MAC, fixed IPs, allowed address pairs, `port_security_enabled`; groups with rules and
//! member addresses; the addresses of the address groups rules name; the host's networks,
//! each in its own conntrack zone). [`render`] turns it into named nftables objects — a pure function —
//! and [`SecGroups`] applies the difference from what it applied last in one `nft -f`
//! transaction. The table layout and why it takes two tables: [`render`].

mod reconcile;
mod render;

pub use crate::model::secgroups::{
    Direction, Remote, SgGroup, SgModel, SgPort, SgRule, parse_port,
};
pub use reconcile::{SecGroups, SecGroupsDisabled};
pub use render::{
    BRIDGE_TABLE, FIRST_ZONE, INET_TABLE, MARK_EST, MARK_INV, Rendered, ZONES_MAP,
    address_group_set, assign_zones, bridges, delta_script, full_script, group_chain, group_set,
    render, render_zoned,
};

#[cfg(test)]
mod tests;

/// The firewall reconciler `[securitygroup]` asks for: nftables, or the one that only
/// removes our tables (`firewall_driver = noop` or `enable_security_group = false`).
pub fn reconciler(cfg: &crate::config::AgentConfig) -> Box<dyn crate::runner::Reconciler> {
    let nft: std::sync::Arc<dyn neutrino_host::nft::Nft> =
        std::sync::Arc::new(neutrino_host::nft::RealNft);
    if cfg.enable_security_group && cfg.firewall_driver != "noop" {
        if cfg.firewall_driver != "nftables" {
            tracing::warn!(firewall_driver = %cfg.firewall_driver, "unknown firewall driver; using nftables");
        }
        Box::new(SecGroups::new(nft))
    } else {
        Box::new(SecGroupsDisabled::new(nft))
    }
}
