"""Ansible's Proxmox modules (``community.proxmox`` as shipped in ``ansible==12.3.0``) against the
session node's real HTTPS server and worker, TLS verified: playbooks in ``tests/api/ansible/``.

Ansible lives in its own virtual environment, made once outside the project's
(``tests.ansible_harness``: ``PVE_TEST_ANSIBLE_VENV``, default under /var/cache). Every task's
result is read from the JSON callback: the VM playbook must succeed, then report nothing
changed when run again; the actions playbook's removals change nothing the second time.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from authz.models import User
from tests.ansible_harness import ansible_playbook, play
from tests.webserver import WebServer, serving
from vms import services
from vms.models import VM, Pool, Storage
from vms.qemu import process

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
NODE, VMID, BRIDGE, STORAGE = "testnode", 7850, "ansbr0", "ansdir"
PASSWORD = "test-root-password"


@pytest.fixture(scope="session")
def binary() -> Path:
    return ansible_playbook()


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    # answered after 3 s as a production node is, so a long clone outlives no client timeout
    with serving({**node_env, "PVE_API_TASK_WAIT": "3"}, tmp_path_factory.mktemp("web")) as server:
        yield server


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A directory storage for the disks and a bridge for the NICs, removed afterwards with the VMs and pool."""
    root = User.objects.get(userid="root@pam")
    if not Storage.objects.filter(storeid=STORAGE).exists():
        path = tmp_path_factory.mktemp(STORAGE)
        services.create_storage(STORAGE, {"path": str(path), "content": "images,backup"}, actor=root)
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False, capture_output=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    yield
    for vm in VM.objects.filter(vmid__gte=VMID, vmid__lt=VMID + 10):
        process.terminate(vm.vmid, timeout=5, log=lambda line: None)
        process.cleanup(vm.vmid, vm.config)
        vm.delete()
    Pool.objects.filter(poolid="ans-pool").delete()
    services.delete_storage(Storage.objects.get(storeid=STORAGE), actor=root)
    subprocess.run(["ip", "link", "del", BRIDGE], check=False)


def run(binary: Path, web: WebServer, playbook: str, tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    variables = {
        "PVE_TEST_NODE": NODE,
        "PVE_TEST_STORAGE": STORAGE,
        "PVE_TEST_BRIDGE": BRIDGE,
        "PVE_TEST_VMID": str(VMID),
    }
    results, _seconds = play(
        binary, port=web.port, ca=web.ca, password=PASSWORD, variables=variables, playbook=playbook, workdir=tmp_path,
        options=options,
    )  # fmt: skip
    return results


def test_the_vm_playbook_works_and_is_idempotent(binary, web, setting, tmp_path):
    first = run(binary, web, "vm.yml", tmp_path)
    changed = {r["task"] for r in first if r.get("changed")}
    assert {"Pool", "Create a VM with a disk and a NIC", "Start it", "A snapshot", "Grow its disk"} <= changed
    vm = VM.objects.get(vmid=VMID)
    assert vm.pool_id == "ans-pool" and vm.config["cores"] == "2" and "ans-snap" in vm.snapshots
    assert process.is_running(VMID)
    config = vm.config
    again = run(binary, web, "vm.yml", tmp_path)
    # proxmox_kvm reports every ``update: true`` as changed (it does not compare); nothing else changes
    assert [r["task"] for r in again if r.get("changed")] == ["Update its config"]
    assert VM.objects.get(vmid=VMID).config == config


def test_the_actions_playbook_and_idempotent_removal(binary, web, setting, tmp_path):
    results = run(binary, web, "actions.yml", tmp_path)
    assert all(r.get("changed") for r in results), [r["task"] for r in results if not r.get("changed")]
    assert not VM.objects.filter(vmid__in=[VMID, VMID + 1]).exists()
    assert not Pool.objects.filter(poolid="ans-pool").exists()
    assert any(
        p.name.startswith(f"vzdump-qemu-{VMID}-")
        for p in Path(Storage.objects.get(storeid=STORAGE).path, "dump").iterdir()
    )
    again = run(binary, web, "actions.yml", tmp_path, "--tags", "removal")
    assert [r["task"] for r in again if r.get("changed")] == []
