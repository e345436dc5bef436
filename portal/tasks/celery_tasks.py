"""The task framework's Celery tasks: thin wrappers over ``runner`` and ``reconcile``.

Their names keep the ``cluster.`` prefix they had before the framework moved here: queued
messages and the beat schedule (``CELERY_BEAT_SCHEDULE``) refer to them by name.
"""

from __future__ import annotations

from typing import Any

from celery import Task as CeleryTask
from celery.exceptions import TimeLimitExceeded
from celery.signals import worker_ready

from portal.celery import app
from portal.tasks import reconcile, runner


class OperationTask(CeleryTask):
    """Runs registered operations; a hard time limit is reported by the worker's main process."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """After a hard time limit the task's process is killed, so the main process ends the task."""
        if isinstance(exc, TimeLimitExceeded):
            runner.hard_timeout(task_id, (kwargs or {}).get("time_limit"))


@app.task(name=runner.TASK_NAME, base=OperationTask, bind=True, acks_late=True, reject_on_worker_lost=False)
def run_task(
    self: CeleryTask,
    upid: str,
    operation: str,
    kwargs: dict[str, Any] | None = None,
    lock: dict[str, Any] | None = None,
    time_limit: int = 0,
    secret: str | None = None,
) -> str:
    return runner.execute(
        upid, operation, kwargs or {}, lock, worker=self.request.hostname or "", time_limit=time_limit, secret=secret
    )


@app.task(name="cluster.reconcile_tasks")
def reconcile_tasks() -> dict[str, int]:
    return reconcile.reconcile()


@worker_ready.connect
def _reconcile_at_start(**_kwargs: object) -> None:
    """Tasks of a worker that died with this node's previous worker end now, not a minute later."""
    reconcile_tasks.apply_async()
