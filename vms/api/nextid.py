"""``/cluster/nextid``: a free VMID (the first in the configured range, or the one asked for if free)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.errors import ParameterError
from portal.api.schema import ANY_USER, STR, endpoint, string
from portal.api.views import PVEAPIView, ok
from vms import lookups
from vms.api.qemu import vmid_param
from vms.models import VM


class NextIdView(PVEAPIView):
    @endpoint(
        "A free VMID: the one asked for if it is free, else the first free one.",
        ANY_USER,
        {"vmid": string("The VMID to check.", max_length=16, optional=True)},
        returns=STR,
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        if values["vmid"] not in (None, ""):
            vmid = vmid_param(values["vmid"])
            if VM.objects.filter(vmid=vmid).exists():
                raise ParameterError({"vmid": f"VM {vmid} already exists"})
            return ok(str(vmid))
        return ok(str(lookups.next_free_vmid()))
