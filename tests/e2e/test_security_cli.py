"""Security groups, port security and allowed address pairs with the real `openstack` CLI
(FEATURES §8, §9; acceptance scenario E6, API steps 2, 3, 7, 8, 9).

SQLite all-in-one only (`sqlite_cloud`): the foundation tests cover PostgreSQL. The steps
the scenario states run through the CLI, as a project user (role `member`); set-up and
clean-up use plain HTTP."""

from __future__ import annotations

import pytest


def err(p) -> str:
    return (p.stderr or "") + (p.stdout or "")


@pytest.fixture
def member(sqlite_cloud):
    acct = sqlite_cloud.new_account("member")
    yield acct
    # Whatever the test left behind in the project (ports first, then networks, groups).
    cloud, pid = sqlite_cloud, acct.project_id
    for kind in ("ports", "networks", "security-groups"):
        st, _, body = cloud.api("GET", f"/{kind}?project_id={pid}")
        key = kind.replace("-", "_")
        for obj in (body or {}).get(key, []) if st == 200 else []:
            cloud.api("DELETE", f"/{kind}/{obj['id']}")
    sqlite_cloud.delete_account(acct)


def rule_key(r) -> tuple:
    """(direction, ethertype, remote group?, remote prefix) of an `sg rule list` row."""
    return (r["Direction"], r["Ethertype"], r["Remote Security Group"] is not None)


def test_e6_default_group_and_rules(sqlite_cloud, member):
    osc = member.osc
    # -- the project's default group: ingress from members of the group itself, all egress
    rows = osc("security", "group", "rule", "list", "default", json_output=True)
    st, _, body = sqlite_cloud.api(
        "GET", f"/security-groups?project_id={member.project_id}&name=default")
    assert st == 200 and len(body["security_groups"]) == 1, body
    default = body["security_groups"][0]
    assert default["description"] == "Default security group"
    assert sorted(rule_key(r) for r in rows) == [
        ("egress", "IPv4", False), ("egress", "IPv6", False),
        ("ingress", "IPv4", True), ("ingress", "IPv6", True)], rows
    for r in rows:
        if r["Direction"] == "ingress":
            assert r["Remote Security Group"] == default["id"], r
        assert r["IP Protocol"] is None and r["Port Range"] == "", r

    # -- a new group starts with exactly the two egress rules
    web = osc("security", "group", "create", "WEB_SERVERS")
    assert web["name"] == "WEB_SERVERS"
    assert web["project_id"] == member.project_id
    st, _, body = sqlite_cloud.api("GET", f"/security-group-rules?security_group_id={web['id']}")
    rules = body["security_group_rules"]
    assert sorted((r["direction"], r["ethertype"], r["remote_ip_prefix"], r["protocol"],
                   r["remote_group_id"]) for r in rules) == [
        ("egress", "IPv4", None, None, None), ("egress", "IPv6", None, None, None)], rules
    assert len(web["rules"]) == 2, web["rules"]

    # -- ingress HTTP and HTTPS from anywhere
    for port in (80, 443):
        rule = osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port",
                   port, "--remote-ip", "0.0.0.0/0", "WEB_SERVERS", json_output=True)
        assert rule["direction"] == "ingress"
        assert rule["ether_type"] == "IPv4"
        assert rule["protocol"] == "tcp"
        assert rule["port_range_min"] == port and rule["port_range_max"] == port
        assert rule["remote_ip_prefix"] == "0.0.0.0/0"
        assert rule["remote_group_id"] is None
        assert rule["security_group_id"] == web["id"]
    # the same rule again is a conflict
    p = osc("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80",
            "--remote-ip", "0.0.0.0/0", "WEB_SERVERS", expect_fail=True)
    assert "409" in err(p) and "already exists" in err(p), err(p)
    # an IPv4 prefix on an IPv6 rule is refused
    p = osc("security", "group", "rule", "create", "--ethertype", "IPv6", "--remote-ip",
            "10.0.0.0/8", "WEB_SERVERS", expect_fail=True)
    assert "400" in err(p) and "Conflicting value ethertype IPv6" in err(p), err(p)
    st, _, body = sqlite_cloud.api("GET", f"/security-group-rules?security_group_id={web['id']}")
    assert len(body["security_group_rules"]) == 4, body

    # -- the default group can be neither deleted nor renamed by the project
    p = osc("security", "group", "delete", "default", expect_fail=True)
    assert "409" in err(p) and "removing default security group" in err(p), err(p)
    p = osc("security", "group", "set", "--name", "not-default", "default", expect_fail=True)
    assert "409" in err(p) and "Updating default security group" in err(p), err(p)
    st, _, body = sqlite_cloud.api("GET", f"/security-groups/{default['id']}")
    assert st == 200 and body["security_group"]["name"] == "default", body


def test_e6_port_security_and_address_pairs(sqlite_cloud, member):
    osc = member.osc
    st, _, web = member.api("POST", "/security-groups", {"security_group": {
        "name": "WEB_SERVERS"}})
    assert st == 201, web
    web = web["security_group"]

    net = osc("network", "create", "--disable-port-security", "NetworkWithoutPortSecurity")
    assert net["port_security_enabled"] is False
    assert net["project_id"] == member.project_id

    port = osc("port", "create", "--network", "NetworkWithoutPortSecurity", "TestPort")
    assert port["port_security_enabled"] is False  # inherited from the network
    assert port["status"] == "DOWN"
    # binding:* attributes are admin-only (Neutron's policy): hidden from the member, and
    # `unbound` for the admin (no host yet)
    assert port["binding_vif_type"] is None
    st, _, body = sqlite_cloud.api("GET", f"/ports/{port['id']}")
    assert body["port"]["binding:vif_type"] == "unbound", body
    assert port["fixed_ips"] == []  # the network has no subnet
    assert port["security_group_ids"] == []  # no groups on a port without port security

    # no security group while port security is off
    p = osc("port", "set", "--security-group", "WEB_SERVERS", "TestPort", expect_fail=True)
    assert "400" in err(p) and "Port security must be enabled" in err(p), err(p)
    st, _, body = sqlite_cloud.api("GET", f"/ports/{port['id']}")
    assert body["port"]["security_groups"] == [], body

    osc("port", "set", "--enable-port-security", "TestPort")
    osc("port", "set", "--security-group", "WEB_SERVERS", "TestPort")
    shown = osc("port", "show", "TestPort")
    assert shown["port_security_enabled"] is True
    assert shown["security_group_ids"] == [web["id"]]

    # allowed address pairs: the MAC defaults to the port's; --no-allowed-address clears
    osc("port", "set", "--allowed-address", "ip-address=10.0.0.100", "TestPort")
    shown = osc("port", "show", "TestPort")
    assert shown["allowed_address_pairs"] == [
        {"ip_address": "10.0.0.100", "mac_address": port["mac_address"]}], shown
    osc("port", "set", "--no-allowed-address", "TestPort")
    st, _, body = sqlite_cloud.api("GET", f"/ports/{port['id']}")
    assert body["port"]["allowed_address_pairs"] == [], body

    # a group in use cannot be deleted
    p = osc("security", "group", "delete", "WEB_SERVERS", expect_fail=True)
    assert "409" in err(p) and "in use" in err(p), err(p)
    st, _, _ = sqlite_cloud.api("GET", f"/security-groups/{web['id']}")
    assert st == 200

    # once the port is gone, it can
    st, _, _ = member.api("DELETE", f"/ports/{port['id']}")
    assert st == 204
    st, _, _ = member.api("DELETE", f"/security-groups/{web['id']}")
    assert st == 204
    st, _, _ = member.api("DELETE", f"/networks/{net['id']}")
    assert st == 204
