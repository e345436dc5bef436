#!/usr/bin/env python3
"""Time from ``pvecm add`` to a quorate, synchronised member, for a cluster holding 10,000 VM configs.

Usage: .venv/bin/python bench/cluster_join.py [--vms 10000] [--no-append]

Two standalone lab nodes (whole node runners, real sshd and corosync in namespaces): node1 runs
``pvecm create``, 10,000 VMs are written to it, then node2 runs ``pvecm add`` over SSH. Measured:
the whole ``pvecm add`` command (checks, SSH, addnode, backup, corosync start, replicator
restart, sync by snapshot, certificate), and when node2's state checksum equals node1's.
Target: under 10 s. Results are appended to BENCHMARKS.md with the command line.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import django

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()  # the helpers read key files through the cluster app's modules

from bench.harness import command_line, heading, publish  # noqa: E402
from cluster.lab import standalone  # noqa: E402
from cluster.lab.cluster import LabCluster  # noqa: E402
from tests.cluster.lifecycle import authorize, host_key_fingerprint, manage  # noqa: E402
from tests.cluster.replication import checksum, status, submit, vm_op, wait_for  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402


def fill(lab: LabCluster, count: int) -> None:
    node1 = lab.nodes[0]
    for start in range(0, count, 500):
        ops = [
            vm_op(1000 + i, "node1", name=f"bench{i}", memory="512", cores="2")
            for i in range(start, min(count, start + 500))
        ]
        answer = submit(node1, ops, timeout=120)
        if not answer.get("ok"):
            raise RuntimeError(f"filling the cluster failed: {answer}")


def run(vms: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-join-") as tmp:
        tag = f"bj{int(time.time()) % 10000}"
        with running_lab(Path(tmp), 2, tag=tag, up=standalone.up_standalone, kind="node", timeout=180) as lab:
            node1, node2 = lab.nodes
            created = manage(lab, node1, "pvecm", "create", "bench")
            if created.returncode != 0:
                raise RuntimeError(created.stderr)
            fill(lab, vms)
            authorize(node1, node2)
            started = time.monotonic()
            added = manage(lab, node2, "pvecm", "add", node1.address, "--ssh-fingerprint", host_key_fingerprint(node1))
            add_seconds = time.monotonic() - started
            if added.returncode != 0:
                raise RuntimeError(added.stderr + added.stdout)
            print(added.stdout)
            target = checksum(node1)["checksum"]
            wait_for(lambda: status(node2).get("synced") and checksum(node2)["checksum"] == target, 120, 0.1)
            in_sync = time.monotonic() - started
            return {"add": add_seconds, "in_sync": in_sync, "vms": vms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    result = run(args.vms)
    text = (
        f"\n{heading(f'Joining a node to a cluster of {args.vms:,} VMs')}\n\n"
        f"Command: {command_line(args, 'vms')}\n\n"
        "| measure | seconds | target |\n|---|---|---|\n"
        f"| `pvecm add` over SSH, start to exit (quorate, synced, certificate issued) | {result['add']:.2f} | < 10 |\n"
        f"| start of `pvecm add` to equal state checksums on both nodes | {result['in_sync']:.2f} | < 10 |"
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
