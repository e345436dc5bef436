"""``/cluster/options``: datacenter.cfg (Proxmox's ``GET``: Sys.Audit on ``/``; ``PUT``: Sys.Modify on ``/``).

``PUT`` sets the options given and removes those listed in ``delete``, in one replicated change
with its cluster-log entry (:func:`cluster.services.update_datacenter_options`); only the keys
Proxmox's datacenter.cfg schema knows are accepted, each a single line of text.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check, principal_of
from cluster import services
from cluster.exceptions import InvalidOptions
from cluster.models import ClusterSettings
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.schema import Permission, endpoint
from portal.api.views import PVEAPIView, ok

KEYS = frozenset({
    "bwlimit", "cluster-resource-scheduling", "console", "consent-text", "crs", "description", "email_from",
    "fencing", "ha", "http_proxy", "keyboard", "language", "mac_prefix", "max_workers", "migration",
    "migration_unsecure", "next-id", "notify", "registered-tags", "replication", "tag-style", "u2f",
    "user-tag-access", "webauthn",
})  # fmt: skip
UNKNOWN = "property is not defined in schema and the schema does not allow additional properties"


class OptionsView(PVEAPIView):
    @endpoint(
        "The datacenter options (datacenter.cfg).",
        Permission("/", ("Sys.Audit",)),
        returns={"type": "object"},
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        row = ClusterSettings.objects.filter(id="datacenter").first()
        return ok(dict(row.options) if row is not None else {})

    def put(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", ["Sys.Modify"])
        values = params.collect(request, kwargs)
        removed = params.id_list(values.pop("delete", None))
        errors = {key: UNKNOWN for key in [*values, *removed] if key not in KEYS}
        errors |= {key: "cannot be set and deleted at once" for key in removed if key in values}
        for key, value in values.items():
            if key in KEYS:
                try:
                    ClusterSettings.check_option(key, value)
                except InvalidOptions as exc:
                    errors[key] = str(exc)
        if errors:
            raise ParameterError(errors)
        row = ClusterSettings.objects.filter(id="datacenter").first() or ClusterSettings(id="datacenter")
        options = {key: value for key, value in dict(row.options).items() if key not in removed}
        options.update({key: str(value) for key, value in values.items()})
        row.options = options
        services.update_datacenter_options(row, actor=principal_of(request.user) or "")
        return ok(None)
