"""``POST {vm}/monitor`` (a human monitor command: root@pam only, as Proxmox 8 has it) and ``PUT
{vm}/sendkey`` (keys pressed on the guest's keyboard, QMP ``send-key``: VM.Console; ``skiplock``
root@pam's). Both need the VM running; VM privileges are checked before the VM is looked up."""

from __future__ import annotations

import re
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import is_superuser
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms.api.qemu import _authorized_vm
from vms.exceptions import VMError, VMLocked
from vms.qemu import lifecycle, process, qmp

KEY_RE = re.compile(r"[a-z0-9_]+(-[a-z0-9_]+)*")  # QEMU qcodes joined by '-': ctrl-alt-delete
ROOT_ONLY = "Only root may use this option."


class MonitorView(PVEAPIView):
    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        if not is_superuser(request.user):
            raise ParameterError({"command": "only root@pam may use the QEMU monitor"})
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            command = p.string("command", max_length=4096)
        if not process.is_running(vm.vmid):
            raise lifecycle.NotRunning(vm.vmid)
        try:
            return ok(qmp.human_monitor(vm.vmid, command))
        except qmp.QMPCommandError as exc:  # QEMU's refusal is the answer's message
            raise VMError(str(exc)) from None


class SendKeyView(PVEAPIView):
    def put(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Console"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            key = p.string("key", max_length=128, pattern=KEY_RE.pattern)
            skiplock = p.boolean("skiplock", default=0)
        if skiplock and not is_superuser(request.user):
            raise ParameterError({"skiplock": ROOT_ONLY})
        if vm.lock and not skiplock:
            raise VMLocked(vm.vmid, vm.lock)
        if not process.is_running(vm.vmid):
            raise lifecycle.NotRunning(vm.vmid)
        keys = [{"type": "qcode", "data": code} for code in key.split("-")]
        try:
            qmp.command(vm.vmid, "send-key", {"keys": keys})
        except qmp.QMPCommandError as exc:
            raise VMError(str(exc)) from None
        return ok(None)
