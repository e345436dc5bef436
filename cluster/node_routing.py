"""Which node answers ``/nodes/<node>/...``: this one, or another member reached over HTTPS.

The address comes from the replicated node table only (never from the request), the port is
this node's API port (every node listens on the same one, as Proxmox's 8006), and TLS is
verified against the cluster CA in the config tree plus the node certificate's fingerprint
recorded in the node table.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from cluster.bootstrap import CA_CERT
from cluster.models import Node
from portal.api.errors import APIError, ParameterError
from portal.api.forwarding import NodeTarget


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
