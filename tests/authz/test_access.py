"""Access control end to end: pveum, user.cfg, ACLs in force on the API, API tokens, delegation."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.exceptions import AccessError
from authz.models import ACLEntry, APIToken, GroupMember, Role, User
from replicator import client as replicator_client
from tests.harness import manage
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"


def pveum(node_env, *args: str, check: bool = True):
    return manage(node_env, "pveum", *args, check=check)


def login(username: str, password: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/access/ticket", {"username": username, "password": password})
    assert response.status_code == 200, response.content
    data = response.json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def world(node_env):
    """dave (member of ops, PVEVMUser on VM 7100 only), erin (VM.Allocate on /vms), two VMs."""
    for vmid in (7100, 7101):
        if not VM.objects.filter(vmid=vmid).exists():
            VM(vmid=vmid, node_id=NODE, config={"name": f"acl{vmid}", "memory": "512"}).save()
    if not User.objects.filter(userid="dave@pve").exists():
        pveum(node_env, "user", "add", "dave@pve", "--email", "dave@example.com")
        pveum(node_env, "group", "add", "ops", "--comment", "operators")
        pveum(node_env, "user", "modify", "dave@pve", "--groups", "ops")
        pveum(node_env, "role", "add", "Watcher", "--privs", "VM.Audit,Sys.Audit")
        pveum(node_env, "acl", "modify", "/vms/7100", "--roles", "PVEVMUser", "--groups", "ops")
        services.add_user("erin@pve", actor=User.objects.get(userid="root@pam"), password="erin-password")
        pveum(node_env, "acl", "modify", "/vms", "--roles", "PVEVMAdmin", "--users", "erin@pve")
        dave = User.objects.get(userid="dave@pve")
        dave.set_password("dave-password")
        dave.save()
    return {"dave": login("dave@pve", "dave-password"), "erin": login("erin@pve", "erin-password")}


def vm_list(client: Client) -> set[int]:
    response = client.get(f"{API}/nodes/{NODE}/qemu")
    assert response.status_code == 200, response.content
    return {vm["vmid"] for vm in response.json()["data"]}


def test_pveum_writes_user_cfg_in_proxmox_format(world, etc_dir):
    replicator_client.wait_mirror(replicator_client.status()["version"])
    text = (etc_dir / "user.cfg").read_text()
    assert "user:dave@pve:1:0:::dave@example.com:::" in text
    assert "group:ops:dave@pve:operators:" in text
    assert "role:Watcher:Sys.Audit,VM.Audit:" in text
    assert "acl:1:/vms/7100:@ops:PVEVMUser:" in text
    assert "acl:1:/vms:erin@pve:PVEVMAdmin:" in text


def test_listing_and_reading_are_restricted_by_the_acl(world):
    dave, _ = world["dave"]
    listed = vm_list(dave)
    assert 7100 in listed and 7101 not in listed
    assert dave.get(f"{API}/nodes/{NODE}/qemu/7100/config").status_code == 200
    denied = dave.get(f"{API}/nodes/{NODE}/qemu/7101/config")
    assert denied.status_code == 403 and "Permission check failed (/vms/7101, VM.Audit)" in denied.json()["message"]
    erin, _ = world["erin"]
    assert {7100, 7101} <= vm_list(erin)


def test_a_privilege_on_another_object_does_not_allow_a_change(world):
    dave, csrf = world["dave"]
    before = VM.objects.get(vmid=7101).version
    response = dave.put(
        f"{API}/nodes/{NODE}/qemu/7101/config",
        "memory=1024",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert response.status_code == 403
    # and PVEVMUser on 7100 has no VM.Config.Memory either
    response = dave.put(
        f"{API}/nodes/{NODE}/qemu/7100/config",
        "memory=1024",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert response.status_code == 403
    assert VM.objects.get(vmid=7101).version == before
    erin, erin_csrf = world["erin"]
    response = erin.put(
        f"{API}/nodes/{NODE}/qemu/7101/config",
        "memory=1024",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=erin_csrf,
    )
    assert response.status_code == 200, response.content
    assert VM.objects.get(vmid=7101).config["memory"] == "1024"


def test_revoking_takes_effect_at_once(world, node_env):
    dave, _ = world["dave"]
    assert 7100 in vm_list(dave)
    pveum(node_env, "acl", "delete", "/vms/7100", "--roles", "PVEVMUser", "--groups", "ops")
    assert 7100 not in vm_list(dave)
    pveum(node_env, "acl", "modify", "/vms/7100", "--roles", "PVEVMUser", "--groups", "ops")
    assert 7100 in vm_list(dave)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("acl", "modify", "/vms/99", "--roles", "PVEVMUser", "--users", "dave@pve"), "invalid ACL path"),
        (("acl", "modify", "/nonsense", "--roles", "PVEVMUser", "--users", "dave@pve"), "invalid ACL path"),
        (("acl", "modify", "/vms", "--roles", "NoSuchRole", "--users", "dave@pve"), "role 'NoSuchRole' does not exist"),
        (("acl", "modify", "/vms", "--roles", "PVEVMUser", "--users", "ghost@pve"), "user 'ghost@pve' does not exist"),
        (("role", "add", "Bad", "--privs", "VM.Audit,VM.Fly"), "invalid privilege name(s): VM.Fly"),
        (("role", "modify", "PVEAdmin", "--privs", "VM.Audit"), "cannot modify special role 'PVEAdmin'"),
        (("user", "add", "bad user@pve"), "invalid user id"),
        (("user", "add", "zed@nowhere"), "domain 'nowhere' does not exist"),
        (("user", "delete", "root@pam"), "cannot be removed"),
    ],
)
def test_bad_input_is_a_clear_error_and_changes_nothing(world, node_env, args, message):
    before = replicator_client.status()["version"]
    result = pveum(node_env, *args, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert replicator_client.status()["version"] == before


def test_delegation_never_exceeds_the_granter(world):
    erin = User.objects.get(userid="erin@pve")  # PVEVMAdmin on /vms, no Permissions.Modify
    with pytest.raises(AccessError, match=r"requires 'Permissions\.Modify' or superset of privileges"):
        services.modify_acl(erin, "/vms/7100", ["Administrator"], users=["dave@pve"])
    with pytest.raises(AccessError, match="NoAccess"):
        services.modify_acl(erin, "/vms/7100", ["NoAccess"], users=["dave@pve"])
    with pytest.raises(AccessError, match=r"Permissions\.Modify"):
        services.modify_acl(erin, "/storage", ["PVEAuditor"], users=["dave@pve"])
    services.modify_acl(erin, "/vms/7101", ["PVEVMUser"], users=["dave@pve"])  # a subset of what she holds
    assert ACLEntry.objects.filter(path="/vms/7101", ugid="dave@pve", roleid="PVEVMUser").exists()
    services.modify_acl(erin, "/vms/7101", ["PVEVMUser"], users=["dave@pve"], delete=True)
    assert not ACLEntry.objects.filter(path="/vms/7101", ugid="dave@pve").exists()


def test_api_tokens_privilege_separated_revocable_and_disabled_with_their_user(world, node_env):
    result = pveum(node_env, "user", "token", "add", "erin@pve", "ci")
    secret = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("value: "))
    assert secret not in APIToken.objects.get(tokenid="erin@pve!ci").secret_hash
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=erin@pve!ci={secret}"}
    client = Client()
    assert client.get(f"{API}/nodes/{NODE}/qemu", **header).json()["data"] == []  # privsep: no ACL of its own
    pveum(node_env, "acl", "modify", "/vms", "--roles", "PVEAuditor", "--tokens", "erin@pve!ci")
    assert {7100, 7101} <= {vm["vmid"] for vm in client.get(f"{API}/nodes/{NODE}/qemu", **header).json()["data"]}
    other_last = "1" if secret.endswith("0") else "0"  # always a different secret (it was the same 1 time in 16)
    wrong = {"HTTP_AUTHORIZATION": f"PVEAPIToken=erin@pve!ci={secret[:-1]}{other_last}"}
    assert client.get(f"{API}/nodes/{NODE}/qemu", **wrong).status_code == 401
    # a token with more roles than its user is still held to the user (privilege separation)
    pveum(node_env, "acl", "modify", "/", "--roles", "Administrator", "--tokens", "erin@pve!ci")
    assert client.get(f"{API}/nodes", **header).status_code == 200
    assert client.get(f"{API}/cluster/status", **header).status_code == 403  # Sys.Audit: erin lacks it
    # disabling the user disables the token at once; re-enabling restores it
    pveum(node_env, "user", "modify", "erin@pve", "--enable", "0")
    assert client.get(f"{API}/nodes/{NODE}/qemu", **header).status_code == 401
    pveum(node_env, "user", "modify", "erin@pve", "--enable", "1")
    assert client.get(f"{API}/nodes/{NODE}/qemu", **header).status_code == 200
    # removing the token revokes it at once, with its ACL entries
    pveum(node_env, "user", "token", "remove", "erin@pve", "ci")
    assert client.get(f"{API}/nodes/{NODE}/qemu", **header).status_code == 401
    assert not ACLEntry.objects.filter(type="token", ugid="erin@pve!ci").exists()


def admin_client(username: str, password: str) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


def test_the_admin_applies_the_same_acls(world):
    dave = admin_client("dave@pve", "dave-password")
    listing = dave.get("/admin/vms/vm/")
    assert listing.status_code == 200
    assert b"acl7100" in listing.content and b"acl7101" not in listing.content
    assert dave.get("/admin/vms/vm/7101/change/").status_code in (302, 403, 404)
    # PVEVMUser holds VM.Config.CDROM: the form opens, and saving checks each changed key (memory: refused)
    view = dave.get("/admin/vms/vm/7100/change/")
    assert view.status_code == 200 and b'name="config_text"' in view.content
    refused = dave.post("/admin/vms/vm/7100/change/", {"pool": "", "config_text": "name: acl7100\nmemory: 64\n"})
    assert refused.status_code == 200 and b"Permission check failed (/vms/7100, VM.Config.Memory)" in refused.content
    assert dave.get("/admin/authz/user/").status_code == 403
    assert dave.get("/admin/authz/aclentry/").status_code == 403
    before = VM.objects.get(vmid=7100).version
    dave.post("/admin/vms/vm/7100/delete/", {"post": "yes"})
    assert VM.objects.get(vmid=7100).version == before and VM.objects.filter(vmid=7100).exists()
    erin = admin_client("erin@pve", "erin-password")
    assert b'name="config_text"' in erin.get("/admin/vms/vm/7101/change/").content
    assert erin.get("/admin/authz/user/root@pam/change/").status_code in (302, 403, 404)


def test_access_api_as_proxmox_clients_use_it(world):
    root, csrf = login("root@pam", "test-root-password")
    form = {"content_type": "application/x-www-form-urlencoded", "HTTP_CSRFPREVENTIONTOKEN": csrf}

    def call(method, path, body=""):
        return getattr(root, method)(f"{API}{path}", body, **form)

    assert call("post", "/access/users", "userid=fred@pve&password=fred-password&email=f%40x.org").status_code == 200
    assert call("post", "/access/groups", "groupid=apiteam&comment=API").status_code == 200
    assert call("put", "/access/users/fred@pve", "groups=apiteam").status_code == 200
    assert call("post", "/access/roles", "roleid=ApiRole&privs=VM.Audit,VM.Console").status_code == 200
    assert call("put", "/access/acl", "path=/vms/7100&roles=ApiRole&groups=apiteam&propagate=0").status_code == 200
    acl = root.get(f"{API}/access/acl").json()["data"]
    assert {"path": "/vms/7100", "type": "group", "ugid": "apiteam", "roleid": "ApiRole", "propagate": 0} in acl
    assert root.get(f"{API}/access/groups/apiteam").json()["data"]["members"] == ["fred@pve"]
    assert root.get(f"{API}/access/roles/ApiRole").json()["data"] == {"VM.Audit": 1, "VM.Console": 1}
    user = root.get(f"{API}/access/users/fred@pve").json()["data"]
    assert user["groups"] == ["apiteam"] and user["email"] == "f@x.org"
    # Ansible's proxmox_user_info lists with full=1; enabled=1 leaves out disabled users
    listed = {u["userid"]: u for u in root.get(f"{API}/access/users?full=1").json()["data"]}
    assert listed["fred@pve"]["groups"] == ["apiteam"] and listed["fred@pve"]["tokens"] == []
    assert call("put", "/access/users/fred@pve", "enable=0").status_code == 200
    enabled = [u["userid"] for u in root.get(f"{API}/access/users?enabled=1").json()["data"]]
    assert "fred@pve" not in enabled and "root@pam" in enabled
    assert call("put", "/access/users/fred@pve", "enable=1").status_code == 200
    created = call("post", "/access/users/fred@pve/token/tf", "privsep=0").json()["data"]
    assert created["full-tokenid"] == "fred@pve!tf" and len(created["value"]) == 36
    token = {"HTTP_AUTHORIZATION": f"PVEAPIToken=fred@pve!tf={created['value']}"}
    assert vm_list_with(token) == {7100}
    # bad input: clear errors, nothing changed
    before = replicator_client.status()["version"]
    bad = call("put", "/access/acl", "path=/vms/12&roles=ApiRole&groups=apiteam")
    assert bad.status_code == 400 and "invalid ACL path" in bad.json()["message"]
    assert call("post", "/access/users", "userid=fred@pve").status_code == 400
    assert call("post", "/access/roles", "roleid=PVEAdmin&privs=VM.Audit").status_code == 400
    assert replicator_client.status()["version"] == before
    # an unprivileged user may not grant, and sees only himself
    dave, dave_csrf = world["dave"]
    denied = dave.put(
        f"{API}/access/acl",
        "path=/&roles=Administrator&users=dave@pve",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=dave_csrf,
    )
    assert denied.status_code == 403 and replicator_client.status()["version"] == before
    assert [u["userid"] for u in dave.get(f"{API}/access/users").json()["data"]] == ["dave@pve"]
    assert dave.get(f"{API}/access/users/fred@pve").status_code == 403
    # deleting the user removes its token and ACL entries at once
    assert call("delete", "/access/users/fred@pve").status_code == 200
    assert Client().get(f"{API}/nodes/{NODE}/qemu", **token).status_code == 401
    assert call("delete", "/access/roles/ApiRole").status_code == 200
    assert not ACLEntry.objects.filter(roleid="ApiRole").exists()


def vm_list_with(headers: dict) -> set[int]:
    response = Client().get(f"{API}/nodes/{NODE}/qemu", **headers)
    assert response.status_code == 200, response.content
    return {vm["vmid"] for vm in response.json()["data"]}


def test_admin_login_with_the_realm_chooser(world):
    page = Client().get("/admin/login/")
    assert b'name="realm"' in page.content and b"(pve)" in page.content
    client = Client()
    response = client.post("/admin/login/", {"username": "dave", "realm": "pve", "password": "dave-password"})
    assert response.status_code == 302
    assert client.get("/admin/vms/vm/").status_code == 200
    wrong_realm = Client().post("/admin/login/", {"username": "dave", "realm": "pam", "password": "dave-password"})
    assert wrong_realm.status_code == 401


def test_admin_edits_groups_roles_acls_and_revokes_tokens(world, node_env):
    root = admin_client("root@pam", "test-root-password")
    response = root.post(
        "/admin/authz/group/add/", {"groupid": "admins-ui", "comment": "from the admin", "members": ["dave@pve"]}
    )
    assert response.status_code == 302, response.content[:2000]
    assert set(GroupMember.objects.filter(group_id="admins-ui").values_list("user_id", flat=True)) == {"dave@pve"}
    bad = root.post("/admin/authz/group/add/", {"groupid": "bad group!", "comment": ""})
    assert bad.status_code == 200 and b"invalid group id" in bad.content
    response = root.post("/admin/authz/role/add/", {"roleid": "UiRole", "privileges": ["VM.Audit", "VM.Console"]})
    assert response.status_code == 302 and Role.objects.get(roleid="UiRole").privs == ["VM.Audit", "VM.Console"]
    assert b"cannot modify special role" in root.post("/admin/authz/role/add/", {"roleid": "PVEAdmin"}).content
    response = root.post(
        "/admin/authz/aclentry/add/",
        {"path": "/vms/7101", "type": "group", "ugid": "admins-ui", "roleid": "UiRole", "propagate": "on"},
    )
    assert response.status_code == 302
    dave, _ = world["dave"]
    assert 7101 in vm_list(dave)  # in force at once
    invalid = root.post(
        "/admin/authz/aclentry/add/", {"path": "/vms/12", "type": "group", "ugid": "admins-ui", "roleid": "UiRole"}
    )
    assert invalid.status_code == 200 and b"invalid ACL path" in invalid.content
    # deleting the group through the admin removes its ACL entries too
    response = root.post("/admin/authz/group/admins-ui/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not ACLEntry.objects.filter(ugid="admins-ui").exists() and 7101 not in vm_list(dave)
    # tokens: listed and revoked, never created, in the admin
    result = pveum(node_env, "user", "token", "add", "dave@pve", "ui")
    secret = next(line.split(": ", 1)[1] for line in result.stdout.splitlines() if line.startswith("value: "))
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=dave@pve!ui={secret}"}
    assert Client().get(f"{API}/nodes/{NODE}/qemu", **header).status_code == 200
    assert root.get("/admin/authz/apitoken/add/").status_code == 403
    assert root.post("/admin/authz/apitoken/dave@pve!ui/delete/", {"post": "yes"}).status_code == 302
    assert Client().get(f"{API}/nodes/{NODE}/qemu", **header).status_code == 401
    # a user without Sys.Modify / Permissions.Modify cannot use these pages
    erin = admin_client("erin@pve", "erin-password")
    assert erin.get("/admin/authz/role/add/").status_code == 403
    assert (
        erin.post(
            "/admin/authz/aclentry/add/", {"path": "/", "type": "user", "ugid": "erin@pve", "roleid": "Administrator"}
        ).status_code
        == 403
    )
