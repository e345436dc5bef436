"""Round-robin history of this node's status, with rrdcached's layout, in one SQLite file.

Proxmox's RRD definitions (pve-cluster ``status.c``): a 60 s step; five archives of 70 rows,
each consolidating 1, 30, 180, 720 and 10080 steps (hour, day, week, month, year), AVERAGE and
MAX. Samples within a step are averaged into one primary point (rates for the counters, as
rrdtool's DERIVE), written when the step is over; each archive row then takes the running
average and maximum of its primary points.

Why SQLite rather than a fixed-size file per object: one file for every object, atomic updates
of all archives of an object in one transaction, readers (the web processes) never see a torn
row, and the row count is bounded all the same: a row's key is ``(object, archive, bucket % 70)``,
so an object never has more than 5 x 70 rows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

STEP = 60
ROWS = 70
TIMEFRAMES = {"hour": 1, "day": 30, "week": 180, "month": 720, "year": 10080}
CONSOLIDATIONS = ("AVERAGE", "MAX")

# The data sources of each kind, in Proxmox's order (pve2-node, pve2.3-vm, pve2-storage).
FIELDS = {
    "node": (
        "loadavg", "maxcpu", "cpu", "iowait", "memtotal", "memused",
        "swaptotal", "swapused", "roottotal", "rootused", "netin", "netout",
    ),
    "vm": ("maxcpu", "cpu", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite"),
    "storage": ("total", "used"),
}  # fmt: skip

SCHEMA = """
CREATE TABLE IF NOT EXISTS rra (
    key TEXT NOT NULL, steps INTEGER NOT NULL, slot INTEGER NOT NULL,
    bucket INTEGER NOT NULL, points INTEGER NOT NULL, average TEXT NOT NULL, maximum TEXT NOT NULL,
    PRIMARY KEY (key, steps, slot)
) WITHOUT ROWID
"""

Values = list[float | None]


def path() -> Path:
    return Path(settings.PVE_DATA_DIR) / "rrd.db"


def connect(location: Path | None = None) -> sqlite3.Connection:
    location = location or path()
    fresh = not location.exists()
    connection = sqlite3.connect(location, timeout=5, isolation_level=None, check_same_thread=False)
    if fresh:
        os.chmod(location, 0o600)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")  # history, not state: a lost last minute is fine
    connection.execute(SCHEMA)
    return connection


@dataclass
class _Pending:
    """The primary point being gathered: samples of one step."""

    bucket: int
    count: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


def _merge(old: Values, new: Values, points: int, *, maximum: bool) -> Values:
    merged: Values = []
    for before, value in zip(old, new, strict=True):
        if value is None:
            merged.append(before)
        elif before is None:
            merged.append(value)
        else:
            merged.append(max(before, value) if maximum else (before * points + value) / (points + 1))
    return merged


class RRDStore:
    """Feeds samples into the archives; one instance per writer process (the collector)."""

    def __init__(self, location: Path | None = None) -> None:
        self.location = location
        self.lock = threading.Lock()
        self.pending: dict[str, _Pending] = {}
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.location)
        return self._db

    def update(self, key: str, now: float, values: Values) -> None:
        """Add one sample of ``key`` taken at ``now``; a finished step is written to the archives."""
        bucket = int(now) // STEP
        with self.lock:
            pending = self.pending.get(key)
            if pending is not None and pending.bucket != bucket:
                self._write(key, pending)
                pending = None
            if pending is None:
                pending = self.pending[key] = _Pending(bucket, [0] * len(values), [0.0] * len(values))
            for index, value in enumerate(values):
                if value is not None:
                    pending.count[index] += 1
                    pending.total[index] += float(value)

    def _write(self, key: str, pending: _Pending) -> None:
        point: Values = [t / c if c else None for t, c in zip(pending.total, pending.count, strict=True)]
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for steps in TIMEFRAMES.values():
                bucket = pending.bucket // steps
                slot = bucket % ROWS
                row = db.execute(
                    "SELECT bucket, points, average, maximum FROM rra WHERE key=? AND steps=? AND slot=?",
                    (key, steps, slot),
                ).fetchone()
                if row is not None and row[0] == bucket:
                    points = row[1]
                    average = _merge(json.loads(row[2]), point, points, maximum=False)
                    maximum = _merge(json.loads(row[3]), point, points, maximum=True)
                    points += 1
                else:
                    points, average, maximum = 1, point, point
                db.execute(
                    "INSERT OR REPLACE INTO rra VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (key, steps, slot, bucket, points, json.dumps(average), json.dumps(maximum)),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def fetch(key: str, kind: str, timeframe: str, cf: str, now: float, location: Path | None = None) -> list[dict]:
    """The ``rrddata`` rows of ``key``: 70 rows ending at the current row of ``timeframe``; a row
    without data holds only its ``time`` (Proxmox leaves unknown values out)."""
    steps = TIMEFRAMES[timeframe]
    step = STEP * steps
    last = int(now) // step
    names = FIELDS[kind]
    location = location or path()
    stored: dict[int, list] = {}
    if location.exists():
        db = connect(location)
        try:
            column = "average" if cf == "AVERAGE" else "maximum"
            query = f"SELECT bucket, {column} FROM rra WHERE key=? AND steps=? AND bucket>?"
            for bucket, values in db.execute(query, (key, steps, last - ROWS)):
                stored[bucket] = json.loads(values)
        finally:
            db.close()
    rows = []
    for bucket in range(last - ROWS + 1, last + 1):
        row: dict = {"time": bucket * step}
        for name, value in zip(names, stored.get(bucket, ()), strict=False):
            if value is not None:
                row[name] = value
        rows.append(row)
    return rows
