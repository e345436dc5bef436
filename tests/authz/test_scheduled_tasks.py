"""The access-control schedule on a real worker and beat: key rotation without any login, purging."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery

from authz import throttle
from authz.models import KeyMaterial, LoginFailures
from authz.services import keys
from portal.runner.celery_cli import beat_argv
from tests.celery_harness import CeleryWorker, RedisServer
from tests.harness import REPO

pytestmark = [pytest.mark.usefixtures("replicator")]


@pytest.fixture(scope="module")
def broker(node_env: dict[str, str]) -> Iterator[RedisServer]:
    """A redis of this module's own (the session node's broker socket may serve other modules).

    Its socket is inside the node's data directory: a broker anywhere else is refused.
    """
    directory = Path(node_env["PVE_DATA_DIR"]) / "authz-broker"
    directory.mkdir(mode=0o700, exist_ok=True)
    server = RedisServer(directory / "redis.sock")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def schedule_env(node_env: dict[str, str], broker: RedisServer) -> dict[str, str]:
    return {**node_env, "REDIS_URL": f"unix://{broker.socket_path}", "PVE_AUTHKEY_CHECK_INTERVAL": "1"}


@pytest.fixture(scope="module")
def worker(schedule_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryWorker]:
    process = CeleryWorker(schedule_env, schedule_env["PVE_NODE_NAME"], tmp_path_factory.mktemp("w") / "worker.log")
    process.start()
    yield process
    process.stop()


def test_beat_rotates_a_due_key_on_every_node_without_a_login(schedule_env, worker, tmp_path):
    private = KeyMaterial.objects.get(path=keys.AUTHKEY)
    private.created = int(time.time()) - keys.KEY_LIFETIME - 60
    private.save()
    before = KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content
    log_path = tmp_path / "beat.log"
    with open(log_path, "wb") as log:
        beat = subprocess.Popen(
            beat_argv(sys.executable, data_dir=tmp_path, log_level="INFO"),
            env=worker.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while KeyMaterial.objects.get(path=keys.AUTHKEY_PUB).content == before:
            assert beat.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{log_path.read_text()[-2000:]}\n{worker.log_text()[-2000:]}"
            time.sleep(0.2)
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    assert KeyMaterial.objects.get(path=keys.AUTHKEY_PUB_OLD).content == before
    assert "authz.rotate_authkey" in log_path.read_text()
    assert "ticket signing key rotated" in worker.log_text()


def test_the_purge_task_drops_expired_counts(schedule_env, worker):
    now = time.time()
    throttle.record_failure(throttle.Attempt.of("expired@pve", "192.0.2.70"), now=now - throttle.WINDOW - 10)
    throttle.record_failure(throttle.Attempt.of("current@pve", "192.0.2.71"), now=now)
    with Celery(broker=f"redis+socket://{worker.env['REDIS_URL'].removeprefix('unix://')}") as app:
        app.send_task("authz.purge_login_failures", queue=f"node.{schedule_env['PVE_NODE_NAME']}")
    deadline = time.monotonic() + 60
    while LoginFailures.objects.filter(key="user:expired@pve").exists():
        assert time.monotonic() < deadline, worker.log_text()[-3000:]
        time.sleep(0.2)
    assert set(LoginFailures.objects.values_list("key", flat=True)) == {"user:current@pve", "address:192.0.2.71"}
