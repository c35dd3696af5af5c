//! Instance data (`/v2.0/instance-metadata`) and the metadata service (`/metadata/...`) as
//! a metadata proxy and an operator see them, on SQLite and (when configured) PostgreSQL.
//! Signatures are computed here with the shared secret, independently of the server.
mod support;

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{TestServer, err_type};

const SECRET: &str = "MetadataSecret123";
const CONF: &str = "[metadata]\nmetadata_proxy_shared_secret = MetadataSecret123\n";
const P: &str = "member:p1";
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx9 operator@example";

fn sign(secret: &str, instance_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(instance_id.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GET `/metadata<path>` with the given proxy headers; (status, body text).
async fn md_raw(srv: &TestServer, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut rb = reqwest::Client::new().get(format!("{}/metadata{path}", srv.url));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// GET `/metadata<path>` as the proxy does for `instance` of `tenant` from `remote`.
async fn md(
    srv: &TestServer,
    instance: &str,
    tenant: &str,
    remote: &str,
    path: &str,
) -> (u16, String) {
    let sig = sign(SECRET, instance);
    md_raw(
        srv,
        path,
        &[
            ("x-instance-id", instance),
            ("x-tenant-id", tenant),
            ("x-instance-id-signature", &sig),
            ("x-forwarded-for", remote),
        ],
    )
    .await
}

/// GET expecting 200; the body.
async fn md_ok(srv: &TestServer, instance: &str, remote: &str, path: &str) -> String {
    let (s, b) = md(srv, instance, "p1", remote, path).await;
    assert_eq!(s, 200, "{path}: {b}");
    b
}

/// GET expecting 200 and JSON; the document.
async fn md_json(srv: &TestServer, instance: &str, remote: &str, path: &str) -> Value {
    let b = md_ok(srv, instance, remote, path).await;
    serde_json::from_str(&b).unwrap_or_else(|e| panic!("{path}: {e}: {b}"))
}

struct Lab {
    instance: String,
    port: Value,
    fixed: String,
    floating: String,
    subnet: String,
    net: String,
    router: String,
}

/// An instance of project p1: a port (device_id = instance id, a compute owner, security
/// group `web` and `default`) on a routed subnet with DNS servers and a host route, and a
/// floating IP on it.
async fn lab(srv: &TestServer) -> Lab {
    let support::Routed {
        ext,
        net,
        subnet,
        router,
    } = srv
        .routed(
            P,
            json!({"name": "private"}),
            json!({"enable_dhcp": false,
                "dns_nameservers": ["192.0.2.53", "192.0.2.54"],
                "host_routes": [{"destination": "172.16.0.0/16", "nexthop": "192.168.1.254"}]}),
        )
        .await;
    let (s, b) = srv
        .post(
            "/v2.0/security-groups",
            P,
            json!({"security_group": {"name": "web"}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let web = b["security_group"]["id"].as_str().unwrap().to_string();
    let instance = uuid::Uuid::new_v4().to_string();
    let port = srv
        .port(
            P,
            json!({"network_id": net, "device_id": instance,
                "device_owner": "compute:nova", "security_groups": [web],
                "fixed_ips": [{"ip_address": "192.168.1.10"}]}),
        )
        .await;
    let (s, b) = srv
        .post(
            "/v2.0/floatingips",
            P,
            json!({"floatingip": {"floating_network_id": ext, "port_id": port["id"]}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    Lab {
        instance,
        port,
        fixed: "192.168.1.10".into(),
        floating: b["floatingip"]["floating_ip_address"]
            .as_str()
            .unwrap()
            .to_string(),
        subnet,
        net,
        router,
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

async fn instance_data_api(srv: &TestServer) {
    let l = lab(srv).await;
    let path = format!("/v2.0/instance-metadata/{}", l.instance);
    // Create: owner defaults to the instance's project; 201 then 200 on replace.
    let doc = json!({"instance_metadata": {"hostname": "web1", "name": "Web 1",
        "public_keys": {"mykey": KEY}, "user_data": "#!/bin/sh\necho hi\n",
        "meta": {"role": "web"}}});
    let (s, b) = srv.put(&path, P, doc.clone()).await;
    assert_eq!(s, 201, "{b}");
    let d = &b["instance_metadata"];
    assert_eq!(d["instance_id"], json!(l.instance));
    assert_eq!(d["project_id"], json!("p1"));
    assert_eq!(d["tenant_id"], json!("p1"));
    assert_eq!(d["hostname"], json!("web1"));
    assert_eq!(d["availability_zone"], Value::Null);
    assert_eq!(d["revision_number"], json!(1));
    let (s, b) = srv.put(&path, P, doc.clone()).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["instance_metadata"]["revision_number"], json!(2));
    // Show and list: owner and admin; other projects see nothing.
    let (s, b) = srv.get(&path, "reader:p1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["instance_metadata"]["meta"], json!({"role": "web"}));
    let (s, b) = srv.get(&path, "member:p2").await;
    assert_eq!(s, 404);
    assert_eq!(err_type(&b), "InstanceMetadataNotFound");
    let (s, b) = srv.get("/v2.0/instance-metadata", "member:p2").await;
    assert_eq!(s, 200);
    assert_eq!(b["instance_metadata"], json!([]));
    let (s, b) = srv.get("/v2.0/instance-metadata", "admin").await;
    assert_eq!(s, 200);
    assert_eq!(b["instance_metadata"].as_array().unwrap().len(), 1);
    let (s, b) = srv
        .get(
            &format!(
                "/v2.0/instance-metadata?fields=hostname&instance_id={}",
                l.instance
            ),
            P,
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["instance_metadata"], json!([{"hostname": "web1"}]));
    // A reader may not write; another project may not attach data to p1's instance, not
    // even by naming itself; admin cannot give it to another project either.
    let (s, _) = srv.put(&path, "reader:p1", doc.clone()).await;
    assert_eq!(s, 403);
    let (s, _) = srv.put(&path, "member:p2", doc.clone()).await;
    assert_eq!(s, 404);
    let (s, b) = srv
        .put(
            &path,
            "admin",
            json!({"instance_metadata": {"project_id": "p2"}}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = srv
        .put(&path, P, json!({"instance_metadata": {"project_id": "p2"}}))
        .await;
    assert_eq!(s, 400, "{b}");
    // Validation: 400 on bad types and shapes.
    for bad in [
        json!({"instance_metadata": {"hostname": 5}}),
        json!({"instance_metadata": {"hostname": "bad_host!"}}),
        json!({"instance_metadata": {"public_keys": ["k"]}}),
        json!({"instance_metadata": {"public_keys": {"k": 1}}}),
        json!({"instance_metadata": {"meta": {"a": 1}}}),
        json!({"instance_metadata": {"meta": "x"}}),
        json!({"instance_metadata": {"user_data": {"x": 1}}}),
        json!({"instance_metadata": {"user_data": "x".repeat(70000)}}),
        json!({"instance_metadata": {"instance_id": "other"}}),
        json!({"instance_metadata": {"flavor": "m1"}}),
        json!({"instance_metadata": []}),
        json!({"wrong": {}}),
    ] {
        let (s, b) = srv.put(&path, P, bad.clone()).await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert!(!err_type(&b).is_empty(), "{b}");
    }
    // Data for an instance without ports belongs to the caller.
    let (s, b) = srv
        .put(
            "/v2.0/instance-metadata/probe-x",
            "member:p2",
            json!({"instance_metadata": {}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["instance_metadata"]["project_id"], json!("p2"));
    assert_eq!(b["instance_metadata"]["public_keys"], json!({}));
    // Delete: others get 404, the owner 204, then 404.
    let (s, _) = srv.delete(&path, "member:p2").await;
    assert_eq!(s, 404);
    let (s, _) = srv.delete(&path, P).await;
    assert_eq!(s, 204);
    let (s, _) = srv.delete(&path, P).await;
    assert_eq!(s, 404);
    // Without a token, 401 as any API resource.
    let (s, _) = srv.get(&path, "").await;
    assert_eq!(s, 401);
}

async fn metadata_service(srv: &TestServer) {
    let l = lab(srv).await;
    let id = l.instance.as_str();
    let fixed = l.fixed.as_str();
    let (s, b) = srv
        .put(
            &format!("/v2.0/instance-metadata/{id}"),
            P,
            json!({"instance_metadata": {"hostname": "web1", "availability_zone": "az1",
                "public_keys": {"mykey": KEY}, "user_data": "#!/bin/bash\necho 'Extra user data here'",
                "meta": {"role": "web"}}}),
        )
        .await;
    assert_eq!(s, 201, "{b}");

    // Version listings.
    let b = md_ok(srv, id, fixed, "/").await;
    assert_eq!(
        lines(&b),
        [
            "1.0",
            "2007-01-19",
            "2007-03-01",
            "2007-08-29",
            "2007-10-10",
            "2007-12-15",
            "2008-02-01",
            "2008-09-01",
            "2009-04-04",
            "latest"
        ]
    );
    assert_eq!(md_ok(srv, id, fixed, "").await, b);
    assert_eq!(
        lines(&md_ok(srv, id, fixed, "/openstack").await),
        [
            "2012-08-10",
            "2013-04-04",
            "2013-10-17",
            "2015-10-15",
            "2016-06-30",
            "2016-10-06",
            "2017-02-22",
            "2018-08-27",
            "2020-10-14",
            "latest"
        ]
    );
    // A version cloud-init picks for network_data.json serves it.
    let nd = md_json(srv, id, fixed, "/openstack/2018-08-27/network_data.json").await;
    assert!(nd["links"].is_array(), "{nd}");
    let b = md_ok(srv, id, fixed, "/openstack/latest/").await;
    assert!(lines(&b).contains(&"meta_data.json"), "{b}");
    assert!(lines(&b).contains(&"user_data"), "{b}");

    // OpenStack meta_data.json.
    let m = md_json(srv, id, fixed, "/openstack/latest/meta_data.json").await;
    assert_eq!(m["uuid"], json!(id));
    assert_eq!(m["hostname"], json!("web1"));
    assert_eq!(m["name"], json!("web1"));
    assert_eq!(m["availability_zone"], json!("az1"));
    assert_eq!(m["launch_index"], json!(0));
    assert_eq!(m["project_id"], json!("p1"));
    assert_eq!(m["public_keys"], json!({"mykey": KEY}));
    assert_eq!(
        m["keys"],
        json!([{"name": "mykey", "type": "ssh", "data": KEY}])
    );
    assert_eq!(m["meta"], json!({"role": "web"}));
    assert_eq!(m["devices"], json!([]));
    let m2 = md_json(srv, id, fixed, "/openstack/2012-08-10/meta_data.json").await;
    assert_eq!(m2, m);
    assert_eq!(
        md_ok(srv, id, fixed, "/openstack/2012-08-10/user_data").await,
        "#!/bin/bash\necho 'Extra user data here'"
    );
    assert_eq!(
        md_ok(srv, id, fixed, "/openstack/latest/vendor_data.json").await,
        "{}"
    );

    // network_data.json: the port's link, its static address with the gateway and host
    // route, the subnet's DNS servers.
    let n = md_json(srv, id, fixed, "/openstack/latest/network_data.json").await;
    let pid = l.port["id"].as_str().unwrap();
    assert_eq!(n["links"][0]["vif_id"], json!(pid));
    assert_eq!(n["links"][0]["id"], json!(format!("tap{}", &pid[..11])));
    assert_eq!(n["links"][0]["ethernet_mac_address"], l.port["mac_address"]);
    assert!(n["links"][0]["mtu"].is_i64(), "{n}");
    let net0 = &n["networks"][0];
    assert_eq!(net0["type"], json!("ipv4"));
    assert_eq!(net0["link"], n["links"][0]["id"]);
    assert_eq!(net0["ip_address"], json!(fixed));
    assert_eq!(net0["netmask"], json!("255.255.255.0"));
    assert_eq!(net0["network_id"], json!(l.net));
    assert_eq!(
        net0["routes"],
        json!([{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.168.1.1"},
               {"network": "172.16.0.0", "netmask": "255.255.0.0", "gateway": "192.168.1.254"}])
    );
    let dns =
        json!([{"type": "dns", "address": "192.0.2.53"}, {"type": "dns", "address": "192.0.2.54"}]);
    assert_eq!(net0["services"], dns);
    assert_eq!(n["services"], dns);

    // EC2 tree.
    for v in ["latest", "2009-04-04"] {
        let b = md_ok(srv, id, fixed, &format!("/{v}/meta-data/")).await;
        assert_eq!(
            lines(&b),
            [
                "ami-id",
                "ami-launch-index",
                "ami-manifest-path",
                "block-device-mapping/",
                "hostname",
                "instance-action",
                "instance-id",
                "instance-type",
                "local-hostname",
                "local-ipv4",
                "placement/",
                "public-hostname",
                "public-ipv4",
                "public-keys/",
                "reservation-id",
                "security-groups"
            ],
            "{v}"
        );
        assert_eq!(md_ok(srv, id, fixed, &format!("/{v}/meta-data")).await, b);
    }
    let e = |p: &'static str| md_ok(srv, id, fixed, p);
    assert_eq!(e("/2009-04-04/meta-data/hostname").await, "web1");
    assert_eq!(e("/2009-04-04/meta-data/local-hostname").await, "web1");
    assert_eq!(e("/2009-04-04/meta-data/local-ipv4").await, fixed);
    assert_eq!(e("/2009-04-04/meta-data/public-ipv4").await, l.floating);
    assert_eq!(e("/2009-04-04/meta-data/ami-launch-index").await, "0");
    assert!(
        e("/2009-04-04/meta-data/instance-id")
            .await
            .starts_with("i-")
    );
    assert!(
        e("/2009-04-04/meta-data/reservation-id")
            .await
            .starts_with("r-")
    );
    assert_eq!(
        e("/2009-04-04/meta-data/block-device-mapping/").await,
        "ami"
    );
    assert_eq!(
        e("/2009-04-04/meta-data/placement/").await,
        "availability-zone"
    );
    assert_eq!(
        e("/2009-04-04/meta-data/placement/availability-zone").await,
        "az1"
    );
    assert_eq!(e("/2009-04-04/meta-data/public-keys/").await, "0=mykey");
    assert_eq!(
        e("/2009-04-04/meta-data/public-keys/0/").await,
        "openssh-key"
    );
    assert_eq!(
        e("/2009-04-04/meta-data/public-keys/0/openssh-key").await,
        KEY
    );
    let mut groups = lines(&e("/latest/meta-data/security-groups").await)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    groups.sort();
    assert_eq!(groups, ["web"]);
    assert_eq!(
        e("/2009-04-04/user-data").await,
        "#!/bin/bash\necho 'Extra user data here'"
    );
    assert_eq!(lines(&e("/2009-04-04/").await), ["meta-data/", "user-data"]);
    // Older versions lack the keys Nova added later.
    let b = md_ok(srv, id, fixed, "/1.0/meta-data/").await;
    assert!(
        !lines(&b).contains(&"placement/") && lines(&b).contains(&"hostname"),
        "{b}"
    );
    // Unknown paths.
    for p in [
        "/2009-04-04/meta-data/nope",
        "/2009-04-04/meta-data/hostname/x",
        "/2010-01-01/meta-data/",
        "/openstack/2099-01-01/meta_data.json",
        "/openstack/latest/nope",
    ] {
        let (s, _) = md(srv, id, "p1", fixed, p).await;
        assert_eq!(s, 404, "{p}");
    }

    // Without user data: 404 on user_data, and it is not listed.
    let (s, _) = srv
        .put(
            &format!("/v2.0/instance-metadata/{id}"),
            P,
            json!({"instance_metadata": {"hostname": "web1"}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = md(srv, id, "p1", fixed, "/openstack/latest/user_data").await;
    assert_eq!(s, 404);
    let (s, _) = md(srv, id, "p1", fixed, "/latest/user-data").await;
    assert_eq!(s, 404);
    assert_eq!(
        lines(&md_ok(srv, id, fixed, "/latest/").await),
        ["meta-data/"]
    );
    assert!(!lines(&md_ok(srv, id, fixed, "/latest/meta-data/").await).contains(&"public-keys/"));

    // An instance without a document still gets metadata from its port.
    let (s, _) = srv
        .delete(&format!("/v2.0/instance-metadata/{id}"), P)
        .await;
    assert_eq!(s, 204);
    let m = md_json(srv, id, fixed, "/openstack/latest/meta_data.json").await;
    assert_eq!(m["uuid"], json!(id));
    assert_eq!(m["hostname"], json!("host-192-168-1-10"));
    assert_eq!(m["availability_zone"], json!("nova"));
    assert_eq!(m["public_keys"], json!({}));
    assert_eq!(e("/latest/meta-data/local-ipv4").await, fixed);

    // A subnet with DHCP: the address is left to DHCP, as Nova describes it.
    let (s, b) = srv
        .put(
            &format!("/v2.0/subnets/{}", l.subnet),
            P,
            json!({"subnet": {"enable_dhcp": true}}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let n = md_json(srv, id, fixed, "/openstack/latest/network_data.json").await;
    assert_eq!(n["networks"][0]["type"], json!("ipv4_dhcp"));
    assert_eq!(n["networks"][0]["network_id"], json!(l.net));
    assert!(n["networks"][0].get("ip_address").is_none(), "{n}");

    // A second NIC: the address the request came from is the local one.
    let (net2, _) = srv
        .network_with_subnet(P, json!({}), "192.168.2.0/24", json!({}))
        .await;
    srv.port(
        P,
        json!({"network_id": net2, "device_id": id, "device_owner": "compute:nova",
            "fixed_ips": [{"ip_address": "192.168.2.20"}]}),
    )
    .await;
    assert_eq!(
        md_ok(srv, id, "192.168.2.20", "/latest/meta-data/local-ipv4").await,
        "192.168.2.20"
    );
    assert_eq!(
        md_ok(srv, id, "192.168.2.20", "/latest/meta-data/public-ipv4").await,
        l.floating
    );
    assert_eq!(
        md_ok(srv, id, fixed, "/latest/meta-data/local-ipv4").await,
        fixed
    );
    let n = md_json(srv, id, fixed, "/openstack/latest/network_data.json").await;
    assert_eq!(n["links"].as_array().unwrap().len(), 2, "{n}");
    assert_eq!(n["networks"].as_array().unwrap().len(), 2, "{n}");
}

async fn refusals(srv: &TestServer) {
    let l = lab(srv).await;
    let id = l.instance.as_str();
    // Missing headers: 400.
    let (s, _) = md_raw(srv, "/latest/meta-data/", &[]).await;
    assert_eq!(s, 400);
    let sig = sign(SECRET, id);
    let (s, _) = md_raw(
        srv,
        "/latest/meta-data/",
        &[("x-instance-id", id), ("x-instance-id-signature", &sig)],
    )
    .await;
    assert_eq!(s, 400);
    // Unsigned: 403.
    let (s, b) = md_raw(
        srv,
        "/latest/meta-data/",
        &[("x-instance-id", id), ("x-tenant-id", "p1")],
    )
    .await;
    assert_eq!(s, 403, "{b}");
    assert_eq!(b, "Invalid proxy request signature.");
    // Forged: signed with another secret, or the signature of another instance, or junk.
    let other = uuid::Uuid::new_v4().to_string();
    for bad in [
        sign("guessed", id),
        sign(SECRET, &other),
        "not-hex".to_string(),
        sign(SECRET, id)[..40].to_string(),
    ] {
        let (s, b) = md_raw(
            srv,
            "/openstack/latest/meta_data.json",
            &[
                ("x-instance-id", id),
                ("x-tenant-id", "p1"),
                ("x-instance-id-signature", &bad),
            ],
        )
        .await;
        assert_eq!(s, 403, "{bad}: {b}");
        assert!(!b.contains(id), "{b}");
    }
    // A valid signature for the instance, but the wrong tenant: 404, nothing leaked.
    let (s, b) = md(srv, id, "p2", &l.fixed, "/openstack/latest/meta_data.json").await;
    assert_eq!(s, 404, "{b}");
    assert!(!b.contains(id), "{b}");
    // Only compute ports make an instance: a router's id, signed, is no instance.
    let (s, _) = md(srv, &l.router, "p1", "192.168.1.1", "/latest/meta-data/").await;
    assert_eq!(s, 404);
    // A valid signature for an instance that does not exist: 404.
    let (s, _) = md(srv, &other, "p1", &l.fixed, "/latest/meta-data/").await;
    assert_eq!(s, 404);
    // Data attached by admin to another project than the instance's is refused at PUT; a
    // document owned by p2 for an instance id that later gets p1's ports is never served.
    let squat = uuid::Uuid::new_v4().to_string();
    let (s, _) = srv
        .put(
            &format!("/v2.0/instance-metadata/{squat}"),
            "member:p2",
            json!({"instance_metadata": {"user_data": "evil", "hostname": "evil"}}),
        )
        .await;
    assert_eq!(s, 201);
    let p = srv
        .port(
            P,
            json!({"network_id": l.net, "device_id": squat, "device_owner": "compute:nova"}),
        )
        .await;
    let ip = p["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = md(srv, &squat, "p1", &ip, "/latest/user-data").await;
    assert_eq!(s, 404);
    let h = md_ok(srv, &squat, &ip, "/latest/meta-data/hostname").await;
    assert_ne!(h, "evil");
    let (s, _) = md(srv, &squat, "p2", &ip, "/latest/meta-data/hostname").await;
    assert_eq!(s, 404);
}

async fn no_secret(srv: &TestServer) {
    let l = lab(srv).await;
    let (s, _) = md(srv, &l.instance, "p1", &l.fixed, "/latest/meta-data/").await;
    assert_eq!(s, 403);
}

on_both_stores!(
    instance_data_api,
    CONF,
    instance_data_api_sqlite,
    instance_data_api_postgres
);
on_both_stores!(
    metadata_service,
    CONF,
    metadata_service_sqlite,
    metadata_service_postgres
);
on_both_stores!(
    refusals,
    CONF,
    metadata_refusals_sqlite,
    metadata_refusals_postgres
);

#[tokio::test]
async fn instance_data_bounded_by_the_port_quota() {
    let srv = TestServer::start_with("[quotas]\nquota_port = 2\n").await;
    for (i, want) in [(1, 201), (2, 201), (3, 409)] {
        let (s, b) = srv
            .put(
                &format!("/v2.0/instance-metadata/vm{i}"),
                P,
                json!({"instance_metadata": {"hostname": "h"}}),
            )
            .await;
        assert_eq!(s, want, "{b}");
        if want == 409 {
            assert_eq!(err_type(&b), "OverQuota");
        }
    }
    // Replacing an existing document is no new one.
    let (s, _) = srv
        .put(
            "/v2.0/instance-metadata/vm1",
            P,
            json!({"instance_metadata": {"hostname": "h2"}}),
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn metadata_without_secret_refuses_everything() {
    no_secret(&TestServer::start().await).await;
}

#[tokio::test]
async fn secret_from_nova_and_agent_spellings() {
    for conf in [
        "[neutron]\nmetadata_proxy_shared_secret = MetadataSecret123\n",
        "[DEFAULT]\nmetadata_proxy_shared_secret = MetadataSecret123\n",
    ] {
        let srv = TestServer::start_with(conf).await;
        let l = lab(&srv).await;
        assert_eq!(
            md_ok(&srv, &l.instance, &l.fixed, "/latest/meta-data/local-ipv4").await,
            l.fixed
        );
    }
}
