"""Offline migration between two lab nodes over real node-to-node SSH (each node runs its own sshd).

Node keys are published and trusted as in a real cluster (root keys in ``priv/authorized_keys``,
host keys in ``priv/known_hosts``). ``qm migrate`` on node1 streams the local disks to node2's
storage (``pvesm import`` there over SSH) and moves the config: afterwards node2 owns the VM in
both nodes' mirrors and its disks hold the same bytes. A migration whose second copy fails frees
the first copy and changes nothing. Run under the lab lock:
``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_migrate_lab.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.lab import services
from cluster.lab.cluster import LabCluster
from cluster.lab.standalone import start_sshd, wait_sshd
from tests.cluster.lifecycle import manage, web_answers
from tests.cluster.replication import wait_for

pytestmark = pytest.mark.slow
VMID = 9801


def _sshd_per_node(cluster: LabCluster) -> None:
    """Each node's own sshd, host key and root key directory (the lab shares one filesystem)."""
    for node in cluster.nodes:
        node.env["PVE_SSH_DIR"] = str(node.directory / "ssh")
        node.env["PVE_SSH_HOST_KEY"] = str(node.directory / "sshd" / "ssh_host_ed25519_key.pub")
    for node in cluster.nodes:
        node.directory.mkdir(parents=True, exist_ok=True)
        wait_sshd(node, start_sshd(cluster, node))


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return ssh_lab(lab_cluster, 2, "migrate")


def whole_nodes(cluster: LabCluster) -> None:
    """Each node's own sshd, and its web server on its lab address (a migration asks the target's API)."""
    _sshd_per_node(cluster)
    for node in cluster.nodes:
        node.env.update(services.web_environment(node.address))


def ssh_lab(lab_cluster, size: int, name: str, *, whole: bool = False, before=None):  # type: ignore[no-untyped-def]
    """A lab of ``size`` nodes, each with its own sshd, once every node trusts every node's host key.

    ``whole``: each node runs everything (web, worker, beat), and its API answers; else only
    the replicator, so a live migration reaches its target over node SSH (the fallback).
    ``before(cluster)``: runs first (node environments are still open to change)."""

    def prepare(cluster: LabCluster) -> None:
        if before is not None:
            before(cluster)
        (whole_nodes if whole else _sshd_per_node)(cluster)

    if whole:
        cluster = lab_cluster(size, name=name, prepare=prepare, kind="node", timeout=180)
    else:
        cluster = lab_cluster(size, name=name, prepare=prepare, timeout=180)
    for node in cluster.nodes:
        known = node.directory / "etc" / "pve" / "priv" / "known_hosts"
        wait_for(lambda known=known: known.exists() and known.read_text().count("\n") == size, 60, what=f"{known}")
        if whole:
            wait_for(lambda node=node: web_answers(cluster, node), 180, interval=1, what=f"{node.name}'s web server")
    return cluster


def qm(lab, index: int, *args: str):  # type: ignore[no-untyped-def]
    return manage(lab, lab.nodes[index], *args, timeout=300)


def conf_files(lab, vmid: int) -> dict[str, list[str]]:
    """Per node's mirror: the nodes whose qemu-server directory holds the VM's config."""
    return {
        node.name: sorted(
            p.parent.parent.name for p in (node.directory / "etc" / "pve" / "nodes").glob(f"*/qemu-server/{vmid}.conf")
        )
        for node in lab.nodes
    }


def disk_path(lab, volid: str) -> Path:
    return Path(qm(lab, 0, "pvesm", "path", volid).stdout.strip())


def test_offline_migration_over_ssh_and_a_failed_one_that_changes_nothing(lab, tmp_path):
    node1, node2 = (node.name for node in lab.nodes)
    broken = tmp_path / "broken"
    broken.write_text("a file where the storage's directory should be")
    storages = {"mig-a": (tmp_path / "a", node1), "mig-a2": (tmp_path / "a2", node1),
                "mig-b": (tmp_path / "b", node2), "mig-c": (broken, node2)}  # fmt: skip
    for storeid, (path, node) in storages.items():
        added = qm(lab, 0, "pvesm", "add", "dir", storeid, "--path", str(path), "--nodes", node)
        assert added.returncode == 0, added.stderr
    created = qm(lab, 0, "qm", "create", str(VMID), "--scsi0", "mig-a:0.01,format=qcow2", "--scsi1", "mig-a2:0.01")
    assert created.returncode == 0, created.stderr
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    volids = {
        key: line.split(": ", 1)[1].split(",")[0]
        for line in config.splitlines()
        for key in ("scsi0", "scsi1")
        if line.startswith(f"{key}: ")
    }
    with open(disk_path(lab, volids["scsi1"]), "r+b") as handle:
        handle.seek(1024 * 1024)
        handle.write(os.urandom(64 * 1024))
    data = {key: disk_path(lab, volid).read_bytes() for key, volid in volids.items()}

    failed = qm(lab, 0, "qm", "migrate", str(VMID), node2, "--targetstorage", "mig-a:mig-b,mig-a2:mig-c")
    assert failed.returncode != 0 and "import of 'mig-c:" in failed.stderr, (failed.stdout, failed.stderr)
    assert f"successfully imported 'mig-b:{VMID}/vm-{VMID}-disk-0.qcow2'" in failed.stdout
    assert f"freed 'mig-b:{VMID}/vm-{VMID}-disk-0.qcow2' on the target again" in failed.stdout
    assert not list((tmp_path / "b").glob(f"images/{VMID}/*")), "the copy on node2 was left behind"
    assert qm(lab, 0, "qm", "config", str(VMID)).stdout == config  # no lock, same volumes
    assert conf_files(lab, VMID) == {node1: [node1], node2: [node1]}

    migrated = qm(lab, 0, "qm", "migrate", str(VMID), node2, "--targetstorage", "mig-a:mig-b,mig-a2:mig-b")
    assert migrated.returncode == 0, (migrated.stdout, migrated.stderr)
    assert "migration finished successfully" in migrated.stdout
    wait_for(
        lambda: conf_files(lab, VMID) == {node1: [node2], node2: [node2]}, 60, what="the config under node2 everywhere"
    )
    moved = qm(lab, 1, "qm", "config", str(VMID)).stdout
    assert "lock:" not in moved
    for key, volid in volids.items():
        copy = volid.replace("mig-a2:", "mig-b:").replace("mig-a:", "mig-b:")
        assert f"{key}: {copy}," in moved, moved
        assert Path(qm(lab, 1, "pvesm", "path", copy).stdout.strip()).read_bytes() == data[key]
        assert not disk_path(lab, volid).exists(), f"{volid} was not freed on node1"
    assert str(VMID) in qm(lab, 1, "qm", "list").stdout and str(VMID) not in qm(lab, 0, "qm", "list").stdout
