"""The Celery worker and beat command lines of a node, shared by runnode and the systemd units.

``python -m portal.runner.celery_cli worker`` (or ``beat``) replaces itself with the Celery
process, so systemd supervises Celery directly and both paths use the same options: the worker
consumes only this node's queue (``CELERY_TASK_DEFAULT_QUEUE``), beat keeps its schedule in the
data directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from replicator.private import restrict_umask

WORKER_CONCURRENCY = 2


def worker_argv(python: str, *, queue: str, node: str, log_level: str) -> list[str]:
    return [
        python,
        "-m",
        "celery",
        "-A",
        "portal.celery",
        "worker",
        "--queues",
        queue,
        "--concurrency",
        str(WORKER_CONCURRENCY),
        "--pool",
        "prefork",
        "--hostname",
        f"{node}@%h",
        "--loglevel",
        log_level,
    ]


def beat_argv(python: str, *, data_dir: Path, log_level: str) -> list[str]:
    return [
        python,
        "-m",
        "celery",
        "-A",
        "portal.celery",
        "beat",
        "--schedule",
        str(data_dir / "celerybeat-schedule"),
        "--loglevel",
        log_level,
    ]


def argv_for(kind: str, python: str = sys.executable) -> list[str]:
    """The argv of ``worker`` or ``beat`` from this node's settings."""
    from django.conf import settings

    if kind == "worker":
        return worker_argv(
            python,
            queue=settings.CELERY_TASK_DEFAULT_QUEUE,
            node=settings.PVE_NODE_NAME,
            log_level=settings.PVE_LOG_LEVEL,
        )
    if kind == "beat":
        return beat_argv(python, data_dir=Path(settings.PVE_DATA_DIR), log_level=settings.PVE_LOG_LEVEL)
    raise ValueError(f"unknown Celery process {kind!r} (worker or beat)")


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else args
    if len(args) != 1 or args[0] not in ("worker", "beat"):
        sys.exit("usage: python -m portal.runner.celery_cli worker|beat")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    restrict_umask()  # kept across exec: Celery's files (beat's schedule, task logs) are private
    argv = argv_for(args[0])
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
