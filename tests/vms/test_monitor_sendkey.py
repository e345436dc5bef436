"""``POST {vm}/monitor`` and ``PUT {vm}/sendkey`` against a real firmware-only QEMU: the monitor is
root@pam's alone, send-key needs VM.Console, both need the VM running; refusals first."""

from __future__ import annotations

import pytest

from tests.api_client import API, logged_in, revoke_grants, users_with_grants
from vms.models import VM
from vms.qemu import lifecycle, process

pytestmark = [pytest.mark.usefixtures("replicator")]
NODE, VMID = "testnode", 7795


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    if not VM.objects.filter(vmid=VMID).exists():
        VM(vmid=VMID, node_id=NODE, config={"name": "monkey", "memory": "128"}).save()
    users_with_grants(
        ("mk-nobody@pve", "mk-console@pve"), "monitor-pw", [(f"/vms/{VMID}", "PVEVMUser", ["mk-console@pve"])]
    )
    yield {"root": logged_in(), "nobody": logged_in("mk-nobody@pve", "monitor-pw"),
           "console": logged_in("mk-console@pve", "monitor-pw")}  # fmt: skip
    process.terminate(VMID, timeout=5, log=lambda line: None)
    process.cleanup(VMID, {})
    revoke_grants(("mk-nobody@pve", "mk-console@pve"))
    VM.objects.get(vmid=VMID).delete()


def monitor(client, command: str):  # type: ignore[no-untyped-def]
    return client.post(f"{API}/nodes/{NODE}/qemu/{VMID}/monitor", {"command": command})


def sendkey(client, key: str):  # type: ignore[no-untyped-def]
    return client.put(f"{API}/nodes/{NODE}/qemu/{VMID}/sendkey", f"key={key}",
                      content_type="application/x-www-form-urlencoded")  # fmt: skip


def test_both_need_a_running_vm(clients):
    assert monitor(clients["root"], "info status").status_code == 500
    assert sendkey(clients["root"], "ctrl-alt-delete").status_code == 500


def test_monitor_and_sendkey_on_a_running_vm(clients):
    lifecycle.start_vm(VMID, log=lambda line: None)
    answer = monitor(clients["root"], "info status")
    assert answer.status_code == 200 and "running" in answer.json()["data"], answer.content
    assert monitor(clients["console"], "info status").status_code == 400  # root@pam's alone
    assert monitor(clients["nobody"], "info status").status_code == 403
    assert sendkey(clients["console"], "ctrl-alt-delete").status_code == 200
    assert sendkey(clients["nobody"], "ret").status_code == 403
    bad = sendkey(clients["console"], "ctrl;quit")
    assert bad.status_code == 400 and "key" in bad.json()["errors"]
    refused = sendkey(clients["console"], "no_such_qcode")
    assert refused.status_code == 500 and "send-key" in refused.json()["message"], refused.content
    assert process.is_running(VMID)
