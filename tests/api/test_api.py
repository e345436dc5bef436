"""The Proxmox-compatible API on one node: login, CSRF, VM config CRUD, tasks, permissions."""

from __future__ import annotations

import pytest
from django.test import Client

from authz.models import User
from portal.tasks.upid import parse_upid
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
ROOT_PASSWORD = "test-root-password"


def login(client: Client, username: str = "root@pam", password: str = ROOT_PASSWORD) -> dict:
    response = client.post(f"{API}/access/ticket", {"username": username, "password": password})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return data


@pytest.fixture(scope="module")
def alice() -> User:
    user = User.objects.filter(userid="alice@pve").first()
    if user is None:
        user = User(userid="alice@pve", realm_id="pve", email="alice@example.com")
        user.set_password("alice-password")
        user.save()
    return user


@pytest.fixture
def root_client() -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = login(client)
    return client, data["CSRFPreventionToken"]


def test_login_returns_ticket_csrf_and_caps(root_client):
    client, _csrf = root_client
    response = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": ROOT_PASSWORD})
    data = response.json()["data"]
    assert response["Content-Type"].startswith("application/json")
    assert data["username"] == "root@pam"
    assert data["ticket"].startswith("PVE:root@pam:")
    assert ":" in data["CSRFPreventionToken"]
    assert data["cap"]["vms"]["VM.Allocate"] == 1


@pytest.mark.parametrize(
    ("username", "password"),
    [("root@pam", "wrong"), ("nobody@pve", "x"), ("root", ROOT_PASSWORD), ("root@pam", ""), ("alice@pve", "nope")],
)
def test_failed_login_is_401_with_one_message(username, password, alice):
    response = Client().post(f"{API}/access/ticket", {"username": username, "password": password})
    assert response.status_code == 401
    assert response.json() == {"data": None, "message": "authentication failure\n"}
    assert response.reason_phrase == "authentication failure"


def test_ticket_renewal_with_ticket_as_password(root_client):
    client, _ = root_client
    ticket = client.cookies["PVEAuthCookie"].value
    response = Client().post(f"{API}/access/ticket", {"username": "root@pam", "password": ticket})
    assert response.status_code == 200
    assert response.json()["data"]["ticket"].startswith("PVE:root@pam:")


def test_login_with_realm_parameter_and_json_body(alice):
    response = Client().post(
        f"{API}/access/ticket",
        {"username": "alice", "password": "alice-password", "realm": "pve"},
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json()["data"]["username"] == "alice@pve"


def test_login_without_content_type_is_parsed_as_form():
    response = Client().generic(
        "POST", f"{API}/access/ticket", f"username=root@pam&password={ROOT_PASSWORD}", content_type=""
    )
    assert response.status_code == 200


def test_unauthenticated_requests_get_401():
    for path in ("/version", "/nodes", "/cluster/status", "/cluster/nextid", "/nodes/testnode/qemu"):
        response = Client().get(f"{API}{path}")
        assert response.status_code == 401, path
        assert response.json()["data"] is None


def test_forged_ticket_is_401(root_client):
    client, _ = root_client
    ticket = client.cookies["PVEAuthCookie"].value
    forged = ticket.replace("root@pam", "root@pve")
    other = Client()
    other.cookies["PVEAuthCookie"] = forged
    assert other.get(f"{API}/version").status_code == 401
    other.cookies["PVEAuthCookie"] = ticket[:-8]
    assert other.get(f"{API}/version").status_code == 401


def test_version_nodes_status(root_client):
    client, _ = root_client
    version = client.get(f"{API}/version").json()["data"]
    assert version["release"] and version["version"].startswith(version["release"])
    nodes = client.get(f"{API}/nodes").json()["data"]
    assert [n["node"] for n in nodes] == ["testnode"]
    assert nodes[0]["status"] == "online" and isinstance(nodes[0]["maxmem"], int)
    assert nodes[0]["ssl_fingerprint"].count(":") == 31
    status = client.get(f"{API}/cluster/status").json()["data"]
    assert status == [
        {
            "type": "node",
            "id": "node/testnode",
            "name": "testnode",
            "nodeid": 0,
            "ip": "127.0.0.1",
            "local": 1,
            "online": 1,
            "level": "",
        }
    ]


def test_unknown_path_is_501(root_client):
    client, _ = root_client
    response = client.get(f"{API}/no/such/thing")
    assert response.status_code == 501
    assert "not implemented" in response.json()["message"]


def test_state_change_needs_csrf_token(root_client):
    client, _csrf = root_client
    response = client.post(f"{API}/nodes/testnode/qemu", {"vmid": "700", "name": "nocsrf"})
    assert response.status_code == 401
    assert not VM.objects.filter(vmid=700).exists()
    response = client.post(
        f"{API}/nodes/testnode/qemu", {"vmid": "700", "name": "badcsrf"}, HTTP_CSRFPREVENTIONTOKEN="0:x"
    )
    assert response.status_code == 401
    assert not VM.objects.filter(vmid=700).exists()


def _wait_ok(client: Client, upid: str) -> dict:
    parsed = parse_upid(upid)
    status = client.get(f"{API}/nodes/{parsed.node}/tasks/{upid}/status").json()["data"]
    assert status["status"] == "stopped"
    return status


def test_vm_config_lifecycle(root_client):
    client, csrf = root_client
    nextid = client.get(f"{API}/cluster/nextid").json()["data"]
    assert isinstance(nextid, str) and int(nextid) >= 100
    response = client.post(
        f"{API}/nodes/testnode/qemu",
        {"vmid": "701", "name": "web", "memory": "1024", "cores": "2", "net0": "virtio,bridge=vmbr0"},
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert response.status_code == 200, response.content
    upid = response.json()["data"]
    assert parse_upid(upid).type == "qmcreate"
    assert _wait_ok(client, upid)["exitstatus"] == "OK"
    log = client.get(f"{API}/nodes/testnode/tasks/{upid}/log").json()
    assert log["data"][-1] == {"n": log["total"], "t": "TASK OK"}

    config = client.get(f"{API}/nodes/testnode/qemu/701/config").json()["data"]
    assert config["name"] == "web" and config["cores"] == 2 and config["memory"] in ("1024", 1024)
    assert config["net0"].startswith("virtio=") and "bridge=vmbr0" in config["net0"]
    digest = config["digest"]
    typed = client.put(
        f"{API}/nodes/testnode/qemu/701/config",
        "onboot=1&cpuunits=1024&cpulimit=1.5",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert typed.status_code == 200, typed.content
    config = client.get(f"{API}/nodes/testnode/qemu/701/config").json()["data"]
    assert (config["onboot"], config["cpuunits"], config["cpulimit"], config["name"]) == (1, 1024, 1.5, "web")
    pending = client.get(f"{API}/nodes/testnode/qemu/701/pending").json()["data"]
    assert {"key": "onboot", "value": 1} in pending and {"key": "name", "value": "web"} in pending
    assert all(set(item) == {"key", "value"} for item in pending)  # every change is applied at once
    assert sorted(item["key"] for item in pending) == sorted(key for key in config if key != "digest")
    digest = config["digest"]

    bad = client.put(
        f"{API}/nodes/testnode/qemu/701/config",
        "memory=lots&cores=0",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert bad.status_code == 400
    assert set(bad.json()["errors"]) == {"memory", "cores"}
    assert VM.objects.get(vmid=701).config["memory"] == "1024"

    ok = client.put(
        f"{API}/nodes/testnode/qemu/701/config",
        f"memory=2048&digest={digest}",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert ok.status_code == 200 and ok.json() == {"data": None}
    stale = client.put(
        f"{API}/nodes/testnode/qemu/701/config",
        f"memory=4096&digest={digest}",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert stale.status_code == 500 and "modified" in stale.json()["message"]
    assert VM.objects.get(vmid=701).config["memory"] == "2048"

    duplicate = client.post(f"{API}/nodes/testnode/qemu", {"vmid": "701"}, HTTP_CSRFPREVENTIONTOKEN=csrf)
    assert duplicate.status_code == 500, duplicate.content
    assert duplicate.reason_phrase == "VM 701 already exists on node 'testnode'"
    assert duplicate.json()["message"].strip() == "VM 701 already exists on node 'testnode'"
    assert client.get(f"{API}/cluster/nextid?vmid=701").status_code == 400

    listed = client.get(f"{API}/nodes/testnode/qemu").json()["data"]
    entry = next(vm for vm in listed if vm["vmid"] == 701)
    assert entry["maxmem"] == 2048 * 1024 * 1024 and entry["status"] == "stopped"

    gone = client.delete(
        f"{API}/nodes/testnode/qemu/701/?purge=1&destroy-unreferenced-disks=0", HTTP_CSRFPREVENTIONTOKEN=csrf
    )
    assert gone.status_code == 200
    assert _wait_ok(client, gone.json()["data"])["exitstatus"] == "OK"
    missing = client.get(f"{API}/nodes/testnode/qemu/701/config")
    assert missing.status_code == 500
    assert missing.json()["message"].startswith(
        "Configuration file 'nodes/testnode/qemu-server/701.conf' does not exist"
    )


@pytest.mark.parametrize("vmid", ["99", "1000000000", "0100", "abc", "1.5", ""])
def test_bad_vmid_is_400(root_client, vmid):
    client, csrf = root_client
    response = client.post(f"{API}/nodes/testnode/qemu", {"vmid": vmid}, HTTP_CSRFPREVENTIONTOKEN=csrf)
    assert response.status_code == 400
    assert "vmid" in response.json()["errors"]


def test_permission_matrix_denies_and_changes_nothing(root_client, alice):
    """anonymous -> 401, a user without privileges -> 403 and nothing changed, root -> allowed."""
    root, csrf = root_client
    root.post(f"{API}/nodes/testnode/qemu", {"vmid": "702", "name": "guarded"}, HTTP_CSRFPREVENTIONTOKEN=csrf)
    before = VM.objects.get(vmid=702)
    user_client = Client()
    user_csrf = login(user_client, "alice@pve", "alice-password")["CSRFPreventionToken"]
    calls = [
        ("get", "/cluster/status", None),
        ("get", "/nodes/testnode/qemu/702/config", None),
        ("get", "/nodes/testnode/qemu/702/pending", None),
        ("get", "/nodes/testnode/qemu/702/status/current", None),
        ("put", "/nodes/testnode/qemu/702/config", "memory=64"),
        ("post", "/nodes/testnode/qemu", "vmid=703"),
        ("delete", "/nodes/testnode/qemu/702", None),
    ]
    for method, path, body in calls:
        kwargs = {"content_type": "application/x-www-form-urlencoded"} if body else {}
        anonymous = (
            getattr(Client(), method)(f"{API}{path}", body, **kwargs)
            if body
            else getattr(Client(), method)(f"{API}{path}")
        )
        assert anonymous.status_code == 401, (method, path)
        args = (f"{API}{path}", body) if body else (f"{API}{path}",)
        denied = getattr(user_client, method)(*args, HTTP_CSRFPREVENTIONTOKEN=user_csrf, **kwargs)
        assert denied.status_code == 403, (method, path, denied.content)
        assert denied.json()["message"].startswith("Permission check failed")
        allowed = getattr(root, method)(*args, HTTP_CSRFPREVENTIONTOKEN=csrf, **kwargs) if method == "get" else None
        if allowed is not None:
            assert allowed.status_code == 200, (method, path)
    after = VM.objects.get(vmid=702)
    assert (after.version, after.config) == (before.version, before.config)
    assert not VM.objects.filter(vmid=703).exists()
    listed = user_client.get(f"{API}/nodes/testnode/qemu").json()["data"]
    assert listed == []


def test_realm_list_needs_no_login():
    response = Client().get(f"{API}/access/domains")
    assert response.status_code == 200
    realms = {entry["realm"]: entry for entry in response.json()["data"]}
    assert realms["pam"] == {"realm": "pam", "type": "pam", "comment": "Linux PAM standard authentication"}
    assert realms["pve"]["default"] == 1
    assert Client().post(f"{API}/access/domains", {"realm": "x"}).status_code == 401  # creating one needs a login
