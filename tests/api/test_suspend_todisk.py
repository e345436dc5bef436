"""``POST {vm}/status/suspend`` with ``todisk`` through the API, a real worker, a real QEMU and a
real storage; then ``status/resume`` (or ``start``) bringing it back from the saved state.

qemu-server's checks: VM.PowerMgmt on the VM (before anything else), the VM running, then for
``todisk`` VM.Config.Disk on the VM and Datastore.AllocateSpace on the state storage
(``statestorage`` or the one qemu-server would choose). A refusal changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Role, User
from replicator import client as replicator_client
from tests.api_client import finished_task, login_enforcing_csrf
from vms import services
from vms.models import VM, Storage
from vms.qemu import lifecycle, process
from vms.storage import volume_path

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "todisk-password"
VMID = 7860
GRANTS = {
    "sd-power@pve": [(f"/vms/{VMID}", "PVEVMUser")],  # VM.PowerMgmt, no VM.Config.Disk
    "sd-disk@pve": [(f"/vms/{VMID}", "sd-disk-role")],
    "sd-full@pve": [(f"/vms/{VMID}", "sd-disk-role"), ("/storage/sd-state", "sd-space-role")],
}


def quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def clients(tmp_path_factory) -> Iterator[dict[str, tuple[Client, str]]]:
    root = User.objects.get(userid="root@pam")
    for storeid in ("sd-state", "sd-other"):
        path = str(tmp_path_factory.mktemp(storeid))
        services.create_storage(storeid, {"path": path, "content": "images"}, actor=root)
    for role, privileges in (
        ("sd-disk-role", ["VM.PowerMgmt", "VM.Config.Disk", "VM.Audit"]),
        ("sd-space-role", ["Datastore.AllocateSpace"]),
    ):
        if not Role.objects.filter(roleid=role).exists():
            authz_services.save_role(role, privileges, actor=root, create=True)
    for userid, grants in GRANTS.items():
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root, password=PASSWORD)
        for entry in ACLEntry.objects.filter(ugid=userid):
            entry.delete()
        for acl_path, role in grants:
            authz_services.modify_acl(root, acl_path, [role], users=[userid])
    VM.objects.filter(vmid=VMID).delete()
    VM(vmid=VMID, node_id=NODE, config={"name": "hibernator", "memory": "64", "vmstatestorage": "sd-other"}).save()
    logged_in = {userid: login_enforcing_csrf(userid, PASSWORD) for userid in GRANTS}
    logged_in["root@pam"] = login_enforcing_csrf("root@pam", "test-root-password")
    try:
        yield logged_in
    finally:
        lifecycle.stop_vm(VMID, log=quiet, skiplock=True)
        services.destroy_vm(VM.objects.get(vmid=VMID), actor=root, skiplock=True)
        for storeid in ("sd-state", "sd-other"):
            services.delete_storage(Storage.objects.get(storeid=storeid), actor=root)


def post(clients, userid: str, command: str, **params: object) -> tuple[int, dict]:
    client, csrf = clients[userid]
    response = client.post(f"{API}/nodes/{NODE}/qemu/{VMID}/status/{command}", params, HTTP_CSRFPREVENTIONTOKEN=csrf)
    return response.status_code, response.json()


def test_a_stopped_vm_is_not_suspended(clients):
    assert not process.is_running(VMID)
    status, body = post(clients, "sd-full@pve", "suspend", todisk=1, statestorage="sd-state")
    assert (status, body["message"].strip()) == (500, f"VM {VMID} not running")


def test_refusals_change_nothing(clients):
    lifecycle.start_vm(VMID, log=quiet)
    before = replicator_client.status()["version"]
    cases = [
        ("sd-power@pve", {}, 403, f"Permission check failed (/vms/{VMID}, VM.Config.Disk)"),
        ("sd-disk@pve", {"statestorage": "sd-state"}, 403, "Permission check failed (/storage/sd-state, Datastore.AllocateSpace)"),
        ("sd-full@pve", {"statestorage": "sd-other"}, 403, "Permission check failed (/storage/sd-other, Datastore.AllocateSpace)"),
        # without statestorage: the config's vmstatestorage (sd-other), where sd-full may not allocate
        ("sd-full@pve", {}, 403, "Permission check failed (/storage/sd-other, Datastore.AllocateSpace)"),
        ("sd-full@pve", {"statestorage": "../etc"}, 400, "Parameter verification failed."),
    ]  # fmt: skip
    for userid, params, code, message in cases:
        status, body = post(clients, userid, "suspend", todisk=1, **params)
        assert (status, body["message"].strip()) == (code, message), (userid, params, body)
    status, body = post(clients, "sd-full@pve", "suspend", statestorage="sd-state")
    assert status == 400 and "todisk" in body["errors"]["statestorage"]
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert process.is_running(VMID) and not VM.objects.get(vmid=VMID).lock


def test_suspend_to_disk_then_resume(clients):
    if not process.is_running(VMID):
        lifecycle.start_vm(VMID, log=quiet)
    status, body = post(clients, "sd-full@pve", "suspend", todisk=1, statestorage="sd-state")
    assert status == 200 and f":qmsuspend:{VMID}:sd-full@pve:" in body["data"], body
    task = finished_task(body["data"], timeout=120)
    assert task.exitstatus == "OK"
    assert not process.is_running(VMID)
    vm = VM.objects.get(vmid=VMID)
    assert (vm.lock, vm.lock_owner) == ("suspended", "")
    state = vm.config["vmstate"]
    assert state.startswith(f"sd-state:{VMID}/vm-{VMID}-state-suspend-") and state.endswith(".raw")
    assert vm.config["runningmachine"].startswith("pc-i440fx-")
    assert os.stat(volume_path(state)).st_blocks > 0  # the RAM was written

    client, _ = clients["sd-power@pve"]
    current = client.get(f"{API}/nodes/{NODE}/qemu/{VMID}/status/current").json()["data"]
    assert current["status"] == "stopped" and current["lock"] == "suspended"
    status, body = post(clients, "sd-power@pve", "stop")  # the saved state is not thrown away by a stop
    assert (status, body["message"].strip()) == (500, f"VM {VMID} is locked (suspended)")
    config = clients["root@pam"][0].put(
        f"{API}/nodes/{NODE}/qemu/{VMID}/config", "memory=128", content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=clients["root@pam"][1],
    )  # fmt: skip
    assert config.status_code == 500 and "locked (suspended)" in config.json()["message"]

    status, body = post(clients, "sd-power@pve", "resume")  # VM.PowerMgmt is enough to resume
    assert status == 200 and f":qmresume:{VMID}:" in body["data"], body
    assert finished_task(body["data"], timeout=120).exitstatus == "OK"
    assert process.is_running(VMID)
    vm = VM.objects.get(vmid=VMID)
    assert not vm.lock and not {"vmstate", "runningmachine", "runningcpu"} & set(vm.config)
    assert not os.path.exists(volume_path(state))


def test_start_also_resumes_a_vm_suspended_to_disk(clients):
    if not process.is_running(VMID):
        lifecycle.start_vm(VMID, log=quiet)
    status, body = post(clients, "root@pam", "suspend", todisk=1)  # root: the config's vmstatestorage
    assert status == 200 and finished_task(body["data"], timeout=120).exitstatus == "OK", body
    state = VM.objects.get(vmid=VMID).config["vmstate"]
    assert state.startswith("sd-other:")
    status, body = post(clients, "sd-power@pve", "start")
    task = finished_task(body["data"], timeout=120)
    assert task.exitstatus == "OK"
    assert process.is_running(VMID) and not VM.objects.get(vmid=VMID).lock
    assert not os.path.exists(volume_path(state))
