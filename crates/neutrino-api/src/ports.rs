//! `/v2.0/ports` (stub: being implemented).
use axum::Router;
use neutrino_core::db::Kind;

use crate::ApiState;

/// Storage of ports.
pub const KIND: Kind = Kind {
    resource: "port",
    table: "ports",
    columns: &["network_id", "mac_address", "device_id", "device_owner"],
};

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
}
