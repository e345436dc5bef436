"""Permission matrix of the access-control admin pages (they call the same services as the API).

For each page: anonymous is sent to the login page; no privilege 403; the privilege on another
object (or only part of what is needed) 403; those change nothing; the holder's change is saved
with its cluster-log entry in its change set; root@pam's too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, APIToken, Group, Pool, Realm, Role, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
PASSWORD = "am-password"
LDAP = {"server1": "127.0.0.1", "base_dn": "dc=example,dc=org", "user_attr": "uid"}


@dataclass(frozen=True)
class Case:
    name: str
    url: str
    form: dict = field(hash=False)
    holder: tuple[tuple[str, str], ...]
    other: tuple[tuple[str, str], ...]


CASES = [
    Case(
        "add realm",
        "/admin/authz/realm/add/",
        {"realm": "amrealm", "type": "ldap", "comment": "", "options": json.dumps(LDAP)},
        (("/access/realm", "AmRealms"),),
        (("/access/realm/pve", "AmRealms"),),
    ),
    Case(
        "change realm",
        "/admin/authz/realm/amkeep/change/",
        {"comment": "changed", "options": json.dumps(LDAP)},
        (("/access/realm", "AmRealms"),),
        (("/access/realm/amkeep", "AmRealms"),),
    ),
    Case(
        "delete realm",
        "/admin/authz/realm/amkeep/delete/",
        {"post": "yes"},
        (("/", "AmRealms"),),
        (("/access", "PVEAdmin"),),
    ),
    Case(
        "add user",
        "/admin/authz/user/add/",
        {"userid": "am-new@pve", "enable": "on", "expire": "0", "new_password": "new-password"},
        (("/access/realm/pve", "PVEUserAdmin"), ("/access/groups", "PVEUserAdmin")),
        (("/access/realm/pam", "PVEUserAdmin"), ("/access/groups", "PVEUserAdmin")),
    ),
    Case(
        "change user",
        "/admin/authz/user/am-member@pve/change/",
        {"enable": "on", "expire": "0", "email": "m@example.org", "groups": ["am-group"]},
        (("/access/groups/am-group", "PVEUserAdmin"),),
        (("/access/groups/am-other", "PVEUserAdmin"),),
    ),
    Case(
        "delete user",
        "/admin/authz/user/am-member@pve/delete/",
        {"post": "yes"},
        (("/access/groups/am-group", "PVEUserAdmin"), ("/access/realm/pve", "PVEUserAdmin")),
        (("/access/groups/am-group", "PVEUserAdmin"), ("/access/realm/pam", "PVEUserAdmin")),
    ),
    Case(
        "add pool",
        "/admin/authz/pool/add/",
        {"poolid": "ampool", "comment": ""},
        (("/pool", "PVEPoolAdmin"),),
        (("/pool/amkeep", "PVEPoolAdmin"),),
    ),
    Case(
        "change pool",
        "/admin/authz/pool/amkeep/change/",
        {"comment": "changed"},
        (("/pool/amkeep", "PVEPoolAdmin"),),
        (("/pool/amother", "PVEPoolAdmin"),),
    ),
    Case(
        "delete pool",
        "/admin/authz/pool/amkeep/delete/",
        {"post": "yes"},
        (("/pool/amkeep", "PVEPoolAdmin"),),
        (("/pool/amother", "PVEPoolAdmin"),),
    ),
    Case(
        "add group",
        "/admin/authz/group/add/",
        {"groupid": "am-newgroup", "comment": ""},
        (("/access/groups", "PVEUserAdmin"),),
        (("/access/groups/am-group", "PVEUserAdmin"),),
    ),
    Case(
        "change group members",
        "/admin/authz/group/am-group/change/",
        {"comment": "", "members": ["am-member@pve", "am-target@pve"]},
        (("/access/groups/am-group", "PVEUserAdmin"), ("/access/groups/am-other", "PVEUserAdmin")),
        (("/access/groups/am-group", "AmGroupAllocate"),),
    ),
    Case(
        "delete group",
        "/admin/authz/group/am-doomed/delete/",
        {"post": "yes"},
        (("/access/groups/am-doomed", "PVEUserAdmin"),),
        (("/access/groups/am-group", "PVEUserAdmin"),),
    ),
    Case(
        "add role",
        "/admin/authz/role/add/",
        {"roleid": "AmNewRole", "privileges": ["VM.Audit"]},
        (("/access", "AmSysModify"),),
        (("/vms", "AmSysModify"),),
    ),
    Case(
        "change role",
        "/admin/authz/role/AmOld/change/",
        {"privileges": ["VM.Audit"]},
        (("/access", "AmSysModify"),),
        (("/vms", "AmSysModify"),),
    ),
    Case(
        "delete role",
        "/admin/authz/role/AmOld/delete/",
        {"post": "yes"},
        (("/access", "AmSysModify"),),
        (("/vms", "AmSysModify"),),
    ),
    Case(
        "add ACL entry",
        "/admin/authz/aclentry/add/",
        {"path": "/vms/7300", "type": "user", "ugid": "am-target@pve", "roleid": "PVEVMUser", "propagate": "on"},
        (("/", "Administrator"),),
        (("/vms", "Administrator"),),
    ),
    Case(
        "delete token",
        "/admin/authz/apitoken/am-member@pve!old/delete/",
        {"post": "yes"},
        (("/access/groups/am-group", "PVEUserAdmin"),),
        (("/access/groups/am-other", "PVEUserAdmin"),),
    ),
]


def reset(root: User) -> None:
    for entry in ACLEntry.objects.filter(ugid__in=["am-holder@pve", "am-other@pve", "am-target@pve"]):
        entry.delete()
    for roleid, privs in (
        ("AmRealms", ["Realm.Allocate", "Sys.Audit"]),
        ("AmSysModify", ["Sys.Modify", "Sys.Audit"]),
        ("AmGroupAllocate", ["Group.Allocate"]),
        ("AmOld", ["Sys.Audit"]),
    ):
        role = Role.objects.filter(roleid=roleid).first()
        if role is None or role.privs != privs:
            services.save_role(roleid, privs, actor=root, create=role is None)
    if Role.objects.filter(roleid="AmNewRole").exists():
        services.delete_role("AmNewRole", actor=root)
    for userid in ("am-nobody@pve", "am-holder@pve", "am-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    for groupid in ("am-group", "am-other", "am-doomed"):
        if not Group.objects.filter(groupid=groupid).exists():
            services.add_group(groupid, actor=root)
    if Group.objects.filter(groupid="am-newgroup").exists():
        services.delete_group("am-newgroup", actor=root)
    for userid in ("am-member@pve", "am-target@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root)
    if User.objects.filter(userid="am-new@pve").exists():
        services.delete_user("am-new@pve", actor=root)
    services.modify_user("am-member@pve", actor=root, groups=["am-group"], email="")
    services.modify_user("am-target@pve", actor=root, groups=["am-other"])
    if not APIToken.objects.filter(tokenid="am-member@pve!old").exists():
        services.add_token("am-member@pve", "old", actor=root)
    for realm in ("amrealm",):
        if Realm.objects.filter(realm=realm).exists():
            services.delete_realm(realm, actor=root)
    if not Realm.objects.filter(realm="amkeep").exists():
        services.add_realm("amkeep", "ldap", actor=root, options=LDAP)
    services.modify_realm("amkeep", actor=root, comment="")
    for poolid in ("amkeep", "amother"):
        if not Pool.objects.filter(poolid=poolid).exists():
            services.add_pool(poolid, actor=root)
    if Pool.objects.filter(poolid="ampool").exists():
        services.delete_pool("ampool", actor=root)
    services.modify_pool("amkeep", actor=root, comment="")


def admin_login(userid: str, password: str = PASSWORD) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": userid, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


@pytest.fixture(scope="module")
def clients() -> dict[str, Client]:
    reset(User.objects.get(userid="root@pam"))
    people = {userid: admin_login(userid) for userid in ("am-nobody@pve", "am-other@pve", "am-holder@pve")}
    return {**people, "root@pam": admin_login("root@pam", "test-root-password")}


def version() -> int:
    return replicator_client.status()["version"]


def assert_saved_by(userid: str, before: int, response) -> None:
    assert response.status_code == 302 and "/login/" not in response["Location"], response.content[:2000]
    now = version()
    assert now == before + 1, "one change set"
    assert ClusterLogEntry.objects.filter(version=now, user=userid).exists(), "audited in its change set"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_admin_matrix(clients, case):
    root = User.objects.get(userid="root@pam")
    reset(root)
    for path, role in case.holder:
        services.modify_acl(root, path, [role], users=["am-holder@pve"])
    for path, role in case.other:
        services.modify_acl(root, path, [role], users=["am-other@pve"])
    before = version()
    anonymous = Client().post(case.url, case.form)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous["Location"]
    for userid in ("am-nobody@pve", "am-other@pve"):
        response = clients[userid].post(case.url, case.form)
        # 403, or for an object the user may not even see, the admin's "does not exist" back to the index
        refused = response.status_code == 403 or (response.status_code == 302 and response["Location"] == "/admin/")
        assert refused, (userid, response.status_code, response.content[:500])
    assert version() == before, "a refused request changed something"
    assert_saved_by("am-holder@pve", before, clients["am-holder@pve"].post(case.url, case.form))
    reset(root)
    before = version()
    assert_saved_by("root@pam", before, clients["root@pam"].post(case.url, case.form))
