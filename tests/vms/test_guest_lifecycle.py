"""The power operations against a real Linux guest (the test guest, under TCG: see tests/guest):
``shutdown`` through the guest agent with ``agent: 1`` and through the ACPI power button without
it; in both the guest powers itself off and the task ends OK without forcing anything."""

from __future__ import annotations

import pytest

from tests.vms.test_qemu_runtime import root, run_task, wait_for  # noqa: F401  # ``root`` is a fixture
from vms.models import VM
from vms.qemu import agent, process
from vms.runtime_paths import vm_pid

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
NODE = "testnode"
VMID = 7720


@pytest.fixture(scope="module")
def guest_vm(guest_image):
    """A VM whose ``args`` (root@pam's key) boots the test guest's kernel, with KVM off (``kvm: 0``)."""
    boot = f"-kernel {guest_image.kernel} -initrd {guest_image.initrd} -append 'console=ttyS0 panic=-1 loglevel=4'"
    config = {"name": "guest", "memory": "256", "kvm": "0", "agent": "1", "args": boot}
    VM.objects.filter(vmid=VMID).exists() or VM(vmid=VMID, node_id=NODE, config=config).save()
    yield VMID
    process.terminate(VMID, timeout=5, log=lambda line: None)
    process.cleanup(VMID, {})


def agent_answers() -> bool:
    try:
        agent.command(VMID, "guest-ping", timeout=2)
    except Exception:
        return False
    return True


def set_agent(enabled: str) -> None:
    vm = VM.objects.get(vmid=VMID)
    vm.config = {**vm.config, "agent": enabled}
    vm.save()


def test_shutdown_through_the_guest_agent(root, guest_vm):  # noqa: F811
    set_agent("1")
    assert run_task(root, VMID, "start")[0]["exitstatus"] == "OK"
    wait_for(agent_answers, 180, "the guest agent")
    state, lines = run_task(root, VMID, "shutdown", timeout=120)
    assert state["exitstatus"] == "OK", lines
    assert any("(guest agent)" in line for line in lines), lines
    assert not any("terminating now" in line for line in lines)
    assert vm_pid(VMID) is None


def test_shutdown_through_acpi(root, guest_vm):  # noqa: F811
    set_agent("1")
    assert run_task(root, VMID, "start")[0]["exitstatus"] == "OK"
    wait_for(agent_answers, 180, "the guest (its agent answers once its init has run)")
    set_agent("0")  # the channel stays in the running QEMU; shutdown now takes the power button
    state, lines = run_task(root, VMID, "shutdown", timeout=180)
    assert state["exitstatus"] == "OK", lines
    assert not any("(guest agent)" in line or "terminating now" in line for line in lines), lines
    assert vm_pid(VMID) is None
