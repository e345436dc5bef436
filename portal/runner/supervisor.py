"""Supervise a node's processes: start in order, tee their output, restart with backoff, stop cleanly.

The :class:`Supervisor` is pure process management (no Django): it takes a list of
:class:`ChildSpec` and is tested with tiny children. ``manage.py runnode`` enters through
:func:`portal.runner.node.run_node`, which builds the node's children (it needs Django) and
supervises them with this.
"""

from __future__ import annotations

import contextlib
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

from portal.runner.lifetime import die_with_parent
from portal.syslog import Writer

log = logging.getLogger("runnode")

MAX_RESTARTS = 5  # restarts of one child within RESTART_WINDOW before the runner gives up
RESTART_WINDOW = 60.0
STOP_TIMEOUT = 10.0  # SIGTERM, then SIGKILL after this many seconds
TAIL_LINES = 20
RESTART_EXIT_CODE = 75  # a child exiting with this wants to be started again at once (replicator.transport)
EXPLAIN_INTERVAL = 2.0  # how often a waiting child is asked why it is not ready


@dataclass
class ChildSpec:
    """How to run one child.

    ``ready`` is polled after every start until it returns true; ``waiting_for`` says what it
    checks, for the timeout message. Children start in list order and stop in reverse order.
    """

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    cwd: Path | None = None
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    waiting_for: str = "it to become ready"
    pass_fds: tuple[int, ...] = ()  # descriptors the child inherits (with the same numbers)
    # Why the child is not ready yet, when it knows (None: no known reason). An explained wait is
    # logged when the reason changes and never times out: the child waits for something else.
    explain: Callable[[], str | None] | None = None


@dataclass
class Child:
    spec: ChildSpec
    log_dir: Path
    process: subprocess.Popen | None = None
    restarts: deque[float] = field(default_factory=deque)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    tee: threading.Thread | None = None
    inherit_fds: tuple[int, ...] = ()  # given to every child (the node lock)
    syslog: Writer | None = None  # the node's system log (``/nodes/{node}/syslog``)

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.spec.name}.log"

    def start(self) -> None:
        # argv list, never a shell; a session of its own so a terminal's Ctrl-C reaches only the
        # runner, which then stops the children in order; killed with the runner (lifetime).
        self.process = subprocess.Popen(
            self.spec.argv,
            env=self.spec.env,
            cwd=self.spec.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=(*self.spec.pass_fds, *self.inherit_fds),
            preexec_fn=die_with_parent(),
        )
        self.tee = threading.Thread(target=self._tee, args=(self.process,), name=f"tee-{self.spec.name}", daemon=True)
        self.tee.start()

    def _tee(self, process: subprocess.Popen) -> None:
        """Copy the child's output to its own log file and to our stderr, prefixed with its name."""
        assert process.stdout is not None
        fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)  # logs may name users and hosts: the node's user only, whatever the umask
        with os.fdopen(fd, "ab") as logfile:
            for line in process.stdout:
                text = line.decode(errors="replace").rstrip("\r\n")
                self.tail.append(text)
                try:
                    logfile.write(line)
                    logfile.flush()
                    if self.syslog is not None:
                        self.syslog.write(self.spec.name, process.pid, text)
                except OSError:
                    pass  # a full disk must not block the child on a full pipe
                try:
                    sys.stderr.write(f"[{self.spec.name}] {text}\n")
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass  # our stderr went away; keep draining the pipe

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL the child's whole process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s; killing it", self.spec.name, timeout)
                self._kill_group()
                self.process.wait()
        # Leftovers of the child's session (a Celery pool process, say) must not outlive it.
        self._kill_group()
        if self.tee is not None:
            self.tee.join(timeout=2)

    def _kill_group(self) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class GiveUp(Exception):
    """A child failed too often, or never became ready."""


class Supervisor:
    """Starts children in order, waiting for each to be ready; stops them in reverse order."""

    def __init__(
        self,
        specs: list[ChildSpec],
        log_dir: Path,
        *,
        max_restarts: int = MAX_RESTARTS,
        window: float = RESTART_WINDOW,
        stop_timeout: float = STOP_TIMEOUT,
        backoff: Callable[[int], float] | None = None,
        inherit_fds: tuple[int, ...] = (),
    ) -> None:
        """``inherit_fds`` are handed to every child (:func:`portal.runner.lifetime.lock_node`'s lock).

        Children end with the thread that runs the supervisor (their parent-death signal): run it
        from the thread that lives as long as the node.
        """
        log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.syslog = Writer(log_dir)
        self.children = [Child(spec, log_dir, inherit_fds=inherit_fds, syslog=self.syslog) for spec in specs]
        self.max_restarts = max_restarts
        self.window = window
        self.stop_timeout = stop_timeout
        self.backoff = backoff or default_backoff
        self.stopping = threading.Event()

    def _start_child(self, child: Child) -> None:
        """Start one child and wait until it is ready; returns early when the node is stopping."""
        child.start()
        if child.spec.ready is None:
            return
        deadline = time.monotonic() + child.spec.ready_timeout
        said, asked = None, time.monotonic()
        while not self.stopping.is_set() and not child.spec.ready():
            if not child.alive():
                raise GiveUp(self._failure(child, "exited before it was ready"))
            if child.spec.explain is not None and time.monotonic() >= asked:
                reason, asked = child.spec.explain(), time.monotonic() + EXPLAIN_INTERVAL
                if reason is not None:
                    if reason != said:
                        log.warning("%s is not ready: %s", child.spec.name, reason)
                    deadline = time.monotonic() + child.spec.ready_timeout
                said = reason
            if time.monotonic() > deadline:
                raise GiveUp(
                    self._failure(
                        child,
                        f"not ready after {child.spec.ready_timeout:.0f} s (waited for {child.spec.waiting_for})",
                    )
                )
            self.stopping.wait(0.1)

    def _failure(self, child: Child, what: str) -> str:
        if child.tee is not None:
            child.tee.join(timeout=1 if not child.alive() else 0.2)  # let the last lines arrive
        tail = "\n".join(f"    {line}" for line in child.tail) or "    (no output)"
        return f"{child.spec.name} {what} (exit code {child.exit_code()}); last lines of {child.log_path}:\n{tail}"

    def start(self) -> None:
        for child in self.children:
            if self.stopping.is_set():
                return
            log.info("starting %s", child.spec.name)
            self._start_child(child)

    def watch_once(self) -> None:
        """Restart dead children with backoff; GiveUp after too many restarts in the window."""
        for child in self.children:
            if self.stopping.is_set() or child.alive():
                continue
            if child.exit_code() == RESTART_EXIT_CODE:
                # Asked to be started again (the replicator switching to cluster membership): no
                # backoff, and not a failure counted towards giving up.
                log.info("%s asked to be restarted", child.spec.name)
                self._start_child(child)
                continue
            now = time.monotonic()
            while child.restarts and now - child.restarts[0] > self.window:
                child.restarts.popleft()
            if len(child.restarts) >= self.max_restarts:
                raise GiveUp(
                    self._failure(
                        child,
                        f"died {len(child.restarts) + 1} times within {self.window:.0f} s "
                        f"({len(child.restarts)} restarts); giving up",
                    )
                )
            delay = self.backoff(len(child.restarts))
            log.warning("%s exited with code %s; restarting in %.1f s", child.spec.name, child.exit_code(), delay)
            child.restarts.append(now)
            if self.stopping.wait(delay):
                return
            self._start_child(child)

    def stop(self) -> None:
        self.stopping.set()
        for child in reversed(self.children):
            if child.alive():
                log.info("stopping %s", child.spec.name)
            child.stop(self.stop_timeout)

    def run(self, poll: float = 0.5) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until a child gives up (exit 1); stops everything."""

        def _signal(signum: int, _frame: object) -> None:
            if not self.stopping.is_set():
                log.info("received %s, stopping the node", signal.Signals(signum).name)
            self.stopping.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _signal)
            signal.signal(signal.SIGINT, _signal)
        code = 0
        try:
            self.start()
            while not self.stopping.wait(poll):
                self.watch_once()
        except GiveUp as exc:
            log.error("giving up: %s", exc)
            code = 1
        finally:
            self.stop()
        return code


def default_backoff(restarts_so_far: int) -> float:
    """0.5 s, 1 s, 2 s, 4 s, 8 s ... capped at 10 s."""
    return min(0.5 * 2**restarts_so_far, 10.0)
