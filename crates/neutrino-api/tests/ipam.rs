//! IPAM: concurrent allocation, specific and EUI-64 addresses, and network IP availability,
//! on SQLite and (when configured) PostgreSQL.
mod support;

use std::collections::HashSet;
use std::sync::Arc;

use neutrino_api::{ApiState, AuthFuture, Authenticate, ipam};
use neutrino_core::config::Config;
use neutrino_core::{ApiError, Db, Obj};
use serde_json::{Value, json};
use support::{TestServer, err_type};

fn state(db: &Db) -> ApiState {
    let auth: Authenticate =
        Arc::new(|_t: String| -> AuthFuture { Box::pin(async { Err(ApiError::unauthorized()) }) });
    ApiState::new(
        db.clone(),
        Config::default(),
        neutrino_api::policy::Policy::defaults(),
        auth,
    )
}

async fn make_subnet(srv: &TestServer, body: Value) -> (String, Obj) {
    let net = srv.network("admin", json!({"name": "n"})).await;
    let nid = net["id"].as_str().unwrap().to_string();
    let mut body = body;
    body["network_id"] = json!(nid);
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({ "subnet": body }))
        .await;
    assert_eq!(s, 201, "{b}");
    (nid, b["subnet"].as_object().unwrap().clone())
}

async fn insert_port(tx: &mut sqlx::AnyConnection, net: &str, mac: &str) -> String {
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"id": id, "project_id": "p", "network_id": net, "mac_address": mac, "fixed_ips": [], "revision_number": 1});
    sqlx::query(
        "INSERT INTO ports (id, project_id, revision_number, body, network_id, mac_address, device_owner) \
         VALUES ($1, 'p', 1, $2, $3, $4, '')",
    )
    .bind(&id)
    .bind(body.to_string())
    .bind(net)
    .bind(mac)
    .execute(&mut *tx)
    .await
    .expect("insert port");
    id
}

/// 32 tasks allocate from one /24 until it is exhausted: every address once, then 409.
async fn concurrent_exhaustion(srv: &TestServer) {
    let (nid, subnet) = make_subnet(srv, json!({"ip_version": 4, "cidr": "10.0.0.0/24"})).await;
    let st = state(&srv.db);
    let subnet = Arc::new(subnet);
    let mut tasks = Vec::new();
    for t in 0..32u32 {
        let (st, subnet, nid) = (st.clone(), subnet.clone(), nid.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0u32.. {
                let mut tx = st.db.begin().await.expect("begin");
                let mac = format!("fa:16:3e:{:02x}:{:02x}:{:02x}", t, i / 256, i % 256);
                let port = insert_port(&mut tx, &nid, &mac).await;
                match ipam::allocate_any(&st, &mut tx, &subnet, &nid, &port).await {
                    Ok(ip) => {
                        st.db.commit(tx).await.expect("commit");
                        got.push(ip);
                    }
                    Err(e) => {
                        assert_eq!(e.kind, "IpAddressGenerationFailure", "{e}");
                        assert_eq!(e.status, 409);
                        assert_eq!(
                            e.message,
                            format!("No more IP addresses available on network {nid}.")
                        );
                        return got;
                    }
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 253, "the pool .2-.254 holds 253 addresses");
    assert_eq!(distinct.len(), 253, "no address twice");
    assert!(
        !distinct.contains(&"10.0.0.1".to_string())
            && !distinct.contains(&"10.0.0.255".to_string())
    );

    // Freed addresses are found again (slow path after the cursor wrapped).
    let mut tx = st.db.begin().await.unwrap();
    ipam::release_ip(&mut tx, &nid, "10.0.0.77").await.unwrap();
    let port = insert_port(&mut tx, &nid, "fa:16:3e:ff:ff:01").await;
    assert_eq!(
        ipam::allocate_any(&st, &mut tx, &subnet, &nid, &port)
            .await
            .unwrap(),
        "10.0.0.77"
    );
    st.db.commit(tx).await.unwrap();
}

/// Fresh subnet: first address is the first pool address; specific and EUI-64 allocations.
async fn specific_and_eui64(srv: &TestServer) {
    let st = state(&srv.db);
    let (nid, subnet) = make_subnet(
        srv,
        json!({"ip_version": 4, "cidr": "192.168.100.0/24", "gateway_ip": "192.168.100.1"}),
    )
    .await;
    let mut tx = st.db.begin().await.unwrap();
    let p1 = insert_port(&mut tx, &nid, "fa:16:3e:00:00:01").await;
    assert_eq!(
        ipam::allocate_any(&st, &mut tx, &subnet, &nid, &p1)
            .await
            .unwrap(),
        "192.168.100.2"
    );
    assert_eq!(
        ipam::allocate_any(&st, &mut tx, &subnet, &nid, &p1)
            .await
            .unwrap(),
        "192.168.100.3"
    );
    let p2 = insert_port(&mut tx, &nid, "fa:16:3e:00:00:02").await;
    assert_eq!(
        ipam::allocate_specific(&st, &mut tx, &subnet, &nid, &p2, "192.168.100.10")
            .await
            .unwrap(),
        "192.168.100.10"
    );
    let e = ipam::allocate_specific(&st, &mut tx, &subnet, &nid, &p2, "192.168.100.10")
        .await
        .unwrap_err();
    assert_eq!(
        (e.status.as_u16(), &*e.kind),
        (409, "IpAddressAlreadyAllocated")
    );
    for bad in ["192.168.100.0", "192.168.100.255", "10.0.0.1", "::1", "x"] {
        let e = ipam::allocate_specific(&st, &mut tx, &subnet, &nid, &p2, bad)
            .await
            .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), &*e.kind),
            (400, "InvalidIpForSubnet"),
            "{bad}"
        );
    }
    // Outside the pools but inside the CIDR is allowed (the gateway address here).
    assert!(
        ipam::allocate_specific(&st, &mut tx, &subnet, &nid, &p2, "192.168.100.1")
            .await
            .is_ok()
    );
    // The hint skips addresses taken meanwhile.
    assert_eq!(
        ipam::allocate_any(&st, &mut tx, &subnet, &nid, &p2)
            .await
            .unwrap(),
        "192.168.100.4"
    );
    st.db.commit(tx).await.unwrap();

    let (nid6, sub6) = make_subnet(srv, json!({"ip_version": 6, "cidr": "2001:db8::/64", "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"})).await;
    assert!(ipam::is_auto_address(&sub6));
    let mut tx = st.db.begin().await.unwrap();
    let p = insert_port(&mut tx, &nid6, "fa:16:3e:00:00:01").await;
    assert_eq!(
        ipam::allocate_eui64(&st, &mut tx, &sub6, &nid6, &p, "fa:16:3e:00:00:01")
            .await
            .unwrap(),
        "2001:db8::f816:3eff:fe00:1"
    );
    st.db.commit(tx).await.unwrap();

    // Network IP availability counts (admin only).
    let (s, b) = srv
        .get(&format!("/v2.0/network-ip-availabilities/{nid}"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    let a = &b["network_ip_availability"];
    assert_eq!(a["network_id"], json!(nid));
    assert_eq!(a["total_ips"], json!(253));
    assert_eq!(a["used_ips"], json!(5));
    assert_eq!(
        a["subnet_ip_availability"][0]["cidr"],
        json!("192.168.100.0/24")
    );
    assert_eq!(a["subnet_ip_availability"][0]["used_ips"], json!(5));
    assert_eq!(a["subnet_ip_availability"][0]["ip_version"], json!(4));
    let (_, l) = srv
        .get("/v2.0/network-ip-availabilities?ip_version=6", "admin")
        .await;
    let l = l["network_ip_availabilities"].as_array().unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["used_ips"], json!(1));
    assert_eq!(l[0]["total_ips"], json!(18446744073709551615u64));
    let (s, b) = srv
        .get(
            &format!("/v2.0/network-ip-availabilities/{nid}"),
            "member:admin-project",
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (_, l) = srv
        .get("/v2.0/network-ip-availabilities", "member:admin-project")
        .await;
    assert_eq!(l["network_ip_availabilities"], json!([]));
    let (s, b) = srv
        .get(
            "/v2.0/network-ip-availabilities/00000000-0000-0000-0000-000000000000",
            "admin",
        )
        .await;
    assert_eq!((s, err_type(&b)), (404, "NetworkNotFound"), "{b}");
}

#[tokio::test]
async fn concurrent_allocation_sqlite() {
    let srv = TestServer::start().await;
    concurrent_exhaustion(&srv).await;
}

#[tokio::test]
async fn concurrent_allocation_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    concurrent_exhaustion(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn specific_eui64_and_availability_sqlite() {
    let srv = TestServer::start().await;
    specific_and_eui64(&srv).await;
}

#[tokio::test]
async fn specific_eui64_and_availability_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    specific_and_eui64(&srv).await;
    srv.cleanup().await;
}

/// Allocation cost stays flat as a subnet fills (run with `--ignored --nocapture`): 10k ports
/// on a /16, each in its own transaction, timed per 1000.
#[tokio::test]
#[ignore = "timing; run on demand"]
async fn allocation_stays_flat() {
    let srv = TestServer::start().await;
    let (nid, subnet) = make_subnet(&srv, json!({"ip_version": 4, "cidr": "10.0.0.0/16"})).await;
    let st = state(&srv.db);
    let mut batches = Vec::new();
    for b in 0..10u32 {
        let t = std::time::Instant::now();
        for i in 0..1000u32 {
            let mut tx = st.db.begin().await.unwrap();
            let mac = format!("fa:16:3e:{:02x}:{:02x}:{:02x}", b, i / 256, i % 256);
            let port = insert_port(&mut tx, &nid, &mac).await;
            ipam::allocate_any(&st, &mut tx, &subnet, &nid, &port)
                .await
                .unwrap();
            st.db.commit(tx).await.unwrap();
        }
        batches.push(t.elapsed().as_millis());
    }
    eprintln!("ms per 1000 allocations: {batches:?}");
    let (first, last) = (batches[0].max(1), batches[9]);
    assert!(
        last < first * 3,
        "allocation slowed down as the subnet filled: {batches:?}"
    );
}
