//! The agent process: heartbeats, state sync with the server, and the reconcile loop.
//!
//! Heartbeats carry, in each agent's `configurations.errors`, the failures of the last pass
//! that concern it (a DHCP server that could not load, a router that could not be built), so
//! `openstack network agent show` tells an operator what the log says; a change of them is
//! reported at once, not at the next heartbeat.
//!
//! Start-up: report every role's agent (`start_flag`), fetch the full host state, run a
//! first pass that also sweeps stale objects with our prefixes. Then:
//!
//! - a long-poll task follows `/changes` from the state's `seq`; any relevant change (or a
//!   `410`) asks the loop for a fresh full state (the state is what reconcilers read, so a
//!   change's own document is only a wake-up — see `docs/decisions/0003-*`);
//! - `ip monitor link` wakes the loop when devices come and go;
//! - the loop runs a pass every `polling_interval` anyway (respawns dead dnsmasq, repairs
//!   drift), and refetches the state every `full_resync_interval`;
//! - a failed pass is retried with exponential backoff (1 s … 30 s).
//!
//! Triggers coalesce: one pass in flight, one queued at most. When the server cannot be
//! reached the loop keeps reconciling to the last state it had: it never tears anything
//! down for lack of an answer, and it never touches the dataplane on exit, so restarting the
//! agent (or the server) does not interrupt traffic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_host::monitor::LinkMonitor;
use neutrino_host::{IpNet, Net, Procs, RealProcs};
use neutrino_wire::{AgentReport, agent_type};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::client::{ApiClient, ClientError, Credentials};
use crate::config::{AgentConfig, MetadataConfig};
use crate::dhcp::{Dhcp, DhcpSettings};
use crate::l2::{L2, L2Settings};
use crate::model::HostModel;
use crate::runner::{Pass, Reconciler, run_pass};

/// The agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A reconcile pass crashed.
    #[error("reconcile pass crashed: {0}")]
    Crashed(String),
}

#[derive(Debug, Clone, Copy)]
enum Wake {
    /// The server has changes for us: fetch the state.
    Changed,
    /// Something changed on the host.
    Links,
}

/// The agents this process reports (one per role).
pub fn reports(cfg: &AgentConfig) -> Vec<AgentReport> {
    let mut out = Vec::new();
    let mut conf = serde_json::Map::new();
    conf.insert("interface_mappings".into(), json!(cfg.interface_mappings));
    conf.insert("bridge_mappings".into(), json!({}));
    conf.insert("devices".into(), json!(0));
    match &cfg.vxlan {
        Some(v) => {
            conf.insert("tunnel_types".into(), json!(["vxlan"]));
            conf.insert("tunneling_ip".into(), json!(v.local_ip.to_string()));
            conf.insert("l2_population".into(), json!(v.l2_population));
            conf.insert("arp_responder_enabled".into(), json!(v.arp_responder));
        }
        None => {
            conf.insert("tunnel_types".into(), json!([]));
            conf.insert("l2_population".into(), json!(false));
        }
    }
    conf.insert("firewall_driver".into(), json!(cfg.firewall_driver.clone()));
    out.push(AgentReport {
        host: cfg.host.clone(),
        agent_type: agent_type::LINUXBRIDGE.into(),
        binary: "neutron-linuxbridge-agent".into(),
        topic: "N/A".into(),
        availability_zone: None,
        configurations: conf,
        start_flag: true,
        resource_versions: None,
    });
    if let Some(d) = &cfg.dhcp {
        let mut conf = serde_json::Map::new();
        conf.insert(
            "dhcp_driver".into(),
            json!("neutron.agent.linux.dhcp.Dnsmasq"),
        );
        conf.insert("dhcp_lease_duration".into(), json!(d.lease_duration));
        conf.insert("log_agent_heartbeats".into(), Value::Bool(false));
        out.push(AgentReport {
            host: cfg.host.clone(),
            agent_type: agent_type::DHCP.into(),
            binary: "neutron-dhcp-agent".into(),
            topic: "dhcp_agent".into(),
            availability_zone: Some(cfg.availability_zone.clone()),
            configurations: conf,
            start_flag: true,
            resource_versions: None,
        });
    }
    if let Some(m) = &cfg.metadata {
        let mut conf = serde_json::Map::new();
        conf.insert(
            "metadata_proxy_socket".into(),
            json!(m.socket.display().to_string()),
        );
        conf.insert(
            "nova_metadata_host".into(),
            json!(m.nova.as_ref().map(|n| n.host.clone())),
        );
        conf.insert(
            "nova_metadata_port".into(),
            json!(m.nova.as_ref().map(|n| n.port)),
        );
        conf.insert("log_agent_heartbeats".into(), Value::Bool(false));
        out.push(AgentReport {
            host: cfg.host.clone(),
            agent_type: agent_type::METADATA.into(),
            binary: "neutron-metadata-agent".into(),
            topic: "N/A".into(),
            availability_zone: None,
            configurations: conf,
            start_flag: true,
            resource_versions: None,
        });
    }
    if let Some(l3) = &cfg.l3 {
        let mut conf = serde_json::Map::new();
        conf.insert("agent_mode".into(), json!(l3.agent_mode));
        conf.insert(
            "handle_internal_only_routers".into(),
            json!(l3.handle_internal_only_routers),
        );
        conf.insert("interface_driver".into(), json!("linuxbridge"));
        conf.insert("external_network_bridge".into(), json!(""));
        conf.insert("routers".into(), json!(0));
        conf.insert("floating_ips".into(), json!(0));
        conf.insert("log_agent_heartbeats".into(), Value::Bool(false));
        out.push(AgentReport {
            host: cfg.host.clone(),
            agent_type: agent_type::L3.into(),
            binary: "neutron-l3-agent".into(),
            topic: "l3_agent".into(),
            availability_zone: Some(cfg.availability_zone.clone()),
            configurations: conf,
            start_flag: true,
            resource_versions: None,
        });
    }
    out
}

/// The service credentials of the configuration.
pub fn credentials(cfg: &AgentConfig) -> Credentials {
    Credentials {
        auth_url: cfg.server.identity_url.clone(),
        username: cfg.server.username.clone(),
        password: cfg.server.password.clone(),
        project_name: cfg.server.project_name.clone(),
        user_domain_name: cfg.server.user_domain_name.clone(),
        project_domain_name: cfg.server.project_domain_name.clone(),
        region: None,
        interface: "public".into(),
    }
}

/// The reconcilers of the configured roles, in dependency order: DHCP creates its port's
/// device, L2 wires every bound port's device (the DHCP port's included).
pub fn reconcilers(
    cfg: &AgentConfig,
    net: Arc<dyn Net>,
    procs: Arc<dyn Procs>,
) -> Vec<Box<dyn Reconciler>> {
    let mut v: Vec<Box<dyn Reconciler>> = Vec::new();
    if let Some(d) = &cfg.dhcp {
        v.push(Box::new(Dhcp::new(
            net.clone(),
            procs.clone(),
            DhcpSettings::new(d.clone(), cfg.state_path.join("dhcp")),
        )));
    }
    v.push(crate::secgroups::reconciler(cfg));
    v.push(Box::new(L2::new(
        net.clone(),
        L2Settings {
            mappings: cfg.interface_mappings.clone(),
            vxlan: cfg.vxlan.clone(),
        },
    )));
    if cfg.l3.is_some() {
        v.push(Box::new(crate::l3::L3::new(
            net.clone(),
            Arc::new(neutrino_host::nat::RealRouterOs),
            crate::l3::L3Settings {
                dir: cfg.state_path.join("l3"),
            },
        )));
    }
    // Last: haproxy needs the router and DHCP namespaces. Also without the proxy, when a
    // role that runs haproxies is on, so haproxies of an earlier configuration are swept.
    if cfg.metadata.is_some() || cfg.l3.is_some() || cfg.dhcp.is_some() {
        v.push(Box::new(crate::metadata::MetadataProxies::new(
            net,
            procs,
            metadata_settings(cfg),
        )));
    }
    v
}

/// Where the metadata haproxies run (none when the proxy is off).
fn metadata_settings(cfg: &AgentConfig) -> crate::metadata::MetadataSettings {
    let m = cfg.metadata.clone().unwrap_or_else(|| MetadataConfig {
        shared_secret: String::new(),
        nova: None,
        socket: cfg.state_path.join("metadata_proxy"),
        routers: false,
        isolated: false,
        force: false,
    });
    crate::metadata::MetadataSettings {
        cfg: m,
        dir: cfg.state_path.join("metadata"),
        dhcp: cfg
            .dhcp
            .as_ref()
            .map(|d| DhcpSettings::new(d.clone(), cfg.state_path.join("dhcp"))),
    }
}

/// Starts the metadata proxy on its unix socket, when configured. A failure to listen is
/// logged: the rest of the agent keeps working (haproxy then answers 503).
fn spawn_metadata_proxy(
    cfg: &AgentConfig,
    client: Arc<ApiClient>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let Some(m) = &cfg.metadata else {
        return;
    };
    if m.shared_secret.is_empty() {
        tracing::warn!(
            "metadata_proxy_shared_secret is empty: the metadata service will refuse requests \
             unless it is configured with an empty secret too"
        );
    }
    let proxy = Arc::new(crate::metadata::proxy::Proxy::new(
        Arc::new(crate::metadata::proxy::ServerResolver(client)),
        m.shared_secret.clone(),
        m.nova.as_ref().map(|n| n.url()),
    ));
    let socket = m.socket.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::metadata::proxy::serve(&socket, proxy).await {
            tracing::error!(socket = %socket.display(), error = %e, "metadata proxy stopped");
        }
    });
}

fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(5)).min(Duration::from_secs(30))
}

/// Most errors one agent's status shows (the rest are in the log).
const MAX_STATUS_ERRORS: usize = 20;
/// Longest error text in the status.
const MAX_ERROR_CHARS: usize = 500;

/// The agent (by type) whose status shows a reconciler's failures: DHCP servers under the
/// DHCP agent, routers under the L3 agent, metadata haproxies under the metadata agent, the
/// rest (wiring, security groups) under the L2 agent.
fn agent_type_of(reconciler: &str) -> &'static str {
    match reconciler {
        "dhcp" => agent_type::DHCP,
        "l3" => agent_type::L3,
        "metadata" => agent_type::METADATA,
        _ => agent_type::LINUXBRIDGE,
    }
}

/// The failures of the last pass, by agent type, as the agents' reported status shows them
/// (`configurations.errors`: `"<reconciler> <object>: <error>"`, sorted, bounded).
pub fn status_errors(failures: &[crate::runner::Failure]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in failures {
        let mut text = format!("{} {}: {}", f.reconciler, f.object, f.error);
        if text.chars().count() > MAX_ERROR_CHARS {
            text = text.chars().take(MAX_ERROR_CHARS).collect::<String>() + "...";
        }
        out.entry(agent_type_of(f.reconciler).to_string())
            .or_default()
            .push(text);
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
        v.truncate(MAX_STATUS_ERRORS);
    }
    out
}

/// Puts the errors of `errors` for `r`'s agent into its `configurations.errors` (the L2
/// agent also shows those of an agent type this process does not report).
fn set_errors(r: &mut AgentReport, errors: &BTreeMap<String, Vec<String>>, types: &[String]) {
    let mut mine: Vec<String> = errors.get(&r.agent_type).cloned().unwrap_or_default();
    if r.agent_type == agent_type::LINUXBRIDGE {
        for (t, e) in errors {
            if !types.contains(t) {
                mine.extend(e.iter().cloned());
            }
        }
    }
    r.configurations.insert("errors".into(), json!(mine));
}

async fn heartbeat(
    client: Arc<ApiClient>,
    mut reports: Vec<AgentReport>,
    interval: u64,
    mut health: watch::Receiver<BTreeMap<String, Vec<String>>>,
) {
    let mut interval = Duration::from_secs(interval);
    let mut failures = 0;
    let types: Vec<String> = reports.iter().map(|r| r.agent_type.clone()).collect();
    loop {
        let mut ok = true;
        let errors = health.borrow_and_update().clone();
        for r in reports.iter_mut() {
            set_errors(r, &errors, &types);
            match client.report(r).await {
                Ok(reply) => {
                    if r.start_flag {
                        tracing::info!(agent_type = %r.agent_type, status = ?reply.status, "agent registered");
                    }
                    r.start_flag = false;
                    interval = interval.min(Duration::from_secs(reply.report_interval.max(1)));
                }
                Err(e) => {
                    ok = false;
                    tracing::warn!(agent_type = %r.agent_type, error = %e, "heartbeat failed");
                }
            }
        }
        failures = if ok { 0 } else { failures + 1 };
        let wait = if ok {
            interval
        } else {
            backoff(failures).min(interval)
        };
        // A change of the errors is reported at once (an operator, or a test, waiting for
        // `openstack network agent show` should not wait for the next heartbeat).
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = health.changed() => if r.is_err() { tokio::time::sleep(wait).await },
        }
    }
}

async fn follow_changes(
    client: Arc<ApiClient>,
    host: String,
    mut seq: watch::Receiver<Option<i64>>,
    wake: mpsc::UnboundedSender<Wake>,
) {
    let mut since = loop {
        if let Some(s) = *seq.borrow_and_update() {
            break s;
        }
        if seq.changed().await.is_err() {
            return;
        }
    };
    let mut failures = 0;
    loop {
        match client.changes(&host, since, 30).await {
            Ok(b) => {
                failures = 0;
                if !b.changes.is_empty() {
                    tracing::debug!(n = b.changes.len(), seq = b.seq, "changes");
                    if wake.send(Wake::Changed).is_err() {
                        return;
                    }
                }
                since = since.max(b.seq);
            }
            Err(ClientError::Gone) => {
                tracing::warn!(since, "change log cursor gone: full resync");
                if wake.send(Wake::Changed).is_err() {
                    return;
                }
                if seq.changed().await.is_err() {
                    return;
                }
                since = seq.borrow_and_update().unwrap_or(since);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "waiting for changes failed");
                tokio::time::sleep(backoff(failures)).await;
                // Whatever happened meanwhile is still in the log after `since`.
            }
        }
    }
}

/// Runs the agent until `shutdown` resolves. Leaves the dataplane as it is on exit.
pub async fn run(
    cfg: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let net: Arc<dyn Net> = Arc::new(IpNet);
    let procs: Arc<dyn Procs> = Arc::new(RealProcs);
    let recs = reconcilers(&cfg, net, procs);
    run_with(cfg, recs, shutdown).await
}

/// [`run`] with given reconcilers.
pub async fn run_with(
    cfg: AgentConfig,
    mut recs: Vec<Box<dyn Reconciler>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let client = Arc::new(ApiClient::new(
        credentials(&cfg),
        cfg.server.server_url.clone(),
    )?);
    let host = cfg.host.clone();
    tracing::info!(%host, roles = recs.len(), "agent starting");
    let mut tasks = tokio::task::JoinSet::new();
    let (health_tx, health_rx) = watch::channel(BTreeMap::new());
    tasks.spawn(heartbeat(
        client.clone(),
        reports(&cfg),
        cfg.report_interval,
        health_rx,
    ));
    spawn_metadata_proxy(&cfg, client.clone(), &mut tasks);
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let (seq_tx, seq_rx) = watch::channel(None);
    tasks.spawn(follow_changes(
        client.clone(),
        host.clone(),
        seq_rx,
        wake_tx.clone(),
    ));
    let link_tx = wake_tx.clone();
    let _monitor = match LinkMonitor::spawn(
        move || {
            let _ = link_tx.send(Wake::Links);
        },
        || tracing::warn!("link monitor stopped; relying on periodic passes"),
    ) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "no link monitor; relying on periodic passes");
            None
        }
    };
    let poll = Duration::from_secs(cfg.polling_interval);
    let full = Duration::from_secs(cfg.full_resync_interval);
    let mut model: Option<Arc<HostModel>> = None;
    let mut need_state = true;
    let mut last_state = Instant::now();
    let mut startup = true;
    let mut failures = 0u32;
    let mut next = tokio::time::Instant::now();
    // Port id → fingerprint of the DHCP entry last reported dhcp-ready.
    let mut dhcp_reported: std::collections::HashMap<String, String> =
        std::collections::HashMap::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            w = wake_rx.recv() => if let Some(Wake::Changed) = w { need_state = true },
            _ = tokio::time::sleep_until(next) => {},
        }
        // Let a burst of triggers settle, then take them all.
        tokio::time::sleep(Duration::from_millis(5)).await;
        while let Ok(w) = wake_rx.try_recv() {
            if let Wake::Changed = w {
                need_state = true;
            }
        }
        if need_state || last_state.elapsed() >= full {
            match client.state(&host).await {
                Ok(st) => {
                    let m = HostModel::from_state(&st);
                    tracing::debug!(
                        seq = st.seq,
                        networks = m.networks.len(),
                        ports = m.ports.len(),
                        "host state"
                    );
                    let _ = seq_tx.send(Some(st.seq));
                    model = Some(Arc::new(m));
                    need_state = false;
                    last_state = Instant::now();
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, "cannot fetch the host state; keeping the last one");
                }
            }
        }
        let Some(m) = model.clone() else {
            next = tokio::time::Instant::now() + backoff(failures);
            continue;
        };
        let first = startup;
        let moved = std::mem::take(&mut recs);
        let started = Instant::now();
        let (back, mut pass) = tokio::task::spawn_blocking(move || {
            let mut recs = moved;
            let mut pass = Pass {
                startup: first,
                ..Pass::default()
            };
            run_pass(&mut recs, &m, &mut pass);
            (recs, pass)
        })
        .await
        .map_err(|e| AgentError::Crashed(e.to_string()))?;
        recs = back;
        if first {
            tracing::info!(
                elapsed_ms = started.elapsed().as_millis(),
                "start-up sync and sweep done"
            );
        }
        startup = false;
        if pass.changes > 0 {
            tracing::debug!(
                changes = pass.changes,
                elapsed_ms = started.elapsed().as_millis(),
                "pass applied changes"
            );
        }
        for (port, status) in std::mem::take(&mut pass.port_status) {
            match client.port_status(&port, &host, status).await {
                Ok(()) => {
                    tracing::info!(port_id = %port, status = status.as_str(), "port status reported")
                }
                Err(e) if matches!(e.status(), Some(404 | 409)) => {
                    tracing::debug!(port_id = %port, error = %e, "port status not taken")
                }
                Err(e) => tracing::warn!(port_id = %port, error = %e, "port status report failed"),
            }
        }
        // dhcp-ready: the entries new or changed since the last accepted report.
        let ready = std::mem::take(&mut pass.dhcp_ready);
        let fresh: Vec<String> = ready
            .iter()
            .filter(|(id, fp)| dhcp_reported.get(id) != Some(fp))
            .map(|(id, _)| id.clone())
            .collect();
        if !fresh.is_empty() {
            match client.dhcp_ready(&host, &fresh).await {
                Ok(()) => {
                    tracing::debug!(ports = fresh.len(), "dhcp ready reported");
                    dhcp_reported = ready.into_iter().collect();
                }
                Err(e) => tracing::warn!(error = %e, "dhcp ready report failed"),
            }
        } else if dhcp_reported.len() != ready.len() {
            let present: std::collections::HashSet<&String> =
                ready.iter().map(|(id, _)| id).collect();
            dhcp_reported.retain(|id, _| present.contains(id));
        }
        for (fip, status) in std::mem::take(&mut pass.floating_ip_status) {
            match client.floatingip_status(&fip, &host, status).await {
                Ok(()) => {
                    tracing::info!(floatingip_id = %fip, status = status.as_str(), "floating IP status reported")
                }
                Err(e) => {
                    tracing::warn!(floatingip_id = %fip, error = %e, "floating IP status report failed")
                }
            }
        }
        let errors = status_errors(&pass.failures);
        health_tx.send_if_modified(|h| {
            let changed = *h != errors;
            if changed {
                *h = errors;
            }
            changed
        });
        match pass.result() {
            Ok(()) if !need_state => {
                failures = 0;
                next = tokio::time::Instant::now() + poll;
            }
            Ok(()) => {
                next = tokio::time::Instant::now() + backoff(failures);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, retry_in_s = backoff(failures).as_secs(), "reconcile pass had failures");
                next = tokio::time::Instant::now()
                    + backoff(failures).min(poll.max(Duration::from_secs(1)) * 15);
            }
        }
    }
    tasks.abort_all();
    tracing::info!("agent stopped (dataplane left in place)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutrino_ini::Ini;

    fn cfg(extra: &str) -> AgentConfig {
        let text = format!(
            "[vxlan]\nenable_vxlan = false\n[neutrino]\nidentity_url = http://198.18.0.1:5000/v3\n\
             password = pw\n{extra}"
        );
        AgentConfig::from_ini(&Ini::parse(&text, "test").unwrap(), Some("h1")).unwrap()
    }

    fn types(c: &AgentConfig) -> Vec<(String, String)> {
        reports(c)
            .into_iter()
            .map(|r| (r.agent_type, r.binary))
            .collect()
    }

    #[test]
    fn failures_show_in_their_agents_status() {
        use crate::runner::Failure;
        let f = |reconciler, object: &str, msg: &str| Failure {
            reconciler,
            object: object.into(),
            error: neutrino_host::HostError::Invalid(msg.into()),
        };
        let errors = status_errors(&[
            f(
                "dhcp",
                "net1",
                "dnsmasq: cannot read /s/host: Permission denied",
            ),
            f("l2", "tap1", "no such device"),
            f("metadata", "qrouter-1", "haproxy: exited"),
        ]);
        assert_eq!(
            errors[agent_type::DHCP],
            vec!["dhcp net1: dnsmasq: cannot read /s/host: Permission denied".to_string()]
        );
        let c = cfg("agent_roles = l2,dhcp\n");
        let mut reps = reports(&c);
        let types: Vec<String> = reps.iter().map(|r| r.agent_type.clone()).collect();
        for r in reps.iter_mut() {
            set_errors(r, &errors, &types);
        }
        let of = |t: &str| {
            reps.iter()
                .find(|r| r.agent_type == t)
                .unwrap()
                .configurations["errors"]
                .clone()
        };
        assert_eq!(
            of(agent_type::DHCP),
            json!(["dhcp net1: dnsmasq: cannot read /s/host: Permission denied"])
        );
        // No metadata agent reported here: its errors show under the L2 agent.
        assert_eq!(
            of(agent_type::LINUXBRIDGE),
            json!([
                "l2 tap1: no such device",
                "metadata qrouter-1: haproxy: exited"
            ])
        );
        // No failures: an empty list (the status says so instead of keeping old errors).
        for r in reps.iter_mut() {
            set_errors(r, &BTreeMap::new(), &types);
            assert_eq!(r.configurations["errors"], json!([]));
        }
    }

    #[test]
    fn the_metadata_agent_is_reported_when_the_proxy_runs() {
        let t = types(&cfg("agent_roles = l2,dhcp\n"));
        assert!(!t.iter().any(|(a, _)| a == "Metadata agent"), "{t:?}");
        let c = cfg("agent_roles = l2,dhcp,l3\n");
        let t = types(&c);
        assert!(
            t.contains(&("Metadata agent".into(), "neutron-metadata-agent".into())),
            "{t:?}"
        );
        let r = reports(&c);
        let m = r.iter().find(|r| r.agent_type == "Metadata agent").unwrap();
        assert_eq!(
            m.configurations["metadata_proxy_socket"],
            json!("/var/lib/neutrino/metadata_proxy")
        );
        assert_eq!(m.availability_zone, None);
        // The haproxy reconciler runs after L3 and DHCP (their namespaces first).
        let net: Arc<dyn Net> = Arc::new(neutrino_host::fake::FakeNet::new());
        let procs: Arc<dyn Procs> = Arc::new(neutrino_host::fake::FakeProcs::default());
        let names: Vec<&str> = reconcilers(&c, net, procs)
            .iter()
            .map(|r| r.name())
            .collect();
        assert_eq!(names.last(), Some(&"metadata"), "{names:?}");
    }
}
