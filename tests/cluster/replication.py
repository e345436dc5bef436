"""Helpers for tests on a lab cluster of replicators: raw writes, reads, checksums, a write ledger.

Writes go straight to a node's replicator socket (a file, so reachable from the host although
the replicator runs in the node's namespace); reads open the node's own database (its SQLite file
read-only, or its PostgreSQL database when the lab runs on PostgreSQL).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from typing import Any

from cluster.lab.cluster import LabCluster, LabNode
from replicator import client, protocol


def changeset(origin: str, ops: list[dict[str, Any]]) -> tuple[str, bytes]:
    cs = {"id": uuid.uuid4().hex, "origin": origin, "time": time.time(), "ops": ops}
    return cs["id"], json.dumps(cs, sort_keys=True, separators=(",", ":")).encode()


def pool_op(poolid: str, comment: str = "", base: int = 0) -> dict[str, Any]:
    return {"m": "authz.pool", "k": poolid, "o": "save", "v": base, "f": {"poolid": poolid, "comment": comment}}


def log_op(msg: str, node: str = "node1") -> dict[str, Any]:
    """A cluster log entry, as the cluster log writes it."""
    uid = str(uuid.uuid4())
    fields = {"uid": uid, "time": int(time.time()), "pri": 6, "tag": "test", "pid": 1, "node": node, "user": ""}
    return {"m": "cluster.clusterlogentry", "k": uid, "o": "save", "v": 0, "f": {**fields, "msg": msg}}


def vm_op(vmid: int, node: str, base: int = 0, **config: Any) -> dict[str, Any]:
    fields = {"vmid": vmid, "node_id": node, "pool_id": None, "config": config, "lock": ""}
    return {"m": "vms.vm", "k": vmid, "o": "save", "v": base, "f": fields}


def vm_count(node: LabNode, low: int, high: int) -> int:
    return query(node, "SELECT COUNT(*) FROM vms_vm WHERE vmid >= ? AND vmid < ?", (low, high))[0][0]


def submit(node: LabNode, ops: list[dict[str, Any]], timeout: float = 30) -> dict[str, Any]:
    cs_id, payload = changeset(node.name, ops)
    try:
        return client.request_at(node.socket_path, {"op": "submit", "id": cs_id}, payload=payload, timeout=timeout + 5)
    except (OSError, protocol.ProtocolError) as exc:
        return {"ok": False, "code": "unreachable", "error": str(exc)}


def query(node: LabNode, sql: str, args: tuple = ()) -> list[tuple]:
    """``sql`` with ``?`` placeholders on the node's cluster database, whichever engine it is."""
    url = node.env.get("PVE_CLUSTER_DATABASE_URL", "")
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url) as db:
            return db.execute(sql.replace("%", "%%").replace("?", "%s"), args).fetchall()  # type: ignore[arg-type]
    with sqlite3.connect(f"file:{node.directory / 'cluster.db'}?mode=ro", uri=True, timeout=10) as db:
        return db.execute(sql, args).fetchall()


def pools(node: LabNode, prefix: str = "") -> dict[str, tuple[str, int]]:
    rows = query(node, "SELECT poolid, comment, version FROM authz_pool WHERE poolid LIKE ?", (prefix + "%",))
    return {poolid: (comment, version) for poolid, comment, version in rows}


def status(node: LabNode) -> dict[str, Any]:
    return client.status_at(node.socket_path, timeout=5) or {}


def checksum(node: LabNode) -> dict[str, Any]:
    return client.request_at(node.socket_path, {"op": "checksum"}, timeout=60)


def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.05, what: str = "condition") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_converged(lab: LabCluster, nodes: list[LabNode] | None = None, timeout: float = 60) -> dict[str, Any]:
    """Until the given nodes are quorate, in sync and at one version; their state checksums there must agree.

    The checksums are taken one node after another: a write landing in between (the replicator's
    own cluster log entry after a sync, say) means taking them again, not a difference.
    """
    nodes = nodes or lab.nodes
    sums: list[dict[str, Any]] = []

    def same() -> bool:
        states = [status(n) for n in nodes]
        if not all(s.get("quorate") and s.get("synced") for s in states):
            return False
        if len({(s["version"], s["hash"]) for s in states}) != 1:
            return False
        sums[:] = [checksum(n) for n in nodes]
        return len({(s["version"], s["hash"]) for s in sums}) == 1

    wait_for(same, timeout, what=f"{[n.name for n in nodes]} to converge")
    assert len({s["checksum"] for s in sums}) == 1, sums
    return sums[0]


class Ledger:
    """Every acknowledged write, to check that none is missing at the end of a test."""

    def __init__(self) -> None:
        self.acked: dict[str, str] = {}  # poolid -> comment
        self.lock = threading.Lock()

    def write(self, node: LabNode, poolid: str, comment: str = "", timeout: float = 30) -> dict[str, Any]:
        result = submit(node, [pool_op(poolid, comment)], timeout=timeout)
        if result.get("ok"):
            with self.lock:
                self.acked[poolid] = comment
        return result

    def missing(self, node: LabNode, prefix: str = "") -> list[str]:
        present = pools(node, prefix)
        return [p for p, c in self.acked.items() if p.startswith(prefix) and present.get(p, (None,))[0] != c]
