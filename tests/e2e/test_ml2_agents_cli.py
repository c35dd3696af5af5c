"""ML2 provider networks, MTU, agents and DHCP availability zones with the real `openstack`
CLI (FEATURES §18-§20; acceptance scenarios E1, E2, E16 step 4, E17).

SQLite all-in-one only: `sqlite_cloud` for the network scenarios, dedicated all-in-ones
(`all_in_one`, with the configuration each scenario needs) for the agent ones. Agents are
simulated with plain HTTP through the agent sync protocol (docs/agent-protocol.md), as the
`neutrino-agent` service user."""

from __future__ import annotations

import threading
import time


from conftest import Http, uniq


def err(p) -> str:
    return (p.stderr or "") + (p.stdout or "")


# --------------------------------------------------------------------------- E2, E17


def test_e2_provider_networks(sqlite_cloud):
    cloud, osc = sqlite_cloud, sqlite_cloud.osc
    created: list[str] = []
    member = cloud.new_account("member")
    try:
        # step 1: a shared flat network on physnet1
        flat = osc("network", "create", "--provider-network-type", "flat",
                   "--provider-physical-network", "physnet1", "--share", "MyFlatNetwork")
        created.append(flat["id"])
        assert flat["shared"] is True
        assert flat["provider:network_type"] == "flat"
        assert flat["provider:physical_network"] == "physnet1"
        assert flat["provider:segmentation_id"] is None
        assert flat["mtu"] == 1500
        assert flat["router:external"] is False  # "Internal" in table form
        assert flat["status"] == "ACTIVE"

        # step 2: one flat network per physical network
        p = osc("network", "create", "--provider-network-type", "flat",
                "--provider-physical-network", "physnet1", "MyFlatNetwork2", expect_fail=True)
        assert "Conflict" in err(p) and "409" in err(p), err(p)

        # step 3: VLANs 300 and 301 on physnet1 (outside the project ranges: admins may)
        vlans = []
        for seg, name in ((300, "MyVLANNetwork"), (301, "MyVLANNetwork2")):
            n = osc("network", "create", "--provider-network-type", "vlan",
                    "--provider-physical-network", "physnet1", "--provider-segment", seg, name)
            created.append(n["id"])
            vlans.append(n)
            assert n["shared"] is False
            assert n["provider:network_type"] == "vlan"
            assert n["provider:segmentation_id"] == seg
            assert n["mtu"] == 1500
        # the same VLAN twice is a conflict too (checked over HTTP: not a scenario step)
        st, _, body = cloud.api("POST", "/networks", {"network": {
            "name": "dup", "provider:network_type": "vlan",
            "provider:physical_network": "physnet1", "provider:segmentation_id": 300}})
        assert st == 409, body

        # step 4: a local network; the list shows all four without subnets
        local = osc("network", "create", "--provider-network-type", "local", "MyLocal")
        created.append(local["id"])
        assert local["provider:network_type"] == "local"
        assert local["provider:segmentation_id"] is None
        listed = {n["ID"]: n for n in osc("network", "list")}
        for nid in created:
            assert nid in listed and listed[nid]["Subnets"] == [], listed

        # step 5: a member sees the shared network without provider fields and may not
        # create provider networks
        shown = member.osc("network", "show", "MyFlatNetwork")
        assert shown["id"] == flat["id"]
        for f in ("provider:network_type", "provider:physical_network",
                  "provider:segmentation_id"):
            assert shown.get(f) is None, (f, shown)
        st, _, body = member.api("GET", f"/networks/{flat['id']}")
        assert st == 200 and "provider:physical_network" not in body["network"], body
        p = member.osc("network", "create", "--provider-network-type", "vlan",
                       "--provider-physical-network", "physnet1", "--provider-segment", "302",
                       uniq("MemberVLAN"), expect_fail=True)
        assert "403" in err(p) and "disallowed by policy" in err(p), err(p)

        # step 6: renaming keeps the ID; deleting two at once
        osc("network", "set", "--name", "MyVLANNetworkRenamed", "MyVLANNetwork")
        st, _, body = cloud.api("GET", f"/networks/{vlans[0]['id']}")
        assert st == 200 and body["network"]["name"] == "MyVLANNetworkRenamed", body
        osc("network", "delete", "MyVLANNetworkRenamed", "MyVLANNetwork2")
        for n in vlans:
            st, _, _ = cloud.api("GET", f"/networks/{n['id']}")
            assert st == 404
    finally:
        for nid in created:
            cloud.api("DELETE", f"/networks/{nid}")
        cloud.delete_account(member)


def test_e17_vxlan_project_network_mtu(sqlite_cloud):
    """A project network of the all-in-one is VXLAN: MTU 1500 - 50 = 1450."""
    net = sqlite_cloud.osc("network", "create", uniq("vxlan"))
    try:
        assert net["provider:network_type"] == "vxlan"
        assert net["mtu"] == 1450
    finally:
        sqlite_cloud.api("DELETE", f"/networks/{net['id']}")


# --------------------------------------------------------------------------- agents


class Agents:
    """Simulated host agents: reports (heartbeats) over the agent protocol, and a background
    thread that keeps chosen agents alive."""

    def __init__(self, cloud, interval=0.5):
        self.cloud = cloud
        self.token = cloud.agent_token()
        self.interval = interval
        self.beating: dict[tuple[str, str], dict] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def report(self, body: dict, start_flag=False) -> dict:
        st, _, reply = Http.request("POST", self.cloud.api_url + "/agent/v1/report",
                                    dict(body, start_flag=start_flag), token=self.token)
        assert st in (200, 201), (st, reply)
        return reply

    def add(self, host, agent_type, binary, **extra) -> dict:
        """Register an agent (start_flag) and keep it alive."""
        body = dict(host=host, agent_type=agent_type, binary=binary, **extra)
        reply = self.report(body, start_flag=True)
        with self._lock:
            self.beating[(agent_type, host)] = body
        return reply["agent"]

    def silence(self, agent_type, host):
        with self._lock:
            self.beating.pop((agent_type, host), None)

    def _run(self):
        while not self._stop.wait(self.interval):
            with self._lock:
                bodies = list(self.beating.values())
            for b in bodies:
                try:
                    st, _, reply = Http.request("POST", self.cloud.api_url + "/agent/v1/report",
                                                b, token=self.token, timeout=10)
                    if st not in (200, 201):
                        self.errors.append(f"{st} {reply}")
                except OSError as e:  # the server is going away at the end
                    self.errors.append(str(e))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def lb_agent(host, ip):
    return dict(agent_type="Linux bridge agent", binary="neutron-linuxbridge-agent",
                configurations={"tunnel_types": ["vxlan"], "tunneling_ip": ip,
                                "interface_mappings": {"physnet1": "eth1"}})


def table_rows(text: str) -> list[dict]:
    """Parse the CLI's default table output into dicts keyed by the header."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|"))))
            for ln in lines[1:]]


def test_e1_agents_check_in_and_go_down(all_in_one):
    """E1 steps 3-5: agents check in (`:-)`, UP), `--agent-type` filters, an agent whose
    heartbeats stop for longer than agent_down_time shows `XXX`."""
    cloud = all_in_one("[DEFAULT]\nagent_down_time = 3\n")
    osc = cloud.osc
    with Agents(cloud) as agents:
        dhcp = agents.add("controller01", "DHCP agent", "neutron-dhcp-agent",
                          availability_zone="nova", configurations={"dhcp_driver": "dnsmasq"})
        assert dhcp["alive"] is True and dhcp["availability_zone"] == "nova"
        agents.add("controller01", "Metadata agent", "neutron-metadata-agent")
        agents.add("controller01", **lb_agent("controller01", "10.0.0.11"))
        agents.add("compute01", **lb_agent("compute01", "10.0.0.12"))

        rows = osc("network", "agent", "list")
        got = sorted((r["Agent Type"], r["Host"], r["Availability Zone"], r["Alive"],
                      r["State"], r["Binary"]) for r in rows)
        assert got == [
            ("DHCP agent", "controller01", "nova", True, True, "neutron-dhcp-agent"),
            ("Linux bridge agent", "compute01", None, True, True, "neutron-linuxbridge-agent"),
            ("Linux bridge agent", "controller01", None, True, True,
             "neutron-linuxbridge-agent"),
            ("Metadata agent", "controller01", None, True, True, "neutron-metadata-agent"),
        ], rows

        rows = osc("network", "agent", "list", "--agent-type", "dhcp")
        assert [(r["ID"], r["Host"], r["Availability Zone"]) for r in rows] == [
            (dhcp["id"], "controller01", "nova")], rows

        # compute01's L2 agent stops reporting; after agent_down_time it is XXX
        agents.silence("Linux bridge agent", "compute01")
        time.sleep(4)
        table = osc("network", "agent", "list", "-f", "table", json_output=False)
        state = {(r["Agent Type"], r["Host"]): (r["Alive"], r["State"])
                 for r in table_rows(table)}
        assert state == {
            ("DHCP agent", "controller01"): (":-)", "UP"),
            ("Metadata agent", "controller01"): (":-)", "UP"),
            ("Linux bridge agent", "controller01"): (":-)", "UP"),
            ("Linux bridge agent", "compute01"): ("XXX", "UP"),
        }, table
        # ... and it is revived by its next report
        reply = agents.report(dict(host="compute01", **lb_agent("compute01", "10.0.0.12")))
        assert reply["status"] == "revived" and reply["agent"]["alive"] is True, reply
        assert agents.errors == []


def test_e16_dhcp_availability_zones(all_in_one):
    """E16 step 4: with dhcp_agents_per_network = 2 and hints AZ1, AZ2, network01 is hosted
    by one DHCP agent in each zone (not by the two AZ1 agents)."""
    cloud = all_in_one("[DEFAULT]\ndhcp_agents_per_network = 2\n")
    osc = cloud.osc
    with Agents(cloud, interval=5) as agents:
        hosts = {"network01": "AZ1", "network01b": "AZ1", "network02": "AZ2"}
        for i, (host, az) in enumerate(sorted(hosts.items())):
            agents.add(host, "DHCP agent", "neutron-dhcp-agent", availability_zone=az)
            agents.add(host, **lb_agent(host, f"10.0.0.{21 + i}"))

        net = osc("network", "create", "network01", "--availability-zone-hint", "AZ1",
                  "--availability-zone-hint", "AZ2")
        try:
            assert sorted(net["availability_zone_hints"]) == ["AZ1", "AZ2"]
            assert net["availability_zones"] == []  # not scheduled before it has a subnet
            st, _, body = cloud.api("POST", "/subnets", {"subnet": {
                "network_id": net["id"], "cidr": "10.10.0.0/24", "ip_version": 4}})
            assert st == 201, body

            rows = osc("network", "agent", "list", "--network", "network01")
            got = sorted((r["Host"], r["Agent Type"], r["Availability Zone"]) for r in rows)
            assert len(got) == 2, rows
            assert got[0][1:] == ("DHCP agent", "AZ1") and got[0][0] in ("network01",
                                                                        "network01b"), rows
            assert got[1] == ("network02", "DHCP agent", "AZ2"), rows

            zones = osc("availability", "zone", "list", "--network")
            assert {(z["Zone Name"], z["Zone Status"]) for z in zones} == {
                ("AZ1", "available"), ("AZ2", "available")}, zones
            st, _, body = cloud.api("GET", f"/networks/{net['id']}")
            assert sorted(body["network"]["availability_zones"]) == ["AZ1", "AZ2"], body
            # each scheduled agent got its DHCP port on the subnet
            st, _, body = cloud.api(
                "GET", f"/ports?network_id={net['id']}&device_owner=network:dhcp")
            assert sorted(p["binding:host_id"] for p in body["ports"]) == sorted(
                r["Host"] for r in rows), body
        finally:
            st, _, body = cloud.api("GET", f"/ports?network_id={net['id']}")
            for p in (body or {}).get("ports", []) if st == 200 else []:
                cloud.api("DELETE", f"/ports/{p['id']}")
            cloud.api("DELETE", f"/networks/{net['id']}")
        assert agents.errors == []
