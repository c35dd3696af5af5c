"""openstacksdk against neutrino: the library most tools (Ansible, Terraform's helpers, OSC
itself) are built on. Runs once per backend."""

from __future__ import annotations

import ipaddress

import pytest
from openstack import exceptions as sdk_exc

from conftest import uniq


@pytest.fixture
def sdk_net(sdk):
    net = sdk.network.create_network(name=uniq("sdknet"), description="from the sdk")
    yield net
    for p in sdk.network.ports(network_id=net.id):
        sdk.network.delete_port(p, ignore_missing=True)
    for s in sdk.network.subnets(network_id=net.id):
        sdk.network.delete_subnet(s, ignore_missing=True)
    sdk.network.delete_network(net, ignore_missing=True)


def test_sdk_network_crud(sdk, sdk_net):
    assert sdk_net.id and sdk_net.description == "from the sdk"
    assert sdk_net.is_admin_state_up is True
    assert sdk_net.status == "ACTIVE"
    assert sdk_net.project_id == sdk.current_project_id
    found = sdk.network.find_network(sdk_net.name)
    assert found is not None and found.id == sdk_net.id
    name0, rev0 = sdk_net.name, sdk_net.revision_number
    upd = sdk.network.update_network(sdk_net.id, name=name0 + "-x", is_admin_state_up=False)
    assert upd.name == name0 + "-x" and upd.is_admin_state_up is False
    assert upd.revision_number > rev0
    got = sdk.network.get_network(sdk_net.id)
    assert got.name == upd.name
    tmp = sdk.network.create_network(name=uniq("tmp"))
    sdk.network.delete_network(tmp)
    with pytest.raises(sdk_exc.NotFoundException):
        sdk.network.get_network(tmp.id)
    assert sdk.network.find_network(tmp.id) is None


def test_sdk_subnet_and_ports(sdk, sdk_net):
    sub = sdk.network.create_subnet(network_id=sdk_net.id, ip_version=4,
                                    cidr="10.120.0.0/24", name=uniq("sdksub"),
                                    dns_nameservers=["1.1.1.1"])
    assert sub.gateway_ip == "10.120.0.1"
    assert sub.allocation_pools == [{"start": "10.120.0.2", "end": "10.120.0.254"}]
    assert sub.is_dhcp_enabled is True
    assert sub.dns_nameservers == ["1.1.1.1"]

    p1 = sdk.network.create_port(network_id=sdk_net.id, name=uniq("p1"),
                                 fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.120.0.20"}])
    assert p1.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.120.0.20"}]
    p2 = sdk.network.create_port(network_id=sdk_net.id, name=uniq("p2"))
    ip2 = p2.fixed_ips[0]["ip_address"]
    assert ipaddress.ip_address(ip2) in ipaddress.ip_network("10.120.0.0/24")
    assert ip2 != "10.120.0.20"
    assert p1.mac_address != p2.mac_address

    assert {p.id for p in sdk.network.ports(network_id=sdk_net.id)} == {p1.id, p2.id}
    hits = list(sdk.network.ports(fixed_ips=["ip_address=10.120.0.20"]))
    assert [p.id for p in hits] == [p1.id]
    hits = list(sdk.network.ports(name=p2.name))
    assert [p.id for p in hits] == [p2.id]

    with pytest.raises(sdk_exc.ConflictException):
        sdk.network.create_port(network_id=sdk_net.id,
                                fixed_ips=[{"ip_address": "10.120.0.20"}])
    # fixed IP outside the subnet is a bad request
    with pytest.raises(sdk_exc.BadRequestException):
        sdk.network.create_port(network_id=sdk_net.id,
                                fixed_ips=[{"subnet_id": sub.id, "ip_address": "10.121.0.5"}])

    upd = sdk.network.update_port(p2, fixed_ips=[{"subnet_id": sub.id,
                                                  "ip_address": "10.120.0.30"}])
    assert upd.fixed_ips == [{"subnet_id": sub.id, "ip_address": "10.120.0.30"}]
    # the old address was released: it can be taken explicitly
    p3 = sdk.network.create_port(network_id=sdk_net.id,
                                 fixed_ips=[{"subnet_id": sub.id, "ip_address": ip2}])
    assert p3.fixed_ips[0]["ip_address"] == ip2

    # a subnet with ports cannot be deleted
    with pytest.raises(sdk_exc.ConflictException):
        sdk.network.delete_subnet(sub)
    # nor can the network
    with pytest.raises(sdk_exc.ConflictException):
        sdk.network.delete_network(sdk_net)


def test_sdk_pagination_and_sorting(sdk):
    name = uniq("page")
    nets = [sdk.network.create_network(name=name) for _ in range(5)]
    try:
        ids = {n.id for n in nets}
        # the SDK follows the `next` links page by page
        listed = list(sdk.network.networks(name=name, limit=2, paginated=True))
        assert len(listed) == 5 and {n.id for n in listed} == ids
        # raw pages
        resp = sdk.network.get(f"/networks?name={name}&limit=2&sort_key=id&sort_dir=asc")
        assert resp.status_code == 200
        body = resp.json()
        assert [n["id"] for n in body["networks"]] == sorted(ids)[:2]
        links = {link["rel"]: link["href"] for link in body.get("networks_links", [])}
        assert "next" in links, body
        page2 = sdk.network.get(links["next"]).json()
        assert [n["id"] for n in page2["networks"]] == sorted(ids)[2:4]
        desc = list(sdk.network.networks(name=name, sort_key="id", sort_dir="desc"))
        assert [n.id for n in desc] == sorted(ids, reverse=True)
        # marker
        after = list(sdk.network.networks(name=name, sort_key="id", sort_dir="asc",
                                          marker=sorted(ids)[2], limit=10))
        assert [n.id for n in after] == sorted(ids)[3:]
        # fields
        resp = sdk.network.get(f"/networks?name={name}&fields=id&fields=name")
        assert all(set(n) == {"id", "name"} for n in resp.json()["networks"])
    finally:
        for n in nets:
            sdk.network.delete_network(n, ignore_missing=True)


def test_sdk_tags(sdk, sdk_net):
    sdk.network.set_tags(sdk_net, ["red", "blue"])
    assert sorted(sdk.network.get_network(sdk_net.id).tags) == ["blue", "red"]
    hits = {n.id for n in sdk.network.networks(tags="red,blue")}
    assert sdk_net.id in hits
    assert sdk_net.id not in {n.id for n in sdk.network.networks(not_tags="red")}
    sdk.network.set_tags(sdk_net, [])
    assert sdk.network.get_network(sdk_net.id).tags == []
