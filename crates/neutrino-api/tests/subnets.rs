//! Subnet API behaviour (FEATURES §4, scenario E3), on SQLite and (when configured)
//! PostgreSQL.
mod support;

use neutrino_core::Db;
use serde_json::{Value, json};
use support::{TestServer, err_type};

fn msg(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

async fn subnet(srv: &TestServer, token: &str, body: Value) -> Value {
    let (s, b) = srv
        .post("/v2.0/subnets", token, json!({ "subnet": body }))
        .await;
    assert_eq!(s, 201, "create subnet: {b}");
    b["subnet"].clone()
}

/// Inserts a port holding `ips` ((subnet_id, address)) directly in the store, as the ports API
/// would.
pub async fn insert_port(
    db: &Db,
    net: &str,
    project: &str,
    owner: &str,
    ips: &[(&str, &str)],
) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let mac = format!(
        "fa:16:3e:{:02x}:{:02x}:{:02x}",
        rand_byte(&id, 0),
        rand_byte(&id, 1),
        rand_byte(&id, 2)
    );
    let fixed: Vec<Value> = ips
        .iter()
        .map(|(s, a)| json!({"subnet_id": s, "ip_address": a}))
        .collect();
    let body = json!({"id": id, "project_id": project, "network_id": net, "mac_address": mac,
        "device_owner": owner, "device_id": "", "fixed_ips": fixed, "revision_number": 1});
    sqlx::query(
        "INSERT INTO ports (id, project_id, revision_number, body, network_id, mac_address, device_id, device_owner) \
         VALUES ($1, $2, 1, $3, $4, $5, '', $6)",
    )
    .bind(&id)
    .bind(project)
    .bind(body.to_string())
    .bind(net)
    .bind(&mac)
    .bind(owner)
    .execute(db.reader())
    .await
    .expect("insert port");
    for (s, a) in ips {
        sqlx::query("INSERT INTO ip_allocations (network_id, ip_address, subnet_id, port_id) VALUES ($1, $2, $3, $4)")
            .bind(net)
            .bind(*a)
            .bind(*s)
            .bind(&id)
            .execute(db.reader())
            .await
            .expect("insert allocation");
    }
    id
}

fn rand_byte(id: &str, i: usize) -> u8 {
    id.as_bytes()[i * 2] ^ id.as_bytes()[i * 2 + 1].wrapping_mul(7)
}

async fn lifecycle(srv: &TestServer) {
    let net = srv
        .network("member:p1", json!({"name": "MyFlatNetwork"}))
        .await;
    let nid = net["id"].as_str().unwrap().to_string();

    // E3 step 1.
    let s1 = subnet(
        srv,
        "member:p1",
        json!({"name": "MyFlatSubnet", "network_id": nid, "ip_version": 4, "cidr": "192.168.100.0/24",
               "gateway_ip": "192.168.100.1", "dns_nameservers": ["8.8.8.8", "8.8.4.4"]}),
    )
    .await;
    assert_eq!(
        s1["allocation_pools"],
        json!([{"start": "192.168.100.2", "end": "192.168.100.254"}])
    );
    assert_eq!(s1["enable_dhcp"], json!(true));
    assert_eq!(s1["gateway_ip"], json!("192.168.100.1"));
    assert_eq!(s1["dns_nameservers"], json!(["8.8.8.8", "8.8.4.4"]));
    assert_eq!(s1["host_routes"], json!([]));
    assert_eq!(s1["project_id"], json!("p1"));
    assert_eq!(s1["tenant_id"], json!("p1"));
    assert_eq!(s1["ip_version"], json!(4));
    assert_eq!(s1["subnetpool_id"], Value::Null);
    assert_eq!(s1["ipv6_ra_mode"], Value::Null);
    assert_eq!(s1["service_types"], json!([]));
    assert_eq!(s1["tags"], json!([]));
    assert_eq!(s1["revision_number"], json!(1));
    assert!(s1.get("prefixlen").is_none() && s1.get("use_default_subnetpool").is_none());
    let sid = s1["id"].as_str().unwrap().to_string();
    let (_, n) = srv.get(&format!("/v2.0/networks/{nid}"), "member:p1").await;
    assert_eq!(n["network"]["subnets"], json!([sid]));

    // Overlap on the same network: Neutron's InvalidInput message (Tempest matches it).
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "192.168.100.128/25"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "InvalidInput");
    assert!(msg(&b).contains(&format!("Requested subnet with cidr: 192.168.100.128/25 for network: {nid} overlaps with another subnet")), "{b}");

    // E3 step 4: two pools skipping .50-.55; host bits are normalised away.
    let s2 = subnet(
        srv,
        "member:p1",
        json!({"network_id": nid, "ip_version": 4, "cidr": "192.168.1.7/24",
               "allocation_pools": [{"start": "192.168.1.2", "end": "192.168.1.49"}, {"start": "192.168.1.56", "end": "192.168.1.254"}]}),
    )
    .await;
    assert_eq!(s2["cidr"], json!("192.168.1.0/24"));
    assert_eq!(s2["gateway_ip"], json!("192.168.1.1"));
    assert_eq!(s2["allocation_pools"].as_array().unwrap().len(), 2);

    // E3 step 5: limits.
    let dns: Vec<String> = (1..=6).map(|i| format!("8.8.8.{i}")).collect();
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.5.0.0/24", "dns_nameservers": dns}}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "DNSNameServersExhausted"), "{b}");
    let routes: Vec<Value> = (0..21)
        .map(|i| json!({"destination": format!("10.{i}.0.0/16"), "nexthop": "10.5.0.1"}))
        .collect();
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.5.0.0/24", "host_routes": routes}}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "HostRoutesExhausted"), "{b}");
    assert!(
        msg(&b).contains("The number of host routes exceeds the limit 20"),
        "{b}"
    );

    // --gateway none: no gateway, the pool covers every host.
    let s3 = subnet(
        srv,
        "member:p1",
        json!({"network_id": nid, "ip_version": 4, "cidr": "10.6.0.0/24", "gateway_ip": null}),
    )
    .await;
    assert_eq!(s3["gateway_ip"], Value::Null);
    assert_eq!(
        s3["allocation_pools"],
        json!([{"start": "10.6.0.1", "end": "10.6.0.254"}])
    );

    // Pool validation errors.
    let bad = |pools: Value, gw: Value| json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.7.0.0/24", "allocation_pools": pools, "gateway_ip": gw}});
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", bad(json!([{"start": "10.7.0.2", "end": "10.7.0.50"}, {"start": "10.7.0.40", "end": "10.7.0.60"}]), json!("10.7.0.1")))
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (409, "OverlappingAllocationPools"),
        "{b}"
    );
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            bad(
                json!([{"start": "10.7.0.1", "end": "10.7.0.50"}]),
                json!("10.7.0.1"),
            ),
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (409, "GatewayConflictWithAllocationPools"),
        "{b}"
    );
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            bad(
                json!([{"start": "10.7.0.2", "end": "10.7.1.5"}]),
                json!("10.7.0.1"),
            ),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "OutOfBoundsAllocationPool"), "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            bad(
                json!([{"start": "10.7.0.20", "end": "10.7.0.5"}]),
                json!("10.7.0.1"),
            ),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidAllocationPool"), "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            bad(
                json!([{"start": "10.7.0.2", "end": "10.7.0.9"}]),
                json!("10.7.0.255"),
            ),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "nonsense"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnet": {"network_id": nid, "ip_version": 4}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "BadRequest"), "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnet": {"network_id": nid, "ip_version": 6, "cidr": "10.8.0.0/24"}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");

    // IPv6: default gateway is the subnet-router anycast address; SLAAC modes.
    let s6 = subnet(
        srv,
        "member:p1",
        json!({"network_id": nid, "ip_version": 6, "cidr": "2001:db8:1::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "slaac"}),
    )
    .await;
    assert_eq!(s6["gateway_ip"], json!("2001:db8:1::"));
    assert_eq!(
        s6["allocation_pools"],
        json!([{"start": "2001:db8:1::1", "end": "2001:db8:1:0:ffff:ffff:ffff:ffff"}])
    );
    assert_eq!(s6["ipv6_address_mode"], json!("slaac"));
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": nid, "ip_version": 6, "cidr": "2001:db8:2::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"}}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");
    assert!(
        msg(&b).contains("If both attributes are set, they must be the same value"),
        "{b}"
    );
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": nid, "ip_version": 6, "cidr": "2001:db8:2::/64", "ipv6_ra_mode": "bogus"}}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.9.0.0/24", "ipv6_address_mode": "slaac"}}))
        .await;
    assert_eq!(s, 400, "{b}");

    // Updates.
    let url = format!("/v2.0/subnets/{sid}");
    let (s, b) = srv.put(&url, "member:p1", json!({"subnet": {"name": "renamed", "dns_nameservers": ["1.1.1.1"], "enable_dhcp": false}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["dns_nameservers"], json!(["1.1.1.1"]));
    assert_eq!(b["subnet"]["enable_dhcp"], json!(false));
    assert_eq!(b["subnet"]["revision_number"], json!(2));
    let (s, b) = srv
        .put(
            &url,
            "member:p1",
            json!({"subnet": {"cidr": "10.0.0.0/24"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        msg(&b).contains("Cannot update read-only attribute cidr"),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &url,
            "member:p1",
            json!({"subnet": {"gateway_ip": "192.168.100.20"}}),
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (409, "GatewayConflictWithAllocationPools"),
        "{b}"
    );
    let (s, b) = srv
        .put(&url, "member:p1", json!({"subnet": {"gateway_ip": "192.168.100.254", "allocation_pools": [{"start": "192.168.100.2", "end": "192.168.100.200"}]}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["gateway_ip"], json!("192.168.100.254"));
    let (s, b) = srv
        .put(&url, "member:p1", json!({"subnet": {"gateway_ip": null}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["gateway_ip"], Value::Null);
    let (s, b) = srv
        .call_h(
            "PUT",
            &url,
            "member:p1",
            Some(json!({"subnet": {"name": "x"}})),
            &[("If-Match", "revision_number=1")],
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (412, "RevisionNumberConstraintFailed"),
        "{b}"
    );

    // Visibility: another project sees nothing and cannot create on the network.
    let (s, b) = srv.get(&url, "member:p2").await;
    assert_eq!((s, err_type(&b)), (404, "SubnetNotFound"), "{b}");
    let (_, l) = srv.get("/v2.0/subnets", "member:p2").await;
    assert_eq!(l["subnets"], json!([]));
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p2",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.10.0.0/24"}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (404, "NetworkNotFound"), "{b}");
    let (s, _) = srv
        .put(&url, "reader:p1", json!({"subnet": {"name": "y"}}))
        .await;
    assert_eq!(s, 403);

    // Shared networks: subnets visible to all, creatable by the owner only.
    let shared = srv
        .network("admin", json!({"name": "pub", "shared": true}))
        .await;
    let shid = shared["id"].as_str().unwrap();
    let ssub = subnet(
        srv,
        "admin",
        json!({"network_id": shid, "ip_version": 4, "cidr": "10.20.0.0/24"}),
    )
    .await;
    let (s, _) = srv
        .get(
            &format!("/v2.0/subnets/{}", ssub["id"].as_str().unwrap()),
            "member:p2",
        )
        .await;
    assert_eq!(s, 200);
    let (_, l) = srv
        .get(&format!("/v2.0/subnets?network_id={shid}"), "reader:p3")
        .await;
    assert_eq!(l["subnets"].as_array().unwrap().len(), 1);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p2",
            json!({"subnet": {"network_id": shid, "ip_version": 4, "cidr": "10.21.0.0/24"}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");

    // List filters.
    let (_, l) = srv
        .get(
            &format!("/v2.0/subnets?network_id={nid}&ip_version=6"),
            "member:p1",
        )
        .await;
    assert_eq!(l["subnets"].as_array().unwrap().len(), 1);
    let (_, l) = srv
        .get(
            "/v2.0/subnets?cidr=192.168.1.0/24&fields=id&fields=cidr",
            "member:p1",
        )
        .await;
    assert_eq!(
        l["subnets"],
        json!([{"id": s2["id"], "cidr": "192.168.1.0/24"}])
    );

    // Delete: refused while a user port holds an address; DHCP addresses go with the subnet.
    let s2id = s2["id"].as_str().unwrap();
    let dhcp = insert_port(
        &srv.db,
        &nid,
        "p1",
        "network:dhcp",
        &[(s2id, "192.168.1.2"), (&sid, "192.168.100.2")],
    )
    .await;
    let vm = insert_port(
        &srv.db,
        &nid,
        "p1",
        "compute:nova",
        &[(s2id, "192.168.1.3")],
    )
    .await;
    let (s, b) = srv
        .delete(&format!("/v2.0/subnets/{s2id}"), "member:p1")
        .await;
    assert_eq!((s, err_type(&b)), (409, "SubnetInUse"), "{b}");
    assert!(
        msg(&b).contains("One or more ports have an IP allocation from this subnet"),
        "{b}"
    );
    sqlx::query("DELETE FROM ports WHERE id = $1")
        .bind(&vm)
        .execute(srv.db.reader())
        .await
        .unwrap();
    let (s, b) = srv
        .delete(&format!("/v2.0/subnets/{s2id}"), "member:p1")
        .await;
    assert_eq!(s, 204, "{b}");
    let port: String = sqlx::query_scalar("SELECT body FROM ports WHERE id = $1")
        .bind(&dhcp)
        .fetch_one(srv.db.reader())
        .await
        .unwrap();
    let port: Value = serde_json::from_str(&port).unwrap();
    assert_eq!(
        port["fixed_ips"],
        json!([{"subnet_id": sid, "ip_address": "192.168.100.2"}])
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ip_allocations WHERE port_id = $1")
        .bind(&dhcp)
        .fetch_one(srv.db.reader())
        .await
        .unwrap();
    assert_eq!(left, 1);
    let (s, _) = srv.get(&format!("/v2.0/subnets/{s2id}"), "member:p1").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn subnet_lifecycle_sqlite() {
    let srv = TestServer::start().await;
    lifecycle(&srv).await;
}

#[tokio::test]
async fn subnet_lifecycle_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    lifecycle(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn bulk_is_atomic_and_overlap_across_networks_when_disabled() {
    let srv = TestServer::start_with("[DEFAULT]\nallow_overlapping_ips = false\n").await;
    let a = srv.network("member:p1", json!({"name": "a"})).await;
    let b = srv.network("member:p1", json!({"name": "b"})).await;
    let (aid, bid) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let (s, body) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnets": [
                {"network_id": aid, "ip_version": 4, "cidr": "10.0.0.0/24"},
                {"network_id": bid, "ip_version": 4, "cidr": "10.0.0.0/25"}
            ]}),
        )
        .await;
    assert_eq!((s, err_type(&body)), (400, "InvalidInput"), "{body}");
    let (_, l) = srv.get("/v2.0/subnets", "member:p1").await;
    assert_eq!(
        l["subnets"],
        json!([]),
        "bulk create must be all or nothing"
    );
    let (s, body) = srv
        .post(
            "/v2.0/subnets",
            "member:p1",
            json!({"subnets": [
                {"network_id": aid, "ip_version": 4, "cidr": "10.0.0.0/24"},
                {"network_id": bid, "ip_version": 4, "cidr": "10.0.1.0/24"}
            ]}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    assert_eq!(body["subnets"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn quota_on_subnets() {
    let srv = TestServer::start_with("[quotas]\nquota_subnet = 1\n").await;
    let n = srv.network("member:q", json!({"name": "a"})).await;
    let nid = n["id"].as_str().unwrap();
    subnet(
        &srv,
        "member:q",
        json!({"network_id": nid, "ip_version": 4, "cidr": "10.0.0.0/24"}),
    )
    .await;
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:q",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "10.0.1.0/24"}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (409, "OverQuota"), "{b}");
}
