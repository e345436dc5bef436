"""``PUT /access/users/{userid}/token/{tokenid}``: the owner (logged in as itself, not through a
token) or User.Modify on the owner changes privsep, expire and comment; a token never changes
itself (tokens are not "self"), so a privilege-separated token cannot lift its own separation."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from authz import services
from authz.models import APIToken, User
from tests.api_client import API, logged_in, users_with_grants

pytestmark = [pytest.mark.usefixtures("replicator")]
PASSWORD = "token-modify-password"
OWNER, STRANGER = "tm-owner@pve", "tm-stranger@pve"
TOKENID = f"{OWNER}!tm"


@pytest.fixture
def token():  # type: ignore[no-untyped-def]
    users_with_grants((OWNER, STRANGER), PASSWORD, [])
    root = User.objects.get(userid="root@pam")
    if APIToken.objects.filter(tokenid=TOKENID).exists():
        services.delete_token(TOKENID, actor=root)
    _row, secret = services.add_token(OWNER, "tm", actor=root, privsep=True, comment="before")
    return secret


def put(client: Client, body: str, **headers: str):  # type: ignore[no-untyped-def]
    return client.put(f"{API}/access/users/{OWNER}/token/tm", body, content_type="application/x-www-form-urlencoded",
                      **headers)  # fmt: skip


def test_the_owner_changes_its_token(token):
    expire = int(time.time()) + 3600
    response = put(logged_in(OWNER, PASSWORD), f"comment=after&expire={expire}&privsep=0")
    assert response.status_code == 200, response.content
    assert response.json()["data"] == {"comment": "after", "expire": expire, "privsep": 0}
    row = APIToken.objects.get(tokenid=TOKENID)
    assert (row.comment, row.expire, row.privsep) == ("after", expire, False)


def test_a_token_cannot_change_itself_nor_can_a_stranger(token):
    by_token = put(Client(), "privsep=0", HTTP_AUTHORIZATION=f"PVEAPIToken={TOKENID}={token}")
    assert by_token.status_code == 403, by_token.content
    by_stranger = put(logged_in(STRANGER, PASSWORD), "privsep=0")
    assert by_stranger.status_code == 403, by_stranger.content
    assert APIToken.objects.get(tokenid=TOKENID).privsep is True


def test_bad_values_change_nothing(token):
    owner = logged_in(OWNER, PASSWORD)
    assert put(owner, "expire=1").status_code == 400  # in the past
    assert put(owner, "privsep=maybe").status_code == 400
    assert APIToken.objects.get(tokenid=TOKENID).comment == "before"
    missing = owner.put(f"{API}/access/users/{OWNER}/token/nope", "comment=x",
                        content_type="application/x-www-form-urlencoded")  # fmt: skip
    assert missing.status_code == 400
