//! Subnet pool API behaviour (FEATURES §5, scenario E4), on SQLite and (when configured)
//! PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type};

async fn e4(srv: &TestServer) {
    // Step 1: defaults.
    let (s, b) = srv
        .post(
            "/v2.0/subnetpools",
            "admin",
            json!({"subnetpool": {"name": "MySubnetPool", "prefixes": ["172.31.0.0/16"]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let pool = b["subnetpool"].clone();
    assert_eq!(pool["default_prefixlen"], json!("8"));
    assert_eq!(pool["min_prefixlen"], json!("8"));
    assert_eq!(pool["max_prefixlen"], json!("32"));
    assert_eq!(pool["shared"], json!(false));
    assert_eq!(pool["is_default"], json!(false));
    assert_eq!(pool["ip_version"], json!(4));
    assert_eq!(pool["prefixes"], json!(["172.31.0.0/16"]));
    assert_eq!(pool["default_quota"], Value::Null);
    assert_eq!(pool["address_scope_id"], Value::Null);
    assert_eq!(pool["project_id"], json!("admin-project"));
    let pid = pool["id"].as_str().unwrap().to_string();

    // Step 2: a /28 from the pool: first free block, gateway first host, pool the rest.
    let net = srv
        .network("admin", json!({"name": "MyVLANNetwork2"}))
        .await;
    let nid = net["id"].as_str().unwrap().to_string();
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({"subnet": {"name": "MySubnetFromPool", "network_id": nid, "ip_version": 4, "subnetpool_id": pid, "prefixlen": 28}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let s1 = b["subnet"].clone();
    assert_eq!(s1["cidr"], json!("172.31.0.0/28"));
    assert_eq!(s1["gateway_ip"], json!("172.31.0.1"));
    assert_eq!(
        s1["allocation_pools"],
        json!([{"start": "172.31.0.2", "end": "172.31.0.14"}])
    );
    assert_eq!(s1["subnetpool_id"], json!(pid));

    // Prefix length outside the pool's bounds, and exhaustion of a small pool.
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({"subnet": {"network_id": nid, "ip_version": 4, "subnetpool_id": pid, "prefixlen": 33}}))
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (400, "MaxPrefixSubnetAllocationError"),
        "{b}"
    );
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "subnetpool_id": pid}}),
        )
        .await;
    // Neutron answers 500 here; we keep its type but not the 5xx (see subnets.rs).
    assert_eq!((s, err_type(&b)), (409, "SubnetAllocationError"), "{b}");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("Insufficient prefix space to allocate subnet size /8"),
        "{b}"
    );
    // A specific CIDR inside the pool, and one overlapping an allocation.
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({"subnet": {"network_id": nid, "ip_version": 4, "subnetpool_id": pid, "cidr": "172.31.0.8/29"}}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "SubnetAllocationError"), "{b}");
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({"subnet": {"network_id": nid, "ip_version": 4, "subnetpool_id": pid, "cidr": "172.31.5.0/24"}}))
        .await;
    assert_eq!(s, 201, "{b}");
    // Subnets of one version on one network come from the same pool.
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": nid, "ip_version": 4, "cidr": "192.168.0.0/24"}}),
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (400, "NetworkSubnetPoolAffinityError"),
        "{b}"
    );

    // Step 3: the default pool; --use-default-subnet-pool takes the next free /28.
    let (s, b) = srv.post("/v2.0/subnets", "admin", json!({"subnet": {"network_id": nid, "ip_version": 4, "use_default_subnetpool": true, "prefixlen": 28}})).await;
    assert_eq!((s, err_type(&b)), (400, "BadRequest"), "{b}");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("No default subnetpool found for IPv4"),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnetpools/{pid}"),
            "member:p1",
            json!({"subnetpool": {"is_default": true}}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnetpools/{pid}"),
            "admin",
            json!({"subnetpool": {"is_default": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnetpool"]["is_default"], json!(true));
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", json!({"subnet": {"network_id": nid, "ip_version": 4, "use_default_subnetpool": true, "prefixlen": 28}}))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["subnet"]["cidr"], json!("172.31.0.16/28"));
    assert_eq!(b["subnet"]["subnetpool_id"], json!(pid));
    // Only one default per IP version.
    let (s, b) = srv
        .post("/v2.0/subnetpools", "admin", json!({"subnetpool": {"name": "other", "prefixes": ["10.0.0.0/8"], "is_default": true}}))
        .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");

    // Step 4: delete refused while subnets use it, then succeeds.
    let (s, b) = srv
        .delete(&format!("/v2.0/subnetpools/{pid}"), "admin")
        .await;
    assert_eq!((s, err_type(&b)), (400, "SubnetPoolDeleteError"), "{b}");
    let (_, l) = srv
        .get(&format!("/v2.0/subnets?subnetpool_id={pid}"), "admin")
        .await;
    for sub in l["subnets"].as_array().unwrap() {
        let (s, _) = srv
            .delete(
                &format!("/v2.0/subnets/{}", sub["id"].as_str().unwrap()),
                "admin",
            )
            .await;
        assert_eq!(s, 204);
    }
    let (s, b) = srv
        .delete(&format!("/v2.0/subnetpools/{pid}"), "admin")
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv.get(&format!("/v2.0/subnetpools/{pid}"), "admin").await;
    assert_eq!((s, err_type(&b)), (404, "SubnetPoolNotFound"), "{b}");
}

#[tokio::test]
async fn e4_sqlite() {
    let srv = TestServer::start().await;
    e4(&srv).await;
}

#[tokio::test]
async fn e4_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    e4(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn validation_visibility_and_prefix_ops() {
    let srv = TestServer::start().await;
    let post = |body: Value| {
        let srv = &srv;
        async move {
            srv.post(
                "/v2.0/subnetpools",
                "member:p1",
                json!({ "subnetpool": body }),
            )
            .await
        }
    };
    let (s, b) = post(json!({"prefixes": ["10.0.0.0/8"]})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = post(json!({"name": "x", "prefixes": []})).await;
    assert_eq!((s, err_type(&b)), (400, "EmptySubnetPoolPrefixList"), "{b}");
    let (s, b) = post(json!({"name": "x", "prefixes": ["10.0.0.0/8", "2001:db8::/32"]})).await;
    assert_eq!((s, err_type(&b)), (400, "PrefixVersionMismatch"), "{b}");
    let (s, b) = post(
        json!({"name": "x", "prefixes": ["10.0.0.0/8"], "min_prefixlen": 24, "max_prefixlen": 16}),
    )
    .await;
    assert_eq!(
        (s, err_type(&b)),
        (400, "IllegalSubnetPoolPrefixBounds"),
        "{b}"
    );
    let (s, b) = post(json!({"name": "x", "prefixes": ["10.0.0.0/8"], "shared": true})).await;
    assert_eq!(s, 403, "{b}");

    let (s, b) = post(json!({"name": "mine", "prefixes": ["10.1.0.0/24", "10.1.1.0/24"], "default_prefixlen": 26, "min_prefixlen": 24})).await;
    assert_eq!(s, 201, "{b}");
    let p = b["subnetpool"].clone();
    assert_eq!(p["prefixes"], json!(["10.1.0.0/23"]));
    assert_eq!(p["default_prefixlen"], json!("26"));
    let pid = p["id"].as_str().unwrap().to_string();
    let (s, _) = srv
        .get(&format!("/v2.0/subnetpools/{pid}"), "member:p2")
        .await;
    assert_eq!(s, 404);
    let (_, l) = srv.get("/v2.0/subnetpools", "member:p2").await;
    assert_eq!(l["subnetpools"], json!([]));
    let (_, l) = srv.get("/v2.0/subnetpools?name=mine", "reader:p1").await;
    assert_eq!(l["subnetpools"].as_array().unwrap().len(), 1);

    // Prefixes only grow through update; PUT answers with integer prefix lengths.
    let url = format!("/v2.0/subnetpools/{pid}");
    let (s, b) = srv
        .put(
            &url,
            "member:p1",
            json!({"subnetpool": {"prefixes": ["10.1.0.0/24"]}}),
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (400, "IllegalSubnetPoolPrefixUpdate"),
        "{b}"
    );
    let (s, b) = srv.put(&url, "member:p1", json!({"subnetpool": {"prefixes": ["10.1.0.0/23", "10.2.0.0/24"], "min_prefixlen": 25}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnetpool"]["min_prefixlen"], json!(25));
    assert_eq!(
        b["subnetpool"]["prefixes"],
        json!(["10.1.0.0/23", "10.2.0.0/24"])
    );
    let (s, b) = srv
        .put(&url, "member:p1", json!({"subnetpool": {"shared": true}}))
        .await;
    assert_eq!(s, 400, "{b}");

    // subnetpool-prefix-ops.
    let (s, b) = srv
        .put(
            &format!("{url}/add_prefixes"),
            "member:p1",
            json!({"prefixes": ["10.3.0.0/24"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["prefixes"],
        json!(["10.1.0.0/23", "10.2.0.0/24", "10.3.0.0/24"])
    );
    let net = srv.network("member:p1", json!({"name": "n"})).await;
    let (s, b) = srv
        .post("/v2.0/subnets", "member:p1", json!({"subnet": {"network_id": net["id"], "ip_version": 4, "subnetpool_id": pid, "cidr": "10.3.0.0/26"}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .put(
            &format!("{url}/remove_prefixes"),
            "member:p1",
            json!({"prefixes": ["10.3.0.0/24"]}),
        )
        .await;
    assert_eq!(
        (s, err_type(&b)),
        (400, "IllegalSubnetPoolPrefixUpdate"),
        "{b}"
    );
    let (s, b) = srv
        .put(
            &format!("{url}/remove_prefixes"),
            "member:p1",
            json!({"prefixes": ["10.2.0.0/25"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["prefixes"],
        json!(["10.1.0.0/23", "10.2.0.128/25", "10.3.0.0/24"])
    );

    // Shared pools are visible to and usable by every project.
    let (s, b) = srv
        .post("/v2.0/subnetpools", "admin", json!({"subnetpool": {"name": "pub", "prefixes": ["10.50.0.0/16"], "shared": true, "default_prefixlen": 24}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let shared = b["subnetpool"]["id"].as_str().unwrap().to_string();
    let n2 = srv.network("member:p2", json!({"name": "n2"})).await;
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p2",
            json!({"subnet": {"network_id": n2["id"], "ip_version": 4, "subnetpool_id": shared}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["subnet"]["cidr"], json!("10.50.0.0/24"));
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "member:p2",
            json!({"subnet": {"network_id": n2["id"], "ip_version": 6, "subnetpool_id": shared}}),
        )
        .await;
    assert_eq!((s, err_type(&b)), (400, "BadRequest"), "{b}");
}

#[tokio::test]
async fn pool_quota() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .post("/v2.0/subnetpools", "member:p1", json!({"subnetpool": {"name": "q", "prefixes": ["10.0.0.0/16"], "default_prefixlen": 24, "default_quota": 300}}))
        .await;
    assert_eq!(s, 201, "{b}");
    let pid = b["subnetpool"]["id"].as_str().unwrap().to_string();
    let net = srv.network("member:p1", json!({"name": "n"})).await;
    let body = json!({"subnet": {"network_id": net["id"], "ip_version": 4, "subnetpool_id": pid}});
    let (s, b) = srv.post("/v2.0/subnets", "member:p1", body.clone()).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv.post("/v2.0/subnets", "member:p1", body).await;
    assert_eq!((s, err_type(&b)), (409, "SubnetPoolQuotaExceeded"), "{b}");
}
