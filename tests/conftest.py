"""Test set-up: one node's environment for the whole session, Django configured for it.

``PVE_TEST_DATABASE=postgresql`` runs the session against fresh PostgreSQL databases on
127.0.0.1:5432 instead of SQLite files, and lab nodes against databases of their own on the same
server (``make test`` runs the ``postgres_too`` tests so, after the whole suite on SQLite).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import (
    ReplicatorProcess,
    create_postgres_databases,
    drop_postgres_databases,
    manage,
    node_environment,
)

DATABASE = os.environ.get("PVE_TEST_DATABASE", "sqlite")
if DATABASE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"PVE_TEST_DATABASE must be sqlite or postgresql, got {DATABASE!r}")

_DATA_DIR = Path(tempfile.mkdtemp(prefix="pve-test-"))
_DB_PREFIX = f"pvetest_{os.getpid()}"
NODE_ENV = node_environment(_DATA_DIR, database=DATABASE, db_prefix=_DB_PREFIX)
os.environ.update(NODE_ENV)
if DATABASE == "postgresql":
    create_postgres_databases(_DB_PREFIX)

import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402

call_command("migrate", database="default", verbosity=0)
call_command("migrate", database="cluster", verbosity=0)

# The task tests' broker and worker fixtures; the lab-cluster fixture of every test that starts a lab;
# the test guest's image; the storage tests' btrfs on a loop device.
pytest_plugins = ["tests.celery_harness", "tests.lab_fixture", "tests.guest.fixtures", "tests.storage_fixture"]


# Whole modules that also run on PostgreSQL (single tests elsewhere carry the mark themselves):
# the API, access control and tasks, next to the replicator's own modules and the 3-node
# replication tests marked in tests/cluster/test_replication*.py.
POSTGRES_TOO_MODULES = {
    "tests/api/test_api.py",
    "tests/api/test_cluster_config_matrix.py",
    "tests/api/test_permission_matrix.py",
    "tests/api/test_status_api.py",
    "tests/api/test_status_matrix.py",
    "tests/authz/test_access.py",
    "tests/authz/test_access_matrix.py",
    "tests/portal/test_tasks.py",
    "tests/cluster/test_task_permissions.py",
    "tests/portal/test_task_follow.py",
}


@pytest.hookimpl(tryfirst=True)  # before ``-m postgres_too`` deselects by mark
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::")[0] in POSTGRES_TOO_MODULES:
            item.add_marker(pytest.mark.postgres_too)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from django.db import connections

    connections.close_all()
    if DATABASE == "postgresql":
        drop_postgres_databases(_DB_PREFIX)
    shutil.rmtree(_DATA_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def node_env() -> dict[str, str]:
    """The environment of the session's node (data dir, node name, databases)."""
    return dict(NODE_ENV)


@pytest.fixture(scope="session")
def replicator() -> Iterator[ReplicatorProcess]:
    """The session node's real replicator process, started once and shared."""
    process = ReplicatorProcess(NODE_ENV)
    process.start()
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _no_login_failures_from_earlier_tests() -> None:
    """Every test starts without failed-login counts: the session's tests all log in from
    127.0.0.1, and the wrong passwords of one test must not slow down the logins of the next."""
    from authz.models import LoginFailures

    LoginFailures.objects.all().delete()


@pytest.fixture
def etc_dir() -> Path:
    from django.conf import settings

    return Path(settings.PVE_ETC_DIR)


__all__ = ["manage"]
