"""Running scheduled backup jobs on this node (pvescheduler's part): each node for its own VMs.

Every minute this node's beat calls ``run_due_jobs``. For each enabled job meant for this node
(no ``node``, or this one) it claims the slots since it last looked, ``(handled_until, now]``,
by moving ``handled_until`` forward from the value it read (a compare-and-swap in this node's
database): two ticks never claim the same slot, so a job never runs twice for one slot here.
A slot within the last ``MISSED_AFTER`` seconds runs now; older slots (the node was down) run
once together when ``repeat-missed`` is set and are skipped otherwise. A run is a ``vzdump``
task (UPID) on this node's worker, backing up this node's VMs of the job's selection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction

from portal.tasks.runner import submit
from vms.exceptions import CalendarEventError
from vms.jobs.calendar import parse_calendar_event
from vms.models import BackupJob, BackupJobRun

log = logging.getLogger(__name__)

MISSED_AFTER = 120  # seconds: a slot older than this at a tick was missed (the beat ticks every 60 s)
OPERATION = "vms.backup_job"
# The vzdump options a job passes on (the vzdump service's own); mail options have no mail here.
PASSED = (
    "vmid", "all", "exclude", "pool", "storage", "mode", "compress", "bwlimit", "ionice", "remove",
    "prune-backups", "protected", "notes-template", "stopwait", "zstd", "lockwait",
)  # fmt: skip


@dataclass(frozen=True)
class Due:
    """A run this tick claimed: the job, its slot (epoch seconds), and whether the slot was missed."""

    jobid: str
    slot: int
    missed: bool


def _claim(jobid: str, now: int) -> int | None:
    """The start of the interval ``(start, now]`` this tick now owns for ``jobid``; None if another did."""
    run = BackupJobRun.objects.filter(jobid=jobid).first()
    if run is None:
        try:
            with transaction.atomic():
                BackupJobRun.objects.create(jobid=jobid, handled_until=now)
            return now - MISSED_AFTER  # a job first seen: only a slot due right now counts
        except IntegrityError:
            return None
    start = run.handled_until
    if start >= now:
        return None
    moved = BackupJobRun.objects.filter(jobid=jobid, handled_until=start).update(handled_until=now)
    return start if moved == 1 else None


def due_now(job: BackupJob, start: int, now: int) -> Due | None:
    """Which run, if any, the slots in ``(start, now]`` ask for (pure: no clock, no database)."""
    event = parse_calendar_event(job.schedule)
    current = event.next_after(max(start, now - MISSED_AFTER))
    if current is not None and current <= now:
        return Due(job.jobid, current, False)
    first = event.next_after(start)
    if first is None or first > now:
        return None
    if job.repeat_missed:
        return Due(job.jobid, first, True)
    log.info("backup job %s: skipping the run missed at %s (repeat-missed is off)", job.jobid, time.ctime(first))
    return None


def run_due_jobs(now: int | None = None) -> list[str]:
    """Start this node's due runs; their UPIDs."""
    now = int(time.time()) if now is None else now
    node = settings.PVE_NODE_NAME
    jobs = list(BackupJob.objects.filter(enabled=True))
    upids: list[str] = []
    for job in jobs:
        if job.node and job.node != node:
            continue
        start = _claim(job.jobid, now)
        if start is None:
            continue
        try:
            due = due_now(job, start, now)
        except CalendarEventError as exc:
            log.warning("backup job %s: bad schedule: %s", job.jobid, exc)
            continue
        if due is None:
            continue
        options = {key: value for key, value in job.options.items() if key in PASSED}
        upid = submit(
            "vzdump", "", "root@pam", OPERATION, jobid=job.jobid, options=options, slot=due.slot, missed=due.missed
        )
        BackupJobRun.objects.filter(jobid=job.jobid).update(last_slot=due.slot, last_upid=upid)
        upids.append(upid)
    BackupJobRun.objects.exclude(jobid__in=[job.jobid for job in BackupJob.objects.all()]).delete()
    return upids
