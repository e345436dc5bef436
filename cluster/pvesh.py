"""``pvesh``: the API on the command line, as root@pam on this node (Proxmox's pvesh).

A call goes through the same Django handler chain as an HTTPS request (middleware, URL
routing, authentication, permission checks, forwarding of ``/nodes/<other>/...`` to that node),
authenticated with a root@pam ticket signed by the cluster key. What proxmoxer's command-line
backends rely on: ``get|create|set|delete PATH -key value ...``, the bare payload on stdout
(``--output-format json``: no ``data`` wrapper), and on failure a stderr line ``NNN reason``.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from django.core.handlers.wsgi import WSGIHandler

from authz.authentication import issue_ticket
from authz.models import SUPERUSER, User

METHODS = {"get": "GET", "create": "POST", "set": "PUT", "delete": "DELETE", "ls": "GET"}
FORMATS = ("text", "json", "json-pretty")
NOT_IMPLEMENTED = "api-not-implemented"  # portal.api.routing's catch-all
TEXT_FLAGS = ("noborder", "noheader", "human-readable")  # accepted for compatibility; text is plain here


class UsageError(Exception):
    pass


@dataclass
class Call:
    verb: str
    path: str
    values: dict[str, Any]
    output_format: str = "text"


@dataclass
class Answer:
    status: int
    reason: str
    data: Any
    errors: dict[str, str] | None


def parse(argv: list[str]) -> Call:
    """``VERB PATH [-key value | --key value | -key=value]... [--output-format F]``; a repeated key is a list."""
    if len(argv) < 2:
        raise UsageError("usage: pvesh get|create|set|delete|ls|usage PATH [-key value ...] [--output-format FORMAT]")
    verb, path, rest = argv[0], argv[1], argv[2:]
    if verb not in (*METHODS, "usage"):
        raise UsageError(f"unknown command '{verb}' (get, create, set, delete, ls, usage)")
    if not path.startswith("/"):
        path = "/" + path
    values: dict[str, Any] = {}
    output_format = "text"
    index = 0
    while index < len(rest):
        token = rest[index]
        if not token.startswith("-") or token in ("-", "--"):
            raise UsageError(f"unexpected argument '{token}' (options are -key value)")
        key, has_value, value = token.lstrip("-").partition("=")
        if key in TEXT_FLAGS:
            index += 1
            continue
        if not has_value:
            if index + 1 >= len(rest):
                raise UsageError(f"option '-{key}' needs a value")
            value = rest[index + 1]
            index += 1
        index += 1
        if key == "output-format":
            if value not in FORMATS:
                raise UsageError(f"--output-format: one of {', '.join(FORMATS)}")
            output_format = value
        elif key in values:
            values[key] = [*values[key], value] if isinstance(values[key], list) else [values[key], value]
        else:
            values[key] = value
    return Call(verb, path.rstrip("/") or "/", values, output_format)


def call(method: str, path: str, values: dict[str, Any]) -> Answer:
    """One request through the handler chain as root@pam; the answer's status, reason and payload."""
    root = User.objects.filter(userid=SUPERUSER).first()
    if root is None:
        raise UsageError(f"{SUPERUSER} does not exist (node not bootstrapped?)")
    ticket, csrf = issue_ticket(root)
    encoded = urlencode(values, doseq=True).encode()
    body = encoded if method in ("POST", "PUT") else b""
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/api2/json" + (path if path != "/" else ""),
        "QUERY_STRING": "" if body else encoded.decode(),
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8006",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_COOKIE": f"PVEAuthCookie={quote(ticket, safe='')}",
        "HTTP_CSRFPREVENTIONTOKEN": csrf,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.url_scheme": "https",
        "wsgi.version": (1, 0),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": True,
    }
    started: dict[str, str] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None, /) -> Any:
        started["status"] = status
        return lambda data: None  # WSGI's write(): this app only returns its body

    chunks = WSGIHandler()(environ, start_response)
    try:
        raw = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    code, _, reason = started.get("status", "500 Internal Server Error").partition(" ")
    try:
        document = json.loads(raw) if raw else {}
    except ValueError:
        document = {"message": raw.decode(errors="replace")}
    if not isinstance(document, dict):
        document = {"data": document}
    if int(code) != 200 and document.get("message"):
        reason = str(document["message"]).strip()
    return Answer(int(code), reason, document.get("data"), document.get("errors"))


def render(data: Any, output_format: str) -> str:
    """The payload as ``json``, ``json-pretty`` or plain ``text`` (a table of a list of objects)."""
    if output_format == "json":
        return json.dumps(data, separators=(",", ":"), sort_keys=True)
    if output_format == "json-pretty":
        return json.dumps(data, indent=4, sort_keys=True)
    if data is None:
        return ""
    if isinstance(data, dict):
        return "\n".join(f"{key}: {_plain(value)}" for key, value in sorted(data.items()))
    if isinstance(data, list) and data and all(isinstance(item, dict) for item in data):
        columns = sorted({key for item in data for key in item})
        rows = [columns] + [[_plain(item.get(key, "")) for key in columns] for item in data]
        widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
        )
    if isinstance(data, list):
        return "\n".join(_plain(item) for item in data)
    return _plain(data)


def _plain(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value)


def children(data: Any) -> list[str]:
    """``ls``: the names a directory lists (``subdir``, else the first identifying key of each entry)."""
    names = []
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict):
            for key in ("subdir", "name", "node", "vmid", "storage", "id", "userid", "groupid", "roleid", "realm"):
                if key in item:
                    names.append(str(item[key]))
                    break
        else:
            names.append(str(item))
    return names


def usage(path: str) -> list[str]:
    """The verbs a path answers to, from its view's handlers."""
    from django.urls import Resolver404, resolve

    try:
        match = resolve("/api2/json" + (path if path != "/" else ""))
    except Resolver404:
        raise UsageError(f"no such API path '{path}'") from None
    view = getattr(match.func, "view_class", None) or getattr(match.func, "cls", None)
    verbs = {verb: method for verb, method in METHODS.items() if verb != "ls"}
    lines = [f"{method} {path}  (pvesh {verb})" for verb, method in verbs.items() if hasattr(view, method.lower())]
    if match.url_name == NOT_IMPLEMENTED or not lines:
        raise UsageError(f"no such API path '{path}'")
    return lines
