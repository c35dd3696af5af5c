//! `/v2.0/subnetpools` (stub: being implemented).
use axum::Router;
use neutrino_core::db::Kind;

use crate::ApiState;

/// Storage of subnet pools.
pub const KIND: Kind = Kind {
    resource: "subnetpool",
    table: "subnetpools",
    columns: &[],
};

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
}
