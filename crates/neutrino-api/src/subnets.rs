//! `/v2.0/subnets` (stub: being implemented).
use axum::Router;
use neutrino_core::db::Kind;

use crate::ApiState;

/// Storage of subnets.
pub const KIND: Kind = Kind {
    resource: "subnet",
    table: "subnets",
    columns: &["network_id", "subnetpool_id", "cidr"],
};

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
}
