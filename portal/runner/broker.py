"""The node's private redis (Celery broker, Channels layer), shared by runnode and the systemd unit.

``python -m portal.runner.broker`` (``pve-django-redis.service``) replaces itself with
redis-server, so production runs the same broker as ``runnode``: no TCP listener, a unix socket
0600 in the 0700 data directory, nothing written to disk. Only the node's user reaches it, so no
other local user can queue a task for the node's worker or read a queued message.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from replicator.private import make_private_dir, restrict_umask


def redis_argv(socket_path: Path, data_dir: Path) -> list[str]:
    return [
        "redis-server",
        "--port",
        "0",  # no TCP: a private broker, reachable only through the socket
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "600",  # read and write for the node user only (a socket needs no x bit)
        "--save",
        "",  # no RDB snapshots
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
        "--logfile",
        "",  # stdout: the supervisor's log file, or the journal
    ]


def main() -> None:
    restrict_umask()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.conf import settings

    if settings.REDIS_URL is not None:
        print(f"REDIS_URL is set ({settings.REDIS_URL}): this node uses that broker, no private one", file=sys.stderr)
        return
    data = Path(settings.PVE_DATA_DIR)
    make_private_dir(data)
    argv = redis_argv(Path(settings.PVE_REDIS_SOCKET), data)
    os.chdir(data)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
