//! What the fuzz and reader-role end-to-end tests (tests/e2e/test_fuzz.py,
//! tests/e2e/test_reader_role.py) found, each checked as a client sees it, on SQLite and
//! (when configured) PostgreSQL, with the Neutron source its expectation comes from.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type, id};

const P: &str = "member:p1";
const READER: &str = "reader:p1";
const OTHER: &str = "member:p2";

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

/// Asserts an error answer: status, `type` and `message`.
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, kind: &str, msg: &str) {
    let (s, b) = got;
    assert_eq!(
        (*s, err_type(b), message(b)),
        (status, kind, msg),
        "full body: {b}"
    );
}

async fn tags(srv: &TestServer, path: &str) -> Value {
    let (s, b) = srv.get(&format!("{path}/tags"), "admin").await;
    assert_eq!(s, 200, "{path}: {b}");
    b["tags"].clone()
}

/// Tag values, with neutron-lib's validators as neutron/extensions/tagging.py applies them:
/// `validate_tags` (a body with `tags`, `type:list_of_unique_strings` with MAX_TAG_LEN 255)
/// for `PUT .../tags`, `validate_tag` for the tag in the path of `PUT`/`GET`/`DELETE
/// .../tags/{tag}`, both `InvalidInput`; `validate_tags_limit` (`BadRequest` naming the
/// collection); the plugin's `TagNotFound`. A refused request changes nothing.
async fn tag_values(srv: &TestServer) {
    let net = id(&srv.network(P, json!({})).await);
    let path = format!("/v2.0/networks/{net}");
    let (s, b) = srv
        .put(&format!("{path}/tags"), P, json!({"tags": ["keep"]}))
        .await;
    assert_eq!(s, 200, "{b}");

    let long = "x".repeat(256);
    let invalid = |m: &str| format!("Invalid input for operation: {m}.");
    let refused = [
        (
            json!({"tags": ["a", "a"]}),
            "Duplicate items in the list: 'a'",
        ),
        (
            json!({"tags": ["a", "b", "c", "b", "a", "a"]}),
            "Duplicate items in the list: 'b, a'",
        ),
        (json!({"tags": "abc"}), "'abc' is not a list"),
        (json!({"tags": [5]}), "'5' is not a valid string"),
        (json!({"tag": ["a"]}), "Invalid tags body"),
        (json!(["a"]), "Invalid tags body"),
        (
            json!({"tags": ["ok", long]}),
            &format!("'{long}' exceeds maximum length of 255"),
        ),
    ];
    for (body, msg) in &refused {
        let got = srv.put(&format!("{path}/tags"), P, body.clone()).await;
        assert_error(&got, 400, "InvalidInput", &invalid(msg));
    }
    // Values are checked before the resource is looked up.
    let got = srv
        .put(
            "/v2.0/networks/6f2c3c8e-8a9b-4c1d-9e0f-0a1b2c3d4e5f/tags",
            P,
            json!({"tags": ["a", "a"]}),
        )
        .await;
    assert_error(
        &got,
        400,
        "InvalidInput",
        &invalid("Duplicate items in the list: 'a'"),
    );
    let many: Vec<String> = (0..51).map(|i| format!("t{i}")).collect();
    let got = srv
        .put(&format!("{path}/tags"), P, json!({"tags": many}))
        .await;
    assert_error(
        &got,
        400,
        "BadRequest",
        "Bad networks request: The number of tags exceed the per-resource limit of 50.",
    );
    // The tag in the path.
    let too_long = invalid(&format!("'{long}' exceeds maximum length of 255"));
    for method in ["PUT", "GET", "DELETE"] {
        let got = srv
            .call(method, &format!("{path}/tags/{long}"), P, None)
            .await;
        assert_error(&got, 400, "InvalidInput", &too_long);
    }
    // NUL and control characters: Neutron checks none (MySQL stores them), but PostgreSQL
    // cannot hold NUL, so both engines refuse them, in the path and in the body.
    for tag in ["%00", "a%00b", "a%0Ab", "%1B%5B31m"] {
        let (s, b) = srv.put(&format!("{path}/tags/{tag}"), P, Value::Null).await;
        assert_eq!(s, 400, "PUT tags/{tag}: {b}");
    }
    for tag in ["a\u{0}b", "a\nb", "\u{1b}[31m"] {
        let (s, b) = srv
            .put(&format!("{path}/tags"), P, json!({"tags": [tag]}))
            .await;
        assert_eq!(s, 400, "PUT tags [{tag:?}]: {b}");
    }
    assert_eq!(
        tags(srv, &path).await,
        json!(["keep"]),
        "refusals changed tags"
    );

    // What Neutron accepts: 255 characters, and the empty string (a valid string).
    let longest = "y".repeat(255);
    let (s, b) = srv
        .put(&format!("{path}/tags/{longest}"), P, Value::Null)
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .call("GET", &format!("{path}/tags/{longest}"), P, None)
        .await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = srv
        .put(&format!("{path}/tags"), P, json!({"tags": ["", "b"]}))
        .await;
    assert_eq!((s, &b["tags"]), (200, &json!(["", "b"])), "{b}");
    let got = srv.delete(&format!("{path}/tags/never-set"), P).await;
    assert_error(
        &got,
        404,
        "TagNotFound",
        "Tag never-set could not be found.",
    );
    let got = srv.get(&format!("{path}/tags/never-set"), P).await;
    assert_error(
        &got,
        404,
        "TagNotFound",
        "Tag never-set could not be found.",
    );
}

on_both_stores!(tag_values, "", tag_values_sqlite, tag_values_postgres);

/// Creates, as `token`, a TCP forwarding of `port` on the floating IP to the same port of
/// `vm`'s first address.
async fn port_forwarding_of(
    srv: &TestServer,
    url: &str,
    token: &str,
    vm: &Value,
    port: u16,
) -> (u16, Value) {
    srv.post(
        url,
        token,
        json!({"port_forwarding": {"external_port": port, "internal_port": port,
            "internal_ip_address": vm["fixed_ips"][0]["ip_address"],
            "internal_port_id": vm["id"], "protocol": "tcp", "description": "d"}}),
    )
    .await
}

/// Port forwardings follow neutron/conf/policies/floatingip_port_forwarding.py: create,
/// update and delete need a member of the floating IP's project
/// (ADMIN_OR_PARENT_OWNER_MEMBER), reading needs a reader (ADMIN_OR_PARENT_OWNER_READER).
/// Another project sees no such floating IP (the plugin's `_get_fip_obj`: 404
/// `FloatingIPNotFound`).
async fn port_forwarding_policy(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": l.ext}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let fip = id(&b["floatingip"]);
    let vm = srv.port(P, json!({"network_id": l.net})).await;
    let url = format!("/v2.0/floatingips/{fip}/port_forwardings");
    let (s, b) = port_forwarding_of(srv, &url, P, &vm, 2222).await;
    assert_eq!(s, 201, "{b}");
    let pf = b["port_forwarding"].clone();
    let one = format!("{url}/{}", id(&pf));

    let denied = |action: &str| {
        format!("(rule:{action}_floatingip_port_forwarding) is disallowed by policy")
    };
    let got = port_forwarding_of(srv, &url, READER, &vm, 3333).await;
    assert_error(&got, 403, "PolicyNotAuthorized", &denied("create"));
    let change = json!({"port_forwarding": {"description": "reader was here"}});
    let got = srv.put(&one, READER, change.clone()).await;
    assert_error(&got, 403, "PolicyNotAuthorized", &denied("update"));
    // Policy is decided before If-Match, as in Neutron (the revision is the plugin's).
    let got = srv
        .call_h(
            "PUT",
            &one,
            READER,
            Some(change.clone()),
            &[("If-Match", "revision_number=99")],
        )
        .await;
    assert_error(&got, 403, "PolicyNotAuthorized", &denied("update"));
    let got = srv.delete(&one, READER).await;
    assert_error(&got, 403, "PolicyNotAuthorized", &denied("delete"));
    // The reader still sees everything, unchanged.
    let (s, b) = srv.get(&url, READER).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port_forwardings"], json!([pf]));
    let (s, b) = srv.get(&one, READER).await;
    assert_eq!((s, &b["port_forwarding"]), (200, &pf), "{b}");

    // Another project: no such floating IP, whatever the verb.
    let missing = format!("Floating IP {fip} could not be found");
    for (method, path, body) in [
        ("GET", url.clone(), None),
        ("GET", one.clone(), None),
        ("PUT", one.clone(), Some(change.clone())),
        ("DELETE", one.clone(), None),
    ] {
        let got = srv.call(method, &path, OTHER, body).await;
        assert_error(&got, 404, "FloatingIPNotFound", &missing);
    }
    let got = port_forwarding_of(srv, &url, OTHER, &vm, 3333).await;
    assert_error(&got, 404, "FloatingIPNotFound", &missing);
    let (_, b) = srv.get(&url, P).await;
    assert_eq!(
        b["port_forwardings"],
        json!([pf]),
        "refusals changed something"
    );

    // A member of the project may do all of it.
    let (s, b) = srv.put(&one, P, change).await;
    assert_eq!(
        (s, &b["port_forwarding"]["description"]),
        (200, &json!("reader was here")),
        "{b}"
    );
    let (s, b) = srv.delete(&one, P).await;
    assert_eq!(s, 204, "{b}");
    let (s, b) = port_forwarding_of(srv, &url, P, &vm, 3333).await;
    assert_eq!(s, 201, "{b}");
}

on_both_stores!(
    port_forwarding_policy,
    "",
    port_forwarding_policy_sqlite,
    port_forwarding_policy_postgres
);

/// A subnet from a pool that cannot give it: Neutron raises `SubnetAllocationError`
/// (neutron/ipam/subnet_alloc.py), a plain NeutronException it answers with 500. We keep its
/// type and message but answer 400 for a requested CIDR (outside the pool's prefixes or
/// overlapping one of its subnets) and 409 for a pool without room for the prefix length
/// asked: no 5xx for what the client can fix. Nothing is created.
async fn subnet_allocation_errors(srv: &TestServer) {
    let (s, b) = srv
        .post(
            "/v2.0/subnetpools",
            P,
            json!({"subnetpool": {"name": "pool", "prefixes": ["10.80.0.0/23"],
                "default_prefixlen": 24}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let pool = id(&b["subnetpool"]);
    let net = id(&srv.network(P, json!({})).await);
    let subnet = |extra: Value| {
        let mut body = json!({"network_id": net, "ip_version": 4, "subnetpool_id": pool});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        json!({ "subnet": body })
    };
    let cannot = "Failed to allocate subnet: Cannot allocate requested subnet from the \
                  available set of prefixes.";
    let got = srv
        .post(
            "/v2.0/subnets",
            P,
            subnet(json!({"cidr": "192.168.7.0/24"})),
        )
        .await;
    assert_error(&got, 400, "SubnetAllocationError", cannot);
    let (s, b) = srv
        .post("/v2.0/subnets", P, subnet(json!({"cidr": "10.80.0.0/24"})))
        .await;
    assert_eq!(s, 201, "{b}");
    let got = srv
        .post(
            "/v2.0/subnets",
            P,
            subnet(json!({"cidr": "10.80.0.128/25"})),
        )
        .await;
    assert_error(&got, 400, "SubnetAllocationError", cannot);
    let (s, b) = srv.post("/v2.0/subnets", P, subnet(json!({}))).await;
    assert_eq!(
        (s, &b["subnet"]["cidr"]),
        (201, &json!("10.80.1.0/24")),
        "{b}"
    );
    let got = srv.post("/v2.0/subnets", P, subnet(json!({}))).await;
    assert_error(
        &got,
        409,
        "SubnetAllocationError",
        "Failed to allocate subnet: Insufficient prefix space to allocate subnet size /24.",
    );
    let (s, b) = srv.get(&format!("/v2.0/subnets?network_id={net}"), P).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnets"].as_array().map(Vec::len), Some(2), "{b}");
}

on_both_stores!(
    subnet_allocation_errors,
    "",
    subnet_allocation_errors_sqlite,
    subnet_allocation_errors_postgres
);
