"""The OpenAPI 3.1 description of ``/api2/json``, made from the URL configuration and the declarations.

Every route made with :func:`portal.api.routing.api_path` is described, with each method its view
implements; a method declared with :func:`portal.api.schema.endpoint` has its parameters,
permission (``x-permissions``, Proxmox's form) and answer described from that declaration, the
one its handler is verified against. An undeclared method is listed with its path parameters
only and ``x-declared: false``, so the description never claims what the code does not check.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from django.urls import URLPattern, URLResolver, get_resolver

from portal.api.routing import PLACEHOLDER
from portal.api.schema import Endpoint, Param, declaration

METHODS = ("get", "post", "put", "delete")
BODY_METHODS = frozenset({"post", "put"})
VERSION = "9.1"

ERROR = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"type": "null"},
        "message": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
SECURITY_SCHEMES = {
    "ticket": {"type": "apiKey", "in": "cookie", "name": "PVEAuthCookie", "description": "POST /access/ticket"},
    "csrf": {
        "type": "apiKey",
        "in": "header",
        "name": "CSRFPreventionToken",
        "description": "with the ticket cookie, on every POST, PUT and DELETE",
    },
    "token": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "PVEAPIToken=USER@REALM!TOKENID=SECRET",
    },
}


def routes() -> Iterator[tuple[str, type]]:
    """(Proxmox path template, view class) of every API route, in URL-configuration order."""

    def walk(patterns: list[Any]) -> Iterator[tuple[str, type]]:
        for entry in patterns:
            if isinstance(entry, URLResolver):
                yield from walk(entry.url_patterns)
            elif isinstance(entry, URLPattern) and hasattr(entry, "pve_template"):
                yield entry.pve_template, entry.callback.cls  # type: ignore[attr-defined]  # set by api_path

    yield from walk(get_resolver().url_patterns)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR}}}


def _success(view: type, declared: Endpoint | None) -> dict[str, Any]:
    raw = getattr(view, "raw_answer", None)  # a document served as it is, not in the envelope
    if raw is not None:
        return {"description": "success", "content": {"application/json": {"schema": raw}}}
    data: dict[str, Any] = dict(declared.returns) if declared is not None else {}
    properties = {"data": data, **(declared.extra if declared is not None else {})}
    schema = {"type": "object", "required": ["data"], "properties": properties}
    return {"description": "success", "content": {"application/json": {"schema": schema}}}


def _path_parameter(name: str, param: Param | None) -> dict[str, Any]:
    schema = param.json_schema() if param is not None else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _body(declared: Endpoint, in_path: set[str]) -> dict[str, Any]:
    properties = {name: p.json_schema() for name, p in declared.parameters.items() if name not in in_path}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = sorted(name for name, p in declared.parameters.items() if name not in in_path and not p.optional)
    if required:
        schema["required"] = required
    return {
        "required": bool(required),
        "content": {"application/x-www-form-urlencoded": {"schema": schema}, "application/json": {"schema": schema}},
    }


def operation(template: str, view: type, method: str) -> dict[str, Any]:
    """One method of one path as an OpenAPI operation."""
    declared = declaration(view, method)
    in_path = PLACEHOLDER.findall(template)
    known = declared.parameters if declared is not None else {}
    described: dict[str, Any] = {
        "operationId": f"{method}{re.sub(r'[^A-Za-z0-9-]+', '_', template)}".rstrip("_"),
        "parameters": [_path_parameter(name, known.get(name)) for name in in_path],
        "responses": {
            "200": _success(view, declared),
            "400": _error("parameter verification failed"),
            "401": _error("no valid ticket or token"),
            "403": _error("permission check failed"),
            "501": _error("method not implemented"),
        },
    }
    if getattr(view, "public", False) or (declared is not None and declared.permission.user == "world"):
        described["security"] = [{}]
    elif method in BODY_METHODS or method == "delete":
        described["security"] = [{"ticket": [], "csrf": []}, {"token": []}]
    if declared is None:
        described["x-declared"] = False
        if method in BODY_METHODS:
            described["requestBody"] = {
                "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}
            }
        return described
    described["description"] = declared.description
    described["x-permissions"] = declared.permission.as_proxmox()
    if method in BODY_METHODS:
        described["requestBody"] = _body(declared, set(in_path))
    else:
        described["parameters"] += [
            {"name": name, "in": "query", "required": not p.optional, "schema": p.json_schema()}
            for name, p in declared.parameters.items()
            if name not in in_path
        ]
    return described


def describe() -> dict[str, Any]:
    """The whole description (built on each call: it is small and routes may be added in tests)."""
    paths: dict[str, dict[str, Any]] = {}
    for template, view in routes():
        item = paths.setdefault(template, {})
        for method in METHODS:
            if hasattr(view, method):
                item[method] = operation(template, view, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Proxmox VE API (pve-django)",
            "version": VERSION,
            "description": "Proxmox VE's /api2/json, as this implementation serves it. Every answer is "
            "an envelope {data: ...}; errors add message and errors.",
        },
        "servers": [{"url": "/api2/json"}],
        "security": [{"ticket": []}, {"token": []}],
        "paths": paths,
        "components": {"securitySchemes": SECURITY_SCHEMES},
    }
