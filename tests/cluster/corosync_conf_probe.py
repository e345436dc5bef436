"""Run inside a lab node's namespace with that node's environment: change corosync.conf, watch cmap.

``create`` gives the lab node's database the lab's corosync identity; ``bump`` changes the token
and waits until the running corosync (reloaded by the node's replicator) reports the new
config_version. Prints JSON.
"""

from __future__ import annotations

import json
import sys
import time

import django

django.setup()

from cluster.corosync import conf as corosync_conf  # noqa: E402
from replicator import client  # noqa: E402
from replicator.corosync.cmap import Cmap  # noqa: E402

# What the lab's own corosync.conf says, so that a reload changes nothing but what the test changes.
LAB_TOTEM = {
    "crypto_cipher": "none",
    "crypto_hash": "none",
    "ip_version": "ipv4-6",
    "link_mode": "passive",
    "token": 1000,
    "transport": "knet",
    "version": 2,
}
LAB_SECTIONS = {"logging": {"debug": "off", "to_stderr": "yes", "to_syslog": "no"}, "system": {"sched_rr": "no"}}


def cmap_state() -> dict[str, int | None]:
    cmap = Cmap()
    try:
        return {"config_version": cmap.get_uint("totem.config_version"), "token": cmap.get_uint("totem.token")}
    finally:
        cmap.close()


def main() -> dict[str, object]:
    if sys.argv[1] == "create":
        version = corosync_conf.create_cluster(sys.argv[2], totem=LAB_TOTEM, sections=LAB_SECTIONS)
    else:
        version = corosync_conf.update_options(totem={"token": int(sys.argv[2])})
    client.wait_mirror(int(client.status()["version"]))
    deadline = time.monotonic() + 20
    state = cmap_state()
    while sys.argv[1] == "bump" and state["config_version"] != version and time.monotonic() < deadline:
        time.sleep(0.1)
        state = cmap_state()
    return {"version": version, "cmap": state}


if __name__ == "__main__":
    print(json.dumps(main()))
