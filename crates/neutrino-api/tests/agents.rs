//! Agents, port binding, DHCP scheduling, availability zones and the agent sync protocol
//! (`/agent/v1`), on SQLite and (when configured) PostgreSQL.
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use neutrino_api::{ApiState, AuthFuture, Authenticate};
use neutrino_core::config::{Config, Ini};
use neutrino_core::{Context, Db};
use serde_json::{Value, json};
use support::{TestServer, err_type};

const ML2: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan\ntenant_network_types = vxlan\n\
                   mechanism_drivers = linuxbridge,l2population\n\
                   [ml2_type_vxlan]\nvni_ranges = 1:1000\n[ml2_type_flat]\nflat_networks = *\n";

fn ini(extra: &str) -> String {
    format!("{ML2}[DEFAULT]\n{extra}\n")
}

/// Reports an agent (heartbeat) and returns the reply.
async fn report(
    srv: &TestServer,
    host: &str,
    agent_type: &str,
    az: Option<&str>,
    conf: Value,
) -> Value {
    let binary = match agent_type {
        "DHCP agent" => "neutron-dhcp-agent",
        "L3 agent" => "neutron-l3-agent",
        _ => "neutron-linuxbridge-agent",
    };
    let (s, b) = srv
        .post(
            "/agent/v1/report",
            "admin",
            json!({"host": host, "agent_type": agent_type, "binary": binary,
                   "topic": "N/A", "availability_zone": az, "configurations": conf}),
        )
        .await;
    assert_eq!(s, 200, "report: {b}");
    b
}

async fn lb_agent(srv: &TestServer, host: &str, ip: &str) -> Value {
    report(
        srv,
        host,
        "Linux bridge agent",
        None,
        json!({"tunnel_types": ["vxlan"], "tunneling_ip": ip,
               "interface_mappings": {"physnet1": "eth1"}}),
    )
    .await
}

async fn port(srv: &TestServer, body: Value) -> Value {
    let (s, b) = srv
        .post("/v2.0/ports", "admin", json!({"port": body}))
        .await;
    assert_eq!(s, 201, "create port: {b}");
    b["port"].clone()
}

async fn put_port(srv: &TestServer, id: &str, body: Value) -> Value {
    let (s, b) = srv
        .put(&format!("/v2.0/ports/{id}"), "admin", json!({"port": body}))
        .await;
    assert_eq!(s, 200, "update port: {b}");
    b["port"].clone()
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

// ---------------------------------------------------------------------------------------------

async fn agents_lifecycle(srv: &TestServer) {
    let r = lb_agent(srv, "h1", "192.0.2.1").await;
    assert_eq!(r["status"], json!("new"));
    let agent = &r["agent"];
    assert_eq!(agent["alive"], json!(true));
    assert_eq!(agent["admin_state_up"], json!(true));
    assert_eq!(agent["agent_type"], json!("Linux bridge agent"));
    assert_eq!(agent["availability_zone"], Value::Null);
    let ts = agent["heartbeat_timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 19, "Neutron's 'YYYY-MM-DD HH:MM:SS': {ts}");
    assert_eq!(&ts[10..11], " ");
    let aid = id(agent);
    // The second report updates the same agent.
    assert_eq!(
        lb_agent(srv, "h1", "192.0.2.1").await["status"],
        json!("alive")
    );
    report(
        srv,
        "h1",
        "DHCP agent",
        Some("nova"),
        json!({"networks": 0}),
    )
    .await;

    let (s, b) = srv.get("/v2.0/agents", "admin").await;
    assert_eq!(s, 200);
    assert_eq!(b["agents"].as_array().unwrap().len(), 2, "{b}");
    let (_, b) = srv
        .get("/v2.0/agents?agent_type=DHCP%20agent", "admin")
        .await;
    assert_eq!(b["agents"].as_array().unwrap().len(), 1);
    assert_eq!(b["agents"][0]["availability_zone"], json!("nova"));
    // Text filters compare as Neutron's on MySQL (case-insensitive collation): Tempest's
    // DHCP scheduler tests look for `agent_type=DHCP Agent`.
    for (q, n) in [
        ("agent_type=DHCP%20Agent", 1),
        ("agent_type=dhcp%20agent&host=H1", 1),
        ("binary=NEUTRON-DHCP-AGENT", 1),
        ("host=H1", 2),
        ("agent_type=DHCP", 0),
    ] {
        let (_, b) = srv.get(&format!("/v2.0/agents?{q}"), "admin").await;
        assert_eq!(b["agents"].as_array().unwrap().len(), n, "{q}: {b}");
    }
    for k in [
        "id",
        "binary",
        "topic",
        "host",
        "created_at",
        "started_at",
        "configurations",
        "description",
        "resources_synced",
        "resource_versions",
    ] {
        assert!(b["agents"][0].get(k).is_some(), "missing {k}");
    }

    // Non-admins see nothing (Tempest: 200 with an empty list), and cannot touch one.
    let (s, b) = srv.get("/v2.0/agents", "member:p1").await;
    assert_eq!((s, b), (200, json!({"agents": []})));
    let (s, b) = srv.get(&format!("/v2.0/agents/{aid}"), "member:p1").await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "AgentNotFound");
    let (s, _) = srv
        .put(
            &format!("/v2.0/agents/{aid}"),
            "member:p1",
            json!({"agent": {"admin_state_up": false}}),
        )
        .await;
    assert_eq!(s, 404);

    // Admin state and description are writable; the rest is read-only.
    let (s, b) = srv
        .put(
            &format!("/v2.0/agents/{aid}"),
            "admin",
            json!({"agent": {"admin_state_up": false, "description": "rack 3"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["agent"]["admin_state_up"], json!(false));
    assert_eq!(b["agent"]["description"], json!("rack 3"));
    let (s, b) = srv
        .put(
            &format!("/v2.0/agents/{aid}"),
            "admin",
            json!({"agent": {"host": "elsewhere"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    // Heartbeats stop: after agent_down_time (2 s here) the agent is down (XXX).
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let (_, b) = srv.get(&format!("/v2.0/agents/{aid}"), "admin").await;
    assert_eq!(b["agent"]["alive"], json!(false), "{b}");
    let (_, b) = srv.get("/v2.0/agents?alive=false", "admin").await;
    assert_eq!(b["agents"].as_array().unwrap().len(), 2);
    assert_eq!(
        lb_agent(srv, "h1", "192.0.2.1").await["status"],
        json!("revived")
    );
    let (_, b) = srv.get(&format!("/v2.0/agents/{aid}"), "admin").await;
    assert_eq!(b["agent"]["alive"], json!(true));

    let (s, _) = srv.delete(&format!("/v2.0/agents/{aid}"), "admin").await;
    assert_eq!(s, 204);
    let (s, b) = srv.get(&format!("/v2.0/agents/{aid}"), "admin").await;
    assert_eq!((s, err_type(&b)), (404, "AgentNotFound"));

    // The agent API needs the admin role.
    let (s, _) = srv
        .post(
            "/agent/v1/report",
            "member:p1",
            json!({"host": "h9", "agent_type": "DHCP agent", "binary": "x"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = srv
        .post("/agent/v1/report", "admin", json!({"host": "h9"}))
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn agents_appear_and_go_down_sqlite() {
    agents_lifecycle(&TestServer::start_with(&ini("agent_down_time = 2")).await).await;
}

#[tokio::test]
async fn agents_appear_and_go_down_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("agent_down_time = 2")).await {
        agents_lifecycle(&srv).await;
        srv.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------

async fn binding(srv: &TestServer) {
    lb_agent(srv, "h1", "192.0.2.1").await;
    let net = srv.network("admin", json!({"name": "n1"})).await;
    let net_id = id(&net);

    let p = port(srv, json!({"network_id": net_id, "binding:host_id": "h1"})).await;
    assert_eq!(p["binding:vif_type"], json!("bridge"), "{p}");
    assert_eq!(
        p["binding:vif_details"],
        json!({"port_filter": true, "connectivity": "l2"})
    );
    assert_eq!(p["status"], json!("DOWN"));
    let pid = id(&p);

    // No agent on h2: binding fails; no host: unbound.
    let q = port(srv, json!({"network_id": net_id, "binding:host_id": "h2"})).await;
    assert_eq!(q["binding:vif_type"], json!("binding_failed"));
    let u = port(srv, json!({"network_id": net_id})).await;
    assert_eq!(u["binding:vif_type"], json!("unbound"));
    // Only normal vNICs bind.
    let d = port(
        srv,
        json!({"network_id": net_id, "binding:host_id": "h1", "binding:vnic_type": "direct"}),
    )
    .await;
    assert_eq!(d["binding:vif_type"], json!("binding_failed"));
    // Binding a failed port once an agent is there.
    lb_agent(srv, "h2", "192.0.2.2").await;
    // Re-sending the host retries the binding (what Nova does).
    let q = put_port(srv, &id(&q), json!({"binding:host_id": "h2"})).await;
    assert_eq!(q["binding:vif_type"], json!("bridge"));
    let q = put_port(srv, &id(&q), json!({"binding:host_id": "h1"})).await;
    assert_eq!(q["binding:vif_type"], json!("bridge"));
    assert_eq!(q["status"], json!("DOWN"));

    // The host's agent reports the port wired: ACTIVE, through a revision bump.
    let rev = p["revision_number"].as_i64().unwrap();
    let (s, b) = srv
        .post(
            &format!("/agent/v1/ports/{pid}/status"),
            "admin",
            json!({"host": "h1", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = srv.get(&format!("/v2.0/ports/{pid}"), "admin").await;
    assert_eq!(b["port"]["status"], json!("ACTIVE"));
    assert_eq!(b["port"]["revision_number"], json!(rev + 1));
    // Another host may not.
    let (s, b) = srv
        .post(
            &format!("/agent/v1/ports/{pid}/status"),
            "admin",
            json!({"host": "h2", "status": "DOWN"}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "PortNotBoundToHost"));
    let (s, _) = srv
        .post(
            "/agent/v1/ports/00000000-0000-0000-0000-000000000000/status",
            "admin",
            json!({"host": "h1", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(s, 404);

    // Unbinding: unbound and DOWN.
    let p = put_port(srv, &pid, json!({"binding:host_id": ""})).await;
    assert_eq!(p["binding:vif_type"], json!("unbound"));
    assert_eq!(p["status"], json!("DOWN"));
}

#[tokio::test]
async fn port_binding_sqlite() {
    binding(&TestServer::start_with(&ini("")).await).await;
}

#[tokio::test]
async fn port_binding_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("")).await {
        binding(&srv).await;
        srv.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------

async fn subnet(srv: &TestServer, net_id: &str, cidr: &str) -> Value {
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4}}),
        )
        .await;
    assert_eq!(s, 201, "create subnet: {b}");
    b["subnet"].clone()
}

async fn dhcp_host(srv: &TestServer, host: &str, az: &str, ip: &str) -> String {
    lb_agent(srv, host, ip).await;
    id(&report(srv, host, "DHCP agent", Some(az), json!({"networks": 0})).await["agent"])
}

async fn dhcp_agents_of(srv: &TestServer, net_id: &str) -> Vec<Value> {
    let (s, b) = srv
        .get(&format!("/v2.0/networks/{net_id}/dhcp-agents"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    b["agents"].as_array().cloned().unwrap_or_default()
}

async fn dhcp_ports(srv: &TestServer, net_id: &str) -> Vec<Value> {
    let (_, b) = srv
        .get(
            &format!("/v2.0/ports?network_id={net_id}&device_owner=network:dhcp"),
            "admin",
        )
        .await;
    b["ports"].as_array().cloned().unwrap_or_default()
}

async fn az_scheduling(srv: &TestServer) {
    let a1 = dhcp_host(srv, "net1", "az1", "192.0.2.11").await;
    let a2 = dhcp_host(srv, "net2", "az1", "192.0.2.12").await;
    let b1 = dhcp_host(srv, "net3", "az2", "192.0.2.13").await;

    // Zones: az1 and az2 for networks.
    let (_, b) = srv.get("/v2.0/availability_zones", "member:p1").await;
    let mut zones: Vec<(String, String, String)> = b["availability_zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["name"].as_str().unwrap().into(),
                z["resource"].as_str().unwrap().into(),
                z["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    zones.sort();
    assert_eq!(
        zones,
        vec![
            ("az1".into(), "network".into(), "available".into()),
            ("az2".into(), "network".into(), "available".into())
        ]
    );

    // Unknown hint: AvailabilityZoneNotFound.
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "member:p1",
            json!({"network": {"availability_zone_hints": ["az9"]}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (404, "AvailabilityZoneNotFound"), "{b}");
    let (s, _) = srv
        .post(
            "/v2.0/networks",
            "member:p1",
            json!({"network": {"availability_zone_hints": ["az1", "az1"]}}),
        )
        .await;
    assert_eq!(s, 400);

    // E16: two zones hinted, two DHCP agents per network: one in each zone.
    let net = srv
        .network(
            "member:p1",
            json!({"name": "network01", "availability_zone_hints": ["az1", "az2"]}),
        )
        .await;
    assert_eq!(net["availability_zone_hints"], json!(["az1", "az2"]));
    assert_eq!(net["availability_zones"], json!([]));
    let net_id = id(&net);
    subnet(srv, &net_id, "10.0.0.0/24").await;
    let hosting = dhcp_agents_of(srv, &net_id).await;
    assert_eq!(hosting.len(), 2, "{hosting:?}");
    let hosting_ids: Vec<String> = hosting.iter().map(id).collect();
    assert!(hosting_ids.contains(&b1), "one agent in az2");
    assert!(hosting_ids.contains(&a1) ^ hosting_ids.contains(&a2));
    let (_, b) = srv
        .get(&format!("/v2.0/networks/{net_id}"), "member:p1")
        .await;
    assert_eq!(b["network"]["availability_zones"], json!(["az1", "az2"]));

    // Each scheduled agent has its DHCP port on its host, with an address.
    let ports = dhcp_ports(srv, &net_id).await;
    assert_eq!(ports.len(), 2, "{ports:?}");
    for p in &ports {
        let host = p["binding:host_id"].as_str().unwrap();
        let dev = p["device_id"].as_str().unwrap();
        assert!(
            dev.starts_with("dhcp") && dev.ends_with(&format!("-{net_id}")),
            "{dev}"
        );
        assert_eq!(p["binding:vif_type"], json!("bridge"), "bound on {host}");
        assert_eq!(p["fixed_ips"].as_array().unwrap().len(), 1);
    }
    // A second subnet gives the DHCP ports an address there too.
    subnet(srv, &net_id, "10.0.1.0/24").await;
    for p in dhcp_ports(srv, &net_id).await {
        assert_eq!(p["fixed_ips"].as_array().unwrap().len(), 2, "{p}");
    }

    // A network hinted at az2 only goes to az2's agent, whatever the load.
    let n2 = srv
        .network("member:p1", json!({"availability_zone_hints": ["az2"]}))
        .await;
    subnet(srv, &id(&n2), "10.1.0.0/24").await;
    let h: Vec<String> = dhcp_agents_of(srv, &id(&n2)).await.iter().map(id).collect();
    assert_eq!(h, vec![b1.clone()]);

    // The admin API: list, add (errors as Neutron), remove.
    let (s, b) = srv
        .get(&format!("/v2.0/agents/{b1}/dhcp-networks"), "admin")
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["networks"].as_array().unwrap().len(), 2, "{b}");
    let (s, _) = srv
        .get(&format!("/v2.0/agents/{b1}/dhcp-networks"), "member:p1")
        .await;
    assert_eq!(s, 403);
    let spare = if hosting_ids.contains(&a1) { &a2 } else { &a1 };
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{b1}/dhcp-networks"),
            "admin",
            json!({"network_id": net_id}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "NetworkHostedByDHCPAgent"));
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{spare}/dhcp-networks"),
            "admin",
            json!({"network_id": net_id}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(dhcp_agents_of(srv, &net_id).await.len(), 3);
    assert_eq!(dhcp_ports(srv, &net_id).await.len(), 3);
    let lb: String = {
        let (_, b) = srv
            .get(
                "/v2.0/agents?agent_type=Linux%20bridge%20agent&host=net1",
                "admin",
            )
            .await;
        id(&b["agents"][0])
    };
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{lb}/dhcp-networks"),
            "admin",
            json!({"network_id": net_id}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (404, "InvalidDHCPAgent"));
    let (s, b) = srv
        .delete(
            &format!("/v2.0/agents/{spare}/dhcp-networks/{net_id}"),
            "admin",
        )
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .delete(
            &format!("/v2.0/agents/{spare}/dhcp-networks/{net_id}"),
            "admin",
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "NetworkNotHostedByDhcpAgent"));
    assert_eq!(dhcp_agents_of(srv, &net_id).await.len(), 2);
    // The removed agent's port stays, reserved for the next agent.
    let reserved: Vec<Value> = dhcp_ports(srv, &net_id)
        .await
        .into_iter()
        .filter(|p| p["device_id"] == json!("reserved_dhcp_port"))
        .collect();
    assert_eq!(reserved.len(), 1);

    // Deleting the network takes its DHCP ports and bindings along.
    let (s, b) = srv
        .delete(&format!("/v2.0/networks/{}", id(&n2)), "member:p1")
        .await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv
        .get(&format!("/v2.0/agents/{b1}/dhcp-networks"), "admin")
        .await;
    assert_eq!(b["networks"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn dhcp_scheduling_across_zones_sqlite() {
    az_scheduling(&TestServer::start_with(&ini("dhcp_agents_per_network = 2")).await).await;
}

#[tokio::test]
async fn dhcp_scheduling_across_zones_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("dhcp_agents_per_network = 2")).await {
        az_scheduling(&srv).await;
        srv.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------

fn fake_auth() -> Authenticate {
    Arc::new(|token: String| -> AuthFuture {
        Box::pin(async move {
            match token.as_str() {
                "admin" => Ok(Context::admin("admin-project")),
                _ => Err(neutrino_core::ApiError::unauthorized()),
            }
        })
    })
}

fn state_on(db: &Db, ini_text: &str) -> ApiState {
    let cfg = Config::from_ini(Ini::parse(ini_text, "test").unwrap()).unwrap();
    ApiState::new(
        db.clone(),
        cfg,
        neutrino_api::policy::Policy::defaults(),
        fake_auth(),
    )
}

async fn failover(srv: &TestServer, ini_text: &str) {
    let a1 = dhcp_host(srv, "f1", "nova", "192.0.2.21").await;
    let a2 = dhcp_host(srv, "f2", "nova", "192.0.2.22").await;
    let net = srv.network("admin", json!({})).await;
    let net_id = id(&net);
    subnet(srv, &net_id, "10.2.0.0/24").await;
    let hosting = dhcp_agents_of(srv, &net_id).await;
    assert_eq!(hosting.len(), 1);
    let (dead, live) = if id(&hosting[0]) == a1 {
        (a1, a2)
    } else {
        (a2, a1)
    };
    let before = dhcp_ports(srv, &net_id).await;
    assert_eq!(before.len(), 1);

    let st = state_on(&srv.db, ini_text);
    let now = neutrino_api::agents::now_us();
    // Nobody is dead yet.
    assert_eq!(
        neutrino_api::scheduler::DHCP
            .check_failover(&st, now)
            .await
            .unwrap(),
        0
    );
    // The hosting agent went silent (and started) long ago: its network moves.
    sqlx::query("UPDATE agents SET heartbeat_at = $1, started_at = $1 WHERE id = $2")
        .bind(now - 3_600_000_000)
        .bind(&dead)
        .execute(srv.db.reader())
        .await
        .unwrap();
    assert_eq!(
        neutrino_api::scheduler::DHCP
            .check_failover(&st, now)
            .await
            .unwrap(),
        1
    );
    let hosting: Vec<String> = dhcp_agents_of(srv, &net_id).await.iter().map(id).collect();
    assert_eq!(hosting, vec![live.clone()]);
    // The DHCP port (and its address) moved with it.
    let after = dhcp_ports(srv, &net_id).await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], before[0]["id"]);
    assert_eq!(after[0]["fixed_ips"], before[0]["fixed_ips"]);
    assert_ne!(after[0]["binding:host_id"], before[0]["binding:host_id"]);
    assert_eq!(after[0]["binding:vif_type"], json!("bridge"));
    // Nothing more to do.
    assert_eq!(
        neutrino_api::scheduler::DHCP
            .check_failover(&st, now)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn dhcp_failover_sqlite() {
    let i = ini("");
    failover(&TestServer::start_with(&i).await, &i).await;
}

#[tokio::test]
async fn dhcp_failover_postgres() {
    let i = ini("");
    if let Some(srv) = TestServer::start_pg(&i).await {
        failover(&srv, &i).await;
        srv.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// The watch protocol.

async fn poll(srv: &TestServer, host: &str, since: i64, timeout: u64) -> (u16, Value) {
    srv.get(
        &format!("/agent/v1/hosts/{host}/changes?since={since}&timeout={timeout}"),
        "admin",
    )
    .await
}

fn summary(batch: &Value) -> Vec<(String, String, String)> {
    batch["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["resource"].as_str().unwrap().to_string(),
                c["id"].as_str().unwrap().to_string(),
                c["op"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn t(r: &str, id: &str, op: &str) -> (String, String, String) {
    (r.to_string(), id.to_string(), op.to_string())
}

async fn watch(srv: &TestServer) {
    lb_agent(srv, "w1", "192.0.2.31").await;
    lb_agent(srv, "w2", "192.0.2.32").await;
    let na = id(&srv.network("admin", json!({"name": "na"})).await);
    let nb = id(&srv.network("admin", json!({"name": "nb"})).await);
    let a = id(&port(
        srv,
        json!({"network_id": na, "binding:host_id": "w1", "security_groups": []}),
    )
    .await);
    let b = id(&port(
        srv,
        json!({"network_id": nb, "binding:host_id": "w2", "security_groups": []}),
    )
    .await);

    // The full state of w1: its port, its network with segments, its agent, and the
    // l2population view of the network (nobody else there yet).
    let (s, st) = srv.get("/agent/v1/hosts/w1/state", "admin").await;
    assert_eq!(s, 200, "{st}");
    let seq = st["seq"].as_i64().unwrap();
    assert_eq!(st["ports"].as_array().unwrap().len(), 1);
    assert_eq!(st["ports"][0]["id"], json!(a));
    assert_eq!(st["networks"][0]["network"]["id"], json!(na));
    assert_eq!(
        st["networks"][0]["segments"][0]["network_type"],
        json!("vxlan")
    );
    assert_eq!(st["agents"].as_array().unwrap().len(), 1);
    assert_eq!(st["l2pop"][0]["hosts"], json!([]));

    // Nothing new: an immediate answer, cursor unchanged.
    let (s, r) = poll(srv, "w1", seq, 0).await;
    assert_eq!(s, 200);
    assert_eq!(r, json!({"seq": seq, "changes": []}));

    // A waiting watcher gets the change of its port, not the other host's.
    let url = format!(
        "{}/agent/v1/hosts/w1/changes?since={seq}&timeout=10",
        srv.url
    );
    let waiter = tokio::spawn(async move {
        let r = reqwest::Client::new()
            .get(url)
            .header("x-auth-token", "admin")
            .send()
            .await
            .unwrap();
        (Instant::now(), r.json::<Value>().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    put_port(srv, &b, json!({"name": "other host"})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "woke for another host's port");
    let sent = Instant::now();
    put_port(srv, &a, json!({"name": "mine"})).await;
    let (got, r) = waiter.await.unwrap();
    eprintln!(
        "[{:?}] in-process wake-up: {:.1} ms",
        srv.db.backend(),
        (got - sent).as_secs_f64() * 1000.0
    );
    assert_eq!(summary(&r), vec![t("port", &a, "update")]);
    assert_eq!(r["changes"][0]["object"]["name"], json!("mine"));
    let cursor = r["seq"].as_i64().unwrap();

    // Disconnected meanwhile: exactly the relevant changes come back on reconnect, in order,
    // each with the current document.
    put_port(srv, &a, json!({"name": "a2"})).await; // relevant: bound to w1
    put_port(srv, &b, json!({"name": "b2"})).await; // other host, other network
    let d = id(&port(
        srv,
        json!({"network_id": na, "binding:host_id": "w2", "security_groups": []}),
    )
    .await); // w1's network
    let e = id(&port(srv, json!({"network_id": nb, "security_groups": []})).await); // unbound, other network
    put_port(srv, &d, json!({"name": "d2"})).await; // w1's network
    srv.delete(&format!("/v2.0/ports/{e}"), "admin").await;
    let (_, r) = poll(srv, "w1", cursor, 0).await;
    assert_eq!(
        summary(&r),
        vec![
            t("port", &a, "update"),
            t("port", &d, "create"),
            t("port", &d, "update")
        ]
    );
    assert_eq!(r["changes"][1]["object"]["name"], json!("d2"));
    // Asking again from the same cursor gives the same answer (nothing consumed) ...
    let (_, again) = poll(srv, "w1", cursor, 0).await;
    assert_eq!(again, r);
    // ... and from the new cursor, nothing.
    let cursor = r["seq"].as_i64().unwrap();
    let (_, r) = poll(srv, "w1", cursor, 0).await;
    assert_eq!(summary(&r), vec![]);
    let cursor = r["seq"].as_i64().unwrap();

    // w1's state now shows w2's port on the shared network (l2population).
    let (_, st) = srv.get("/agent/v1/hosts/w1/state", "admin").await;
    let hosts = &st["l2pop"][0]["hosts"];
    assert_eq!(hosts[0]["host"], json!("w2"));
    assert_eq!(hosts[0]["local_ip"], json!("192.0.2.32"));
    assert_eq!(hosts[0]["ports"][0]["port_id"], json!(d));

    // A port moving away still tells the host it left, and nothing afterwards.
    put_port(srv, &a, json!({"binding:host_id": "w2"})).await;
    put_port(srv, &a, json!({"name": "gone to w2"})).await;
    srv.delete(&format!("/v2.0/ports/{a}"), "admin").await;
    let (_, r) = poll(srv, "w1", cursor, 0).await;
    assert_eq!(summary(&r), vec![t("port", &a, "update")]);
    let cursor = r["seq"].as_i64().unwrap();
    // w2 sees the whole story of a, and its own agent's changes.
    let (_, r) = poll(srv, "w2", cursor - 1, 0).await;
    assert!(summary(&r).contains(&t("port", &a, "delete")), "{r}");

    // Remote security groups: w3's port is in the default group, whose rules reference the
    // group itself, so a member anywhere (another host, another network) concerns w3.
    lb_agent(srv, "w3", "192.0.2.33").await;
    let nc = id(&srv.network("admin", json!({"name": "nc"})).await);
    port(srv, json!({"network_id": nc, "binding:host_id": "w3"})).await;
    let (_, st3) = srv.get("/agent/v1/hosts/w3/state", "admin").await;
    let c3 = st3["seq"].as_i64().unwrap();
    assert_eq!(st3["security_groups"].as_array().unwrap().len(), 1, "{st3}");
    let member = id(&port(srv, json!({"network_id": nb, "binding:host_id": "w2"})).await);
    put_port(srv, &b, json!({"name": "b3"})).await; // not in the group
    let (_, r) = poll(srv, "w3", c3, 0).await;
    assert_eq!(summary(&r), vec![t("port", &member, "create")]);
    let (_, st3) = srv.get("/agent/v1/hosts/w3/state", "admin").await;
    assert_eq!(
        st3["security_groups"][0]["member_ports"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Cursors from nowhere: 410, resync.
    let (s, b) = poll(srv, "w1", cursor + 1_000_000, 0).await;
    assert_eq!((s, err_type(&b)), (410, "ChangeLogGone"));
    let (s, _) = srv.get("/agent/v1/hosts/w1/changes?since=x", "admin").await;
    assert_eq!(s, 400);

    // Trimming the log: resuming from before the trimmed point is 410.
    let st = state_on(&srv.db, &ini("[neutrino]\nchange_log_retention_days = 1"));
    let later = neutrino_api::agents::now_us() + 2 * 86_400_000_000;
    let removed = neutrino_api::agent_api::trim_change_log(&st, later)
        .await
        .unwrap();
    assert!(removed > 0);
    let (s, _) = poll(srv, "w1", cursor, 0).await;
    assert_eq!(s, 410);
    // A resync gives a cursor that works.
    let (_, st) = srv.get("/agent/v1/hosts/w1/state", "admin").await;
    let head = st["seq"].as_i64().unwrap();
    assert!(head >= cursor);
    let (s, r) = poll(srv, "w1", head, 0).await;
    assert_eq!((s, r), (200, json!({"seq": head, "changes": []})));
}

#[tokio::test]
async fn watch_protocol_sqlite() {
    watch(&TestServer::start_with(&ini("")).await).await;
}

#[tokio::test]
async fn watch_protocol_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("")).await {
        watch(&srv).await;
        srv.cleanup().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Two servers on one PostgreSQL database: a change through B reaches a watcher on A.

struct Peer {
    url: String,
    db: Db,
}

async fn peer(db_url: &str, ini_text: &str) -> Peer {
    let db = Db::connect(db_url).await.unwrap();
    db.migrate().await.unwrap();
    let app = neutrino_api::router(state_on(&db, ini_text));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Peer {
        url: format!("http://{addr}"),
        db,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test]
async fn cross_server_propagation_postgres() {
    let Some(base) = support::pg_url() else {
        return;
    };
    let name = format!("neutrino_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Db::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.reader())
        .await
        .unwrap();
    let db_url = match base.rfind('/') {
        Some(i) if i > base.find("://").map(|x| x + 2).unwrap_or(0) => {
            format!("{}/{name}", &base[..i])
        }
        _ => format!("{base}/{name}"),
    };
    let i = ini("");
    let a = peer(&db_url, &i).await;
    let b = peer(&db_url, &i).await;
    let client = reqwest::Client::new();
    let call = |base: String, method: reqwest::Method, path: String, body: Option<Value>| {
        let client = client.clone();
        async move {
            let mut rb = client
                .request(method, format!("{base}{path}"))
                .header("x-auth-token", "admin");
            if let Some(body) = body {
                rb = rb.json(&body);
            }
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    use reqwest::Method;
    let (s, _) = call(
        b.url.clone(),
        Method::POST,
        "/agent/v1/report".into(),
        Some(
            json!({"host": "x1", "agent_type": "Linux bridge agent", "binary": "lb",
                    "configurations": {"tunnel_types": ["vxlan"]}}),
        ),
    )
    .await;
    assert_eq!(s, 200);
    let (_, n) = call(
        b.url.clone(),
        Method::POST,
        "/v2.0/networks".into(),
        Some(json!({"network": {}})),
    )
    .await;
    let net_id = id(&n["network"]);
    let (_, p) = call(
        b.url.clone(),
        Method::POST,
        "/v2.0/ports".into(),
        Some(json!({"port": {"network_id": net_id, "binding:host_id": "x1"}})),
    )
    .await;
    let pid = id(&p["port"]);
    assert!(!pid.is_empty(), "{p}");
    let (_, st) = call(
        a.url.clone(),
        Method::GET,
        "/agent/v1/hosts/x1/state".into(),
        None,
    )
    .await;
    let mut cursor = st["seq"].as_i64().unwrap();

    const N: usize = 200;
    let mut delays = Vec::with_capacity(N);
    let mut put_latency = Vec::with_capacity(N);
    let mut after_commit = Vec::with_capacity(N);
    for k in 0..N {
        let poll = tokio::spawn(call(
            a.url.clone(),
            Method::GET,
            format!("/agent/v1/hosts/x1/changes?since={cursor}&timeout=10"),
            None,
        ));
        // Let the watcher on A settle into its wait.
        tokio::time::sleep(Duration::from_millis(15)).await;
        let sent = Instant::now();
        let put = call(
            b.url.clone(),
            Method::PUT,
            format!("/v2.0/ports/{pid}"),
            Some(json!({"port": {"name": format!("n{k}")}})),
        );
        let ((s, _), put_done) = {
            let r = put.await;
            (r, Instant::now())
        };
        assert_eq!(s, 200);
        let (s, r) = poll.await.unwrap();
        let got = Instant::now();
        assert_eq!(s, 200);
        assert_eq!(summary(&r), vec![t("port", &pid, "update")], "{r}");
        assert_eq!(r["changes"][0]["object"]["name"], json!(format!("n{k}")));
        cursor = r["seq"].as_i64().unwrap();
        delays.push((got - sent).as_secs_f64() * 1000.0);
        put_latency.push((put_done - sent).as_secs_f64() * 1000.0);
        after_commit.push(got.saturating_duration_since(put_done).as_secs_f64() * 1000.0);
    }
    after_commit.sort_by(f64::total_cmp);
    delays.sort_by(f64::total_cmp);
    put_latency.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    eprintln!(
        "cross-server propagation over {N} changes (PUT sent to B -> watcher on A answered): \
         p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms; PUT on B alone: p50 {:.1} ms, \
         p99 {:.1} ms; B's answer -> A's answer: p50 {:.1} ms, p99 {:.1} ms",
        delays[N - 1],
        percentile(&put_latency, 0.5),
        percentile(&put_latency, 0.99),
        percentile(&after_commit, 0.5),
        percentile(&after_commit, 0.99)
    );
    // Generous: machines are noisy; the target (p99 <= 100 ms) is reported above.
    assert!(p99 < 2000.0, "p99 {p99} ms");

    a.db.close().await;
    b.db.close().await;
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin.reader())
        .await;
    admin.close().await;
}

// ---------------------------------------------------------------------------------------------
// Concurrent writers: sequence numbers follow commit order, so a watcher that keeps resuming
// from its last seq sees every change exactly once.

async fn concurrent_writers(srv: &TestServer) {
    lb_agent(srv, "c1", "192.0.2.41").await;
    let net = id(&srv.network("admin", json!({})).await);
    let mut ports = Vec::new();
    for _ in 0..6 {
        ports.push(id(&port(
            srv,
            json!({"network_id": net, "binding:host_id": "c1", "security_groups": []}),
        )
        .await));
    }
    let (_, st) = srv.get("/agent/v1/hosts/c1/state", "admin").await;
    let start = st["seq"].as_i64().unwrap();
    const EACH: usize = 15;
    let writers: Vec<_> = ports
        .iter()
        .map(|p| {
            let url = format!("{}/v2.0/ports/{p}", srv.url);
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                for k in 0..EACH {
                    let r = c
                        .put(&url)
                        .header("x-auth-token", "admin")
                        .json(&json!({"port": {"name": format!("v{k}")}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 200);
                }
            })
        })
        .collect();
    // Watch while they write.
    let mut cursor = start;
    let mut seen: Vec<(String, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < ports.len() * EACH && Instant::now() < deadline {
        let (s, r) = poll(srv, "c1", cursor, 2).await;
        assert_eq!(s, 200, "{r}");
        for c in r["changes"].as_array().unwrap() {
            let seq = c["seq"].as_i64().unwrap();
            assert!(seq > cursor, "sequence went backwards: {seq} <= {cursor}");
            seen.push((c["id"].as_str().unwrap().to_string(), seq));
        }
        cursor = r["seq"].as_i64().unwrap();
    }
    for w in writers {
        w.await.unwrap();
    }
    let (_, r) = poll(srv, "c1", cursor, 0).await;
    assert_eq!(summary(&r), vec![], "changes left behind the cursor");
    assert_eq!(seen.len(), ports.len() * EACH, "every update exactly once");
    for p in &ports {
        assert_eq!(seen.iter().filter(|(id, _)| id == p).count(), EACH);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_change_missed_with_concurrent_writers_sqlite() {
    concurrent_writers(&TestServer::start_with(&ini("")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_change_missed_with_concurrent_writers_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("")).await {
        concurrent_writers(&srv).await;
        srv.cleanup().await;
    }
}

/// A stopping server answers open long-polls at once (empty batch at the same cursor), so
/// its graceful shutdown does not wait for agents' polls to time out.
#[tokio::test]
async fn stopping_server_ends_long_polls() {
    let srv = TestServer::start().await;
    lb_agent(&srv, "w1", "192.0.2.31").await;
    let (s, b) = poll(&srv, "w1", 0, 0).await;
    assert_eq!(s, 200, "{b}");
    let seq = b["seq"].as_i64().unwrap();
    let stopper = srv.state.clone();
    let t0 = std::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stopper.stop();
    });
    let (s, b) = poll(&srv, "w1", seq, 30).await;
    let took = t0.elapsed();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["seq"].as_i64(), Some(seq), "{b}");
    assert_eq!(b["changes"], serde_json::json!([]), "{b}");
    assert!(
        took < std::time::Duration::from_secs(10),
        "poll held {took:?}"
    );
    // Polls that start after the stop answer at once too.
    let t0 = std::time::Instant::now();
    let (s, _) = poll(&srv, "w1", seq, 30).await;
    assert_eq!(s, 200);
    assert!(t0.elapsed() < std::time::Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// Provisioning blocks: ACTIVE needs the L2 agent's "up" and, on a network served by DHCP
// agents, a DHCP agent's dhcp-ready.

async fn status_of(srv: &TestServer, port_id: &str) -> String {
    let (_, b) = srv.get(&format!("/v2.0/ports/{port_id}"), "admin").await;
    b["port"]["status"].as_str().unwrap().to_string()
}

async fn l2_report(srv: &TestServer, port_id: &str, host: &str, status: &str) {
    let (s, b) = srv
        .post(
            &format!("/agent/v1/ports/{port_id}/status"),
            "admin",
            json!({"host": host, "status": status}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn dhcp_ready(srv: &TestServer, host: &str, ids: &[&str]) -> Value {
    let (s, b) = srv
        .post(
            "/agent/v1/dhcp-ready",
            "admin",
            json!({"host": host, "port_ids": ids}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b
}

async fn provisioning(srv: &TestServer) {
    dhcp_host(srv, "pb1", "nova", "192.0.2.41").await;
    let net = id(&srv.network("admin", json!({"name": "pbnet"})).await);
    let sub = subnet(srv, &net, "10.44.0.0/24").await;
    assert_eq!(dhcp_agents_of(srv, &net).await.len(), 1);
    let vm =
        |owner: &str| json!({"network_id": net, "binding:host_id": "pb1", "device_owner": owner});
    // L2 up first: the port waits for the DHCP agent, then goes ACTIVE.
    let a = id(&port(srv, vm("compute:nova")).await);
    l2_report(srv, &a, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &a).await, "DOWN");
    let b = dhcp_ready(srv, "pb1", &[&a]).await;
    assert_eq!(b["dhcp_ready"]["activated"], 1, "{b}");
    assert_eq!(status_of(srv, &a).await, "ACTIVE");
    // DHCP first: ACTIVE as soon as L2 reports it up.
    let c = id(&port(srv, vm("compute:nova")).await);
    dhcp_ready(srv, "pb1", &[&c]).await;
    assert_eq!(status_of(srv, &c).await, "DOWN");
    l2_report(srv, &c, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &c).await, "ACTIVE");
    // Unowned ports and the network's service ports are never blocked (Neutron's
    // NO_PBLOCKS_TYPES).
    let d = id(&port(srv, vm("")).await);
    l2_report(srv, &d, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &d).await, "ACTIVE");
    // Down and up again once provisioned: no new block.
    l2_report(srv, &a, "pb1", "DOWN").await;
    assert_eq!(status_of(srv, &a).await, "DOWN");
    l2_report(srv, &a, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &a).await, "ACTIVE");
    // A new address must reach the DHCP agent again: after the port goes down and up, it
    // waits for dhcp-ready.
    put_port(
        srv,
        &a,
        json!({"fixed_ips": [{"subnet_id": sub["id"], "ip_address": "10.44.0.77"}]}),
    )
    .await;
    l2_report(srv, &a, "pb1", "DOWN").await;
    l2_report(srv, &a, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &a).await, "DOWN");
    dhcp_ready(srv, "pb1", &[&a, "no-such-port"]).await;
    assert_eq!(status_of(srv, &a).await, "ACTIVE");
    // A network without DHCP agents blocks nothing.
    let plain = id(&srv.network("admin", json!({"name": "pbplain"})).await);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": plain, "cidr": "10.45.0.0/24", "ip_version": 4,
                              "enable_dhcp": false}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let e = id(&port(
        srv,
        json!({"network_id": plain, "binding:host_id": "pb1", "device_owner": "compute:nova"}),
    )
    .await);
    l2_report(srv, &e, "pb1", "ACTIVE").await;
    assert_eq!(status_of(srv, &e).await, "ACTIVE");
}

#[tokio::test]
async fn provisioning_blocks_sqlite() {
    provisioning(&TestServer::start_with(&ini("")).await).await;
}

#[tokio::test]
async fn provisioning_blocks_postgres() {
    if let Some(srv) = TestServer::start_pg(&ini("")).await {
        provisioning(&srv).await;
        srv.cleanup().await;
    }
}
