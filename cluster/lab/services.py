"""The Django side of a lab node: its environment, databases and processes, run in its namespace.

A lab node runs either its replicator alone (what the replication tests need) or a whole node
runner (replicator, web, Celery worker and beat, private redis: what a user trying the lab
wants). Every node has its own data directory; the replicator's unix socket lives there, so
the host can talk to any node's replicator although the process runs in the node's namespace.
Every node has its own databases too: SQLite files in its directory, or, on a PostgreSQL
server, databases the lab creates and drops (reached through the server's unix socket, which
every namespace sees, unlike the host's loopback address).
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from replicator import client

REPO = Path(__file__).resolve().parent.parent.parent


def node_environment(directory: Path, name: str, address: str, root_password: str) -> dict[str, str]:
    """One lab node's settings: a cluster member over corosync with its own data directory.

    Its databases are named, never inherited from whoever runs the lab (a test session on
    PostgreSQL would otherwise hand every node the session's database).
    """
    return {
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "PVE_DATA_DIR": str(directory),
        "PVE_CLUSTER_DATABASE_URL": f"sqlite:///{directory / 'cluster.db'}",
        "PVE_LOCAL_DATABASE_URL": f"sqlite:///{directory / 'local.db'}",
        "PVE_NODE_NAME": name,
        "PVE_NODE_ADDRESS": address,
        "PVE_TRANSPORT": "corosync",
        "PVE_COROSYNC_CONF": str(directory / "corosync.conf"),  # the file this node's corosync reads
        "PVE_ROOT_PASSWORD": root_password,
        "PVE_LOG_LEVEL": "INFO",
        "PYTHONPATH": str(REPO),
    }


def manage(env: dict[str, str], *args: str, timeout: float = 300) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), *args],
        env={**os.environ, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed: {result.stderr[-2000:]}")


CLUSTER_URL, LOCAL_URL = "PVE_CLUSTER_DATABASE_URL", "PVE_LOCAL_DATABASE_URL"


def postgres_environment(server: str, prefix: str) -> dict[str, str]:
    """A lab node's own databases ``<prefix>_cluster`` and ``<prefix>_local`` on the server of the libpq URL ``server``."""
    return {
        CLUSTER_URL: _database_url(server, f"{prefix}_cluster"),
        LOCAL_URL: _database_url(server, f"{prefix}_local"),
    }


def _database_url(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _on_postgres(envs: list[dict[str, str]]) -> bool:
    return envs[0].get(CLUSTER_URL, "").startswith("postgres")


def prepare_databases(envs: list[dict[str, str]]) -> None:
    """Migrate the first node's databases and copy them to the others (same empty schema).

    SQLite files are copied; on PostgreSQL the others are created from the first as a template.
    """
    first = Path(envs[0]["PVE_DATA_DIR"])
    first.mkdir(parents=True, exist_ok=True)
    for env in envs[1:]:
        Path(env["PVE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    if _on_postgres(envs):
        drop_databases(envs)  # left over by a lab of the same tag that was not taken down
        execute_on_server(
            envs[0], [f'CREATE DATABASE "{database_name(envs[0][key])}"' for key in (CLUSTER_URL, LOCAL_URL)]
        )
    manage(envs[0], "migrate", "--database", "default", "--verbosity", "0")
    manage(envs[0], "migrate", "--database", "cluster", "--verbosity", "0")
    if _on_postgres(envs):
        execute_on_server(
            envs[0],
            [
                f'CREATE DATABASE "{database_name(env[key])}" TEMPLATE "{database_name(envs[0][key])}"'
                for env in envs[1:]
                for key in (CLUSTER_URL, LOCAL_URL)
            ],
        )
        return
    for env in envs[1:]:
        for name in ("cluster.db", "local.db"):
            shutil.copyfile(first / name, Path(env["PVE_DATA_DIR"]) / name)


def drop_databases(envs: list[dict[str, str]]) -> None:
    """Drop the nodes' PostgreSQL databases (SQLite files go with the lab directory)."""
    if envs and _on_postgres(envs):
        execute_on_server(
            envs[0],
            [
                f'DROP DATABASE IF EXISTS "{database_name(env[key])}" WITH (FORCE)'
                for env in envs
                for key in (CLUSTER_URL, LOCAL_URL)
            ],
        )


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name.replace("_", "").isalnum():
        raise ValueError(f"unexpected lab database name {name!r}")
    return name


def execute_on_server(env: dict[str, str], statements: list[str]) -> None:
    """Run statements on the server of ``env``'s cluster database, outside any transaction."""
    import psycopg

    with psycopg.connect(_database_url(env[CLUSTER_URL], "postgres"), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def start(namespace: str, env: dict[str, str], kind: str = "replicator") -> subprocess.Popen:
    """Start ``manage.py replicator`` (or ``runnode`` for a whole node) inside ``namespace``."""
    if kind not in ("replicator", "node"):
        raise ValueError("kind is replicator or node")
    directory = Path(env["PVE_DATA_DIR"])
    argv = ["replicator"] if kind == "replicator" else ["runnode", "--no-migrate"]
    with open(directory / f"{kind}.log", "ab") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, str(REPO / "manage.py"), *argv],
            env={**os.environ, **env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen | None, *, kill: bool = False, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_ready(socket_path: Path, process: subprocess.Popen | None, timeout: float = 60) -> dict[str, Any]:
    """Until the replicator answers quorate, in sync and with its first-start content written."""
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{socket_path.parent.name}: process exited with {process.returncode}")
        last = client.status_at(socket_path, timeout=5)
        if last and last.get("quorate") and last.get("synced") and last.get("bootstrapped"):
            return last
        time.sleep(0.1)
    raise RuntimeError(f"{socket_path.parent.name} not quorate and in sync within {timeout} s: {last}")


HTTPS_PORT = 8006


def web_environment(address: str, port: int = HTTPS_PORT) -> dict[str, str]:
    """A lab node's web server listens on its own address (reachable from the host's lab port)."""
    return {"PVE_BIND_ADDRESS": address, "PVE_HTTPS_PORT": str(port)}


def portal_url(address: str, port: int = HTTPS_PORT) -> str:
    return f"https://{address}:{port}/"


def ca_path(directory: Path) -> Path:
    """The cluster CA certificate a lab node renders into its config tree (it signs every node's)."""
    return directory / "etc" / "pve" / "pve-root-ca.pem"


def without_host_settings(environ: dict[str, str]) -> dict[str, str]:
    """``environ`` without the node settings of whoever runs the lab (a lab node has its own)."""
    return {k: v for k, v in environ.items() if not k.startswith("PVE_") and k != "REDIS_URL"}


def web_status(url: str, ca: Path, timeout: float = 5) -> int | None:
    """HTTP status of ``url`` over HTTPS verified against ``ca`` (no proxy), or None if it does not answer."""
    if not ca.exists():
        return None
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca))
    )
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ssl.SSLError):
        return None


def wait_web(url: str, ca: Path, process: subprocess.Popen | None, timeout: float = 120) -> None:
    """Until ``url`` answers 200 over HTTPS signed by the cluster CA."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: node runner exited with {process.returncode}")
        last = web_status(url, ca)
        if last == 200:
            return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout} s (last status {last})")
