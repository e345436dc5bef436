"""``PUT /nodes/{node}/qemu/{vmid}/unlink`` and ``.../resize``: detach or free disks, grow a disk."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import principal_of
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks.index import run_inline
from vms import services
from vms.api.qemu import _authorized_vm
from vms.config_schema import DISK_KEY_RE
from vms.services import disks

SIZE_RE = r"\+?\d+(\.\d+)?[KMGT]?"


class UnlinkView(PVEAPIView):
    def put(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Config.Disk"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        if "idlist" not in values:
            raise ParameterError({"idlist": params.MISSING_MESSAGE})
        idlist = params.id_list(values["idlist"])
        bad = [key for key in idlist if not DISK_KEY_RE.fullmatch(key)]
        if bad or not idlist:
            raise ParameterError({"idlist": f"invalid format - invalid configuration ID '{bad[0] if bad else ''}'"})
        force = bool(params.boolean(values.get("force", 0), "force"))
        services.update_vm_config(vm, set_={}, delete=idlist, force=force, actor=request.user)
        return ok(None)


class ResizeView(PVEAPIView):
    def put(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Config.Disk"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            disk = p.string("disk", max_length=16)
            size = p.string("size", max_length=64, pattern=SIZE_RE)
            digest = p.string("digest", max_length=40, default=None)
            skiplock = bool(params.boolean(values.get("skiplock", 0), "skiplock"))
        if not DISK_KEY_RE.fullmatch(str(disk)) or str(disk).startswith("unused"):
            raise ParameterError({"disk": f"value '{disk}' does not have a value in the enumeration"})
        if not re.fullmatch(SIZE_RE, str(size)):
            raise ParameterError({"size": f"value does not match the regex pattern {SIZE_RE}"})

        def work(task: Any) -> None:
            disks.resize_disk(
                vm,
                disk=str(disk),
                size=str(size),
                actor=request.user,
                digest=digest,
                skiplock=skiplock,
                progress=task.log,
            )

        return ok(run_inline("resize", str(vm.vmid), principal_of(request.user) or "", work))
