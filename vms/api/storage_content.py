"""``/nodes/{node}/storage/{storage}/content[/{volume}]``, ``upload`` and ``download-url``.

Privileges as pve-storage checks them: listing needs Audit or AllocateSpace on the storage and
shows only the volumes the caller may access (``check_volume_access``); allocating needs
AllocateSpace, deleting Allocate (AllocateSpace plus VM.Backup for a VM's backup), uploading
and downloading AllocateTemplate (downloads also Sys.Audit+Sys.Modify on / or Sys.AccessNetwork
on the node). Every volume id and file name is parsed strictly before anything is touched.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import PermissionDenied, check, has_privileges, principal_of
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from portal.tasks import runner
from portal.tasks.index import run_api_task
from vms import permissions
from vms.api.storage import node_storage, serving_storage
from vms.devices import parse_volume
from vms.exceptions import StorageError, VMError
from vms.storage import VolumeError, check_available, resolve, transfer, volumes
from vms.storage.volnames import VolumeNameError, parse_size, parse_volname

CONTENT = ("images", "rootdir", "iso", "vztmpl", "backup", "snippets", "import")
SIZE_RE = re.compile(r"\d+[MG]?")


def _may_access(user: Any, volid: str) -> bool:
    """pve-storage's ``check_volume_access`` (without an owning VM): Allocate on the storage, or the volume's own rule."""
    if has_privileges(user, f"/storage/{volid.partition(':')[0]}", ["Datastore.Allocate"]):
        return True
    try:
        permissions.authorize(user, permissions.volume_rules(-1, parse_volume(volid)))
    except (PermissionDenied, ValueError, VMError):
        return False
    return True


def _volid(storeid: str, volume: str) -> str:
    """A full volume id from ``volume`` (a volume name of ``storeid``, or a volume id on it)."""
    if ":" in volume:
        if volume.partition(":")[0] != storeid:
            raise ParameterError({"volume": f"storage ID mismatch ({volume.partition(':')[0]} != {storeid})"})
        volid = volume
    else:
        volid = f"{storeid}:{volume}"
    try:
        resolve(volid)
    except VolumeError as exc:
        raise ParameterError({"volume": str(exc)}) from None
    return volid


def _principal(request: Request) -> str:
    return principal_of(request.user) or ""


class ContentView(PVEAPIView):
    def get(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        row = node_storage(request, node, storage)
        values = params.collect(request, {"node": node, "storage": storage})
        content = params.enum(values["content"], "content", CONTENT) if "content" in values else None
        vmid = params.integer(values["vmid"], "vmid", minimum=100, maximum=999999999) if "vmid" in values else None
        check_available(row, node)
        listed = volumes.list_volumes(row, content=content, vmid=vmid)
        return ok([entry for entry in listed if _may_access(request.user, entry["volid"])])

    def post(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        check(request.user, f"/storage/{storage}", ["Datastore.AllocateSpace"])
        row = node_storage(request, node, storage)
        values = params.collect(request, {"node": node, "storage": storage})
        with params.ParamCollector(values) as p:
            vmid = p.integer("vmid", minimum=100, maximum=999999999)
            filename = p.string("filename", max_length=255)
            size_text = p.string("size", pattern=SIZE_RE.pattern)
            fmt = p.enum("format", ("raw", "qcow2", "vmdk", "subvol"), default=None) if "format" in values else None
        match = re.search(r"\.(raw|qcow2|vmdk)$", filename or "")
        if match:
            if fmt and fmt != match.group(1):
                raise ParameterError({"format": f"different storage formats ({fmt} != {match.group(1)})"})
            fmt = match.group(1)
        elif filename:
            filename = f"{filename}.{fmt or volumes.storage_formats(row)[0]}"
        if not str(filename).startswith(f"vm-{vmid}-"):
            raise ParameterError({"filename": f"illegal name '{filename}' - should be 'vm-{vmid}-*'"})
        try:
            parse_volname(f"{vmid}/{filename}")
        except VolumeNameError as exc:
            raise ParameterError({"filename": str(exc)}) from None
        size = parse_size(str(size_text), default_unit="K")
        return ok(volumes.alloc_volume(row, int(str(vmid)), size, fmt=fmt, name=str(filename)))


class VolumeView(PVEAPIView):
    def get(self, request: Request, node: str, storage: str, volume: str, **kwargs: Any) -> Response:
        volid = _volid(storage, volume)
        if not _may_access(request.user, volid):
            check(request.user, f"/storage/{storage}", ["Datastore.Allocate"])  # answers with Proxmox's 403
        serving_storage(node, storage)
        info = volumes.volume_info(volid)
        return ok({key: info[key] for key in ("path", "size", "used", "format") if key in info})

    def delete(self, request: Request, node: str, storage: str, volume: str, **kwargs: Any) -> Response:
        volid = _volid(storage, volume)
        _, _, parsed = resolve(volid)
        if parsed.kind == "backup" and parsed.vmid is not None:
            check(request.user, f"/storage/{storage}", ["Datastore.AllocateSpace"])
            check(request.user, f"/vms/{parsed.vmid}", ["VM.Backup"])
        else:
            check(request.user, f"/storage/{storage}", ["Datastore.Allocate"])
        serving_storage(node, storage)
        volumes.volume_info(volid)  # exists, on an enabled storage of this node

        def work(task: Any) -> None:
            volumes.free_volume(volid)
            task.log(f"Removed volume '{volid}'")

        owner = f"{parsed.vmid}@" if parsed.vmid is not None else ""
        return ok(run_api_task("imgdel", f"{owner}{storage}", _principal(request), work))


def _checksum(values: dict[str, Any]) -> tuple[str, str] | None:
    checksum, algorithm = values.get("checksum"), values.get("checksum-algorithm")
    if (checksum is None) != (algorithm is None):
        missing = "checksum-algorithm" if algorithm is None else "checksum"
        raise ParameterError({missing: params.MISSING_MESSAGE})
    if checksum is None:
        return None
    algorithm = params.enum(algorithm, "checksum-algorithm", transfer.ALGORITHMS)
    if not re.fullmatch(r"[0-9a-fA-F]{32,128}", str(checksum)):
        raise ParameterError({"checksum": "invalid checksum (hexadecimal digits)"})
    return algorithm, str(checksum)


def _target(values: dict[str, Any], row: Any, filename: Any) -> str:
    content = params.enum(values.get("content"), "content", transfer.UPLOAD_CONTENT)
    if content not in row.content.split(","):
        raise StorageError(f"storage '{row.storeid}' does not support '{content}' content")
    try:
        return transfer.target_volname(content, str(filename or ""))
    except ValueError as exc:
        raise ParameterError({"filename": str(exc)}) from None


class UploadView(PVEAPIView):
    def post(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        """The body is read only after every privilege check, streamed by the storage's upload handler."""
        check(request.user, f"/storage/{storage}", ["Datastore.AllocateTemplate"])
        row = serving_storage(node, storage)
        plugin = volumes.enabled_plugin(row, node)
        handler = transfer.StorageUploadHandler(plugin, transfer.upload_limit(plugin, settings.PVE_UPLOAD_MAX_SIZE))
        request._request.upload_handlers = [handler]
        try:
            values = params.collect(request, {"node": node, "storage": storage})
            if handler.too_large:
                raise ParameterError({"filename": "file too large for this storage"})
            upload = next((f for f in request.FILES.values() if isinstance(f, transfer.StoredUpload)), None)
            if upload is None:
                raise ParameterError({"filename": "missing file upload"})
            name = values.get("filename") if isinstance(values.get("filename"), str) else upload.name
            volname = _target(values, row, name)
            checksum = _checksum(values)
        except BaseException:
            handler.discard()
            raise

        def work(task: Any) -> None:
            task.log(f"starting file import from: {upload.path}")
            transfer.finish(plugin, upload.path, volname, checksum, task.log)

        return ok(run_api_task("imgcopy", "", _principal(request), work))


class DownloadURLView(PVEAPIView):
    def post(self, request: Request, node: str, storage: str, **kwargs: Any) -> Response:
        check(request.user, f"/storage/{storage}", ["Datastore.AllocateTemplate"])
        if not has_privileges(request.user, "/", ["Sys.Audit", "Sys.Modify"]):
            check(request.user, f"/nodes/{node}", ["Sys.AccessNetwork"])
        row = serving_storage(node, storage)
        values = params.collect(request, {"node": node, "storage": storage})
        url = params.string(values.get("url"), "url", pattern=re.compile(r"https?://\S+"))
        volname = _target(values, row, values.get("filename"))
        checksum = _checksum(values)
        volumes.enabled_plugin(row, node)
        upid = runner.submit(
            "download",
            storage,
            _principal(request),
            "vms.download_url",
            storeid=storage,
            url=url,
            volname=volname,
            checksum=list(checksum) if checksum else None,
        )
        return ok(upid)
