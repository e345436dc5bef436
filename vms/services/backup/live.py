"""A running VM's disks at one instant for ``snapshot`` and ``suspend`` backups.

First choice, fleecing (:mod:`vms.qemu.fleecing`): the disks are streamed straight from QEMU into
the archive while the guest runs, only blocks it rewrites meanwhile being copied aside. Fallback
when QEMU refuses it (or ``nbdcopy`` is missing): QEMU's backup job copies every disk into a raw
file first (:mod:`vms.qemu.backupjob`), which the archive then reads. Either starts inside one
quiesced instant: the guest's filesystems frozen through its agent (``snapshot`` with ``agent``
on, unless ``freeze-fs-on-backup=0``) or its vCPUs paused (``suspend``), for as long as the start
takes, as Proxmox does.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from vms.models import VM
from vms.property_strings import property_string_parse
from vms.qemu import agent, backupjob, qmp
from vms.qemu.fleecing import Fleece

Log = Callable[[str], None]


def freeze_enabled(config: Mapping[str, str]) -> bool:
    if not config.get("agent"):
        return False
    items = property_string_parse(config["agent"], default_key="enabled")
    return items.get("enabled") == "1" and items.get("freeze-fs-on-backup", "1") == "1"


@contextlib.contextmanager
def quiesced(vm: VM, mode: str, log: Log, warn: Log) -> Iterator[None]:
    """The guest frozen (``snapshot`` with the agent) or paused (``suspend``) for the body's duration."""
    frozen = paused = False
    if mode == "snapshot" and freeze_enabled(vm.config):
        log("issuing guest-agent 'fs-freeze' command")
        try:
            agent.fsfreeze_freeze(vm.vmid)
            frozen = True
        except agent.AgentError as exc:
            warn(f"unable to freeze guest filesystems: {exc}")
    if mode == "suspend" and qmp.status(vm.vmid) == "running":
        log("suspending guest")
        qmp.command(vm.vmid, "stop")
        paused = True
    try:
        yield
    finally:
        if frozen:
            log("issuing guest-agent 'fs-thaw' command")
            try:
                agent.fsfreeze_thaw(vm.vmid)
            except agent.AgentError as exc:
                warn(f"unable to thaw guest filesystems: {exc}")
        if paused:
            qmp.command(vm.vmid, "cont")
            log("resuming VM again")


def start_fleecing(vm: VM, mode: str, sizes: dict[str, int], tmpdir: Path, log: Log, warn: Log) -> Fleece | None:
    """The disks (key -> size) exported as they are now; None when fleecing is not possible here."""
    if not sizes or shutil.which("nbdcopy") is None:
        return None
    fleece = Fleece(vm.vmid, {f"drive-{key}": size for key, size in sizes.items()}, tmpdir)
    try:
        with quiesced(vm, mode, log, warn):
            fleece.start()
    except qmp.QMPCommandError as exc:
        fleece.close()
        log(f"backup fleecing not possible ({exc}): copying the disks first")
        return None
    log("started backup fleecing (copy-before-write: the disks as they are now, read while the guest runs)")
    return fleece


def copy_disks(
    vm: VM, mode: str, keys: list[str], tmpdir: Path, log: Log, warn: Log, bwlimit: int | None
) -> dict[str, str]:
    """The fallback: QEMU's backup job copies each disk (by key) into a raw file under ``tmpdir``, one instant."""
    targets = {f"drive-{key}": str(tmpdir / f"disk-{key}.raw") for key in keys}
    if not targets:
        return {}
    with quiesced(vm, mode, log, warn):
        log("started backup job (copy-before-write: the disks as they are now)")
        backupjob.start(vm.vmid, targets, bwlimit=bwlimit)
    backupjob.wait(vm.vmid, list(targets), log=log)
    return {key: targets[f"drive-{key}"] for key in keys}
