"""``PUT /access/password``: oneself with the current password as confirmation, root@pam without,
nobody else without User.Modify and Realm.AllocateUser, never with an API token; a refusal
changes nothing (the old password still logs in)."""

from __future__ import annotations

import pytest
from django.test import Client

from authz import services
from authz.models import User
from tests.api_client import API, login_enforcing_csrf, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "password-api-1"
USERS = ("pw-self@pve", "pw-stranger@pve")


@pytest.fixture
def users():  # type: ignore[no-untyped-def]
    users_with_grants(USERS, PASSWORD, [])
    root = User.objects.get(userid="root@pam")
    for userid in USERS:
        services.set_password(userid, PASSWORD, actor=root)  # whatever an earlier test set


def put(client: Client, csrf: str, **values: str) -> tuple[int, dict]:
    body = "&".join(f"{k}={v}" for k, v in values.items())
    response = client.put(
        f"{API}/access/password", body, content_type="application/x-www-form-urlencoded", HTTP_CSRFPREVENTIONTOKEN=csrf
    )
    return response.status_code, response.json()


def can_log_in(userid: str, password: str) -> bool:
    return Client().post(f"{API}/access/ticket", {"username": userid, "password": password}).status_code == 200


def test_oneself_with_the_current_password(users):
    client, csrf = login_enforcing_csrf("pw-self@pve", PASSWORD)
    status, body = put(client, csrf, userid="pw-self@pve", password="new-password-2")
    assert status == 400 and "confirmation-password" in body["errors"], body
    status, body = put(
        client, csrf, userid="pw-self@pve", password="new-password-2", **{"confirmation-password": "wrong"}
    )
    assert status == 401, body
    assert can_log_in("pw-self@pve", PASSWORD) and not can_log_in("pw-self@pve", "new-password-2")
    status, body = put(
        client, csrf, userid="pw-self@pve", password="new-password-2", **{"confirmation-password": PASSWORD}
    )
    assert status == 200, body
    assert can_log_in("pw-self@pve", "new-password-2") and not can_log_in("pw-self@pve", PASSWORD)


def test_someone_else_needs_user_modify_root_needs_no_confirmation(users):
    client, csrf = login_enforcing_csrf("pw-stranger@pve", PASSWORD)
    status, body = put(
        client, csrf, userid="pw-self@pve", password="taken-over-3", **{"confirmation-password": PASSWORD}
    )
    assert status == 403, body
    status, body = put(client, csrf, userid="root@pam", password="taken-over-3", **{"confirmation-password": PASSWORD})
    assert status == 403, body
    assert can_log_in("pw-self@pve", PASSWORD)
    root, root_csrf = login_enforcing_csrf("root@pam", "test-root-password")
    assert put(root, root_csrf, userid="pw-self@pve", password="set-by-root-4")[0] == 200
    assert can_log_in("pw-self@pve", "set-by-root-4")


def test_api_tokens_cannot_change_passwords(users):
    root = User.objects.get(userid="root@pam")
    _token, secret = services.add_token("pw-self@pve", "pwt", actor=root, privsep=False)
    try:
        response = Client().put(
            f"{API}/access/password",
            f"userid=pw-self@pve&password=by-token-5&confirmation-password={PASSWORD}",
            content_type="application/x-www-form-urlencoded",
            HTTP_AUTHORIZATION=f"PVEAPIToken=pw-self@pve!pwt={secret}",
        )
        assert response.status_code == 403, response.content
        assert can_log_in("pw-self@pve", PASSWORD)
    finally:
        services.delete_token("pw-self@pve!pwt", actor=root)
