"""``GET /cluster/log``: newest first, ``max`` honoured, the whole log only with Sys.Syslog on / (others
see the entries in their own name, as pmxcfs filters by ident)."""

from __future__ import annotations

import pytest
from django.test import Client

from cluster.services import log_cluster_message
from tests.api_client import API, logged_in, revoke_grants, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "clog-password"
USERS = ("cl-user@pve", "cl-admin@pve")


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    users_with_grants(USERS, PASSWORD, [("/", "PVESysAdmin", ["cl-admin@pve"])])
    clients = {userid: logged_in(userid, PASSWORD) for userid in USERS}  # logins are logged too: first
    log_cluster_message("cl: written by root", user="root@pam", tag="cltest")
    log_cluster_message("cl: written by the user", user="cl-user@pve", tag="cltest")
    log_cluster_message("cl: newest, by root", user="root@pam", tag="cltest")
    yield clients
    revoke_grants(USERS)


def entries(client: Client, **params: object) -> list[dict]:
    response = client.get(f"{API}/cluster/log", params)
    assert response.status_code == 200, response.content
    return response.json()["data"]


def test_sys_syslog_sees_everything_newest_first(clients):
    seen = entries(clients["cl-admin@pve"], max=3)
    assert len(seen) == 3 and seen[0]["msg"] == "cl: newest, by root"
    assert [e["time"] for e in seen] == sorted((e["time"] for e in seen), reverse=True)
    first = seen[0]
    assert set(first) == {"uid", "time", "pri", "tag", "pid", "node", "user", "msg", "id"}
    assert first["id"] == f"{first['uid']}:{first['node']}" and isinstance(first["time"], int)
    assert len(entries(clients["cl-admin@pve"], max=1)) == 1


def test_others_see_only_their_own_entries(clients):
    seen = entries(clients["cl-user@pve"], max=1000)
    assert seen and {e["user"] for e in seen} == {"cl-user@pve"}
    assert "cl: written by the user" in [e["msg"] for e in seen]


def test_bad_max_and_anonymous(clients):
    assert Client().get(f"{API}/cluster/log").status_code == 401
    response = clients["cl-admin@pve"].get(f"{API}/cluster/log", {"max": -1})
    assert response.status_code == 400 and "max" in response.json()["errors"]
