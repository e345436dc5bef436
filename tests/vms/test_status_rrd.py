"""The round-robin store: bounded rows, consolidation (AVERAGE and MAX of one-minute points),
gaps, and a file only its owner reads. Real SQLite, explicit clock."""

from __future__ import annotations

import sqlite3

from vms.status import rrd


def test_rows_stay_bounded_and_old_rows_are_overwritten(tmp_path):
    store = rrd.RRDStore(tmp_path / "rrd.db")
    start = 1_800_000_000 - 1_800_000_000 % 60
    for minute in range(200):
        store.update("storage/x", start + minute * 60, [1000.0, float(minute)])
    store.close()
    db = sqlite3.connect(tmp_path / "rrd.db")
    per_archive = dict(db.execute("SELECT steps, COUNT(*) FROM rra GROUP BY steps").fetchall())
    assert per_archive[1] == rrd.ROWS, "an hour archive never grows past 70 rows"
    assert all(count <= rrd.ROWS for count in per_archive.values())
    rows = rrd.fetch("storage/x", "storage", "hour", "AVERAGE", start + 199 * 60, tmp_path / "rrd.db")
    assert len(rows) == 70
    assert rows[-1] == {"time": start + 199 * 60}, "the current minute is not finished"
    assert rows[-2]["used"] == 198.0 and rows[0]["used"] == 130.0
    assert (tmp_path / "rrd.db").stat().st_mode & 0o077 == 0


def test_consolidation_and_gaps(tmp_path):
    location = tmp_path / "rrd.db"
    store = rrd.RRDStore(location)
    base = 1_800_000_000 - 1_800_000_000 % 1800  # the start of a "day" row (30 minutes)
    samples = {0: [1.0, 3.0], 1: [5.0], 3: [2.0]}  # minute -> samples; minute 2 missing
    for minute, values in samples.items():
        for index, value in enumerate(values):
            store.update("node/n", base + minute * 60 + index * 20, [value] + [None] * 11)
    store.update("node/n", base + 4 * 60, [None] * 12)  # closes minute 3
    store.close()
    hour = {r["time"]: r for r in rrd.fetch("node/n", "node", "hour", "AVERAGE", base + 4 * 60, location)}
    assert hour[base]["loadavg"] == 2.0 and hour[base + 60]["loadavg"] == 5.0
    assert hour[base + 120] == {"time": base + 120}, "a minute without samples stays unknown"
    assert set(hour[base]) == {"time", "loadavg"}, "unknown values are left out"
    day_avg = {r["time"]: r for r in rrd.fetch("node/n", "node", "day", "AVERAGE", base + 4 * 60, location)}
    day_max = {r["time"]: r for r in rrd.fetch("node/n", "node", "day", "MAX", base + 4 * 60, location)}
    assert day_avg[base]["loadavg"] == (2.0 + 5.0 + 2.0) / 3
    assert day_max[base]["loadavg"] == 5.0
