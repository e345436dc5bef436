"""A task's password travels beside its message, never inside it (real redis, real worker).

The API join queues ``cluster.join`` for this node's worker: the broker, the message, the task
row, the task log and every process's argv are free of the password; a 0600 file in a 0700
directory holds it until the worker that claimed the task reads it once.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import stat
import time
from pathlib import Path

import pytest
from django.test import Client

from portal.models import Task
from portal.tasks import logs, reconcile, runner, task_secrets
from portal.tasks.exceptions import TaskError
from tests.celery_harness import CeleryWorker
from tests.portal import task_operations  # noqa: F401  (the operations the worker runs)

pytestmark = [pytest.mark.usefixtures("replicator"), pytest.mark.postgres_too]
API = "/api2/json"
NODE = "testnode"


@pytest.fixture(scope="module")
def root() -> Client:
    client = Client()
    data = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"}).json()
    client.cookies["PVEAuthCookie"] = data["data"]["ticket"]
    client.defaults["HTTP_CSRFPREVENTIONTOKEN"] = data["data"]["CSRFPreventionToken"]
    return client


def broker_contents(redis_broker) -> tuple[bytes, list[dict]]:  # type: ignore[no-untyped-def]
    """Every key and value in the broker, and the decoded bodies of the messages queued for this node."""
    client = redis_broker.client()
    raw = bytearray()
    for key in client.keys("*"):
        raw += key
        kind = client.type(key)
        if kind == b"list":
            values = client.lrange(key, 0, -1)
        elif kind == b"hash":
            values = [item for pair in client.hgetall(key).items() for item in pair]
        elif kind == b"set":
            values = list(client.smembers(key))
        elif kind == b"zset":
            values = client.zrange(key, 0, -1)
        else:
            values = [client.get(key) or b""]
        for value in values:
            raw += value
    bodies = []
    for entry in client.lrange(f"node.{NODE}", 0, -1):
        message = json.loads(entry)
        bodies.append(json.loads(base64.b64decode(message["body"])))
    return bytes(raw), bodies


def command_lines() -> bytes:
    found = bytearray()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                found += (entry / "cmdline").read_bytes()
    return bytes(found)


def wait_stopped(upid: str, timeout: float = 60) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = Task.objects.get(upid=upid)
        if task.status == Task.STOPPED:
            return task
        time.sleep(0.1)
    raise AssertionError(f"{upid} did not stop")


def test_the_join_password_is_not_in_the_broker_the_message_the_row_the_log_or_argv(
    root, redis_broker, node_env, tmp_path
):
    redis_broker.flush()
    password = "join-" + secrets.token_hex(16)
    answer = root.post(
        f"{API}/cluster/config/join",
        {"hostname": "127.0.0.1", "fingerprint": ":".join(["AB"] * 32), "password": password},
    )
    assert answer.status_code == 200, answer.content
    upid = answer.json()["data"]

    raw, bodies = broker_contents(redis_broker)
    assert raw and [body[1]["upid"] for body in bodies] == [upid]  # the message is queued
    assert password.encode() not in raw and password not in json.dumps(bodies)  # raw, and the base64 bodies decoded
    kwargs = bodies[0][1]
    assert "password" not in kwargs["kwargs"] and kwargs["operation"] == "cluster.join"
    assert isinstance(kwargs["secret"], str) and password not in kwargs["secret"]
    [held] = task_secrets.directory().iterdir()  # what the reference points at, for the node's user only
    assert stat.S_IMODE(held.stat().st_mode) == 0o600
    assert stat.S_IMODE(task_secrets.directory().stat().st_mode) == 0o700
    assert password in held.read_text()
    task = Task.objects.get(upid=upid)
    assert all(password not in str(getattr(task, field.attname)) for field in Task._meta.fields)

    worker = CeleryWorker(node_env, NODE, tmp_path / "worker.log")
    worker.start()
    try:
        task = wait_stopped(upid)
        assert password.encode() not in command_lines()
    finally:
        worker.stop()
    assert task.exitstatus != "OK"  # nothing answers with that certificate: the join failed at once
    assert "fingerprint" in task.exitstatus or "cannot reach" in task.exitstatus, task.exitstatus
    assert not held.exists()  # read once and gone
    assert password not in logs.log_path(upid).read_text()
    assert password not in worker.log_text()
    assert all(password not in str(getattr(task, field.attname)) for field in Task._meta.fields)


def test_a_secret_reaches_its_operation_once(redis_broker, node_env, tmp_path):
    redis_broker.flush()
    password = "secret-" + secrets.token_hex(16)
    upid = runner.submit("testsecret", "", "root@pam", "test.secret", secret_kwargs={"password": password})
    worker = CeleryWorker(node_env, NODE, tmp_path / "worker.log")
    worker.start()
    try:
        task = wait_stopped(upid)
    finally:
        worker.stop()
    assert task.exitstatus == "OK", task.exitstatus
    digest = hashlib.sha256(password.encode()).hexdigest()
    assert logs.read_lines(upid)[:1] == [f"got a password with sha256 {digest}"]
    assert list(task_secrets.directory().iterdir()) == []
    with pytest.raises(TaskError, match="secret is gone"):  # a second read finds nothing
        task_secrets.take(upid, "anything")


def test_secrets_of_tasks_that_never_run_are_deleted(redis_broker):
    """No worker: a task stopped while queued, a reference that does not match, a leftover of a rolled-back submit."""
    redis_broker.flush()
    stopped = runner.submit("testsecret", "", "root@pam", "test.secret", secret_kwargs={"password": "a-password"})
    assert len(list(task_secrets.directory().iterdir())) == 1
    runner.stop(stopped)
    assert Task.objects.get(upid=stopped).status == Task.STOPPED
    assert list(task_secrets.directory().iterdir()) == []

    forged = f"UPID:{NODE}:00000002:00000002:00000002:testsecret::root@pam:"
    task_secrets.store(forged, {"password": "another"})
    with pytest.raises(TaskError, match="does not match"):
        task_secrets.take(forged, "a-guessed-token")
    assert list(task_secrets.directory().iterdir()) == []  # a wrong reference burns the secret too

    leftover = f"UPID:{NODE}:00000003:00000003:00000003:testsecret::root@pam:"
    task_secrets.store(leftover, {"password": "left behind"})
    fresh = f"UPID:{NODE}:00000004:00000004:00000004:testsecret::root@pam:"
    task_secrets.store(fresh, {"password": "just written"})
    [old] = [p for p in task_secrets.directory().iterdir() if "left behind" in p.read_text()]
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    reconcile.reconcile()
    remaining = [p.read_text() for p in task_secrets.directory().iterdir()]
    assert len(remaining) == 1 and "just written" in remaining[0]  # the fresh one waits for its task
    task_secrets.discard(fresh)


def test_secret_arguments_are_refused_for_another_node_or_beside_a_plain_argument():
    before = Task.objects.count()
    with pytest.raises(TaskError, match="secret arguments"):
        runner.submit("testsecret", "", "root@pam", "test.secret", node="othernode", secret_kwargs={"password": "x"})
    with pytest.raises(TaskError, match="secret arguments"):
        runner.submit("testsecret", "", "root@pam", "test.secret", password="y", secret_kwargs={"password": "x"})
    assert Task.objects.count() == before
    assert not task_secrets.directory().exists() or list(task_secrets.directory().iterdir()) == []
