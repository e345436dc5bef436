"""The children of one node and their readiness checks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connections

from portal.runner.supervisor import ChildSpec, Supervisor
from portal.runner.web import certificate_paths

REPO = Path(__file__).resolve().parent.parent.parent


def _unix_socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _redis_pings(path: Path) -> bool:
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(path), socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


def migrate() -> None:
    """Bring both databases up to date, each in a child process (no connection kept open here)."""
    connections.close_all()
    for database in ("default", "cluster"):
        subprocess.run([sys.executable, str(REPO / "manage.py"), "migrate", "--database", database, "-v0"], check=True)


def node_children(*, web: bool = True, worker: bool = True, beat: bool = True) -> list[ChildSpec]:
    python = sys.executable
    manage = str(REPO / "manage.py")
    data = Path(settings.PVE_DATA_DIR)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # logs reach the files even if a child is killed
    specs: list[ChildSpec] = []
    if settings.REDIS_URL is None:
        sock = Path(settings.PVE_REDIS_SOCKET)
        specs.append(
            ChildSpec(
                "redis",
                [
                    "redis-server",
                    "--port",
                    "0",
                    "--unixsocket",
                    str(sock),
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(data),
                    "--daemonize",
                    "no",
                ],
                env,
                ready=lambda: _redis_pings(sock),
            )
        )
    replicator_socket = Path(settings.PVE_REPLICATOR_SOCKET)
    cert, key = certificate_paths(Path(settings.PVE_ETC_DIR), settings.PVE_NODE_NAME)
    specs.append(
        ChildSpec(
            "replicator",
            [python, manage, "replicator"],
            env,
            ready=lambda: _unix_socket_accepts(replicator_socket) and cert.exists() and key.exists(),
            ready_timeout=120,
        )
    )
    if web:
        host = "127.0.0.1" if settings.PVE_BIND_ADDRESS in ("0.0.0.0", "::", "") else settings.PVE_BIND_ADDRESS
        specs.append(
            ChildSpec(
                "web",
                [python, "-m", "portal.runner.web"],
                env,
                ready=lambda: _tcp_accepts(host, settings.PVE_HTTPS_PORT),
            )
        )
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    if worker:
        specs.append(
            ChildSpec(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal.celery",
                    "worker",
                    "-Q",
                    queue,
                    "-c",
                    "2",
                    "--pool",
                    "prefork",
                    "-n",
                    f"{settings.PVE_NODE_NAME}@%h",
                    "--loglevel",
                    settings.PVE_LOG_LEVEL,
                ],
                env,
            )
        )
    if beat:
        specs.append(
            ChildSpec(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "portal.celery",
                    "beat",
                    "-s",
                    str(data / "celerybeat-schedule"),
                    "--loglevel",
                    settings.PVE_LOG_LEVEL,
                ],
                env,
            )
        )
    return specs


def run_node(*, web: bool = True, worker: bool = True, beat: bool = True, run_migrations: bool = True) -> int:
    """Migrate, then supervise the node until a signal; returns the exit code."""
    Path(settings.PVE_DATA_DIR).mkdir(parents=True, exist_ok=True)
    if run_migrations:
        migrate()
    connections.close_all()
    supervisor = Supervisor(node_children(web=web, worker=worker, beat=beat), Path(settings.PVE_LOG_DIR))
    return supervisor.run()
