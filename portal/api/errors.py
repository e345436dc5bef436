"""Errors in Proxmox's shape: the message as reason phrase and ``{"data": null, "message", "errors"}``.

Apps map their own exceptions with ``register_error`` so this module imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from portal.api.renderers import Envelope

log = logging.getLogger(__name__)

MessageFn = Callable[[Exception], str]
_registry: list[tuple[type[Exception], int, MessageFn | None]] = []


class APIError(Exception):
    """An error answer: HTTP status, message, optional per-parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


class ParameterError(APIError):
    """400 Parameter verification failed, with the message of each bad parameter."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(400, "Parameter verification failed.", errors)


def register_error(
    exc_class: type[Exception], status: int | Callable[[Exception], int], message_fn: MessageFn | None = None
) -> None:
    """Map a domain exception to an HTTP status (a number, or a function of the exception)."""
    _registry.append((exc_class, status, message_fn))  # type: ignore[arg-type]


def reason_phrase(message: str) -> str:
    """First line, latin-1 and control-free, bounded: safe as an HTTP reason phrase."""
    first = message.strip().splitlines()[0] if message.strip() else "error"
    safe = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in first)
    return safe[:200]


def error_response(status: int, message: str, errors: dict[str, str] | None = None) -> Response:
    body = Envelope(data=None, message=message.rstrip("\n") + "\n")
    if errors:
        body["errors"] = {str(k): str(v) for k, v in errors.items()}
    response = Response(body, status=status)
    response.reason_phrase = reason_phrase(message)
    return response


def _flatten(detail: Any) -> str:
    if isinstance(detail, list):
        return "; ".join(_flatten(d) for d in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flatten(v)}" for k, v in detail.items())
    return str(detail)


def to_api_error(exc: Exception) -> APIError:
    """Any exception as an APIError (unknown ones become a 500 with the exception text)."""
    if isinstance(exc, APIError):
        return exc
    for exc_class, status, message_fn in _registry:
        if isinstance(exc, exc_class):
            code = status(exc) if callable(status) else status
            message = message_fn(exc) if message_fn else str(exc)
            return APIError(code, message, getattr(exc, "errors", None) or None)
    if isinstance(exc, drf.NotAuthenticated | drf.AuthenticationFailed):
        return APIError(401, _flatten(exc.detail) if isinstance(exc, drf.AuthenticationFailed) else "No ticket")
    if isinstance(exc, drf.PermissionDenied):
        return APIError(403, _flatten(exc.detail))
    if isinstance(exc, drf.ParseError):
        return APIError(400, f"Parameter verification failed. ({_flatten(exc.detail)})")
    if isinstance(exc, drf.UnsupportedMediaType):
        return APIError(415, _flatten(exc.detail))
    if isinstance(exc, drf.ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"": exc.detail}
        return ParameterError({k: _flatten(v) for k, v in detail.items()})
    if isinstance(exc, drf.NotFound):
        return APIError(404, _flatten(exc.detail))
    if isinstance(exc, drf.APIException):
        return APIError(exc.status_code, _flatten(exc.detail))
    log.exception("unexpected error in API call", exc_info=exc)
    return APIError(500, str(exc) or type(exc).__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error in Proxmox's shape."""
    request = context.get("request")
    if isinstance(exc, drf.MethodNotAllowed) and request is not None:
        path = request.path.removeprefix("/api2/json").rstrip("/") or "/"
        error = APIError(501, f"Method '{request.method} {path}' not implemented")
    else:
        error = to_api_error(exc)
    response = error_response(error.status, error.message, error.errors)
    if error.status == 401:
        response["WWW-Authenticate"] = "PVEAuthCookie"
    return response


def not_implemented(request: HttpRequest, path: str = "") -> JsonResponse:
    """Catch-all under /api2/json: Proxmox answers unknown paths and methods with 501."""
    message = f"Method '{request.method} /{path.strip('/')}' not implemented"
    response = JsonResponse({"data": None, "message": message + "\n"}, status=501)
    response.reason_phrase = reason_phrase(message)
    response["Content-Type"] = "application/json;charset=UTF-8"
    return response
