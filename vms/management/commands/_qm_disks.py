"""The disk verbs of ``qm`` (not a command of its own: the leading underscore hides it from Django).

As Proxmox's ``qm``: ``resize <vmid> <disk> <size>``, ``move-disk <vmid> <disk> [<storage>]``
(also ``move_disk``), ``unlink <vmid> --idlist <ids>``, and the same under ``qm disk resize|move|
unlink``. Resize and move run as tasks of this process (``resize``, ``qmmove``), their log shown
as it is written; unlink changes the config at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError

from vms import services
from vms.config_schema import DISK_KEY_RE
from vms.services import disk_move, disks

VERBS = ("resize", "move-disk", "move_disk", "unlink", "disk")
DISK_SUBCOMMANDS = {"resize": "resize", "move": "move-disk", "unlink": "unlink"}
MOVE_OPTIONS = {"storage", "format", "delete", "digest", "bwlimit"}
Options = Callable[[list[str]], dict[str, str]]


def _positional(rest: list[str], count: int, usage: str) -> tuple[list[str], list[str]]:
    """The first ``count`` arguments (none of them an option), and the rest."""
    given = [arg for arg in rest[:count] if not arg.startswith("--")]
    if len(given) < count:
        raise CommandError(f"usage: qm {usage}")
    return given, rest[count:]


def _flag(options: dict[str, str], name: str) -> bool:
    value = options.pop(name, "0")
    if value not in ("0", "1"):
        raise CommandError(f"--{name}: expected 0 or 1, got {value!r}")
    return value == "1"


def _no_more(options: dict[str, str]) -> None:
    if options:
        raise CommandError(f"unknown options: {', '.join(sorted(options))}")


def run(command: Any, verb: str, vmid: str, rest: list[str], *, root: Any, parse: Options) -> None:
    """One disk verb; ``command`` is qm's management command (its ``_vm`` and ``_as_task``)."""
    if verb == "disk":
        if vmid not in DISK_SUBCOMMANDS or not rest:
            raise CommandError(f"usage: qm disk {'|'.join(DISK_SUBCOMMANDS)} <vmid> ...")
        verb, vmid, rest = DISK_SUBCOMMANDS[vmid], rest[0], rest[1:]
    if verb == "resize":
        (disk, size), extra = _positional(rest, 2, "resize <vmid> <disk> <size> [--digest] [--skiplock]")
        options = parse(extra)
        digest, skiplock = options.pop("digest", None), _flag(options, "skiplock")
        _no_more(options)
        vm = command._vm(vmid)
        command._as_task(
            "resize",
            vm,
            lambda log, _upid: disks.resize_disk(
                vm, disk=disk, size=size, actor=root, digest=digest, skiplock=skiplock, progress=log
            ),
        )
    elif verb in ("move-disk", "move_disk"):
        _move(command, vmid, rest, root=root, parse=parse)
    else:
        options = parse(rest)
        idlist = [key for key in options.pop("idlist", "").replace(";", ",").split(",") if key]
        force = _flag(options, "force")
        _no_more(options)
        if not idlist or any(not DISK_KEY_RE.fullmatch(key) for key in idlist):
            raise CommandError("qm unlink <vmid> --idlist <disk>[,<disk>...] [--force 1]")
        services.update_vm_config(command._vm(vmid), set_={}, delete=idlist, force=force, actor=root)


def _move(command: Any, vmid: str, rest: list[str], *, root: Any, parse: Options) -> None:
    usage = "move-disk <vmid> <disk> [<storage>] [--format] [--delete] [--digest] [--bwlimit]"
    (disk,), extra = _positional(rest, 1, usage)
    storage = extra.pop(0) if extra and not extra[0].startswith("--") else None
    options = parse(extra)
    unknown = set(options) - MOVE_OPTIONS
    if unknown:
        raise CommandError(f"unknown options: {', '.join(sorted(unknown))}")
    storage = storage or options.get("storage")
    if not storage:
        raise CommandError(f"usage: qm {usage}")
    bwlimit = options.get("bwlimit", "0")
    if not bwlimit.isdigit():
        raise CommandError(f"--bwlimit: expected KiB/s (an integer >= 0), got {bwlimit!r}")
    vm = command._vm(vmid)
    plan = disk_move.check_move(
        vm,
        disk=disk,
        storage=storage,
        actor=root,
        fmt=options.get("format"),
        delete=_flag(options, "delete"),
        digest=options.get("digest"),
    )
    command._as_task(
        "qmmove",
        vm,
        lambda log, upid: disk_move.move_disk(plan, owner=upid, user="root@pam", log=log, bwlimit=int(bwlimit) or None),
    )
