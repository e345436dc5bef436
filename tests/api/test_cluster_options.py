"""``/cluster/options`` (datacenter.cfg) with real ACLs: reading needs Sys.Audit on /, changing
Sys.Modify; a change is one replicated write rendered into datacenter.cfg; unknown keys and bad
values are refused whole."""

from __future__ import annotations

import pytest

from replicator import client as replicator_client
from tests.api_client import API, login_enforcing_csrf, revoke_grants, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "options-password"
USERS = ("co-nobody@pve", "co-auditor@pve", "co-admin@pve")


@pytest.fixture(scope="module")
def clients():  # type: ignore[no-untyped-def]
    users_with_grants(
        USERS, PASSWORD, [("/", "PVEAuditor", ["co-auditor@pve"]), ("/", "Administrator", ["co-admin@pve"])]
    )
    from cluster import services
    from cluster.models import ClusterSettings

    before = dict(ClusterSettings.objects.get(id="datacenter").options)
    yield {userid: login_enforcing_csrf(userid, PASSWORD) for userid in USERS}
    revoke_grants(USERS)
    row = ClusterSettings.objects.get(id="datacenter")  # datacenter.cfg as this module found it
    row.options = before
    services.update_datacenter_options(row, actor="root@pam")


def put(clients, userid: str, body: str):  # type: ignore[no-untyped-def]
    client, csrf = clients[userid]
    response = client.put(
        f"{API}/cluster/options", body, content_type="application/x-www-form-urlencoded", HTTP_CSRFPREVENTIONTOKEN=csrf
    )
    return response.status_code, response.json()


def test_read_needs_sys_audit(clients):
    client, _ = clients["co-nobody@pve"]
    response = client.get(f"{API}/cluster/options")
    assert response.status_code == 403 and "Sys.Audit" in response.json()["message"]
    client, _ = clients["co-auditor@pve"]
    assert client.get(f"{API}/cluster/options").status_code == 200


def test_change_needs_sys_modify_and_lands_in_datacenter_cfg(clients, etc_dir):
    before = replicator_client.status()["version"]
    status, body = put(clients, "co-auditor@pve", "keyboard=de")
    assert status == 403 and "Sys.Modify" in body["message"], body
    assert replicator_client.status()["version"] == before
    status, body = put(clients, "co-admin@pve", "keyboard=de&migration=type%3Dsecure%2Cnetwork%3D10.9.0.0%2F24")
    assert status == 200, body
    client, _ = clients["co-auditor@pve"]
    data = client.get(f"{API}/cluster/options").json()["data"]
    assert data["keyboard"] == "de" and data["migration"] == "type=secure,network=10.9.0.0/24"
    import time

    deadline = time.monotonic() + 10
    while "keyboard: de" not in (etc_dir / "datacenter.cfg").read_text():
        assert time.monotonic() < deadline, (etc_dir / "datacenter.cfg").read_text()
        time.sleep(0.05)
    status, body = put(clients, "co-admin@pve", "delete=keyboard,migration")
    assert status == 200, body
    data = client.get(f"{API}/cluster/options").json()["data"]
    assert "keyboard" not in data and "migration" not in data


def test_bad_changes_are_refused_whole(clients):
    before = replicator_client.status()["version"]
    status, body = put(clients, "co-admin@pve", "keyboard=fr&no_such_option=1")
    assert status == 400 and set(body["errors"]) == {"no_such_option"}, body
    status, body = put(clients, "co-admin@pve", "keyboard=fr&delete=keyboard")
    assert status == 400 and "keyboard" in body["errors"], body
    status, body = put(clients, "co-admin@pve", "description=a%0Ab")
    assert status == 400 and "description" in body["errors"], body
    assert replicator_client.status()["version"] == before
