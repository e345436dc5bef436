"""The benches' harness: timed writer loops, percentiles, a baseline from the same run, the report in BENCHMARKS.md.

Every number a bench prints is compared with a baseline measured in the same run on the same
machine (a raw fsync'd SQLite commit, a raw CPG round trip), never with a number from another
day. Writers run in spawned processes with the node's settings (Django is set up there, not in
the bench's own process), so the bench measures what a Django process of the node sees.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "BENCHMARKS.md"
Env = dict[str, str]


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Timing:
    """Seconds per operation of one loop, summarised in milliseconds."""

    samples: list[float]

    @property
    def p50(self) -> float:
        return percentile(self.samples, 0.5) * 1e3

    @property
    def p99(self) -> float:
        return percentile(self.samples, 0.99) * 1e3

    @property
    def mean(self) -> float:
        return statistics.mean(self.samples) * 1e3

    @property
    def rate(self) -> float:
        """Operations per second, one after another."""
        return len(self.samples) / sum(self.samples)

    def ratio(self, baseline_ms: float) -> float:
        """p50 against a baseline (ms) measured in the same run."""
        return self.p50 / baseline_ms


def raw_sqlite_commits(path: Path, count: int) -> list[float]:
    """The baseline: one fsync'd WAL commit of a row of comparable size, ``count`` times."""
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


def setup_django(env: Env, without: Iterable[str] = ()) -> None:
    """This (spawned) process becomes a Django process of the node ``env`` describes."""
    skip = set(without)
    os.environ.update({key: value for key, value in env.items() if key not in skip})
    import django

    django.setup()


def _vms(env: Env, count: int, first_vmid: int, name: str, config: dict[str, str] | None) -> list[Any]:
    from vms.models import VM

    node = env["PVE_NODE_NAME"]
    return [
        VM(vmid=first_vmid + i, node_id=node, config={"name": f"{name}{i}", **(config or {})}) for i in range(count)
    ]


def vm_saves(
    env: Env,
    count: int,
    first_vmid: int,
    name: str = "bench",
    config: dict[str, str] | None = None,
    without: Iterable[str] = (),
) -> list[float]:
    """In this process: ``count`` new VMs saved one after another (ORM, IPC, replicator); seconds each."""
    setup_django(env, without)
    samples = []
    for vm in _vms(env, count, first_vmid, name, config):
        start = time.perf_counter()
        vm.save()
        samples.append(time.perf_counter() - start)
    return samples


def single_writer(env: Env, count: int, first_vmid: int, **options: Any) -> Timing:
    """:func:`vm_saves` in a spawned process of its own (``options`` go to it)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return Timing(pool.apply(vm_saves, (env, count, first_vmid), options))


def _writer(
    env: Env,
    count: int,
    first_vmid: int,
    name: str,
    config: dict[str, str] | None,
    without: Iterable[str],
    barrier: Barrier,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    setup_django(env, without)
    from vms.models import VM

    vms = _vms(env, count, first_vmid, name, config)
    VM.objects.exists()  # open the read connection before the clock starts
    barrier.wait()
    start = time.perf_counter()
    for vm in vms:
        vm.save()
    out.put((start, time.perf_counter()))


def concurrent_writers(
    envs: list[Env],
    count: int,
    first_vmid: int,
    *,
    name: str = "w",
    config: dict[str, str] | None = None,
    without: Iterable[str] = (),
    timeout: float = 900,
) -> float:
    """One spawned writer process per entry of ``envs``, all saving ``count`` VMs at once; writes/s of them all."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(envs))
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(
            target=_writer, args=(env, count, first_vmid + k * count, name, config, tuple(without), barrier, out)
        )
        for k, env in enumerate(envs)
    ]
    for proc in procs:
        proc.start()
    spans: list[tuple[float, float]] = [out.get(timeout=timeout) for _ in procs]
    for proc in procs:
        proc.join()
    wall = max(end for _, end in spans) - min(start for start, _ in spans)
    return len(envs) * count / wall


def heading(title: str) -> str:
    """A report's heading, with when it was measured."""
    return f"### {title} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})"


def command_line(args: argparse.Namespace, *options: str) -> str:
    """The command that reproduces this run: the bench with ``options`` (names of ``args``) as they were."""
    script = Path(sys.argv[0]).resolve().relative_to(REPO)
    flags = "".join(f" --{option.replace('_', '-')} {getattr(args, option)}" for option in options)
    return f"`.venv/bin/python {script}{flags}`"


def publish(text: str, *, append: bool) -> None:
    """Print the report; append it to BENCHMARKS.md (made if missing) unless the run said ``--no-append``."""
    print(text)
    if not append:
        return
    if not BENCHMARKS.exists():
        BENCHMARKS.write_text("# Benchmarks\n\nEach section is appended by the command it names.\n\n")
    with open(BENCHMARKS, "a") as handle:
        handle.write(text + "\n")
