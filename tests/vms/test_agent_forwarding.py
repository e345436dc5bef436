"""An agent call for a VM on another node is answered by that node's agent client.

Two real nodes as in ``tests/cluster/test_forwarding.py`` (its ``nodes`` fixture): the VM is
created on node B through node A, the test guest runs in B's run directory, and the agent is
asked through A's API. A has neither the VM nor its sockets, so only B can have answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.cluster.test_forwarding import B_NODE, Nodes, nodes  # noqa: F401  (the two-node fixture)
from tests.guest.image import GuestImage
from tests.guest.qemu import GuestVM, start_guest
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
VMID = 7710


@pytest.fixture(scope="module")
def b_guest(nodes: Nodes, guest_image: GuestImage) -> Iterator[GuestVM]:  # noqa: F811
    session, csrf = nodes.session("root@pam", "test-root-password")
    answer = session.post(
        nodes.url(f"/nodes/{B_NODE}/qemu"),
        data={"vmid": str(VMID), "name": "agent-on-b", "agent": "1"},
        headers={"CSRFPreventionToken": csrf},
    )
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 60
    while not nodes.b_query("SELECT vmid FROM vms_vm WHERE vmid = ?", (VMID,)):
        assert time.monotonic() < deadline, "the VM did not appear on node B"
        time.sleep(0.2)
    guest = start_guest(VMID, guest_image, run_dir=nodes.b_dir / "run" / "qemu-server")
    try:
        guest.wait_ready()
        yield guest
    finally:
        guest.stop()


def test_agent_calls_are_answered_by_the_vms_node(nodes, b_guest, guest_image):  # noqa: F811
    assert not VM.objects.filter(vmid=VMID).exists()  # node A does not have the VM
    session, csrf = nodes.session("root@pam", "test-root-password")
    osinfo = session.get(nodes.url(f"/nodes/{B_NODE}/qemu/{VMID}/agent/get-osinfo"))
    assert osinfo.status_code == 200, osinfo.text
    assert osinfo.json()["data"]["result"]["kernel-release"] == guest_image.kernel_release
    ping = session.post(nodes.url(f"/nodes/{B_NODE}/qemu/{VMID}/agent/ping"), headers={"CSRFPreventionToken": csrf})
    assert ping.json() == {"data": {"result": {}}}
    here = session.post(nodes.url(f"/nodes/testnode/qemu/{VMID}/agent/ping"), headers={"CSRFPreventionToken": csrf})
    assert here.status_code == 500 and "does not exist" in here.json()["message"]  # asked of A itself: no such VM
    nobody, nobody_csrf = nodes.session("fw-nobody@pve")
    refused = nobody.post(
        nodes.url(f"/nodes/{B_NODE}/qemu/{VMID}/agent/ping"), headers={"CSRFPreventionToken": nobody_csrf}
    )
    assert refused.status_code == 403
