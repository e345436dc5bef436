"""URL configuration: the only place (with the ASGI routing) that gathers the apps.

Each app lists its API routes in ``<app>/api/urls.py``; they are included by name, so portal
imports no app. The 501 catch-all of ``/api2/json`` comes after all of them.
"""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from cluster.api import config_views as cluster_config
from cluster.api import tasks as cluster_tasks
from cluster.api import views as cluster
from portal.api.routing import api_path, api_urlpatterns

api = api_urlpatterns(
    [
        path("", include("authz.api.urls")),
        api_path("version", cluster.VersionView.as_view()),
        api_path("nodes", cluster.NodesView.as_view()),
        api_path("cluster/status", cluster.ClusterStatusView.as_view()),
        api_path("cluster/config", cluster_config.ConfigIndexView.as_view()),
        api_path("cluster/config/apiversion", cluster_config.ApiVersionView.as_view()),
        api_path("cluster/config/join", cluster_config.JoinView.as_view()),
        api_path("cluster/config/nodes", cluster_config.NodesView.as_view()),
        api_path("cluster/config/nodes/{node}", cluster_config.NodeView.as_view()),
        api_path("cluster/tasks", cluster_tasks.ClusterTasksView.as_view()),
        api_path("nodes/{node}/tasks", cluster_tasks.TaskListView.as_view()),
        api_path("nodes/{node}/tasks/{upid}", cluster_tasks.TaskView.as_view()),
        api_path("nodes/{node}/tasks/{upid}/status", cluster_tasks.TaskStatusView.as_view()),
        api_path("nodes/{node}/tasks/{upid}/log", cluster_tasks.TaskLogView.as_view()),
        path("", include("vms.api.urls")),
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
