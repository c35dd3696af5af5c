"""Metadata end-to-end (FEATURES E5): instances (probes) read their metadata from
169.254.169.254 through the agent's haproxy and metadata proxy, as on Neutron + Nova.

Topology (names carry the session prefix `nt<4 hex>`; reuses test_dataplane's Topology):

    <pfx>-h1 (host, agent l2+dhcp+l3, enable_isolated_metadata = true)
       qrouter-<r>: qr- 10.63.0.1, haproxy on 169.254.169.254:80 (on lo)  ← probes a, b
       qdhcp-<iso>: ns- 10.64.0.2, haproxy on 169.254.169.254:80 (on lo)  ← probe c
       every haproxy → <state>/metadata_proxy (unix socket) → agent → server /metadata

The server is `neutrino all-in-one --no-agent`; its metadata secret (<state>/metadata-secret)
is given to the agent as metadata_proxy_shared_secret. Probes run busybox wget.

Needs root; FAILS (never skips) when it cannot run. Everything is removed at the end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from conftest import Http, neutrino_bin
from test_dataplane import (Agent, Topology, finish_topology, netns_names, require_root, sh,
                            wait_for)

ROUTED_CIDR = "10.63.0.0/24"
ISOLATED_CIDR = "10.64.0.0/24"
MD = "http://169.254.169.254"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDp9ktest neutrino@e5"


def haproxies(workdir: Path) -> dict[str, str]:
    """Our haproxy processes: pid → command line."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
        except (OSError, IndexError):
            continue
        cmd = raw.replace(b"\0", b" ").decode(errors="replace")
        if state != "Z" and cmd.startswith("haproxy") and str(workdir) in cmd:
            found[pid] = cmd
    return found


def lo_addrs(ns: str) -> list[str]:
    out = sh("ip", "-n", ns, "-j", "addr", "show", "dev", "lo", check=False).stdout
    return [a["local"] for i in json.loads(out or "[]") for a in i.get("addr_info", [])]


class Md:
    def __init__(self, t: Topology):
        self.t = t
        self.secret = ""
        self.agent = None

    @property
    def md_dir(self) -> Path:
        return self.agent.dir / "state" / "metadata"

    def get(self, probe, path, *headers, check=True):
        """GET the metadata path from the probe named `probe`."""
        args = ["busybox", "wget", "-qO-"]
        for h in headers:
            args += ["--header", h]
        p = self.t.probe_exec(probe, *args, MD + path, check=False, timeout=30)
        if check and p.returncode != 0:
            raise AssertionError(f"wget {path} from {probe} failed ({p.returncode}): "
                                 f"{p.stderr}{p.stdout}")
        return p

    def probe_with_data(self, net_id, name, hostname, key_file, user_data_file):
        """`neutrino probe create` with the instance-data flags (--hostname, --public-key,
        --user-data)."""
        t = self.t
        full = f"{t.pfx}{name}"
        t.probes.append(full)
        p = sh(neutrino_bin(), "probe", "--state-dir", str(t.probe_dir), "create",
               "--network", net_id, "--host", "h1", "--host-netns", t.host_ns("h1"),
               "--name", full, "--timeout", "90", "--hostname", hostname,
               "--public-key", f"k1={key_file}", "--user-data", str(user_data_file),
               env=t.env(), check=False, timeout=120)
        if p.returncode != 0:
            raise AssertionError(f"probe create {full} failed:\n{p.stderr}{p.stdout}\n"
                                 + t.agent_logs())
        fields = p.stdout.strip().split("\t")
        return {"name": full, "port_id": fields[1], "address": fields[5]}

    def instance_data(self, instance_id, **doc):
        self.t.api("PUT", f"/instance-metadata/{instance_id}",
                   {"instance_metadata": doc}, expect=(200, 201))


@pytest.fixture(scope="module")
def md():
    require_root()
    if not shutil.which("haproxy"):
        pytest.fail("haproxy not found: run scripts/setup", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="neutrino-md-"))
    t = Topology(workdir)
    x = Md(t)
    routers = []
    try:
        t.build(hosts=("h1",))
        t.start_server()
        secret_file = t.state / "metadata-secret"
        wait_for("metadata secret", lambda: secret_file.exists(), 20)
        x.secret = secret_file.read_text().strip()
        a = Agent(t, "h1", "l2,dhcp,l3")
        a.conf.write_text(a.conf.read_text().replace(
            "[DEFAULT]\n",
            f"[DEFAULT]\nmetadata_proxy_shared_secret = {x.secret}\n"
            "enable_isolated_metadata = true\n", 1))
        t.agents["h1"] = a
        x.agent = a
        a.start()

        def alive():
            agents = t.api("GET", "/agents?host=h1")["agents"]
            return {y["agent_type"] for y in agents if y["alive"]} >= {
                "Linux bridge agent", "DHCP agent", "L3 agent", "Metadata agent"}
        wait_for("agents alive", alive, 60, 0.5)
        yield x
    finally:
        out = sh("ip", "-n", t.host_ns("h1"), "-j", "netns", "list", check=False).stdout \
            if t.hosts else ""
        routers = [n["name"] for n in json.loads(out or "[]")
                   if n.get("id") is not None and n["name"].startswith("qrouter-")]
        errors = t.teardown()
        for pid in haproxies(workdir):
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        for n in routers:
            if n in netns_names():
                sh("ip", "netns", "del", n, check=False)
        finish_topology(t, workdir, errors)


@pytest.fixture(autouse=True)
def _agent_logs_on_failure(request, md):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(md.t.agent_logs())


def test_e5_metadata_through_the_router(md):
    t = md.t
    net, sub = t.network("routed", ROUTED_CIDR)
    router = t.api("POST", "/routers", {"router": {"name": f"{t.pfx}-r"}})["router"]
    t.api("PUT", f"/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    qr = f"qrouter-{router['id']}"

    # Instance data through `probe create`'s flags (a) and the API (c, the other test).
    key_file, ud_file = t.workdir / "k1.pub", t.workdir / "user-data"
    key_file.write_text(PUBKEY + "\n")
    ud_file.write_text("#!/bin/sh\necho hello-e5\n")
    a = md.probe_with_data(net["id"], "a", "alpha", key_file, ud_file)
    b = t.probe(net["id"], "h1", "b")
    a_id, b_id = f"probe-{a['name']}", f"probe-{b['name']}"

    # The router's haproxy: in its namespace, on the metadata address of its lo.
    wait_for("haproxy in the router namespace", lambda: any(
        qr in c for c in haproxies(t.workdir).values()), 60, 0.5)
    assert "169.254.169.254" in lo_addrs(qr)

    doc = json.loads(wait_for("meta_data.json", lambda: md.get(
        a["name"], "/openstack/latest/meta_data.json").stdout, 60, 0.5))
    assert doc["uuid"] == a_id, doc
    assert doc["hostname"].split(".")[0] == "alpha", doc
    assert PUBKEY in json.dumps(doc.get("public_keys", {})), doc
    assert md.get(a["name"], "/latest/meta-data/local-ipv4").stdout.strip() == a["address"]
    assert "hello-e5" in md.get(a["name"], "/openstack/latest/user_data").stdout
    # An instance without a document still gets its own identity.
    doc_b = json.loads(md.get(b["name"], "/openstack/latest/meta_data.json").stdout)
    assert doc_b["uuid"] == b_id, doc_b
    assert md.get(b["name"], "/latest/meta-data/local-ipv4").stdout.strip() == b["address"]

    # Figures: a request through haproxy, proxy and service, net of `probe exec` itself.
    n = 10
    t0 = time.monotonic()
    for _ in range(n):
        t.probe_exec(b["name"], "true")
    base = (time.monotonic() - t0) / n
    t0 = time.monotonic()
    for _ in range(n):
        md.get(b["name"], "/latest/meta-data/instance-id")
    per = (time.monotonic() - t0) / n
    print(f"metadata GET via qrouter: {per * 1000:.1f} ms per request "
          f"({(per - base) * 1000:.1f} ms beyond `probe exec`)")

    # Forged identity headers are stripped by haproxy: b still gets b's data.
    forged = md.get(b["name"], "/openstack/latest/meta_data.json",
                    f"X-Instance-ID: {a_id}", "X-Tenant-ID: admin",
                    f"X-Neutron-Network-ID: {net['id']}",
                    f"X-Instance-ID-Signature: {'0' * 64}",
                    f"X-Forwarded-For: {a['address']}").stdout
    assert json.loads(forged)["uuid"] == b_id, forged

    # An agent restart keeps the haproxy (adopted from its pid file, not restarted), and
    # metadata flows again as soon as the new agent listens on the socket.
    before = {p for p, c in haproxies(t.workdir).items() if qr in c}
    md.agent.stop()
    t0 = time.monotonic()
    md.agent.start()
    wait_for("metadata after an agent restart", lambda: md.get(
        a["name"], "/latest/meta-data/local-ipv4").stdout.strip() == a["address"], 60, 0.2)
    print(f"metadata back {time.monotonic() - t0:.2f} s after the agent restarted")
    assert {p for p, c in haproxies(t.workdir).items() if qr in c} == before
    log = md.agent.log_path.read_text(errors="replace")
    assert log.count("metadata haproxy netns=" + qr) == 1, "haproxy was restarted"

    # The service itself refuses requests that are not signed with the secret.
    url = t.server.api_url + "/metadata/openstack/latest/meta_data.json"
    project = t.api("GET", f"/ports/{a['port_id']}")["port"]["project_id"]
    base = {"X-Instance-ID": a_id, "X-Tenant-ID": project, "X-Forwarded-For": a["address"]}
    good = hmac.new(md.secret.encode(), a_id.encode(), hashlib.sha256).hexdigest()
    for sig in (None, "0" * 64, hmac.new(b"wrong", a_id.encode(), hashlib.sha256).hexdigest()):
        h = dict(base, **({"X-Instance-ID-Signature": sig} if sig else {}))
        st, _, body = Http.request("GET", url, None, headers=h)
        assert st == 403, (sig, st, body)
    st, _, body = Http.request("GET", url, None,
                               headers=dict(base, **{"X-Instance-ID-Signature": good}))
    assert st == 200, body

    # Deleting the router leaves no haproxy, configuration or address behind.
    for p in (a, b):
        t.probe_delete(p["name"])
    t.api("PUT", f"/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})
    t.api("DELETE", f"/routers/{router['id']}")
    wait_for("router haproxy gone", lambda: not any(
        qr in c for c in haproxies(t.workdir).values()), 60, 0.5)
    wait_for("router metadata files gone", lambda: not (md.md_dir / qr).exists(), 30, 0.5)
    wait_for("router namespace gone", lambda: qr not in netns_names(), 30, 0.5)


def test_e5_metadata_on_an_isolated_network(md):
    t = md.t
    net, sub = t.network("isolated", ISOLATED_CIDR)
    qd = f"qdhcp-{net['id']}"
    c = t.probe(net["id"], "h1", "c")
    c_id = f"probe-{c['name']}"
    md.instance_data(c_id, hostname="gamma")

    # The DHCP namespace's haproxy (no router on this network); the probe got the
    # 169.254.169.254 route to the DHCP port through option 121.
    wait_for("haproxy in the DHCP namespace", lambda: any(
        qd in x for x in haproxies(t.workdir).values()), 60, 0.5)
    assert "169.254.169.254" in lo_addrs(qd)
    routes = t.probe_exec(c["name"], "ip", "route").stdout
    assert "169.254.169.254" in routes, routes
    doc = json.loads(wait_for("meta_data.json", lambda: md.get(
        c["name"], "/openstack/latest/meta_data.json").stdout, 60, 0.5))
    assert doc["uuid"] == c_id, doc
    assert doc["hostname"].split(".")[0] == "gamma", doc
    assert md.get(c["name"], "/latest/meta-data/local-ipv4").stdout.strip() == c["address"]
    forged = md.get(c["name"], "/openstack/latest/meta_data.json", "X-Instance-ID: someone-else",
                    "X-Neutron-Router-ID: 00000000-0000-0000-0000-000000000000").stdout
    assert json.loads(forged)["uuid"] == c_id, forged

    # A router on the subnet's gateway: the network is no longer isolated; its DHCP
    # namespace keeps running DHCP but loses the haproxy and the metadata address.
    router = t.api("POST", "/routers", {"router": {"name": f"{t.pfx}-r2"}})["router"]
    t.api("PUT", f"/routers/{router['id']}/add_router_interface", {"subnet_id": sub["id"]})
    wait_for("DHCP haproxy stopped", lambda: not any(
        qd in x for x in haproxies(t.workdir).values()), 60, 0.5)
    wait_for("metadata address removed", lambda: "169.254.169.254" not in lo_addrs(qd), 30, 0.5)
    assert qd in netns_names()
    assert not (md.md_dir / qd).exists()
    t.api("PUT", f"/routers/{router['id']}/remove_router_interface", {"subnet_id": sub["id"]})
    t.api("DELETE", f"/routers/{router['id']}")
    wait_for("DHCP haproxy back", lambda: any(
        qd in x for x in haproxies(t.workdir).values()), 60, 0.5)

    # Deleting the network: no haproxy, files or namespace left.
    t.probe_delete(c["name"])
    for p in t.api("GET", f"/ports?network_id={net['id']}")["ports"]:
        t.api("DELETE", f"/ports/{p['id']}", expect=(204, 404))
    t.api("DELETE", f"/networks/{net['id']}")
    wait_for("DHCP haproxy gone", lambda: not any(
        qd in x for x in haproxies(t.workdir).values()), 60, 0.5)
    wait_for("DHCP metadata files gone", lambda: not (md.md_dir / qd).exists(), 30, 0.5)
    wait_for("DHCP namespace gone", lambda: qd not in netns_names(), 30, 0.5)
