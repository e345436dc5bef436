"""``/cluster/backup`` and ``/cluster/backup/{id}``: the scheduled backup jobs of ``jobs.cfg``.

As pve-manager's API2/Backup.pm: Sys.Audit on ``/`` to read, Sys.Modify on ``/`` to change
(and VM.Backup on the pool of a pool job, checked by the service).
"""

from __future__ import annotations

import time
from typing import Any

from rest_framework.request import Request
from rest_framework.response import Response

from authz.permissions import check
from portal.api import params
from portal.api.errors import ParameterError
from portal.api.views import PVEAPIView, ok
from vms.jobs.calendar import parse_calendar_event
from vms.models import BackupJob, BackupJobRun
from vms.services import backup_jobs

AUDIT = ["Sys.Audit"]
MODIFY = ["Sys.Modify"]


def job_or_error(jobid: str) -> BackupJob:
    job = BackupJob.objects.filter(jobid=jobid).first()
    if job is None:
        raise ParameterError({"id": f"No such job '{jobid}'"})
    return job


def job_entry(job: BackupJob, handled: dict[str, int], now: int) -> dict[str, Any]:
    """The job as Proxmox lists it: its keys, ``id``, ``type`` and (when enabled) ``next-run`` on this node."""
    entry: dict[str, Any] = {"id": job.jobid, "type": "vzdump", **backup_jobs.job_values(job)}
    if job.enabled:
        next_run = parse_calendar_event(job.schedule).next_after(handled.get(job.jobid, now))
        if next_run is not None:
            entry["next-run"] = next_run
    return entry


def _handled() -> dict[str, int]:
    return dict(BackupJobRun.objects.values_list("jobid", "handled_until"))


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if key not in ("id", "delete")}


class BackupJobListView(PVEAPIView):
    proxyto = None

    def get(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", AUDIT)
        params.collect(request, {})
        handled, now = _handled(), int(time.time())
        return ok([job_entry(job, handled, now) for job in BackupJob.objects.all()])

    def post(self, request: Request, **kwargs: Any) -> Response:
        check(request.user, "/", MODIFY)
        values = params.collect(request, {})
        jobid = str(values["id"]) if values.get("id") not in (None, "") else None
        backup_jobs.create_backup_job(jobid, _fields(values), actor=request.user)
        return ok(None)


class BackupJobView(PVEAPIView):
    proxyto = None

    def get(self, request: Request, id: str, **kwargs: Any) -> Response:
        check(request.user, "/", AUDIT)
        return ok(job_entry(job_or_error(id), _handled(), int(time.time())))

    def put(self, request: Request, id: str, **kwargs: Any) -> Response:
        check(request.user, "/", MODIFY)
        values = params.collect(request, {"id": id})
        delete = params.id_list(values.get("delete"))
        backup_jobs.update_backup_job(job_or_error(id), _fields(values), actor=request.user, delete=delete)
        return ok(None)

    def delete(self, request: Request, id: str, **kwargs: Any) -> Response:
        check(request.user, "/", MODIFY)
        backup_jobs.delete_backup_job(job_or_error(id), actor=request.user)
        return ok(None)
