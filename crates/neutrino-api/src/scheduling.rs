//! One agent scheduler for the resources agents host: networks on DHCP agents (Neutron's
//! `dhcp_agent_scheduler`) and routers on L3 agents (`l3_agent_scheduler`), generic over a
//! [`Binding`] that says where the bindings are stored and how the two kinds differ.
//!
//! Owns the mechanics both kinds share: the binding rows (which agents host a resource,
//! which resources an agent hosts, each agent's load), the choice of agents for a resource
//! (live, admin-up candidates within the resource's `availability_zone_hints` or
//! `default_availability_zones`, least loaded first, optionally spread over zones), the
//! offer of lacking resources to an agent that (re)registers, the removal of a binding, and
//! automatic failover off agents silent for twice `agent_down_time` (Neutron's
//! `agent_dead_limit`). What is particular to a kind (DHCP ports, router port bindings, the
//! L3 agent modes, the network access of a host) stays in `scheduler` (DHCP) and
//! `l3_scheduler`, which declare their `Binding` and call these functions; the HTTP side of
//! both is `scheduling_api`, the periodic failover check `periodic`.
//!
//! Everything here runs in the caller's transaction (failover: one transaction per moved
//! binding) and does SQL only. It must never contact an agent (hosts learn about scheduling
//! from `agent` changes: every bind and unbind bumps the agent's revision), and never import
//! the kind modules that use it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;
use sqlx::AnyConnection;

use neutrino_core::ApiResult;
use neutrino_core::db::{Kind, Obj, str_of};

use crate::ApiState;
use crate::agents::{self, Agent, AgentConfig};

/// A step a kind runs in the caller's transaction (boxed, so a `Binding` can name it).
pub type Step<'a, T = ()> = Pin<Box<dyn Future<Output = ApiResult<T>> + Send + 'a>>;

/// How one kind of resource is bound to agents: data, and the three steps that differ.
pub struct Binding {
    /// `agent_type` of the agents that host the resource.
    pub agent_type: &'static str,
    /// The hosted resource (`network`, `router`).
    pub resource: &'static Kind,
    /// Table of bindings: one row `(<column>, agent_id, created_at)` per hosting agent.
    pub table: &'static str,
    /// The column naming the resource in `table` (also the key of the add request).
    pub column: &'static str,
    /// Rows carry a `binding_index`, unique per resource, so two servers racing cannot bind
    /// more agents than wanted; agents are listed in index order (else by id).
    pub indexed: bool,
    /// Spread a resource's agents over zones, the zone hosting the fewest of them first
    /// (Neutron's `AZAwareWeightScheduler`), rather than least loaded only.
    pub spread_over_zones: bool,
    /// Start-up grace per binding added to the dead limit of a restarted agent (Neutron gives
    /// a restarted DHCP agent two seconds per network).
    pub grace_per_binding_us: i64,
    /// Whether automatic failover is on (`allow_automatic_dhcp_failover`, ...).
    pub failover_enabled: fn(&ApiState) -> bool,
    /// What follows the loss of a binding, `(agent, resource id)`: a DHCP port is reserved
    /// for the next agent, a router's ports follow its remaining agent.
    pub released: for<'a> fn(&'a ApiState, &'a mut AnyConnection, &'a Agent, &'a str) -> Step<'a>,
    /// Schedules a resource again after failover took an agent from it.
    pub reschedule: for<'a> fn(&'a ApiState, &'a mut AnyConnection, &'a str) -> Step<'a>,
}

/// A resource's zone hints, else `default_availability_zones` (Neutron's `get_az_hints`).
pub fn az_hints(resource: &Obj, cfg: &AgentConfig) -> Vec<String> {
    let hints: Vec<String> = resource
        .get("availability_zone_hints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if hints.is_empty() {
        cfg.default_availability_zones.clone()
    } else {
        hints
    }
}

fn in_zones(agent: &Agent, hints: &[String]) -> bool {
    hints.is_empty()
        || agent
            .availability_zone
            .as_ref()
            .is_some_and(|z| hints.contains(z))
}

impl Binding {
    /// The agents hosting resource `id`.
    pub async fn agents_of(&self, conn: &mut AnyConnection, id: &str) -> ApiResult<Vec<Agent>> {
        let order = if self.indexed {
            "binding_index"
        } else {
            "agent_id"
        };
        let ids: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT agent_id FROM {} WHERE {} = $1 ORDER BY {order}",
            self.table, self.column
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(a) = agents::get_agent(&mut *conn, &id).await? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Ids of the resources an agent hosts, sorted.
    pub async fn hosted_by<'c, E>(&self, ex: E, agent_id: &str) -> ApiResult<Vec<String>>
    where
        E: sqlx::Executor<'c, Database = sqlx::Any>,
    {
        Ok(sqlx::query_scalar(&format!(
            "SELECT {c} FROM {} WHERE agent_id = $1 ORDER BY {c}",
            self.table,
            c = self.column
        ))
        .bind(agent_id)
        .fetch_all(ex)
        .await?)
    }

    /// Number of bindings per agent (`by` = `agent_id`: the load; Neutron's default
    /// `dhcp_load_type` is `networks`, the L3 scheduler counts routers) or per resource.
    async fn counts(&self, conn: &mut AnyConnection, by: &str) -> ApiResult<HashMap<String, i64>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
            "SELECT {by}, COUNT(*) FROM {} GROUP BY {by}",
            self.table
        ))
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// The binding indexes of resource `id` in use (indexed bindings).
    pub async fn indexes(&self, conn: &mut AnyConnection, id: &str) -> ApiResult<Vec<i64>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT binding_index FROM {} WHERE {} = $1 ORDER BY binding_index",
            self.table, self.column
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?)
    }

    /// Records that `agent` hosts resource `id` (at `index` when indexed) and tells its host
    /// (an `agent` change). False when it already did or the index is taken (a concurrent
    /// scheduler won).
    pub async fn bind(
        &self,
        tx: &mut AnyConnection,
        id: &str,
        agent: &Agent,
        index: Option<i64>,
    ) -> ApiResult<bool> {
        let (index_column, index_value) = if index.is_some() {
            (", binding_index", ", $4")
        } else {
            ("", "")
        };
        let sql = format!(
            "INSERT INTO {} ({}, agent_id, created_at{index_column}) \
             VALUES ($1, $2, $3{index_value}) ON CONFLICT DO NOTHING",
            self.table, self.column
        );
        let mut q = sqlx::query(&sql)
            .bind(id)
            .bind(&agent.id)
            .bind(agents::now_us());
        if let Some(i) = index {
            q = q.bind(i);
        }
        if q.execute(&mut *tx).await?.rows_affected() == 0 {
            return Ok(false);
        }
        tracing::info!(resource = self.resource.resource, id, agent_id = %agent.id,
            host = %agent.host, "scheduled to {}", self.agent_type);
        agents::touch(tx, &agent.id).await?;
        Ok(true)
    }

    /// Removes resource `id` from `agent`, tells its host and runs the kind's `released`
    /// step. False when the agent did not host it.
    pub async fn unbind(
        &self,
        st: &ApiState,
        tx: &mut AnyConnection,
        agent: &Agent,
        id: &str,
    ) -> ApiResult<bool> {
        let res = sqlx::query(&format!(
            "DELETE FROM {} WHERE {} = $1 AND agent_id = $2",
            self.table, self.column
        ))
        .bind(id)
        .bind(&agent.id)
        .execute(&mut *tx)
        .await?;
        if res.rows_affected() == 0 {
            return Ok(false);
        }
        agents::touch(tx, &agent.id).await?;
        (self.released)(st, tx, agent, id).await?;
        Ok(true)
    }

    /// Binds `resource`, hosted now by `hosting`, to more agents until `limit` host it
    /// (`usize::MAX`: every candidate): candidates are the live, admin-up agents of the type
    /// (only `only`, when given: an agent that just registered) not hosting it yet, within
    /// its zone hints, that `accept` admits. Returns whether anything was bound.
    #[allow(clippy::too_many_arguments)]
    pub async fn schedule(
        &self,
        st: &ApiState,
        tx: &mut AnyConnection,
        resource: &Obj,
        hosting: &[Agent],
        only: Option<&Agent>,
        limit: usize,
        accept: impl Fn(&Agent) -> bool,
    ) -> ApiResult<bool> {
        let needed = limit.saturating_sub(hosting.len());
        if needed == 0 {
            return Ok(false);
        }
        let id = str_of(resource, "id");
        let cfg = agents::config(st);
        let now = agents::now_us();
        let hints = az_hints(resource, &cfg);
        let pool = match only {
            Some(a) => vec![a.clone()],
            None => agents::of_type(&mut *tx, self.agent_type).await?,
        };
        let candidates: Vec<&Agent> = pool
            .iter()
            .filter(|a| {
                a.admin_state_up
                    && a.is_alive(now, &cfg)
                    && !hosting.iter().any(|h| h.id == a.id)
                    && in_zones(a, &hints)
                    && accept(a)
            })
            .collect();
        if candidates.is_empty() {
            if only.is_none() {
                tracing::debug!(
                    resource = self.resource.resource,
                    id,
                    "no {} can host it",
                    self.agent_type
                );
            }
            return Ok(false);
        }
        let load = self.counts(tx, "agent_id").await?;
        let chosen = choose(&candidates, hosting, &load, needed, self.spread_over_zones);
        let mut used = if self.indexed {
            self.indexes(tx, id).await?
        } else {
            Vec::new()
        };
        let max_index = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut any = false;
        for a in chosen {
            let index = match self.indexed {
                false => None,
                true => match (1..=max_index).find(|i| !used.contains(i)) {
                    Some(i) => Some(i),
                    None => break,
                },
            };
            if self.bind(tx, id, a, index).await? {
                used.extend(index);
                any = true;
            }
        }
        Ok(any)
    }

    /// The resources among `all` that an agent which registered, revived or restarted is
    /// offered (Neutron's `auto_schedule_networks` / `auto_schedule_routers`): those with
    /// fewer agents than `limit` says, whose zone hints admit the agent.
    pub async fn lacking<'r>(
        &self,
        st: &ApiState,
        conn: &mut AnyConnection,
        agent: &Agent,
        all: &'r [Obj],
        limit: impl Fn(&Obj) -> usize,
    ) -> ApiResult<Vec<&'r Obj>> {
        let cfg = agents::config(st);
        let counts = self.counts(conn, self.column).await?;
        Ok(all
            .iter()
            .filter(|r| {
                let n = counts.get(str_of(r, "id")).copied().unwrap_or(0);
                usize::try_from(n).unwrap_or(usize::MAX) < limit(r)
                    && in_zones(agent, &az_hints(r, &cfg))
            })
            .collect())
    }

    /// Moves resources off dead agents when failover is on, one transaction per binding:
    /// unbinds, then schedules the resource again. Returns how many bindings moved.
    pub async fn check_failover(&self, st: &ApiState, now_us: i64) -> ApiResult<usize> {
        if !(self.failover_enabled)(st) {
            return Ok(0);
        }
        let cfg = agents::config(st);
        let pool = agents::of_type(st.db.reader(), self.agent_type).await?;
        let bindings: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT {c}, agent_id FROM {} ORDER BY {c}",
            self.table,
            c = self.column
        ))
        .fetch_all(st.db.reader())
        .await?;
        let plan = failover_plan(&pool, &bindings, now_us, &cfg, self.grace_per_binding_us);
        let mut moved = 0;
        for (id, agent_id) in plan {
            let Some(agent) = pool.iter().find(|a| a.id == agent_id) else {
                continue;
            };
            tracing::warn!(resource = self.resource.resource, id = %id, agent_id = %agent_id,
                host = %agent.host, dead_time = cfg.agent_down_time * 2,
                "moving off a {}: no report within the dead time", self.agent_type);
            let mut tx = st.db.begin().await?;
            if self.unbind(st, &mut tx, agent, &id).await? {
                moved += 1;
                (self.reschedule)(st, &mut tx, &id).await?;
            }
            st.db.commit(tx).await?;
        }
        Ok(moved)
    }
}

/// Picks `needed` agents among `candidates` (already filtered), least loaded first (ties by
/// host name, for determinism). With `spread_over_zones`, as Neutron's
/// `AZAwareWeightScheduler`: the zone with the fewest agents of the resource (counting
/// `hosting`) first, ties to the zone whose best candidate is lightest. Pure.
pub fn choose<'a>(
    candidates: &[&'a Agent],
    hosting: &[Agent],
    load: &HashMap<String, i64>,
    needed: usize,
    spread_over_zones: bool,
) -> Vec<&'a Agent> {
    let mut sorted: Vec<&Agent> = candidates.to_vec();
    sorted.sort_by_key(|a| (load.get(&a.id).copied().unwrap_or(0), a.host.as_str()));
    if !spread_over_zones {
        sorted.truncate(needed);
        return sorted;
    }
    // (zone, agents of the resource there, candidates there), zones in order of appearance.
    let zone = |a: &Agent| a.availability_zone.clone().unwrap_or_default();
    let mut zones: Vec<(String, usize, VecDeque<&Agent>)> = Vec::new();
    for a in sorted {
        match zones.iter_mut().find(|(z, ..)| *z == zone(a)) {
            Some((_, _, list)) => list.push_back(a),
            None => zones.push((zone(a), 0, VecDeque::from([a]))),
        }
    }
    for h in hosting {
        if let Some((_, n, _)) = zones.iter_mut().find(|(z, ..)| *z == zone(h)) {
            *n += 1;
        }
    }
    let mut chosen = Vec::new();
    while chosen.len() < needed {
        // min_by_key keeps the first of equals: the earlier zone wins a tie.
        let Some((_, n, list)) = zones
            .iter_mut()
            .filter(|(.., list)| !list.is_empty())
            .min_by_key(|(_, n, _)| *n)
        else {
            break;
        };
        chosen.extend(list.pop_front());
        *n += 1;
    }
    chosen
}

/// An agent is dead for failover when admin-up, silent for twice `agent_down_time`
/// (Neutron's `agent_dead_limit`) and not starting up: a restarted agent gets the dead limit
/// plus `grace_us` per binding it holds.
fn dead_for_failover(
    a: &Agent,
    hosted: i64,
    now_us: i64,
    cfg: &AgentConfig,
    grace_us: i64,
) -> bool {
    let limit = cfg.down_after_us().saturating_mul(2);
    let silent = now_us.saturating_sub(a.heartbeat_at) > limit;
    let starting_up = a
        .started_at
        .saturating_add(limit)
        .saturating_add(hosted.saturating_mul(grace_us))
        > now_us;
    a.admin_state_up && silent && !starting_up
}

/// The `(resource, agent)` bindings to move off dead agents at `now_us`: none when no live,
/// admin-up agent exists to take them (Neutron skips rescheduling then). Pure.
pub fn failover_plan(
    pool: &[Agent],
    bindings: &[(String, String)],
    now_us: i64,
    cfg: &AgentConfig,
    grace_per_binding_us: i64,
) -> Vec<(String, String)> {
    if !pool
        .iter()
        .any(|a| a.admin_state_up && a.is_alive(now_us, cfg))
    {
        return Vec::new();
    }
    let mut hosted: HashMap<&str, i64> = HashMap::new();
    for (_, a) in bindings {
        *hosted.entry(a.as_str()).or_insert(0) += 1;
    }
    let dead: HashSet<&str> = pool
        .iter()
        .filter(|a| {
            let n = hosted.get(a.id.as_str()).copied().unwrap_or(0);
            dead_for_failover(a, n, now_us, cfg, grace_per_binding_us)
        })
        .map(|a| a.id.as_str())
        .collect();
    bindings
        .iter()
        .filter(|(_, a)| dead.contains(a.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, az: &str, heartbeat_at: i64, started_at: i64) -> Agent {
        Agent {
            id: id.into(),
            agent_type: neutrino_wire::agent_type::DHCP.into(),
            host: format!("host-{id}"),
            availability_zone: Some(az.into()),
            admin_state_up: true,
            created_at: 0,
            started_at,
            heartbeat_at,
            revision_number: 1,
            body: Obj::new(),
        }
    }

    fn ids(agents: &[&Agent]) -> Vec<String> {
        agents.iter().map(|a| a.id.clone()).collect()
    }

    #[test]
    fn least_loaded_first_optionally_spread_over_zones() {
        let (a1, a2) = (agent("a1", "az1", 0, 0), agent("a2", "az1", 0, 0));
        let (b1, b2) = (agent("b1", "az2", 0, 0), agent("b2", "az2", 0, 0));
        let load: HashMap<String, i64> = [("a1", 0), ("b1", 1), ("b2", 2), ("a2", 3)]
            .map(|(a, n)| (a.to_string(), n))
            .into();
        let all = [&a2, &b2, &b1, &a1];
        assert_eq!(ids(&choose(&all, &[], &load, 3, false)), ["a1", "b1", "b2"]);
        // One zone after the other; a tie goes to the zone whose best agent is lightest.
        assert_eq!(ids(&choose(&all, &[], &load, 3, true)), ["a1", "b1", "a2"]);
        // az2 already hosts one: az1 first, though its agent is heavier.
        let hosting = std::slice::from_ref(&b1);
        assert_eq!(ids(&choose(&[&a2, &b2], hosting, &load, 1, true)), ["a2"]);
        // More than available: all of them.
        assert_eq!(choose(&all, &[], &load, 9, true).len(), 4);
    }

    #[test]
    fn failover_only_from_dead_agents_when_someone_is_alive() {
        let cfg = AgentConfig {
            agent_down_time: 10,
            ..Default::default()
        };
        let now = 1_000_000_000;
        let dead = agent("dead", "nova", now - 21_000_000, 0);
        let slow = agent("slow", "nova", now - 15_000_000, 0);
        let live = agent("live", "nova", now, 0);
        let bindings = [("n1", "dead"), ("n2", "slow"), ("n3", "live")]
            .map(|(n, a)| (n.to_string(), a.to_string()));
        let moved = vec![bindings[0].clone()];
        let all = [dead.clone(), slow.clone(), live.clone()];
        assert_eq!(failover_plan(&all, &bindings, now, &cfg, 0), moved);
        // Nobody alive: nothing moves.
        assert!(failover_plan(&[dead, slow], &bindings, now, &cfg, 0).is_empty());
        // Restarted 21 s ago, past the dead limit (20 s): with 2 s of grace per binding it
        // is still starting up.
        let restarted = agent("dead", "nova", now - 21_000_000, now - 21_000_000);
        let pool = [restarted, live];
        assert_eq!(failover_plan(&pool, &bindings, now, &cfg, 0), moved);
        assert!(failover_plan(&pool, &bindings, now, &cfg, 2_000_000).is_empty());
    }
}
