"""Process harness for tests and benchmarks: a node's environment and its replicator process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def node_environment(
    data_dir: Path, *, node: str = "testnode", database: str = "sqlite", db_prefix: str = ""
) -> dict[str, str]:
    """Environment variables of one node rooted at ``data_dir``."""
    env = {
        "PVE_DATA_DIR": str(data_dir),
        "PVE_NODE_NAME": node,
        "PVE_ROOT_PASSWORD": "test-root-password",
        "PVE_NODE_ADDRESS": "127.0.0.1",
        "PVE_LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
    }
    if database == "postgresql":
        base = "postgresql://postgres@127.0.0.1:5432/"
        env["PVE_CLUSTER_DATABASE_URL"] = base + f"{db_prefix}_cluster"
        env["PVE_LOCAL_DATABASE_URL"] = base + f"{db_prefix}_local"
    return env


def create_postgres_databases(prefix: str) -> None:
    """Fresh databases for one test node (dropped first if a previous run left them)."""
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        for suffix in ("cluster", "local"):
            conn.execute(f'DROP DATABASE IF EXISTS "{prefix}_{suffix}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{prefix}_{suffix}"')


def drop_postgres_databases(prefix: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
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
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                return False
        return True

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


COROSYNC_CONF = """totem {{
  version: 2
  cluster_name: {cluster}
  config_version: 1
  transport: knet
  crypto_cipher: none
  crypto_hash: none
  token: 1000
}}
nodelist {{
  node {{
    name: {node}
    nodeid: 1
    ring0_addr: 127.0.0.1
  }}
}}
quorum {{
  provider: corosync_votequorum
}}
logging {{
  to_stderr: yes
  to_syslog: no
  to_logfile: no
}}
"""


class SingleNodeCorosync:
    """A real one-node corosync in a network namespace of its own (its IPC is per namespace)."""

    def __init__(self, directory: Path, *, namespace: str, cluster: str = "testcluster", node: str = "n1") -> None:
        self.directory = directory
        self.namespace = namespace
        self.conf = directory / "corosync.conf"
        self.log_path = directory / "corosync.log"
        self.conf.write_text(COROSYNC_CONF.format(cluster=cluster, node=node))
        (directory / "lib").mkdir(exist_ok=True)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> None:
        subprocess.run(["ip", "netns", "add", self.namespace], check=True)
        subprocess.run(["ip", "-n", self.namespace, "link", "set", "lo", "up"], check=True)
        script = 'mount -t tmpfs none /run && mount --bind "$1" /var/lib/corosync && exec corosync -f -c "$2"'
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    self.namespace,
                    "unshare",
                    "-m",
                    "sh",
                    "-c",
                    script,
                    "sh",
                    str(self.directory / "lib"),
                    str(self.conf),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while "ready to provide service" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"corosync did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)

    def run_python(self, path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a Python script inside the namespace, where this corosync's IPC is reachable."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, sys.executable, str(path), *args],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["ip", "netns", "del", self.namespace], check=False)
