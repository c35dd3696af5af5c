//! Behaviours where neutrino used to differ from Neutron (issue 10), each checked as a client
//! sees it, on SQLite and (when configured) PostgreSQL. Each scenario names the Neutron source
//! its expectation comes from.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type, id};

const P: &str = "member:p1";
const READER: &str = "reader:p1";
/// A project RBAC policies can name (their targets are UUIDs).
const OTHER: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn message(b: &Value) -> &str {
    b["NeutronError"]["message"].as_str().unwrap_or("")
}

async fn tags_of(srv: &TestServer, path: &str) -> Value {
    let (s, b) = srv.get(&format!("{path}/tags"), "admin").await;
    assert_eq!(s, 200, "{path}: {b}");
    b["tags"].clone()
}

/// Every tag verb on `path` (a resource of project p1): refused to a reader of the project
/// with Neutron's `update_<resource>:tags` / `delete_<resource>:tags` policy error, and the
/// tags untouched; allowed to a member.
async fn tag_verbs(srv: &TestServer, path: &str, resource: &str) {
    let (s, b) = srv.put(&format!("{path}/tags/keep"), P, json!(null)).await;
    assert_eq!(s, 201, "{path}: {b}");
    let refused = [
        ("PUT", format!("{path}/tags/new"), None, "update"),
        (
            "PUT",
            format!("{path}/tags"),
            Some(json!({"tags": ["a", "b"]})),
            "update",
        ),
        ("DELETE", format!("{path}/tags/keep"), None, "delete"),
        ("DELETE", format!("{path}/tags"), None, "delete"),
    ];
    for (method, url, body, verb) in &refused {
        let (s, b) = srv.call(method, url, READER, body.clone()).await;
        assert_eq!(s, 403, "{method} {url} as reader: {b}");
        assert_eq!(err_type(&b), "PolicyNotAuthorized", "{b}");
        assert!(
            message(&b).contains(&format!("{verb}_{resource}:tags")),
            "{method} {url}: {b}"
        );
        assert_eq!(tags_of(srv, path).await, json!(["keep"]), "{method} {url}");
    }
    // Reading stays allowed to the reader.
    let (s, b) = srv.get(&format!("{path}/tags"), READER).await;
    assert_eq!(s, 200, "{b}");
    // A member may do all of it.
    let (s, b) = srv.put(&format!("{path}/tags/new"), P, json!(null)).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .put(&format!("{path}/tags"), P, json!({"tags": ["a", "b"]}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(tags_of(srv, path).await, json!(["a", "b"]));
    let (s, b) = srv.delete(&format!("{path}/tags/a"), P).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(tags_of(srv, path).await, json!(["b"]));
    let (s, b) = srv.delete(&format!("{path}/tags"), P).await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(tags_of(srv, path).await, json!([]));
}

/// Neutron's tagging controller (neutron/extensions/tagging.py) enforces
/// `update_<resource>:tags` and `delete_<resource>:tags` (neutron/conf/policies/*.py:
/// ADMIN_OR_PROJECT_MEMBER), so a reader of the project cannot change tags.
async fn reader_cannot_change_tags(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    let port = id(&srv.port(P, json!({"network_id": l.net})).await);
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "web"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sg = id(&b["security_group"]);
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": l.ext}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let fip = id(&b["floatingip"]);
    let (s, b) = srv
        .post(
            "/v2.0/subnetpools",
            P,
            json!({"subnetpool": {"name": "pool", "prefixes": ["10.90.0.0/16"]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let pool = id(&b["subnetpool"]);
    for (path, resource) in [
        (format!("/v2.0/networks/{}", l.net), "network"),
        (format!("/v2.0/subnets/{}", l.subnet), "subnet"),
        (format!("/v2.0/ports/{port}"), "port"),
        (format!("/v2.0/security-groups/{sg}"), "security_group"),
        (format!("/v2.0/routers/{}", l.router), "router"),
        (format!("/v2.0/floatingips/{fip}"), "floatingip"),
        (format!("/v2.0/subnetpools/{pool}"), "subnetpool"),
    ] {
        tag_verbs(srv, &path, resource).await;
    }
}

on_both_stores!(
    reader_cannot_change_tags,
    "",
    reader_cannot_change_tags_sqlite,
    reader_cannot_change_tags_postgres
);

async fn floatingip(srv: &TestServer, body: Value) -> Value {
    let (s, b) = srv
        .post("/v2.0/floatingips", P, json!({"floatingip": body}))
        .await;
    assert_eq!(s, 201, "{b}");
    b["floatingip"].clone()
}

/// `PUT /v2.0/floatingips/{id}` with `{"floatingip": {}}` disassociates; a non-empty body
/// without `port_id` keeps the association (neutron/db/l3_db.py `_check_and_get_fip_assoc`:
/// `if fip and 'port_id' not in fip and floatingip_obj.fixed_port_id`).
async fn empty_floatingip_update_disassociates(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    let vm = srv.port(P, json!({"network_id": l.net})).await;
    let first = floatingip(
        srv,
        json!({"floating_network_id": l.ext, "port_id": vm["id"]}),
    )
    .await;
    let url = format!("/v2.0/floatingips/{}", id(&first));
    // A body naming something else leaves the association alone.
    let (s, b) = srv
        .put(&url, P, json!({"floatingip": {"description": "web"}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["floatingip"]["port_id"], vm["id"]);
    assert_eq!(
        b["floatingip"]["fixed_ip_address"],
        vm["fixed_ips"][0]["ip_address"]
    );
    // The empty body detaches it.
    let (s, b) = srv.put(&url, P, json!({"floatingip": {}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["floatingip"]["port_id"], Value::Null, "{b}");
    assert_eq!(b["floatingip"]["fixed_ip_address"], Value::Null, "{b}");
    assert_eq!(b["floatingip"]["router_id"], Value::Null, "{b}");
    let (_, b) = srv.get(&url, P).await;
    assert_eq!(b["floatingip"]["port_id"], Value::Null, "{b}");
    // So the fixed IP is free for another floating IP.
    let second = floatingip(
        srv,
        json!({"floating_network_id": l.ext, "port_id": vm["id"]}),
    )
    .await;
    assert_eq!(second["fixed_ip_address"], vm["fixed_ips"][0]["ip_address"]);
}

on_both_stores!(
    empty_floatingip_update_disassociates,
    "",
    empty_floatingip_update_disassociates_sqlite,
    empty_floatingip_update_disassociates_postgres
);

/// A subnet needs its network's MTU to reach the protocol minimum, and a network's MTU cannot
/// go below what its subnets need: 409 `NetworkMTUSubnetConflict`
/// (neutron/db/db_base_plugin_v2.py `_validate_subnet_network_mtu`,
/// `_validate_change_network_mtu`).
async fn mtu_below_protocol_minimum(srv: &TestServer) {
    let small = id(&srv.network(P, json!({"mtu": 1000})).await);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            P,
            json!({"subnet": {"network_id": small, "ip_version": 6, "cidr": "2001:db8::/64"}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "NetworkMTUSubnetConflict");
    assert_eq!(
        message(&b),
        format!("MTU of {small} is not valid, subnet requires a minimum of 1280")
    );
    // IPv4 is fine at 1000.
    srv.subnet(
        P,
        json!({"network_id": small, "ip_version": 4, "cidr": "10.1.0.0/24"}),
    )
    .await;
    let tiny = id(&srv.network(P, json!({"mtu": 60})).await);
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            P,
            json!({"subnet": {"network_id": tiny, "ip_version": 4, "cidr": "10.2.0.0/24"}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "NetworkMTUSubnetConflict");
    assert_eq!(
        message(&b),
        format!("MTU of {tiny} is not valid, subnet requires a minimum of 68")
    );
    let (_, b) = srv
        .get(&format!("/v2.0/subnets?network_id={tiny}"), P)
        .await;
    assert_eq!(b["subnets"], json!([]), "nothing created");
    // The converse: lowering the MTU under the subnets' minimum.
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{small}"),
            P,
            json!({"network": {"mtu": 67}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "NetworkMTUSubnetConflict");
    assert_eq!(
        message(&b),
        format!("MTU of {small} is not valid, subnet requires a minimum of 68")
    );
}

on_both_stores!(
    mtu_below_protocol_minimum,
    "",
    mtu_below_protocol_minimum_sqlite,
    mtu_below_protocol_minimum_postgres
);

/// The gateway IP a router interface holds cannot be changed or removed: 409
/// `GatewayIpInUse` (neutron/db/db_base_plugin_v2.py `_validate_subnet`). Other updates of the
/// subnet, and a new gateway some other port holds, are fine.
async fn router_gateway_ip_is_pinned(srv: &TestServer) {
    let pools = json!({"allocation_pools": [{"start": "192.168.1.10", "end": "192.168.1.100"}]});
    let l = srv.routed(P, json!({}), pools).await;
    let url = format!("/v2.0/subnets/{}", l.subnet);
    let (_, b) = srv
        .get(
            &format!("/v2.0/ports?device_id={}&network_id={}", l.router, l.net),
            P,
        )
        .await;
    let rport = b["ports"][0].clone();
    assert_eq!(rport["fixed_ips"][0]["ip_address"], "192.168.1.1", "{b}");
    let expected = format!(
        "Current gateway ip 192.168.1.1 already in use by port {}. Unable to update.",
        id(&rport)
    );
    // Neutron looks at the router's port before the pools: an address inside a pool is
    // refused for the same reason.
    for gw in [json!("192.168.1.254"), json!("192.168.1.50"), Value::Null] {
        let (s, b) = srv
            .put(&url, P, json!({"subnet": {"gateway_ip": gw}}))
            .await;
        assert_eq!(s, 409, "{gw}: {b}");
        assert_eq!(err_type(&b), "GatewayIpInUse");
        assert_eq!(message(&b), expected);
    }
    // Naming the current gateway is no change.
    let (s, b) = srv
        .put(
            &url,
            P,
            json!({"subnet": {"gateway_ip": "192.168.1.1", "name": "n"}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    // Once the interface is gone, the gateway moves, even onto an address a port holds.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{}/remove_router_interface", l.router),
            P,
            json!({"subnet_id": l.subnet}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let vm = srv
        .port(
            P,
            json!({"network_id": l.net, "fixed_ips": [{"ip_address": "192.168.1.200"}]}),
        )
        .await;
    assert_eq!(vm["fixed_ips"][0]["ip_address"], "192.168.1.200");
    let (s, b) = srv
        .put(&url, P, json!({"subnet": {"gateway_ip": "192.168.1.200"}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["gateway_ip"], "192.168.1.200");
    let (s, b) = srv
        .put(&url, P, json!({"subnet": {"gateway_ip": null}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["subnet"]["gateway_ip"], Value::Null);
}

on_both_stores!(
    router_gateway_ip_is_pinned,
    "",
    router_gateway_ip_is_pinned_sqlite,
    router_gateway_ip_is_pinned_postgres
);

/// `security_groups` is a `type:uuid_list`: duplicates are refused, on create and update
/// (neutron/extensions/securitygroup.py, neutron_lib/api/validators `_validate_list_of_items`).
async fn duplicate_security_groups(srv: &TestServer) {
    let net = id(&srv.network(P, json!({})).await);
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "web"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sg = id(&b["security_group"]);
    let expected =
        format!("Invalid input for security_groups. Reason: Duplicate items in the list: '{sg}'.");
    let (s, b) = srv
        .post(
            "/v2.0/ports",
            P,
            json!({"port": {"network_id": net, "security_groups": [sg, sg]}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(message(&b), expected);
    let port = srv.port(P, json!({"network_id": net})).await;
    let url = format!("/v2.0/ports/{}", id(&port));
    let (s, b) = srv
        .put(&url, P, json!({"port": {"security_groups": [sg, sg]}}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(message(&b), expected);
    let (_, b) = srv.get(&url, P).await;
    assert_eq!(b["port"]["security_groups"], port["security_groups"]);
    let (s, b) = srv
        .put(&url, P, json!({"port": {"security_groups": [sg]}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port"]["security_groups"], json!([sg]));
}

on_both_stores!(
    duplicate_security_groups,
    "",
    duplicate_security_groups_sqlite,
    duplicate_security_groups_postgres
);

/// A new group's default rules count against the rule quota: 409 `OverQuota` and no group
/// (neutron/db/securitygroups_db.py `create_security_group`: `quota_limit_check`).
async fn security_group_rule_quota(srv: &TestServer) {
    // The default group (4 rules) and one group (2 rules) fit a limit of 6.
    let (s, b) = srv
        .put(
            "/v2.0/quotas/p1",
            "admin",
            json!({"quota": {"security_group_rule": 6}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "one"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "two"}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "OverQuota");
    assert_eq!(
        message(&b),
        "Quota exceeded for resources: ['security_group_rule']."
    );
    let (_, b) = srv.get("/v2.0/security-groups?name=two", P).await;
    assert_eq!(b["security_groups"], json!([]), "{b}");
    let (_, b) = srv.get("/v2.0/security-group-rules", P).await;
    assert_eq!(
        b["security_group_rules"].as_array().unwrap().len(),
        6,
        "{b}"
    );
}

on_both_stores!(
    security_group_rule_quota,
    "",
    security_group_rule_quota_sqlite,
    security_group_rule_quota_postgres
);

/// A project that sees an address group through RBAC and tries to update it gets 404, as
/// Neutron: its update loads the group without `shared` (neutron/api/v2/base.py `_update`),
/// so `get_address_group` fails on it too and the object is hidden. Deleting and the address
/// actions see the whole group and answer 403.
async fn shared_address_group_update(srv: &TestServer) {
    let (s, b) = srv
        .post(
            "/v2.0/address-groups",
            P,
            json!({"address_group": {"name": "ag", "addresses": ["10.0.0.0/24"]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let ag = id(&b["address_group"]);
    let (s, b) = srv
        .post(
            "/v2.0/rbac-policies",
            P,
            json!({"rbac_policy": {"object_type": "address_group", "object_id": ag,
                "action": "access_as_shared", "target_tenant": OTHER}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let other = format!("member:{OTHER}");
    let url = format!("/v2.0/address-groups/{ag}");
    let (s, _) = srv.get(&url, &other).await;
    assert_eq!(s, 200);
    let (s, b) = srv
        .put(&url, &other, json!({"address_group": {"name": "x"}}))
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "HTTPNotFound");
    assert_eq!(message(&b), "The resource could not be found.");
    let (s, b) = srv.delete(&url, &other).await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = srv
        .put(
            &format!("{url}/add_addresses"),
            &other,
            json!({"addresses": ["10.1.0.0/24"]}),
        )
        .await;
    assert_eq!(s, 403, "{b}");
    // The owner's reader sees the whole group: 403.
    let (s, b) = srv
        .put(&url, READER, json!({"address_group": {"name": "x"}}))
        .await;
    assert_eq!(s, 403, "{b}");
    let (_, b) = srv.get(&url, P).await;
    assert_eq!(b["address_group"]["name"], "ag");
}

on_both_stores!(
    shared_address_group_update,
    "",
    shared_address_group_update_sqlite,
    shared_address_group_update_postgres
);

/// Port forwardings: the list shows each entry as `show` does, and If-Match holds on update
/// and delete (a port forwarding has standard attributes; neutron/db/models/port_forwarding.py
/// and neutron/services/revisions/revision_plugin.py).
async fn port_forwardings(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    let fip = id(&floatingip(srv, json!({"floating_network_id": l.ext})).await);
    let vm = srv.port(P, json!({"network_id": l.net})).await;
    let url = format!("/v2.0/floatingips/{fip}/port_forwardings");
    let mut ids = Vec::new();
    for (ext, proto) in [(2222, "tcp"), (5353, "udp")] {
        let (s, b) = srv
            .post(
                &url,
                P,
                json!({"port_forwarding": {"external_port": ext, "internal_port": 22,
                    "internal_ip_address": vm["fixed_ips"][0]["ip_address"],
                    "internal_port_id": vm["id"], "protocol": proto, "description": "d"}}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        ids.push(id(&b["port_forwarding"]));
    }
    let (s, b) = srv.get(&url, P).await;
    assert_eq!(s, 200, "{b}");
    let listed = b["port_forwardings"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    for entry in &listed {
        let (s, shown) = srv.get(&format!("{url}/{}", id(entry)), P).await;
        assert_eq!(s, 200);
        assert_eq!(entry, &shown["port_forwarding"]);
        for k in [
            "id",
            "external_port",
            "internal_port",
            "internal_ip_address",
            "protocol",
            "internal_port_id",
            "description",
        ] {
            assert!(entry.get(k).is_some(), "{k} missing from {entry}");
        }
    }
    // If-Match.
    let one = format!("{url}/{}", ids[0]);
    let body = json!({"port_forwarding": {"description": "new"}});
    let (s, b) = srv
        .call_h(
            "PUT",
            &one,
            P,
            Some(body.clone()),
            &[("If-Match", "revision_number=99")],
        )
        .await;
    assert_eq!(s, 412, "{b}");
    let (_, b) = srv.get(&one, P).await;
    assert_eq!(b["port_forwarding"]["description"], "d");
    let (s, b) = srv
        .call_h(
            "PUT",
            &one,
            P,
            Some(body),
            &[("If-Match", "revision_number=1")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port_forwarding"]["description"], "new");
    let (s, b) = srv
        .call_h(
            "DELETE",
            &one,
            P,
            None,
            &[("If-Match", "revision_number=1")],
        )
        .await;
    assert_eq!(s, 412, "{b}");
    let (s, _) = srv.get(&one, P).await;
    assert_eq!(s, 200, "still there");
    let (s, b) = srv
        .call_h(
            "DELETE",
            &one,
            P,
            None,
            &[("If-Match", "revision_number=2")],
        )
        .await;
    assert_eq!(s, 204, "{b}");
}

on_both_stores!(
    port_forwardings,
    "",
    port_forwardings_sqlite,
    port_forwardings_postgres
);

/// References to objects that do not exist are refused as Neutron refuses them: a subnet's
/// `segment_id` (neutron/db/ipam_backend_mixin.py `_save_subnet`, `_validate_segment`), and
/// attributes of extensions we do not announce (`qos_policy_id`: qos, `dns_domain`:
/// dns-integration) are unrecognized (neutron_lib/api/attributes.py `verify_attributes`).
async fn references_checked(srv: &TestServer) {
    const RANDOM: &str = "11111111-1111-4111-8111-111111111111";
    let net = id(&srv.network("admin", json!({})).await);
    let other = id(&srv.network("admin", json!({})).await);
    let segment_of = |n: String| async move {
        let (s, b) = srv
            .get(&format!("/v2.0/segments?network_id={n}"), "admin")
            .await;
        assert_eq!(s, 200, "{b}");
        id(&b["segments"][0])
    };
    let seg = segment_of(net.clone()).await;
    let foreign = segment_of(other).await;
    let subnet = |segment: Value, cidr: &str| json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": cidr, "segment_id": segment}});
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            subnet(json!(RANDOM), "10.5.0.0/24"),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "SegmentNotFound");
    assert_eq!(message(&b), format!("Segment {RANDOM} could not be found."));
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            subnet(json!(foreign), "10.5.0.0/24"),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "NetworkIdsDontMatch");
    assert_eq!(
        message(&b),
        format!(
            "The subnet's network id, '{net}', doesn't match the network_id of segment '{foreign}'"
        )
    );
    let (_, b) = srv
        .get(&format!("/v2.0/subnets?network_id={net}"), "admin")
        .await;
    assert_eq!(b["subnets"], json!([]), "nothing created");
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", subnet(json!(seg), "10.5.0.0/24"))
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["subnet"]["segment_id"], seg.as_str());
    // A network's subnets are all on segments or none is.
    let (s, b) = srv
        .post("/v2.0/subnets", "admin", subnet(Value::Null, "10.6.0.0/24"))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "SubnetsNotAllAssociatedWithSegments");
    for attr in ["qos_policy_id", "dns_domain"] {
        let value = if attr == "qos_policy_id" {
            json!(RANDOM)
        } else {
            json!("example.org.")
        };
        let expected = format!("Unrecognized attribute(s) '{attr}'");
        let (s, b) = srv
            .post("/v2.0/networks", P, json!({"network": {attr: value}}))
            .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(message(&b), expected);
        let (s, b) = srv
            .put(
                &format!("/v2.0/networks/{net}"),
                "admin",
                json!({"network": {attr: value}}),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(message(&b), expected);
    }
}

on_both_stores!(
    references_checked,
    "",
    references_checked_sqlite,
    references_checked_postgres
);

/// A remote group id that is not a string is neutron-lib's `InvalidInput` (the rule's
/// `uuid_or_none` conversion), not `HTTPBadRequest`.
async fn error_types(srv: &TestServer) {
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "g"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let sg = id(&b["security_group"]);
    let (s, b) = srv
        .post(
            "/v2.0/security-group-rules",
            P,
            json!({"security_group_rule": {
                "security_group_id": sg, "direction": "ingress", "remote_group_id": 5}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "InvalidInput", "{b}");
    assert_eq!(
        message(&b),
        "Invalid input for operation: '5' is not a valid UUID."
    );
}

on_both_stores!(error_types, "", error_types_sqlite, error_types_postgres);
