"""Form bodies, including bodies sent without a Content-Type (Proxmox parses those as forms)."""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from rest_framework.parsers import FormParser


class PVEFormParser(FormParser):
    """``application/x-www-form-urlencoded``, and the fallback for a missing Content-Type."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> QueryDict:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding") or "utf-8"
        body = stream.read() if stream is not None else b""
        return QueryDict(body, encoding=encoding)
