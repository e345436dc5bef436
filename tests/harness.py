"""Process harness for tests and benchmarks: a node's environment and its replicator process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from replicator import client

REPO = Path(__file__).resolve().parent.parent
# The PostgreSQL server of the PostgreSQL pass (trust authentication): the session node connects over
# TCP, lab nodes through the unix socket, which their network namespaces see (their loopback is their own).
POSTGRES_TCP = "postgresql://postgres@127.0.0.1:5432/"
POSTGRES_SOCKET = "postgresql://postgres@/postgres?host=/var/run/postgresql"


def session_database() -> str:
    """The engine of this test session: ``PVE_TEST_DATABASE`` (sqlite or postgresql)."""
    return os.environ.get("PVE_TEST_DATABASE", "sqlite")


def lab_postgres() -> str | None:
    """The server lab nodes get their own databases on in the PostgreSQL pass; None (SQLite files) otherwise."""
    return POSTGRES_SOCKET if session_database() == "postgresql" else None


def node_environment(
    data_dir: Path, *, node: str = "testnode", database: str = "sqlite", db_prefix: str = ""
) -> dict[str, str]:
    """Environment variables of one node rooted at ``data_dir``."""
    env = {
        "PVE_DATA_DIR": str(data_dir),
        "PVE_NODE_NAME": node,
        "PVE_ROOT_PASSWORD": "test-root-password",
        "PVE_NODE_ADDRESS": "127.0.0.1",
        "PVE_COROSYNC_CONF": str(data_dir / "corosync" / "corosync.conf"),  # never the host's file
        "PVE_LOG_LEVEL": "WARNING",
        "PVE_ALLOWED_HOSTS": "testserver",  # the Host of Django's test client
        "PVE_API_TASK_WAIT": "3600",  # API tasks answer when done (test_ansible's server sets the default)
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    if database == "postgresql":
        env["PVE_CLUSTER_DATABASE_URL"] = POSTGRES_TCP + f"{db_prefix}_cluster"
        env["PVE_LOCAL_DATABASE_URL"] = POSTGRES_TCP + f"{db_prefix}_local"
    return env


def create_postgres_databases(prefix: str) -> None:
    """Fresh databases for one test node (dropped first if a previous run left them)."""
    import psycopg

    with psycopg.connect(POSTGRES_TCP + "postgres", autocommit=True) as conn:
        for suffix in ("cluster", "local"):
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{suffix}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{prefix}_{suffix}"')


def drop_postgres_databases(prefix: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_TCP + "postgres", autocommit=True) as conn:
        for suffix in ("cluster", "local"):
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{suffix}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``manage.py`` with a node's environment."""
    return subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


class ReplicatorProcess:
    """A real ``manage.py replicator`` child process."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.socket_path = Path(env["PVE_DATA_DIR"]) / "replicator.sock"
        self.log_path = Path(env["PVE_DATA_DIR"]) / "replicator-test.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115  (owned by the child)
        self.process = subprocess.Popen(
            [sys.executable, str(REPO / "manage.py"), "replicator"],
            env={**os.environ, **self.env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"replicator exited with {self.process.returncode}: {self.log_tail()}")
            if self.reachable():
                return
            time.sleep(0.05)
        raise RuntimeError(f"replicator did not come up: {self.log_tail()}")

    def reachable(self) -> bool:
        return client.accepts(self.socket_path, timeout=1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from ``/proc/<pid>/stat``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_for(predicate, timeout: float = 30, what: str = "condition"):  # type: ignore[no-untyped-def]
    """The first true value of ``predicate()``, polled until ``timeout`` seconds (then AssertionError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
