"""``/access/domains``: the realms a login form offers."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.models import Realm
from portal.api.views import PVEAPIView, ok


class DomainsView(PVEAPIView):
    """``GET /access/domains``: the realms a login form offers (no login needed, as in Proxmox)."""

    public = True

    def get(self, request: Request, **kwargs: Any) -> Response:
        entries = []
        for realm in Realm.objects.all():
            entry: dict[str, Any] = {"realm": realm.realm, "type": realm.type, "comment": realm.comment}
            if realm.default:
                entry["default"] = 1
            entries.append(entry)
        return ok(entries)
