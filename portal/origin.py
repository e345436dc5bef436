"""Websockets are opened only by this node's own pages: same origin, on a host the node answers to.

Browsers send ``Origin`` with every websocket handshake and, unlike for XHR, nothing else stops a
page on another site from opening one with the user's cookies. :class:`SameOriginValidator`
accepts a handshake only when ``Origin`` is exactly the URL the socket was opened on (scheme,
host and port of the ``Host`` header) and that host is in ``ALLOWED_HOSTS`` (so a name an
attacker points at the node, DNS rebinding, fails too). A handshake without ``Origin`` (not from
a browser) is refused as well. The refusal is a plain 403 that needs no channel layer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    values = [value for key, value in scope.get("headers", []) if key == name]
    return values[0].decode("latin1") if len(values) == 1 else None  # absent or repeated: refuse


def _endpoint(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, or None if it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def allowed(scope: dict[str, Any]) -> bool:
    """Whether the handshake comes from a page of this node: same origin, allowed host."""
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is None or host is None:
        return False
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    opened = _endpoint(f"{scheme}://{host}")
    return opened is not None and _endpoint(origin) == opened


class SameOriginValidator:
    """ASGI middleware for the websocket routes: refuses (403) a handshake from another origin."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            raise ValueError("SameOriginValidator guards websocket connections only")
        if allowed(scope):
            return await self.application(scope, receive, send)
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return None
