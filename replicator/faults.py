"""Crash points for the fault tests: a change set carrying ``crash:<point>`` kills its origin's replicator there.

Armed only when ``PVE_FAULT_INJECTION`` is set (the lab tests set it); inert in production.
"""

from __future__ import annotations

import os
import signal

from django.conf import settings


def crash_point(name: str, origin: str, payload: bytes) -> None:
    """SIGKILL this process (as ``kill -9`` would) at point ``name`` if the change set asks for it."""
    if settings.PVE_FAULT_INJECTION and origin == settings.PVE_NODE_NAME and f"crash:{name}".encode() in payload:
        os.kill(os.getpid(), signal.SIGKILL)


def clock_offset() -> float:
    """Seconds this node's status clock runs ahead (``PVE_CLOCK_OFFSET``): a skewed clock without root."""
    return float(settings.PVE_CLOCK_OFFSET) if settings.PVE_FAULT_INJECTION else 0.0
