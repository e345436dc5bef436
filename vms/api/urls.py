"""The VM endpoints under ``/api2/json`` (gathered by ``portal.urls``)."""

from portal.api.routing import api_path
from vms.api import network, nextid, qemu
from vms.status import api as status

urlpatterns = [
    api_path("cluster/nextid", nextid.NextIdView.as_view()),
    api_path("nodes/{node}/qemu", qemu.QemuListView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}", qemu.QemuVMView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/config", qemu.QemuConfigView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/current", status.QemuStatusCurrentView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/rrddata", status.QemuRRDDataView.as_view()),
    api_path("nodes/{node}/status", status.NodeStatusView.as_view()),
    api_path("nodes/{node}/rrddata", status.NodeRRDDataView.as_view()),
    api_path("nodes/{node}/storage/{storage}/rrddata", status.StorageRRDDataView.as_view()),
    api_path("cluster/resources", status.ClusterResourcesView.as_view()),
    api_path("nodes/{node}/network", network.NetworkListView.as_view()),
    api_path("nodes/{node}/network/{iface}", network.NetworkInterfaceView.as_view()),
]
