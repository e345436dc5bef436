"""Long-running access-control operations: the work of a task, logged to its task log.

``pveum realm sync`` runs :func:`sync_realm` inline under a UPID (``auth-realm-sync``); it is not
registered for workers, since it acts for a user object rather than JSON-able arguments.
"""

from __future__ import annotations

from typing import Any

from authz import services


def sync_realm(task: Any, *, realm: str, actor: Any, scope: str = "both", remove_vanished: bool = False) -> None:
    """Copy the realm's users and groups from its directory, each step in the task's log."""
    services.sync_realm(realm, actor=actor, scope=scope, remove_vanished=remove_vanished, log=task.log)
