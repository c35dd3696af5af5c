//! neutrino-api: the Neutron v2.0 REST API.
//!
//! Owns the HTTP surface on the network port: routing, authentication of each request (through
//! the [`Authenticate`] hook the binary supplies), request ids, attribute validation, policy,
//! and the resource services (networks, subnets, subnet pools, ports, quotas, tags, IP
//! availability, RBAC policies, address scopes, address groups, routers, floating IPs,
//! instance data, ...), plus the metadata service under `/metadata`, which authenticates
//! by the metadata proxy's signature instead of a token. Handlers parse at the edge, call a service, and map the result; every write
//! is one store transaction. This crate must never talk to hosts or agents directly: it commits
//! intent and the change log carries it onward.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use neutrino_core::config::Config;
use neutrino_core::{ApiError, Context, Db};

pub mod address_groups;
pub mod address_scopes;
pub mod agent_api;
pub mod agents;
pub mod attrs;
pub mod availability_zones;
pub mod binding;
pub mod common;
pub mod edge;
pub mod extensions;
pub mod floatingips;
pub mod ip_availability;
pub mod ipam;
pub mod l3_scheduler;
pub mod listing;
pub mod metadata;
pub mod metadata_service;
pub mod ml2;
pub mod networks;
pub mod periodic;
pub mod policy;
pub mod port_forwardings;
pub mod ports;
pub mod provisioning;
pub mod quotas;
pub mod rbac;
pub mod routers;
pub mod scheduler;
pub mod scheduling;
pub mod scheduling_api;
pub mod security_group_rules;
pub mod security_groups;
pub mod segments;
pub mod subnetpools;
pub mod subnets;
pub mod tags;

/// Future returned by the authentication hook.
pub type AuthFuture = Pin<Box<dyn Future<Output = Result<Context, ApiError>> + Send>>;

/// Validates a token (embedded identity or external Keystone) into a [`Context`].
pub type Authenticate = Arc<dyn Fn(String) -> AuthFuture + Send + Sync>;

/// Shared state of the API handlers.
#[derive(Clone)]
pub struct ApiState {
    /// The store.
    pub db: Db,
    /// Server configuration.
    pub cfg: Arc<Config>,
    /// Policy rules.
    pub policy: Arc<policy::Policy>,
    /// Token validation.
    pub auth: Authenticate,
    /// Per-subnet allocation hints (an optimisation; correctness comes from constraints).
    pub ipam_hints: Arc<ipam::Hints>,
    /// ML2 options (type drivers, ranges, MTU) and the segment allocation cursors.
    pub ml2: Arc<ml2::Ml2Config>,
    /// Set when the server is stopping: long-polls answer at once instead of holding the
    /// graceful shutdown for their whole timeout.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl ApiState {
    /// Builds the state. A malformed `[ml2*]` option is logged and Neutron's ML2 defaults are
    /// used instead; servers should use [`ApiState::try_new`] (or check
    /// [`ml2::Ml2Config::from_ini`] first) to refuse to start instead.
    pub fn new(db: Db, cfg: Config, policy: policy::Policy, auth: Authenticate) -> Self {
        let ml2 = ml2::Ml2Config::from_ini(&cfg.ini).unwrap_or_else(|e| {
            tracing::error!(error = %e, "invalid ML2 configuration; using ML2 defaults");
            ml2::Ml2Config::default()
        });
        Self::with_ml2(db, cfg, policy, auth, ml2)
    }

    /// Builds the state, failing on a malformed `[ml2*]` option.
    pub fn try_new(
        db: Db,
        cfg: Config,
        policy: policy::Policy,
        auth: Authenticate,
    ) -> Result<Self, ml2::Ml2ConfigError> {
        let ml2 = ml2::Ml2Config::from_ini(&cfg.ini)?;
        Ok(Self::with_ml2(db, cfg, policy, auth, ml2))
    }

    fn with_ml2(
        db: Db,
        cfg: Config,
        policy: policy::Policy,
        auth: Authenticate,
        ml2: ml2::Ml2Config,
    ) -> Self {
        ApiState {
            db,
            cfg: Arc::new(cfg),
            policy: Arc::new(policy),
            auth,
            ipam_hints: Arc::new(ipam::Hints::default()),
            ml2: Arc::new(ml2),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// The server is stopping: open long-polls end now (with no changes).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Follows [`ApiState::stop`].
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }
}

/// The complete router for the network API port.
pub fn router(state: ApiState) -> Router {
    let state_for_metadata = state.clone();
    let v2 = Router::new()
        .merge(extensions::routes())
        .merge(networks::routes())
        .merge(subnets::routes())
        .merge(subnetpools::routes())
        .merge(ports::routes())
        .merge(quotas::routes())
        .merge(tags::routes())
        .merge(ip_availability::routes())
        .merge(segments::routes())
        .merge(security_groups::routes())
        .merge(rbac::routes())
        .merge(address_scopes::routes())
        .merge(address_groups::routes())
        .merge(agents::routes())
        .merge(scheduling_api::routes())
        .merge(availability_zones::routes())
        .merge(routers::routes())
        .merge(floatingips::routes())
        .merge(port_forwardings::routes())
        .merge(metadata::routes())
        // The agent sync protocol shares the port and the authentication.
        .merge(agent_api::routes())
        .route("/v2.0", get(v2_index))
        .route("/v2.0/", get(v2_index))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state);
    let edge_cfg = edge::EdgeConfig::from_ini(&state_for_metadata.cfg.ini).unwrap_or_else(|e| {
        tracing::error!(error = %e, "invalid edge configuration; using the defaults");
        edge::EdgeConfig::default()
    });
    Router::new()
        .route("/", get(versions))
        // The metadata service authenticates by the proxy's signature, not by token.
        .merge(metadata_service::routes(state_for_metadata))
        .merge(v2)
        // The edge has read the body, bounded; the extractors must not apply another limit.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(edge_cfg, edge::edge))
}

/// `GET /`: the version document (no authentication, as Neutron).
async fn versions(req: Request) -> Response {
    let base = common::base_url(req.headers());
    axum::Json(serde_json::json!({"versions": [{
        "id": "v2.0",
        "status": "CURRENT",
        "links": [{"href": format!("{base}/v2.0/"), "rel": "self"}],
    }]}))
    .into_response()
}

/// `GET /v2.0`: the resource index.
async fn v2_index(req: Request) -> Response {
    let base = common::base_url(req.headers());
    let resources: Vec<_> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("subnetpool", "subnetpools"),
        ("port", "ports"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
    ]
    .iter()
    .map(|(name, coll)| {
        serde_json::json!({"name": name, "collection": coll,
            "links": [{"href": format!("{base}/v2.0/{coll}"), "rel": "self"}]})
    })
    .collect();
    axum::Json(serde_json::json!({"resources": resources})).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "HTTPNotFound",
        "The resource could not be found.",
    )
}

/// The request id, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Resolves `X-Auth-Token` into a [`Context`] extension, or answers 401.
async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let Some(token) = token else {
        return ApiError::unauthorized().into_response();
    };
    match (state.auth)(token).await {
        Ok(mut ctx) => {
            if let Some(RequestId(id)) = req.extensions().get::<RequestId>() {
                ctx.request_id = id.clone();
            }
            req.extensions_mut().insert(ctx);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}
