"""``/nodes/{node}/network``: the node's bridges, bonds, VLANs and links (read only).

As Proxmox: Sys.Audit on ``/nodes/{node}`` shows everything; without it, the list holds only
the bridges the caller may attach guests to (SDN.Use on ``/sdn/zones/localnetwork/<bridge>``).
One interface needs Sys.Audit.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, has_privileges
from cluster.api.nodes import local_node_or_error
from portal.api import params
from portal.api.errors import APIError
from portal.api.schema import BOOL, INT, NODE, STR, Permission, array, endpoint, enum, obj
from portal.api.views import PVEAPIView, ok
from vms import host_network

INTERFACE = obj(
    {"iface": STR, "type": STR},
    active=BOOL,
    autostart=BOOL,
    families=array(STR),
    method=STR,
    method6=STR,
    cidr=STR,
    address=STR,
    netmask=STR,
    gateway=STR,
    bridge_ports=STR,
    bridge_stp=STR,
    bridge_fd=STR,
    comments=STR,
    priority=INT,
)


class NetworkListView(PVEAPIView):
    @endpoint(
        "The node's network interfaces.",
        Permission(
            user="all",
            description="All with Sys.Audit on /nodes/{node}; else the bridges with SDN.Use on "
            "/sdn/zones/localnetwork/{iface}.",
        ),
        {"node": NODE, "type": enum(tuple(host_network.TYPES), "Only interfaces of this type.", optional=True)},
        returns=array(INTERFACE),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        node = values["node"]
        local_node_or_error(node)
        kind = values["type"] or None
        entries = host_network.interfaces(kind)
        if has_privileges(request.user, f"/nodes/{node}", ["Sys.Audit"]):
            return ok(entries)
        return ok(
            [
                entry
                for entry in entries
                if entry["type"] == "bridge"
                and has_privileges(request.user, f"/sdn/zones/localnetwork/{entry['iface']}", ["SDN.Use"])
            ]
        )


class NetworkInterfaceView(PVEAPIView):
    def get(self, request: Request, node: str, iface: str, **kwargs: Any) -> Response:
        check(request.user, f"/nodes/{node}", ["Sys.Audit"])
        local_node_or_error(node)
        params.string(iface, "iface", 20, r"[A-Za-z0-9_.:-]+")
        entry = host_network.interface(iface)
        if entry is None:
            raise APIError(500, f"interface does not exist: {iface}")
        return ok(entry)
