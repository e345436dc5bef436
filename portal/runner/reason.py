"""Reason phrases over ASGI: Proxmox clients read the error message from the HTTP status line.

ASGI's ``http.response.start`` has no reason phrase, so Django's ``response.reason_phrase`` would
be lost between the app and the server. The app copies a custom phrase into the
``X-PVE-Reason`` header (:class:`ReasonPhraseHeaderMiddleware`); the web server's HTTP protocol
(:class:`ReasonPhraseH11Protocol`) removes that header and puts its value in the status line.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
from django.http import HttpRequest, HttpResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

REASON_HEADER = "X-PVE-Reason"
_REASON_HEADER_BYTES = REASON_HEADER.lower().encode()


class ReasonPhraseHeaderMiddleware:
    """Copies a response's own reason phrase (set by the API's error handler) into a header."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if getattr(response, "_reason_phrase", None):
            phrase = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in response.reason_phrase)
            response[REASON_HEADER] = phrase[:256]
        return response


class _ReasonConnection:
    """An h11 connection whose responses take their reason phrase from the header above."""

    def __init__(self, connection: h11.Connection) -> None:
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    def send(self, event: Any) -> bytes | None:
        if isinstance(event, h11.Response):
            headers = [(name, value) for name, value in event.headers if name != _REASON_HEADER_BYTES]
            reasons = [value for name, value in event.headers if name == _REASON_HEADER_BYTES]
            if reasons:
                event = h11.Response(
                    status_code=event.status_code, headers=headers, reason=reasons[0], http_version=event.http_version
                )
        return self._connection.send(event)


class ReasonPhraseH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, sending the application's reason phrases."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _ReasonConnection(self.conn)  # type: ignore[assignment]  # wraps h11.Connection, same interface
