#!/usr/bin/env python3
"""``GET /cluster/resources`` with 10,000 VMs on a 3-node lab at 50 concurrent clients, against
``GET /version`` in the same run.

Usage: .venv/bin/python bench/cluster_resources.py [--vms 10000] [--clients 50] [--requests 400]
                                                   [--web-workers 1] [--no-append]

Three lab nodes (whole node runners: corosync, replicator, web, worker, pvestatd) hold
``--vms`` VM configs spread over the nodes; the clients (threads of this process, over HTTPS
with keep-alive, bodies read but not decoded) all ask node1 as root@pam. ``/version`` is the
floor: the same TLS, authentication and envelope with nothing to compute. Target: p99 of
``/cluster/resources`` under 200 ms.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import django
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()

from bench.harness import Timing, command_line, heading, publish  # noqa: E402
from cluster.lab import services  # noqa: E402
from cluster.lab.cluster import LabCluster  # noqa: E402
from tests.cluster.replication import submit, vm_op  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402

PASSWORD = "bench-resources-password"


def _up(cluster: LabCluster) -> None:
    cluster.up()
    cluster.connect_host()


def _preparer(web_workers: int):
    def prepare(cluster: LabCluster) -> None:
        for node in cluster.nodes:
            node.env.update(services.web_environment(node.address))
            node.env["PVE_WEB_WORKERS"] = str(web_workers)

    return prepare


def fill(lab: LabCluster, count: int) -> None:
    names = [node.name for node in lab.nodes]
    for start in range(0, count, 500):
        ops = [
            vm_op(1000 + i, names[i % len(names)], name=f"bench{i}", memory="512", cores="2")
            for i in range(start, min(count, start + 500))
        ]
        answer = submit(lab.nodes[0], ops, timeout=120)
        if not answer.get("ok"):
            raise RuntimeError(f"filling the cluster failed: {answer}")


def load(base: str, ca: str, ticket: str, path: str, clients: int, total: int) -> tuple[Timing, float]:
    """``total`` GETs of ``path`` by ``clients`` threads, each with its own keep-alive session."""
    local = threading.local()
    samples: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
            session.verify = ca
            session.cookies.set("PVEAuthCookie", ticket)
        started = time.perf_counter()
        response = session.get(f"{base}{path}", timeout=120)
        _ = response.content
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path}: {response.status_code} {response.reason}")
        with lock:
            samples.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(total)))
    return Timing(samples), total / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--web-workers", type=int, default=1, help="PVE_WEB_WORKERS of the lab nodes")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-resources-") as tmp:
        tag = f"br{int(time.time()) % 10000}"
        with running_lab(
            Path(tmp),
            3,
            tag=tag,
            root_password=PASSWORD,
            up=_up,
            prepare=_preparer(args.web_workers),
            kind="node",
            timeout=180,
        ) as lab:
            for node in lab.nodes:
                services.wait_web(
                    services.portal_url(node.address) + "admin/login/", services.ca_path(node.directory), None
                )
            fill(lab, args.vms)
            node1 = lab.nodes[0]
            base = f"https://{node1.address}:8006/api2/json"
            ca = str(services.ca_path(node1.directory))
            login = requests.post(
                f"{base}/access/ticket", {"username": "root@pam", "password": PASSWORD}, verify=ca, timeout=30
            )
            ticket = login.json()["data"]["ticket"]
            probe = requests.get(f"{base}/cluster/resources", cookies={"PVEAuthCookie": ticket}, verify=ca, timeout=120)
            entries = probe.json()["data"]
            vms = sum(1 for entry in entries if entry["type"] == "qemu")
            if vms != args.vms:
                raise RuntimeError(f"/cluster/resources lists {vms} VMs, not {args.vms}")
            size = len(probe.content)
            sent = int(probe.headers.get("Content-Length", size))
            load(base, ca, ticket, "/version", args.clients, args.clients)  # warm the connections
            version, version_rate = load(base, ca, ticket, "/version", args.clients, args.requests)
            resources, resources_rate = load(base, ca, ticket, "/cluster/resources", args.clients, args.requests)
    text = "\n".join(
        [
            heading(
                f"/cluster/resources, {args.vms} VMs on 3 lab nodes, {args.clients} concurrent clients, "
                f"{args.web_workers} web worker(s)"
            ),
            "",
            command_line(args, "vms", "clients", "requests", "web_workers"),
            "",
            f"Answer: {len(entries)} entries, {size / 1e6:.1f} MB of JSON, {sent / 1e6:.2f} MB sent "
            f"({probe.headers.get('Content-Encoding', 'identity')}). Each line: {args.requests} requests.",
            "",
            "| request | p50 | p99 | requests/s | p50 ratio to /version |",
            "|---|---|---|---|---|",
            f"| GET /version | {version.p50:.1f} ms | {version.p99:.1f} ms | {version_rate:.0f} | 1.0 |",
            f"| GET /cluster/resources | {resources.p50:.1f} ms | {resources.p99:.1f} ms | {resources_rate:.1f} "
            f"| {resources.ratio(version.p50):.1f} |",
            "",
        ]
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
