"""Every unsafe method of every /api2/json route refuses a ticket cookie without its CSRF token.

The routes are read from the URL configuration itself, so a route added later is covered without
touching this test. Proxmox exempts only the login (``POST /access/ticket``); a new public
endpoint must be added to ``PUBLIC`` here on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client

from portal.api.views import PVEAPIView
from tests.api.routes import api_route_regexes
from tests.api_client import API

pytestmark = [pytest.mark.usefixtures("replicator")]

UNSAFE = ("post", "put", "delete")
PUBLIC = {("post", "/access/ticket")}
VALUES = {"node": "testnode", "vmid": "100", "upid": "UPID:testnode:00000001:00000001:00000001:x:y:root@pam:"}


def api_routes() -> Iterator[tuple[str, type]]:
    """(path with placeholders filled, view class) for each route under /api2/, the catch-all aside."""
    for regex, callback in api_route_regexes():
        prefix = re.match(r"api2/(?:\(\?:json\|extjs\)|json)", regex)
        assert prefix and regex.endswith("/?$"), regex
        body = regex[prefix.end() : -len("/?$")]
        body = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: VALUES.get(m.group(1), "x1"), body)
        path = re.sub(r"\\(.)", r"\1", body)  # re.escape of the literal parts undone
        view = getattr(callback, "cls", None)
        assert isinstance(view, type) and issubclass(view, PVEAPIView), f"{path}: not an API view: {callback}"
        yield path or "/", view


ROUTES = sorted(set(api_routes()), key=lambda route: route[0])
CASES = [(method, path) for path, view in ROUTES for method in UNSAFE if hasattr(view, method)]


def test_the_walk_finds_the_routes_clients_write_to():
    assert len(ROUTES) > 90
    for case in [
        ("post", "/nodes/testnode/qemu"),
        ("put", "/nodes/testnode/qemu/100/config"),
        ("delete", "/nodes/testnode/qemu/100"),
        ("put", "/access/acl"),
        ("post", "/nodes/testnode/qemu/100/status/start"),
    ]:
        assert case in CASES
    assert set(CASES) >= PUBLIC


@pytest.fixture(scope="module")
def cookie_only() -> Client:
    """root@pam's ticket cookie, as a browser sends it to any site's form; no CSRFPreventionToken."""
    client = Client(enforce_csrf_checks=True)
    response = client.post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"})
    client.cookies["PVEAuthCookie"] = response.json()["data"]["ticket"]
    return client


@pytest.mark.parametrize(("method", "path"), [case for case in CASES if case not in PUBLIC])
def test_an_unsafe_request_without_the_token_is_refused(cookie_only, method, path):
    before = _state()
    if method == "delete":
        response = cookie_only.delete(f"{API}{path}")
    else:
        response = getattr(cookie_only, method)(f"{API}{path}", {"comment": "csrf"})
    assert response.status_code == 401, (method, path, response.status_code, response.content[:200])
    assert response.json()["data"] is None
    assert _state() == before


def test_the_same_cookie_with_its_token_is_accepted(cookie_only):
    """The refusals above are the missing token, not a dead ticket: with a token the handler runs."""
    token = Client().post(f"{API}/access/ticket", {"username": "root@pam", "password": "test-root-password"})
    response = cookie_only.put(
        f"{API}/nodes/testnode/qemu/99999/config",
        "cores=2",
        content_type="application/x-www-form-urlencoded",
        HTTP_CSRFPREVENTIONTOKEN=token.json()["data"]["CSRFPreventionToken"],
    )
    assert response.status_code == 500 and "does not exist" in response.json()["message"], response.content


def _state() -> tuple[int, int, int]:
    """Counts a write through any of these routes would change (VMs, users, cluster log)."""
    from authz.models import User
    from cluster.models import ClusterLogEntry
    from vms.models import VM

    return VM.objects.count(), User.objects.count(), ClusterLogEntry.objects.count()
