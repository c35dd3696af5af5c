//! IP address management (stub: being implemented).
//!
//! Interface contract used by ports.rs (keep these signatures):
//! - `Hints`: per-subnet allocation hints (Default + Send + Sync).
//! - `allocate_any(state, tx, subnet, network_id, port_id) -> ApiResult<String>`: inserts an
//!   `ip_allocations` row for a free address of the subnet's allocation pools and returns it;
//!   409 `IpAddressGenerationFailure` when none is left.
//! - `allocate_specific(state, tx, subnet, network_id, port_id, ip) -> ApiResult<String>`:
//!   validates that `ip` belongs to the subnet (400 `InvalidIpForSubnet` otherwise), inserts it;
//!   409 `IpAddressAlreadyAllocated` when taken. Returns the canonical text form.
//! - `release_port(tx, port_id)`: deletes all allocations of a port.
//! - `release_ip(tx, network_id, ip)`: deletes one allocation.
use neutrino_core::db::Obj;
use neutrino_core::{ApiError, ApiResult};

use crate::ApiState;

/// Per-subnet hints of where to look for the next free address.
#[derive(Default, Debug)]
pub struct Hints {}

/// Allocates any free address of `subnet` to `port_id`.
pub async fn allocate_any(
    _state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    _subnet: &Obj,
    _network_id: &str,
    _port_id: &str,
) -> ApiResult<String> {
    Err(ApiError::internal("ipam not implemented"))
}

/// Allocates a requested address of `subnet` to `port_id`.
pub async fn allocate_specific(
    _state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    _subnet: &Obj,
    _network_id: &str,
    _port_id: &str,
    _ip: &str,
) -> ApiResult<String> {
    Err(ApiError::internal("ipam not implemented"))
}

/// Frees every address of a port.
pub async fn release_port(tx: &mut sqlx::AnyConnection, port_id: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM ip_allocations WHERE port_id = $1")
        .bind(port_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Frees one address.
pub async fn release_ip(tx: &mut sqlx::AnyConnection, network_id: &str, ip: &str) -> ApiResult<()> {
    sqlx::query("DELETE FROM ip_allocations WHERE network_id = $1 AND ip_address = $2")
        .bind(network_id)
        .bind(ip)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
