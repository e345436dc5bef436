"""The snapshot verbs of ``qm`` (not a command of its own: the leading underscore hides it from Django).

As Proxmox's ``qm``: ``snapshot <vmid> <snapname> [--vmstate 0|1] [--description]``,
``delsnapshot <vmid> <snapname> [--force 0|1]``, ``rollback <vmid> <snapname> [--start 0|1]``
(tasks of this process: ``qmsnapshot``, ``qmdelsnapshot``, ``qmrollback``, their log shown as it
is written) and ``listsnapshot <vmid>``, the tree Proxmox prints (oldest first, ``current`` last).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError

from vms.services import snapshots
from vms.snapshot_config import check_snapname

VERBS = ("snapshot", "delsnapshot", "rollback", "listsnapshot")
OPTIONS = {"snapshot": {"vmstate", "description"}, "delsnapshot": {"force"}, "rollback": {"start"}}
Options = Callable[[list[str]], dict[str, str]]


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.pop(name, "0")
    if value not in ("0", "1"):
        raise CommandError(f"--{name}: expected 0 or 1, got {value!r}")
    return value == "1"


def snapshot_tree(entries: list[dict[str, Any]]) -> list[str]:
    """Proxmox's ``print_snapshot_tree``: children under their parent, by snapshot time, one line each."""
    by_name = {entry["name"]: entry for entry in entries}
    children: dict[str, list[str]] = {}
    roots = []
    for entry in entries:
        parent = entry.get("parent")
        if parent and parent in by_name:
            children.setdefault(parent, []).append(entry["name"])
        else:
            roots.append(entry["name"])

    def order(name: str) -> tuple[int, int]:
        snaptime = by_name[name].get("snaptime")
        return (1, 0) if snaptime is None else (0, int(snaptime))

    lines: list[str] = []

    def show(prefix: str, name: str) -> None:
        entry = by_name[name]
        description = (entry.get("description") or "no-description").split("\n")[0]
        when = entry.get("snaptime")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(when))) if when is not None else ""
        width = max(30 - len(prefix), 0)
        lines.append(f"{prefix} {name:<{width}} {stamp:<23} {description}")
        for child in sorted(children.get(name, []), key=order):
            show(f" {prefix}", child)

    for root in sorted(roots, key=order):
        show("`->", root)
    return lines


def run(command: Any, verb: str, vmid: str, rest: list[str], *, parse: Options) -> None:
    """One snapshot verb; ``command`` is qm's management command (its ``_vm`` and ``_as_task``)."""
    vm = command._vm(vmid)
    if verb == "listsnapshot":
        if rest:
            raise CommandError("usage: qm listsnapshot <vmid>")
        for line in snapshot_tree(snapshots.list_snapshots(vm)):
            command.stdout.write(line)
        return
    if not rest or rest[0].startswith("--"):
        raise CommandError(f"usage: qm {verb} <vmid> <snapname> [OPTIONS]")
    try:
        snapname = check_snapname(rest[0])
    except ValueError as exc:
        raise CommandError(f"snapname: {exc}") from None
    options = parse(rest[1:])
    unknown = set(options) - OPTIONS[verb]
    if unknown:
        raise CommandError(f"unknown options: {', '.join(sorted(unknown))}")
    if verb == "snapshot":
        vmstate, description = _flag(options, "vmstate"), options.get("description", "")
        command._as_task(
            "qmsnapshot",
            vm,
            lambda log, upid: snapshots.create_snapshot(
                vm.vmid, snapname, owner=upid, vmstate=vmstate, description=description, log=log, warn=log
            ),
        )
    elif verb == "delsnapshot":
        force = _flag(options, "force")
        command._as_task(
            "qmdelsnapshot",
            vm,
            lambda log, upid: snapshots.delete_snapshot(vm.vmid, snapname, owner=upid, force=force, log=log, warn=log),
        )
    else:
        start = _flag(options, "start")
        command._as_task(
            "qmrollback",
            vm,
            lambda log, upid: snapshots.rollback_snapshot(vm.vmid, snapname, owner=upid, start=start, log=log),
        )
