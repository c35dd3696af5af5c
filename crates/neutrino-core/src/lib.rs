//! neutrino-core: the foundation every server-side crate builds on.
//!
//! Owns configuration parsing, the API error type, the SQL store and change log, the request
//! context, Neutron's list semantics, and the HTTP edge rules both ports share. It knows nothing about particular resources
//! (networks, ports, ...) and never talks to hosts.

pub mod config;
pub mod context;
pub mod db;
pub mod edge;
pub mod error;
pub mod list;

pub use context::Context;
pub use db::{Db, Obj};
pub use error::{ApiError, ApiResult};
