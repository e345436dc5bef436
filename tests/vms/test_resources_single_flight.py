"""The shared ``/cluster/resources`` answer is built by one caller at a time (pure logic, faked build)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from vms.status import resources


@pytest.fixture
def fake_build(monkeypatch):
    """``_build`` counted and slow; rules and version fixed, so every caller shares one key."""
    calls: list[float] = []
    entered = threading.Event()

    def build(rules, kind):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        entered.set()
        time.sleep(0.3)
        return [{"id": f"qemu/{len(calls)}"}]

    monkeypatch.setattr(resources, "_build", build)
    monkeypatch.setattr(resources, "rules_of", lambda user: "rules")
    monkeypatch.setattr(resources.resolver, "current_version", lambda: 7)
    monkeypatch.setattr(resources, "_answers", {})
    monkeypatch.setattr(resources, "_building", {})
    return calls, entered


def test_concurrent_callers_without_an_answer_wait_for_one_build(fake_build):
    calls, _ = fake_build
    with ThreadPoolExecutor(20) as pool:
        bodies = list(pool.map(lambda _: resources.resources_body(None, None)[0], range(20)))
    assert len(calls) == 1
    assert set(bodies) == {b'{"data":[{"id":"qemu/1"}]}'}


def test_an_expired_answer_is_rebuilt_once_and_served_meanwhile(fake_build, monkeypatch):
    calls, entered = fake_build
    resources.resources_body(None, None)
    monkeypatch.setattr(resources, "ANSWER_MAX_AGE", 0.0)  # the answer is now expired
    entered.clear()
    with ThreadPoolExecutor(20) as pool:
        rebuilding = pool.submit(resources.resources_body, None, None)
        assert entered.wait(5)
        others = [pool.submit(resources.resources_body, None, None) for _ in range(19)]
        served = {future.result()[0] for future in others}
        assert rebuilding.result()[0] == b'{"data":[{"id":"qemu/2"}]}'
    assert served == {b'{"data":[{"id":"qemu/1"}]}'}  # the previous answer, while the one rebuild ran
    assert len(calls) == 2


def test_a_failed_build_lets_the_next_caller_build(fake_build, monkeypatch):
    calls, _ = fake_build

    def broken(rules, kind):  # type: ignore[no-untyped-def]
        calls.append(time.monotonic())
        raise RuntimeError("database gone")

    monkeypatch.setattr(resources, "_build", broken)
    with pytest.raises(RuntimeError):
        resources.resources_body(None, None)
    assert resources._building == {}
    with pytest.raises(RuntimeError):
        resources.resources_body(None, None)
    assert len(calls) == 2


def test_gzip_is_computed_once_and_decodes_to_the_body(fake_build):
    import gzip

    body, gz = resources.resources_body(None, None, gzipped=True)
    again, gz_again = resources.resources_body(None, None, gzipped=True)
    assert gz is not None and gzip.decompress(gz) == body == again and gz_again is gz
