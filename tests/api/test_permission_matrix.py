"""Permission matrix of the node, cluster, VM and task endpoints with real ACLs.

For each endpoint: anonymous 401; a user without privileges 403; a user holding the privilege on
another object 403; a user holding it on the object (or a parent, propagated) allowed; root
allowed. Refusals change nothing (the cluster version stays).
"""

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
PASSWORD = "matrix-password"

# method, path template, body, (path, role) for the holder, (path, role) elsewhere
CASES = [
    ("get", "/cluster/status", "", ("/", "PVEAuditor"), ("/vms", "PVEAuditor")),
    ("get", f"/nodes/{NODE}/qemu/7400", "", ("/vms/7400", "PVEAuditor"), ("/vms/7401", "PVEAuditor")),
    ("get", f"/nodes/{NODE}/qemu/7400/config", "", ("/vms", "PVEAuditor"), ("/vms/7401", "PVEVMAdmin")),
    ("get", f"/nodes/{NODE}/qemu/7400/status/current", "", ("/vms/7400", "PVEVMUser"), ("/storage", "Administrator")),
    (
        "put",
        f"/nodes/{NODE}/qemu/7400/config",
        "description=matrix",
        ("/vms/7400", "PVEVMAdmin"),
        ("/vms/7401", "PVEVMAdmin"),
    ),
    ("post", f"/nodes/{NODE}/qemu", "vmid=7402&name=m", ("/vms", "PVEVMAdmin"), ("/vms/7401", "PVEVMAdmin")),
    ("delete", f"/nodes/{NODE}/qemu/7403", "", ("/vms/7403", "PVEVMAdmin"), ("/vms/7401", "PVEVMAdmin")),
]


def login(userid: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def root() -> User:
    for userid in ("pm-nobody@pve", "pm-holder@pve", "pm-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=User.objects.get(userid="root@pam"), password=PASSWORD)
    for vmid in (7400, 7401, 7403):
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"pm{vmid}"}).save()
    return User.objects.get(userid="root@pam")


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_matrix(root, case):
    method, path, body, (held_path, held_role), (other_path, other_role) = case
    for entry in ACLEntry.objects.filter(ugid__in=["pm-holder@pve", "pm-other@pve"]):
        entry.delete()
    services.modify_acl(root, held_path, [held_role], users=["pm-holder@pve"])
    services.modify_acl(root, other_path, [other_role], users=["pm-other@pve"])
    clients = {userid: login(userid) for userid in ("pm-nobody@pve", "pm-other@pve", "pm-holder@pve")}

    def call(client: Client, csrf: str = "") -> int:
        kwargs = {"content_type": "application/x-www-form-urlencoded"}
        if csrf:
            kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
        return getattr(client, method)(f"{API}{path}", body, **kwargs).status_code

    before = replicator_client.status()["version"]
    assert call(Client()) == 401
    assert call(*clients["pm-nobody@pve"]) == 403
    assert call(*clients["pm-other@pve"]) == 403
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert call(*clients["pm-holder@pve"]) == 200


def test_lists_are_filtered_not_refused(root):
    for entry in ACLEntry.objects.filter(ugid="pm-holder@pve"):
        entry.delete()
    services.modify_acl(root, "/vms/7401", ["PVEAuditor"], users=["pm-holder@pve"])
    holder, _ = login("pm-holder@pve")
    listed = {vm["vmid"] for vm in holder.get(f"{API}/nodes/{NODE}/qemu").json()["data"]}
    assert 7401 in listed and 7400 not in listed
    nobody, _ = login("pm-nobody@pve")
    assert nobody.get(f"{API}/nodes/{NODE}/qemu").json()["data"] == []
    nodes = nobody.get(f"{API}/nodes").json()["data"]
    assert all("maxmem" not in node for node in nodes)  # no Sys.Audit: no node statistics
