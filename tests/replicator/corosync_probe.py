"""Run inside a corosync node's network namespace: exercise the bindings, print JSON results."""

from __future__ import annotations

import json
import select
import sys
import time

from replicator.corosync import CorosyncError
from replicator.corosync.cfg import Cfg
from replicator.corosync.cmap import Cmap
from replicator.corosync.cpg import CpgGroup
from replicator.corosync.quorum import Votequorum


def main() -> None:
    count = int(sys.argv[1])
    result: dict[str, object] = {}
    cmap = Cmap()
    result["cluster_name"] = cmap.get_string("totem.cluster_name")
    result["config_version"] = cmap.get_uint("totem.config_version")
    result["missing_key"] = cmap.get_string("no.such.key")
    result["nodes"] = cmap.nodes()
    result["nodelist_votes"] = cmap.nodelist_votes()
    cmap.close()

    notified: list[object] = []
    quorum = Votequorum(on_quorum=lambda quorate, nodes: notified.append([quorate, nodes]), on_expected=notified.append)
    quorum.track()
    deadline = time.monotonic() + 10
    while not notified and time.monotonic() < deadline:
        select.select([quorum.fileno()], [], [], 1)
        quorum.dispatch()
    result["quorum_notification"] = notified[0] if notified else None
    info = quorum.info()
    result["quorate"], result["total_votes"], result["expected"] = info.quorate, info.total_votes, info.expected_votes
    result["node_votes"] = [quorum.node_votes(1), quorum.node_votes(99)]
    quorum.set_expected(1)
    try:
        quorum.set_expected(0)
    except ValueError as exc:
        result["expected_zero"] = str(exc)
    quorum.close()

    delivered: list[tuple[int, bytes]] = []
    changes: list[object] = []
    failing = {"armed": False}

    def on_deliver(nodeid: int, pid: int, message: bytes) -> None:
        if failing["armed"]:
            failing["armed"] = False
            raise RuntimeError("callback failure")
        delivered.append((nodeid, message))

    totem: list[object] = []
    group = CpgGroup(
        "pve-probe",
        on_deliver=on_deliver,
        on_confchg=lambda m, left, joined: changes.append([[x.nodeid for x in m], len(left), len(joined)]),
        on_totem=lambda nodeid, seq, members: totem.append([nodeid, seq, members]),
    )
    result["local_nodeid"] = group.local_nodeid()
    started = time.perf_counter()
    for i in range(count):
        group.mcast(f"m{i}".encode())
    deadline = time.monotonic() + 30
    while len(delivered) < count and time.monotonic() < deadline:
        select.select([group.fileno()], [], [], 1)
        group.dispatch()
    result["delivered_in_order"] = [m.decode() for _, m in delivered] == [f"m{i}" for i in range(count)]
    result["rate"] = count / (time.perf_counter() - started)
    result["confchg"] = changes[0] if changes else None
    result["totem"] = totem[0] if totem else None
    failing["armed"] = True
    group.mcast(b"boom")
    try:
        for _ in range(50):
            select.select([group.fileno()], [], [], 0.2)
            group.dispatch()
    except RuntimeError as exc:
        result["callback_error"] = str(exc)
    group.close()
    cfg = Cfg()
    cfg.reload()
    cfg.close()
    result["reloaded"] = True
    try:
        CpgGroup("x" * 200, on_deliver=on_deliver, on_confchg=lambda *a: None)
    except ValueError as exc:
        result["long_name"] = str(exc)
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except CorosyncError as exc:
        print(json.dumps({"error": str(exc)}))
