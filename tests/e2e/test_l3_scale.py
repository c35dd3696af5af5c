"""L3 agent restart with many routers on its host (issue 6 benchmark, correctness in CI).

N routers (NEUTRINO_L3_ROUTERS, 20 in CI, 200 for the benchmark: scripts/bench-l3), each
with a gateway on the external network and an interface on its own project network, are
built by the agent on host h1. A probe behind router 0 has a floating IP that the upstream
namespace pings every 10 ms while the agent is stopped and started again. Asserted: no ping
is lost, the restarted agent changes nothing on the host (it finds everything right), and
every router is still complete afterwards. Reported (BENCH lines): time to build N routers,
and the restarted agent's time until its first pass has verified all of them.

Uses test_l3_dataplane's topology (upstream namespace on physnet "public"); needs root and
FAILS (never skips) when it cannot run. Everything is removed at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from test_dataplane import netns_names, sh, wait_for
from test_l3_dataplane import UPSTREAM_GW, l3  # noqa: F401 - the fixture

ROUTERS = int(os.environ.get("NEUTRINO_L3_ROUTERS", "20"))
EXT_CIDR = "203.0.113.0/24"


def startup_ms(log_text: str) -> int | None:
    m = re.findall(r"start-up sync and sweep done elapsed_ms=(\d+)", log_text)
    return int(m[-1]) if m else None


def router_complete(qr: str) -> bool:
    out = sh("ip", "-n", qr, "-j", "addr", "show", check=False).stdout
    if not out.strip():
        return False
    names = {ln["ifname"] for ln in json.loads(out) if ln.get("addr_info")}
    tables = sh("ip", "netns", "exec", qr, "nft", "list", "tables", check=False).stdout
    return any(n.startswith("qg-") for n in names) and any(n.startswith("qr-") for n in names) \
        and "neutrino-l3" in tables


def test_agent_restart_with_many_routers_loses_nothing(l3):  # noqa: F811 - the fixture
    t, x = l3.t, l3
    pfx = t.pfx
    # Room for N routers, networks and subnets in the admin project.
    probe_net = t.api("POST", "/networks", {"network": {"name": f"{pfx}-quota"}})["network"]
    project_id = probe_net["project_id"]
    t.api("DELETE", f"/networks/{probe_net['id']}")
    t.api("PUT", f"/quotas/{project_id}", {"quota": {
        "router": ROUTERS + 5, "network": ROUTERS + 10, "subnet": ROUTERS + 10,
        "port": 4 * ROUTERS + 50, "floatingip": 10}})
    ext = t.api("POST", "/networks", {"network": {
        "name": f"{pfx}-public", "router:external": True, "provider:network_type": "flat",
        "provider:physical_network": "public"}})["network"]
    t.api("POST", "/subnets", {"subnet": {
        "network_id": ext["id"], "ip_version": 4, "cidr": EXT_CIDR, "gateway_ip": UPSTREAM_GW,
        "enable_dhcp": False,
        "allocation_pools": [{"start": "203.0.113.10", "end": "203.0.113.250"}]}})

    t0 = time.monotonic()
    routers = []
    nets = []
    for i in range(ROUTERS):
        r = t.api("POST", "/routers", {"router": {
            "name": f"{pfx}-r{i}", "external_gateway_info": {"network_id": ext["id"]}}})["router"]
        # Router 0's network has DHCP (its probe needs a lease); the others need none.
        net, sub = t.network(f"n{i}", f"10.{100 + i // 250}.{i % 250}.0/24",
                             enable_dhcp=(i == 0))
        t.api("PUT", f"/routers/{r['id']}/add_router_interface", {"subnet_id": sub["id"]})
        routers.append(r)
        nets.append(net)
    api_s = time.monotonic() - t0
    qrs = [f"qrouter-{r['id']}" for r in routers]
    wait_for(f"{ROUTERS} routers built", lambda: all(router_complete(q) for q in qrs),
             60 + 2 * ROUTERS, 0.5)
    build_s = time.monotonic() - t0
    print(f"BENCH {ROUTERS} routers: API {api_s:.1f} s, built on the host {build_s:.1f} s "
          f"after the first request")

    probe = t.probe(nets[0]["id"], "h1", "s0")
    fip = t.api("POST", "/floatingips", {"floatingip": {
        "floating_network_id": ext["id"], "port_id": probe["port_id"]}})["floatingip"]
    fip_ip = fip["floating_ip_address"]
    wait_for("FIP reachable", lambda: x.ping(x.up, fip_ip), 60, 0.2)

    agent = t.agents["h1"]
    ping = subprocess.Popen(["ip", "netns", "exec", x.up, "ping", "-i", "0.01", "-W", "1",
                             fip_ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        time.sleep(1)
        agent.stop()
        time.sleep(1)
        log_before = agent.log_path.read_text(errors="replace")
        t1 = time.monotonic()
        agent.start()
        wait_for("restarted agent's first pass",
                 lambda: startup_ms(agent.log_path.read_text(errors="replace")[
                     len(log_before):]) is not None, 120 + ROUTERS, 0.2)
        restart_s = time.monotonic() - t1
        time.sleep(1)
    finally:
        ping.send_signal(2)
        out, _ = ping.communicate(timeout=10)
    after = agent.log_path.read_text(errors="replace")[len(log_before):]
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    print(f"BENCH agent restart with {ROUTERS} routers: first pass verified everything in "
          f"{startup_ms(after)} ms ({restart_s:.1f} s from process start); ping every 10 ms: "
          f"{sent} sent, {sent - received} lost")
    assert sent > 200, out
    assert received == sent, f"{sent - received} of {sent} pings lost during the restart"
    # Nothing was rebuilt: no router was plugged or created again.
    for what in ("creating router namespace", "plugging router port", "unplugging router port",
                 "removing router namespace"):
        assert what not in after, f"restarted agent logged '{what}':\n{after[-3000:]}"
    assert all(router_complete(q) for q in qrs)

    # Clean up through the API; the agent removes every namespace.
    t.api("PUT", f"/floatingips/{fip['id']}", {"floatingip": {"port_id": None}})
    t.api("DELETE", f"/floatingips/{fip['id']}")
    t.probe_delete(probe["name"])
    for r, net in zip(routers, nets):
        sub_id = t.api("GET", f"/subnets?network_id={net['id']}")["subnets"][0]["id"]
        t.api("PUT", f"/routers/{r['id']}/remove_router_interface", {"subnet_id": sub_id})
        t.api("DELETE", f"/routers/{r['id']}")
        t.api("DELETE", f"/networks/{net['id']}")
    wait_for("router namespaces removed", lambda: not set(qrs) & set(netns_names()),
             60 + ROUTERS, 0.5)
