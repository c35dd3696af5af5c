//! What the agent sync protocol (`/agent/v1`) carries for the host dataplane beyond ports and
//! networks: the addresses of address groups that security group rules name (and the
//! `address_group` changes that reach the hosts using them), and the server's DHCP lease
//! duration and domain. On SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, id};

const INI: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan\ntenant_network_types = vxlan\n\
                   mechanism_drivers = linuxbridge,l2population\n\
                   [ml2_type_vxlan]\nvni_ranges = 1:1000\n\
                   [DEFAULT]\ndhcp_lease_duration = 600\ndns_domain = example.org.\n";

async fn report(srv: &TestServer, host: &str, agent_type: &str, binary: &str, conf: Value) {
    let (s, b) = srv
        .post(
            "/agent/v1/report",
            "admin",
            json!({"host": host, "agent_type": agent_type, "binary": binary,
                   "configurations": conf}),
        )
        .await;
    assert_eq!(s, 200, "report: {b}");
}

async fn state(srv: &TestServer, host: &str) -> Value {
    let (s, st) = srv
        .get(&format!("/agent/v1/hosts/{host}/state"), "admin")
        .await;
    assert_eq!(s, 200, "{st}");
    st
}

/// `(resource, id)` of the changes after `since` that concern `host` (no waiting).
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

async fn scenario(srv: &TestServer) {
    for (h, ip) in [("h1", "192.0.2.41"), ("h2", "192.0.2.42")] {
        report(
            srv,
            h,
            "Linux bridge agent",
            "neutron-linuxbridge-agent",
            json!({"tunnel_types": ["vxlan"], "tunneling_ip": ip}),
        )
        .await;
    }
    report(srv, "h1", "DHCP agent", "neutron-dhcp-agent", json!({})).await;
    let net = id(&srv.network("admin", json!({"name": "n"})).await);
    srv.subnet(
        "admin",
        json!({"network_id": net, "cidr": "10.0.0.0/24", "ip_version": 4}),
    )
    .await;
    let (s, sg) = srv
        .post(
            "/v2.0/security-groups",
            "admin",
            json!({"security_group": {"name": "s"}}),
        )
        .await;
    assert_eq!(s, 201, "{sg}");
    let sg = id(&sg["security_group"]);
    let (s, ag) = srv
        .post(
            "/v2.0/address-groups",
            "admin",
            json!({"address_group": {"name": "ag", "addresses": ["192.0.2.0/24"]}}),
        )
        .await;
    assert_eq!(s, 201, "{ag}");
    let ag = id(&ag["address_group"]);
    let (s, r) = srv
        .post(
            "/v2.0/security-group-rules",
            "admin",
            json!({"security_group_rule": {"security_group_id": sg, "direction": "ingress",
                   "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                   "port_range_max": 22, "remote_address_group_id": ag}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    // h1 has a port in the group, h2 one outside it.
    srv.port(
        "admin",
        json!({"network_id": net, "binding:host_id": "h1", "security_groups": [sg]}),
    )
    .await;
    srv.port(
        "admin",
        json!({"network_id": net, "binding:host_id": "h2", "security_groups": []}),
    )
    .await;

    let st = state(srv, "h1").await;
    let g = st["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["security_group"]["id"] == json!(sg))
        .expect("the port's group in h1's state");
    assert_eq!(g["address_groups"], json!({ ag.clone(): ["192.0.2.0/24"] }));
    // The server's DHCP settings travel with the DHCP network.
    assert_eq!(st["dhcp"][0]["network_id"], json!(net));
    assert_eq!(st["dhcp"][0]["dhcp_lease_duration"], json!(600));
    assert_eq!(st["dhcp"][0]["dns_domain"], json!("example.org."));

    // An address change reaches h1 (its group's rule names the address group), not h2.
    let seq1 = st["seq"].as_i64().unwrap();
    let seq2 = state(srv, "h2").await["seq"].as_i64().unwrap();
    let (s, b) = srv
        .put(
            &format!("/v2.0/address-groups/{ag}/add_addresses"),
            "admin",
            json!({"addresses": ["198.51.100.7/32"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        changes(srv, "h1", seq1).await,
        [("address_group".to_string(), ag.clone())]
    );
    assert!(changes(srv, "h2", seq2).await.is_empty());
    let st = state(srv, "h1").await;
    let g = st["security_groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["security_group"]["id"] == json!(sg))
        .unwrap();
    assert_eq!(
        g["address_groups"][&ag],
        json!(["192.0.2.0/24", "198.51.100.7/32"])
    );
}

#[tokio::test]
async fn address_groups_and_dhcp_settings_reach_the_hosts_sqlite() {
    scenario(&TestServer::start_with(INI).await).await;
}

#[tokio::test]
async fn address_groups_and_dhcp_settings_reach_the_hosts_postgres() {
    if let Some(srv) = TestServer::start_pg(INI).await {
        scenario(&srv).await;
        srv.cleanup().await;
    }
}
