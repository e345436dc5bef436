"""``GET /nodes/{node}/syslog`` and ``/journal``: the node's own system log (``Sys.Syslog`` on the node).

Both read the records ``runnode`` keeps (:mod:`portal.syslog`). ``syslog`` answers as Proxmox's
``dump_journal`` does: ``{n, t}`` lines numbered from 1, ``start`` lines skipped, at most ``limit``
(default 50), ``total`` the count of matching lines, and a single ``no content`` line when none
match (the GUI's store needs a row). ``journal`` answers as ``mini-journalreader`` does: a list of
strings, the first entry's cursor first and the last entry's cursor last, so a client polls
with ``startcursor`` (entries after it) and pages back with ``endcursor`` (entries before it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from cluster.api.nodes import local_node_or_error
from portal import syslog
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok

DATETIME = r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?"  # Proxmox's since/until of syslog
DEFAULT_LIMIT = 50
CURSOR = re.compile(r"s=([0-9]{1,19})")
SYSLOG_PARAMS = frozenset({"node", "start", "limit", "since", "until", "service"})
JOURNAL_PARAMS = frozenset({"node", "since", "until", "lastentries", "startcursor", "endcursor"})


def _reject_unknown(values: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        message = "property is not defined in schema and the schema does not allow additional properties"
        raise ParameterError(dict.fromkeys(unknown, message))


def _local_epoch(value: str | None, name: str, end: bool) -> float | None:
    """``YYYY-MM-DD[ HH:MM[:SS]]`` in the node's local time; ``until`` includes the whole day, minute or second."""
    if value is None:
        return None
    date, _, clock = value.partition(" ")
    hour, minute, second = ([*map(int, clock.split(":")), 0][:3]) if clock else (0, 0, 0)
    try:
        stamp = time.mktime(time.strptime(f"{date} {hour}:{minute}:{second}", "%Y-%m-%d %H:%M:%S"))
    except ValueError:
        raise ParameterError({name: f"invalid date-time '{value}'"}) from None
    if not end:
        return stamp
    return stamp + (86400 if not clock else 60 if clock.count(":") == 1 else 1)  # up to the end of what it names


def _between(records: Iterable[syslog.Record], since: float | None, until: float | None) -> list[syslog.Record]:
    return [r for r in records if (since is None or r.time >= since) and (until is None or r.time < until)]


def _checked_values(request: Request, node: str, allowed: frozenset[str]) -> dict[str, Any]:
    """Sys.Syslog on the node, this node, and only the parameters the endpoint knows."""
    check(request.user, f"/nodes/{node}", ["Sys.Syslog"])
    local_node_or_error(node)
    values = params.collect(request, {"node": node})
    _reject_unknown(values, allowed)
    return values


class SyslogView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        values = _checked_values(request, node, SYSLOG_PARAMS)
        with params.ParamCollector(values) as p:
            start = p.integer("start", minimum=0, default=0)
            limit = p.integer("limit", minimum=0, default=0) or DEFAULT_LIMIT
            since = p.string("since", pattern=DATETIME, default=None)
            until = p.string("until", pattern=DATETIME, default=None)
            service = p.string("service", max_length=128, default=None)
        matching = _between(
            syslog.records(settings.PVE_LOG_DIR),
            _local_epoch(since, "since", False),
            _local_epoch(until, "until", True),
        )
        if service is not None:
            matching = [r for r in matching if r.ident == service]
        if not matching:
            return ok([{"n": 1, "t": "no content"}], total=1)
        window = matching[start : start + limit]
        return ok([{"n": start + i + 1, "t": r.line(node)} for i, r in enumerate(window)], total=len(matching))


class JournalView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        values = _checked_values(request, node, JOURNAL_PARAMS)
        with params.ParamCollector(values) as p:
            since = p.integer("since", minimum=0, default=None)
            until = p.integer("until", minimum=0, default=None)
            last = p.integer("lastentries", minimum=0, default=None)
            after = p.string("startcursor", max_length=64, default=None)
            before = p.string("endcursor", max_length=64, default=None)
            for name, value in (("startcursor", after), ("endcursor", before)):
                if value is not None and not CURSOR.fullmatch(value):
                    p.add(name, f"invalid cursor '{value}'")
        entries = _between(syslog.records(settings.PVE_LOG_DIR), since, None if until is None else until + 1)
        if after is not None:
            entries = [r for r in entries if r.seq > _seq(after)]
        if before is not None:
            entries = [r for r in entries if r.seq < _seq(before)]
        if last:
            entries = entries[-last:]
        elif since is None and after is None:
            entries = entries[-DEFAULT_LIMIT:]
        if not entries:  # nothing new: the cursors as given, so a poll goes on from where it was
            return ok([after or before or "", before or after or ""])
        return ok([f"s={entries[0].seq}", *(r.line(node) for r in entries), f"s={entries[-1].seq}"])


def _seq(cursor: str) -> int:
    match = CURSOR.fullmatch(cursor)
    assert match is not None  # checked with the other parameters
    return int(match.group(1))
