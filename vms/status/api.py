"""Live status endpoints: ``/cluster/resources``, ``/nodes/{n}/status``, a node's VM list,
``.../status/current`` and the ``rrddata`` of nodes, VMs and storages.

Everything here reads what the collector published (its run file on this node, every node's
volatile status for the cluster view) or the history; only the VM's own pid file is looked at
per request, so a VM started a moment ago already says ``running``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from django.http import HttpResponse
from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from cluster.api.nodes import VERSION, local_node_or_error
from portal.api import params
from portal.api.compression import accepts_gzip, json_answer
from portal.api.errors import ParameterError
from portal.api.schema import BOOL, INT, NUM, STR, Permission, array, endpoint, enum, obj
from portal.api.views import PVEAPIView, ok
from vms import lookups, runtime_paths
from vms.config import ConfigError, validate_vmid
from vms.models import VM, Storage
from vms.status import collector, qmp, rrd
from vms.status.resources import config_entry, resources_body
from vms.status.visibility import visible

RESOURCE_TYPES = ("vm", "storage", "node", "sdn", "pool")


def vm_summary(vm: VM, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """A VM's list/status fields with typed numbers (Terraform decodes into Go structs); ``live``:
    what the collector saw of its running QEMU (status stopped without it)."""
    base = config_entry(vm.vmid, vm.node_id, None, vm.config, vm.lock)
    entry: dict[str, Any] = {
        "vmid": vm.vmid,
        "name": base["name"],
        "status": "stopped",
        "cpus": base["maxcpu"],
        "cpu": 0.0,
        "maxmem": base["maxmem"],
        "mem": 0,
        "maxdisk": base["maxdisk"],
        "disk": 0,
        "uptime": 0,
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
    }
    if live is not None:
        entry["status"] = "running"
        entry["pid"] = int(live["pid"])
        for key in ("cpu", "mem", "uptime", "netin", "netout", "diskread", "diskwrite", "balloon"):
            if key in live:
                entry[key] = live[key]
        entry["cpu"] = float(entry["cpu"])
    if vm.lock:
        entry["lock"] = vm.lock
    if base.get("tags"):
        entry["tags"] = base["tags"]
    if base["template"]:
        entry["template"] = 1
    return entry


def live_vm(vmid: int, snapshot: dict[str, Any] | None) -> dict[str, Any] | None:
    """The running QEMU of ``vmid`` as the collector saw it; a QEMU it has not seen yet (just
    started) is described from its pid alone. None when it does not run."""
    pid = runtime_paths.vm_pid(vmid)
    if pid is None:
        return None
    seen = (snapshot or {}).get("vms", {}).get(vmid)
    if seen is not None and seen.get("pid") == pid:
        return dict(seen)
    return {"pid": pid, "qmpstatus": "unknown"}


RESOURCE = obj(
    {"id": STR, "type": {"enum": ["qemu", "storage", "node", "pool"]}},
    node=STR,
    vmid=INT,
    name=STR,
    status=STR,
    storage=STR,
    pool=STR,
    cpu=NUM,
    maxcpu=NUM,
    mem=INT,
    maxmem=INT,
    disk=INT,
    maxdisk=INT,
    uptime=INT,
    template=BOOL,
    netin=INT,
    netout=INT,
    diskread=INT,
    diskwrite=INT,
    lock=STR,
    tags=STR,
    hastate=STR,
    content=STR,
    plugintype=STR,
    shared=BOOL,
    level=STR,
)


class ClusterResourcesView(PVEAPIView):
    @endpoint(
        "Resources of the whole cluster: VMs, storages, nodes and pools, with their live figures.",
        Permission(user="all", description="Each resource the caller may audit (VM.Audit, Datastore.Audit, ...)."),
        {"type": enum(RESOURCE_TYPES, "Only resources of this type.", optional=True)},
        returns=array(RESOURCE),
    )
    def get(self, request: Request, values: dict[str, Any]) -> HttpResponse:
        kind = values["type"] or None
        if kind == "sdn":
            return ok([])
        return json_answer(*resources_body(request.user, kind, gzipped=accepts_gzip(request)))


def vmid_param(value: object) -> int:
    try:
        return validate_vmid(value)
    except ConfigError as exc:
        raise ParameterError(exc.errors) from None


VM_ENTRY = obj(
    {"vmid": INT, "status": {"enum": ["running", "stopped"]}},
    name=STR,
    cpus=NUM,
    cpu=NUM,
    maxmem=INT,
    mem=INT,
    maxdisk=INT,
    disk=INT,
    uptime=INT,
    netin=INT,
    netout=INT,
    diskread=INT,
    diskwrite=INT,
    pid=INT,
    balloon=INT,
    lock=STR,
    tags=STR,
    template=BOOL,
    qmpstatus=STR,
)


def vm_list(request: Request, node: str, full: int) -> list[dict[str, Any]]:
    """``GET /nodes/{node}/qemu``: this node's VMs the caller may audit, with their live values."""
    local_node_or_error(node)
    rule = visible(request.user, "/vms", ("VM.Audit",))
    snapshot = collector.latest()
    entries = []
    for vm in rule.apply(VM.objects.filter(node_id=node), "vmid"):
        live = live_vm(vm.vmid, snapshot)
        entry = vm_summary(vm, live)
        if full and live is not None:
            entry["qmpstatus"] = live.get("qmpstatus", "unknown")
        entries.append(entry)
    return entries


class QemuStatusCurrentView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        checked = vmid_param(vmid)
        check(request.user, f"/vms/{checked}", ["VM.Audit"])
        local_node_or_error(node)
        vm = lookups.get_vm(checked, node)
        live = live_vm(vm.vmid, collector.latest())
        if live is not None and live.get("qmpstatus", "unknown") == "unknown":
            answer = qmp.query_all({vm.vmid: runtime_paths.vm_file(vm.vmid, "qmp")}).get(vm.vmid)
            live.update(answer or {})
        entry = vm_summary(vm, live)
        entry["qmpstatus"] = live.get("qmpstatus", "unknown") if live is not None else "stopped"
        if live is not None:
            entry["running-qemu"] = collector.procfs.qemu_version()
        entry["ha"] = {"managed": 0}
        if str(vm.config.get("agent", "0")).split(",")[0] in ("1", "enabled=1"):
            entry["agent"] = 1
        return ok(entry)


class NodeStatusView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        check(request.user, f"/nodes/{node}", ["Sys.Audit"])
        local_node_or_error(node)
        snapshot = collector.latest()
        status = collector.Collector(node).node_status(time.time())  # no cpu rate: one reading
        if snapshot is not None:
            status["cpu"], status["wait"] = snapshot["status"]["cpu"], snapshot["status"]["wait"]
        memory = status["memory"]
        return ok(
            {
                "uptime": status["uptime"],
                "idle": 0,
                "loadavg": status["loadavg"],
                "kversion": status["kversion"],
                "current-kernel": status["current-kernel"],
                "boot-info": {"mode": "efi" if _efi() else "legacy-bios", "secureboot": 0},
                "cpuinfo": status["cpuinfo"],
                "cpu": float(status["cpu"]),
                "wait": float(status["wait"]),
                "memory": memory,
                "swap": status["swap"],
                "ksm": {"shared": 0},
                "rootfs": status["rootfs"],
                "pveversion": f"pve-manager/{VERSION['version']}/{VERSION['repoid']}",
            }
        )


def _efi() -> bool:
    return os.path.isdir("/sys/firmware/efi")


def _rrd_params(request: Request, path: dict[str, str]) -> tuple[str, str]:
    values = params.collect(request, path)
    with params.ParamCollector(values) as collected:
        timeframe = collected.enum("timeframe", tuple(rrd.TIMEFRAMES))
        cf = collected.enum("cf", rrd.CONSOLIDATIONS, default="AVERAGE")
    return timeframe, cf


class NodeRRDDataView(PVEAPIView):
    def get(self, request: Request, node: str, **kwargs: Any) -> Response:
        check(request.user, f"/nodes/{node}", ["Sys.Audit"])
        local_node_or_error(node)
        timeframe, cf = _rrd_params(request, {"node": node})
        return ok(rrd.fetch(f"node/{node}", "node", timeframe, cf, time.time()))


class QemuRRDDataView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        checked = vmid_param(vmid)
        check(request.user, f"/vms/{checked}", ["VM.Audit"])
        local_node_or_error(node)
        vm = lookups.get_vm(checked, node)
        timeframe, cf = _rrd_params(request, {"node": node, "vmid": vmid})
        return ok(rrd.fetch(f"vm/{vm.vmid}", "vm", timeframe, cf, time.time()))


class StorageRRDDataView(PVEAPIView):
    def get(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        check(request.user, f"/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"], any_of=True)
        local_node_or_error(node)
        timeframe, cf = _rrd_params(request, {"node": node, "storage": storage})
        if not Storage.objects.filter(storeid=storage).exists():
            raise ParameterError({"storage": f"storage '{storage}' does not exist"})
        return ok(rrd.fetch(f"storage/{storage}", "storage", timeframe, cf, time.time()))
