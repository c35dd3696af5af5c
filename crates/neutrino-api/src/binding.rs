//! Port binding (stub: being implemented).
use neutrino_core::ApiResult;
use neutrino_core::db::Obj;

use crate::ApiState;

/// Binds (or unbinds) `port` to its `binding:host_id` through the mechanism drivers, setting
/// `binding:vif_type`, `binding:vif_details` and status; called inside the port's
/// transaction on create and whenever binding attributes change.
pub async fn bind_port(
    _state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    _net: &Obj,
    _port: &mut Obj,
) -> ApiResult<()> {
    Ok(())
}
