"""The Django admin over replicated models: ticket login, edits through the write path, audit, access."""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.utils import quote
from django.test import Client

from authz.models import Pool, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client
from vms.models import VM

pytestmark = [pytest.mark.usefixtures("replicator")]


def admin_client(username: str = "root@pam", password: str = "test-root-password") -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:500]
    assert client.cookies["PVEAuthCookie"].value.startswith("PVE%3A")
    return client


@pytest.fixture(scope="module")
def bob() -> User:
    user = User.objects.filter(userid="bob@pve").first()
    if user is None:
        user = User(userid="bob@pve", realm_id="pve")
        user.set_password("bob-password")
        user.save()
    return user


def test_login_page_and_failed_login():
    client = Client()
    assert client.get("/admin/").status_code == 302
    page = client.get("/admin/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    wrong = client.post("/admin/login/", {"username": "root@pam", "password": "wrong"})
    assert wrong.status_code == 401 and b"Login failed" in wrong.content
    assert "PVEAuthCookie" not in client.cookies


def test_root_sees_every_model_and_the_cluster_log():
    client = admin_client()
    index = client.get("/admin/")
    assert index.status_code == 200
    for label in (b"VMs", b"Storages", b"Nodes", b"Users", b"Realms", b"Pools", b"Cluster log", b"Key material"):
        assert label in index.content, label
    for url in (
        "/admin/vms/vm/",
        "/admin/vms/storage/",
        "/admin/cluster/node/",
        "/admin/authz/user/",
        "/admin/authz/realm/",
        "/admin/cluster/clusterlogentry/",
        "/admin/authz/keymaterial/",
    ):
        assert client.get(url).status_code == 200, url


def test_private_keys_are_never_shown():
    client = admin_client()
    private = client.get(f"/admin/authz/keymaterial/{quote('priv/authkey.key')}/change/")
    assert private.status_code == 200 and b"(private)" in private.content
    assert b"PRIVATE KEY" not in private.content
    public = client.get(f"/admin/authz/keymaterial/{quote('pve-root-ca.pem')}/change/")
    assert public.status_code == 200 and b"BEGIN CERTIFICATE" in public.content
    assert b"PRIVATE KEY" not in client.get("/admin/authz/keymaterial/").content


def test_add_and_edit_vm_through_the_admin_with_audit_and_conflicts():
    client = admin_client()
    added = client.post(
        "/admin/vms/vm/add/",
        {
            "vmid": "960",
            "node": "testnode",
            "pool": "",
            "lock": "",
            "config_text": "name: admin-vm\nmemory: 256\ncores: 2\n",
        },
    )
    assert added.status_code == 302, added.content[:2000]
    vm = VM.objects.get(vmid=960)
    # created by the same service as the API's: normalised (an smbios1 uuid), audited
    assert vm.config.pop("smbios1").startswith("uuid=")
    assert vm.config == {"name": "admin-vm", "memory": "256", "cores": "2"}
    # the change and its audit entry travel in one change set
    entry = ClusterLogEntry.objects.get(msg="VM 960 created on testnode")
    assert entry.user == "root@pam" and entry.version == vm.version

    form = client.get("/admin/vms/vm/960/change/").content.decode()
    loaded = re.search(r'name="_loaded_version" value="(\d+)"', form).group(1)
    bad = client.post(
        "/admin/vms/vm/960/change/",
        {"pool": "", "lock": "", "config_text": "memory: lots\n", "_loaded_version": loaded},
    )
    assert bad.status_code == 200 and b"type check" in bad.content
    assert VM.objects.get(vmid=960).config["memory"] == "256"

    other = VM.objects.get(vmid=960)
    other.config["cores"] = "8"
    other.save()  # someone else changes the VM after the form was loaded
    stale = client.post(
        "/admin/vms/vm/960/change/",
        {"pool": "", "lock": "", "config_text": "memory: 512\n", "_loaded_version": loaded},
        follow=True,
    )
    assert b"changed by another writer" in stale.content
    assert b"successfully" not in stale.content  # the change set was refused: no success is claimed beside it
    kept = VM.objects.get(vmid=960).config
    assert {k: v for k, v in kept.items() if k != "smbios1"} == {"name": "admin-vm", "memory": "256", "cores": "8"}

    fresh = re.search(
        r'name="_loaded_version" value="(\d+)"', client.get("/admin/vms/vm/960/change/").content.decode()
    ).group(1)
    done = client.post(
        "/admin/vms/vm/960/change/", {"pool": "", "lock": "", "config_text": "memory: 512\n", "_loaded_version": fresh}
    )
    assert done.status_code == 302
    assert VM.objects.get(vmid=960).config == {"memory": "512"}


def test_bulk_delete_action_is_one_replicated_change(bob):
    client = admin_client()
    for vmid in (961, 962):
        VM(vmid=vmid, node_id="testnode", config={"name": f"bulk{vmid}"}).save()
    response = client.post(
        "/admin/vms/vm/", {"action": "delete_selected", "_selected_action": ["961", "962"], "post": "yes"}
    )
    assert response.status_code == 302
    assert not VM.objects.filter(vmid__in=[961, 962]).exists()


def test_users_without_privileges_cannot_use_the_admin(bob):
    client = admin_client("bob@pve", "bob-password")
    before = VM.objects.filter(vmid=960).values_list("version", flat=True).first()
    assert client.get("/admin/vms/vm/").status_code == 403
    assert client.post("/admin/vms/vm/add/", {"vmid": "963", "node": "testnode", "config_text": ""}).status_code == 403
    assert client.post("/admin/vms/vm/960/delete/", {"post": "yes"}).status_code == 403
    assert not VM.objects.filter(vmid=963).exists()
    assert VM.objects.filter(vmid=960).values_list("version", flat=True).first() == before
    anonymous = Client()
    assert anonymous.get("/admin/vms/vm/").status_code == 302  # to the login page
    assert anonymous.post("/admin/vms/vm/add/", {"vmid": "964", "node": "testnode"}).status_code == 302
    assert not VM.objects.filter(vmid=964).exists()


def test_the_base_admin_audits_in_the_change_set_of_the_change_once():
    """An admin page over a service (pools): the row and one entry per change, one change set each, never a second entry."""
    client = admin_client()
    for poolid in ("audit-a", "audit-b"):
        Pool.objects.filter(poolid=poolid).delete()
    version = replicator_client.status()["version"]
    assert client.post("/admin/authz/pool/add/", {"poolid": "audit-a", "comment": ""}).status_code == 302
    pool = Pool.objects.get(poolid="audit-a")
    assert pool.version == version + 1
    assert list(ClusterLogEntry.objects.filter(version=pool.version).values_list("msg", "user")) == [
        ("added pool 'audit-a'", "root@pam")
    ]
    Pool(poolid="audit-b").save()
    version = replicator_client.status()["version"]
    response = client.post(
        "/admin/authz/pool/", {"action": "delete_selected", "_selected_action": ["audit-a", "audit-b"], "post": "yes"}
    )
    assert response.status_code == 302 and not Pool.objects.filter(poolid__in=["audit-a", "audit-b"]).exists()
    assert replicator_client.status()["version"] == version + 1  # the deletions and their entries together
    assert sorted(ClusterLogEntry.objects.filter(version=version + 1).values_list("msg", flat=True)) == [
        "removed pool 'audit-a'",
        "removed pool 'audit-b'",
    ]
