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

from cluster.api.nodes import local_node_or_error
from portal import syslog
from portal.api.errors import ParameterError
from portal.api.schema import INT, NODE, STR, Permission, array, endpoint, integer, obj, string
from portal.api.views import PVEAPIView, ok

DATETIME = r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2}(:\d{2})?)?"  # Proxmox's since/until of syslog
DEFAULT_LIMIT = 50
CURSOR = re.compile(r"s=([0-9]{1,19})")


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


PERMISSION = Permission("/nodes/{node}", ("Sys.Syslog",))


class SyslogView(PVEAPIView):
    @endpoint(
        "Read the node's system log.",
        PERMISSION,
        {
            "node": NODE,
            "start": integer("Skip this many lines.", minimum=0, optional=True, default=0),
            "limit": integer("At most this many lines (0: the default, 50).", minimum=0, optional=True, default=0),
            "since": string("Lines since this local time (YYYY-MM-DD[ HH:MM[:SS]]).", pattern=DATETIME, optional=True),
            "until": string("Lines until this local time, inclusive.", pattern=DATETIME, optional=True),
            "service": string("Only the lines of this service.", max_length=128, optional=True),
        },
        returns=array(obj({"n": INT, "t": STR})),
        extra={"total": INT},
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        node = values["node"]
        local_node_or_error(node)
        start, limit, since, until = values["start"], values["limit"] or DEFAULT_LIMIT, values["since"], values["until"]
        service = values["service"]
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
    @endpoint(
        "Read the node's journal: the first cursor, the lines, the last cursor.",
        PERMISSION,
        {
            "node": NODE,
            "since": integer("Entries since this UNIX epoch.", minimum=0, optional=True),
            "until": integer("Entries until this UNIX epoch, inclusive.", minimum=0, optional=True),
            "lastentries": integer("The last this many entries.", minimum=0, optional=True),
            "startcursor": string("Entries after this cursor.", pattern=CURSOR.pattern, max_length=64, optional=True),
            "endcursor": string("Entries before this cursor.", pattern=CURSOR.pattern, max_length=64, optional=True),
        },
        returns=array(STR),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        node = values["node"]
        local_node_or_error(node)
        since, until, last = values["since"], values["until"], values["lastentries"]
        after, before = values["startcursor"], values["endcursor"]
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
