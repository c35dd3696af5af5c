"""Support for the API fuzz test (test_fuzz.py) and the reader-role test: a raw HTTP client that
can send anything (percent escapes and NUL in paths, invalid JSON, huge bodies, any method)
over one keep-alive connection, the checks every answer must pass, and a snapshot of the whole
visible state (every collection as admin, timestamps left out) to prove that a refused request
wrote nothing.

Violations are collected, not raised, so one run reports every distinct problem; each carries
the request as a copy-paste `curl` line and a Python literal to reproduce it.
"""

from __future__ import annotations

import http.client
import json
import shlex
import socket
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

# Collections whose state the snapshot covers (GET /v2.0/<c> as admin lists everything).
SNAPSHOT_COLLECTIONS = (
    "networks", "subnets", "ports", "routers", "floatingips", "security-groups",
    "security-group-rules", "subnetpools", "address-scopes", "address-groups",
    "rbac-policies", "segments",
)
# Attributes that change without any write (or are the write's own clock).
VOLATILE = {"created_at", "updated_at"}


@dataclass
class Req:
    method: str
    path: str                      # as sent on the request line (already percent-encoded)
    body: object = None            # JSON-encodable body
    raw: bytes | None = None       # raw body bytes (wins over `body`)
    template: str = ""             # e.g. "PUT /v2.0/ports/{id}" (groups violations)
    why: str = "valid"             # what the generator did (groups violations)
    expect: object = "ok"          # "ok" (no 5xx), "refuse" (4xx), or a set of statuses
    headers: dict = field(default_factory=dict)
    fresh: bool = False            # send on a new connection (oversized bodies)

    def payload(self) -> bytes | None:
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return None
        return json.dumps(self.body).encode()

    def is_write(self) -> bool:
        return self.method not in ("GET", "HEAD", "OPTIONS")

    def show(self, base_url: str = "http://127.0.0.1:PORT") -> str:
        """How to reproduce: a curl line (when the body is printable) and the Python literal."""
        data = self.payload()
        parts = ["curl -s -i -X", self.method]
        if "X-Auth-Token" not in self.headers:
            parts += ["-H", '"X-Auth-Token: $TOKEN"']
        if data is not None:
            parts += ["-H", "'Content-Type: application/json'"]
        for k, v in self.headers.items():
            parts += ["-H", shlex.quote(f"{k}: {v}")]
        parts.append(shlex.quote(base_url + self.path))
        if data is not None:
            if len(data) > 2000:
                parts.append(f"--data-binary @body  # {len(data)} bytes, starting "
                             f"{data[:40]!r}")
            else:
                try:
                    parts += ["--data-binary", shlex.quote(data.decode("utf-8"))]
                except UnicodeDecodeError:
                    parts.append(f"--data-binary <raw {data!r}>")
        return " ".join(parts)


@dataclass
class Resp:
    status: int
    headers: dict
    raw: bytes
    json: object


class RawClient:
    """One keep-alive HTTP/1.1 connection to the API (like a real client's session). A
    connection that the server closes without saying `Connection: close` is recorded in
    `dropped` (the next request on it fails) and the request is retried on a new one."""

    def __init__(self, api_url: str, token: str, timeout: float = 60):
        u = urllib.parse.urlsplit(api_url)
        self.host, self.port = u.hostname, u.port
        self.base = api_url
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None
        self.last: Req | None = None
        self.last_status = None
        self.dropped: list[tuple[Req | None, int | None, Req]] = []

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.connect()
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, req: Req, token: str | None = None) -> Resp:
        data = req.payload()
        headers = {"Accept": "application/json", "X-Auth-Token": token or self.token}
        if data is not None:
            headers["Content-Type"] = "application/json"
        headers.update(req.headers)
        if req.fresh:
            self.close()
        for attempt in (0, 1):
            reused = self.conn is not None
            if self.conn is None:
                self._connect()
            try:
                try:
                    self.conn.request(req.method, req.path, body=data, headers=headers)
                except (BrokenPipeError, ConnectionResetError):
                    if not req.fresh:
                        raise
                    # The server answered (413) and closed before the whole body was sent:
                    # its answer may still be readable.
                r = self.conn.getresponse()
                raw = r.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.BadStatusLine) as e:
                self.close()
                if not reused or attempt == 1:
                    raise ConnectionError(f"{req.method} {req.path}: {e!r}") from e
                # The server dropped a connection it had not announced closing.
                self.dropped.append((self.last, self.last_status, req))
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        if r.will_close:
            self.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        self.last, self.last_status = req, r.status
        return Resp(r.status, hdrs, raw, payload)


def neutron_error_problem(resp: Resp) -> str | None:
    """None when RESP (a 4xx) carries Neutron's error body, else what is wrong with it."""
    b = resp.json
    if not isinstance(b, dict) or "NeutronError" not in b:
        ct = resp.headers.get("content-type", "")
        return f"not a NeutronError body (content-type {ct!r}, body {resp.raw[:120]!r})"
    e = b["NeutronError"]
    if not isinstance(e, dict):
        return f"NeutronError is not an object: {e!r}"
    if not isinstance(e.get("type"), str) or not e["type"]:
        return f"NeutronError.type missing or not a string: {e!r}"
    if not isinstance(e.get("message"), str):
        return f"NeutronError.message missing or not a string: {e!r}"
    if "detail" not in e:
        return f"NeutronError.detail missing: {e!r}"
    return None


def error_type(resp: Resp) -> str:
    try:
        return resp.json["NeutronError"]["type"]
    except (TypeError, KeyError):
        return "-"


@dataclass
class Violation:
    kind: str          # "5xx", "accepted", "status", "error-body", "partial-write", ...
    req: Req
    status: int | None
    detail: str

    def key(self):
        return (self.kind, self.req.template, self.req.why, self.status)


class Recorder:
    """Collects violations; `report()` groups them (kind, route, what was generated, status)
    with a count and the first request of each group, ready to paste."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.items: list[Violation] = []

    def add(self, kind, req, status, detail):
        self.items.append(Violation(kind, req, status, detail))

    def groups(self):
        out: dict = {}
        for v in self.items:
            out.setdefault(v.key(), []).append(v)
        return out

    def report(self, limit_chars: int = 60000) -> str:
        lines = []
        for (kind, tmpl, why, status), vs in sorted(self.groups().items(),
                                                    key=lambda kv: (kv[0][0], kv[0][1])):
            v = vs[0]
            lines.append(f"[{kind}] {tmpl} ({why}) -> {status}  x{len(vs)}\n"
                         f"    {v.detail[:400]}\n    {v.req.show(self.base_url)[:1500]}")
        text = "\n".join(lines)
        if len(text) > limit_chars:
            text = text[:limit_chars] + f"\n... ({len(lines)} groups in all)"
        return text


def normalise(obj):
    """An object as compared across a refused request: timestamps removed, lists of
    scalars sorted where order carries no meaning (tags)."""
    if isinstance(obj, dict):
        out = {k: normalise(v) for k, v in obj.items() if k not in VOLATILE}
        if isinstance(out.get("tags"), list):
            out["tags"] = sorted(out["tags"], key=str)
        return out
    if isinstance(obj, list):
        return [normalise(v) for v in obj]
    return obj


class Snapshotter:
    """Reads the whole visible state as admin, the lists fetched in parallel (on PostgreSQL a
    list costs a few milliseconds of latency, so one after the other they would dominate the
    run), each thread on its own keep-alive connection."""

    def __init__(self, api_url: str, token: str, workers: int = 6):
        self.api_url, self.token = api_url, token
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.clients: list[RawClient] = []

    def _get(self, path):
        c = getattr(self.local, "client", None)
        if c is None:
            c = self.local.client = RawClient(self.api_url, self.token)
            self.clients.append(c)
        return c.send(Req("GET", path))

    def close(self):
        self.pool.shutdown(wait=True)
        for c in self.clients:
            c.close()

    def take(self, extra_paths=()) -> dict:
        """Everything the admin can list, keyed by collection then id (plus EXTRA_PATHS as
        whole documents: quotas, port forwardings, ...)."""
        paths = [f"/v2.0/{c}" for c in SNAPSHOT_COLLECTIONS] + list(extra_paths)
        answers = dict(zip(paths, self.pool.map(self._get, paths)))
        snap = {}
        for c in SNAPSHOT_COLLECTIONS:
            r = answers[f"/v2.0/{c}"]
            if r.status != 200:
                snap[c] = ("status", r.status)
                continue
            key = c.replace("-", "_")
            items = r.json.get(key, []) if isinstance(r.json, dict) else []
            by_id: dict = {}
            for it in items:
                by_id.setdefault(it.get("id"), []).append(normalise(it))
            snap[c] = by_id
        for p in extra_paths:
            r = answers[p]
            snap[p] = (r.status, normalise(r.json))
        return snap


def diff(before: dict, after: dict, limit=3) -> list[str]:
    """Human-readable differences between two snapshots."""
    out = []
    for c in after:
        a, b = before.get(c), after.get(c)
        if a == b:
            continue
        if not (isinstance(a, dict) and isinstance(b, dict)):
            out.append(f"{c}: {str(a)[:200]} -> {str(b)[:200]}")
            continue
        for i in sorted(set(a) | set(b), key=str):
            if a.get(i) == b.get(i):
                continue
            if i not in a:
                out.append(f"{c}: new object {str(b[i])[:300]}")
            elif i not in b:
                out.append(f"{c}: object {i} disappeared")
            else:
                x, y = a[i][0], b[i][0]
                changed = {k: (x.get(k), y.get(k)) for k in set(x) | set(y)
                           if x.get(k) != y.get(k)}
                out.append(f"{c}/{i}: changed {str(changed)[:300]}")
            if len(out) >= limit:
                return out
    return out
