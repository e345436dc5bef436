"""The decoding rules of Terraform's Proxmox providers (bpg/terraform-provider-proxmox, as
PVE-API-CLIENTS.md §4 reads them) over every endpoint of its VM resource, in its order: the
provider cannot be installed here, so each answer is decoded as the provider decodes it.

- An error body must decode: ``data`` null or a string, ``errors`` strings to strings, and the
  reason phrase is the message's first line; "already exists" / "already running" /
  "does not exist" / "no such resource" are matched in the text.
- Numbers are JSON numbers (ids, sizes, counts, 0/1 flags); ``lock`` is present only while locked;
  ``GET /pools`` is a list, never null; task-starting calls return a UPID string.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from tests.api_client import API, finished_task, logged_in
from vms.models import VM, Pool
from vms.qemu import process

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
NODE, VMID, CLONE = "testnode", 7870, 7871
FORM = "application/x-www-form-urlencoded"
VM_URL = f"{API}/nodes/{NODE}/qemu/{VMID}"


def decoded(response: Any) -> Any:
    """The provider's ``doRequest``: 2xx gives ``data``; anything else must decode as an error body."""
    body = response.json()
    if 200 <= response.status_code < 300:
        return body["data"]
    assert body["data"] is None or isinstance(body["data"], str), body
    errors = body.get("errors")
    assert errors is None or (
        isinstance(errors, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in errors.items())
    ), body
    message = str(body.get("message", ""))
    reason = response.reason_phrase
    assert reason and "\n" not in reason and message.startswith(reason.rstrip(".")[:40]), (reason, message)
    raise ProviderError(response.status_code, message, errors or {})


class ProviderError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str]) -> None:
        super().__init__(f"{status} {message} {errors}")
        self.status, self.message, self.errors = status, message, errors

    @property
    def text(self) -> str:
        return " ".join([self.message, *[f"{k}: {v}" for k, v in self.errors.items()]])


def call(client: Client, method: str, path: str, **params: Any) -> Any:
    """GET and DELETE parameters in the query string, a urlencoded body otherwise (the provider's way)."""
    url = path if path.startswith("/") else f"{API}/{path}"
    if method in ("GET", "DELETE"):
        response = getattr(client, method.lower())(f"{url}?{urlencode(params)}" if params else url)
    else:
        response = getattr(client, method.lower())(url, urlencode(params), content_type=FORM)
    return decoded(response)


def upid_of(value: Any) -> str:
    assert isinstance(value, str) and value.startswith("UPID:"), value
    return value


def wait_ok(upid: str) -> None:
    task = finished_task(upid, timeout=120)
    assert task.exitstatus == "OK", task.exitstatus


@pytest.fixture(scope="module")
def root() -> Any:
    client = logged_in()
    yield client
    for vmid in (VMID, CLONE):
        process.terminate(vmid, timeout=5, log=lambda line: None)
        process.cleanup(vmid, {})
        VM.objects.filter(vmid=vmid).delete()
    Pool.objects.filter(poolid="tf-pool").delete()


def test_the_vm_resource_lifecycle_decodes(root):
    # 2: the id generator asks for a candidate; a taken one is a 400 "already exists" on vmid
    free = call(root, "GET", "cluster/nextid")
    assert isinstance(free, str) and free.isdigit()
    taken = VM.objects.first()
    if taken is not None:
        with pytest.raises(ProviderError) as exists:
            call(root, "GET", "cluster/nextid", vmid=taken.vmid)
        assert exists.value.status == 400 and "already exists" in exists.value.errors["vmid"]
    # 3: create with the provider's defaults, unknown-to-us keys must not be needed
    create = {
        "vmid": VMID, "name": "tf-vm", "acpi": 1, "agent": "enabled=0,fstrim_cloned_disks=0,type=virtio",
        "bios": "seabios", "boot": "order=net0", "cores": 1, "cpu": "qemu64", "memory": 128, "ostype": "other",
        "scsihw": "virtio-scsi-pci", "onboot": 0, "tablet": 1, "template": 0, "sockets": 1, "numa": 0,
        "description": "managed by terraform", "tags": "tf;test", "kvm": 1, "vga": "std",
        "net0": "virtio=BC:24:11:00:70:70,firewall=0,link_down=1",
    }  # fmt: skip
    wait_ok(upid_of(call(root, "POST", f"nodes/{NODE}/qemu", **create)))
    # 7: the read starts at cluster/resources
    listed = {entry["vmid"]: entry for entry in call(root, "GET", "cluster/resources", type="vm")}
    entry = listed[VMID]
    assert entry["node"] == NODE and entry["template"] == 0 and entry["id"] == f"qemu/{VMID}"
    for key in ("vmid", "maxcpu", "maxmem", "maxdisk", "mem", "disk", "uptime", "netin", "netout"):
        assert isinstance(entry[key], int) and not isinstance(entry[key], bool), key
    assert "lock" not in entry
    # 8: config, typed
    config = call(root, "GET", f"{VM_URL}/config")
    for key in ("cores", "sockets", "acpi", "onboot", "tablet", "numa", "kvm"):
        assert isinstance(config[key], int) and not isinstance(config[key], bool), key
    assert isinstance(config["digest"], str) and len(config["digest"]) == 40 and "lock" not in config
    # 9: pools are a list, also with none; one pool by id carries its members
    assert isinstance(call(root, "GET", "pools"), list)
    call(root, "POST", "pools", poolid="tf-pool")
    call(root, "PUT", "pools/tf-pool", vms=str(VMID))
    (pool,) = call(root, "GET", "pools", poolid="tf-pool")
    assert pool["poolid"] == "tf-pool"
    member = pool["members"][0]
    assert member["vmid"] == VMID and member["type"] == "qemu" and member["id"] == f"qemu/{VMID}"
    # 10: PUT config answers null, POST config a UPID
    assert call(root, "PUT", f"{VM_URL}/config", cores=2, delete="tags") is None
    wait_ok(upid_of(call(root, "POST", f"{VM_URL}/config", description="async")))
    # 5 and 6: start, "already running", status/current polled, lock absent when unlocked
    wait_ok(upid_of(call(root, "POST", f"{VM_URL}/status/start", timeout=60)))
    again = finished_task(upid_of(call(root, "POST", f"{VM_URL}/status/start", timeout=60)), timeout=120)
    assert "already running" in again.exitstatus  # the provider takes this text as success
    current = call(root, "GET", f"{VM_URL}/status/current")
    assert current["status"] == "running" and current["qmpstatus"] == "running"
    for key in ("vmid", "cpus", "maxmem", "maxdisk", "uptime", "pid", "mem", "disk"):
        assert isinstance(current[key], int) and not isinstance(current[key], bool), key
    assert current["ha"] == {"managed": 0} and "lock" not in current
    # 15: not HA-managed
    with pytest.raises(ProviderError) as ha:
        call(root, "GET", f"cluster/ha/resources/vm:{VMID}")
    assert ha.value.status == 404 or "no such resource" in ha.value.text or "does not exist" in ha.value.text
    # a migration to the node itself is refused on target
    with pytest.raises(ProviderError) as local:
        call(root, "POST", f"{VM_URL}/migrate", target=NODE, online=1)
    assert local.value.status == 400 and local.value.errors["target"] == "target is local node."
    # 12: shutdown with forceStop (the firmware-only guest ignores ACPI), then stopped
    wait_ok(upid_of(call(root, "POST", f"{VM_URL}/status/shutdown", forceStop=1, timeout=3)))
    assert call(root, "GET", f"{VM_URL}/status/current")["status"] == "stopped"
    # 16 and 17: clone (a UPID of the source), template (UPID or null)
    clone = upid_of(call(root, "POST", f"{VM_URL}/clone", newid=CLONE, name="tf-clone", full=1))
    assert clone.split(":")[6] == str(VMID) and clone.split(":")[5] == "qmclone"
    wait_ok(clone)
    assert "lock" not in call(root, "GET", f"nodes/{NODE}/qemu/{CLONE}/status/current")
    template = call(root, "POST", f"nodes/{NODE}/qemu/{CLONE}/template")
    if template is not None:
        wait_ok(upid_of(template))
    assert call(root, "GET", f"nodes/{NODE}/qemu/{CLONE}/config")["template"] == 1
    # 14: delete answers a UPID, then status/current fails with "does not exist"
    for vmid in (CLONE, VMID):
        wait_ok(
            upid_of(call(root, "DELETE", f"nodes/{NODE}/qemu/{vmid}", purge=1, **{"destroy-unreferenced-disks": 1}))
        )
        with pytest.raises(ProviderError) as gone:
            call(root, "GET", f"nodes/{NODE}/qemu/{vmid}/status/current")
        assert gone.value.status == 500 and "does not exist" in gone.value.text
    assert call(root, "GET", "pools", poolid="tf-pool")[0]["members"] == []


def test_error_bodies_decode_on_every_error_kind(root):
    anonymous = Client()
    for method, path, params, client in (
        ("GET", "nodes", {}, anonymous),  # 401
        ("GET", f"nodes/{NODE}/qemu/999999/config", {}, root),  # 500 does not exist
        ("POST", f"nodes/{NODE}/qemu", {"vmid": 120, "memory": "lots"}, root),  # 400 with errors
        ("GET", "no/such/path", {}, root),  # 501
        ("PUT", f"{VM_URL}/resize", {"disk": "scsi0", "size": "+1G"}, root),  # missing VM
    ):
        with pytest.raises(ProviderError) as error:
            call(client, method, path, **params)
        assert error.value.status >= 400
