"""Admin changelists run a fixed number of queries, however many rows, and list what the resolver grants."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import User
from tests.query_counts import counting
from vms.models import VM

pytestmark = [pytest.mark.postgres_too, pytest.mark.usefixtures("replicator")]
NODE = "testnode"
PASSWORD = "cq-password"
ROOT_PASSWORD = "test-root-password"  # tests/harness.py
PEOPLE = ("cq-vms@pve", "cq-groups@pve")
CHANGELISTS = {
    "vm": "/admin/vms/vm/",
    "group": "/admin/authz/group/",
    "user": "/admin/authz/user/",
    "pool": "/admin/authz/pool/",
    "storage": "/admin/vms/storage/",
}
# who may open which changelist (the others answer 403: nothing to count)
ALLOWED = {
    "root@pam": set(CHANGELISTS),
    "cq-vms@pve": {"vm", "pool"},
    "cq-groups@pve": {"group", "user"},
}


def admin_client(username: str, password: str) -> Client:
    client = Client()
    response = client.post("/admin/login/", {"username": username, "password": password, "next": "/admin/"})
    assert response.status_code == 302, response.content[:300]
    return client


def add_rows(start: int, count: int) -> None:
    root = User.objects.get(userid="root@pam")
    for n in range(start, start + count):
        services.add_pool(f"cq-p{n}", actor=root)
        VM(vmid=60000 + n, node_id=NODE, config={"name": f"cq{n}"}, pool_id=f"cq-p{n}" if n % 2 else None).save()
        services.add_group(f"cq-g{n}", actor=root)
        services.add_user(f"cq-u{n}@pve", actor=root, groups=[f"cq-g{n}"])


@pytest.fixture(scope="module")
def clients():
    root = User.objects.get(userid="root@pam")
    for userid in PEOPLE:
        if not User.objects.filter(userid=userid).exists():
            services.add_user(userid, actor=root, password=PASSWORD)
    add_rows(0, 10)
    services.modify_acl(root, "/vms/60001", ["PVEVMAdmin"], users=["cq-vms@pve"])
    services.modify_acl(root, "/pool/cq-p3", ["PVEPoolAdmin", "PVEAuditor"], users=["cq-vms@pve"])
    services.modify_acl(root, "/vms/60004", ["PVEAuditor"], users=["cq-vms@pve"])
    services.modify_acl(root, "/access/groups/cq-g4", ["PVEUserAdmin"], users=["cq-groups@pve"])
    return {"root@pam": admin_client("root@pam", ROOT_PASSWORD)} | {u: admin_client(u, PASSWORD) for u in PEOPLE}


def changelist(client: Client, url: str) -> tuple[int, bytes]:
    with counting() as queries:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return queries.count, response.content


CASES = [(who, name) for who in ALLOWED for name in sorted(ALLOWED[who])]


@pytest.mark.parametrize(("who", "name"), CASES, ids=[f"{w}-{n}" for w, n in CASES])
def test_changelist_queries_do_not_grow_with_rows(clients, who, name):
    client = clients[who]
    changelist(client, CHANGELISTS[name])
    before, _page = changelist(client, CHANGELISTS[name])
    add_rows(10 + 10 * CASES.index((who, name)), 4)
    changelist(client, CHANGELISTS[name])  # the ACL snapshot reloads once after the writes
    after, _page = changelist(client, CHANGELISTS[name])
    assert after == before, f"{name} as {who}: {before} queries with fewer rows, {after} with more"


def test_changelists_list_what_the_resolver_grants(clients):
    _count, page = changelist(clients["cq-vms@pve"], CHANGELISTS["vm"])
    assert b">cq1<" in page  # /vms/60001 granted directly
    assert b">cq3<" in page  # 60003 is in pool cq-p3, granted on the pool
    assert b">cq4<" in page  # an auditor may view
    assert b">cq2<" not in page and b">cq5<" not in page
    _count, page = changelist(clients["cq-groups@pve"], CHANGELISTS["group"])
    assert b">cq-g4<" in page and b">cq-g5<" not in page


def test_refused_changelists_stay_refused(clients):
    for who, allowed in ALLOWED.items():
        for name in set(CHANGELISTS) - allowed:
            assert clients[who].get(CHANGELISTS[name]).status_code == 403, (who, name)
