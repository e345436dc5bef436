"""``/nodes/{node}/qemu/{vmid}/snapshot``: list, create, read, describe, delete and roll back snapshots.

Privileges as qemu-server checks them on ``/vms/{vmid}``: VM.Audit to list, VM.Snapshot to
create, delete and describe, VM.Snapshot or VM.Snapshot.Rollback to roll back (plus
VM.PowerMgmt for ``start``), any of the three to read a snapshot's config. The work runs as a
task on the VM's node (``qmsnapshot``, ``qmdelsnapshot``, ``qmrollback``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks.index import run_api_task
from vms.api.qemu import _authorized_vm, _principal
from vms.exceptions import VMError
from vms.models import VM
from vms.services import snapshots
from vms.snapshot_config import RESERVED, SNAPNAME_RE

NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
MAX_DESCRIPTION = 8192


def _values(request: Request, path: dict[str, str], allowed: Iterable[str]) -> dict[str, Any]:
    values = params.collect(request, path)
    unknown = {name: NOT_IN_SCHEMA for name in values if name not in (*path, *allowed)}
    if unknown:
        raise ParameterError(unknown)
    return values


def _snapname(value: object) -> str:
    if not isinstance(value, str) or not SNAPNAME_RE.fullmatch(value):
        raise ParameterError({"snapname": f"invalid format - invalid configuration ID '{value}'"})
    return value


def _description(values: dict[str, Any]) -> str | None:
    if values.get("description") is None:
        return None
    text = params.string(values["description"], "description", max_length=MAX_DESCRIPTION)
    return str(text)


def _snapshot_config(vm: VM, snapname: str) -> dict[str, Any]:
    snap: dict[str, Any] = dict((vm.snapshots or {}).get(snapname) or {})
    if not snap:
        raise VMError(f"snapshot '{snapname}' does not exist")
    if str(snap.get("snaptime", "")).isdigit():
        snap["snaptime"] = int(snap["snaptime"])
    return snap


class SnapshotListView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        return ok(snapshots.list_snapshots(vm))

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Snapshot"])
        values = _values(request, {"node": node, "vmid": vmid}, ("snapname", "vmstate", "description"))
        if "snapname" not in values:
            raise ParameterError({"snapname": params.MISSING_MESSAGE})
        snapname = _snapname(values["snapname"])
        if snapname.lower() in RESERVED:
            raise VMError(f"unable to use snapshot name '{snapname}' (reserved name)")
        vmstate = bool(params.boolean(values.get("vmstate", 0), "vmstate"))
        description = _description(values) or ""

        def work(task: Any) -> None:
            snapshots.log_request(f"snapshot VM {vm.vmid}: {snapname}", _principal(request))
            snapshots.create_snapshot(
                vm.vmid,
                snapname,
                owner=task.upid,
                vmstate=vmstate,
                description=description,
                log=task.log,
                warn=task.warn,
            )

        return ok(run_api_task("qmsnapshot", str(vm.vmid), _principal(request), work))


class SnapshotView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, snapname: str, **kwargs: Any) -> Response:
        _snapname(snapname)  # qemu-server: any authenticated user
        return ok([{"cmd": "rollback"}, {"cmd": "config"}])

    def delete(self, request: Request, node: str, vmid: str, snapname: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Snapshot"])
        values = _values(request, {"node": node, "vmid": vmid, "snapname": snapname}, ("force",))
        name = _snapname(snapname)
        force = bool(params.boolean(values.get("force", 0), "force"))

        def work(task: Any) -> None:
            snapshots.log_request(f"delete snapshot VM {vm.vmid}: {name}", _principal(request))
            snapshots.delete_snapshot(vm.vmid, name, owner=task.upid, force=force, log=task.log, warn=task.warn)

        return ok(run_api_task("qmdelsnapshot", str(vm.vmid), _principal(request), work))


class SnapshotConfigView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, snapname: str, **kwargs: Any) -> Response:
        privileges = ["VM.Snapshot", "VM.Snapshot.Rollback", "VM.Audit"]
        vm = _authorized_vm(request, node, vmid, privileges, any_of=True)
        return ok(_snapshot_config(vm, _snapname(snapname)))

    def put(self, request: Request, node: str, vmid: str, snapname: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Snapshot"])
        values = _values(request, {"node": node, "vmid": vmid, "snapname": snapname}, ("description",))
        name = _snapname(snapname)
        description = _description(values)
        if description is not None:
            snapshots.update_description(vm, name, description)
        return ok(None)


class RollbackView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, snapname: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Snapshot", "VM.Snapshot.Rollback"], any_of=True)
        values = _values(request, {"node": node, "vmid": vmid, "snapname": snapname}, ("start",))
        name = _snapname(snapname)
        start = bool(params.boolean(values.get("start", 0), "start"))
        if start:  # the start is a side effect qemu-server guards with the start's own privilege
            check(request.user, f"/vms/{vm.vmid}", ["VM.PowerMgmt"])
        rollback = functools.partial(snapshots.rollback_snapshot, vm.vmid, name, start=start)

        def work(task: Any) -> None:
            snapshots.log_request(f"rollback snapshot VM {vm.vmid}: {name}", _principal(request))
            rollback(owner=task.upid, log=task.log)

        return ok(run_api_task("qmrollback", str(vm.vmid), _principal(request), work))
