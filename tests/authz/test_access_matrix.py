"""Permission matrix of the /access management endpoints: anonymous, no privilege, a privilege on
another object, the privilege, root. Every refusal changes nothing (the cluster version stays)."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import access
from authz.models import User
from replicator import client as replicator_client

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"

# (method, path, body, privilege path for "holder", role for "holder", role on another object)
CASES = [
    ("post", "/access/users", "userid=mx-new@pve", "/access/realm/pve", "PVEUserAdmin", "/access/realm/pam"),
    ("put", "/access/users/mx-target@pve", "comment=x", "/access/groups", "PVEUserAdmin", "/access/groups/other"),
    ("delete", "/access/users/mx-victim@pve", "", "/", "PVEUserAdmin", "/access/groups/other"),
    ("post", "/access/groups", "groupid=mx-newgroup", "/access/groups", "PVEUserAdmin", "/vms"),
    ("delete", "/access/groups/mx-group", "", "/access/groups/mx-group", "PVEUserAdmin", "/access/groups/other"),
    ("post", "/access/roles", "roleid=MxRole&privs=VM.Audit", "/access", "PVESysAdmin-like", "/vms"),
    (
        "put",
        "/access/acl",
        "path=/vms/7300&roles=PVEVMUser&users=mx-target@pve",
        "/vms/7300",
        "PVEVMAdmin",
        "/vms/7301",
    ),
    ("post", "/access/users/mx-target@pve/token/t1", "", "/access/groups", "PVEUserAdmin", "/access/groups/other"),
]


def login(userid: str, password: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def people():
    root = User.objects.get(userid="root@pam")
    if not User.objects.filter(userid="mx-nobody@pve").exists():
        access.add_user("mx-nobody@pve", password="mx-password")
        access.add_user("mx-target@pve")
        access.add_group("mx-group")
        access.save_role("PVESysAdmin-like", ["Sys.Modify", "Sys.Audit"], create=True)
    for kind in ("holder", "other"):
        userid = f"mx-{kind}@pve"
        if not User.objects.filter(userid=userid).exists():
            access.add_user(userid, password="mx-password")
    return root


def setup_case(root, case):
    _method, _path, _body, holder_path, role, other_path = case
    for userid in ("mx-victim@pve",):
        if not User.objects.filter(userid=userid).exists():
            access.add_user(userid)
    from authz.models import ACLEntry, Group, Role

    for entry in ACLEntry.objects.filter(ugid__in=["mx-holder@pve", "mx-other@pve"]):
        entry.delete()
    if not Group.objects.filter(groupid="mx-group").exists():
        access.add_group("mx-group")
    for stale in ("MxRole",):
        if Role.objects.filter(roleid=stale).exists():
            access.delete_role(stale)
    access.modify_acl(root, holder_path, [role], users=["mx-holder@pve"])
    access.modify_acl(root, other_path, [role], users=["mx-other@pve"])


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_matrix(people, case):
    method, path, body, *_ = case
    setup_case(people, case)

    def call(client: Client, csrf: str = "") -> int:
        kwargs = {"content_type": "application/x-www-form-urlencoded"}
        if csrf:
            kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
        return getattr(client, method)(f"{API}{path}", body, **kwargs).status_code

    clients = {userid: login(userid, "mx-password") for userid in ("mx-nobody@pve", "mx-other@pve", "mx-holder@pve")}
    before = replicator_client.status()["version"]  # after the logins, which the cluster log records
    assert call(Client()) == 401
    for userid in ("mx-nobody@pve", "mx-other@pve"):
        assert call(*clients[userid]) == 403, userid
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert call(*clients["mx-holder@pve"]) == 200
