"""Resolve live migrations a crash left half done: one owner, one QEMU, after either node restarts.

The replicated VM config is the truth about ownership: ownership moves in one replicated change
after QEMU reported the memory transfer ``completed`` (:mod:`vms.services.migration.online`).
The ``migrate`` lock is a lease of the ``qmigrate`` task; the task reconciler
(:mod:`portal.tasks.reconcile`) of the task's node releases it once that task is dead (its
process is gone, the node restarted). While the lock is held the migration counts as live and
nothing here touches the VM. Once it is not, every QEMU of this node is judged (:func:`decide`):

* the VM belongs to another node: this QEMU is a leftover, either the target's incoming QEMU of a
  migration that never moved the ownership, or the source's QEMU of one that did; it is stopped
  (the owner's QEMU, if any, is the one that runs);
* the VM belongs to this node and its QEMU, started for an incoming migration (``-incoming``), is
  still ``paused`` (the source died between the ownership change and the resume) and no
  ``qm suspend`` paused it since it started: it is resumed;
* the VM belongs to this node, no migration lock is held and its QEMU still sends the memory
  out (the ``qmigrate`` task died during the transfer) or finished sending it (``postmigrate``)
  without the ownership having moved: the outgoing migration is cancelled and the guest continues
  here (the target's QEMU is the leftover of the first rule on its node);
* anything else is left alone (a QEMU still receiving, ``inmigrate``, is judged again next round).

Each resolution is written to the cluster log. Nothing is done without quorum: the replicated
state may then be stale and writes are refused anyway. The VM watcher (``qmeventd``) runs
:func:`reconcile` every ``EVERY_ROUNDS`` rounds, so it also runs right after a node starts.
The images a live migration's target allocated for the local disks are recorded there until the
migration ends (:mod:`.incoming_volumes`); a record left with no QEMU (the target crashed, or the
source died and the leftover QEMU was stopped) is settled in the same pass: the images freed if
the VM is not this node's, forgotten if it is. Not handled: volumes a crashed *offline*
migration had streamed to the target (``pvesm free`` them by hand).
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from cluster.services import log_cluster_message
from replicator import client as replicator_client
from replicator.exceptions import ReplicationError
from vms.exceptions import VMError, VMLocked
from vms.leases import config_lock
from vms.models import VM
from vms.qemu import incoming, incoming_volumes, process, qmp
from vms.qemu import migration as qemu_migration
from vms.runtime_paths import pause_marker, vm_file, vm_pid
from vms.storage.volumes import free_volume

log = logging.getLogger(__name__)

MIGRATE_LOCK = "migrate"
EVERY_ROUNDS = 5  # watcher rounds between two passes


class Action(enum.Enum):
    KEEP = "keep"
    STOP = "stop"
    RESUME = "resume"
    CANCEL = "cancel"
    FREE = "free"  # the images a dead migration's target had allocated, with no QEMU left


OUTGOING = ("active", "setup", "cancelling", "pre-switchover", "device", "wait-unplug")


@dataclass(frozen=True)
class Seen:
    """What this node knows of one VM with a live QEMU here."""

    vmid: int
    owner: str | None  # the VM's node in the replicated config; None: no such VM
    lock: str
    incoming: bool  # QEMU was started for an incoming migration
    status: str = ""  # QEMU's run state (asked only when it matters)
    paused_by_user: bool = False  # a ``qm suspend`` since this QEMU started
    migration: str = ""  # ``query-migrate`` status of an owned QEMU (asked only when it matters)


def decide(seen: Seen, node: str) -> Action:
    """The pure rule; ``status`` is needed only for an owned incoming QEMU (see :func:`needs_status`)."""
    if seen.owner is None or seen.lock == MIGRATE_LOCK:
        return Action.KEEP  # no VM: not a migration's business; locked: a migration is live
    if seen.owner != node:
        return Action.STOP
    if seen.migration in OUTGOING or seen.status in ("postmigrate", "finish-migrate"):
        return Action.CANCEL
    if seen.incoming and seen.status == "paused" and not seen.paused_by_user:
        return Action.RESUME
    return Action.KEEP


def needs_status(seen: Seen, node: str) -> bool:
    return seen.owner == node and seen.lock != MIGRATE_LOCK


def _started_incoming(vmid: int) -> bool:
    pid = vm_pid(vmid)
    if pid is None:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    # a migration's target listens (unix:/tcp:); a start from a saved state (exec:cat ...) is no migration
    return any(arg == b"-incoming" and value.startswith((b"unix:", b"tcp:")) for arg, value in itertools.pairwise(argv))


def _paused_by_user(vmid: int) -> bool:
    try:
        return pause_marker(vmid).stat().st_mtime >= vm_file(vmid, "pid").stat().st_mtime
    except OSError:
        return False


def quorate() -> bool:
    try:
        return bool(replicator_client.status().get("quorate", False))
    except ReplicationError:
        return False


def observe(vmids: Iterable[int], node: str) -> list[Seen]:
    rows = {vm.vmid: vm for vm in VM.objects.filter(vmid__in=list(vmids))}
    found = []
    for vmid in sorted(vmids):
        vm = rows.get(vmid)
        seen = Seen(
            vmid,
            vm.node_id if vm is not None else None,
            vm.lock if vm is not None else "",
            _started_incoming(vmid),
            paused_by_user=_paused_by_user(vmid),
        )
        if needs_status(seen, node):
            try:
                status = qmp.status(vmid)
                migration = str(qmp.command(vmid, "query-migrate").get("status", ""))
                seen = Seen(seen.vmid, seen.owner, seen.lock, seen.incoming, status, seen.paused_by_user, migration)
            except (VMError, qmp.QMPCommandError):
                continue  # QMP busy or gone: next round
        found.append(seen)
    return found


def _say(message: str, note: Callable[[str], None] | None) -> None:
    log.warning("%s", message)
    if note is not None:
        note(message)
    try:
        log_cluster_message(message, pri=4, tag="qmigrate")
    except Exception:  # read-only cluster: the action is done, only the entry is missing
        log.warning("cluster log entry not written: %s", message, exc_info=True)


def resolve(seen: Seen, action: Action, node: str, note: Callable[[str], None] | None = None) -> bool:
    """Carry out ``action`` under the VM's config lock (skipped if an operation holds it); whether it did."""
    quiet: Callable[[str], None] = lambda line: log.info("VM %s: %s", seen.vmid, line)  # noqa: E731
    try:
        with config_lock(seen.vmid, timeout=0):
            current = VM.objects.filter(vmid=seen.vmid).first()
            if current is None or current.node_id != seen.owner or current.lock != seen.lock:
                return False  # changed meanwhile: judged again next pass
            if action is Action.STOP:
                incoming.stop_incoming(seen.vmid, migratedfrom=current.node_id, log=quiet)
                _say(
                    f"VM {seen.vmid}: stopped its QEMU on node '{node}' left by an interrupted migration "
                    f"(the VM belongs to node '{current.node_id}')",
                    note,
                )
            elif action is Action.RESUME:
                incoming.resume_incoming(seen.vmid, log=quiet, wait=0)
                _say(
                    f"VM {seen.vmid}: resumed its QEMU on node '{node}', left paused by an interrupted migration "
                    "after the VM moved here",
                    note,
                )
            elif action is Action.CANCEL:
                qemu_migration.cancel(seen.vmid, log=quiet)
                _say(
                    f"VM {seen.vmid}: cancelled the outgoing migration its dead migration task left; the guest "
                    f"runs on on node '{node}', which owns it",
                    note,
                )
            else:
                return False
    except VMLocked:
        return False
    except (VMError, qmp.QMPCommandError) as exc:
        log.warning("VM %s: migration leftover not resolved: %s", seen.vmid, exc)
        return False
    return True


def reconcile(note: Callable[[str], None] | None = None) -> dict[int, Action]:
    """One pass over this node's QEMUs; what was done (nothing without quorum)."""
    node = settings.PVE_NODE_NAME
    running = process.running_vmids()
    records = incoming_volumes.pending()
    if not (running or records) or not quorate():
        return {}
    done: dict[int, Action] = {}
    for seen in observe(running, node):
        action = decide(seen, node)
        if action is not Action.KEEP and resolve(seen, action, node, note):
            done[seen.vmid] = action
    for vmid in records:
        if vmid not in running and _settle(vmid, node, note):
            done[vmid] = Action.FREE
    return done


def _settle(vmid: int, node: str, note: Callable[[str], None] | None) -> bool:
    """A target's record of copies with no QEMU here (either node crashed): whether its images were freed."""
    quiet: Callable[[str], None] = lambda line: log.info("VM %s: %s", vmid, line)  # noqa: E731
    try:
        with config_lock(vmid, timeout=0):
            outcome = incoming_volumes.settle(vmid, running=vm_pid(vmid) is not None, free=free_volume, log=quiet)
    except VMLocked:
        return False
    if outcome != "freed":
        return False
    _say(f"VM {vmid}: freed on node '{node}' the disk copies of a migration to it that never finished", note)
    return True
