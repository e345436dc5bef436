"""Notice QEMUs that end without an operation of ours (killed, crashed, powered off from inside).

Proxmox's qmeventd does this from QMP events; a daemonized QEMU cannot be waited for, so this
polls ``vm_pid`` for the VMs it saw running. A VM whose QEMU is gone while no operation holds its
config lock gets its taps, sockets and pid file removed and a cluster log entry. An operation that
holds the lock cleans up itself, so the watcher skips that VM this round. Every
``migration_reconcile.EVERY_ROUNDS`` rounds (the first one right after the node started) it also
resolves what an interrupted live migration left (:mod:`vms.qemu.migration_reconcile`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from django.conf import settings
from django.db import close_old_connections

from cluster.services import log_cluster_message
from portal.runner.node import MANAGE
from portal.runner.supervisor import ChildSpec
from vms.exceptions import VMLocked
from vms.leases import config_lock
from vms.models import VM
from vms.qemu import migration_reconcile, process
from vms.runtime_paths import run_dir

log = logging.getLogger(__name__)
POLL_INTERVAL = 1.0  # seconds


class Watcher:
    """Which VMs of this node run; ``poll()`` cleans up after the ones that stopped since."""

    def __init__(self) -> None:
        self.running: set[int] = set()
        self.rounds = 0

    def leftovers(self) -> set[int]:
        """VMs with runtime files (a pid file or sockets) but no live QEMU: a run that ended unseen."""
        found = set()
        for path in run_dir().iterdir():
            stem = path.name.partition(".")[0]
            if stem.isdigit() and path.suffix in (".pid", ".qmp"):
                found.add(int(stem))
        return found

    def poll(self) -> list[int]:
        """One round; the VMs cleaned up."""
        now = process.running_vmids()
        gone = (self.running | self.leftovers()) - now
        cleaned = []
        for vmid in sorted(gone):
            try:
                with config_lock(vmid, timeout=0):
                    if process.is_running(vmid):
                        now.add(vmid)
                        continue
                    vm = VM.objects.filter(vmid=vmid).first()
                    removed = process.cleanup(vmid, vm.config if vm is not None else {})
            except VMLocked:
                now.add(vmid)  # an operation is busy with it: it cleans up, or we see it next round
                continue
            cleaned.append(vmid)
            log.info("VM %s: QEMU ended; removed %s", vmid, ", ".join(removed) or "nothing")
            if vm is not None and vm.node_id == settings.PVE_NODE_NAME:
                try:
                    log_cluster_message(f"VM {vmid} stopped: its QEMU process ended (cleaned up)", pri=4)
                except Exception:  # a read-only cluster must not stop the cleanup of others
                    log.warning("VM %s: cluster log entry not written", vmid, exc_info=True)
        self.running = now
        self.rounds += 1
        if self.rounds % migration_reconcile.EVERY_ROUNDS == 1:
            try:
                migration_reconcile.reconcile()
            except Exception:  # a database hiccup: the next pass tries again
                log.exception("migration reconciler pass failed")
        return cleaned


def watcher_child(env: dict[str, str]) -> ChildSpec:
    """The node runner's child running ``manage.py qmeventd``."""
    return ChildSpec("qmeventd", [sys.executable, str(MANAGE), "qmeventd"], env, cwd=MANAGE.parent)


def run(stop: Callable[[], bool], interval: float = POLL_INTERVAL) -> None:
    """Poll until ``stop()`` says so."""
    watcher = Watcher()
    while not stop():
        try:
            watcher.poll()
        except Exception:  # a database hiccup: try again next round
            log.exception("VM watcher round failed")
            close_old_connections()
        time.sleep(interval)
