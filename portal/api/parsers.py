"""Form bodies, including bodies sent without a Content-Type (Proxmox parses those as forms).

DRF only picks a parser whose media type matches the request's Content-Type, so a body with no
Content-Type would be refused with 415. :class:`portal.api.views.PVEContentNegotiation` selects
:class:`PVEFormParser` for such requests (and for unknown types, as Proxmox does).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import QueryDict
from rest_framework.parsers import FormParser


class PVEFormParser(FormParser):
    """``application/x-www-form-urlencoded`` into a QueryDict (repeated keys kept as lists)."""

    media_type = "application/x-www-form-urlencoded"

    # An immutable QueryDict, which django-stubs calls _ImmutableQueryDict (a name only the stubs have).
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> QueryDict:  # type: ignore[override]
        """The body as a QueryDict; an absent or empty body is an empty one."""
        encoding = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        body = stream.read() if stream is not None else b""
        return QueryDict(body, encoding=encoding)
