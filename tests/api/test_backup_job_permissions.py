"""Permission matrix of ``/cluster/backup`` with real ACLs: Sys.Audit on / to read, Sys.Modify on / to change,
VM.Backup on the pool of a pool job. Anonymous 401; no privilege 403; the privilege elsewhere 403; the holder
allowed; a refusal changes nothing (the cluster version stays)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from authz import services as authz_services
from authz.models import ACLEntry, Pool, Role, User
from replicator import client as replicator_client
from vms.models import BackupJob
from vms.services import backup_jobs

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
PASSWORD = "bjp-password"
USERS = ("bjp-nobody@pve", "bjp-other@pve", "bjp-holder@pve")
MODIFY_ROLE = "bjp-sysmodify"


def login(userid: str) -> tuple[Client, str]:
    client = Client(enforce_csrf_checks=True)
    data = client.post(f"{API}/access/ticket", {"username": userid, "password": PASSWORD}).json()["data"]
    client.cookies["PVEAuthCookie"] = data["ticket"]
    return client, data["CSRFPreventionToken"]


@pytest.fixture(scope="module")
def root() -> Iterator[User]:
    user = User.objects.get(userid="root@pam")
    for userid in USERS:
        if not User.objects.filter(userid=userid).exists():
            authz_services.add_user(userid, actor=user, password=PASSWORD)
    if not Role.objects.filter(roleid=MODIFY_ROLE).exists():
        authz_services.save_role(MODIFY_ROLE, ["Sys.Modify"], actor=user, create=True)
    pools = [Pool(poolid=poolid) for poolid in ("bjp-pool", "bjp-otherpool")]
    for pool in pools:
        pool.save()
    yield user
    for job in BackupJob.objects.filter(jobid__startswith="bjp-"):
        job.delete()
    for pool in pools:
        pool.delete()


def ensure_job(jobid: str, root: User) -> None:
    if not BackupJob.objects.filter(jobid=jobid).exists():
        backup_jobs.create_backup_job(jobid, {"schedule": "sat 02:00", "all": 1}, actor=root)


# method, path, body, holder's ACLs, the other user's ACLs (same roles elsewhere), job to prepare
CASES = [
    ("get", "/cluster/backup", "", [("/", "PVEAuditor")], [("/vms/100", "PVEAuditor")], "bjp-a"),
    ("get", "/cluster/backup/bjp-a", "", [("/", "PVEAuditor")], [("/storage", "PVEAuditor")], "bjp-a"),
    (
        "post",
        "/cluster/backup",
        "id=bjp-new&schedule=daily&all=1",
        [("/", MODIFY_ROLE)],
        [("/nodes/testnode", MODIFY_ROLE), ("/", "PVEAuditor")],
        None,
    ),
    (
        "post",
        "/cluster/backup",
        "id=bjp-poolnew&schedule=daily&pool=bjp-pool",
        [("/", MODIFY_ROLE), ("/pool/bjp-pool", "PVEVMAdmin")],
        [("/", MODIFY_ROLE), ("/pool/bjp-otherpool", "PVEVMAdmin")],
        None,
    ),
    ("put", "/cluster/backup/bjp-a", "schedule=sun 03:00", [("/", MODIFY_ROLE)], [("/vms", MODIFY_ROLE)], "bjp-a"),
    ("delete", "/cluster/backup/bjp-gone", "", [("/", MODIFY_ROLE)], [("/", "PVEAuditor")], "bjp-gone"),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]} {c[1]} {c[2]}" for c in CASES])
def test_matrix(root, case):
    method, path, body, held, elsewhere, job = case
    if job:
        ensure_job(job, root)
    for entry in ACLEntry.objects.filter(ugid__in=USERS):
        entry.delete()
    for acl_path, role in held:
        authz_services.modify_acl(root, acl_path, [role], users=["bjp-holder@pve"])
    for acl_path, role in elsewhere:
        authz_services.modify_acl(root, acl_path, [role], users=["bjp-other@pve"])
    clients = {userid: login(userid) for userid in USERS}

    def call(client: Client, csrf: str = "") -> int:
        kwargs = {"content_type": "application/x-www-form-urlencoded"}
        if csrf:
            kwargs["HTTP_CSRFPREVENTIONTOKEN"] = csrf
        return getattr(client, method)(f"{API}{path}", body, **kwargs).status_code

    before = replicator_client.status()["version"]
    assert call(Client()) == 401
    assert call(*clients["bjp-nobody@pve"]) == 403
    assert call(*clients["bjp-other@pve"]) == 403
    assert replicator_client.status()["version"] == before, "a refused request changed something"
    assert call(*clients["bjp-holder@pve"]) == 200
