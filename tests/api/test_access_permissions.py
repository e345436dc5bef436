"""``GET /access/permissions`` with real ACLs: one's own effective privileges per path (1: held
propagated, 0: on that path only), one's own token's, another user's only with Sys.Audit on
/access (refused before anything about them is said), bad input refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from authz import services
from authz.models import User
from tests.api_client import logged_in, revoke_grants, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
PASSWORD = "perm-password"
USERS = ("ap-vmuser@pve", "ap-auditor@pve", "ap-other@pve")


@pytest.fixture(scope="module")
def clients() -> Iterator[dict[str, Client]]:
    users_with_grants(
        USERS, PASSWORD, [("/vms/7600", "PVEVMUser", ["ap-vmuser@pve"]), ("/access", "PVEAuditor", ["ap-auditor@pve"])]
    )
    root = User.objects.get(userid="root@pam")
    services.modify_acl(root, "/storage/ap-store", ["PVEDatastoreUser"], users=["ap-vmuser@pve"], propagate=False)
    yield {userid: logged_in(userid, PASSWORD) for userid in USERS} | {"root@pam": logged_in()}
    revoke_grants(USERS)


def get(client: Client, **params: str) -> tuple[int, dict]:
    response = client.get(f"{API}/access/permissions", params)
    return response.status_code, response.json()


def test_ones_own_privileges_per_path_with_propagation(clients):
    status, body = get(clients["ap-vmuser@pve"])
    assert status == 200, body
    data = body["data"]
    assert set(data) == {"/vms/7600", "/storage/ap-store"}  # nothing held anywhere else
    assert data["/vms/7600"]["VM.PowerMgmt"] == 1 and data["/vms/7600"]["VM.Console"] == 1
    assert "VM.Allocate" not in data["/vms/7600"]
    assert data["/storage/ap-store"] == {"Datastore.AllocateSpace": 0, "Datastore.Audit": 0}
    status, body = get(clients["ap-vmuser@pve"], path="/vms/7600/")
    assert status == 200 and body["data"]["/vms/7600/"]["VM.Audit"] == 1
    status, body = get(clients["ap-vmuser@pve"], path="/nodes")
    assert body["data"] == {"/nodes": {}}  # an asked path is answered even when nothing is held


def test_root_holds_everything_everywhere(clients):
    data = get(clients["root@pam"], path="/")[1]["data"]["/"]
    assert data["Sys.Modify"] == 1 and data["Permissions.Modify"] == 1 and data["VM.Allocate"] == 1


def test_another_users_privileges_need_sys_audit_on_access(clients):
    status, body = get(clients["ap-other@pve"], userid="ap-vmuser@pve")
    assert status == 403 and "Sys.Audit" in body["message"], body
    status, body = get(clients["ap-other@pve"], userid="ap-nosuchuser@pve")  # the same answer: nothing revealed
    assert status == 403 and "Sys.Audit" in body["message"], body
    status, body = get(clients["ap-auditor@pve"], userid="ap-vmuser@pve")
    assert status == 200 and "/vms/7600" in body["data"], body
    status, body = get(clients["ap-auditor@pve"], userid="ap-nosuchuser@pve")
    assert status == 400 and "no such user" in body["message"], body


def test_own_token_without_audit_and_its_privilege_separation(clients):
    root = User.objects.get(userid="root@pam")
    services.add_token("ap-vmuser@pve", "t1", actor=root, privsep=True)
    try:
        status, body = get(clients["ap-vmuser@pve"], userid="ap-vmuser@pve!t1")
        assert status == 200 and body["data"] == {}, body  # a separated token holds only its own ACLs
        status, body = get(clients["ap-other@pve"], userid="ap-vmuser@pve!t1")
        assert status == 403, body
    finally:
        services.delete_token("ap-vmuser@pve!t1", actor=root)


def test_bad_input_and_anonymous(clients):
    assert Client().get(f"{API}/access/permissions").status_code == 401
    status, body = get(clients["ap-vmuser@pve"], path="vms")
    assert status == 400 and "path" in body["errors"], body
