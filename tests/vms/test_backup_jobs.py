"""Scheduled backup jobs (``jobs.cfg``): the API, validation, the audit entry and the rendered file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from authz.models import Pool, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client
from tests.api_client import logged_in
from vms import services
from vms.models import BackupJob, BackupJobRun, Storage

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"
NODE = "testnode"


@pytest.fixture(scope="module")
def root_client():
    return logged_in()


@pytest.fixture(scope="module")
def backup_store(tmp_path_factory) -> Iterator[Storage]:
    """A storage for backups and one without (removed afterwards: other modules read storage.cfg)."""
    root = User.objects.get(userid="root@pam")
    path = tmp_path_factory.mktemp("bj-store")
    store = services.create_storage("bj-store", {"path": str(path), "content": "backup,images"}, actor=root)
    images = services.create_storage("bj-images", {"path": str(path / "i"), "content": "images"}, actor=root)
    pool = Pool(poolid="bj-pool")
    pool.save()
    yield store
    for job in BackupJob.objects.all():
        job.delete()
    services.delete_storage(store, actor=root)
    services.delete_storage(images, actor=root)
    pool.delete()


@pytest.fixture(autouse=True)
def _no_jobs():
    yield
    for job in BackupJob.objects.all():
        job.delete()
    BackupJobRun.objects.all().delete()


def _sync() -> None:
    replicator_client.wait_mirror(int(replicator_client.status()["version"]))


def test_create_read_list_update_delete(root_client, backup_store, etc_dir):
    created = root_client.post(
        f"{API}/cluster/backup",
        {
            "id": "bj-nightly",
            "schedule": "mon..fri 22:00",
            "vmid": "100,101",
            "storage": "bj-store",
            "mode": "snapshot",
            "compress": "zstd",
            "prune-backups": "keep-daily=7,keep-last=3",
            "notes-template": "{{guestname}}",
            "comment": "weekday nights",
        },
    )
    assert created.status_code == 200, created.content
    assert created.json()["data"] is None
    job = root_client.get(f"{API}/cluster/backup/bj-nightly").json()["data"]
    assert job["next-run"] > 0
    job.pop("next-run")
    assert job == {
        "id": "bj-nightly",
        "type": "vzdump",
        "schedule": "mon..fri 22:00",
        "enabled": 1,
        "comment": "weekday nights",
        "vmid": "100,101",
        "storage": "bj-store",
        "mode": "snapshot",
        "compress": "zstd",
        "prune-backups": "keep-last=3,keep-daily=7",
        "notes-template": "{{guestname}}",
    }
    _sync()
    assert (etc_dir / "jobs.cfg").read_text() == (
        "vzdump: bj-nightly\n"
        "\tcomment weekday nights\n"
        "\tcompress zstd\n"
        "\tenabled 1\n"
        "\tmode snapshot\n"
        "\tnotes-template {{guestname}}\n"
        "\tprune-backups keep-last=3,keep-daily=7\n"
        "\tschedule mon..fri 22:00\n"
        "\tstorage bj-store\n"
        "\tvmid 100,101\n"
    )
    assert ClusterLogEntry.objects.filter(msg__startswith="create backup job 'bj-nightly'", user="root@pam").exists()

    # PUT: choosing all VMs drops the vmid list; delete removes keys; enabled 0 keeps the job without next-run
    changed = root_client.put(
        f"{API}/cluster/backup/bj-nightly",
        "all=1&exclude=105&enabled=0&repeat-missed=1&node=testnode&delete=comment,notes-template",
        content_type="application/x-www-form-urlencoded",
    )
    assert changed.status_code == 200, changed.content
    listed = root_client.get(f"{API}/cluster/backup").json()["data"]
    assert listed == [
        {
            "id": "bj-nightly",
            "type": "vzdump",
            "schedule": "mon..fri 22:00",
            "enabled": 0,
            "repeat-missed": 1,
            "node": "testnode",
            "all": 1,
            "exclude": "105",
            "storage": "bj-store",
            "mode": "snapshot",
            "compress": "zstd",
            "prune-backups": "keep-last=3,keep-daily=7",
        }
    ]
    assert ClusterLogEntry.objects.filter(msg__startswith="update backup job 'bj-nightly'").exists()

    # a second job (id generated) sorts into the same file
    assert root_client.post(f"{API}/cluster/backup", {"schedule": "sat 02:00", "pool": "bj-pool"}).status_code == 200
    generated = BackupJob.objects.exclude(jobid="bj-nightly").get()
    assert generated.jobid.startswith("backup-") and len(generated.jobid) == len("backup-") + 13
    _sync()
    text = (etc_dir / "jobs.cfg").read_text()
    assert f"vzdump: {generated.jobid}\n\tenabled 1\n\tpool bj-pool\n\tschedule sat 02:00\n" in text
    assert "\n\nvzdump: " in text

    assert root_client.delete(f"{API}/cluster/backup/bj-nightly").status_code == 200
    assert not BackupJob.objects.filter(jobid="bj-nightly").exists()
    assert ClusterLogEntry.objects.filter(msg="delete backup job 'bj-nightly'").exists()
    gone = root_client.get(f"{API}/cluster/backup/bj-nightly")
    assert gone.status_code == 400 and gone.json()["errors"] == {"id": "No such job 'bj-nightly'"}
    _sync()
    assert "bj-nightly" not in (etc_dir / "jobs.cfg").read_text()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        ({"schedule": "sat 25:00", "all": "1"}, {"schedule": "hour 25 out of range 0..23"}),
        ({"schedule": "every day", "all": "1"}, {"schedule": "invalid weekday 'every'"}),
        ({"all": "1"}, {"schedule": "property is missing"}),
        ({"schedule": "sat 02:00"}, {"vmid": "property is missing"}),
        ({"schedule": "sat 02:00", "all": "1", "vmid": "100"}, {"all": "option conflicts with option 'vmid'"}),
        ({"schedule": "sat 02:00", "vmid": "100", "exclude": "101"}, {"exclude": "option only makes sense"}),
        ({"schedule": "sat 02:00", "all": "1", "storage": "bj-nowhere"}, {"storage": "does not exist"}),
        ({"schedule": "sat 02:00", "all": "1", "storage": "bj-images"}, {"storage": "does not support backups"}),
        ({"schedule": "sat 02:00", "all": "1", "node": "nosuchnode"}, {"node": "no such cluster node"}),
        ({"schedule": "sat 02:00", "all": "1", "pool": "bj-nopool"}, {"pool": "does not exist"}),
        ({"schedule": "sat 02:00", "vmid": "100,abc"}, {"vmid": "does not look like a valid VM ID"}),
        ({"schedule": "sat 02:00", "all": "1", "mode": "fast"}, {"mode": "enumeration"}),
        ({"schedule": "sat 02:00", "all": "1", "compress": "xz"}, {"compress": "enumeration"}),
        ({"schedule": "sat 02:00", "all": "1", "prune-backups": "keep-lots=3"}, {"prune-backups": "unknown option"}),
        (
            {"schedule": "sat 02:00", "all": "1", "prune-backups": "keep-all=1,keep-last=2"},
            {"prune-backups": "keep-all cannot be set together"},
        ),
        ({"schedule": "sat 02:00", "all": "1", "comment": "two\nlines"}, {"comment": "control"}),
        ({"schedule": "sat 02:00", "all": "1", "ionice": "9"}, {"ionice": "between 0 and 8"}),
        ({"schedule": "sat 02:00", "all": "1", "enabled": "maybe"}, {"enabled": "boolean"}),
        ({"schedule": "sat 02:00", "all": "1", "dumpdir": "/tmp"}, {"dumpdir": "not defined in schema"}),
        ({"id": "9bad", "schedule": "sat 02:00", "all": "1"}, {"id": "invalid configuration ID"}),
    ],
)
def test_bad_jobs_are_400_with_errors(root_client, backup_store, body, errors):
    before = replicator_client.status()["version"]
    response = root_client.post(f"{API}/cluster/backup", body)
    assert response.status_code == 400, response.content
    got = response.json()["errors"]
    assert set(got) == set(errors)
    for key, fragment in errors.items():
        assert fragment in got[key]
    assert not BackupJob.objects.exists()
    assert replicator_client.status()["version"] == before


def test_existing_id_is_refused_and_update_keeps_rules(root_client, backup_store):
    assert (
        root_client.post(f"{API}/cluster/backup", {"id": "bj-one", "schedule": "daily", "all": "1"}).status_code == 200
    )
    again = root_client.post(f"{API}/cluster/backup", {"id": "bj-one", "schedule": "daily", "all": "1"})
    assert again.status_code != 200 and "already exists" in again.content.decode()
    form = "application/x-www-form-urlencoded"
    bad = [
        ("schedule=*-13-01", {"schedule"}),
        ("delete=schedule", {"delete"}),
        ("delete=all", {"vmid"}),  # nothing would be selected
        ("vmid=100&delete=vmid", {"delete"}),
    ]
    for body, keys in bad:
        response = root_client.put(f"{API}/cluster/backup/bj-one", body, content_type=form)
        assert response.status_code == 400, (body, response.content)
        assert set(response.json()["errors"]) == keys, body
    assert BackupJob.objects.get(jobid="bj-one").options == {"all": 1}
    missing = root_client.put(f"{API}/cluster/backup/bj-none", "all=1", content_type=form)
    assert missing.status_code == 400
