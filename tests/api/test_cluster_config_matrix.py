"""Permission matrix of ``/cluster/config`` (create, join, nodes).

Reading needs Sys.Audit on ``/``. Creating or joining a cluster and adding or removing nodes are
root@pam's alone, as in Proxmox: Sys.Modify (even Administrator) on ``/`` is refused, and so is
an API token of root@pam, with or without privilege separation. Each endpoint is called by:
anonymous (401), a user without privileges, a user holding Administrator on another path
(``/vms``), a user holding Administrator on ``/`` (Sys.Audit and Sys.Modify), root@pam's tokens,
and root@pam (the request reaches its checks: on this standalone node a join-info read is
refused as "not part of a cluster", bad parameters are 400). Nothing changes on a refusal.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, APIToken, User
from replicator import client as replicator_client
from tests.api.test_permission_matrix import API, PASSWORD, login

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]

ROOT_PASSWORD = "test-root-password"
ROOT_ONLY = "root@pam only"
# method, path, body, who may: "audit" (Sys.Audit on /) or ROOT_ONLY, status of an allowed caller
CASES = [
    ("get", "/cluster/config", "", "audit", 200),
    ("get", "/cluster/config/apiversion", "", "audit", 200),
    ("get", "/cluster/config/nodes", "", "audit", 200),
    ("get", "/cluster/config/join", "", "audit", 500),  # standalone: not part of a cluster
    ("post", "/cluster/config", "clustername=bad%20name", ROOT_ONLY, 400),
    ("post", "/cluster/config", "clustername=matrix", ROOT_ONLY, None),  # valid: only refusals are called
    ("post", "/cluster/config/join", "hostname=10.0.0.1&fingerprint=nope&password=x", ROOT_ONLY, 400),
    ("post", "/cluster/config/nodes/newnode", "new_node_ip=10.0.0.9", ROOT_ONLY, 500),
    ("delete", "/cluster/config/nodes/othernode", "", ROOT_ONLY, 500),
]
TOKENS = {"root@pam!ccshared": False, "root@pam!ccsep": True}  # token id: privilege separation


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    """Users with their ACLs, root@pam's two tokens (one shares root's privileges, one has Sys.Modify on /)."""
    root = User.objects.get(userid="root@pam")
    for userid in ("cc-nobody@pve", "cc-admin@pve", "cc-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    for entry in ACLEntry.objects.filter(ugid__in=["cc-admin@pve", "cc-other@pve", *TOKENS]):
        entry.delete()
    services.modify_acl(root, "/", ["Administrator"], users=["cc-admin@pve"])
    services.modify_acl(root, "/vms", ["Administrator"], users=["cc-other@pve"])
    values = {}
    for tokenid, privsep in TOKENS.items():
        existing = APIToken.objects.filter(tokenid=tokenid).first()
        if existing is not None:
            services.delete_token(tokenid, actor=root)
        _token, values[tokenid] = services.add_token("root@pam", tokenid.split("!")[1], actor=root, privsep=privsep)
    services.modify_acl(root, "/", ["Administrator"], tokens=["root@pam!ccsep"])
    return values


def root_login() -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": ROOT_PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


def call(method: str, path: str, body: str, client: Client, csrf: str = "", **headers: str) -> tuple[int, dict]:
    kwargs = {"content_type": "application/x-www-form-urlencoded", **headers}
    if csrf:
        kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
    response = getattr(client, method)(f"{API}{path}", body, **kwargs)
    return response.status_code, response.json()


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} ({c[2] or 'no body'})" for c in CASES])
def test_cluster_config_matrix(secrets, case):
    method, path, body, who, allowed_status = case
    sessions = {userid: login(userid) for userid in ("cc-nobody@pve", "cc-other@pve", "cc-admin@pve")}
    root = root_login()
    token_headers = {
        tokenid: {"HTTP_AUTHORIZATION": f"PVEAPIToken={tokenid}={secret}"} for tokenid, secret in secrets.items()
    }
    before = replicator_client.status()["version"]  # after the logins (they write the cluster log)
    assert call(method, path, body, Client())[0] == 401
    assert call(method, path, body, *sessions["cc-nobody@pve"])[0] == 403
    assert call(method, path, body, *sessions["cc-other@pve"])[0] == 403
    admin = call(method, path, body, *sessions["cc-admin@pve"])
    tokens = {tokenid: call(method, path, body, Client(), **headers) for tokenid, headers in token_headers.items()}
    if who == ROOT_ONLY:
        for code, answer in [admin, *tokens.values()]:
            assert code == 403, answer
            assert answer["message"] == "Permission check failed (user != root@pam)\n"
        assert replicator_client.status()["version"] == before, "a refused request changed something"
        if allowed_status is None:
            return
        code, answer = call(method, path, body, *root)
    else:
        assert admin[0] == allowed_status, admin
        for code, answer in tokens.values():
            assert code == allowed_status, answer  # Sys.Audit: root's (shared) and its own ACL (separated)
        code, answer = call(method, path, body, *root)
    assert code == allowed_status, answer
    if method == "get" and code == 200:
        assert answer["data"] is not None
    assert replicator_client.status()["version"] == before, "a refused or invalid request changed something"


def test_adding_a_node_to_a_standalone_node_is_refused_with_the_reason(secrets):
    client, csrf = root_login()
    response = client.post(
        f"{API}/cluster/config/nodes/newnode",
        "new_node_ip=10.0.0.9",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert response.status_code == 500 and "not part of a cluster" in response.json()["message"]
