"""A scheduled backup job on a 2-node lab cluster: each node's beat runs it once for its own VMs.

The job (every minute, ``all``) is made on node1 and replicated; each node's beat starts one
``vzdump`` task per slot, backing up only the VM it owns onto its ``local`` storage.
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


def shell(lab, index: int, code: str) -> str:
    done = manage(lab, index, "shell", "-c", code)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def until(what: str, check, seconds: float = 240) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(1)


def test_a_scheduled_job_runs_once_per_slot_on_each_node_for_its_own_vms(lab_cluster):
    lab = lab_cluster(2, name="bjobs", kind="node", timeout=180)  # whole nodes: their beats run
    for index, vmid in ((0, "9810"), (1, "9820")):
        created = manage(lab, index, "qm", "create", vmid, "--name", f"bj-{vmid}", "--scsi0", "local:0.01")
        assert created.returncode == 0, created.stderr
    until(
        "node2 never saw the VMs",
        lambda: (
            "9810" in shell(lab, 1, "from vms.models import VM; print(list(VM.objects.values_list('vmid', flat=True)))")
        ),
    )
    shell(
        lab,
        0,
        "from authz.models import User; from vms.services import backup_jobs; "
        "backup_jobs.create_backup_job('lab-minutely', {'schedule': '*', 'all': 1, 'storage': 'local', "
        "'compress': 'zstd'}, actor=User.objects.get(userid='root@pam'))",
    )
    runs_code = (
        "from portal.models import Task; from portal.tasks.logs import read_lines; "
        "print(repr([(t.starttime, t.exitstatus, chr(10).join(read_lines(t.upid))) "
        "for t in Task.objects.filter(type='vzdump')]))"
    )

    def runs(index: int) -> list[tuple[int, str, str]]:
        return eval(shell(lab, index, runs_code).splitlines()[-1])

    until("node1 never ran the job", lambda: runs(0))
    until("node2 never ran the job", lambda: runs(1))
    shell(lab, 0, "from vms.models import BackupJob; BackupJob.objects.get(jobid='lab-minutely').delete()")
    for index, own, other in ((0, "9810", "9820"), (1, "9820", "9810")):
        done = runs(index)
        assert all(status == "OK" for _start, status, _log in done), done
        assert all(f"Finished Backup of VM {own}" in text and f"VM {other} " not in text for *_x, text in done), done
        minutes = [start // 60 for start, *_rest in done]
        assert len(minutes) == len(set(minutes)), done  # one run per slot (every minute) on each node
