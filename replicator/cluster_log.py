"""The cluster log as the replicator writes it (divergence, checksum mismatches): the log's model is handed in.

The replicator keeps the cluster log, as pmxcfs keeps Proxmox's, but knows no app: the app that
owns the log's model (``cluster``) registers at ``ready()`` how an entry is made, and the
replicator submits the entries it writes through its own write path.
"""

from __future__ import annotations

from typing import Protocol

from replicator.models import ReplicatedModel


class EntryFactory(Protocol):
    def __call__(self, msg: str, *, node: str, pri: int, tag: str) -> ReplicatedModel:
        """An unsaved log entry written now by this process."""


_factory: EntryFactory | None = None


def set_entry_factory(factory: EntryFactory) -> None:
    """Called by the app owning the cluster log."""
    global _factory
    _factory = factory


def new_entry(msg: str, *, node: str, pri: int, tag: str) -> ReplicatedModel | None:
    """An unsaved entry of the cluster log; None when no app registered one."""
    return None if _factory is None else _factory(msg, node=node, pri=pri, tag=tag)
