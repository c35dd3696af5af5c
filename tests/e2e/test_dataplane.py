"""Dataplane end-to-end: `neutrino agent` (L2 + DHCP) and `neutrino probe` on test "hosts".

Topology (all names carry a per-session prefix `nt<4 hex>`; nothing touches eth0):

    root namespace ── veth <pfx>r (198.18.N.1/24, the server's address)
                         │
      <pfx>-ul namespace: bridge "ulbr" (the underlay)
         │            │            │
      <pfx>-h1     <pfx>-h2     <pfx>-h3     host namespaces, "ul0" = 198.18.N.11/.12/.13
      agent h1     agent h2     agent h3     (`ip netns exec <pfx>-hN neutrino agent --host hN`)
      l2+dhcp      l2           l2

The server (`neutrino all-in-one --no-agent`) listens on 198.18.N.1 in the root namespace,
reachable from the hosts through the underlay. 198.18.0.0/15 is the benchmarking range
(RFC 2544): never routed, so the test addresses exist only inside these namespaces.
Probes are namespaces `probe-<pfx>...` whose outer veth end lives in a host namespace
(`probe create --host hN --host-netns <pfx>-hN`).

These tests need root (namespaces, bridges, VXLAN). Without it they FAIL, never skip. The
VLAN test reports itself skipped by name when the kernel has no 802.1q (this one has none).
Everything is removed at the end, also on failure: agents and their dnsmasq children,
probes, namespaces, the root veth.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import Http, Server, free_port, get_token, neutrino_bin

RUN_TIMEOUT = 120


def sh(*args, check=True, timeout=RUN_TIMEOUT, env=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"`{' '.join(map(str, args))}` failed ({p.returncode}):\n"
                             f"{p.stderr}{p.stdout}")
    return p


def require_root():
    if os.geteuid() != 0:
        pytest.fail("dataplane tests need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); they never skip",
                    pytrace=False)
    for tool in ("ip", "bridge", "dnsmasq", "busybox", "ping"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} not found: run scripts/setup", pytrace=False)


def netns_names() -> list[str]:
    out = sh("ip", "-j", "netns", "list").stdout.strip()
    return [n["name"] for n in json.loads(out)] if out else []


def links(ns: str) -> list[dict]:
    out = sh("ip", "-n", ns, "-j", "-d", "link", "show").stdout.strip()
    return json.loads(out) if out else []


def wait_for(what, fn, timeout=60.0, interval=0.2):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as e:  # keep waiting on transient failures
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Agent:
    def __init__(self, topo: "Topology", host: str, roles: str):
        self.topo, self.host, self.roles = topo, host, roles
        self.ns = topo.host_ns(host)
        self.dir = topo.workdir / host
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "agent.ini"
        self.conf.write_text(
            "[DEFAULT]\n"
            f"state_path = {self.dir / 'state'}\n"
            "dhcp_lease_duration = 86400\n"
            "[agent]\nreport_interval = 10\npolling_interval = 2\n"
            f"[vxlan]\nenable_vxlan = true\nlocal_ip = {topo.host_ip(host)}\n"
            "l2_population = true\narp_responder = true\n"
            "[securitygroup]\nfirewall_driver = noop\n"
            "[neutrino]\n"
            f"agent_roles = {roles}\n"
            f"identity_url = {topo.server.identity_url}/v3\n"
            f"server_url = {topo.server.api_url}\n"
            f"password_file = {topo.state / 'agent-password'}\n")
        self.log_path = self.dir / "agent.log"
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self._log = open(self.log_path, "ab")
        env = dict(os.environ, NEUTRINO_LOG=os.environ.get("NEUTRINO_AGENT_LOG", "info"),
                   NO_COLOR="1")
        # nsenter --net, not `ip netns exec`: the latter also gives the process a private
        # (slave) mount tree, so the namespaces the agent names under /run/netns would be
        # invisible to the rest of the machine and to the agent's own successor.
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", neutrino_bin(), "agent", "--host", self.host,
             "--config-file", str(self.conf)],
            stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            # SIGTERM to the agent process only (not its group): dnsmasq must survive.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def tail(self, n=40):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class Topology:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.pfx = "nt" + uuid.uuid4().hex[:4]
        self.net = self._free_test_subnet()
        self.ul = f"{self.pfx}-ul"
        self.root_dev = f"{self.pfx}r"
        self.hosts: list[str] = []
        self.agents: dict[str, Agent] = {}
        self.server: Server | None = None
        self.state = workdir / "state"
        self.probe_dir = workdir / "probes"
        self.probes: list[str] = []

    @staticmethod
    def _free_test_subnet():
        """A 198.18.N.0/24 no other test session on this machine routes (xdist workers)."""
        used = sh("ip", "-4", "route", "show").stdout
        free = [n for n in range(2, 251) if f"198.18.{n}.0/24" not in used]
        return f"198.18.{random.choice(free)}"

    def host_ns(self, host):
        return f"{self.pfx}-{host}"

    def host_ip(self, host):
        return f"{self.net}.{11 + self.hosts.index(host)}"

    # ---- building
    def build(self, hosts=("h1", "h2", "h3")):
        sh("ip", "netns", "add", self.ul)
        sh("ip", "-n", self.ul, "link", "set", "lo", "up")
        sh("ip", "-n", self.ul, "link", "add", "ulbr", "type", "bridge")
        sh("ip", "-n", self.ul, "link", "set", "ulbr", "up")
        sh("ip", "link", "add", self.root_dev, "type", "veth", "peer", "name", "root",
           "netns", self.ul)
        sh("ip", "-n", self.ul, "link", "set", "root", "master", "ulbr", "up")
        sh("ip", "addr", "add", f"{self.net}.1/24", "dev", self.root_dev)
        sh("ip", "link", "set", self.root_dev, "up")
        for h in hosts:
            self.hosts.append(h)
            ns = self.host_ns(h)
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", h,
               "netns", self.ul)
            sh("ip", "-n", self.ul, "link", "set", h, "master", "ulbr", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.host_ip(h)}/24", "dev", "ul0")
            sh("ip", "-n", ns, "link", "set", "ul0", "up")

    def start_server(self, config: str | None = None):
        """The all-in-one server (no agent of its own); `config`: extra INI text."""
        api, ident = free_port(), free_port()
        extra = []
        if config:
            conf = self.workdir / "server.conf"
            conf.write_text(config)
            extra = ["--config-file", str(conf)]
        self.server = Server("all-in-one", [
            neutrino_bin(), "all-in-one", "--no-agent", "--state-dir", str(self.state),
            "--identity-port", str(ident), "--api-port", str(api),
            "--bind-host", f"{self.net}.1", *extra], self.workdir, api, ident)
        self.server.api_url = f"http://{self.net}.1:{api}"
        self.server.identity_url = f"http://{self.net}.1:{ident}"
        self.server.wait_ready()
        wait_for("clouds.yaml", lambda: (self.state / "clouds.yaml").exists(), 20)
        self.password = (self.state / "admin-password").read_text().strip()
        self._token = None

    def restart_server(self):
        srv = self.server
        srv.stop()
        self.server = Server("all-in-one", srv.proc.args, self.workdir, srv.api_port,
                             srv.identity_port)
        self.server.api_url, self.server.identity_url = srv.api_url, srv.identity_url
        self.server.wait_ready()
        self._token = None

    def start_agents(self, roles=None):
        roles = roles or {}
        for h in self.hosts:
            a = Agent(self, h, roles.get(h, "l2"))
            self.agents[h] = a
            a.start()
        # Every agent registered and alive.
        def alive():
            agents = self.api("GET", "/agents")["agents"]
            return all(any(a["host"] == h and a["alive"] and a["agent_type"] ==
                           "Linux bridge agent" for a in agents) for h in self.hosts)
        wait_for("agents alive", alive, 60, 0.5)

    # ---- API
    def token(self):
        if not self._token:
            self._token, _ = get_token(self.server.identity_url, self.password)
        return self._token

    def api(self, method, path, body=None, expect=(200, 201, 204)):
        st, _, payload = Http.request(method, self.server.api_url + "/v2.0" + path, body,
                                      token=self.token())
        assert st in expect, f"{method} {path}: {st} {payload}"
        return payload

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(OS_CLIENT_CONFIG_FILE=str(self.state / "clouds.yaml"), OS_CLOUD="neutrino",
                   NEUTRINO_LOG="warn", NO_COLOR="1")
        return env

    def network(self, name, cidr, **extra):
        net = self.api("POST", "/networks", {"network": {"name": f"{self.pfx}-{name}"}})["network"]
        sub = self.api("POST", "/subnets", {"subnet": dict(
            {"network_id": net["id"], "ip_version": 4, "cidr": cidr}, **extra)})["subnet"]
        return net, sub

    # ---- probes
    def probe(self, net_id, host, name, wait=True, timeout=90):
        full = f"{self.pfx}{name}"
        args = [neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "create",
                "--network", net_id, "--host", host, "--host-netns", self.host_ns(host),
                "--name", full, "--timeout", str(timeout)]
        if not wait:
            args.append("--no-wait")
        self.probes.append(full)
        env = self.env()
        # The probe's own timings (debug lines): port ACTIVE, lease held.
        env["NEUTRINO_LOG"] = "warn,neutrino_agent::probe=debug"
        t0 = time.monotonic()
        p = sh(*args, env=env, check=False, timeout=timeout + 30)
        elapsed = time.monotonic() - t0
        if p.returncode != 0:
            raise AssertionError(f"probe create {full} failed:\n{p.stderr}{p.stdout}\n"
                                 + self.agent_logs())
        fields = p.stdout.strip().split("\t")
        steps = dict(re.findall(r"(port ACTIVE|lease held).*?elapsed_ms=(\d+)", p.stderr))
        return {"name": full, "port_id": fields[1], "mac": fields[2], "address": fields[5],
                "mtu": (fields[7].split("=")[1] if len(fields) > 7 else None),
                "elapsed": elapsed,
                # ms from the probe's wiring to its port ACTIVE / to its lease (None: no wait)
                "active_ms": int(steps["port ACTIVE"]) if "port ACTIVE" in steps else None,
                "lease_ms": int(steps["lease held"]) if "lease held" in steps else None}

    def probe_exec(self, name, *cmd, check=True, timeout=60):
        return sh(neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "exec", name,
                  "--", *cmd, check=check, timeout=timeout, env=self.env())

    def probe_delete(self, name):
        p = sh(neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "delete", name,
               env=self.env(), check=False)
        if name in self.probes:
            self.probes.remove(name)
        return p

    def agent_logs(self):
        return "\n".join(f"--- agent {h} ---\n{a.tail()}" for h, a in self.agents.items())

    # ---- teardown: everything, keep going, report all errors
    def teardown(self):
        errors = []

        def attempt(what, fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - collect everything
                errors.append(f"{what}: {e}")

        for name in list(self.probes):
            attempt(f"probe {name}", lambda n=name: self.probe_delete(n))
        for a in self.agents.values():
            attempt(f"agent {a.host}", a.stop)
        # dnsmasq and haproxy processes started by our agents (their files are under our
        # workdir).
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(self.workdir) in cmd and any(
                    d in cmd for d in ("dnsmasq", "udhcpc", "haproxy")):
                attempt(f"kill {pid}", lambda p=pid: os.kill(int(p), signal.SIGKILL))
        if self.server:
            attempt("server", self.server.stop)
        ours = [n for n in netns_names() if self.pfx in n]
        # qdhcp namespaces created by our agents: linked to one of our host namespaces.
        for h in self.hosts:
            out = sh("ip", "-n", self.host_ns(h), "-j", "netns", "list", check=False).stdout
            for n in json.loads(out or "[]"):
                if n.get("id") is not None and n["name"].startswith("qdhcp-"):
                    ours.append(n["name"])
        for n in dict.fromkeys(ours):
            attempt(f"netns {n}", lambda n=n: sh("ip", "netns", "del", n))
        attempt("root veth", lambda: sh("ip", "link", "del", self.root_dev)
                if Path(f"/sys/class/net/{self.root_dev}").exists() else None)
        return errors


def finish_topology(t: Topology, workdir: Path, errors: list) -> None:
    """The end of a topology fixture, once `t.teardown()` (which returned `errors`) and any
    other removal are done: removes `workdir` (unless NEUTRINO_KEEP_DP=1), then fails on
    teardown errors or on a namespace of the topology left behind."""
    left = [n for n in netns_names() if t.pfx in n]
    if os.environ.get("NEUTRINO_KEEP_DP") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
    assert not errors, f"teardown errors: {errors}"
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def topo():
    require_root()
    # mkdtemp's mode 0700: the agents' state_path is private, as ~/... of root is (dnsmasq
    # runs as the agent's user and reads its files there).
    workdir = Path(tempfile.mkdtemp(prefix="neutrino-dp-"))
    t = Topology(workdir)
    try:
        t.build()
        t.start_server()
        t.start_agents({"h1": "l2,dhcp"})
        yield t
    finally:
        errors = t.teardown()
        left = [n for n in netns_names() if t.pfx in n]
        if os.environ.get("NEUTRINO_KEEP_DP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        assert not errors, f"teardown errors: {errors}"
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture(autouse=True)
def _agent_logs_on_failure(request, topo):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(topo.agent_logs())


def port(topo, pid):
    return topo.api("GET", f"/ports/{pid}")["port"]


def dhcp_port_of(topo, net_id):
    ports = topo.api("GET", f"/ports?network_id={net_id}&device_owner=network:dhcp")["ports"]
    return ports[0] if ports else None


# --------------------------------------------------------------------------- one host


def one_host(topo):
    """The one-host scenario (built by its test, or on demand when tests are distributed
    over pytest-xdist workers)."""
    if not getattr(topo, "one_host", None):
        test_one_host_dhcp_and_ping(topo)
    return topo.one_host


def two_hosts(topo):
    if not getattr(topo, "two_hosts", None):
        test_two_hosts_ping_over_vxlan_and_l2pop_fdb(topo)
    return topo.two_hosts


def test_one_host_dhcp_and_ping(topo):
    net, sub = topo.network("one", "10.61.0.0/24")
    assert net["mtu"] == 1450, net
    a = topo.probe(net["id"], "h1", "a")
    b = topo.probe(net["id"], "h1", "b")
    for p in (a, b):
        doc = port(topo, p["port_id"])
        assert doc["status"] == "ACTIVE", doc
        assert doc["binding:host_id"] == "h1"
        assert p["address"] == doc["fixed_ips"][0]["ip_address"], (p, doc["fixed_ips"])
        # Option 26: the probe's eth0 took the network MTU.
        assert p["mtu"] == "1450", p
        eth0 = json.loads(sh("ip", "-n", f"probe-{p['name']}", "-j", "link", "show",
                             "eth0").stdout)[0]
        assert eth0["mtu"] == 1450, eth0
        assert eth0["address"] == doc["mac_address"]
    # Default route from the subnet gateway (option 3/121).
    routes = topo.probe_exec(a["name"], "ip", "route").stdout
    assert "default via 10.61.0.1" in routes, routes
    topo.probe_exec(a["name"], "ping", "-c", "3", "-W", "2", b["address"])
    topo.probe_exec(b["name"], "ping", "-c", "3", "-W", "2", a["address"])
    # FEATURES E3 steps 2-3: the DHCP port is ACTIVE, its namespace holds ns-<port> with its IP.
    dp = wait_for("DHCP port ACTIVE",
                  lambda: (lambda d: d if d and d["status"] == "ACTIVE" else None)(
                      dhcp_port_of(topo, net["id"])))
    assert dp["binding:host_id"] == "h1"
    qdhcp = f"qdhcp-{net['id']}"
    assert qdhcp in netns_names()
    ns_dev = "ns-" + dp["id"][:11]
    addrs = sh("ip", "-n", qdhcp, "-j", "addr", "show", "dev", ns_dev).stdout
    assert dp["fixed_ips"][0]["ip_address"] in addrs, addrs
    # The hosts file names every port like Neutron.
    hosts = (topo.agents["h1"].dir / "state" / "dhcp" / net["id"] / "host").read_text()
    dash = a["address"].replace(".", "-")
    assert f"{a['mac']},host-{dash}.openstacklocal,{a['address']}" in hosts, hosts
    # The DHCP port answers too (the only other address on a network without a router).
    topo.probe_exec(a["name"], "ping", "-c", "1", "-W", "2", dp["fixed_ips"][0]["ip_address"])
    topo.one_host = (net, a, b)


def test_probe_list_and_exec_status(topo):
    net, a, b = one_host(topo)
    out = sh(neutrino_bin(), "probe", "--state-dir", str(topo.probe_dir), "list",
             env=topo.env()).stdout
    assert a["name"] in out and b["name"] in out, out
    assert "local" in out
    # Exit status passes through.
    p = topo.probe_exec(a["name"], "sh", "-c", "exit 7", check=False)
    assert p.returncode == 7


def test_isolated_metadata_and_host_routes_reach_the_probe(topo):
    net, sub = topo.network("routes", "10.62.0.0/24", host_routes=[
        {"destination": "192.0.2.0/24", "nexthop": "10.62.0.254"}])
    a = topo.probe(net["id"], "h1", "r")
    routes = topo.probe_exec(a["name"], "ip", "route").stdout
    # Option 121 wins over option 3, so the default route must be in it too.
    assert "192.0.2.0/24 via 10.62.0.254" in routes, routes
    assert "default via 10.62.0.1" in routes, routes
    topo.probe_delete(a["name"])


# --------------------------------------------------------------------------- two hosts


def vxlan_fdb(topo, host, vni):
    out = sh("bridge", "-n", topo.host_ns(host), "-j", "fdb", "show", "dev",
             f"vxlan-{vni}").stdout
    return [e for e in json.loads(out or "[]") if e.get("dst")]


def segment_vni(topo, net_id):
    return topo.api("GET", f"/networks/{net_id}")["network"]["provider:segmentation_id"]


def test_two_hosts_ping_over_vxlan_and_l2pop_fdb(topo):
    net, _ = topo.network("two", "10.63.0.0/24")
    other, _ = topo.network("other", "10.64.0.0/24")
    a = topo.probe(net["id"], "h1", "x1")
    b = topo.probe(net["id"], "h2", "x2")
    c = topo.probe(other["id"], "h3", "x3")
    topo.probe_exec(a["name"], "ping", "-c", "3", "-W", "2", b["address"])
    topo.probe_exec(b["name"], "ping", "-c", "3", "-W", "2", a["address"])
    vni = segment_vni(topo, net["id"])
    ip = {h: topo.host_ip(h) for h in topo.hosts}
    fdb1 = wait_for("h1 fdb towards h2", lambda: (lambda f: f if any(
        e["dst"] == ip["h2"] for e in f) else None)(vxlan_fdb(topo, "h1", vni)))
    assert {e["dst"] for e in fdb1} == {ip["h2"]}, fdb1
    assert any(e["mac"] == "00:00:00:00:00:00" for e in fdb1)
    assert any(e["mac"] == b["mac"] for e in fdb1)
    fdb2 = vxlan_fdb(topo, "h2", vni)
    assert {e["dst"] for e in fdb2} == {ip["h1"]}, fdb2  # h1: probe + DHCP port
    # h3 has nothing on this network: no device, and nobody floods towards it.
    assert not any(l["ifname"] == f"vxlan-{vni}" for l in links(topo.host_ns("h3")))
    # Its own network's VXLAN device has only h1 (the DHCP port) as remote.
    vni_c = segment_vni(topo, other["id"])
    fdb3 = wait_for("h3 fdb towards the DHCP host",
                    lambda: vxlan_fdb(topo, "h3", vni_c))
    assert {e["dst"] for e in fdb3} == {ip["h1"]}, fdb3
    # Neighbour entries for proxy ARP on h1's VXLAN device.
    neigh = sh("ip", "-n", topo.host_ns("h1"), "neigh", "show", "dev", f"vxlan-{vni}").stdout
    assert b["address"] in neigh and "PERMANENT" in neigh, neigh
    topo.two_hosts = (net, a, b)


def test_vlan_networks(topo):
    probe_ns = topo.host_ns("h3")
    p = sh("ip", "-n", probe_ns, "link", "add", "link", "ul0", "name", "ul0.7", "type", "vlan",
           "id", "7", check=False)
    if p.returncode != 0:
        pytest.skip("SKIPPED: VLAN networks NOT TESTED — this kernel has no 802.1q "
                    f"({p.stderr.strip()})")
    sh("ip", "-n", probe_ns, "link", "del", "ul0.7")
    pytest.fail("this kernel has 802.1q: write the VLAN dataplane test")


# --------------------------------------------------------------------------- restarts


class Pinger:
    """A continuous ping inside a probe; counts transmitted/received."""

    def __init__(self, topo, name, dst, interval="0.05"):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"probe-{name}", "ping", "-i", interval, "-W", "1", dst],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, f"no ping summary:\n{out}\n{err}"
        return int(m.group(1)), int(m.group(2)), out


def test_agent_and_server_restart_lose_no_packet(topo):
    net, a, b = two_hosts(topo)
    ping = Pinger(topo, a["name"], b["address"])
    try:
        time.sleep(1)
        for h in ("h1", "h2"):
            agent = topo.agents[h]
            agent.stop()
            time.sleep(0.5)
            agent.start()
            # The restarted agent re-registers and finishes its start-up pass.
            wait_for(f"agent {h} start-up pass",
                     lambda: agent.log_path.read_text(errors="replace").count(
                         "start-up sync and sweep done") >= agent.starts, 60)
        time.sleep(1)
        topo.restart_server()
        time.sleep(3)
    finally:
        sent, received, out = ping.stop()
    print(f"\ncontinuous ping {a['name']} -> {b['address']} (h1 -> h2 over VXLAN) across "
          f"agent h1, agent h2 and server restarts: {sent} sent, {received} received")
    assert sent > 50, out
    assert received == sent, f"lost {sent - received} of {sent} packets:\n{out[-800:]}"
    # The dataplane still works for new traffic and DHCP still answers after the restarts.
    c = topo.probe(net["id"], "h2", "x4")
    topo.probe_exec(c["name"], "ping", "-c", "2", "-W", "2", a["address"])
    topo.probe_delete(c["name"])


# --------------------------------------------------------------------------- cleanup


def dnsmasq_for(net_id):
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"dnsmasq") and any(net_id.encode() in c for c in cmd):
                found.append(pid)
    return found


def nft_ruleset(topo, host):
    """The objects of `nft -j list ruleset` in a host's namespace (tables, chains, sets,
    maps, rules, elements inside their sets and maps)."""
    out = sh("nsenter", f"--net=/run/netns/{topo.host_ns(host)}", "nft", "-j", "list",
             "ruleset").stdout
    return json.loads(out or '{"nftables": []}')["nftables"]


def delete_networks(topo):
    """Deletes our probes, then every port, subnet and network named with our prefix.
    Returns the ids of the networks and of the ports deleted."""
    for name in list(topo.probes):
        p = topo.probe_delete(name)
        assert p.returncode == 0, p.stderr
    nets = [n for n in topo.api("GET", "/networks")["networks"] if n["name"].startswith(topo.pfx)]
    port_ids = []
    for n in nets:
        for p in topo.api("GET", f"/ports?network_id={n['id']}")["ports"]:
            port_ids.append(p["id"])
            topo.api("DELETE", f"/ports/{p['id']}", expect=(204, 404))
        for s in topo.api("GET", f"/subnets?network_id={n['id']}")["subnets"]:
            topo.api("DELETE", f"/subnets/{s['id']}", expect=(204, 404, 409))
        topo.api("DELETE", f"/networks/{n['id']}", expect=(204, 404))
    return [n["id"] for n in nets], port_ids


def leftovers(topo, net_ids):
    """What deleted networks left on the hosts: qdhcp namespaces, dnsmasq processes, probe
    namespaces, bridges, VXLAN and tap devices, DHCP state directories."""
    left = []
    names = netns_names()
    for nid in net_ids:
        if f"qdhcp-{nid}" in names:
            left.append(f"qdhcp-{nid}")
        left += [f"dnsmasq {p}" for p in dnsmasq_for(nid)]
    left += [n for n in names if n.startswith(f"probe-{topo.pfx}")]
    for h in topo.hosts:
        for l in links(topo.host_ns(h)):
            if l["ifname"].startswith(("brq", "vxlan-", "tap")):
                left.append(f"{h}:{l['ifname']}")
        d = topo.agents[h].dir / "state" / "dhcp"
        if d.exists():
            left += [f"{h}:dhcp/{x}" for x in os.listdir(d)]
    return left


def test_deleting_ports_and_networks_leaves_nothing(topo):
    nets = [one_host(topo)[0], two_hosts(topo)[0]]
    for name in list(topo.probes):
        p = topo.probe_delete(name)
        assert p.returncode == 0, p.stderr
    all_nets = topo.api("GET", "/networks")["networks"]
    for n in all_nets:
        if not n["name"].startswith(topo.pfx):
            continue
        for p in topo.api("GET", f"/ports?network_id={n['id']}")["ports"]:
            topo.api("DELETE", f"/ports/{p['id']}", expect=(204, 404))
        for s in topo.api("GET", f"/subnets?network_id={n['id']}")["subnets"]:
            topo.api("DELETE", f"/subnets/{s['id']}", expect=(204, 404, 409))
        topo.api("DELETE", f"/networks/{n['id']}", expect=(204, 404))
    ids = [n["id"] for n in all_nets if n["name"].startswith(topo.pfx)]
    assert {n["id"] for n in nets} <= set(ids)

    def clean():
        return leftovers(topo, ids)
    deadline = time.time() + 60
    while clean() and time.time() < deadline:
        time.sleep(0.5)
    assert not clean(), f"left behind: {clean()}\n{topo.agent_logs()}"


# --------------------------------------------------------------------------- benchmark


def test_benchmark_port_create_to_lease(topo):
    """Port create → probe holds its lease (printed, not asserted beyond success)."""
    existing = int(os.environ.get("NEUTRINO_DP_BENCH_PORTS", "500"))
    samples = int(os.environ.get("NEUTRINO_DP_BENCH_PROBES", "10"))
    net, _ = topo.network("bench", "10.80.0.0/20")
    topo.api("PUT", f"/quotas/{net['project_id']}", {"quota": {"port": -1}})
    t0 = time.monotonic()
    batch = 100
    for i in range(0, existing, batch):
        n = min(batch, existing - i)
        topo.api("POST", "/ports", {"ports": [
            {"network_id": net["id"], "name": f"{topo.pfx}-bulk"} for _ in range(n)]})
    fill = time.monotonic() - t0
    # Let the DHCP agent absorb them (hosts file with every port).
    hosts_file = topo.agents["h1"].dir / "state" / "dhcp" / net["id"] / "host"
    wait_for("hosts file with the existing ports", lambda: hosts_file.exists() and
             len(hosts_file.read_text().splitlines()) >= existing, 120, 0.5)
    times = []
    clients = []
    for i in range(samples):
        host = topo.hosts[i % len(topo.hosts)]
        p = topo.probe(net["id"], host, f"b{i}")
        assert p["address"], p
        times.append(p["elapsed"])
        if p["active_ms"] is not None and p["lease_ms"] is not None:
            clients.append((p["elapsed"] * 1000 - (p["lease_ms"] - p["active_ms"]),
                            p["lease_ms"] - p["active_ms"]))
    for i in range(samples):
        topo.probe_delete(f"{topo.pfx}b{i}")
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
    print(f"\nBENCH dataplane: {existing} existing ports on the network "
          f"(created in {fill:.1f}s); port create -> lease held, {samples} probes over "
          f"{len(topo.hosts)} hosts: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
          f"max {times[-1] * 1000:.0f} ms")
    if clients:
        # Split: neutrino's part (probe process start → port ACTIVE with its DHCP host entry
        # loaded) and the DHCP client's exchange (busybox udhcpc in the probe).
        ours = statistics.median(c[0] for c in clients)
        dhcp = statistics.median(c[1] for c in clients)
        print(f"BENCH dataplane split (p50): create → port ACTIVE {ours:.0f} ms, "
              f"DHCP client exchange {dhcp:.0f} ms")
