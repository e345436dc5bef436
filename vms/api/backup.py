"""``POST /nodes/{node}/vzdump`` (back up VMs of that node as one ``vzdump`` task on its worker) and
restore (``POST /nodes/{node}/qemu`` with ``archive``: a ``qmrestore`` task).

Every check answers before the task is queued (VM.Backup on each VM of this node, AllocateSpace
on the storage); VMs of other nodes are skipped, as Proxmox skips them (the request names the
node that backs up its own VMs). The work is ``vms.services.backup.vzdump``'s.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import principal_of
from cluster.api.nodes import local_node_or_error
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks import runner
from portal.tasks.index import TaskHandle, run_api_task
from vms.permissions import is_superuser
from vms.services import backup
from vms.services.backup import restore

ROOT_ONLY = ("tmpdir", "dumpdir", "script", "job-id")


class VzdumpView(PVEAPIView):
    def post(self, request: Request, node: str, **kwargs: Any) -> Response:
        local_node_or_error(node)
        values = params.collect(request, {"node": node})
        if not is_superuser(request.user):
            denied = {key: "Only root may set this option." for key in ROOT_ONLY if key in values}
            if denied:
                raise ParameterError(denied)
        options = {k: v for k, v in values.items() if k != "node"}
        if isinstance(options.get("vmid"), list):
            options["vmid"] = ",".join(map(str, options["vmid"]))
        plan = backup.check_vzdump(options, actor=request.user, node=node)
        taskid = str(plan.vmids[0]) if len(plan.vmids) == 1 else ""
        upid = runner.submit(
            "vzdump",
            taskid,
            principal_of(request.user) or "",
            "vms.vzdump",
            time_limit=backup.TIME_LIMIT,
            options=options,
        )
        return ok(upid)


RESTORE_CONTROL = ("vmid", "node", "archive", "storage", "pool", "force", "unique", "bwlimit", "start", "live-restore")


def restore_vm(request: Request, node: str, vmid: int, values: dict[str, Any]) -> Response:
    """qemu-server's ``create_vm`` with ``archive``: every check answers, then the restore runs as ``qmrestore``."""
    with params.ParamCollector(values) as p:
        force = bool(p.boolean("force", default=0))
        unique = bool(p.boolean("unique", default=0))
        start = bool(p.boolean("start", default=0))
        live = bool(p.boolean("live-restore", default=0))
        bwlimit = p.integer("bwlimit", minimum=0, default=None)
    if live:
        raise ParameterError({"live-restore": "live-restore is not supported"})
    options: dict[str, Any] = {
        "storage": str(values["storage"]) if values.get("storage") not in (None, "") else None,
        "pool": str(values["pool"]) if values.get("pool") not in (None, "") else None,
        "unique": unique,
        "force": force,
        "bwlimit": bwlimit or None,
        "overrides": {k: v for k, v in values.items() if k not in RESTORE_CONTROL},
    }
    plan = restore.check_restore(str(values["archive"]), vmid, actor=request.user, node=node, **options)

    def work(task: TaskHandle) -> None:
        restore.restore(plan, actor=request.user, owner=task.upid, log=task.log)
        if start:
            from vms.qemu import lifecycle

            lifecycle.start_vm(plan.vmid, log=task.log)

    return ok(run_api_task("qmrestore", str(vmid), principal_of(request.user) or "", work))


class ExtractConfigView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        """``extractconfig``: the ``qemu-server.conf`` of a backup, with access to the backup volume checked."""
        local_node_or_error(node)
        values = params.collect(request, {"node": node})
        volume = params.string(values.get("volume"), "volume")
        return ok(restore.extract_config(str(volume), actor=request.user))
