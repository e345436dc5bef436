"""Operations the task tests submit; the test workers import this module (``--include``)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from portal.tasks.index import TaskHandle
from portal.tasks.registry import operation


@operation("test.echo")
def echo(task: TaskHandle, lines: list[str] | None = None) -> None:
    for line in lines or []:
        task.log(line)


@operation("test.node")
def node_name(task: TaskHandle) -> None:
    task.log(f"running on {settings.PVE_NODE_NAME} in process {os.getpid()}")


@operation("test.fail")
def fail(task: TaskHandle, message: str = "it broke") -> None:
    task.log("about to fail")
    raise RuntimeError(message)


@operation("test.warn")
def warn(task: TaskHandle, count: int = 1) -> None:
    for number in range(count):
        task.warn(f"warning {number + 1}")


@operation("test.sleep", time_limit=120)
def sleep(task: TaskHandle, seconds: float = 1.0, runs: str = "", step: float = 0.05) -> None:
    """Sleeps, logging progress; appends its pid to ``runs`` first (so a second run is visible)."""
    if runs:
        with open(runs, "a") as handle:
            handle.write(f"{os.getpid()}\n")
    task.log(f"sleeping {seconds} s")
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        time.sleep(step)
        count += 1
        if count % 10 == 0:
            task.log(f"still sleeping ({count})")
    task.log("woke up")


@operation("test.stuck")
def stuck(task: TaskHandle, seconds: float = 30.0) -> None:
    """Ignores the soft time limit (like code stuck in C), so only the hard limit ends it."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            task.log("soft limit ignored")


@operation("test.touch")
def touch(task: TaskHandle, path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    task.log(f"touched {path}")


@operation("test.secret")
def secret(task: TaskHandle, password: str) -> None:
    """Proves a secret argument arrived, without writing it anywhere (its SHA-256 only)."""
    task.log(f"got a password with sha256 {hashlib.sha256(password.encode()).hexdigest()}")
