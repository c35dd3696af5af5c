//! The agent API's instance lookup for the metadata proxy
//! (`GET /agent/v1/metadata/instance`), on SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type, id};

const P: &str = "member:p1";
const ML2: &str = "[ml2]\ntype_drivers = local,flat,vlan,vxlan\ntenant_network_types = vxlan\n\
                   mechanism_drivers = linuxbridge,l2population\n\
                   [ml2_type_vxlan]\nvni_ranges = 1:1000\n";

async fn subnet(srv: &TestServer, net: &str, cidr: &str) -> Value {
    srv.subnet(P, json!({"network_id": net, "cidr": cidr, "ip_version": 4}))
        .await
}

async fn port(srv: &TestServer, body: Value) -> Value {
    srv.port(P, body).await
}

async fn lookup(srv: &TestServer, query: &str, token: &str) -> (u16, Value) {
    srv.get(&format!("/agent/v1/metadata/instance?{query}"), token)
        .await
}

async fn instance_lookup(srv: &TestServer) {
    let n1 = id(&srv.network(P, json!({"name": "n1"})).await);
    let n2 = id(&srv.network(P, json!({"name": "n2"})).await);
    let s1 = subnet(srv, &n1, "10.1.0.0/24").await;
    subnet(srv, &n2, "10.1.0.0/24").await;
    let vm = port(
        srv,
        json!({"network_id": n1, "device_id": "vm-1", "device_owner": "compute:nova",
               "fixed_ips": [{"subnet_id": s1["id"], "ip_address": "10.1.0.10"}]}),
    )
    .await;
    // The same address on another network belongs to another instance.
    port(
        srv,
        json!({"network_id": n2, "device_id": "vm-2", "device_owner": "compute:nova",
               "fixed_ips": [{"ip_address": "10.1.0.10"}]}),
    )
    .await;
    // Not an instance: a port without a compute owner, and one without a device.
    port(
        srv,
        json!({"network_id": n1, "device_id": "x", "device_owner": "network:dhcp",
               "fixed_ips": [{"ip_address": "10.1.0.11"}]}),
    )
    .await;
    port(
        srv,
        json!({"network_id": n1, "device_owner": "compute:nova",
               "fixed_ips": [{"ip_address": "10.1.0.12"}]}),
    )
    .await;

    let (s, b) = lookup(srv, &format!("ip=10.1.0.10&network_id={n1}"), "admin").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!({"instance_id": "vm-1", "project_id": "p1", "port_id": vm["id"]})
    );
    let (s, b) = lookup(srv, &format!("ip=10.1.0.10&network_id={n2}"), "admin").await;
    assert_eq!((s, b["instance_id"].clone()), (200, json!("vm-2")));
    // haproxy's IPv4-mapped form is the same address.
    let (s, b) = lookup(
        srv,
        &format!("ip=%3A%3Affff%3A10.1.0.10&network_id={n1}"),
        "admin",
    )
    .await;
    assert_eq!((s, b["instance_id"].clone()), (200, json!("vm-1")));
    for q in [
        format!("ip=10.1.0.11&network_id={n1}"),
        format!("ip=10.1.0.12&network_id={n1}"),
        format!("ip=10.1.0.99&network_id={n1}"),
        "ip=10.1.0.10&network_id=00000000-0000-0000-0000-000000000000".to_string(),
    ] {
        let (s, b) = lookup(srv, &q, "admin").await;
        assert_eq!((s, err_type(&b)), (404, "InstanceNotFound"), "{q}: {b}");
    }

    // Through a router: only its internal networks are searched.
    let rid = id(&srv.router(P, json!({"name": "r1"})).await);
    let q = format!("ip=10.1.0.10&router_id={rid}");
    let (s, _) = lookup(srv, &q, "admin").await;
    assert_eq!(s, 404);
    srv.add_router_interface(P, &rid, s1["id"].as_str().unwrap())
        .await;
    let (s, b) = lookup(srv, &q, "admin").await;
    assert_eq!((s, b["instance_id"].clone()), (200, json!("vm-1")), "{b}");

    // Bad queries, and callers that are not agents.
    for q in [
        "ip=10.1.0.10".to_string(),
        format!("ip=10.1.0.10&router_id={rid}&network_id={n1}"),
        format!("ip=nope&network_id={n1}"),
        format!("network_id={n1}"),
    ] {
        let (s, b) = lookup(srv, &q, "admin").await;
        assert_eq!(s, 400, "{q}: {b}");
    }
    let (s, _) = lookup(srv, &format!("ip=10.1.0.10&network_id={n1}"), P).await;
    assert_eq!(s, 403);
}

on_both_stores!(
    instance_lookup,
    ML2,
    instance_lookup_sqlite,
    instance_lookup_postgres
);
