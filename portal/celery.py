"""The Celery app; each node's worker consumes that node's own queue (``node.<name>``)."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _fresh_connections(**_kwargs: object) -> None:
    """Prefork children must not share the parent's database connections."""
    from django.db import connections

    connections.close_all()
