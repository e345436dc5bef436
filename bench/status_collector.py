#!/usr/bin/env python3
"""CPU the status collector (pvestatd) spends per running VM, over real firmware-only QEMUs (KVM).

Usage: .venv/bin/python bench/status_collector.py [--vms 20] [--rounds 30] [--no-append]

Starts ``--vms`` QEMUs (64 MiB, no disk but an empty raw image, sitting in SeaBIOS) with the
contract's pid file and QMP socket in a throwaway node's run directory, then runs collector
rounds in this process and measures this process's CPU time (user + system, every thread:
the QMP conversations, /proc and /sys reads, the run file and the history) per round. The
baseline, in the same run, is a round with no VM running (node and storages only); the per-VM
cost is the difference divided by the VM count. Reported: ms of CPU per round, per VM, and the
share of one core 100 VMs cost at the default ``PVE_STATUS_INTERVAL`` of 2 s (target under 2 %).
100 real QEMUs do not fit beside the other work on 2 cores, so fewer are run and scaled linearly.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure(collector, rounds: int) -> float:
    """Seconds of this process's CPU time per round."""
    collector.round()  # warm: first readings, imports
    started = time.process_time()
    for _ in range(rounds):
        collector.round()
    return (time.process_time() - started) / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pvestatd-") as tmp:
        from tests.harness import node_environment

        os.environ.update(node_environment(Path(tmp) / "node"))
        import django

        django.setup()
        from django.core.management import call_command

        for database in ("default", "cluster"):
            call_command("migrate", database=database, verbosity=0)
        from bench.harness import command_line, heading, publish
        from tests.vms.firmware_qemu import FirmwareQemu
        from vms.status.collector import Collector
        from vms.status.rrd import RRDStore

        store = RRDStore()
        baseline = measure(Collector(store=store), args.rounds)
        qemus = [FirmwareQemu(20000 + i, Path(tmp) / "qemu") for i in range(args.vms)]
        try:
            collector = Collector(store=store)
            loaded = measure(collector, args.rounds)
            seen = len(collector.round()["vms"])
        finally:
            for qemu in qemus:
                qemu.stop()
            store.close()
        if seen != args.vms:
            raise RuntimeError(f"the collector saw {seen} of {args.vms} VMs")
    per_vm = max(loaded - baseline, 0.0) / args.vms
    share = per_vm * 100 / 2.0 * 100  # 100 VMs, one round every 2 s, in % of one core
    text = "\n".join(
        [
            heading(f"Status collector CPU per running VM ({args.vms} real QEMUs, {args.rounds} rounds)"),
            "",
            command_line(args, "vms", "rounds"),
            "",
            "| measure | value |",
            "|---|---|",
            f"| CPU per round, no VM running (baseline) | {baseline * 1e3:.2f} ms |",
            f"| CPU per round, {args.vms} VMs running | {loaded * 1e3:.2f} ms |",
            f"| CPU per VM per round (difference / VMs) | {per_vm * 1e3:.3f} ms |",
            f"| 100 VMs at one round every 2 s | {share:.2f} % of one core (target under 2 %) |",
            "",
        ]
    )
    publish(text, append=not args.no_append)


if __name__ == "__main__":
    main()
