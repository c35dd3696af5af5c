"""A user with only the `reader` role on a project can read its objects and change nothing
(issue 10): every write verb on every collection — create (bulk too), update, delete, tags
(replace, add, remove, clear), router interfaces and extra routes, subnet pool prefixes,
address group addresses, port forwardings, quotas — is refused with 403 and Neutron's error
body, as Neutron's policies say (neutron/conf/policies: every create/update/delete rule is
ADMIN_OR_PROJECT_MEMBER or admin only; the object is the reader's own, so Neutron answers 403,
not 404), and afterwards every object (as admin, timestamps left out) is exactly as before.

Runs on both backends (`cloud`). The member of the same project builds the objects; the
reader then tries each write. All failures are reported together, each with its request."""

from __future__ import annotations

import uuid

from fuzz_support import RawClient, Req, Snapshotter, diff, neutron_error_problem

TAGGABLE = ["networks", "subnets", "ports", "routers", "security-groups", "subnetpools",
            "floatingips"]


def _ok(r, what, expected=(200, 201, 204)):
    assert r.status in expected, f"set-up: {what} -> {r.status} {r.json}"
    return r.json


def test_reader_cannot_change_anything(cloud):
    member = cloud.new_account("member")
    reader = cloud.new_account("reader", project=member.project, project_id=member.project_id)
    admin = RawClient(cloud.api_url, cloud.admin_token())
    mc = RawClient(cloud.api_url, member.token())
    rc = RawClient(cloud.api_url, reader.token())
    snapper = Snapshotter(cloud.api_url, cloud.admin_token())
    pid = member.project_id
    ids: dict[str, str] = {}
    admin_made: list[str] = []
    pf = pf_fip = None
    try:
        # ---- the admin's external network; the member's objects
        ext = _ok(admin.send(Req("POST", "/v2.0/networks", {"network": {
            "name": "rd-ext", "router:external": True}})), "external network")["network"]
        admin_made.append(f"/v2.0/networks/{ext['id']}")
        _ok(admin.send(Req("POST", "/v2.0/subnets", {"subnet": {
            "network_id": ext["id"], "ip_version": 4, "cidr": "172.31.77.0/24"}})), "ext subnet")

        def make(collection, key, body, client=mc):
            obj = _ok(client.send(Req("POST", f"/v2.0/{collection}", {key: body})),
                      f"POST {collection}")[key]
            return obj["id"]

        ids["networks"] = make("networks", "network", {"name": "rd-net"})
        ids["subnets"] = make("subnets", "subnet", {"network_id": ids["networks"],
                                                    "ip_version": 4, "cidr": "10.77.0.0/24"})
        spare_subnet = make("subnets", "subnet", {"network_id": ids["networks"],
                                                  "ip_version": 4, "cidr": "10.77.1.0/24"})
        ids["ports"] = make("ports", "port", {"network_id": ids["networks"], "name": "rd-port",
                                              "fixed_ips": [{"subnet_id": ids["subnets"]}]})
        pf_port = make("ports", "port", {"network_id": ids["networks"], "name": "rd-pf",
                                         "fixed_ips": [{"subnet_id": ids["subnets"],
                                                        "ip_address": "10.77.0.50"}]})
        ids["routers"] = make("routers", "router", {
            "name": "rd-router", "external_gateway_info": {"network_id": ext["id"]}})
        _ok(mc.send(Req("PUT", f"/v2.0/routers/{ids['routers']}/add_router_interface",
                        {"subnet_id": ids["subnets"]})), "add_router_interface")
        ids["security-groups"] = make("security-groups", "security_group", {"name": "rd-sg"})
        ids["security-group-rules"] = make("security-group-rules", "security_group_rule", {
            "security_group_id": ids["security-groups"], "direction": "ingress",
            "protocol": "tcp", "port_range_min": 22, "port_range_max": 22})
        ids["address-scopes"] = make("address-scopes", "address_scope",
                                     {"name": "rd-scope", "ip_version": 4})
        ids["subnetpools"] = make("subnetpools", "subnetpool", {
            "name": "rd-pool", "prefixes": ["10.178.0.0/16"]})
        ids["address-groups"] = make("address-groups", "address_group", {
            "name": "rd-ag", "addresses": ["192.0.2.0/24"]})
        ids["floatingips"] = make("floatingips", "floatingip", {
            "floating_network_id": ext["id"], "port_id": ids["ports"]})
        pf_fip = make("floatingips", "floatingip", {"floating_network_id": ext["id"]})
        pf = _ok(mc.send(Req("POST", f"/v2.0/floatingips/{pf_fip}/port_forwardings", {
            "port_forwarding": {"external_port": 2222, "internal_port": 22,
                                "internal_ip_address": "10.77.0.50",
                                "internal_port_id": pf_port, "protocol": "tcp"}})),
                 "port forwarding")["port_forwarding"]["id"]
        ids["rbac-policies"] = make("rbac-policies", "rbac_policy", {
            "object_type": "network", "object_id": ids["networks"],
            "action": "access_as_shared", "target_tenant": uuid.uuid4().hex})
        for c in TAGGABLE:
            _ok(mc.send(Req("PUT", f"/v2.0/{c}/{ids[c]}/tags", {"tags": ["t0", "t1"]})),
                f"tags of {c}")
        _ok(admin.send(Req("PUT", f"/v2.0/quotas/{pid}", {"quota": {"port": 77}})), "quota")

        # ---- the reader sees its project's objects (so refusals below are not 404s)
        for c, oid in ids.items():
            r = rc.send(Req("GET", f"/v2.0/{c}/{oid}"))
            assert r.status == 200, f"reader cannot read its own {c}: {r.status} {r.json}"

        extra = (f"/v2.0/quotas/{pid}", f"/v2.0/floatingips/{pf_fip}/port_forwardings")
        before = snapper.take(extra)

        # ---- every write, as the reader
        singular = {"networks": "network", "subnets": "subnet", "ports": "port",
                    "routers": "router", "floatingips": "floatingip",
                    "security-groups": "security_group",
                    "security-group-rules": "security_group_rule",
                    "subnetpools": "subnetpool", "address-scopes": "address_scope",
                    "address-groups": "address_group", "rbac-policies": "rbac_policy"}
        creates = {
            "networks": {"name": "rd-x"},
            "subnets": {"network_id": ids["networks"], "ip_version": 4,
                        "cidr": "10.77.9.0/24"},
            "ports": {"network_id": ids["networks"]},
            "routers": {"name": "rd-x"},
            "floatingips": {"floating_network_id": ext["id"]},
            "security-groups": {"name": "rd-x"},
            "security-group-rules": {"security_group_id": ids["security-groups"],
                                     "direction": "egress", "protocol": "udp"},
            "subnetpools": {"name": "rd-x", "prefixes": ["10.179.0.0/16"]},
            "address-scopes": {"name": "rd-x", "ip_version": 4},
            "address-groups": {"name": "rd-x", "addresses": []},
            "rbac-policies": {"object_type": "network", "object_id": ids["networks"],
                              "action": "access_as_shared", "target_tenant": "*"},
        }
        updates = {
            "networks": {"name": "rd-renamed"}, "subnets": {"name": "rd-renamed"},
            "ports": {"name": "rd-renamed"}, "routers": {"name": "rd-renamed"},
            "floatingips": {"port_id": None}, "security-groups": {"name": "rd-renamed"},
            "subnetpools": {"name": "rd-renamed"}, "address-scopes": {"name": "rd-renamed"},
            "address-groups": {"name": "rd-renamed"},
            "rbac-policies": {"target_tenant": uuid.uuid4().hex},
        }
        writes: list[Req] = []
        for c, body in creates.items():
            writes.append(Req("POST", f"/v2.0/{c}", {singular[c]: body}))
        writes.append(Req("POST", "/v2.0/networks", {"networks": [{"name": "a"}, {"name": "b"}]}))
        writes.append(Req("POST", "/v2.0/segments", {"segment": {
            "network_id": ids["networks"], "network_type": "vxlan"}}))
        for c, body in updates.items():
            writes.append(Req("PUT", f"/v2.0/{c}/{ids[c]}", {singular[c]: body}))
        for c in ids:
            writes.append(Req("DELETE", f"/v2.0/{c}/{ids[c]}"))
        for c in TAGGABLE:
            base = f"/v2.0/{c}/{ids[c]}/tags"
            writes += [Req("PUT", base, {"tags": ["reader"]}), Req("PUT", f"{base}/reader"),
                       Req("DELETE", f"{base}/t0"), Req("DELETE", base)]
        r_ = f"/v2.0/routers/{ids['routers']}"
        writes += [
            Req("PUT", f"{r_}/add_router_interface", {"subnet_id": spare_subnet}),
            Req("PUT", f"{r_}/remove_router_interface", {"subnet_id": ids["subnets"]}),
            Req("PUT", f"{r_}/add_extraroutes", {"router": {"routes": [
                {"destination": "198.51.100.0/24", "nexthop": "10.77.0.9"}]}}),
            Req("PUT", f"{r_}/remove_extraroutes", {"router": {"routes": []}}),
            Req("PUT", f"/v2.0/subnetpools/{ids['subnetpools']}/add_prefixes",
                {"prefixes": ["10.180.0.0/16"]}),
            Req("PUT", f"/v2.0/subnetpools/{ids['subnetpools']}/remove_prefixes",
                {"prefixes": ["10.178.0.0/16"]}),
            Req("PUT", f"/v2.0/address-groups/{ids['address-groups']}/add_addresses",
                {"addresses": ["203.0.113.0/24"]}),
            Req("PUT", f"/v2.0/address-groups/{ids['address-groups']}/remove_addresses",
                {"addresses": ["192.0.2.0/24"]}),
            Req("POST", f"/v2.0/floatingips/{pf_fip}/port_forwardings", {"port_forwarding": {
                "external_port": 2223, "internal_port": 23, "internal_ip_address": "10.77.0.50",
                "internal_port_id": pf_port, "protocol": "tcp"}}),
            Req("PUT", f"/v2.0/floatingips/{pf_fip}/port_forwardings/{pf}",
                {"port_forwarding": {"external_port": 2224}}),
            Req("DELETE", f"/v2.0/floatingips/{pf_fip}/port_forwardings/{pf}"),
            Req("PUT", f"/v2.0/quotas/{pid}", {"quota": {"port": 1}}),
            Req("DELETE", f"/v2.0/quotas/{pid}"),
        ]

        problems = []
        for req in writes:
            r = rc.send(req)
            if r.status != 403:
                problems.append(f"{req.method} {req.path} {str(req.body)[:80]} -> {r.status} "
                                f"{str(r.json)[:160]}  (Neutron: 403)")
            elif neutron_error_problem(r):
                problems.append(f"{req.method} {req.path} -> 403 {neutron_error_problem(r)}")
        after = snapper.take(extra)
        changed = diff(before, after, limit=20)
        assert not problems and not changed, (
            f"{cloud.backend}: the reader was not refused ({len(problems)} of {len(writes)} "
            "writes):\n  " + "\n  ".join(problems) +
            ("\nand the state changed:\n  " + "\n  ".join(changed) if changed else ""))
    finally:
        # As admin, dependants first; whatever the reader may have left behind goes too.
        if pf:
            admin.send(Req("DELETE", f"/v2.0/floatingips/{pf_fip}/port_forwardings/{pf}"))
        r = admin.send(Req("GET", f"/v2.0/floatingips?project_id={pid}"))
        for f in (r.json or {}).get("floatingips", []):
            admin.send(Req("DELETE", f"/v2.0/floatingips/{f['id']}"))
        r = admin.send(Req("GET", f"/v2.0/routers?project_id={pid}"))
        for rt in (r.json or {}).get("routers", []):
            for p in (admin.send(Req("GET", f"/v2.0/ports?device_id={rt['id']}")).json
                      or {}).get("ports", []):
                for ip in p.get("fixed_ips", []):
                    admin.send(Req("PUT", f"/v2.0/routers/{rt['id']}/remove_router_interface",
                                   {"subnet_id": ip["subnet_id"]}))
            admin.send(Req("DELETE", f"/v2.0/routers/{rt['id']}"))
        for c in ["rbac-policies", "ports", "subnets", "networks", "security-groups",
                  "subnetpools", "address-scopes", "address-groups"]:
            r = admin.send(Req("GET", f"/v2.0/{c}?project_id={pid}"))
            for o in (r.json or {}).get(c.replace("-", "_"), []):
                admin.send(Req("DELETE", f"/v2.0/{c}/{o['id']}"))
        for path in reversed(admin_made):
            r = admin.send(Req("GET", "/v2.0/ports?network_id=" + path.rsplit("/", 1)[1]))
            for p in (r.json or {}).get("ports", []):
                admin.send(Req("DELETE", f"/v2.0/ports/{p['id']}"))
            admin.send(Req("DELETE", path))
        admin.send(Req("DELETE", f"/v2.0/quotas/{pid}"))
        for c in (admin, mc, rc):
            c.close()
        snapper.close()
        cloud.delete_account(reader, project=False)
        cloud.delete_account(member)
