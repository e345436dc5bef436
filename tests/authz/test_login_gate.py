"""Login attempts over the real web server: one at a time per address, a bounded queue, no lock-out."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from authz import login_gate, throttle
from tests.webserver import WebServer, serving

pytestmark = [pytest.mark.usefixtures("replicator")]
ROOT_PASSWORD = "test-root-password"


@pytest.fixture(scope="module")
def web(node_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebServer]:
    with serving(node_env, tmp_path_factory.mktemp("web")) as server:
        yield server


def test_one_address_takes_turns_holds_few_threads_and_others_get_in(web):
    attacker, user, bystander = "127.0.0.2", "127.0.0.3", "127.0.0.4"
    for _ in range(throttle.FREE_FAILURES):  # the attacker's address waits 0.5 s per attempt from now on
        throttle.record_failure(throttle.Attempt.of("seed@pve", attacker))
    assert web.request("GET", "/admin/login/", source=bystander)[0] == 200  # warm: lazy threads exist
    baseline = web.threads()
    queued = login_gate.MAX_WAITING

    def attack(i: int) -> tuple[int, float]:
        status, _body = web.login("root@pam", f"wrong-{i}", source=attacker)
        return status, time.monotonic()

    started = time.monotonic()
    with ThreadPoolExecutor(40) as pool:
        attempts = [pool.submit(attack, i) for i in range(40)]
        # The attempts beyond the queue are refused at once ...
        deadline = time.monotonic() + 15
        while sum(1 for f in attempts if f.done() and f.result()[0] == 429) < 40 - queued:
            assert time.monotonic() < deadline, [f.result()[0] for f in attempts if f.done()]
            time.sleep(0.05)
        refused_by = time.monotonic() - started
        # ... and the queued ones, waiting, hold one thread each at most (once the threads of the
        # refused requests have ended).
        threads, deadline = web.threads(), time.monotonic() + 3
        while threads - baseline > queued + 2:
            assert time.monotonic() < deadline, (baseline, threads)
            time.sleep(0.05)
            threads = web.threads()
        assert not all(f.done() for f in attempts)
        # While the attacker's queue drains, another client logs in with the right password.
        status, body = web.login("root@pam", ROOT_PASSWORD, source=user)
        assert status == 200 and body["data"]["username"] == "root@pam"
        logged_in = time.monotonic() - started
        page = web.request("GET", "/admin/login/", source=bystander)
        results = [future.result() for future in attempts]
    assert page[0] == 200
    statuses = [status for status, _ in results]
    assert statuses.count(401) == queued and statuses.count(429) == 40 - queued
    # Checked one at a time, each after its delay (0.5 s, then 1 s as the address's count grows).
    checked = sorted(t - started for status, t in results if status == 401)
    assert refused_by < checked[0]
    assert all(later - earlier >= 0.45 for earlier, later in itertools.pairwise(checked)), checked
    assert logged_in < checked[-1]  # the right password got in while the attacker's attempts waited
    assert throttle.failures(throttle.Attempt.of("root@pam", attacker))[1] == throttle.FREE_FAILURES + queued
