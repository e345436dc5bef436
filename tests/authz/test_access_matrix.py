"""Permission matrix of the /access management endpoints, with Proxmox's descriptors.

For each endpoint: anonymous 401; a user without privileges 403; a user holding the privilege on
another object (or not all that is needed) 403; nothing changed by those (the cluster version
stays); the holder allowed, its change recorded in the cluster log as its own and in the same
change set; root@pam allowed (after the state is reset).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, APIToken, Group, GroupMember, Role, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
API = "/api2/json"
PASSWORD = "mx-password"
Grants = tuple[tuple[str, str], ...]  # (path, role)
USER_ADMIN = "PVEUserAdmin"  # User.Modify, Group.Allocate, Realm.AllocateUser


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    body: str
    holder: Grants
    other: Grants  # the privilege on another object, or only part of what is needed


CASES = [
    Case(
        "post",
        "/access/users",
        "userid=mx-new@pve",
        (("/access/realm/pve", USER_ADMIN), ("/access/groups", USER_ADMIN)),
        (("/access/realm/pam", USER_ADMIN), ("/access/groups", USER_ADMIN)),
    ),
    Case(  # no User.Modify on /access/groups: every group given must be delegated
        "post",
        "/access/users",
        "userid=mx-new@pve&groups=mx-group",
        (("/access/realm/pve", USER_ADMIN), ("/access/groups/mx-group", USER_ADMIN)),
        (("/access/realm/pve", USER_ADMIN), ("/access/groups/mx-other", USER_ADMIN)),
    ),
    Case(
        "get",
        "/access/users/mx-member@pve",
        "",
        (("/access/groups/mx-group", "PVEAuditor"),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
    Case(
        "put",
        "/access/users/mx-member@pve",
        "comment=x&groups=mx-group",
        (("/access/groups/mx-group", USER_ADMIN),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
    Case(  # without naming groups only User.Modify on /access/groups will do (Proxmox's rule)
        "put",
        "/access/users/mx-member@pve",
        "comment=x",
        (("/access/groups", USER_ADMIN),),
        (("/access/groups/mx-group", USER_ADMIN),),
    ),
    Case(
        "delete",
        "/access/users/mx-victim@pve",
        "",
        (("/access/realm/pve", USER_ADMIN), ("/access/groups", USER_ADMIN)),
        (("/access/realm/pam", USER_ADMIN), ("/access/groups", USER_ADMIN)),
    ),
    Case(
        "post",
        "/access/groups",
        "groupid=mx-newgroup",
        (("/access/groups", USER_ADMIN),),
        (("/access/groups/mx-group", USER_ADMIN),),
    ),
    Case(
        "put",
        "/access/groups/mx-group",
        "comment=renamed",
        (("/access/groups/mx-group", USER_ADMIN),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
    Case(
        "delete",
        "/access/groups/mx-doomed",
        "",
        (("/access/groups/mx-doomed", USER_ADMIN),),
        (("/access/groups/mx-group", USER_ADMIN),),
    ),
    Case(
        "post",
        "/access/roles",
        "roleid=MxRole&privs=VM.Audit",
        (("/access", "MxSysModify"),),
        (("/vms", "MxSysModify"),),
    ),
    Case("put", "/access/roles/MxOld", "privs=VM.Audit", (("/access", "MxSysModify"),), (("/vms", "MxSysModify"),)),
    Case("delete", "/access/roles/MxOld", "", (("/access", "MxSysModify"),), (("/", "PVEAdmin"),)),
    Case(
        "put",
        "/access/acl",
        "path=/vms/7300&roles=PVEVMUser&users=mx-target@pve",
        (("/vms/7300", "PVEVMAdmin"),),
        (("/vms/7301", "PVEVMAdmin"),),
    ),
    Case(  # VM.Allocate delegates below /vms only; /vms itself needs Permissions.Modify
        "put",
        "/access/acl",
        "path=/vms&roles=PVEVMUser&users=mx-target@pve",
        (("/vms", "Administrator"),),
        (("/vms", "PVEVMAdmin"),),
    ),
    Case(
        "post",
        "/access/users/mx-member@pve/token/t1",
        "privsep=0",
        (("/access/groups/mx-group", USER_ADMIN),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
    Case(
        "delete",
        "/access/users/mx-member@pve/token/old",
        "",
        (("/access/groups/mx-group", USER_ADMIN),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
    Case(
        "get",
        "/access/users/mx-member@pve/token",
        "",
        (("/access/groups/mx-group", USER_ADMIN),),
        (("/access/groups/mx-other", USER_ADMIN),),
    ),
]


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/access/ticket", {"username": userid, "password": password})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


def reset(root: User) -> None:
    """The same starting state for every call: the objects the cases act on, no grants."""
    for entry in ACLEntry.objects.filter(ugid__in=["mx-holder@pve", "mx-other@pve", "mx-target@pve"]):
        entry.delete()
    for userid in ("mx-nobody@pve", "mx-holder@pve", "mx-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    for groupid in ("mx-group", "mx-other", "mx-doomed"):
        if not Group.objects.filter(groupid=groupid).exists():
            services.add_group(groupid, actor=root)
    for userid in ("mx-target@pve", "mx-victim@pve", "mx-member@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root)
    services.modify_user("mx-member@pve", actor=root, groups=["mx-group"], comment="")
    if Group.objects.get(groupid="mx-group").comment:
        services.modify_group("mx-group", actor=root, comment="")
    if User.objects.filter(userid="mx-new@pve").exists():
        services.delete_user("mx-new@pve", actor=root)
    if Group.objects.filter(groupid="mx-newgroup").exists():
        services.delete_group("mx-newgroup", actor=root)
    for roleid, privs in (("MxSysModify", ["Sys.Modify"]), ("MxOld", ["Sys.Audit"])):
        role = Role.objects.filter(roleid=roleid).first()
        if role is None or role.privs != privs:
            services.save_role(roleid, privs, actor=root, create=role is None)
    if Role.objects.filter(roleid="MxRole").exists():
        services.delete_role("MxRole", actor=root)
    if APIToken.objects.filter(tokenid="mx-member@pve!t1").exists():
        services.delete_token("mx-member@pve!t1", actor=root)
    if not APIToken.objects.filter(tokenid="mx-member@pve!old").exists():
        services.add_token("mx-member@pve", "old", actor=root)


@pytest.fixture(scope="module")
def clients() -> dict[str, tuple[Client, str]]:
    root = User.objects.get(userid="root@pam")
    reset(root)
    everyone = {userid: login(userid) for userid in ("mx-nobody@pve", "mx-other@pve", "mx-holder@pve")}
    return {**everyone, "root@pam": login("root@pam", "test-root-password")}


def call(case: Case, client: Client, csrf: str = "") -> int:
    kwargs = {"content_type": "application/x-www-form-urlencoded"}
    if csrf:
        kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
    response = getattr(client, case.method)(f"{API}{case.path}", case.body, **kwargs)
    return response.status_code


def assert_audited_as(userid: str, before: int) -> None:
    """The change is one change set holding a cluster-log entry by ``userid`` (or nothing changed)."""
    now = replicator_client.status()["version"]
    if now == before:
        return
    assert now == before + 1, "one change set per request"
    assert ClusterLogEntry.objects.filter(version=now, user=userid).exists(), "not audited in the change set"


@pytest.mark.parametrize("case", CASES, ids=[f"{c.method} {c.path} {c.body}" for c in CASES])
def test_matrix(clients, case):
    root = User.objects.get(userid="root@pam")
    reset(root)
    for path, role in case.holder:
        services.modify_acl(root, path, [role], users=["mx-holder@pve"])
    for path, role in case.other:
        services.modify_acl(root, path, [role], users=["mx-other@pve"])
    before = replicator_client.status()["version"]
    assert call(case, Client()) == 401
    for userid in ("mx-nobody@pve", "mx-other@pve"):
        assert call(case, *clients[userid]) == 403, userid
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert call(case, *clients["mx-holder@pve"]) == 200
    assert_audited_as("mx-holder@pve", before)
    reset(root)
    before = replicator_client.status()["version"]
    assert call(case, *clients["root@pam"]) == 200
    assert_audited_as("root@pam", before)


def test_group_members_list_of_the_read(clients):
    """A holder of Sys.Audit on one group sees its members, and the listing shows only those and itself."""
    root = User.objects.get(userid="root@pam")
    reset(root)
    services.modify_acl(root, "/access/groups/mx-group", ["PVEAuditor"], users=["mx-holder@pve"])
    holder, _ = clients["mx-holder@pve"]
    listed = {u["userid"] for u in holder.get(f"{API}/access/users").json()["data"]}
    assert listed == {"mx-holder@pve"} | set(
        GroupMember.objects.filter(group_id="mx-group").values_list("user_id", flat=True)
    )
