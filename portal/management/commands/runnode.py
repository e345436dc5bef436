"""``manage.py runnode``: run a whole node (replicator, HTTPS web, Celery worker and beat, redis)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run this node: replicator, web (HTTPS), Celery worker and beat, and a private redis."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--no-web", action="store_true", help="do not start the web server")
        parser.add_argument("--no-worker", action="store_true", help="do not start the Celery worker")
        parser.add_argument("--no-beat", action="store_true", help="do not start Celery beat")
        parser.add_argument("--no-migrate", action="store_true", help="skip database migrations")

    def handle(self, *args: Any, **options: Any) -> None:
        from portal.runner.node import run_node

        logging.basicConfig(level=settings.PVE_LOG_LEVEL, format="%(asctime)s runnode %(levelname)s: %(message)s")
        self.stderr.write(
            f"node {settings.PVE_NODE_NAME}: https://127.0.0.1:{settings.PVE_HTTPS_PORT}/ (data in {settings.PVE_DATA_DIR})"
        )
        code = run_node(
            web=not options["no_web"],
            worker=not options["no_worker"],
            beat=not options["no_beat"],
            run_migrations=not options["no_migrate"],
        )
        sys.exit(code)
