"""List endpoints run a fixed number of queries, however many rows (no N+1), and list exactly the
objects the resolver grants (restricted in the query, not by a loop over every row)."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import Group, User
from authz.permissions import has_privileges
from portal.models import Task
from tests.query_counts import counting
from vms.models import VM

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"
PASSWORD = "lq-password"
ROOT_PASSWORD = "test-root-password"  # tests/harness.py
PEOPLE = ("lq-auditor@pve", "lq-some@pve", "lq-delegate@pve")


def login(userid: str) -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client


# VMIDs BASE + n: far above every other module's VMIDs (the session's node is shared by all modules)
BASE = 80000


def add_rows(start: int, count: int) -> None:
    """``count`` more VMs, groups, users (each in a group, with a token) and tasks."""
    root = User.objects.get(userid="root@pam")
    for n in range(start, start + count):
        VM(vmid=BASE + n, node_id=NODE, config={"name": f"lq{n}"}).save()
        services.add_group(f"lq-g{n}", actor=root)
        services.add_user(f"lq-u{n}@pve", actor=root, groups=[f"lq-g{n}"])
        services.add_token(f"lq-u{n}@pve", "tok", actor=root)
        user = f"lq-u{n}@pve" if n % 2 else "lq-some@pve"
        Task.objects.create(
            upid=f"UPID:{NODE}:0000{n:04X}:00000000:{n:08X}:qmstart:{BASE + n}:{user}:",
            node=NODE,
            type="qmstart",
            vmid=str(BASE + n),
            user=user,
            starttime=n,
            endtime=n + 1,
            status=Task.STOPPED,
            exitstatus="OK" if n % 3 else "boom",
        )


@pytest.fixture(scope="module")
def world():
    root = User.objects.get(userid="root@pam")
    for userid in PEOPLE:
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    add_rows(0, 12)
    services.modify_acl(root, "/vms", ["PVEAuditor"], users=["lq-auditor@pve"])
    services.modify_acl(root, f"/vms/{BASE + 3}", ["PVEAuditor"], users=["lq-some@pve"])
    services.modify_acl(root, f"/vms/{BASE + 5}", ["PVEVMUser"], users=["lq-some@pve"])
    services.modify_acl(root, f"/vms/{BASE + 4}", ["NoAccess"], users=["lq-auditor@pve"])
    services.modify_acl(root, "/access/groups/lq-g2", ["PVEUserAdmin"], users=["lq-delegate@pve"])
    services.modify_acl(root, "/access/groups/lq-g7", ["PVEAuditor"], users=["lq-delegate@pve"])
    yield {userid: login(userid) for userid in PEOPLE} | {"root@pam": root_client()}
    VM.objects.filter(vmid__gte=BASE).delete()


def root_client() -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": ROOT_PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client


LISTS = {
    "qemu": f"/nodes/{NODE}/qemu",
    "users": "/access/users",
    "groups": "/access/groups",
    "tasks": f"/nodes/{NODE}/tasks?limit=1000",
    "acl": "/access/acl",
}


def listing(client: Client, url: str) -> tuple[int, list]:
    with counting() as queries:
        response = client.get(f"{API}{url}")
    assert response.status_code == 200, response.content[:300]
    return queries.count, response.json()["data"]


@pytest.mark.parametrize("name", sorted(LISTS))
@pytest.mark.parametrize("who", ["root@pam", *PEOPLE])
def test_list_queries_do_not_grow_with_rows(world, who, name):
    client = world[who]
    listing(client, LISTS[name])  # warm: the ACL snapshot, sessions
    before, first = listing(client, LISTS[name])
    start = 12 + 100 * (sorted(LISTS).index(name) * 4 + ["root@pam", *PEOPLE].index(who))
    add_rows(start, 6)
    listing(client, LISTS[name])  # the ACL snapshot reloads once after the writes
    after, second = listing(client, LISTS[name])
    assert after == before, f"{name} as {who}: {before} queries with fewer rows, {after} with more"
    if who == "root@pam" and name != "acl":
        assert len(second) >= len(first) + 6


def test_vm_list_is_exactly_what_the_resolver_grants(world):
    vmids = list(VM.objects.filter(node_id=NODE).values_list("vmid", flat=True))
    for who in PEOPLE:
        user = User.objects.get(userid=who)
        expected = {v for v in vmids if has_privileges(user, f"/vms/{v}", ["VM.Audit"])}
        _count, data = listing(world[who], LISTS["qemu"])
        assert {entry["vmid"] for entry in data} == expected, who
    _count, data = listing(world["lq-some@pve"], LISTS["qemu"])
    assert {entry["vmid"] for entry in data} == {BASE + 3, BASE + 5}
    _count, data = listing(world["lq-auditor@pve"], LISTS["qemu"])
    assert BASE + 4 not in {entry["vmid"] for entry in data} and BASE + 3 in {entry["vmid"] for entry in data}


def test_group_and_user_lists_follow_delegation(world):
    _count, groups = listing(world["lq-delegate@pve"], LISTS["groups"])
    assert {g["groupid"] for g in groups} == {"lq-g2", "lq-g7"}
    _count, users = listing(world["lq-delegate@pve"], LISTS["users"])
    assert {u["userid"] for u in users} == {"lq-u2@pve", "lq-u7@pve", "lq-delegate@pve"}
    by_id = {u["userid"]: u for u in users}
    assert by_id["lq-u2@pve"]["groups"] == ["lq-g2"]
    assert [t["tokenid"] for t in by_id["lq-u2@pve"]["tokens"]] == ["tok"]
    assert Group.objects.filter(groupid__startswith="lq-g").count() > 2


def test_task_list_shows_own_tasks_only_and_filters_in_the_query(world):
    _count, tasks = listing(world["lq-some@pve"], LISTS["tasks"])
    assert tasks and {t["user"] for t in tasks} == {"lq-some@pve"}
    _count, errors = listing(world["lq-some@pve"], f"/nodes/{NODE}/tasks?limit=1000&errors=1")
    assert errors and all(t["status"] != "OK" for t in errors)
    assert len(errors) < len(tasks)
    response = world["lq-some@pve"].get(f"{API}/nodes/{NODE}/tasks?limit=2&start=1")
    assert response.json()["total"] == len(tasks) and len(response.json()["data"]) == 2


def test_recent_tasks_put_finished_tasks_without_an_end_last(world):
    """PostgreSQL sorts NULL first when descending: a stopped task with no end time must not crowd
    out the newest finished ones the node publishes."""
    from portal.tasks.entries import recent_tasks

    Task.objects.create(
        upid=f"UPID:{NODE}:0000FFFF:00000000:00000001:qmstart:8999:lq-some@pve:",
        node=NODE,
        type="qmstart",
        vmid="8999",
        user="lq-some@pve",
        starttime=1,
        endtime=None,
        status=Task.STOPPED,
        exitstatus="unexpected status",
    )
    newest = Task.objects.filter(node=NODE, status=Task.STOPPED, endtime__isnull=False).order_by("-endtime").first()
    finished = [entry for entry in recent_tasks() if "endtime" in entry]
    # several tasks may end in the same second; the first published must be one of the newest
    assert finished[0]["endtime"] == newest.endtime
