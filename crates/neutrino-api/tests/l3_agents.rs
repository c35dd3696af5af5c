//! L3 agent scheduling (least routers, availability zone hints, auto-scheduling, manual
//! scheduling API, failover) and the L3 part of the agent sync protocol, on SQLite and (when
//! configured) PostgreSQL.
mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{TestServer, err_type};

const P: &str = "member:p1";
const ML2: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan\ntenant_network_types = vxlan\n\
                   mechanism_drivers = linuxbridge,l2population\n\
                   [ml2_type_vxlan]\nvni_ranges = 1:1000\n[ml2_type_flat]\nflat_networks = *\n";

fn ini(extra: &str) -> String {
    format!("{ML2}[DEFAULT]\n{extra}\n")
}

async fn report(srv: &TestServer, host: &str, ty: &str, az: Option<&str>, start: bool) -> Value {
    let (binary, conf) = match ty {
        "L3 agent" => ("neutron-l3-agent", json!({"agent_mode": "legacy"})),
        _ => (
            "neutron-linuxbridge-agent",
            json!({"tunnel_types": ["vxlan"], "tunneling_ip": "192.0.2.1",
                   "interface_mappings": {"physnet1": "eth1"}}),
        ),
    };
    let (s, b) = srv
        .post(
            "/agent/v1/report",
            "admin",
            json!({"host": host, "agent_type": ty, "binary": binary, "topic": "l3_agent",
                   "availability_zone": az, "configurations": conf, "start_flag": start}),
        )
        .await;
    assert_eq!(s, 200, "report: {b}");
    b["agent"].clone()
}

async fn external_net(srv: &TestServer) -> String {
    let net = srv
        .network(
            "admin",
            json!({"router:external": true, "provider:network_type": "flat",
                   "provider:physical_network": "physnet1"}),
        )
        .await;
    let id = net["id"].as_str().unwrap().to_string();
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": "10.30.0.0/24",
                   "enable_dhcp": false}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    id
}

async fn router(srv: &TestServer, body: Value) -> String {
    let (s, b) = srv.post("/v2.0/routers", P, json!({"router": body})).await;
    assert_eq!(s, 201, "{b}");
    b["router"]["id"].as_str().unwrap().to_string()
}

async fn hosting(srv: &TestServer, rid: &str) -> Vec<String> {
    let (s, b) = srv
        .get(&format!("/v2.0/routers/{rid}/l3-agents"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    b["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["host"].as_str().unwrap().to_string())
        .collect()
}

async fn head(srv: &TestServer, host: &str) -> i64 {
    let (s, b) = srv
        .get(&format!("/agent/v1/hosts/{host}/state"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    b["seq"].as_i64().unwrap()
}

async fn changes(srv: &TestServer, host: &str, since: i64) -> Vec<(String, String)> {
    let (s, b) = srv
        .get(
            &format!("/agent/v1/hosts/{host}/changes?since={since}&timeout=0"),
            "admin",
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["resource"].as_str().unwrap().to_string(),
                c["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn scheduling(srv: &TestServer) {
    let ext = external_net(srv).await;
    // A router with a gateway and no L3 agent yet stays unscheduled...
    let early = router(srv, json!({"external_gateway_info": {"network_id": ext}})).await;
    assert!(hosting(srv, &early).await.is_empty());
    // ...until an L3 agent registers (router_auto_schedule).
    for h in ["net1", "net2"] {
        report(srv, h, "Linux bridge agent", None, true).await;
    }
    let a1 = report(srv, "net1", "L3 agent", Some("az1"), true).await;
    let a2 = report(srv, "net2", "L3 agent", Some("az2"), true).await;
    assert_eq!(hosting(srv, &early).await, vec!["net1"]);
    let (_, b) = srv.get(&format!("/v2.0/routers/{early}"), P).await;
    assert_eq!(b["router"]["availability_zones"], json!(["az1"]));
    // Its gateway port is bound to the hosting agent's host (and wired by its L2 agent).
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={early}"), "admin")
        .await;
    assert_eq!(b["ports"][0]["binding:host_id"], "net1");
    assert_eq!(b["ports"][0]["binding:vif_type"], "bridge");

    // Least routers first: the next router goes to net2.
    let second = router(srv, json!({"external_gateway_info": {"network_id": ext}})).await;
    assert_eq!(hosting(srv, &second).await, vec!["net2"]);
    // Zone hints steer it; unknown zones are refused.
    let hinted = router(
        srv,
        json!({"availability_zone_hints": ["az1"], "external_gateway_info": {"network_id": ext}}),
    )
    .await;
    assert_eq!(hosting(srv, &hinted).await, vec!["net1"]);
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            P,
            json!({"router": {"availability_zone_hints": ["nowhere"]}}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "AvailabilityZoneNotFound");
    // Without a gateway a new router is scheduled at its first update or interface.
    let internal = router(srv, json!({"name": "internal"})).await;
    assert!(hosting(srv, &internal).await.is_empty());
    let net = srv.network(P, json!({})).await;
    let (_, b) = srv
        .post(
            "/v2.0/subnets",
            P,
            json!({"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.5.0.0/24"}}),
        )
        .await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{internal}/add_router_interface"),
            P,
            json!({"subnet_id": b["subnet"]["id"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(hosting(srv, &internal).await.len(), 1);

    // Manual scheduling API.
    let a1_id = a1["id"].as_str().unwrap();
    let a2_id = a2["id"].as_str().unwrap();
    let (s, b) = srv
        .get(&format!("/v2.0/agents/{a1_id}/l3-routers"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    let on_a1: Vec<&str> = b["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(on_a1.contains(&early.as_str()) && on_a1.contains(&hinted.as_str()));
    let (s, _) = srv
        .get(&format!("/v2.0/routers/{early}/l3-agents"), P)
        .await;
    assert_eq!(s, 403);
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{a2_id}/l3-routers"),
            "admin",
            json!({"router_id": early}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RouterHostedByL3Agent");
    let (s, _) = srv
        .delete(&format!("/v2.0/agents/{a1_id}/l3-routers/{early}"), "admin")
        .await;
    assert_eq!(s, 204);
    assert!(hosting(srv, &early).await.is_empty());
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={early}"), "admin")
        .await;
    assert_eq!(b["ports"][0]["binding:host_id"], "");
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{a2_id}/l3-routers"),
            "admin",
            json!({"router_id": early}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(hosting(srv, &early).await, vec!["net2"]);
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={early}"), "admin")
        .await;
    assert_eq!(b["ports"][0]["binding:host_id"], "net2");
    // Not an L3 agent.
    let lb = report(srv, "net1", "Linux bridge agent", None, false).await;
    let (s, b) = srv
        .post(
            &format!("/v2.0/agents/{}/l3-routers", lb["id"].as_str().unwrap()),
            "admin",
            json!({"router_id": early}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "InvalidL3Agent");

    // The sync protocol: the router, its ports and floating IPs reach net2 only.
    let since2 = head(srv, "net2").await;
    let since1 = head(srv, "net1").await;
    let vm = {
        let (_, b) = srv
            .post(
                "/v2.0/subnets",
                P,
                json!({"subnet": {"network_id": net["id"], "ip_version": 4, "cidr": "10.6.0.0/24"}}),
            )
            .await;
        let (s, b2) = srv
            .put(
                &format!("/v2.0/routers/{early}/add_router_interface"),
                P,
                json!({"subnet_id": b["subnet"]["id"]}),
            )
            .await;
        assert_eq!(s, 200, "{b2}");
        let (_, p) = srv
            .post(
                "/v2.0/ports",
                P,
                json!({"port": {"network_id": net["id"],
                                "fixed_ips": [{"subnet_id": b["subnet"]["id"]}]}}),
            )
            .await;
        p["port"]["id"].as_str().unwrap().to_string()
    };
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": ext, "port_id": vm}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let fid = b["floatingip"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["floatingip"]["router_id"], early.as_str());
    let got = changes(srv, "net2", since2).await;
    assert!(
        got.contains(&("router".to_string(), early.clone())),
        "{got:?}"
    );
    assert!(
        got.contains(&("floatingip".to_string(), fid.clone())),
        "{got:?}"
    );
    assert!(got.iter().any(|(r, _)| r == "port"), "{got:?}");
    let got1 = changes(srv, "net1", since1).await;
    assert!(
        !got1.iter().any(|(r, id)| r == "floatingip" || *id == early),
        "{got1:?}"
    );
    let (_, st) = srv.get("/agent/v1/hosts/net2/state", "admin").await;
    let r = st["routers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["router"]["id"] == early.as_str())
        .cloned()
        .expect("router in net2's state");
    assert_eq!(r["agent_id"], a2_id);
    assert_eq!(
        r["gateway"]["port"]["device_owner"],
        "network:router_gateway"
    );
    assert_eq!(r["gateway"]["subnets"][0]["cidr"], "10.30.0.0/24");
    assert_eq!(r["interfaces"][0]["subnets"][0]["cidr"], "10.6.0.0/24");
    assert_eq!(r["floating_ips"][0]["id"], fid.as_str());
    // The interface ports are bound to net2, so they are in its ports too.
    assert!(
        st["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["device_id"] == early.as_str())
    );

    // Floating IP status from the hosting host only.
    let (s, b) = srv
        .post(
            &format!("/agent/v1/floatingips/{fid}/status"),
            "admin",
            json!({"host": "net1", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    let (s, b) = srv
        .post(
            &format!("/agent/v1/floatingips/{fid}/status"),
            "admin",
            json!({"host": "net2", "status": "ACTIVE"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = srv.get(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(b["floatingip"]["status"], "ACTIVE");
    // Disassociating tells net2 (the floating IP no longer names the router).
    let since2 = head(srv, "net2").await;
    let (s, _) = srv
        .put(
            &format!("/v2.0/floatingips/{fid}"),
            P,
            json!({"floatingip": {"port_id": null}}),
        )
        .await;
    assert_eq!(s, 200);
    let got = changes(srv, "net2", since2).await;
    assert!(
        got.contains(&("router".to_string(), early.clone())),
        "{got:?}"
    );

    // Deleting the router tells its host (the agent's revision moves).
    let (s, _) = srv.delete(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(s, 204);
    let (s, _) = srv.delete(&format!("/v2.0/routers/{second}"), P).await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn l3_scheduling_sqlite() {
    let srv = TestServer::start_with(&ini("")).await;
    scheduling(&srv).await;
}

#[tokio::test]
async fn l3_scheduling_postgres() {
    let Some(srv) = TestServer::start_pg(&ini("")).await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    scheduling(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn ha_routers_get_several_agents() {
    let srv = TestServer::start_with(&ini("max_l3_agents_per_router = 2")).await;
    let ext = external_net(&srv).await;
    for h in ["n1", "n2", "n3"] {
        report(&srv, h, "L3 agent", Some("nova"), true).await;
    }
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            "admin",
            json!({"router": {"ha": true, "external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let rid = b["router"]["id"].as_str().unwrap().to_string();
    assert_eq!(hosting(&srv, &rid).await.len(), 2);
    // ha changes only on disabled routers.
    let (s, _) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            "admin",
            json!({"router": {"ha": false}}),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn failover_from_dead_l3_agents() {
    let srv = TestServer::start_with(&ini(
        "agent_down_time = 1\nallow_automatic_l3agent_failover = true",
    ))
    .await;
    let ext = external_net(&srv).await;
    report(&srv, "old", "L3 agent", None, true).await;
    let rid = router(&srv, json!({"external_gateway_info": {"network_id": ext}})).await;
    assert_eq!(hosting(&srv, &rid).await, vec!["old"]);
    // `old` goes silent past the dead limit (twice agent_down_time); a live agent's
    // heartbeat moves the router.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    report(&srv, "new", "L3 agent", None, true).await;
    report(&srv, "new", "L3 agent", None, false).await;
    assert_eq!(hosting(&srv, &rid).await, vec!["new"]);
}

#[tokio::test]
async fn no_failover_by_default() {
    let srv = TestServer::start_with(&ini("agent_down_time = 1")).await;
    let ext = external_net(&srv).await;
    report(&srv, "old", "L3 agent", None, true).await;
    let rid = router(&srv, json!({"external_gateway_info": {"network_id": ext}})).await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    report(&srv, "new", "L3 agent", None, true).await;
    report(&srv, "new", "L3 agent", None, false).await;
    assert_eq!(hosting(&srv, &rid).await, vec!["old"]);
}
