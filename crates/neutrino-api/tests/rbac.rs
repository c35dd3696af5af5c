//! RBAC policies through the API: the E7 walkthrough (network shared with one project, network
//! made external for one project, deletion refused while in use), per-caller `shared`, the
//! wildcard, ownership and validation rules, retargeting, and the rbac_policy quota; on SQLite
//! and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type};

/// Keystone project ids are UUIDs (Neutron validates RBAC targets as such).
const PA: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const PB: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const PC: &str = "cccccccccccccccccccccccccccccccc";

const ML2_INI: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan\n\
    tenant_network_types = vxlan\n\
    [ml2_type_vlan]\nnetwork_vlan_ranges = physnet1:40:43\n\
    [ml2_type_vxlan]\nvni_ranges = 1:1000\n";

/// The E7 users: role `rbacdemo` in their project (any role but reader acts as member).
fn user(project: &str) -> String {
    format!("role:rbacdemo:{project}")
}

fn member(project: &str) -> String {
    format!("member:{project}")
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap_or_default().to_string()
}

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| a.iter().map(id).collect())
        .unwrap_or_default()
}

async fn policy(srv: &TestServer, token: &str, body: Value) -> (u16, Value) {
    srv.post("/v2.0/rbac-policies", token, json!({"rbac_policy": body}))
        .await
}

async fn share(
    srv: &TestServer,
    token: &str,
    ty: &str,
    obj: &str,
    action: &str,
    target: &str,
) -> Value {
    let (s, b) = policy(
        srv,
        token,
        json!({"object_type": ty, "object_id": obj, "action": action, "target_tenant": target}),
    )
    .await;
    assert_eq!(s, 201, "create rbac policy: {b}");
    b["rbac_policy"].clone()
}

async fn revision(srv: &TestServer, net: &str) -> i64 {
    let (_, b) = srv.get(&format!("/v2.0/networks/{net}"), "admin").await;
    b["network"]["revision_number"].as_i64().unwrap_or(-1)
}

async fn e7(srv: &TestServer) {
    // 2. An admin network with a subnet.
    let net = srv
        .network("admin", json!({"name": "MySemiSharedNetwork"}))
        .await;
    assert_eq!(net["shared"], json!(false));
    let net_id = id(&net);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "192.168.99.0/24"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let subnet_id = id(&b["subnet"]);

    // 3. Share it with ProjectA.
    let before = revision(srv, &net_id).await;
    let pol = share(srv, "admin", "network", &net_id, "access_as_shared", PA).await;
    assert_eq!(pol["object_type"], json!("network"));
    assert_eq!(pol["object_id"], json!(net_id));
    assert_eq!(pol["action"], json!("access_as_shared"));
    assert_eq!(pol["target_tenant"], json!(PA));
    assert_eq!(pol["project_id"], json!("admin-project"));
    assert_eq!(pol["tenant_id"], json!("admin-project"));
    assert!(pol.get("_rbac").is_none() && pol.get("target_project").is_none());
    assert!(
        revision(srv, &net_id).await > before,
        "a grant bumps the revision"
    );
    let (s, b) = srv
        .get(&format!("/v2.0/rbac-policies/{}", id(&pol)), "admin")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rbac_policy"], pol);

    // 4. UserA sees the network (shared for it) and its subnet; B and C see nothing.
    let (_, l) = srv.get("/v2.0/networks", &user(PA)).await;
    assert_eq!(ids(&l["networks"]), [net_id.as_str()]);
    assert_eq!(l["networks"][0]["shared"], json!(true));
    assert!(
        l["networks"][0].get("_rbac").is_none(),
        "internal keys leak: {l}"
    );
    let (_, l) = srv.get("/v2.0/subnets", &user(PA)).await;
    assert_eq!(ids(&l["subnets"]), [subnet_id.as_str()]);
    for other in [PB, PC] {
        let (_, l) = srv.get("/v2.0/networks", &user(other)).await;
        assert_eq!(l["networks"], json!([]));
        let (_, l) = srv.get("/v2.0/subnets", &user(other)).await;
        assert_eq!(l["subnets"], json!([]));
    }
    // The admin is not a target: for it the network is not shared.
    let (_, b) = srv.get(&format!("/v2.0/networks/{net_id}"), "admin").await;
    assert_eq!(b["network"]["shared"], json!(false));
    let (_, l) = srv.get("/v2.0/networks?shared=True", &user(PA)).await;
    assert_eq!(ids(&l["networks"]), [net_id.as_str()]);
    // `fields` never exposes internal keys either.
    let (_, l) = srv
        .get("/v2.0/networks?fields=_rbac&fields=id", &user(PA))
        .await;
    assert_eq!(l["networks"], json!([{"id": net_id}]));

    // 5. UserA can create a port on it; UserB cannot (it does not see the network).
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &user(PA),
            json!({"port": {"network_id": net_id}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let port_a = id(&b["port"]);
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &user(PB),
            json!({"port": {"network_id": net_id}}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "NetworkNotFound");

    // 8 (shared). The policy cannot go while ProjectA uses it; it can once the port is gone.
    let (s, b) = srv
        .delete(&format!("/v2.0/rbac-policies/{}", id(&pol)), "admin")
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RbacPolicyInUse");
    let (s, _) = srv
        .delete(&format!("/v2.0/ports/{port_a}"), &user(PA))
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .delete(&format!("/v2.0/rbac-policies/{}", id(&pol)), "admin")
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .get(&format!("/v2.0/networks/{net_id}"), &user(PA))
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = srv
        .get(&format!("/v2.0/rbac-policies/{}", id(&pol)), "admin")
        .await;
    assert_eq!(s, 404);
    assert_eq!(err_type(&b), "RbacPolicyNotFound");

    // 6. An internal VLAN network: not external, not in `network list --external`.
    let ext = srv
        .network(
            "admin",
            json!({"name": "MySemiSharedExternalNetwork", "provider:network_type": "vlan",
                   "provider:physical_network": "physnet1", "provider:segmentation_id": 31}),
        )
        .await;
    let ext_id = id(&ext);
    assert_eq!(ext["router:external"], json!(false));
    let (_, l) = srv
        .get("/v2.0/networks?router:external=True", "admin")
        .await;
    assert_eq!(l["networks"], json!([]));

    // 7. External for ProjectB: B sees it as external, not shared, without provider details.
    let before = revision(srv, &ext_id).await;
    let ext_pol = share(srv, "admin", "network", &ext_id, "access_as_external", PB).await;
    assert!(revision(srv, &ext_id).await > before);
    let (_, l) = srv
        .get("/v2.0/networks?router:external=True", &user(PB))
        .await;
    assert_eq!(ids(&l["networks"]), [ext_id.as_str()]);
    let (s, b) = srv
        .get(&format!("/v2.0/networks/{ext_id}"), &user(PB))
        .await;
    assert_eq!(s, 200, "{b}");
    let shown = &b["network"];
    assert_eq!(shown["router:external"], json!(true));
    assert_eq!(shown["shared"], json!(false));
    assert!(shown.get("provider:network_type").is_none(), "{shown}");
    assert!(shown.get("provider:segmentation_id").is_none(), "{shown}");
    // ProjectB may not put ordinary ports on it: external access is not sharing.
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &user(PB),
            json!({"port": {"network_id": ext_id}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // ProjectC does not see it at all.
    let (_, l) = srv
        .get("/v2.0/networks?router:external=True", &user(PC))
        .await;
    assert_eq!(l["networks"], json!([]));
    let (s, _) = srv
        .get(&format!("/v2.0/networks/{ext_id}"), &user(PC))
        .await;
    assert_eq!(s, 404);

    // 8 (external). ProjectB's gateway on it keeps the policy.
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            "admin",
            json!({"port": {"network_id": ext_id, "project_id": PB,
                            "device_owner": "network:router_gateway"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let gw = id(&b["port"]);
    let (s, b) = srv
        .delete(&format!("/v2.0/rbac-policies/{}", id(&ext_pol)), "admin")
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RbacPolicyInUse");
    let (s, _) = srv.delete(&format!("/v2.0/ports/{gw}"), "admin").await;
    assert_eq!(s, 204);
    let (s, _) = srv
        .delete(&format!("/v2.0/rbac-policies/{}", id(&ext_pol)), "admin")
        .await;
    assert_eq!(s, 204);
    // The last external grant gone, the network is internal again.
    let (_, b) = srv.get(&format!("/v2.0/networks/{ext_id}"), "admin").await;
    assert_eq!(b["network"]["router:external"], json!(false));
    let (s, _) = srv
        .get(&format!("/v2.0/networks/{ext_id}"), &user(PB))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn e7_sqlite() {
    let srv = TestServer::start_with(ML2_INI).await;
    e7(&srv).await;
}

#[tokio::test]
async fn e7_postgres() {
    let Some(srv) = TestServer::start_pg(ML2_INI).await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    e7(&srv).await;
    srv.cleanup().await;
}

async fn wildcard_and_ownership(srv: &TestServer) {
    // shared=True is a wildcard grant the owner sees among its policies.
    let pubnet = srv
        .network(
            "admin",
            json!({"name": "pub", "shared": true, "router:external": true}),
        )
        .await;
    let pub_id = id(&pubnet);
    let (_, l) = srv
        .get(&format!("/v2.0/rbac-policies?object_id={pub_id}"), "admin")
        .await;
    let mut grants: Vec<(String, String)> = l["rbac_policies"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["action"].as_str().unwrap_or_default().to_string(),
                p["target_tenant"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    grants.sort();
    assert_eq!(
        grants,
        [
            ("access_as_external".to_string(), "*".to_string()),
            ("access_as_shared".to_string(), "*".to_string())
        ]
    );
    let (_, b) = srv
        .get(&format!("/v2.0/networks/{pub_id}"), &member(PC))
        .await;
    assert_eq!(b["network"]["shared"], json!(true));
    // A second wildcard grant is a duplicate.
    let (s, b) = policy(
        srv,
        "admin",
        json!({"object_type": "network", "object_id": pub_id, "action": "access_as_shared", "target_tenant": "*"}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "DuplicateRbacPolicy");
    // Projects' policies are invisible to others.
    let (_, l) = srv.get("/v2.0/rbac-policies", &member(PA)).await;
    assert_eq!(l["rbac_policies"], json!([]));

    // A project shares its own network with another one.
    let net = srv.network(&member(PA), json!({"name": "mine"})).await;
    let net_id = id(&net);
    let pol = share(srv, &member(PA), "network", &net_id, "access_as_shared", PB).await;
    assert_eq!(pol["project_id"], json!(PA));
    // ... but not with everyone.
    let (s, b) = policy(
        srv,
        &member(PA),
        json!({"object_type": "network", "object_id": net_id, "action": "access_as_shared", "target_tenant": "*"}),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(err_type(&b), "PolicyNotAuthorized");
    let (s, b) = srv
        .put(
            &format!("/v2.0/rbac-policies/{}", id(&pol)),
            &member(PA),
            json!({"rbac_policy": {"target_tenant": "*"}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // Duplicates are refused.
    let (s, b) = policy(
        srv,
        &member(PA),
        json!({"object_type": "network", "object_id": net_id, "action": "access_as_shared", "target_tenant": PB}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "DuplicateRbacPolicy");
    // The target sees the network but not the policy, and may not share it further.
    let (s, _) = srv
        .get(&format!("/v2.0/networks/{net_id}"), &member(PB))
        .await;
    assert_eq!(s, 200);
    let (_, l) = srv.get("/v2.0/rbac-policies", &member(PB)).await;
    assert_eq!(l["rbac_policies"], json!([]));
    let (s, b) = srv
        .get(&format!("/v2.0/rbac-policies/{}", id(&pol)), &member(PB))
        .await;
    assert_eq!(s, 404, "{b}");
    let (s, b) = policy(
        srv,
        &member(PB),
        json!({"object_type": "network", "object_id": net_id, "action": "access_as_shared", "target_tenant": PC}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        message(&b),
        "Invalid input for operation: Only admins can manipulate policies on networks they do not own."
    );
    // A project that cannot see the network gets Neutron's not-found message in a 400.
    let (s, b) = policy(
        srv,
        &member(PC),
        json!({"object_type": "network", "object_id": net_id, "action": "access_as_shared", "target_tenant": PC}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(
        message(&b),
        format!("Invalid input for operation: Network {net_id} could not be found.")
    );

    // Retargeting B -> C is refused while B has a port there, then allowed.
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &member(PB),
            json!({"port": {"network_id": net_id}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let port_b = id(&b["port"]);
    let url = format!("/v2.0/rbac-policies/{}", id(&pol));
    let (s, b) = srv
        .put(
            &url,
            &member(PA),
            json!({"rbac_policy": {"target_tenant": PC}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RbacPolicyInUse");
    let (s, _) = srv
        .delete(&format!("/v2.0/ports/{port_b}"), &member(PB))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .put(
            &url,
            &member(PA),
            json!({"rbac_policy": {"target_tenant": PC}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["rbac_policy"]["target_tenant"], json!(PC));
    let (s, _) = srv
        .get(&format!("/v2.0/networks/{net_id}"), &member(PB))
        .await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .get(&format!("/v2.0/networks/{net_id}"), &member(PC))
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["network"]["shared"], json!(true));

    // shared=True / shared=False through the network: unsharing is refused while a project
    // without a grant of its own has a port there.
    let url_net = format!("/v2.0/networks/{net_id}");
    let (s, b) = srv
        .put(&url_net, "admin", json!({"network": {"shared": true}}))
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &member(PB),
            json!({"port": {"network_id": net_id}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let port_b = id(&b["port"]);
    let (s, b) = srv
        .put(&url_net, "admin", json!({"network": {"shared": false}}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "InvalidSharedSetting");
    let (s, _) = srv
        .delete(&format!("/v2.0/ports/{port_b}"), &member(PB))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .put(&url_net, "admin", json!({"network": {"shared": false}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["shared"], json!(false));
    let (s, _) = srv.get(&url_net, &member(PB)).await;
    assert_eq!(s, 404);

    // Validation.
    let bad = |body: Value| async move { policy(srv, "admin", body).await };
    let (s, b) = bad(json!({"object_type": "qos_policy", "object_id": net_id,
        "action": "access_as_shared", "target_tenant": PA}))
    .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidInput"), "{b}");
    let (s, b) = bad(json!({"object_type": "network", "object_id": net_id,
        "action": "access_as_nothing", "target_tenant": PA}))
    .await;
    assert_eq!((s, err_type(&b)), (400, "InvalidActionForType"), "{b}");
    let (s, b) = bad(json!({"object_type": "subnetpool", "object_id": net_id,
        "action": "access_as_shared", "target_tenant": "not-a-project"}))
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        message(&b).contains("is not a valid target project ID"),
        "{b}"
    );
    let (s, b) =
        bad(json!({"object_type": "network", "object_id": net_id, "action": "access_as_shared"}))
            .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        message(&b).contains("Required attribute 'target_tenant'"),
        "{b}"
    );

    // Deleting the network takes its grants along.
    let (s, _) = srv.delete(&url_net, &member(PA)).await;
    assert_eq!(s, 204);
    let (_, l) = srv
        .get(&format!("/v2.0/rbac-policies?object_id={net_id}"), "admin")
        .await;
    assert_eq!(l["rbac_policies"], json!([]));
}

#[tokio::test]
async fn wildcard_and_ownership_sqlite() {
    let srv = TestServer::start().await;
    wildcard_and_ownership(&srv).await;
}

#[tokio::test]
async fn wildcard_and_ownership_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    wildcard_and_ownership(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn rbac_policy_quota() {
    let srv = TestServer::start().await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/quotas/{PA}"),
            "admin",
            json!({"quota": {"rbac_policy": 2}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let net = id(&srv.network(&member(PA), json!({})).await);
    share(&srv, &member(PA), "network", &net, "access_as_shared", PB).await;
    share(&srv, &member(PA), "network", &net, "access_as_shared", PC).await;
    let (s, b) = policy(
        &srv,
        &member(PA),
        json!({"object_type": "network", "object_id": net, "action": "access_as_shared",
               "target_tenant": "dddddddddddddddddddddddddddddddd"}),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "OverQuota");
    let (_, b) = srv
        .get(&format!("/v2.0/quotas/{PA}/details"), &member(PA))
        .await;
    assert_eq!(b["quota"]["rbac_policy"]["used"], json!(2), "{b}");
}

#[tokio::test]
async fn extensions_are_listed() {
    let srv = TestServer::start().await;
    for alias in [
        "rbac-policies",
        "rbac-subnetpool",
        "rbac-address-scope",
        "rbac-address-group",
        "rbac-security-groups",
        "address-scope",
        "address-group",
    ] {
        let (s, b) = srv.get(&format!("/v2.0/extensions/{alias}"), "admin").await;
        assert_eq!(s, 200, "{alias}: {b}");
    }
}

/// rbac-security-groups: a group shared with a project is visible to it and usable by its
/// ports, and the grant stays while those ports use it.
async fn security_group_sharing(srv: &TestServer) {
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            &member(PA),
            json!({"security_group": {"name": "web"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sg = id(&b["security_group"]);
    let (s, _) = srv
        .get(&format!("/v2.0/security-groups/{sg}"), &member(PB))
        .await;
    assert_eq!(s, 404);
    let pol = share(
        srv,
        &member(PA),
        "security_group",
        &sg,
        "access_as_shared",
        PB,
    )
    .await;
    let (s, b) = srv
        .get(&format!("/v2.0/security-groups/{sg}"), &member(PB))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["security_group"]["shared"], json!(true));
    assert!(b["security_group"].get("_rbac").is_none(), "{b}");
    let net = id(&srv.network(&member(PB), json!({})).await);
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            &member(PB),
            json!({"port": {"network_id": net, "security_groups": [sg]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let port = id(&b["port"]);
    let url = format!("/v2.0/rbac-policies/{}", id(&pol));
    let (s, b) = srv.delete(&url, &member(PA)).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RbacPolicyInUse");
    let (s, _) = srv
        .delete(&format!("/v2.0/ports/{port}"), &member(PB))
        .await;
    assert_eq!(s, 204);
    let (s, b) = srv.delete(&url, &member(PA)).await;
    assert_eq!(s, 204, "{b}");
    let (s, _) = srv
        .get(&format!("/v2.0/security-groups/{sg}"), &member(PB))
        .await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn security_group_sharing_sqlite() {
    let srv = TestServer::start().await;
    security_group_sharing(&srv).await;
}

#[tokio::test]
async fn security_group_sharing_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    security_group_sharing(&srv).await;
    srv.cleanup().await;
}
