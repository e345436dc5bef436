"""``manage.py runnode``: run a whole node (private redis, replicator, Celery worker and beat, HTTPS web).

A thin command over :mod:`portal.runner`; production runs the same pieces as systemd units
(``contrib/systemd``).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run this node: a private redis, the replicator, Celery worker and beat, and the HTTPS web server."
    requires_system_checks: list[str] = []  # the children run their own checks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-web", action="store_true", help="do not start the web server")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker")
        parser.add_argument("--no-beat", action="store_true", help="do not start Celery beat")
        parser.add_argument("--no-migrate", action="store_true", help="skip the database migrations")

    def handle(self, *args: Any, **options: Any) -> None:
        from portal.runner.node import run_node

        logging.basicConfig(
            level=settings.PVE_LOG_LEVEL, format="%(asctime)s runnode %(levelname)s: %(message)s", force=True
        )
        logging.getLogger("runnode").setLevel(logging.INFO)  # start/stop/restart lines always show
        if not options["no_web"]:
            self.stderr.write(
                f"node {settings.PVE_NODE_NAME}: https://127.0.0.1:{settings.PVE_HTTPS_PORT}/ "
                f"(data in {settings.PVE_DATA_DIR}, logs in {settings.PVE_LOG_DIR})"
            )
        code = run_node(
            web=not options["no_web"],
            worker=not options["no_worker"],
            beat=not options["no_beat"],
            run_migrations=not options["no_migrate"],
        )
        sys.exit(code)
