"""django.contrib.admin configured with the ticket-based admin site."""

from django.contrib.admin.apps import AdminConfig


class PVEAdminConfig(AdminConfig):
    """Admin app config whose default site is ``PVEAdminSite``."""

    default_site = "authz.admin_site.PVEAdminSite"
