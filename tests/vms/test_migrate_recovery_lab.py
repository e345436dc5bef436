"""Live migrations that cannot finish: without quorum, and interrupted by a dead task or a crashed source node.

Three lab nodes, the test guest running on node1 (TCG). Without quorum on node1 ``qm migrate``
is refused with Proxmox's message and nothing changes. A ``qmigrate`` task killed during the
memory transfer (SIGKILL, nothing of it cleans up) leaves the ``migrate`` lock, a sending source
and a paused target behind; the task reconciler of node1 (what its worker runs at start and each
minute) releases the lock and the VM watcher's migration reconciler of node1 cancels the
outgoing migration (the target's QEMU ends with it, or node2's reconciler stops it as a
leftover): one owner, one QEMU. A source node that crashes during
the transfer (corosync, replicator, the task and the QEMU killed) and restarts ends with the VM
on node1, no QEMU anywhere (the guest died with its node) and no lock; node2 touches nothing while
the dead task's lock is held. Run under the lab lock:
``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_migrate_recovery_lab.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster.lifecycle import PATH, REPO, manage
from tests.cluster.replication import wait_converged, wait_for
from tests.vms.test_migrate_lab import conf_files, ssh_lab
from tests.vms.test_migrate_online_lab import qemu_pids, wait_line

pytestmark = pytest.mark.slow
VMID = 9831
TASKS = "from portal.tasks.reconcile import reconcile; print(reconcile())"
WATCHER = "from vms.qemu.watcher import Watcher; print(Watcher().poll())"  # a fresh watcher's first round
RECONCILE = "from vms.qemu import migration_reconcile as m; print({k: v.value for k, v in m.reconcile().items()})"


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return ssh_lab(lab_cluster, 3, "migrecover")


def qm(lab, index: int, *args: str, timeout: float = 300):  # type: ignore[no-untyped-def]
    return manage(lab, lab.nodes[index], *args, timeout=timeout)


def shell(lab, index: int, code: str) -> str:  # type: ignore[no-untyped-def]
    done = qm(lab, index, "shell", "-c", code)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return done.stdout.strip().splitlines()[-1]


def on_node(lab, index: int) -> list[int]:
    return [pid for pid, f in qemu_pids(VMID).items() if f.startswith(str(lab.nodes[index].directory) + "/")]


def kill_tunnels() -> None:
    """The SSH forwards a killed task left (children of the task, not of the test)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0] == b"ssh" and any(f"/{VMID}.migrate-tunnel".encode() in a for a in argv):
                os.kill(int(entry), signal.SIGKILL)


@pytest.fixture(scope="module")
def guest(lab, guest_image):
    boot = f"-kernel {guest_image.kernel} -initrd {guest_image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
    created = qm(lab, 0, "qm", "create", str(VMID), "--memory", "256", "--kvm", "0", "--args", boot)
    assert created.returncode == 0, created.stderr
    try:
        yield VMID
    finally:
        kill_tunnels()
        for index in range(3):
            for pid in on_node(lab, index):
                os.kill(pid, signal.SIGKILL)
        for index in range(3):
            qm(lab, index, "qm", "unlock", str(VMID))
            qm(lab, index, "qm", "destroy", str(VMID))


def running_on_node1(lab) -> None:  # type: ignore[no-untyped-def]
    if not on_node(lab, 0):
        started = qm(lab, 0, "qm", "start", str(VMID))
        assert started.returncode == 0, started.stderr


def start_migration(lab) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    node1, node2 = lab.nodes[0], lab.nodes[1]
    return lab.run(
        node1,
        [sys.executable, str(REPO / "manage.py"), "qm", "migrate", str(VMID), node2.name, "--online", "1",
         "--bwlimit", "1024"],
        env={**node1.env, "PATH": PATH}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_migration_is_refused_without_quorum(lab, guest):
    running_on_node1(lab)
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    lab.partition(lab.nodes[0])
    try:
        wait_for(lambda: "'quorate': False" in shell(lab, 0, "from replicator import client; print(client.status())"),
                 60, what="node1 without quorum")  # fmt: skip
        for online in ("1", "0"):
            refused = qm(lab, 0, "qm", "migrate", str(VMID), lab.nodes[1].name, "--online", online)
            assert refused.returncode != 0
            assert "cluster not ready - no quorum?" in refused.stdout + refused.stderr, (refused.stdout, refused.stderr)
    finally:
        lab.heal()
    wait_converged(lab)
    assert qm(lab, 0, "qm", "config", str(VMID)).stdout == config
    names = [node.name for node in lab.nodes]
    assert conf_files(lab, VMID) == {name: [names[0]] for name in names}
    assert len(on_node(lab, 0)) == 1 and on_node(lab, 1) == [] and on_node(lab, 2) == []


def test_a_killed_migration_task_is_resolved_by_the_reconcilers(lab, guest):
    running_on_node1(lab)
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    migrating = start_migration(lab)
    wait_line(migrating, "migration active, transferred")
    assert len(on_node(lab, 1)) == 1
    migrating.kill()  # the task dies without any cleanup: lock, sending source, paused target are left
    migrating.communicate(timeout=30)
    assert "lock: migrate" in qm(lab, 0, "qm", "config", str(VMID)).stdout
    # while the lock is held (the task is not known to be dead) the target's reconciler leaves it alone
    assert shell(lab, 1, RECONCILE) == "{}" and len(on_node(lab, 1)) == 1

    assert "'released': 1" in shell(lab, 0, TASKS)  # node1's worker: the task is dead, its lock released
    wait_for(lambda: "lock:" not in qm(lab, 1, "qm", "config", str(VMID)).stdout, 30, what="the unlock on node2")
    # the source still sends through the task's orphaned SSH forward: its reconciler cancels that
    assert shell(lab, 0, RECONCILE) == f"{{{VMID}: 'cancel'}}"
    kill_tunnels()
    # the target's QEMU either ended with its failed incoming migration or is stopped as a leftover
    wait_for(lambda: shell(lab, 1, RECONCILE) in ("{}", f"{{{VMID}: 'stop'}}") and not on_node(lab, 1), 30,
             what="no QEMU on node2")  # fmt: skip

    assert qm(lab, 0, "qm", "config", str(VMID)).stdout == config
    assert len(on_node(lab, 0)) == 1 and on_node(lab, 1) == []
    assert "qmpstatus: running" in qm(lab, 0, "qm", "status", str(VMID), "--verbose", "1").stdout
    assert shell(lab, 0, RECONCILE) == "{}" and shell(lab, 1, RECONCILE) == "{}"  # nothing left to do
    entries = "from cluster.models import ClusterLogEntry as E; print([e.msg for e in E.objects.all()])"
    wait_for(lambda: f"VM {VMID}: cancelled the outgoing migration" in shell(lab, 1, entries), 30, what="the log entry")


def test_a_source_node_crashed_during_the_transfer_ends_with_one_owner_and_no_leftover(lab, guest):
    running_on_node1(lab)
    node1 = lab.nodes[0]
    migrating = start_migration(lab)
    wait_line(migrating, "migration active, transferred")
    assert len(on_node(lab, 1)) == 1
    # the node dies: its cluster stack, the task and its QEMU
    lab.stop_corosync(node1, kill=True)
    lab.stop_service(node1, kill=True)
    migrating.kill()
    migrating.communicate(timeout=30)
    for pid in on_node(lab, 0):
        os.kill(pid, signal.SIGKILL)
    kill_tunnels()
    wait_for(lambda: not on_node(lab, 0), 30, what="the source QEMU gone")
    # node2 does nothing while the lock is held: the lock's task is on node1, which it cannot judge
    # (its incoming QEMU may have ended by itself when the stream broke)
    assert shell(lab, 1, RECONCILE) == "{}"

    lab.start_corosync(node1)
    lab.start_service(node1)
    wait_converged(lab, timeout=120)
    assert "'released': 1" in shell(lab, 0, TASKS)  # node1's worker after the restart
    assert shell(lab, 0, WATCHER) == f"[{VMID}]"  # the dead QEMU's runtime files removed
    wait_for(lambda: "lock:" not in qm(lab, 1, "qm", "config", str(VMID)).stdout, 30, what="the unlock on node2")
    wait_for(lambda: shell(lab, 1, RECONCILE) in ("{}", f"{{{VMID}: 'stop'}}") and not on_node(lab, 1), 30,
             what="no QEMU on node2")  # fmt: skip

    names = [node.name for node in lab.nodes]
    assert conf_files(lab, VMID) == {name: [names[0]] for name in names}
    assert on_node(lab, 0) == [] and on_node(lab, 1) == [] and on_node(lab, 2) == []
    assert "status: stopped" in qm(lab, 0, "qm", "status", str(VMID)).stdout


def test_without_the_targets_api_a_live_migration_goes_over_node_ssh(lab, guest):
    """This lab runs no web server: the target is started, resumed through ``qm`` over node SSH."""
    running_on_node1(lab)
    names = [node.name for node in lab.nodes]
    migrated = qm(lab, 0, "qm", "migrate", str(VMID), names[1], "--online", "1")
    out = migrated.stdout
    assert migrated.returncode == 0 and "migration finished successfully" in out, (out, migrated.stderr)
    assert f"WARN: the API of node '{names[1]}' cannot be reached" in out, out
    assert f"VM {VMID} resumed on node '{names[1]}'" in out, out
    wait_for(lambda: conf_files(lab, VMID) == {name: [names[1]] for name in names}, 60, what="the config on node2")
    assert on_node(lab, 0) == [] and len(on_node(lab, 1)) == 1
    assert "qmpstatus: running" in qm(lab, 1, "qm", "status", str(VMID), "--verbose", "1").stdout
    assert qm(lab, 1, "qm", "stop", str(VMID)).returncode == 0
