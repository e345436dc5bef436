"""``PUT /nodes/{node}/qemu/{vmid}/unlink``, ``.../resize``, ``POST .../move_disk``: detach or free disks, grow one, move one."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import principal_of
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks import locks, runner
from portal.tasks.index import run_api_task
from vms import permissions, services
from vms.api.qemu import _authorized_vm
from vms.config_schema import DISK_KEY_RE, STORAGE_RE
from vms.services import disk_move, disks

SIZE_RE = r"\+?\d+(\.\d+)?[KMGT]?"
# move_disk's parameters for moving a disk to another VM (qemu-server's reassign): not here yet.
MOVE_NOT_SUPPORTED = ("target-vmid", "target-disk", "target-digest")


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
        permissions.check_skiplock(request.user, skiplock)  # before the task, as qemu-server

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

        return ok(run_api_task("resize", str(vm.vmid), principal_of(request.user) or "", work))


class MoveDiskView(PVEAPIView):
    """``POST .../move_disk`` (and ``move-disk``): VM.Config.Disk on the VM, then ``check_move``'s refusals,
    then a ``qmmove`` task on this node's worker holding the VM's ``disk`` lock."""

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Config.Disk"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            for name in MOVE_NOT_SUPPORTED:
                if name in values:
                    p.add(name, "not supported by this implementation yet")
            disk = p.string("disk", max_length=16)
            storage = p.string("storage", max_length=64, pattern=STORAGE_RE.pattern)
            fmt = p.enum("format", ("raw", "qcow2", "vmdk"), default=None)
            delete = p.boolean("delete", default=0)
            digest = p.string("digest", max_length=40, default=None)
            bwlimit = p.integer("bwlimit", minimum=0, default=None)
        if not DISK_KEY_RE.fullmatch(str(disk)) or str(disk).startswith("unused"):
            raise ParameterError({"disk": f"value '{disk}' does not have a value in the enumeration"})
        plan = disk_move.check_move(
            vm, disk=str(disk), storage=str(storage), actor=request.user, fmt=fmt, delete=bool(delete), digest=digest
        )
        user = principal_of(request.user) or ""
        upid = runner.submit(
            "qmmove",
            str(vm.vmid),
            user,
            "vms.move_disk",
            lock=locks.LockSpec("vm", str(vm.vmid), disk_move.LOCK),
            plan=plan.as_dict(),
            principal=user,
            bwlimit=bwlimit or None,
        )
        return ok(upid)
