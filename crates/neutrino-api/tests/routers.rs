//! Routers, gateways, interfaces, extra routes and floating IPs: scenario E8's API flow and
//! Neutron's refusals, on SQLite and (when configured) PostgreSQL.
mod support;

use serde_json::{Value, json};
use support::{TestServer, err_type};

const P: &str = "member:p1";

/// External network GATEWAY_NET with GATEWAY_SUBNET 10.30.0.0/24 (pool .100-.254), as E8.
async fn external_net(srv: &TestServer) -> (String, String) {
    let net = srv
        .network(
            "admin",
            json!({"name": "GATEWAY_NET", "router:external": true}),
        )
        .await;
    let id = net["id"].as_str().unwrap().to_string();
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            "admin",
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": "10.30.0.0/24",
                   "enable_dhcp": false, "name": "GATEWAY_SUBNET",
                   "allocation_pools": [{"start": "10.30.0.100", "end": "10.30.0.254"}]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    (id, b["subnet"]["id"].as_str().unwrap().to_string())
}

async fn project_net(srv: &TestServer, token: &str, cidr: &str) -> (String, String) {
    let net = srv.network(token, json!({"name": "PROJECT_NET"})).await;
    let id = net["id"].as_str().unwrap().to_string();
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            token,
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    (id, b["subnet"]["id"].as_str().unwrap().to_string())
}

async fn port(srv: &TestServer, token: &str, net: &str) -> Value {
    let (s, b) = srv
        .post("/v2.0/ports", token, json!({"port": {"network_id": net}}))
        .await;
    assert_eq!(s, 201, "{b}");
    b["port"].clone()
}

fn in_pool(ip: &str) -> bool {
    let last: u32 = ip
        .rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    ip.starts_with("10.30.0.") && (100..=254).contains(&last)
}

async fn e8_flow(srv: &TestServer) {
    let (ext, ext_subnet) = external_net(srv).await;

    // 3. Router create: distributed/ha false (admin-visible), no gateway, ACTIVE.
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            P,
            json!({"router": {"name": "MyLegacyRouter"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let r = b["router"].clone();
    let rid = r["id"].as_str().unwrap().to_string();
    assert_eq!(r["status"], "ACTIVE");
    assert_eq!(r["external_gateway_info"], Value::Null);
    assert_eq!(r["routes"], json!([]));
    assert_eq!(r["tenant_id"], "p1");
    assert!(r.get("ha").is_none(), "ha is admin-only: {r}");
    let (_, b) = srv.get(&format!("/v2.0/routers/{rid}"), "admin").await;
    assert_eq!(b["router"]["ha"], false);
    assert_eq!(b["router"]["distributed"], false);
    assert_eq!(b["router"]["availability_zones"], json!([]));
    // Other projects do not see it.
    let (s, _) = srv.get(&format!("/v2.0/routers/{rid}"), "member:p2").await;
    assert_eq!(s, 404);

    // Gateway on a network that is not external: 400; unknown: 404.
    let (internal, _) = project_net(srv, P, "172.16.0.0/24").await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            P,
            json!({"router": {"external_gateway_info": {"network_id": internal}}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("is not an external network")
    );
    let (s, _) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            P,
            json!({"router": {"external_gateway_info": {"network_id": rid}}}),
        )
        .await;
    assert_eq!(s, 404);
    // enable_snat is admin-only by default policy.
    let (s, _) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            P,
            json!({"router": {"external_gateway_info": {"network_id": ext, "enable_snat": false}}}),
        )
        .await;
    assert_eq!(s, 403);

    // 4. Set the gateway: a gateway port with a pool address, no project.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            P,
            json!({"router": {"external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let gw = &b["router"]["external_gateway_info"];
    assert_eq!(gw["network_id"], ext.as_str());
    assert_eq!(gw["enable_snat"], true);
    let gw_ip = gw["external_fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        gw["external_fixed_ips"][0]["subnet_id"],
        ext_subnet.as_str()
    );
    assert!(in_pool(&gw_ip), "{gw_ip}");
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={rid}"), "admin")
        .await;
    let ports = b["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1, "{b}");
    assert_eq!(ports[0]["device_owner"], "network:router_gateway");
    assert_eq!(ports[0]["project_id"], "");

    // 8-10. Project network and interface by subnet: the subnet's gateway IP.
    let (pnet, psub) = project_net(srv, P, "192.168.200.0/24").await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            P,
            json!({"subnet_id": psub}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["id"], rid.as_str());
    assert_eq!(b["subnet_id"], psub.as_str());
    assert_eq!(b["subnet_ids"], json!([psub]));
    assert_eq!(b["network_id"], pnet.as_str());
    assert_eq!(b["project_id"], "p1");
    let intf = b["port_id"].as_str().unwrap().to_string();
    let (_, b) = srv.get(&format!("/v2.0/ports/{intf}"), P).await;
    assert_eq!(b["port"]["device_owner"], "network:router_interface");
    assert_eq!(b["port"]["device_id"], rid.as_str());
    assert_eq!(b["port"]["fixed_ips"][0]["ip_address"], "192.168.200.1");
    assert_eq!(b["port"]["status"], "DOWN");
    // `port list --router`.
    let (_, b) = srv.get(&format!("/v2.0/ports?device_id={rid}"), P).await;
    assert_eq!(
        b["ports"].as_array().unwrap().len(),
        1,
        "the gateway port is not p1's"
    );
    // One interface per subnet; no overlapping subnets; the interface port is the router's.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            P,
            json!({"subnet_id": psub}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("Router already has a port on subnet")
    );
    let (_, osub) = project_net(srv, P, "192.168.200.0/25").await;
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            P,
            json!({"subnet_id": osub}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["NeutronError"]["message"]
            .as_str()
            .unwrap()
            .contains("overlaps with cidr")
    );
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            P,
            json!({"subnet_id": psub, "port_id": intf}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.delete(&format!("/v2.0/ports/{intf}"), P).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "ServicePortInUse");

    // 18. FIP on a port: router found through the port's subnet.
    let vm1 = port(srv, P, &pnet).await;
    let vm2 = port(srv, P, &pnet).await;
    let vm1_id = vm1["id"].as_str().unwrap();
    let vm2_id = vm2["id"].as_str().unwrap();
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": ext, "port_id": vm1_id}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let fip = b["floatingip"].clone();
    let fid = fip["id"].as_str().unwrap().to_string();
    let fip_ip = fip["floating_ip_address"].as_str().unwrap().to_string();
    assert!(in_pool(&fip_ip) && fip_ip != gw_ip, "{fip_ip}");
    assert_eq!(fip["router_id"], rid.as_str());
    assert_eq!(fip["fixed_ip_address"], vm1["fixed_ips"][0]["ip_address"]);
    assert_eq!(fip["status"], "DOWN");
    assert_eq!(fip["port_details"]["device_owner"], vm1["device_owner"]);
    assert_eq!(fip["tenant_id"], "p1");
    assert!(fip.get("subnet_id").is_none());
    // A fixed IP has one floating IP per external network.
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": ext, "port_id": vm1_id}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "FloatingIPPortAlreadyAssociated");
    // The address is taken in the pool.
    let (s, _) = srv
        .post(
            "/v2.0/floatingips",
            "admin",
            json!({"floatingip": {"floating_network_id": ext, "floating_ip_address": fip_ip}}),
        )
        .await;
    assert_eq!(s, 409);

    // 22-24. List, disassociate, re-associate to another port.
    let (_, b) = srv.get("/v2.0/floatingips", P).await;
    assert_eq!(b["floatingips"].as_array().unwrap().len(), 1);
    let (_, b) = srv.get("/v2.0/floatingips", "member:p2").await;
    assert!(b["floatingips"].as_array().unwrap().is_empty());
    let (s, b) = srv
        .put(
            &format!("/v2.0/floatingips/{fid}"),
            P,
            json!({"floatingip": {"port_id": null}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["floatingip"]["port_id"], Value::Null);
    assert_eq!(b["floatingip"]["fixed_ip_address"], Value::Null);
    assert_eq!(b["floatingip"]["router_id"], Value::Null);
    let (s, b) = srv
        .put(
            &format!("/v2.0/floatingips/{fid}"),
            P,
            json!({"floatingip": {"port_id": vm2_id}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["floatingip"]["fixed_ip_address"],
        vm2["fixed_ips"][0]["ip_address"]
    );
    assert_eq!(b["floatingip"]["router_id"], rid.as_str());

    // 26. Refusals while the floating IP is associated.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            P,
            json!({"router": {"external_gateway_info": {}}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RouterExternalGatewayInUseByFloatingIp");
    let (s, b) = srv.delete(&format!("/v2.0/routers/{rid}"), P).await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RouterInUse");
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/remove_router_interface"),
            P,
            json!({"subnet_id": psub}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RouterInterfaceInUseByFloatingIP");

    // Deleting the associated port disassociates the floating IP.
    let (s, _) = srv.delete(&format!("/v2.0/ports/{vm2_id}"), P).await;
    assert_eq!(s, 204);
    let (_, b) = srv.get(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(b["floatingip"]["port_id"], Value::Null);
    assert_eq!(b["floatingip"]["router_id"], Value::Null);

    // Delete the floating IP: its address returns to the pool.
    let (s, _) = srv.delete(&format!("/v2.0/floatingips/{fid}"), P).await;
    assert_eq!(s, 204);
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            "admin",
            json!({"floatingip": {"floating_network_id": ext, "floating_ip_address": fip_ip}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let again = b["floatingip"]["id"].as_str().unwrap().to_string();
    let (s, _) = srv
        .delete(&format!("/v2.0/floatingips/{again}"), "admin")
        .await;
    assert_eq!(s, 204);

    // Remove the interface by port, then the router goes with its gateway port.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/remove_router_interface"),
            P,
            json!({"port_id": intf}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["port_id"], intf.as_str());
    let (s, _) = srv.get(&format!("/v2.0/ports/{intf}"), P).await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}/remove_router_interface"),
            P,
            json!({"subnet_id": psub}),
        )
        .await;
    assert_eq!(s, 404, "{b}");
    assert_eq!(err_type(&b), "RouterInterfaceNotFoundForSubnet");
    let (s, _) = srv.delete(&format!("/v2.0/routers/{rid}"), P).await;
    assert_eq!(s, 204);
    let (_, b) = srv
        .get(&format!("/v2.0/ports?device_id={rid}"), "admin")
        .await;
    assert!(b["ports"].as_array().unwrap().is_empty(), "{b}");
    // The external network may now stop being external.
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{ext}"),
            "admin",
            json!({"network": {"router:external": false}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

async fn routes_and_interfaces(srv: &TestServer) {
    let (ext, _) = external_net(srv).await;
    // Routes are PUT-only.
    let (s, _) = srv
        .post("/v2.0/routers", P, json!({"router": {"routes": []}}))
        .await;
    assert_eq!(s, 400);
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            P,
            json!({"router": {"name": "r", "external_gateway_info": {"network_id": ext}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let rid = b["router"]["id"].as_str().unwrap().to_string();
    let (_, sub) = project_net(srv, P, "10.1.0.0/24").await;
    let (s, _) = srv
        .put(
            &format!("/v2.0/routers/{rid}/add_router_interface"),
            P,
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(s, 200);
    let url = format!("/v2.0/routers/{rid}");
    // A nexthop off the router's subnets, or on the router itself: 400 InvalidRoutes.
    for hop in ["8.8.8.8", "10.1.0.1"] {
        let (s, b) = srv
            .put(
                &url,
                P,
                json!({"router": {"routes": [{"destination": "10.9.0.0/16", "nexthop": hop}]}}),
            )
            .await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(err_type(&b), "InvalidRoutes");
    }
    let (s, b) = srv
        .put(
            &url,
            P,
            json!({"router": {"routes": [{"destination": "10.9.0.0", "nexthop": "10.1.0.5"}]}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .put(
            &url,
            P,
            json!({"router": {"routes": [{"destination": "10.9.0.0/16", "nexthop": "10.1.0.5"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["router"]["routes"],
        json!([{"destination": "10.9.0.0/16", "nexthop": "10.1.0.5"}])
    );
    // Nexthops through the gateway subnet are reachable too.
    let (s, b) = srv
        .put(
            &format!("{url}/add_extraroutes"),
            P,
            json!({"router": {"routes": [{"destination": "0.0.0.0/0", "nexthop": "10.30.0.1"},
                                         {"destination": "10.9.0.0/16", "nexthop": "10.1.0.5"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["router"]["routes"].as_array().unwrap().len(), 2);
    // The interface carries a route: it cannot go.
    let (s, b) = srv
        .put(
            &format!("{url}/remove_router_interface"),
            P,
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "RouterInterfaceInUseByRoute");
    let (s, b) = srv
        .put(
            &format!("{url}/remove_extraroutes"),
            P,
            json!({"router": {"routes": [{"destination": "10.9.0.0/16", "nexthop": "10.1.0.5"},
                                         {"destination": "10.8.0.0/16", "nexthop": "10.1.0.6"}]}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["router"]["routes"],
        json!([{"destination": "0.0.0.0/0", "nexthop": "10.30.0.1"}])
    );
    // Clearing the gateway with a route through it is refused.
    let (s, b) = srv
        .put(&url, P, json!({"router": {"external_gateway_info": null}}))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv.put(&url, P, json!({"router": {"routes": null}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["router"]["routes"], json!([]));
    let (s, b) = srv
        .put(&url, P, json!({"router": {"external_gateway_info": null}}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["router"]["external_gateway_info"], Value::Null);

    // Interface by port: the port must be free of a device; it becomes the router's.
    let (net2, _) = project_net(srv, P, "10.2.0.0/24").await;
    let p = port(srv, P, &net2).await;
    let pid = p["id"].as_str().unwrap();
    let (s, b) = srv
        .put(
            &format!("{url}/add_router_interface"),
            P,
            json!({"port_id": pid}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = srv.get(&format!("/v2.0/ports/{pid}"), P).await;
    assert_eq!(b["port"]["device_owner"], "network:router_interface");
    let (s, b) = srv
        .put(
            &format!("{url}/add_router_interface"),
            P,
            json!({"port_id": pid}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(err_type(&b), "PortInUse");
    // A subnet without gateway cannot be an interface.
    let net3 = srv.network(P, json!({})).await;
    let (s, b) = srv
        .post(
            "/v2.0/subnets",
            P,
            json!({"subnet": {"network_id": net3["id"], "ip_version": 4,
                   "cidr": "10.3.0.0/24", "gateway_ip": null}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = srv
        .put(
            &format!("{url}/add_router_interface"),
            P,
            json!({"subnet_id": b["subnet"]["id"]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    // Nothing given / bad ids.
    let (s, _) = srv
        .put(&format!("{url}/add_router_interface"), P, json!({}))
        .await;
    assert_eq!(s, 400);
    let (s, _) = srv
        .put(
            &format!("{url}/add_router_interface"),
            P,
            json!({"subnet_id": "nope"}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = srv
        .put(
            &format!("{url}/remove_router_interface"),
            P,
            json!({"port_id": pid}),
        )
        .await;
    assert_eq!(s, 200);
    // remove_router_interface by port deletes even a port that was the user's.
    let (s, _) = srv.get(&format!("/v2.0/ports/{pid}"), P).await;
    assert_eq!(s, 404);
    let (s, _) = srv
        .put(
            &format!("{url}/remove_router_interface"),
            P,
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.delete(&url, P).await;
    assert_eq!(s, 204);

    // Quota usage counts routers; admins may create routers for other projects.
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            "admin",
            json!({"router": {"name": "x", "project_id": "p9", "ha": true}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["router"]["project_id"], "p9");
    assert_eq!(b["router"]["ha"], true);
    let (s, _) = srv
        .post("/v2.0/routers", P, json!({"router": {"ha": true}}))
        .await;
    assert_eq!(s, 403);
    let (s, b) = srv.get("/v2.0/quotas/p9/details", "admin").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["quota"]["router"]["used"], 1);
    // Tags on routers.
    let r9 = b["quota"].clone();
    let _ = r9;
}

#[tokio::test]
async fn e8_router_and_floating_ip_flow_sqlite() {
    let srv = TestServer::start().await;
    e8_flow(&srv).await;
}

#[tokio::test]
async fn e8_router_and_floating_ip_flow_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    e8_flow(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn routes_and_interfaces_sqlite() {
    let srv = TestServer::start().await;
    routes_and_interfaces(&srv).await;
}

#[tokio::test]
async fn routes_and_interfaces_postgres() {
    let Some(srv) = TestServer::start_pg("").await else {
        eprintln!("skipped: NEUTRINO_TEST_PG_URL unset");
        return;
    };
    routes_and_interfaces(&srv).await;
    srv.cleanup().await;
}

#[tokio::test]
async fn router_tags_and_gateway_fixed_ips() {
    let srv = TestServer::start().await;
    let (ext, ext_sub) = external_net(&srv).await;
    let (s, b) = srv
        .post("/v2.0/routers", P, json!({"router": {"name": "t"}}))
        .await;
    assert_eq!(s, 201);
    let rid = b["router"]["id"].as_str().unwrap().to_string();
    let (s, _) = srv
        .put(&format!("/v2.0/routers/{rid}/tags/red"), P, json!(null))
        .await;
    assert!(s == 201 || s == 204, "{s}");
    let (_, b) = srv.get("/v2.0/routers?tags=red", P).await;
    assert_eq!(b["routers"].as_array().unwrap().len(), 1);
    // external_fixed_ips is admin-only; the gateway IP itself is refused; a used IP 409.
    let gw = |ip: &str| {
        json!({"router": {"external_gateway_info": {"network_id": ext,
            "external_fixed_ips": [{"subnet_id": ext_sub, "ip_address": ip}]}}})
    };
    let (s, _) = srv
        .put(&format!("/v2.0/routers/{rid}"), P, gw("10.30.0.150"))
        .await;
    assert_eq!(s, 403);
    let (s, b) = srv
        .put(&format!("/v2.0/routers/{rid}"), "admin", gw("10.30.0.1"))
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .put(&format!("/v2.0/routers/{rid}"), "admin", gw("10.30.0.150"))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"],
        "10.30.0.150"
    );
    // Same network, other address: the port keeps its id, changes its address.
    let (_, before) = srv
        .get(&format!("/v2.0/ports?device_id={rid}"), "admin")
        .await;
    let (s, b) = srv
        .put(&format!("/v2.0/routers/{rid}"), "admin", gw("10.30.0.151"))
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, after) = srv
        .get(&format!("/v2.0/ports?device_id={rid}"), "admin")
        .await;
    assert_eq!(before["ports"][0]["id"], after["ports"][0]["id"]);
    assert_eq!(
        after["ports"][0]["fixed_ips"][0]["ip_address"],
        "10.30.0.151"
    );
    let (s, b) = srv
        .post(
            "/v2.0/routers",
            "admin",
            json!({"router": {"external_gateway_info": {"network_id": ext,
                "external_fixed_ips": [{"subnet_id": ext_sub, "ip_address": "10.30.0.151"}]}}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    // Admin: enable_snat false.
    let (s, b) = srv
        .put(
            &format!("/v2.0/routers/{rid}"),
            "admin",
            json!({"router": {"external_gateway_info": {"network_id": ext, "enable_snat": false}}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["router"]["external_gateway_info"]["enable_snat"], false);
    assert_eq!(
        b["router"]["external_gateway_info"]["external_fixed_ips"][0]["ip_address"],
        "10.30.0.151"
    );
    // An external network with a gateway cannot stop being external.
    let (s, b) = srv
        .put(
            &format!("/v2.0/networks/{ext}"),
            "admin",
            json!({"network": {"router:external": false}}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
}
