"""Scheduled backup jobs running on this node: due slots, missed slots (repeat-missed), one run per slot,
the node restriction, and a run through the real beat task and the real worker (a ``vzdump`` task)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from authz.models import Pool, User
from cluster.models import Node
from portal.celery import app
from portal.models import Task
from portal.tasks.logs import read_lines
from tests.api_client import finished_task
from vms import services
from vms.jobs import scheduler
from vms.models import BackupJob, BackupJobRun, Storage
from vms.services import backup_jobs

pytestmark = [pytest.mark.usefixtures("replicator", "celery_worker")]
NOW = 1_796_119_230  # 2026-12-01 10:00:30 UTC, a Tuesday


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Iterator[Storage]:
    """A backup storage and an empty pool: a job of that pool runs the real vzdump, which backs up nothing."""
    root = User.objects.get(userid="root@pam")
    made = services.create_storage(
        "bjr-store", {"path": str(tmp_path_factory.mktemp("bjr")), "content": "backup"}, actor=root
    )
    pool = Pool(poolid="bjr-pool")
    pool.save()
    yield made
    for job in BackupJob.objects.all():
        job.delete()
    services.delete_storage(made, actor=root)
    pool.delete()


@pytest.fixture(autouse=True)
def _utc(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def make_job(jobid: str, schedule: str, **extra: object) -> BackupJob:
    root = User.objects.get(userid="root@pam")
    existing = BackupJob.objects.filter(jobid=jobid).first()
    if existing is not None:
        existing.delete()
    BackupJobRun.objects.filter(jobid=jobid).delete()
    fields = {"schedule": schedule, "pool": "bjr-pool", "storage": "bjr-store", **extra}
    return backup_jobs.create_backup_job(jobid, fields, actor=root)


def test_due_now_decides_on_time_missed_and_nothing():
    job = BackupJob(jobid="x", schedule="10:00", repeat_missed=False)
    assert scheduler.due_now(job, NOW - 60, NOW) == scheduler.Due("x", NOW - 30, False)
    assert scheduler.due_now(job, NOW - 10, NOW) is None  # the slot was handled before
    two_days = 2 * 86400
    assert scheduler.due_now(job, NOW - two_days, NOW) == scheduler.Due("x", NOW - 30, False)  # on time wins
    later = NOW + 3600  # 11:00:30: 10:00 was missed (the node was down)
    assert scheduler.due_now(job, NOW - 600, later) is None
    job.repeat_missed = True
    assert scheduler.due_now(job, NOW - 600, later) == scheduler.Due("x", NOW - 30, True)
    assert scheduler.due_now(job, NOW - two_days, later) == scheduler.Due(
        "x", NOW - 30 - 86400, True
    )  # the first, once
    assert scheduler.due_now(BackupJob(jobid="y", schedule="2015-10-21"), NOW - 600, NOW) is None


def test_a_slot_runs_once_and_missed_slots_follow_repeat_missed(store):
    job = make_job("bjr-daily", "10:00")
    assert scheduler.run_due_jobs(NOW - 120) == []  # first seen: nothing due yet
    first = scheduler.run_due_jobs(NOW)
    assert len(first) == 1 and BackupJobRun.objects.get(jobid=job.jobid).last_slot == NOW - 30
    assert scheduler.run_due_jobs(NOW) == []  # the same tick again
    assert scheduler.run_due_jobs(NOW + 30) == []  # the next tick: the slot is handled
    # the node was down over the next day's 10:00: skipped without repeat-missed ...
    assert scheduler.run_due_jobs(NOW + 86400 + 3600) == []
    assert BackupJobRun.objects.get(jobid=job.jobid).last_slot == NOW - 30
    # ... and run once (for all missed slots) with it
    backup_jobs.update_backup_job(job, {"repeat-missed": 1}, actor=User.objects.get(userid="root@pam"))
    late = scheduler.run_due_jobs(NOW + 4 * 86400 + 3600)
    assert len(late) == 1
    assert BackupJobRun.objects.get(jobid=job.jobid).last_slot == NOW - 30 + 2 * 86400
    assert scheduler.run_due_jobs(NOW + 4 * 86400 + 3660) == []
    for upid in first + late:
        task = finished_task(upid)
        assert task.type == "vzdump" and task.exitstatus == "OK", (upid, read_lines(upid))
    assert any("missed while the node was down" in line for line in read_lines(late[0]))


def test_only_the_named_node_and_enabled_jobs_run(store):
    for job in BackupJob.objects.all():
        job.delete()
    if not Node.objects.filter(name="bjr-other").exists():
        Node(name="bjr-other", nodeid=77, address="127.0.0.77").save()
    make_job("bjr-elsewhere", "10:00", node="bjr-other")
    make_job("bjr-off", "10:00", enabled=0)
    make_job("bjr-here", "10:00", node="testnode")
    BackupJobRun.objects.all().delete()
    for job in BackupJob.objects.all():
        BackupJobRun(jobid=job.jobid, handled_until=NOW - 60).save()
    upids = scheduler.run_due_jobs(NOW)
    assert len(upids) == 1 and BackupJobRun.objects.get(jobid="bjr-here").last_upid == upids[0]
    assert BackupJobRun.objects.get(jobid="bjr-elsewhere").last_upid == ""
    assert BackupJobRun.objects.get(jobid="bjr-off").last_upid == ""
    finished_task(upids[0])
    BackupJob.objects.get(jobid="bjr-elsewhere").delete()
    Node.objects.get(name="bjr-other").delete()


def test_the_beat_task_runs_a_due_job_once_in_the_real_worker(store):
    """``vms.run_backup_jobs`` (what the beat sends every minute) in the worker: a job due every minute fires once."""
    for job in BackupJob.objects.all():
        job.delete()
    BackupJobRun.objects.all().delete()
    make_job("bjr-minutely", "*")  # a slot every minute: one is within the last two minutes at any time
    BackupJobRun(jobid="bjr-minutely", handled_until=int(time.time()) - 90).save()
    before = set(Task.objects.filter(type="vzdump").values_list("upid", flat=True))
    started = app.send_task("vms.run_backup_jobs", queue="node.testnode")
    deadline = time.monotonic() + 60
    while not BackupJobRun.objects.get(jobid="bjr-minutely").last_upid and time.monotonic() < deadline:
        time.sleep(0.2)
    upid = BackupJobRun.objects.get(jobid="bjr-minutely").last_upid
    assert upid, f"the beat task {started.id} started no run"
    task = finished_task(upid)
    assert task.type == "vzdump" and task.user == "root@pam" and task.exitstatus == "OK", read_lines(upid)
    assert any("backup job 'bjr-minutely'" in line for line in read_lines(upid))
    assert any("starting new backup job" in line for line in read_lines(upid))
    # a second beat tick: the job now names only the slot just run, so nothing may run again
    run = BackupJobRun.objects.get(jobid="bjr-minutely")
    job = BackupJob.objects.get(jobid="bjr-minutely")
    backup_jobs.update_backup_job(
        job,
        {"schedule": time.strftime("%H:%M", time.localtime(run.last_slot))},
        actor=User.objects.get(userid="root@pam"),
    )
    while int(time.time()) <= run.handled_until:  # a tick in the same second has nothing to claim
        time.sleep(0.1)
    app.send_task("vms.run_backup_jobs", queue="node.testnode")
    deadline = time.monotonic() + 60
    while BackupJobRun.objects.get(jobid="bjr-minutely").handled_until == run.handled_until:
        assert time.monotonic() < deadline, "the second beat task did not run"
        time.sleep(0.2)
    assert BackupJobRun.objects.get(jobid="bjr-minutely").last_upid == upid
    assert set(Task.objects.filter(type="vzdump").values_list("upid", flat=True)) - before == {upid}
