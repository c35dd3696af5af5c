"""RBAC network sharing with the real `openstack` CLI (FEATURES §10; acceptance scenario E7,
steps 1-8): access_as_shared to one project, access_as_external to another, refusal to
delete a policy that is in use.

SQLite all-in-one only (`sqlite_cloud`): the foundation tests cover PostgreSQL. Users B and C
are created through the identity API (set-up), ProjectA/UserA through the CLI as the
scenario states."""

from __future__ import annotations

import pytest

from conftest import Account, get_token


def err(p) -> str:
    return (p.stderr or "") + (p.stdout or "")


def names(rows) -> list[str]:
    return sorted(r["Name"] for r in rows)


def test_e7_rbac_sharing(sqlite_cloud):
    cloud, osc = sqlite_cloud, sqlite_cloud.osc
    accounts: list[Account] = []
    role_id = None
    net_ids: list[str] = []
    router_unsupported = None
    try:
        # ---- step 1: projects, role, users (ProjectA/UserA with the CLI, B and C over HTTP)
        proj_a = osc("project", "create", "--description", "Project A RBAC Demo", "ProjectA")
        assert proj_a["description"] == "Project A RBAC Demo"
        role_id = osc("role", "create", "rbacdemo")["id"]
        user_a = osc("user", "create", "UserA", "--password", "secrete")
        accounts.append(Account(cloud, "ProjectA", proj_a["id"], "UserA", user_a["id"],
                                "secrete"))
        osc("role", "add", "--project", "ProjectA", "--user", "UserA", "rbacdemo")
        ua = accounts[0]
        ub = cloud.new_account("rbacdemo", project="ProjectB", user="UserB", password="secrete",
                               project_description="Project B RBAC Demo")
        accounts.append(ub)
        uc = cloud.new_account("rbacdemo", project="ProjectC", user="UserC", password="secrete",
                               project_description="Project C RBAC Demo")
        accounts.append(uc)

        # ---- step 2: the admin's network and subnet
        net = osc("network", "create", "MySemiSharedNetwork")
        net_ids.append(net["id"])
        assert net["shared"] is False
        assert net["provider:network_type"] == "vxlan"  # all-in-one project networks
        assert isinstance(net["provider:segmentation_id"], int)
        sub = osc("subnet", "create", "--subnet-range", "192.168.99.0/24", "--network",
                  "MySemiSharedNetwork", "MySemiSharedSubnet")
        assert [(p["start"], p["end"]) for p in sub["allocation_pools"]] == [
            ("192.168.99.2", "192.168.99.254")]
        assert sub["gateway_ip"] == "192.168.99.1"

        # ---- step 3: share it with ProjectA
        shared_pol = osc("network", "rbac", "create", "--type", "network", "--action",
                         "access_as_shared", "--target-project", "ProjectA",
                         "MySemiSharedNetwork")
        assert shared_pol["object_type"] == "network"
        assert shared_pol["object_id"] == net["id"]
        assert shared_pol["action"] == "access_as_shared"
        assert shared_pol["target_project_id"] == proj_a["id"]
        _, admin_tok = get_token(cloud.identity_url, cloud.password)
        assert shared_pol["project_id"] == admin_tok["project"]["id"]

        # ---- step 4: UserA sees network and subnet; UserB and UserC see nothing
        listed = ua.osc("network", "list")
        assert names(listed) == ["MySemiSharedNetwork"], listed
        assert listed[0]["Subnets"] == [sub["id"]]
        subs = ua.osc("subnet", "list")
        assert [(s["Name"], s["Subnet"]) for s in subs] == [
            ("MySemiSharedSubnet", "192.168.99.0/24")], subs
        assert ub.osc("network", "list") == []
        assert uc.osc("network", "list") == []

        # ---- step 5: UserA can create a port on it, UserB cannot
        port_a = ua.osc("port", "create", "--network", "MySemiSharedNetwork", "PortA")
        assert port_a["project_id"] == proj_a["id"]
        assert port_a["network_id"] == net["id"]
        assert port_a["fixed_ips"][0]["subnet_id"] == sub["id"]
        p = ub.osc("port", "create", "--network", "MySemiSharedNetwork", "PortB",
                   expect_fail=True)
        assert "No Network found for MySemiSharedNetwork" in err(p), err(p)
        # ... and by ID the server answers as if the network did not exist
        st, _, body = ub.api("POST", "/ports", {"port": {"network_id": net["id"]}})
        assert st == 404, body

        # ---- step 6: an internal VLAN network (VLAN 31 on physnet1, outside any range)
        ext = osc("network", "create", "--provider-network-type", "vlan",
                  "--provider-physical-network", "physnet1", "--provider-segment", "31",
                  "MySemiSharedExternalNetwork")
        net_ids.append(ext["id"])
        assert ext["router:external"] is False
        assert ext["shared"] is False
        assert ext["provider:segmentation_id"] == 31
        assert ext["id"] not in [n["ID"] for n in osc("network", "list", "--external")]

        # ---- step 7: access_as_external to ProjectB
        ext_pol = osc("network", "rbac", "create", "--type", "network", "--action",
                      "access_as_external", "--target-project", "ProjectB",
                      "MySemiSharedExternalNetwork")
        assert ext_pol["action"] == "access_as_external"
        assert ext_pol["object_id"] == ext["id"]
        assert ext_pol["target_project_id"] == ub.project_id
        assert names(ub.osc("network", "list", "--external")) == ["MySemiSharedExternalNetwork"]
        seen = ub.osc("network", "show", "MySemiSharedExternalNetwork")
        assert seen["id"] == ext["id"]
        assert seen["router:external"] is True
        assert seen["shared"] is False
        for f in ("provider:network_type", "provider:physical_network",
                  "provider:segmentation_id"):
            assert seen.get(f) is None, (f, seen)
        assert seen["revision_number"] > ext["revision_number"]
        st, _, body = ub.api("GET", f"/networks/{ext['id']}")
        assert st == 200 and "provider:network_type" not in body["network"], body
        assert uc.osc("network", "list", "--external") == []

        # UserB can use it as a router gateway (routers: FEATURES §11)
        st, _, body = cloud.api("GET", "/routers")
        if st == 404:
            router_unsupported = "the routers API (/v2.0/routers) is not implemented yet"
        else:
            st, _, body = cloud.api("POST", "/subnets", {"subnet": {
                "network_id": ext["id"], "cidr": "203.0.113.0/24", "ip_version": 4,
                "name": "MySemiSharedExternalSubnet"}})
            assert st == 201, body
            st, _, body = ub.api("POST", "/routers", {"router": {"name": "RouterB"}})
            assert st == 201, body
            router = body["router"]
            ub.osc("router", "set", "--external-gateway", "MySemiSharedExternalNetwork",
                   "RouterB")
            st, _, body = ub.api("GET", f"/routers/{router['id']}")
            assert body["router"]["external_gateway_info"]["network_id"] == ext["id"], body
            # ProjectB uses the network: the policy cannot go (FEATURES E7 step 8)
            p = osc("network", "rbac", "delete", ext_pol["id"], expect_fail=True)
            assert "409" in err(p) and "depend on it" in err(p), err(p)
            st, _, _ = ub.api("DELETE", f"/routers/{router['id']}")
            assert st == 204

        # ---- step 8: the shared policy cannot go while UserA's port uses the network
        p = osc("network", "rbac", "delete", shared_pol["id"], expect_fail=True)
        assert "409" in err(p) and "depend on it" in err(p), err(p)
        st, _, body = cloud.api("GET", f"/rbac-policies/{shared_pol['id']}")
        assert st == 200, body
        ua.osc("port", "delete", "PortA")
        osc("network", "rbac", "delete", shared_pol["id"])
        assert ua.osc("network", "list") == []
        st, _, _ = cloud.api("GET", f"/rbac-policies/{shared_pol['id']}")
        assert st == 404
    finally:
        for nid in net_ids:
            st, _, body = cloud.api("GET", f"/ports?network_id={nid}")
            for p in (body or {}).get("ports", []) if st == 200 else []:
                cloud.api("DELETE", f"/ports/{p['id']}")
            st, _, body = cloud.api("GET", f"/rbac-policies?object_id={nid}")
            for pol in (body or {}).get("rbac_policies", []) if st == 200 else []:
                cloud.api("DELETE", f"/rbac-policies/{pol['id']}")
            cloud.api("DELETE", f"/networks/{nid}")
        for acct in accounts:
            cloud.delete_account(acct)
        if role_id:
            cloud.identity("DELETE", f"/roles/{role_id}")
    if router_unsupported:
        pytest.xfail(f"E7 step 7 (UserB sets the network as a router gateway): "
                     f"{router_unsupported}")
