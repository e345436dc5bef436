"""Permission matrix of ``/cluster/config`` (create, join, nodes): Sys.Audit or Sys.Modify on ``/``.

Anonymous 401; no privilege 403; the privilege on another path (``/vms``) 403; held on ``/``
allowed (the request reaches its checks: on this standalone node a join-info read is refused as
"not part of a cluster", bad parameters are 400). Nothing changes on a refusal.
"""

from __future__ import annotations

import pytest
from django.test import Client

from authz import access
from authz.models import ACLEntry, User
from replicator import client as replicator_client
from tests.api.test_permission_matrix import API, PASSWORD, login

pytestmark = [pytest.mark.usefixtures("replicator")]

# method, path, body, role needed on "/", status for the holder
CASES = [
    ("get", "/cluster/config", "", "PVEAuditor", 200),
    ("get", "/cluster/config/apiversion", "", "PVEAuditor", 200),
    ("get", "/cluster/config/nodes", "", "PVEAuditor", 200),
    ("get", "/cluster/config/join", "", "PVEAuditor", 500),  # standalone: not part of a cluster
    ("post", "/cluster/config", "clustername=bad%20name", "Administrator", 400),
    ("post", "/cluster/config/join", "hostname=10.0.0.1&fingerprint=nope&password=x", "Administrator", 400),
    ("post", "/cluster/config/nodes/newnode", "new_node_ip=10.0.0.9", "Administrator", 500),
    ("delete", "/cluster/config/nodes/othernode", "", "Administrator", 500),
]


@pytest.fixture(scope="module")
def root() -> User:
    for userid in ("cc-nobody@pve", "cc-holder@pve", "cc-other@pve"):
        if not User.objects.filter(userid=userid).exists():
            access.add_user(userid, actor=User.objects.get(userid="root@pam"), password=PASSWORD)
    return User.objects.get(userid="root@pam")


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_cluster_config_matrix(root, case):
    method, path, body, role, holder_status = case
    for entry in ACLEntry.objects.filter(ugid__in=["cc-holder@pve", "cc-other@pve"]):
        entry.delete()
    access.modify_acl(root, "/", [role], users=["cc-holder@pve"])
    access.modify_acl(root, "/vms", ["Administrator"], users=["cc-other@pve"])

    def call(client: Client, csrf: str = "") -> tuple[int, dict]:
        kwargs = {"content_type": "application/x-www-form-urlencoded"}
        if csrf:
            kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
        response = getattr(client, method)(f"{API}{path}", body, **kwargs)
        return response.status_code, response.json()

    clients = {userid: login(userid) for userid in ("cc-nobody@pve", "cc-other@pve", "cc-holder@pve")}
    before = replicator_client.status()["version"]  # after the logins (they write the cluster log)
    assert call(Client())[0] == 401
    assert call(*clients["cc-nobody@pve"])[0] == 403
    assert call(*clients["cc-other@pve"])[0] == 403
    code, answer = call(*clients["cc-holder@pve"])
    assert code == holder_status, answer
    if method == "get" and code == 200:
        assert answer["data"] is not None
    assert replicator_client.status()["version"] == before, "a refused or invalid request changed something"


def test_adding_a_node_to_a_standalone_node_is_refused_with_the_reason(root):
    access.modify_acl(root, "/", ["Administrator"], users=["cc-holder@pve"])
    client, csrf = login("cc-holder@pve")
    response = client.post(
        f"{API}/cluster/config/nodes/newnode",
        "new_node_ip=10.0.0.9",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=csrf,
    )
    assert response.status_code == 500 and "not part of a cluster" in response.json()["message"]
