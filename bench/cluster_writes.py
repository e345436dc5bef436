#!/usr/bin/env python3
"""Replication on a lab cluster (3 or 5 nodes in network namespaces), against its floor.

Usage: .venv/bin/python bench/cluster_writes.py [--nodes 3] [--writes 2000] [--no-append]

Measured in one run on one lab (real corosync per node namespace, a replicator per node):
  floor: raw CPG agreed-delivery round trip on node1 plus an fsync'd SQLite commit;
  single writer: ``VM.save()`` through the ORM, IPC, replicator, CPG, apply on every node,
  quorum acknowledgement; p50/p99 and writes/s;
  throughput with one writer process per node;
  rejoin: a node's replicator down while 5,000 change sets are written, then restarted;
  cold sync: a node with an empty database joining a cluster holding 50,000 VMs;
  partition: time until the cut-off node is read-only, and writable again after heal;
  replicator RSS on node1 holding that many VMs.
Results are appended to BENCHMARKS.md with the command line.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import (  # noqa: E402
    Timing,
    command_line,
    concurrent_writers,
    heading,
    publish,
    raw_sqlite_commits,
    single_writer,
)
from cluster.lab import services  # noqa: E402
from cluster.lab.cluster import LabNode  # noqa: E402
from replicator import client  # noqa: E402
from tests.cluster.replication import status, submit, vm_op  # noqa: E402
from tests.lab_fixture import running_lab  # noqa: E402


def bulk_vms(node: LabNode, first: int, count: int, per_changeset: int = 50) -> None:
    """Many VMs quickly: several VMs per change set (the state size matters here, not the rate)."""
    for start in range(first, first + count, per_changeset):
        ops = [vm_op(v, "node1") for v in range(start, min(start + per_changeset, first + count))]
        result = submit(node, ops, timeout=60)
        assert result["ok"], result


def writes(node: LabNode, first: int, count: int) -> None:
    for vmid in range(first, first + count):
        result = submit(node, [vm_op(vmid, "node1")])
        assert result["ok"], result


def time_until(predicate, timeout: float = 120) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise RuntimeError("timed out")
        time.sleep(0.01)
    return time.monotonic() - start


def in_sync_with(node: LabNode, other: LabNode) -> bool:
    a, b = status(node), status(other)
    return bool(a.get("synced") and a.get("quorate") and a.get("version") == b.get("version"))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--cold", type=int, default=50_000)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    tmp = Path(tempfile.mkdtemp(prefix="pve-cbench-"))
    try:
        with running_lab(tmp / "lab", args.nodes, env={"PVE_LOG_LEVEL": "WARNING"}) as lab:
            first, last = lab.nodes[0], lab.nodes[-1]
            ping = lab.python(first, REPO / "bench" / "cpg_ping.py", str(args.writes))
            cpg = json.loads(ping.stdout)["samples"]
            raw = raw_sqlite_commits(first.directory / "raw.db", args.writes)
            results["cpg"] = Timing(cpg)
            with multiprocessing.get_context("spawn").Pool(len(lab.nodes)) as pool:
                together = pool.starmap(
                    raw_sqlite_commits, [(n.directory / "raw-together.db", args.writes) for n in lab.nodes]
                )
            results["fsync_together"] = Timing(together[0]).p50
            results["fsync"] = Timing(raw)
            host = ("PVE_TRANSPORT",)  # writers run on the host, with the transport setting left at its default
            results["single"] = single_writer(
                first.env, args.writes, 1_000_000, name="b", config={"memory": "512"}, without=host
            )
            results["per_node_rate"] = concurrent_writers(
                [n.env for n in lab.nodes], args.writes, 2_000_000, without=host
            )

            # rejoin after 5,000 missed change sets
            lab.stop_service(last)
            writes(first, 3_000_000, 5_000)
            started = time.monotonic()
            lab.start_service(last)
            time_until(lambda: in_sync_with(last, first))
            results["rejoin"] = (time.monotonic() - started, status(last)["last_sync"])

            # cold sync: an empty node joins a cluster holding --cold VMs
            bulk_vms(first, 4_000_000, args.cold - 5_000 - args.writes * (1 + args.nodes))
            lab.stop_service(last)
            for name in ("cluster.db", "cluster.db-wal", "cluster.db-shm"):
                (last.directory / name).unlink(missing_ok=True)
            services.manage(last.env, "migrate", "--database", "cluster", "--verbosity", "0")
            started = time.monotonic()
            lab.start_service(last)
            time_until(lambda: in_sync_with(last, first), 300)
            results["cold"] = (time.monotonic() - started, status(last)["last_sync"])
            results["vms"] = int(
                client.request_at(first.socket_path, {"op": "checksum"}, timeout=60)["rows"]
            )  # rows of every replicated model
            results["rss"] = rss_mb(first.service.pid)

            # partition and heal
            lab.partition(last)
            partition_ro = time_until(lambda: not status(last).get("quorate"), 60)
            lab.heal()
            healed = time.monotonic()
            time_until(
                lambda: submit(last, [vm_op(5_000_000 + int(time.time() * 1000) % 1_000_000, "node1")])["ok"], 60
            )
            results["partition"] = (partition_ro, time.monotonic() - healed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, results)


def report(args: argparse.Namespace, r: dict) -> None:  # type: ignore[type-arg]
    floor = r["cpg"].p50 + r["fsync"].p50
    rejoin_s, rejoin = r["rejoin"]
    cold_s, cold = r["cold"]
    lines = [
        heading(f"Replication on a {args.nodes}-node lab cluster"),
        "",
        f"Command: {command_line(args, 'nodes', 'writes', 'cold')}"
        f" ({os.cpu_count()} CPUs; corosync knet, token 1000 ms, no crypto, sched_rr off)",
        "",
        "| measurement | p50 ms | p99 ms | ratio p50 to floor |",
        "|---|---|---|---|",
        f"| raw CPG agreed round trip | {r['cpg'].p50:.3f} | {r['cpg'].p99:.3f} | |",
        f"| raw SQLite commit (WAL, synchronous=FULL) | {r['fsync'].p50:.3f} | {r['fsync'].p99:.3f} | |",
        f"| floor (sum) | {floor:.3f} | | 1.00 |",
        f"| (same commit on every node's directory at once: all nodes share this host's disk) "
        f"| {r['fsync_together']:.3f} | | |",
        f"| replicated `VM.save()`, one writer | {r['single'].p50:.3f} | {r['single'].p99:.3f} | "
        f"{r['single'].ratio(floor):.2f} |",
        "",
        f"- Writes/s: one writer {r['single'].rate:,.0f}; one writer process per node ({args.nodes}) "
        f"{r['per_node_rate']:,.0f}.",
        f"- Rejoin after missing 5,000 change sets: {rejoin_s:.2f} s from replicator start to in sync "
        f"(sync round {rejoin['seconds']:.2f} s, {rejoin['kind']}, {rejoin['entries']} entries).",
        f"- Cold sync of an empty node, {r['vms']:,} rows: {cold_s:.2f} s from replicator start "
        f"(sync round {cold['seconds']:.2f} s, {cold['kind']}, {cold['entries']} entries).",
        f"- Partition: read-only after {r['partition'][0]:.2f} s; writable {r['partition'][1]:.2f} s after heal.",
        f"- Replicator RSS on node1 with {r['vms']:,} rows: {r['rss']:.0f} MB.",
        "",
    ]
    publish("\n".join(lines), append=not args.no_append)


if __name__ == "__main__":
    main()
