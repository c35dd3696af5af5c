//! `/v2.0/network-ip-availabilities` (stub: being implemented).
use axum::Router;

use crate::ApiState;

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
}
