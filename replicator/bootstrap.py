"""First-start content: apps register functions returning rows this node needs and lacks.

Run by the replicator at every start; each function returns unsaved or changed instances
(the built-in realms, ``root@pam``, the node's own row and certificate, key material), and the
replicator submits them as one change set through the ordinary write path, so they enter
the history like any other write.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from django.db.models import Model

# ``runnode`` hands the terminal it was started from to the replicator as this inherited descriptor.
TERMINAL_FD_ENV = "PVE_TERMINAL_FD"

BootstrapFunction = Callable[[str], list[Model]]
_functions: list[BootstrapFunction] = []
_local_nodeid: int | None = None


def set_local_nodeid(nodeid: int | None) -> None:
    """The corosync node id of this node, when it runs in a cluster (the Node row must match it)."""
    global _local_nodeid
    _local_nodeid = nodeid


def local_nodeid() -> int | None:
    return _local_nodeid


def register(function: BootstrapFunction) -> BootstrapFunction:
    """Decorator: ``function(node_name)`` returns instances to save."""
    _functions.append(function)
    return function


def collect(node_name: str) -> list[Model]:
    """Everything every registered function wants saved, in registration order."""
    instances: list[Model] = []
    for function in _functions:
        instances.extend(function(node_name))
    return instances


def tell_terminal(text: str) -> bool:
    """Show ``text`` on the terminal that started the node, never in a log or the journal; whether it was shown.

    Under ``runnode`` the replicator's output goes to its log file, so the runner passes its own
    terminal as the descriptor named in ``PVE_TERMINAL_FD``; a replicator started by hand uses its
    stderr. Only a descriptor that is a terminal is written to: under systemd (the journal) or
    with output redirected to a file nothing is shown.
    """
    raw = os.environ.get(TERMINAL_FD_ENV, "")
    candidates = [int(raw)] if raw.isdigit() else []
    with contextlib.suppress(AttributeError, OSError, ValueError):  # no usable stderr at all
        candidates.append(sys.stderr.fileno())
    for fd in candidates:
        try:
            if os.isatty(fd):
                os.write(fd, text.encode())
                return True
        except OSError:
            continue
    return False
