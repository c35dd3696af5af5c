"""Day one: `neutrino all-in-one` WITH its own host agent, as the README runs it, with state
directories nobody but root can enter, and the agent's verification of its daemons.

Topology (names carry a per-test prefix `nt<4 hex>`; nothing touches eth0):

    root namespace ── veth <pfx>r (198.18.N.1/24)
                         │
      <pfx>-aio namespace: ul0 198.18.N.2/24, `neutrino all-in-one` bound to it, its agent
      (l2, dhcp, l3, isolated metadata) building bridges, qdhcp-/qrouter- namespaces,
      dnsmasq and haproxy as on a real host
         │
      probes (`neutrino probe create --host-netns <pfx>-aio`)

The all-in-one runs in a namespace of its own (`nsenter --net`, the mount tree stays shared)
so its bridges and VXLAN devices never land in the machine's namespace. What the README
promises is checked as a user sees it: leases, ping between two probes, metadata on a
network without a router, `openstack port set --disable`, `openstack network agent show`.

Needs root; FAILS (never skips) when it cannot run. Everything is removed at the end, also
on failure.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import OPENSTACK, Http, Server, free_port, get_token, neutrino_bin
from test_dataplane import netns_names, require_root, sh, wait_for

MD = "http://169.254.169.254"


class AllInOne:
    """One `neutrino all-in-one` with its agent in namespace `<pfx>-aio`."""

    def __init__(self, workdir: Path, state: Path, config: str | None = None):
        self.workdir, self.state = workdir, state
        self.pfx = "nt" + uuid.uuid4().hex[:4]
        used = sh("ip", "-4", "route", "show").stdout
        n = random.choice([n for n in range(2, 251) if f"198.18.{n}.0/24" not in used])
        self.net = f"198.18.{n}"
        self.ns = f"{self.pfx}-aio"
        self.root_dev = f"{self.pfx}r"
        self.config = config
        self.server: Server | None = None
        self.probe_dir = workdir / "probes"
        self.probes: list[str] = []
        self._token = None

    # ---- life
    def start(self):
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", self.root_dev, "type", "veth", "peer", "name", "ul0",
           "netns", self.ns)
        sh("ip", "addr", "add", f"{self.net}.1/24", "dev", self.root_dev)
        sh("ip", "link", "set", self.root_dev, "up")
        sh("ip", "-n", self.ns, "addr", "add", f"{self.net}.2/24", "dev", "ul0")
        sh("ip", "-n", self.ns, "link", "set", "ul0", "up")
        api, ident = free_port(), free_port()
        args = ["nsenter", f"--net=/run/netns/{self.ns}", neutrino_bin(), "all-in-one",
                "--state-dir", str(self.state), "--identity-port", str(ident),
                "--api-port", str(api), "--bind-host", f"{self.net}.2"]
        if self.config:
            conf = self.workdir / "extra.conf"
            conf.write_text(self.config)
            args += ["--config-file", str(conf)]
        self.server = Server("all-in-one", args, self.workdir, api, ident)
        self.server.api_url = f"http://{self.net}.2:{api}"
        self.server.identity_url = f"http://{self.net}.2:{ident}"
        self.server.wait_ready()
        wait_for("clouds.yaml", lambda: (self.state / "clouds.yaml").exists(), 20)
        self.password = (self.state / "admin-password").read_text().strip()
        wait_for("the agent's DHCP agent alive", lambda: self.agent("DHCP agent")["alive"], 60)

    def teardown(self) -> list[str]:
        errors = []

        def attempt(what, fn):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - collect everything
                errors.append(f"{what}: {e}")

        for name in list(self.probes):
            attempt(f"probe {name}", lambda n=name: self.probe_delete(n))
        if self.server:
            attempt("all-in-one", self.server.stop)
        # The agent leaves its dataplane in place on exit (by design): its daemons name the
        # state directory on their command lines, its namespaces have a directory there.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(self.state) in cmd and any(d in cmd for d in ("dnsmasq", "haproxy")):
                attempt(f"kill {pid}", lambda p=pid: os.kill(int(p), signal.SIGKILL))
        agent = self.state / "agent"
        ours = [n for n in netns_names() if self.pfx in n]
        for sub, prefix in (("dhcp", "qdhcp-"), ("l3", "qrouter-")):
            d = agent / sub
            if d.is_dir():
                ours += [prefix + x for x in os.listdir(d) if (prefix + x) in netns_names()]
        for n in dict.fromkeys(ours):
            attempt(f"netns {n}", lambda n=n: sh("ip", "netns", "del", n))
        # Deleting the namespace takes the veth's root end along (asynchronously).
        sh("ip", "link", "del", self.root_dev, check=False)
        attempt("root veth", lambda: wait_for(
            "root veth gone", lambda: not Path(f"/sys/class/net/{self.root_dev}").exists(), 10))
        return errors

    def log(self) -> str:
        return self.server.log_path.read_text(errors="replace") if self.server else ""

    # ---- API and CLI
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
                   NEUTRINO_LOG="warn", NO_COLOR="1", HOME=str(self.workdir))
        return env

    def osc(self, *args):
        p = sh(OPENSTACK, *args, env=self.env(), timeout=180)
        return p.stdout

    def agent(self, agent_type):
        agents = self.api("GET", "/agents")["agents"]
        found = [a for a in agents if a["agent_type"] == agent_type]
        return found[0] if found else {"alive": False}

    def port(self, port_id):
        return self.api("GET", f"/ports/{port_id}")["port"]

    # ---- probes
    def probe(self, network, name, wait=True, timeout=60):
        full = f"{self.pfx}{name}"
        args = [neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "create",
                "--network", network, "--host-netns", self.ns, "--name", full,
                "--timeout", str(timeout)]
        if not wait:
            args.append("--no-wait")
        self.probes.append(full)
        env = self.env()
        env["NEUTRINO_LOG"] = "warn,neutrino_agent::probe=debug"
        p = sh(*args, env=env, check=False, timeout=timeout + 30)
        if p.returncode != 0:
            raise AssertionError(f"probe create {full} failed:\n{p.stderr}{p.stdout}\n"
                                 f"--- all-in-one ---\n{self.server.tail(80)}")
        fields = p.stdout.strip().split("\t")
        return {"name": full, "port_id": fields[1], "address": fields[5], "stderr": p.stderr}

    def probe_exec(self, name, *cmd, check=True, timeout=60):
        return sh(neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "exec", name,
                  "--", *cmd, check=check, timeout=timeout, env=self.env())

    def probe_delete(self, name):
        sh(neutrino_bin(), "probe", "--state-dir", str(self.probe_dir), "delete", name,
           env=self.env(), check=False)
        if name in self.probes:
            self.probes.remove(name)


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def run_all_in_one(state_kind: str, config: str | None = None):
    """An AllInOne whose state directory is `private` (mode 0700 under a 0700 parent, as
    ~/neutrino-state in /root) or `mktemp` (a `mktemp -d` directory itself)."""
    workdir = Path(tempfile.mkdtemp(prefix="neutrino-day1-"))
    assert workdir.stat().st_mode & 0o777 == 0o700
    if state_kind == "private":
        state = workdir / "home" / "neutrino-state"
        state.parent.mkdir(mode=0o700)
        state.mkdir(mode=0o700)
    else:
        state = Path(tempfile.mkdtemp(prefix="neutrino-state-"))
    assert state.stat().st_mode & 0o777 == 0o700
    return workdir, state, AllInOne(workdir, state, config)


def finish(aio: AllInOne, workdir: Path, state: Path):
    errors = aio.teardown()
    left = [n for n in netns_names() if aio.pfx in n]
    if os.environ.get("NEUTRINO_KEEP_DP") != "1":
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
    assert not errors, f"teardown errors: {errors}"
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture(scope="module", params=["private", "mktemp"])
def aio(request):
    require_root()
    if not shutil.which("haproxy") or not shutil.which("nsenter"):
        pytest.fail("haproxy and nsenter are needed: run scripts/setup", pytrace=False)
    workdir, state, a = run_all_in_one(request.param)
    try:
        a.start()
        yield a
    finally:
        finish(a, workdir, state)


@pytest.fixture(autouse=True)
def _log_on_failure(request):
    yield
    rep = getattr(request.node, "rep_call", None)
    a = request.node.funcargs.get("aio")
    if rep is not None and rep.failed and a is not None and a.server:
        print(a.server.tail(120))


def test_readme_quick_start_works_with_a_private_state_directory(aio):
    """The README's example, as written: a network without a router, two probes that get
    leases and ping each other, metadata from 169.254.169.254."""
    aio.osc("network", "create", "mynet")
    aio.osc("subnet", "create", "--network", "mynet", "--subnet-range", "10.0.0.0/24",
            "mysubnet")
    t0 = time.monotonic()
    vm1 = aio.probe("mynet", "vm1")
    lease_s = time.monotonic() - t0
    vm2 = aio.probe("mynet", "vm2")
    # What the README shows: addresses in order after the DHCP port's 10.0.0.2.
    assert (vm1["address"], vm2["address"]) == ("10.0.0.3", "10.0.0.4"), (vm1, vm2)
    for p in (vm1, vm2):
        assert aio.port(p["port_id"])["status"] == "ACTIVE"
    aio.probe_exec(vm1["name"], "ping", "-c1", "-W2", vm2["address"])
    aio.probe_exec(vm2["name"], "ping", "-c1", "-W2", vm1["address"])
    md = aio.probe_exec(vm1["name"], "busybox", "wget", "-qO-",
                        MD + "/openstack/latest/meta_data.json", timeout=30)
    doc = json.loads(md.stdout)
    assert doc["uuid"] == f"probe-{vm1['name']}", doc
    listing = aio.probe_exec(vm1["name"], "busybox", "wget", "-qO-", MD + "/latest/meta-data/")
    assert "instance-id" in listing.stdout
    # dnsmasq ran as the agent's user and read its files; every daemon logs in its
    # resource's directory under the agent's state.
    net_id = aio.api("GET", "/networks?name=mynet")["networks"][0]["id"]
    dlog = (aio.state / "agent" / "dhcp" / net_id / "dnsmasq.log").read_text()
    assert "cannot read" not in dlog and "DHCPACK" in dlog, dlog[-2000:]
    hlog = (aio.state / "agent" / "metadata" / f"qdhcp-{net_id}" / "haproxy.log").read_text()
    assert "meta_data.json" in hlog, hlog
    dhcp = aio.agent("DHCP agent")
    assert dhcp["configurations"]["errors"] == [], dhcp
    # The README's clean-up: probes, then the network; the agent removes its namespace and
    # daemons.
    aio.probe_delete(vm1["name"])
    aio.probe_delete(vm2["name"])
    aio.osc("network", "delete", "mynet")
    wait_for("the network's DHCP namespace removed",
             lambda: f"qdhcp-{net_id}" not in netns_names(), 30)
    wait_for("its dnsmasq and haproxy stopped", lambda: not [
        pid for pid in os.listdir("/proc") if pid.isdigit() and net_id in _cmdline(pid)], 30)
    print(f"\nstate {aio.state}: probe create -> lease held {lease_s:.2f}s; "
          f"{[ln for ln in vm1['stderr'].splitlines() if 'elapsed_ms' in ln]}")


def test_a_disabled_port_goes_down_and_comes_back(aio):
    net = aio.api("POST", "/networks", {"network": {"name": f"{aio.pfx}-adm"}})["network"]
    aio.api("POST", "/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                            "cidr": "10.70.0.0/24"}})
    a = aio.probe(net["id"], "a")
    b = aio.probe(net["id"], "b")
    aio.probe_exec(a["name"], "ping", "-c1", "-W2", b["address"])
    aio.osc("port", "set", "--disable", b["port_id"])
    t0 = time.monotonic()
    wait_for("disabled port DOWN", lambda: aio.port(b["port_id"])["status"] == "DOWN", 30)
    down_s = time.monotonic() - t0
    # Its device is down: no traffic reaches it.
    assert aio.probe_exec(a["name"], "ping", "-c1", "-W1", b["address"],
                          check=False).returncode != 0
    aio.osc("port", "set", "--enable", b["port_id"])
    t0 = time.monotonic()
    wait_for("re-enabled port ACTIVE", lambda: aio.port(b["port_id"])["status"] == "ACTIVE", 30)
    up_s = time.monotonic() - t0
    wait_for("ping after re-enabling", lambda: aio.probe_exec(
        a["name"], "ping", "-c1", "-W1", b["address"], check=False).returncode == 0, 20)
    print(f"\nadmin down -> DOWN {down_s:.2f}s, admin up -> ACTIVE {up_s:.2f}s")


def test_a_dnsmasq_that_cannot_read_its_files_keeps_the_port_from_going_active():
    """dnsmasq told (by the operator's dnsmasq_config_file) to drop to `nobody`, as it did by
    default before: under a private state directory it cannot read its hosts file. The
    agent must say so (log, status) and the port must not go ACTIVE; once dnsmasq can read
    again (configuration fixed, dnsmasq restarted by the agent) the port goes ACTIVE."""
    require_root()
    workdir, state, aio = run_all_in_one("private")
    conf = workdir / "dnsmasq.conf"
    conf.write_text("user=nobody\n")
    aio.config = f"[DEFAULT]\ndnsmasq_config_file = {conf}\n[agent]\npolling_interval = 1\n"
    try:
        aio.start()
        net = aio.api("POST", "/networks", {"network": {"name": f"{aio.pfx}-bad"}})["network"]
        aio.api("POST", "/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                "cidr": "10.71.0.0/24"}})
        p = aio.probe(net["id"], "x", wait=False)
        host_file = state / "agent" / "dhcp" / net["id"] / "host"
        reason = f"cannot read {host_file}: Permission denied"
        wait_for("the reason in the agent's log", lambda: reason in aio.log(), 30)
        wait_for("the reason in the DHCP agent's status", lambda: any(
            reason in e for e in aio.agent("DHCP agent")["configurations"]["errors"]), 30)
        shown = aio.osc("network", "agent", "show", aio.agent("DHCP agent")["id"],
                        "-c", "configuration", "-f", "json")
        assert reason in shown, shown
        # Wired by L2, but DHCP never loaded it: not ACTIVE, however long we wait.
        time.sleep(3)
        assert aio.port(p["port_id"])["status"] != "ACTIVE", aio.port(p["port_id"])
        # Fixed: dnsmasq restarted with the corrected configuration reads its files; the
        # agent sees it, the port goes ACTIVE and the probe gets its lease.
        conf.write_text("")
        pid = int((state / "agent" / "dhcp" / net["id"] / "pid").read_text())
        os.kill(pid, signal.SIGTERM)
        wait_for("port ACTIVE after the fix",
                 lambda: aio.port(p["port_id"])["status"] == "ACTIVE", 60)
        wait_for("DHCP agent status without errors",
                 lambda: aio.agent("DHCP agent")["configurations"]["errors"] == [], 30)
    finally:
        finish(aio, workdir, state)


def test_a_dnsmasq_that_cannot_start_is_an_agent_error():
    require_root()
    workdir, state, aio = run_all_in_one("mktemp")
    conf = workdir / "dnsmasq.conf"
    conf.write_text("no-such-dnsmasq-option\n")
    aio.config = f"[DEFAULT]\ndnsmasq_config_file = {conf}\n"
    try:
        aio.start()
        net = aio.api("POST", "/networks", {"network": {"name": f"{aio.pfx}-bad"}})["network"]
        aio.api("POST", "/subnets", {"subnet": {"network_id": net["id"], "ip_version": 4,
                                                "cidr": "10.72.0.0/24"}})
        p = aio.probe(net["id"], "y", wait=False)
        reason = f"bad option at line 1 of {conf}"
        wait_for("the reason in the agent's log", lambda: reason in aio.log(), 30)
        wait_for("the reason in the DHCP agent's status", lambda: any(
            reason in e for e in aio.agent("DHCP agent")["configurations"]["errors"]), 30)
        dlog = (state / "agent" / "dhcp" / net["id"] / "dnsmasq.log").read_text()
        assert reason in dlog, dlog
        time.sleep(3)
        assert aio.port(p["port_id"])["status"] != "ACTIVE", aio.port(p["port_id"])
    finally:
        finish(aio, workdir, state)
