"""Permission matrix of the live status endpoints (Proxmox's checks): anonymous 401, no privilege
403, the privilege on another object 403, the privilege on the object 200, root 200; nothing a
refused call touches changes."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, User
from replicator import client as replicator_client
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "status-matrix-password"
ROOT_PASSWORD = "test-root-password"

# path, (path, role) for the holder, (path, role) elsewhere
CASES = [
    (f"/nodes/{NODE}/status", (f"/nodes/{NODE}", "PVEAuditor"), ("/vms", "PVEAuditor")),
    (f"/nodes/{NODE}/rrddata?timeframe=hour", ("/nodes", "PVEAuditor"), ("/storage", "Administrator")),
    (f"/nodes/{NODE}/qemu/7450/rrddata?timeframe=day", ("/vms/7450", "PVEAuditor"), ("/vms/7451", "PVEAuditor")),
    (f"/nodes/{NODE}/qemu/7450/status/current", ("/vms/7450", "PVEVMUser"), (f"/nodes/{NODE}", "Administrator")),
    (
        f"/nodes/{NODE}/storage/local/rrddata?timeframe=week&cf=MAX",
        ("/storage/local", "PVEDatastoreUser"),
        ("/storage/other", "PVEDatastoreAdmin"),
    ),
    (f"/nodes/{NODE}/network/eth0", (f"/nodes/{NODE}", "PVEAuditor"), ("/vms", "Administrator")),
]


def login(userid: str) -> Client:
    client = Client()
    password = ROOT_PASSWORD if userid == "root@pam" else PASSWORD
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client


@pytest.fixture(scope="module")
def root() -> User:
    for userid in ("sm-nobody@pve", "sm-holder@pve", "sm-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=User.objects.get(userid="root@pam"), password=PASSWORD)
    for vmid in (7450, 7451):
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"sm{vmid}"}).save()
    return User.objects.get(userid="root@pam")


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matrix(root, case):
    path, (held_path, held_role), (other_path, other_role) = case
    for entry in ACLEntry.objects.filter(ugid__in=["sm-holder@pve", "sm-other@pve"]):
        entry.delete()
    services.modify_acl(root, held_path, [held_role], users=["sm-holder@pve"])
    services.modify_acl(root, other_path, [other_role], users=["sm-other@pve"])
    clients = {userid: login(userid) for userid in ("sm-nobody@pve", "sm-other@pve", "sm-holder@pve", "root@pam")}
    before = replicator_client.status()["version"]  # after the logins (each one is in the cluster log)
    assert Client().get(f"{API}{path}").status_code == 401
    assert clients["sm-nobody@pve"].get(f"{API}{path}").status_code == 403
    assert clients["sm-other@pve"].get(f"{API}{path}").status_code == 403
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert clients["sm-holder@pve"].get(f"{API}{path}").status_code == 200
    assert clients["root@pam"].get(f"{API}{path}").status_code == 200


def test_the_network_list_shows_an_auditor_everything_and_others_their_usable_bridges(root):
    for entry in ACLEntry.objects.filter(ugid__in=["sm-holder@pve"]):
        entry.delete()
    services.modify_acl(root, f"/nodes/{NODE}", ["PVEAuditor"], users=["sm-holder@pve"])
    listed = login("sm-holder@pve").get(f"{API}/nodes/{NODE}/network").json()["data"]
    assert "eth0" in [entry["iface"] for entry in listed]
    assert login("sm-nobody@pve").get(f"{API}/nodes/{NODE}/network").json()["data"] == []
    assert Client().get(f"{API}/nodes/{NODE}/network").status_code == 401
    assert login("root@pam").get(f"{API}/nodes/{NODE}/network", {"type": "nonsense"}).status_code == 400
