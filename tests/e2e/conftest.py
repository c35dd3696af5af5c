"""End-to-end fixtures: real `neutrino` processes driven by the real `openstack` CLI and
openstacksdk.

Backends (the `cloud` fixture is parametrised over both):
  sqlite      one `neutrino all-in-one` (embedded Keystone + API, SQLite in a temp dir)
  postgresql  one `neutrino server` on a fresh PostgreSQL database (created here, dropped at
              the end). PostgreSQL is REQUIRED: if it cannot be reached these tests fail.

`pg_pair` starts TWO `neutrino server` processes sharing one fresh PostgreSQL database
(used by test_concurrency.py).

Everything listens on 127.0.0.1 on random free ports; servers are stopped with SIGTERM
(then SIGKILL) at the end of the session, also when tests fail. When a test fails, the tail
of every running server's stderr is attached to the report.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

DEFAULT_BIN = os.path.expanduser("~/.cache/neutrino/target/debug/neutrino")
VENV_BIN = Path(sys.executable).parent
OPENSTACK = str(VENV_BIN / "openstack")
PG_HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("NEUTRINO_E2E_PG_PORT", "5432"))
PG_USER = os.environ.get("NEUTRINO_E2E_PG_USER", "postgres")
CLI_TIMEOUT = 180

# Verbs whose output is a table/record (these accept `-f json`).
_JSON_VERBS = {"create", "show", "list", "issue"}

_RUNNING: list["Server"] = []


def neutrino_bin() -> str:
    path = os.environ.get("NEUTRINO_BIN") or DEFAULT_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"neutrino binary not found at {path} (set NEUTRINO_BIN)", pytrace=False)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uniq(prefix: str = "e2e") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- HTTP helper


class Http:
    """Minimal JSON-over-HTTP client (no third-party dependency, thread safe)."""

    @staticmethod
    def request(method, url, body=None, token=None, headers=None, timeout=60):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("X-Auth-Token", token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
                status, hdrs = resp.status, resp.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            status, hdrs = e.code, e.headers
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return status, hdrs, payload


def get_token(identity_url: str, password: str, user="admin", project="admin"):
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": user, "domain": {"name": "Default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}
    st, hdrs, payload = Http.request("POST", identity_url + "/v3/auth/tokens", body)
    assert st == 201, f"token request failed: {st} {payload}"
    return hdrs["X-Subject-Token"], payload["token"]


# --------------------------------------------------------------------------- servers


class Server:
    """One running `neutrino` process."""

    def __init__(self, name, args, workdir: Path, api_port: int, identity_port: int):
        self.name = name
        self.api_port = api_port
        self.identity_port = identity_port
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.identity_url = f"http://127.0.0.1:{identity_port}"
        self.log_path = workdir / f"{name}.stderr"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env.setdefault("NEUTRINO_LOG", "info")
        env["NO_COLOR"] = "1"
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=self._log, stdin=subprocess.DEVNULL,
            env=env, cwd=str(workdir), start_new_session=True)
        _RUNNING.append(self)

    def tail(self, lines=60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout=60.0):
        deadline = time.time() + timeout
        pending = [self.api_url + "/", self.identity_url + "/v3"]
        while pending:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} during start-up:\n"
                            f"{self.tail()}", pytrace=False)
            try:
                st, _, _ = Http.request("GET", pending[0], timeout=2)
                if st == 200:
                    pending.pop(0)
                    continue
            except (OSError, urllib.error.URLError):
                pass
            if time.time() > deadline:
                self.stop()
                pytest.fail(f"{self.name} not ready after {timeout}s ({pending[0]}):\n"
                            f"{self.tail()}", pytrace=False)
            time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        if self in _RUNNING:
            _RUNNING.remove(self)


def _write_clouds_yaml(path: Path, identity_url: str, password: str):
    path.write_text(
        "clouds:\n  neutrino:\n    auth:\n"
        f"      auth_url: {identity_url}/v3\n      username: admin\n      password: {password}\n"
        "      project_name: admin\n      user_domain_name: Default\n"
        "      project_domain_name: Default\n    region_name: RegionOne\n"
        "    identity_api_version: 3\n    interface: public\n")


def start_all_in_one(workdir: Path) -> Server:
    state = workdir / "state"
    api, ident = free_port(), free_port()
    srv = Server("all-in-one", [neutrino_bin(), "all-in-one", "--state-dir", str(state),
                                "--identity-port", str(ident), "--api-port", str(api),
                                "--bind-host", "127.0.0.1"], workdir, api, ident)
    srv.wait_ready()
    # clouds.yaml and the admin password are written by the server itself.
    deadline = time.time() + 10
    while not (state / "clouds.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (state / "clouds.yaml").exists(), "all-in-one did not write clouds.yaml"
    srv.clouds_yaml = state / "clouds.yaml"
    srv.password = (state / "admin-password").read_text().strip()
    return srv


def start_pg_server(workdir: Path, db_url: str, password: str, name="server") -> Server:
    api, ident = free_port(), free_port()
    conf = workdir / f"{name}.conf"
    conf.write_text(
        "[DEFAULT]\nbind_host = 127.0.0.1\n"
        f"bind_port = {api}\n\n[database]\nconnection = {db_url}\n\n"
        f"[neutrino]\nidentity_port = {ident}\nadmin_password = {password}\n")
    srv = Server(name, [neutrino_bin(), "server", "--config-file", str(conf)], workdir, api, ident)
    srv.wait_ready()
    srv.password = password
    srv.clouds_yaml = workdir / f"{name}-clouds.yaml"
    _write_clouds_yaml(srv.clouds_yaml, srv.identity_url, password)
    return srv


# --------------------------------------------------------------------------- PostgreSQL


def _psql(sql: str) -> subprocess.CompletedProcess:
    psql = shutil.which("psql")
    if not psql:
        pytest.fail("psql not found: PostgreSQL client is required for the postgresql backend "
                    "(run scripts/setup)", pytrace=False)
    return subprocess.run([psql, "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d",
                           "postgres", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
                          capture_output=True, text=True, timeout=60)


class PgDatabase:
    def __init__(self):
        self.name = "neutrino_e2e_" + uuid.uuid4().hex[:12]
        r = _psql(f"CREATE DATABASE {self.name}")
        if r.returncode != 0:
            # Never skip: the PostgreSQL deployment is part of what is tested.
            pytest.fail(f"PostgreSQL at {PG_USER}@{PG_HOST}:{PG_PORT} is required but unusable: "
                        f"{r.stderr.strip()}", pytrace=False)
        self.url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.name}"

    def drop(self):
        r = _psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        if r.returncode != 0:
            _psql(f"DROP DATABASE IF EXISTS {self.name}")


# --------------------------------------------------------------------------- the cloud


class Cloud:
    """A running deployment plus helpers to drive it as admin or as other users."""

    def __init__(self, backend: str, servers: list[Server], workdir: Path):
        self.backend = backend
        self.servers = servers
        self.server = servers[0]
        self.workdir = workdir
        self.password = self.server.password
        self.identity_url = self.server.identity_url
        self.api_url = self.server.api_url
        self._admin_token = None
        self._admin_token_at = 0.0

    # ---- plain HTTP
    def admin_token(self) -> str:
        if not self._admin_token or time.time() - self._admin_token_at > 600:
            self._admin_token, _ = get_token(self.identity_url, self.password)
            self._admin_token_at = time.time()
        return self._admin_token

    def api(self, method, path, body=None, token=None, server=None, headers=None):
        base = (server or self.server).api_url
        return Http.request(method, base + "/v2.0" + path, body,
                            token=token or self.admin_token(), headers=headers)

    # ---- the openstack CLI
    def env(self, user=None, project=None, password=None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env["HOME"] = str(self.workdir)  # no stray ~/.config/openstack
        if user is None:
            env["OS_CLIENT_CONFIG_FILE"] = str(self.server.clouds_yaml)
            env["OS_CLOUD"] = "neutrino"
        else:
            env.update({
                "OS_AUTH_URL": self.identity_url + "/v3",
                "OS_IDENTITY_API_VERSION": "3",
                "OS_USERNAME": user,
                "OS_PASSWORD": password if password is not None else self.password,
                "OS_PROJECT_NAME": project or "admin",
                "OS_USER_DOMAIN_NAME": "Default",
                "OS_PROJECT_DOMAIN_NAME": "Default",
                "OS_REGION_NAME": "RegionOne",
                "OS_INTERFACE": "public",
            })
        return env

    def osc(self, *args, user=None, project=None, password=None, expect_fail=False,
            json_output=None):
        """Run `openstack ARGS`. Returns parsed JSON (for create/show/list/issue), the
        stdout text (other commands), or - with expect_fail=True - the CompletedProcess of the
        failed command (asserting that it did fail)."""
        args = [str(a) for a in args]
        if json_output is None:
            verbs = [a for a in args[:3] if not a.startswith("-")]
            json_output = any(v in _JSON_VERBS for v in verbs)
        cmd = [OPENSTACK] + args + (["-f", "json"] if json_output else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT,
                           env=self.env(user, project, password))
        shown = "openstack " + " ".join(args)
        if expect_fail:
            assert p.returncode != 0, (f"`{shown}` was expected to fail but succeeded:\n"
                                       f"{p.stdout}")
            return p
        assert p.returncode == 0, (f"`{shown}` failed (rc {p.returncode}):\n"
                                   f"stderr: {p.stderr.strip()}\nstdout: {p.stdout.strip()}")
        if json_output:
            try:
                return json.loads(p.stdout) if p.stdout.strip() else None
            except ValueError:
                raise AssertionError(f"`{shown}` printed non-JSON output:\n{p.stdout}")
        return p.stdout

    # ---- identity helpers (through the CLI)
    def make_user(self, role="member", project=None):
        """Create (if needed) a project and a user with ROLE on it; return
        (project_name, project_id, user_name, password)."""
        project = project or uniq("proj")
        existing = self.osc("project", "list")
        if project not in [p["Name"] for p in existing]:
            self.osc("project", "create", "--domain", "default", project)
        pid = self.osc("project", "show", project)["id"]
        user, pw = uniq("user"), "pw-" + uuid.uuid4().hex[:12]
        self.osc("user", "create", "--domain", "default", "--password", pw, user)
        self.osc("role", "add", "--project", project, "--user", user, role)
        return project, pid, user, pw


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def e2e_tmp():
    d = Path(tempfile.mkdtemp(prefix="neutrino-e2e-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def cloud(request, e2e_tmp):
    backend = request.param
    workdir = e2e_tmp / backend
    workdir.mkdir()
    servers, db = [], None
    try:
        if backend == "sqlite":
            servers.append(start_all_in_one(workdir))
        else:
            db = PgDatabase()
            servers.append(start_pg_server(workdir, db.url, "pw-" + uuid.uuid4().hex))
        yield Cloud(backend, servers, workdir)
    finally:
        for s in servers:
            s.stop()
        if db:
            db.drop()


@pytest.fixture(scope="session")
def pg_pair(e2e_tmp):
    """Two `neutrino server` processes on one fresh PostgreSQL database."""
    workdir = e2e_tmp / "pg-pair"
    workdir.mkdir()
    db = PgDatabase()
    servers = []
    pw = "pw-" + uuid.uuid4().hex
    try:
        servers.append(start_pg_server(workdir, db.url, pw, name="server-a"))
        servers.append(start_pg_server(workdir, db.url, pw, name="server-b"))
        yield Cloud("postgresql-pair", servers, workdir)
    finally:
        for s in servers:
            s.stop()
        db.drop()


@pytest.fixture
def osc(cloud):
    return cloud.osc


@pytest.fixture
def admin_project_id(cloud):
    return cloud.osc("project", "show", "admin")["id"]


@pytest.fixture
def sdk(cloud):
    import openstack

    conn = openstack.connection.Connection(
        auth_url=cloud.identity_url + "/v3", username="admin", password=cloud.password,
        project_name="admin", user_domain_name="Default", project_domain_name="Default",
        region_name="RegionOne", identity_api_version="3", interface="public")
    yield conn
    conn.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _RUNNING:
        for s in list(_RUNNING):
            rep.sections.append((f"{s.name} stderr (last lines)", s.tail()))


def pytest_configure(config):
    # openstacksdk warns about its own internals on every call; that is not our concern.
    config.addinivalue_line("filterwarnings", "ignore:::openstack(\\..*)?")
