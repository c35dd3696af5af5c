//! `/v2.0/agents`: agents as API resources (Neutron's `agent` extension), and the agent
//! registry the binding, scheduling and sync modules read.
//!
//! Owns the `agents` table: one row per `(agent_type, host)` (a database constraint, as
//! Neutron's `uniq_agents0agent_type0host`), created or refreshed by heartbeats
//! ([`report`], called by `POST /agent/v1/report`). `alive` is computed, never stored: a
//! heartbeat within `[DEFAULT] agent_down_time` (Neutron's `is_agent_down`). Heartbeats only
//! touch columns; what hosts must react to (configuration, availability zone, admin state,
//! DHCP scheduling) bumps the agent's revision and is logged as an `agent` change, in the
//! same transaction.
//!
//! Policy is Neutron's: every agent call is `admin_only`. A non-admin listing gets an empty
//! list (Tempest's `test_agent_management_negative`), other calls `404` as for any resource
//! the caller may not see. This module must never talk to agents: it records what they say.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use neutrino_core::config::{ConfigError, Ini};
use neutrino_core::db::{self, Obj};
use neutrino_core::list::{ListQuery, Spec};
use neutrino_core::{ApiError, ApiResult, Context};
use neutrino_wire::{AgentReport, AgentStatus, agent_type};

use crate::attrs::{self, Attr, Default as D, Ty, attr};
use crate::{ApiState, common};

/// The resource name agents use in the change log.
pub const RESOURCE: &str = "agent";

/// Updatable agent attributes (neutron-lib `agent` definition: only these allow PUT).
const ATTRS: &[Attr] = &[
    attr("admin_state_up", false, true, Ty::Bool, D::None),
    attr("description", false, true, Ty::StrOrNull(255), D::None),
];

/// Read-only attributes of the agent resource (a PUT naming one is "read-only", not unknown).
const READ_ONLY: &[Attr] = &[
    attr("id", false, false, Ty::Any, D::None),
    attr("agent_type", false, false, Ty::Any, D::None),
    attr("binary", false, false, Ty::Any, D::None),
    attr("topic", false, false, Ty::Any, D::None),
    attr("host", false, false, Ty::Any, D::None),
    attr("created_at", false, false, Ty::Any, D::None),
    attr("started_at", false, false, Ty::Any, D::None),
    attr("heartbeat_timestamp", false, false, Ty::Any, D::None),
    attr("alive", false, false, Ty::Any, D::None),
    attr("configurations", false, false, Ty::Any, D::None),
    attr("availability_zone", false, false, Ty::Any, D::None),
];

/// Options read by the agent, scheduling and sync modules: (section, key), for the unknown
/// option report.
pub const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("DEFAULT", "agent_down_time"),
    ("DEFAULT", "dhcp_agents_per_network"),
    ("DEFAULT", "allow_automatic_dhcp_failover"),
    ("DEFAULT", "network_auto_schedule"),
    ("DEFAULT", "enable_new_agents"),
    ("DEFAULT", "default_availability_zones"),
    ("DEFAULT", "network_scheduler_driver"),
    ("DEFAULT", "dhcp_load_type"),
    ("securitygroup", "enable_security_group"),
    ("securitygroup", "firewall_driver"),
    ("neutrino", "change_log_retention_days"),
    ("neutrino", "agent_password"),
];

/// Agent-related options, with Neutron's names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `[DEFAULT] agent_down_time` (seconds, default 75): no heartbeat for this long and the
    /// agent is down (`alive: false`, `XXX` in the CLI).
    pub agent_down_time: i64,
    /// `[DEFAULT] dhcp_agents_per_network` (default 1).
    pub dhcp_agents_per_network: usize,
    /// `[DEFAULT] allow_automatic_dhcp_failover` (default true): move networks off DHCP
    /// agents dead for twice `agent_down_time`.
    pub allow_automatic_dhcp_failover: bool,
    /// `[DEFAULT] network_auto_schedule` (default true): schedule networks to DHCP agents
    /// automatically.
    pub network_auto_schedule: bool,
    /// `[DEFAULT] enable_new_agents` (default true): admin state of newly registered agents.
    pub enable_new_agents: bool,
    /// `[DEFAULT] default_availability_zones` (default empty): AZs used for a network
    /// without `availability_zone_hints`.
    pub default_availability_zones: Vec<String>,
    /// `[securitygroup] enable_security_group` (default true): `port_filter` in vif_details.
    pub enable_security_group: bool,
    /// `[neutrino] change_log_retention_days` (default 7; 0 keeps the change log forever):
    /// changes older than this are trimmed, and an agent further behind must resync.
    pub change_log_retention_days: i64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            agent_down_time: 75,
            dhcp_agents_per_network: 1,
            allow_automatic_dhcp_failover: true,
            network_auto_schedule: true,
            enable_new_agents: true,
            default_availability_zones: Vec::new(),
            enable_security_group: true,
            change_log_retention_days: 7,
        }
    }
}

/// A malformed agent option.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// The INI layer refused a value (not a number, not a boolean).
    #[error(transparent)]
    Ini(#[from] ConfigError),
    /// A value out of range.
    #[error("invalid value for [{section}] {key}: {reason}")]
    Range {
        /// INI section.
        section: &'static str,
        /// Option name.
        key: &'static str,
        /// Why.
        reason: &'static str,
    },
}

fn bad(section: &'static str, key: &'static str, reason: &'static str) -> AgentConfigError {
    AgentConfigError::Range {
        section,
        key,
        reason,
    }
}

impl AgentConfig {
    /// Reads the options; a malformed value is an error naming the option.
    pub fn from_ini(ini: &Ini) -> Result<AgentConfig, AgentConfigError> {
        let d = AgentConfig::default();
        let down = ini.int("DEFAULT", "agent_down_time", d.agent_down_time)?;
        if down < 1 {
            return Err(bad("DEFAULT", "agent_down_time", "must be at least 1"));
        }
        let per_net = ini.int("DEFAULT", "dhcp_agents_per_network", 1)?;
        let per_net = usize::try_from(per_net)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad("DEFAULT", "dhcp_agents_per_network", "must be at least 1"))?;
        let retention = ini.int("neutrino", "change_log_retention_days", 7)?;
        if retention < 0 {
            return Err(bad(
                "neutrino",
                "change_log_retention_days",
                "must not be negative",
            ));
        }
        Ok(AgentConfig {
            agent_down_time: down,
            dhcp_agents_per_network: per_net,
            allow_automatic_dhcp_failover: ini.boolean(
                "DEFAULT",
                "allow_automatic_dhcp_failover",
                true,
            )?,
            network_auto_schedule: ini.boolean("DEFAULT", "network_auto_schedule", true)?,
            enable_new_agents: ini.boolean("DEFAULT", "enable_new_agents", true)?,
            default_availability_zones: ini.list("DEFAULT", "default_availability_zones", &[]),
            enable_security_group: ini.boolean("securitygroup", "enable_security_group", true)?,
            change_log_retention_days: retention,
        })
    }

    /// Microseconds without a heartbeat after which an agent is down.
    pub fn down_after_us(&self) -> i64 {
        self.agent_down_time.saturating_mul(1_000_000)
    }
}

/// The agent options of a running server. They were validated at start-up
/// ([`AgentConfig::from_ini`] in the binary); a malformed value here falls back to Neutron's
/// defaults rather than failing requests.
pub fn config(st: &ApiState) -> AgentConfig {
    AgentConfig::from_ini(&st.cfg.ini).unwrap_or_default()
}

/// Current time in unix microseconds.
pub fn now_us() -> i64 {
    let ns = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Neutron's agent time format, `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn agent_time(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// One registered agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Agent id.
    pub id: String,
    /// Neutron agent type (`DHCP agent`, `Linux bridge agent`, ...).
    pub agent_type: String,
    /// Host it serves.
    pub host: String,
    /// Reported availability zone (DHCP and L3 agents).
    pub availability_zone: Option<String>,
    /// Admin state (`State` UP/DOWN in the CLI).
    pub admin_state_up: bool,
    /// First registration (unix µs).
    pub created_at: i64,
    /// Last report with `start_flag` (unix µs).
    pub started_at: i64,
    /// Last heartbeat (unix µs).
    pub heartbeat_at: i64,
    /// Revision of what hosts act on (not shown in the API).
    pub revision_number: i64,
    /// binary, topic, configurations, description, resource_versions.
    pub body: Obj,
}

const COLUMNS: &str = "id, agent_type, host, availability_zone, admin_state_up, created_at, \
                       started_at, heartbeat_at, revision_number, body";

impl Agent {
    fn from_row(r: &sqlx::any::AnyRow) -> ApiResult<Agent> {
        let body: String = r.try_get("body")?;
        let body = match serde_json::from_str::<Value>(&body)? {
            Value::Object(m) => m,
            _ => Obj::new(),
        };
        Ok(Agent {
            id: r.try_get("id")?,
            agent_type: r.try_get("agent_type")?,
            host: r.try_get("host")?,
            availability_zone: r.try_get("availability_zone")?,
            admin_state_up: r.try_get::<i64, _>("admin_state_up")? != 0,
            created_at: r.try_get("created_at")?,
            started_at: r.try_get("started_at")?,
            heartbeat_at: r.try_get("heartbeat_at")?,
            revision_number: r.try_get("revision_number")?,
            body,
        })
    }

    /// The reported `configurations` object.
    pub fn configurations(&self) -> Obj {
        match self.body.get("configurations") {
            Some(Value::Object(m)) => m.clone(),
            _ => Obj::new(),
        }
    }

    /// Heartbeat within `agent_down_time` of `now_us` (Neutron's `not is_agent_down`).
    pub fn is_alive(&self, now_us: i64, cfg: &AgentConfig) -> bool {
        now_us.saturating_sub(self.heartbeat_at) <= cfg.down_after_us()
    }

    /// The API document, as `GET /v2.0/agents/{id}` shows it.
    pub fn render(&self, now_us: i64, cfg: &AgentConfig) -> Obj {
        let mut o = Obj::new();
        o.insert("id".into(), json!(self.id));
        o.insert("agent_type".into(), json!(self.agent_type));
        o.insert(
            "binary".into(),
            self.body.get("binary").cloned().unwrap_or(Value::Null),
        );
        o.insert(
            "topic".into(),
            self.body.get("topic").cloned().unwrap_or(Value::Null),
        );
        o.insert("host".into(), json!(self.host));
        o.insert("admin_state_up".into(), json!(self.admin_state_up));
        o.insert("created_at".into(), json!(agent_time(self.created_at)));
        o.insert("started_at".into(), json!(agent_time(self.started_at)));
        o.insert(
            "heartbeat_timestamp".into(),
            json!(agent_time(self.heartbeat_at)),
        );
        o.insert("alive".into(), json!(self.is_alive(now_us, cfg)));
        o.insert(
            "configurations".into(),
            Value::Object(self.configurations()),
        );
        o.insert(
            "description".into(),
            self.body.get("description").cloned().unwrap_or(Value::Null),
        );
        o.insert(
            "availability_zone".into(),
            self.availability_zone
                .as_ref()
                .map(|z| json!(z))
                .unwrap_or(Value::Null),
        );
        // Neutron shows both; `resources_synced` is only set by agents that track it (OVN).
        o.insert("resources_synced".into(), Value::Null);
        o.insert(
            "resource_versions".into(),
            self.body
                .get("resource_versions")
                .cloned()
                .unwrap_or_else(|| json!({})),
        );
        o
    }
}

/// All agents, by id.
pub async fn list_all<'c, E>(ex: E) -> ApiResult<Vec<Agent>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM agents ORDER BY id"))
        .fetch_all(ex)
        .await?;
    rows.iter().map(Agent::from_row).collect()
}

/// One agent.
pub async fn get_agent<'c, E>(ex: E, id: &str) -> ApiResult<Option<Agent>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM agents WHERE id = $1"))
        .bind(id)
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(Agent::from_row).transpose()
}

/// The agents on `host`.
pub async fn on_host<'c, E>(ex: E, host: &str) -> ApiResult<Vec<Agent>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM agents WHERE host = $1 ORDER BY id"
    ))
    .bind(host)
    .fetch_all(ex)
    .await?;
    rows.iter().map(Agent::from_row).collect()
}

/// The agents of a type.
pub async fn of_type<'c, E>(ex: E, agent_type: &str) -> ApiResult<Vec<Agent>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM agents WHERE agent_type = $1 ORDER BY id"
    ))
    .bind(agent_type)
    .fetch_all(ex)
    .await?;
    rows.iter().map(Agent::from_row).collect()
}

/// Whether `agent_type` is an L2 agent (one whose `tunneling_ip` is a host's VTEP).
pub fn is_l2(agent_type: &str) -> bool {
    agent_type == agent_type::LINUXBRIDGE || agent_type == agent_type::OVS
}

/// Bumps the agent's revision and logs an `agent` change (op `update`), so its host (and,
/// for L2 agents, the hosts sharing networks with it) re-read what depends on it.
pub async fn touch(tx: &mut AnyConnection, agent_id: &str) -> ApiResult<()> {
    let rev: Option<i64> = sqlx::query_scalar(
        "UPDATE agents SET revision_number = revision_number + 1 WHERE id = $1 \
         RETURNING revision_number",
    )
    .bind(agent_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(rev) = rev {
        log_change(tx, agent_id, "update", rev).await?;
    }
    Ok(())
}

/// Appends an `agent` change to the store's change log (agents are not documents saved
/// through `db::save`, so they log themselves, in the caller's transaction).
pub async fn log_change(
    tx: &mut AnyConnection,
    agent_id: &str,
    op: &str,
    revision: i64,
) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO changes (resource, resource_id, op, revision_number, project_id, created_at) \
         VALUES ($1, $2, $3, $4, '', $5)",
    )
    .bind(RESOURCE)
    .bind(agent_id)
    .bind(op)
    .bind(revision)
    .bind(db::now())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn select_by_type_host(
    tx: &mut AnyConnection,
    st: &ApiState,
    agent_type: &str,
    host: &str,
) -> ApiResult<Option<Agent>> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM agents WHERE agent_type = $1 AND host = $2{}",
        st.db.for_update()
    ))
    .bind(agent_type)
    .bind(host)
    .fetch_optional(&mut *tx)
    .await?;
    row.as_ref().map(Agent::from_row).transpose()
}

fn bad_report(msg: &str) -> ApiError {
    ApiError::bad_request(format!("Invalid agent report: {msg}"))
}

/// Registers or refreshes an agent from its heartbeat (Neutron's `create_or_update_agent`),
/// inside the caller's transaction. Returns the agent after the report and how it was seen.
/// A DHCP agent that is new, revived or restarted gets the networks that lack DHCP agents
/// (Neutron's `auto_schedule_networks` on the agent's first sync).
pub async fn report(
    st: &ApiState,
    tx: &mut AnyConnection,
    r: &AgentReport,
    now_us: i64,
) -> ApiResult<(Agent, AgentStatus)> {
    for (name, v, max) in [
        ("host", &r.host, 255),
        ("agent_type", &r.agent_type, 255),
        ("binary", &r.binary, 255),
        ("topic", &r.topic, 255),
    ] {
        if v.is_empty() && name != "topic" {
            return Err(bad_report(&format!("'{name}' must not be empty")));
        }
        if v.chars().count() > max {
            return Err(bad_report(&format!("'{name}' exceeds {max} characters")));
        }
    }
    let cfg = config(st);
    let az = r.availability_zone.clone().filter(|z| !z.is_empty());
    let existing = select_by_type_host(tx, st, &r.agent_type, &r.host).await?;
    let (agent, status) = match existing {
        Some(mut a) => {
            let status = if a.is_alive(now_us, &cfg) {
                AgentStatus::Alive
            } else {
                AgentStatus::Revived
            };
            let mut body = a.body.clone();
            body.insert("binary".into(), json!(r.binary));
            body.insert("topic".into(), json!(r.topic));
            body.insert(
                "configurations".into(),
                Value::Object(r.configurations.clone()),
            );
            if let Some(v) = &r.resource_versions {
                body.insert("resource_versions".into(), json!(v));
            }
            // Hosts act on configuration and zone (tunnel endpoints, mappings, scheduling);
            // those are changes, a bare heartbeat is not.
            let relevant = body.get("configurations") != a.body.get("configurations")
                || body.get("binary") != a.body.get("binary")
                || az != a.availability_zone
                || r.start_flag;
            if r.start_flag {
                a.started_at = now_us;
            }
            a.heartbeat_at = now_us;
            a.availability_zone = az;
            a.body = body;
            if relevant {
                a.revision_number += 1;
            }
            sqlx::query(
                "UPDATE agents SET availability_zone = $1, started_at = $2, heartbeat_at = $3, \
                 revision_number = $4, body = $5 WHERE id = $6",
            )
            .bind(a.availability_zone.clone())
            .bind(a.started_at)
            .bind(a.heartbeat_at)
            .bind(a.revision_number)
            .bind(Value::Object(a.body.clone()).to_string())
            .bind(&a.id)
            .execute(&mut *tx)
            .await?;
            if relevant {
                log_change(tx, &a.id, "update", a.revision_number).await?;
            }
            (a, status)
        }
        None => {
            let mut body = Obj::new();
            body.insert("binary".into(), json!(r.binary));
            body.insert("topic".into(), json!(r.topic));
            body.insert(
                "configurations".into(),
                Value::Object(r.configurations.clone()),
            );
            body.insert("description".into(), Value::Null);
            if let Some(v) = &r.resource_versions {
                body.insert("resource_versions".into(), json!(v));
            }
            let a = Agent {
                id: db::new_id(),
                agent_type: r.agent_type.clone(),
                host: r.host.clone(),
                availability_zone: az,
                admin_state_up: cfg.enable_new_agents,
                created_at: now_us,
                started_at: now_us,
                heartbeat_at: now_us,
                revision_number: 1,
                body,
            };
            // Two first reports racing: the unique (agent_type, host) constraint lets one
            // insert; the other finds the row and becomes an update.
            let inserted = sqlx::query(&format!(
                "INSERT INTO agents ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (agent_type, host) DO NOTHING"
            ))
            .bind(&a.id)
            .bind(&a.agent_type)
            .bind(&a.host)
            .bind(a.availability_zone.clone())
            .bind(i64::from(a.admin_state_up))
            .bind(a.created_at)
            .bind(a.started_at)
            .bind(a.heartbeat_at)
            .bind(a.revision_number)
            .bind(Value::Object(a.body.clone()).to_string())
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                return Err(ApiError::conflict(
                    "AgentReportConflict",
                    "Another report of this agent was being registered; retry.",
                ));
            }
            log_change(tx, &a.id, "create", a.revision_number).await?;
            (a, AgentStatus::New)
        }
    };
    Ok((agent, status))
}

/// Routes of this collection.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v2.0/agents", get(list))
        .route("/v2.0/agents/{id}", get(show).put(update).delete(delete))
}

/// 404 `AgentNotFound` (also what a caller without `get_agent` gets).
pub fn not_found(id: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "AgentNotFound",
        format!("Agent {id} could not be found."),
    )
}

/// Loads an agent the caller may see (`get_agent`), or 404.
pub async fn get_visible<'c, E>(st: &ApiState, ctx: &Context, ex: E, id: &str) -> ApiResult<Agent>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    match get_agent(ex, id).await? {
        Some(a) if st.policy.check(ctx, "get_agent", &Obj::new()) => Ok(a),
        _ => Err(not_found(id)),
    }
}

/// The text attributes whose filters compare as Neutron's do on MySQL, where the `agents`
/// columns have a case-insensitive, trailing-space-padded collation: `agent_type=DHCP Agent`
/// finds the "DHCP agent" (Tempest's DHCP scheduler tests ask for exactly that).
const FOLDED_FILTERS: &[&str] = &[
    "agent_type",
    "binary",
    "topic",
    "host",
    "availability_zone",
    "description",
];

/// A text value as the collation compares it: lower case, trailing spaces ignored.
fn fold(s: &str) -> String {
    s.trim_end_matches(' ').to_lowercase()
}

/// Whether an agent document passes the folded filters `(attribute, accepted values)`.
fn folded_match(doc: &Obj, filters: &[(String, Vec<String>)]) -> bool {
    filters.iter().all(|(k, wants)| match doc.get(k.as_str()) {
        Some(Value::String(have)) => {
            let have = fold(have);
            wants.iter().any(|w| fold(w) == have)
        }
        Some(v) => wants
            .iter()
            .any(|w| neutrino_core::list::value_matches(v, w)),
        None => true,
    })
}

/// Renders agents for a listing: the ones `get_agent` lets the caller see, filtered,
/// sorted and paginated (shared with `/v2.0/networks/{id}/dhcp-agents`).
pub fn respond_list(
    st: &ApiState,
    ctx: &Context,
    agents: &[Agent],
    query: &ListQuery,
    url: &str,
) -> Response {
    let cfg = config(st);
    let now = now_us();
    let mut query = query.clone();
    let folded: Vec<(String, Vec<String>)> = FOLDED_FILTERS
        .iter()
        .filter_map(|k| query.take_filter(k).map(|v| (k.to_string(), v)))
        .collect();
    let items: Vec<Obj> = agents
        .iter()
        .map(|a| a.render(now, &cfg))
        .filter(|doc| folded_match(doc, &folded))
        .filter(|doc| st.policy.check(ctx, "get_agent", doc))
        .collect();
    axum::Json(query.respond(items, "agents", url)).into_response()
}

/// neutron-lib's attribute map of the agent (no sort keys: any sort_key is a 400, as in Neutron), as far as listing goes: sort keys and the
/// filters whose values convert.
const LIST_SPEC: Spec = Spec {
    sort_keys: &[],
    bools: &["admin_state_up"],
    ints: &[],
};

async fn list(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut query = ListQuery::parse(q.as_deref())?;
    query.check(&LIST_SPEC)?;
    let agents = list_all(st.db.reader()).await?;
    let url = format!("{}/v2.0/agents", common::base_url(&headers));
    Ok(respond_list(&st, &ctx, &agents, &query, &url))
}

async fn show(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let query = ListQuery::parse(q.as_deref())?;
    let a = get_visible(&st, &ctx, st.db.reader(), &id).await?;
    let doc = query.trim(a.render(now_us(), &config(&st)));
    Ok(common::ok("agent", Value::Object(doc)))
}

async fn update(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let changes =
        attrs::prepare_update(&[ATTRS, READ_ONLY], common::parse_update(&body, "agent")?)?;
    let mut tx = st.db.begin().await?;
    let mut a = get_visible(&st, &ctx, &mut *tx, &id).await?;
    common::enforce(&st, &ctx, "update_agent", &Obj::new()).map_err(|_| not_found(&id))?;
    let mut admin_changed = false;
    if let Some(v) = changes.get("admin_state_up").and_then(Value::as_bool)
        && v != a.admin_state_up
    {
        a.admin_state_up = v;
        admin_changed = true;
    }
    if let Some(v) = changes.get("description") {
        a.body.insert("description".into(), v.clone());
    }
    if admin_changed {
        a.revision_number += 1;
    }
    sqlx::query(
        "UPDATE agents SET admin_state_up = $1, revision_number = $2, body = $3 WHERE id = $4",
    )
    .bind(i64::from(a.admin_state_up))
    .bind(a.revision_number)
    .bind(Value::Object(a.body.clone()).to_string())
    .bind(&a.id)
    .execute(&mut *tx)
    .await?;
    if admin_changed {
        log_change(&mut tx, &a.id, "update", a.revision_number).await?;
    }
    st.db.commit(tx).await?;
    Ok(common::ok(
        "agent",
        Value::Object(a.render(now_us(), &config(&st))),
    ))
}

async fn delete(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    common::reject_body(&body)?;
    let mut tx = st.db.begin().await?;
    let a = get_visible(&st, &ctx, &mut *tx, &id).await?;
    common::enforce(&st, &ctx, "delete_agent", &Obj::new()).map_err(|_| not_found(&id))?;
    // A deleted DHCP agent's networks lose it; their DHCP ports are reserved for the next
    // agent, as when a network is removed from an agent.
    let dhcp = &crate::scheduler::DHCP;
    for n in dhcp.hosted_by(&mut *tx, &a.id).await? {
        dhcp.unbind(&st, &mut tx, &a, &n).await?;
    }
    sqlx::query("DELETE FROM agents WHERE id = $1")
        .bind(&a.id)
        .execute(&mut *tx)
        .await?;
    log_change(&mut tx, &a.id, "delete", a.revision_number).await?;
    st.db.commit(tx).await?;
    Ok(common::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(heartbeat_at: i64) -> Agent {
        Agent {
            id: "a".into(),
            agent_type: agent_type::DHCP.into(),
            host: "h".into(),
            availability_zone: Some("nova".into()),
            admin_state_up: true,
            created_at: 0,
            started_at: 0,
            heartbeat_at,
            revision_number: 1,
            body: Obj::new(),
        }
    }

    #[test]
    fn alive_within_down_time() {
        let cfg = AgentConfig {
            agent_down_time: 2,
            ..Default::default()
        };
        let a = agent(10_000_000);
        assert!(a.is_alive(11_000_000, &cfg));
        assert!(a.is_alive(12_000_000, &cfg));
        assert!(!a.is_alive(12_000_001, &cfg));
        assert_eq!(a.render(12_500_000, &cfg)["alive"], json!(false));
    }

    #[test]
    fn text_filters_fold_case_and_trailing_spaces() {
        let doc = agent(0).render(0, &AgentConfig::default());
        let f =
            |k: &str, v: &[&str]| vec![(k.to_string(), v.iter().map(|s| s.to_string()).collect())];
        assert!(folded_match(&doc, &f("agent_type", &["DHCP Agent"])));
        assert!(folded_match(&doc, &f("agent_type", &["dhcp agent  "])));
        assert!(folded_match(&doc, &f("host", &["x", "H"])));
        assert!(!folded_match(&doc, &f("agent_type", &["DHCP"])));
        assert!(!folded_match(&doc, &f("host", &[" h"])));
        assert!(folded_match(&doc, &f("availability_zone", &["NOVA"])));
    }

    #[test]
    fn neutron_time_format() {
        assert_eq!(agent_time(0), "1970-01-01 00:00:00");
        assert_eq!(agent_time(86_400_999_999), "1970-01-02 00:00:00");
    }

    #[test]
    fn config_defaults_and_errors() {
        let ini = Ini::parse("", "t").unwrap();
        assert_eq!(AgentConfig::from_ini(&ini).unwrap(), AgentConfig::default());
        let ini = Ini::parse("[DEFAULT]\ndhcp_agents_per_network = 0\n", "t").unwrap();
        assert!(AgentConfig::from_ini(&ini).is_err());
        let ini = Ini::parse(
            "[DEFAULT]\nagent_down_time = 2\ndefault_availability_zones = az1, az2\n",
            "t",
        )
        .unwrap();
        let c = AgentConfig::from_ini(&ini).unwrap();
        assert_eq!(c.agent_down_time, 2);
        assert_eq!(c.default_availability_zones, vec!["az1", "az2"]);
    }
}
