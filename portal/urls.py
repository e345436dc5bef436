"""URL configuration: the only place (with the ASGI routing) that gathers the apps."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from authz.api import manage_views as access_manage
from authz.api import views as access
from portal.api.routing import api_path, api_urlpatterns
from vms.api import views as qemu

api = api_urlpatterns(
    [
        api_path("access/ticket", access.TicketView.as_view()),
        api_path("access/domains", access.DomainsView.as_view()),
        api_path("access/acl", access_manage.AclView.as_view()),
        api_path("access/users", access_manage.UsersView.as_view()),
        api_path("access/users/{userid}", access_manage.UserView.as_view()),
        api_path("access/users/{userid}/token", access_manage.TokensView.as_view()),
        api_path("access/users/{userid}/token/{tokenid}", access_manage.TokenView.as_view()),
        api_path("access/groups", access_manage.GroupsView.as_view()),
        api_path("access/groups/{groupid}", access_manage.GroupView.as_view()),
        api_path("access/roles", access_manage.RolesView.as_view()),
        api_path("access/roles/{roleid}", access_manage.RoleView.as_view()),
        path("", include("cluster.api.urls")),
        api_path("cluster/nextid", qemu.NextIdView.as_view()),
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
