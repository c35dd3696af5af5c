//! ML2: network segments from the operator's type drivers, provider attributes and MTU.
//!
//! Owns what a network's segments are: validating provider attributes given by admins,
//! allocating a segment for project networks from `[ml2] tenant_network_types`, releasing it
//! when the network goes, and computing the network MTU. Allocation is enforced unique by the
//! database. This module must never touch hosts.
//!
//! Current state: provider attributes are validated and stored as given; project networks get
//! no segment yet (type `local` semantics) and MTU is `global_physnet_mtu` minus the overlay
//! overhead of the given type.

use serde_json::Value;

use neutrino_core::db::Obj;
use neutrino_core::{ApiError, ApiResult};

use crate::ApiState;

const PROVIDER: [&str; 3] = [
    "provider:network_type",
    "provider:physical_network",
    "provider:segmentation_id",
];

/// Validates provider attributes, allocates the network's segment and sets `mtu`; called in
/// the creating transaction before the network row is inserted.
pub async fn prepare_network(
    state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    net: &mut Obj,
) -> ApiResult<()> {
    match net.get("provider:network_type").and_then(Value::as_str) {
        None => {
            if net.get("provider:physical_network").is_some_and(|v| !v.is_null())
                || net
                    .get("provider:segmentation_id")
                    .is_some_and(|v| !v.is_null())
            {
                return Err(ApiError::invalid_input("network_type required"));
            }
        }
        Some("local" | "flat" | "vlan" | "vxlan" | "gre" | "geneve") => {}
        Some(t) => {
            return Err(ApiError::invalid_input(format!(
                "network_type value '{t}' not supported"
            )));
        }
    }
    for p in PROVIDER {
        net.entry(p).or_insert(Value::Null);
    }
    if net.get("mtu").is_none_or(Value::is_null) {
        let base = state.cfg.global_physnet_mtu;
        let mtu = match net.get("provider:network_type").and_then(Value::as_str) {
            Some("vxlan") => base - 50,
            Some("gre") => base - 42,
            Some("geneve") => base - 58,
            _ => base,
        };
        net.insert("mtu".into(), Value::from(mtu));
    }
    Ok(())
}

/// Releases the network's segment allocations; called in the deleting transaction.
pub async fn release_network(
    _state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    _net: &Obj,
) -> ApiResult<()> {
    Ok(())
}
