"""URL configuration: the only place (with the ASGI routing) that gathers the apps."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from authz.api import acl, domains, groups, roles, tickets, tokens, users
from cluster.api import config_views as cluster_config
from cluster.api import tasks as cluster_tasks
from cluster.api import views as cluster
from portal.api.routing import api_path, api_urlpatterns
from vms.api import nextid, qemu

api = api_urlpatterns(
    [
        api_path("access/ticket", tickets.TicketView.as_view()),
        api_path("access/domains", domains.DomainsView.as_view()),
        api_path("access/acl", acl.AclView.as_view()),
        api_path("access/users", users.UsersView.as_view()),
        api_path("access/users/{userid}", users.UserView.as_view()),
        api_path("access/users/{userid}/token", tokens.TokensView.as_view()),
        api_path("access/users/{userid}/token/{tokenid}", tokens.TokenView.as_view()),
        api_path("access/groups", groups.GroupsView.as_view()),
        api_path("access/groups/{groupid}", groups.GroupView.as_view()),
        api_path("access/roles", roles.RolesView.as_view()),
        api_path("access/roles/{roleid}", roles.RoleView.as_view()),
        api_path("version", cluster.VersionView.as_view()),
        api_path("nodes", cluster.NodesView.as_view()),
        api_path("cluster/status", cluster.ClusterStatusView.as_view()),
        api_path("cluster/config", cluster_config.ConfigIndexView.as_view()),
        api_path("cluster/config/apiversion", cluster_config.ApiVersionView.as_view()),
        api_path("cluster/config/join", cluster_config.JoinView.as_view()),
        api_path("cluster/config/nodes", cluster_config.NodesView.as_view()),
        api_path("cluster/config/nodes/{node}", cluster_config.NodeView.as_view()),
        api_path("cluster/nextid", nextid.NextIdView.as_view()),
        api_path("cluster/tasks", cluster_tasks.ClusterTasksView.as_view()),
        api_path("nodes/{node}/tasks", cluster_tasks.TaskListView.as_view()),
        api_path("nodes/{node}/tasks/{upid}", cluster_tasks.TaskView.as_view()),
        api_path("nodes/{node}/tasks/{upid}/status", cluster_tasks.TaskStatusView.as_view()),
        api_path("nodes/{node}/tasks/{upid}/log", cluster_tasks.TaskLogView.as_view()),
        api_path("nodes/{node}/qemu", qemu.QemuListView.as_view()),
        api_path("nodes/{node}/qemu/{vmid}", qemu.QemuVMView.as_view()),
        api_path("nodes/{node}/qemu/{vmid}/config", qemu.QemuConfigView.as_view()),
        api_path("nodes/{node}/qemu/{vmid}/status/current", qemu.QemuStatusCurrentView.as_view()),
    ]
)

urlpatterns = [
    *api,
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

# Errors outside DRF views answer in the API's JSON shape under /api2/ (404 there is a 501).
handler404 = "portal.api.errors.handler404"
handler500 = "portal.api.errors.handler500"
