//! neutrino-core: the foundation every server-side crate builds on.
//!
//! Owns configuration parsing, the API error type, the SQL store and change log, the request
//! context, and Neutron's list semantics. It knows nothing about particular resources
//! (networks, ports, ...) and never talks to hosts.

pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod list;

pub use context::Context;
pub use db::{Db, Obj};
pub use error::{ApiError, ApiResult};
