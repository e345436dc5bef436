#!/usr/bin/env python3
"""Run inside a lab node's namespace: raw CPG agreed-delivery round trips (send, wait for own delivery).

Prints JSON {"samples": [seconds, ...]}. Used by bench/cluster_writes.py as the floor.
"""

from __future__ import annotations

import json
import select
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replicator.corosync.cpg import CpgGroup


def main(count: int) -> None:
    got: list[bytes] = []
    group = CpgGroup("pve-bench-ping", on_deliver=lambda n, p, m: got.append(m), on_confchg=lambda *a: None)
    fd = group.fileno()
    group.dispatch()
    samples = []
    payload = b"x" * 300
    for i in range(count):
        marker = b"%d:" % i + payload
        got.clear()
        start = time.perf_counter()
        group.mcast(marker)
        while marker not in got:
            select.select([fd], [], [], 1.0)
            group.dispatch()
        samples.append(time.perf_counter() - start)
    group.close()
    print(json.dumps({"samples": samples}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
