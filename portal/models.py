"""Node-local models of the frameworks in ``portal`` (``default`` database): the task index."""

from __future__ import annotations

from django.db import models


class Task(models.Model):
    """Node-local task index (``default`` database): one row per UPID of this node.

    ``status`` moves queued -> running -> finishing -> stopped (the API shows all but stopped as
    ``running``). ``pid``/``pstart`` name the process responsible for the task right now: the
    Celery worker process running it, or whoever is finishing it; a running task whose process
    is gone is dead (see ``portal.tasks.state``).
    """

    QUEUED, RUNNING, FINISHING, STOPPED = "queued", "running", "finishing", "stopped"
    ACTIVE = (QUEUED, RUNNING, FINISHING)

    upid = models.CharField(max_length=255, primary_key=True)
    node = models.CharField(max_length=63)
    type = models.CharField(max_length=64)
    vmid = models.CharField(max_length=64, blank=True, default="")
    user = models.CharField(max_length=128)
    starttime = models.BigIntegerField()
    endtime = models.BigIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, default="running")
    exitstatus = models.CharField(max_length=4096, blank=True, default="")
    operation = models.CharField(max_length=64, blank=True, default="", help_text="Registered operation name.")
    worker = models.CharField(max_length=255, blank=True, default="", help_text="Celery worker that ran it.")
    pid = models.IntegerField(null=True, blank=True)
    pstart = models.BigIntegerField(null=True, blank=True)
    lock = models.JSONField(null=True, blank=True, help_text="The lease the task holds: kind, key, reason.")

    class Meta:
        db_table = "cluster_task"  # its name from before it moved here from the cluster app
        ordering = ["-starttime"]
        indexes = [models.Index(fields=["starttime"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return self.upid
