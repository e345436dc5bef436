"""Clones onto another node of a 2-node lab cluster: through a ``shared 1`` directory storage.

A template on node1 whose disk is on the shared storage is cloned with ``--target node2``,
linked and full: the new VMs belong to node2 (its ``qm list`` shows them),
their disks are on the shared storage where node2 finds them. A VM on local storage is refused.
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.harness import REPO


def manage(lab, index: int, *args: str) -> subprocess.CompletedProcess:
    node = lab.nodes[index]
    argv = ["ip", "netns", "exec", node.namespace, sys.executable, str(REPO / "manage.py"), *args]
    return subprocess.run(argv, env=node.env, cwd=REPO, capture_output=True, text=True, timeout=300)


def until(what: str, check) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_clone_onto_another_node_through_shared_storage(lab_cluster, tmp_path):
    lab = lab_cluster(2, name="clone")
    node2 = lab.nodes[1].name
    shared, local = tmp_path / "shared", tmp_path / "local"
    added = manage(lab, 0, "pvesm", "add", "dir", "cl-shared", "--path", str(shared), "--shared", "1")
    assert added.returncode == 0, added.stderr
    added = manage(lab, 0, "pvesm", "add", "dir", "cl-local", "--path", str(local), "--nodes", lab.nodes[0].name)
    assert added.returncode == 0, added.stderr
    created = manage(lab, 0, "qm", "create", "9700", "--name", "tpl", "--scsi0", "cl-shared:0.01,format=qcow2")
    assert created.returncode == 0, created.stderr
    assert manage(lab, 0, "qm", "template", "9700").returncode == 0
    until("node2 never saw the template", lambda: "template: 1" in manage(lab, 1, "qm", "config", "9700").stdout)

    linked = manage(lab, 0, "qm", "clone", "9700", "9701", "--target", node2, "--name", "linked-on-2")
    assert linked.returncode == 0, linked.stderr
    full = manage(lab, 0, "qm", "clone", "9700", "9702", "--target", node2, "--full", "1", "--storage", "cl-shared")
    assert full.returncode == 0, full.stderr
    until("node2 never listed its clones", lambda: "linked-on-2" in manage(lab, 1, "qm", "list").stdout)
    listed = manage(lab, 1, "qm", "list").stdout
    assert "9701" in listed and "9702" in listed and "9700" not in listed
    config = manage(lab, 1, "qm", "config", "9701").stdout
    assert "scsi0: cl-shared:9700/base-9700-disk-0.qcow2/9701/vm-9701-disk-0.qcow2," in config
    assert (shared / "images/9701/vm-9701-disk-0.qcow2").is_file()
    assert (shared / "images/9702/vm-9702-disk-0.qcow2").is_file()
    path = manage(lab, 1, "pvesm", "path", "cl-shared:9702/vm-9702-disk-0.qcow2").stdout.strip()
    assert path == str(shared / "images/9702/vm-9702-disk-0.qcow2")

    made = manage(lab, 0, "qm", "create", "9703", "--scsi0", "cl-local:0.01")
    assert made.returncode == 0, made.stderr
    refused = manage(lab, 0, "qm", "clone", "9703", "9704", "--target", node2)
    assert refused.returncode != 0 and "can't clone VM to node" in refused.stderr
    assert "(VM uses local storage)" in refused.stderr
