"""Issue 9 items 1-3: acting as another user through a token, group delegation, root@pam's own rules.

Each refusal is checked to change nothing (the cluster version stays), and the allowed path to
still work, through the API, ``pveum`` and the admin alike.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.exceptions import AccessDenied
from authz.models import ACLEntry, APIToken, Group, GroupMember, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client
from tests.harness import manage

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
API = "/api2/json"
PASSWORD = "esc-password"
FORM = "application/x-www-form-urlencoded"


def login(userid: str, password: str = PASSWORD) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/access/ticket", {"username": userid, "password": password})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


def call(who: tuple[Client, str], method: str, path: str, body: str = ""):
    client, csrf = who
    return getattr(client, method)(f"{API}{path}", body, content_type=FORM, HTTP_CSRFPREVENTIONTOKEN=csrf)


def version() -> int:
    return replicator_client.status()["version"]


@pytest.fixture(scope="module")
def root() -> User:
    return User.objects.get(userid="root@pam")


@pytest.fixture(scope="module")
def root_client() -> tuple[Client, str]:
    return login("root@pam", "test-root-password")


def ensure_user(root: User, userid: str, *, password: str | None = PASSWORD, groups: tuple[str, ...] = ()) -> None:
    if not User.objects.filter(userid=userid).exists():
        services.add_user(userid, actor=root, password=password)
    for groupid in groups:
        if not GroupMember.objects.filter(group_id=groupid, user_id=userid).exists():
            services.modify_user(userid, actor=root, groups=[groupid], append=True)


def ensure_group(root: User, groupid: str) -> None:
    if not Group.objects.filter(groupid=groupid).exists():
        services.add_group(groupid, actor=root)


# --- item 1: a user id with '!' and the token that acted as root@pam ---------------------------


def test_a_user_name_with_an_exclamation_mark_is_refused_by_the_api(root_client):
    before = version()
    response = call(root_client, "post", "/access/users", "userid=root@pam!a@pve&password=escalate-me")
    assert response.status_code == 400 and "invalid user id 'root@pam!a@pve'" in response.json()["message"]
    assert call(root_client, "post", "/access/users/root@pam!a@pve/token/tk", "privsep=0").status_code == 400
    assert version() == before and not User.objects.filter(userid="root@pam!a@pve").exists()


def test_a_user_name_with_an_exclamation_mark_is_refused_by_pveum(node_env):
    before = version()
    result = manage(node_env, "pveum", "user", "add", "root@pam!a@pve", check=False)
    assert result.returncode != 0 and "invalid user id 'root@pam!a@pve'" in result.stderr
    assert version() == before


def test_a_user_name_with_an_exclamation_mark_is_refused_by_the_admin():
    page = admin_client("root@pam", "test-root-password")
    before = version()  # after the login, which the cluster log records
    response = page.post("/admin/authz/user/add/", {"userid": "root@pam!a@pve", "enable": "on", "expire": "0"})
    assert response.status_code == 200 and b"invalid user id" in response.content
    assert version() == before and not User.objects.filter(userid="root@pam!a@pve").exists()


def test_a_token_acts_with_its_users_privileges_and_no_more(root, root_client):
    """The attack of item 1 without the bad name: a user's own privsep=0 token holds exactly its user's privileges."""
    ensure_user(root, "esc-self@pve")
    for entry in ACLEntry.objects.filter(ugid="esc-self@pve"):
        entry.delete()
    services.modify_acl(root, "/vms", ["PVEAuditor"], users=["esc-self@pve"])
    if APIToken.objects.filter(tokenid="esc-self@pve!tk").exists():
        services.delete_token("esc-self@pve!tk", actor=root)
    me = login("esc-self@pve")
    created = call(me, "post", "/access/users/esc-self@pve/token/tk", "privsep=0")
    assert created.status_code == 200, created.content
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=esc-self@pve!tk={created.json()['data']['value']}"}
    before = version()
    grant = Client().put(
        f"{API}/access/acl", "path=/&roles=Administrator&users=esc-self@pve", content_type=FORM, **header
    )
    assert grant.status_code == 403
    assert version() == before
    assert Client().get(f"{API}/cluster/status", **header).status_code == 403  # no Sys.Audit on /
    assert Client().get(f"{API}/nodes/testnode/qemu", **header).status_code == 200  # what its user holds


# --- item 2: group delegation ----------------------------------------------------------------


@pytest.fixture(scope="module")
def delegation_world(root):
    """esc-ops-admin holds PVEUserAdmin on group esc-ops only; esc-worker is in esc-ops; esc-admins is Administrator on /."""
    for groupid in ("esc-ops", "esc-admins", "esc-other"):
        ensure_group(root, groupid)
    ensure_user(root, "esc-ops-admin@pve", groups=("esc-ops",))
    ensure_user(root, "esc-worker@pve", groups=("esc-ops",))
    for entry in ACLEntry.objects.filter(ugid__in=["esc-ops-admin@pve", "esc-admins", "esc-ops"]):
        entry.delete()
    services.modify_acl(root, "/access/groups/esc-ops", ["PVEUserAdmin"], users=["esc-ops-admin@pve"])
    services.modify_acl(root, "/", ["Administrator"], groups=["esc-admins"])
    return login("esc-ops-admin@pve")


def groups_of(userid: str) -> set[str]:
    return set(GroupMember.objects.filter(user_id=userid).values_list("group_id", flat=True))


def test_user_modify_on_one_group_does_not_allow_setting_other_groups(delegation_world):
    delegate = delegation_world
    before = version()
    for body in ("groups=esc-ops,esc-admins", "groups=esc-admins&append=1", "groups=esc-ops,esc-other"):
        response = call(delegate, "put", "/access/users/esc-worker@pve", body)
        assert response.status_code == 403, (body, response.content)
    assert version() == before and groups_of("esc-worker@pve") == {"esc-ops"}
    ok = call(delegate, "put", "/access/users/esc-worker@pve", "groups=esc-ops&comment=still+here")
    assert ok.status_code == 200 and User.objects.get(userid="esc-worker@pve").comment == "still here"


def test_removing_a_user_from_a_group_needs_user_modify_on_that_group(root, delegation_world):
    services.modify_user("esc-worker@pve", actor=root, groups=["esc-other"], append=True)
    try:
        before = version()
        response = call(delegation_world, "put", "/access/users/esc-worker@pve", "groups=esc-ops")
        assert response.status_code == 403 and "/access/groups/esc-other" in response.json()["message"]
        assert version() == before and groups_of("esc-worker@pve") == {"esc-ops", "esc-other"}
    finally:
        services.modify_user("esc-worker@pve", actor=root, groups=["esc-ops"])


def test_a_delegated_admin_never_adds_itself(root, delegation_world):
    services.modify_acl(root, "/access/groups/esc-other", ["PVEUserAdmin"], users=["esc-ops-admin@pve"])
    try:
        before = version()
        response = call(delegation_world, "put", "/access/users/esc-ops-admin@pve", "groups=esc-other&append=1")
        assert response.status_code == 403 and "cannot add itself" in response.json()["message"]
        assert version() == before and groups_of("esc-ops-admin@pve") == {"esc-ops"}
        # even with User.Modify on every group
        services.modify_acl(root, "/access/groups", ["PVEUserAdmin"], users=["esc-ops-admin@pve"])
        before = version()
        response = call(delegation_world, "put", "/access/users/esc-ops-admin@pve", "groups=esc-admins&append=1")
        assert response.status_code == 403
        assert version() == before and groups_of("esc-ops-admin@pve") == {"esc-ops"}
    finally:
        services.modify_acl(
            root, "/access/groups/esc-other", ["PVEUserAdmin"], users=["esc-ops-admin@pve"], delete=True
        )
        services.modify_acl(root, "/access/groups", ["PVEUserAdmin"], users=["esc-ops-admin@pve"], delete=True)


def admin_client(userid: str, password: str = PASSWORD) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": userid, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


def test_group_allocate_in_the_admin_does_not_move_members(root, delegation_world):
    """Group.Allocate on a group edits its comment; its members need User.Modify, and never oneself."""
    ensure_user(root, "esc-galloc@pve")
    ensure_user(root, "esc-outsider@pve")
    for entry in ACLEntry.objects.filter(ugid="esc-galloc@pve"):
        entry.delete()
    services.modify_acl(root, "/access/groups/esc-admins", ["EscGroupAllocate"], users=["esc-galloc@pve"])
    page = admin_client("esc-galloc@pve")
    before = version()
    for members in (["esc-galloc@pve"], ["esc-outsider@pve"], ["esc-worker@pve"]):
        response = page.post(
            "/admin/authz/group/esc-admins/change/", {"comment": "", "members": members, "_loaded_version": ""}
        )
        assert response.status_code == 403, members
    assert version() == before and not GroupMember.objects.filter(group_id="esc-admins").exists()
    response = page.post("/admin/authz/group/esc-admins/change/", {"comment": "the admins", "members": []})
    assert response.status_code == 302
    assert not GroupMember.objects.filter(group_id="esc-admins").exists()


@pytest.fixture(scope="module", autouse=True)
def group_allocate_role(root):
    from authz.models import Role

    if not Role.objects.filter(roleid="EscGroupAllocate").exists():
        services.save_role("EscGroupAllocate", ["Group.Allocate"], actor=root, create=True)


def test_the_user_page_applies_the_same_group_rules(root, delegation_world):
    delegate = admin_client("esc-ops-admin@pve")
    before = version()
    form = {"enable": "on", "expire": "0", "groups": ["esc-ops", "esc-admins"], "_loaded_version": ""}
    response = delegate.post("/admin/authz/user/esc-worker@pve/change/", form)
    assert response.status_code == 403
    response = delegate.post("/admin/authz/user/esc-ops-admin@pve/change/", form)
    assert response.status_code == 403
    assert version() == before and groups_of("esc-worker@pve") == {"esc-ops"}
    response = delegate.post(
        "/admin/authz/user/esc-worker@pve/change/", {**form, "groups": ["esc-ops"], "email": "w@example.org"}
    )
    assert response.status_code == 302
    assert User.objects.get(userid="esc-worker@pve").email == "w@example.org"


# --- item 3: root@pam is root@pam's alone ---------------------------------------------------


@pytest.fixture(scope="module")
def boss(root):
    """A user holding Administrator on /: every privilege, yet not root@pam."""
    ensure_user(root, "esc-boss@pve")
    services.modify_acl(root, "/", ["Administrator"], users=["esc-boss@pve"])
    return login("esc-boss@pve")


def test_only_root_changes_root_account_tokens_and_acls(root, boss, root_client):
    if not APIToken.objects.filter(tokenid="root@pam!keep").exists():
        services.add_token("root@pam", "keep", actor=root)
    before = version()
    refused = [
        ("put", "/access/users/root@pam", "comment=owned&groups=esc-ops"),
        ("put", "/access/users/root@pam", "enable=0"),
        ("post", "/access/users/root@pam/token/evil", "privsep=0"),
        ("delete", "/access/users/root@pam/token/keep", ""),
        ("put", "/access/acl", "path=/&roles=NoAccess&users=root@pam"),
        ("put", "/access/acl", "path=/vms&roles=Administrator&tokens=root@pam!keep"),
    ]
    for method, path, body in refused:
        response = call(boss, method, path, body)
        assert response.status_code == 403, (method, path, response.content)
    assert version() == before
    assert not APIToken.objects.filter(tokenid="root@pam!evil").exists()
    assert User.objects.get(userid="root@pam").comment != "owned"
    # root@pam itself may
    created = call(root_client, "post", "/access/users/root@pam/token/evil", "privsep=1")
    assert created.status_code == 200
    assert call(root_client, "delete", "/access/users/root@pam/token/evil").status_code == 200
    entry = ClusterLogEntry.objects.filter(user="root@pam", msg="removed API token 'root@pam!evil'").first()
    assert entry is not None and entry.version == version()


def test_a_root_token_is_not_root(root):
    """A privsep=0 token of root@pam holds every privilege but is not root@pam for root@pam's own rules."""
    if APIToken.objects.filter(tokenid="root@pam!full").exists():
        services.delete_token("root@pam!full", actor=root)
    _token, secret = services.add_token("root@pam", "full", actor=root, privsep=False)
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=root@pam!full={secret}"}
    before = version()
    response = Client().post(f"{API}/access/users/root@pam/token/more", "privsep=0", content_type=FORM, **header)
    assert response.status_code == 403 and version() == before
    assert Client().get(f"{API}/cluster/status", **header).status_code == 200  # otherwise every privilege
    # what it does is recorded as the token, in the change set of the change
    if Group.objects.filter(groupid="esc-by-token").exists():
        services.delete_group("esc-by-token", actor=root)
    created = Client().post(f"{API}/access/groups", "groupid=esc-by-token", content_type=FORM, **header)
    assert created.status_code == 200
    entry = ClusterLogEntry.objects.get(msg="added group 'esc-by-token'", version=version())
    assert entry.user == "root@pam!full"


def test_root_password_changed_by_root_only_in_the_admin(root, boss):
    page = admin_client("esc-boss@pve")
    before = version()  # after the login, which the cluster log records
    response = page.post(
        "/admin/authz/user/root@pam/change/",
        {"enable": "on", "expire": "0", "new_password": "taken-over", "_loaded_version": ""},
    )
    assert response.status_code == 403 and version() == before
    with pytest.raises(AccessDenied):
        services.set_password("root@pam", "taken-over", actor=User.objects.get(userid="esc-boss@pve"))
    assert version() == before
    assert Client().post(f"{API}/access/ticket", {"username": "root@pam", "password": "taken-over"}).status_code == 401


def test_ticket_renewal_for_another_user_only_with_roots_ticket(root, boss, root_client):
    """Proxmox: a valid ticket renews itself; root@pam's ticket (only) gets one for another user."""
    boss_ticket = boss[0].cookies["PVEAuthCookie"].value
    root_ticket = root_client[0].cookies["PVEAuthCookie"].value
    ensure_user(root, "esc-worker@pve")
    other = Client().post(f"{API}/access/ticket", {"username": "esc-worker@pve", "password": boss_ticket})
    assert other.status_code == 401
    renewed = Client().post(f"{API}/access/ticket", {"username": "esc-boss@pve", "password": boss_ticket})
    assert renewed.status_code == 200 and renewed.json()["data"]["username"] == "esc-boss@pve"
    by_root = Client().post(f"{API}/access/ticket", {"username": "esc-worker", "realm": "pve", "password": root_ticket})
    assert by_root.status_code == 200 and by_root.json()["data"]["username"] == "esc-worker@pve"
