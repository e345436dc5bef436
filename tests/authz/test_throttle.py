"""Login throttling: a bounded delay per name and address, no lock-out, failures in the node's log only."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connections
from django.test import Client, override_settings

from authz import services, throttle
from authz.models import LoginFailures, User
from cluster.models import ClusterLogEntry
from replicator import client as replicator_client

pytestmark = [pytest.mark.usefixtures("replicator"), pytest.mark.postgres_too]
API = "/api2/json"


def attempt(username: str, password: str, address: str = "127.0.0.1") -> int:
    response = Client(REMOTE_ADDR=address).post(f"{API}/access/ticket", {"username": username, "password": password})
    return response.status_code


def ensure_user(userid: str, password: str) -> None:
    if not User.objects.filter(userid=userid).exists():
        services.add_user(userid, actor=User.objects.get(userid="root@pam"), password=password)


def test_delays_grow_and_are_bounded():
    delays = [throttle.schedule(n, throttle.ADDRESS_MAX_DELAY) for n in range(0, 400)]
    assert delays[: throttle.FREE_FAILURES] == [0.0] * throttle.FREE_FAILURES
    assert delays[throttle.FREE_FAILURES] == throttle.FIRST_DELAY
    assert delays == sorted(delays) and max(delays) == throttle.ADDRESS_MAX_DELAY
    assert throttle.schedule(10**9, throttle.USER_MAX_DELAY) == throttle.USER_MAX_DELAY  # no overflow


def test_addresses_are_counted_per_host_and_per_ipv6_64():
    assert throttle.address_key("192.0.2.7") == "192.0.2.7"
    assert throttle.address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert (
        throttle.address_key("2001:db8:1:2::7") == throttle.address_key("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    )
    assert throttle.address_key("") == throttle.address_key("not an address") == "unknown"


def test_failures_go_to_the_node_log_only_and_are_counted_alike_for_unknown_users(caplog):
    ensure_user("gina@pve", "gina-password")
    before = replicator_client.status()["version"]
    log_entries = ClusterLogEntry.objects.count()
    with caplog.at_level(logging.INFO, logger="authz.authentication"):
        assert attempt("gina@pve", "wrong", "192.0.2.10") == 401
        assert attempt("nobody-at-all@pve", "wrong", "192.0.2.10") == 401
        assert attempt("line\nbreak@pve", "wrong", "192.0.2.10") == 401
    gina, nobody = throttle.Attempt.of("gina@pve", "192.0.2.10"), throttle.Attempt.of("nobody-at-all@pve", "")
    assert throttle.failures(gina)[:2] == (1, 3) and throttle.failures(nobody)[0] == 1
    lines = [record.getMessage() for record in caplog.records]
    assert "authentication failure; rhost=192.0.2.10 user=gina@pve" in lines
    assert "authentication failure; rhost=192.0.2.10 user=nobody-at-all@pve" in lines
    assert "authentication failure; rhost=192.0.2.10 user=line\\nbreak@pve" in lines  # no forged log lines
    # Unauthenticated requests wrote nothing replicated; the success below is the first write since.
    assert replicator_client.status()["version"] == before
    assert attempt("gina@pve", "gina-password", "192.0.2.10") == 200
    assert replicator_client.status()["version"] == before + 1
    assert ClusterLogEntry.objects.count() == log_entries + 1
    assert ClusterLogEntry.objects.filter(msg="successful auth for user 'gina@pve' from 192.0.2.10").exists()
    assert not ClusterLogEntry.objects.filter(msg__contains="authentication failure").exists()
    # A success ends the name's count, not the address's (an attacker would log in to clear it).
    assert throttle.failures(gina)[:2] == (0, 3)


def test_the_right_password_is_never_locked_out(monkeypatch):
    monkeypatch.setattr(throttle, "USER_MAX_DELAY", 0.4)
    monkeypatch.setattr(throttle, "ADDRESS_MAX_DELAY", 0.4)
    ensure_user("hank@pve", "hank-password")
    hank = throttle.Attempt.of("hank@pve", "192.0.2.20")
    for _ in range(150):  # far beyond about 100 an hour: the old limit refused even the right password
        throttle.record_failure(hank)
    assert throttle.delay(hank) == 0.4
    started = time.monotonic()
    assert attempt("hank@pve", "hank-password", "192.0.2.20") == 200
    assert time.monotonic() - started >= 0.4  # it waited the delay first
    assert attempt("hank@pve", "wrong", "192.0.2.21") == 401
    # An unknown account gets the same answer and the same delays.
    for _ in range(150):
        throttle.record_failure(throttle.Attempt.of("ghost@pve", "192.0.2.20"))
    response = Client(REMOTE_ADDR="192.0.2.20").post(f"{API}/access/ticket", {"username": "ghost@pve", "password": "x"})
    assert response.status_code == 401 and response.json()["message"] == "authentication failure\n"


def test_the_admin_login_is_throttled_the_same_way(monkeypatch):
    monkeypatch.setattr(throttle, "ADDRESS_MAX_DELAY", 0.4)
    for _ in range(100):
        throttle.record_failure(throttle.Attempt.of("someone@pve", "192.0.2.30"))
    started = time.monotonic()
    page = Client(REMOTE_ADDR="192.0.2.30").post("/admin/login/", {"username": "root@pam", "password": "wrong"})
    assert page.status_code == 401 and time.monotonic() - started >= 0.4
    assert throttle.failures(throttle.Attempt.of("root@pam", "192.0.2.30"))[:2] == (1, 101)


def test_without_the_replicator_the_delay_still_applies(tmp_path):
    fresh = throttle.Attempt.of("fresh@pve", "192.0.2.40")
    assert throttle.delay(fresh) == 0.0

    def without_replicator() -> tuple[tuple[int, int, bool], float]:
        try:  # a thread of its own: no kept-alive connection to the session's replicator
            return throttle.failures(fresh), throttle.delay(fresh)
        finally:
            connections.close_all()

    with override_settings(PVE_REPLICATOR_SOCKET=tmp_path / "no-replicator.sock"), ThreadPoolExecutor(1) as pool:
        assert pool.submit(without_replicator).result() == ((0, 0, False), throttle.UNKNOWN_DELAY)


def test_old_rows_are_purged_and_rows_are_bounded(monkeypatch):
    now = time.time()
    throttle.record_failure(throttle.Attempt.of("old@pve", "192.0.2.50"), now=now - throttle.WINDOW - 10)
    kept = throttle.Attempt.of("kept@pve", "192.0.2.51")
    for _ in range(3):
        throttle.record_failure(kept, now=now)
    assert throttle.purge(now) == 2  # the old name and the old address
    assert not LoginFailures.objects.filter(key__in=["user:old@pve", "address:192.0.2.50"]).exists()
    # A flood of new names (one failure each) evicts the smallest counts, never the large ones.
    monkeypatch.setattr(throttle, "MAX_ROWS", 40)
    for i in range(60):
        throttle.record_failure(throttle.Attempt.of(f"flood-{i}@pve", "192.0.2.52"), now=now)
    assert LoginFailures.objects.count() <= 40
    assert throttle.failures(kept, now=now)[:2] == (3, 3)
    assert LoginFailures.objects.get(key="address:192.0.2.52").count == 60


def test_the_published_status_holds_the_largest_counts_only(monkeypatch):
    monkeypatch.setattr(throttle, "PUBLISHED", 5)
    for i in range(12):
        for _ in range(i + 1):
            throttle.record_failure(throttle.Attempt.of(f"pub-{i}@pve", f"192.0.2.{100 + i}"))
    published = throttle.volatile_status()[throttle.STATUS_FIELD]
    assert published["user"] == {f"pub-{i}@pve": i + 1 for i in range(7, 12)}
    assert published["address"] == {f"192.0.2.{100 + i}": i + 1 for i in range(7, 12)}


def test_the_replicator_publishes_the_counts_in_the_volatile_status():
    for _ in range(4):
        throttle.record_failure(throttle.Attempt.of("status@pve", "192.0.2.60"))

    def published() -> dict:
        nodes = replicator_client.request({"op": "cluster_status", "fields": [throttle.STATUS_FIELD]})["nodes"]
        return nodes["testnode"].get(throttle.STATUS_FIELD) or {}

    deadline = time.monotonic() + 30
    while published().get("user", {}).get("status@pve") != 4:
        assert time.monotonic() < deadline, published()
        time.sleep(0.2)
    assert published()["address"]["192.0.2.60"] == 4
    nodes = replicator_client.request({"op": "cluster_status", "fields": [throttle.STATUS_FIELD]})["nodes"]
    assert "tasks" not in nodes["testnode"] and "received" in nodes["testnode"]  # only what was asked


def test_pam_realm_users_log_in_with_their_linux_password():
    import subprocess

    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "pvepamuser"], check=False, capture_output=True)
    subprocess.run(["chpasswd"], input="pvepamuser:Linux-Pass-42\n", text=True, check=True)
    try:
        if not User.objects.filter(userid="pvepamuser@pam").exists():
            services.add_user("pvepamuser@pam", actor=User.objects.get(userid="root@pam"))
        assert attempt("pvepamuser@pam", "Linux-Pass-42") == 200
        assert attempt("pvepamuser@pam", "not-the-password") == 401
        subprocess.run(["usermod", "-L", "pvepamuser"], check=True)  # a locked Linux account
        assert attempt("pvepamuser@pam", "Linux-Pass-42") == 401
    finally:
        subprocess.run(["userdel", "pvepamuser"], check=False, capture_output=True)
