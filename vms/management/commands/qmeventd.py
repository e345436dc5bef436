"""``manage.py qmeventd``: this node's VM watcher (Proxmox's qmeventd) and, at its start, ``startall``.

Started by the node runner next to the worker. First the ``onboot`` VMs are started in
``startup`` order (a ``startall`` task, as pve-guests.service does at boot), then QEMUs that end
without an operation of ours are noticed and cleaned up (``vms.qemu.watcher``) until SIGTERM.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from portal.tasks.index import TaskHandle
from vms.qemu import lifecycle, watcher


class Command(BaseCommand):
    help = "Start the onboot VMs, then watch this node's QEMU processes and clean up after ones that ended."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-startall", action="store_true", help="Do not start the onboot VMs first.")
        parser.add_argument("--interval", type=float, default=watcher.POLL_INTERVAL, help="Seconds between polls.")

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stopping.set())
        if not options["no_startall"]:
            self._startall()
        watcher.run(stopping.is_set, interval=options["interval"])

    def _startall(self) -> None:
        task = TaskHandle("startall", "", "root@pam")
        try:
            lifecycle.start_all(log=task.log, warn=task.warn)
        except Exception as exc:
            task.finish(str(exc) or type(exc).__name__)
            return
        task.finish()
