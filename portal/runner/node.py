"""The children of one node, their readiness checks, and the migrations run before them.

Start order: redis (private, only without ``REDIS_URL``), replicator, worker, beat, web; the
supervisor stops them in reverse: web, beat, worker, replicator, redis.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connections

from portal.runner.broker import redis_argv
from portal.runner.celery_cli import beat_argv, worker_argv
from portal.runner.lifetime import NodeLocked, lock_node
from portal.runner.supervisor import ChildSpec, Supervisor
from portal.runner.web import certificate_paths
from replicator import bootstrap, client, private

log = logging.getLogger("runnode")

REPO = Path(__file__).resolve().parent.parent.parent
MANAGE = REPO / "manage.py"


def tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_pings(path: Path) -> bool:
    import redis

    client = redis.Redis(unix_socket_path=str(path), socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def replicator_waiting(path: Path) -> str | None:
    """Why the replicator's node certificate is not there yet, when it says (a member waiting for corosync).

    A node that joined a cluster has no state of its own until it syncs with the members, so
    there is no certificate to serve the web with before corosync runs: the runner waits, and
    says why, instead of giving up.
    """
    state = client.status_at(path, timeout=5)
    if state is None:
        return None
    reasons = state.get("not_ready") or []
    if not reasons:
        return None
    return f"this node receives its state (and its certificate) from the cluster once it can: {'; '.join(reasons)}"


def migrate() -> None:
    """Bring both databases up to date, each in a child process (the runner keeps no connection)."""
    connections.close_all()
    for database in ("default", "cluster"):
        log.info("migrating the %s database", database)
        subprocess.run(
            [sys.executable, str(MANAGE), "migrate", "--database", database, "--no-input", "-v0"],
            cwd=REPO,
            check=True,
        )


def _probe_host(bind: str) -> str:
    """Where to connect to see the web server listening on ``bind``."""
    if bind in ("0.0.0.0", ""):
        return "127.0.0.1"
    if bind == "::":
        return "::1"
    return bind


def redis_spec(env: dict[str, str]) -> ChildSpec:
    sock = Path(settings.PVE_REDIS_SOCKET)
    data = Path(settings.PVE_DATA_DIR)
    argv = redis_argv(sock, data)
    return ChildSpec(
        "redis",
        argv,
        env,
        cwd=data,
        ready=lambda: redis_pings(sock),
        ready_timeout=30,
        waiting_for=f"redis to answer PING on {sock}",
    )


COROSYNC_SCRIPT = """
while [ ! -f "$1" ] || [ ! -f "$2" ]; do sleep 0.5; done
if [ "$(dirname "$2")" = /etc/corosync ]; then exec corosync -f -c "$2"; fi
exec unshare -m sh -c 'mount -t tmpfs none /run && mount --bind "$1" /var/lib/corosync \
  && mount --bind "$2" /etc/corosync && exec corosync -f -c "$3"' sh "$3" "$(dirname "$2")" "$2"
"""


def corosync_spec(env: dict[str, str]) -> ChildSpec:
    """corosync under the runner (``PVE_RUN_COROSYNC``), started once the node has an authkey and a corosync.conf.

    A relocated configuration (a lab node) gets private /run, /var/lib/corosync and /etc/corosync
    mounts, so several nodes on one host each read their own authkey.
    """
    data = Path(settings.PVE_DATA_DIR)
    lib = data / "corosync-lib"
    lib.mkdir(parents=True, exist_ok=True)
    argv = [
        "sh",
        "-c",
        COROSYNC_SCRIPT,
        "sh",
        str(settings.PVE_COROSYNC_AUTHKEY),
        str(settings.PVE_COROSYNC_CONF),
        str(lib),
    ]
    return ChildSpec("corosync", argv, env, cwd=data)


# Children an app adds (the VM watcher, the status collector ...): ``factory(env)`` -> ChildSpec,
# registered at the app's ready(); started after the worker and beat, before the web server.
ChildFactory = Callable[[dict[str, str]], ChildSpec]
_app_children: list[ChildFactory] = []


def register_child(factory: ChildFactory) -> ChildFactory:
    """Add a child every node runs (``factory`` gets the children's environment); once per factory."""
    if factory not in _app_children:
        _app_children.append(factory)
    return factory


def node_children(*, web: bool = True, worker: bool = True, beat: bool = True) -> list[ChildSpec]:
    python = sys.executable
    data = Path(settings.PVE_DATA_DIR)
    # Unbuffered: a child's last lines reach its log even if it is killed.
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    specs: list[ChildSpec] = []
    if settings.REDIS_URL is None:
        specs.append(redis_spec(env))
    if settings.PVE_RUN_COROSYNC:
        specs.append(corosync_spec(env))

    replicator_socket = Path(settings.PVE_REPLICATOR_SOCKET)
    cert, key = certificate_paths(Path(settings.PVE_ETC_DIR), settings.PVE_NODE_NAME)
    terminal = os.dup(2) if os.isatty(2) else None  # where a generated root password is shown, not logged
    specs.append(
        ChildSpec(
            "replicator",
            [python, str(MANAGE), "replicator"],
            env if terminal is None else {**env, bootstrap.TERMINAL_FD_ENV: str(terminal)},
            cwd=REPO,
            pass_fds=() if terminal is None else (terminal,),
            # Web, worker and beat submit writes through this socket; the web server needs the
            # node certificate the replicator renders into the config tree.
            ready=lambda: client.accepts(replicator_socket, timeout=1) and cert.exists() and key.exists(),
            ready_timeout=max(120, settings.PVE_REPLICATOR_TIMEOUT),
            waiting_for=(
                f"the replicator socket {replicator_socket} to accept connections "
                f"and the node certificate {cert} and key {key}"
            ),
            explain=lambda: replicator_waiting(replicator_socket),
        )
    )
    log_level = settings.PVE_LOG_LEVEL
    if worker:
        argv = worker_argv(
            python, queue=settings.CELERY_TASK_DEFAULT_QUEUE, node=settings.PVE_NODE_NAME, log_level=log_level
        )
        specs.append(ChildSpec("worker", argv, env, cwd=REPO))
    if beat:
        specs.append(ChildSpec("beat", beat_argv(python, data_dir=data, log_level=log_level), env, cwd=REPO))
    specs.extend(factory(env) for factory in _app_children)
    if web:
        host, port = _probe_host(settings.PVE_BIND_ADDRESS), settings.PVE_HTTPS_PORT
        specs.append(
            ChildSpec(
                "web",
                [python, "-m", "portal.runner.web"],
                env,
                cwd=REPO,
                ready=lambda: tcp_accepts(host, port),
                ready_timeout=90,
                waiting_for=f"the web server to listen on {settings.PVE_BIND_ADDRESS}:{port}",
            )
        )
    return specs


def run_node(*, web: bool = True, worker: bool = True, beat: bool = True, run_migrations: bool = True) -> int:
    """``manage.py runnode``: migrate, then supervise the node until SIGTERM/SIGINT; returns the exit code."""
    private.make_private_dir(Path(settings.PVE_DATA_DIR))
    try:
        node_lock = lock_node(Path(settings.PVE_DATA_DIR))  # held by the runner and every child
    except NodeLocked as exc:
        log.error("not starting the node: %s", exc)
        return 1
    private.secure_from_settings()  # data directory 0700, databases and logs 0600, also when made before
    if run_migrations:
        try:
            migrate()
        except subprocess.CalledProcessError as exc:
            log.error("migrating the databases failed (%s); not starting the node", exc)
            return 1
    specs = node_children(web=web, worker=worker, beat=beat)
    connections.close_all()  # nothing inherited across fork (Popen forks before exec)
    return Supervisor(specs, Path(settings.PVE_LOG_DIR), inherit_fds=(node_lock,)).run()
