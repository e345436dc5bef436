"""URL configuration: the only place (with the ASGI routing) that gathers the apps.

Each app lists its API routes in ``<app>/api/urls.py``; they are included by name, so portal
imports no app. The 501 catch-all of ``/api2/json`` comes after all of them.
"""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from portal.api import apidoc
from portal.api.routing import api_path, api_urlpatterns

api = api_urlpatterns(
    [
        api_path("openapi.json", apidoc.OpenAPIView.as_view()),
        path("", include("authz.api.urls")),
        path("", include("cluster.api.urls")),
        path("", include("vms.api.urls")),
    ]
)

urlpatterns = [
    *api,
    path("admin/", admin.site.urls),
    path("pve-docs/api-viewer/", apidoc.api_viewer, name="api-viewer"),
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
]

# Errors outside DRF views answer in the API's JSON shape under /api2/ (404 there is a 501).
handler404 = "portal.api.errors.handler404"
handler500 = "portal.api.errors.handler500"
