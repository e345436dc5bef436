"""The Celery app; each node's worker consumes that node's own queue (``node.<name>``)."""

from __future__ import annotations

import contextlib
import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
app.autodiscover_tasks(["portal.tasks"], related_name="celery_tasks")  # the task framework's own


@worker_process_init.connect
def _fresh_connections(**_kwargs: object) -> None:
    """Prefork children must not share the parent's database connections.

    The worker's main process uses the database too (it ends a task after a hard time limit),
    so the inherited connections are dropped without a word to the server: ``close()`` would
    end a PostgreSQL session the parent still uses. (Celery's Django fixup does the same; this
    keeps it true whatever the fixup does.)
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is not None:
            with contextlib.suppress(AttributeError, OSError, TypeError):
                os.close(raw.fileno())
            connection.connection = None
