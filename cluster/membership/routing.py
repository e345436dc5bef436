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
from urllib.parse import quote

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


class RemoteTaskSource:
    """A task of another node for ``portal.tasks.follow``: that node's API (``/nodes/<node>/tasks/<upid>/...``),
    as ``root@pam`` with a ticket signed by the cluster key, TLS verified as forwarding does."""

    def __init__(self, node: str, upid: str) -> None:
        target = resolve(node)
        if target is None:
            raise TaskError(f"node '{node}' is this node")
        self.target = target
        self.base = f"/api2/json/nodes/{node}/tasks/{quote(upid, safe='')}"
        ticket, _csrf = issue_ticket(User.objects.get(userid="root@pam"))
        self.headers = {"Cookie": f"PVEAuthCookie={quote(ticket, safe='')}"}

    def _get(self, path: str) -> Any:
        try:
            answer = send(self.target, "GET", self.base + path, self.headers)
        except ForwardError as exc:
            raise TaskError(f"{exc.status} {exc.message}") from None
        if answer.status != 200:
            raise TaskError(f"{answer.status} {answer.reason}")
        return json.loads(answer.body)

    def state(self) -> tuple[bool, str]:
        data = self._get("/status")["data"]
        return data.get("status") == "stopped", str(data.get("exitstatus", ""))

    def lines(self, start: int) -> list[str]:
        data = self._get(f"/log?start={start}&limit=0")["data"]
        return [str(entry.get("t", "")) for entry in data]
