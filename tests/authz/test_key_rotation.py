"""The ticket signing key rotates after 24 h; tickets signed with the previous key stay valid."""

from __future__ import annotations

import time

import pytest

from authz import services
from authz.exceptions import AuthenticationFailed
from authz.models import KeyMaterial, User

pytestmark = [pytest.mark.usefixtures("replicator")]


def age_key(seconds: int) -> None:
    key = KeyMaterial.objects.get(path=services.AUTHKEY)
    key.created = int(time.time()) - seconds
    key.save()


def test_rotation_keeps_the_previous_key_for_verification():
    root = User.objects.get(userid="root@pam")
    age_key(3600)  # young: no rotation
    before = KeyMaterial.objects.get(path=services.AUTHKEY_PUB).content
    first, _ = services.issue_ticket(root)
    assert KeyMaterial.objects.get(path=services.AUTHKEY_PUB).content == before
    age_key(services.KEY_LIFETIME + 60)
    second, _ = services.issue_ticket(root)  # rotates, then signs with the new key
    assert KeyMaterial.objects.get(path=services.AUTHKEY_PUB).content != before
    assert KeyMaterial.objects.get(path=services.AUTHKEY_PUB_OLD).content == before
    assert services.user_from_ticket(first).userid == "root@pam"  # previous key still accepted
    assert services.user_from_ticket(second).userid == "root@pam"
    age_key(services.KEY_LIFETIME + 60)
    services.issue_ticket(root)  # a second rotation drops the first key
    with pytest.raises(AuthenticationFailed):
        services.user_from_ticket(first)
    assert services.user_from_ticket(second).userid == "root@pam"
