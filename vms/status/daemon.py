"""``manage.py pvestatd``: a collector round every ``PVE_STATUS_INTERVAL`` seconds until SIGTERM.

A child of the node runner (registered in ``vms.apps``). Rounds are paced by a monotonic clock;
a round that fails is logged and the next one runs on time.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from django.conf import settings
from django.db import connections

from portal.runner.supervisor import ChildSpec
from vms.status.collector import Collector
from vms.status.rrd import RRDStore

log = logging.getLogger("pvestatd")


def run(stop: threading.Event | None = None, rounds: int | None = None) -> None:
    stop = stop or threading.Event()
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)  # a VM going away mid-round is normal

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    store = RRDStore()
    collector = Collector(store=store)
    log.info("collecting the status of node %s every %s s", collector.node, settings.PVE_STATUS_INTERVAL)
    done = 0
    next_round = time.monotonic()
    try:
        while not stop.is_set():
            try:
                collector.round()
            except Exception:
                log.exception("status round failed")
            finally:
                connections.close_all()
            done += 1
            if rounds is not None and done >= rounds:
                break
            next_round += settings.PVE_STATUS_INTERVAL
            stop.wait(max(next_round - time.monotonic(), 0.0))
            next_round = max(next_round, time.monotonic() - settings.PVE_STATUS_INTERVAL)
    finally:
        store.close()


def child_spec(env: dict[str, str]) -> ChildSpec:
    """The node runner's ``pvestatd`` child."""
    manage = Path(__file__).resolve().parent.parent.parent / "manage.py"
    return ChildSpec("pvestatd", [sys.executable, str(manage), "pvestatd"], env, cwd=manage.parent)
