"""``/api2/extjs/...``: the same handlers and checks as ``/api2/json``, in Proxmox's ExtJS envelope
(always HTTP 200; ``success``, ``data``, and on failure ``status``, ``message``, ``errors``)."""

from __future__ import annotations

import pytest
from django.test import Client

from portal.api.extjs import envelope
from tests.api_client import logged_in

pytestmark = [pytest.mark.usefixtures("replicator")]
EXTJS = "/api2/extjs"


def test_success_and_failures_in_the_envelope():
    root = logged_in()
    answer = root.get(f"{EXTJS}/version")
    assert answer.status_code == 200 and answer["Content-Type"].startswith("application/json")
    body = answer.json()
    assert body["success"] == 1 and "version" in body["data"] and "status" not in body
    assert root.get("/api2/json/version").json()["data"] == body["data"]  # the same handler

    anonymous = Client().get(f"{EXTJS}/version")
    assert anonymous.status_code == 200 and anonymous.json()["success"] == 0 and anonymous.json()["status"] == 401

    missing = root.get(f"{EXTJS}/nodes/testnode/qemu/999999/config").json()
    assert missing["success"] == 0 and missing["status"] == 500 and "does not exist" in missing["message"]
    bad = root.post(f"{EXTJS}/access/groups", {"comment": "no id"}).json()
    assert bad["success"] == 0 and bad["status"] == 400 and "groupid" in bad["errors"]
    unknown = root.get(f"{EXTJS}/no/such/path").json()
    assert unknown["status"] == 501 and unknown["message"].startswith("Method 'GET /no/such/path' not implemented")


def test_a_write_through_extjs_needs_csrf_and_changes_the_same_state():
    from authz.models import Group

    root = logged_in()
    created = root.post(f"{EXTJS}/access/groups", {"groupid": "extjs-group"}).json()
    assert created == {"success": 1, "data": None}
    assert Group.objects.filter(groupid="extjs-group").exists()
    without_csrf = Client()
    without_csrf.cookies = root.cookies
    refused = without_csrf.delete(f"{EXTJS}/access/groups/extjs-group").json()
    assert refused["success"] == 0 and refused["status"] == 401
    assert root.delete(f"{EXTJS}/access/groups/extjs-group").json()["success"] == 1
    assert not Group.objects.filter(groupid="extjs-group").exists()


def test_the_envelope_keeps_paging_fields():
    assert envelope(200, {"data": [1], "total": 7}) == {"success": 1, "data": [1], "total": 7}
    assert envelope(403, {"data": None, "message": "no\n"}) == {
        "success": 0,
        "data": None,
        "status": 403,
        "message": "no\n",
    }
