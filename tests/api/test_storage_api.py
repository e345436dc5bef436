"""The storage API on real storages (a directory, btrfs on a loop device): config, status, content,
upload, download-url, and the VM disk calls (create allocating, unlink, resize, destroy), with
traversal attempts through every endpoint that takes a volume or a file name."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import pytest
from django.test import Client, override_settings

from authz.models import User
from tests.api_client import finished_task, logged_in
from vms import services
from vms.exceptions import StorageError
from vms.models import VM, Storage
from vms.storage import volume_path
from vms.storage.volnames import format_size

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
FORM = "application/x-www-form-urlencoded"
MIB = 1024 * 1024
TRAVERSALS = [
    "../../../etc/passwd",
    "sapi-dir:../../etc/passwd",
    "9300/../../../../etc/shadow.raw",
    "iso/../../../etc/passwd.iso",
    "/etc/passwd",
    "sapi-dir:/etc/passwd",
    "iso/.hidden.iso",
]


@pytest.fixture(scope="module")
def root_client() -> Client:
    return logged_in()


@pytest.fixture(scope="module")
def stores(tmp_path_factory, btrfs_mount) -> dict[str, Storage]:
    root = User.objects.get(userid="root@pam")
    path = tmp_path_factory.mktemp("sapi")
    made = {
        "dir": services.create_storage("sapi-dir", {"path": str(path), "content": "images,iso,vztmpl"}, actor=root),
        "btrfs": services.create_storage("sapi-btrfs", {"type": "btrfs", "path": str(btrfs_mount)}, actor=root),
    }
    yield made
    for storage in made.values():
        services.delete_storage(storage, actor=root)


def task_status(upid: str) -> str:
    return finished_task(upid).exitstatus


def test_storage_config_crud(root_client, tmp_path):
    created = root_client.post(
        f"{API}/storage", {"storage": "sapi-new", "type": "btrfs", "path": str(tmp_path), "format": "raw"}
    )
    assert created.json()["data"] == {"storage": "sapi-new", "type": "btrfs"}
    config = root_client.get(f"{API}/storage/sapi-new").json()["data"]
    assert config == {
        "storage": "sapi-new",
        "type": "btrfs",
        "path": str(tmp_path),
        "content": "images",
        "format": "raw",
    }
    assert (
        root_client.post(
            f"{API}/storage", {"storage": "sapi-bad", "type": "btrfs", "path": str(tmp_path), "format": "qcow2"}
        ).status_code
        == 400
    )
    assert (
        root_client.post(f"{API}/storage", {"storage": "sapi-bad", "type": "lvm", "path": str(tmp_path)}).status_code
        == 400
    )
    assert (
        root_client.post(f"{API}/storage", {"storage": "sapi-bad", "type": "dir", "path": "/srv/../etc"}).status_code
        == 400
    )
    assert not Storage.objects.filter(storeid="sapi-bad").exists()
    updated = root_client.put(f"{API}/storage/sapi-new", "shared=1&nodes=testnode&delete=format", content_type=FORM)
    assert updated.status_code == 200, updated.content
    row = Storage.objects.get(storeid="sapi-new")
    assert row.shared and row.nodes == "testnode" and row.format == ""
    listed = root_client.get(f"{API}/storage?type=btrfs").json()["data"]
    assert {
        "storage": "sapi-new",
        "type": "btrfs",
        "path": str(tmp_path),
        "content": "images",
        "shared": 1,
        "nodes": "testnode",
    } in listed
    assert root_client.delete(f"{API}/storage/sapi-new").status_code == 200
    assert not Storage.objects.filter(storeid="sapi-new").exists()


def test_node_storage_list_and_status(root_client, stores):
    listed = {s["storage"]: s for s in root_client.get(f"{API}/nodes/{NODE}/storage?format=1").json()["data"]}
    btrfs = listed["sapi-btrfs"]
    assert btrfs["type"] == "btrfs" and btrfs["active"] == 1 and btrfs["enabled"] == 1 and btrfs["total"] > 0
    assert 0 < btrfs["used_fraction"] < 1 and btrfs["formats"] == {"default": "raw", "supported": ["raw"]}
    only_iso = {s["storage"] for s in root_client.get(f"{API}/nodes/{NODE}/storage?content=iso").json()["data"]}
    assert "sapi-dir" in only_iso and "sapi-btrfs" not in only_iso
    assert root_client.get(f"{API}/nodes/{NODE}/storage?storage=nosuch").status_code == 400
    status = root_client.get(f"{API}/nodes/{NODE}/storage/sapi-dir/status").json()["data"]
    assert status["active"] == 1 and status["type"] == "dir" and status["avail"] <= status["total"]
    shared = {s["storage"] for s in root_client.get(f"{API}/nodes/{NODE}/storage?target={NODE}").json()["data"]}
    assert "sapi-dir" in shared  # the target is this node: no shared filter


def test_content_allocate_list_info_delete(root_client, stores):
    base = f"{API}/nodes/{NODE}/storage/sapi-dir/content"
    made = root_client.post(base, {"vmid": 9300, "filename": "vm-9300-disk-0.qcow2", "size": "1M"}).json()["data"]
    assert made == "sapi-dir:9300/vm-9300-disk-0.qcow2"
    plain = root_client.post(base, {"vmid": 9300, "filename": "vm-9300-disk-1", "size": "2048"}).json()["data"]
    assert plain == "sapi-dir:9300/vm-9300-disk-1.raw" and os.path.getsize(volume_path(plain)) == 2 * MIB
    assert root_client.post(base, {"vmid": 9300, "filename": "vm-9301-disk-0.raw", "size": "1M"}).status_code == 400
    assert (
        root_client.post(
            base, {"vmid": 9300, "filename": "vm-9300-disk-2.raw", "size": "1M", "format": "qcow2"}
        ).status_code
        == 400
    )
    listed = root_client.get(f"{base}?vmid=9300&content=images").json()["data"]
    assert sorted(v["volid"] for v in listed) == [made, plain]
    info = root_client.get(f"{base}/{made.replace('/', '%2F')}").json()["data"]
    assert info["format"] == "qcow2" and info["size"] == MIB and info["path"] == volume_path(made)
    for volid in (made, plain):
        upid = root_client.delete(f"{base}/{volid}").json()["data"]
        assert task_status(upid) == "OK"
    assert root_client.get(f"{base}?vmid=9300").json()["data"] == []


@pytest.mark.parametrize("volume", TRAVERSALS)
def test_traversal_through_volume_endpoints(root_client, stores, volume):
    base = f"{API}/nodes/{NODE}/storage/sapi-dir/content"
    assert root_client.get(f"{base}/{volume}").status_code in (400, 501)
    assert root_client.delete(f"{base}/{volume}").status_code in (400, 501)
    name = volume.rpartition(":")[2]
    assert root_client.post(base, {"vmid": 9300, "filename": name, "size": "1M"}).status_code == 400
    upload = root_client.post(  # the name as a parameter: refused unless it is a plain file name
        f"{API}/nodes/{NODE}/storage/sapi-dir/upload", {"content": "iso", "filename": name, "file": _file("x.iso")}
    )
    if "/" in name or name.startswith("."):
        assert upload.status_code == 400, upload.content
    as_file = root_client.post(  # the name of the file part: reduced to its last component by the parser
        f"{API}/nodes/{NODE}/storage/sapi-dir/upload", {"content": "iso", "filename": _file(name)}
    )
    if as_file.status_code == 200:
        task_status(as_file.json()["data"])
        for stored in Path(stores["dir"].path).rglob("*"):
            assert stored.resolve().is_relative_to(Path(stores["dir"].path).resolve())
    assert not list(Path(stores["dir"].path).glob(".upload-*"))  # nothing left behind
    assert Path("/etc/passwd").stat().st_size > 0


class _Named:
    """A file object the test client uploads under a name of the test's choosing."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self.data, self.pos = name, data, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data[self.pos :] if size < 0 else self.data[self.pos : self.pos + size]
        self.pos += len(chunk)
        return chunk


def _file(name: str, data: bytes = b"ISO-DATA" * 1000) -> _Named:
    return _Named(name, data)


def test_upload_streams_into_the_storage_with_checksum(root_client, stores):
    data = os.urandom(3 * MIB + 17)
    url = f"{API}/nodes/{NODE}/storage/sapi-dir/upload"
    good = hashlib.sha256(data).hexdigest()
    answer = root_client.post(
        url, {"content": "iso", "checksum": good, "checksum-algorithm": "sha256", "filename": _file("bo ot.iso", data)}
    )
    assert answer.status_code == 200, answer.content
    assert task_status(answer.json()["data"]) == "OK"
    stored = Path(stores["dir"].path) / "template/iso/bo_ot.iso"
    assert stored.read_bytes() == data
    bad = root_client.post(
        url,
        {"content": "iso", "checksum": "0" * 64, "checksum-algorithm": "sha256", "filename": _file("bad.iso", data)},
    )
    assert "checksum mismatch" in task_status(bad.json()["data"])
    assert not (Path(stores["dir"].path) / "template/iso/bad.iso").exists()
    wrong = root_client.post(url, {"content": "iso", "filename": _file("notes.txt")})
    assert wrong.status_code == 400
    refused = root_client.post(
        f"{API}/nodes/{NODE}/storage/sapi-btrfs/upload", {"content": "iso", "filename": _file("x.iso")}
    )
    assert refused.status_code == 500 and "does not support 'iso'" in refused.json()["message"]
    assert not list(Path(stores["dir"].path).glob(".upload-*")) and not list(
        Path(stores["btrfs"].path).glob(".upload-*")
    )


def test_upload_over_the_limit_is_refused(root_client, stores):
    with override_settings(PVE_UPLOAD_MAX_SIZE=MIB):
        answer = root_client.post(
            f"{API}/nodes/{NODE}/storage/sapi-dir/upload",
            {"content": "iso", "filename": _file("big.iso", b"x" * (2 * MIB))},
        )
    assert answer.status_code == 400 and not (Path(stores["dir"].path) / "template/iso/big.iso").exists()
    assert not list(Path(stores["dir"].path).glob(".upload-*"))


def test_vm_disks_create_unlink_resize_destroy(root_client, stores):
    created = root_client.post(
        f"{API}/nodes/{NODE}/qemu", {"vmid": 9310, "scsi0": "sapi-btrfs:0.001", "scsi1": "sapi-dir:0.002,format=qcow2"}
    )
    assert task_status(created.json()["data"]) == "OK"
    config = VM.objects.get(vmid=9310).config
    assert config["scsi0"] == "sapi-btrfs:9310/vm-9310-disk-0.raw,size=1073741"
    assert config["scsi1"] == "sapi-dir:9310/vm-9310-disk-0.qcow2,size=2147483"
    assert os.path.exists(volume_path("sapi-btrfs:9310/vm-9310-disk-0.raw"))
    vm_url = f"{API}/nodes/{NODE}/qemu/9310"
    resized = root_client.put(f"{vm_url}/resize", "disk=scsi0&size=%2B1M", content_type=FORM)
    assert task_status(resized.json()["data"]) == "OK"
    grown = os.path.getsize(volume_path("sapi-btrfs:9310/vm-9310-disk-0.raw"))
    assert grown >= 1073741 + MIB and VM.objects.get(vmid=9310).config["scsi0"].endswith(f"size={format_size(grown)}")
    shrink = root_client.put(f"{vm_url}/resize", "disk=scsi0&size=1K", content_type=FORM)
    assert "shrinking" in task_status(shrink.json()["data"])
    assert root_client.put(f"{vm_url}/resize", "disk=scsi0&size=-1G", content_type=FORM).status_code == 400
    assert root_client.put(f"{vm_url}/unlink", "idlist=scsi1", content_type=FORM).status_code == 200
    config = VM.objects.get(vmid=9310).config
    assert "scsi1" not in config and config["unused0"] == "sapi-dir:9310/vm-9310-disk-0.qcow2"
    assert root_client.put(f"{vm_url}/unlink", "idlist=unused0", content_type=FORM).status_code == 200
    assert "unused0" not in VM.objects.get(vmid=9310).config
    assert not os.path.exists(Path(stores["dir"].path) / "images/9310/vm-9310-disk-0.qcow2")
    stray = root_client.post(
        f"{API}/nodes/{NODE}/storage/sapi-dir/content", {"vmid": 9310, "filename": "vm-9310-disk-5.raw", "size": "1M"}
    ).json()["data"]
    destroyed = root_client.delete(f"{vm_url}?purge=1&destroy-unreferenced-disks=1")
    assert task_status(destroyed.json()["data"]) == "OK"
    assert not VM.objects.filter(vmid=9310).exists()
    assert not (Path(stores["btrfs"].path) / "images/9310").exists()
    assert not os.path.exists(Path(stores["dir"].path) / "images/9310" / stray.rpartition("/")[2])


def test_failed_create_frees_what_it_allocated(stores, tmp_path):
    root = User.objects.get(userid="root@pam")
    off = services.create_storage("sapi-off", {"path": str(tmp_path), "disable": True}, actor=root)
    with pytest.raises(StorageError, match="disabled"):  # scsi0 is made first, then scsi1 fails
        services.create_vm(9320, {"scsi0": "sapi-dir:0.001", "scsi1": "sapi-off:0.001"}, node=NODE, actor=root)
    assert not VM.objects.filter(vmid=9320).exists()
    assert not (Path(stores["dir"].path) / "images/9320").exists()
    services.delete_storage(off, actor=root)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_download_url(root_client, stores, celery_worker, tmp_path):
    payload = os.urandom(MIB)
    (tmp_path / "tiny.iso").write_bytes(payload)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: _Handler(*a, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/tiny.iso"
        base = f"{API}/nodes/{NODE}/storage/sapi-dir/download-url"
        checksum = hashlib.md5(payload).hexdigest()
        answer = root_client.post(
            base,
            {"url": url, "content": "iso", "filename": "dl.iso", "checksum": checksum, "checksum-algorithm": "md5"},
        )
        assert answer.status_code == 200, answer.content
        assert task_status(answer.json()["data"]) == "OK"
        assert (Path(stores["dir"].path) / "template/iso/dl.iso").read_bytes() == payload
        for bad in ("file:///etc/passwd", "ftp://127.0.0.1/x.iso", "gopher://x"):
            assert root_client.post(base, {"url": bad, "content": "iso", "filename": "x.iso"}).status_code == 400
        assert root_client.post(base, {"url": url, "content": "iso", "filename": "../x.iso"}).status_code == 400
    finally:
        server.shutdown()


def test_config_replace_keeps_old_disk_unused_and_force_delete_frees(root_client, stores):
    created = root_client.post(f"{API}/nodes/{NODE}/qemu", {"vmid": 9330, "virtio0": "sapi-dir:0.001"})
    assert task_status(created.json()["data"]) == "OK"
    first = "sapi-dir:9330/vm-9330-disk-0.raw"
    url = f"{API}/nodes/{NODE}/qemu/9330/config"
    assert root_client.put(url, "virtio0=sapi-dir%3A0.001", content_type=FORM).status_code == 200
    config = VM.objects.get(vmid=9330).config
    assert config["virtio0"].startswith("sapi-dir:9330/vm-9330-disk-1.raw,") and config["unused0"] == first
    assert os.path.exists(volume_path(first))
    second = volume_path("sapi-dir:9330/vm-9330-disk-1.raw")
    assert root_client.put(url, "delete=virtio0&force=1", content_type=FORM).status_code == 200
    config = VM.objects.get(vmid=9330).config
    assert "virtio0" not in config and "unused1" not in config and not os.path.exists(second)
    assert root_client.delete(f"{API}/nodes/{NODE}/qemu/9330").status_code == 200
    assert not (Path(stores["dir"].path) / "images/9330").exists()  # unused0 was the VM's: freed on destroy


@pytest.mark.parametrize(
    "value",
    ["sapi-dir:9340/../../../etc/passwd.raw", "sapi-dir:/etc/passwd", "sapi-dir:../x.raw", "/etc/passwd"],
)
def test_traversal_through_vm_drives(root_client, stores, value):
    created = root_client.post(f"{API}/nodes/{NODE}/qemu", {"vmid": 9340, "scsi0": value})
    assert created.status_code in (400, 403), created.content  # a host path is root's, and checked all the same
    assert not VM.objects.filter(vmid=9340).exists()


def test_efidisk_starts_as_the_ovmf_variable_store(root_client, stores):
    created = root_client.post(
        f"{API}/nodes/{NODE}/qemu", {"vmid": 9350, "bios": "ovmf", "efidisk0": "sapi-dir:1,efitype=4m"}
    )
    assert task_status(created.json()["data"]) == "OK"
    config = VM.objects.get(vmid=9350).config
    assert config["efidisk0"] == "sapi-dir:9350/vm-9350-disk-0.raw,efitype=4m,size=528K"
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes()
    assert Path(volume_path("sapi-dir:9350/vm-9350-disk-0.raw")).read_bytes() == template
    assert task_status(root_client.delete(f"{API}/nodes/{NODE}/qemu/9350").json()["data"]) == "OK"
