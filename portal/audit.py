"""Audit hook: admin actions are recorded in the replicated cluster log.

portal imports no app, so the cluster app registers the sink (``set_sink``) and the source of
recent entries (``set_recent``) when it is ready.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Sink = Callable[[str, str], object]  # what it returns (the entry written) is not used
Recent = Callable[[int, str | None], list[Any]]
_sink: Sink | None = None
_recent: Recent | None = None


def set_sink(sink: Sink) -> None:
    global _sink
    _sink = sink


def set_recent(recent: Recent) -> None:
    global _recent
    _recent = recent


def record(user: str, message: str) -> None:
    """Append ``message`` by ``user`` to the cluster log (no-op until a sink is registered)."""
    if _sink is not None:
        _sink(user, message)


def recent(count: int, user: str | None = None) -> list[Any]:
    """The newest cluster log entries, for the admin index (only ``user``'s own when given)."""
    return _recent(count, user) if _recent is not None else []
