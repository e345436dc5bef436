"""Errors in Proxmox's shape: ``{"data": null, "message": "<msg>\\n", "errors": {...}}``.

The HTTP reason phrase is the message's first line (``HTTP/1.1 500 Configuration file ... does not
exist``), made safe: only printable ASCII survives, anything else becomes ``?``, and it is cut at
``REASON_MAX`` characters. Proxmox itself answers a message with CR/LF with a plain 400; here the
status is kept and only the phrase is sanitised (the body always carries the full message).
Note that ASGI has no reason phrase: over uvicorn the client sees the standard one.

Apps map their own exceptions with :func:`register_error`, so this module imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, TypeVar, cast

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response

from portal.api.renderers import CONTENT_TYPE, Envelope, render_json

log = logging.getLogger(__name__)

API_PREFIX = "/api2/json"
EXTJS_PREFIX = "/api2/extjs"
PARAMETER_MESSAGE = "Parameter verification failed."
INTERNAL_ERROR = "internal server error"
REASON_MAX = 256

StatusSpec = int | Callable[[Exception], int]
MessageFn = Callable[[Exception], str]
_registry: dict[type[Exception], tuple[StatusSpec, MessageFn | None]] = {}
_E = TypeVar("_E", bound=Exception)


class APIError(Exception):
    """An error answer: HTTP status, message, optional per-parameter errors."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or None


class ParameterError(APIError):
    """400 "Parameter verification failed." with the message of each bad parameter."""

    def __init__(self, errors: dict[str, str], message: str = PARAMETER_MESSAGE) -> None:
        super().__init__(400, message, {str(k): str(v) for k, v in errors.items()})


def register_error(
    exc_class: type[_E], status: int | Callable[[_E], int], message_fn: Callable[[_E], str] | None = None
) -> None:
    """Map a domain exception (and its subclasses) to a status (a number, or a function of the exception)."""
    # The functions are only ever called with instances of ``exc_class`` (looked up by the exception's class).
    _registry[exc_class] = (cast(StatusSpec, status), cast(MessageFn | None, message_fn))


def reason_phrase(message: str, status: int = 500) -> str:
    """The message's first line as a safe reason phrase (printable ASCII, bounded, never empty)."""
    lines = message.strip().splitlines()
    first = lines[0].strip() if lines else ""
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in first)[:REASON_MAX].strip()
    if safe:
        return safe
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(message: str, errors: dict[str, str] | None = None) -> Envelope:
    """``{"data": null, "message": "<msg>\\n"}`` plus ``errors`` when there are any."""
    body = Envelope(None, message=message.rstrip("\n") + "\n")
    if errors:
        body["errors"] = {str(k): str(v) for k, v in errors.items()}
    return body


def error_response(status: int, message: str, errors: dict[str, str] | None = None) -> Response:
    """A DRF response for an error, reason phrase set."""
    response = Response(error_body(message, errors), status=status)
    response.reason_phrase = reason_phrase(message, status)
    return response


def json_error(status: int, message: str, errors: dict[str, str] | None = None) -> HttpResponse:
    """The same error as a plain Django response (for views outside DRF)."""
    response = HttpResponse(render_json(error_body(message, errors)), status=status, content_type=CONTENT_TYPE)
    response.reason_phrase = reason_phrase(message, status)
    return response


def api_relative_path(path: str) -> str:
    """``/api2/json/nodes/pve/`` -> ``/nodes/pve`` (the path as Proxmox names it in messages)."""
    prefix = next((p for p in (API_PREFIX, EXTJS_PREFIX) if path.startswith(p)), "")
    rest = path[len(prefix) :]
    return "/" + rest.strip("/")


def not_implemented_message(method: str | None, path: str) -> str:
    """``Method 'GET /foo' not implemented``."""
    return f"Method '{method or 'GET'} {api_relative_path(path)}' not implemented"


def _text(detail: Any) -> str:
    """DRF error detail (string, list or dict) flattened to one line of text."""
    if isinstance(detail, list | tuple):
        return "; ".join(_text(item) for item in detail)
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_text(value)}" for key, value in detail.items())
    return str(detail)


def _registered(exc: Exception) -> APIError | None:
    """The registered mapping of the most specific class of ``exc``, if any."""
    for cls in type(exc).__mro__:
        if cls in _registry:
            status, message_fn = _registry[cls]
            code = status(exc) if callable(status) else status
            message = message_fn(exc) if message_fn else str(exc) or cls.__name__
            errors = getattr(exc, "errors", None)
            return APIError(int(code), message, errors if isinstance(errors, dict) else None)
    return None


def _from_validation_error(exc: drf.ValidationError) -> APIError:
    """A serializer-style ValidationError as per-parameter errors."""
    if isinstance(exc.detail, dict):
        return ParameterError({("_root" if k == "non_field_errors" else k): _text(v) for k, v in exc.detail.items()})
    return APIError(400, _text(exc.detail) or PARAMETER_MESSAGE)


def to_api_error(exc: Exception) -> APIError:
    """Any exception as an APIError; unknown ones become a 500 saying nothing but that."""
    if isinstance(exc, APIError):
        return exc
    registered = _registered(exc)
    if registered is not None:
        return registered
    if isinstance(exc, drf.NotAuthenticated):
        return APIError(401, "No ticket")
    if isinstance(exc, drf.AuthenticationFailed):
        return APIError(401, _text(exc.detail))
    if isinstance(exc, drf.PermissionDenied | DjangoPermissionDenied):
        return APIError(403, _text(getattr(exc, "detail", None) or exc) or "Permission check failed")
    if isinstance(exc, drf.ValidationError):
        return _from_validation_error(exc)
    if isinstance(exc, drf.NotFound | Http404):
        return APIError(404, _text(getattr(exc, "detail", None) or exc) or "Not Found")
    if isinstance(exc, drf.APIException):
        return APIError(exc.status_code, _text(exc.detail))
    if isinstance(exc, RequestDataTooBig):
        return APIError(413, str(exc) or "request too large")
    if isinstance(exc, SuspiciousOperation):
        return APIError(400, str(exc) or "bad request")
    log.error("unexpected error in API call: %s", exc, exc_info=exc)
    return APIError(500, INTERNAL_ERROR)  # the text (paths, SQL, ...) goes to the node's log only


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every error in Proxmox's shape, never a traceback."""
    from rest_framework.views import set_rollback

    request = context.get("request")
    if isinstance(exc, drf.MethodNotAllowed):
        path = request.path if request is not None else ""
        error = APIError(501, not_implemented_message(getattr(request, "method", None), path))
    else:
        error = to_api_error(exc)
    set_rollback()
    response = error_response(error.status, error.message, error.errors)
    auth_header = getattr(exc, "auth_header", None)
    if error.status == 401 and auth_header:
        response["WWW-Authenticate"] = auth_header
    return response


@csrf_exempt
def not_implemented(request: HttpRequest, path: str = "") -> HttpResponse:
    """Catch-all under /api2/json: unknown paths (any method) are 501, as in Proxmox."""
    return json_error(501, not_implemented_message(request.method, request.path))


def _is_api(request: HttpRequest) -> bool:
    """Whether the request is for the API tree (its errors are JSON envelopes)."""
    return request.path.startswith("/api2/")


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 400 view: the JSON envelope under /api2/, Django's page elsewhere."""
    if _is_api(request):
        return json_error(400, str(exception or "") or "bad request")
    return defaults.bad_request(request, exception)  # type: ignore[arg-type]  # Django's view takes None too


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 403 view: the JSON envelope under /api2/, Django's page elsewhere."""
    if _is_api(request):
        return json_error(403, str(exception or "") or "permission denied")
    return defaults.permission_denied(request, exception)  # type: ignore[arg-type]  # Django's view takes None too


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 404 view: under /api2/ the 501 Proxmox gives for unknown paths."""
    if _is_api(request):
        return not_implemented(request)
    return defaults.page_not_found(request, exception)


def handler500(request: HttpRequest) -> HttpResponse:
    """Django's 500 view: the JSON envelope under /api2/ (no traceback), Django's page elsewhere."""
    if _is_api(request):
        return json_error(500, INTERNAL_ERROR)
    return defaults.server_error(request)
