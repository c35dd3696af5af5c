//! ML2 behaviour through the API: provider networks (E2), project segment allocation and its
//! exhaustion, MTU (E17), provider updates and the segments API, on SQLite and (when
//! configured) PostgreSQL.
mod support;

use std::collections::BTreeSet;

use serde_json::{Value, json};
use support::{TestServer, err_type};

const PROVIDER_INI: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan,gre,geneve\n\
    tenant_network_types = vxlan\n\
    [ml2_type_flat]\nflat_networks = physnet1,physnet2\n\
    [ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:40:43,physnet2\n\
    [ml2_type_vxlan]\nvni_ranges = 1:1000\n";

fn vxlan_ini(range: &str) -> String {
    format!(
        "[ml2]\ntype_drivers = local,flat,vlan,vxlan\ntenant_network_types = vxlan\n\
         [ml2_type_vxlan]\nvni_ranges = {range}\n"
    )
}

async fn create(srv: &TestServer, token: &str, body: Value) -> (u16, Value) {
    srv.post("/v2.0/networks", token, json!({ "network": body }))
        .await
}

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

/// Scenario E2: flat / VLAN / local provider networks, their conflicts and visibility.
async fn provider_networks(srv: &TestServer) {
    let flat = srv
        .network(
            "admin",
            json!({"name": "MyFlatNetwork", "shared": true,
                   "provider:network_type": "flat", "provider:physical_network": "physnet1"}),
        )
        .await;
    assert_eq!(flat["provider:network_type"], json!("flat"));
    assert_eq!(flat["provider:physical_network"], json!("physnet1"));
    assert_eq!(flat["provider:segmentation_id"], Value::Null);
    assert_eq!(flat["mtu"], json!(1500));
    assert_eq!(flat["shared"], json!(true));
    assert!(flat.get("segments").is_none(), "{flat}");

    // One flat network per physical network.
    let (s, b) = create(
        srv,
        "admin",
        json!({"name": "MyFlatNetwork2",
               "provider:network_type": "flat", "provider:physical_network": "physnet1"}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "FlatNetworkInUse");
    assert_eq!(
        message(&b),
        "Unable to create the flat network. Physical network physnet1 is in use."
    );
    // Flat on a physical network not in flat_networks.
    let (s, b) = create(
        srv,
        "admin",
        json!({"provider:network_type": "flat", "provider:physical_network": "physnet9"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "InvalidInput");
    assert_eq!(
        message(&b),
        "Invalid input for operation: physical_network 'physnet9' unknown for flat provider network."
    );

    // VLANs 300 and 301 (outside the project range) on physnet1 both succeed; 300 again is taken.
    let mut vlan_ids = vec![];
    for id in [300, 301] {
        let n = srv
            .network(
                "admin",
                json!({"name": format!("MyVLANNetwork{id}"),
                       "provider:network_type": "vlan", "provider:physical_network": "physnet1",
                       "provider:segmentation_id": id}),
            )
            .await;
        assert_eq!(n["provider:segmentation_id"], json!(id));
        assert_eq!(n["shared"], json!(false));
        assert_eq!(n["mtu"], json!(1500));
        vlan_ids.push(n["id"].as_str().unwrap().to_string());
    }
    let (s, b) = create(
        srv,
        "admin",
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
               "provider:segmentation_id": 300}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "VlanIdInUse");
    assert_eq!(
        message(&b),
        "Unable to create the network. The VLAN 300 on physical network physnet1 is in use."
    );
    // The same ID on another physical network is a different VLAN.
    srv.network(
        "admin",
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet2",
               "provider:segmentation_id": 300}),
    )
    .await;
    for (body, needle) in [
        (
            json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                   "provider:segmentation_id": 4095}),
            "segmentation_id out of range (1 through 4094)",
        ),
        (
            json!({"provider:network_type": "vlan", "provider:physical_network": "nope",
                   "provider:segmentation_id": 5}),
            "physical_network 'nope' unknown for VLAN provider network",
        ),
        (
            json!({"provider:network_type": "vxlan", "provider:physical_network": "physnet1"}),
            "provider:physical_network specified for vxlan network",
        ),
        (
            json!({"provider:network_type": "bogus"}),
            "network_type value 'bogus' not supported",
        ),
        (
            json!({"provider:physical_network": "physnet1"}),
            "network_type required",
        ),
    ] {
        let (s, b) = create(srv, "admin", body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert!(message(&b).contains(needle), "{body}: {b}");
    }

    // Tunnel IDs are unique per type.
    let v = srv
        .network(
            "admin",
            json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5000}),
        )
        .await;
    assert_eq!(v["mtu"], json!(1450));
    let (s, b) = create(
        srv,
        "admin",
        json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5000}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "TunnelIdInUse");
    assert_eq!(
        message(&b),
        "Unable to create the network. The tunnel ID 5000 is in use."
    );
    let g = srv
        .network(
            "admin",
            json!({"provider:network_type": "gre", "provider:segmentation_id": 5000}),
        )
        .await;
    assert_eq!(g["mtu"], json!(1458));

    // Local network.
    let local = srv
        .network(
            "admin",
            json!({"name": "MyLocal", "provider:network_type": "local"}),
        )
        .await;
    assert_eq!(local["provider:network_type"], json!("local"));
    assert_eq!(local["mtu"], json!(1500));

    // Non-admins see no provider attributes (shared flat network) and cannot set them.
    let fid = flat["id"].as_str().unwrap();
    let (s, b) = srv.get(&format!("/v2.0/networks/{fid}"), "member:p1").await;
    assert_eq!(s, 200, "{b}");
    for k in [
        "provider:network_type",
        "provider:physical_network",
        "provider:segmentation_id",
        "segments",
    ] {
        assert!(b["network"].get(k).is_none(), "{k} visible: {b}");
    }
    let (_, l) = srv.get("/v2.0/networks", "member:p1").await;
    for n in l["networks"].as_array().unwrap() {
        assert!(n.get("provider:network_type").is_none(), "{n}");
    }
    let (s, b) = create(
        srv,
        "member:p1",
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
               "provider:segmentation_id": 302}),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = create(
        srv,
        "member:p1",
        json!({"segments": [{"provider:network_type": "vxlan"}]}),
    )
    .await;
    assert_eq!(s, 403, "{b}");

    // Provider attributes cannot change (except a VLAN's ID); same values are no-ops.
    let vid = &vlan_ids[0];
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vid}"),
            "admin",
            json!({"network": {"provider:network_type": "vxlan"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        message(&b)
            .contains("Plugin does not support updating the following provider network attributes"),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vid}"),
            "admin",
            json!({"network": {"provider:network_type": "vlan", "provider:physical_network": "physnet1", "name": "x"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vid}"),
            "member:admin-project",
            json!({"network": {"provider:segmentation_id": 310}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // VLAN move: 300 → 301 is taken, 310 is free; 300 becomes free again.
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vid}"),
            "admin",
            json!({"network": {"provider:segmentation_id": 301}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "VlanIdInUse");
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vid}"),
            "admin",
            json!({"network": {"provider:segmentation_id": 310}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["provider:segmentation_id"], json!(310));
    srv.network(
        "admin",
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
               "provider:segmentation_id": 300}),
    )
    .await;
    // Only VLAN networks can move.
    let vxid = v["id"].as_str().unwrap();
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{vxid}"),
            "admin",
            json!({"network": {"provider:segmentation_id": 5001}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        message(&b).contains("Only VLAN type networks can be updated"),
        "{b}"
    );

    // Deleting the flat network frees its physical network.
    let (s, _) = srv.delete(&format!("/v2.0/networks/{fid}"), "admin").await;
    assert_eq!(s, 204);
    srv.network(
        "admin",
        json!({"provider:network_type": "flat", "provider:physical_network": "physnet1"}),
    )
    .await;
}

/// Multi-provider `segments`, and the segments API.
async fn multi_segment(srv: &TestServer) {
    let (s, b) = create(
        srv,
        "admin",
        json!({"provider:network_type": "vxlan",
               "segments": [{"provider:network_type": "vxlan"}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "SegmentsSetInConjunctionWithProviders");
    let dup = json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                     "provider:segmentation_id": 7});
    let (s, b) = create(srv, "admin", json!({"segments": [dup, dup]})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "SegmentsContainDuplicateEntry");
    let (s, b) = create(
        srv,
        "admin",
        json!({"segments": [{"provider:network_type": "vxlan", "bogus": 1}]}),
    )
    .await;
    assert_eq!(s, 400, "{b}");

    let net = srv
        .network(
            "admin",
            json!({"segments": [
                {"provider:network_type": "vlan", "provider:physical_network": "physnet1",
                 "provider:segmentation_id": 7},
                {"provider:network_type": "vxlan"},
            ]}),
        )
        .await;
    let segs = net["segments"].as_array().expect("segments").clone();
    assert_eq!(segs.len(), 2, "{net}");
    assert_eq!(segs[0]["provider:segmentation_id"], json!(7));
    assert_eq!(segs[1]["provider:network_type"], json!("vxlan"));
    assert!(segs[1]["provider:segmentation_id"].as_i64().is_some());
    assert!(net.get("provider:network_type").is_none(), "{net}");
    // The smallest segment MTU wins.
    assert_eq!(net["mtu"], json!(1450));
    let nid = net["id"].as_str().unwrap().to_string();

    // The segments API shows both, without project_id.
    let (s, b) = srv
        .get(&format!("/v2.0/segments?network_id={nid}"), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    let listed = b["segments"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{b}");
    assert_eq!(
        listed
            .iter()
            .map(|s| s["segment_index"].as_i64().unwrap())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1])
    );
    for seg in &listed {
        assert!(seg.get("project_id").is_none(), "{seg}");
        assert_eq!(seg["network_id"], json!(nid));
        assert_eq!(seg["name"], Value::Null);
        assert_eq!(seg["revision_number"], json!(1));
    }
    // Non-admins see none.
    let (s, b) = srv.get("/v2.0/segments", "member:p1").await;
    assert_eq!(s, 200);
    assert_eq!(b["segments"], json!([]));
    let first = listed
        .iter()
        .find(|s| s["segment_index"] == json!(0))
        .expect("segment 0");
    assert_eq!(first["network_type"], json!("vlan"));
    assert_eq!(first["segmentation_id"], json!(7));
    let sid = first["id"].as_str().unwrap().to_string();
    let (s, _) = srv.get(&format!("/v2.0/segments/{sid}"), "member:p1").await;
    assert_eq!(s, 404);

    // Rename; other attributes are read-only.
    let (s, b) = srv
        .put(
            &format!("/v2.0/segments/{sid}"),
            "admin",
            json!({"segment": {"name": "seg-a", "description": "d"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["segment"]["name"], json!("seg-a"));
    assert_eq!(b["segment"]["revision_number"], json!(2));
    let (s, _) = srv
        .put(
            &format!("/v2.0/segments/{sid}"),
            "admin",
            json!({"segment": {"segmentation_id": 8}}),
        )
        .await;
    assert_eq!(s, 400);

    // Delete one segment → the network is single-segment again (provider:* view).
    let (s, b) = srv.delete(&format!("/v2.0/segments/{sid}"), "admin").await;
    assert_eq!(s, 204, "{b}");
    let (_, b) = srv.get(&format!("/v2.0/networks/{nid}"), "admin").await;
    assert_eq!(b["network"]["provider:network_type"], json!("vxlan"), "{b}");
    assert!(b["network"].get("segments").is_none(), "{b}");
    // VLAN 7 is free again.
    srv.network(
        "admin",
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
               "provider:segmentation_id": 7}),
    )
    .await;
    // The last segment cannot go.
    let (_, b) = srv
        .get(&format!("/v2.0/segments?network_id={nid}"), "admin")
        .await;
    let last = b["segments"][0]["id"].as_str().unwrap().to_string();
    let (s, b) = srv.delete(&format!("/v2.0/segments/{last}"), "admin").await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "SegmentInUse");

    // Add a segment through the API: conflicts and validation as for networks.
    let (s, b) = srv
        .post(
            "/v2.0/segments",
            "admin",
            json!({"segment": {"network_id": nid, "network_type": "vlan",
                               "physical_network": "physnet1", "segmentation_id": 7}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "VlanIdInUse");
    let (s, b) = srv
        .post(
            "/v2.0/segments",
            "admin",
            json!({"segment": {"network_id": nid, "network_type": "vlan",
                               "physical_network": "physnet1", "name": "seg-b"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let added = &b["segment"];
    assert_eq!(added["name"], json!("seg-b"));
    assert_eq!(added["segment_index"], json!(2));
    let vid = added["segmentation_id"].as_i64().unwrap();
    assert!((40..=43).contains(&vid), "{b}");
    let (_, b) = srv.get(&format!("/v2.0/networks/{nid}"), "admin").await;
    assert_eq!(
        b["network"]["segments"].as_array().map(Vec::len),
        Some(2),
        "{b}"
    );
    let (s, b) = srv
        .post(
            "/v2.0/segments",
            "member:p1",
            json!({"segment": {"network_id": nid, "network_type": "vxlan"}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/segments",
            "admin",
            json!({"segment": {"network_id": uuid::Uuid::new_v4().to_string(), "network_type": "vxlan"}}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "NetworkNotFound");

    // Deleting the network deletes its segments.
    let (s, _) = srv.delete(&format!("/v2.0/networks/{nid}"), "admin").await;
    assert_eq!(s, 204);
    let (_, b) = srv
        .get(&format!("/v2.0/segments?network_id={nid}"), "admin")
        .await;
    assert_eq!(b["segments"], json!([]));
}

/// MTU: E17 (VXLAN 1450 with 1500) and net-mtu-writable limits.
async fn mtu(srv: &TestServer) {
    let n = srv.network("member:p1", json!({"name": "vx"})).await;
    assert_eq!(n["mtu"], json!(1450));
    let id = n["id"].as_str().unwrap();
    let (s, b) = create(srv, "member:p1", json!({"mtu": 1500})).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        message(&b),
        "Invalid input for operation: Requested MTU is too big, maximum is 1450."
    );
    let small = srv.network("member:p1", json!({"mtu": 1400})).await;
    assert_eq!(small["mtu"], json!(1400));
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{id}"),
            "member:p1",
            json!({"network": {"mtu": 1300}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["mtu"], json!(1300));
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{id}"),
            "member:p1",
            json!({"network": {"mtu": 1451}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{id}"),
            "member:p1",
            json!({"network": {"mtu": 0}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["mtu"], json!(1450));
    let (s, _) = create(srv, "member:p1", json!({"mtu": -1})).await;
    assert_eq!(s, 400);
}

async fn create_concurrently(srv: &TestServer, n: usize) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/v2.0/networks"))
                .header("x-auth-token", format!("member:p{}", i % 8))
                .json(&json!({"network": {"name": format!("m{i}")}}))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

async fn allocated_vnis(srv: &TestServer) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT segmentation_id FROM segment_allocations WHERE network_type = 'vxlan' \
         ORDER BY segmentation_id",
    )
    .fetch_all(srv.db.reader())
    .await
    .expect("allocations")
}

/// 64 concurrent project networks get distinct VNIs from 1:100; after freeing scattered VNIs,
/// a concurrent burst that must reuse them (the gap-scan path, racing) fills the range exactly.
async fn concurrent_allocation(srv: &TestServer) {
    let mut tasks = Vec::new();
    for i in 0..64 {
        let url = srv.url.clone();
        tasks.push(tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{url}/v2.0/networks"))
                .header("x-auth-token", format!("member:p{}", i % 8))
                .json(&json!({"network": {"name": format!("n{i}")}}))
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.expect("json"))
        }));
    }
    let mut vnis = BTreeSet::new();
    for t in tasks {
        let (s, b) = t.await.expect("join");
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["network"]["mtu"], json!(1450));
        let (_, shown) = srv
            .get(
                &format!("/v2.0/networks/{}", b["network"]["id"].as_str().unwrap()),
                "admin",
            )
            .await;
        assert_eq!(shown["network"]["provider:network_type"], json!("vxlan"));
        let vni = shown["network"]["provider:segmentation_id"]
            .as_i64()
            .expect("vni");
        assert!((1..=100).contains(&vni), "{vni}");
        assert!(vnis.insert(vni), "VNI {vni} allocated twice");
    }
    assert_eq!(vnis.len(), 64);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM segment_allocations")
        .fetch_one(srv.db.reader())
        .await
        .expect("count");
    assert_eq!(rows, 64);

    // Free every other VNI of the first 64 networks, then ask for more than the cursor's
    // remaining 36 at once: 32 of them must come from gaps, concurrently.
    let (_, l) = srv.get("/v2.0/networks", "admin").await;
    let mut by_vni: Vec<(i64, String)> = l["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["provider:segmentation_id"].as_i64().unwrap(),
                n["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_vni.sort();
    for (_, id) in by_vni.iter().step_by(2) {
        let (s, b) = srv.delete(&format!("/v2.0/networks/{id}"), "admin").await;
        assert_eq!(s, 204, "{b}");
    }
    assert_eq!(allocated_vnis(srv).await.len(), 32);
    for (s, b) in create_concurrently(srv, 68).await {
        assert_eq!(s, 201, "{b}");
    }
    assert_eq!(allocated_vnis(srv).await, (1..=100).collect::<Vec<i64>>());
    let (s, b) = srv
        .post("/v2.0/networks", "member:p1", json!({"network": {}}))
        .await;
    assert_eq!(s, 503, "{b}");
}

/// vni_ranges 1:10: the 11th network is refused; a deleted network's VNI is reused.
async fn exhaustion_and_reuse(srv: &TestServer) {
    let mut ids = Vec::new();
    for i in 0..10 {
        let n = srv
            .network("member:p1", json!({"name": format!("n{i}")}))
            .await;
        ids.push(n["id"].as_str().unwrap().to_string());
    }
    let (s, b) = create(srv, "member:p1", json!({"name": "eleventh"})).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(err_type(&b), "NoNetworkAvailable");
    assert_eq!(
        message(&b),
        "Unable to create the network. No project network is available for allocation."
    );
    // Nothing of the failed network remains.
    let (_, l) = srv.get("/v2.0/networks", "member:p1").await;
    assert_eq!(l["networks"].as_array().map(Vec::len), Some(10));
    // An admin may still use an ID outside the project range.
    srv.network(
        "admin",
        json!({"provider:network_type": "vxlan", "provider:segmentation_id": 500}),
    )
    .await;
    // A partial provider segment comes from the same exhausted pool.
    let (s, b) = create(srv, "admin", json!({"provider:network_type": "vxlan"})).await;
    assert_eq!(s, 503, "{b}");

    let victim = &ids[3];
    let (_, shown) = srv.get(&format!("/v2.0/networks/{victim}"), "admin").await;
    let freed = shown["network"]["provider:segmentation_id"].clone();
    let (s, _) = srv
        .delete(&format!("/v2.0/networks/{victim}"), "member:p1")
        .await;
    assert_eq!(s, 204);
    let again = srv.network("member:p1", json!({"name": "again"})).await;
    let (_, shown) = srv
        .get(
            &format!("/v2.0/networks/{}", again["id"].as_str().unwrap()),
            "admin",
        )
        .await;
    assert_eq!(shown["network"]["provider:segmentation_id"], freed);
    let (s, _) = create(srv, "member:p1", json!({"name": "twelfth"})).await;
    assert_eq!(s, 503);
}

/// Tenant types in order: VLANs of physnet1:40:43 first, then VXLAN.
async fn tenant_types_in_order(srv: &TestServer) {
    let mut got = Vec::new();
    for i in 0..6 {
        let n = srv
            .network("member:p2", json!({"name": format!("t{i}")}))
            .await;
        let (_, shown) = srv
            .get(
                &format!("/v2.0/networks/{}", n["id"].as_str().unwrap()),
                "admin",
            )
            .await;
        let net = &shown["network"];
        got.push((
            net["provider:network_type"].as_str().unwrap().to_string(),
            net["provider:physical_network"].clone(),
            net["provider:segmentation_id"].as_i64().unwrap(),
            net["mtu"].as_i64().unwrap(),
        ));
    }
    let vlans: BTreeSet<i64> = got[..4]
        .iter()
        .map(|(t, p, id, mtu)| {
            assert_eq!(t, "vlan");
            assert_eq!(p, &json!("physnet1"));
            assert_eq!(*mtu, 1500);
            *id
        })
        .collect();
    assert_eq!(vlans, BTreeSet::from([40, 41, 42, 43]));
    for (t, p, _, mtu) in &got[4..] {
        assert_eq!(t, "vxlan");
        assert_eq!(p, &Value::Null);
        assert_eq!(*mtu, 1450);
    }
}

const ORDER_INI: &str = "[ml2]\ntype_drivers = flat,vlan,vxlan\n\
    tenant_network_types = vlan,vxlan\n\
    [ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:40:43\n\
    [ml2_type_vxlan]\nvni_ranges = 1:1000\n";

#[tokio::test]
async fn provider_networks_sqlite() {
    let srv = TestServer::start_with(PROVIDER_INI).await;
    provider_networks(&srv).await;
    multi_segment(&srv).await;
    mtu(&srv).await;
}

#[tokio::test]
async fn provider_networks_postgres() {
    let Some(srv) = TestServer::start_pg(PROVIDER_INI).await else {
        return;
    };
    provider_networks(&srv).await;
    multi_segment(&srv).await;
    mtu(&srv).await;
    srv.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_vni_allocation_sqlite() {
    let srv = TestServer::start_with(&vxlan_ini("1:100")).await;
    concurrent_allocation(&srv).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_vni_allocation_postgres() {
    let Some(srv) = TestServer::start_pg(&vxlan_ini("1:100")).await else {
        return;
    };
    concurrent_allocation(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn exhaustion_and_reuse_sqlite() {
    let srv = TestServer::start_with(&vxlan_ini("1:10")).await;
    exhaustion_and_reuse(&srv).await;
}

#[tokio::test]
async fn exhaustion_and_reuse_postgres() {
    let Some(srv) = TestServer::start_pg(&vxlan_ini("1:10")).await else {
        return;
    };
    exhaustion_and_reuse(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn tenant_types_in_order_sqlite() {
    let srv = TestServer::start_with(ORDER_INI).await;
    tenant_types_in_order(&srv).await;
}

#[tokio::test]
async fn tenant_types_in_order_postgres() {
    let Some(srv) = TestServer::start_pg(ORDER_INI).await else {
        return;
    };
    tenant_types_in_order(&srv).await;
    srv.cleanup().await;
}

/// Neutron's defaults: project networks are `local` with the global MTU; extensions listed.
#[tokio::test]
async fn defaults_and_extensions() {
    let srv = TestServer::start().await;
    let n = srv.network("member:p1", json!({})).await;
    let (_, shown) = srv
        .get(
            &format!("/v2.0/networks/{}", n["id"].as_str().unwrap()),
            "admin",
        )
        .await;
    assert_eq!(shown["network"]["provider:network_type"], json!("local"));
    assert_eq!(shown["network"]["provider:segmentation_id"], Value::Null);
    assert_eq!(shown["network"]["mtu"], json!(1500));
    for alias in ["provider", "multi-provider", "segment", "net-mtu"] {
        let (s, _) = srv
            .get(&format!("/v2.0/extensions/{alias}"), "member:p1")
            .await;
        assert_eq!(s, 200, "{alias}");
    }
}
