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
import os
import sys
import tempfile
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
from tests.harness import ReplicatorProcess, manage, node_environment  # noqa: E402


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
            raw = Timing(raw_sqlite_commits(data / "raw.db", args.writes))
            single = single_writer(env, args.writes, 100_000, name="bench", config={"memory": "512"})
            multi_rate = concurrent_writers(
                [env] * args.writers, args.writes, 200_000, config={"memory": "512"}, timeout=600
            )
        finally:
            replicator.stop()

    lines = [
        heading("Replicated writes, one node"),
        "",
        f"Command: {command_line(args, 'writes', 'writers')} ({os.cpu_count()} CPUs)",
        "",
        "| measurement | p50 ms | p99 ms | mean ms | ratio p50 to baseline |",
        "|---|---|---|---|---|",
        f"| baseline: raw SQLite commit (WAL, synchronous=FULL) | {raw.p50:.3f} | {raw.p99:.3f} | "
        f"{raw.mean:.3f} | 1.00 |",
        f"| replicated `VM.save()` through ORM, IPC and replicator | {single.p50:.3f} | {single.p99:.3f} | "
        f"{single.mean:.3f} | {single.ratio(raw.p50):.2f} |",
        "",
        f"Throughput: one writer {single.rate:,.0f} writes/s; {args.writers} concurrent writer processes "
        f"{multi_rate:,.0f} writes/s (targets: p50 within 5x of the baseline; 1,000+ writes/s).",
        "",
    ]
    publish("\n".join(lines), append=not args.no_append)


if __name__ == "__main__":
    main()
