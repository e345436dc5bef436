"""proxmoxer against a 2-node lab cluster: its HTTPS backend through either node, its SSH backend through ``pvesh``.

Each node runs everything (web, worker, beat, sshd) in its own network namespace; the test
reaches their portals over the lab network, TLS verified against the cluster CA. A VM is created
on node2 through node1's API, started, watched and stopped through either node, migrated to
node1 and deleted, each task followed with proxmoxer's own ``Tasks.blocking_status`` (its
status read through the node that did not run it). The SSH backend logs in to node2 as root with
node1's cluster key and runs ``pvesh`` there, as proxmoxer does on a Proxmox node. Run under the
lab lock: ``flock /tmp/pve-lab.lock .venv/bin/pytest tests/api/test_proxmoxer_lab.py``.
"""

from __future__ import annotations

import sys

import pytest
from proxmoxer import ProxmoxAPI, ResourceException
from proxmoxer.tools import Tasks

from cluster.lab import services
from cluster.lab.cluster import LabCluster, LabNode
from tests.cluster.lifecycle import PATH
from tests.harness import REPO
from tests.vms.test_migrate_lab import ssh_lab

pytestmark = pytest.mark.slow
VMID = 9831
GROUP = "px-lab-group"


def pvesh_on_path(cluster: LabCluster) -> None:
    """A ``pvesh`` on every node's PATH (its sshd passes the node's environment to a session), as on Proxmox."""
    for node in cluster.nodes:
        bin_dir = node.directory / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        wrapper = bin_dir / "pvesh"
        wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "manage.py"} pvesh "$@"\n')
        wrapper.chmod(0o755)
        node.env["PATH"] = f"{bin_dir}:{PATH}"


@pytest.fixture(scope="module")
def lab(lab_cluster) -> LabCluster:
    cluster = ssh_lab(lab_cluster, 2, "pxlab", whole=True, before=pvesh_on_path)
    cluster.connect_host()
    return cluster


def https(lab: LabCluster, node: LabNode) -> ProxmoxAPI:
    ca = services.ca_path(lab.nodes[0].directory)
    return ProxmoxAPI(
        node.address,
        port=services.HTTPS_PORT,
        user="root@pam",
        password=lab.root_password,
        verify_ssl=str(ca),
        timeout=60,
    )


def finished(px: ProxmoxAPI, upid: str) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=180, polling_interval=0.2)
    assert status is not None and status["status"] == "stopped", status
    assert status["exitstatus"] == "OK", (status, px.nodes(status["node"]).tasks(upid).log.get(limit=100))
    return status


def test_a_vm_driven_through_either_node(lab):
    node1, node2 = lab.nodes
    px1, px2 = https(lab, node1), https(lab, node2)
    assert {entry["node"] for entry in px1.nodes.get()} == {node1.name, node2.name}

    upid = px1.nodes(node2.name).qemu.post(vmid=VMID, name="px-lab", memory=128, cores=1, ostype="l26")
    assert upid.startswith(f"UPID:{node2.name}:")
    finished(px1, upid)
    listed = [entry for entry in px2.cluster.resources.get(type="vm") if entry["vmid"] == VMID]
    assert len(listed) == 1 and listed[0]["node"] == node2.name and listed[0]["status"] == "stopped"
    config = px2.nodes(node2.name).qemu(VMID).config.get()
    assert config["cores"] == 1 and config["memory"] == "128"  # memory is a property string since PVE 8

    finished(px2, px1.nodes(node2.name).qemu(VMID).status.start.post())
    assert px2.nodes(node2.name).qemu(VMID).status.current.get()["status"] == "running"
    again = Tasks.blocking_status(px1, px1.nodes(node2.name).qemu(VMID).status.start.post(), timeout=180)
    assert "already running" in again["exitstatus"], again  # what bpg's provider takes as success
    finished(px1, px2.nodes(node2.name).qemu(VMID).status.stop.post())
    assert px1.nodes(node2.name).qemu(VMID).status.current.get()["status"] == "stopped"

    finished(px2, px1.nodes(node2.name).qemu(VMID).migrate.post(target=node1.name))
    assert px2.nodes(node1.name).qemu(VMID).config.get()["name"] == "px-lab"
    with pytest.raises(ResourceException) as gone:
        px1.nodes(node2.name).qemu(VMID).config.get()
    assert gone.value.status_code == 500 and "does not exist" in str(gone.value)
    with pytest.raises(ResourceException) as bad:
        px1.nodes(node1.name).qemu(VMID).config.put(memory="lots")
    assert bad.value.status_code == 400 and "memory" in (bad.value.errors or {})

    finished(px1, px2.nodes(node1.name).qemu(VMID).delete())
    assert not [entry for entry in px1.cluster.resources.get(type="vm") if entry["vmid"] == VMID]


def test_the_ssh_backend_runs_pvesh_on_the_node(lab):
    node1, node2 = lab.nodes
    px = ProxmoxAPI(
        node2.address,
        backend="ssh_paramiko",
        user="root",
        private_key_file=str(node1.directory / "ssh" / "id_ed25519"),
        service="PVE",
        timeout=120,
    )
    assert "version" in px.version.get()
    assert {entry["name"] for entry in px.cluster.status.get() if entry["type"] == "node"} == {node1.name, node2.name}
    px.access.groups.post(groupid=GROUP, comment="over ssh")
    try:
        assert https(lab, node1).access.groups(GROUP).get()["comment"] == "over ssh"  # replicated to node1
        with pytest.raises(ResourceException) as missing:
            px.access.groups("px-lab-missing").get()
        assert missing.value.status_code >= 400
    finally:
        px.access.groups(GROUP).delete()
    assert GROUP not in [group["groupid"] for group in px.access.groups.get()]
