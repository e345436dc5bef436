"""First start: the ``local`` directory storage."""

from __future__ import annotations

from django.conf import settings
from django.db.models import Model

from replicator import bootstrap
from vms.models import Storage


@bootstrap.register
def local_storage(node_name: str) -> list[Model]:
    if Storage.objects.using("cluster").filter(storeid="local").exists():
        return []
    return [
        Storage(storeid="local", type="dir", path=str(settings.PVE_LOCAL_STORAGE_PATH), content="iso,backup,images")
    ]
