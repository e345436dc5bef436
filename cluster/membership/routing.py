"""Which node answers ``/nodes/<node>/...``: this one, or another member reached over HTTPS.

The address comes from the replicated node table only (never from the request), the port is
this node's API port (every node listens on the same one, as Proxmox's 8006), and TLS is
verified against the cluster CA in the config tree plus the node certificate's fingerprint
recorded in the node table. A CLI following a task of another node reads it the same way
(:class:`RemoteTaskSource`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from authz.authentication import issue_ticket
from authz.models import User
from cluster.membership.bootstrap import CA_CERT
from cluster.models import Node
from portal.api.errors import APIError, ParameterError
from portal.api.forwarding import ForwardError, NodeTarget, send
from portal.tasks.exceptions import TaskError


def resolve(node: str) -> NodeTarget | None:
    """None for this node; the target for another member; 400 for a name that is no member."""
    if node == settings.PVE_NODE_NAME:
        return None
    row = Node.objects.filter(name=node).first()
    if row is None:
        raise ParameterError({"node": f"no such cluster node '{node}'"})
    if not row.address:
        raise APIError(595, f"no address known for node '{node}'")
    return NodeTarget(
        node=node,
        address=row.address,
        port=settings.PVE_HTTPS_PORT,
        ca_file=Path(settings.PVE_ETC_DIR) / CA_CERT,
        fingerprint=row.ssl_fingerprint,
    )


class NodeAPIError(Exception):
    """Another node's API could not be asked (``status`` 595/596/597, as forwarding) or refused (its status)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message

    @property
    def unreachable(self) -> bool:
        """No connection was made (nothing was sent): the caller may try another way."""
        return self.status in (595, 596)


class NodeAPI:
    """Another node's API as ``root@pam``, with a ticket (and CSRF token) signed by the cluster key and TLS
    verified as forwarding does: what one node's worker asks of another (a migration's target, a task)."""

    def __init__(self, node: str) -> None:
        try:
            target = resolve(node)
        except APIError as exc:
            raise NodeAPIError(exc.status, str(exc)) from None
        if target is None:
            raise NodeAPIError(400, f"node '{node}' is this node")
        self.node = node
        self.target = target
        ticket, csrf = issue_ticket(User.objects.get(userid="root@pam"))
        self.headers = {"Cookie": f"PVEAuthCookie={quote(ticket, safe='')}", "CSRFPreventionToken": csrf}

    def request(self, method: str, path: str, values: dict[str, Any] | None = None) -> Any:
        """``method /api2/json<path>`` with ``values`` (form-encoded); the answer's ``data``."""
        headers, body = dict(self.headers), None
        if values:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            body = urlencode({key: value for key, value in values.items() if value is not None}).encode()
        try:
            answer = send(self.target, method, f"/api2/json{path}", headers, body)
        except ForwardError as exc:
            raise NodeAPIError(exc.status, exc.message) from None
        try:
            document = json.loads(answer.body)
        except ValueError:
            document = {}
        if answer.status != 200:
            detail = document.get("errors") or document.get("message") or answer.reason
            raise NodeAPIError(
                answer.status, f"{answer.reason}: {detail}" if detail != answer.reason else answer.reason
            )
        return document.get("data")


class RemoteTaskSource:
    """A task of another node for ``portal.tasks.follow``: that node's API (``/nodes/<node>/tasks/<upid>/...``)
    through :class:`NodeAPI`."""

    def __init__(self, node: str, upid: str, api: NodeAPI | None = None) -> None:
        try:
            self.api = api or NodeAPI(node)
        except NodeAPIError as exc:
            raise TaskError(exc.message) from None
        self.base = f"/nodes/{node}/tasks/{quote(upid, safe='')}"

    def _get(self, path: str) -> Any:
        try:
            return self.api.request("GET", self.base + path)
        except NodeAPIError as exc:
            raise TaskError(str(exc)) from None

    def state(self) -> tuple[bool, str]:
        data = self._get("/status")
        return data.get("status") == "stopped", str(data.get("exitstatus", ""))

    def lines(self, start: int) -> list[str]:
        data = self._get(f"/log?start={start}&limit=0")
        return [str(entry.get("t", "")) for entry in data]
