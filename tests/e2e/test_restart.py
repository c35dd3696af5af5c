"""`neutrino all-in-one` keeps everything across a restart with the same state directory.

The issue's promise: "Restarting with the same DIR keeps all data", including the admin
password (generated once), so clouds.yaml and tokens issued before keep working for the
openstack client.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import get_token, start_all_in_one, uniq


def _openstack(clouds_yaml: Path, *args: str) -> dict:
    exe = Path(sys.executable).with_name("openstack")
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds_yaml), OS_CLOUD="neutrino")
    out = subprocess.run([str(exe), *args, "-f", "json"], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout)


def test_restart_keeps_data_and_password(tmp_path):
    srv = start_all_in_one(tmp_path)
    try:
        password = srv.password
        name = uniq("persist")
        net = _openstack(srv.clouds_yaml, "network", "create", name)
        _openstack(srv.clouds_yaml, "subnet", "create", "--network", name,
                   "--subnet-range", "10.77.0.0/24", name + "-s")
        port = _openstack(srv.clouds_yaml, "port", "create", "--network", name, name + "-p")
        token, _ = get_token(srv.identity_url, password)
    finally:
        srv.stop()

    # Same state directory, new ports: the data, the password and the tokens survive.
    srv2 = start_all_in_one(tmp_path)
    try:
        assert srv2.password == password, "the admin password must be generated only once"
        shown = _openstack(srv2.clouds_yaml, "network", "show", name)
        assert shown["id"] == net["id"]
        assert len(shown["subnets"]) == 1
        p = _openstack(srv2.clouds_yaml, "port", "show", port["id"])
        assert p["fixed_ips"] == port["fixed_ips"]
        # A token issued before the restart is still valid (tokens live in the store).
        import urllib.request
        req = urllib.request.Request(srv2.api_url + "/v2.0/networks/" + net["id"],
                                     headers={"X-Auth-Token": token})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
    finally:
        srv2.stop()
