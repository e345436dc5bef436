"""Secrets a task needs (a join password) travel beside its Celery message, never inside it.

The submitting process writes them to a 0600 file in ``<data>/task-secrets`` (0700) named after
the task's UPID, and the message carries only a random one-time token. The worker reads the
file once, after it claimed the task, checks the token and deletes the file; a task that ends
without running (stopped while queued, its message lost) has the file deleted when it ends, and
the reconciler removes files whose task is gone. So no password is in the broker, a task
message, the task row, the task log or any process's argv.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from portal.tasks.exceptions import TaskError
from replicator.files import atomic_write

DIRECTORY = "task-secrets"


def directory() -> Path:
    return Path(settings.PVE_DATA_DIR) / DIRECTORY


def _path(upid: str) -> Path:
    return directory() / hashlib.sha256(upid.encode()).hexdigest()


def store(upid: str, values: dict[str, str]) -> str:
    """Keep ``values`` for the task ``upid`` in a 0600 file; the one-time token its message carries."""
    where = directory()
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(where, 0o700)
    token = secrets.token_urlsafe(32)
    path = _path(upid)
    atomic_write(path, json.dumps({"upid": upid, "token": token, "values": values}).encode(), mode=0o600)
    return token


def take(upid: str, token: str) -> dict[str, str]:
    """The secrets of ``upid``, read once: the file is gone afterwards, whatever the outcome."""
    path = _path(upid)
    try:
        stored = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise TaskError("the task's secret is gone (already used, or discarded when the task ended)") from None
    except ValueError:
        stored = {}
    finally:
        path.unlink(missing_ok=True)
    if stored.get("upid") != upid or not hmac.compare_digest(str(stored.get("token", "")), token):
        raise TaskError("the task's secret does not match its message")
    return dict(stored["values"])


def discard(upid: str) -> None:
    """Delete the secrets of a task that ended (idempotent)."""
    _path(upid).unlink(missing_ok=True)


def sweep(task_is_active: Callable[[str], bool], *, older_than: float = 60.0) -> int:
    """Delete the secrets of tasks no longer queued or running (a submit rolled back, say); how many."""
    removed = 0
    where = directory()
    if not where.is_dir():
        return 0
    now = time.time()
    for path in where.iterdir():
        try:
            if now - path.stat().st_mtime < older_than:
                continue
            try:
                upid = json.loads(path.read_bytes()).get("upid")
            except (ValueError, AttributeError):
                upid = None  # a temporary file of a submit that died, or garbage
            if upid is None or not task_is_active(str(upid)):
                path.unlink(missing_ok=True)
                removed += 1
        except OSError:
            continue
    return removed
