"""Supervise a node's processes: start in order, tee their output, restart with backoff, stop cleanly.

Pure process management (no Django), so it is testable with any child commands.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("runnode")

MAX_RESTARTS = 5
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class ChildSpec:
    """How to run one child; ``ready`` is polled after start until true (or the timeout)."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0


@dataclass
class Child:
    spec: ChildSpec
    log_dir: Path
    process: subprocess.Popen | None = None
    restarts: deque[float] = field(default_factory=deque)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.spec.argv,
            env=self.spec.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        threading.Thread(target=self._tee, args=(self.process,), name=f"tee-{self.spec.name}", daemon=True).start()

    def _tee(self, process: subprocess.Popen) -> None:
        """Copy the child's output to our stderr (prefixed) and to its own log file."""
        assert process.stdout is not None
        with open(self.log_dir / f"{self.spec.name}.log", "ab") as logfile:
            for line in process.stdout:
                logfile.write(line)
                logfile.flush()
                text = line.decode(errors="replace").rstrip("\n")
                self.tail.append(text)
                sys.stderr.write(f"[{self.spec.name}] {text}\n")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", self.spec.name, timeout)
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class GiveUp(Exception):
    """A child failed too often, or never became ready."""


class Supervisor:
    """Starts children in order, waiting for each to be ready; stops them in reverse order."""

    def __init__(
        self, specs: list[ChildSpec], log_dir: Path, *, max_restarts: int = MAX_RESTARTS, window: float = RESTART_WINDOW
    ) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.children = [Child(spec, log_dir) for spec in specs]
        self.max_restarts = max_restarts
        self.window = window
        self.stopping = threading.Event()

    def _start_child(self, child: Child) -> None:
        child.start()
        if child.spec.ready is None:
            return
        deadline = time.monotonic() + child.spec.ready_timeout
        while not child.spec.ready():
            if not child.alive():
                raise GiveUp(self._failure(child, "exited before it was ready"))
            if time.monotonic() > deadline or self.stopping.is_set():
                raise GiveUp(self._failure(child, f"not ready after {child.spec.ready_timeout:.0f} s"))
            time.sleep(0.1)

    def _failure(self, child: Child, what: str) -> str:
        time.sleep(0.2)  # let the tee thread catch the last lines
        code = child.process.poll() if child.process else None
        tail = "\n".join(f"    {line}" for line in child.tail) or "    (no output)"
        return f"{child.spec.name} {what} (exit code {code}); last output:\n{tail}"

    def start(self) -> None:
        for child in self.children:
            if self.stopping.is_set():
                return
            log.info("starting %s", child.spec.name)
            self._start_child(child)

    def watch_once(self) -> None:
        """Restart dead children with backoff; GiveUp after too many restarts in the window."""
        now = time.monotonic()
        for child in self.children:
            if self.stopping.is_set() or child.alive():
                continue
            while child.restarts and now - child.restarts[0] > self.window:
                child.restarts.popleft()
            if len(child.restarts) >= self.max_restarts:
                raise GiveUp(self._failure(child, f"died {len(child.restarts) + 1} times within {self.window:.0f} s"))
            delay = min(2 ** len(child.restarts) * 0.5, 10.0)
            log.warning(
                "%s exited with %s; restarting in %.1f s",
                child.spec.name,
                child.process.poll() if child.process else None,
                delay,
            )
            child.restarts.append(now)
            if self.stopping.wait(delay):
                return
            self._start_child(child)

    def stop(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            if child.alive():
                log.info("stopping %s", child.spec.name)
            child.stop()

    def run(self, poll: float = 0.5) -> int:
        """Run until a signal (exit 0) or a child gives up (exit 1)."""

        def _signal(signum: int, _frame: object) -> None:
            log.info("received signal %d, stopping the node", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        try:
            self.start()
            while not self.stopping.wait(poll):
                self.watch_once()
        except GiveUp as exc:
            log.error("giving up: %s", exc)
            self.stop()
            return 1
        self.stop()
        return 0
