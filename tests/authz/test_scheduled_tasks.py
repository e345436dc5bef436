"""The access-control tasks on a real worker: purging failed-login counts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery

from authz import throttle
from authz.models import LoginFailures
from tests.celery_harness import CeleryWorker, RedisServer

pytestmark = [pytest.mark.usefixtures("replicator")]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis of this module's own (the session node's broker socket may serve other modules)."""
    server = RedisServer(tmp_path_factory.mktemp("authz-broker") / "redis.sock")
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
