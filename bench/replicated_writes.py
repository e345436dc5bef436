#!/usr/bin/env python3
"""Replicated write latency and throughput on one node, against a raw fsync'd SQLite commit.

Usage: .venv/bin/python bench/replicated_writes.py [--writes N] [--writers K] [--no-append]

Starts a real replicator on a fresh data directory, then measures in the same run:
  1. baseline: a raw SQLite commit (WAL, synchronous=FULL) of one small row, N times;
  2. single writer: ``VM.save()`` through the ORM -> IPC -> replicator -> apply -> answer;
  3. throughput: K writer processes saving concurrently (group commit at work).
Results are appended to BENCHMARKS.md with the command line.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.harness import ReplicatorProcess, manage, node_environment  # noqa: E402


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def raw_sqlite_commits(path: Path, count: int) -> list[float]:
    """The floor: one fsync'd WAL commit of a row of comparable size."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data TEXT)")
    payload = "x" * 300
    samples = []
    for i in range(count):
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (id, data) VALUES (?, ?)", (i, payload))
        conn.execute("COMMIT")
        samples.append(time.perf_counter() - start)
    conn.close()
    return samples


def _setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    import django

    django.setup()


def single_writer(env: dict[str, str], count: int, first_vmid: int) -> list[float]:
    _setup_django(env)
    from vms.models import VM

    samples = []
    for i in range(count):
        vm = VM(vmid=first_vmid + i, node_id=env["PVE_NODE_NAME"], config={"name": f"bench{i}", "memory": "512"})
        start = time.perf_counter()
        vm.save()
        samples.append(time.perf_counter() - start)
    return samples


def _writer_process(
    env: dict[str, str], count: int, first_vmid: int, barrier: multiprocessing.Barrier, out: multiprocessing.Queue
) -> None:
    _setup_django(env)
    from vms.models import VM

    vms = [
        VM(vmid=first_vmid + i, node_id=env["PVE_NODE_NAME"], config={"name": f"w{i}", "memory": "512"})
        for i in range(count)
    ]
    VM.objects.exists()  # open the read connection before the clock starts
    barrier.wait()
    start = time.perf_counter()
    for vm in vms:
        vm.save()
    out.put((start, time.perf_counter()))


def concurrent_writers(env: dict[str, str], writers: int, count: int, first_vmid: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(writers)
    out: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_writer_process, args=(env, count, first_vmid + w * count, barrier, out))
        for w in range(writers)
    ]
    for proc in procs:
        proc.start()
    spans = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join()
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return writers * count / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pve-bench-") as tmp:
        data = Path(tmp)
        env = {**node_environment(data / "node", node="benchnode"), "PVE_LOG_LEVEL": "ERROR"}
        (data / "node").mkdir()
        manage(env, "migrate", "-v0")
        manage(env, "migrate", "--database", "cluster", "-v0")
        replicator = ReplicatorProcess(env)
        replicator.start()
        try:
            raw = raw_sqlite_commits(data / "raw.db", args.writes)
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(1) as pool:
                single = pool.apply(single_writer, (env, args.writes, 100_000))
            single_rate = len(single) / sum(single)
            multi_rate = concurrent_writers(env, args.writers, args.writes, 200_000)
        finally:
            replicator.stop()

    raw_p50, raw_p99 = percentile(raw, 0.5) * 1e3, percentile(raw, 0.99) * 1e3
    rep_p50, rep_p99 = percentile(single, 0.5) * 1e3, percentile(single, 0.99) * 1e3
    lines = [
        f"### Replicated writes, one node ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"Command: `.venv/bin/python bench/replicated_writes.py --writes {args.writes} --writers {args.writers}`"
        f" ({os.cpu_count()} CPUs)",
        "",
        "| measurement | p50 ms | p99 ms | mean ms | ratio p50 to baseline |",
        "|---|---|---|---|---|",
        f"| baseline: raw SQLite commit (WAL, synchronous=FULL) | {raw_p50:.3f} | {raw_p99:.3f} | "
        f"{statistics.mean(raw) * 1e3:.3f} | 1.00 |",
        f"| replicated `VM.save()` through ORM, IPC and replicator | {rep_p50:.3f} | {rep_p99:.3f} | "
        f"{statistics.mean(single) * 1e3:.3f} | {rep_p50 / raw_p50:.2f} |",
        "",
        f"Throughput: one writer {single_rate:,.0f} writes/s; {args.writers} concurrent writer processes "
        f"{multi_rate:,.0f} writes/s (targets: p50 within 5x of the baseline; 1,000+ writes/s).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_append:
        bench_file = REPO / "BENCHMARKS.md"
        if not bench_file.exists():
            bench_file.write_text("# Benchmarks\n\nEach section is appended by the command it names.\n\n")
        with open(bench_file, "a") as handle:
            handle.write(report + "\n")


if __name__ == "__main__":
    main()
