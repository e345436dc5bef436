"""Cloud-init of a VM: ``GET {vm}/cloudinit`` (each option's value in the current image and its
pending change: VM.Audit), ``PUT {vm}/cloudinit`` (regenerate the image: VM.Config.Cloudinit) and
``GET {vm}/cloudinit/dump`` (the ``user``, ``network`` or ``meta`` document: VM.Audit)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms.api.qemu import _authorized_vm
from vms.cloudinit import image, render
from vms.services import cloudinit as service


def _no_other(values: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = {k: "property is not defined in schema" for k in values if k not in ("node", "vmid", *allowed)}
    if unknown:
        raise ParameterError(unknown)


class CloudinitView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        _no_other(params.collect(request, {"node": node, "vmid": vmid}), ())
        return ok(image.pending(vm.vmid, vm.full_config()))

    def put(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Config.Cloudinit"])
        _no_other(params.collect(request, {"node": node, "vmid": vmid}), ())
        service.regenerate(vm, actor=request.user)
        return ok(None)


class CloudinitDumpView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            kind = p.enum("type", render.TYPES)
        _no_other(values, ("type",))
        return ok(render.dump(vm.vmid, vm.full_config(), kind))
