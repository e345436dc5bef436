"""Requests for another node: ``/api2/json/nodes/<node>/...`` is answered by ``<node>`` itself.

As Proxmox's pveproxy does for calls marked ``proxyto => 'node'``: the receiving node
authenticates the caller, then forwards the request unchanged (method, path, query, body) over
HTTPS to the node's own API with the caller's credentials (``PVEAuthCookie``,
``CSRFPreventionToken``, ``Authorization: PVEAPIToken=...``) and relays the answer unchanged
(status, reason phrase, body). The target node checks permissions itself.

This module knows no app: the cluster app registers the resolver that turns a node name into a
:class:`NodeTarget` (the address from the replicated node table, never from the URL; the
cluster CA and the node certificate's fingerprint to verify TLS against).
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.http import HttpResponse
from rest_framework.request import Request

from portal.api.errors import API_PREFIX, EXTJS_PREFIX, APIError, json_error

DISABLE_PROXY_HEADER = "PVEDisableProxy"  # set on forwarded requests; a second hop is a loop
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
COOKIE_NAME = "PVEAuthCookie"
PASSED_HEADERS = {
    "HTTP_AUTHORIZATION": "Authorization",
    "HTTP_CSRFPREVENTIONTOKEN": "CSRFPreventionToken",
    "CONTENT_TYPE": "Content-Type",
    "HTTP_ACCEPT": "Accept",
    "HTTP_ACCEPT_ENCODING": "Accept-Encoding",
}
RELAYED_HEADERS = ("Content-Disposition", "Content-Encoding")


@dataclass(frozen=True)
class NodeTarget:
    """Where a node's API listens and how to recognise it."""

    node: str
    address: str
    port: int
    ca_file: Path
    fingerprint: str = ""  # SHA-256 of the node certificate (AA:BB:...); empty: check the address instead


Resolver = Callable[[str], NodeTarget | None]
_resolver: Resolver | None = None


def set_node_resolver(resolver: Resolver) -> None:
    """Called by the cluster app: ``resolver(node)`` is None for this node, raises APIError if unknown."""
    global _resolver
    _resolver = resolver


class Forward(Exception):
    """Raised by the view once the caller is authenticated: answer with the target node's response."""

    def __init__(self, target: NodeTarget) -> None:
        super().__init__(target.node)
        self.target = target


def target_for(request: Request, node: str) -> NodeTarget | None:
    """The node to forward to, or None to answer here."""
    if _resolver is None:
        return None
    target = _resolver(node)
    if target is not None and request.META.get("HTTP_PVEDISABLEPROXY"):
        raise APIError(500, "proxy loop detected")
    return target


def _headers(request: Request) -> dict[str, str]:
    meta = request.META
    headers = {name: str(meta[key]) for key, name in PASSED_HEADERS.items() if meta.get(key)}
    cookies = [part.strip() for part in meta.get("HTTP_COOKIE", "").split(";")]
    ticket = [part for part in cookies if part.startswith(f"{COOKIE_NAME}=")]
    if ticket:
        headers["Cookie"] = ticket[0]  # the caller's value as sent (URL-encoded or not)
    headers[DISABLE_PROXY_HEADER] = "true"
    return headers


@dataclass(frozen=True)
class Upstream:
    """A target node's answer."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


class ForwardError(Exception):
    """The target node could not be asked: Proxmox's 595 (connect), 596 (TLS), 597 (answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _context(target: NodeTarget) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(target.ca_file))
    context.check_hostname = not target.fingerprint
    return context


def _connect(target: NodeTarget) -> http.client.HTTPSConnection:
    connection = http.client.HTTPSConnection(
        target.address, target.port, context=_context(target), timeout=CONNECT_TIMEOUT
    )
    connection.connect()
    if target.fingerprint:
        certificate = connection.sock.getpeercert(binary_form=True) or b""
        digest = hashlib.sha256(certificate).hexdigest().upper()
        seen = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
        if seen != target.fingerprint.upper():
            connection.close()
            raise ForwardError(596, f"node '{target.node}' presented a certificate with another fingerprint ({seen})")
    connection.sock.settimeout(READ_TIMEOUT)
    return connection


def send(target: NodeTarget, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Upstream:
    """One HTTPS request to a node's API (``path`` with its query string), TLS verified."""
    try:
        connection = _connect(target)
    except ssl.SSLError as exc:
        raise ForwardError(
            596, f"TLS connection to node '{target.node}' failed: {getattr(exc, 'reason', None) or exc}"
        ) from None
    except TimeoutError:
        raise ForwardError(595, "Connection timed out") from None
    except OSError as exc:
        raise ForwardError(595, exc.strerror or str(exc)) from None
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ForwardError(597, f"no complete answer from node '{target.node}': {exc}") from None
    finally:
        connection.close()
    return Upstream(answer.status, answer.reason or "", {k.lower(): v for k, v in answer.getheaders()}, data)


def relay(request: Request, target: NodeTarget) -> HttpResponse:
    """Send the request to ``target`` and return its answer as it came."""
    django_request = request._request
    method = (django_request.method or "GET").upper()
    try:
        path = django_request.get_full_path()
        if path.startswith(EXTJS_PREFIX + "/"):  # the other node answers as json; this node's envelope wraps it once
            path = API_PREFIX + path[len(EXTJS_PREFIX) :]
        upstream = send(target, method, path, _headers(request), django_request.body or None)
    except ForwardError as exc:
        return json_error(exc.status, exc.message)
    response = HttpResponse(upstream.body, status=upstream.status, content_type=upstream.headers.get("content-type"))
    for name in RELAYED_HEADERS:
        value = upstream.headers.get(name.lower())
        if value:
            response[name] = value
    if upstream.reason:
        response.reason_phrase = upstream.reason
    return response
