"""The QEMU runtime with real QEMU (KVM) on the session node: the power API through the real Celery worker.

VMs without a bootable disk sit in their firmware, which counts as running. Covered: start to QMP
``running`` (runtime files root's only), stop, suspend/resume, reset, shutdown of a firmware VM
(which ignores ACPI: timeout without and with ``forceStop``), taps plugged into a bridge and
removed, the config lock and ``skiplock``, templates, ``qm`` verbs (status, showcmd, monitor, start,
stop), onboot order, a QEMU killed from outside noticed by ``qmeventd``, ``overrule-shutdown``, and
QEMU accepting the built command line of rich configs (qcow2/raw volumes of a directory storage on
every bus, OVMF with an EFI disk on q35, NUMA).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.test import Client

from cluster.models import ClusterLogEntry
from portal.tasks.upid import parse_upid
from tests.harness import REPO, manage, wait_for
from vms.models import VM
from vms.qemu import lifecycle, process, qmp
from vms.runtime_paths import run_dir, vm_file, vm_pid

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
API = "/api2/json"
NODE = "testnode"
VMIDS = range(7700, 7713)
BRIDGE = "vmbrqt0"


@pytest.fixture(scope="module")
def root() -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"}).json()
    client.cookies["PVEAuthCookie"] = data["data"]["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["data"]["CSRFPreventionToken"]
    return client


@pytest.fixture(scope="module", autouse=True)
def vms() -> Iterator[None]:
    """Firmware-only VMs (128 MiB); any QEMU left running is stopped at the end."""
    for vmid in VMIDS:
        VM.objects.filter(vmid=vmid).exists() or VM(
            vmid=vmid, node_id=NODE, config={"name": f"rt{vmid}", "memory": "128"}
        ).save()
    subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=False, capture_output=True)
    subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
    yield
    for vmid in VMIDS:
        process.terminate(vmid, timeout=5, log=lambda line: None)
        process.cleanup(vmid, {})
    subprocess.run(["ip", "link", "del", BRIDGE], check=False)


def power(client: Client, vmid: int, command: str, **params: object) -> dict:
    response = client.post(f"{API}/nodes/{NODE}/qemu/{vmid}/status/{command}", params)
    return {"status": response.status_code, **response.json()}


def run_task(client: Client, vmid: int, command: str, **params: object) -> tuple[dict, list[str]]:
    """POST a power command; the finished task's status and log lines."""
    answer = power(client, vmid, command, **params)
    assert answer["status"] == 200, answer
    upid = answer["data"]
    assert parse_upid(upid).id == str(vmid)
    path = f"{API}/nodes/{NODE}/tasks/{upid}"
    state = wait_for(
        lambda: (s := client.get(f"{path}/status").json()["data"])["status"] == "stopped" and s, 60, f"task {upid}"
    )
    lines = [entry["t"] for entry in client.get(f"{path}/log", {"limit": 1000}).json()["data"]]
    return state, lines


def test_start_then_stop(root, celery_worker):
    vmid = 7700
    state, _lines = run_task(root, vmid, "start")
    assert (state["exitstatus"], state["type"]) == ("OK", "qmstart")
    assert qmp.status(vmid) == "running"  # SeaBIOS without a disk: running in its firmware
    pid = vm_pid(vmid)
    # QEMU runs in a session and process group of its own (made for its launch), not the worker's
    assert pid is not None and os.getpgid(pid) == os.getsid(pid) != os.getsid(0)
    assert os.getsid(pid) not in (os.getsid(p) for p in [*celery_worker.children(), celery_worker.process.pid])
    assert oct(run_dir().stat().st_mode & 0o777) == "0o700"
    for kind in ("pid", "qmp", "vnc"):
        assert vm_file(vmid, kind).stat().st_mode & 0o077 == 0, kind
    meta = VM.objects.get(vmid=vmid).config["meta"]
    assert meta.startswith(f"creation-qemu={process.qemu_version()},ctime=")  # recorded at the first start
    state, _ = run_task(root, vmid, "start")
    assert state["exitstatus"] == f"VM {vmid} already running"
    state, _lines = run_task(root, vmid, "stop")
    assert (state["exitstatus"], state["type"]) == ("OK", "qmstop")
    assert vm_pid(vmid) is None
    assert not vm_file(vmid, "qmp").exists() and not vm_file(vmid, "vnc").exists()


def test_without_kvm_the_vm_runs_under_tcg_and_the_log_says_so(root):
    vmid = 7711
    vm = VM.objects.get(vmid=vmid)
    vm.config = {**vm.config, "kvm": "0"}
    vm.save()
    state, lines = run_task(root, vmid, "start")
    assert state["exitstatus"] == "OK"
    assert any("running with TCG" in line for line in lines), lines
    assert qmp.command(vmid, "query-kvm") == {"enabled": False, "present": True}
    assert qmp.status(vmid) == "running"
    assert run_task(root, vmid, "stop")[0]["exitstatus"] == "OK"


def test_suspend_resume_reset(root):
    vmid = 7701
    assert run_task(root, vmid, "start")[0]["exitstatus"] == "OK"
    state, _ = run_task(root, vmid, "suspend")
    assert (state["exitstatus"], state["type"]) == ("OK", "qmpause")
    assert qmp.status(vmid) == "paused"
    refused = power(root, vmid, "shutdown")
    assert refused["status"] == 500 and "VM is paused - cannot shutdown" in refused["message"]
    assert run_task(root, vmid, "resume")[0]["exitstatus"] == "OK"
    assert qmp.status(vmid) == "running"
    pid = vm_pid(vmid)
    state, lines = run_task(root, vmid, "reset")
    assert (state["exitstatus"], state["type"]) == ("OK", "qmreset")
    assert f"VM {vmid} reset" in lines and vm_pid(vmid) == pid and qmp.status(vmid) == "running"
    assert run_task(root, vmid, "stop")[0]["exitstatus"] == "OK"
    for command in ("reset", "suspend", "resume", "reboot"):
        answer = power(root, vmid, command)
        assert answer["status"] == 500 and answer["message"].startswith(f"VM {vmid} not running"), command


def test_shutdown_of_a_firmware_vm_times_out_or_is_forced(root):
    vmid = 7702
    assert run_task(root, vmid, "start")[0]["exitstatus"] == "OK"
    state, _ = run_task(root, vmid, "shutdown", timeout=1)
    assert state["exitstatus"] == "VM quit/powerdown failed - got timeout"
    assert qmp.status(vmid) == "running"  # the firmware ignored the power button; nothing was forced
    state, lines = run_task(root, vmid, "shutdown", timeout=1, forceStop=1)
    assert (state["exitstatus"], state["type"]) == ("OK", "qmshutdown")
    assert "VM still running - terminating now" in lines
    assert vm_pid(vmid) is None


def test_stop_overrules_a_running_shutdown(root):
    vmid = 7712
    assert run_task(root, vmid, "start")[0]["exitstatus"] == "OK"
    shutdown = power(root, vmid, "shutdown", timeout=300)["data"]  # the firmware never powers off
    path = f"{API}/nodes/{NODE}/tasks/{shutdown}"
    wait_for(lambda: "shutting down VM" in str(root.get(f"{path}/log").json()["data"]), 30, "the shutdown to begin")
    state, lines = run_task(root, vmid, "stop", **{"overrule-shutdown": 1})
    assert state["exitstatus"] == "OK" and f"overruling shutdown task {shutdown}" in lines
    assert vm_pid(vmid) is None
    ended = root.get(f"{path}/status").json()["data"]
    assert ended["status"] == "stopped" and ended["exitstatus"] != "OK"


def test_taps_are_plugged_before_start_and_removed_after_stop(root):
    vmid = 7703
    vm = VM.objects.get(vmid=vmid)
    vm.config = {**vm.config, "net0": f"virtio=BC:24:11:77:03:00,bridge={BRIDGE},firewall=0"}
    vm.save()
    assert run_task(root, vmid, "start")[0]["exitstatus"] == "OK"
    tap = Path(f"/sys/class/net/tap{vmid}i0")
    assert (tap / "master").resolve().name == BRIDGE
    cmdline = Path(f"/proc/{vm_pid(vmid)}/cmdline").read_bytes().decode().split("\0")
    assert any(f"ifname=tap{vmid}i0" in arg for arg in cmdline)
    assert run_task(root, vmid, "stop")[0]["exitstatus"] == "OK"
    assert not tap.exists()


def test_config_lock_refuses_and_root_may_skip_it(root):
    vmid = 7704
    vm = VM.objects.get(vmid=vmid)
    vm.lock = "backup"
    vm.save()
    refused = power(root, vmid, "start")
    assert refused["status"] == 500 and refused["message"].startswith(f"VM {vmid} is locked (backup)")
    assert vm_pid(vmid) is None
    assert run_task(root, vmid, "start", skiplock=1)[0]["exitstatus"] == "OK"
    assert qmp.status(vmid) == "running"
    refused = power(root, vmid, "stop")
    assert refused["status"] == 500 and vm_pid(vmid) is not None
    assert run_task(root, vmid, "stop", skiplock=1)[0]["exitstatus"] == "OK"
    vm = VM.objects.get(vmid=vmid)
    vm.lock = ""
    vm.save()


def test_template_and_bad_parameters_are_refused(root):
    vmid = 7705
    vm = VM.objects.get(vmid=vmid)
    vm.config = {**vm.config, "template": "1"}
    vm.save()
    state, _ = run_task(root, vmid, "start")
    assert state["exitstatus"] == "you can't start a vm if it's a template" and vm_pid(vmid) is None
    for params, key in (({"timeout": "-1"}, "timeout"), ({"bogus": "1"}, "bogus"), ({"stateuri": "tcp"}, "stateuri")):
        answer = power(root, vmid, "start", **params)
        assert answer["status"] == 400 and key in answer["errors"], answer
    answer = power(root, vmid, "suspend", statestorage="local")
    assert answer["status"] == 400 and "todisk" in answer["errors"]["statestorage"]


def test_qm_verbs(node_env):
    vmid = 7706
    shown = manage(node_env, "qm", "showcmd", str(vmid)).stdout.strip()
    assert shlex.split(shown) == process.command_for(vmid, VM.objects.get(vmid=vmid).config)
    pretty = manage(node_env, "qm", "showcmd", str(vmid), "--pretty", "1").stdout
    assert pretty.splitlines()[1].strip() == "-name rt7706,debug-threads=on \\"
    assert shlex.split(pretty.replace("\\\n", " ")) == shlex.split(shown)
    assert manage(node_env, "qm", "status", str(vmid)).stdout.strip() == "status: stopped"
    started = manage(node_env, "qm", "start", str(vmid))
    assert f"VM {vmid} started" in started.stdout
    assert manage(node_env, "qm", "status", str(vmid)).stdout.strip() == "status: running"
    suspended = manage(node_env, "qm", "suspend", str(vmid), "--todisk", "1")
    assert "saving VM state and RAM using storage 'local'" in suspended.stdout
    assert f"VM {vmid} suspended to disk" in suspended.stdout
    assert manage(node_env, "qm", "status", str(vmid)).stdout.strip() == "status: stopped"
    assert VM.objects.get(vmid=vmid).lock == "suspended"
    resumed = manage(node_env, "qm", "start", str(vmid))
    assert f"resuming VM {vmid} from its saved state" in resumed.stdout and "VM state loaded" in resumed.stdout
    assert not VM.objects.get(vmid=vmid).lock and "vmstate" not in VM.objects.get(vmid=vmid).config
    monitor = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "qm", "monitor", str(vmid)],
        input="info status\nquit\n",
        env={**os.environ, **node_env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "VM status: running" in monitor.stdout
    assert manage(node_env, "qm", "stop", str(vmid)).returncode == 0
    assert vm_pid(vmid) is None
    failed = manage(node_env, "qm", "reset", str(vmid), check=False)
    assert failed.returncode != 0 and f"VM {vmid} not running" in failed.stderr


def test_onboot_vms_start_in_startup_order():
    first, second, skipped = 7708, 7707, 7709
    for vmid, extra in (
        (first, {"onboot": "1", "startup": "order=1"}),
        (second, {"onboot": "1", "startup": "order=2,up=1"}),
        (skipped, {}),
    ):
        vm = VM.objects.get(vmid=vmid)
        vm.config = {**vm.config, **extra}
        vm.save()
    lines: list[str] = []
    waited: list[float] = []
    try:
        lifecycle.start_all(log=lines.append, warn=lines.append, sleep=waited.append)
        starts = [line for line in lines if line.startswith("Starting VM")]
        assert starts == [f"Starting VM {first}", f"Starting VM {second}"]
        assert waited == [1] and vm_pid(first) and vm_pid(second) and vm_pid(skipped) is None
    finally:
        for vmid in (first, second):
            vm = VM.objects.get(vmid=vmid)
            vm.config = {k: v for k, v in vm.config.items() if k not in ("onboot", "startup")}
            vm.save()
            lifecycle.stop_vm(vmid, log=lines.append)


def test_a_qemu_killed_from_outside_is_cleaned_up(root, node_env):
    vmid = 7710
    watcher = subprocess.Popen(
        [sys.executable, str(REPO / "manage.py"), "qmeventd", "--no-startall", "--interval", "0.2"],
        env={**os.environ, **node_env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    vm = VM.objects.get(vmid=vmid)
    vm.config = {**vm.config, "net0": f"virtio=BC:24:11:77:10:00,bridge={BRIDGE},firewall=0"}
    vm.save()
    tap = Path(f"/sys/class/net/tap{vmid}i0")
    try:
        assert run_task(root, vmid, "start")[0]["exitstatus"] == "OK"
        pid = vm_pid(vmid)
        assert pid is not None and tap.exists()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not vm_file(vmid, "vnc").exists() and not vm_file(vmid, "pid").exists(), 30, "cleanup")
        wait_for(lambda: not tap.exists(), 30, "the tap removed")
        entry = wait_for(
            lambda: ClusterLogEntry.objects.filter(
                msg__startswith=f"VM {vmid} stopped: its QEMU process ended"
            ).first(),
            30,
            "the cluster log entry",
        )
        assert entry.node == NODE
        assert watcher.poll() is None  # still watching
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(timeout=30)
    assert watcher.returncode == 0, watcher.stderr.read() if watcher.stderr else ""


COMMAND_CASES = {
    "pc-disks": {
        "scsihw": "virtio-scsi-single",
        "scsi0": "qtstore:{vmid}/vm-{vmid}-disk-0.qcow2,cache=writeback,discard=on,iothread=1,ssd=1,serial=S0",
        "virtio0": "qtstore:{vmid}/vm-{vmid}-disk-1.raw,iothread=1,mbps_rd=50",
        "sata0": "qtstore:{vmid}/vm-{vmid}-disk-2.qcow2",
        "ide0": "qtstore:{vmid}/vm-{vmid}-disk-3.raw,cache=none,aio=native",
        "ide2": "qtstore:iso/empty.iso,media=cdrom",
        "boot": "order=scsi0;ide2",
        "agent": "1",
        "serial0": "socket",
        "smbios1": "uuid=5e3d2b6a-1234-4bcd-8abc-0123456789ab",
        "cpu": "x86-64-v2-AES",
        "sockets": "2",
        "cores": "1",
        "numa": "1",
        "vga": "cirrus",
    },
    "q35-ovmf": {
        "machine": "q35",
        "bios": "ovmf",
        "efidisk0": "qtstore:{vmid}/vm-{vmid}-disk-4.raw,efitype=4m",
        "scsihw": "lsi",
        "scsi8": "qtstore:{vmid}/vm-{vmid}-disk-0.qcow2",
        "ide1": "none,media=cdrom",
        "vga": "virtio",
        "tablet": "1",
    },
}


@pytest.mark.parametrize("case", sorted(COMMAND_CASES))
def test_qemu_accepts_the_built_command_line(case, tmp_path):
    """Real volumes on a directory storage: QEMU starts with every drive the config names."""
    from vms.models import Storage

    vmid = 7720 if case == "pc-disks" else 7721
    Storage.objects.filter(storeid="qtstore").exists() or Storage(
        storeid="qtstore", type="dir", path=str(tmp_path.parent / "qtstore"), content="images,iso"
    ).save()
    root_dir = Path(Storage.objects.get(storeid="qtstore").path)
    images, iso = root_dir / "images" / str(vmid), root_dir / "template" / "iso"
    images.mkdir(parents=True, exist_ok=True)
    iso.mkdir(parents=True, exist_ok=True)
    (iso / "empty.iso").write_bytes(b"\0" * 2048 * 16)
    for index, fmt in enumerate(("qcow2", "raw", "qcow2", "raw")):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", fmt, str(images / f"vm-{vmid}-disk-{index}.{fmt}"), "64M"], check=True
        )
    (images / f"vm-{vmid}-disk-4.raw").write_bytes(Path("/usr/share/OVMF/OVMF_VARS_4M.fd").read_bytes())
    config = {key: value.format(vmid=vmid) for key, value in COMMAND_CASES[case].items()} | {"memory": "256"}
    VM.objects.filter(vmid=vmid).exists() or VM(vmid=vmid, node_id=NODE, config={}).save()
    vm = VM.objects.get(vmid=vmid)
    vm.config = config
    vm.save()
    try:
        lifecycle.start_vm(vmid, log=lambda line: None)
        assert qmp.status(vmid) == "running"
        blocks = {entry["device"]: entry for entry in qmp.command(vmid, "query-block")}
        for key in config:
            if re.fullmatch(r"(scsi|virtio|sata|ide)\d+", key):
                assert f"drive-{key}" in blocks, (key, sorted(blocks))
        if "numa" in config:
            assert len(qmp.command(vmid, "query-memdev")) == 2
    finally:
        lifecycle.stop_vm(vmid, log=lambda line: None)
