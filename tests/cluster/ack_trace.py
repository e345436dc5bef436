"""A replicator under ``strace -f``: was the database flushed before every acknowledgement?

A replicator acknowledges a write in two ways: its answer to the writer (a reply carrying
``"ok":true,"version":``), and the apply acknowledgements its applier thread (the only writer of
the cluster database) multicasts to the other nodes (``replicator.acks``). At each of them no
write to the cluster database (``cluster.db``, its WAL or journal) may be waiting for its fsync.
Exact when the writes under test are sequential: an apply running beside a reply would show as
unsynced writes at that reply.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cluster.lab.cluster import LabCluster, LabNode

TRACED = "trace=fsync,fdatasync,pwrite64,pwritev,write,writev,sendto,sendmsg"
WRITES = {"pwrite64", "pwritev", "write", "writev"}
SYNCS = {"fsync", "fdatasync"}
SENDS = {"sendto", "sendmsg", "write", "writev"}
DATABASE_FILES = ("/cluster.db", "/cluster.db-wal", "/cluster.db-journal")
REPLY = '\\"ok\\":true,\\"version\\":'  # as strace escapes the reply's JSON

LINE = re.compile(
    r"^(?P<tid>\d+)\s+(?P<time>\d+\.\d+)\s+"
    r"(?:<\.\.\. (?P<resumed>\w+) resumed>(?P<rest>.*)|(?P<call>\w+)\((?P<args>.*))$"
)
# The first argument, a descriptor with what -yy says it is: a path, or a socket such as
# ``UNIX-STREAM:[78078->77249]`` (brackets, as its ``->`` holds a '>').
DESCRIPTOR = re.compile(r"^\d+<(?P<what>[A-Z0-9]+-?[A-Z]*:\[[^\]]*\]|[^>]*)>")


@contextmanager
def traced(lab: LabCluster, node: LabNode, log: Path, timeout: float = 30) -> Iterator[None]:
    """``strace -f`` attached to the node's running replicator (every thread) for the block's duration.

    Attached from inside the node's namespace, so sockets are described; detached afterwards
    (SIGINT), the replicator running on untraced.
    """
    assert node.service is not None and node.service.poll() is None, f"{node.name}'s replicator is not running"
    argv = ["strace", "-f", "-yy", "-ttt", "-s", "64", "-e", TRACED, "-o", str(log), "-p", str(node.service.pid)]
    tracer = lab.run(node, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not (log.exists() and log.stat().st_size):  # an idle replicator still heartbeats twice a second
            assert tracer.poll() is None and time.monotonic() < deadline, f"strace did not attach: {tracer.stderr}"
            time.sleep(0.05)
        yield
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.communicate(timeout=timeout)


@dataclass
class Call:
    index: int  # where it started in the log
    tid: int
    time: float
    name: str
    what: str  # the first argument's descriptor (path or socket), "" if none
    args: str
    result: str = ""  # after " = ", once finished
    end: int = -1  # where it finished (the same line, or a later "resumed" one)


@dataclass
class Report:
    """Acknowledgements seen since a time, and those made while a database write was not yet synced."""

    replies: int = 0
    acks: int = 0
    syncs: int = 0
    unsynced: list[str] = field(default_factory=list)


def _calls(text: str) -> list[Call]:
    """Every traced call, finished, in start order (strace -f splits concurrent ones in two lines)."""
    calls: list[Call] = []
    open_calls: dict[int, Call] = {}
    for index, line in enumerate(text.splitlines()):
        match = LINE.match(line)
        if match is None:
            continue  # signals, exits
        tid, when = int(match["tid"]), float(match["time"])
        if match["resumed"]:
            call = open_calls.pop(tid, None)
            if call is not None:
                call.result, call.end = match["rest"].rpartition(" = ")[2], index
            continue
        args = match["args"]
        described = DESCRIPTOR.match(args)
        call = Call(index, tid, when, match["call"], described["what"] if described else "", args)
        if args.endswith("<unfinished ...>"):
            open_calls[tid] = call
        else:
            call.result, call.end = args.rpartition(" = ")[2], index
        calls.append(call)
    return calls


def _database(call: Call) -> bool:
    return call.what.endswith(DATABASE_FILES)


def check(log: Path, since: float) -> Report:
    """Walk the trace: track unsynced database writes, and judge every acknowledgement from ``since`` on."""
    calls = _calls(log.read_text(errors="replace"))
    appliers = {c.tid for c in calls if c.name in WRITES and _database(c)}
    unsynced: dict[str, int] = {}  # database file -> start of its newest write not yet synced
    report = Report()
    # Writes and sends count where they start; a sync where it finished, for the writes started before it.
    syncs = [c for c in calls if c.name in SYNCS and _database(c) and c.end >= 0 and c.result.strip() == "0"]
    events = sorted([(c.index, c) for c in calls if c.name not in SYNCS] + [(c.end, c) for c in syncs])
    for _at, call in events:
        if call.name in SYNCS:
            if unsynced.get(call.what, call.index) < call.index:
                del unsynced[call.what]
            report.syncs += call.time >= since
            continue
        if call.name in WRITES and _database(call):
            unsynced[call.what] = call.index
            continue
        if call.name not in SENDS or call.time < since:
            continue
        reply = REPLY in call.args
        ack = call.tid in appliers and call.what.startswith(("UNIX-", "TCP", "UDP"))
        if not (reply or ack):
            continue
        if reply:
            report.replies += 1
        else:
            report.acks += 1
        if unsynced:
            report.unsynced.append(f"line {call.index + 1}: {call.name}({call.args[:120]}) with {sorted(unsynced)}")
    return report
