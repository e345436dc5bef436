"""``/storage`` (storage.cfg entries) and ``/nodes/{node}/storage[/{storage}[/status]]`` (what a node sees)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from authz.restrict import restrict
from cluster.api.nodes import local_node_or_error
from cluster.models import Node
from portal.api import params
from portal.api.errors import APIError, ParameterError
from portal.api.schema import BOOL, INT, NODE, NUM, STR, Permission, array, boolean, endpoint, enum, obj, string
from portal.api.views import PVEAPIView, ok
from vms import services
from vms.config_schema import STORAGE_RE
from vms.models import Storage
from vms.services.storage import CONTENT_TYPES, TYPES
from vms.storage import volumes as storage_volumes

AUDIT = ["Datastore.Audit", "Datastore.AllocateSpace"]
CREATE_PARAMS = ("storage", "type", "path", "content", "nodes", "shared", "disable", "format")
UPDATE_PARAMS = ("storage", "content", "nodes", "shared", "disable", "format", "delete", "digest")
DELETABLE = ("content", "nodes", "shared", "disable", "format")
STORAGE_ID = string("The storage identifier.", pattern=STORAGE_RE.pattern, max_length=64)
LISTED = Permission(user="all", description="Only storages with Datastore.Audit or Datastore.AllocateSpace on them.")
CONFIG = obj({"storage": STR, "type": STR}, path=STR, content=STR, nodes=STR, format=STR, shared=BOOL, disable=BOOL)
STATUS = obj(
    {"storage": STR},
    type=STR,
    content=STR,
    shared=BOOL,
    enabled=BOOL,
    active=BOOL,
    total=INT,
    used=INT,
    avail=INT,
    used_fraction=NUM,
    formats=obj({"default": STR, "supported": array(STR)}),
)


def storage_or_error(storeid: str) -> Storage:
    storage = Storage.objects.filter(storeid=storeid).first()
    if storage is None:
        raise APIError(500, f"storage '{storeid}' does not exist")
    return storage


def storage_config(storage: Storage) -> dict[str, Any]:
    """A storage.cfg section as Proxmox's API returns it (flags only when set)."""
    entry: dict[str, Any] = {"storage": storage.storeid, "type": storage.type, "path": storage.path}
    entry["content"] = storage.content
    for key in ("nodes", "format"):
        if getattr(storage, key):
            entry[key] = getattr(storage, key)
    for key in ("shared", "disable"):
        if getattr(storage, key):
            entry[key] = 1
    return entry


def _fields(values: dict[str, Any], allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = {
        k: "property is not defined in schema and the schema does not allow additional properties"
        for k in values
        if k not in allowed
    }
    if unknown:
        raise ParameterError(unknown)
    fields = {k: v for k, v in values.items() if k not in ("storage", "delete", "digest")}
    for flag in ("shared", "disable"):
        if flag in fields:
            fields[flag] = bool(params.boolean(fields[flag], flag))
    return fields


class StorageListView(PVEAPIView):
    proxyto = None

    @endpoint(
        "The storage configuration (storage.cfg).",
        LISTED,
        {"type": enum(tuple(TYPES), "Only storages of this type.", optional=True)},
        returns=array(CONFIG),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        kind = values["type"]
        rows = Storage.objects.all() if kind is None else Storage.objects.filter(type=kind)
        permitted = restrict(rows, request.user, "/storage/{storeid}", AUDIT, any_of=True)
        return ok([storage_config(s) for s in permitted])

    def post(self, request: Request, **kwargs: Any) -> Response:
        values = params.collect(request, {})
        check(request.user, "/storage", ["Datastore.Allocate"])
        for name in ("storage", "type"):
            if name not in values:
                raise ParameterError({name: params.MISSING_MESSAGE})
        storeid = str(values["storage"])
        storage = services.create_storage(storeid, _fields(values, CREATE_PARAMS), actor=request.user)
        return ok({"storage": storage.storeid, "type": storage.type})


class StorageView(PVEAPIView):
    proxyto = None

    def get(self, request: Request, storage: str, **kwargs: Any) -> Response:
        check(request.user, f"/storage/{storage}", ["Datastore.Allocate"])
        return ok(storage_config(storage_or_error(storage)))

    def put(self, request: Request, storage: str, **kwargs: Any) -> Response:
        values = params.collect(request, {"storage": storage})
        check(request.user, "/storage", ["Datastore.Allocate"])
        fields = _fields(values, UPDATE_PARAMS)
        for key in params.id_list(values.get("delete")):
            if key not in DELETABLE:
                raise ParameterError({"delete": f"unable to delete required option '{key}'"})
            if key in fields:
                raise ParameterError({"delete": f"cannot set and delete property '{key}' at the same time!"})
            fields[key] = False if key in ("shared", "disable") else ""
        row = storage_or_error(storage)
        updated = services.update_storage(row, fields, actor=request.user)
        return ok({"storage": updated.storeid, "type": updated.type})

    def delete(self, request: Request, storage: str, **kwargs: Any) -> Response:
        check(request.user, "/storage", ["Datastore.Allocate"])
        services.delete_storage(storage_or_error(storage), actor=request.user)
        return ok(None)


def _on_node(storage: Storage, node: str) -> bool:
    return not storage.nodes or node in storage.nodes.split(",")


class NodeStorageListView(PVEAPIView):
    @endpoint(
        "The storages this node sees, with their usage.",
        LISTED,
        {
            "node": NODE,
            "content": enum(tuple(CONTENT_TYPES), "Only storages holding this content type.", optional=True),
            "enabled": boolean("Only enabled storages.", optional=True, default=0),
            "format": boolean("With the formats each supports.", optional=True, default=0),
            "storage": STORAGE_ID.but(optional=True, description="Only this storage."),
            "target": NODE.but(optional=True, description="Only storages shared with this node."),
        },
        returns=array(STATUS),
    )
    def get(self, request: Request, values: dict[str, Any]) -> Response:
        node = values["node"]
        local_node_or_error(node)
        content, enabled, with_formats = values["content"], values["enabled"], values["format"]
        target = values["target"] if values["target"] not in (None, "", node, "localhost") else None
        if target is not None and not Node.objects.filter(name=target).exists():
            raise ParameterError({"target": f"no such cluster node '{target}'"})
        wanted = values.get("storage")
        if wanted is not None and not Storage.objects.filter(storeid=str(wanted)).exists():
            raise ParameterError({"storage": "No such storage."})
        result = []
        rows = Storage.objects.filter(storeid=str(wanted)) if wanted is not None else Storage.objects.all()
        if enabled:
            rows = rows.filter(disable=False)
        for storage in restrict(rows, request.user, "/storage/{storeid}", AUDIT, any_of=True):
            if not _on_node(storage, node):
                continue
            if content and content not in storage.content.split(","):
                continue
            if target is not None and not (storage.shared and _on_node(storage, target)):
                continue
            entry = {"storage": storage.storeid, **storage_volumes.storage_status(storage, node)}
            if entry["total"]:
                entry["used_fraction"] = entry["used"] / entry["total"]
            if with_formats:
                default, supported = storage_volumes.storage_formats(storage)
                entry["formats"] = {"default": default, "supported": list(supported)}
            result.append(entry)
        return ok(result)


def node_storage(request: Request, node: str, storeid: str) -> Storage:
    """Audit (or AllocateSpace) on the storage, checked before it is looked up; it must serve ``node``."""
    check(request.user, f"/storage/{storeid}", AUDIT, any_of=True)
    return serving_storage(node, storeid)


def serving_storage(node: str, storeid: str) -> Storage:
    """The storage, configured for ``node`` (this node); callers check privileges first."""
    local_node_or_error(node)
    storage = storage_or_error(storeid)
    if not _on_node(storage, node):
        raise APIError(500, f"storage '{storeid}' is not available on node '{node}'")
    return storage


class NodeStorageView(PVEAPIView):
    def get(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        node_storage(request, node, storage)
        names = (
            "content",
            "download-url",
            "file-restore",
            "import-metadata",
            "prunebackups",
            "rrd",
            "rrddata",
            "status",
            "upload",
        )
        return ok([{"subdir": name} for name in names])


class NodeStorageStatusView(PVEAPIView):
    def get(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        row = node_storage(request, node, storage)  # a disabled one answers too, with enabled 0 and active 0
        return ok(storage_volumes.storage_status(row, node))
