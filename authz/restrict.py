"""Lists restricted in the query, before rows are fetched (as NetBox's ``RestrictedQuerySet``).

An object's privileges come from the ACL entries on its path's prefixes and from its pool. Every
object of a collection without an entry of its own and outside any pool therefore holds the same
privileges: the ones a path no entry names would get. Only the objects named by an ACL entry or a
pool differ; those few are resolved one by one. A list then costs one query whatever the number of
rows, and the privileges are the resolver's own (``authz.resolver``, PVE-INTERNALS §6.6).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model, QuerySet

from authz import resolver
from authz.permissions import principal_of

_M = TypeVar("_M", bound=Model)
_TEMPLATE_RE = re.compile(r"(/[^{}]*/)\{(\w+)\}")
_UNNAMED = "\x00"  # a path segment no ACL entry nor pool member can name


def _split(template: str) -> tuple[str, str]:
    """``"/vms/{vmid}"`` -> (``"/vms/"``, ``"vmid"``); the placeholder must be the last segment."""
    match = _TEMPLATE_RE.fullmatch(template)
    if match is None:
        raise ValueError(f"ACL path template {template!r} must end in one '{{field}}' segment")
    return match.group(1), match.group(2)


def _holds(held: set[str], wanted: Iterable[str], any_of: bool) -> bool:
    wanted = set(wanted)
    return bool(wanted & held) if any_of else wanted <= held


def permitted_keys(
    actor: Any, template: str, privileges: Iterable[str], *, any_of: bool = False
) -> tuple[bool, set[str]]:
    """``(default, exceptions)``: whether an object named by no ACL entry and no pool is permitted,
    and the keys (``{field}`` values) whose answer is the opposite."""
    wanted = list(privileges)
    principal = principal_of(actor)
    if principal is None or not getattr(actor, "is_active", False):
        return False, set()
    prefix, _field = _split(template)
    state = resolver.state()
    default = _holds(resolver.privileges(state, principal, prefix + _UNNAMED), wanted, any_of)
    named = {path[len(prefix) :] for path in (*state.acl, *state.pool_of) if path.startswith(prefix)}
    exceptions = set()
    for key in named:
        if not key or "/" in key:
            continue
        if _holds(resolver.privileges(state, principal, prefix + key), wanted, any_of) != default:
            exceptions.add(key)
    return default, exceptions


def narrow(queryset: QuerySet[_M], field: str, default: bool, exceptions: Iterable[str]) -> QuerySet[_M]:
    """``queryset`` narrowed by a ``permitted_keys`` answer on ``field``."""
    model_field = queryset.model._meta.get_field(field)
    keys = []
    for key in exceptions:
        try:
            keys.append(model_field.to_python(key))  # type: ignore[union-attr]  # a concrete field
        except ValidationError:
            continue  # an entry on a path no object of this kind can have (/vms/abc)
    lookup = {f"{field}__in": keys}
    if default:
        return queryset.exclude(**lookup) if keys else queryset
    return queryset.filter(**lookup) if keys else queryset.none()


def restrict(
    queryset: QuerySet[_M], actor: Any, template: str, privileges: Iterable[str], *, any_of: bool = False
) -> QuerySet[_M]:
    """``queryset`` narrowed to the objects on whose path (``template``, e.g. ``"/vms/{vmid}"``)
    ``actor`` holds ``privileges`` (all of them, or one with ``any_of``)."""
    _prefix, field = _split(template)
    default, exceptions = permitted_keys(actor, template, privileges, any_of=any_of)
    return narrow(queryset, field, default, exceptions)
