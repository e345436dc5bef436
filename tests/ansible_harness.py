"""Ansible (``ansible==12.3.0`` and its ``community.proxmox``) in a virtual environment of its own,
and running a playbook of ``tests/api/ansible/`` against a node's web server; shared by
``tests/api/test_ansible.py`` and ``bench/api_clients.py``."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

ANSIBLE = "ansible==12.3.0"
PLAYBOOKS = Path(__file__).parent / "api" / "ansible"
VENV = Path(os.environ.get("PVE_TEST_ANSIBLE_VENV", "/var/cache/pve-tests/ansible-12.3.0"))


def ansible_playbook() -> Path:
    """``ansible-playbook`` of a venv holding exactly ANSIBLE (made on first use, kept for later runs)."""
    marker = VENV / ".complete"
    if not marker.exists():
        subprocess.run(["python3", "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
        pip = [str(VENV / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, ANSIBLE, "proxmoxer==2.3.0", "requests"], check=True, timeout=1200)
        marker.write_text(ANSIBLE + "\n")
    return VENV / "bin" / "ansible-playbook"


def play(
    binary: Path, *, port: int, ca: Path, password: str, variables: dict[str, str], playbook: str, workdir: Path,
    options: tuple[str, ...] = (),
) -> tuple[list[dict[str, Any]], float]:  # fmt: skip
    """Run a playbook as root@pam over HTTPS (TLS verified against ``ca``): every task result of
    the JSON callback (a loop's items each one result) and the seconds the run took. Asserts that
    it succeeded, showing the failed results otherwise."""
    env = {
        **os.environ,
        "PROXMOX_HOST": "127.0.0.1",
        "PROXMOX_PORT": str(port),
        "PROXMOX_USER": "root@pam",
        "PROXMOX_PASSWORD": password,
        "REQUESTS_CA_BUNDLE": str(ca),
        **variables,
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(workdir / "ansible-tmp"),
        "ANSIBLE_HOME": str(workdir / "ansible-home"),
        "ANSIBLE_PYTHON_INTERPRETER": str(binary.parent / "python"),
        "ANSIBLE_NOCOLOR": "1",
    }
    env.pop("PYTHONPATH", None)
    begin = time.perf_counter()
    done = subprocess.run(
        [str(binary), "-i", "localhost,", "-c", "local", *options, str(PLAYBOOKS / playbook)],
        env=env, capture_output=True, text=True, timeout=900, cwd=workdir,
    )  # fmt: skip
    elapsed = time.perf_counter() - begin
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report (exit {done.returncode}):\n{done.stdout}\n{done.stderr}") from None
    results = []
    for play_report in report["plays"]:
        for task in play_report["tasks"]:
            for result in task["hosts"].values():
                for each in result.get("results", [result]):  # a loop's items, each with its own result
                    results.append({"task": task["task"]["name"], "duration": task["task"]["duration"], **each})
    failed = [r for r in results if r.get("failed")]
    assert done.returncode == 0 and not failed, json.dumps(failed or report.get("stats"), indent=1)[:6000]
    return results, elapsed
