"""``POST /nodes/{node}/qemu/{vmid}/clone`` and ``.../template``: qemu-server's ``clone_vm`` and ``template``.

Both answer with a UPID (``qmclone``, ``qmtemplate``, the id being the source VM) once every
check has answered; the work is ``vms.services.clone``'s.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks.index import TaskHandle, run_api_task
from vms.api.qemu import _authorized_vm, _principal, vmid_param
from vms.config_schema import DISK_KEY_RE, DNS_LABEL_RE, STORAGE_RE
from vms.services import clone

UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"
CLONE_PARAMETERS = (
    "newid", "name", "description", "pool", "snapname", "storage", "format", "full", "target", "bwlimit",
)  # fmt: skip
POOL_RE = r"[A-Za-z0-9_\-]+"
SNAPNAME_RE = r"[A-Za-z][A-Za-z0-9_\-]+"


def _unknown(values: dict[str, Any], known: tuple[str, ...]) -> None:
    extra = {name: UNKNOWN for name in values if name not in ("node", "vmid", *known)}
    if extra:
        raise ParameterError(extra)


class CloneView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """VM.Clone on the VM; VM.Allocate on ``newid`` (or the pool); Datastore.AllocateSpace on each storage used."""
        vm = _authorized_vm(request, node, vmid, ["VM.Clone"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        _unknown(values, CLONE_PARAMETERS)
        if values.get("newid") in (None, ""):
            raise ParameterError({"newid": params.MISSING_MESSAGE})
        newid = vmid_param(values["newid"])
        with params.ParamCollector(values) as p:
            options = {
                "name": p.string("name", max_length=255, default=None),
                "description": p.string("description", max_length=8192, default=None),
                "pool": p.string("pool", max_length=64, pattern=POOL_RE, default=None),
                "snapname": p.string("snapname", max_length=40, pattern=SNAPNAME_RE, default=None),
                "storage": p.string("storage", max_length=64, pattern=STORAGE_RE.pattern, default=None),
                "format": p.enum("format", ("raw", "qcow2", "vmdk"), default=None),
                "target": p.string("target", max_length=63, pattern=DNS_LABEL_RE.pattern, default=None),
            }
            full = p.boolean("full", default=None)
            bwlimit = p.integer("bwlimit", minimum=0, default=None)
        options["full"] = None if full is None else bool(full)
        clone.check_clone(vm, newid, actor=request.user, **options)

        def work(task: TaskHandle) -> None:
            clone.clone_vm(
                vm, newid, actor=request.user, owner=task.upid, progress=task.log, bwlimit=bwlimit, **options
            )

        return ok(run_api_task("qmclone", str(vm.vmid), _principal(request), work))


class TemplateView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """VM.Allocate on the VM; ``disk``: convert only that disk."""
        vm = _authorized_vm(request, node, vmid, ["VM.Allocate"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        _unknown(values, ("disk",))
        disk = values.get("disk")
        if disk is not None and (not DISK_KEY_RE.fullmatch(str(disk)) or str(disk).startswith("unused")):
            raise ParameterError({"disk": f"value '{disk}' does not have a value in the enumeration"})
        clone.check_template(vm, actor=request.user, disk=disk)

        def work(task: TaskHandle) -> None:
            clone.template_vm(vm, actor=request.user, disk=disk, progress=task.log)

        return ok(run_api_task("qmtemplate", str(vm.vmid), _principal(request), work))
