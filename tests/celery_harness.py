"""Real broker and worker processes for task tests: redis-server on a unix socket, Celery workers.

Eager mode hides routing and serialisation bugs, so task tests run the node's real worker command
(``portal.runner.celery_cli.worker_argv``) against a redis-server started here. Also a pytest
plugin (``tests/conftest.py``): one redis broker per session, one real worker per test module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portal.runner.celery_cli import worker_argv
from tests.harness import REPO, child_pids

OPERATIONS_MODULE = "tests.portal.task_operations"


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class RedisServer:
    """A private redis-server listening only on ``socket_path`` (as the node runner starts it)."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        self.socket_path.unlink(missing_ok=True)
        argv = ["redis-server", "--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        argv += ["--save", "", "--appendonly", "no", "--dir", str(self.socket_path.parent), "--logfile", ""]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.pings():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on {self.socket_path} did not start")
            time.sleep(0.05)

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5)

    def pings(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
            except OSError:
                return False

    def flush(self) -> None:
        self.client().flushall()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


class CeleryWorker:
    """``celery -A portal.celery worker --queues node.<node>`` of one node, in its own session."""

    def __init__(self, env: dict[str, str], node: str, log_path: Path, concurrency: int = 2) -> None:
        self.env = {**os.environ, **env, "PVE_NODE_NAME": node, "PYTHONUNBUFFERED": "1"}
        self.node = node
        self.log_path = log_path
        self.concurrency = concurrency
        self.process: subprocess.Popen | None = None

    @property
    def hostname(self) -> str:
        return f"{self.node}@{socket.gethostname()}"

    def argv(self) -> list[str]:
        argv = worker_argv(sys.executable, queue=f"node.{self.node}", node=self.node, log_level="INFO")
        concurrency = argv.index("--concurrency") + 1
        argv[concurrency] = str(self.concurrency)
        return [*argv, "--include", OPERATIONS_MODULE, "--without-mingle", "--without-gossip"]

    def start(self, timeout: float = 60) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(), env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while " ready." not in self.log_text(offset):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {self.node} did not start:\n{self.log_text(offset)[-3000:]}")
            time.sleep(0.1)

    def log_text(self, offset: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(offset)
                return handle.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def children(self) -> list[int]:
        """The pool's processes (children of the main worker process)."""
        assert self.process is not None
        return child_pids(self.process.pid)

    def kill9(self) -> None:
        """SIGKILL the whole worker (main process and pool) at once, as a crash or OOM kill would."""
        assert self.process is not None
        pool = self.children()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in pool):  # SIGKILL lands asynchronously
            assert time.monotonic() < deadline, "the worker's pool survived SIGKILL"
            time.sleep(0.01)

    def stop(self) -> None:
        """Warm shutdown (running tasks finish), then anything left of the group is killed."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_broker(node_env: dict[str, str]) -> Iterator[RedisServer]:
    """redis-server on the session node's broker socket (``<data>/redis.sock``, as runnode has it)."""
    server = RedisServer(Path(node_env["PVE_DATA_DIR"]) / "redis.sock")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def celery_worker(request, node_env, redis_broker, replicator, tmp_path_factory) -> Iterator[CeleryWorker]:
    """The session node's real worker (queue ``node.testnode``), shared by the tests of a module.

    A module's ``WORKER_ENV`` adds settings (e.g. a short ``PVE_TASK_REDELIVERY_TIMEOUT``).
    """
    redis_broker.flush()
    env = {**node_env, **getattr(request.module, "WORKER_ENV", {})}
    worker = CeleryWorker(env, node_env["PVE_NODE_NAME"], tmp_path_factory.mktemp("worker") / "worker.log")
    worker.start()
    yield worker
    worker.stop()
