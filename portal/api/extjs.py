"""``/api2/extjs/...``: the same handlers as ``/api2/json``, answered in Proxmox's ExtJS envelope.

The GUI's forms and some tools use it: always HTTP 200, ``{"success": 1|0, "data": ...}``, with
``message``, ``errors`` and ``status`` (the HTTP status the json format would have had) on a
failure. This middleware re-wraps the json answer once; a request forwarded to another node goes
there as ``/api2/json`` (:func:`portal.api.forwarding.relay`), so it is never wrapped twice.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse

from portal.api.errors import EXTJS_PREFIX
from portal.api.renderers import CONTENT_TYPE


def envelope(status: int, document: Any) -> dict[str, Any]:
    """The ExtJS form of a json answer (``{"data": ...}`` or an error document) with ``status``."""
    body = document if isinstance(document, dict) else {"data": document}
    wrapped: dict[str, Any] = {"success": int(status == 200), "data": body.get("data")}
    for key in ("total", "changes"):
        if key in body:
            wrapped[key] = body[key]
    if status != 200:
        wrapped["status"] = status
        wrapped["message"] = body.get("message") or ""
        if body.get("errors"):
            wrapped["errors"] = body["errors"]
    return wrapped


class ExtJSMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if not request.path.startswith(EXTJS_PREFIX + "/") and request.path != EXTJS_PREFIX:
            return response
        if getattr(response, "streaming", False) or "json" not in response.get("Content-Type", ""):
            return response
        raw = bytes(response.content)
        if response.get("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        try:
            document = json.loads(raw) if raw else {}
        except ValueError:
            return response
        wrapped = HttpResponse(
            json.dumps(envelope(response.status_code, document), separators=(",", ":")),
            status=200,
            content_type=CONTENT_TYPE,
        )
        if response.has_header("Cache-Control"):
            wrapped["Cache-Control"] = response["Cache-Control"]
        wrapped.cookies = response.cookies
        return wrapped
