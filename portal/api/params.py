"""Strict parameter parsing with Proxmox's types and messages."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.request import Request

from portal.api.errors import APIError, ParameterError

INTEGER_RE = re.compile(r"^-?(0|[1-9][0-9]*)$")
CONFLICT = "duplicate parameter (already defined in URI) with conflicting values!"
IGNORED = ("_dc",)


def _single(values: Any, key: str) -> Any:
    items = values.getlist(key) if hasattr(values, "getlist") else [values[key]]
    return items[0] if len(items) == 1 else items


def collect(request: Request, path_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Query string plus body (POST/PUT) plus path parameters, as one dict of values.

    A body or query parameter equal to a path parameter is allowed; a different one is a 400.
    """
    method = request.method or "GET"
    if method in ("GET", "DELETE", "HEAD") and request.stream is not None and request._request.body:
        raise APIError(501, f"Unexpected content for method '{method}'")
    values: dict[str, Any] = {}
    for key in request.query_params:
        if key not in IGNORED:
            values[key] = _single(request.query_params, key)
    if method in ("POST", "PUT"):
        data = request.data
        for key in data:
            if key not in IGNORED:
                values[key] = _single(data, key) if hasattr(data, "getlist") else data[key]
    errors = {key: CONFLICT for key, value in path_kwargs.items() if key in values and str(values[key]) != str(value)}
    if errors:
        raise ParameterError(errors)
    values.update({key: value for key, value in path_kwargs.items()})
    return values


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int, or a canonical decimal string; bounds checked."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and INTEGER_RE.match(value))):
        raise ParameterError({name: f"type check ('integer') failed - got '{value}'"})
    number = int(value)
    if minimum is not None and number < minimum:
        raise ParameterError({name: f"value must have a minimum value of {minimum}"})
    if maximum is not None and number > maximum:
        raise ParameterError({name: f"value must have a maximum value of {maximum}"})
    return number


def boolean(value: Any, name: str) -> int:
    """Only 1 and 0 (as Proxmox's schema): 'True' is an error."""
    if value in (1, 0, "1", "0") and not isinstance(value, bool | float):
        return int(value)
    raise ParameterError({name: f"type check ('boolean') failed - got '{value}'"})


def string(
    value: Any, name: str, max_length: int = 4096, pattern: re.Pattern[str] | None = None, optional: bool = False
) -> str:
    """A present, bounded string (matching ``pattern`` when given)."""
    if value is None:
        if optional:
            return ""
        raise ParameterError({name: "property is missing and it is not optional"})
    if not isinstance(value, str):
        raise ParameterError({name: f"type check ('string') failed - got '{value}'"})
    if len(value) > max_length:
        raise ParameterError({name: f"value may only be {max_length} characters long"})
    if pattern is not None and not pattern.match(value):
        raise ParameterError({name: f"value does not match the regex pattern '{pattern.pattern}'"})
    return value
