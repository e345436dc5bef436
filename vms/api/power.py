"""``/nodes/{node}/qemu/{vmid}/status/...``: start, stop, shutdown, reboot, reset, suspend, resume.

As qemu-server's API: ``VM.PowerMgmt`` on ``/vms/{vmid}`` (checked before the VM is looked up),
root@pam-only parameters refused for anyone else, the quick refusals (not running, paused, locked)
answered at once, then the operation queued on this node's worker, answering with its UPID
(``qmstart``, ``qmstop``, ``qmshutdown``, ``qmreboot``, ``qmreset``, ``qmpause``, ``qmresume``).
A request naming another node is forwarded to it by the base view.

``start``/``stop`` with ``migratedfrom`` and ``resume`` with ``nocheck`` are a live migration's
target half, asked by the source node's migration task as root@pam (:mod:`vms.services.migration.target`):
the VM still belongs to the source then, so it is looked up as :func:`vms.qemu.incoming.migrating_vm` does.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, is_superuser
from cluster.api.nodes import local_node_or_error
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks import runner
from vms.api.qemu import _authorized_vm, _principal, vmid_param
from vms.config_schema import STORAGE_RE
from vms.exceptions import VMError, VMLocked
from vms.models import VM
from vms.qemu import hibernate, incoming, lifecycle, operations, process, qmp

ROOT_ONLY = "Only root may use this option."
MAX_TIMEOUT = 86400
PAUSED = ("paused", "suspended", "prelaunch")
# Parameters qemu-server takes that this implementation does not (migration, state files ...).
NOT_SUPPORTED = {
    "start": ("force-cpu", "targetstorage", "with-conntrack-state", "nets"),
}
# A live migration's target half (root@pam only, as qemu-server): ``nbd-disks`` is this implementation's
# own (the source's local disks to allocate and export here, as ``qm start --nbd-disks``).
MIGRATION_START = ("migratedfrom", "stateuri", "migration_type", "migration_network", "machine", "nbd-disks")
KNOWN = {
    "start": ("skiplock", "timeout", *MIGRATION_START),
    "stop": ("skiplock", "timeout", "keepActive", "overrule-shutdown", "migratedfrom"),
    "shutdown": ("skiplock", "timeout", "forceStop", "keepActive"),
    "reboot": ("timeout",),
    "reset": ("skiplock",),
    "suspend": ("skiplock", "todisk", "statestorage"),
    "resume": ("skiplock", "nocheck"),
}
ROOT_PARAMETERS = ("skiplock", "keepActive", "nocheck", *MIGRATION_START)
NODE_RE = r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"


def _parameters(request: Request, command: str, node: str, vmid: str) -> dict[str, Any]:
    """The command's parameters, checked as its schema says (unknown ones refused, root-only ones too)."""
    values = params.collect(request, {"node": node, "vmid": vmid})
    checked: dict[str, Any] = {}
    with params.ParamCollector(values) as collector:
        for name in values:
            if name in ("node", "vmid"):
                continue
            if name in NOT_SUPPORTED.get(command, ()):
                collector.add(name, "not supported by this implementation yet")
            elif name not in KNOWN[command]:
                collector.add(
                    name, "property is not defined in schema and the schema does not allow additional properties"
                )
            elif name == "timeout":
                checked[name] = collector.integer(name, minimum=0, maximum=MAX_TIMEOUT)
            elif name == "statestorage":
                checked[name] = collector.string(name, max_length=64, pattern=STORAGE_RE.pattern)
            elif name in MIGRATION_START:
                checked[name] = _migration_value(collector, name)
            else:
                checked[name] = collector.boolean(name)
    root_only = {name: ROOT_ONLY for name in ROOT_PARAMETERS if checked.get(name)}
    if root_only and not is_superuser(request.user):
        raise ParameterError(root_only)
    alone = [name for name in MIGRATION_START if name in checked and name != "migratedfrom"]
    if alone and "migratedfrom" not in checked:
        raise ParameterError({name: "only with migratedfrom" for name in alone})
    return checked


def _migration_value(collector: params.ParamCollector, name: str) -> Any:
    if name == "migratedfrom":
        return collector.string(name, max_length=63, pattern=NODE_RE)
    if name == "stateuri":
        return collector.enum(name, ("unix", "tcp"))
    if name == "migration_type":
        return collector.enum(name, ("secure", "insecure"))
    if name == "machine":
        return collector.string(name, max_length=256, pattern=r"[a-zA-Z0-9_.+-]+")
    value = collector.string(name, max_length=4096)
    try:
        if name == "migration_network":
            ipaddress.ip_network(value, strict=False)
        elif value is not None:
            incoming.parse_nbd_disks(value)
    except (ValueError, VMError) as exc:
        collector.add(name, str(exc))
        return None
    return value


def _migration_target(request: Request, node: str, vmid: str, command: str) -> tuple[VM, dict[str, Any]]:
    """The checks of a request from a migration's source node (VM.PowerMgmt, root@pam, the VM
    still the source's and locked for the migration); the VM is not this node's yet."""
    checked = vmid_param(vmid)
    check(request.user, f"/vms/{checked}", ["VM.PowerMgmt"])
    local_node_or_error(node)
    values = _parameters(request, command, node, vmid)
    source = values.get("migratedfrom")
    if not source:  # resume --nocheck
        vm = VM.objects.filter(vmid=checked).first()
        if vm is None:
            raise VMError(f"VM {checked} does not exist")
        return vm, values
    return incoming.migrating_vm(checked, source), values


def _for_migration(request: Request, node: str, vmid: str, name: str) -> bool:
    return name in params.collect(request, {"node": node, "vmid": vmid})


def _refuse_if_locked(vm: VM, skiplock: bool) -> None:
    if vm.lock and not skiplock:
        raise VMLocked(vm.vmid, vm.lock)


def _submit(request: Request, type_: str, vm: VM, op: str, time_limit: int | None = None, **kwargs: Any) -> Response:
    upid = runner.submit(type_, str(vm.vmid), _principal(request), op, time_limit=time_limit, vmid=vm.vmid, **kwargs)
    return ok(upid)


def _running_state(vmid: int) -> str | None:
    """QEMU's run state, or None when the VM does not run."""
    if not process.is_running(vmid):
        return None
    try:
        return qmp.status(vmid, timeout=5)
    except qmp.QMPCommandError:
        return "unknown"


class StatusIndexView(PVEAPIView):
    """``GET .../status``: the commands (qemu-server: any authenticated user)."""

    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        names = ("current", "start", "stop", "reset", "shutdown", "suspend", "reboot")
        return ok([{"subdir": name} for name in names])


class _PowerView(PVEAPIView):
    command = ""

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.PowerMgmt"])
        values = _parameters(request, self.command, node, vmid)
        return self.run(request, vm, values)

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        raise NotImplementedError


class StartView(_PowerView):
    command = "start"

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        if not _for_migration(request, node, vmid, "migratedfrom"):
            return super().post(request, node, vmid, **kwargs)
        vm, values = _migration_target(request, node, vmid, "start")
        return _submit(
            request,
            "qmstart",
            vm,
            "qemu.start_incoming",
            time_limit=operations.START_LIMIT + 60,
            migratedfrom=values["migratedfrom"],
            stateuri=values.get("stateuri") or "unix",
            machine=values.get("machine") or "",
            network=values.get("migration_network"),
            nbd_disks=values.get("nbd-disks") or "",
        )

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        skiplock = bool(values.get("skiplock"))
        if vm.lock != "suspended":  # suspended to disk: the start resumes it from its state
            _refuse_if_locked(vm, skiplock)
        timeout = values.get("timeout")
        limit = max(operations.START_LIMIT, int(timeout or 0)) + 60
        return _submit(request, "qmstart", vm, "qemu.start", time_limit=limit, skiplock=skiplock, timeout=timeout)


class StopView(_PowerView):
    command = "stop"

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        if not _for_migration(request, node, vmid, "migratedfrom"):
            return super().post(request, node, vmid, **kwargs)
        vm, values = _migration_target(request, node, vmid, "stop")  # the source stops its failed migration's target
        return _submit(request, "qmstop", vm, "qemu.stop_incoming", migratedfrom=values["migratedfrom"])

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        skiplock = bool(values.get("skiplock"))
        _refuse_if_locked(vm, skiplock)
        return _submit(
            request,
            "qmstop",
            vm,
            "qemu.stop",
            skiplock=skiplock,
            timeout=values.get("timeout"),
            overrule_shutdown=bool(values.get("overrule-shutdown")),
        )


class ShutdownView(_PowerView):
    command = "shutdown"

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        skiplock = bool(values.get("skiplock"))
        _refuse_if_locked(vm, skiplock)
        if _running_state(vm.vmid) in PAUSED and not values.get("forceStop"):
            raise VMError("VM is paused - cannot shutdown")
        return _submit(
            request,
            "qmshutdown",
            vm,
            "qemu.shutdown",
            skiplock=skiplock,
            timeout=values.get("timeout"),
            force_stop=bool(values.get("forceStop")),
        )


class RebootView(_PowerView):
    command = "reboot"

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        state = _running_state(vm.vmid)
        if state in PAUSED:
            raise VMError("VM is paused - cannot shutdown")
        if state is None:
            raise lifecycle.NotRunning(vm.vmid)
        _refuse_if_locked(vm, False)
        return _submit(request, "qmreboot", vm, "qemu.reboot", timeout=values.get("timeout"))


class _RunningOnlyView(_PowerView):
    task_type = ""
    operation = ""

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        skiplock = bool(values.get("skiplock"))
        if not process.is_running(vm.vmid):
            raise lifecycle.NotRunning(vm.vmid)
        _refuse_if_locked(vm, skiplock)
        return _submit(request, self.task_type, vm, self.operation, skiplock=skiplock)


class ResetView(_RunningOnlyView):
    command, task_type, operation = "reset", "qmreset", "qemu.reset"


class SuspendView(_RunningOnlyView):
    """``todisk``: also VM.Config.Disk on the VM and Datastore.AllocateSpace on the state storage
    (``statestorage``, else the one qemu-server would choose), checked before the task."""

    command, task_type, operation = "suspend", "qmpause", "qemu.suspend"

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        if "statestorage" in values and not values.get("todisk"):
            raise ParameterError({"statestorage": "missing property - 'todisk' is required by 'statestorage'"})
        if not values.get("todisk"):
            return super().run(request, vm, values)
        skiplock = bool(values.get("skiplock"))
        if not process.is_running(vm.vmid):
            raise lifecycle.NotRunning(vm.vmid)
        check(request.user, f"/vms/{vm.vmid}", ["VM.Config.Disk"])
        if values.get("statestorage"):  # the privilege first: a refusal does not say whether it exists
            check(request.user, f"/storage/{values['statestorage']}", ["Datastore.AllocateSpace"])
        storage = hibernate.state_storage(vm, values.get("statestorage"))
        check(request.user, f"/storage/{storage.storeid}", ["Datastore.AllocateSpace"])
        _refuse_if_locked(vm, skiplock)
        return _submit(request, "qmsuspend", vm, "qemu.suspend_todisk", skiplock=skiplock, statestorage=storage.storeid)


class ResumeView(_PowerView):
    """A paused VM continued, or a VM suspended to disk (``lock: suspended``) started from its state."""

    command = "resume"

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        if not _for_migration(request, node, vmid, "nocheck"):
            return super().post(request, node, vmid, **kwargs)
        vm, values = _migration_target(request, node, vmid, "resume")
        if not values.get("nocheck"):
            return super().post(request, node, vmid, **kwargs)
        return _submit(request, "qmresume", vm, "qemu.resume_incoming")

    def run(self, request: Request, vm: VM, values: dict[str, Any]) -> Response:
        skiplock = bool(values.get("skiplock"))
        if vm.lock == "suspended" and not process.is_running(vm.vmid):
            return _submit(request, "qmresume", vm, "qemu.resume", skiplock=skiplock)
        if not process.is_running(vm.vmid):
            raise lifecycle.NotRunning(vm.vmid)
        _refuse_if_locked(vm, skiplock)
        return _submit(request, "qmresume", vm, "qemu.resume", skiplock=skiplock)
