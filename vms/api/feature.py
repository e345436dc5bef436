"""``GET /nodes/{node}/qemu/{vmid}/feature``: whether a feature (``snapshot``, ``clone``, ``copy``) is
available for the VM or one of its snapshots (``snapname``), and on which nodes (VM.Audit)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms.api.qemu import _authorized_vm
from vms.exceptions import VMError
from vms.services.features import FEATURES, has_feature
from vms.snapshot_config import SNAPNAME_RE


class FeatureView(PVEAPIView):
    def get(self, request: Request, node: str, vmid: str, **kwargs: Any) -> Response:
        vm = _authorized_vm(request, node, vmid, ["VM.Audit"])
        values = params.collect(request, {"node": node, "vmid": vmid})
        with params.ParamCollector(values) as p:
            feature = p.enum("feature", FEATURES)
            snapname = p.string("snapname", max_length=40, pattern=SNAPNAME_RE.pattern, default=None)
        if snapname is not None and snapname not in (vm.snapshots or {}):
            raise VMError(f"snapshot '{snapname}' does not exist")
        unknown = {
            k: "property is not defined in schema" for k in values if k not in ("node", "vmid", "feature", "snapname")
        }
        if unknown:
            raise ParameterError(unknown)
        config = dict(vm.snapshots[snapname]) if snapname else dict(vm.config)
        available, nodes = has_feature(vm, feature, config)
        return ok({"hasFeature": int(available), "nodes": nodes})
