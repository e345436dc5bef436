#!/usr/bin/env python3
"""What real API clients cost: proxmoxer's create/start/stop/delete of VMs against ``qm`` on the node,
per operation, and Ansible's playbooks (``tests/api/ansible``) end to end.

Usage: .venv/bin/python bench/api_clients.py [--vms 50] [--no-ansible] [--no-append]

One node (replicator, a private redis-server, the node's real Celery worker, its HTTPS web
server as a node runs it) in a temporary directory. For each of ``--vms`` firmware-only VMs
(no disk, 128 MiB), alternating per VM which side goes first:
  1. proxmoxer over HTTPS (TLS verified, root@pam ticket): ``POST /nodes/<n>/qemu``, ``.../status/start``,
     ``.../status/stop``, ``DELETE .../<vmid>``, each timed to the end of its task (polled every 10 ms);
  2. the same operations with ``manage.py qm create|start|stop|destroy`` on the node (each a
     process of its own, as an operator's shell runs it).
Then, unless ``--no-ansible``, the two playbooks the Ansible tests run (a VM with a disk and two
NICs, snapshot, resize, clone, template, backup, restart, stop, removal), timed end to end.
Results are appended to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.harness import command_line, heading, percentile, publish  # noqa: E402
from bench.vm_start import NODE, node, stop_qemu  # noqa: E402
from tests.harness import manage  # noqa: E402
from tests.webserver import serving  # noqa: E402

FIRST_VMID = 9200
OPERATIONS = ("create", "start", "stop", "delete")
PASSWORD = "test-root-password"


def proxmoxer_ops(px: Any, vmid: int) -> dict[str, float]:
    from proxmoxer.tools import Tasks

    def timed(call: Any) -> float:
        begin = time.perf_counter()
        upid = call()
        status = Tasks.blocking_status(px, upid, timeout=120, polling_interval=0.01)
        if status is None or status.get("exitstatus") != "OK":
            raise RuntimeError(f"task {upid} ended {status}")
        return time.perf_counter() - begin

    vm = px.nodes(NODE).qemu
    return {
        "create": timed(lambda: vm.post(vmid=vmid, name=f"px{vmid}", memory=128)),
        "start": timed(lambda: vm(vmid).status.start.post()),
        "stop": timed(lambda: vm(vmid).status.stop.post()),
        "delete": timed(lambda: vm(vmid).delete(purge=1)),
    }


def qm_ops(env: dict[str, str], vmid: int) -> dict[str, float]:
    def timed(*argv: str) -> float:
        begin = time.perf_counter()
        manage(env, "qm", *argv, timeout=120)
        return time.perf_counter() - begin

    return {
        "create": timed("create", str(vmid), "--name", f"qm{vmid}", "--memory", "128"),
        "start": timed("start", str(vmid)),
        "stop": timed("stop", str(vmid)),
        "delete": timed("destroy", str(vmid), "--purge"),
    }


def ansible_runs(env: dict[str, str], web: Any, workdir: Path) -> list[tuple[str, float, int]]:
    from authz.models import User
    from tests.ansible_harness import ansible_playbook, play
    from vms import services

    binary = ansible_playbook()
    root = User.objects.get(userid="root@pam")
    storage = workdir / "ansdir"
    storage.mkdir()
    services.create_storage("ansdir", {"path": str(storage), "content": "images,backup"}, actor=root)
    subprocess.run(["ip", "link", "add", "ansbr0", "type", "bridge"], check=False, capture_output=True)
    subprocess.run(["ip", "link", "set", "ansbr0", "up"], check=True)
    variables = {
        "PVE_TEST_NODE": NODE,
        "PVE_TEST_STORAGE": "ansdir",
        "PVE_TEST_BRIDGE": "ansbr0",
        "PVE_TEST_VMID": "9190",
    }
    runs = []
    try:
        for playbook in ("vm.yml", "actions.yml"):
            results, seconds = play(
                binary, port=web.port, ca=web.ca, password=PASSWORD, variables=variables, playbook=playbook,
                workdir=workdir,
            )  # fmt: skip
            runs.append((playbook, seconds, len(results)))
    finally:
        for vmid in (9190, 9191):
            stop_qemu(vmid)
        subprocess.run(["ip", "link", "del", "ansbr0"], check=False)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--no-ansible", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    samples: dict[str, dict[str, list[float]]] = {side: {op: [] for op in OPERATIONS} for side in ("api", "qm")}
    with tempfile.TemporaryDirectory(prefix="pve-clientbench-") as tmp, node(Path(tmp)) as env:
        os.environ.update(env)
        import django

        django.setup()
        from proxmoxer import ProxmoxAPI

        with serving({**env, "PVE_LOG_LEVEL": "ERROR", "PVE_API_TASK_WAIT": "3"}, Path(tmp)) as web:
            px = ProxmoxAPI("127.0.0.1", port=web.port, user="root@pam", password=PASSWORD, verify_ssl=str(web.ca))
            for index in range(args.vms):
                vmid = FIRST_VMID + 2 * index
                sides = [("api", lambda v=vmid: proxmoxer_ops(px, v)), ("qm", lambda v=vmid + 1: qm_ops(env, v))]
                for side, run in sides if index % 2 == 0 else reversed(sides):
                    for op, seconds in run().items():
                        samples[side][op].append(seconds)
            runs = [] if args.no_ansible else ansible_runs(env, web, Path(tmp))
    lines = [
        heading("API clients: proxmoxer against qm per operation, Ansible's playbooks end to end"),
        "",
        f"Command: {command_line(args, 'vms')}{' --no-ansible' if args.no_ansible else ''} ({os.cpu_count()} CPUs)",
        "",
        f"One node, its HTTPS web server and Celery worker; {args.vms} firmware-only VMs (128 MiB, no disk) each side,",
        "alternating which side goes first. proxmoxer: each call timed to its task's end (polled every 10 ms);",
        "qm: `manage.py qm <verb>` as a process of its own (its Python/Django start included).",
        "",
        "| operation | proxmoxer p50 | p90 | qm p50 | p90 | API / qm (p50) |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPERATIONS:
        api, qm = samples["api"][op], samples["qm"][op]
        a50, a90, q50, q90 = (percentile(s, f) * 1e3 for s, f in ((api, 0.5), (api, 0.9), (qm, 0.5), (qm, 0.9)))
        lines.append(f"| {op} | {a50:.0f} ms | {a90:.0f} ms | {q50:.0f} ms | {q90:.0f} ms | {a50 / q50:.2f} |")
    api_total = sum(sum(v) for v in samples["api"].values()) / args.vms
    qm_total = sum(sum(v) for v in samples["qm"].values()) / args.vms
    lines += [
        "",
        f"Per VM, all four operations: proxmoxer {api_total:.2f} s, qm {qm_total:.2f} s (ratio {api_total / qm_total:.2f}).",
    ]
    for playbook, seconds, tasks in runs:
        lines.append(f"Ansible `{playbook}`: {seconds:.1f} s end to end, {tasks} task results.")
    lines.append("")
    publish("\n".join(lines), append=not args.no_append)


if __name__ == "__main__":
    main()
