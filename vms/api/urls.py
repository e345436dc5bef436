"""The VM endpoints under ``/api2/json`` (gathered by ``portal.urls``)."""

from portal.api.routing import api_path
from vms.api import agent, nextid, power, qemu

urlpatterns = [
    api_path("cluster/nextid", nextid.NextIdView.as_view()),
    api_path("nodes/{node}/qemu", qemu.QemuListView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}", qemu.QemuVMView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/config", qemu.QemuConfigView.as_view()),
    api_path("nodes/{node}/qemu/{vmid}/status/current", qemu.QemuStatusCurrentView.as_view()),
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
]
