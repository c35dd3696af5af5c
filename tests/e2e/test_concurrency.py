"""Two `neutrino server` replicas on one PostgreSQL database, hammered concurrently.

The database enforces the invariants (unique address per network, unique MAC per network,
revision checks), so racing clients on different servers must never get the same address or
MAC, and exactly one of several conditional updates of the same revision may win."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from conftest import Http, get_token, uniq

CLIENTS = 32


def test_token_shared_between_replicas(pg_pair):
    a, b = pg_pair.servers
    token, body = get_token(a.identity_url, pg_pair.password)
    st, _, res = Http.request("GET", b.api_url + "/v2.0/networks", token=token)
    assert st == 200, res
    # and the other way round, through the identity API too
    token_b, _ = get_token(b.identity_url, pg_pair.password)
    st, _, res = Http.request("GET", a.api_url + "/v2.0/networks", token=token_b)
    assert st == 200, res
    st, _, res = Http.request("GET", a.identity_url + "/v3/auth/tokens", token=token,
                              headers={"X-Subject-Token": token_b})
    assert st == 200, res
    # a resource created through one replica is visible through the other
    st, _, net = Http.request("POST", a.api_url + "/v2.0/networks",
                              {"network": {"name": uniq("shared")}}, token=token)
    assert st == 201, net
    nid = net["network"]["id"]
    st, _, got = Http.request("GET", b.api_url + f"/v2.0/networks/{nid}", token=token_b)
    assert st == 200 and got["network"]["name"] == net["network"]["name"]
    st, _, _ = Http.request("DELETE", b.api_url + f"/v2.0/networks/{nid}", token=token)
    assert st == 204


def test_concurrent_port_creation_exhausts_subnet_without_duplicates(pg_pair):
    servers = pg_pair.servers
    token, _ = get_token(servers[0].identity_url, pg_pair.password)
    api = servers[0].api_url + "/v2.0"
    st, _, net = Http.request("POST", api + "/networks",
                              {"network": {"name": uniq("race")}}, token=token)
    assert st == 201, net
    nid = net["network"]["id"]
    st, _, sub = Http.request("POST", api + "/subnets", {"subnet": {
        "network_id": nid, "ip_version": 4, "cidr": "10.200.0.0/24"}}, token=token)
    assert st == 201, sub
    pool_size = 253  # .2 .. .254

    created, failures, unexpected = [], Counter(), []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client(i):
        base = servers[i % len(servers)].api_url + "/v2.0"
        start.wait()
        while True:
            st, _, body = Http.request("POST", base + "/ports", {"port": {
                "network_id": nid, "name": f"c{i}"}}, token=token, timeout=120)
            with lock:
                if st == 201:
                    created.append(body["port"])
                    continue
                if st == 409:
                    failures[body.get("NeutronError", {}).get("type")] += 1
                else:
                    unexpected.append((i, st, body))
                return

    try:
        with ThreadPoolExecutor(max_workers=CLIENTS) as ex:
            list(ex.map(client, range(CLIENTS)))
        assert not unexpected, f"unexpected answers: {unexpected[:5]}"
        ips = [p["fixed_ips"][0]["ip_address"] for p in created]
        dup_ips = [ip for ip, n in Counter(ips).items() if n > 1]
        assert not dup_ips, f"same address handed out twice: {dup_ips}"
        macs = [p["mac_address"] for p in created]
        dup_macs = [m for m, n in Counter(macs).items() if n > 1]
        assert not dup_macs, f"duplicate MACs: {dup_macs}"
        assert len(created) == pool_size
        assert set(ips) == {f"10.200.0.{i}" for i in range(2, 255)}
        # every client ended with the subnet-full answer
        assert failures == Counter({"IpAddressGenerationFailure": CLIENTS}), failures
        # and the stored state agrees, seen through the other server
        st, _, listed = Http.request("GET", servers[1].api_url +
                                     f"/v2.0/ports?network_id={nid}", token=token)
        assert st == 200
        assert sorted(p["id"] for p in listed["ports"]) == sorted(p["id"] for p in created)
    finally:
        st, _, listed = Http.request("GET", api + f"/ports?network_id={nid}", token=token)
        with ThreadPoolExecutor(max_workers=8) as ex:
            list(ex.map(lambda p: Http.request("DELETE", api + f"/ports/{p['id']}",
                                               token=token),
                        (listed or {}).get("ports", [])))
        Http.request("DELETE", api + f"/subnets/{sub['subnet']['id']}", token=token)
        Http.request("DELETE", api + f"/networks/{nid}", token=token)


def test_if_match_revision_only_one_winner(pg_pair):
    servers = pg_pair.servers
    token, _ = get_token(servers[0].identity_url, pg_pair.password)
    api = servers[0].api_url + "/v2.0"
    st, _, net = Http.request("POST", api + "/networks",
                              {"network": {"name": uniq("ifmatch")}}, token=token)
    assert st == 201, net
    nid = net["network"]["id"]
    try:
        for rnd in range(5):
            st, _, cur = Http.request("GET", api + f"/networks/{nid}", token=token)
            rev = cur["network"]["revision_number"]
            barrier = threading.Barrier(16)

            def put(i):
                base = servers[i % 2].api_url + "/v2.0"
                barrier.wait()
                return i, Http.request(
                    "PUT", base + f"/networks/{nid}",
                    {"network": {"name": f"r{rnd}-w{i}"}}, token=token,
                    headers={"If-Match": f"revision_number={rev}"})

            with ThreadPoolExecutor(max_workers=16) as ex:
                results = list(ex.map(put, range(16)))
            codes = Counter(st for _, (st, _, _) in results)
            assert codes == Counter({200: 1, 412: 15}), (rnd, codes, [
                b for _, (s, _, b) in results if s not in (200, 412)][:3])
            winner = next(i for i, (st, _, _) in results if st == 200)
            st, _, now = Http.request("GET", servers[1].api_url + f"/v2.0/networks/{nid}",
                                      token=token)
            assert now["network"]["name"] == f"r{rnd}-w{winner}"
            assert now["network"]["revision_number"] == rev + 1
        # a stale revision is refused, the current one accepted
        st, _, body = Http.request("PUT", api + f"/networks/{nid}",
                                   {"network": {"description": "x"}}, token=token,
                                   headers={"If-Match": f"revision_number={rev}"})
        assert st == 412, body
        st, _, body = Http.request("PUT", api + f"/networks/{nid}",
                                   {"network": {"description": "x"}}, token=token,
                                   headers={"If-Match": f"revision_number={rev + 1}"})
        assert st == 200, body
    finally:
        Http.request("DELETE", api + f"/networks/{nid}", token=token)
