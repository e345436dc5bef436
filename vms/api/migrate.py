"""``GET /nodes/{node}/qemu/{vmid}/migrate`` (the precheck the GUI shows) and ``POST`` (the ``qmigrate`` task).

Both are answered by the VM's node (the request is forwarded there): only it knows whether
its QEMU runs, and its worker runs the migration. VM.Migrate on the VM, as qemu-server;
``targetstorage`` also VM.Config.Disk and Datastore.AllocateSpace on each target storage.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import is_superuser, principal_of
from portal.api import params
from portal.api.views import PVEAPIView, ok
from portal.tasks import locks, runner
from vms.api.clone import _unknown
from vms.api.qemu import _authorized_vm
from vms.config_schema import DNS_LABEL_RE
from vms.services import migration

ROOT_ONLY = ("force", "migration_type", "migration_network")
POST_PARAMETERS = ("target", "online", "force", "with-local-disks", "targetstorage", "bwlimit", "migration_type",
                   "migration_network", "with-conntrack-state")  # fmt: skip
NOT_SUPPORTED = ("with-conntrack-state",)


def _cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


class MigrateView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """``target`` is checked as a node name; the answer lists every other node either way."""
        vm = _authorized_vm(request, node, vmid, ["VM.Migrate"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        _unknown(values, ("target",))
        with params.ParamCollector(values) as p:
            p.string("target", max_length=63, pattern=DNS_LABEL_RE.pattern, default=None)
        return ok(migration.precheck(vm))

    def post(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        """Every check answers before the ``qmigrate`` task is queued on this node's worker."""
        vm = _authorized_vm(request, node, vmid, ["VM.Migrate"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        _unknown(values, POST_PARAMETERS)
        with params.ParamCollector(values) as p:
            target = p.string("target", max_length=63, pattern=DNS_LABEL_RE.pattern)
            online = p.boolean("online", default=0)
            force = p.boolean("force", default=0)
            p.boolean("with-local-disks", default=0)  # local disks are always copied (offline)
            targetstorage = p.string("targetstorage", max_length=4096, default=None)
            bwlimit = p.integer("bwlimit", minimum=0, default=None)
            migration_type = p.enum("migration_type", ("secure", "insecure"), default=None)
            migration_network = p.string("migration_network", max_length=64, default=None)
            if migration_network is not None and not _cidr(str(migration_network)):
                p.add("migration_network", "value must be a network in CIDR notation")
            if not is_superuser(request.user):  # qemu-server: these three are root@pam's
                for name in ROOT_ONLY:
                    if values.get(name) not in (None, "", "0", 0):
                        p.add(name, "Only root may use this option.")
            for name in NOT_SUPPORTED:
                if name in values:
                    p.add(name, "not supported by this implementation yet")
        warnings: list[str] = []
        plan = migration.check_migrate(
            vm,
            str(target),
            actor=request.user,
            online=bool(online),
            force=bool(force),
            targetstorage=targetstorage,
            log=warnings.append,
        )
        user = principal_of(request.user) or ""
        upid = runner.submit(
            "qmigrate",
            str(vm.vmid),
            user,
            "vms.migrate",
            lock=locks.LockSpec("vm", str(vm.vmid), migration.LOCK),
            plan=plan.as_dict(),
            principal=user,
            bwlimit=bwlimit or None,
            migration_type=migration_type,
            migration_network=migration_network,
            notes=warnings,
        )
        return ok(upid)
