"""Login throttling and login records in the cluster log."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import access, throttle
from authz.models import User
from cluster.models import ClusterLogEntry

pytestmark = [pytest.mark.usefixtures("replicator")]
API = "/api2/json"


def _root() -> User:
    return User.objects.get(userid="root@pam")


def attempt(username: str, password: str) -> int:
    return Client().post(f"{API}/access/ticket", {"username": username, "password": password}).status_code


def test_delays_grow_and_are_bounded():
    delays = [throttle.delay_for(n) for n in range(1, 120)]
    assert delays[:4] == [0.0] * 4
    assert delays == sorted(delays) and max(delays) == throttle.MAX_DELAY


def test_failures_are_counted_alike_for_unknown_and_known_users_and_logged():
    if not User.objects.filter(userid="gina@pve").exists():
        access.add_user("gina@pve", actor=_root(), password="gina-password")
    assert attempt("gina@pve", "wrong") == 401
    assert attempt("nobody-at-all@pve", "wrong") == 401
    assert throttle.failures("gina@pve") == 1 and throttle.failures("nobody-at-all@pve") == 1
    messages = set(ClusterLogEntry.objects.values_list("msg", flat=True))
    assert "authentication failure; user=gina@pve from 127.0.0.1" in messages
    assert "authentication failure; user=nobody-at-all@pve from 127.0.0.1" in messages
    assert attempt("gina@pve", "gina-password") == 200
    assert throttle.failures("gina@pve") == 0  # a success clears the count
    assert "successful auth for user 'gina@pve' from 127.0.0.1" in set(
        ClusterLogEntry.objects.values_list("msg", flat=True)
    )


def test_an_account_over_the_limit_is_refused_even_with_the_right_password():
    if not User.objects.filter(userid="hank@pve").exists():
        access.add_user("hank@pve", actor=_root(), password="hank-password")
    for _ in range(throttle.LIMIT - 1):
        throttle.record_failure("hank@pve")
    assert attempt("hank@pve", "wrong") == 401  # the 100th failure
    assert throttle.blocked("hank@pve")
    assert attempt("hank@pve", "hank-password") == 401
    assert ClusterLogEntry.objects.filter(msg__startswith="too many failed logins for hank@pve").count() == 1
    # the same answer for an unknown account over its limit
    for _ in range(throttle.LIMIT):
        throttle.record_failure("ghost@pve")
    response = Client().post(f"{API}/access/ticket", {"username": "ghost@pve", "password": "x"})
    assert response.status_code == 401 and response.json()["message"] == "authentication failure\n"
    # an hour later the window is over
    assert throttle.failures("hank@pve", now=__import__("time").time() + throttle.WINDOW + 1) == 0


def test_pam_realm_users_log_in_with_their_linux_password():
    import subprocess

    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", "pvepamuser"], check=False, capture_output=True)
    subprocess.run(["chpasswd"], input="pvepamuser:Linux-Pass-42\n", text=True, check=True)
    try:
        if not User.objects.filter(userid="pvepamuser@pam").exists():
            access.add_user("pvepamuser@pam", actor=_root())
        assert attempt("pvepamuser@pam", "Linux-Pass-42") == 200
        assert attempt("pvepamuser@pam", "not-the-password") == 401
        subprocess.run(["usermod", "-L", "pvepamuser"], check=True)  # a locked Linux account
        assert attempt("pvepamuser@pam", "Linux-Pass-42") == 401
    finally:
        subprocess.run(["userdel", "pvepamuser"], check=False, capture_output=True)
