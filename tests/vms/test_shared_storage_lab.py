"""A ``shared 1`` directory storage on a 2-node lab cluster: a volume made on one node is seen, and freed, on the other."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.harness import REPO


def pvesm(lab, index: int, *args: str) -> subprocess.CompletedProcess:
    node = lab.nodes[index]
    argv = ["ip", "netns", "exec", node.namespace, sys.executable, str(REPO / "manage.py"), "pvesm", *args]
    return subprocess.run(argv, env=node.env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_shared_storage_volume_seen_from_both_nodes(lab_cluster, tmp_path):
    lab = lab_cluster(2, name="shared")
    shared = tmp_path / "shared"
    added = pvesm(lab, 0, "add", "dir", "lab-shared", "--path", str(shared), "--shared", "1", "--content", "images")
    assert added.returncode == 0, added.stderr
    deadline = time.monotonic() + 30
    while "lab-shared" not in pvesm(lab, 1, "status").stdout:  # replicated to node2
        assert time.monotonic() < deadline, "node2 never saw the storage"
        time.sleep(0.2)
    made = pvesm(lab, 0, "alloc", "lab-shared", "9600", "vm-9600-disk-next", "1M")
    assert "'lab-shared:9600/vm-9600-disk-0.raw'" in made.stdout, made.stderr
    seen = pvesm(lab, 1, "list", "lab-shared")
    assert "lab-shared:9600/vm-9600-disk-0.raw" in seen.stdout, seen.stderr
    assert pvesm(lab, 1, "path", "lab-shared:9600/vm-9600-disk-0.raw").stdout.strip() == str(
        shared / "images/9600/vm-9600-disk-0.raw"
    )
    assert pvesm(lab, 1, "free", "lab-shared:9600/vm-9600-disk-0.raw").returncode == 0
    assert "vm-9600-disk-0" not in pvesm(lab, 0, "list", "lab-shared").stdout
