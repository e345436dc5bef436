"""Which objects of a kind a caller may see, as a query filter rather than a check per row.

Most objects take their privileges from the ACL entries on their parents (``/``, ``/vms``);
only those with an entry of their own (``/vms/100``) or in a pool can differ. So the caller's
privileges are resolved once for an imaginary member of the kind, then once per exception: the
result is "everything but these" or "only these", a ``vmid__in`` filter for the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.db.models import Q

from authz import resolver
from authz.permissions import principal_of, privileges


@dataclass(frozen=True)
class Visible:
    """Every id (``default``) except ``exceptions``, or (not ``default``) only ``exceptions``."""

    default: bool
    exceptions: frozenset[str]

    def allows(self, key: str) -> bool:
        return self.default != (key in self.exceptions)

    def q(self, field: str) -> Q:
        if self.default:
            return ~Q(**{f"{field}__in": list(self.exceptions)}) if self.exceptions else Q()
        return Q(**{f"{field}__in": list(self.exceptions)})


def visible(user: Any, prefix: str, wanted: tuple[str, ...], *, any_of: bool = False) -> Visible:
    """The ids under ``prefix`` (``/vms``, ``/storage``, ``/pool``, ``/nodes``) on which ``user``
    holds ``wanted`` (all of them, or one with ``any_of``)."""

    def holds(path: str) -> bool:
        held = privileges(user, path)
        return bool(held & set(wanted)) if any_of else set(wanted) <= held

    if principal_of(user) is None:
        return Visible(False, frozenset())
    state = resolver.state()
    pattern = re.compile(rf"^{re.escape(prefix)}/([^/]+)")
    special = {match.group(1) for path in (*state.acl, *state.pool_of) if (match := pattern.match(path))}
    default = holds(f"{prefix}/\0")  # no entry names it and it is in no pool
    return Visible(default, frozenset(key for key in special if holds(f"{prefix}/{key}") != default))
