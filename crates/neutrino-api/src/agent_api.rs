//! `/agent/v1`: the server side of the agent sync protocol (`docs/agent-protocol.md`,
//! decision 0002). Types are `neutrino_wire`'s.
//!
//! - `POST /agent/v1/report`: heartbeat; registers or refreshes the agent.
//! - `GET /agent/v1/hosts/{host}/state`: the host's whole desired state and the change
//!   sequence it reflects.
//! - `GET /agent/v1/hosts/{host}/changes?since=SEQ&timeout=S`: long-poll for the changes
//!   after SEQ that concern the host, each with the object's current document; 410 when SEQ
//!   is no longer (or not yet) in the log.
//! - `POST /agent/v1/ports/{id}/status`: the host wired or unwired a port.
//! - `POST /agent/v1/floatingips/{id}/status`: the host's L3 agent configured a floating IP.
//! - `GET /agent/v1/metadata/instance?ip=IP&router_id=ID` (or `&network_id=ID`): the
//!   instance behind a fixed IP, for the agent's metadata proxy (`docs/agent-protocol.md`).
//!
//! Every call needs a token with the `admin` role (agents use the service user
//! `neutrino-agent`). Which changes concern a host is decided from the store at read time:
//! the host's *scope* (its bound ports, their networks and security groups, its DHCP
//! networks, its agents, the routers of its L3 agents, the address groups its groups' rules
//! name) plus the binding history in
//! `port_hosts`, so a change also reaches
//! the host a port left or was on when it was deleted. The decision depends only on the log
//! and the store, never on what was sent before, so a client resuming from its last `seq`
//! receives exactly the relevant changes it missed.
//!
//! Waiting never holds a transaction or a pooled connection: the handler sleeps on
//! `Db::watch_commits` (fed by local commits and, on PostgreSQL, by LISTEN) and re-reads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{Value, json};
use sqlx::{AnyConnection, Row};

use neutrino_core::db::{self, Obj};
use neutrino_core::{ApiError, ApiResult, Context};
use neutrino_wire::{
    AgentReport, Change, ChangeBatch, DhcpNetwork, DhcpReadyReport, FloatingIpStatusReport,
    HostState, L2PopHost, L2PopNetwork, L2PopPort, MAX_POLL_SECONDS, NetworkState,
    PROTOCOL_VERSION, PortStatus, PortStatusReport, ReportReply, RouterPortState, RouterState,
    SecurityGroupState, agent_type,
};

use crate::{
    ApiState, agents, floatingips, l3_scheduler, ml2, networks, port_forwardings, ports,
    provisioning, routers, scheduler, subnets,
};

/// Change rows examined per round of a long-poll.
const BATCH: i64 = 1000;

/// Largest `IN (...)` list sent in one statement.
const IN_CHUNK: usize = 500;

/// Routes of the agent API (on the network API port, behind the same authentication).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/agent/v1/report", post(report))
        .route("/agent/v1/hosts/{host}/state", get(state))
        .route("/agent/v1/hosts/{host}/changes", get(changes))
        .route("/agent/v1/ports/{id}/status", post(port_status))
        .route("/agent/v1/dhcp-ready", post(dhcp_ready))
        .route("/agent/v1/floatingips/{id}/status", post(floatingip_status))
        .route("/agent/v1/metadata/instance", get(metadata_instance))
}

fn require_admin(ctx: &Context) -> ApiResult<()> {
    if ctx.is_admin() {
        Ok(())
    } else {
        Err(ApiError::forbidden("rule:agent_api"))
    }
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_value(crate::common::parse_json(body)?)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

fn str_of<'a>(o: &'a Obj, k: &str) -> &'a str {
    o.get(k).and_then(Value::as_str).unwrap_or("")
}

fn parse_doc(raw: &str) -> ApiResult<Obj> {
    match serde_json::from_str::<Value>(raw)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::internal("stored body is not an object")),
    }
}

/// `($1, $2, ...)` starting at `$start`.
fn placeholders(start: usize, n: usize) -> String {
    let list: Vec<String> = (start..start + n).map(|i| format!("${i}")).collect();
    format!("({})", list.join(", "))
}

/// Runs `sql` (containing `{in}`, replaced by a placeholder list) over `ids` in chunks,
/// collecting `(String, String)` rows.
async fn pairs_in(
    conn: &mut AnyConnection,
    sql: &str,
    ids: &[String],
) -> ApiResult<Vec<(String, String)>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let q = sql.replace("{in}", &placeholders(1, chunk.len()));
        let mut query = sqlx::query_as::<_, (String, String)>(&q);
        for id in chunk {
            query = query.bind(id);
        }
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

/// Bodies of the rows of `table` whose `id` is in `ids`.
async fn bodies_in(conn: &mut AnyConnection, table: &str, ids: &[String]) -> ApiResult<Vec<Obj>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(IN_CHUNK) {
        let q = format!(
            "SELECT body FROM {table} WHERE id IN {} ORDER BY id",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(&q);
        for id in chunk {
            query = query.bind(id);
        }
        for r in query.fetch_all(&mut *conn).await? {
            out.push(parse_doc(&r.try_get::<String, _>(0)?)?);
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Report.

async fn report(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let r: AgentReport = parse_body(&body)?;
    let now = agents::now_us();
    let mut tx = st.db.begin().await?;
    let (agent, status) = agents::report(&st, &mut tx, &r, now).await?;
    // A DHCP or L3 agent that registers, revives or restarts gets the networks or routers
    // lacking agents (Neutron's auto_schedule_networks/routers on the agent's sync).
    scheduler::agent_reported(&st, &mut tx, &agent, status, r.start_flag).await?;
    l3_scheduler::agent_reported(&st, &mut tx, &agent, status, r.start_flag).await?;
    st.db.commit(tx).await?;
    // Live L3 agents' heartbeats also drive router failover off dead ones, sooner than the
    // periodic check (a live agent is needed to take them anyway); it is off unless
    // allow_automatic_l3agent_failover.
    if agent.agent_type == agent_type::L3
        && let Err(e) = l3_scheduler::L3.check_failover(&st, now).await
    {
        tracing::error!(error = %e, "L3 agent failover check failed");
    }
    let cfg = agents::config(&st);
    let reply = ReportReply {
        agent: agent.render(now, &cfg),
        status,
        report_interval: u64::try_from((cfg.agent_down_time / 3).max(1)).unwrap_or(1),
    };
    Ok(Json(reply).into_response())
}

// ---------------------------------------------------------------------------------------------
// Scope: what a host is concerned with, now.

/// What host `host` takes part in, as the store says now.
#[derive(Debug, Default)]
struct Scope {
    host: String,
    /// Agents registered on the host.
    agents: Vec<agents::Agent>,
    /// Ports bound to the host.
    ports: Vec<Obj>,
    /// `(agent id, network id)` of the host's DHCP agents.
    dhcp: Vec<(String, String)>,
    /// Networks of the bound ports and DHCP networks.
    networks: BTreeSet<String>,
    /// Groups of the bound ports and the groups their rules reference.
    security_groups: BTreeSet<String>,
    /// `(router id, agent id)` of the routers the host's L3 agents host.
    routers: Vec<(String, String)>,
}

async fn scope(conn: &mut AnyConnection, host: &str) -> ApiResult<Scope> {
    let agents = agents::on_host(&mut *conn, host).await?;
    let rows = sqlx::query(
        "SELECT body FROM ports WHERE id IN \
         (SELECT port_id FROM port_hosts WHERE host = $1) ORDER BY id",
    )
    .bind(host)
    .fetch_all(&mut *conn)
    .await?;
    let mut ports = Vec::new();
    for r in rows {
        let p = parse_doc(&r.try_get::<String, _>(0)?)?;
        // The index may name ports that moved on since; the document decides.
        if str_of(&p, "binding:host_id") == host {
            ports.push(p);
        }
    }
    let dhcp: Vec<(String, String)> = sqlx::query_as(
        "SELECT b.agent_id, b.network_id FROM network_dhcp_agents b \
         JOIN agents a ON a.id = b.agent_id WHERE a.host = $1 ORDER BY b.network_id",
    )
    .bind(host)
    .fetch_all(&mut *conn)
    .await?;
    let mut networks: BTreeSet<String> = ports
        .iter()
        .map(|p| str_of(p, "network_id").to_string())
        .collect();
    networks.extend(dhcp.iter().map(|(_, n)| n.clone()));
    let port_ids: Vec<String> = ports.iter().map(|p| str_of(p, "id").to_string()).collect();
    let mut security_groups: BTreeSet<String> = pairs_in(
        conn,
        "SELECT port_id, security_group_id FROM security_group_port_bindings WHERE port_id IN {in}",
        &port_ids,
    )
    .await?
    .into_iter()
    .map(|(_, g)| g)
    .collect();
    let own: Vec<String> = security_groups.iter().cloned().collect();
    let remote = pairs_in(
        conn,
        "SELECT security_group_id, remote_group_id FROM security_group_rules \
         WHERE remote_group_id IS NOT NULL AND security_group_id IN {in}",
        &own,
    )
    .await?;
    security_groups.extend(remote.into_iter().map(|(_, g)| g));
    let routers = l3_scheduler::routers_on_host(conn, host).await?;
    Ok(Scope {
        host: host.to_string(),
        agents,
        ports,
        dhcp,
        networks,
        security_groups,
        routers,
    })
}

// ---------------------------------------------------------------------------------------------
// State.

async fn state(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(host): Path<String>,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let state = host_state(&st, &host).await?;
    Ok(Json(state).into_response())
}

/// Starts a read-only snapshot: every statement sees the same committed state.
async fn snapshot(st: &ApiState) -> ApiResult<sqlx::Transaction<'static, sqlx::Any>> {
    let mut tx = st.db.reader().begin().await?;
    if st.db.backend() == db::Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// The whole desired state of `host`.
pub async fn host_state(st: &ApiState, host: &str) -> ApiResult<HostState> {
    let cfg = agents::config(st);
    let now = agents::now_us();
    let mut tx = snapshot(st).await?;
    // The sequence first: whatever the state then shows is at least that recent, so resuming
    // from it can repeat a change but never miss one.
    let (_, seq) = log_window(&mut tx).await?;
    let sc = scope(&mut tx, host).await?;

    let mut networks_out = Vec::new();
    let net_ids: Vec<String> = sc.networks.iter().cloned().collect();
    for net in bodies_in(&mut tx, networks::KIND.table, &net_ids).await? {
        let id = str_of(&net, "id").to_string();
        let segments = ml2::network_segments(&mut *tx, &id).await?;
        let subnets = db::list(&mut *tx, &subnets::KIND, Some(("network_id", &id))).await?;
        networks_out.push(NetworkState {
            network: net,
            segments,
            subnets,
        });
    }

    let mut by_net: HashMap<String, Vec<Obj>> = HashMap::new();
    for id in &net_ids {
        let list = db::list(&mut *tx, &ports::KIND, Some(("network_id", id))).await?;
        by_net.insert(id.clone(), list);
    }

    let mut dhcp = Vec::new();
    for (agent_id, net_id) in &sc.dhcp {
        let all = by_net.get(net_id).map(Vec::as_slice).unwrap_or_default();
        let device_id = scheduler::dhcp_device_id(host, net_id);
        let dhcp_port_id = all
            .iter()
            .find(|p| str_of(p, "device_id") == device_id)
            .map(|p| str_of(p, "id").to_string());
        dhcp.push(DhcpNetwork {
            network_id: net_id.clone(),
            agent_id: agent_id.clone(),
            dhcp_port_id,
            ports: all.iter().map(dhcp_view).collect(),
            dhcp_lease_duration: Some(st.cfg.dhcp_lease_duration),
            dns_domain: Some(st.cfg.dns_domain.clone()),
        });
    }

    let loaded: HashMap<&str, &Obj> = by_net
        .values()
        .flatten()
        .map(|p| (str_of(p, "id"), p))
        .collect();
    let mut security_groups = Vec::new();
    for g in &sc.security_groups {
        let Some(group) = db::get(&mut *tx, &crate::security_groups::KIND, g).await? else {
            continue;
        };
        let rules = sqlx::query(
            "SELECT body FROM security_group_rules WHERE security_group_id = $1 ORDER BY id",
        )
        .bind(g)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| parse_doc(&r.try_get::<String, _>(0)?))
        .collect::<ApiResult<Vec<Obj>>>()?;
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT port_id FROM security_group_port_bindings WHERE security_group_id = $1 \
             ORDER BY port_id",
        )
        .bind(g)
        .fetch_all(&mut *tx)
        .await?;
        // Members on this host's networks were loaded already; only the others are read.
        let mut ips = BTreeSet::new();
        let mut elsewhere = Vec::new();
        for m in &members {
            match loaded.get(m.as_str()) {
                Some(p) => member_ips(p, &mut ips),
                None => elsewhere.push(m.clone()),
            }
        }
        for p in bodies_in(&mut tx, ports::KIND.table, &elsewhere).await? {
            member_ips(&p, &mut ips);
        }
        // Address groups its rules name: their addresses become nft sets on the host.
        let mut address_groups = BTreeMap::new();
        for ag in rules
            .iter()
            .filter_map(|r| r.get("remote_address_group_id").and_then(Value::as_str))
        {
            if address_groups.contains_key(ag) {
                continue;
            }
            if let Some(doc) = db::get(&mut *tx, &crate::address_groups::KIND, ag).await? {
                let addrs: Vec<String> = doc
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect();
                address_groups.insert(ag.to_string(), addrs);
            }
        }
        security_groups.push(SecurityGroupState {
            security_group: group,
            rules,
            member_ports: members,
            member_ips: ips.into_iter().collect(),
            address_groups,
        });
    }

    // l2population: the other hosts' bound ports on each network and their VTEPs.
    let mut vteps: HashMap<String, Option<String>> = HashMap::new();
    let mut l2pop = Vec::new();
    for net_id in &net_ids {
        let mut hosts: BTreeMap<String, Vec<L2PopPort>> = BTreeMap::new();
        for p in by_net.get(net_id).into_iter().flatten() {
            let h = str_of(p, "binding:host_id");
            let vif = str_of(p, "binding:vif_type");
            if h.is_empty() || h == host || vif == "unbound" || vif == "binding_failed" {
                continue;
            }
            hosts.entry(h.to_string()).or_default().push(L2PopPort {
                port_id: str_of(p, "id").to_string(),
                mac_address: str_of(p, "mac_address").to_string(),
                ip_addresses: port_ips(p),
                device_owner: str_of(p, "device_owner").to_string(),
            });
        }
        let mut out_hosts = Vec::new();
        for (h, ports) in hosts {
            if !vteps.contains_key(&h) {
                let ip = agents::on_host(&mut *tx, &h)
                    .await?
                    .iter()
                    .filter(|a| agents::is_l2(&a.agent_type))
                    .find_map(|a| {
                        a.configurations()
                            .get("tunneling_ip")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    });
                vteps.insert(h.clone(), ip);
            }
            out_hosts.push(L2PopHost {
                local_ip: vteps.get(&h).cloned().flatten(),
                host: h,
                ports,
            });
        }
        l2pop.push(L2PopNetwork {
            network_id: net_id.clone(),
            hosts: out_hosts,
        });
    }
    let routers = router_states(&mut tx, &sc.routers).await?;
    tx.rollback().await?;

    Ok(HostState {
        protocol: PROTOCOL_VERSION,
        host: host.to_string(),
        seq,
        agents: sc.agents.iter().map(|a| a.render(now, &cfg)).collect(),
        ports: sc.ports,
        networks: networks_out,
        dhcp,
        security_groups,
        l2pop,
        routers,
    })
}

/// The routers of the host's L3 agents with their ports, subnets, floating IPs and port
/// forwardings (Neutron's `sync_routers` data).
async fn router_states(
    conn: &mut AnyConnection,
    hosted: &[(String, String)],
) -> ApiResult<Vec<RouterState>> {
    let mut out = Vec::with_capacity(hosted.len());
    for (router_id, agent_id) in hosted {
        let Some(router) = db::get(&mut *conn, &routers::KIND, router_id).await? else {
            continue;
        };
        let mut gateway = None;
        let mut interfaces = Vec::new();
        for (ty, port) in routers::router_ports(conn, router_id).await? {
            let subnets = if ty == routers::OWNER_GATEWAY {
                db::list(
                    &mut *conn,
                    &subnets::KIND,
                    Some(("network_id", str_of(&port, "network_id"))),
                )
                .await?
            } else {
                let ids: Vec<String> = port
                    .get("fixed_ips")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|f| f.get("subnet_id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                bodies_in(conn, subnets::KIND.table, &ids).await?
            };
            let state = RouterPortState { port, subnets };
            if ty == routers::OWNER_GATEWAY {
                gateway = Some(state);
            } else {
                interfaces.push(state);
            }
        }
        let floating_ips = db::list(
            &mut *conn,
            &floatingips::KIND,
            Some(("router_id", router_id)),
        )
        .await?;
        let mut pfs = Vec::new();
        for f in &floating_ips {
            pfs.extend(
                db::list(
                    &mut *conn,
                    &port_forwardings::KIND,
                    Some(("floatingip_id", str_of(f, "id"))),
                )
                .await?,
            );
        }
        out.push(RouterState {
            router,
            agent_id: agent_id.clone(),
            gateway,
            interfaces,
            floating_ips,
            port_forwardings: pfs,
        });
    }
    Ok(out)
}

/// The fields of a port a DHCP server needs (the host state of a network with thousands of
/// ports is dominated by them: full documents tripled its size and build time).
const DHCP_PORT_FIELDS: &[&str] = &[
    "id",
    "network_id",
    "mac_address",
    "device_owner",
    "status",
    "admin_state_up",
    "fixed_ips",
    "extra_dhcp_opts",
    "binding:host_id",
];

fn dhcp_view(p: &Obj) -> Obj {
    DHCP_PORT_FIELDS
        .iter()
        .filter_map(|k| Some(((*k).to_string(), p.get(*k)?.clone())))
        .collect()
}

/// A security group member's addresses: fixed IPs and allowed address pairs.
fn member_ips(p: &Obj, out: &mut BTreeSet<String>) {
    out.extend(port_ips(p));
    for pair in p
        .get("allowed_address_pairs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(ip) = pair.get("ip_address").and_then(Value::as_str) {
            out.insert(ip.to_string());
        }
    }
}

fn port_ips(p: &Obj) -> Vec<String> {
    p.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|f| f.get("ip_address").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Changes.

/// Query of the changes long-poll.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    /// Last sequence the agent applied.
    pub since: i64,
    /// Seconds to wait for a relevant change (default 30, at most 60; 0 answers at once).
    pub timeout: Option<u64>,
}

/// One row of the change log.
#[derive(Debug, Clone)]
struct LogRow {
    seq: i64,
    resource: String,
    id: String,
    op: String,
    revision: i64,
}

fn gone(since: i64, low: i64, high: i64) -> ApiError {
    ApiError::new(
        StatusCode::GONE,
        "ChangeLogGone",
        format!(
            "Changes after {since} are not available (the log holds {low}..{high}); \
             resynchronise with the host state."
        ),
    )
}

async fn changes(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(host): Path<String>,
    q: Result<Query<ChangesQuery>, QueryRejection>,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let timeout = Duration::from_secs(q.timeout.unwrap_or(30).min(MAX_POLL_SECONDS));
    let batch = poll_changes(&st, &host, q.since, timeout).await?;
    Ok(Json(batch).into_response())
}

/// The retained window of the log: (`trimmed_through`, highest sequence ever logged). An
/// empty log after a trim still has the trimmed sequence as its head.
async fn log_window(conn: &mut AnyConnection) -> ApiResult<(i64, i64)> {
    let trimmed: Option<i64> =
        sqlx::query_scalar("SELECT value FROM agent_sync_state WHERE name = 'trimmed_through'")
            .fetch_optional(&mut *conn)
            .await?;
    let high: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM changes")
        .fetch_one(&mut *conn)
        .await?;
    let trimmed = trimmed.unwrap_or(0);
    Ok((trimmed, high.max(trimmed)))
}

/// Waits up to `timeout` for changes after `since` that concern `host`.
pub async fn poll_changes(
    st: &ApiState,
    host: &str,
    since: i64,
    timeout: Duration,
) -> ApiResult<ChangeBatch> {
    let (trimmed, high) = {
        let mut conn = st.db.reader().acquire().await?;
        log_window(&mut conn).await?
    };
    // Before the retained log, or beyond anything this database ever logged (a cursor from
    // another or a restored database): only a full resync is safe.
    if since < trimmed || since > high || since < 0 {
        return Err(gone(since, trimmed, high));
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = st.db.watch_commits();
    let mut stop = st.stopping();
    let mut cursor = since;
    loop {
        rx.borrow_and_update();
        let rows: Vec<LogRow> = sqlx::query_as::<_, (i64, String, String, String, i64)>(
            "SELECT seq, resource, resource_id, op, revision_number FROM changes \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(cursor)
        .bind(BATCH)
        .fetch_all(st.db.reader())
        .await?
        .into_iter()
        .map(|(seq, resource, id, op, revision)| LogRow {
            seq,
            resource,
            id,
            op,
            revision,
        })
        .collect();
        if let Some(last) = rows.last() {
            let head = last.seq;
            let full = i64::try_from(rows.len()).unwrap_or(BATCH) >= BATCH;
            let found = relevant(st, host, &rows).await?;
            cursor = head;
            if !found.is_empty() {
                return Ok(ChangeBatch {
                    seq: head,
                    changes: found,
                });
            }
            if full {
                continue;
            }
        }
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    break;
                }
            }
            _ = tokio::time::sleep_until(deadline) => break,
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    Ok(ChangeBatch {
        seq: cursor,
        changes: Vec::new(),
    })
}

/// The rows of `rows` that concern `host`, with their objects' current documents.
async fn relevant(st: &ApiState, host: &str, rows: &[LogRow]) -> ApiResult<Vec<Change>> {
    let mut conn = st.db.reader().acquire().await?;
    let sc = scope(&mut conn, host).await?;
    let agent_ids: HashSet<&str> = sc.agents.iter().map(|a| a.id.as_str()).collect();
    let hosted_routers: HashSet<&str> = sc.routers.iter().map(|(r, _)| r.as_str()).collect();

    // Binding history, networks and groups of the ports in the batch.
    let port_ids: Vec<String> = {
        let set: BTreeSet<String> = rows
            .iter()
            .filter(|r| r.resource == "port")
            .map(|r| r.id.clone())
            .collect();
        set.into_iter().collect()
    };
    let mut history: HashMap<String, Vec<(i64, String, String)>> = HashMap::new();
    for chunk in port_ids.chunks(IN_CHUNK) {
        let q = format!(
            "SELECT port_id, revision_number, host, network_id FROM port_hosts \
             WHERE port_id IN {} ORDER BY port_id, revision_number",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64, String, String)>(&q);
        for id in chunk {
            query = query.bind(id);
        }
        for (p, rev, h, n) in query.fetch_all(&mut *conn).await? {
            history.entry(p).or_default().push((rev, h, n));
        }
    }
    let mut port_groups: HashMap<String, Vec<String>> = HashMap::new();
    for (p, g) in pairs_in(
        &mut conn,
        "SELECT port_id, security_group_id FROM security_group_port_bindings WHERE port_id IN {in}",
        &port_ids,
    )
    .await?
    {
        port_groups.entry(p).or_default().push(g);
    }

    let mut peer_hosts: Option<HashSet<String>> = None;
    let mut out = Vec::new();
    for r in rows {
        let concerned = match r.resource.as_str() {
            "port" => {
                let hist = history.get(&r.id).map(Vec::as_slice).unwrap_or_default();
                port_concerns(hist, r.revision, host)
                    || hist.last().is_some_and(|(_, _, n)| sc.networks.contains(n))
                    || port_groups
                        .get(&r.id)
                        .is_some_and(|gs| gs.iter().any(|g| sc.security_groups.contains(g)))
            }
            "network" => {
                sc.networks.contains(&r.id)
                    || (r.op == "delete" && {
                        let n: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM port_hosts WHERE network_id = $1 AND host = $2",
                        )
                        .bind(&r.id)
                        .bind(host)
                        .fetch_one(&mut *conn)
                        .await?;
                        n > 0
                    })
            }
            "subnet" | "segment" => {
                let table = if r.resource == "subnet" {
                    subnets::KIND.table
                } else {
                    ml2::KIND.table
                };
                let net: Option<String> =
                    sqlx::query_scalar(&format!("SELECT network_id FROM {table} WHERE id = $1"))
                        .bind(&r.id)
                        .fetch_optional(&mut *conn)
                        .await?;
                // A deleted subnet or segment is unknown here; its network's revision moves
                // in the same transaction, and that change reaches the hosts.
                net.is_some_and(|n| sc.networks.contains(&n))
            }
            "security_group" => sc.security_groups.contains(&r.id),
            "address_group" => {
                // Its addresses are a set on the hosts whose groups' rules name it. A group
                // still named by a rule cannot be deleted, so deletions concern nobody.
                let users: Vec<String> = sqlx::query_scalar(
                    "SELECT security_group_id FROM security_group_rules \
                     WHERE remote_address_group_id = $1",
                )
                .bind(&r.id)
                .fetch_all(&mut *conn)
                .await?;
                users.iter().any(|g| sc.security_groups.contains(g))
            }
            "security_group_rule" => {
                let g: Option<String> = sqlx::query_scalar(
                    "SELECT security_group_id FROM security_group_rules WHERE id = $1",
                )
                .bind(&r.id)
                .fetch_optional(&mut *conn)
                .await?;
                // Deleted rules: the group's revision moves with them (see above).
                g.is_some_and(|g| sc.security_groups.contains(&g))
            }
            "router" => hosted_routers.contains(r.id.as_str()),
            "floatingip" | "port_forwarding" => {
                // Deleted ones are unknown here; their router is notified in the same
                // transaction (l3_scheduler::notify_router), and that change reaches the host.
                let sql = if r.resource == "floatingip" {
                    "SELECT router_id FROM floatingips WHERE id = $1"
                } else {
                    "SELECT f.router_id FROM port_forwardings p \
                     JOIN floatingips f ON f.id = p.floatingip_id WHERE p.id = $1"
                };
                let router: Option<Option<String>> = sqlx::query_scalar(sql)
                    .bind(&r.id)
                    .fetch_optional(&mut *conn)
                    .await?;
                router
                    .flatten()
                    .is_some_and(|rid| hosted_routers.contains(rid.as_str()))
            }
            agents::RESOURCE => {
                if agent_ids.contains(r.id.as_str()) {
                    true
                } else {
                    // An L2 agent's tunnel endpoint matters to hosts sharing a network with
                    // its host (l2population).
                    match agents::get_agent(&mut *conn, &r.id).await? {
                        Some(a) if agents::is_l2(&a.agent_type) => {
                            if peer_hosts.is_none() {
                                peer_hosts = Some(peers(&mut conn, &sc).await?);
                            }
                            peer_hosts.as_ref().is_some_and(|p| p.contains(&a.host))
                        }
                        _ => false,
                    }
                }
            }
            _ => false,
        };
        if concerned {
            let object = current_object(st, &mut conn, &r.resource, &r.id).await?;
            out.push(Change {
                seq: r.seq,
                resource: r.resource.clone(),
                id: r.id.clone(),
                op: r.op.clone(),
                object,
            });
        }
    }
    Ok(out)
}

/// Whether a port change at `revision` concerns `host` through the port's own binding: the
/// port was bound there at that revision, or that revision moved it away from there.
/// `history` is `(revision, host, network)` ascending. Pure.
fn port_concerns(history: &[(i64, String, String)], revision: i64, host: &str) -> bool {
    let upto: Vec<&(i64, String, String)> = history
        .iter()
        .filter(|(rev, _, _)| *rev <= revision)
        .collect();
    match upto.as_slice() {
        [] => history.iter().any(|(_, h, _)| h == host),
        [.., prev, last] if last.0 == revision => last.1 == host || prev.1 == host,
        [.., last] => last.1 == host,
    }
}

/// Hosts with ports bound on the scope's networks (l2population peers).
async fn peers(conn: &mut AnyConnection, sc: &Scope) -> ApiResult<HashSet<String>> {
    let nets: Vec<String> = sc.networks.iter().cloned().collect();
    Ok(pairs_in(
        conn,
        "SELECT network_id, host FROM port_hosts WHERE host <> '' AND network_id IN {in}",
        &nets,
    )
    .await?
    .into_iter()
    .map(|(_, h)| h)
    .filter(|h| *h != sc.host)
    .collect())
}

async fn current_object(
    st: &ApiState,
    conn: &mut AnyConnection,
    resource: &str,
    id: &str,
) -> ApiResult<Option<Obj>> {
    let table = match resource {
        "port" => ports::KIND.table,
        "network" => networks::KIND.table,
        "subnet" => subnets::KIND.table,
        "segment" => ml2::KIND.table,
        "security_group" => crate::security_groups::KIND.table,
        "security_group_rule" => "security_group_rules",
        "address_group" => crate::address_groups::KIND.table,
        "router" => routers::KIND.table,
        "floatingip" => floatingips::KIND.table,
        "port_forwarding" => port_forwardings::KIND.table,
        agents::RESOURCE => {
            let cfg = agents::config(st);
            return Ok(agents::get_agent(&mut *conn, id).await?.map(|a| {
                let mut doc = a.render(agents::now_us(), &cfg);
                doc.insert("revision_number".into(), json!(a.revision_number));
                doc
            }));
        }
        _ => return Ok(None),
    };
    let row: Option<String> =
        sqlx::query_scalar(&format!("SELECT body FROM {table} WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    row.as_deref().map(parse_doc).transpose()
}

// ---------------------------------------------------------------------------------------------
// Port status.

async fn port_status(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let r: PortStatusReport = parse_body(&body)?;
    let mut tx = st.db.begin().await?;
    let Some(mut port) = db::get_for_update(&mut tx, &st.db, &ports::KIND, &id).await? else {
        return Err(ApiError::not_found("Port", &id));
    };
    // Neutron's update_device_up/down ignore a host the port is not bound to: a late report
    // from the host a port migrated away from must not flip it.
    if str_of(&port, "binding:host_id") != r.host {
        return Err(ApiError::conflict(
            "PortNotBoundToHost",
            format!("Port {id} is not bound to host {}.", r.host),
        ));
    }
    // Up counts only once no DHCP agent is still loading the port (provisioning blocks).
    let may_change = match r.status {
        PortStatus::Active => provisioning::l2_up(&mut tx, &id).await?,
        PortStatus::Down => {
            provisioning::l2_down(&mut tx, &id).await?;
            true
        }
    };
    if may_change && str_of(&port, "status") != r.status.as_str() {
        port.insert("status".into(), json!(r.status.as_str()));
        db::save(&mut tx, &ports::KIND, &mut port).await?;
    }
    st.db.commit(tx).await?;
    Ok(crate::common::ok("port", Value::Object(port)))
}

/// `POST /agent/v1/dhcp-ready`: a DHCP agent loaded these ports; ports whose L2 agent had
/// reported them up go ACTIVE. Unknown ports are skipped (deleted meanwhile).
async fn dhcp_ready(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let r: DhcpReadyReport = parse_body(&body)?;
    let mut tx = st.db.begin().await?;
    let mut activated = 0u64;
    for id in &r.port_ids {
        if provisioning::dhcp_ready(&mut tx, id).await?
            && let Some(mut port) = db::get_for_update(&mut tx, &st.db, &ports::KIND, id).await?
            && str_of(&port, "status") != PortStatus::Active.as_str()
        {
            port.insert("status".into(), json!(PortStatus::Active.as_str()));
            db::save(&mut tx, &ports::KIND, &mut port).await?;
            activated += 1;
        }
    }
    st.db.commit(tx).await?;
    tracing::debug!(host = %r.host, ports = r.port_ids.len(), activated, "dhcp ready");
    Ok(crate::common::ok(
        "dhcp_ready",
        json!({"activated": activated}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Metadata: which instance sent a request.

#[derive(Debug, serde::Deserialize)]
struct InstanceQuery {
    ip: String,
    router_id: Option<String>,
    network_id: Option<String>,
}

/// Owners of a router's internal ports (Neutron's `ROUTER_INTERFACE_OWNERS`).
const ROUTER_INTERFACE_OWNERS: [&str; 3] = [
    "network:router_interface",
    "network:router_interface_distributed",
    "network:ha_router_replicated_interface",
];

/// The instance whose port holds fixed IP `ip` on the network (or on one of the router's
/// internal networks): Neutron's metadata agent `get_port`. Only a port with a compute-like
/// owner and a device id names an instance; anything else, or more than one match, is 404 (the
/// proxy then refuses the request rather than guess).
async fn metadata_instance(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    q: Result<Query<InstanceQuery>, QueryRejection>,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let Query(q) = q.map_err(|e| ApiError::bad_request(format!("Invalid query: {e}")))?;
    let ip: std::net::IpAddr =
        q.ip.parse()
            .map_err(|_| ApiError::bad_request(format!("Invalid IP address {:?}", q.ip)))?;
    // An IPv4 address as haproxy writes it when it listens on both families.
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        v4 => v4,
    };
    let mut conn = st.db.reader().acquire().await?;
    let networks: Vec<String> = match (q.network_id.as_deref(), q.router_id.as_deref()) {
        (Some(n), None) if !n.is_empty() => vec![n.to_string()],
        (None, Some(r)) if !r.is_empty() => {
            let sql = format!(
                "SELECT DISTINCT p.network_id FROM router_ports rp JOIN ports p ON p.id = rp.port_id \
                 WHERE rp.router_id = $1 AND p.device_owner IN {}",
                placeholders(2, ROUTER_INTERFACE_OWNERS.len())
            );
            let mut query = sqlx::query_as::<_, (String,)>(&sql).bind(r);
            for o in ROUTER_INTERFACE_OWNERS {
                query = query.bind(o);
            }
            query
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|(n,)| n)
                .collect()
        }
        _ => {
            return Err(ApiError::bad_request(
                "Exactly one of router_id and network_id is required",
            ));
        }
    };
    let mut found: Vec<(String, String, String)> = Vec::new();
    let ip_text = ip.to_string();
    for net in &networks {
        let rows = sqlx::query_as::<_, (String, String, Option<String>, Option<String>)>(
            "SELECT p.id, p.project_id, p.device_id, p.device_owner FROM ip_allocations a \
             JOIN ports p ON p.id = a.port_id WHERE a.network_id = $1 AND a.ip_address = $2",
        )
        .bind(net)
        .bind(&ip_text)
        .fetch_all(&mut *conn)
        .await?;
        for (port_id, project_id, device_id, owner) in rows {
            let device_id = device_id.unwrap_or_default();
            if owner.unwrap_or_default().starts_with("compute:") && !device_id.is_empty() {
                found.push((port_id, project_id, device_id));
            }
        }
    }
    match found.as_slice() {
        [(port_id, project_id, instance_id)] => Ok(Json(json!({
            "instance_id": instance_id,
            "project_id": project_id,
            "port_id": port_id,
        }))
        .into_response()),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "InstanceNotFound",
            format!("No instance port with IP address {ip_text} on the given network or router."),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "InstanceNotFound",
            format!("More than one instance port with IP address {ip_text}: refusing to guess."),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Floating IP status.

/// The L3 agent on the reporting host configured (or removed, or failed) a floating IP
/// (Neutron's `update_floatingip_statuses`). The floating IP's router must be hosted by an
/// L3 agent on that host (409 `FloatingIPNotOnHost` otherwise, so a late report from the
/// host a router moved away from cannot flip it).
async fn floatingip_status(
    State(st): State<ApiState>,
    Extension(ctx): Extension<Context>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&ctx)?;
    let r: FloatingIpStatusReport = parse_body(&body)?;
    let mut tx = st.db.begin().await?;
    let Some(mut fip) = db::get_for_update(&mut tx, &st.db, &floatingips::KIND, &id).await? else {
        return Err(floatingips::not_found(&id));
    };
    let hosted = l3_scheduler::routers_on_host(&mut tx, &r.host).await?;
    let router = str_of(&fip, "router_id").to_string();
    if router.is_empty() || !hosted.iter().any(|(rid, _)| *rid == router) {
        return Err(ApiError::conflict(
            "FloatingIPNotOnHost",
            format!(
                "Floating IP {id} is not served by a router on host {}.",
                r.host
            ),
        ));
    }
    if str_of(&fip, "status") != r.status.as_str() {
        fip.insert("status".into(), json!(r.status.as_str()));
        db::save(&mut tx, &floatingips::KIND, &mut fip).await?;
    }
    st.db.commit(tx).await?;
    Ok(crate::common::ok("floatingip", Value::Object(fip)))
}

// ---------------------------------------------------------------------------------------------
// Retention.

/// Removes changes older than `[neutrino] change_log_retention_days` (0: keep all), records
/// the highest removed sequence (agents behind it get 410 and resync), and drops the binding
/// history of ports whose changes are all gone. Returns the number of changes removed.
pub async fn trim_change_log(st: &ApiState, now_us: i64) -> ApiResult<u64> {
    let days = agents::config(st).change_log_retention_days;
    if days == 0 {
        return Ok(0);
    }
    let cutoff_s = now_us.div_euclid(1_000_000) - days.saturating_mul(86_400);
    let cutoff = time::OffsetDateTime::from_unix_timestamp(cutoff_s)
        .map(db::format_time)
        .map_err(ApiError::internal)?;
    let mut tx = st.db.begin().await?;
    let top: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM changes WHERE created_at < $1")
        .bind(&cutoff)
        .fetch_one(&mut *tx)
        .await?;
    let Some(top) = top else {
        st.db.commit(tx).await?;
        return Ok(0);
    };
    let removed = sqlx::query("DELETE FROM changes WHERE seq <= $1")
        .bind(top)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    sqlx::query(
        "INSERT INTO agent_sync_state (name, value) VALUES ('trimmed_through', $1) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value \
         WHERE agent_sync_state.value < excluded.value",
    )
    .bind(top)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM port_hosts WHERE port_id NOT IN (SELECT id FROM ports) \
         AND port_id NOT IN (SELECT resource_id FROM changes WHERE resource = 'port')",
    )
    .execute(&mut *tx)
    .await?;
    st.db.commit(tx).await?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(rows: &[(i64, &str)]) -> Vec<(i64, String, String)> {
        rows.iter()
            .map(|(r, host)| (*r, host.to_string(), "n".to_string()))
            .collect()
    }

    #[test]
    fn port_changes_reach_current_and_previous_host() {
        // Created unbound (1), bound to h1 (2), moved to h2 (5).
        let hist = h(&[(1, ""), (2, "h1"), (5, "h2")]);
        assert!(!port_concerns(&hist, 1, "h1"));
        assert!(port_concerns(&hist, 2, "h1"));
        assert!(port_concerns(&hist, 3, "h1"));
        assert!(!port_concerns(&hist, 3, "h2"));
        // The move concerns both hosts; later changes only the new one.
        assert!(port_concerns(&hist, 5, "h1"));
        assert!(port_concerns(&hist, 5, "h2"));
        assert!(!port_concerns(&hist, 6, "h1"));
        assert!(port_concerns(&hist, 6, "h2"));
        // History starting after the change (backfilled rows): any host it names.
        assert!(port_concerns(&h(&[(7, "h3")]), 2, "h3"));
    }

    #[test]
    fn placeholder_lists() {
        assert_eq!(placeholders(1, 3), "($1, $2, $3)");
    }
}
