"""Foundation acceptance with the real `openstack` CLI: token, networks, subnets (FEATURES
E3), subnet pools (E4), ports, quotas, extensions, non-admin and reader users.

Runs once per backend (sqlite all-in-one, postgresql server), see conftest.py."""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import uniq


def err(p) -> str:
    return (p.stderr or "") + (p.stdout or "")


def pools(subnet) -> list[tuple[str, str]]:
    return sorted((p["start"], p["end"]) for p in subnet["allocation_pools"])


def routes(subnet) -> list[tuple[str, str]]:
    return sorted((r["destination"], r["nexthop"]) for r in subnet["host_routes"])


@pytest.fixture
def network(cloud):
    """A fresh network, deleted (with its ports and subnets) afterwards."""
    net = cloud.osc("network", "create", uniq("net"))
    yield net
    cleanup_network(cloud, net["id"])


def cleanup_network(cloud, net_id):
    st, _, body = cloud.api("GET", f"/ports?network_id={net_id}")
    for p in (body or {}).get("ports", []) if st == 200 else []:
        cloud.api("DELETE", f"/ports/{p['id']}")
    st, _, body = cloud.api("GET", f"/subnets?network_id={net_id}")
    for s in (body or {}).get("subnets", []) if st == 200 else []:
        cloud.api("DELETE", f"/subnets/{s['id']}")
    cloud.api("DELETE", f"/networks/{net_id}")


# --------------------------------------------------------------------------- token


def test_token_issue(cloud, osc, admin_project_id):
    tok = osc("token", "issue")
    assert set(tok) >= {"id", "expires", "project_id", "user_id"}
    assert tok["project_id"] == admin_project_id
    assert tok["user_id"] == osc("user", "show", "admin")["id"]
    # The issued token is accepted by the network API.
    st, hdrs, body = cloud.api("GET", "/networks", token=tok["id"])
    assert st == 200, body
    assert isinstance(body["networks"], list)
    assert hdrs.get("X-Openstack-Request-Id", "").startswith("req-")
    # ... and a bogus one is not.
    st, _, _ = cloud.api("GET", "/networks", token="not-a-token")
    assert st == 401


# --------------------------------------------------------------------------- networks


def test_network_create_show_set_list(osc, admin_project_id):
    name = uniq("net")
    net = osc("network", "create", "--description", "first description", name)
    try:
        assert net["name"] == name
        assert net["description"] == "first description"
        assert net["admin_state_up"] is True
        assert net["status"] == "ACTIVE"
        assert net["shared"] is False
        assert net["router:external"] is False
        assert net["project_id"] == admin_project_id
        assert net["subnets"] == []
        assert isinstance(net["mtu"], int) and net["mtu"] >= 68
        rev0 = net["revision_number"]

        listed = {n["ID"]: n for n in osc("network", "list")}
        assert net["id"] in listed
        assert listed[net["id"]]["Name"] == name
        assert listed[net["id"]]["Subnets"] == []

        # show by name and by id
        assert osc("network", "show", name)["id"] == net["id"]
        assert osc("network", "show", net["id"])["name"] == name

        new = uniq("renamed")
        out = osc("network", "set", "--name", new, "--description", "second", "--disable",
                  net["id"])
        assert out.strip() == ""
        shown = osc("network", "show", new)
        assert shown["id"] == net["id"], "renaming must keep the ID"
        assert shown["description"] == "second"
        assert shown["admin_state_up"] is False
        assert shown["revision_number"] > rev0
        osc("network", "set", "--enable", new)
        assert osc("network", "show", new)["admin_state_up"] is True
        assert osc("network", "show", name, expect_fail=True).returncode != 0

        # --disable at creation
        down = osc("network", "create", "--disable", uniq("down"))
        assert down["admin_state_up"] is False
        osc("network", "delete", down["id"])
    finally:
        osc("network", "delete", net["id"])
    p = osc("network", "show", net["id"], expect_fail=True)
    assert "No Network found" in err(p) or "404" in err(p), err(p)


def test_network_delete_several(osc):
    a, b, c = (osc("network", "create", uniq("del")) for _ in range(3))
    out = osc("network", "delete", a["name"], b["id"])
    assert out.strip() == ""
    ids = {n["ID"] for n in osc("network", "list")}
    assert a["id"] not in ids and b["id"] not in ids
    assert c["id"] in ids
    osc("network", "delete", c["id"])
    # deleting a missing network fails
    p = osc("network", "delete", c["id"], expect_fail=True)
    assert "1 of 1 networks failed to delete" in err(p) or "No Network found" in err(p), err(p)


# --------------------------------------------------------------------------- subnets


def test_e3_step1_subnet_create(osc, network):
    sub = osc("subnet", "create", "--subnet-range", "192.168.100.0/24",
              "--gateway", "192.168.100.1", "--ip-version", "4", "--network", network["name"],
              "--dns-nameserver", "8.8.8.8", "--dns-nameserver", "8.8.4.4", "MyFlatSubnet")
    assert sub["name"] == "MyFlatSubnet"
    assert sub["cidr"] == "192.168.100.0/24"
    assert pools(sub) == [("192.168.100.2", "192.168.100.254")]
    assert sub["enable_dhcp"] is True
    assert sub["gateway_ip"] == "192.168.100.1"
    assert sub["ip_version"] == 4
    assert sub["network_id"] == network["id"]
    assert sub["dns_nameservers"] == ["8.8.8.8", "8.8.4.4"]  # Neutron keeps the order given
    assert sub["host_routes"] == []
    shown = osc("subnet", "show", sub["id"])
    assert pools(shown) == [("192.168.100.2", "192.168.100.254")]
    assert osc("network", "show", network["id"])["subnets"] == [sub["id"]]
    listed = {s["ID"]: s for s in osc("subnet", "list", "--network", network["id"])}
    assert listed[sub["id"]]["Subnet"] == "192.168.100.0/24"
    assert listed[sub["id"]]["Network"] == network["id"]
    # overlapping subnet on the same network is refused
    p = osc("subnet", "create", "--subnet-range", "192.168.100.128/25", "--network",
            network["id"], uniq("overlap"), expect_fail=True)
    assert "overlaps with another subnet" in err(p) or "400" in err(p), err(p)


def test_e3_step4_allocation_pool_exclusion(cloud, osc, network):
    sub = osc("subnet", "create", "--subnet-range", "192.168.1.0/24", "--network",
              network["id"], "--allocation-pool", "start=192.168.1.2,end=192.168.1.49",
              "--allocation-pool", "start=192.168.1.56,end=192.168.1.254", uniq("pools"))
    assert pools(sub) == [("192.168.1.2", "192.168.1.49"), ("192.168.1.56", "192.168.1.254")]
    assert sub["gateway_ip"] == "192.168.1.1"

    # Exhaust the subnet through the API: every pool address, and nothing from .50-.55.
    def create(_):
        return cloud.api("POST", "/ports", {"port": {"network_id": network["id"]}})

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(create, range(48 + 199)))
    bad = [(st, b) for st, _, b in results if st != 201]
    assert not bad, bad[:3]
    ips = [p["port"]["fixed_ips"][0]["ip_address"] for _, _, p in results]
    assert len(set(ips)) == len(ips), "duplicate addresses handed out"
    expected = {f"192.168.1.{i}" for i in list(range(2, 50)) + list(range(56, 255))}
    assert set(ips) == expected
    st, _, body = create(None)
    assert st == 409, body
    assert body["NeutronError"]["type"] == "IpAddressGenerationFailure"


def test_e3_step5_dns_and_host_route_limits(osc, network):
    dns = [f"10.0.0.{i}" for i in range(1, 7)]
    args = ["subnet", "create", "--subnet-range", "10.61.0.0/24", "--network", network["id"]]
    ok5 = osc(*args, *sum([["--dns-nameserver", d] for d in dns[:5]], []), uniq("dns5"))
    assert sorted(ok5["dns_nameservers"]) == sorted(dns[:5])
    p = osc("subnet", "create", "--subnet-range", "10.62.0.0/24", "--network", network["id"],
            *sum([["--dns-nameserver", d] for d in dns], []), uniq("dns6"), expect_fail=True)
    assert "400" in err(p) or "BadRequest" in err(p), err(p)
    # adding a 6th to an existing subnet is refused too
    p = osc("subnet", "set", "--dns-nameserver", dns[5], ok5["id"], expect_fail=True)
    assert "400" in err(p) or "BadRequest" in err(p), err(p)
    assert sorted(osc("subnet", "show", ok5["id"])["dns_nameservers"]) == sorted(dns[:5])

    hr = [f"destination=172.16.{i}.0/24,gateway=10.63.0.254" for i in range(21)]
    ok20 = osc("subnet", "create", "--subnet-range", "10.63.0.0/24", "--network", network["id"],
               *sum([["--host-route", h] for h in hr[:20]], []), uniq("hr20"))
    assert len(ok20["host_routes"]) == 20
    assert ("172.16.0.0/24", "10.63.0.254") in routes(ok20)
    p = osc("subnet", "create", "--subnet-range", "10.64.0.0/24", "--network", network["id"],
            *sum([["--host-route", h.replace("10.63.", "10.64.")] for h in hr], []),
            uniq("hr21"), expect_fail=True)
    assert "400" in err(p) or "BadRequest" in err(p), err(p)
    names = {s["Name"] for s in osc("subnet", "list", "--network", network["id"])}
    assert not any(n.startswith(("dns6", "hr21")) for n in names)


def test_subnet_gateway_none_and_set(osc, network):
    sub = osc("subnet", "create", "--subnet-range", "10.65.0.0/24", "--gateway", "none",
              "--network", network["id"], uniq("nogw"))
    assert sub["gateway_ip"] is None
    assert pools(sub) == [("10.65.0.1", "10.65.0.254")]
    # subnet set / unset of DNS servers and routes, and renaming
    new = uniq("sub")
    osc("subnet", "set", "--name", new, "--dns-nameserver", "9.9.9.9", "--host-route",
        "destination=10.99.0.0/16,gateway=10.65.0.9", "--no-dhcp", sub["id"])
    s = osc("subnet", "show", new)
    assert s["id"] == sub["id"]
    assert s["dns_nameservers"] == ["9.9.9.9"]
    assert routes(s) == [("10.99.0.0/16", "10.65.0.9")]
    assert s["enable_dhcp"] is False
    osc("subnet", "unset", "--dns-nameserver", "9.9.9.9", "--host-route",
        "destination=10.99.0.0/16,gateway=10.65.0.9", new)
    s = osc("subnet", "show", new)
    assert s["dns_nameservers"] == [] and s["host_routes"] == []
    osc("subnet", "delete", new)
    assert osc("network", "show", network["id"])["subnets"] == []


# --------------------------------------------------------------------------- subnet pools


def test_e4_subnet_pools(osc, network):
    name = uniq("MySubnetPool")
    pool = osc("subnet", "pool", "create", "--pool-prefix", "172.31.0.0/16", name)
    subs = []
    try:
        assert pool["default_prefixlen"] == 8
        assert pool["min_prefixlen"] == 8
        assert pool["max_prefixlen"] == 32
        assert pool["shared"] is False
        assert pool["is_default"] is False
        assert pool["ip_version"] == 4
        assert pool["prefixes"] == ["172.31.0.0/16"]
        assert any(p["ID"] == pool["id"] for p in osc("subnet", "pool", "list"))

        s1 = osc("subnet", "create", "--subnet-pool", name, "--prefix-length", "28",
                 "--network", network["id"], uniq("MySubnetFromPool"))
        subs.append(s1["id"])
        net1 = ipaddress.ip_network(s1["cidr"])
        assert net1.prefixlen == 28
        assert net1.subnet_of(ipaddress.ip_network("172.31.0.0/16"))
        hosts = list(net1.hosts())
        assert s1["gateway_ip"] == str(hosts[0])
        assert pools(s1) == [(str(hosts[1]), str(hosts[-1]))]
        assert s1["subnetpool_id"] == pool["id"]

        out = osc("subnet", "pool", "set", "--default", name)
        assert out.strip() == ""
        assert osc("subnet", "pool", "show", name)["is_default"] is True

        s2 = osc("subnet", "create", "--use-default-subnet-pool", "--prefix-length", "28",
                 "--network", network["id"], uniq("FromDefault"))
        subs.append(s2["id"])
        net2 = ipaddress.ip_network(s2["cidr"])
        assert net2.prefixlen == 28
        assert net2.subnet_of(ipaddress.ip_network("172.31.0.0/16"))
        assert not net2.overlaps(net1)
        assert s2["subnetpool_id"] == pool["id"]
        assert s2.get("use_default_subnet_pool") in (True, None)

        # E4 step 4: refused while subnets use it
        p = osc("subnet", "pool", "delete", name, expect_fail=True)
        # Neutron: SubnetPoolDeleteError (400) "Subnet pool has existing allocations"
        assert "existing allocations" in err(p) and "400" in err(p), err(p)
        assert osc("subnet", "pool", "show", name)["id"] == pool["id"]
        osc("subnet", "delete", *subs)
        subs.clear()
        osc("subnet", "pool", "set", "--no-default", name)
        osc("subnet", "pool", "delete", name)
        assert pool["id"] not in {p["ID"] for p in osc("subnet", "pool", "list")}
    finally:
        if subs:
            osc("subnet", "delete", *subs)
        if pool["id"] in {p["ID"] for p in osc("subnet", "pool", "list")}:
            osc("subnet", "pool", "set", "--no-default", pool["id"])
            osc("subnet", "pool", "delete", pool["id"])


# --------------------------------------------------------------------------- ports


def test_ports(cloud, osc, network):
    sub = osc("subnet", "create", "--subnet-range", "10.70.0.0/24", "--network", network["id"],
              uniq("psub"))
    other = osc("network", "create", uniq("other"))
    try:
        osc("subnet", "create", "--subnet-range", "10.71.0.0/24", "--network", other["id"],
            uniq("osub"))
        other_port = osc("port", "create", "--network", other["id"], uniq("oport"))

        name = uniq("port")
        port = osc("port", "create", "--network", network["name"], "--fixed-ip",
                   f"subnet={sub['id']},ip-address=10.70.0.10", name)
        assert port["name"] == name
        assert port["network_id"] == network["id"]
        assert port["fixed_ips"] == [{"subnet_id": sub["id"], "ip_address": "10.70.0.10"}]
        assert port["status"] == "DOWN"
        assert port["admin_state_up"] is True
        assert port["device_owner"] == "" and port["device_id"] == ""
        assert port["allowed_address_pairs"] == []
        mac = port["mac_address"]
        assert len(mac.split(":")) == 6 and mac == mac.lower()

        auto = osc("port", "create", "--network", network["id"], uniq("auto"))
        auto_ip = auto["fixed_ips"][0]["ip_address"]
        assert ipaddress.ip_address(auto_ip) in ipaddress.ip_network("10.70.0.0/24")
        assert auto_ip not in ("10.70.0.0", "10.70.0.1", "10.70.0.10", "10.70.0.255")
        assert auto["mac_address"] != mac

        # list with filters
        on_net = {p["ID"]: p for p in osc("port", "list", "--network", network["id"])}
        assert {port["id"], auto["id"]} <= set(on_net)
        assert other_port["id"] not in on_net
        assert on_net[port["id"]]["MAC Address"] == mac
        by_ip = osc("port", "list", "--fixed-ip", "ip-address=10.70.0.10")
        assert [p["ID"] for p in by_ip] == [port["id"]]
        by_subnet = {p["ID"] for p in osc("port", "list", "--fixed-ip", f"subnet={sub['id']}")}
        assert by_subnet == {port["id"], auto["id"]}
        long = {p["ID"]: p for p in osc("port", "list", "--long", "--network", network["id"])}
        assert "Device Owner" in long[port["id"]]
        assert "Security Groups" in long[port["id"]]

        # show
        shown = osc("port", "show", name)
        assert shown["id"] == port["id"] and shown["mac_address"] == mac

        # a taken address is a conflict
        p = osc("port", "create", "--network", network["id"], "--fixed-ip",
                f"subnet={sub['id']},ip-address=10.70.0.10", uniq("dup"), expect_fail=True)
        assert "409" in err(p) or "Conflict" in err(p), err(p)

        # set: rename, add an address, allowed address pairs
        new = uniq("renamed")
        osc("port", "set", "--name", new, "--fixed-ip",
            f"subnet={sub['id']},ip-address=10.70.0.11", port["id"])
        shown = osc("port", "show", port["id"])
        assert shown["name"] == new
        assert sorted(f["ip_address"] for f in shown["fixed_ips"]) == ["10.70.0.10",
                                                                         "10.70.0.11"]
        assert shown["revision_number"] > port["revision_number"]
        osc("port", "set", "--allowed-address", "ip-address=10.70.0.100", "--allowed-address",
            "ip-address=10.80.0.0/24,mac-address=fa:16:3e:00:00:01", new)
        pairs = osc("port", "show", new)["allowed_address_pairs"]
        assert sorted((a["ip_address"], a["mac_address"]) for a in pairs) == [
            ("10.70.0.100", mac), ("10.80.0.0/24", "fa:16:3e:00:00:01")]
        osc("port", "set", "--no-allowed-address", new)
        assert osc("port", "show", new)["allowed_address_pairs"] == []

        # the second address is also taken now
        p = osc("port", "create", "--network", network["id"], "--fixed-ip",
                "ip-address=10.70.0.11", uniq("dup"), expect_fail=True)
        assert "409" in err(p) or "Conflict" in err(p), err(p)

        osc("port", "delete", new, auto["id"])
        p = osc("port", "show", port["id"], expect_fail=True)
        assert "No Port found" in err(p) or "404" in err(p), err(p)
        # the address is free again
        again = osc("port", "create", "--network", network["id"], "--fixed-ip",
                    "ip-address=10.70.0.10", uniq("again"))
        assert again["fixed_ips"][0]["ip_address"] == "10.70.0.10"
        osc("port", "delete", again["id"])
    finally:
        cleanup_network(cloud, other["id"])


# --------------------------------------------------------------------------- quotas


def quota_limits(rows) -> dict:
    return {r["Resource"]: r["Limit"] for r in rows}


def test_quota_show_set_and_enforcement(cloud, osc):
    project = uniq("quota")
    pid = osc("project", "create", "--domain", "default", project)["id"]
    created = []
    try:
        before = quota_limits(osc("quota", "show", project))
        assert before["networks"] == 100
        assert before["subnets"] == 100
        assert before["ports"] == 500
        assert osc("quota", "set", "--networks", "5", project).strip() == ""
        after = quota_limits(osc("quota", "show", project))
        assert after["networks"] == 5
        assert after["ports"] == before["ports"]
        # the API agrees
        st, _, body = cloud.api("GET", f"/quotas/{pid}")
        assert st == 200 and body["quota"]["network"] == 5

        for i in range(5):
            created.append(osc("network", "create", "--project", project, uniq("q"))["id"])
        p = osc("network", "create", "--project", project, uniq("q6"), expect_fail=True)
        assert "Quota exceeded" in err(p), err(p)
        assert "409" in err(p) or "Conflict" in err(p), err(p)
        # other projects are unaffected
        mine = osc("network", "create", uniq("notquota"))
        osc("network", "delete", mine["id"])
        # freeing one makes room again
        osc("network", "delete", created.pop())
        created.append(osc("network", "create", "--project", project, uniq("q"))["id"])
        usage = {r["Resource"]: r for r in osc("quota", "show", "--usage", project)}
        assert usage["networks"]["In Use"] == 5
        # OSC sends check_limit: a limit below current usage is refused ...
        p = osc("quota", "set", "--networks", "2", project, expect_fail=True)
        assert "greater than or equal to already used" in err(p) or "409" in err(p), err(p)
        assert quota_limits(osc("quota", "show", project))["networks"] == 5
        # ... unless forced
        osc("quota", "set", "--force", "--networks", "2", project)
        assert quota_limits(osc("quota", "show", project))["networks"] == 2
        p = osc("network", "create", "--project", project, uniq("q7"), expect_fail=True)
        assert "Quota exceeded" in err(p), err(p)
        # -1 is unlimited
        osc("quota", "set", "--networks", "-1", project)
        assert quota_limits(osc("quota", "show", project))["networks"] == -1
        created.append(osc("network", "create", "--project", project, uniq("q"))["id"])
    finally:
        if created:
            osc("network", "delete", *created)
        osc("project", "delete", project)


# --------------------------------------------------------------------------- extensions


def test_extension_list(osc):
    exts = osc("extension", "list", "--network")
    aliases = {e["Alias"] for e in exts}
    assert {"quotas", "external-net", "pagination"} <= aliases, aliases
    assert all(e["Name"] for e in exts)
    long = osc("extension", "list", "--network", "--long")
    assert {"Name", "Alias", "Description"} <= set(long[0])


# --------------------------------------------------------------------------- users & policy


def test_member_sees_only_own_and_shared(cloud, osc):
    admin_private = osc("network", "create", uniq("adminpriv"))
    admin_shared = osc("network", "create", "--share", uniq("adminshared"))
    proj, pid, user, pw = cloud.make_user("member")
    proj2, pid2, user2, pw2 = cloud.make_user("member")
    as_u = dict(user=user, project=proj, password=pw)
    as_u2 = dict(user=user2, project=proj2, password=pw2)
    mine = None
    try:
        mine = osc("network", "create", uniq("usernet"), **as_u)
        assert mine["project_id"] == pid
        assert mine["shared"] is False
        visible = {n["ID"] for n in osc("network", "list", **as_u)}
        assert mine["id"] in visible
        assert admin_shared["id"] in visible
        assert admin_private["id"] not in visible
        p = osc("network", "show", admin_private["id"], expect_fail=True, **as_u)
        assert "No Network found" in err(p) or "404" in err(p), err(p)
        # another project's member does not see it
        visible2 = {n["ID"] for n in osc("network", "list", **as_u2)}
        assert mine["id"] not in visible2 and admin_shared["id"] in visible2
        # admin sees everything
        all_ids = {n["ID"] for n in osc("network", "list")}
        assert {mine["id"], admin_private["id"], admin_shared["id"]} <= all_ids
        # sharing is admin-only
        p = osc("network", "create", "--share", uniq("share"), expect_fail=True, **as_u)
        assert "403" in err(p) or "Forbidden" in err(p) or "disallowed by policy" in err(p), \
            err(p)
        p = osc("network", "set", "--share", mine["id"], expect_fail=True, **as_u)
        assert "403" in err(p) or "Forbidden" in err(p) or "disallowed by policy" in err(p), \
            err(p)
        # members cannot modify another project's shared network
        p = osc("network", "set", "--name", "hijack", admin_shared["id"], expect_fail=True,
                **as_u)
        assert any(c in err(p) for c in ("403", "Forbidden", "404", "No Network found")), err(p)
        assert osc("network", "show", admin_shared["id"])["name"] == admin_shared["name"]
        # a reader of the same project can list but not create
        _, _, reader, rpw = cloud.make_user("reader", project=proj)
        as_r = dict(user=reader, project=proj, password=rpw)
        rvisible = {n["ID"] for n in osc("network", "list", **as_r)}
        assert mine["id"] in rvisible and admin_private["id"] not in rvisible
        assert osc("network", "show", mine["id"], **as_r)["id"] == mine["id"]
        p = osc("network", "create", uniq("readernet"), expect_fail=True, **as_r)
        assert "403" in err(p) or "Forbidden" in err(p) or "disallowed by policy" in err(p), \
            err(p)
        p = osc("network", "delete", mine["id"], expect_fail=True, **as_r)
        assert "403" in err(p) or "Forbidden" in err(p) or "disallowed by policy" in err(p), \
            err(p)
        assert osc("network", "show", mine["id"])["id"] == mine["id"]

        # they can create subnets and ports on their own network
        s = osc("subnet", "create", "--network", mine["id"], "--subnet-range",
                "10.90.0.0/24", uniq("usub"), **as_u)
        assert s["project_id"] == pid
        port = osc("port", "create", "--network", mine["id"], uniq("uport"), **as_u)
        assert port["project_id"] == pid
        osc("port", "delete", port["id"], **as_u)
        osc("subnet", "delete", s["id"], **as_u)

        osc("network", "delete", mine["id"], **as_u)
        mine = None
    finally:
        if mine:
            osc("network", "delete", mine["id"])
        osc("network", "delete", admin_private["id"], admin_shared["id"])


def test_wrong_password_is_refused(cloud, osc):
    p = osc("network", "list", user="admin", project="admin", password="wrong",
            expect_fail=True)
    assert "401" in err(p) or "authenticate" in err(p).lower(), err(p)


def test_external_network_visible_to_all_projects(cloud, osc):
    ext = osc("network", "create", "--external", uniq("public"))
    try:
        assert ext["router:external"] is True
        sub = osc("subnet", "create", "--network", ext["id"], "--subnet-range",
                  "172.24.40.0/24", "--no-dhcp", uniq("pubsub"))
        proj, _, user, pw = cloud.make_user("member")
        as_u = dict(user=user, project=proj, password=pw)
        listed = {n["ID"] for n in osc("network", "list", "--external", **as_u)}
        assert ext["id"] in listed
        internal = {n["ID"] for n in osc("network", "list", "--internal")}
        assert ext["id"] not in internal
        shown = osc("network", "show", ext["id"], **as_u)
        assert shown["router:external"] is True and shown["shared"] is False
        # Subnets of a non-shared external network are visible to other projects only
        # when the server advertises `subnet-external-network` (Neutron >= 2023.2).
        aliases = {e["Alias"] for e in osc("extension", "list", "--network", **as_u)}
        subs = {s["ID"] for s in osc("subnet", "list", "--network", ext["id"], **as_u)}
        if "subnet-external-network" in aliases:
            assert subs == {sub["id"]}
        else:
            assert subs == set(), "subnets of another project's external network are " \
                "visible although subnet-external-network is not advertised"
        # a member cannot flip router:external
        p = osc("network", "set", "--internal", ext["id"], expect_fail=True, **as_u)
        assert any(c in err(p) for c in ("403", "Forbidden", "404")), err(p)
    finally:
        cleanup_network(cloud, ext["id"])
