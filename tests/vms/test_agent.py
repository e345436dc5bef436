"""The guest agent through the API and ``vms.qemu.agent``, against the real test guest under QEMU.

Three VMs run for the module: ``GUEST`` boots the test guest with qemu-ga, ``QUIET`` boots it
without qemu-ga (the agent is configured but not running), ``BARE`` has no OS at all (it sits in
its firmware). ``STOPPED`` has no QEMU; ``NOAGENT`` runs nothing and has no ``agent`` key.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, User
from replicator import client as replicator_client
from tests.guest.image import GuestImage
from tests.guest.qemu import DEFAULT_MAC, GuestVM, start_guest
from vms.models import VM
from vms.qemu import agent

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
GUEST, QUIET, BARE, STOPPED, NOAGENT = 7500, 7501, 7502, 7503, 7504


def url(vmid: int, rest: str) -> str:
    return f"{API}/nodes/{settings.PVE_NODE_NAME}/qemu/{vmid}/agent{rest}"


@pytest.fixture(scope="module")
def guests(
    guest_image: GuestImage, replicator: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[int, GuestVM]]:
    for vmid in (GUEST, QUIET, BARE, STOPPED, NOAGENT):
        VM.objects.filter(vmid=vmid).first() or VM(
            vmid=vmid,
            node_id=settings.PVE_NODE_NAME,
            config={"name": f"agent{vmid}", **({} if vmid == NOAGENT else {"agent": "1"})},
        ).save()
    running: dict[int, GuestVM] = {}
    try:
        disk = tmp_path_factory.mktemp("agent") / "data.raw"
        disk.write_bytes(b"")
        os.truncate(disk, 16 * 1024 * 1024)
        running[GUEST] = start_guest(GUEST, guest_image, disk=disk)
        running[QUIET] = start_guest(QUIET, guest_image, agent_in_guest=False, mac="BC:24:11:00:00:02")
        running[BARE] = start_guest(BARE, None)
        running[GUEST].wait_ready()
        running[QUIET].wait_for_console("agent disabled")
        running[QUIET].wait_ready()
        yield running
    finally:
        for guest in running.values():
            guest.stop()


@pytest.fixture(scope="module")
def root(guests: dict[int, GuestVM]) -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"}).json()
    client.cookies["PVEAuthCookie"] = data["data"]["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["data"]["CSRFPreventionToken"]
    return client


def call(client: Client, method: str, vmid: int, rest: str, data: dict | None = None) -> tuple[int, dict]:
    response = getattr(client, method)(url(vmid, rest), data or {})
    return response.status_code, response.json()


def test_the_guest_boots_and_says_ready_with_its_kernel(guests, guest_image):
    line = guests[GUEST].wait_ready()
    assert line.endswith(f"ready {guest_image.kernel_release}")


def test_ping_info_and_osinfo(root, guests, guest_image):
    assert call(root, "post", GUEST, "/ping") == (200, {"data": {"result": {}}})
    status, body = call(root, "get", GUEST, "/info")
    assert status == 200
    names = {entry["name"] for entry in body["data"]["result"]["supported_commands"]}
    assert {"guest-ping", "guest-exec", "guest-shutdown"} <= names
    status, body = call(root, "get", GUEST, "/get-osinfo")
    osinfo = body["data"]["result"]
    assert status == 200 and osinfo["kernel-release"] == guest_image.kernel_release
    assert osinfo["id"] == "pve-test-guest" and osinfo["name"] == "PVE test guest"


def test_network_interfaces_show_the_nic_of_the_command_line(root, guests):
    status, body = call(root, "get", GUEST, "/network-get-interfaces")
    assert status == 200
    interfaces = {entry["name"]: entry for entry in body["data"]["result"]}
    assert interfaces["eth0"]["hardware-address"] == DEFAULT_MAC.lower()
    addresses = {address["ip-address"] for address in interfaces["eth0"].get("ip-addresses", [])}
    assert "10.0.2.15" in addresses
    assert "127.0.0.1" in {address["ip-address"] for address in interfaces["lo"]["ip-addresses"]}


def wait_exited(client: Client, vmid: int, pid: int) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = call(client, "get", vmid, "/exec-status", {"pid": pid})
        assert status == 200, body
        if body["data"]["exited"]:
            return body["data"]
        time.sleep(0.2)
    raise AssertionError(f"guest process {pid} did not exit")


def test_exec_and_exec_status(root, guests):
    command = ["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"]
    status, body = call(root, "post", GUEST, "/exec", {"command": command})
    assert status == 200, body
    result = wait_exited(root, GUEST, body["data"]["pid"])
    assert result["exitcode"] == 3 and result["exited"] == 1
    assert result["out-data"] == "hello\n" and result["err-data"] == "oops\n"
    status, body = call(root, "post", GUEST, "/exec", {"command": "/bin/cat", "input-data": "piped in"})
    assert status == 200, body
    assert wait_exited(root, GUEST, body["data"]["pid"])["out-data"] == "piped in"


def test_file_write_then_read(root, guests):
    status, body = call(root, "post", GUEST, "/file-write", {"file": "/tmp/note", "content": "written by the test\n"})
    assert (status, body) == (200, {"data": None})
    status, body = call(root, "get", GUEST, "/file-read", {"file": "/tmp/note"})
    assert status == 200 and body["data"]["content"] == "written by the test\n"
    status, body = call(root, "get", GUEST, "/file-read", {"file": "/tmp/note", "count": 7, "offset": 3})
    assert body["data"] == {"content": "tten by", "bytes-read": 7, "truncated": 1}
    status, body = call(root, "get", GUEST, "/file-read", {"file": "/nonexistent"})
    assert status == 500 and body["message"].startswith("Agent error: ")


def test_fsfreeze_status_and_the_old_post_agent_endpoint(root, guests):
    assert call(root, "post", GUEST, "/fsfreeze-status") == (200, {"data": {"result": "thawed"}})
    assert call(root, "post", GUEST, "", {"command": "ping"}) == (200, {"data": {"result": {}}})
    status, body = call(root, "post", GUEST, "", {"command": "rm-rf"})
    assert status == 400 and "command" in body["errors"]
    status, body = call(root, "get", GUEST, "")
    assert status == 200 and {"name": "exec-status"} in body["data"] and {"name": "ping"} in body["data"]


def test_fsfreeze_freeze_status_thaw_and_fsinfo(root, guests):
    status, body = call(root, "post", GUEST, "/fsfreeze-freeze")
    assert status == 200 and body["data"]["result"] >= 1, body  # at least the data disk
    assert call(root, "post", GUEST, "/fsfreeze-status") == (200, {"data": {"result": "frozen"}})
    assert agent.fsfreeze_status(GUEST) == "frozen"
    status, body = call(root, "post", GUEST, "/fsfreeze-thaw")
    assert status == 200 and body["data"]["result"] >= 1, body
    assert agent.fsfreeze_status(GUEST) == "thawed"
    status, body = call(root, "get", GUEST, "/get-fsinfo")
    assert status == 200 and "/mnt/data" in {entry["mountpoint"] for entry in body["data"]["result"]}, body


def test_bad_input_is_refused_before_the_guest_is_asked(root, guests):
    status, body = call(root, "get", GUEST, "/exec-status", {"pid": "abc"})
    assert status == 400 and "pid" in body["errors"]
    status, body = call(root, "post", GUEST, "/ping", {"surprise": "1"})
    assert status == 400 and "surprise" in body["errors"]
    assert call(root, "get", GUEST, "/ping")[0] == 501  # ping is POST only, as in Proxmox
    status, body = call(root, "post", GUEST, "/exec", {})
    assert status == 500 and "command or input-data" in body["message"]


@pytest.mark.parametrize(
    ("vmid", "message"),
    [
        (STOPPED, f"VM {STOPPED} is not running"),
        (NOAGENT, "No QEMU guest agent configured"),
        (QUIET, "QEMU guest agent is not running"),
        (BARE, "QEMU guest agent is not running"),
    ],
)
def test_clear_errors_when_there_is_no_agent_to_ask(root, guests, vmid, message):
    status, body = call(root, "post", vmid, "/ping")
    assert (status, body["message"]) == (500, f"{message}\n")
    with pytest.raises(agent.AgentError, match=message if vmid in (STOPPED, QUIET, BARE) else "not running"):
        agent.command(vmid, "guest-ping")


def test_an_unknown_vm_is_the_proxmox_not_found_error(root, guests):
    status, body = call(root, "post", 7599, "/ping")
    assert status == 500 and "7599.conf' does not exist" in body["message"]


# rest, method, body, vmid, (path, role) of the holder, (path, role) of the other user, holder's answer
MATRIX = [
    ("/ping", "post", {}, GUEST, ("/vms/7500", "PVEAuditor"), ("/vms/7501", "PVEVMAdmin"), 200),
    ("/get-osinfo", "get", {}, GUEST, ("/vms", "PVEAuditor"), ("/vms/7501", "PVEAuditor"), 200),
    ("/fsfreeze-status", "post", {}, GUEST, ("/vms/7500", "PVEVMUser"), ("/storage", "Administrator"), 200),
    ("/exec", "post", {"command": "/bin/true"}, GUEST, ("/vms/7500", "PVEVMAdmin"), ("/vms/7500", "PVEVMUser"), 200),
    ("/exec-status", "get", {"pid": 1}, GUEST, ("/", "PVEVMAdmin"), ("/vms/7500", "PVEVMUser"), "Agent error"),
    (
        "/file-read",
        "get",
        {"file": "/etc/hostname"},
        GUEST,
        ("/vms/7500", "PVEVMUser"),
        ("/vms/7500", "PVEAuditor"),
        200,
    ),
    (
        "/file-write",
        "post",
        {"file": "/tmp/matrix", "content": "x"},
        GUEST,
        ("/vms/7500", "PVEVMUser"),
        ("/vms/7500", "PVEAuditor"),
        200,
    ),
    ("/shutdown", "post", {}, QUIET, ("/vms/7501", "PVEVMUser"), ("/vms/7500", "PVEVMAdmin"), "QEMU guest agent"),
    ("", "post", {"command": "ping"}, GUEST, ("/vms/7500", "PVEVMAdmin"), ("/vms/7500", "PVEVMUser"), 200),
]
MATRIX_USERS = ("ag-nobody@pve", "ag-holder@pve", "ag-other@pve")


def login(userid: str, password: str) -> Client:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["CSRFPreventionToken"]
    return client


@pytest.fixture(scope="module")
def matrix_users(guests: dict[int, GuestVM]) -> User:
    root_user = User.objects.get(userid="root@pam")
    for userid in MATRIX_USERS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=root_user, password="agent-matrix")
    return root_user


@pytest.mark.parametrize("case", MATRIX, ids=[f"{c[1]} agent{c[0]}" for c in MATRIX])
def test_permission_matrix(matrix_users, guests, case):
    rest, method, body, vmid, (held_path, held_role), (other_path, other_role), expected = case
    for entry in ACLEntry.objects.filter(ugid__in=MATRIX_USERS):
        entry.delete()
    authz_services.modify_acl(matrix_users, held_path, [held_role], users=["ag-holder@pve"])
    authz_services.modify_acl(matrix_users, other_path, [other_role], users=["ag-other@pve"])
    clients = {userid: login(userid, "agent-matrix") for userid in MATRIX_USERS}
    before = replicator_client.status()["version"]
    assert call(Client(), method, vmid, rest, body)[0] == 401
    for userid in ("ag-nobody@pve", "ag-other@pve"):
        status, answer = call(clients[userid], method, vmid, rest, body)
        assert status == 403 and answer["message"].startswith("Permission check failed"), (userid, answer)
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    if rest == "/file-write":
        with pytest.raises(agent.AgentCommandError):  # nothing was written for the refused callers
            agent.file_read(GUEST, "/tmp/matrix", count=10)
    status, answer = call(clients["ag-holder@pve"], method, vmid, rest, body)
    if expected == 200:
        assert status == 200, answer
    else:
        assert status == 500 and answer["message"].startswith(str(expected)), answer


def test_the_command_index_is_open_to_any_user(matrix_users, guests):
    for entry in ACLEntry.objects.filter(ugid__in=MATRIX_USERS):
        entry.delete()
    assert call(Client(), "get", GUEST, "")[0] == 401
    status, body = call(login("ag-nobody@pve", "agent-matrix"), "get", GUEST, "")
    assert status == 200 and len(body["data"]) == 25


def test_qm_agent(guests, guest_image):
    out = io.StringIO()
    call_command("qm", "agent", str(GUEST), "get-osinfo", stdout=out)
    assert json.loads(out.getvalue())["kernel-release"] == guest_image.kernel_release
    out = io.StringIO()
    call_command("qm", "agent", str(GUEST), "fsfreeze-status", stdout=out)
    assert out.getvalue() == "thawed\n"
    with pytest.raises(CommandError, match="QEMU guest agent is not running"):
        call_command("qm", "agent", str(QUIET), "ping")
    with pytest.raises(CommandError, match="command is one of"):
        call_command("qm", "agent", str(GUEST), "rm-rf")


def test_acpi_power_button_powers_the_guest_off(guests):
    quiet = guests[QUIET]
    assert quiet.qmp("system_powerdown") == {"return": {}}
    assert quiet.wait_exit(timeout=120) == 0
    assert "PVE-TEST-GUEST: power button" in quiet.console_text()


def test_shutdown_through_the_agent_powers_the_guest_off(guests):
    guest = guests[GUEST]
    agent.shutdown(GUEST)
    assert guest.wait_exit(timeout=120) == 0
    assert "Power down" in guest.console_text()
    with pytest.raises(agent.VMNotRunning):
        agent.command(GUEST, "guest-ping")
