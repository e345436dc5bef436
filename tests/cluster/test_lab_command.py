"""``manage.py lab``: up, exec, partition, heal and down from separate invocations, leaving nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cluster.lab import netns

REPO = Path(__file__).resolve().parent.parent.parent


def lab(data: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PVE_DATA_DIR": str(data), "PVE_NODE_NAME": "labhost"}
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "lab", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lab_command_lifecycle(tmp_path):
    up = lab(tmp_path, "up", "--nodes", "3")
    try:
        assert up.returncode == 0, up.stderr
        state = json.loads((tmp_path / "lab" / "state.json").read_text())
        pids = [int(pid) for pid in state["pids"].values()]
        assert len(pids) == 3
        assert "node1: namespace" in up.stdout and "10.213.0.3" in up.stdout
        assert lab(tmp_path, "up").returncode != 0  # one lab at a time
        nodes = lab(tmp_path, "exec", "node2", "--", sys.executable, str(REPO / "manage.py"), "pvecm", "nodes")
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.splitlines()[3:] == [
            "         1          1 node1",
            "         2          1 node2 (local)",
            "         3          1 node3",
        ]
        assert lab(tmp_path, "partition", "node3").returncode == 0
        deadline = time.monotonic() + 30
        status = ""
        while "Quorate:          No" not in status and time.monotonic() < deadline:
            status = lab(
                tmp_path, "exec", "node3", "--", sys.executable, str(REPO / "manage.py"), "pvecm", "status"
            ).stdout
            time.sleep(0.5)
        assert "Quorate:          No" in status
        assert lab(tmp_path, "heal").returncode == 0
        assert lab(tmp_path, "partition", "node9").returncode != 0
    finally:
        down = lab(tmp_path, "down")
    assert down.returncode == 0, down.stderr
    assert not any(name.startswith(f"pvelab{state['tag']}") for name in netns.namespaces())
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    again = lab(tmp_path, "down")
    assert again.returncode != 0 and "no lab is up" in again.stderr
