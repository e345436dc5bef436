"""``/nodes/{node}/qemu``: the VMs of a node, their configs and current status."""

from __future__ import annotations

import functools
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, has_privileges, principal_of
from cluster.api.nodes import local_node_or_error
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.schema import NODE, Permission, array, boolean, endpoint
from portal.api.views import PVEAPIView, ok
from portal.tasks.index import run_api_task
from replicator.exceptions import ConflictError
from vms import lookups, operations, services
from vms.api.backup import restore_vm
from vms.cloudinit.options import masked
from vms.config import ConfigError, validate_vmid
from vms.config_schema import typed_value
from vms.models import VM
from vms.permissions import CONFIG_PRIVILEGES
from vms.status.api import VM_ENTRY, vm_list

# Parameters of the create/update calls that are not config keys.
CREATE_CONTROL = ("vmid", "node", "start", "storage", "pool", "force", "unique", "archive", "bwlimit", "live-restore")
UPDATE_CONTROL = ("vmid", "node", "delete", "digest", "skiplock", "revert", "background_delay", "force")


def vmid_param(value: object) -> int:
    """The ``vmid`` parameter, checked as Proxmox checks it (a parameter error otherwise)."""
    try:
        return validate_vmid(value)
    except ConfigError as exc:
        raise ParameterError(exc.errors) from None


def _authorized_vm(
    request: Request, node: str, vmid: object, privileges: list[str] | tuple[str, ...], *, any_of: bool = False
) -> VM:
    """Check privileges on ``/vms/<vmid>`` before looking the VM up, so a denial reveals nothing."""
    checked = vmid_param(vmid)
    check(request.user, f"/vms/{checked}", privileges, any_of=any_of)
    local_node_or_error(node)
    return lookups.get_vm(checked, node)


def _principal(request: Request) -> str:
    """Who the task and the cluster log name: the user, or the API token (its token id)."""
    return principal_of(request.user) or ""


class QemuListView(PVEAPIView):
    @endpoint(
        "The VMs on this node the caller may audit, with their live figures.",
        Permission(user="all", description="Only VMs with VM.Audit on /vms/{vmid}."),
        {"node": NODE, "full": boolean("Determine the full status of active VMs.", optional=True, default=0)},
        returns=array(VM_ENTRY),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        return ok(vm_list(request, values["node"], values["full"]))  # the live fields: vms.status

    def post(self, request: Request, node: str, **kwargs: Any) -> Response:
        """Create: every check (VM.Allocate, each key's privilege, pool, storage) answers before the task starts."""
        local_node_or_error(node)
        values = params.collect(request, {"node": node})
        if "vmid" not in values:
            raise ParameterError({"vmid": "property is missing and it is not optional"})
        vmid = vmid_param(values["vmid"])
        pool = str(values["pool"]) if values.get("pool") not in (None, "") else None
        storage = str(values["storage"]) if values.get("storage") not in (None, "") else None
        if values.get("archive"):
            return restore_vm(request, node, vmid, values)
        if not has_privileges(request.user, f"/vms/{vmid}", ["VM.Allocate"]) and not (
            pool and has_privileges(request.user, f"/pool/{pool}", ["VM.Allocate"])
        ):
            check(request.user, f"/vms/{vmid}", ["VM.Allocate"])
        options = {k: v for k, v in values.items() if k not in CREATE_CONTROL}
        try:
            services.check_vm_create(vmid, options, node=node, actor=request.user, pool=pool, storage=storage)
        except ConflictError as exc:  # a 500 with the message as reason phrase, as Proxmox answers
            raise APIError(500, str(exc)) from None
        create = functools.partial(
            operations.create_vm, vmid=vmid, options=options, node=node, actor=request.user, pool=pool, storage=storage
        )
        return ok(run_api_task("qmcreate", str(vmid), _principal(request), create))


# qemu-server's ``vmdiridx``, those served here (no vncproxy, termproxy, monitor ... yet)
SUBDIRS = (
    "config",
    "pending",
    "cloudinit",
    "status",
    "unlink",
    "migrate",
    "resize",
    "move",
    "rrddata",
    "agent",
    "snapshot",
)


class QemuVMView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        _authorized_vm(request, node, vmid, ["VM.Audit"])
        return ok([{"subdir": name} for name in SUBDIRS])

    def delete(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Allocate"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        skiplock = bool(params.boolean(values.get("skiplock", 0), "skiplock"))
        purge = bool(params.boolean(values.get("purge", 0), "purge"))
        unreferenced = bool(params.boolean(values.get("destroy-unreferenced-disks", 0), "destroy-unreferenced-disks"))
        services.check_vm_destroy(vm, actor=request.user, skiplock=skiplock)
        destroy = functools.partial(
            operations.destroy_vm,
            vm=vm,
            actor=request.user,
            skiplock=skiplock,
            purge=purge,
            destroy_unreferenced=unreferenced,
        )
        return ok(run_api_task("qmdestroy", str(vm.vmid), _principal(request), destroy))


class QemuConfigView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        config: dict[str, Any] = {key: typed_value(key, value) for key, value in masked(vm.full_config()).items()}
        config["digest"] = vm.digest
        return ok(config)

    def _update(self, request: Request, node: str, vmid: str) -> VM:
        """Any VM.Config.* privilege opens the call; the service checks each changed key's own privilege."""
        vm = _authorized_vm(request, node, vmid, CONFIG_PRIVILEGES, any_of=True)
        values = params.collect(request, {"node": node, "vmid": vmid})
        if values.get("revert"):
            raise ParameterError({"revert": "pending changes are not supported yet"})
        skiplock = params.boolean(values.get("skiplock", 0), "skiplock")
        digest = values.get("digest")
        options = {k: v for k, v in values.items() if k not in UPDATE_CONTROL}
        if not options and not values.get("delete"):
            raise ParameterError({"": "no options specified"})
        return services.update_vm_config(
            vm,
            set_=options,
            delete=values.get("delete"),
            digest=str(digest) if digest else None,
            skiplock=bool(skiplock),
            actor=request.user,
            force=bool(params.boolean(values.get("force", 0), "force")),
        )

    def put(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        self._update(request, node, vmid)
        return ok(None)

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = self._update(request, node, vmid)
        return ok(
            run_api_task("qmconfig", str(vm.vmid), _principal(request), lambda task: task.log("update VM config"))
        )


class QemuPendingView(PVEAPIView):
    """``GET {vm}/pending``: each key with its ``value`` (and ``pending``/``delete`` for a change not yet applied).

    Every change is applied when it is made here (nothing waits for a restart), so no entry
    carries ``pending`` or ``delete``; the shape is qemu-server's, typed as it types it.
    """

    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        config = masked(vm.full_config())
        return ok([{"key": key, "value": typed_value(key, value)} for key, value in sorted(config.items())])
