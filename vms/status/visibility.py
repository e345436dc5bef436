"""Which objects of a kind a caller may see: ``authz.restrict``'s answer, kept as a value.

``/cluster/resources`` shares an answer among callers who see the same objects, so the answer
(everything but these, or only these) is a comparable value here; the rule itself is the
resolver's, computed by ``authz.restrict.permitted_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from authz.restrict import narrow, permitted_keys

_M = TypeVar("_M", bound=Model)


@dataclass(frozen=True)
class Visible:
    """Every id (``default``) except ``exceptions``, or (not ``default``) only ``exceptions``."""

    default: bool
    exceptions: frozenset[str]

    def allows(self, key: str) -> bool:
        return self.default != (key in self.exceptions)

    def apply(self, queryset: QuerySet[_M], field: str) -> QuerySet[_M]:
        return narrow(queryset, field, self.default, self.exceptions)


def visible(user: Any, prefix: str, wanted: tuple[str, ...], *, any_of: bool = False) -> Visible:
    """The ids under ``prefix`` (``/vms``, ``/storage``, ``/pool``, ``/nodes``) on which ``user``
    holds ``wanted`` (all of them, or one with ``any_of``)."""
    default, exceptions = permitted_keys(user, f"{prefix}/{{key}}", wanted, any_of=any_of)
    return Visible(default, frozenset(exceptions))
