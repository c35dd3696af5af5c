//! Address scopes, subnet pools in scopes, RBAC sharing of pools and scopes, and address
//! groups, on SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type};

const PA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const PB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const PC: &str = "cccccccccccccccccccccccccccccccc";

fn member(project: &str) -> String {
    format!("member:{project}")
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

async fn create(srv: &TestServer, path: &str, key: &str, token: &str, body: Value) -> (u16, Value) {
    srv.post(path, token, json!({ key: body })).await
}

async fn scope(srv: &TestServer, token: &str, body: Value) -> Value {
    let (s, b) = create(srv, "/v2.0/address-scopes", "address_scope", token, body).await;
    assert_eq!(s, 201, "create address scope: {b}");
    b["address_scope"].clone()
}

async fn pool(srv: &TestServer, token: &str, body: Value) -> (u16, Value) {
    create(srv, "/v2.0/subnetpools", "subnetpool", token, body).await
}

async fn share(srv: &TestServer, token: &str, ty: &str, obj: &str, target: &str) -> (u16, Value) {
    srv.post(
        "/v2.0/rbac-policies",
        token,
        json!({"rbac_policy": {"object_type": ty, "object_id": obj,
               "action": "access_as_shared", "target_tenant": target}}),
    )
    .await
}

async fn scopes_and_pools(srv: &TestServer) {
    // A project's scope: Neutron's keys only, invisible to others.
    let s4 = scope(srv, &member(PA), json!({"name": "s4", "ip_version": 4})).await;
    let mut keys: Vec<&str> = s4
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "id",
            "ip_version",
            "name",
            "project_id",
            "shared",
            "tenant_id"
        ]
    );
    assert_eq!(s4["shared"], json!(false));
    let s4_id = id(&s4);
    let (s, b) = srv
        .get(&format!("/v2.0/address-scopes/{s4_id}"), &member(PB))
        .await;
    assert_eq!(s, 404);
    assert_eq!(err_type(&b), "AddressScopeNotFound");
    let (s, b) = create(
        srv,
        "/v2.0/address-scopes",
        "address_scope",
        &member(PA),
        json!({"name": "x", "ip_version": 5}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = create(
        srv,
        "/v2.0/address-scopes",
        "address_scope",
        &member(PA),
        json!({"name": "x", "ip_version": 4, "shared": true}),
    )
    .await;
    assert_eq!(s, 403, "{b}");

    // Pools join scopes of their IP version, without overlapping prefixes.
    let (s, b) = pool(
        srv,
        &member(PA),
        json!({"name": "p1", "prefixes": ["10.10.0.0/16"], "default_prefixlen": 24,
               "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["subnetpool"]["address_scope_id"], json!(s4_id));
    let p1 = id(&b["subnetpool"]);
    let (s, b) = pool(
        srv,
        &member(PA),
        json!({"name": "p6", "prefixes": ["2001:db8::/48"], "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        err_type(&b),
        "IllegalSubnetPoolIpVersionAssociationToAddressScope"
    );
    let (s, b) = pool(
        srv,
        &member(PA),
        json!({"name": "p2", "prefixes": ["10.10.128.0/17"], "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "AddressScopePrefixConflict");
    let (s, b) = pool(
        srv,
        &member(PA),
        json!({"name": "p2", "prefixes": ["10.20.0.0/16"], "address_scope_id": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "AddressScopeNotFound");
    // Another project cannot use a scope it does not see.
    let (s, b) = pool(
        srv,
        &member(PB),
        json!({"name": "pb", "prefixes": ["10.30.0.0/16"], "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    // Growing a pool into a neighbour's prefixes conflicts too.
    let (s, b) = pool(
        srv,
        &member(PA),
        json!({"name": "p3", "prefixes": ["10.40.0.0/16"], "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let p3 = id(&b["subnetpool"]);
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnetpools/{p3}/add_prefixes"),
            &member(PA),
            json!({"prefixes": ["10.10.5.0/24"]}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // Leaving the scope and deleting the pool.
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnetpools/{p3}"),
            &member(PA),
            json!({"subnetpool": {"address_scope_id": null}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnetpool"]["address_scope_id"], Value::Null);
    let (s, _) = srv
        .delete(&format!("/v2.0/subnetpools/{p3}"), &member(PA))
        .await;
    assert_eq!(s, 204);

    // A network shows the scope of its subnets' pool.
    let net = srv.network(&member(PA), json!({"name": "scoped"})).await;
    let net_id = id(&net);
    assert_eq!(net["ipv4_address_scope"], Value::Null);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            &member(PA),
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "subnetpool_id": p1}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (_, b) = srv
        .get(&format!("/v2.0/networks/{net_id}"), &member(PA))
        .await;
    assert_eq!(b["network"]["ipv4_address_scope"], json!(s4_id));
    assert_eq!(b["network"]["ipv6_address_scope"], Value::Null);
    let (_, l) = srv
        .get(&format!("/v2.0/networks?id={net_id}"), &member(PA))
        .await;
    assert_eq!(l["networks"][0]["ipv4_address_scope"], json!(s4_id));

    // A scope with pools cannot go.
    let (s, b) = srv
        .delete(&format!("/v2.0/address-scopes/{s4_id}"), &member(PA))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "AddressScopeInUse");

    // Sharing the pool: B sees it (shared for B, not for C) and allocates from it.
    let (s, b) = share(srv, &member(PA), "subnetpool", &p1, PB).await;
    assert_eq!(s, 400, "a pool in an unshared scope: {b}");
    assert!(message(&b).contains("associated address scope"), "{b}");
    let (s, b) = share(srv, &member(PA), "address_scope", &s4_id, PB).await;
    assert_eq!(s, 201, "{b}");
    let scope_pol = id(&b["rbac_policy"]);
    let (s, b) = srv
        .get(&format!("/v2.0/address-scopes/{s4_id}"), &member(PB))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["address_scope"]["shared"], json!(true));
    let (s, b) = share(srv, &member(PA), "subnetpool", &p1, PB).await;
    assert_eq!(s, 201, "{b}");
    let pool_pol = id(&b["rbac_policy"]);
    let (s, b) = srv
        .get(&format!("/v2.0/subnetpools/{p1}"), &member(PB))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnetpool"]["shared"], json!(true));
    let (s, _) = srv
        .get(&format!("/v2.0/subnetpools/{p1}"), &member(PC))
        .await;
    assert_eq!(s, 404);
    let (_, b) = srv
        .get(&format!("/v2.0/subnetpools/{p1}"), &member(PA))
        .await;
    assert_eq!(b["subnetpool"]["shared"], json!(false));
    let net_b = id(&srv.network(&member(PB), json!({"name": "b"})).await);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            &member(PB),
            json!({"subnet": {"network_id": net_b, "ip_version": 4, "subnetpool_id": p1}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let subnet_b = id(&b["subnet"]);
    // B may not change a pool in A's scope, nor may A take the pool or scope away from B.
    let (s, b) = srv
        .delete(&format!("/v2.0/rbac-policies/{pool_pol}"), &member(PA))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RbacPolicyInUse");
    let (s, b) = pool(
        srv,
        &member(PB),
        json!({"name": "pb", "prefixes": ["10.50.0.0/16"], "address_scope_id": s4_id}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let pb_pool = id(&b["subnetpool"]);
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnetpools/{pb_pool}"),
            &member(PB),
            json!({"subnetpool": {"name": "renamed"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "IllegalSubnetPoolUpdate");
    let (s, b) = srv
        .delete(&format!("/v2.0/rbac-policies/{scope_pol}"), &member(PA))
        .await;
    assert_eq!(s, 409, "{b}");
    // Once B is done, both go.
    let (s, _) = srv
        .delete(&format!("/v2.0/subnetpools/{pb_pool}"), &member(PB))
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .delete(&format!("/v2.0/subnets/{subnet_b}"), &member(PB))
        .await;
    assert_eq!(s, 204);
    for pol in [pool_pol, scope_pol] {
        let (s, b) = srv
            .delete(&format!("/v2.0/rbac-policies/{pol}"), &member(PA))
            .await;
        assert_eq!(s, 204, "{b}");
    }
    let (s, _) = srv
        .get(&format!("/v2.0/subnetpools/{p1}"), &member(PB))
        .await;
    assert_eq!(s, 404);

    // An admin's shared scope: everyone sees it; it cannot be unshared.
    let pub_scope = scope(
        srv,
        "admin",
        json!({"name": "pub", "ip_version": 6, "shared": true}),
    )
    .await;
    let pub_id = id(&pub_scope);
    let (s, b) = srv
        .get(&format!("/v2.0/address-scopes/{pub_id}"), &member(PC))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["address_scope"]["shared"], json!(true));
    let (s, b) = srv
        .put(
            &format!("/v2.0/address-scopes/{pub_id}"),
            "admin",
            json!({"address_scope": {"shared": false}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "AddressScopeUpdateError");
    let (s, b) = srv
        .put(
            &format!("/v2.0/address-scopes/{pub_id}"),
            &member(PC),
            json!({"address_scope": {"name": "mine"}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .put(
            &format!("/v2.0/address-scopes/{pub_id}"),
            "admin",
            json!({"address_scope": {"name": "renamed"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["address_scope"]["name"], json!("renamed"));
    let (s, _) = srv
        .delete(&format!("/v2.0/address-scopes/{pub_id}"), "admin")
        .await;
    assert_eq!(s, 204);
    let (_, l) = srv
        .get(&format!("/v2.0/rbac-policies?object_id={pub_id}"), "admin")
        .await;
    assert_eq!(l["rbac_policies"], json!([]));
}

#[tokio::test]
async fn scopes_and_pools_sqlite() {
    let srv = TestServer::start().await;
    scopes_and_pools(&srv).await;
}

#[tokio::test]
async fn scopes_and_pools_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    scopes_and_pools(&srv).await;
    srv.cleanup().await;
}

async fn address_groups(srv: &TestServer) {
    let (s, b) = create(
        srv,
        "/v2.0/address-groups",
        "address_group",
        &member(PA),
        json!({"name": "ag", "addresses": ["10.0.0.5/24", "2001:db8::1/64"]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let ag = &b["address_group"];
    assert_eq!(ag["addresses"], json!(["10.0.0.0/24", "2001:db8::/64"]));
    assert_eq!(ag["project_id"], json!(PA));
    assert_eq!(ag["description"], json!(""));
    assert_eq!(ag["revision_number"], json!(1));
    assert!(ag.get("shared").is_none(), "{ag}");
    let ag_id = id(ag);
    let url = format!("/v2.0/address-groups/{ag_id}");

    // Validation of the addresses attribute.
    for (bad, needle) in [
        (json!(["10.0.0.1"]), "isn't a recognized IP subnet cidr"),
        (json!(["nope/8"]), "is not a valid IP subnet"),
        (json!(["10.0.0.0/8", "10.0.0.0/8"]), "Duplicate items"),
    ] {
        let (s, b) = create(
            srv,
            "/v2.0/address-groups",
            "address_group",
            &member(PA),
            json!({"addresses": bad}),
        )
        .await;
        assert_eq!(s, 400, "{b}");
        assert!(message(&b).contains(needle), "{b}");
    }
    let (s, b) = srv
        .put(
            &url,
            &member(PA),
            json!({"address_group": {"addresses": []}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");

    // add / remove.
    let (s, b) = srv
        .put(
            &format!("{url}/add_addresses"),
            &member(PA),
            json!({"addresses": ["192.0.2.7", "10.1.2.3/16"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["address_group"]["addresses"],
        json!([
            "10.0.0.0/24",
            "10.1.0.0/16",
            "192.0.2.7/32",
            "2001:db8::/64"
        ])
    );
    assert_eq!(b["address_group"]["revision_number"], json!(2));
    let (s, b) = srv
        .put(
            &format!("{url}/add_addresses"),
            &member(PA),
            json!({"addresses": ["10.0.0.9/24"]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "AddressesAlreadyExist");
    assert_eq!(
        message(&b),
        format!("Addresses ['10.0.0.0/24'] already exist in the address group {ag_id}.")
    );
    let (s, b) = srv
        .put(
            &format!("{url}/remove_addresses"),
            &member(PA),
            json!({"addresses": ["10.1.0.0/16", "198.51.100.0/24"]}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "AddressesNotFound");
    let (s, b) = srv
        .put(
            &format!("{url}/remove_addresses"),
            &member(PA),
            json!({"addresses": ["10.1.0.0/16", "192.0.2.7/32"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["address_group"]["addresses"],
        json!(["10.0.0.0/24", "2001:db8::/64"])
    );
    let (s, b) = srv
        .put(
            &url,
            &member(PA),
            json!({"address_group": {"name": "renamed", "description": "d"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["address_group"]["name"], json!("renamed"));

    // Sharing: B sees it but may not change it; C does not see it.
    let (s, _) = srv.get(&url, &member(PB)).await;
    assert_eq!(s, 404);
    let (s, b) = share(srv, &member(PA), "address_group", &ag_id, PB).await;
    assert_eq!(s, 201, "{b}");
    let pol = id(&b["rbac_policy"]);
    let (s, b) = srv.get(&url, &member(PB)).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["address_group"].get("shared").is_none());
    let (_, l) = srv.get("/v2.0/address-groups", &member(PB)).await;
    assert_eq!(l["address_groups"].as_array().map(Vec::len), Some(1));
    let (s, b) = srv
        .put(
            &format!("{url}/add_addresses"),
            &member(PB),
            json!({"addresses": ["10.9.0.0/16"]}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    let (s, _) = srv.get(&url, &member(PC)).await;
    assert_eq!(s, 404);
    let (s, b) = share(srv, &member(PB), "address_group", &ag_id, PC).await;
    assert_eq!(s, 400, "{b}");
    assert!(message(&b).contains("objects they do not own"), "{b}");

    // Deleting the group takes its grants along.
    let (s, _) = srv.delete(&url, &member(PB)).await;
    assert_eq!(s, 403);
    let (s, _) = srv.delete(&url, &member(PA)).await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .get(&format!("/v2.0/rbac-policies/{pol}"), &member(PA))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn address_groups_sqlite() {
    let srv = TestServer::start().await;
    address_groups(&srv).await;
}

#[tokio::test]
async fn address_groups_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    address_groups(&srv).await;
    srv.cleanup().await;
}
