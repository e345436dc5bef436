"""Strict parameter parsing with Proxmox's types and messages (pve-common JSONSchema.pm).

Each checker raises :class:`ParameterError` for its one parameter; :class:`ParamCollector` runs
several and raises once with every error, as Proxmox reports all bad parameters together.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from rest_framework.request import Request

from portal.api.errors import APIError, ParameterError

INTEGER_RE = re.compile(r"[+-]?[0-9]+")  # JSONSchema is_integer, ASCII digits, whole string
CONFLICT = "duplicate parameter (already defined in URI) with conflicting values!"
MISSING_MESSAGE = "property is missing and it is not optional"
IGNORED = frozenset({"_dc"})
BODY_METHODS = frozenset({"POST", "PUT"})
NO_BODY_METHODS = frozenset({"GET", "HEAD", "DELETE"})


class _Missing:
    """Sentinel: no default given, so an absent parameter is an error."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def _type_error(kind: str, value: Any, name: str) -> ParameterError:
    """Proxmox's ``type check ('<kind>') failed - got '<value>'``."""
    if isinstance(value, list | tuple | dict):
        return ParameterError({name: f"type check ('{kind}') failed - got {type(value).__name__.upper()}"})
    return ParameterError({name: f"type check ('{kind}') failed - got '{value}'"})


def _present(value: Any, name: str) -> None:
    """An absent (None) value is Proxmox's "property is missing" error."""
    if value is None:
        raise ParameterError({name: MISSING_MESSAGE})


def integer(value: Any, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """An int, or a decimal string (``[+-]?[0-9]+``, nothing around it); bounds checked."""
    _present(value, name)
    if isinstance(value, bool) or not (
        isinstance(value, int) or (isinstance(value, str) and INTEGER_RE.fullmatch(value))
    ):
        raise _type_error("integer", value, name)
    number = int(value)
    if maximum is not None and number > maximum:
        raise ParameterError({name: f"value must have a maximum value of {maximum}"})
    if minimum is not None and number < minimum:
        raise ParameterError({name: f"value must have a minimum value of {minimum}"})
    return number


def boolean(value: Any, name: str) -> int:
    """Only 1 and 0 (strings or ints; JSON true/false too): ``'True'`` is an error, as in Proxmox."""
    _present(value, name)
    if isinstance(value, bool):
        return int(value)  # a JSON body's true/false: Perl stringifies them to 1/0
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value in ("0", "1"):
        return int(value)
    raise _type_error("boolean", value, name)


def string(
    value: Any,
    name: str,
    max_length: int = 4096,
    pattern: str | re.Pattern[str] | None = None,
    optional: bool = False,
    min_length: int = 0,
) -> str:
    """A string, bounded, matching ``pattern`` as a whole when given (``optional``: None -> "")."""
    if value is None and optional:
        return ""
    _present(value, name)
    if not isinstance(value, str):
        raise _type_error("string", value, name)
    if pattern is not None and not re.fullmatch(pattern, value):
        raise ParameterError({name: "value does not match the regex pattern"})
    if len(value) > max_length:
        raise ParameterError({name: f"value may only be {max_length} characters long"})
    if len(value) < min_length:
        raise ParameterError({name: f"value must be at least {min_length} characters long"})
    return value


def enum(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of ``choices`` (compared as strings)."""
    _present(value, name)
    options = [str(choice) for choice in choices]
    if isinstance(value, list | tuple | dict):
        raise _type_error("string", value, name)
    if str(value) not in options:
        raise ParameterError({name: f"value '{value}' does not have a value in the enumeration '{', '.join(options)}'"})
    return str(value)


def id_list(value: Any) -> list[str]:
    """Proxmox's id lists (users, groups, roles...): items separated by ``,``, ``;`` or spaces; a JSON list too."""
    if value is None:
        return []
    text = ",".join(value) if isinstance(value, list) else str(value)
    return [item for item in text.replace(";", ",").replace(" ", ",").split(",") if item]


class ParamCollector:
    """Checks many parameters of ``values`` and raises one ParameterError listing every failure.

    ``with ParamCollector(values) as p: vmid = p.integer("vmid", minimum=100)`` raises at the end
    of the block; outside a block call :meth:`raise_errors`. A failed check returns None.
    """

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values: Mapping[str, Any] = values or {}
        self.errors: dict[str, str] = {}

    def __enter__(self) -> ParamCollector:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.raise_errors()

    def add(self, name: str, message: str) -> None:
        """Record an error of one parameter (joined to an earlier one, as Proxmox does)."""
        self.errors[name] = f"{self.errors[name]}\n{message}" if name in self.errors else message

    def check(self, fn: Callable[..., Any], value: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        """``fn(value, name, ...)``, its ParameterError recorded instead of raised."""
        try:
            return fn(value, name, *args, **kwargs)
        except ParameterError as exc:
            for key, message in (exc.errors or {name: exc.message}).items():
                self.add(key, message)
            return None

    def _get(self, fn: Callable[..., Any], name: str, default: Any, *args: Any, **kwargs: Any) -> Any:
        value = self.values.get(name)
        if value is None and default is not MISSING:
            return default
        return self.check(fn, value, name, *args, **kwargs)

    def integer(self, name: str, minimum: int | None = None, maximum: int | None = None, default: Any = MISSING) -> Any:
        """Parameter ``name`` as an integer (``default`` when absent, else an error)."""
        return self._get(integer, name, default, minimum, maximum)

    def boolean(self, name: str, default: Any = MISSING) -> Any:
        """Parameter ``name`` as 0/1."""
        return self._get(boolean, name, default)

    def string(self, name: str, max_length: int = 4096, pattern: str | None = None, default: Any = MISSING) -> Any:
        """Parameter ``name`` as a bounded string."""
        return self._get(string, name, default, max_length, pattern)

    def enum(self, name: str, choices: Iterable[str], default: Any = MISSING) -> Any:
        """Parameter ``name`` as one of ``choices``."""
        return self._get(enum, name, default, choices)

    def raise_errors(self) -> None:
        """Raise the collected errors, if any."""
        if self.errors:
            raise ParameterError(dict(self.errors))


def has_body(request: Request) -> bool:
    """Whether the request carries content (a positive Content-Length, or chunked)."""
    meta = request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower():
        return True
    try:
        return int(meta.get("CONTENT_LENGTH") or 0) > 0
    except ValueError:
        return True


def check_no_body(request: Request) -> None:
    """Proxmox's 501 for GET/HEAD/DELETE with content."""
    method = (request.method or "GET").upper()
    if method in NO_BODY_METHODS and has_body(request):
        raise APIError(501, f"Unexpected content for method '{method}'")


def _flat(source: Any) -> dict[str, Any]:
    """A QueryDict as single values (a list only for a repeated key); a dict as is."""
    if hasattr(source, "getlist"):
        result = {}
        for key in source:
            items = source.getlist(key)
            result[key] = items[0] if len(items) == 1 else items
        return result
    if not isinstance(source, Mapping):
        raise APIError(400, "Parameter verification failed. (the body must be an object)")
    return dict(source)


def _same(given: Any, path_value: Any) -> bool:
    """Whether a body/query value equals the path's (compared as Proxmox does, as strings)."""
    if isinstance(given, bool):
        given = int(given)
    return not isinstance(given, list | dict) and str(given) == str(path_value)


def collect(request: Request, path_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Body (POST/PUT), query string (wins, as in pve-http-server) and path parameters as one dict.

    ``_dc`` is dropped. A body or query parameter equal to a path parameter is allowed; a
    different one is a 400 naming every conflicting parameter. GET/DELETE with content is a 501.
    """
    check_no_body(request)
    values = _flat(request.data) if (request.method or "").upper() in BODY_METHODS else {}
    values.update(_flat(request.query_params))
    for key in IGNORED:
        values.pop(key, None)
    conflicts = {key: CONFLICT for key, value in path_kwargs.items() if key in values and not _same(values[key], value)}
    if conflicts:
        raise ParameterError(conflicts)
    values.update(path_kwargs)
    return values
