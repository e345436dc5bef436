"""JSON in Proxmox's envelope, whatever the client's Accept header says."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer


class PVEJSONRenderer(BaseRenderer):
    """Renders ``{"data": ...}``; views pass ready envelopes (with ``total``) as ``Envelope``."""

    media_type = "application/json"
    format = "json"
    charset = "UTF-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        body = data if isinstance(data, Envelope) else {"data": data}
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class Envelope(dict):
    """A response body that already is the envelope (``data`` plus ``total``, ``message`` ...)."""
