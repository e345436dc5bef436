"""The node's broker is private: settings refuse one other local users reach, the units run one on a 0600 socket.

Checked with a real unprivileged user (``nobody``, through ``setpriv``): it cannot reach the
broker the ``pve-django-redis`` unit starts.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import REPO

UNITS = REPO / "contrib" / "systemd"
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"]


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PVE_") and k != "REDIS_URL"}
    return {
        **env,
        "PVE_DATA_DIR": str(data),
        "PVE_NODE_NAME": "brokernode",
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        **extra,
    }


def _settings(data: Path, **extra: str) -> subprocess.CompletedProcess:
    """Load the settings in a fresh process (they are validated at import)."""
    code = "import django; django.setup(); from django.conf import settings; print(settings.CELERY_BROKER_URL)"
    return subprocess.run(
        [sys.executable, "-c", code], env=_env(data, **extra), cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://broker.example.com:6380/0",
        "unix:///run/redis/redis-server.sock",
        "unix://{data}/../elsewhere/redis.sock",
        "unix://relative/redis.sock",
    ],
)
def test_settings_refuse_a_broker_other_local_users_can_reach(tmp_path, url):
    data = tmp_path / "data"
    result = _settings(data, REDIS_URL=url.format(data=data))
    assert result.returncode != 0
    assert "is not a unix socket inside PVE_DATA_DIR" in result.stderr and "PVE_ALLOW_REMOTE_BROKER=1" in result.stderr
    assert not data.exists()  # refused before anything was created


def test_settings_take_a_private_socket_or_an_explicitly_allowed_broker(tmp_path):
    data = tmp_path / "data"
    inside = _settings(data, REDIS_URL=f"unix://{data}/broker/redis.sock")
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout.strip() == f"redis+socket://{data}/broker/redis.sock"
    allowed = _settings(data, REDIS_URL="redis://127.0.0.1:6379/0", PVE_ALLOW_REMOTE_BROKER="1")
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.strip() == "redis://127.0.0.1:6379/0"
    default = _settings(data)
    assert default.stdout.strip() == f"redis+socket://{data}/redis.sock"


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_every_unit_is_private_and_the_node_runs_its_own_broker():
    services = sorted(path.name for path in UNITS.glob("*.service"))
    assert "pve-django-redis.service" in services
    for name in services:
        assert _unit(name)["Service"]["UMask"] == "0077", name
    for name in ("pve-django-web.service", "pve-django-worker.service", "pve-django-beat.service"):
        unit = _unit(name)["Unit"]
        assert "pve-django-redis.service" in unit["Wants"].split() and "pve-django-redis.service" in unit["After"]
        assert "redis-server.service" not in unit["After"]
    assert "pve-django-redis.service" in _unit("pve-django.target")["Unit"]["Wants"].split()
    defaults = (REPO / "contrib" / "pve-django.default").read_text().splitlines()
    assert not [line for line in defaults if line.startswith("REDIS_URL=")]  # the private broker by default


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory every user may traverse (pytest's own are root's only), so only the node's modes decide."""
    base = Path(tempfile.mkdtemp(prefix="pve-broker-"))
    base.chmod(0o711)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_the_broker_unit_serves_the_node_user_only(reachable_dir):
    """The unit's own command line, run as systemd would (umask 077, the node's environment)."""
    data = reachable_dir / "data"
    service = _unit("pve-django-redis.service")["Service"]
    argv = shlex.split(service["ExecStart"].replace("/opt/pve-django/.venv/bin/python", sys.executable))
    socket_path = data / "redis.sock"
    process = subprocess.Popen(
        argv,
        env=_env(data),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(int(service["UMask"], 8)),
    )
    try:
        import redis

        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=5)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except (redis.RedisError, OSError):
                pass
            assert process.poll() is None and time.monotonic() < deadline, "the broker unit did not start"
            time.sleep(0.1)
        assert client.config_get("port") == {"port": "0"}  # no TCP listener at all
        assert stat.S_IMODE(socket_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        client.rpush("node.brokernode", b"queued by the node")
        attempt = f"""
import socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect({str(socket_path)!r})
    s.sendall(b"RPUSH node.brokernode injected\\r\\n")
    print("connected", s.recv(64))
except PermissionError:
    print("refused")
"""
        seen = subprocess.run([*NOBODY, attempt], capture_output=True, text=True, timeout=30)
        assert seen.stdout.strip() == "refused", (seen.stdout, seen.stderr)
        data.chmod(0o711)  # even with the directory opened up, the socket's own mode keeps nobody out
        seen = subprocess.run([*NOBODY, attempt], capture_output=True, text=True, timeout=30)
        assert seen.stdout.strip() == "refused", (seen.stdout, seen.stderr)
        assert client.lrange("node.brokernode", 0, -1) == [b"queued by the node"]
        socket_path.chmod(0o666)  # control: a socket others may open does let nobody in
        seen = subprocess.run([*NOBODY, attempt], capture_output=True, text=True, timeout=30)
        assert seen.stdout.startswith("connected"), (seen.stdout, seen.stderr)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
