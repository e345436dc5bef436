"""URL configuration: the only place (with the ASGI routing) that gathers the apps."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
