"""Node networking in a throwaway network namespace: the interface listing (``ip -j``) and tap
rate limits (``tc``), run with the real kernel."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, subprocess, sys
from vms import host_network, network
def ip(*a): subprocess.run(["ip", *a], check=True)
ip("link", "set", "lo", "up")
ip("link", "add", "eth0", "type", "veth", "peer", "name", "peer0"); ip("addr", "add", "10.9.0.2/24", "dev", "eth0"); ip("link", "set", "eth0", "up")
ip("link", "add", "vmbr0", "type", "bridge"); ip("link", "set", "vmbr0", "up")
ip("addr", "add", "192.0.2.1/24", "dev", "vmbr0")
ip("link", "add", "vmbr1", "type", "bridge")
ip("link", "add", "eth1", "type", "veth", "peer", "name", "peer1")
ip("link", "set", "eth1", "master", "vmbr1")
network.plug_tap("tap900i0", "vmbr0", rate=2.5)
network.plug_tap("tap900i1", "vmbr1", link_down=True)
try:
    network.plug_tap("tap900i2", "nosuchbridge")
    refused = ""
except network.NetworkError as exc:
    refused = str(exc)
qdiscs = json.loads(subprocess.run(["tc", "-j", "qdisc", "show", "dev", "tap900i0"], capture_output=True, text=True).stdout)
network.set_rate("tap900i0", None)
after = json.loads(subprocess.run(["tc", "-j", "qdisc", "show", "dev", "tap900i0"], capture_output=True, text=True).stdout)
print(json.dumps({
    "all": host_network.interfaces(), "bridges": host_network.interfaces("any_bridge"),
    "eths": host_network.interfaces("eth"), "qdiscs": qdiscs, "after": after, "refused": refused,
    "links": sorted(__import__("os").listdir("/sys/class/net")),
}))
"""


@pytest.fixture(scope="module")
def listing() -> dict:
    namespace = f"pvetest-net-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    try:
        done = subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", SCRIPT],
            cwd=REPO, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)
    finally:
        subprocess.run(["ip", "netns", "del", namespace], check=False)


def test_interfaces_are_listed_with_proxmox_fields(listing):
    by_name = {entry["iface"]: entry for entry in listing["all"]}
    assert set(by_name) == {"eth0", "eth1", "vmbr0", "vmbr1"}, "no taps, veth peers or loopback"
    vmbr0 = by_name["vmbr0"]
    assert vmbr0["type"] == "bridge" and vmbr0["active"] == 1 and vmbr0["address"] == "192.0.2.1"
    assert vmbr0["cidr"] == "192.0.2.1/24" and vmbr0["netmask"] == "255.255.255.0" and vmbr0["method"] == "static"
    assert vmbr0["bridge_ports"] == "" and vmbr0["families"] == ["inet"]
    assert by_name["vmbr1"]["bridge_ports"] == "eth1", "taps are not bridge ports of the config"
    assert by_name["vmbr1"]["active"] == 0 and "address" not in by_name["vmbr1"]
    assert by_name["eth0"]["type"] == "eth" and by_name["eth0"]["cidr"] == "10.9.0.2/24"


def test_type_filters(listing):
    assert [entry["iface"] for entry in listing["bridges"]] == ["vmbr0", "vmbr1"]
    assert [entry["iface"] for entry in listing["eths"]] == ["eth0", "eth1"]


def test_tap_rate_is_a_tc_limit_in_megabytes_per_second(listing):
    kinds = {qdisc["kind"]: qdisc for qdisc in listing["qdiscs"]}
    assert "tbf" in kinds  # (this kernel has no tc classifiers: the ingress policing is left out, with a warning)
    assert kinds["tbf"]["options"]["rate"] == int(2.5 * 1024 * 1024)
    assert not {"ingress", "tbf"} & {qdisc["kind"] for qdisc in listing["after"]}, "rate removed"
    assert "tap900i0" in listing["links"] and "tap900i1" in listing["links"]


def test_a_missing_bridge_is_refused_and_leaves_no_tap(listing):
    assert "bridge 'nosuchbridge' does not exist" in listing["refused"]
    assert "tap900i2" not in listing["links"]
