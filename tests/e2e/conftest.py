"""End-to-end fixtures: real `neutrino` processes driven by the real `openstack` CLI and
openstacksdk.

Backends (the `cloud` fixture is parametrised over both):
  sqlite      one `neutrino all-in-one` (embedded Keystone + API, SQLite in a temp dir)
  postgresql  one `neutrino server` on a fresh PostgreSQL database (created here, dropped at
              the end). PostgreSQL is REQUIRED: if it cannot be reached these tests fail.

`pg_pair` starts TWO `neutrino server` processes sharing one fresh PostgreSQL database
(used by test_concurrency.py).

`sqlite_cloud` is one more all-in-one (SQLite only) for scenario tests that need not run on
both backends; `all_in_one` starts dedicated all-in-ones with extra configuration (e.g.
`[DEFAULT] agent_down_time = 3`), stopped when the test ends.

Works under pytest-xdist: every worker starts its own servers (random ports, own temp dir,
own PostgreSQL databases).

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


class PortClash(Exception):
    """Another process took one of the free ports picked for a server (several pytest-xdist
    workers pick ports concurrently); the caller retries with new ports."""


def _start_retrying(start, attempts=3):
    for i in range(attempts):
        try:
            return start()
        except PortClash:
            if i == attempts - 1:
                raise


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
        pending = [self.api_url + "/", self.identity_url + "/v3", None]
        while pending:
            if self.proc.poll() is not None:
                if "cannot listen on" in self.tail():
                    self.stop()
                    raise PortClash(self.tail(5))
                pytest.fail(f"{self.name} exited with {self.proc.returncode} during start-up:\n"
                            f"{self.tail()}", pytrace=False)
            if pending[0] is None:  # both answered, and the process is still ours
                pending.pop(0)
                continue
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


def start_all_in_one(workdir: Path, config: str | None = None, name="all-in-one") -> Server:
    """Start `neutrino all-in-one` in WORKDIR; CONFIG is the text of an extra INI file
    (`--config-file`), e.g. "[DEFAULT]\nagent_down_time = 3\n"."""
    return _start_retrying(lambda: _start_all_in_one(workdir, config, name))


def _start_all_in_one(workdir: Path, config: str | None, name: str) -> Server:
    state = workdir / "state"
    api, ident = free_port(), free_port()
    # API-only: several all-in-ones run at once here, and their host agents would share the
    # machine's namespace. Dataplane tests run agents inside test namespaces instead.
    args = [neutrino_bin(), "all-in-one", "--no-agent", "--state-dir", str(state),
            "--identity-port", str(ident), "--api-port", str(api), "--bind-host", "127.0.0.1"]
    if config:
        conf = workdir / f"{name}.conf"
        conf.write_text(config)
        args += ["--config-file", str(conf)]
    srv = Server(name, args, workdir, api, ident)
    srv.wait_ready()
    srv.state_dir = state
    # clouds.yaml and the admin password are written by the server itself.
    deadline = time.time() + 10
    while not (state / "clouds.yaml").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (state / "clouds.yaml").exists(), "all-in-one did not write clouds.yaml"
    srv.clouds_yaml = state / "clouds.yaml"
    srv.password = (state / "admin-password").read_text().strip()
    return srv


def start_pg_server(workdir: Path, db_url: str, password: str, name="server") -> Server:
    return _start_retrying(lambda: _start_pg_server(workdir, db_url, password, name))


def _start_pg_server(workdir: Path, db_url: str, password: str, name: str) -> Server:
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


class Account:
    """A user with a role on a project (see Cloud.new_account); `osc` runs the CLI as it."""

    def __init__(self, cloud, project, project_id, user, user_id, password):
        self.cloud = cloud
        self.project, self.project_id = project, project_id
        self.user, self.user_id, self.password = user, user_id, password
        self._token = None

    def osc(self, *args, **kw):
        return self.cloud.osc(*args, user=self.user, project=self.project,
                              password=self.password, **kw)

    def token(self) -> str:
        if not self._token:
            self._token, _ = get_token(self.cloud.identity_url, self.password, self.user,
                                       self.project)
        return self._token

    def api(self, method, path, body=None):
        return self.cloud.api(method, path, body, token=self.token())


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

    # ---- identity helpers (plain HTTP: fast set-up, ~1 ms instead of ~1.5 s per CLI call)
    def identity(self, method, path, body=None):
        return Http.request(method, self.identity_url + "/v3" + path, body,
                            token=self.admin_token())

    def role_id(self, name: str, create=True):
        st, _, body = self.identity("GET", "/roles")
        assert st == 200, body
        for r in body["roles"]:
            if r["name"] == name:
                return r["id"]
        if not create:
            return None
        st, _, body = self.identity("POST", "/roles", {"role": {"name": name}})
        assert st == 201, body
        return body["role"]["id"]

    def new_account(self, role="member", project=None, project_id=None, user=None,
                    password=None, project_description="") -> Account:
        """Create (through the identity API) a user with ROLE on a project; the project is
        created unless PROJECT_ID names an existing one. Remove with delete_account."""
        project = project or uniq("proj")
        if project_id is None:
            st, _, body = self.identity("POST", "/projects", {"project": {
                "name": project, "domain_id": "default", "description": project_description,
                "enabled": True}})
            assert st == 201, body
            project_id = body["project"]["id"]
        user = user or uniq("user")
        password = password or "pw-" + uuid.uuid4().hex[:12]
        st, _, body = self.identity("POST", "/users", {"user": {
            "name": user, "password": password, "domain_id": "default", "enabled": True}})
        assert st == 201, body
        user_id = body["user"]["id"]
        st, _, body = self.identity(
            "PUT", f"/projects/{project_id}/users/{user_id}/roles/{self.role_id(role)}")
        assert st in (200, 201, 204), body
        return Account(self, project, project_id, user, user_id, password)

    def delete_account(self, acct: Account, project=True):
        self.identity("DELETE", f"/users/{acct.user_id}")
        if project:
            self.identity("DELETE", f"/projects/{acct.project_id}")

    # ---- agents (the agent sync protocol, as the `neutrino-agent` service user)
    def agent_token(self) -> str:
        state = getattr(self.server, "state_dir", None)
        assert state is not None, "agent credentials are only known for an all-in-one"
        pw = (state / "agent-password").read_text().strip()
        tok, _ = get_token(self.identity_url, pw, user="neutrino-agent", project="service")
        return tok

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
    # A fresh directory each time: under pytest-xdist a worker may need this fixture again
    # with a parameter it already tore down.
    workdir = Path(tempfile.mkdtemp(prefix=backend + "-", dir=e2e_tmp))
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
def sqlite_cloud(e2e_tmp):
    """One all-in-one on SQLite for the whole session (scenario tests that need not run on
    both backends: the foundation tests already cover PostgreSQL)."""
    workdir = Path(tempfile.mkdtemp(prefix="sqlite-only-", dir=e2e_tmp))
    srv = start_all_in_one(workdir)
    try:
        yield Cloud("sqlite", [srv], workdir)
    finally:
        srv.stop()


@pytest.fixture
def all_in_one(e2e_tmp):
    """Factory: `all_in_one(config_text)` starts a dedicated all-in-one with that extra INI
    configuration and returns its Cloud; every one started is stopped when the test ends."""
    started: list[Server] = []

    def start(config: str | None = None) -> Cloud:
        workdir = Path(tempfile.mkdtemp(prefix="aio-", dir=e2e_tmp))
        srv = start_all_in_one(workdir, config)
        started.append(srv)
        return Cloud("sqlite", [srv], workdir)

    try:
        yield start
    finally:
        for s in started:
            s.stop()


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
    # For fixtures that print diagnostics when their test failed (request.node.rep_call):
    # pytest only takes this hook from conftest.py or plugins, not from test modules.
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed and _RUNNING:
        for s in list(_RUNNING):
            rep.sections.append((f"{s.name} stderr (last lines)", s.tail()))


def pytest_configure(config):
    # openstacksdk warns about its own internals on every call; that is not our concern.
    config.addinivalue_line("filterwarnings", "ignore:::openstack(\\..*)?")
