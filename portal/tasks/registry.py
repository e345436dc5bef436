"""Task operations by name: what a Celery message may ask a worker to run.

An operation is a plain function ``fn(task: TaskHandle, **kwargs)`` with JSON-able keyword
arguments, registered under a name. Messages carry only the name, so a worker runs nothing but
registered code, and the same function can be tested without Celery. Every app keeps its
operations in ``<app>/operations.py``; the portal app imports them all when Django is ready
(``discover``, as the admin imports ``admin`` modules).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portal.tasks.exceptions import UnknownOperation

DEFAULT_TIME_LIMIT = 3600  # seconds; operations that may take longer say so when registering

Operation = Callable[..., None]


@dataclass(frozen=True)
class OperationSpec:
    name: str
    function: Operation
    time_limit: int


_operations: dict[str, OperationSpec] = {}
_discovered = False


def operation(name: str, *, time_limit: int = DEFAULT_TIME_LIMIT) -> Callable[[Operation], Operation]:
    """Register ``fn`` as the operation ``name`` (a decorator); re-registering a name replaces it."""

    def register(function: Operation) -> Operation:
        _operations[name] = OperationSpec(name, function, time_limit)
        return function

    return register


def discover() -> None:
    """Import every installed app's ``operations`` module once."""
    global _discovered
    if not _discovered:
        _discovered = True
        from django.utils.module_loading import autodiscover_modules

        autodiscover_modules("operations")


def get_operation(name: str) -> OperationSpec:
    if name not in _operations:
        discover()
    try:
        return _operations[name]
    except KeyError:
        raise UnknownOperation(name) from None


def registered() -> dict[str, Any]:
    return dict(_operations)
