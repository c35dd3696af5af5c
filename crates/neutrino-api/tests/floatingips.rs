//! Floating IP refusals and port forwardings, on SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type};

const P: &str = "member:p1";

async fn port(srv: &TestServer, token: &str, net: &str) -> Value {
    srv.port(token, json!({"network_id": net})).await
}

async fn fip(srv: &TestServer, body: Value) -> (u16, Value) {
    srv.post("/v2.0/floatingips", P, json!({"floatingip": body}))
        .await
}

async fn refusals(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    // Not external.
    let (s, b) = fip(srv, json!({"floating_network_id": l.net})).await;
    assert_eq!(s, 400, "{b}");
    // Unknown network.
    let (s, _) = fip(srv, json!({"floating_network_id": l.subnet})).await;
    assert_eq!(s, 404);
    // fixed_ip_address needs a port.
    let (s, b) = fip(
        srv,
        json!({"floating_network_id": l.ext, "fixed_ip_address": "192.168.1.5"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // A port on a network no router connects: 404 ExternalGatewayForFloatingIPNotFound.
    let (lonely_net, _) = srv
        .network_with_subnet(P, json!({}), "192.168.9.0/24", json!({}))
        .await;
    let lonely = port(srv, P, &lonely_net).await;
    let (s, b) = fip(
        srv,
        json!({"floating_network_id": l.ext, "port_id": lonely["id"]}),
    )
    .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "ExternalGatewayForFloatingIPNotFound");
    // A fixed IP the port does not have.
    let p = port(srv, P, &l.net).await;
    let (s, b) = fip(
        srv,
        json!({"floating_network_id": l.ext, "port_id": p["id"], "fixed_ip_address": "192.168.1.250"}),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    // Another project's port is not visible.
    let (s, _) = srv
        .post(
            "/v2.0/floatingips",
            "member:p2",
            json!({"floatingip": {"floating_network_id": l.ext, "port_id": p["id"]}}),
        )
        .await;
    assert_eq!(s, 404);
    // A specific address is for admins (and managers).
    let (s, _) = fip(
        srv,
        json!({"floating_network_id": l.ext, "floating_ip_address": "10.30.0.77"}),
    )
    .await;
    assert_eq!(s, 403);
    // Quota.
    let (s, _) = srv
        .put(
            "/v2.0/quotas/p1",
            "admin",
            json!({"quota": {"floatingip": 1}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = fip(srv, json!({"floating_network_id": l.ext})).await;
    assert_eq!(s, 201);
    let (s, b) = fip(srv, json!({"floating_network_id": l.ext})).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "OverQuota");
    // Router gateway and floating IP ports cannot be deleted through the port API.
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={}", l.router), "admin")
        .await;
    for p in b["ports"].as_array().unwrap() {
        let (s, _) = srv
            .delete(
                &format!("/v2.0/ports/{}", p["id"].as_str().unwrap()),
                "admin",
            )
            .await;
        assert_eq!(s, 409);
    }
    let (_, b) = srv
        .get("/v2.0/ports?device_owner=network:floatingip", "admin")
        .await;
    let fport = b["ports"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(b["ports"][0]["project_id"], "");
    let (s, b) = srv.delete(&format!("/v2.0/ports/{fport}"), "admin").await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "ServicePortInUse");
}

async fn port_forwardings(srv: &TestServer) {
    let l = srv.routed(P, json!({}), json!({})).await;
    let (s, b) = fip(srv, json!({"floating_network_id": l.ext})).await;
    assert_eq!(s, 201, "{b}");
    let fid = b["floatingip"]["id"].as_str().unwrap().to_string();
    let vm = port(srv, P, &l.net).await;
    let vm_ip = vm["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("/v2.0/floatingips/{fid}/port_forwardings");
    let pf = |ext: i64, int: i64| {
        json!({"port_forwarding": {"external_port": ext, "internal_port": int,
            "internal_ip_address": vm_ip, "internal_port_id": vm["id"], "protocol": "tcp",
            "description": "ssh"}})
    };
    let (s, b) = srv.post(&url, P, pf(2222, 22)).await;
    assert_eq!(s, 201, "{b}");
    let pf_id = b["port_forwarding"]["id"].as_str().unwrap().to_string();
    assert_eq!(b["port_forwarding"]["external_port"], 2222);
    assert_eq!(b["port_forwarding"]["description"], "ssh");
    assert!(b["port_forwarding"].get("project_id").is_none());
    // The floating IP is now served by the router and shows its forwardings.
    let (_, b) = srv.get(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(b["floatingip"]["router_id"], l.router.as_str());
    assert_eq!(b["floatingip"]["port_forwardings"][0]["id"], pf_id.as_str());
    // Collisions and duplicates.
    let (s, b) = srv.post(&url, P, pf(2222, 23)).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.post(&url, P, pf(2223, 22)).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.post(&url, P, pf(0, 22)).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .post(
            &url,
            P,
            json!({"port_forwarding": {"external_port": 80, "internal_port": 80,
                "internal_ip_address": "192.168.1.254", "internal_port_id": vm["id"],
                "protocol": "tcp"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .post(
            &url,
            P,
            json!({"port_forwarding": {"external_port": 80, "internal_port": 80,
                "internal_ip_address": vm_ip, "internal_port_id": vm["id"], "protocol": "gre"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // UDP on the same ports is another forwarding.
    let (s, b) = srv
        .post(
            &url,
            P,
            json!({"port_forwarding": {"external_port": 2222, "internal_port": 22,
                "internal_ip_address": vm_ip, "internal_port_id": vm["id"], "protocol": "udp"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let udp = b["port_forwarding"]["id"].as_str().unwrap().to_string();
    // A floating IP with forwardings: no port association, no deletion.
    let (s, b) = srv
        .put(
            &format!("/v2.0/floatingips/{fid}"),
            P,
            json!({"floatingip": {"port_id": vm["id"]}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "FipInUseByPortForwarding");
    let (s, _) = srv.delete(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(s, 409);
    // A port with its own floating IP cannot be a forwarding target.
    let vm2 = port(srv, P, &l.net).await;
    let (s, b) = fip(
        srv,
        json!({"floating_network_id": l.ext, "port_id": vm2["id"]}),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .post(
            &url,
            P,
            json!({"port_forwarding": {"external_port": 8080, "internal_port": 80,
                "internal_ip_address": vm2["fixed_ips"][0]["ip_address"],
                "internal_port_id": vm2["id"], "protocol": "tcp"}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "PortHasBindingFloatingIP");
    // List, filters, show, update.
    let (s, b) = srv.get(&url, P).await;
    assert_eq!(s, 200);
    assert_eq!(b["port_forwardings"].as_array().unwrap().len(), 2);
    let (s, b) = srv.get(&format!("{url}?protocol=udp"), P).await;
    assert_eq!(s, 200);
    assert_eq!(b["port_forwardings"].as_array().unwrap().len(), 1);
    let (s, _) = srv.get(&format!("{url}?internal_port=22"), P).await;
    assert_eq!(s, 400);
    let (s, _) = srv.get(&url, "member:p2").await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .put(
            &format!("{url}/{pf_id}"),
            P,
            json!({"port_forwarding": {"external_port": 2022}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port_forwarding"]["external_port"], 2022);
    let (s, b) = srv.get(&format!("{url}/{pf_id}"), P).await;
    assert_eq!(s, 200);
    assert_eq!(b["port_forwarding"]["external_port"], 2022);
    // The subnet's interface is needed while forwardings use it.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{}/remove_router_interface", l.router),
            P,
            json!({"subnet_id": l.subnet}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // The address a floating IP is associated with cannot leave its port.
    let (s, b) = srv
        .put(
            &format!("/v2.0/ports/{}", vm2["id"].as_str().unwrap()),
            P,
            json!({"port": {"fixed_ips": [{"subnet_id": l.subnet, "ip_address": "192.168.1.78"}]}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(err_type(&b), "BadRequest");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("associated to a floating ip"),
        "{b}"
    );
    // Changing the forwarding target's address removes the forwardings to the old one.
    let (s, _) = srv.delete(&format!("{url}/{udp}"), P).await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .put(
            &format!("/v2.0/ports/{}", vm["id"].as_str().unwrap()),
            P,
            json!({"port": {"fixed_ips": [{"subnet_id": l.subnet, "ip_address": "192.168.1.77"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = srv.get(&format!("{url}/{pf_id}"), P).await;
    assert_eq!(s, 404);
    let (_, b) = srv.get(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(b["floatingip"]["router_id"], Value::Null);
    // A new forwarding to the new address; deleting the internal port removes it, and the
    // last one takes the router.
    let (s, b) = srv
        .post(
            &url,
            P,
            json!({"port_forwarding": {"external_port": 2222, "internal_port": 22,
                "internal_ip_address": "192.168.1.77", "internal_port_id": vm["id"],
                "protocol": "tcp"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let pf_id = b["port_forwarding"]["id"].as_str().unwrap().to_string();
    let (s, _) = srv
        .delete(&format!("/v2.0/ports/{}", vm["id"].as_str().unwrap()), P)
        .await;
    assert_eq!(s, 204);
    let (s, _) = srv.get(&format!("{url}/{pf_id}"), P).await;
    assert_eq!(s, 404);
    let (_, b) = srv.get(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(b["floatingip"]["router_id"], Value::Null);
    assert_eq!(b["floatingip"]["port_forwardings"], json!([]));
    let (s, _) = srv.delete(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(s, 204);
}

on_both_stores!(
    refusals,
    "",
    floating_ip_refusals_sqlite,
    floating_ip_refusals_postgres
);
on_both_stores!(
    port_forwardings,
    "",
    port_forwardings_sqlite,
    port_forwardings_postgres
);
