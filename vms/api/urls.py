"""The VM endpoints under ``/api2/json`` (gathered by ``portal.urls``)."""

from portal.api.routing import api_path
from vms.api import nextid, qemu

urlpatterns = [
    api_path("cluster/nextid", nextid.NextIdView.as_view()),
    api_path("nodes/{node}/qemu", qemu.QemuListView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}", qemu.QemuVMView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/config", qemu.QemuConfigView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/current", qemu.QemuStatusCurrentView.as_view()),
]
