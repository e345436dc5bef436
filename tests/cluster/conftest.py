"""Task test fixtures: one redis broker per session, one real Celery worker per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.celery_harness import CeleryWorker, RedisServer


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
