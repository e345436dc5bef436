"""``/nodes/{node}/capabilities/qemu``: the CPU models and machine types this node's QEMU offers
(Proxmox's ``cpu`` and ``machines``), with Sys.Audit on ``/nodes/{node}``. The machine versions
come from the installed QEMU (``-machine help``, read once per process)."""

from __future__ import annotations

import functools
import re
import subprocess
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from cluster.api.nodes import local_node_or_error
from portal.api.schema import ANY_USER, BOOL, NODE, STR, Permission, array, endpoint, obj
from portal.api.views import PVEAPIView, ok
from vms.qemu.command import QEMU_BINARY, X86_64_LEVELS

MACHINE_LINE_RE = re.compile(r"^pc-(i440fx|q35)-(\d+)\.(\d+)\s")
VENDORS = {
    "GenuineIntel": (
        "486", "Broadwell", "Cascadelake-Server", "Conroe", "Cooperlake", "core2duo", "coreduo", "Denverton",
        "GraniteRapids", "Haswell", "Icelake-Client", "Icelake-Server", "IvyBridge", "KnightsMill", "n270",
        "Nehalem", "Penryn", "pentium", "pentium2", "pentium3", "SandyBridge", "SapphireRapids", "Skylake-Client",
        "Skylake-Server", "Snowridge", "Westmere",
    ),
    "AuthenticAMD": (
        "athlon", "EPYC", "EPYC-Genoa", "EPYC-Milan", "EPYC-Rome", "Opteron_G1", "Opteron_G2", "Opteron_G3",
        "Opteron_G4", "Opteron_G5", "phenom",
    ),
    "HygonGenuine": ("Dhyana",),
    "default": ("host", "kvm32", "kvm64", "max", "qemu32", "qemu64", *sorted(X86_64_LEVELS)),
}  # fmt: skip


INDEX = array(obj({"name": STR}))
AUDIT = Permission("/nodes/{node}", ("Sys.Audit",))


class CapabilitiesView(PVEAPIView):
    @endpoint("Node capabilities index.", ANY_USER, {"node": NODE}, returns=INDEX)
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        local_node_or_error(values["node"])
        return ok([{"name": "qemu"}])


class QemuCapabilitiesView(PVEAPIView):
    @endpoint("QEMU capabilities index.", ANY_USER, {"node": NODE}, returns=INDEX)
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        local_node_or_error(values["node"])
        return ok([{"name": "cpu"}, {"name": "machines"}])


class CPUModelsView(PVEAPIView):
    @endpoint(
        "The CPU models this node's QEMU offers.",
        AUDIT,
        {"node": NODE},
        returns=array(obj({"name": STR, "vendor": STR, "custom": BOOL})),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        local_node_or_error(values["node"])
        models = [{"name": name, "vendor": vendor, "custom": 0} for vendor, names in VENDORS.items() for name in names]
        return ok(sorted(models, key=lambda model: str(model["name"]).lower()))


class MachinesView(PVEAPIView):
    @endpoint(
        "The machine types (and versions) this node's QEMU offers, newest first.",
        AUDIT,
        {"node": NODE},
        returns=array(obj({"id": STR, "type": {"enum": ["i440fx", "q35"]}, "version": STR})),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        local_node_or_error(values["node"])
        return ok(list(machine_types()))


@functools.cache
def machine_types() -> tuple[dict[str, str], ...]:
    """``pc-i440fx-X.Y`` and ``pc-q35-X.Y`` of the installed QEMU, newest first."""
    listed = subprocess.run(
        [QEMU_BINARY, "-machine", "help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = []
    for line in listed.splitlines():
        match = MACHINE_LINE_RE.match(line)
        if match:
            kind, major, minor = match.group(1), int(match.group(2)), int(match.group(3))
            found.append(
                (
                    (major, minor, kind),
                    {"id": f"pc-{kind}-{major}.{minor}", "type": kind, "version": f"{major}.{minor}"},
                )
            )
    return tuple(entry for _key, entry in sorted(found, key=lambda item: item[0], reverse=True))
