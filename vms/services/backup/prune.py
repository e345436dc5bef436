"""Backup retention (``prune-backups``), marked as pve-storage's ``prune_mark_backup_group`` marks.

The group (one VMID's standard-named archives on one storage) is walked newest first by each
rule in turn: keep-last, -hourly, -daily, -weekly (ISO week), -monthly, -yearly. A rule keeps the
newest backup of each time bucket not yet kept by an earlier rule, up to N buckets, and marks
the older ones of a bucket it kept ``remove``; what no rule kept is removed. Protected backups
are marked ``protected`` first and never change mark (nor count for any rule).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vms.config import ConfigError
from vms.models import Storage
from vms.property_strings import property_string_parse
from vms.storage import backups, volumes

KEEP_KEYS = ("keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")
_BUCKETS: dict[str, Callable[[int], object]] = {
    "keep-last": lambda ctime: ctime,
    "keep-hourly": lambda ctime: time.strftime("%Y/%m/%d/%H", time.localtime(ctime)),
    "keep-daily": lambda ctime: time.strftime("%Y/%m/%d", time.localtime(ctime)),
    "keep-weekly": lambda ctime: time.strftime("%G/%V", time.localtime(ctime)),
    "keep-monthly": lambda ctime: time.strftime("%Y/%m", time.localtime(ctime)),
    "keep-yearly": lambda ctime: time.strftime("%Y", time.localtime(ctime)),
}


@dataclass
class Entry:
    volid: str
    ctime: int
    protected: bool = False
    mark: str | None = None


def parse_keep(text: str | None) -> dict[str, int]:
    """A ``prune-backups`` value (``keep-last=3,keep-daily=7`` or ``keep-all=1``); empty: keep all."""
    if not text:
        return {"keep-all": 1}
    try:
        items = property_string_parse(text, default_key=None)
    except ValueError as exc:
        raise ConfigError({"prune-backups": str(exc)}) from None
    keep: dict[str, int] = {}
    for key, value in items.items():
        if key not in (*KEEP_KEYS, "keep-all"):
            raise ConfigError({"prune-backups": f"invalid format - unknown option '{key}'"})
        if not str(value).isdigit() or (key == "keep-all" and value not in ("0", "1")):
            raise ConfigError({"prune-backups": f"invalid format - '{key}': type check ('integer') failed"})
        keep[key] = int(value)
    if keep.get("keep-all") and any(keep.get(k) for k in KEEP_KEYS):
        raise ConfigError({"prune-backups": "keep-all cannot be set together with other options."})
    return keep


def format_keep(keep: dict[str, int]) -> str:
    return ",".join(f"{k}={keep[k]}" for k in ("keep-all", *KEEP_KEYS) if k in keep)


def _mark_rule(entries: list[Entry], count: int, bucket: Callable[[int], object]) -> None:
    if not count:
        return
    already = {bucket(e.ctime) for e in entries if e.mark == "keep"}
    new: set[object] = set()
    for entry in entries:
        key = bucket(entry.ctime)
        if entry.mark is not None or key in already:
            continue
        if key not in new:
            if len(new) >= count:
                break
            new.add(key)
            entry.mark = "keep"
        else:
            entry.mark = "remove"


def mark(group: Iterable[Entry], keep: dict[str, int]) -> list[Entry]:
    """The group newest first, each entry marked ``keep``, ``remove`` or ``protected``."""
    entries = sorted(group, key=lambda e: e.ctime, reverse=True)
    for entry in entries:
        entry.mark = "protected" if entry.protected else None
    if keep.get("keep-all") or not any(keep.get(k, 0) > 0 for k in KEEP_KEYS):
        for entry in entries:
            entry.mark = entry.mark or "keep"
        return entries
    for key in KEEP_KEYS:
        _mark_rule(entries, keep.get(key, 0), _BUCKETS[key])
    for entry in entries:
        entry.mark = entry.mark or "remove"
    return entries


def group_entries(storage: Storage, vmid: int) -> list[Entry]:
    """The standard-named VM backups of ``vmid`` on ``storage`` (the group pruning works on)."""
    entries = []
    for item in volumes.list_volumes(storage, content="backup", vmid=vmid):
        name = item["volid"].partition(":")[2].removeprefix("backup/")
        info = backups.parse_archive_name(name)
        if info is None or info.kind != "qemu" or info.vmid != vmid:
            continue
        entries.append(Entry(item["volid"], info.ctime, bool(item.get("protected"))))
    return entries


def prune_group(storage: Storage, vmid: int, keep: dict[str, int], *, log: Callable[[str], None]) -> list[str]:
    """Remove what ``mark`` marks ``remove`` (with its log and notes); the volids removed."""
    log(f"prune older backups with retention: {format_keep(keep)}")
    removed = []
    for entry in mark(group_entries(storage, vmid), keep):
        if entry.mark == "remove":
            log(f"removing backup '{entry.volid}'")
            volumes.free_volume(entry.volid)
            removed.append(entry.volid)
    log(f"pruned {len(removed)} backup(s)" if removed else "pruned 0 backup(s)")
    return removed
