"""Scheduled backup jobs (``jobs.cfg``): create, update, delete; validated, authorised, audited.

As Proxmox's ``/cluster/backup`` (pve-manager API2/Backup.pm): Sys.Modify on ``/`` to change a
job, and VM.Backup on ``/pool/<pool>`` for a job that backs up a pool. ``actor`` is the
request's user; the cluster log entry travels in the change set of the change.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from cluster.services import log_cluster_message
from replicator.exceptions import ConflictError
from vms import permissions
from vms.config import ConfigError
from vms.jobs import options as job_options
from vms.models import BackupJob, BackupJobRun

CLUSTER = "cluster"
MODIFY = permissions.Need(("Sys.Modify",), "/")
UNDELETABLE = ("schedule", "id")


def job_values(job: BackupJob) -> dict[str, Any]:
    """The job's keys as jobs.cfg and the API name them (``enabled`` always, other flags when set)."""
    values: dict[str, Any] = {"schedule": job.schedule, "enabled": int(job.enabled)}
    if job.repeat_missed:
        values["repeat-missed"] = 1
    if job.node:
        values["node"] = job.node
    if job.comment:
        values["comment"] = job.comment
    values.update(job.options)
    return values


def _rules(checked: Mapping[str, Any]) -> list[permissions.Rule]:
    rules: list[permissions.Rule] = [MODIFY]
    if checked.get("pool"):
        rules.append(permissions.Need(("VM.Backup",), f"/pool/{checked['pool']}"))
    return rules


def _apply(job: BackupJob, values: Mapping[str, Any]) -> None:
    job.schedule = str(values["schedule"])
    job.enabled = bool(values.get("enabled", 1))
    job.repeat_missed = bool(values.get("repeat-missed", 0))
    job.node = str(values.get("node", ""))
    job.comment = str(values.get("comment", ""))
    job.options = {key: values[key] for key in job_options.VZDUMP_KEYS if key in values}


def _described(job: BackupJob) -> str:
    return " ".join(f"-{key} {value}" for key, value in job_values(job).items() if key != "comment")


def create_backup_job(jobid: str | None, fields: Mapping[str, object], *, actor: Any) -> BackupJob:
    """A new job (an id ``backup-<uuid part>`` when none is given, as Proxmox); ``enabled`` defaults to 1."""
    jobid = job_options.check_job_id(jobid) if jobid is not None else f"backup-{str(uuid.uuid4())[:13]}"
    checked = job_options.check_options(fields)
    permissions.authorize(actor, _rules(checked))
    job_options.check_selection(checked)
    if BackupJob.objects.filter(jobid=jobid).exists():
        raise ConflictError(f"Job '{jobid}' already exists")
    job = BackupJob(jobid=jobid)
    _apply(job, {"enabled": 1, **checked})
    with transaction.atomic(using=CLUSTER):
        job.save()
        _log(f"create backup job '{jobid}': {_described(job)}", actor)
    return job


def update_backup_job(
    job: BackupJob, fields: Mapping[str, object], *, actor: Any, delete: Iterable[str] = ()
) -> BackupJob:
    """Change ``job`` (read at the version that is the base: a change made since is a conflict).

    Choosing VMs one way drops the other ways (``vmid`` drops ``all``, ``exclude`` and ``pool`` ...), as Proxmox.
    """
    checked = job_options.check_options(fields)
    permissions.authorize(actor, _rules(checked))
    errors: dict[str, str] = {}
    for key in delete:
        if key in UNDELETABLE:
            errors["delete"] = f"unable to delete required option '{key}'"
        elif key in checked:
            errors["delete"] = f"cannot set and delete property '{key}' at the same time!"
        elif key not in job_options.CHECKS:
            errors["delete"] = f"invalid option '{key}'"
    if errors:
        raise ConfigError(errors)
    values = job_values(job)
    dropped = {"vmid": ("all", "exclude", "pool"), "all": ("vmid", "pool"), "pool": ("vmid", "all")}
    for key, others in dropped.items():
        if checked.get(key):
            for other in others:
                values.pop(other, None)
    for key in delete:
        values.pop(key, None)
    values.update(checked)
    job_options.check_selection(values)
    _apply(job, values)
    with transaction.atomic(using=CLUSTER):
        job.save()
        _log(f"update backup job '{job.jobid}': {_described(job)}", actor)
    return job


def delete_backup_job(job: BackupJob, *, actor: Any) -> None:
    permissions.authorize(actor, [MODIFY])
    with transaction.atomic(using=CLUSTER):
        job.delete()
        _log(f"delete backup job '{job.jobid}'", actor)
    BackupJobRun.objects.filter(jobid=job.jobid).delete()  # this node's state; the others' go when seen stale


def _log(message: str, actor: Any) -> None:
    log_cluster_message(message, user=permissions.principal_of(actor) or "")
