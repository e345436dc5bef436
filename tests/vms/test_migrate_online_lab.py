"""Live migration between two lab nodes with the running test guest (TCG), over real node SSH.

``qm migrate --online 1`` on node1: the target QEMU starts paused on node2 with ``-incoming``,
the memory goes through an SSH-forwarded unix socket (and, insecure, straight over TCP in the
migration network), the config moves, the guest runs on node2 with the file it held in RAM,
and exactly one QEMU is left. A migration stopped as ``DELETE .../tasks/{upid}`` stops it (its
process signalled; through the API a task of node1's worker, stopped by a real ``DELETE``) and
one whose target QEMU is killed all leave the guest running on node1,
no QEMU on node2, the config where it was and no lock. Run under the lab lock:
``flock /tmp/pve-lab.lock .venv/bin/pytest tests/vms/test_migrate_online_lab.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.cluster.lifecycle import PATH, REPO, api, login, manage
from tests.cluster.replication import wait_for
from tests.vms.test_migrate_lab import conf_files, ssh_lab

pytestmark = pytest.mark.slow
VMID = 9811
MARKER = "/migration-marker"
AGENT = (
    "import base64,sys; from vms.qemu import agent; v=int(sys.argv[1]); "
    f"agent.file_write(v, '{MARKER}', base64.b64encode(sys.argv[2].encode()).decode()) if len(sys.argv) > 2 else "
    f"print(agent.file_read(v, '{MARKER}', count=100)['content'])"
)


STOP_TASK = (
    "from portal.models import Task; from portal.tasks import runner; "
    "t = Task.objects.get(type='qmigrate', status=Task.RUNNING); runner.stop(t.upid); print(t.upid)"
)


@pytest.fixture(scope="module")
def lab(lab_cluster):
    return ssh_lab(lab_cluster, 2, "migonline", whole=True)


def qm(lab, index: int, *args: str, timeout: float = 300):  # type: ignore[no-untyped-def]
    return manage(lab, lab.nodes[index], *args, timeout=timeout)


def qemu_pids(vmid: int = VMID) -> dict[int, str]:
    """Every QEMU of the VM on this host -> the pid file it names (whose node directory tells the node)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv and "qemu-system" in argv[0] and "-pidfile" in argv:
            pidfile = argv[argv.index("-pidfile") + 1]
            if pidfile.endswith(f"/{vmid}.pid"):
                found[int(entry.name)] = pidfile
    return found


def on_node(lab, index: int) -> list[int]:
    return [pid for pid, pidfile in qemu_pids().items() if pidfile.startswith(str(lab.nodes[index].directory) + "/")]


def agent_script(lab, index: int, *args: str):  # type: ignore[no-untyped-def]
    return qm(lab, index, "shell", "-c", f"import sys; sys.argv = ['x', {', '.join(repr(a) for a in args)}]; {AGENT}")


def marker(lab, index: int) -> str:
    return agent_script(lab, index, str(VMID)).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def guest(lab, guest_image):
    """The guest VM on node1 (no disk), running, its agent answering, a marker file in its RAM."""
    boot = f"-kernel {guest_image.kernel} -initrd {guest_image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
    created = qm(lab, 0, "qm", "create", str(VMID), "--memory", "256", "--kvm", "0", "--agent", "1", "--args", boot)
    assert created.returncode == 0, created.stderr
    started = qm(lab, 0, "qm", "start", str(VMID))
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 300
    while qm(lab, 0, "qm", "agent", str(VMID), "ping").returncode != 0:
        assert time.monotonic() < deadline, "the guest agent did not answer"
        time.sleep(2)
    written = agent_script(lab, 0, str(VMID), "kept in RAM")
    assert written.returncode == 0, written.stderr
    assert marker(lab, 0) == "kept in RAM"
    return VMID


def start_migration(lab, *options: str) -> subprocess.Popen:
    node1, node2 = lab.nodes
    return lab.run(
        node1,
        [sys.executable, str(REPO / "manage.py"), "qm", "migrate", str(VMID), node2.name, "--online", "1", *options],
        env={**node1.env, "PATH": PATH},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_line(process: subprocess.Popen, text: str, seconds: float = 120) -> list[str]:
    lines = []
    deadline = time.monotonic() + seconds
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if text in line:
            return lines
    raise AssertionError(f"{text!r} not seen: {lines}")


def assert_still_on_node1(lab, config: str) -> None:
    node1, node2 = (node.name for node in lab.nodes)
    assert qm(lab, 0, "qm", "config", str(VMID)).stdout == config  # no lock left, nothing changed
    assert conf_files(lab, VMID) == {node1: [node1], node2: [node1]}
    assert len(on_node(lab, 0)) == 1 and on_node(lab, 1) == []
    assert "qmpstatus: running" in qm(lab, 0, "qm", "status", str(VMID), "--verbose", "1").stdout
    assert marker(lab, 0) == "kept in RAM"


def test_a_stopped_migration_leaves_the_guest_running_on_the_source(lab, guest):
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    migrating = start_migration(lab, "--bwlimit", "1024")  # 1 MiB/s: 256 MiB of RAM take minutes
    wait_line(migrating, "migration active, transferred")
    assert len(on_node(lab, 1)) == 1
    # what DELETE /nodes/node1/tasks/{upid} runs after its permission check: the task's process is signalled
    stopped = qm(lab, 0, "shell", "-c", STOP_TASK)
    assert stopped.returncode == 0, stopped.stderr
    upid = stopped.stdout.strip().splitlines()[-1]
    out, err = migrating.communicate(timeout=120)
    assert migrating.returncode != 0
    assert "target VM 9811 on node" in out and "stopped" in out, (out, err)
    assert_still_on_node1(lab, config)
    ended = qm(
        lab, 0, "shell", "-c", f"from portal.models import Task; print(Task.objects.get(upid={upid!r}).exitstatus)"
    )
    assert ended.stdout.strip().splitlines()[-1] == "received interrupt", ended.stdout + ended.stderr


def task_log(lab, auth, upid: str) -> str:  # type: ignore[no-untyped-def]
    node1 = lab.nodes[0]
    status, body = api(lab, node1, "GET", f"/nodes/{node1.name}/tasks/{quote(upid, safe='')}/log?limit=0", auth=auth)
    assert status == 200, body
    return "\n".join(entry["t"] for entry in body["data"])


def test_a_migration_through_the_api_stopped_with_delete_leaves_the_guest_on_the_source(lab, guest):
    """The API path: the migration is a task of node1's Celery worker; ``DELETE`` on the task stops it."""
    node1, node2 = lab.nodes
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    auth = login(lab, node1, lab.root_password)
    values = {"target": node2.name, "online": 1, "bwlimit": 1024}
    status, body = api(lab, node1, "POST", f"/nodes/{node1.name}/qemu/{VMID}/migrate", values, auth=auth)
    assert status == 200 and ":qmigrate:" in body["data"], body
    upid = body["data"]
    wait_for(lambda: "migration active, transferred" in task_log(lab, auth, upid), 120, interval=0.5,
             what="the memory transfer")  # fmt: skip
    assert len(on_node(lab, 1)) == 1
    status, body = api(lab, node1, "DELETE", f"/nodes/{node1.name}/tasks/{quote(upid, safe='')}", auth=auth)
    assert status == 200, body

    def ended() -> bool:
        answer = api(lab, node1, "GET", f"/nodes/{node1.name}/tasks/{quote(upid, safe='')}/status", auth=auth)[1]
        return answer["data"]["status"] == "stopped"

    wait_for(ended, 120, interval=0.5, what="the task's end")
    log = task_log(lab, auth, upid)
    assert f"target VM {VMID} on node '{node2.name}' stopped" in log, log
    assert "migration finished successfully" not in log, log
    assert_still_on_node1(lab, config)


def test_a_killed_target_fails_the_migration_and_the_source_runs_on(lab, guest):
    config = qm(lab, 0, "qm", "config", str(VMID)).stdout
    migrating = start_migration(lab, "--bwlimit", "1024")
    wait_line(migrating, "migration active, transferred")
    (target,) = on_node(lab, 1)
    os.kill(target, signal.SIGKILL)
    out, err = migrating.communicate(timeout=120)
    assert migrating.returncode != 0 and "migration aborted" in out, (out, err)
    assert_still_on_node1(lab, config)


def test_online_migration_moves_the_running_guest_and_back_insecure(lab, guest):
    node1, node2 = (node.name for node in lab.nodes)
    migrated = qm(lab, 0, "qm", "migrate", str(VMID), node2, "--online", "1")
    assert migrated.returncode == 0, (migrated.stdout, migrated.stderr)
    out = migrated.stdout
    assert "SSH tunnel to node" in out and "migration status: completed" in out, out
    assert "average migration speed: " in out and "migration finished successfully" in out, out
    assert "WARN" not in out, out  # the target asked through its API: no fallback to SSH
    wait_for(lambda: conf_files(lab, VMID) == {node1: [node2], node2: [node2]}, 60, what="the config under node2")
    assert on_node(lab, 0) == [] and len(on_node(lab, 1)) == 1
    assert "qmpstatus: running" in qm(lab, 1, "qm", "status", str(VMID), "--verbose", "1").stdout
    assert marker(lab, 1) == "kept in RAM"
    assert "lock:" not in qm(lab, 1, "qm", "config", str(VMID)).stdout

    network = ".".join(lab.nodes[0].address.split(".")[:3]) + ".0/24"
    back = qm(lab, 1, "qm", "migrate", str(VMID), node1, "--online", "1", "--migration_type", "insecure",
              "--migration_network", network)  # fmt: skip
    assert back.returncode == 0, (back.stdout, back.stderr)
    assert "target QEMU listens on tcp:" in back.stdout and "SSH tunnel" not in back.stdout, back.stdout
    assert "WARN" not in back.stdout, back.stdout
    wait_for(lambda: conf_files(lab, VMID) == {node1: [node1], node2: [node1]}, 60, what="the config under node1")
    assert len(on_node(lab, 0)) == 1 and on_node(lab, 1) == []
    assert marker(lab, 0) == "kept in RAM"


DISK_VMID = 9813
GUEST_SH = (
    "import json,sys,time; from vms.qemu import agent; v=int(sys.argv[1]); pid=agent.execute(v, ['/bin/sh', '-c', "
    "sys.argv[2]])['pid']; wait=sys.argv[3] == '1'\n"
    "while wait:\n"
    "    s=agent.exec_status(v, pid)\n"
    "    if s['exited']: print(json.dumps(s)); break\n"
    "    time.sleep(0.2)\n"
    "else: print(json.dumps({'pid': pid}))"
)


def guest_sh(lab, index: int, vmid: int, script: str, *, wait: bool = True) -> dict:  # type: ignore[no-untyped-def]
    """A shell command run in the guest through its agent (``guest-exec``); its status or, not waited for, its pid."""
    import json

    code = f"import sys; sys.argv = ['x', {str(vmid)!r}, {script!r}, {'1' if wait else '0'!r}]\n{GUEST_SH}"
    done = qm(lab, index, "shell", "-c", code)
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_online_migration_with_a_local_disk_mirrors_it_while_the_guest_writes(lab, guest_image, tmp_path):
    """The disk goes over NBD with drive-mirror while a guest process keeps appending to a file with
    fsync; after the switch-over the guest drops its caches and reads everything back from the copy."""
    node1, node2 = (node.name for node in lab.nodes)
    for storeid, node in (("migl-a", node1), ("migl-b", node2)):
        added = qm(lab, 0, "pvesm", "add", "dir", storeid, "--path", str(tmp_path / storeid), "--nodes", node)
        assert added.returncode == 0, added.stderr
    boot = f"-kernel {guest_image.kernel} -initrd {guest_image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
    created = qm(lab, 0, "qm", "create", str(DISK_VMID), "--memory", "256", "--kvm", "0", "--agent", "1",
                 "--args", boot, "--virtio0", "migl-a:0.05,format=qcow2")  # fmt: skip
    assert created.returncode == 0, created.stderr
    owner = 0
    try:
        assert qm(lab, 0, "qm", "start", str(DISK_VMID)).returncode == 0
        deadline = time.monotonic() + 300
        while qm(lab, 0, "qm", "agent", str(DISK_VMID), "ping").returncode != 0:
            assert time.monotonic() < deadline, "the guest agent did not answer"
            time.sleep(2)
        wrote = guest_sh(lab, 0, DISK_VMID, "grep -q ' /mnt/data ' /proc/mounts && dd if=/dev/urandom of=/mnt/data/blob "
                         "bs=1M count=8 conv=fsync 2>/dev/null && md5sum /mnt/data/blob")  # fmt: skip
        assert wrote["exitcode"] == 0, wrote
        digest = wrote["out-data"].split()[0]
        source_volid = f"migl-a:{DISK_VMID}/vm-{DISK_VMID}-disk-0.qcow2"
        source_path = Path(qm(lab, 0, "pvesm", "path", source_volid).stdout.strip())
        assert source_path.exists()
        writer = guest_sh(lab, 0, DISK_VMID, "i=0; while [ $i -lt 150 ]; do echo $i >> /mnt/data/log; "
                          "sync; i=$((i+1)); sleep 0.1; done", wait=False)  # fmt: skip

        migrated = qm(lab, 0, "qm", "migrate", str(DISK_VMID), node2, "--online", "1", "--with-local-disks", "1",
                      "--targetstorage", "migl-a:migl-b")  # fmt: skip
        assert migrated.returncode == 0, (migrated.stdout, migrated.stderr)
        owner = 1
        out = migrated.stdout
        assert "drive-virtio0: transferred" in out and "all 'mirror' jobs are ready" in out, out
        assert "virtio0: mirror job finished" in out and "migration status: completed" in out, out
        assert "removing the source volumes" in out and "migration finished successfully" in out, out
        wait_for(lambda: conf_files(lab, DISK_VMID) == {node1: [node2], node2: [node2]}, 60, what="config on node2")
        config = qm(lab, 1, "qm", "config", str(DISK_VMID)).stdout
        target_volid = f"migl-b:{DISK_VMID}/vm-{DISK_VMID}-disk-0.qcow2"
        assert f"virtio0: {target_volid}" in config and "lock:" not in config, config
        assert not source_path.exists(), "the source volume was not freed"
        assert len([p for p in qemu_pids(DISK_VMID).values() if p.startswith(str(lab.nodes[1].directory))]) == 1
        assert not [p for p in qemu_pids(DISK_VMID).values() if p.startswith(str(lab.nodes[0].directory))]

        deadline = time.monotonic() + 120
        status = f"from vms.qemu import agent; print(agent.exec_status({DISK_VMID}, {writer['pid']})['exited'])"
        while qm(lab, 1, "shell", "-c", status).stdout.strip().splitlines()[-1] != "1":
            assert time.monotonic() < deadline, "the guest's writer did not finish"
            time.sleep(1)
        reread = guest_sh(lab, 1, DISK_VMID, "sync; echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/data/blob; "
                          "cat /mnt/data/log")  # fmt: skip
        lines = reread["out-data"].splitlines()
        assert lines[0].split()[0] == digest
        assert lines[1:] == [str(i) for i in range(150)], "writes made during the mirror were lost or reordered"

        # back to node1: first a try whose target QEMU dies during the mirror, then over insecure TCP
        config = qm(lab, 1, "qm", "config", str(DISK_VMID)).stdout
        migrating = lab.run(
            lab.nodes[1],
            [sys.executable, str(REPO / "manage.py"), "qm", "migrate", str(DISK_VMID), node1, "--online", "1",
             "--targetstorage", "migl-b:migl-a", "--bwlimit", "256"],
            env={**lab.nodes[1].env, "PATH": PATH}, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_line(migrating, "drive-virtio0: transferred")
        (target,) = [pid for pid, f in qemu_pids(DISK_VMID).items() if f.startswith(str(lab.nodes[0].directory))]
        os.kill(target, signal.SIGKILL)
        out, err = migrating.communicate(timeout=120)
        assert migrating.returncode != 0 and "migration aborted" in out, (out, err)
        # the target's qm stop --migratedfrom freed the image it had allocated
        assert f"freed '{source_volid}', a copy of an unfinished migration on node '{node1}'" in out, out
        assert not source_path.exists(), "the target's new image was left behind"
        assert qm(lab, 1, "qm", "config", str(DISK_VMID)).stdout == config
        assert "qmpstatus: running" in qm(lab, 1, "qm", "status", str(DISK_VMID), "--verbose", "1").stdout

        network = ".".join(lab.nodes[0].address.split(".")[:3]) + ".0/24"
        back = qm(lab, 1, "qm", "migrate", str(DISK_VMID), node1, "--online", "1", "--targetstorage", "migl-b:migl-a",
                  "--migration_type", "insecure", "--migration_network", network)  # fmt: skip
        assert back.returncode == 0, (back.stdout, back.stderr)
        owner = 0
        assert "virtio0: start migration to nbd:" in back.stdout and "nbd:unix:" not in back.stdout, back.stdout
        wait_for(lambda: conf_files(lab, DISK_VMID) == {node1: [node1], node2: [node1]}, 60, what="config on node1")
        assert source_path.exists() and f"virtio0: {source_volid}" in qm(lab, 0, "qm", "config", str(DISK_VMID)).stdout
        assert not (tmp_path / "migl-b" / "images" / str(DISK_VMID)).exists() or not list(
            (tmp_path / "migl-b" / "images" / str(DISK_VMID)).iterdir()
        ), "node2's volume was not freed"
        again = guest_sh(
            lab, 0, DISK_VMID, "echo 3 > /proc/sys/vm/drop_caches; md5sum /mnt/data/blob; wc -l < /mnt/data/log"
        )
        assert again["out-data"].split() == [digest, "/mnt/data/blob", "150"], again
    finally:
        qm(lab, owner, "qm", "stop", str(DISK_VMID))
        qm(lab, owner, "qm", "destroy", str(DISK_VMID))
