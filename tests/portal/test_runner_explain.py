"""A child that says why it is not ready (a cluster member waiting for corosync) is waited for, and the reason logged."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest

from portal.runner import supervisor as supervisor_module
from portal.runner.supervisor import ChildSpec, GiveUp, Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_an_explained_wait_outlasts_the_ready_timeout_and_is_logged_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(supervisor_module, "EXPLAIN_INTERVAL", 0.05)
    ready = threading.Event()
    asked: list[float] = []

    def explain() -> str | None:
        asked.append(time.monotonic())
        return "corosync is not running"

    spec = ChildSpec("replicator", SLEEPER, ready=ready.is_set, ready_timeout=0.5, explain=explain)
    supervisor = Supervisor([spec, ChildSpec("web", SLEEPER)], tmp_path)
    errors: list[BaseException] = []
    started, release = threading.Event(), threading.Event()

    def start() -> None:
        # The thread that starts children must outlive them: their parent-death signal fires when
        # the *thread* that forked them ends (runnode starts them from its main loop).
        try:
            supervisor.start()
        except BaseException as exc:  # reported below
            errors.append(exc)
        started.set()
        release.wait(60)

    caplog.set_level(logging.WARNING, logger="runnode")
    thread = threading.Thread(target=start, daemon=True)
    began = time.monotonic()
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not (asked and asked[-1] > began + 4 * spec.ready_timeout) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert asked and asked[-1] > began + 4 * spec.ready_timeout, "the supervisor stopped asking"
        assert not errors and thread.is_alive() and supervisor.children[1].process is None  # still waiting
        ready.set()
        assert started.wait(20) and not errors
        assert supervisor.children[1].alive()  # the next child started once the first was ready
        said = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
        assert said == ["replicator is not ready: corosync is not running"]
    finally:
        supervisor.stop()
        release.set()


def test_an_unexplained_wait_still_times_out(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor_module, "EXPLAIN_INTERVAL", 0.05)
    spec = ChildSpec("replicator", SLEEPER, ready=lambda: False, ready_timeout=0.5, explain=lambda: None)
    supervisor = Supervisor([spec], tmp_path)
    try:
        with pytest.raises(GiveUp, match="not ready after 0 s"):
            supervisor.start()
    finally:
        supervisor.stop()
