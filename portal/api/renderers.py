"""JSON in Proxmox's envelope, whatever the client's Accept header says.

Every body is ``{"data": ...}``; a view that needs more top-level keys (``total``, ``changes``) or
an error body (``message``, ``errors``) hands the renderer an :class:`Envelope`, which is passed
through unchanged. There is no browsable API: this is the only renderer of the API.
"""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer
from rest_framework.utils.encoders import JSONEncoder

CONTENT_TYPE = "application/json;charset=UTF-8"


class Envelope(dict):
    """A body that already is the envelope (``data`` plus ``total``, ``message`` ...): not wrapped again."""

    def __init__(self, data: Any = None, **extra: Any) -> None:
        super().__init__(data=data, **extra)


def envelope(data: Any) -> dict[str, Any]:
    """``data`` wrapped as ``{"data": data}``, unless it already is an :class:`Envelope`."""
    return data if isinstance(data, Envelope) else {"data": data}


def render_json(body: Any) -> bytes:
    """Compact UTF-8 JSON (DRF's encoder: dates, decimals, UUIDs, lazy strings)."""
    return json.dumps(body, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":")).encode()


class PVEJSONRenderer(BaseRenderer):
    """Renders ``{"data": ...}`` as ``application/json;charset=UTF-8`` for any Accept header."""

    media_type = "application/json"
    format = "json"
    charset = None  # bytes out; the full Content-Type (without a space, as Proxmox) is set below

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        """The envelope as bytes; also fixes the response's Content-Type."""
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = CONTENT_TYPE
        return render_json(envelope(data))
