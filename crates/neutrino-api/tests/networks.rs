//! Network API behaviour, on SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::json;
use support::{TestServer, err_type};

async fn lifecycle(srv: &TestServer) {
    let net = srv.network("member:p1", json!({"name": "net1"})).await;
    assert_eq!(net["admin_state_up"], json!(true));
    assert_eq!(net["shared"], json!(false));
    assert_eq!(net["router:external"], json!(false));
    assert_eq!(net["status"], json!("ACTIVE"));
    assert_eq!(net["project_id"], json!("p1"));
    assert_eq!(net["tenant_id"], json!("p1"));
    assert_eq!(net["subnets"], json!([]));
    assert_eq!(net["revision_number"], json!(1));
    let id = net["id"].as_str().unwrap();

    // Another project does not see it: 404, not 403.
    let (s, b) = srv.get(&format!("/v2.0/networks/{id}"), "member:p2").await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "NetworkNotFound");
    let (_, l) = srv.get("/v2.0/networks", "member:p2").await;
    assert_eq!(l["networks"], json!([]));

    // Update bumps the revision; If-Match on a stale revision is refused.
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{id}"),
            "member:p1",
            json!({"network": {"name": "renamed"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["network"]["revision_number"], json!(2));
    let (s, b) = srv
        .call_h(
            "PUT",
            &format!("/v2.0/networks/{id}"),
            "member:p1",
            Some(json!({"network": {"name": "x"}})),
            &[("If-Match", "revision_number=1")],
        )
        .await;
    assert_eq!(s, 412, "{b}");
    assert_eq!(err_type(&b), "RevisionNumberConstraintFailed");

    // A reader cannot write.
    let (s, _) = srv
        .put(
            &format!("/v2.0/networks/{id}"),
            "reader:p1",
            json!({"network": {"name": "y"}}),
        )
        .await;
    assert_eq!(s, 403);

    // Non-admins cannot share.
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "member:p1",
            json!({"network": {"shared": true}}),
        )
        .await;
    assert_eq!(s, 403, "{b}");

    // Unknown attributes are a 400 with Neutron's message.
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "member:p1",
            json!({"network": {"bogus": 1}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("Unrecognized attribute(s) 'bogus'"),
        "{b}"
    );

    // Shared networks are visible to everyone.
    let shared = srv
        .network("admin", json!({"name": "pub", "shared": true}))
        .await;
    let (s, _) = srv
        .get(
            &format!("/v2.0/networks/{}", shared["id"].as_str().unwrap()),
            "member:p2",
        )
        .await;
    assert_eq!(s, 200);

    let (s, _) = srv
        .delete(&format!("/v2.0/networks/{id}"), "member:p1")
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.get(&format!("/v2.0/networks/{id}"), "member:p1").await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn network_lifecycle_sqlite() {
    let srv = TestServer::start().await;
    lifecycle(&srv).await;
}

#[tokio::test]
async fn network_lifecycle_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    lifecycle(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn quota_and_bulk_are_atomic() {
    let srv = TestServer::start_with("[quotas]\nquota_network = 2\n").await;
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "member:q",
            json!({"networks": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "OverQuota");
    let (_, l) = srv.get("/v2.0/networks", "member:q").await;
    assert_eq!(
        l["networks"].as_array().unwrap().len(),
        0,
        "bulk create must be atomic"
    );
    let (s, b) = srv
        .post(
            "/v2.0/networks",
            "member:q",
            json!({"networks": [{"name": "a"}, {"name": "b"}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["networks"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn tags_and_filters() {
    let srv = TestServer::start().await;
    let n = srv.network("member:t", json!({"name": "tagged"})).await;
    let id = n["id"].as_str().unwrap();
    let (s, _) = srv
        .call(
            "PUT",
            &format!("/v2.0/networks/{id}/tags/red"),
            "member:t",
            None,
        )
        .await;
    assert_eq!(s, 201);
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{id}/tags"),
            "member:t",
            json!({"tags": ["a", "b"]}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    srv.network("member:t", json!({"name": "plain"})).await;
    let (_, l) = srv.get("/v2.0/networks?tags=a,b", "member:t").await;
    assert_eq!(l["networks"].as_array().unwrap().len(), 1);
    let (_, l) = srv.get("/v2.0/networks?not-tags=a", "member:t").await;
    assert_eq!(l["networks"][0]["name"], json!("plain"));
    let (s, _) = srv
        .get(&format!("/v2.0/networks/{id}/tags/red"), "member:t")
        .await;
    assert_eq!(s, 404);
    let (_, l) = srv
        .get("/v2.0/networks?name=plain&fields=name", "member:t")
        .await;
    assert_eq!(l["networks"], json!([{"name": "plain"}]));
}

#[tokio::test]
async fn errors_and_request_ids() {
    let srv = TestServer::start().await;
    let (s, b) = srv.get("/v2.0/networks", "nonsense").await;
    assert_eq!(s, 401, "{b}");
    let (s, b) = srv.get("/v2.0/nothing-here", "admin").await;
    assert_eq!(s, 404);
    assert_eq!(err_type(&b), "HTTPNotFound");
    let resp = reqwest::get(format!("{}/", srv.url)).await.unwrap();
    assert!(
        resp.headers()
            .get("x-openstack-request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("req-")
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["versions"][0]["id"], json!("v2.0"));
    let (s, b) = srv
        .call(
            "POST",
            "/v2.0/networks",
            "admin",
            Some(json!("not an object")),
        )
        .await;
    assert_eq!(s, 400, "{b}");
}
