"""Permission matrix of the task endpoints with real ACLs and a real worker (for stopping).

As Proxmox: a task's owner reads and stops it; others need Sys.Audit (read) or Sys.Modify (stop)
on ``/nodes/<node>``; the lists are filtered, not refused (``/cluster/tasks`` by Sys.Audit on
``/``). Each row: anonymous 401, no privilege 403, the privilege elsewhere 403, the privilege
200, root 200; refusals change nothing (the task keeps running, the cluster version stays).
"""

from __future__ import annotations

import time

import pytest
from django.test import Client

from authz import services
from authz.models import ACLEntry, APIToken, User
from portal.models import Task
from portal.tasks import index, runner
from portal.tasks.state import task_alive
from replicator import client as replicator_client
from tests.portal import task_operations  # noqa: F401  (the operations the worker runs)

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "task-matrix-password"
USERS = ("tp-nobody@pve", "tp-other@pve", "tp-holder@pve", "tp-owner@pve")


def login(userid: str, password: str = PASSWORD) -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": password}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["CSRFPreventionToken"]
    return client


@pytest.fixture(scope="module")
def root_user() -> User:
    root = User.objects.get(userid="root@pam")
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    return root


@pytest.fixture(scope="module")
def finished(root_user) -> dict[str, str]:
    """Finished tasks of root, of tp-owner and of tp-owner's token."""
    return {
        who: index.run_inline("testmatrix", "", who, lambda task: task.log("done"))
        for who in ("root@pam", "tp-owner@pve", "tp-owner@pve!ci")
    }


def grant(root_user: User, holder: tuple[str, str], other: tuple[str, str]) -> None:
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    services.modify_acl(root_user, holder[0], [holder[1]], users=["tp-holder@pve"])
    services.modify_acl(root_user, other[0], [other[1]], users=["tp-other@pve"])


def running_task(user: str) -> str:
    upid = runner.submit("testmatrix", "", user, "test.sleep", seconds=60)
    deadline = time.monotonic() + 30
    while Task.objects.get(upid=upid).status != Task.RUNNING:
        assert time.monotonic() < deadline, "the task did not start"
        time.sleep(0.1)
    return upid


@pytest.mark.parametrize("endpoint", ["status", "log"])
def test_reading_a_task(root_user, finished, endpoint):
    grant(root_user, ("/nodes/testnode", "PVEAuditor"), ("/vms", "PVEAuditor"))
    path = f"{API}/nodes/{NODE}/tasks/{finished['root@pam']}/{endpoint}"
    nobody, other = login("tp-nobody@pve"), login("tp-other@pve")  # logins write the cluster log
    before = replicator_client.status()["version"]
    assert Client().get(path).status_code == 401
    assert nobody.get(path).status_code == 403
    refused = other.get(path)
    assert refused.status_code == 403
    assert refused.json()["message"] == f"Permission check failed (/nodes/{NODE}, Sys.Audit)\n"
    assert replicator_client.status()["version"] == before
    assert login("tp-holder@pve").get(path).status_code == 200
    assert login("root@pam", "test-root-password").get(path).status_code == 200
    # The owner needs no privilege for their own task, and gets none for another's.
    owner = login("tp-owner@pve")
    assert owner.get(f"{API}/nodes/{NODE}/tasks/{finished['tp-owner@pve']}/{endpoint}").status_code == 200
    assert owner.get(f"{API}/nodes/{NODE}/tasks/{finished['tp-owner@pve!ci']}/{endpoint}").status_code == 200
    assert owner.get(path).status_code == 403


def test_a_token_sees_its_own_tasks_only(root_user, finished):
    grant(root_user, ("/nodes/testnode", "PVEAuditor"), ("/vms", "PVEAuditor"))
    if APIToken.objects.filter(tokenid="tp-owner@pve!ci").exists():
        services.delete_token("tp-owner@pve!ci", actor=root_user)
    _token, secret = services.add_token("tp-owner@pve", "ci", actor=root_user, privsep=True)
    header = {"HTTP_AUTHORIZATION": f"PVEAPIToken=tp-owner@pve!ci={secret}"}
    client = Client()
    assert client.get(f"{API}/nodes/{NODE}/tasks/{finished['tp-owner@pve!ci']}/status", **header).status_code == 200
    assert client.get(f"{API}/nodes/{NODE}/tasks/{finished['tp-owner@pve']}/status", **header).status_code == 403
    listed = client.get(f"{API}/nodes/{NODE}/tasks?typefilter=testmatrix", **header).json()["data"]
    assert [(item["user"], item.get("tokenid")) for item in listed] == [("tp-owner@pve", "ci")]


def test_the_task_index_entry_needs_only_a_login(root_user, finished):
    path = f"{API}/nodes/{NODE}/tasks/{finished['root@pam']}"
    assert Client().get(path).status_code == 401
    assert login("tp-nobody@pve").get(path).json() == {"data": [{"name": "log"}, {"name": "status"}]}


def test_stopping_a_task(root_user, celery_worker):
    grant(root_user, ("/nodes/testnode", "Administrator"), ("/nodes/elsewhere", "Administrator"))
    upid = running_task("root@pam")
    path = f"{API}/nodes/{NODE}/tasks/{upid}"
    nobody, other, owner = login("tp-nobody@pve"), login("tp-other@pve"), login("tp-owner@pve")
    before = replicator_client.status()["version"]
    assert Client().delete(path).status_code == 401
    assert nobody.delete(path).status_code == 403
    refused = other.delete(path)
    assert refused.status_code == 403
    assert refused.json()["message"] == f"Permission check failed (/nodes/{NODE}, Sys.Modify)\n"
    assert owner.delete(path).status_code == 403
    task = Task.objects.get(upid=upid)
    assert task.status == Task.RUNNING and task_alive(task), "a refused stop touched the task"
    assert replicator_client.status()["version"] == before
    assert login("tp-holder@pve").delete(path).status_code == 200
    assert Task.objects.get(upid=upid).exitstatus == "received interrupt"
    by_root = running_task("tp-owner@pve")
    assert login("root@pam", "test-root-password").delete(f"{API}/nodes/{NODE}/tasks/{by_root}").status_code == 200
    own = running_task("tp-owner@pve")
    assert owner.delete(f"{API}/nodes/{NODE}/tasks/{own}").status_code == 200
    assert Task.objects.get(upid=own).status == Task.STOPPED


def test_the_node_task_list_is_filtered(root_user, finished):
    grant(root_user, ("/nodes/testnode", "PVEAuditor"), ("/vms", "PVEAuditor"))
    path = f"{API}/nodes/{NODE}/tasks?typefilter=testmatrix&limit=100"
    assert Client().get(path).status_code == 401

    def listed(userid: str, password: str = PASSWORD) -> set[str]:
        answer = login(userid, password).get(path)
        assert answer.status_code == 200
        return {item["upid"] for item in answer.json()["data"]}

    archive = Task.objects.filter(type="testmatrix", status=Task.STOPPED)
    everyone = set(archive.values_list("upid", flat=True))
    mine = set(archive.filter(user__startswith="tp-owner@pve").values_list("upid", flat=True))
    assert set(finished.values()) <= everyone and finished["tp-owner@pve!ci"] in mine
    assert listed("tp-nobody@pve") == set()
    assert listed("tp-other@pve") == set()
    assert listed("tp-owner@pve") == mine
    assert listed("tp-holder@pve") == everyone
    assert listed("root@pam", "test-root-password") == everyone


def test_the_cluster_task_list_is_filtered(root_user, finished):
    grant(root_user, ("/", "PVEAuditor"), ("/nodes/testnode", "PVEAuditor"))
    path = f"{API}/cluster/tasks"
    assert Client().get(path).status_code == 401

    def listed(userid: str, password: str = PASSWORD) -> set[str]:
        answer = login(userid, password).get(path)
        assert answer.status_code == 200
        return {item["upid"] for item in answer.json()["data"]} & set(finished.values())

    assert listed("tp-nobody@pve") == set()
    assert listed("tp-other@pve") == set()  # Sys.Audit on the node is not Sys.Audit on /
    assert listed("tp-owner@pve") == {finished["tp-owner@pve"], finished["tp-owner@pve!ci"]}
    assert listed("tp-holder@pve") == set(finished.values())
    assert listed("root@pam", "test-root-password") == set(finished.values())
