//! Security groups (stub: being implemented).
use neutrino_core::db::{Kind, Obj};
use neutrino_core::{ApiResult, Context};

use crate::ApiState;

/// Storage of security groups.
pub const KIND: Kind = Kind {
    resource: "security_group",
    table: "security_groups",
    columns: &[],
};

/// Fills and checks a port's `security_groups` inside the port's transaction: the
/// project's default group when `given` is false and port security is on; otherwise every
/// named group must exist and be usable by the port's project.
pub async fn prepare_port(
    _state: &ApiState,
    _tx: &mut sqlx::AnyConnection,
    _ctx: &Context,
    _port: &mut Obj,
    _given: bool,
) -> ApiResult<()> {
    Ok(())
}
