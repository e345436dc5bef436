"""Who changed access control: each service records its change in the cluster log, in its change set."""

from __future__ import annotations

from typing import Any

from authz.permissions import principal_of
from portal import audit


def record(actor: Any, message: str) -> None:
    """Log ``message`` as done by ``actor`` (its user id, or its token id for a token).

    Called inside the service's ``transaction.atomic(using="cluster")`` block, so the entry is
    part of the same change set as the change: both happen or neither does.
    """
    audit.record(principal_of(actor) or "", message)
