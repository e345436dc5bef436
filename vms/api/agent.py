"""``/nodes/{node}/qemu/{vmid}/agent``: QEMU guest agent commands, as qemu-server's API2/Qemu/Agent.pm.

Each simple command is its own endpoint with its own HTTP method and privilege (any of it and
``VM.GuestAgent.Unrestricted``); an agent error answers ``{"result": {"error": ...}}`` as
Proxmox does. ``exec``, ``exec-status``, ``file-read``, ``file-write`` and ``set-user-password``
take parameters and need ``VM.GuestAgent.Unrestricted`` (``file-*`` also their own privilege).
The privileges are checked before the VM is looked up, so a refusal reveals nothing.
"""

from __future__ import annotations

import base64
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from cluster.api.nodes import local_node_or_error
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms import lookups
from vms.api.qemu import vmid_param
from vms.models import VM
from vms.qemu import agent

UNRESTRICTED = "VM.GuestAgent.Unrestricted"
AUDIT = "VM.GuestAgent.Audit"
FS = "VM.GuestAgent.FileSystemMgmt"
MAX_READ_SIZE = 16 * 1024 * 1024
# command: (HTTP method, privileges, any of them suffices); Agent.pm's $guest_agent_commands.
COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ping": ("post", (AUDIT, UNRESTRICTED)),
    "get-time": ("get", (AUDIT, UNRESTRICTED)),
    "info": ("get", (AUDIT, UNRESTRICTED)),
    "fsfreeze-status": ("post", (AUDIT, FS, UNRESTRICTED)),
    "fsfreeze-freeze": ("post", (FS, UNRESTRICTED)),
    "fsfreeze-thaw": ("post", (FS, UNRESTRICTED)),
    "fstrim": ("post", (FS, UNRESTRICTED)),
    "network-get-interfaces": ("get", (AUDIT, UNRESTRICTED)),
    "get-vcpus": ("get", (AUDIT, UNRESTRICTED)),
    "get-fsinfo": ("get", (AUDIT, UNRESTRICTED)),
    "get-memory-blocks": ("get", (AUDIT, UNRESTRICTED)),
    "get-memory-block-info": ("get", (AUDIT, UNRESTRICTED)),
    "suspend-hybrid": ("post", ("VM.PowerMgmt", UNRESTRICTED)),
    "suspend-ram": ("post", ("VM.PowerMgmt", UNRESTRICTED)),
    "suspend-disk": ("post", ("VM.PowerMgmt", UNRESTRICTED)),
    "shutdown": ("post", ("VM.PowerMgmt", UNRESTRICTED)),
    "get-host-name": ("get", (AUDIT, UNRESTRICTED)),
    "get-osinfo": ("get", (AUDIT, UNRESTRICTED)),
    "get-users": ("get", (AUDIT, UNRESTRICTED)),
    "get-timezone": ("get", (AUDIT, UNRESTRICTED)),
}
NOT_IN_SCHEMA = "property is not defined in schema and the schema does not allow additional properties"
if set(COMMANDS) != set(agent.SIMPLE_COMMANDS):
    raise RuntimeError("the agent endpoints and vms.qemu.agent.SIMPLE_COMMANDS disagree")
WITH_PARAMETERS = ("exec", "exec-status", "file-read", "file-write", "set-user-password")


def _vm(request: Request, node: str, vmid: object, privileges: tuple[str, ...]) -> VM:
    """Any of ``privileges`` on ``/vms/<vmid>``, then the VM on this node."""
    checked = vmid_param(vmid)
    check(request.user, f"/vms/{checked}", privileges, any_of=True)
    local_node_or_error(node)
    return lookups.get_vm(checked, node)


def _values(request: Request, node: str, vmid: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The call's parameters; unknown ones are refused (``additionalProperties => 0``)."""
    values = params.collect(request, {"node": node, "vmid": vmid})
    extra = sorted(key for key in values if key not in ("node", "vmid", *allowed))
    if extra:
        raise ParameterError({key: NOT_IN_SCHEMA for key in extra})
    return values


def run_simple(vm: VM, name: str) -> dict[str, Any]:
    """The answer of a simple command: ``{"result": ...}``."""
    return {"result": agent.simple_command(vm.vmid, vm.config, name)}


class AgentIndexView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """Any authenticated user may list the commands (``user => 'all'``)."""
        vmid_param(vmid)
        local_node_or_error(node)
        return ok([{"name": name} for name in sorted([*COMMANDS, *WITH_PARAMETERS])])

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """The old ``POST .../agent`` with ``command`` (VM.GuestAgent.Unrestricted only)."""
        vm = _vm(request, node, vmid, (UNRESTRICTED,))
        values = _values(request, node, vmid, ("command",))
        name = params.enum(values.get("command"), "command", sorted(COMMANDS))
        return ok(run_simple(vm, name))


def _command_view(name: str, method: str, privileges: tuple[str, ...]) -> type[PVEAPIView]:
    """One endpoint class answering only its HTTP method (others are 501, as in Proxmox)."""

    def handler(self: PVEAPIView, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _vm(request, node, vmid, privileges)
        _values(request, node, vmid, ())
        return ok(run_simple(vm, name))

    handler.__doc__ = f"Execute {name}."
    class_name = "Agent" + "".join(part.title() for part in name.split("-")) + "View"
    return type(class_name, (PVEAPIView,), {method: handler})


COMMAND_VIEWS = {name: _command_view(name, method, privileges) for name, (method, privileges) in COMMANDS.items()}


class AgentExecView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """Start a command in the guest; ``{"pid": n}``."""
        vm = _vm(request, node, vmid, (UNRESTRICTED,))
        values = _values(request, node, vmid, ("command", "input-data"))
        command = values.get("command")
        argv = [command] if isinstance(command, str) else command
        if argv is not None and not (isinstance(argv, list) and all(isinstance(part, str) for part in argv)):
            raise ParameterError({"command": "type check ('array') failed"})
        input_data = values.get("input-data")
        if input_data is not None:
            input_data = params.string(input_data, "input-data", max_length=64 * 1024)
        agent.assert_available(vm.vmid, vm.config)
        return ok(agent.execute(vm.vmid, argv, input_data))


class AgentExecStatusView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """The state of a command started by ``exec``: ``exited``, ``exitcode``, ``out-data``..."""
        vm = _vm(request, node, vmid, (UNRESTRICTED,))
        values = _values(request, node, vmid, ("pid",))
        pid = params.integer(values.get("pid"), "pid")
        agent.assert_available(vm.vmid, vm.config)
        return ok(agent.exec_status(vm.vmid, pid))


class AgentFileReadView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """A guest file's content, up to ``count`` bytes (16 MiB at most)."""
        vm = _vm(request, node, vmid, ("VM.GuestAgent.FileRead", UNRESTRICTED))
        values = _values(request, node, vmid, ("file", "count", "offset", "decode"))
        with params.ParamCollector(values) as collector:
            path = collector.string("file")
            count = collector.integer("count", minimum=1, maximum=MAX_READ_SIZE, default=MAX_READ_SIZE)
            offset = collector.integer("offset", minimum=0, default=0)
            decode = collector.boolean("decode", default=1)
        agent.assert_available(vm.vmid, vm.config)
        return ok(agent.file_read(vm.vmid, path, count=count, offset=offset, decode=bool(decode)))


class AgentFileWriteView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """Write ``content`` to a guest file (base64-encoded on the way unless ``encode=0``)."""
        vm = _vm(request, node, vmid, ("VM.GuestAgent.FileWrite", UNRESTRICTED))
        values = _values(request, node, vmid, ("file", "content", "encode"))
        with params.ParamCollector(values) as collector:
            path = collector.string("file")
            content = collector.string("content", max_length=60 * 1024)
            encode = collector.boolean("encode", default=1)
        agent.assert_available(vm.vmid, vm.config)
        data = base64.b64encode(content.encode()).decode() if encode else content
        agent.file_write(vm.vmid, path, data)
        return ok(None)


class AgentSetUserPasswordView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """Set a guest user's password (VM.GuestAgent.Unrestricted)."""
        vm = _vm(request, node, vmid, (UNRESTRICTED,))
        values = _values(request, node, vmid, ("username", "password", "crypted"))
        with params.ParamCollector(values) as collector:
            username = collector.string("username")
            password = collector.string("password", max_length=1024)
            crypted = collector.boolean("crypted", default=0)
        if password is not None and len(password) < 5:
            raise ParameterError({"password": "value must be at least 5 characters long"})
        arguments = {
            "username": username,
            "password": base64.b64encode(password.encode()).decode(),
            "crypted": bool(crypted),
        }
        agent.assert_available(vm.vmid, vm.config)
        return ok({"result": agent.checked(vm.vmid, "guest-set-user-password", arguments, "cannot set user password")})
