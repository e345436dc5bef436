"""The VM endpoints under ``/api2/json`` (gathered by ``portal.urls``)."""

from django.urls import re_path

from portal.api.routing import PREFIX, api_path
from vms.api import (
    agent,
    backup,
    backup_jobs,
    clone,
    disks,
    migrate,
    network,
    nextid,
    power,
    qemu,
    snapshots,
    storage,
    storage_content,
)
from vms.status import api as status

urlpatterns = [
    api_path("cluster/nextid", nextid.NextIdView.as_view()),
    api_path("cluster/backup", backup_jobs.BackupJobListView.as_view()),
    api_path("cluster/backup/{id}", backup_jobs.BackupJobView.as_view()),
    api_path("nodes/{node}/qemu", qemu.QemuListView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}", qemu.QemuVMView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/config", qemu.QemuConfigView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/pending", qemu.QemuPendingView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent", agent.AgentIndexView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent/exec", agent.AgentExecView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent/exec-status", agent.AgentExecStatusView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent/file-read", agent.AgentFileReadView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent/file-write", agent.AgentFileWriteView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/agent/set-user-password", agent.AgentSetUserPasswordView.as_view()),
    *(
        api_path(f"nodes/{{node}}/qemu/{{vmid}}/agent/{name}", view.as_view())
        for name, view in agent.COMMAND_VIEWS.items()
    ),
    api_path("nodes/{node}/qemu/{vmid}/status", power.StatusIndexView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/start", power.StartView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/stop", power.StopView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/shutdown", power.ShutdownView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/reboot", power.RebootView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/reset", power.ResetView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/suspend", power.SuspendView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/resume", power.ResumeView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/unlink", disks.UnlinkView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/resize", disks.ResizeView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/move_disk", disks.MoveDiskView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/move-disk", disks.MoveDiskView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/clone", clone.CloneView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/template", clone.TemplateView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/migrate", migrate.MigrateView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/snapshot", snapshots.SnapshotListView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/snapshot/{snapname}", snapshots.SnapshotView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/snapshot/{snapname}/config", snapshots.SnapshotConfigView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback", snapshots.RollbackView.as_view()),
    api_path("storage", storage.StorageListView.as_view()),
    api_path("storage/{storage}", storage.StorageView.as_view()),
    api_path("nodes/{node}/storage", storage.NodeStorageListView.as_view()),
    api_path("nodes/{node}/storage/{storage}", storage.NodeStorageView.as_view()),
    api_path("nodes/{node}/storage/{storage}/status", storage.NodeStorageStatusView.as_view()),
    api_path("nodes/{node}/storage/{storage}/content", storage_content.ContentView.as_view()),
    api_path("nodes/{node}/storage/{storage}/upload", storage_content.UploadView.as_view()),
    api_path("nodes/{node}/storage/{storage}/download-url", storage_content.DownloadURLView.as_view()),
    # A volume id holds '/' (``local:100/vm-100-disk-0.qcow2``, its %2F decoded before routing): the rest of the path.
    re_path(
        rf"^{PREFIX}nodes/(?P<node>[^/]+)/storage/(?P<storage>[^/]+)/content/(?P<volume>.+?)/?$",
        storage_content.VolumeView.as_view(),
    ),
    api_path("nodes/{node}/qemu/{vmid}/status/current", status.QemuStatusCurrentView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/rrddata", status.QemuRRDDataView.as_view()),
    api_path("nodes/{node}/status", status.NodeStatusView.as_view()),
    api_path("nodes/{node}/rrddata", status.NodeRRDDataView.as_view()),
    api_path("nodes/{node}/storage/{storage}/rrddata", status.StorageRRDDataView.as_view()),
    api_path("cluster/resources", status.ClusterResourcesView.as_view()),
    api_path("nodes/{node}/vzdump", backup.VzdumpView.as_view()),
    api_path("nodes/{node}/vzdump/extractconfig", backup.ExtractConfigView.as_view()),
    api_path("nodes/{node}/network", network.NetworkListView.as_view()),
    api_path("nodes/{node}/network/{iface}", network.NetworkInterfaceView.as_view()),
]
