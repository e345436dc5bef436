"""Leases on the objects tasks change: a lock reason plus the owning UPID, in replicated state.

The task framework knows no VM (dependencies point ``portal <- vms``), so apps register a provider
per kind of object (``vms`` registers ``vm``: the config's ``lock`` plus ``lock_owner``). A
provider takes a lease atomically (the replicated row's version is checked, so two tasks cannot
both take it) and releases it only for its owner, so a late release never drops someone else's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from portal.tasks.exceptions import TaskError


@dataclass(frozen=True)
class LockSpec:
    """The lease a task takes: ``LockSpec("vm", "100", "migrate")``."""

    kind: str
    key: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "key": self.key, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockSpec:
        return cls(str(data["kind"]), str(data["key"]), str(data["reason"]))


class LockProvider(Protocol):
    """What an app implements for one kind of lockable object."""

    def check(self, key: str) -> None:
        """Raise the app's 'is locked' error when the object is locked now (a quick refusal)."""

    def acquire(self, key: str, reason: str, owner: str) -> None:
        """Take the lease for ``owner`` (a UPID) or raise; taking it again as its owner is a no-op."""

    def release(self, key: str, owner: str) -> bool:
        """Drop the lease if ``owner`` holds it; whether it did."""

    def held(self) -> Iterable[tuple[str, str]]:
        """``(key, owner)`` of every lease that names an owner."""


_providers: dict[str, LockProvider] = {}


def register(kind: str, provider: LockProvider) -> None:
    """Called from an app's ``ready()``."""
    _providers[kind] = provider


def provider(kind: str) -> LockProvider:
    try:
        return _providers[kind]
    except KeyError:
        raise TaskError(f"no lock provider for '{kind}'") from None


def check(spec: LockSpec) -> None:
    provider(spec.kind).check(spec.key)


def acquire(spec: LockSpec, owner: str) -> None:
    provider(spec.kind).acquire(spec.key, spec.reason, owner)


def release(spec: LockSpec, owner: str) -> bool:
    return provider(spec.kind).release(spec.key, owner)


def held_leases() -> list[tuple[str, str, str]]:
    """``(kind, key, owner)`` of every owned lease of every kind."""
    return [(kind, key, owner) for kind, item in _providers.items() for key, owner in item.held()]
